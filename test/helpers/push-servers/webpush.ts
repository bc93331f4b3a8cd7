/**
 * A local Web Push service (RFC 8030) with VAPID (RFC 8292) and aes128gcm message encryption
 * (RFC 8188 / RFC 8291), plus the browser side: `subscribe()` makes a subscription whose keys the
 * server holds, as a user agent would.
 *
 * `POST /push/<id>`:
 * - `Authorization: vapid t=<JWT>, k=<key>`: k must be the application server key the subscription
 *   was made with, the JWT ES256-signed by it with aud = this origin, exp in the future and at most
 *   24 h away, sub a mailto: or https: URL (401/403 otherwise);
 * - `TTL` header required (400), `Content-Encoding: aes128gcm` (415), and the body must decrypt
 *   with the subscription's private key and auth secret (400 otherwise);
 * - then the subscription's scripted state: ok (201 with Location), gone (410), notfound (404),
 *   busy (429 with Retry-After), hang (no answer).
 */
import { createDecipheriv, createECDH, createHmac, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { jwtVerify } from 'jose';
import { type FakeServer, header, type RecordedRequest, type Reply, startFakeServer } from './common.js';

/** Scripted behaviour of one subscription. */
export type WebPushState = 'ok' | 'gone' | 'notfound' | 'busy' | 'hang';

/** A push the fake service accepted, decrypted. */
export interface WebPushAccepted {
  id: string;
  ttl: string;
  urgency: string | undefined;
  topic: string | undefined;
  payload: Record<string, unknown>;
  jwtClaims: Record<string, unknown>;
}

interface Sub {
  ecdh: ReturnType<typeof createECDH>;
  auth: Buffer;
  applicationServerKey: string;
}

function hmac(key: Buffer, data: Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** RFC 8291 §3.4 + RFC 8188: decrypts one aes128gcm body for the subscription. */
export function decryptAes128gcm(body: Buffer, uaEcdh: ReturnType<typeof createECDH>, authSecret: Buffer): Buffer {
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20]!;
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  if (ciphertext.length > rs) {
    throw new Error('more than one record');
  }
  const uaPublic = uaEcdh.getPublicKey();
  const ecdhSecret = uaEcdh.computeSecret(asPublic);
  const prkKey = hmac(authSecret, ecdhSecret);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, asPublic, Buffer.from([1])]);
  const ikm = hmac(prkKey, keyInfo);
  const prk = hmac(salt, ikm);
  const cek = hmac(prk, Buffer.from('Content-Encoding: aes128gcm\0\x01', 'binary')).subarray(0, 16);
  const nonce = hmac(prk, Buffer.from('Content-Encoding: nonce\0\x01', 'binary')).subarray(0, 12);
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) {
    end--;
  }
  if (padded[end] !== 2) {
    throw new Error('missing last-record delimiter');
  }

  return padded.subarray(0, end);
}

function rawKeyToPublicKey(raw: string): KeyObject {
  const b = Buffer.from(raw, 'base64url');
  if (b.length !== 65 || b[0] !== 4) {
    throw new Error('not an uncompressed P-256 point');
  }

  return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b.subarray(1, 33).toString('base64url'), y: b.subarray(33).toString('base64url') }, format: 'jwk' });
}

/** The fake push service. */
export class FakeWebPush {
  readonly states = new Map<string, WebPushState>();
  readonly accepted: WebPushAccepted[] = [];
  readonly #subs = new Map<string, Sub>();
  #server!: FakeServer;
  #next = 0;

  static async start(): Promise<FakeWebPush> {
    const f = new FakeWebPush();
    f.#server = await startFakeServer((req) => f.#handle(req));

    return f;
  }

  get url(): string {
    return this.#server.url;
  }

  get requests(): RecordedRequest[] {
    return this.#server.requests;
  }

  close(): Promise<void> {
    return this.#server.close();
  }

  /** What the browser does: a new subscription for `applicationServerKey`, as the JSON the app registers as its token. */
  subscribe(applicationServerKey: string): { id: string; token: string } {
    const id = `sub${++this.#next}`;
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const auth = randomBytes(16);
    this.#subs.set(id, { ecdh, auth, applicationServerKey });
    const token = JSON.stringify({ endpoint: `${this.url}/push/${id}`, keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: auth.toString('base64url') } });

    return { id, token };
  }

  async #handle(req: RecordedRequest): Promise<Reply> {
    const m = /^\/push\/([A-Za-z0-9]+)$/.exec(req.path);
    const sub = m ? this.#subs.get(m[1]!) : undefined;
    if (req.method !== 'POST' || !m || !sub) {
      return { status: 404, body: 'no such subscription' };
    }
    const id = m[1]!;
    const auth = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(header(req, 'authorization') ?? '');
    if (!auth) {
      return { status: 401, body: 'missing VAPID authorization' };
    }
    if (auth[2] !== sub.applicationServerKey) {
      return { status: 403, body: 'VAPID key does not match the subscription' };
    }
    let claims: Record<string, unknown>;
    try {
      const { payload } = await jwtVerify(auth[1]!, rawKeyToPublicKey(auth[2]), { audience: new URL(this.url).origin, algorithms: ['ES256'] });
      if (typeof payload.exp !== 'number' || payload.exp > Date.now() / 1000 + 24 * 3600) {
        return { status: 403, body: 'VAPID exp more than 24 h away' };
      }
      if (typeof payload.sub !== 'string' || !/^(mailto:|https:)/.test(payload.sub)) {
        return { status: 403, body: 'VAPID sub must be mailto: or https:' };
      }
      claims = payload;
    } catch (err) {
      return { status: 403, body: `VAPID JWT rejected: ${(err as Error).message}` };
    }
    const ttl = header(req, 'ttl');
    if (ttl === undefined || !/^\d+$/.test(ttl)) {
      return { status: 400, body: 'TTL header required' };
    }
    if (header(req, 'content-encoding') !== 'aes128gcm') {
      return { status: 415, body: 'aes128gcm only' };
    }
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(decryptAes128gcm(req.body, sub.ecdh, sub.auth).toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      return { status: 400, body: `cannot decrypt: ${(err as Error).message}` };
    }
    switch (this.states.get(id) ?? 'ok') {
      case 'gone': {
        return { status: 410, body: 'push subscription has unsubscribed or expired' };
      }
      case 'notfound': {
        return { status: 404, body: 'not found' };
      }
      case 'busy': {
        return { status: 429, headers: { 'retry-after': '1' }, body: 'too many requests' };
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ id, ttl, urgency: header(req, 'urgency'), topic: header(req, 'topic'), payload, jwtClaims: claims });

        return { status: 201, headers: { location: `${this.url}/message/${this.accepted.length}` } };
      }
    }
  }
}
