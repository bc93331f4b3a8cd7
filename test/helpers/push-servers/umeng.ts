/**
 * A local Umeng U-Push (push-channels.md "Umeng U-Push"):
 * `POST /api/send?sign=<md5("POST" + <this server>/api/send + body + master secret)>` (400
 * error_code 2027 otherwise), JSON body with the app key, a ms timestamp within 10 min, type
 * unicast, device_tokens, production_mode "true"|"false", payload.display_type message|notification,
 * policy.expire_time "yyyy-MM-dd HH:mm:ss" (400 error_code 2000 otherwise); then the token's
 * state: ok → SUCCESS {msg_id}; dead → FAIL error_code 2039 (an arbitrary number standing for the
 * "invalid device token" codes, whose real values push-channels.md leaves UNCONFIRMED; tests
 * configure it); busy → 503; hang.
 */
import { createHash } from 'node:crypto';
import { type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface UmengAccepted {
  token: string;
  body: Record<string, unknown> & { payload: Record<string, unknown>; policy: Record<string, unknown> };
}

/** The error_code this fake answers for a dead token. */
export const UMENG_FAKE_DEAD_CODE = '2039';

export class FakeUmeng extends VendorFake<UmengAccepted> {
  private constructor(
    private readonly appKey: string,
    private readonly masterSecret: string,
  ) {
    super();
  }

  static async start(opts: { appKey: string; masterSecret: string }): Promise<FakeUmeng> {
    const f = new FakeUmeng(opts.appKey, opts.masterSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    const url = new URL(req.path, this.url);
    if (req.method !== 'POST' || url.pathname !== '/api/send') {
      return { status: 404, body: { ret: 'FAIL', data: { error_code: '404', error_msg: 'no such path' } } };
    }
    const fail = (code: string, what: string): Reply => ({ status: 400, body: { ret: 'FAIL', data: { error_code: code, error_msg: this.problem(what) } } });
    const expected = createHash('md5').update(`POST${this.url}/api/send${req.text}${this.masterSecret}`, 'utf8').digest('hex');
    if (url.searchParams.get('sign') !== expected) {
      return fail('2027', 'sign');
    }
    const b = json(req.text) as UmengAccepted['body'] | undefined;
    if (!b || b.appkey !== this.appKey || typeof b.timestamp !== 'string' || Math.abs(Date.now() - Number(b.timestamp)) > 600_000) {
      return fail('2000', 'appkey/timestamp');
    }
    if (b.type !== 'unicast' || typeof b.device_tokens !== 'string' || (b.production_mode !== 'true' && b.production_mode !== 'false')) {
      return fail('2000', 'type/device_tokens/production_mode');
    }
    if (b.payload?.display_type !== 'message' && b.payload?.display_type !== 'notification') {
      return fail('2000', 'payload.display_type');
    }
    if (typeof b.policy?.expire_time !== 'string' || !/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(b.policy.expire_time)) {
      return fail('2000', 'policy.expire_time');
    }
    const token = b.device_tokens;
    switch (this.state(token)) {
      case 'dead': {
        return { status: 400, body: { ret: 'FAIL', data: { error_code: UMENG_FAKE_DEAD_CODE, error_msg: 'invalid device token' } } };
      }
      case 'busy': {
        return { status: 503, body: 'busy' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, body: b });

        return { status: 200, body: { ret: 'SUCCESS', data: { msg_id: `uu${this.accepted.length}` } } };
      }
    }
  }
}
