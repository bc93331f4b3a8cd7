/**
 * The APNs adapter (node-pushnotifications → @parse/node-apn) through the PushBridge against a
 * local HTTP/2 APNs (test/helpers/push-servers/apns.ts) that checks the provider JWT, the apns-*
 * headers and the path.
 */
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { PushBridge } from '../../src/push/bridge.js';
import { type PushChannel, type PushMessage } from '../../src/push/provider.js';
import { FakeApns } from '../helpers/push-servers/apns.js';
import { memoryLogger, pushTestCerts } from '../helpers/push-servers/common.js';

const TEAM = 'TEAM123456';
const KID = 'KEY1234567';
const BUNDLE = 'com.acme.agent';
const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const tok = (n: number) => n.toString(16).padStart(64, '0');

let apns: FakeApns;
let bridge: PushBridge;
let log: ReturnType<typeof memoryLogger>;
const dead: [PushChannel, string][] = [];

function call(callId = 'call-1', ttlSeconds = 30): PushMessage {
  return { kind: 'call', callId, callerDisplay: '+49******56', ttlSeconds };
}

beforeAll(async () => {
  const certs = await pushTestCerts();
  apns = await FakeApns.start({ teamId: TEAM, keyId: KID, publicKey: keys.publicKey });
  log = memoryLogger();
  bridge = new PushBridge({
    config: {
      caFile: certs.caFile,
      timeoutMs: 500,
      maxAttempts: 2,
      backoffBaseMs: 20,
      backoffMaxMs: 100,
      apns: { enabled: true, teamId: TEAM, keyId: KID, key: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), bundleId: BUNDLE, baseUrl: apns.url },
    },
    logger: log.logger,
    onDeadToken: (channel, token) => {
      dead.push([channel, token]);
    },
  });
});

afterAll(async () => {
  await bridge?.close();
  await apns?.close();
});

afterEach(() => {
  vi.useRealTimers();
  apns.tokens.clear();
  dead.length = 0;
});

describe('APNs adapter', () => {
  it('delivers a call wake-up as a PushKit VoIP push: topic .voip, push type voip, priority 10, expiration, collapse id', async () => {
    const before = Math.floor(Date.now() / 1000);
    const result = await bridge.send({ channel: 'apns', token: tok(1) }, call('call-a', 30));
    expect(result).toEqual({ status: 'delivered' });
    const push = apns.accepted.at(-1)!;
    expect(push.token).toBe(tok(1));
    expect(push.topic).toBe(`${BUNDLE}.voip`);
    expect(push.pushType).toBe('voip');
    expect(push.priority).toBe('10');
    expect(Number(push.expiration)).toBeGreaterThanOrEqual(before + 30);
    expect(Number(push.expiration)).toBeLessThanOrEqual(before + 32);
    expect(push.collapseId).toBe('call-a');
    expect(push.payload).toMatchObject({ aps: {}, type: 'incoming_call', callId: 'call-a', caller: '+49******56', ttl: '30' });
    const req = apns.requests.at(-1)!;
    expect(req.httpVersion).toBe('2.0');
    expect(req.path).toBe(`/3/device/${tok(1)}`);
  });

  it('a TTL of 0 gives apns-expiration 0 (deliver now or drop)', async () => {
    await bridge.send({ channel: 'apns', token: tok(2) }, call('call-b', 0));
    expect(apns.accepted.at(-1)!.expiration).toBe('0');
  });

  it('sends cancel and missed notices as alert pushes to the alert token, never over VoIP', async () => {
    const device = { channel: 'apns' as const, token: tok(3), alertToken: tok(4) };
    expect(await bridge.send(device, { kind: 'cancel', callId: 'call-c', ttlSeconds: 60 })).toEqual({ status: 'delivered' });
    const cancel = apns.accepted.at(-1)!;
    expect(cancel).toMatchObject({ token: tok(4), topic: BUNDLE, pushType: 'alert', priority: '10', collapseId: 'call-c' });
    expect(cancel.payload).toMatchObject({ aps: { alert: { title: 'Call ended' } }, type: 'call_cancelled', callId: 'call-c' });
    expect(await bridge.send(device, { kind: 'missed', callId: 'call-c', callerDisplay: '+49******56', ttlSeconds: 3600 })).toEqual({ status: 'delivered' });
    expect(apns.accepted.at(-1)!).toMatchObject({ token: tok(4), pushType: 'alert', priority: '5', payload: { aps: { alert: { title: 'Missed call', body: '+49******56' } } } });
    const n = apns.accepted.length;
    expect(await bridge.send({ channel: 'apns', token: tok(3) }, { kind: 'missed', callId: 'call-c', ttlSeconds: 60 })).toEqual({ status: 'rejected', reason: 'no-alert-token' });
    expect(apns.accepted.length).toBe(n);
  });

  it('maps 410 Unregistered to dead-token and calls onDeadToken with the token', async () => {
    apns.tokens.set(tok(5), 'unregistered');
    const result = await bridge.send({ channel: 'apns', token: tok(5) }, call());
    expect(result).toEqual({ status: 'dead-token', reason: 'Unregistered' });
    expect(dead).toEqual([['apns', tok(5)]]);
  });

  it('treats 400 BadDeviceToken as rejected, not dead (sandbox/production mix-ups)', async () => {
    apns.tokens.set(tok(6), 'bad');
    expect(await bridge.send({ channel: 'apns', token: tok(6) }, call())).toEqual({ status: 'rejected', reason: 'BadDeviceToken' });
    expect(dead).toEqual([]);
  });

  it('retries 429 and 503 with backoff, then reports retry-later', async () => {
    apns.tokens.set(tok(7), 'busy');
    const n = apns.requests.length;
    const result = await bridge.send({ channel: 'apns', token: tok(7) }, call());
    expect(result).toMatchObject({ status: 'retry-later', reason: 'TooManyRequests' });
    expect(apns.requests.length - n).toBe(2); // maxAttempts 2, node-apn's own retries off
    apns.tokens.set(tok(8), 'down');
    expect(await bridge.send({ channel: 'apns', token: tok(8) }, call())).toMatchObject({ status: 'retry-later', reason: 'ServiceUnavailable' });
  });

  it('gives up on a silent server after the timeout (retry-later, reason timeout)', async () => {
    apns.tokens.set(tok(9), 'hang');
    const t0 = Date.now();
    const result = await bridge.send({ channel: 'apns', token: tok(9) }, call());
    expect(result).toMatchObject({ status: 'retry-later', reason: 'timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * 500 - 50);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('reuses one provider JWT and makes a new one after 55 min, before APNs would refuse it', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 1000);
    apns.jwts.clear();
    for (let i = 0; i < 3; i++) {
      expect(await bridge.send({ channel: 'apns', token: tok(10) }, call(`c${i}`))).toEqual({ status: 'delivered' });
    }
    expect(apns.jwts.size).toBe(1);
    vi.setSystemTime(Date.now() + 56 * 60_000);
    expect(await bridge.send({ channel: 'apns', token: tok(10) }, call('c-late'))).toEqual({ status: 'delivered' });
    expect(apns.jwts.size).toBe(2);
  });

  it('never logs the token', () => {
    expect(log.text()).not.toContain(tok(5));
    expect(log.text()).toContain('tokenHash');
  });
});
