/**
 * Meizu (Flyme) Push adapter (push-channels.md §8).
 *
 * Auth: every request is signed: sign = lower-case hex MD5 of the parameters except `sign`,
 * sorted by name and joined as `key=value` without separators (raw values), followed by the
 * appSecret. Nothing to refresh.
 *
 * Send: `POST {baseUrl}/garcia/api/server/push/varnished/pushByPushId` (a notification; Meizu's
 * pass-through is being phased out), form appId, pushIds, messageJson, sign. messageJson:
 * noticeBarInfo {noticeBarType 0, title ≤ 32, content ≤ 100}, clickTypeInfo {clickType 0 (open the
 * app), parameters = the wake data}, pushTimeInfo {offLine 1, validTime = the TTL in hours, at
 * least Meizu's minimum of 1}, advanceInfo {notifyKey = 8 characters from the collapse id,
 * suspend 1, clearNoticeBar 1, notificationType all on}.
 *
 * Answer `{code, message, value, msgId}`: with code "200", `value` maps error codes to failed
 * pushIds: our token under 110002 (unsubscribed) or 110003 (illegal pushId) is dead, under 519
 * (overload) retry-later, under any other code rejected. Top-level 110010 (rate too high), 500 and
 * HTTP 429/5xx are retry-later.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, parseJson } from './http.js';
import { alertText, collapseIdOf, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { codeOf, cut, httpRetryResult, jsonBody, listHas, md5, sha256 } from './vendor-common.js';

/** Settings of MeizuProvider (push.meizu resolved). */
export type MeizuSettings = NonNullable<ResolvedPushConfig['meizu']>;

/** Meizu's request signature (see the file comment). */
export function meizuSign(params: Record<string, string>, appSecret: string): string {
  const joined = Object.keys(params)
    .filter((k) => k !== 'sign')
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join('');

  return md5(joined + appSecret);
}

/** Meizu Push over HTTP(S). */
export class MeizuProvider implements PushProvider {
  readonly channel = 'meizu' as const;
  readonly #s: MeizuSettings;
  readonly #http: HttpClient;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: MeizuSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
  }

  /** The messageJson for one push (see the file comment). */
  messageJson(message: PushMessage): Record<string, unknown> {
    const { title, body } = alertText(message);

    return {
      noticeBarInfo: { noticeBarType: 0, title: cut(title, 32), content: cut(body, 100) },
      clickTypeInfo: { clickType: 0, parameters: wakeData(message) },
      pushTimeInfo: { offLine: 1, validTime: Math.min(72, Math.max(1, Math.ceil(message.ttlSeconds / 3600))) },
      advanceInfo: {
        suspend: 1,
        clearNoticeBar: 1,
        notifyKey: sha256(collapseIdOf(message)).slice(0, 8),
        notificationType: { vibrate: 1, lights: 1, sound: 1 },
      },
    };
  }

  /** Sends one notification. */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const params: Record<string, string> = { appId: this.#s.appId, pushIds: device.token, messageJson: JSON.stringify(this.messageJson(message)) };
    params.sign = meizuSign(params, this.#s.appSecret);
    const res = await this.#http.send(`${this.#s.baseUrl}/garcia/api/server/push/varnished/pushByPushId`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8' },
      body: new URLSearchParams(params).toString(),
      timeoutMs: this.#s.timeoutMs,
      signal: ctx.signal,
    });
    const retry = httpRetryResult(res);
    if (retry && parseJson(res.text) === undefined) {
      return retry;
    }
    const body = jsonBody(res, 'Meizu') as { code?: unknown; msgId?: unknown; value?: unknown };
    const code = codeOf(body.code);
    if (code === '200') {
      const value = body.value && typeof body.value === 'object' ? (body.value as Record<string, unknown>) : {};
      const failed = Object.entries(value).find(([, list]) => listHas(list, device.token));
      if (!failed) {
        return { status: 'delivered', ...(typeof body.msgId === 'string' ? { providerMessageId: body.msgId } : {}) };
      }
      const [why] = failed;
      if (why === '110002' || why === '110003') {
        return { status: 'dead-token', reason: why };
      }

      return why === '519' ? { status: 'retry-later', retryAfterMs: 0, reason: why } : { status: 'rejected', reason: why };
    }
    if (code === '110010' || code === '500') {
      return { status: 'retry-later', retryAfterMs: 0, reason: code };
    }

    return retry ?? { status: 'rejected', reason: code || `http-${res.status}` };
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
