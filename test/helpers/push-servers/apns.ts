/**
 * A local APNs (HTTP/2, token auth) following push-channels.md §1:
 * - `POST /3/device/<hex token>` only (404 BadPath, 405 MethodNotAllowed otherwise);
 * - `authorization: bearer <JWT>` verified as ES256 with the team's key, header `kid`, claims
 *   `iss` = team id and `iat` no older than 1 h (403 InvalidProviderToken / ExpiredProviderToken);
 * - headers: `apns-topic` (400 MissingTopic), `apns-push-type` voip|alert|background (400
 *   InvalidPushType), a VoIP push needs a topic ending `.voip` and a non-VoIP push one without
 *   (400 DeviceTokenNotForTopic), `apns-priority` 5|10 (400 BadPriority), `apns-expiration`
 *   digits (400 BadExpirationDate), `apns-collapse-id` ≤ 64 bytes (400 BadCollapseId);
 * - body a JSON object (400 PayloadEmpty), ≤ 5120 bytes for VoIP and 4096 otherwise (413);
 * - then the token's scripted state: ok (200 with apns-id), unregistered (410 Unregistered with a
 *   timestamp), bad (400 BadDeviceToken), busy (429 TooManyRequests), down (503
 *   ServiceUnavailable), hang (no answer).
 */
import { randomUUID } from 'node:crypto';
import { type KeyObject } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { type FakeServer, header, type RecordedRequest, type Reply, startFakeServer } from './common.js';

/** Scripted behaviour of one device token. */
export type ApnsTokenState = 'ok' | 'unregistered' | 'bad' | 'busy' | 'down' | 'hang';

/** A push the fake APNs accepted. */
export interface ApnsPush {
  token: string;
  topic: string;
  pushType: string;
  priority: string;
  expiration: string | undefined;
  collapseId: string | undefined;
  payload: Record<string, unknown>;
  jwt: string;
}

/** The fake APNs. */
export class FakeApns {
  readonly tokens = new Map<string, ApnsTokenState>();
  readonly accepted: ApnsPush[] = [];
  /** Every distinct provider token (JWT) seen. */
  readonly jwts = new Set<string>();
  #server!: FakeServer;

  private constructor(
    private readonly teamId: string,
    private readonly keyId: string,
    private readonly publicKey: KeyObject,
  ) {}

  /** Starts the server for a team whose .p8 key pair's public half is `publicKey`. */
  static async start(opts: { teamId: string; keyId: string; publicKey: KeyObject }): Promise<FakeApns> {
    const f = new FakeApns(opts.teamId, opts.keyId, opts.publicKey);
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

  async #handle(req: RecordedRequest): Promise<Reply> {
    const fail = (status: number, reason: string, extra: Record<string, unknown> = {}): Reply => ({ status, body: { reason, ...extra }, headers: { 'apns-id': randomUUID() } });
    const m = /^\/3\/device\/([0-9a-fA-F]+)$/.exec(req.path);
    if (!m) {
      return fail(404, 'BadPath');
    }
    if (req.method !== 'POST') {
      return fail(405, 'MethodNotAllowed');
    }
    const token = m[1]!;
    const auth = /^bearer (.+)$/.exec(header(req, 'authorization') ?? '');
    if (!auth) {
      return fail(403, 'MissingProviderToken');
    }
    const jwt = auth[1]!;
    try {
      const h = decodeProtectedHeader(jwt);
      if (h.alg !== 'ES256' || h.kid !== this.keyId) {
        return fail(403, 'InvalidProviderToken');
      }
      const { payload } = await jwtVerify(jwt, this.publicKey, { issuer: this.teamId, algorithms: ['ES256'] });
      if (typeof payload.iat !== 'number') {
        return fail(403, 'InvalidProviderToken');
      }
      if (Date.now() / 1000 - payload.iat > 3600) {
        return fail(403, 'ExpiredProviderToken');
      }
    } catch {
      return fail(403, 'InvalidProviderToken');
    }
    this.jwts.add(jwt);
    const topic = header(req, 'apns-topic');
    const pushType = header(req, 'apns-push-type') ?? 'alert';
    const priority = header(req, 'apns-priority') ?? '10';
    const expiration = header(req, 'apns-expiration');
    const collapseId = header(req, 'apns-collapse-id');
    if (!topic) {
      return fail(400, 'MissingTopic');
    }
    if (!['voip', 'alert', 'background'].includes(pushType)) {
      return fail(400, 'InvalidPushType');
    }
    if ((pushType === 'voip') !== topic.endsWith('.voip')) {
      return fail(400, 'DeviceTokenNotForTopic');
    }
    if (priority !== '10' && priority !== '5') {
      return fail(400, 'BadPriority');
    }
    if (expiration !== undefined && !/^\d+$/.test(expiration)) {
      return fail(400, 'BadExpirationDate');
    }
    if (collapseId !== undefined && Buffer.byteLength(collapseId) > 64) {
      return fail(400, 'BadCollapseId');
    }
    if (req.body.length > (pushType === 'voip' ? 5120 : 4096)) {
      return fail(413, 'PayloadTooLarge');
    }
    let payload: unknown;
    try {
      payload = JSON.parse(req.text);
    } catch {
      return fail(400, 'PayloadEmpty');
    }
    if (!payload || typeof payload !== 'object') {
      return fail(400, 'PayloadEmpty');
    }
    switch (this.tokens.get(token) ?? 'ok') {
      case 'unregistered': {
        return fail(410, 'Unregistered', { timestamp: Date.now() });
      }
      case 'bad': {
        return fail(400, 'BadDeviceToken');
      }
      case 'busy': {
        return fail(429, 'TooManyRequests');
      }
      case 'down': {
        return fail(503, 'ServiceUnavailable');
      }
      case 'hang': {
        return { status: 0, hang: true };
      }
      default: {
        this.accepted.push({ token, topic, pushType, priority, expiration, collapseId, payload: payload as Record<string, unknown>, jwt });

        return { status: 200, headers: { 'apns-id': randomUUID() } };
      }
    }
  }
}
