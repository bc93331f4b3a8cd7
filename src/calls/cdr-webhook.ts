/**
 * Delivery of finished calls' records (CallRecord, the same fields as the `{p}cdr` stream entry)
 * to an HTTP webhook: `CdrWebhook`.
 *
 * `post(record)` only puts the record in a bounded in-memory queue and returns; one worker sends the
 * queue in order, one request at a time, as `POST <url>` with the record as a JSON body. Each attempt
 * has a timeout; 5xx, 408, 429, timeouts and network errors are retried with exponential backoff and
 * jitter (a Retry-After header, seconds or HTTP date, lengthens the wait, up to backoffMaxMs); any
 * other answer below 200 or from 300 up is final. After maxAttempts the record is given up (one
 * warning, counted). The queue holds at most maxQueue records waiting to be sent: a new record
 * beyond that pushes the oldest waiting one out (counted, warned about at most every 5 s).
 *
 * Every request carries `Idempotency-Key: <callId>` (the same on every retry, so a receiver can drop
 * duplicates: an answer lost to a timeout means the record may arrive twice) and, with a secret,
 * `X-Ringbridge-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with the secret>`.
 *
 * Records are not persisted here: records still queued when the process dies are lost (the Redis
 * stream keeps them for `calls.recordTtlS`). Logs name the call id, the webhook's host, the
 * attempt and the status, never the URL's path or query, the headers, the body (numbers) or the
 * secret.
 */
import { createHmac } from 'node:crypto';
import { Agent, request } from 'undici';
import { type Logger } from '../log/logger.js';
import { parseRetryAfter } from '../push/http.js';
import { type CallRecord } from '../state/store.js';

/** Options of CdrWebhook. */
export interface CdrWebhookOptions {
  /** http(s) URL the records are POSTed to (its path and query are never logged). */
  url: string;
  /** Per-attempt limit from sending the request to the end of the answer, ms (≥ 1). */
  timeoutMs: number;
  /** Attempts per record, the first one included (≥ 1); then the record is given up. */
  maxAttempts: number;
  /** Wait before the 2nd attempt, ms; doubled per attempt, times a random factor of 0.5–1 (jitter). */
  backoffBaseMs: number;
  /** Longest wait between two attempts, ms; also the ceiling of a Retry-After the receiver asks for. */
  backoffMaxMs: number;
  /**
   * Extra request headers (e.g. Authorization). They can not replace content-type,
   * idempotency-key or x-ringbridge-signature. Never logged.
   */
  headers?: Record<string, string>;
  /** Key of the X-Ringbridge-Signature HMAC; absent or empty: no signature header. Never logged. */
  hmacSecret?: string;
  logger: Logger;
  /** Most records waiting to be sent (the one being sent not included), ≥ 1. */
  maxQueue: number;
}

/** Counters of a CdrWebhook (since it was made). */
export interface CdrWebhookStats {
  /** Records waiting (not counting the one being sent). */
  queued: number;
  /** Records the receiver answered 2xx to. */
  sent: number;
  /** Records given up after maxAttempts retryable failures. */
  failed: number;
  /** Records the receiver refused with a final answer (4xx other than 408/429, 3xx, 1xx). */
  rejected: number;
  /** Records pushed out of a full queue, or posted after close(). */
  dropped: number;
  /** Records still queued or in flight when close()'s deadline passed. */
  abandoned: number;
  /** Attempts made, all records together. */
  attempts: number;
}

interface Item {
  callId: string;
  body: string;
}

type Outcome = { kind: 'ok' } | { kind: 'final'; status: number } | { kind: 'retry'; why: string; retryAfterMs?: number } | { kind: 'aborted' };

/** Least interval between two "queue full" warnings, ms. */
const DROP_WARN_INTERVAL_MS = 5000;

/**
 * Sends call records to a webhook in the background, with retries; see the module comment.
 * Use one per process; call close() on shutdown.
 */
export class CdrWebhook {
  readonly #url: string;
  readonly #host: string;
  readonly #o: CdrWebhookOptions;
  readonly #headers: Record<string, string>;
  readonly #log: Logger;
  readonly #agent: Agent;
  readonly #queue: Item[] = [];
  /** Aborts the in-flight attempt and the backoff wait when close()'s deadline passes. */
  readonly #stop = new AbortController();
  #worker: Promise<void> | undefined;
  #closing = false;
  #closed: Promise<CdrWebhookStats> | undefined;
  #lastDropWarn = 0;
  #droppedSinceWarn = 0;
  readonly #stats: Omit<CdrWebhookStats, 'queued'> = { sent: 0, failed: 0, rejected: 0, dropped: 0, abandoned: 0, attempts: 0 };

