/**
 * JWT revocation by token id (`jti`, RFC 7519 §4.1.7): the admin API revokes an id, every node
 * refuses sign-ins with it (AUTH_REVOKED) and closes the live sessions that signed in with it.
 *
 * Keys: `{p}revoked:{<jti>}` (string, the revocation time; expires when the token does, or after
 * `security.revocation.defaultTtlS` when the revocation names no expiry). Every node hears of a
 * revocation on the pub/sub channel `{p}revocations` (message: the jti) through a subscriber
 * connection of its own. Lookups fail open (Redis unavailable: the sign-in proceeds, warned once).
 */
import { type Logger } from '../log/logger.js';
import { type StoreRedis } from '../state/store.js';
import { type WindowCounter } from './rate-limit.js';

/** Options of RevocationList. */
export interface RevocationOptions {
  counter: WindowCounter;
  /** TTL of a revocation without an expiry, s. */
  defaultTtlS: number;
  logger: Logger;
}

/** Token ids: what jose accepts as a jti, bounded. */
export const JTI = /^[\x21-\x7e]{1,256}$/;

/** Revoked token ids in Redis, and the revocation channel between nodes. */
export class RevocationList {
  readonly #c: WindowCounter;
  readonly #opts: RevocationOptions;
  readonly #log: Logger;
  #sub: StoreRedis | undefined;

  constructor(opts: RevocationOptions) {
    this.#c = opts.counter;
    this.#opts = opts;
    this.#log = opts.logger;
  }

  /** The key of a revoked id. */
  key(jti: string): string {
    return `${this.#c.prefix}revoked:{${jti}}`;
  }

  /** The pub/sub channel of revocations. */
  get channel(): string {
    return `${this.#c.prefix}revocations`;
  }

  /**
   * Revokes a token id until `expiresAt` (the token's exp; default: now + defaultTtlS) and tells
   * every node. Resolves the TTL used, s.
   * @throws when Redis is unavailable (the admin API answers 503)
   * @throws {RangeError} when expiresAt is in the past
   */
  async revoke(jti: string, expiresAt?: Date): Promise<{ ttlS: number }> {
    const ttlS = expiresAt ? Math.ceil((expiresAt.getTime() - Date.now()) / 1000) : this.#opts.defaultTtlS;
    if (ttlS <= 0) {
      throw new RangeError('expiresAt is in the past: the token cannot be used any more anyway');
    }
    const redis = this.#c.redis;
    await redis.set(this.key(jti), new Date().toISOString(), 'EX', ttlS);
    await redis.publish(this.channel, jti);

    return { ttlS };
  }

  /** Whether a token id is revoked (false when Redis does not answer: fail open). */
  async isRevoked(jti: string | undefined): Promise<boolean> {
    if (jti === undefined || jti === '') {
      return false;
    }

    return ((await this.#c.safely(this.#c.redis.exists(this.key(jti)))) ?? 0) > 0;
  }

  /**
   * Subscribes to revocations from every node (a connection of its own: a subscribed connection
   * cannot run other commands); `onRevoked` gets each revoked jti.
   */
  async subscribe(onRevoked: (jti: string) => void): Promise<void> {
    const sub = this.#c.redis.duplicate();
    this.#sub = sub;
    sub.on('error', (err: Error) => this.#log.debug({ err: err.message }, 'revocation subscriber error'));
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel && JTI.test(message)) {
        onRevoked(message);
      }
    });
    if (sub.status === 'wait') {
      await sub.connect();
    } else if (sub.status !== 'ready') {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the revocation subscriber did not connect to Redis within 10 s')), 10_000);
        sub.once('ready', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await sub.subscribe(this.channel);
  }

  /** Closes the subscriber connection. */
  async close(): Promise<void> {
    const sub = this.#sub;
    this.#sub = undefined;
    if (sub) {
      try {
        await sub.quit();
      } catch {
        sub.disconnect();
      }
    }
  }
}
