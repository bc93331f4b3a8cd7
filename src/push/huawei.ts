/**
 * Huawei Push Kit adapter (HMS Core, API v1; push-channels.md §3).
 *
 * Auth: OAuth 2.0 client credentials at push.huawei.authUrl; the access token (valid 3600 s) is
 * cached and used for push.huawei.tokenRefreshS (default 3300 s), and fetched again at once when
 * the send endpoint says it expired (HTTP 401, code 80200003 or 80200001).
 *
 * Send: `POST {baseUrl}/v1/{appId}/messages:send`, `Authorization: Bearer <token>`,
 * `{validate_only: false, message: {token: [token], ...}}`:
 * - call / cancel: a data (pass-through) message, `message.data` = the wake data as a JSON string,
 *   `android.ttl` = "<ttl>s"; with push.huawei.voipPermission also `android.urgency: "HIGH"` and
 *   `android.category: "VOIP"` (both need Huawei's approval);
 * - missed: a notification message (`android.notification` title/body, open the app on tap,
 *   `tag` = the collapse id so a later notice replaces it).
 *
 * Dead tokens: code 80300007 (all tokens invalid), and 80100000 (partial success) when `msg`
 * lists our token among the illegal tokens. 503, 81000001 and HTTP 429/5xx are retry-later.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, parseJson, TokenCache } from './http.js';
import { alertText, collapseIdOf, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { clientCredentialsToken, codeOf, httpRetryResult, jsonBody, listHas } from './vendor-common.js';

/** Settings of HuaweiProvider (push.huawei resolved). */
export type HuaweiSettings = NonNullable<ResolvedPushConfig['huawei']>;

/** Whether the `msg` of an 80100000 answer names `token` as illegal (v1 illegal_tokens, v3 illegalTokens by reason). */
function illegalTokenListed(msg: unknown, token: string): boolean {
  const parsed = typeof msg === 'string' ? parseJson(msg) : msg;
  if (!parsed || typeof parsed !== 'object') {
    return false;
  }
  const m = parsed as { illegal_tokens?: unknown; illegalTokens?: unknown };
  if (listHas(m.illegal_tokens, token)) {
    return true;
  }
  if (m.illegalTokens && typeof m.illegalTokens === 'object') {
    return Object.values(m.illegalTokens as Record<string, unknown>).some((list) => listHas(list, token));
  }

  return false;
}

/** Huawei Push Kit over HTTPS. */
export class HuaweiProvider implements PushProvider {
  readonly channel = 'huawei' as const;
  readonly #s: HuaweiSettings;
  readonly #http: HttpClient;
  /** The access-token cache (exposed for tests and metrics). */
  readonly tokens: TokenCache;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: HuaweiSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
    this.tokens = new TokenCache(() => clientCredentialsToken(this.#http, settings.authUrl, settings.clientId, settings.clientSecret, settings.timeoutMs, 'Huawei'), {
      refreshS: settings.tokenRefreshS,
      marginS: 300,
    });
  }

  /** The request body for one device (see the file comment). */
  body(token: string, message: PushMessage): Record<string, unknown> {
    const android: Record<string, unknown> = { ttl: `${message.ttlSeconds}s` };
    const m: Record<string, unknown> = { token: [token], android };
    if (message.kind === 'missed') {
      const { title, body } = alertText(message);
      android.notification = { title, body, click_action: { type: 3 }, tag: collapseIdOf(message), importance: 'NORMAL' };
    } else {
      m.data = JSON.stringify(wakeData(message));
      if (this.#s.voipPermission) {
        android.urgency = 'HIGH';
        android.category = 'VOIP';
      }
    }

    return { validate_only: false, message: m };
  }

  /** Sends one message; refreshes the access token once when the endpoint says it expired. */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const payload = JSON.stringify(this.body(device.token, message));
    for (let round = 0; ; round++) {
      const token = await this.tokens.get();
      const res = await this.#http.send(`${this.#s.baseUrl}/v1/${encodeURIComponent(this.#s.appId)}/messages:send`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json; charset=UTF-8' },
        body: payload,
        timeoutMs: this.#s.timeoutMs,
        signal: ctx.signal,
      });
      const parsed = parseJson(res.text) as { code?: unknown } | undefined;
      const code = codeOf(parsed?.code);
      if (res.status === 401 || code === '80200003' || code === '80200001') {
        this.tokens.invalidate(token);
        if (round === 0) {
          continue;
        }

        return { status: 'rejected', reason: code || 'http-401' };
      }

      return this.#classify(res, device.token);
    }
  }

  #classify(res: Parameters<typeof httpRetryResult>[0], token: string): PushResult {
    const body = parseJson(res.text) as { code?: unknown; msg?: unknown; requestId?: unknown } | undefined;
    const code = codeOf(body?.code);
    if (code === '') {
      const retry = httpRetryResult(res);
      if (retry) {
        return retry;
      }
      jsonBody(res, 'Huawei'); // throws PushProtocolError unless the body is an object

      return { status: 'rejected', reason: `http-${res.status}` };
    }
    switch (code) {
      case '80000000': {
        return { status: 'delivered', ...(typeof body?.requestId === 'string' ? { providerMessageId: body.requestId } : {}) };
      }
      case '80300007': {
        return { status: 'dead-token', reason: code };
      }
      case '80100000': {
        return illegalTokenListed(body?.msg, token) ? { status: 'dead-token', reason: code } : { status: 'rejected', reason: code };
      }
      case '81000001': {
        return { status: 'retry-later', retryAfterMs: 0, reason: code };
      }
      default: {
        return httpRetryResult(res) ?? { status: 'rejected', reason: code };
      }
    }
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
