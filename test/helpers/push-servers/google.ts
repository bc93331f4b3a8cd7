/**
 * A local Google OAuth token endpoint and FCM HTTP v1 send endpoint (push-channels.md §2), one
 * TLS server (HTTP/2 for firebase-admin's sends, HTTP/1.1 for the token requests):
 * - `POST /token`, form grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer and an `assertion`
 *   JWT verified as RS256 with the service account's public key: iss = client_email,
 *   aud = <server>/token, scope firebase.messaging, exp − iat ≤ 3600 s. Answers
 *   {access_token, expires_in, token_type} (400 invalid_grant otherwise).
 * - `POST /v1/projects/<project>/messages:send` with `authorization: Bearer <issued, unexpired
 *   token>` (401 UNAUTHENTICATED otherwise); body {message: {token, data (string values only),
 *   android {priority high|normal, ttl "<n>s", collapse_key}}} (400 INVALID_ARGUMENT otherwise);
 *   then the token's scripted state: ok (200 {name}), unregistered (404 NOT_FOUND / UNREGISTERED),
 *   invalid (400 INVALID_ARGUMENT about the token), mismatch (403 SENDER_ID_MISMATCH), quota (429
 *   QUOTA_EXCEEDED), internal (500 INTERNAL), hang (no answer).
 */
import { type KeyObject } from 'node:crypto';
import { jwtVerify } from 'jose';
import { bearer, type FakeServer, formOf, IssuedTokens, type RecordedRequest, type Reply, startFakeServer } from './common.js';

/** Scripted behaviour of one FCM registration token. */
export type FcmTokenState = 'ok' | 'unregistered' | 'invalid' | 'mismatch' | 'quota' | 'internal' | 'hang';

/** A message the fake FCM accepted. */
export interface FcmAccepted {
  token: string;
  message: {
    token: string;
    data?: Record<string, string>;
    android?: { priority?: string; ttl?: string; collapse_key?: string; notification?: unknown };
    apns?: unknown;
    notification?: unknown;
  };
  accessToken: string;
}

const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';

function fcmError(code: number, status: string, message: string, errorCode?: string): Reply {
  return { status: code, body: { error: { code, message, status, ...(errorCode ? { details: [{ '@type': FCM_ERROR, errorCode }] } : {}) } } };
}

/** The fake Google OAuth + FCM. */
export class FakeGoogle {
  readonly tokens = new Map<string, FcmTokenState>();
  readonly accepted: FcmAccepted[] = [];
  readonly issued = new IssuedTokens();
  /** Lifetime of issued access tokens, s. */
  tokenLifetimeS = 3600;
  #server!: FakeServer;

  private constructor(
    private readonly projectId: string,
    private readonly clientEmail: string,
    private readonly publicKey: KeyObject,
  ) {}

  static async start(opts: { projectId: string; clientEmail: string; publicKey: KeyObject }): Promise<FakeGoogle> {
    const f = new FakeGoogle(opts.projectId, opts.clientEmail, opts.publicKey);
    f.#server = await startFakeServer((req) => f.#handle(req));

    return f;
  }

  get url(): string {
    return this.#server.url;
  }

  get tokenUri(): string {
    return `${this.#server.url}/token`;
  }

  get requests(): RecordedRequest[] {
    return this.#server.requests;
  }

  close(): Promise<void> {
    return this.#server.close();
  }

  async #handle(req: RecordedRequest): Promise<Reply> {
    if (req.method === 'POST' && req.path === '/token') {
      return this.#token(req);
    }
    if (req.method === 'POST' && req.path === `/v1/projects/${this.projectId}/messages:send`) {
      return this.#send(req);
    }

    return fcmError(404, 'NOT_FOUND', `no route ${req.method} ${req.path}`);
  }

  async #token(req: RecordedRequest): Promise<Reply> {
    const form = formOf(req);
    const bad = (what: string): Reply => ({ status: 400, body: { error: 'invalid_grant', error_description: what } });
    if (form.grant_type !== 'urn:ietf:params:oauth:grant-type:jwt-bearer' || !form.assertion) {
      return { status: 400, body: { error: 'unsupported_grant_type' } };
    }
    try {
      const { payload, protectedHeader } = await jwtVerify(form.assertion, this.publicKey, { issuer: this.clientEmail, audience: this.tokenUri, algorithms: ['RS256'] });
      if (protectedHeader.alg !== 'RS256' || payload.scope !== 'https://www.googleapis.com/auth/firebase.messaging') {
        return bad('wrong scope');
      }
      if (typeof payload.iat !== 'number' || typeof payload.exp !== 'number' || payload.exp - payload.iat > 3600) {
        return bad('Invalid JWT: exp too far from iat');
      }
    } catch (err) {
      return bad(`Invalid JWT Signature: ${(err as Error).message}`);
    }

    return { status: 200, body: { access_token: this.issued.issue('ya29.test', this.tokenLifetimeS), expires_in: this.tokenLifetimeS, token_type: 'Bearer' } };
  }

  #send(req: RecordedRequest): Reply {
    const access = bearer(req);
    if (this.issued.check(access) !== 'ok') {
      return fcmError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
    }
    let body: { message?: FcmAccepted['message'] };
    try {
      body = JSON.parse(req.text) as typeof body;
    } catch {
      return fcmError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
    }
    const m = body.message;
    if (!m || typeof m.token !== 'string') {
      return fcmError(400, 'INVALID_ARGUMENT', 'Invalid value at message.token');
    }
    for (const [k, v] of Object.entries(m.data ?? {})) {
      if (typeof v !== 'string' || k === 'from' || k === 'gcm' || k.startsWith('google')) {
        return fcmError(400, 'INVALID_ARGUMENT', `Invalid value at 'message.data[${k}]'`, 'INVALID_ARGUMENT');
      }
    }
    const a = m.android;
    if (a?.priority !== undefined && !/^(high|normal)$/i.test(a.priority)) {
      return fcmError(400, 'INVALID_ARGUMENT', "Invalid value at 'message.android.priority'", 'INVALID_ARGUMENT');
    }
    if (a?.ttl !== undefined && !/^\d+(\.\d{1,9})?s$/.test(a.ttl)) {
      return fcmError(400, 'INVALID_ARGUMENT', "Invalid value at 'message.android.ttl'", 'INVALID_ARGUMENT');
    }
    switch (this.tokens.get(m.token) ?? 'ok') {
      case 'unregistered': {
        return fcmError(404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED');
      }
      case 'invalid': {
        return fcmError(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT');
      }
      case 'mismatch': {
        return fcmError(403, 'PERMISSION_DENIED', 'SenderId mismatch', 'SENDER_ID_MISMATCH');
      }
      case 'quota': {
        return { ...fcmError(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded for quota metric of service fcm.googleapis.com.', 'QUOTA_EXCEEDED'), headers: { 'retry-after': '1' } };
      }
      case 'internal': {
        return fcmError(500, 'INTERNAL', 'Internal error encountered.', 'INTERNAL');
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token: m.token, message: m, accessToken: access! });

        return { status: 200, body: { name: `projects/${this.projectId}/messages/0:${Date.now()}%${this.accepted.length}` } };
      }
    }
  }
}
