/**
 * Attended (warm) transfer to a number end to end (src/calls/call-centre.ts): sipp as the caller's
 * trunk (14 s of PCMA), a second sipp as the consulted number (PCMA pcap), and a Node WebRTC agent
 * sending a 1000 Hz tone. Each step is checked by what each side hears (tshark at both sipp media
 * ports, PCMA decoded; the agent's RTP counts): during the consultation the caller hears hold audio
 * and never the agent, the number hears the agent; after completion the caller and the number hear
 * each other; after a cancel the caller hears the agent again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type NodeAgent } from '../helpers/agent.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { carrierTrunk, startNumber } from '../helpers/callcentre.js';
import { captureTone, type ToneCapture } from '../helpers/rtp-tone.js';
import { freePort, type SippProcess, startSipp } from '../helpers/sipp.js';

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
const isAgentTone = (hz: number) => hz > 950 && hz < 1050;

async function received(agent: NodeAgent, callId: string): Promise<number> {
  return (await agent.packetCounts(callId)).received;
}

/** A gateway whose default trunk dials a sipp UAS (the number), a caller trunk call answered by the agent. */
async function setUp(): Promise<{ agent: NodeAgent; callId: string; caller: ToneCapture; callerSipp: SippProcess; number: SippProcess; atNumber: ToneCapture }> {
  const { number, atNumber } = await startNumber({ sipps, captures });
  fx = await startCallGateway({
    routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [], defaultTrunk: 'carrier' },
    trunks: [
      carrierTrunk(number.port),
    ],
  });
  const agent = await fx.agent('cc-a', { toneHz: 1000 });
  const callerMedia = await freePort();
  const caller = captureTone(callerMedia);
  captures.push(caller);
  await caller.ready;
  const callerSipp = startSipp({ scenario: 'trunk-call-rtp-long', target: fx.sipTarget, keys: { hold_ms: '6000' }, extraArgs: ['-mp', String(callerMedia)], timeoutMs: 40_000 });
  sipps.push(callerSipp);
  const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
  await agent.client.answer(incoming.call.id);
  await agent.waitForEvent('track', undefined, 5000);
  const t = Date.now();
  await sleep(1200);
  const before = await caller.heardUntil(t, Date.now());
  expect(before.packets).toBeGreaterThan(40);
  expect(isAgentTone(before.hz), `the caller hears the agent first (${before.hz} Hz)`).toBe(true);

  return { agent, callId: incoming.call.id, caller, callerSipp, number, atNumber };
}

/** Starts the consultation and checks that step: hold audio (not the agent) at the caller, the agent at the number, the number at the agent. */
async function consulted(s: Awaited<ReturnType<typeof setUp>>): Promise<string> {
  const consultCallId = await s.agent.client.consult(s.callId, { number: '+4930222333' });
  await s.agent.waitForEvent('consult', (e) => e.state === 'answered', 8000);
  await s.agent.waitForEvent('track', undefined, 5000); // re-consumed: the number's audio
  await sleep(500); // the closed receiver's stats leave the peer connection's report
  const r0 = await received(s.agent, s.callId);
  const t = Date.now();
  await sleep(1500);
  const atCaller = await s.caller.heardUntil(t, Date.now());
  expect(atCaller.packets, 'hold audio keeps flowing to the caller').toBeGreaterThan(40);
  expect(isAgentTone(atCaller.hz), `the caller does not hear the consultation (${atCaller.hz} Hz)`).toBe(false);
  const atNumber = await s.atNumber.heardUntil(t, Date.now());
  expect(atNumber.packets, 'the agent at the number').toBeGreaterThan(50);
  expect(isAgentTone(atNumber.hz), `the number hears the agent's tone (${atNumber.hz} Hz)`).toBe(true);
  expect((await received(s.agent, s.callId)) - r0, 'the number\'s audio at the agent').toBeGreaterThan(30);

  return consultCallId;
}

