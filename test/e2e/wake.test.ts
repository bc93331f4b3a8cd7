/**
 * The wake-up flow end to end: sipp calls an agent whose devices are all asleep (no session), the
 * gateway pushes through a local HTTP/2 APNs that checks the provider JWT and headers
 * (test/helpers/push-servers/apns.ts), and a Node WebRTC agent "wakes" on receipt: it connects
 * with its device id, the call rings there, it answers and audio flows.
 */
import { generateKeyPairSync } from 'node:crypto';
import { isRingbridgeError } from '../../src/client/index.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { agentToken, captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { type NodeAgent, startNodeAgent } from '../helpers/agent.js';
import { FakeApns, type ApnsPush } from '../helpers/push-servers/apns.js';
import { pushTestCerts } from '../helpers/push-servers/common.js';
import { freePort, runSipp, startSipp } from '../helpers/sipp.js';

const TEAM = 'TEAM123456';
const KID = 'KEY1234567';
const BUNDLE = 'com.acme.agent';
const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const tok = (n: number) => n.toString(16).padStart(64, '0');

let apns: FakeApns;
let fx: CallFixture | undefined;
const agents: NodeAgent[] = [];

beforeAll(async () => {
  apns = await FakeApns.start({ teamId: TEAM, keyId: KID, publicKey: keys.publicKey });
});

afterAll(async () => {
  await apns?.close();
});

afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.close()));
  await fx?.close();
  fx = undefined;
  apns.accepted.length = 0;
  apns.tokens.clear();
});

async function gateway(agentId: string): Promise<CallFixture> {
  const certs = await pushTestCerts();
  fx = await startCallGateway({
    routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' },
    push: {
      caFile: certs.caFile,
      timeoutMs: 2000,
      apns: { enabled: true, teamId: TEAM, keyId: KID, key: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), bundleId: BUNDLE, baseUrl: apns.url },
    },
  });

  return fx;
}

async function agent(agentId: string, deviceId?: string): Promise<NodeAgent> {
  const a = await startNodeAgent({ url: fx!.wsUrl, token: () => agentToken(agentId), reconnect: false, ...(deviceId ? { deviceId } : {}) });
  agents.push(a);

  return a;
}

