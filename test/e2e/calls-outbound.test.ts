/**
 * Agent → trunk calls end to end: an agent on the client SDK with a real WebRTC stack dials, the
 * gateway in this process (embedded SIP engine, drachtio-srf, mediasoup, Redis) sends the INVITE
 * to sipp acting as the trunk (a UAS scenario of test/sipp/, real G.711 A-law audio from its pcap
 * play). Every answered call checks RTP both ways: in the agent's WebRTC stats and at the sipp
 * side (tshark on sipp's media port).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type ConfigTree } from '../../src/config/load.js';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { type NodeAgent } from '../helpers/agent.js';
import { freePort, sipBody, sipHeader, type SippProcess, type SippResult, startSipp, verifyDigest } from '../helpers/sipp.js';

let fx: CallFixture | undefined;
const sipps: SippProcess[] = [];

afterEach(async () => {
  // a test that failed half-way must not leave its trunk running
  await Promise.all(sipps.splice(0).map((s) => s.stop().catch(() => undefined)));
  await fx?.close();
  fx = undefined;
});

const AGENT = 'agent-out-1';
const DIALLED = '+4930123456';

interface TrunkOptions {
  callerId?: string;
  auth?: { username: string; password: string };
  codecs?: string[];
  calls?: Record<string, number>;
}

/** Gateway overrides: one trunk whose outbound uri is a sipp UAS on `port`, the default trunk. */
function outboundTrunk(port: number, o: TrunkOptions = {}): ConfigTree {
  return {
    routing: { dids: [{ number: '*', agent: AGENT }], groups: [], defaultTrunk: 'carrier' },
    trunks: [
      {
        id: 'carrier',
        inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
        outbound: { uri: `sip:127.0.0.1:${port}`, proxy: '', auth: o.auth ?? { username: '', password: '' }, callerId: o.callerId ?? '' },
        codecs: o.codecs ?? ['PCMA', 'PCMU'],
        media: { latching: false },
      },
    ],
    ...(o.calls ? { calls: o.calls } : {}),
  };
}

/** Starts a sipp trunk (UAS) with a media port of its own; the test stops it if it fails. */
async function startTrunk(scenario: string, opts: { mediaPort?: number; keys?: Record<string, string>; auth?: { username: string; password: string }; timeoutMs?: number } = {}): Promise<SippProcess> {
  const mediaPort = opts.mediaPort ?? (await freePort());
  const sipp = startSipp({
    scenario,
    extraArgs: ['-mp', String(mediaPort)],
    timeoutMs: opts.timeoutMs ?? 25_000,
    ...(opts.keys ? { keys: opts.keys } : {}),
    ...(opts.auth ? { auth: opts.auth } : {}),
  });
  sipps.push(sipp);
  await sipp.ready;

  return sipp;
}

/**
 * Stops a captureUdp() capture and returns the number of packets it saw (the helper returns a
 * count or, in its newer form, an object with `total`).
 */
async function packetsAt(capture: { stop(): Promise<unknown> }): Promise<number> {
  const seen = await capture.stop();

  return typeof seen === 'number' ? seen : (seen as { total: number }).total;
}

/** The user part of the first SIP URI in a header value or request line. */
function uriUser(s: string | undefined): string | undefined {
  return /sips?:([^@;>\s]+)@/.exec(s ?? '')?.[1];
}

/** Waits until the agent has sent and received more than `min` RTP packets on a call (or the deadline passes), and returns the counts. */
async function waitForRtp(agent: NodeAgent, callId: string, min: number, timeoutMs: number): Promise<{ received: number; sent: number }> {
  const deadline = Date.now() + timeoutMs;
  let counts = await agent.packetCounts(callId);
  while ((counts.received <= min || counts.sent <= min) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    counts = await agent.packetCounts(callId);
  }

  return counts;
}

