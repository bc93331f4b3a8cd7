/**
 * Trunks: which trunk an inbound INVITE comes from (source allow-list, RFC 3261 §22 digest
 * credentials), digest challenges with stateless nonces, and where outbound calls go.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { type Config } from '../config/schema.js';

/** A configured trunk. */
export type TrunkConfig = Config['trunks'][number];

/**
 * The srf.createUAC() options of an INVITE toward a trunk (call.dial, a SIP device's call, a
 * transfer or consultation to a number, a REFER's target): our SDP offer, the presented number in
 * From, the trunk's digest credentials (RFC 3261 §22, answered by srf on 401/407) and its
 * outbound proxy, when set.
 */
export function trunkUacOptions(trunk: TrunkConfig, fromNumber: string, localSdp: string): { localSdp: string; headers: { From: string }; auth?: { username: string; password: string }; proxy?: string } {
  return {
    localSdp,
    headers: { From: `<sip:${fromNumber}@localhost>` },
    ...(trunk.outbound.auth.username ? { auth: { username: trunk.outbound.auth.username, password: trunk.outbound.auth.password } } : {}),
    ...(trunk.outbound.proxy ? { proxy: trunk.outbound.proxy } : {}),
  };
}

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

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** An IP address or CIDR block (as the config schema's `cidr` accepts it) as a range. */
function parseRange(a: string): Range {
  if (a.includes('/')) {
    return ipaddr.parseCIDR(a);
  }
  const addr = ipaddr.parse(a);

  return [addr, addr.kind() === 'ipv4' ? 32 : 128];
}

/** An address (IPv6 possibly in brackets, IPv4-mapped IPv6 as IPv4), or undefined when it is none. */
function parseAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    return ipaddr.process(address.replace(/^\[|\]$/g, ''));
  } catch {
    return undefined;
  }
}

function inRanges(addr: ipaddr.IPv4 | ipaddr.IPv6, ranges: Range[]): boolean {
  return ranges.some((range) => addr.kind() === range[0].kind() && addr.match(range));
}

/** Parsed `sip.trustedProxies`, per array (the config's array lives as long as the process). */
const proxyRanges = new WeakMap<readonly string[], Range[]>();

/** Header in which the dispatcher (docker/kamailio/kamailio.cfg) names a trunk request's real source. */
export const SOURCE_HEADER = 'X-RB-Source';

/** Where a request really comes from, as trunkSource() decides it. */
export interface TrunkSource {
  /**
   * The address to admit the request by (`TrunkDirectory.admit`): the packet's source address, or,
   * when that is a trusted proxy, the address in its `X-RB-Source` header; `''` when a trusted
   * proxy sent no usable header (then no allow-list matches, and only digest credentials admit).
   */
  address: string;
  /** The packet came from a trusted proxy (`sip.trustedProxies`). */
  viaProxy: boolean;
  /**
   * Why an `X-RB-Source` header was not used, for the caller's log: `untrusted` (a header from a
   * source that is no trusted proxy: ignored, the packet's source counts), `missing` or
   * `malformed` (from a trusted proxy: no address at all). Absent when nothing was ignored.
   */
  ignored?: 'untrusted' | 'missing' | 'malformed';
}

/**
 * The source address a trunk's out-of-dialog request is admitted by.
 *
 * Behind the Kamailio dispatcher every request comes from Kamailio's address; Kamailio removes any
 * `X-RB-Source` header a trunk sent and appends its own with the address the request came from
 * (`X-RB-Source: 198.51.100.7:5060;transport=udp`, IPv6 in brackets: `[2001:db8::7]:5060;...`).
 * That header is believed only when the packet itself comes from an address in `trustedProxies`
 * (`sip.trustedProxies`, IPs or CIDR blocks):
 *
 * - packet from a trusted proxy, header well-formed → the header's address (`viaProxy` true);
 * - packet from a trusted proxy, header missing, repeated or malformed → `address: ''`, so no
 *   allow-list admits it (falling back to the proxy's own address would admit by the proxy's
 *   address, which is what the header is there to avoid); digest credentials still can;
 * - packet from anywhere else → the packet's source address; a header it carries is ignored
 *   (`ignored: 'untrusted'`: someone tried to choose their source, worth a log line).
 *
 * Accepted header values: `IPv4[:port]`, `[IPv6][:port]` or a bare IPv6 literal, optionally
 * followed by `;params` (`;transport=udp`); the port and parameters are not used. Pure: no I/O.
 * @param sourceAddress the packet's source address (`req.source_address`)
 * @param header the request's `X-RB-Source` value, undefined or `''` when it has none
 * @param trustedProxies `sip.trustedProxies`
 */
export function trunkSource(sourceAddress: string, header: string | undefined, trustedProxies: readonly string[]): TrunkSource {
  const has = header !== undefined && header.trim() !== '';
  let ranges = proxyRanges.get(trustedProxies);
  if (!ranges) {
    ranges = trustedProxies.map(parseRange);
    proxyRanges.set(trustedProxies, ranges);
  }
  const packet = parseAddress(sourceAddress);
  if (!packet || !inRanges(packet, ranges)) {
    return has ? { address: sourceAddress, viaProxy: false, ignored: 'untrusted' } : { address: sourceAddress, viaProxy: false };
  }
  if (!has) {
    return { address: '', viaProxy: true, ignored: 'missing' };
  }
  const address = parseSourceHeader(header);

  return address === undefined ? { address: '', viaProxy: true, ignored: 'malformed' } : { address, viaProxy: true };
}

/** The address in an `X-RB-Source` value (see trunkSource), normalised; undefined when malformed. */
function parseSourceHeader(value: string): string | undefined {
  const hostport = value.trim().split(';')[0]!.trim();
  // One header, one address: a comma means several headers folded into one value.
  if (hostport.includes(',')) {
    return undefined;
  }
  let host: string;
  const bracketed = /^\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?$/.exec(hostport);
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(hostport);
  if (bracketed) {
    host = bracketed[1]!;
  } else if (v4) {
    host = v4[1]!;
  } else if (ipaddr.IPv6.isValid(hostport)) {
    host = hostport;
  } else {
    return undefined;
  }
  const port = (bracketed ?? v4)?.[2];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
    return undefined;
  }
  if (bracketed && !ipaddr.IPv6.isValid(host)) {
    return undefined;
  }
  if (v4 && !ipaddr.IPv4.isValidFourPartDecimal(host)) {
    return undefined;
  }

  return parseAddress(host)?.toString();
}

/** Matches inbound requests to trunks. */
export class TrunkDirectory {
  readonly trunks: TrunkConfig[];
  readonly #ranges: { trunk: TrunkConfig; range: Range }[] = [];
  readonly #nonceKey = randomBytes(32);

  constructor(trunks: TrunkConfig[]) {
    this.trunks = trunks;
    for (const t of trunks) {
      for (const a of t.inbound.allow) {
        this.#ranges.push({ trunk: t, range: parseRange(a) });
      }
    }
  }

  /** The trunk by id. */
  byId(id: string): TrunkConfig | undefined {
    return this.trunks.find((t) => t.id === id);
  }

  /** The first trunk whose allow-list contains an address. */
  byAddress(address: string): TrunkConfig | undefined {
    const addr = parseAddress(address);
    if (!addr) {
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
