/**
 * A local OPPO Push (push-channels.md §6):
 * - `POST /server/v1/auth`, form app_key, timestamp (ms, within 10 min) and sign = hex
 *   SHA-256(app_key + timestamp + master_secret) → {code 0, data {auth_token, create_time}}, else
 *   code 16/17 (key/sign) or 18 (timestamp);
 * - `POST /server/v1/message/notification/unicast`, form auth_token (unknown or expired → code 11)
 *   and message (JSON: target_type 2, target_value, notification {title ≤ 50, content ≤ 50,
 *   off_line_ttl ≤ 10 days, notify_level 1|2|16}; code 40/41 otherwise); then the token's state:
 *   ok → code 0 {messageId}; dead → code 10000; busy → code -2 (flow control); down → 503; hang.
 */
import { createHash } from 'node:crypto';
import { formOf, type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface OppoAccepted {
  token: string;
  message: { target_type: number; target_value: string; notification: Record<string, unknown> };
}

export class FakeOppo extends VendorFake<OppoAccepted> {
  private constructor(
    private readonly appKey: string,
    private readonly masterSecret: string,
  ) {
    super();
  }

  static async start(opts: { appKey: string; masterSecret: string }): Promise<FakeOppo> {
    const f = new FakeOppo(opts.appKey, opts.masterSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    const f = formOf(req);
    if (req.method === 'POST' && req.path === '/server/v1/auth') {
      if (f.app_key !== this.appKey) {
        return { status: 200, body: { code: 14, message: this.problem('invalid app_key') } };
      }
      if (!/^\d{13}$/.test(f.timestamp ?? '') || Math.abs(Date.now() - Number(f.timestamp)) > 600_000) {
        return { status: 200, body: { code: 18, message: this.problem('timestamp') } };
      }
      const expected = createHash('sha256').update(this.appKey + f.timestamp + this.masterSecret).digest('hex');
      if (f.sign !== expected) {
        return { status: 200, body: { code: 17, message: this.problem('invalid sign') } };
      }

      return { status: 200, body: { code: 0, message: 'Success', data: { auth_token: this.issued.issue('oppo-', this.tokenLifetimeS), create_time: Date.now() } } };
    }
    if (req.method !== 'POST' || req.path !== '/server/v1/message/notification/unicast') {
      return { status: 404, body: { code: 404, message: 'no such path' } };
    }
    if (this.issued.check(f.auth_token) !== 'ok') {
      return { status: 200, body: { code: 11, message: 'Invalid AuthToken' } };
    }
    const m = json(f.message ?? '') as OppoAccepted['message'] | undefined;
    const bad = (what: string): Reply => ({ status: 200, body: { code: 41, message: this.problem(what) } });
    if (!m || m.target_type !== 2 || typeof m.target_value !== 'string' || !m.notification) {
      return bad('target_type/target_value/notification');
    }
    const n = m.notification;
    if (typeof n.title !== 'string' || n.title.length > 50 || typeof n.content !== 'string' || n.content.length > 50) {
      return bad('title/content');
    }
    if (typeof n.off_line_ttl !== 'number' || n.off_line_ttl > 864_000) {
      return bad('off_line_ttl');
    }
    if (![1, 2, 16].includes(n.notify_level as number)) {
      return bad('notify_level');
    }
    const token = m.target_value;
    switch (this.state(token)) {
      case 'dead': {
        return { status: 200, body: { code: 10000, message: 'Invalid RegistrationId' } };
      }
      case 'busy': {
        return { status: 200, body: { code: -2, message: 'Service in Flow Control' } };
      }
      case 'down': {
        return { status: 503, body: 'unavailable' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, message: m });

        return { status: 200, body: { code: 0, message: 'Success', data: { messageId: `msg-${this.accepted.length}` } } };
      }
    }
  }
}
