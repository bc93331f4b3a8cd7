/**
 * A local Honor Push (push-channels.md §4, itself UNCONFIRMED):
 * - `POST /auth/token`, form grant_type=client_credentials, client_id, client_secret →
 *   {access_token, expires_in, token_type} or 400;
 * - `POST /api/v1/<appId>/sendMessage` with `Authorization: Bearer <token>` (401 otherwise) and a
 *   `timestamp` header of digits; body {token: [one token], data (string) or
 *   android.notification, android.ttl "<n>s"} (400 otherwise); then the token's state: ok → code
 *   200 with sendResult true; dead → code 200 with the token in data.expireTokens; fail → in
 *   data.failTokens; busy → 429; down → 503; hang.
 */
import { randomUUID } from 'node:crypto';
import { bearer, formOf, header, type RecordedRequest, type Reply } from './common.js';
import { json, VendorFake } from './vendor-base.js';

export interface HonorAccepted {
  token: string;
  timestamp: string;
  body: { token: string[]; data?: string; android: Record<string, unknown> };
}

export class FakeHonor extends VendorFake<HonorAccepted> {
  private constructor(
    private readonly appId: string,
    private readonly clientSecret: string,
  ) {
    super();
  }

  static async start(opts: { appId: string; clientSecret: string }): Promise<FakeHonor> {
    const f = new FakeHonor(opts.appId, opts.clientSecret);
    await f.listen((req) => f.#handle(req));

    return f;
  }

  #handle(req: RecordedRequest): Reply {
    if (req.method === 'POST' && req.path === '/auth/token') {
      const f = formOf(req);
      if (f.grant_type !== 'client_credentials' || f.client_id !== this.appId || f.client_secret !== this.clientSecret) {
        this.problem('bad client credentials');

        return { status: 400, body: { error: 'invalid_client' } };
      }

      return { status: 200, body: { access_token: this.issued.issue('honor.', this.tokenLifetimeS), expires_in: this.tokenLifetimeS, token_type: 'Bearer' } };
    }
    if (req.method !== 'POST' || req.path !== `/api/v1/${this.appId}/sendMessage`) {
      return { status: 404, body: { code: 404, message: 'no such path' } };
    }
    if (this.issued.check(bearer(req)) !== 'ok') {
      return { status: 401, body: { code: 80200003, message: 'token expired or invalid' } };
    }
    const timestamp = header(req, 'timestamp') ?? '';
    const body = json(req.text) as HonorAccepted['body'] | undefined;
    const bad = (what: string): Reply => ({ status: 400, body: { code: 80100003, message: this.problem(what) } });
    if (!/^\d{13}$/.test(timestamp)) {
      return bad('timestamp header must be ms');
    }
    if (!body || !Array.isArray(body.token) || body.token.length !== 1 || typeof body.token[0] !== 'string') {
      return bad('token must be an array with one token');
    }
    if (body.data !== undefined && typeof body.data !== 'string') {
      return bad('data must be a string');
    }
    if (body.data === undefined && !body.android?.notification) {
      return bad('neither data nor android.notification');
    }
    if (typeof body.android?.ttl !== 'string' || !/^\d+s$/.test(body.android.ttl)) {
      return bad('android.ttl must be "<seconds>s"');
    }
    const token = body.token[0];
    const answer = (data: Record<string, unknown>): Reply => ({ status: 200, body: { code: 200, message: 'success', data: { requestId: randomUUID(), failTokens: [], expireTokens: [], ...data } } });
    switch (this.state(token)) {
      case 'dead': {
        return answer({ sendResult: false, expireTokens: [token] });
      }
      case 'fail': {
        return answer({ sendResult: false, failTokens: [token] });
      }
      case 'busy': {
        return { status: 429, body: 'too many requests' };
      }
      case 'down': {
        return { status: 503, body: 'unavailable' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, timestamp, body });

        return answer({ sendResult: true });
      }
    }
  }
}
