/**
 * Inbound calls from the agent's side, end to end (sipp trunk with RTP, gateway in process,
 * WebRTC agents on the client SDK): caller CANCEL, ring timeout, declines, groups (ring-all, first
 * answer wins; longest-idle order), agent hangup, DTMF both ways, agent hold and resume, an agent
 * connection drop with resume, and a session that never comes back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isRingbridgeError } from '../../src/client/index.js';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, runSipp, sipBody, sipHeader, startSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

const toAgent = (agentId: string, extra: Record<string, unknown> = {}) => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' }, ...extra });
const toGroup = (members: string[], strategy: 'ring-all' | 'longest-idle', extra: Record<string, unknown> = {}) => ({
  routing: { dids: [{ number: '*', group: 'support' }], groups: [{ id: 'support', members, strategy }], defaultTrunk: '' },
  ...extra,
});

describe('ringing', () => {
  it('tells the agent when the caller cancels, and the trunk gets 487', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1');
    const trunk = startSipp({ scenario: 'uac-cancel', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const cancelled = await agent.waitForEvent('cancelled', undefined, 10_000);
    expect(cancelled).toMatchObject({ reason: 'caller_cancelled' });
    expect(cancelled.call.id).toBe(incoming.call.id);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(487, 'INVITE')).toHaveLength(1);
  }, 30_000);

  it('answers 480 when nobody answers within the ring timeout', async () => {
    fx = await startCallGateway(toAgent('agent-1', { calls: { ringTimeoutMs: 1500 } }));
    const agent = await fx.agent('agent-1');
    const r = await runSipp({ scenario: 'uac-expect-480', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(await agent.waitForEvent('cancelled')).toMatchObject({ reason: 'ring_timeout' });
    const record = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(record).toMatchObject({ endReason: 'no_answer', sipStatus: '480' });
  }, 30_000);

  for (const [reason, status, scenario] of [
    ['decline', 603, 'trunk-in-expect-603'],
    ['busy', 486, 'uac-expect-486'],
  ] as const) {
    it(`answers ${status} when the only agent declines with reason ${reason}`, async () => {
      fx = await startCallGateway(toAgent('agent-1'));
      const agent = await fx.agent('agent-1');
      agent.client.on('incoming', ({ call }) => void agent.client.decline(call.id, reason));
      const r = await runSipp({ scenario, target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
      expect(r.exitCode, r.describe()).toBe(0);
      expect(r.received(status, 'INVITE')).toHaveLength(1);
    }, 30_000);
  }

  it('rings every member of a ring-all group; the first answer wins and the others are told', async () => {
    fx = await startCallGateway(toGroup(['agent-a', 'agent-b'], 'ring-all'));
    const a = await fx.agent('agent-a');
    const b = await fx.agent('agent-b');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '1500' }, extraArgs: ['-mp', String(mediaPort)] });
    const [ia, ib] = await Promise.all([a.waitForEvent('incoming', undefined, 10_000), b.waitForEvent('incoming', undefined, 10_000)]);
    expect(ia.call.id).toBe(ib.call.id);
    await b.client.answer(ib.call.id);
    expect(await a.waitForEvent('cancelled')).toMatchObject({ reason: 'answered_elsewhere' });
    const late = await a.client.answer(ia.call.id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isRingbridgeError(late, 'NOT_FOUND') || isRingbridgeError(late, 'ALREADY_ANSWERED')).toBe(true);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 30_000);

  it('rings the longest-idle member first, then the next one after the ring step', async () => {
    fx = await startCallGateway(toGroup(['agent-a', 'agent-b'], 'longest-idle', { calls: { ringStepMs: 1000 } }));
    // agent-b ended a call long ago, agent-a just now: agent-b is the longest idle
    await fx.gw.store!.agentBecameIdle('agent-b', Date.now() - 3_600_000);
    await fx.gw.store!.agentBecameIdle('agent-a', Date.now());
    const a = await fx.agent('agent-a');
    const b = await fx.agent('agent-b');
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '1000' }, extraArgs: ['-mp', String(await freePort())] });
    const first = await b.waitForEvent('incoming', undefined, 10_000);
    expect(a.events.some((e) => e.name === 'incoming')).toBe(false);
    // agent-b does not answer: after the ring step agent-a rings
    expect(await b.waitForEvent('cancelled', undefined, 5000)).toMatchObject({ reason: 'ring_timeout' });
    const second = await a.waitForEvent('incoming', undefined, 5000);
    expect(second.call.id).toBe(first.call.id);
    await a.client.answer(second.call.id);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 30_000);
});

describe('during the call', () => {
  it('sends BYE to the trunk when the agent hangs up', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(mediaPort)] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await new Promise((r) => setTimeout(r, 2000));
    const counts = await agent.packetCounts(call.id);
    expect(counts.received).toBeGreaterThan(50);
    expect(counts.sent).toBeGreaterThan(50);
    await agent.client.hangup(call.id);
    expect(await agent.waitForEvent('ended')).toMatchObject({ reason: 'hangup_local' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('BYE')).toHaveLength(1);
    expect((await capture.stop()).byPayloadType.get(8) ?? 0).toBeGreaterThan(50);
  }, 30_000);

  it('ends the call when the session that answered it closes, though the agent is still signed in elsewhere', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const desk = await fx.agent('agent-1');
    const phone = await fx.agent('agent-1');
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    const incoming = await desk.waitForEvent('incoming', undefined, 10_000);
    await phone.waitForEvent('incoming', undefined, 10_000);
    await desk.client.answer(incoming.call.id);
    // the desk app closes (close 1000: signed off at once); the phone session stays
    desk.client.close();
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(sipHeader(r.received('BYE')[0]!, 'Reason')).toMatch(/cause=480;text="agent connection lost"/);
    expect(fx.gw.calls!.call(incoming.call.id)).toBeUndefined();
    expect(fx.gw.signaling!.sessionsOf('agent-1')).toHaveLength(1);
  }, 30_000);

  it('carries DTMF both ways as RFC 4733 events', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort, 101);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-in-dtmf', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    // trunk → agent: sipp plays "1" then "#"
    const d1 = await agent.waitForEvent('dtmf', undefined, 8000);
    const d2 = await agent.waitForEvent('dtmf', undefined, 8000);
    expect([d1.digit, d2.digit]).toEqual(['1', '#']);
    // agent → trunk
    await agent.client.sendDtmf(call.id, '5*', { durationMs: 100 });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const seen = await capture.stop();
    expect(seen.events, 'RFC 4733 event codes at the sipp side').toEqual([5, 10]);
  }, 30_000);

  it('holds and resumes the call from the agent with re-INVITEs (a=sendonly, then a=sendrecv)', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1');
    const trunk = startSipp({ scenario: 'trunk-in-accept-reinvites', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await new Promise((r) => setTimeout(r, 500));
    await agent.client.hold(call.id);
    expect(await agent.waitForEvent('held')).toMatchObject({ by: 'local' });
    await new Promise((r) => setTimeout(r, 300));
    await agent.client.resume(call.id);
    expect(await agent.waitForEvent('resumed')).toMatchObject({ by: 'local' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const reinvites = r.received('INVITE');
    expect(reinvites).toHaveLength(2);
    expect(sipBody(reinvites[0]!)).toContain('a=sendonly');
    expect(sipBody(reinvites[1]!)).toContain('a=sendrecv');
    // RFC 3264 §8: same o= session id, version + 1 each time
    const versions = reinvites.map((m) => Number(/^o=\S+ \d+ (\d+)/m.exec(sipBody(m))?.[1]));
    expect(versions[1]).toBe(versions[0]! + 1);
    expect(sipHeader(reinvites[0]!, 'CSeq')).toMatch(/ INVITE$/);
  }, 30_000);

  it('keeps the call when the agent connection drops and resumes within the grace period', async () => {
    fx = await startCallGateway(toAgent('agent-1'));
    const agent = await fx.agent('agent-1');
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '5000' }, extraArgs: ['-mp', String(await freePort())] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await new Promise((r) => setTimeout(r, 1000));
    const before = await agent.packetCounts(call.id);
    // the network drops the agent's WebSocket (server side: no close frame)
    const session = fx.gw.signaling!.sessionsOf('agent-1')[0]!;
    session.ws!.terminate();
    await agent.waitForEvent('connectionstatechange', (s) => s === 'reconnecting', 5000);
    await agent.waitForEvent('connectionstatechange', (s) => s === 'connected', 10_000);
    expect(fx.gw.signaling!.sessionsOf('agent-1')[0]!.id).toBe(session.id);
    expect(fx.gw.calls!.call(call.id)?.state).toBe('active');
    await new Promise((r) => setTimeout(r, 1000));
    const after = await agent.packetCounts(call.id);
    // g711a.pcap carries about 34 packets per second
    expect(after.received - before.received, 'audio kept flowing').toBeGreaterThan(20);
    expect(await agent.waitForEvent('ended', undefined, 15_000)).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 40_000);

  it('ends the call when the agent does not come back within the grace period', async () => {
    fx = await startCallGateway(toAgent('agent-1', { signaling: { resumeGraceMs: 1500 } }));
    const agent = await fx.agent('agent-1', { reconnect: false });
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    fx.gw.signaling!.sessionsOf('agent-1')[0]!.ws!.terminate();
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(sipHeader(r.received('BYE')[0]!, 'Reason')).toContain('agent connection lost');
    const record = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(record.endReason).toBe('session_lost');
  }, 30_000);
});