  /**
   * @throws TypeError when `url` is not an http(s) URL or a number option is out of range
   *   (configuration errors; the schema in cdr-webhook-config.ts catches them earlier)
   */
  constructor(opts: CdrWebhookOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new TypeError('CdrWebhook: url is not a valid URL');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new TypeError(`CdrWebhook: url must be http(s), not ${u.protocol}`);
    }
    for (const k of ['timeoutMs', 'maxAttempts', 'backoffBaseMs', 'backoffMaxMs', 'maxQueue'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] < 1) {
        throw new TypeError(`CdrWebhook: ${k} must be an integer ≥ 1`);
      }
    }
    this.#url = opts.url;
    this.#host = u.host;
    this.#o = opts;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) {
      headers[k.toLowerCase()] = v;
    }
    delete headers['idempotency-key'];
    delete headers['x-ringbridge-signature'];
    delete headers['content-length'];
    headers['content-type'] = 'application/json';
    headers['user-agent'] ??= 'ringbridge-cdr-webhook';
    this.#headers = headers;
    this.#log = opts.logger.child({ component: 'cdr-webhook' });
    this.#agent = new Agent({ connections: 4, keepAliveTimeout: 30_000 });
  }

  /** Counters and the queue length now. */
  get stats(): CdrWebhookStats {
    return { queued: this.#queue.length, ...this.#stats };
  }

  /**
   * Queues a record for delivery and returns at once. Never throws: after close() began, or when
   * the record can not be serialised, it is dropped (counted, logged).
   */
  post(record: CallRecord): void {
    try {
      if (this.#closing) {
        this.#stats.dropped++;
        this.#log.warn({ callId: record.callId }, 'call record not sent to the webhook: shutting down');

        return;
      }
      // Serialised now: the body is a snapshot, and the signature covers exactly these bytes.
      const item: Item = { callId: record.callId, body: JSON.stringify(record) };
      if (this.#queue.length >= this.#o.maxQueue) {
        const oldest = this.#queue.shift()!;
        this.#stats.dropped++;
        this.#droppedSinceWarn++;
        const now = Date.now();
        if (now - this.#lastDropWarn >= DROP_WARN_INTERVAL_MS) {
          this.#log.warn(
            { callId: oldest.callId, droppedSinceLastWarning: this.#droppedSinceWarn, droppedTotal: this.#stats.dropped, maxQueue: this.#o.maxQueue },
            'webhook queue full: oldest call record dropped',
          );
          this.#lastDropWarn = now;
          this.#droppedSinceWarn = 0;
        }
      }
      this.#queue.push(item);
      this.#worker ??= this.#run().finally(() => {
        this.#worker = undefined;
      });
    } catch (err) {
      this.#stats.dropped++;
      this.#log.error({ callId: record?.callId, err: (err as Error).message }, 'call record not queued for the webhook');
    }
  }

  /**
   * Resolves when nothing is queued or in flight (a record in backoff counts as in flight).
   * For tests and tools; never rejects.
   */
  async drained(): Promise<void> {
    while (this.#worker) {
      await this.#worker;
    }
  }

  /**
   * Stops taking records (later post() calls drop theirs) and keeps delivering the queue, retries
   * included, for at most `deadlineMs`; then the attempt in flight is aborted, what is left is
   * counted as abandoned (one warning), and the connections are closed. Idempotent; never rejects.
   * @param deadlineMs how long to keep flushing, ms (default 5000)
   * @returns the final counters
   */
  close(deadlineMs = 5000): Promise<CdrWebhookStats> {
    this.#closed ??= this.#close(deadlineMs);

    return this.#closed;
  }

  async #close(deadlineMs: number): Promise<CdrWebhookStats> {
    this.#closing = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, deadlineMs);
    });
    try {
      await Promise.race([this.drained(), deadline]);
    } finally {
      clearTimeout(timer);
    }
    if (this.#worker) {
      this.#stop.abort();
      await this.drained();
    }
    const left = this.#queue.length;
    if (left > 0) {
      this.#queue.length = 0;
      this.#stats.abandoned += left;
    }
    if (this.#stats.abandoned > 0) {
      this.#log.warn({ abandoned: this.#stats.abandoned, deadlineMs }, 'call records not delivered to the webhook before the shutdown deadline');
    }
    try {
      await this.#agent.destroy();
    } catch {
      // already closed
    }

    return this.stats;
  }

  async #run(): Promise<void> {
    // post() returns before anything of the delivery runs.
    await Promise.resolve();
    while (this.#queue.length > 0 && !this.#stop.signal.aborted) {
      const item = this.#queue.shift()!;
      try {
        await this.#deliver(item);
      } catch (err) {
        // Not expected (#attempt maps every failure); never lets the worker die with records queued.
        this.#stats.failed++;
        this.#log.error({ callId: item.callId, err: (err as Error).message }, 'call record delivery failed unexpectedly');
      }
    }
  }

  /** Attempts one record until it is delivered, refused, given up or the close deadline passes. */
  async #deliver(item: Item): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const out = await this.#attempt(item);
      if (out.kind === 'ok') {
        this.#stats.sent++;
        this.#log.debug({ callId: item.callId, attempt }, 'call record delivered to the webhook');

        return;
      }
      if (out.kind === 'aborted') {
        this.#stats.abandoned++;

        return;
      }
      if (out.kind === 'final') {
        this.#stats.rejected++;
        this.#log.warn({ callId: item.callId, host: this.#host, status: out.status, attempt }, 'webhook refused the call record (not retried)');

        return;
      }
      if (attempt >= this.#o.maxAttempts) {
        this.#stats.failed++;
        this.#log.warn({ callId: item.callId, host: this.#host, attempts: attempt, lastError: out.why }, 'call record given up after the last webhook attempt');

        return;
      }
      const backoff = Math.min(this.#o.backoffMaxMs, this.#o.backoffBaseMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      const delay = Math.round(Math.min(this.#o.backoffMaxMs, Math.max(backoff, out.retryAfterMs ?? 0)));
      this.#log.debug({ callId: item.callId, host: this.#host, attempt, why: out.why, retryInMs: delay }, 'webhook attempt failed; retrying');
      if (!(await this.#sleep(delay))) {
        this.#stats.abandoned++;

        return;
      }
    }
  }

  /** One POST; maps every answer and failure to an outcome (never throws). */
  async #attempt(item: Item): Promise<Outcome> {
    this.#stats.attempts++;
    const headers: Record<string, string> = { ...this.#headers, 'idempotency-key': item.callId };
    if (this.#o.hmacSecret) {
      headers['x-ringbridge-signature'] = `sha256=${createHmac('sha256', this.#o.hmacSecret).update(item.body).digest('hex')}`;
    }
    const signal = AbortSignal.any([AbortSignal.timeout(this.#o.timeoutMs), this.#stop.signal]);
    try {
      const res = await request(this.#url, { method: 'POST', headers, body: item.body, signal, dispatcher: this.#agent });
      // The answer's body is not used (nor logged); reading it lets the connection be reused.
      await res.body.dump({ limit: 64 * 1024, signal });
      const s = res.statusCode;
      if (s >= 200 && s < 300) {
        return { kind: 'ok' };
      }
      if (s >= 500 || s === 408 || s === 429) {
        const retryAfterMs = parseRetryAfter(res.headers['retry-after']);

        return { kind: 'retry', why: `HTTP ${s}`, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
      }

      return { kind: 'final', status: s };
    } catch (err) {
      if (this.#stop.signal.aborted) {
        return { kind: 'aborted' };
      }
      if (signal.aborted) {
        return { kind: 'retry', why: `no answer within ${this.#o.timeoutMs} ms` };
      }
      const e = err as Error & { code?: string };

      return { kind: 'retry', why: e.code ? `${e.code}: ${e.message}` : e.message };
    }
  }

  /** Waits `ms`; false when close()'s deadline cut the wait short. */
  #sleep(ms: number): Promise<boolean> {
    const signal = this.#stop.signal;
    if (signal.aborted) {
      return Promise.resolve(false);
    }

    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(t);
        signal.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = (): void => done(false);
      const t = setTimeout(() => done(true), ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