/** Registers devices for an agent from a first session, then signs off (no session left). */
async function registerDevices(agentId: string, devices: { deviceId: string; token: string; alertToken: string }[]): Promise<void> {
  const a = await agent(agentId);
  for (const d of devices) {
    await a.client.registerDevice({ deviceId: d.deviceId, platform: 'ios', channel: 'apns', token: d.token, alertToken: d.alertToken, appVersion: '1.0.0' });
  }
  await a.close();
  agents.splice(agents.indexOf(a), 1);
  await waitUntil('the agent to be offline', () => fx!.gw.signaling!.sessionsOf(agentId).length === 0);
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

const pushesTo = (token: string): ApnsPush[] => apns.accepted.filter((p) => p.token === token);

describe('waking sleeping devices by push', () => {
  it('pushes the only device of an offline agent, which connects, rings, answers, and carries audio', async () => {
    await gateway('agent-w');
    await registerDevices('agent-w', [{ deviceId: 'phone-1', token: tok(1), alertToken: tok(101) }]);
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx!.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });

    await waitUntil('the wake push', () => pushesTo(tok(1)).length > 0);
    const push = pushesTo(tok(1))[0]!;
    expect(push).toMatchObject({ topic: `${BUNDLE}.voip`, pushType: 'voip', priority: '10' });
    const callId = String(push.payload.callId);
    expect(push.collapseId).toBe(callId);
    expect(JSON.stringify(push.payload)).not.toContain('4930555000'); // the caller's number is masked

    // the app wakes: it connects with its device id and finds the call ringing
    const phone = await agent('agent-w', 'phone-1');
    const incoming = await phone.waitForEvent('incoming', undefined, 5000);
    expect(incoming.call.id).toBe(callId);
    const call = await phone.client.answer(callId);
    await phone.waitForEvent('answered', undefined, 5000);
    await new Promise((r) => setTimeout(r, 1500));
    const counts = await phone.packetCounts(call.id);
    expect(counts.received).toBeGreaterThan(30);
    expect(counts.sent).toBeGreaterThan(30);
    await phone.waitForEvent('ended', undefined, 15_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(180, 'INVITE').length, 'the trunk heard ringing while the phone woke').toBeGreaterThan(0);
    expect((await capture.stop()).byPayloadType.get(8) ?? 0).toBeGreaterThan(30);
    // no notice to the device that answered; exactly one wake push
    expect(pushesTo(tok(1))).toHaveLength(1);
    expect(pushesTo(tok(101))).toHaveLength(0);
    const wakes = await fx!.gw.store!.wakes('agent-w');
    expect(wakes.get(callId)).toMatchObject({ devices: { 'phone-1': 'connected' }, outcome: 'answered' });
    const metrics = await (await fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toMatch(/ringbridge_push_sent_total\{channel="apns",kind="call",result="delivered"\} 1/);
    expect(metrics).toMatch(/ringbridge_push_to_connect_seconds_count 1/);
    expect(metrics).toMatch(/ringbridge_wake_outcomes_total\{outcome="answered"\} 1/);
  }, 60_000);

  it('two calls wait for one woken device: it may answer one; answering the other meanwhile is refused, declining it works', async () => {
    await gateway('agent-2c');
    await registerDevices('agent-2c', [{ deviceId: 'phone-1', token: tok(7), alertToken: tok(107) }]);
    const first = startSipp({ scenario: 'trunk-in-wait-bye', target: fx!.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const second = startSipp({ scenario: 'trunk-in-expect-603', target: fx!.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    await waitUntil('two wake pushes', () => pushesTo(tok(7)).length === 2);
    const [oneId, twoId] = pushesTo(tok(7)).map((p) => String(p.payload.callId));
    const phone = await agent('agent-2c', 'phone-1');
    await phone.waitForEvent('incoming', (e) => e.call.id === oneId, 5000);
    await phone.waitForEvent('incoming', (e) => e.call.id === twoId, 5000);
    await phone.client.answer(oneId!);
    const refused = await phone.client.answer(twoId!).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isRingbridgeError(refused) && refused.code, String(refused)).toBe('INVALID_STATE');
    expect(fx!.gw.calls!.call(twoId!)?.state).toBe('ringing');
    await phone.client.decline(twoId!, 'decline');
    const r2 = await second.result;
    expect(r2.exitCode, r2.describe()).toBe(0);
    expect(fx!.gw.calls!.call(oneId!)?.state).toBe('active');
    await phone.client.hangup(oneId!);
    const r1 = await first.result;
    expect(r1.exitCode, r1.describe()).toBe(0);
  }, 60_000);

  it('answers 480 when the device never wakes, and sends it a missed-call notice', async () => {
    await gateway('agent-s');
    await registerDevices('agent-s', [{ deviceId: 'phone-1', token: tok(2), alertToken: tok(102) }]);
    const r = await runSipp({ scenario: 'uac-expect-480', target: fx!.sipTarget, timeoutMs: 20_000 });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(180, 'INVITE').length).toBeGreaterThan(0);
    expect(r.received(480, 'INVITE')).toHaveLength(1);
    await waitUntil('the missed-call notice', () => pushesTo(tok(102)).length > 0, 5000);
    const notice = pushesTo(tok(102))[0]!;
    expect(notice).toMatchObject({ topic: BUNDLE, pushType: 'alert' });
    expect(notice.collapseId).toBe(pushesTo(tok(2))[0]!.collapseId);
    // the device wakes late: it is told at once that the call is over
    const late = await agent('agent-s', 'phone-1');
    const gone = await late.waitForEvent('wakecancelled', undefined, 5000);
    expect(gone).toEqual({ callId: notice.collapseId, reason: 'ring_timeout' });
    // told once: the next session of the device hears nothing more of it
    await late.close();
    const again = await agent('agent-s', 'phone-1');
    await new Promise((r) => setTimeout(r, 500));
    expect(again.events.filter((e) => e.name === 'wakecancelled')).toEqual([]);
  }, 60_000);

  it('wakes two devices; the one that answers wins and the other gets a cancel notice', async () => {
    await gateway('agent-t');
    await registerDevices('agent-t', [
      { deviceId: 'phone-1', token: tok(3), alertToken: tok(103) },
      { deviceId: 'tablet-1', token: tok(4), alertToken: tok(104) },
    ]);
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx!.sipTarget, keys: { hold_ms: '1000' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    await waitUntil('both wake pushes', () => pushesTo(tok(3)).length > 0 && pushesTo(tok(4)).length > 0);
    const phone = await agent('agent-t', 'phone-1');
    const incoming = await phone.waitForEvent('incoming', undefined, 5000);
    await phone.client.answer(incoming.call.id);
    await waitUntil('the cancel notice to the tablet', () => pushesTo(tok(104)).length > 0, 5000);
    expect(pushesTo(tok(104))[0]).toMatchObject({ pushType: 'alert', collapseId: incoming.call.id });
    expect(pushesTo(tok(103))).toHaveLength(0); // the phone answered: no notice
    expect(pushesTo(tok(3))).toHaveLength(1); // one wake push per device
    expect(pushesTo(tok(4))).toHaveLength(1);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 60_000);

  it('removes a device whose token APNs reports unregistered, and answers 480 at once with nobody left to wake', async () => {
    await gateway('agent-d');
    await registerDevices('agent-d', [{ deviceId: 'old-phone', token: tok(5), alertToken: tok(105) }]);
    apns.tokens.set(tok(5), 'unregistered');
    const t0 = Date.now();
    const r = await runSipp({ scenario: 'uac-expect-480', target: fx!.sipTarget, timeoutMs: 20_000 });
    expect(r.exitCode, r.describe()).toBe(0);
    // well before the 5 s ring timeout of the test profile
    expect(Date.now() - t0).toBeLessThan(4000);
    await waitUntil('the device removed', async () => (await fx!.gw.store!.devices('agent-d')).length === 0, 5000);
  }, 60_000);

  it('keeps the APNs channel open after one agent\'s six throttled tokens (429 is about a token, not the provider)', async () => {
    await gateway('agent-m');
    const noisy = Array.from({ length: 6 }, (_, i) => ({ deviceId: `m-${i}`, token: tok(200 + i), alertToken: tok(300 + i) }));
    await registerDevices('agent-m', noisy);
    for (const d of noisy) {
      apns.tokens.set(d.token, 'busy');
    }
    const r1 = await runSipp({ scenario: 'uac-expect-480', target: fx!.sipTarget, timeoutMs: 20_000 });
    expect(r1.exitCode, r1.describe()).toBe(0);
    // six failures from one agent do not open the breaker: the next call's push still goes out
    await registerDevices('agent-m', [{ deviceId: 'good', token: tok(250), alertToken: tok(350) }]);
    for (const d of noisy) {
      await fx!.gw.store!.removeDevice('agent-m', d.deviceId);
    }
    const trunk = runSipp({ scenario: 'uac-expect-480', target: fx!.sipTarget, timeoutMs: 20_000 });
    await waitUntil('the push to the good device', () => pushesTo(tok(250)).length > 0, 8000);
    expect((await trunk).exitCode).toBe(0);
    const metrics = await (await fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).not.toMatch(/result="breaker_open"/);
  }, 60_000);
});
