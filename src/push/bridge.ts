/**
 * The push bridge: picks the adapter for a device's channel and runs one push through it with a
 * per-provider concurrency limit, a per-attempt timeout and bounded retries of "retry later"
 * answers; reports dead tokens through `onDeadToken`. It never throws for a provider failure:
 * every outcome is a `PushResult`.
 *
 * Logs name the channel, kind, call id, result and a 12-hex-digit SHA-256 prefix of the token
 * (`tokenHash`), never the token, the caller or a provider's raw answer.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Logger } from '../log/logger.js';
import { ApnsProvider } from './apns.js';
import { type PushConfig, type ResolvedPushConfig, resolvePushConfig } from './config.js';
import { FcmProvider } from './fcm.js';
import { PushError, PushAuthError, PushConfigError, PUSH_CHANNELS, type PushChannel, type PushDevice, type PushMessage, type PushProvider, type PushResult, tokenHash } from './provider.js';
import { HonorProvider } from './honor.js';
import { HuaweiProvider } from './huawei.js';
import { MeizuProvider } from './meizu.js';
import { OppoProvider } from './oppo.js';
import { UmengProvider } from './umeng.js';
import { VivoProvider } from './vivo.js';
import { XiaomiProvider } from './xiaomi.js';
import { WebPushProvider } from './webpush.js';

/** What the bridge knows about one finished push (metrics). */
export interface PushOutcome {
  channel: PushChannel;
  kind: PushMessage['kind'];
  result: PushResult;
  /** Attempts made (1 = no retry). */
  attempts: number;
  /** From send() to the result, ms (queueing and backoff included). */
  durationMs: number;
}

/** Options of PushBridge. */
export interface PushBridgeOptions {
  /** The `push` configuration section (validated by pushConfigSchema). */
  config: PushConfig;
  logger: Logger;
  /**
   * Called once per push whose provider said the token is dead, with the token that was used
   * (APNs cancel/missed: the device's alertToken). Errors and rejections are logged, not thrown.
   */
  onDeadToken: (channel: PushChannel, token: string) => void | Promise<void>;
  /** Called after every push (metrics); errors are logged. */
  onOutcome?: (outcome: PushOutcome) => void;
  /** Adapters to use instead of (or in addition to) the configured ones (tests). */
  providers?: Partial<Record<PushChannel, PushProvider>>;
}

/** A FIFO semaphore. */
class Limiter {
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.max) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) {
        next();
      } else {
        this.#active--;
      }
    }
  }
}

function buildProvider(channel: PushChannel, cfg: ResolvedPushConfig): PushProvider | undefined {
  const ca = cfg.ca;
  switch (channel) {
    case 'apns': {
      return cfg.apns && new ApnsProvider(cfg.apns, ca);
    }
    case 'fcm': {
      return cfg.fcm && new FcmProvider(cfg.fcm, ca);
    }
    case 'webpush': {
      return cfg.webpush && new WebPushProvider(cfg.webpush, ca);
    }
    case 'umeng': {
      return cfg.umeng && new UmengProvider(cfg.umeng, ca);
    }
    case 'huawei': {
      return cfg.huawei && new HuaweiProvider(cfg.huawei, ca);
    }
    case 'honor': {
      return cfg.honor && new HonorProvider(cfg.honor, ca);
    }
    case 'xiaomi': {
      return cfg.xiaomi && new XiaomiProvider(cfg.xiaomi, ca);
    }
    case 'oppo': {
      return cfg.oppo && new OppoProvider(cfg.oppo, ca);
    }
    case 'vivo': {
      return cfg.vivo && new VivoProvider(cfg.vivo, ca);
    }
    case 'meizu': {
      return cfg.meizu && new MeizuProvider(cfg.meizu, ca);
    }
  }
}

/** One adapter per enabled channel behind one send(); see the file comment. */
export class PushBridge {
  readonly #cfg: ResolvedPushConfig;
  readonly #log: Logger;
  readonly #onDeadToken: PushBridgeOptions['onDeadToken'];
  readonly #onOutcome: PushBridgeOptions['onOutcome'];
  readonly #providers = new Map<PushChannel, PushProvider>();
  readonly #limiters = new Map<PushChannel, Limiter>();
  readonly #timeouts = new Map<PushChannel, number>();
  #closed = false;