describe('attended transfer to a number', () => {
  it('consult, then complete: the caller and the number talk, the agent leaves, both dialogs end together', async () => {
    const s = await setUp();
    const consultCallId = await consulted(s);
    await s.agent.client.completeTransfer(s.callId, consultCallId);
    await s.agent.waitForEvent('consult', (e) => e.state === 'completed', 3000);
    const ended = await s.agent.waitForEvent('ended', (e) => e.call.id === s.callId, 3000);
    expect(ended.reason).toBe('transferred');
    await sleep(300);
    const t = Date.now();
    await sleep(2000);
    const atCaller = await s.caller.heardUntil(t, Date.now());
    const atNumber = await s.atNumber.heardUntil(t, Date.now());
    expect(atCaller.packets, 'the number at the caller').toBeGreaterThan(50);
    expect(atCaller.rms, 'speech from the number\'s pcap').toBeGreaterThan(200);
    expect(isAgentTone(atCaller.hz)).toBe(false);
    expect(atNumber.packets, 'the caller at the number').toBeGreaterThan(50);
    expect(atNumber.rms).toBeGreaterThan(200);
    expect(isAgentTone(atNumber.hz), 'the agent has left').toBe(false);
    const r = await s.callerSipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const rn = await s.number.result;
    expect(rn.exitCode, rn.describe()).toBe(0);
    expect(rn.received('BYE'), 'the caller\'s BYE ends the number\'s dialog').toHaveLength(1);
  }, 60_000);

  it('consult, then cancel: the number is hung up and the agent and the caller hear each other again', async () => {
    const s = await setUp();
    const consultCallId = await consulted(s);
    await s.agent.client.cancelConsult(consultCallId);
    await s.agent.waitForEvent('consult', (e) => e.state === 'ended', 3000);
    await s.agent.waitForEvent('track', undefined, 5000); // re-consumed: the caller again
    const rn = await s.number.result;
    expect(rn.exitCode, rn.describe()).toBe(0);
    expect(rn.received('BYE')).toHaveLength(1);
    await sleep(500); // the closed receiver's stats leave the peer connection's report
    const r0 = await received(s.agent, s.callId);
    const t = Date.now();
    await sleep(1500);
    const atCaller = await s.caller.heardUntil(t, Date.now());
    expect(atCaller.packets).toBeGreaterThan(50);
    expect(isAgentTone(atCaller.hz), `the caller hears the agent again (${atCaller.hz} Hz)`).toBe(true);
    expect((await received(s.agent, s.callId)) - r0, 'the caller\'s audio at the agent').toBeGreaterThan(30);
    expect(fx!.gw.calls!.call(s.callId)!.agentId).toBe('cc-a');
    await s.agent.client.hangup(s.callId);
  }, 60_000);

  it('a consultation and a transfer to a number sent together: one is refused (INVALID_STATE), one second leg is dialled, the call keeps its agent', async () => {
    const s = await setUp();
    const [consult, transfer] = await Promise.allSettled([
      s.agent.client.consult(s.callId, { number: '+4930222333' }),
      s.agent.client.transfer(s.callId, { number: '+4930222444' }),
    ]);
    const outcomes = [consult.status, transfer.status];
    expect(outcomes.filter((o) => o === 'fulfilled'), `exactly one of consult/transfer goes ahead (${outcomes.join(', ')})`).toHaveLength(1);
    const refused = [consult, transfer].find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect((refused.reason as { code?: string }).code).toBe('INVALID_STATE');
    if (consult.status === 'fulfilled') {
      await s.agent.waitForEvent('consult', (e) => e.state === 'answered', 8000);
      expect(fx!.gw.calls!.call(s.callId)!.agentId, 'the consulting agent keeps the call').toBe('cc-a');
      await s.agent.client.cancelConsult(consult.value);
      await s.agent.waitForEvent('consult', (e) => e.state === 'ended', 3000);
      await s.agent.client.hangup(s.callId);
    }
    const rn = await s.number.result;
    expect(rn.received('INVITE'), 'one INVITE to the number').toHaveLength(1);
  }, 60_000);
});
