/**
 * HTTP plumbing of the vendor adapters: one undici Agent per provider (keep-alive connections,
 * optional CA bundle), a request helper that maps network failures and timeouts to typed push
 * errors, Retry-After parsing, and `TokenCache`, the per-credential auth-token cache.
 */
import { Agent, errors as undiciErrors, request } from 'undici';
import { PushTimeoutError, PushTransportError } from './provider.js';

/** An HTTP answer read in full. */
export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Options of HttpClient. */
export interface HttpClientOptions {
  /** PEM CA bundle replacing the system's CAs (push.caFile). */
  ca?: string;
  /** Most connections per origin; default 64. */
  connections?: number;
}

/** A keep-alive HTTP(S) client for one provider. */
export class HttpClient {
  readonly #agent: Agent;

  constructor(opts: HttpClientOptions = {}) {
    this.#agent = new Agent({
      connections: opts.connections ?? 64,
      keepAliveTimeout: 30_000,
      ...(opts.ca ? { connect: { ca: opts.ca } } : {}),
    });
  }

  /**
   * Sends one request and reads the whole answer (bodies are small JSON documents).
   * @throws PushTimeoutError when `timeoutMs` passes or `signal` aborts first
   * @throws PushTransportError when no HTTP answer arrives (refused, reset, TLS failure)
   */
  async send(
    url: string,
    init: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; timeoutMs: number; signal?: AbortSignal },
  ): Promise<HttpAnswer> {
    const timeout = AbortSignal.timeout(init.timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    try {
      const res = await request(url, {
        method: init.method ?? 'POST',
        headers: init.headers ?? {},
        body: init.body ?? null,
        signal,
        dispatcher: this.#agent,
      });
      const text = await res.body.text();

      return { status: res.statusCode, headers: res.headers, text };
    } catch (err) {
      if (signal.aborted || err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
        throw new PushTimeoutError(`no answer from ${new URL(url).host} within ${init.timeoutMs} ms`, { cause: err });
      }
      throw new PushTransportError(`request to ${new URL(url).host} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Closes the connections; idempotent. */
  async close(): Promise<void> {
    if (!this.#agent.closed) {
      await this.#agent.close();
    }
  }
}

/** Retry-After (delay-seconds or HTTP-date) in ms, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === '') {
    return undefined;
  }
  if (/^\d+$/.test(v.trim())) {
    return Number(v.trim()) * 1000;
  }
  const t = Date.parse(v);

  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** JSON.parse that returns undefined instead of throwing. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** A token as an auth endpoint hands it out. */
export interface IssuedToken {
  token: string;
  /** Lifetime the provider states, seconds (undefined: unknown). */
  expiresInS?: number;
}

/** Options of TokenCache. */
export interface TokenCacheOptions {
  /** Use a token at most this long, seconds. */
  refreshS: number;
  /** Stop using a token this long before the provider's own expiry, seconds; default 300. */
  marginS?: number;
}

/**
 * Caches one credential's auth token: fetched on first use, reused until `refreshS` after it was
 * issued or `marginS` before the provider's expiry (whichever is first), then fetched again.
 * Concurrent callers share one fetch; a failed fetch is not cached.
 */
export class TokenCache {
  readonly #fetch: () => Promise<IssuedToken>;
  readonly #refreshMs: number;
  readonly #marginMs: number;
  #token: string | undefined;
  #validUntil = 0;
  #expiresAt = 0;
  #pending: Promise<string> | undefined;
  #fetches = 0;

  constructor(fetch: () => Promise<IssuedToken>, opts: TokenCacheOptions) {
    this.#fetch = fetch;
    this.#refreshMs = opts.refreshS * 1000;
    this.#marginMs = (opts.marginS ?? 300) * 1000;
  }

  /** How many times the token was fetched (tests, metrics). */
  get fetches(): number {
    return this.#fetches;
  }

  /** When the current token expires by the provider's word (ms since the epoch; 0: none cached). */
  get expiresAt(): number {
    return this.#token === undefined ? 0 : this.#expiresAt;
  }

  /** The current token, fetching a new one when there is none or it is due. */
  get(): Promise<string> {
    if (this.#token !== undefined && Date.now() < this.#validUntil) {
      return Promise.resolve(this.#token);
    }
    this.#pending ??= this.#refresh().finally(() => {
      this.#pending = undefined;
    });

    return this.#pending;
  }

  /** Drops `token` (the provider said it expired) so the next get() fetches a new one. */
  invalidate(token?: string): void {
    if (token === undefined || token === this.#token) {
      this.#token = undefined;
      this.#validUntil = 0;
    }
  }

  async #refresh(): Promise<string> {
    this.#fetches++;
    const issuedAt = Date.now();
    const t = await this.#fetch();
    let until = issuedAt + this.#refreshMs;
    this.#expiresAt = issuedAt + this.#refreshMs + this.#marginMs;
    if (t.expiresInS !== undefined && Number.isFinite(t.expiresInS)) {
      this.#expiresAt = issuedAt + t.expiresInS * 1000;
      until = Math.min(until, this.#expiresAt - this.#marginMs);
    }
    this.#token = t.token;
    // A lifetime shorter than the margin still serves this one call.
    this.#validUntil = Math.max(until, issuedAt);

    return t.token;
  }
}
