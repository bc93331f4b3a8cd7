/**
 * A local Meizu Push (push-channels.md §8):
 * `POST /garcia/api/server/push/varnished/pushByPushId`, form appId, pushIds, messageJson, sign =
 * md5 of the other parameters sorted by name as `k=v` joined without separators, plus the
 * appSecret (code 1006 otherwise); messageJson with noticeBarInfo title 1–32 and content 1–100,
 * pushTimeInfo.validTime 1–72 (code 1005 otherwise); then the token's state: ok → code "200",
 * empty value; dead → value {"110002": [token]}; dead-alt → value {"110003": [token]}; fail →
 * value {"520": [token]}; busy → code "110010"; down → 503; hang.
 */
import { createHash } from 'node:crypto';
import { formOf, type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface MeizuAccepted {
  token: string;
  messageJson: Record<string, Record<string, unknown>>;
}

export class FakeMeizu extends VendorFake<MeizuAccepted> {
  private constructor(
    private readonly appId: string,
    private readonly appSecret: string,
  ) {
    super();
  }

  static async start(opts: { appId: string; appSecret: string }): Promise<FakeMeizu> {
    const f = new FakeMeizu(opts.appId, opts.appSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    if (req.method !== 'POST' || req.path !== '/garcia/api/server/push/varnished/pushByPushId') {
      return { status: 404, body: { code: '404', message: 'no such path' } };
    }
    const f = formOf(req);
    const joined = Object.keys(f)
      .filter((k) => k !== 'sign')
      .sort()
      .map((k) => `${k}=${f[k]}`)
      .join('');
    if (f.appId !== this.appId || f.sign !== createHash('md5').update(joined + this.appSecret).digest('hex')) {
      return { status: 200, body: { code: '1006', message: this.problem('sign'), value: {}, redirect: '' } };
    }
    const m = json(f.messageJson ?? '') as MeizuAccepted['messageJson'] | undefined;
    const bad = (what: string): Reply => ({ status: 200, body: { code: '1005', message: this.problem(what), value: {}, redirect: '' } });
    const title = m?.noticeBarInfo?.title;
    const content = m?.noticeBarInfo?.content;
    if (typeof title !== 'string' || title.length < 1 || title.length > 32 || typeof content !== 'string' || content.length < 1 || content.length > 100) {
      return bad('noticeBarInfo title/content');
    }
    const valid = m?.pushTimeInfo?.validTime;
    if (typeof valid !== 'number' || valid < 1 || valid > 72) {
      return bad('pushTimeInfo.validTime');
    }
    const token = f.pushIds ?? '';
    const ok = (value: Record<string, string[]> = {}): Reply => ({ status: 200, body: { code: '200', message: '', value, msgId: `NS${this.requests.length}`, redirect: '' } });
    switch (this.state(token)) {
      case 'dead': {
        return ok({ '110002': [token] });
      }
      case 'dead-alt': {
        return ok({ '110003': [token] });
      }
      case 'fail': {
        return ok({ '520': [token] });
      }
      case 'busy': {
        return { status: 200, body: { code: '110010', message: 'rate too high', value: {}, redirect: '' } };
      }
      case 'down': {
        return { status: 503, body: 'unavailable' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, messageJson: m! });

        return ok();
      }
    }
  }
}
