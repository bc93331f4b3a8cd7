/**
 * The FCM adapter (node-pushnotifications → firebase-admin over HTTP/2, with the adapter's cached
 * service-account OAuth credential) through the PushBridge, against a local Google OAuth token
 * endpoint and FCM v1 (test/helpers/push-servers/google.ts).
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { PushBridge } from '../../src/push/bridge.js';
import { type FcmProvider } from '../../src/push/fcm.js';
import { uninstallFcmHostRedirect } from '../../src/push/fcm-host-redirect.js';
import { type PushChannel, type PushMessage } from '../../src/push/provider.js';
import { memoryLogger, pushTestCerts } from '../helpers/push-servers/common.js';
import { FakeGoogle } from '../helpers/push-servers/google.js';

const PROJECT = 'ringbridge-test';
const EMAIL = 'push@ringbridge-test.iam.gserviceaccount.com';
const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const tok = (n: number) => `fcm-token-${n}-${'x'.repeat(140)}`;

let google: FakeGoogle;
let bridge: PushBridge;
let log: ReturnType<typeof memoryLogger>;
const dead: [PushChannel, string][] = [];

function call(callId = 'call-1', ttlSeconds = 30): PushMessage {
  return { kind: 'call', callId, callerDisplay: '+49******56', ttlSeconds };
}

beforeAll(async () => {
  const certs = await pushTestCerts();
  google = await FakeGoogle.start({ projectId: PROJECT, clientEmail: EMAIL, publicKey: keys.publicKey });
  log = memoryLogger();
  bridge = new PushBridge({
    config: {
      caFile: certs.caFile,
      timeoutMs: 1500,
      maxAttempts: 2,
      backoffBaseMs: 20,
      backoffMaxMs: 1500,
      fcm: {
        enabled: true,
        serviceAccount: { project_id: PROJECT, client_email: EMAIL, private_key: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), token_uri: google.tokenUri },
        baseUrl: google.url,
      },
    },
    logger: log.logger,
    onDeadToken: (channel, token) => {
      dead.push([channel, token]);
    },
  });
});

afterAll(async () => {
  await bridge?.close();
  await google?.close();
  uninstallFcmHostRedirect();
});

afterEach(() => {
  vi.useRealTimers();
  google.tokens.clear();
  dead.length = 0;
});

describe('FCM adapter', () => {
  it('delivers a call wake-up as a high-priority data-only message with TTL and collapse key', async () => {
    const result = await bridge.send({ channel: 'fcm', token: tok(1) }, call('call-a', 30));
    expect(result.status).toBe('delivered');
    const m = google.accepted.at(-1)!.message;
    expect(m.token).toBe(tok(1));
    expect(m.data).toMatchObject({ type: 'incoming_call', callId: 'call-a', caller: '+49******56', ttl: '30' });
    expect(m.android).toMatchObject({ priority: 'high', ttl: '30s', collapse_key: 'call-a' });
    expect(m.android?.notification).toBeUndefined();
    expect(m.notification).toBeUndefined();
    expect(m.apns).toBeUndefined();
    expect(google.requests.at(-1)!.httpVersion).toBe('2.0');
  });

  it('sends missed-call notices at normal priority', async () => {
    await bridge.send({ channel: 'fcm', token: tok(2) }, { kind: 'missed', callId: 'call-b', ttlSeconds: 3600 });
    expect(google.accepted.at(-1)!.message.android).toMatchObject({ priority: 'normal', ttl: '3600s' });
    expect(google.accepted.at(-1)!.message.data).toMatchObject({ type: 'missed_call' });
  });

  it('reuses one OAuth token across sends and fetches a new one 5 min before it expires', async () => {
    const fcm = bridge.provider('fcm') as FcmProvider;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 1000);
    const before = google.issued.requests;
    for (let i = 0; i < 3; i++) {
      expect((await bridge.send({ channel: 'fcm', token: tok(3) }, call(`c${i}`))).status).toBe('delivered');
    }
    // At most one fetch for the three sends (none when an earlier test's token is still fresh).
    expect(google.issued.requests - before).toBeLessThanOrEqual(1);
    const tokensUsed = new Set(google.accepted.slice(-3).map((a) => a.accessToken));
    expect(tokensUsed.size).toBe(1);
    const requestsSoFar = google.issued.requests;
    // 56 min after the token was issued: inside the 5-minute margin, still accepted by the server.
    vi.setSystemTime(Date.now() + 55 * 60_000);
    expect((await bridge.send({ channel: 'fcm', token: tok(3) }, call('c-late'))).status).toBe('delivered');
    expect(google.issued.requests).toBe(requestsSoFar + 1);
    expect(google.accepted.at(-1)!.accessToken).not.toBe([...tokensUsed][0]);
    expect(fcm.credential.tokenRequests).toBe(google.issued.requests);
  });

  it('maps 404 UNREGISTERED to dead-token and calls onDeadToken', async () => {
    google.tokens.set(tok(4), 'unregistered');
    expect(await bridge.send({ channel: 'fcm', token: tok(4) }, call())).toEqual({ status: 'dead-token', reason: 'UNREGISTERED' });
    expect(dead).toEqual([['fcm', tok(4)]]);
  });

  it('maps 400 INVALID_ARGUMENT about the token and 403 SENDER_ID_MISMATCH to dead-token', async () => {
    google.tokens.set(tok(5), 'invalid');
    google.tokens.set(tok(6), 'mismatch');
    expect(await bridge.send({ channel: 'fcm', token: tok(5) }, call())).toEqual({ status: 'dead-token', reason: 'INVALID_ARGUMENT:token' });
    expect(await bridge.send({ channel: 'fcm', token: tok(6) }, call())).toEqual({ status: 'dead-token', reason: 'SENDER_ID_MISMATCH' });
    expect(dead.map((d) => d[1])).toEqual([tok(5), tok(6)]);
  });

  it('treats 429 QUOTA_EXCEEDED and 500 INTERNAL as retry-later (retried once by the bridge)', async () => {
    google.tokens.set(tok(7), 'quota');
    const n = google.requests.filter((r) => r.path.includes('messages:send')).length;
    expect(await bridge.send({ channel: 'fcm', token: tok(7) }, call())).toMatchObject({ status: 'retry-later', reason: 'QUOTA_EXCEEDED' });
    expect(google.requests.filter((r) => r.path.includes('messages:send')).length - n).toBe(2);
    google.tokens.set(tok(8), 'internal');
    expect(await bridge.send({ channel: 'fcm', token: tok(8) }, call())).toMatchObject({ status: 'retry-later', reason: 'INTERNAL' });
    expect(dead).toEqual([]);
  });

  it('gives up on a silent server after the timeout', async () => {
    google.tokens.set(tok(9), 'hang');
    const t0 = Date.now();
    expect(await bridge.send({ channel: 'fcm', token: tok(9) }, call())).toMatchObject({ status: 'retry-later', reason: 'timeout' });
    expect(Date.now() - t0).toBeLessThan(6000);
  });

  it('never logs the token', () => {
    expect(log.text()).not.toContain(tok(4));
  });
});
