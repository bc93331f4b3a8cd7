/**
 * The registrar's own lockout against digest guessing (README "SIP devices (registrar)"), apart
 * from the trunks' (`security.lockout`, kind `sip`): REGISTERs from anywhere, spoofed or with a
 * stale password, must never lock out a trunk's INVITEs.
 *
 * Two counters, both in Redis through the security window counters (shared by every node, failing
 * open like the other limits):
 *
 * - per source (kind `reg`): `maxFailuresPerSource` failed digest responses within `windowMs` lock
 *   the source for `lockMs`. IPv6 sources count by their /64 (one host can use a whole /64). A
 *   source inside a trunk's `inbound.allow` is never counted or locked. Behind a trusted proxy
 *   (`sip.trustedProxies`) the source is the one its `X-RB-Source` names; when that header is
 *   missing or malformed the proxy's own address counts (what the proxy shows us), never nothing.
 * - per username (kind `reg-user`, the digest username, lower-cased and hashed in the key):
 *   `maxFailuresPerUser` failures from any sources lock the account for `lockMs`, so that rotating
 *   addresses does not give unlimited guesses against one account. The price: someone guessing can
 *   keep an account's devices from registering for `lockMs` (they keep their bindings until those
 *   expire); the lock is logged with the agent id.
 *
 * A locked source or user gets 403 before its credentials are checked.
 */
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { Lockout } from '../../security/lockout.js';
import { type WindowCounter } from '../../security/rate-limit.js';
import { sourceGroup } from '../../security/source-group.js';
import { trunkSource } from '../trunks.js';

/** `sipDevices.lockout`. */
export interface RegisterLockoutConfig {
  /** Failed digest responses from one source (IPv6: one /64) within windowMs that lock it; 0: off. */
  maxFailuresPerSource: number;
  /** Failed digest responses for one username (from any source) within windowMs that lock it; 0: off. */
  maxFailuresPerUser: number;
  windowMs: number;
  lockMs: number;
}

/** Options of RegisterLockout. */
export interface RegisterLockoutOptions {
  counter: WindowCounter;
  config: RegisterLockoutConfig;
  /** Every trunk's `inbound.allow` (IPs or CIDR blocks): never locked. */
  trunkSources: readonly string[];
  /** `sip.trustedProxies`: whose `X-RB-Source` names the real source. */
  trustedProxies: readonly string[];
}

/** Why a REGISTER is refused by the lockout. */
export type LockedBy = 'source' | 'user';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Failed REGISTER digests counted per source and per username. */
export class RegisterLockout {
  readonly #bySource: Lockout;
  readonly #byUser: Lockout;
  readonly #trunks: Range[];
  readonly #proxies: readonly string[];

  /** @throws {Error} when a trunk source is not an IP address or CIDR block (the config schema checked them) */
  constructor(opts: RegisterLockoutOptions) {
    const { config: c } = opts;
    this.#bySource = new Lockout({ counter: opts.counter, maxFailures: c.maxFailuresPerSource, windowMs: c.windowMs, lockMs: c.lockMs });
    this.#byUser = new Lockout({ counter: opts.counter, maxFailures: c.maxFailuresPerUser, windowMs: c.windowMs, lockMs: c.lockMs });
    this.#trunks = opts.trunkSources.map((s) => {
      if (s.includes('/')) {
        return ipaddr.parseCIDR(s);
      }
      const a = ipaddr.parse(s);

      return [a, a.kind() === 'ipv4' ? 32 : 128] as Range;
    });
    this.#proxies = opts.trustedProxies;
  }

  /**
   * The source a REGISTER counts against: the packet's source address, or behind a trusted proxy
   * the address in its `X-RB-Source` (the proxy's own address when that is missing or malformed),
   * grouped (IPv6 by /64); `''` for a trunk's address (never counted).
   */
  source(packetSource: string, sourceHeader: string | undefined): string {
    const s = trunkSource(packetSource, sourceHeader, this.#proxies);
    const address = s.address === '' ? packetSource : s.address;
    if (this.#isTrunk(address)) {
      return '';
    }

    return sourceGroup(address);
  }

  /** What locks a REGISTER from `source` (see source()) for `username`, if anything (fail open). */
  async locked(source: string, username: string | undefined): Promise<LockedBy | undefined> {
    if (await this.#bySource.isLocked('reg', source)) {
      return 'source';
    }
    if (username && (await this.#byUser.isLocked('reg-user', userKey(username)))) {
      return 'user';
    }

    return undefined;
  }

  /** Counts a failed digest response; resolves with what this failure locked. */
  async failed(source: string, username: string | undefined): Promise<{ source: boolean; user: boolean }> {
    const [bySource, byUser] = await Promise.all([this.#bySource.failed('reg', source), username ? this.#byUser.failed('reg-user', userKey(username)) : Promise.resolve(false)]);

    return { source: bySource, user: byUser };
  }

  #isTrunk(address: string): boolean {
    let a: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      a = ipaddr.process(address.replace(/^\[|\]$/g, '').split('%')[0]!);
    } catch {
      return false;
    }

    return this.#trunks.some((r) => a.kind() === r[0].kind() && a.match(r));
  }
}

/** A username as a key part: lower-cased, hashed (no user names in Redis keys, bounded length). */
function userKey(username: string): string {
  return createHash('sha256').update(username.toLowerCase()).digest('hex').slice(0, 32);
}
