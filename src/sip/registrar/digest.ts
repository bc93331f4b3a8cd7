/**
 * Digest authentication of a UAS (RFC 3261 §22.4, RFC 7616): challenges with MD5 and SHA-256,
 * stateless nonces that expire, and replay protection.
 *
 * Nonce: `<issued, base36 ms>.<12 random bytes>.<HMAC-SHA256 of both, truncated>` in base64url,
 * signed with a per-process key, so that a nonce we did not issue, or one older than the TTL, is
 * refused without storing the nonces we hand out. Replays: the highest nonce-count (nc) accepted per
 * nonce is kept until the nonce expires; a request must carry a higher one (qop=auth), and a
 * nonce used without qop (RFC 2069 style) is accepted once. The table is bounded: when it is full
 * the oldest entries go, and every nonce issued before the newest evicted one counts as stale, so
 * forgetting never re-opens a replay.
 *
 * A nonce is valid on the node that issued it; a device whose answer reaches another node gets
 * 401 with stale=true and answers the new challenge (RFC 7616 §3.3), without asking its user.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { parseDigest } from '../trunks.js';

/** Digest algorithms served (RFC 7616 §3.5; the -sess variants are not offered). */
export type DigestAlgorithm = 'MD5' | 'SHA-256';

/** A user's stored digest secrets: HA1 = H(username:realm:password), lower-case hex. */
export interface DigestSecrets {
  ha1Md5: string;
  ha1Sha256: string;
}

/** The outcome of checking an Authorization header. */
export type DigestOutcome =
  | { ok: true; username: string; algorithm: DigestAlgorithm }
  /** Challenge (again): no credentials, another realm or algorithm, or (stale) a nonce that is expired, reused or not this node's. */
  | { ok: false; status: 401; stale: boolean; reason: string }
  /** Credentials for this realm that are wrong, or an unknown user. */
  | { ok: false; status: 403; reason: string }
  /** An Authorization header that is not a usable Digest response. */
  | { ok: false; status: 400; reason: string };

/** Options of DigestAuthenticator. */
export interface DigestAuthenticatorOptions {
  realm: string;
  /** Offered in this order (strongest first, RFC 7616 §3.7). */
  algorithms: readonly DigestAlgorithm[];
  /** How long a nonce is accepted after it was issued (ms). */
  nonceTtlMs: number;
  /** The user's secrets, or undefined for an unknown user. */
  lookup: (username: string) => DigestSecrets | undefined;
  /** Most nonces whose use is remembered at once (default 100 000). */
  maxTrackedNonces?: number;
  /** The clock (ms; tests). */
  now?: () => number;
}

const HASH: Record<DigestAlgorithm, string> = { MD5: 'md5', 'SHA-256': 'sha256' };

/** Digest challenges and checks for one realm. */
export class DigestAuthenticator {
  readonly #realm: string;
  readonly #algorithms: readonly DigestAlgorithm[];
  readonly #ttlMs: number;
  readonly #lookup: (username: string) => DigestSecrets | undefined;
  readonly #max: number;
  readonly #now: () => number;
  readonly #key = randomBytes(32);
  /** nonce → { highest nc accepted (0: used without qop), issued (ms) }, oldest first. */
  readonly #used = new Map<string, { nc: number; issued: number }>();
  /** Nonces issued at or before this time (ms) are stale unless still in #used. */
  #forgottenBefore = 0;

  constructor(opts: DigestAuthenticatorOptions) {
    this.#realm = opts.realm;
    this.#algorithms = opts.algorithms;
    this.#ttlMs = opts.nonceTtlMs;
    this.#lookup = opts.lookup;
    this.#max = opts.maxTrackedNonces ?? 100_000;
    this.#now = opts.now ?? Date.now;
  }

  /** WWW-Authenticate values, one per algorithm, each with its own fresh nonce and qop="auth". */
  challenges(stale = false): string[] {
    return this.#algorithms.map((alg) => `Digest realm="${this.#realm}", nonce="${this.#nonce()}", algorithm=${alg}, qop="auth"${stale ? ', stale=true' : ''}`);
  }

