/**
 * Trunks: which trunk an inbound INVITE comes from (source allow-list, RFC 3261 §22 digest
 * credentials), digest challenges with stateless nonces, and where outbound calls go.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { type Config } from '../config/schema.js';

/** A configured trunk. */
export type TrunkConfig = Config['trunks'][number];

/** Outcome of admitting an inbound request. */
export type Admission =
  | { ok: true; trunk: TrunkConfig; via: 'address' | 'digest' }
  | { ok: false; status: 401; challenge: string }
  | { ok: false; status: 403; reason: string };

const NONCE_LIFETIME_MS = 5 * 60_000;

/** Parses a Digest Authorization header's parameters (RFC 7616 §3.4). */
export function parseDigest(header: string): Record<string, string> | undefined {
  const m = /^\s*Digest\s+(.*)$/is.exec(header);
  if (!m) {
    return undefined;
  }
  const out: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)/gy;
  const s = m[1]!;
  re.lastIndex = 0;
  let match: RegExpExecArray | null;
  while ((match = re.exec(s)) !== null) {
    out[match[1]!.toLowerCase()] = match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : match[3]!;
    while (re.lastIndex < s.length && /\s/.test(s[re.lastIndex]!)) {
      re.lastIndex++;
    }
  }

  return out;
}

/** Matches inbound requests to trunks. */
export class TrunkDirectory {
  readonly trunks: TrunkConfig[];
  readonly #ranges: { trunk: TrunkConfig; range: [ipaddr.IPv4 | ipaddr.IPv6, number] }[] = [];
  readonly #nonceKey = randomBytes(32);

  constructor(trunks: TrunkConfig[]) {
    this.trunks = trunks;
    for (const t of trunks) {
      for (const a of t.inbound.allow) {
        this.#ranges.push({ trunk: t, range: a.includes('/') ? ipaddr.parseCIDR(a) : [ipaddr.parse(a), ipaddr.parse(a).kind() === 'ipv4' ? 32 : 128] });
      }
    }
  }

  /** The trunk by id. */
  byId(id: string): TrunkConfig | undefined {
    return this.trunks.find((t) => t.id === id);
  }

  /** The first trunk whose allow-list contains an address. */
  byAddress(address: string): TrunkConfig | undefined {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.process(address.replace(/^\[|\]$/g, ''));
    } catch {
      return undefined;
    }
    for (const { trunk, range } of this.#ranges) {
      if (addr.kind() === range[0].kind() && addr.match(range)) {
        return trunk;
      }
    }

    return undefined;
  }

  /**
   * Decides whether an inbound request is admitted: by source address, else by digest
   * credentials of a trunk that has them (a 401 challenge when none were sent or they are stale).
   * @param method the request method (part of the digest, RFC 2617 §3.2.2.2)
   */
  admit(source: string, method: string, authorization: string | undefined): Admission {
    const byAddr = this.byAddress(source);
    if (byAddr) {
      return { ok: true, trunk: byAddr, via: 'address' };
    }
    const withAuth = this.trunks.filter((t) => t.inbound.auth.username !== '');
    if (withAuth.length === 0) {
      return { ok: false, status: 403, reason: 'source address not allowed' };
    }
    const realm = withAuth[0]!.inbound.auth.realm || 'ringbridge';
    if (authorization) {
      const p = parseDigest(authorization);
      const trunk = p ? withAuth.find((t) => t.inbound.auth.username === p.username) : undefined;
      if (p && trunk && this.#verify(p, method, trunk)) {
        return { ok: true, trunk, via: 'digest' };
      }
      if (p?.nonce && !this.#nonceFresh(p.nonce)) {
        return { ok: false, status: 401, challenge: this.challenge(trunk?.inbound.auth.realm || realm, true) };
      }
      return { ok: false, status: 403, reason: 'bad credentials' };
    }

    return { ok: false, status: 401, challenge: this.challenge(realm, false) };
  }

  /** A WWW-Authenticate value with a stateless nonce (timestamp + HMAC), RFC 7616 §3.3. */
  challenge(realm: string, stale: boolean): string {
    const ts = Date.now().toString(36);
    const mac = createHmac('sha256', this.#nonceKey).update(ts).digest('base64url').slice(0, 22);

    return `Digest realm="${realm}", nonce="${ts}.${mac}", algorithm=MD5, qop="auth"${stale ? ', stale=true' : ''}`;
  }

  #nonceFresh(nonce: string): boolean {
    const [ts, mac] = nonce.split('.');
    if (!ts || !mac) {
      return false;
    }
    const want = createHmac('sha256', this.#nonceKey).update(ts).digest('base64url').slice(0, 22);
    const a = Buffer.from(want);
    const b = Buffer.from(mac);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      return false;
    }

    return Date.now() - parseInt(ts, 36) < NONCE_LIFETIME_MS;
  }

  #verify(p: Record<string, string>, method: string, trunk: TrunkConfig): boolean {
    if (!p.nonce || !p.uri || !p.response || !this.#nonceFresh(p.nonce)) {
      return false;
    }
    if (p.algorithm && p.algorithm.toUpperCase() !== 'MD5') {
      return false;
    }
    const md5 = (s: string) => createHash('md5').update(s).digest('hex');
    const { username, password, realm } = trunk.inbound.auth;
    const ha1 = md5(`${username}:${p.realm ?? realm}:${password}`);
    const ha2 = md5(`${method}:${p.uri}`);
    const expected = p.qop ? md5(`${ha1}:${p.nonce}:${p.nc ?? ''}:${p.cnonce ?? ''}:${p.qop}:${ha2}`) : md5(`${ha1}:${p.nonce}:${ha2}`);
    const a = Buffer.from(expected);
    const b = Buffer.from(p.response.toLowerCase());

    return a.length === b.length && timingSafeEqual(a, b);
  }
}
