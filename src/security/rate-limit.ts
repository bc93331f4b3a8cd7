/**
 * Fixed-window counters in Redis, shared by every node of the cluster: the rate limits and the
 * failed-authentication counts of src/security. One Lua script increments a window's counter and
 * starts its expiry on the first hit, so a counter never outlives its window.
 *
 * Keys (see the schema in src/state/store.ts): `{p}rl:{<scope>:<id>}` (string, PX = the
 * window), the id in the hash tag so that each counter lives in one Redis Cluster slot.
 *
 * Failure policy: limits fail open. When Redis does not answer within `timeoutMs` (or errors)
 * the hit is allowed and a warning is logged once until Redis answers again.
 *
 * An in-process count fronts each limit: once this node alone has seen more than the limit in a
 * window, it refuses without asking Redis. The cluster's count is never below one node's, so this
 * refuses nothing Redis would allow; it spares Redis the flood, and keeps at least the per-node
 * limit when a flood makes Redis too slow to answer (which would otherwise fail open).
 */
import { type Logger } from '../log/logger.js';
import { type StoreRedis } from '../state/store.js';

/** INCR; PEXPIRE on the first hit (and on a key that lost its TTL); returns {count, ms left}. */
const HIT_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
`;

/** Most keys of the in-process front (sources, trunks, agents in their current windows). */
const MAX_LOCAL_KEYS = 50_000;

/** One counted hit: the window's count including it, and when the window ends. */
export interface WindowHit {
  count: number;
  /** ms until the window (and its counter) ends. */
  resetMs: number;
}

/** A limit's verdict. */
export interface LimitVerdict {
  allowed: boolean;
  /** Whole seconds until the window ends (at least 1), for Retry-After (RFC 3261 §20.33). */
  retryAfterS: number;
  /** Whether a count decided; false: allowed uncounted (limit 0, or Redis failed: fail open). */
  counted: boolean;
}

/** Whole seconds (at least 1) of a remaining window, for Retry-After. */
export function retryAfterSeconds(resetMs: number): number {
  return Math.max(1, Math.ceil(resetMs / 1000));
}

/** Options of WindowCounter. */
export interface WindowCounterOptions {
  redis: StoreRedis;
  /** redis.keyPrefix. */
  keyPrefix: string;
  logger: Logger;
  /** Longest wait for Redis before failing open, ms (default 250). */
  timeoutMs?: number;
}

/** Fixed-window counters and limits in Redis. */
export class WindowCounter {
  readonly #redis: StoreRedis;
  readonly #p: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  #warned = false;
  /** This node's own counts per limit key: window end (ms) and hits. */
  readonly #local = new Map<string, { until: number; count: number }>();

  constructor(opts: WindowCounterOptions) {
    this.#redis = opts.redis;
    this.#p = opts.keyPrefix;
    this.#log = opts.logger;
    this.#timeoutMs = opts.timeoutMs ?? 250;
  }

  /** The key of a counter: `{p}rl:{<scope>:<id>}`. */
  key(scope: string, id: string): string {
    return `${this.#p}rl:{${scope}:${id}}`;
  }

  /**
   * Counts one hit in the window of `scope`/`id` (the window starts with its first hit).
   * Resolves undefined when Redis failed or was too slow (fail open).
   */
  async hit(scope: string, id: string, windowMs: number): Promise<WindowHit | undefined> {
    const r = await this.#withTimeout(this.#redis.eval(HIT_SCRIPT, 1, this.key(scope, id), String(windowMs)) as Promise<[number, number]>);

    return r ? { count: Number(r[0]), resetMs: Math.max(0, Number(r[1])) } : undefined;
  }

  /** Forgets a counter (e.g. the failures of an address once it is locked). */
  async reset(scope: string, id: string): Promise<void> {
    await this.#withTimeout(this.#redis.del(this.key(scope, id)));
  }

  /**
   * Counts a hit and compares it with a limit: allowed while the window's count is at most
   * `limit`. A limit of 0 allows everything without touching Redis.
   */
  async limit(scope: string, id: string, limit: number, windowMs: number): Promise<LimitVerdict> {
    if (limit <= 0) {
      return { allowed: true, retryAfterS: 0, counted: false };
    }
    const local = this.#localHit(`${scope}:${id}`, windowMs);
    if (local.count > limit) {
      return { allowed: false, retryAfterS: retryAfterSeconds(local.until - Date.now()), counted: true };
    }
    const h = await this.hit(scope, id, windowMs);
    if (!h) {
      return { allowed: true, retryAfterS: 0, counted: false };
    }

    return { allowed: h.count <= limit, retryAfterS: retryAfterSeconds(h.resetMs), counted: true };
  }

  /** Counts a hit in this node's own window of a key (bounded: a flood of spoofed sources cannot grow it without end). */
  #localHit(key: string, windowMs: number): { until: number; count: number } {
    const now = Date.now();
    let e = this.#local.get(key);
    if (!e || e.until <= now) {
      if (this.#local.size >= MAX_LOCAL_KEYS) {
        for (const [k, v] of this.#local) {
          if (v.until <= now) {
            this.#local.delete(k);
          }
        }
        if (this.#local.size >= MAX_LOCAL_KEYS) {
          this.#local.clear(); // only the front goes; Redis still counts
        }
      }
      e = { until: now + windowMs, count: 0 };
      this.#local.set(key, e);
    }
    e.count++;

    return e;
  }

  /** The Redis client (for the other security stores, which share the fail-open policy through safely()). */
  get redis(): StoreRedis {
    return this.#redis;
  }

  /** Redis key prefix. */
  get prefix(): string {
    return this.#p;
  }

  /** Runs a Redis command under the fail-open policy: undefined on error or timeout (warned once). */
  safely<T>(p: Promise<T>): Promise<T | undefined> {
    return this.#withTimeout(p);
  }

  async #withTimeout<T>(p: Promise<T>): Promise<T | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#timeoutMs);
    });
    try {
      const r = await Promise.race([p, timeout]);
      if (r === 'timeout') {
        p.catch(() => undefined);
        this.#failed(new Error(`no answer within ${this.#timeoutMs} ms`));

        return undefined;
      }
      this.#warned = false;

      return r;
    } catch (err) {
      this.#failed(err as Error);

      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  #failed(err: Error): void {
    if (!this.#warned) {
      this.#warned = true;
      this.#log.warn({ err: err.message }, 'Redis unavailable for security counters: rate limits and lockouts fail open until it answers');
    }
  }
}
