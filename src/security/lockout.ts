/**
 * Lockout after repeated failed authentication: `maxFailures` failed trunk digest
 * authentications (kind `sip`) or failed agent sign-ins (kind `ws`) from one address within
 * `windowMs` lock that address for `lockMs`, on every node (Redis). SIP requests from a locked
 * address get 403; WebSocket sign-ins get AUTH_LOCKED and the socket closes (4429).
 *
 * Keys: the failures count in the window counter `{p}rl:{fail-<kind>:<address>}`, the lock in
 * `{p}lock:{<kind>:<address>}` (string, PX = lockMs). Fails open like the rate limits.
 */
import { type WindowCounter } from './rate-limit.js';

/**
 * Which authentication failed: trunk digest (`sip`), agent sign-in (`ws`), a SIP device's REGISTER
 * digest per source (`reg`) and per username (`reg-user`, src/sip/registrar/lockout.ts). Each kind
 * locks only its own requests.
 */
export type LockoutKind = 'sip' | 'ws' | 'reg' | 'reg-user';

/** Options of Lockout (config `security.lockout`). */
export interface LockoutOptions {
  counter: WindowCounter;
  /** Failures that lock; 0 turns the lockout off. */
  maxFailures: number;
  windowMs: number;
  lockMs: number;
}

/** Counts failed authentications and locks addresses. */
export class Lockout {
  readonly #c: WindowCounter;
  readonly #opts: LockoutOptions;

  constructor(opts: LockoutOptions) {
    this.#c = opts.counter;
    this.#opts = opts;
  }

  /** Whether the lockout is on. */
  get enabled(): boolean {
    return this.#opts.maxFailures > 0;
  }

  /** The lock key of an address. */
  key(kind: LockoutKind, address: string): string {
    return `${this.#c.prefix}lock:{${kind}:${address}}`;
  }

  /** Whether an address is locked (false when Redis does not answer: fail open). */
  async isLocked(kind: LockoutKind, address: string): Promise<boolean> {
    if (!this.enabled || address === '') {
      return false;
    }

    return ((await this.#c.safely(this.#c.redis.exists(this.key(kind, address)))) ?? 0) > 0;
  }

  /** Counts a failure; resolves true when this failure locked the address. */
  async failed(kind: LockoutKind, address: string): Promise<boolean> {
    if (!this.enabled || address === '') {
      return false;
    }
    const h = await this.#c.hit(`fail-${kind}`, address, this.#opts.windowMs);
    if (!h || h.count < this.#opts.maxFailures) {
      return false;
    }
    await this.#c.safely(this.#c.redis.set(this.key(kind, address), String(Date.now()), 'PX', this.#opts.lockMs));
    await this.#c.reset(`fail-${kind}`, address);

    return true;
  }
}