/** The newest call record once it is the one of `callId` (records are written asynchronously). */
async function recordOf(callId: string, timeoutMs = 5000): Promise<Record<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rec = (await fx!.gw.store!.recentRecords(5)).find((r) => r.callId === callId);
    if (rec) {
      return rec;
    }
    if (Date.now() > deadline) {
      throw new Error(`no call record for ${callId} within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The sipp trunk's result once it ended by itself. */
async function finished(sipp: SippProcess): Promise<SippResult> {
  const r = await sipp.result;
  expect(r.exitCode, r.describe()).toBe(0);

  return r;
}

describe('outbound calls', () => {
  it('dials the trunk, carries audio both ways, and the agent hangup sends BYE', async () => {
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = await startTrunk('trunk-uas-answer-rtp', { mediaPort });
    fx = await startCallGateway(outboundTrunk(trunk.port, { callerId: '+4930999000' }));
    const agent = await fx.agent(AGENT);

    const call = await agent.client.dial(DIALLED);
    expect(call.direction).toBe('outbound');
    const progress = await agent.waitForEvent('progress', undefined, 10_000);
    expect(progress).toMatchObject({ status: 180, earlyMedia: false });
    await agent.waitForEvent('answered', undefined, 10_000);
    expect(call.codec?.mimeType).toBe('audio/PCMA');

    const counts = await waitForRtp(agent, call.id, 50, 6000);
    expect(counts.received, 'RTP from the trunk at the agent').toBeGreaterThan(50);
    expect(counts.sent, 'RTP from the agent').toBeGreaterThan(50);

    await agent.client.hangup(call.id);
    const ended = await agent.waitForEvent('ended', undefined, 5000);
    expect(ended).toMatchObject({ reason: 'hangup_local', by: 'local' });
    const r = await finished(trunk);
    const atSipp = await packetsAt(capture);
    expect(atSipp, 'RTP packets that reached the sipp trunk').toBeGreaterThan(50);

    // the INVITE as the trunk saw it
    const invite = r.received('INVITE')[0]!;
    expect(uriUser(invite.split('\r\n', 1)[0]), 'Request-URI user').toBe(DIALLED);
    expect(uriUser(sipHeader(invite, 'From')), 'From user').toBe('+4930999000');
    const sdp = sipBody(invite);
    expect(sdp).toMatch(/^m=audio \d+ RTP\/AVP 8 0 101\r?$/m);
    expect(sdp).toMatch(/^a=rtpmap:8 PCMA\/8000\r?$/m);
    expect(sdp).toMatch(/^a=rtpmap:0 PCMU\/8000\r?$/m);
    expect(sdp).not.toMatch(/G722|opus/i);
    // the hangup reached the trunk as a BYE in the dialog
    const bye = r.received('BYE')[0];
    expect(bye, r.describe()).toBeDefined();
    expect(sipHeader(bye!, 'Call-ID')).toBe(sipHeader(invite, 'Call-ID'));

    const record = await recordOf(call.id);
    expect(record).toMatchObject({ direction: 'outbound', trunkId: 'carrier', agentId: AGENT, endReason: 'hangup_local', codec: 'PCMA' });
    expect(record.answeredAt).toBeTruthy();
    expect(record.to).not.toContain('30123456');
  }, 30_000);

  it('plays the trunk early media (183 with SDP) to the agent before the answer', async () => {
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = await startTrunk('trunk-uas-early-media', { mediaPort, keys: { early_ms: '5000' } });
    fx = await startCallGateway(outboundTrunk(trunk.port));
    const agent = await fx.agent(AGENT);

    const call = await agent.client.dial(DIALLED);
    const progress = await agent.waitForEvent('progress', undefined, 10_000);
    expect(progress).toMatchObject({ status: 183, earlyMedia: true });
    // the announcement reaches the agent while the call is still unanswered
    const deadline = Date.now() + 4500;
    let early = { received: 0, sent: 0 };
    let answeredMeanwhile = false;
    while (Date.now() < deadline) {
      early = await agent.packetCounts(call.id).catch(() => early);
      answeredMeanwhile = agent.events.some((e) => e.name === 'answered');
      if (early.received > 20 || answeredMeanwhile) {
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(answeredMeanwhile, 'answered before any early media arrived').toBe(false);
    expect(early.received, 'early-media RTP at the agent before the answer').toBeGreaterThan(20);
    expect(call.state).toBe('early');
    expect(call.codec?.mimeType).toBe('audio/PCMA');

    await agent.waitForEvent('answered', undefined, 10_000);
    const counts = await waitForRtp(agent, call.id, 50, 6000);
    expect(counts.received, 'RTP from the trunk at the agent').toBeGreaterThan(50);
    expect(counts.sent, 'RTP from the agent').toBeGreaterThan(50);
    await agent.client.hangup(call.id);
    await agent.waitForEvent('ended', (e) => e.reason === 'hangup_local', 5000);
    const r = await finished(trunk);
    expect(r.received('BYE'), r.describe()).toHaveLength(1);
    expect(await packetsAt(capture), 'RTP packets that reached the sipp trunk').toBeGreaterThan(50);
  }, 30_000);

  it.each([
    { scenario: 'uas-486', status: 486, reason: 'busy' },
    { scenario: 'uas-404', status: 404, reason: 'not_found' },
    { scenario: 'uas-480', status: 480, reason: 'unavailable' },
    { scenario: 'uas-503', status: 503, reason: 'unavailable' },
  ] as const)('ends the call with $reason when the trunk answers $status', async ({ scenario, status, reason }) => {
    const trunk = await startTrunk(scenario);
    fx = await startCallGateway(outboundTrunk(trunk.port));
    const agent = await fx.agent(AGENT);

    const call = await agent.client.dial(DIALLED);
    const ended = await agent.waitForEvent('ended', undefined, 10_000);
    expect(ended).toMatchObject({ reason, by: 'remote', sipStatus: status });
    expect(ended.call.id).toBe(call.id);
    expect(agent.events.some((e) => e.name === 'answered')).toBe(false);
    const r = await finished(trunk);
    // no callerId on the trunk: the agent id is the caller
    expect(uriUser(sipHeader(r.received('INVITE')[0]!, 'From'))).toBe(AGENT);
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ direction: 'outbound', endReason: reason, sipStatus: String(status) });
    expect(record.answeredAt).toBeUndefined();
  }, 20_000);

  it('cancels the INVITE when the trunk does not answer within dialTimeoutMs', async () => {
    const trunk = await startTrunk('uas-cancel');
    fx = await startCallGateway(outboundTrunk(trunk.port, { calls: { dialTimeoutMs: 1500 } }));
    const agent = await fx.agent(AGENT);

    const started = Date.now();
    const call = await agent.client.dial(DIALLED);
    const progress = await agent.waitForEvent('progress', undefined, 5000);
    expect(progress).toMatchObject({ status: 180, earlyMedia: false });
    const ended = await agent.waitForEvent('ended', undefined, 10_000);
    expect(ended).toMatchObject({ reason: 'timeout' });
    expect(ended.call.id).toBe(call.id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    // the trunk got a CANCEL for the INVITE, answered 487, and got the ACK (scenario complete)
    const r = await finished(trunk);
    expect(r.received('CANCEL'), r.describe()).toHaveLength(1);
    expect(sipHeader(r.received('CANCEL')[0]!, 'Call-ID')).toBe(sipHeader(r.received('INVITE')[0]!, 'Call-ID'));
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ direction: 'outbound', endReason: 'timeout' });
  }, 20_000);

  it('cancels the INVITE when the agent hangs up while the trunk rings', async () => {
    const trunk = await startTrunk('uas-cancel');
    fx = await startCallGateway(outboundTrunk(trunk.port));
    const agent = await fx.agent(AGENT);

    const call = await agent.client.dial(DIALLED);
    await agent.waitForEvent('progress', (e) => e.status === 180, 10_000);
    expect(call.state).toBe('early');
    await agent.client.hangup(call.id);
    const ended = await agent.waitForEvent('ended', undefined, 5000);
    expect(ended).toMatchObject({ reason: 'hangup_local', by: 'local' });
    const r = await finished(trunk);
    expect(r.received('CANCEL'), r.describe()).toHaveLength(1);
    expect(r.received('BYE')).toHaveLength(0);
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ direction: 'outbound', endReason: 'hangup_local' });
    expect(record.answeredAt).toBeUndefined();
  }, 20_000);

  it('answers the trunk digest challenge (407) with the trunk credentials and connects', async () => {
    const creds = { username: 'ringbridge-out', password: 'trunk-s3cret' };
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = await startTrunk('trunk-uas-auth-rtp', { mediaPort, auth: creds });
    fx = await startCallGateway(outboundTrunk(trunk.port, { auth: creds }));
    const agent = await fx.agent(AGENT);

    const call = await agent.client.dial(DIALLED);
    await agent.waitForEvent('answered', undefined, 10_000);
    const counts = await waitForRtp(agent, call.id, 50, 6000);
    expect(counts.received, 'RTP from the trunk at the agent').toBeGreaterThan(50);
    expect(counts.sent, 'RTP from the agent').toBeGreaterThan(50);
    await agent.client.hangup(call.id);
    await agent.waitForEvent('ended', (e) => e.reason === 'hangup_local', 5000);
    const r = await finished(trunk);
    expect(await packetsAt(capture), 'RTP packets that reached the sipp trunk').toBeGreaterThan(50);

    const [first, retry] = r.received('INVITE');
    expect(first, r.describe()).toBeDefined();
    expect(retry, r.describe()).toBeDefined();
    expect(sipHeader(first!, 'Proxy-Authorization')).toBeUndefined();
    const digest = verifyDigest(retry!, creds);
    expect(digest.ok, `digest of the retried INVITE: ${JSON.stringify(digest.params)}`).toBe(true);
    expect(digest.params).toMatchObject({ realm: 'ringbridge.test', qop: 'auth' });
    expect(uriUser(retry!.split('\r\n', 1)[0])).toBe(DIALLED);
    // the retry is a new transaction of the same call (RFC 3261 §22.2)
    expect(sipHeader(retry!, 'Call-ID')).toBe(sipHeader(first!, 'Call-ID'));
    const cseq = (m: string) => Number(sipHeader(m, 'CSeq')!.split(/\s+/)[0]);
    expect(cseq(retry!)).toBe(cseq(first!) + 1);
  }, 30_000);
});
