/**
 * PushBridge behaviour that is not one adapter's: per-provider concurrency, disabled channels,
 * a failing onDeadToken, a Retry-After longer than the bridge waits, close(). Against the local
 * Xiaomi and Huawei servers (the adapter under the bridge is real).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PushBridge, type PushOutcome } from '../../src/push/bridge.js';
import { PushConfigError } from '../../src/push/provider.js';
import { memoryLogger, pushTestCerts } from '../helpers/push-servers/common.js';
import { FakeXiaomi } from '../helpers/push-servers/xiaomi.js';

let xiaomi: FakeXiaomi;
let caFile: string;
const outcomes: PushOutcome[] = [];

beforeAll(async () => {
  caFile = (await pushTestCerts()).caFile;
  xiaomi = await FakeXiaomi.start({ appSecret: 'mi-secret', packageName: 'com.acme.agent' });
});

afterAll(async () => {
  await xiaomi?.close();
});

afterEach(() => {
  xiaomi.states.clear();
  outcomes.length = 0;
});

function makeBridge(over: { concurrency?: number; timeoutMs?: number; maxAttempts?: number; onDeadToken?: () => void | Promise<void> } = {}) {
  const log = memoryLogger();
  const bridge = new PushBridge({
    config: {
      caFile,
      timeoutMs: over.timeoutMs ?? 400,
      maxAttempts: over.maxAttempts ?? 1,
      backoffBaseMs: 10,
      backoffMaxMs: 100,
      xiaomi: { enabled: true, appSecret: 'mi-secret', packageName: 'com.acme.agent', baseUrl: xiaomi.url, ...(over.concurrency ? { concurrency: over.concurrency } : {}) },
    },
    logger: log.logger,
    onDeadToken: over.onDeadToken ?? (() => undefined),
    onOutcome: (o) => outcomes.push(o),
  });

  return { bridge, log };
}

describe('PushBridge', () => {
  it('keeps at most `concurrency` requests in flight per provider', async () => {
    const { bridge } = makeBridge({ concurrency: 2, timeoutMs: 1000 });
    for (let i = 0; i < 5; i++) {
      xiaomi.states.set(`hang-${i}`, 'hang');
    }
    const before = xiaomi.count('/v3/');
    const t0 = Date.now();
    const sends = Array.from({ length: 5 }, (_, i) => bridge.send({ channel: 'xiaomi', token: `hang-${i}` }, { kind: 'call', callId: `c${i}`, ttlSeconds: 30 }));
    while (xiaomi.count('/v3/') - before < 2 && Date.now() - t0 < 900) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, Math.max(0, 900 - (Date.now() - t0)) / 2));
    // Both slots taken, the other three wait for the timeouts to free them.
    expect(xiaomi.count('/v3/') - before).toBe(2);
    const results = await Promise.all(sends);
    expect(results.every((r) => r.status === 'retry-later')).toBe(true);
    expect(xiaomi.count('/v3/') - before).toBe(5);
    await bridge.close();
  });

  it('answers rejected / channel-disabled for a channel without configuration, without throwing', async () => {
    const { bridge } = makeBridge();
    expect(bridge.channels).toEqual(['xiaomi']);
    expect(await bridge.send({ channel: 'vivo', token: 't' }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'rejected', reason: 'channel-disabled' });
    expect(outcomes.at(-1)).toMatchObject({ channel: 'vivo', attempts: 0, result: { status: 'rejected' } });
    await bridge.close();
  });

  it('still returns dead-token when onDeadToken throws, and logs the failure', async () => {
    const { bridge, log } = makeBridge({
      onDeadToken: () => {
        throw new Error('redis down');
      },
    });
    xiaomi.states.set('gone-1', 'dead');
    expect(await bridge.send({ channel: 'xiaomi', token: 'gone-1' }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'dead-token', reason: 'bad_regids' });
    expect(log.text()).toContain('onDeadToken failed');
    await bridge.close();
  });

  it('does not retry past the message TTL', async () => {
    const { bridge } = makeBridge({ maxAttempts: 3, timeoutMs: 600 });
    xiaomi.states.set('hang-ttl', 'hang');
    const before = xiaomi.count('/v3/');
    // TTL 1 s: the retry starts at ~0.6 s (inside the TTL), a third attempt would start at ~1.2 s (past it).
    const r = await bridge.send({ channel: 'xiaomi', token: 'hang-ttl' }, { kind: 'call', callId: 'c', ttlSeconds: 1 });
    expect(r).toMatchObject({ status: 'retry-later', reason: 'timeout' });
    expect(xiaomi.count('/v3/') - before).toBe(2);
    expect(outcomes.at(-1)!.attempts).toBe(2);
    await bridge.close();
  });

  it('after close() rejects sends with bridge-closed', async () => {
    const { bridge } = makeBridge();
    await bridge.close();
    await bridge.close();
    expect(await bridge.send({ channel: 'xiaomi', token: 't' }, { kind: 'call', callId: 'c', ttlSeconds: 30 })).toEqual({ status: 'rejected', reason: 'bridge-closed' });
  });

  it('refuses at construction an enabled channel whose key file cannot be read (PushConfigError naming the key)', () => {
    expect(
      () =>
        new PushBridge({
          config: { apns: { enabled: true, teamId: 'T', keyId: 'K', keyFile: '/nonexistent/key.p8', bundleId: 'b' } },
          logger: memoryLogger().logger,
          onDeadToken: () => undefined,
        }),
    ).toThrow(PushConfigError);
    expect(
      () =>
        new PushBridge({
          config: { apns: { enabled: true, teamId: 'T', keyId: 'K', keyFile: '/nonexistent/key.p8', bundleId: 'b' } },
          logger: memoryLogger().logger,
          onDeadToken: () => undefined,
        }),
    ).toThrow(/push\.apns\.keyFile/);
  });
});
