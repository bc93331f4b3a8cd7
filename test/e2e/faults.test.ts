/**
 * Faults the gateway survives, end to end with sipp as the trunk and a Node WebRTC agent:
 * - a mediasoup worker crash (SIGKILL): its calls end with a BYE whose Reason says why and
 *   `media_error` at the agent, a new worker starts, and the next call carries audio;
 * - Redis unreachable for 10 s (its server stopped, then started again on the same port): the call
 *   in progress goes on with audio both ways, a new INVITE gets 503 with Retry-After, /health says
 *   so, and afterwards health, new calls and the agent's session are back;
 * - Redis that stops answering on an open connection (SIGSTOP: no RST, the client stays
 *   "ready"): a PING probe with command timeouts takes it as away, then back.
 * Covered elsewhere: a WebSocket drop mid-call with resume (calls-agent.test.ts), a SIP peer that
 * vanishes (RTP timeout, calls-media.test.ts), a node killed mid-call (cluster.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LocalRedisServer } from '../../src/state/redis.js';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freeTcpPort, quietLogger } from '../helpers/env.js';
import { freePort, runSipp, sipHeader, startSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;
let redis: LocalRedisServer | undefined;

afterEach(async () => {
  await fx?.close().catch(() => undefined);
  fx = undefined;
  await redis?.stop();
  redis = undefined;
});

const toAgent = (agentId: string, extra: Record<string, unknown> = {}) => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' }, ...extra });

async function health(): Promise<{ status: number; body: { status: string; components: Record<string, { state: string }> } }> {
  const res = await fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/health`);

  return { status: res.status, body: (await res.json()) as { status: string; components: Record<string, { state: string }> } };
}

describe('faults', () => {
  it('a mediasoup worker crash ends its calls with a BYE and a reason; a new worker takes the next call', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1', { autoAnswer: true });
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await expect.poll(async () => (await agent.packetCounts(incoming.call.id)).received, { timeout: 10_000 }).toBeGreaterThan(20);

    const pool = fx.gw.media!;
    const crashed = pool.leastLoaded().pid;
    process.kill(crashed, 'SIGKILL');

    const ended = await agent.waitForEvent('ended', undefined, 10_000);
    expect(ended).toMatchObject({ reason: 'media_error' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const bye = r.received('BYE')[0];
    expect(bye, r.describe()).toBeDefined();
    expect(sipHeader(bye!, 'Reason')).toMatch(/^SIP;cause=500;text="media failure"$/);
    expect(fx.gw.calls!.calls).toHaveLength(0);

    await expect.poll(() => pool.health().state, { timeout: 10_000 }).toBe('up');
    expect(pool.leastLoaded().pid).not.toBe(crashed);
    expect(pool.deaths).toBe(1);

    // the next call runs on the new worker, with audio both ways
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const next = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '2500' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const second = await agent.waitForEvent('incoming', undefined, 10_000);
    await expect.poll(async () => (await agent.packetCounts(second.call.id)).received, { timeout: 10_000 }).toBeGreaterThan(20);
    expect(await agent.waitForEvent('ended', undefined, 15_000)).toMatchObject({ reason: 'hangup_remote' });
    const r2 = await next.result;
    expect(r2.exitCode, r2.describe()).toBe(0);
    expect((await capture.stop()).byPayloadType.get(8) ?? 0, 'PCMA from the agent at sipp').toBeGreaterThan(20);
    expect(await fx.gw.metrics.registry.getSingleMetricAsString('ringbridge_mediasoup_worker_deaths_total')).toMatch(/ringbridge_mediasoup_worker_deaths_total 1$/m);
  }, 60_000);

  it('Redis away for 10 s: the call in progress goes on, new calls get 503, everything recovers', async () => {
    const port = await freeTcpPort();
    redis = await LocalRedisServer.start('127.0.0.1', port, quietLogger());
    // (sipp's audio ends after 7 s: the RTP timeout must not end the call first)
    fx = await startCallGateway(toAgent('agent-1', { redis: { url: `redis://127.0.0.1:${port}`, autoStart: false }, calls: { rtpTimeoutMs: 30_000 } }));
    const agent = await fx.agent('agent-1', { autoAnswer: true });
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    // a long call: sipp plays its 7 s of audio, then stays in the call until hold_ms has passed
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '16000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await expect.poll(async () => (await agent.packetCounts(incoming.call.id)).received, { timeout: 10_000 }).toBeGreaterThan(10);

    // Redis goes away
    await redis.stop();
    const outageStart = Date.now();
    await expect.poll(async () => (await health()).status, { timeout: 5000 }).toBe(503);
    expect((await health()).body.components.redis!.state).toBe('down');
    const before = await agent.packetCounts(incoming.call.id);

    // a new call is refused at once with 503 and a Retry-After
    const refused = await runSipp({ scenario: 'uac-expect-503', target: fx.sipTarget, timeoutMs: 15_000 });
    expect(refused.exitCode, refused.describe()).toBe(0);
    const r503 = refused.received(503)[0]!;
    expect(sipHeader(r503, 'Retry-After')).toMatch(/^\d+$/);

    // the call in progress keeps its audio both ways
    await new Promise((r) => setTimeout(r, 2000));
    const during = await agent.packetCounts(incoming.call.id);
    expect(during.received - before.received, 'trunk audio at the agent during the outage').toBeGreaterThan(30);
    expect(during.sent - before.sent, 'agent audio during the outage').toBeGreaterThan(30);
    expect(fx.gw.calls!.call(incoming.call.id)?.state).toBe('active');

    // Redis comes back after 10 s (empty: it keeps nothing on disk)
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - outageStart))));
    redis = await LocalRedisServer.start('127.0.0.1', port, quietLogger());
    await expect.poll(async () => (await health()).status, { timeout: 15_000 }).toBe(200);

    // the call lived through it and ends normally
    expect(await agent.waitForEvent('ended', undefined, 20_000)).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect((await capture.stop()).byPayloadType.get(8) ?? 0, 'PCMA from the agent at sipp over the whole call').toBeGreaterThan(300);

    // the agent's session is still there, and the next call is answered
    expect(agent.client.connectionState).toBe('connected');
    const next = await runSipp({ scenario: 'uac-invite-bye', target: fx.sipTarget, keys: { hold_ms: '500' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 20_000 });
    expect(next.exitCode, next.describe()).toBe(0);
    expect(next.received(200, 'INVITE')).toHaveLength(1);
  }, 90_000);

  it('a call that ends while Redis is away gets its record written once Redis is back', async () => {
    const port = await freeTcpPort();
    redis = await LocalRedisServer.start('127.0.0.1', port, quietLogger());
    fx = await startCallGateway(toAgent('agent-1', { redis: { url: `redis://127.0.0.1:${port}`, autoStart: false } }));
    const agent = await fx.agent('agent-1', { autoAnswer: true });
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await expect.poll(async () => (await agent.packetCounts(incoming.call.id)).received, { timeout: 10_000 }).toBeGreaterThan(10);
    await redis.stop();
    await expect.poll(async () => (await health()).status, { timeout: 5000 }).toBe(503);
    // the agent hangs up during the outage: the trunk gets its BYE, the record cannot be written yet
    await agent.client.hangup(incoming.call.id);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    await expect.poll(() => fx!.gw.store!.pendingEnds, { timeout: 10_000 }).toBe(1);
    redis = await LocalRedisServer.start('127.0.0.1', port, quietLogger());
    await expect.poll(() => fx!.gw.store!.pendingEnds, { timeout: 15_000, interval: 250 }).toBe(0);
    const records = (await fx.gw.store!.recentRecords(10)).filter((x) => x.callId === incoming.call.id);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ endReason: 'hangup_local', agentId: 'agent-1' });
    expect(await fx.gw.redis!.client.sismember(fx.gw.store!.key('node', fx.gw.store!.nodeId, 'calls'), incoming.call.id)).toBe(0);
  }, 60_000);

  it('Redis that stops answering on an open connection (SIGSTOP) counts as away: 503 to new calls, /health down, then recovery', async () => {
    const port = await freeTcpPort();
    redis = await LocalRedisServer.start('127.0.0.1', port, quietLogger());
    fx = await startCallGateway(toAgent('agent-1', { redis: { url: `redis://127.0.0.1:${port}`, autoStart: false } }));
    await fx.agent('agent-1', { autoAnswer: true });
    const pid = redis.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      await expect.poll(async () => (await health()).status, { timeout: 10_000, interval: 250 }).toBe(503);
      expect((await health()).body.components.redis).toMatchObject({ state: 'down', status: 'not answering' });
      const t0 = Date.now();
      const refused = await runSipp({ scenario: 'uac-expect-503', target: fx.sipTarget, timeoutMs: 15_000 });
      expect(refused.exitCode, refused.describe()).toBe(0);
      expect(Date.now() - t0, 'the 503 comes at once, not after Redis timeouts').toBeLessThan(5000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await expect.poll(async () => (await health()).status, { timeout: 15_000, interval: 250 }).toBe(200);
    const next = await runSipp({ scenario: 'uac-invite-bye', target: fx.sipTarget, keys: { hold_ms: '500' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 20_000 });
    expect(next.exitCode, next.describe()).toBe(0);
  }, 60_000);
});