  /**
   * Checks the Authorization header of a request (RFC 7616 §3.4): realm, nonce (ours, fresh,
   * unused nc), algorithm, and the response computed from the stored HA1. Never throws.
   * @param method the request's method (part of HA2)
   */
  verify(method: string, authorization: string | undefined): DigestOutcome {
    if (!authorization) {
      return { ok: false, status: 401, stale: false, reason: 'no credentials' };
    }
    const p = parseDigest(authorization);
    if (!p) {
      return { ok: false, status: 400, reason: 'not a Digest Authorization header' };
    }
    if (!p.username || !p.nonce || !p.uri || !p.response || p.realm === undefined) {
      return { ok: false, status: 400, reason: 'Digest credentials without username, realm, nonce, uri or response' };
    }
    if (p.realm !== this.#realm) {
      return { ok: false, status: 401, stale: false, reason: 'credentials for another realm' };
    }
    const alg = (p.algorithm ?? 'MD5').toUpperCase() === 'SHA-256' ? 'SHA-256' : (p.algorithm ?? 'MD5').toUpperCase() === 'MD5' ? 'MD5' : undefined;
    if (!alg || !this.#algorithms.includes(alg)) {
      return { ok: false, status: 401, stale: false, reason: `algorithm ${p.algorithm ?? 'MD5'} not offered` };
    }
    const issued = this.#nonceIssued(p.nonce);
    if (issued === undefined) {
      // another node's nonce (or a forged one): stale, so that the device answers a fresh challenge
      // from this node without asking its user; the response is never checked against it
      return { ok: false, status: 401, stale: true, reason: 'a nonce this node did not issue' };
    }
    const now = this.#now();
    if (now - issued > this.#ttlMs) {
      return { ok: false, status: 401, stale: true, reason: 'nonce expired' };
    }
    let nc = 0;
    if (p.qop !== undefined) {
      if (p.qop.toLowerCase() !== 'auth') {
        return { ok: false, status: 401, stale: false, reason: `qop ${p.qop} not offered` };
      }
      if (!p.nc || !/^[0-9a-fA-F]{8}$/.test(p.nc) || !p.cnonce) {
        return { ok: false, status: 400, reason: 'qop=auth without an 8-hex-digit nc and a cnonce' };
      }
      nc = parseInt(p.nc, 16);
      if (nc === 0) {
        return { ok: false, status: 400, reason: 'nc 00000000' };
      }
    }
    const seen = this.#used.get(p.nonce);
    if (seen ? nc <= seen.nc : issued <= this.#forgottenBefore) {
      return { ok: false, status: 401, stale: true, reason: 'nonce count replayed' };
    }
    const secrets = this.#lookup(p.username);
    const ha1 = secrets ? (alg === 'MD5' ? secrets.ha1Md5 : secrets.ha1Sha256) : '';
    // an unknown user, or one without this algorithm's HA1, is checked against a dummy so that the
    // timing does not tell which users exist
    const h = (s: string) => createHash(HASH[alg]).update(s).digest('hex');
    const ha2 = h(`${method}:${p.uri}`);
    const expected = h(p.qop ? `${ha1 || h('x')}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}` : `${ha1 || h('x')}:${p.nonce}:${ha2}`);
    const given = Buffer.from(p.response.toLowerCase());
    const match = given.length === expected.length && timingSafeEqual(given, Buffer.from(expected));
    if (!match || !ha1) {
      return { ok: false, status: 403, reason: 'wrong credentials' };
    }
    this.#remember(p.nonce, nc, issued, now);

    return { ok: true, username: p.username, algorithm: alg };
  }

  #nonce(): string {
    const ts = this.#now().toString(36);
    const rand = randomBytes(12).toString('base64url');

    return `${ts}.${rand}.${this.#mac(`${ts}.${rand}`)}`;
  }

  #mac(s: string): string {
    return createHmac('sha256', this.#key).update(s).digest('base64url').slice(0, 22);
  }

  /** When a nonce of ours was issued (ms), or undefined when it is not ours. */
  #nonceIssued(nonce: string): number | undefined {
    const parts = nonce.split('.');
    if (parts.length !== 3 || !/^[0-9a-z]{1,12}$/.test(parts[0]!)) {
      return undefined;
    }
    const want = Buffer.from(this.#mac(`${parts[0]}.${parts[1]}`));
    const got = Buffer.from(parts[2]!);
    if (want.length !== got.length || !timingSafeEqual(want, got)) {
      return undefined;
    }

    return parseInt(parts[0]!, 36);
  }

  #remember(nonce: string, nc: number, issued: number, now: number): void {
    this.#used.delete(nonce);
    this.#used.set(nonce, { nc, issued });
    if (this.#used.size <= this.#max) {
      return;
    }
    for (const [n, e] of this.#used) {
      if (now - e.issued > this.#ttlMs) {
        this.#used.delete(n);
      }
    }
    while (this.#used.size > this.#max) {
      const [n, e] = this.#used.entries().next().value as [string, { nc: number; issued: number }];
      this.#used.delete(n);
      this.#forgottenBefore = Math.max(this.#forgottenBefore, e.issued);
    }
  }
}

/** HA1 = H(username:realm:password) in hex (RFC 7616 §3.4.2): for configuration and tests. */
export function digestHa1(algorithm: DigestAlgorithm, username: string, realm: string, password: string): string {
  return createHash(HASH[algorithm]).update(`${username}:${realm}:${password}`).digest('hex');
}