  /**
   * Builds the adapters of the enabled channels.
   * @throws PushConfigError naming the channel when its key file cannot be read or its adapter cannot be built
   */
  constructor(opts: PushBridgeOptions) {
    try {
      this.#cfg = resolvePushConfig(opts.config);
    } catch (err) {
      throw new PushConfigError((err as Error).message, { cause: err });
    }
    this.#log = opts.logger.child({ component: 'push' });
    this.#onDeadToken = opts.onDeadToken;
    this.#onOutcome = opts.onOutcome;
    for (const channel of PUSH_CHANNELS) {
      let provider: PushProvider | undefined;
      try {
        provider = opts.providers?.[channel] ?? buildProvider(channel, this.#cfg);
      } catch (err) {
        throw new PushConfigError(`push.${channel}: ${(err as Error).message}`, { cause: err });
      }
      if (!provider) {
        continue;
      }
      const ch = (this.#cfg[channel] as { timeoutMs: number; concurrency: number } | undefined) ?? this.#cfg;
      this.#providers.set(channel, provider);
      this.#limiters.set(channel, new Limiter(ch.concurrency));
      this.#timeouts.set(channel, ch.timeoutMs);
    }
  }

  /** The channels with an adapter. */
  get channels(): PushChannel[] {
    return [...this.#providers.keys()];
  }

  /** The adapter of a channel, if enabled (tests, metrics). */
  provider(channel: PushChannel): PushProvider | undefined {
    return this.#providers.get(channel);
  }

  /**
   * Sends one push to one device and resolves with its outcome; never rejects. A disabled channel
   * gives `rejected` / `channel-disabled`; a dead token calls onDeadToken before resolving.
   */
  async send(device: PushDevice, message: PushMessage): Promise<PushResult> {
    const started = Date.now();
    const provider = this.#providers.get(device.channel);
    const log = this.#log.child({ channel: device.channel, kind: message.kind, callId: message.callId, tokenHash: tokenHash(device.token) });
    if (this.#closed || !provider) {
      const result: PushResult = { status: 'rejected', reason: this.#closed ? 'bridge-closed' : 'channel-disabled' };
      log.warn({ reason: result.reason }, 'push not sent');
      this.#outcome(device.channel, message, result, 0, started);

      return result;
    }
    let attempts = 0;
    let result: PushResult;
    for (;;) {
      attempts++;
      result = await this.#attempt(provider, device, message);
      if (result.status !== 'retry-later' || attempts >= this.#cfg.maxAttempts) {
        break;
      }
      const backoff = Math.min(this.#cfg.backoffMaxMs, this.#cfg.backoffBaseMs * 2 ** (attempts - 1)) * (0.5 + Math.random() / 2);
      if (result.retryAfterMs > this.#cfg.backoffMaxMs) {
        break; // the provider asks for a longer pause than a ringing call can wait
      }
      const delay = Math.max(result.retryAfterMs, backoff);
      if (message.ttlSeconds > 0 && Date.now() - started + delay > message.ttlSeconds * 1000) {
        break; // the push would be stale before the retry
      }
      log.debug({ reason: result.reason, attempt: attempts, delayMs: Math.round(delay) }, 'push retry later');
      await sleep(delay);
    }
    const fields = { status: result.status, reason: 'reason' in result ? result.reason : undefined, attempts, ms: Date.now() - started };
    if (result.status === 'delivered') {
      log.debug(fields, 'push delivered');
    } else if (result.status === 'dead-token') {
      log.info(fields, 'push token reported dead');
      const used = device.channel === 'apns' && message.kind !== 'call' ? device.alertToken : device.token;
      if (used) {
        try {
          await this.#onDeadToken(device.channel, used);
        } catch (err) {
          log.error({ err }, 'onDeadToken failed');
        }
      }
    } else {
      log.warn(fields, 'push not delivered');
    }
    this.#outcome(device.channel, message, result, attempts, started);

    return result;
  }

  async #attempt(provider: PushProvider, device: PushDevice, message: PushMessage): Promise<PushResult> {
    const limiter = this.#limiters.get(provider.channel)!;
    const timeoutMs = this.#timeouts.get(provider.channel)!;

    return limiter.run(async () => {
      const ac = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<PushResult>((resolve) => {
        timer = setTimeout(() => {
          ac.abort();
          resolve({ status: 'retry-later', retryAfterMs: 0, reason: 'timeout' });
        }, timeoutMs);
      });
      const sent = provider.send(device, message, { signal: ac.signal }).catch((err: unknown) => this.#errorResult(provider.channel, err));
      try {
        return await Promise.race([sent, timedOut]);
      } finally {
        clearTimeout(timer);
      }
    });
  }

  #errorResult(channel: PushChannel, err: unknown): PushResult {
    if (err instanceof PushAuthError) {
      this.#log.warn({ channel, code: err.code, err }, 'push provider auth failed');

      return err.retryable ? { status: 'retry-later', retryAfterMs: 0, reason: 'auth' } : { status: 'rejected', reason: 'auth' };
    }
    if (err instanceof PushError) {
      switch (err.code) {
        case 'GW_ERR_PUSH_TIMEOUT': {
          return { status: 'retry-later', retryAfterMs: 0, reason: 'timeout' };
        }
        case 'GW_ERR_PUSH_TRANSPORT': {
          this.#log.warn({ channel, code: err.code, err }, 'push provider unreachable');

          return { status: 'retry-later', retryAfterMs: 0, reason: 'transport' };
        }
        case 'GW_ERR_PUSH_PROTOCOL': {
          this.#log.warn({ channel, code: err.code, err }, 'push provider answer unreadable');

          return { status: 'rejected', reason: 'protocol' };
        }
        default: {
          this.#log.warn({ channel, code: err.code, err }, 'push failed');

          return { status: 'rejected', reason: 'config' };
        }
      }
    }
    this.#log.error({ channel, err }, 'push adapter failed unexpectedly');

    return { status: 'rejected', reason: 'internal' };
  }

  #outcome(channel: PushChannel, message: PushMessage, result: PushResult, attempts: number, started: number): void {
    if (!this.#onOutcome) {
      return;
    }
    try {
      this.#onOutcome({ channel, kind: message.kind, result, attempts, durationMs: Date.now() - started });
    } catch (err) {
      this.#log.error({ err }, 'onOutcome failed');
    }
  }

  /** Closes every adapter; later sends are rejected with reason bridge-closed. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    await Promise.allSettled([...this.#providers.values()].map((p) => p.close()));
  }
}
