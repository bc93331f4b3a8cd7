/**
 * vivo Push adapter (push-channels.md §7).
 *
 * Auth: `POST {baseUrl}/message/auth`, JSON {appId, appKey, timestamp (ms), sign} with
 * sign = lower-case hex MD5(appId + appKey + timestamp + appSecret); the authToken (valid 1 day) is
 * cached for push.vivo.tokenRefreshS (default 1 h, as vivo advises) and fetched again once when a
 * send answers result 10000.
 *
 * Send: `POST {baseUrl}/message/send` with the `authToken` header: regId, title, content,
 * notifyType (4 ring and vibrate for calls, 1 otherwise), timeToLive = the TTL clamped to vivo's
 * 60 s–1 day, skipType 1 (open the app), networkType -1, classification 1 (system) with category
 * (push.vivo.category, default IM), clientCustomMap = the wake data, requestId (stable per call,
 * kind and device, so a retry is not delivered twice), pushMode (1 with push.vivo.testMode).
 *
 * Answer `{result, desc, taskId, invalidUser?: {userid, status}}`: invalidUser.status 1 or 2 is
 * dead (4, "not a test user", is not); result 0 success; 10072 (rate) and HTTP 429/5xx
 * retry-later; results in push.vivo.deadTokenCodes (default 10302, UNCONFIRMED) dead.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, type IssuedToken, parseJson, TokenCache } from './http.js';
import { alertText, PushAuthError, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { codeOf, cut, httpRetryResult, jsonBody, md5, sha256 } from './vendor-common.js';

/** Settings of VivoProvider (push.vivo resolved). */
export type VivoSettings = NonNullable<ResolvedPushConfig['vivo']>;

/** vivo Push over HTTPS. */
export class VivoProvider implements PushProvider {
  readonly channel = 'vivo' as const;
  readonly #s: VivoSettings;
  readonly #http: HttpClient;
  /** The authToken cache (exposed for tests and metrics). */
  readonly tokens: TokenCache;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: VivoSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
    this.tokens = new TokenCache(() => this.#auth(), { refreshS: settings.tokenRefreshS, marginS: 300 });
  }

  async #auth(): Promise<IssuedToken> {
    const timestamp = Date.now();
    const sign = md5(this.#s.appId + this.#s.appKey + String(timestamp) + this.#s.appSecret);
    const res = await this.#http.send(`${this.#s.baseUrl}/message/auth`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ appId: this.#s.appId, appKey: this.#s.appKey, timestamp, sign }),
      timeoutMs: this.#s.timeoutMs,
    });
    const body = parseJson(res.text) as { result?: unknown; authToken?: unknown } | undefined;
    if (res.status !== 200 || codeOf(body?.result) !== '0' || typeof body?.authToken !== 'string') {
      throw new PushAuthError(`vivo auth refused: result ${codeOf(body?.result) || `HTTP ${res.status}`}`, res.status >= 500 || res.status === 429);
    }

    return { token: body.authToken, expiresInS: 24 * 3600 };
  }

  /** The request body for one device (see the file comment). */
  body(device: PushDevice, message: PushMessage): Record<string, unknown> {
    const { title, body } = alertText(message);

    return {
      regId: device.token,
      notifyType: message.kind === 'call' ? 4 : 1,
      title: cut(title, 40),
      content: cut(body, 100),
      timeToLive: Math.min(86_400, Math.max(60, message.ttlSeconds)),
      skipType: 1,
      networkType: -1,
      classification: 1,
      category: this.#s.category,
      clientCustomMap: wakeData(message),
      requestId: sha256(`${message.kind}:${message.callId}:${device.token}`).slice(0, 32),
      pushMode: this.#s.testMode ? 1 : 0,
    };
  }

  /** Sends one notification; fetches a new authToken once when it is refused (result 10000). */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const payload = JSON.stringify(this.body(device, message));
    for (let round = 0; ; round++) {
      const token = await this.tokens.get();
      const res = await this.#http.send(`${this.#s.baseUrl}/message/send`, {
        headers: { authToken: token, 'content-type': 'application/json' },
        body: payload,
        timeoutMs: this.#s.timeoutMs,
        signal: ctx.signal,
      });
      const retry = httpRetryResult(res);
      if (retry && parseJson(res.text) === undefined) {
        return retry;
      }
      const body = jsonBody(res, 'vivo') as { result?: unknown; taskId?: unknown; invalidUser?: { status?: unknown } };
      const result = codeOf(body.result);
      const invalid = codeOf(body.invalidUser?.status);
      if (invalid === '1' || invalid === '2') {
        return { status: 'dead-token', reason: `invalidUser-${invalid}` };
      }
      if (result === '10000') {
        this.tokens.invalidate(token);
        if (round === 0) {
          continue;
        }

        return { status: 'rejected', reason: result };
      }
      if (result === '0') {
        return { status: 'delivered', ...(typeof body.taskId === 'string' ? { providerMessageId: body.taskId } : {}) };
      }
      if (this.#s.deadTokenCodes.includes(result)) {
        return { status: 'dead-token', reason: result };
      }
      if (result === '10072') {
        return { status: 'retry-later', retryAfterMs: 0, reason: result };
      }

      return retry ?? { status: 'rejected', reason: result || `http-${res.status}` };
    }
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
