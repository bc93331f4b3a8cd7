/**
 * Blind transfers end to end (src/calls/call-centre.ts): sipp as the trunk with 14 s of real PCMA
 * (trunk-call-rtp-long), the gateway in this process, and Node WebRTC agents each sending its own
 * tone. What the caller hears is checked at sipp's media port with tshark, decoding the PCMA: the
 * first agent's tone before the transfer, hold audio (not that tone) while the call rings again,
 * the next agent's tone after it answers. The agents' own stats show the caller's audio reaching them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type NodeAgent } from '../helpers/agent.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { carrierTrunk, startNumber } from '../helpers/callcentre.js';
import { captureTone, type ToneCapture } from '../helpers/rtp-tone.js';
import { freePort, sipHeader, type SippProcess, startSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;
const captures: ToneCapture[] = [];
const sipps: SippProcess[] = [];

afterEach(async () => {
  await Promise.all(sipps.splice(0).map((s) => s.stop().catch(() => undefined)));
  await Promise.all(captures.splice(0).map((c) => c.stop()));
  await fx?.close();
  fx = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the agent received and sent more than `min` RTP packets on the call since `base`. */
async function flowing(agent: NodeAgent, callId: string, min = 25, timeoutMs = 6000): Promise<{ received: number; sent: number }> {
  const deadline = Date.now() + timeoutMs;
  let c = await agent.packetCounts(callId);
  while ((c.received <= min || c.sent <= min) && Date.now() < deadline) {
    await sleep(100);
    c = await agent.packetCounts(callId);
  }

  return c;
}

