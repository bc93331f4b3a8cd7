/**
 * The Web Push adapter (node-pushnotifications → web-push) through the PushBridge against a local
 * push service (test/helpers/push-servers/webpush.ts) that checks the VAPID JWT and decrypts the
 * aes128gcm body with the subscription's keys.
 */
import { createECDH } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PushBridge } from '../../src/push/bridge.js';
import { type PushChannel } from '../../src/push/provider.js';
import { memoryLogger, pushTestCerts } from '../helpers/push-servers/common.js';
import { FakeWebPush } from '../helpers/push-servers/webpush.js';

const vapid = createECDH('prime256v1');
vapid.generateKeys();
const VAPID_PUBLIC = vapid.getPublicKey().toString('base64url');
const VAPID_PRIVATE = vapid.getPrivateKey().toString('base64url');

let service: FakeWebPush;
let bridge: PushBridge;
let log: ReturnType<typeof memoryLogger>;
const dead: [PushChannel, string][] = [];

beforeAll(async () => {
  const certs = await pushTestCerts();
  service = await FakeWebPush.start();
  log = memoryLogger();
  bridge = new PushBridge({
    config: {
      caFile: certs.caFile,
      timeoutMs: 500,
      maxAttempts: 2,
      backoffBaseMs: 20,
      backoffMaxMs: 1500,
      webpush: { enabled: true, vapidSubject: 'mailto:ops@example.com', vapidPublicKey: VAPID_PUBLIC, vapidPrivateKey: VAPID_PRIVATE },
    },
    logger: log.logger,
    onDeadToken: (channel, token) => {
      dead.push([channel, token]);
    },
  });
});

afterAll(async () => {
  await bridge?.close();
  await service?.close();
});

afterEach(() => {
  service.states.clear();
  dead.length = 0;
});

describe('Web Push adapter', () => {
  it('delivers a call wake-up: VAPID-signed, aes128gcm-encrypted, TTL, Urgency high, Topic from the call id', async () => {
    const { id, token } = service.subscribe(VAPID_PUBLIC);
    const result = await bridge.send({ channel: 'webpush', token }, { kind: 'call', callId: 'call-a', callerDisplay: '+49******56', ttlSeconds: 45 });
    expect(result).toEqual({ status: 'delivered' });
    const a = service.accepted.at(-1)!;
    expect(a.id).toBe(id);
    expect(a.ttl).toBe('45');
    expect(a.urgency).toBe('high');
    expect(a.topic).toMatch(/^[A-Za-z0-9_-]{1,32}$/);
    expect(a.payload).toMatchObject({ type: 'incoming_call', callId: 'call-a', caller: '+49******56', title: 'Incoming call' });
    expect(a.jwtClaims).toMatchObject({ aud: new URL(service.url).origin, sub: 'mailto:ops@example.com' });
  });

  it('gives each push its own TTL, Urgency and Topic (missed: normal urgency), and the same Topic per call', async () => {
    const { token } = service.subscribe(VAPID_PUBLIC);
    await bridge.send({ channel: 'webpush', token }, { kind: 'call', callId: 'call-b', ttlSeconds: 30 });
    const first = service.accepted.at(-1)!;
    await bridge.send({ channel: 'webpush', token }, { kind: 'missed', callId: 'call-b', ttlSeconds: 3600 });
    const second = service.accepted.at(-1)!;
    expect([first.ttl, first.urgency]).toEqual(['30', 'high']);
    expect([second.ttl, second.urgency]).toEqual(['3600', 'normal']);
    expect(second.topic).toBe(first.topic);
    expect(second.payload).toMatchObject({ type: 'missed_call', title: 'Missed call' });
  });

  it('maps 410 Gone and 404 to dead-token and calls onDeadToken with the subscription', async () => {
    const gone = service.subscribe(VAPID_PUBLIC);
    const missing = service.subscribe(VAPID_PUBLIC);
    service.states.set(gone.id, 'gone');
    service.states.set(missing.id, 'notfound');
    expect(await bridge.send({ channel: 'webpush', token: gone.token }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'dead-token', reason: 'Gone' });
    expect(await bridge.send({ channel: 'webpush', token: missing.token }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'dead-token', reason: 'NotFound' });
    expect(dead).toEqual([
      ['webpush', gone.token],
      ['webpush', missing.token],
    ]);
  });

  it('a subscription made for another VAPID key is rejected (403), not deleted', async () => {
    const other = createECDH('prime256v1');
    other.generateKeys();
    const { token } = service.subscribe(other.getPublicKey().toString('base64url'));
    expect(await bridge.send({ channel: 'webpush', token }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'rejected', reason: 'VapidRejected' });
    expect(dead).toEqual([]);
  });

  it('honours 429 Retry-After: retried once after it, then retry-later', async () => {
    const { id, token } = service.subscribe(VAPID_PUBLIC);
    service.states.set(id, 'busy');
    const t0 = Date.now();
    const result = await bridge.send({ channel: 'webpush', token }, { kind: 'call', callId: 'c', ttlSeconds: 30 });
    expect(result).toEqual({ status: 'retry-later', retryAfterMs: 1000, reason: 'TooManyRequests' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(service.requests.filter((r) => r.path === `/push/${id}`).length).toBe(2);
  });

  it('gives up on a silent push service after the timeout', async () => {
    const { id, token } = service.subscribe(VAPID_PUBLIC);
    service.states.set(id, 'hang');
    expect(await bridge.send({ channel: 'webpush', token }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toMatchObject({ status: 'retry-later', reason: 'timeout' });
  });

  it('rejects a token that is not a subscription without sending', async () => {
    const n = service.requests.length;
    expect(await bridge.send({ channel: 'webpush', token: 'not json' }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'rejected', reason: 'bad-subscription' });
    expect(service.requests.length).toBe(n);
  });

  it('never logs the subscription', () => {
    expect(log.text()).not.toContain('/push/sub');
  });
});
