/**
 * A local Xiaomi MiPush v3 (push-channels.md §5):
 * `POST /v3/message/regid` with `Authorization: key=<AppSecret>` (401 otherwise), form-encoded
 * registration_id, restricted_package_name (the app's), pass_through 0|1, payload, title and
 * description (required for notifications, < 50 and < 128 characters), notify_id in 0..2^31-1,
 * time_to_live digits (ms, ≤ 2 weeks) (code 10017 otherwise); then the token's state: ok → code
 * 0; dead → code 0 with the token in data.bad_regids; dead-alt → code 20301; busy → 503; hang.
 */
import { formOf, header, type RecordedRequest, type Reply } from './common.js';
import { VendorFake } from './vendor-base.js';

export interface XiaomiAccepted {
  token: string;
  form: Record<string, string>;
}

export class FakeXiaomi extends VendorFake<XiaomiAccepted> {
  private constructor(
    private readonly appSecret: string,
    private readonly packageName: string,
  ) {
    super();
  }

  static async start(opts: { appSecret: string; packageName: string }): Promise<FakeXiaomi> {
    const f = new FakeXiaomi(opts.appSecret, opts.packageName);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    if (req.method !== 'POST' || req.path !== '/v3/message/regid') {
      return { status: 404, body: { result: 'error', code: 404, description: 'no such path' } };
    }
    if (header(req, 'authorization') !== `key=${this.appSecret}`) {
      this.problem('bad Authorization');

      return { status: 401, body: { result: 'error', code: 401, description: 'unauthorized' } };
    }
    const f = formOf(req);
    const bad = (what: string): Reply => ({ status: 200, body: { result: 'error', code: 10017, description: this.problem(what), trace_id: 'x' } });
    if (!f.registration_id || f.restricted_package_name !== this.packageName) {
      return bad('registration_id / restricted_package_name');
    }
    if (f.pass_through !== '0' && f.pass_through !== '1') {
      return bad('pass_through');
    }
    if (!f.payload) {
      return bad('payload');
    }
    if (f.pass_through === '0' && (!f.title || f.title.length >= 50 || !f.description || f.description.length >= 128)) {
      return bad('title/description');
    }
    if (!/^\d+$/.test(f.notify_id ?? '') || Number(f.notify_id) > 2 ** 31 - 1) {
      return bad('notify_id');
    }
    if (!/^\d+$/.test(f.time_to_live ?? '') || Number(f.time_to_live) > 14 * 86_400_000) {
      return bad('time_to_live');
    }
    const token = f.registration_id;
    const ok = (data: Record<string, unknown> = {}): Reply => ({ status: 200, body: { result: 'ok', code: 0, description: '成功', trace_id: 'x', info: 'Received push messages for 1 REGID', data: { id: `scm${Date.now()}`, ...data } } });
    switch (this.state(token)) {
      case 'dead': {
        return ok({ bad_regids: token });
      }
      case 'dead-alt': {
        return { status: 200, body: { result: 'error', code: 20301, reason: 'invalid regId', trace_id: 'x' } };
      }
      case 'busy': {
        return { status: 503, body: 'busy' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, form: f });

        return ok();
      }
    }
  }
}
