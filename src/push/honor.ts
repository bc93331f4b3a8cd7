/**
 * Honor Push adapter (push-channels.md §4; the whole contract there is UNCONFIRMED and taken from
 * open-source senders).
 *
 * Auth: OAuth 2.0 client credentials at push.honor.authUrl; the token is cached for
 * push.honor.tokenRefreshS (default 3300 s) and fetched again once on HTTP 401/403.
 *
 * Send: `POST {baseUrl}/api/v1/{appId}/sendMessage` with `Authorization: Bearer <token>` and a
 * `timestamp: <ms>` header; camelCase body `{token: [token], ...}`:
 * - call / cancel: `data` = the wake data as a JSON string, `android.ttl` = "<ttl>s";
 * - missed: `android.notification` {title, body, clickAction {type 3}, importance NORMAL
 *   (the service/communication class), tag = the collapse id}.
 *
 * Answer `{code, message, data: {sendResult, requestId, failTokens, expireTokens}}`: a token in
 * `expireTokens` is dead; one in `failTokens` is rejected; code 200 or 12200000 is success (both
 * values are in use by senders); HTTP 429/5xx are retry-later.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, parseJson, TokenCache } from './http.js';
import { alertText, collapseIdOf, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { clientCredentialsToken, codeOf, httpRetryResult, jsonBody, listHas } from './vendor-common.js';

/** Settings of HonorProvider (push.honor resolved). */
export type HonorSettings = NonNullable<ResolvedPushConfig['honor']>;

/** Honor Push over HTTPS. */
export class HonorProvider implements PushProvider {
  readonly channel = 'honor' as const;
  readonly #s: HonorSettings;
  readonly #http: HttpClient;
  /** The access-token cache (exposed for tests and metrics). */
  readonly tokens: TokenCache;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: HonorSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
    this.tokens = new TokenCache(() => clientCredentialsToken(this.#http, settings.authUrl, settings.clientId, settings.clientSecret, settings.timeoutMs, 'Honor'), {
      refreshS: settings.tokenRefreshS,
      marginS: 300,
    });
  }

  /** The request body for one device (see the file comment). */
  body(token: string, message: PushMessage): Record<string, unknown> {
    const android: Record<string, unknown> = { ttl: `${message.ttlSeconds}s` };
    const b: Record<string, unknown> = { token: [token], android };
    if (message.kind === 'missed') {
      const { title, body } = alertText(message);
      android.notification = { title, body, clickAction: { type: 3 }, importance: 'NORMAL', tag: collapseIdOf(message) };
    } else {
      b.data = JSON.stringify(wakeData(message));
    }

    return b;
  }

  /** Sends one message; refreshes the access token once when it is refused. */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const payload = JSON.stringify(this.body(device.token, message));
    for (let round = 0; ; round++) {
      const token = await this.tokens.get();
      const res = await this.#http.send(`${this.#s.baseUrl}/api/v1/${encodeURIComponent(this.#s.appId)}/sendMessage`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', timestamp: String(Date.now()) },
        body: payload,
        timeoutMs: this.#s.timeoutMs,
        signal: ctx.signal,
      });
      if (res.status === 401 || res.status === 403) {
        this.tokens.invalidate(token);
        if (round === 0) {
          continue;
        }

        return { status: 'rejected', reason: `http-${res.status}` };
      }
      const retry = httpRetryResult(res);
      if (retry && parseJson(res.text) === undefined) {
        return retry;
      }
      const body = jsonBody(res, 'Honor') as { code?: unknown; data?: { requestId?: unknown; failTokens?: unknown; expireTokens?: unknown } };
      const code = codeOf(body.code);
      if (listHas(body.data?.expireTokens, device.token)) {
        return { status: 'dead-token', reason: 'expireTokens' };
      }
      if (listHas(body.data?.failTokens, device.token)) {
        return { status: 'rejected', reason: 'failTokens' };
      }
      if (code === '200' || code === '12200000') {
        return { status: 'delivered', ...(typeof body.data?.requestId === 'string' ? { providerMessageId: body.data.requestId } : {}) };
      }

      return retry ?? { status: 'rejected', reason: code || `http-${res.status}` };
    }
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
