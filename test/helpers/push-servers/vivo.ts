/**
 * A local vivo Push (push-channels.md §7):
 * - `POST /message/auth`, JSON {appId, appKey, timestamp (ms, within 10 min), sign = md5(appId +
 *   appKey + timestamp + appSecret)} → {result 0, authToken}, else result 10xxx;
 * - `POST /message/send` with the `authToken` header (unknown or expired → result 10000); body
 *   regId, title ≤ 40, content ≤ 100, timeToLive 60–86400, classification 0|1, notifyType 1–4,
 *   requestId ≤ 64 (result 10050 otherwise); then the token's state: ok → result 0 {taskId};
 *   dead → result 0 with invalidUser.status 2; dead-alt → invalidUser.status 4 (not a test user);
 *   busy → result 10072; down → 503; hang.
 */
import { createHash } from 'node:crypto';
import { header, type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface VivoAccepted {
  token: string;
  body: Record<string, unknown>;
}

export class FakeVivo extends VendorFake<VivoAccepted> {
  private constructor(
    private readonly appId: string,
    private readonly appKey: string,
    private readonly appSecret: string,
  ) {
    super();
  }

  static async start(opts: { appId: string; appKey: string; appSecret: string }): Promise<FakeVivo> {
    const f = new FakeVivo(opts.appId, opts.appKey, opts.appSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    const body = json(req.text) as Record<string, unknown> | undefined;
    if (req.method === 'POST' && req.path === '/message/auth') {
      const ts = body?.timestamp;
      if (!body || body.appId !== this.appId || body.appKey !== this.appKey) {
        return { status: 200, body: { result: 10200, desc: this.problem('appId/appKey') } };
      }
      if (typeof ts !== 'number' || Math.abs(Date.now() - ts) > 600_000) {
        return { status: 200, body: { result: 10201, desc: this.problem('timestamp') } };
      }
      const sign = createHash('md5').update(this.appId + this.appKey + String(ts) + this.appSecret).digest('hex');
      if (body.sign !== sign) {
        return { status: 200, body: { result: 10202, desc: this.problem('sign') } };
      }

      return { status: 200, body: { result: 0, desc: '请求成功', authToken: this.issued.issue('vivo-', this.tokenLifetimeS) } };
    }
    if (req.method !== 'POST' || req.path !== '/message/send') {
      return { status: 404, body: { result: 404, desc: 'no such path' } };
    }
    if (this.issued.check(header(req, 'authtoken')) !== 'ok') {
      return { status: 200, body: { result: 10000, desc: 'authToken invalid' } };
    }
    const bad = (what: string): Reply => ({ status: 200, body: { result: 10050, desc: this.problem(what) } });
    if (!body || typeof body.regId !== 'string') {
      return bad('regId');
    }
    if (typeof body.title !== 'string' || body.title.length > 40 || typeof body.content !== 'string' || body.content.length > 100) {
      return bad('title/content');
    }
    if (typeof body.timeToLive !== 'number' || body.timeToLive < 60 || body.timeToLive > 86_400) {
      return bad('timeToLive');
    }
    if (body.classification !== 0 && body.classification !== 1) {
      return bad('classification');
    }
    if (![1, 2, 3, 4].includes(body.notifyType as number)) {
      return bad('notifyType');
    }
    if (typeof body.requestId !== 'string' || body.requestId.length > 64) {
      return bad('requestId');
    }
    const token = body.regId;
    const ok = (extra: Record<string, unknown> = {}): Reply => ({ status: 200, body: { result: 0, desc: '请求成功', taskId: `task-${this.requests.length}`, ...extra } });
    switch (this.state(token)) {
      case 'dead': {
        return ok({ invalidUser: { userid: token, status: 2 } });
      }
      case 'dead-alt': {
        return ok({ invalidUser: { userid: token, status: 4 } });
      }
      case 'busy': {
        return { status: 200, body: { result: 10072, desc: 'rate limit' } };
      }
      case 'down': {
        return { status: 503, body: 'unavailable' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, body });

        return ok();
      }
    }
  }
}
