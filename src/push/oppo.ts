/**
 * OPPO (HeyTap) Push adapter (push-channels.md §6).
 *
 * Auth: `POST {baseUrl}/server/v1/auth`, form app_key, timestamp (ms) and
 * sign = hex SHA-256(app_key + timestamp + master_secret); the auth_token (valid 24 h) is cached
 * for push.oppo.tokenRefreshS (default 1 h) and fetched again once when a send answers code 11.
 *
 * Send: `POST {baseUrl}/server/v1/message/notification/unicast`, form auth_token and message (JSON):
 * target_type 2 (registration id), target_value, and a notification (OPPO has notification-bar
 * messages only) with title, content, category (push.oppo.category), notify_level
 * (push.oppo.notifyLevel for calls, 1 otherwise), channel_id, off_line true with off_line_ttl = the
 * TTL, app_message_id (dedupe, per call and kind), and the wake data in action_parameters.
 *
 * Answer `{code, message, data: {messageId}}`: 0 success; 11 invalid auth_token; -2 (flow
 * control), -1 (unavailable), 13 (call limit), 55 (frequency) and HTTP 429/5xx retry-later; codes
 * in push.oppo.deadTokenCodes (default 10000, UNCONFIRMED) dead.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, type IssuedToken, parseJson, TokenCache } from './http.js';
import { alertText, collapseIdOf, PushAuthError, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { codeOf, cut, httpRetryResult, jsonBody, sha256 } from './vendor-common.js';

/** Settings of OppoProvider (push.oppo resolved). */
export type OppoSettings = NonNullable<ResolvedPushConfig['oppo']>;

const RETRYABLE = new Set(['-2', '-1', '13', '55']);

/** OPPO Push over HTTPS. */
export class OppoProvider implements PushProvider {
  readonly channel = 'oppo' as const;
  readonly #s: OppoSettings;
  readonly #http: HttpClient;
  /** The auth_token cache (exposed for tests and metrics). */
  readonly tokens: TokenCache;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: OppoSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
    this.tokens = new TokenCache(() => this.#auth(), { refreshS: settings.tokenRefreshS, marginS: 300 });
  }

  async #auth(): Promise<IssuedToken> {
    const timestamp = String(Date.now());
    const sign = sha256(this.#s.appKey + timestamp + this.#s.masterSecret);
    const res = await this.#http.send(`${this.#s.baseUrl}/server/v1/auth`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ app_key: this.#s.appKey, timestamp, sign }).toString(),
      timeoutMs: this.#s.timeoutMs,
    });
    const body = parseJson(res.text) as { code?: unknown; message?: unknown; data?: { auth_token?: unknown } } | undefined;
    if (res.status !== 200 || codeOf(body?.code) !== '0' || typeof body?.data?.auth_token !== 'string') {
      throw new PushAuthError(`OPPO auth refused: code ${codeOf(body?.code) || `HTTP ${res.status}`}`, res.status >= 500 || res.status === 429 || RETRYABLE.has(codeOf(body?.code)));
    }

    return { token: body.data.auth_token, expiresInS: 24 * 3600 };
  }

  /** The message JSON for one device (see the file comment). */
  message(device: PushDevice, message: PushMessage): Record<string, unknown> {
    const { title, body } = alertText(message);
    const notification: Record<string, unknown> = {
      title: cut(title, 50),
      content: cut(body, 50),
      category: this.#s.category,
      notify_level: message.kind === 'call' ? this.#s.notifyLevel : 1,
      off_line: true,
      off_line_ttl: message.ttlSeconds,
      app_message_id: sha256(`${message.kind}:${collapseIdOf(message)}`).slice(0, 32),
      click_action_type: 0,
      action_parameters: JSON.stringify(wakeData(message)),
    };
    if (this.#s.channelId) {
      notification.channel_id = this.#s.channelId;
    }

    return { target_type: 2, target_value: device.token, notification };
  }

  /** Sends one notification; fetches a new auth_token once when it is refused (code 11). */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const msg = JSON.stringify(this.message(device, message));
    for (let round = 0; ; round++) {
      const token = await this.tokens.get();
      const res = await this.#http.send(`${this.#s.baseUrl}/server/v1/message/notification/unicast`, {
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ auth_token: token, message: msg }).toString(),
        timeoutMs: this.#s.timeoutMs,
        signal: ctx.signal,
      });
      const retry = httpRetryResult(res);
      if (retry && parseJson(res.text) === undefined) {
        return retry;
      }
      const body = jsonBody(res, 'OPPO') as { code?: unknown; data?: { messageId?: unknown } };
      const code = codeOf(body.code);
      if (code === '11') {
        this.tokens.invalidate(token);
        if (round === 0) {
          continue;
        }

        return { status: 'rejected', reason: code };
      }
      if (code === '0') {
        return { status: 'delivered', ...(typeof body.data?.messageId === 'string' ? { providerMessageId: body.data.messageId } : {}) };
      }
      if (this.#s.deadTokenCodes.includes(code)) {
        return { status: 'dead-token', reason: code };
      }
      if (RETRYABLE.has(code)) {
        return { status: 'retry-later', retryAfterMs: 0, reason: code };
      }

      return retry ?? { status: 'rejected', reason: code || `http-${res.status}` };
    }
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
