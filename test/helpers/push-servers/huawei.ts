/**
 * A local Huawei Push Kit (push-channels.md §3):
 * - `POST /oauth2/v3/token`, form grant_type=client_credentials, client_id, client_secret →
 *   {access_token (with a "/", sent escaped as "\/"), expires_in, token_type} or 400 on bad credentials;
 * - `POST /v1/<appId>/messages:send` with `Authorization: Bearer <token>`: unknown token → 401
 *   code 80200001, expired → 401 code 80200003; the body must be {validate_only, message: {token:
 *   [one token], data (a string) or android.notification, android.ttl "<n>s", urgency HIGH|NORMAL}}
 *   (400 code 80100003 otherwise); then the token's state: ok → 80000000; dead → 400 80300007;
 *   dead-alt → 200 80100000 with msg listing the token in illegal_tokens; busy → 503 (no JSON);
 *   down → 500 81000001; hang.
 */
import { randomUUID } from 'node:crypto';
import { bearer, formOf, type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface HuaweiAccepted {
  token: string;
  body: { validate_only: boolean; message: { token: string[]; data?: string; android: Record<string, unknown> } };
}

export class FakeHuawei extends VendorFake<HuaweiAccepted> {
  private constructor(
    private readonly appId: string,
    private readonly clientSecret: string,
  ) {
    super();
  }

  static async start(opts: { appId: string; clientSecret: string }): Promise<FakeHuawei> {
    const f = new FakeHuawei(opts.appId, opts.clientSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    if (req.method === 'POST' && req.path === '/oauth2/v3/token') {
      const f = formOf(req);
      if (f.grant_type !== 'client_credentials' || f.client_id !== this.appId || f.client_secret !== this.clientSecret) {
        this.problem('bad client credentials');

        return { status: 400, body: { error: 1101, sub_error: 20001, error_description: 'invalid client' } };
      }
      const token = this.issued.issue('CgB6e3x9/', this.tokenLifetimeS);
      // Huawei escapes "/" in the JSON text; a client must parse JSON rather than cut strings.
      const text = JSON.stringify({ access_token: token, expires_in: this.tokenLifetimeS, token_type: 'Bearer' }).replace(/\//g, '\\/');

      return { status: 200, headers: { 'content-type': 'application/json' }, body: text };
    }
    if (req.method !== 'POST' || req.path !== `/v1/${this.appId}/messages:send`) {
      return { status: 404, body: { code: '80100003', msg: 'no such path' } };
    }
    const auth = this.issued.check(bearer(req));
    if (auth !== 'ok') {
      return { status: 401, body: auth === 'expired' ? { code: '80200003', msg: 'Oauth Token expired.' } : { code: '80200001', msg: 'Oauth authentication error' } };
    }
    const body = json(req.text) as HuaweiAccepted['body'] | undefined;
    const m = body?.message;
    const bad = (what: string): Reply => ({ status: 400, body: { code: '80100003', msg: this.problem(what), requestId: randomUUID() } });
    if (!body || typeof body.validate_only !== 'boolean' || !m || !Array.isArray(m.token) || m.token.length !== 1 || typeof m.token[0] !== 'string') {
      return bad('message.token must be an array with one token');
    }
    if (m.data !== undefined && typeof m.data !== 'string') {
      return bad('message.data must be a string');
    }
    if (m.data === undefined && !m.android?.notification) {
      return bad('neither data nor android.notification');
    }
    if (typeof m.android?.ttl !== 'string' || !/^\d+s$/.test(m.android.ttl)) {
      return bad('android.ttl must be "<seconds>s"');
    }
    if (m.android.urgency !== undefined && m.android.urgency !== 'HIGH' && m.android.urgency !== 'NORMAL') {
      return bad('android.urgency');
    }
    const token = m.token[0];
    switch (this.state(token)) {
      case 'dead': {
        return { status: 400, body: { code: '80300007', msg: 'All the tokens are invalid', requestId: randomUUID() } };
      }
      case 'dead-alt': {
        return { status: 200, body: { code: '80100000', msg: JSON.stringify({ success: 0, failure: 1, illegal_tokens: [token] }), requestId: randomUUID() } };
      }
      case 'busy': {
        return { status: 503, body: 'traffic control' };
      }
      case 'down': {
        return { status: 500, body: { code: '81000001', msg: 'System inner error', requestId: randomUUID() } };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, body });

        return { status: 200, body: { code: '80000000', msg: 'Success', requestId: randomUUID() } };
      }
    }
  }
}
