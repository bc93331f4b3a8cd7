/**
 * A trunk's REFER inside an established call (RFC 3515, src/calls/call-centre.ts): sipp as the
 * referring trunk (trunk-call-refer), a second sipp as the number the call is referred to
 * (trunk-uas-answer-rtp), and a Node WebRTC agent. Checked: 202, the NOTIFY message/sipfrag bodies
 * and headers, the new party's INVITE, the agent's tone reaching the new party (tshark, PCMA
 * decoded) and the new party's audio reaching the agent after the referrer left; and 403 from a
 * trunk whose refer policy is off.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type NodeAgent } from '../helpers/agent.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { carrierTrunk, startNumber } from '../helpers/callcentre.js';
import { type ToneCapture } from '../helpers/rtp-tone.js';
import { freePort, sipBody, sipHeader, type SippProcess, startSipp } from '../helpers/sipp.js';

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

async function received(agent: NodeAgent, callId: string): Promise<number> {
  return (await agent.packetCounts(callId)).received;
}

describe('REFER from a trunk', () => {
  it('refer: any — 202, NOTIFY 100 then 200 (sipfrag), the agent now talks to the referred number', async () => {
    const { number, atNumber } = await startNumber({ sipps, captures });
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [], defaultTrunk: 'carrier' },
      trunks: [
        carrierTrunk(number.port, { refer: 'any' }),
      ],
    });
    const agent = await fx.agent('cc-a', { toneHz: 440 });
    const callerMedia = await freePort();
    const referrer = startSipp({ scenario: 'trunk-call-refer', target: fx.sipTarget, keys: { hold_ms: '2500', refer_to: '+4930999000' }, extraArgs: ['-mp', String(callerMedia)], timeoutMs: 30_000 });
    sipps.push(referrer);
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const callId = incoming.call.id;
    await agent.client.answer(callId);
    await sleep(1500);
    expect(await received(agent, callId), 'the referrer\'s audio at the agent').toBeGreaterThan(25);

    const r = await referrer.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(202, 'REFER')).toHaveLength(1);
    const notifies = r.received('NOTIFY');
    expect(notifies.map((n) => sipBody(n).trim())).toEqual(['SIP/2.0 100 Trying', 'SIP/2.0 200 OK']);
    for (const n of notifies) {
      expect(sipHeader(n, 'Event')).toMatch(/^refer\b/);
      expect(sipHeader(n, 'Content-Type')).toMatch(/^message\/sipfrag/);
    }
    expect(sipHeader(notifies[0]!, 'Subscription-State')).toMatch(/^active/);
    expect(sipHeader(notifies[1]!, 'Subscription-State')).toMatch(/^terminated/);

    // the referrer left; the agent's call goes on with the number
    expect(agent.events.some((e) => e.name === 'ended')).toBe(false);
    expect(fx.gw.calls!.call(callId)?.live).toBe(true);
    const before = await received(agent, callId);
    const t = Date.now();
    await sleep(1500);
    expect((await received(agent, callId)) - before, 'the number\'s audio at the agent').toBeGreaterThan(40);
    const heard = await atNumber.heardUntil(t, Date.now());
    expect(heard.packets, 'the agent\'s audio at the number').toBeGreaterThan(50);
    expect(heard.hz, 'the agent\'s 440 Hz tone at the number').toBeGreaterThan(400);
    expect(heard.hz).toBeLessThan(480);

    await agent.client.hangup(callId);
    const rn = await number.result;
    expect(rn.exitCode, rn.describe()).toBe(0);
    expect(rn.received('INVITE')[0]!.split('\r\n')[0]).toMatch(/^INVITE sip:\+4930999000@127\.0\.0\.1/);
    expect(sipHeader(rn.received('INVITE')[0]!, 'From'), 'our side\'s number (the DID called) is presented, not the referrer\'s').toMatch(/^<sip:service@/);
    expect(rn.received('BYE'), 'the agent\'s hangup ends the new dialog').toHaveLength(1);
  }, 60_000);

  it('refer: off (the default) — 403, and the call goes on until the trunk hangs up', async () => {
    fx = await startCallGateway({ routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [], defaultTrunk: '' } });
    const agent = await fx.agent('cc-a');
    const callerMedia = await freePort();
    const referrer = startSipp({ scenario: 'trunk-call-refer-403', target: fx.sipTarget, keys: { hold_ms: '2000' }, extraArgs: ['-mp', String(callerMedia)], timeoutMs: 30_000 });
    sipps.push(referrer);
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    const r = await referrer.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('NOTIFY')).toHaveLength(0);
    const ended = await agent.waitForEvent('ended', undefined, 5000);
    expect(ended.reason).toBe('hangup_remote');
  }, 40_000);

  it('refer: any — a Refer-To with an escaped Replaces header (Repl%61ces) is an attended REFER: 501, no number is dialled', async () => {
    const number = startSipp({ scenario: 'trunk-uas-answer-rtp', timeoutMs: 20_000 });
    sipps.push(number);
    await number.ready;
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: 'cc-a' }], groups: [], defaultTrunk: 'carrier' },
      trunks: [
        carrierTrunk(number.port, { refer: 'any' }),
      ],
    });
    const agent = await fx.agent('cc-a');
    const referUri = 'sip:+4930999000@127.0.0.1?Repl%61ces=abc%40pbx.example%3Bto-tag%3D1%3Bfrom-tag%3D2';
    const referrer = startSipp({ scenario: 'trunk-call-refer-501', target: fx.sipTarget, keys: { hold_ms: '1500', refer_uri: referUri }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    sipps.push(referrer);
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    const r = await referrer.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('NOTIFY')).toHaveLength(0);
    expect(fx.gw.calls!.calls.filter((c) => c.id === incoming.call.id)).toHaveLength(0);
    await sleep(500); // a REFER accepted wrongly would have dialled the number by now
    const rn = await number.stop();
    expect(rn.received('INVITE'), 'no INVITE to the Refer-To number').toHaveLength(0);
  }, 40_000);
});
