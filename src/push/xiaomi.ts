/**
 * Xiaomi MiPush adapter (server API v3; push-channels.md §5).
 *
 * Auth: the static header `Authorization: key=<AppSecret>`; nothing to refresh.
 *
 * Send: `POST {baseUrl}/v3/message/regid`, form-encoded: registration_id, restricted_package_name,
 * pass_through 0 (a notification: Xiaomi's pass-through reaches only a running app), title,
 * description, payload (the wake data as JSON), notify_id (from the collapse id, so the cancel and
 * missed notices replace the incoming-call one), notify_type, time_to_live (ms),
 * extra.channel_id (the private-message channel, push.xiaomi.channelId) and, for calls,
 * extra.only_send_once=1 (no offline storage beyond the TTL).
 *
 * Answer `{result, code, description, data: {id, bad_regids}}`: a token in `data.bad_regids`
 * (present even with code 0) is dead, and so is a code in push.xiaomi.deadTokenCodes (default
 * 20301, UNCONFIRMED); code 0 is success; 10002/10003/10027/10037 (UNCONFIRMED) and HTTP 429/5xx
 * are retry-later.
 */
import { type ResolvedPushConfig } from './config.js';
import { HttpClient, parseJson } from './http.js';
import { alertText, collapseIdOf, numericId, type PushDevice, type PushMessage, type PushProvider, type PushResult, type PushSendContext, wakeData } from './provider.js';
import { codeOf, cut, httpRetryResult, jsonBody, listHas } from './vendor-common.js';

/** Settings of XiaomiProvider (push.xiaomi resolved). */
export type XiaomiSettings = NonNullable<ResolvedPushConfig['xiaomi']>;

const RETRYABLE = new Set(['10002', '10003', '10027', '10037']);

/** Xiaomi MiPush over HTTPS. */
export class XiaomiProvider implements PushProvider {
  readonly channel = 'xiaomi' as const;
  readonly #s: XiaomiSettings;
  readonly #http: HttpClient;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: XiaomiSettings, ca?: string) {
    this.#s = settings;
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: settings.concurrency });
  }

  /** The form fields for one device (see the file comment). */
  form(device: PushDevice, message: PushMessage): Record<string, string> {
    const { title, body } = alertText(message);
    const f: Record<string, string> = {
      registration_id: device.token,
      restricted_package_name: device.topic ?? this.#s.packageName,
      pass_through: '0',
      title: cut(title, 49),
      description: cut(body, 127),
      payload: JSON.stringify(wakeData(message)),
      notify_id: String(numericId(collapseIdOf(message))),
      notify_type: message.kind === 'cancel' ? '4' : '-1',
      time_to_live: String(message.ttlSeconds * 1000),
      'extra.notify_foreground': '1',
    };
    if (this.#s.channelId) {
      f['extra.channel_id'] = this.#s.channelId;
    }
    if (message.kind === 'call') {
      f['extra.only_send_once'] = '1';
    }

    return f;
  }

  /** Sends one notification. */
  async send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult> {
    const res = await this.#http.send(`${this.#s.baseUrl}/v3/message/regid`, {
      headers: { authorization: `key=${this.#s.appSecret}`, 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8' },
      body: new URLSearchParams(this.form(device, message)).toString(),
      timeoutMs: this.#s.timeoutMs,
      signal: ctx.signal,
    });
    const retry = httpRetryResult(res);
    if (retry && parseJson(res.text) === undefined) {
      return retry;
    }
    const body = jsonBody(res, 'Xiaomi') as { code?: unknown; data?: { id?: unknown; bad_regids?: unknown } };
    const code = codeOf(body.code);
    if (listHas(body.data?.bad_regids, device.token)) {
      return { status: 'dead-token', reason: 'bad_regids' };
    }
    if (code === '0') {
      return { status: 'delivered', ...(typeof body.data?.id === 'string' ? { providerMessageId: body.data.id } : {}) };
    }
    if (this.#s.deadTokenCodes.includes(code)) {
      return { status: 'dead-token', reason: code };
    }
    if (RETRYABLE.has(code)) {
      return { status: 'retry-later', retryAfterMs: 0, reason: code };
    }

    return retry ?? { status: 'rejected', reason: code || `http-${res.status}` };
  }

  /** Closes the connections. */
  close(): Promise<void> {
    return this.#http.close();
  }
}
