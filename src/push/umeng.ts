/**
 * Umeng U-Push adapter (the aggregator the product's Android app embeds; push-channels.md
 * "Umeng U-Push").
 *
 * Auth: every request is signed: `POST {baseUrl}/api/send?sign=<sign>` with
 * sign = lower-case hex MD5("POST" + "{baseUrl}/api/send" + the exact body text + master secret);
 * the body is sent byte for byte as signed. Nothing to refresh.
 *
 * Body: appkey, timestamp (ms, string), type "unicast", device_tokens, production_mode, and
 * - call / cancel: payload {display_type "message" (pass-through), body {custom: the wake data}};
 * - missed: payload {display_type "notification", body {ticker, title, text, after_open "go_app"},
 *   extra: the wake data};
 * policy {expire_time = now + TTL (at least 60 s) as "yyyy-MM-dd HH:mm:ss" Beijing time,
 * out_biz_no = a dedupe id per call, kind and device}; with push.umeng.miActivity also
 * `mipush: true` and `mi_activity` so vendor channels carry it to a killed app (Android only).
 *
 * Answer `{ret: "SUCCESS", data: {msg_id}}` or `{ret: "FAIL", data: {error_code, error_msg}}`:
 * error codes in push.umeng.deadTokenCodes (none by default: push-channels.md has no confirmed
 * numbers) are dead; HTTP 429/5xx retry-later; other failures rejected.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, parseJson } from './http.js';
import { alertText, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { codeOf, httpRetryResult, jsonBody, md5, sha256 } from './vendor-common.js';

/** Settings of UmengProvider (push.umeng resolved). */
export type UmengSettings = NonNullable<ResolvedPushConfig['umeng']>;

/** "yyyy-MM-dd HH:mm:ss" in UTC+8 (Umeng's policy.expire_time). */
export function beijingTime(ms: number): string {
  const d = new Date(ms + 8 * 3600_000);
  const p = (n: number) => String(n).padStart(2, '0');

  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
}

/** Umeng's request signature (see the file comment). */
export function umengSign(url: string, body: string, masterSecret: string): string {
  return md5(`POST${url}${body}${masterSecret}`);
}

/** Umeng U-Push over HTTPS. */
export class UmengProvider implements PushProvider {
  readonly channel = 'umeng' as const;
  readonly #s: UmengSettings;
  readonly #http: HttpClient;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: UmengSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
  }

  /** The request body for one device (see the file comment). */
  body(device: PushDevice, message: PushMessage, now = Date.now()): Record<string, unknown> {
    const data = wakeData(message, now);
    const { title, body } = alertText(message);
    const payload =
      message.kind === 'missed'
        ? { display_type: 'notification', body: { ticker: title, title, text: body, after_open: 'go_app' }, extra: data }
        : { display_type: 'message', body: { custom: data } };
    const b: Record<string, unknown> = {
      appkey: this.#s.appKey,
      timestamp: String(now),
      type: 'unicast',
      device_tokens: device.token,
      production_mode: this.#s.productionMode ? 'true' : 'false',
      payload,
      policy: {
        expire_time: beijingTime(now + Math.max(60, message.ttlSeconds) * 1000),
        out_biz_no: sha256(`${message.kind}:${message.callId}:${device.token}`).slice(0, 32),
      },
      description: message.kind === 'call' ? 'incoming call' : message.kind === 'cancel' ? 'call cancelled' : 'missed call',
    };
    if (this.#s.miActivity) {
      b.mipush = true;
      b.mi_activity = this.#s.miActivity;
    }

    return b;
  }

  /** Sends one message. */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const url = `${this.#s.baseUrl}/api/send`;
    const text = JSON.stringify(this.body(device, message));
    const res = await this.#http.send(`${url}?sign=${umengSign(url, text, this.#s.masterSecret)}`, {
      headers: { 'content-type': 'application/json' },
      body: text,
      timeoutMs: this.#s.timeoutMs,
      signal: ctx.signal,
    });
    const retry = httpRetryResult(res);
    if (retry && parseJson(res.text) === undefined) {
      return retry;
    }
    const answer = jsonBody(res, 'Umeng') as { ret?: unknown; data?: { msg_id?: unknown; error_code?: unknown } };
    if (answer.ret === 'SUCCESS') {
      return { status: 'delivered', ...(typeof answer.data?.msg_id === 'string' ? { providerMessageId: answer.data.msg_id } : {}) };
    }
    const code = codeOf(answer.data?.error_code);
    if (this.#s.deadTokenCodes.includes(code)) {
      return { status: 'dead-token', reason: code };
    }

    return retry ?? { status: 'rejected', reason: code || `http-${res.status}` };
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