/** A call from the sipp trunk to agent `first`, answered, with the caller's tone capture. */
async function connectedCall(first: NodeAgent): Promise<{ callId: string; capture: ToneCapture; trunk: SippProcess }> {
  const mediaPort = await freePort();
  const capture = captureTone(mediaPort);
  captures.push(capture);
  await capture.ready;
  const trunk = startSipp({ scenario: 'trunk-call-rtp-long', target: fx!.sipTarget, keys: { hold_ms: '6000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
  sipps.push(trunk);
  const incoming = await first.waitForEvent('incoming', undefined, 10_000);
  await first.client.answer(incoming.call.id);
  const c = await flowing(first, incoming.call.id);
  expect(c.received, 'caller audio at the first agent').toBeGreaterThan(25);

  return { callId: incoming.call.id, capture, trunk };
}

const config = (ringTimeoutMs = 5000) => ({
  routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [{ id: 'sales', members: ['cc-b', 'cc-c'], strategy: 'ring-all' }], defaultTrunk: '' },
  calls: { ringTimeoutMs },
});

describe('blind transfer', () => {
  it('agent → agent: the caller hears A, then hold audio while B rings, then B; B hears the caller; the trunk dialog stays', async () => {
    fx = await startCallGateway(config());
    const a = await fx.agent('cc-a', { toneHz: 1200 });
    const b = await fx.agent('cc-b', { toneHz: 1000 });
    const { callId, capture, trunk } = await connectedCall(a);
    const dialogBefore = fx.gw.calls!.call(callId)!.dialog;
    // A's WebRTC send path may start a moment after the caller's audio reached A (a loaded machine)
    const since = Date.now();
    await expect.poll(() => capture.heard(since, Date.now()).packets, { timeout: 5000 }).toBeGreaterThan(5);
    const tA = Date.now();
    await sleep(1500);
    const heardA = await capture.heardUntil(tA, Date.now());
    expect(heardA.packets, 'A → caller packets').toBeGreaterThan(50);
    expect(heardA.hz, 'the caller hears A\'s 1200 Hz tone').toBeGreaterThan(1150);
    expect(heardA.hz).toBeLessThan(1250);

    await a.client.transfer(callId, { agent: 'cc-b' });
    const endedA = await a.waitForEvent('ended', (e) => e.call.id === callId, 3000);
    expect(endedA).toMatchObject({ reason: 'transferred', by: 'local' });
    const ringing = await b.waitForEvent('incoming', undefined, 3000);
    expect(ringing.call.id).toBe(callId);
    expect(ringing.call.transferredBy).toBe('cc-a');
    // while B rings the caller hears the hold audio (the built-in 440/660 Hz chime, or its silent
    // part), never A's tone: A's media is gone
    const gap0 = Date.now() + 300;
    await sleep(1200);
    const gap = await capture.heardUntil(gap0, Date.now());
    expect(gap.packets, 'hold audio reaches the caller while B rings').toBeGreaterThan(30);
    expect(gap.hz, `not A's tone (${gap.hz} Hz)`).toBeLessThan(700);
    const server = fx.gw.calls!.call(callId)!;
    expect(server.state).toBe('ringing');
    expect(server.media?.sendTransport, 'A\'s transports are closed').toBeUndefined();

    await b.client.answer(callId);
    await b.waitForEvent('answered', (e) => e.call.id === callId, 3000);
    const cb = await flowing(b, callId);
    expect(cb.received, 'caller audio at B').toBeGreaterThan(25);
    expect(cb.sent).toBeGreaterThan(25);
    const tB = Date.now();
    await sleep(1500);
    const heardB = await capture.heardUntil(tB, Date.now());
    expect(heardB.packets, 'B → caller packets').toBeGreaterThan(50);
    expect(heardB.hz, 'the caller hears B\'s 1000 Hz tone').toBeGreaterThan(950);
    expect(heardB.hz).toBeLessThan(1050);
    expect(heardB.rms).toBeGreaterThan(3000);
    expect(fx.gw.calls!.call(callId)!.dialog, 'the same trunk dialog').toBe(dialogBefore);
    expect(fx.gw.calls!.call(callId)!.agentId).toBe('cc-b');

    // the trunk hangs up: B's call ends; one record, with B as the agent
    const endedB = await b.waitForEvent('ended', (e) => e.call.id === callId, 15_000);
    expect(endedB).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('INVITE'), 'no re-INVITE toward the trunk').toHaveLength(0);
    const rec = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(rec).toMatchObject({ callId, agentId: 'cc-b', endReason: 'hangup_remote' });
  }, 60_000);

  it('agent → group: the free member rings; unanswered, the call comes back to the transferring agent with audio', async () => {
    fx = await startCallGateway(config(2500));
    const a = await fx.agent('cc-a', { toneHz: 1200 });
    const c = await fx.agent('cc-c', { toneHz: 1000 });
    const { callId, capture } = await connectedCall(a);
    await a.client.transfer(callId, { group: 'sales' });
    await a.waitForEvent('ended', (e) => e.call.id === callId && e.reason === 'transferred', 3000);
    await c.waitForEvent('incoming', (e) => e.call.id === callId, 3000);
    // C lets it ring: after 2.5 s it is offered back to A
    await c.waitForEvent('cancelled', (e) => e.call.id === callId, 5000);
    const back = await a.waitForEvent('incoming', (e) => e.call.id === callId, 3000);
    expect(back.call.id).toBe(callId);
    await a.client.answer(callId);
    const ca = await flowing(a, callId);
    expect(ca.received).toBeGreaterThan(25);
    const t = Date.now();
    await sleep(1200);
    const heard = await capture.heardUntil(t, Date.now());
    expect(heard.packets).toBeGreaterThan(40);
    expect(heard.hz, 'A\'s tone again').toBeGreaterThan(1150);
    expect(heard.hz).toBeLessThan(1250);
    await a.client.hangup(callId);
  }, 60_000);

  it('agent → number: a second trunk leg in the same router; caller ↔ number audio both ways; both dialogs end together', async () => {
    const { number: uas, atNumber } = await startNumber({ sipps, captures });
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [], defaultTrunk: 'carrier' },
      trunks: [
        carrierTrunk(uas.port),
      ],
      security: { dialPolicy: { deniedPrefixes: ['+1900'] } },
    });
    const a = await fx.agent('cc-a', { toneHz: 440 });
    const { callId, capture, trunk } = await connectedCall(a);
    // the agent's dialling policy applies to a transfer: refused, the call stays
    await expect(a.client.transfer(callId, { number: '+19005550100' })).rejects.toMatchObject({ code: 'DIAL_POLICY' });
    expect(fx.gw.calls!.call(callId)!.agentId).toBe('cc-a');

    await a.client.transfer(callId, { number: '+4930111222' });
    await a.waitForEvent('ended', (e) => e.call.id === callId && e.reason === 'transferred', 3000);
    // the number answers (sipp UAS, PCMA from its pcap); give the bridge a moment
    await sleep(1000);
    const t = Date.now();
    await sleep(2500);
    const heardByCaller = await capture.heardUntil(t, Date.now());
    const heardByNumber = await atNumber.heardUntil(t, Date.now());
    // speech pcaps (not a steady tone): 2.5 s of 20 ms packets with pauses
    expect(heardByCaller.packets, 'the number\'s audio at the caller').toBeGreaterThan(60);
    expect(heardByCaller.rms, 'speech energy from the number\'s pcap').toBeGreaterThan(200);
    expect(heardByNumber.packets, 'the caller\'s audio at the number').toBeGreaterThan(60);
    expect(heardByNumber.rms).toBeGreaterThan(200);
    const server = fx.gw.calls!.call(callId)!;
    expect(server.agentId).toBeUndefined();
    expect(server.media?.sendTransport, 'no agent transports left').toBeUndefined();

    // the caller hangs up: the gateway ends the number's dialog too
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const ru = await uas.result;
    expect(ru.exitCode, ru.describe()).toBe(0);
    const invite = ru.received('INVITE')[0]!;
    expect(invite.split('\r\n')[0]).toMatch(/^INVITE sip:\+4930111222@127\.0\.0\.1/);
    expect(sipHeader(invite, 'From'), 'the caller\'s number is presented (no outbound.callerId)').toMatch(/^<sip:\+4930555000\d+@/);
    expect(invite, 'only the call\'s codec is offered (no transcoding)').toMatch(/m=audio \d+ RTP\/AVP 8 101\r?\n/);
    expect(ru.received('BYE')).toHaveLength(1);
    // the call record names the agent who handled and passed on the call (not '')
    let rec = (await fx.gw.store!.recentRecords(1))[0];
    for (let i = 0; i < 30 && rec?.callId !== callId; i++) {
      await sleep(100);
      rec = (await fx.gw.store!.recentRecords(1))[0];
    }
    expect(rec).toMatchObject({ callId, agentId: 'cc-a' });
  }, 60_000);

  it('the caller hangs up while the transfer rings: B gets call.cancelled (caller_cancelled), one record', async () => {
    fx = await startCallGateway(config());
    const a = await fx.agent('cc-a', { toneHz: 440 });
    const b = await fx.agent('cc-b', { toneHz: 1000 });
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3500' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    sipps.push(trunk);
    const incoming = await a.waitForEvent('incoming', undefined, 10_000);
    const callId = incoming.call.id;
    await a.client.answer(callId);
    await flowing(a, callId, 10);
    await a.client.transfer(callId, { agent: 'cc-b' });
    await b.waitForEvent('incoming', (e) => e.call.id === callId, 3000);
    const cancelled = await b.waitForEvent('cancelled', (e) => e.call.id === callId, 10_000);
    expect(cancelled.reason).toBe('caller_cancelled');
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(fx.gw.calls!.call(callId)).toBeUndefined();
    const rec = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(rec).toMatchObject({ callId, endReason: 'hangup_remote' });
    expect(fx.gw.calls!.presence.effective('cc-b')).toBe('available');
  }, 40_000);

  it('refuses a target nobody can take (UNAVAILABLE) and the call stays with the agent; bad targets get clear errors', async () => {
    fx = await startCallGateway(config());
    const a = await fx.agent('cc-a', { toneHz: 440 });
    const { callId, capture } = await connectedCall(a);
    await expect(a.client.transfer(callId, { agent: 'cc-b' })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(a.client.transfer(callId, { group: 'nope' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(a.client.transfer(callId, { agent: 'cc-a' })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(a.client.transfer('no-such-call', { agent: 'cc-b' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const t = Date.now();
    await sleep(1000);
    const heard = await capture.heardUntil(t, Date.now());
    expect(heard.packets, 'A still talks to the caller').toBeGreaterThan(30);
    expect(heard.hz).toBeGreaterThan(400);
    expect(fx.gw.calls!.call(callId)!.state).toBe('active');
    await a.client.hangup(callId);
  }, 60_000);
});
