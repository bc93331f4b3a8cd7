/**
 * Group queues end to end (src/calls/call-centre.ts): sipp trunks call a DID routed to a group
 * with a queue while no member is available; they are answered and wait in Redis order; the admin
 * API and the metrics show them; the member who comes free gets the longest-waiting caller first,
 * with audio both ways (agent stats, and tshark at each caller's media port); the wait limit ends
 * in the configured fallback (a BYE with the configured Reason); a caller who hangs up leaves.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseWav } from '../../src/media/wav.js';
import { writeToneWav } from '../helpers/audio.js';
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
  for (const d of dirs.splice(0)) {
    await rm(d, { recursive: true, force: true });
  }
});
const dirs: string[] = [];

/** A queue music file: a 300 Hz tone, 8 kHz mono 16-bit WAV. */
async function musicFile(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'rb-queue-'));
  dirs.push(dir);
  const file = path.join(dir, 'music.wav');
  await writeToneWav(file, { hz: 300, seconds: 2 });

  return file;
}

const ADMIN = 'callcentre-admin-token-0123456789abcdef';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const config = (queue: Record<string, unknown>) => ({
  routing: { dids: [{ number: '*', group: 'support' }], groups: [{ id: 'support', members: ['cc-q1'], strategy: 'ring-all', queue }], defaultTrunk: '' },
  admin: { token: ADMIN },
});

interface QueueView {
  group: string;
  length: number;
  maxWaitS: number;
  calls: { callId: string; position: number; waitS: number; node: string }[];
}

async function admin(path: string): Promise<{ status: number; body: unknown; text: string }> {
  const res = await fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/admin/${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const text = await res.text();

  return { status: res.status, body: JSON.parse(text) as unknown, text };
}

async function metrics(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/metrics`)).text();
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) {
      return v;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms`);
    }
    await sleep(100);
  }
}

/** A caller (sipp trunk) that waits for the gateway's BYE, with a capture of what it hears. */
async function caller(): Promise<{ sipp: SippProcess; capture: ToneCapture }> {
  const mediaPort = await freePort();
  const capture = captureTone(mediaPort);
  captures.push(capture);
  await capture.ready;
  const sipp = startSipp({ scenario: 'trunk-in-wait-bye', target: fx!.sipTarget, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
  sipps.push(sipp);

  return { sipp, capture };
}

async function queued(n: number): Promise<QueueView> {
  return until(`${n} callers queued`, async () => {
    const v = (await admin('queues/support')).body as QueueView;

    return v.length === n ? v : undefined;
  });
}

async function flowing(agent: NodeAgent, callId: string, min = 25, timeoutMs = 6000): Promise<{ received: number; sent: number }> {
  const deadline = Date.now() + timeoutMs;
  let c = await agent.packetCounts(callId);
  while ((c.received <= min || c.sent <= min) && Date.now() < deadline) {
    await sleep(100);
    c = await agent.packetCounts(callId);
  }

  return c;
}

describe('group queues', () => {
  it('answers and queues callers while nobody is free; the free agent gets the longest-waiting caller first, with audio', async () => {
    fx = await startCallGateway(config({ maxWaitS: 60, music: await musicFile() }));
    const agent = await fx.agent('cc-q1', { toneHz: 700 });
    await agent.client.setPresence('busy');
    const first = await caller();
    const one = await queued(1);
    await sleep(300);
    const second = await caller();
    const view = await queued(2);
    expect(view.calls.map((c) => c.callId)).toEqual([one.calls[0]!.callId, expect.any(String)]);
    expect(view.calls.map((c) => c.position)).toEqual([1, 2]);
    expect(view.calls[0]!.waitS).toBeGreaterThan(view.calls[1]!.waitS);
    expect(view.calls[0]!.node).toBe(fx.gw.nodeId);
    const all = await admin('queues');
    expect(all.status).toBe(200);
    expect((all.body as { queues: QueueView[] }).queues.map((q) => q.group)).toEqual(['support']);
    expect(all.text, 'no phone numbers in the admin API').not.toMatch(/4930555/);
    expect((await admin('queues/nosuch')).status).toBe(404);
    expect(await metrics()).toContain('ringbridge_queue_calls{group="support"} 2');
    // both callers were answered (200 OK) and nobody rang
    expect(agent.events.filter((e) => e.name === 'incoming')).toHaveLength(0);
    const [firstId, secondId] = view.calls.map((c) => c.callId) as [string, string];
    expect(fx.gw.calls!.call(firstId)!.state).toBe('queued');
    // both callers hear the queue music (the 300 Hz file) while they wait
    const tm = Date.now();
    await sleep(1000);
    for (const c of [first, second]) {
      const music = await c.capture.heardUntil(tm, Date.now());
      expect(music.packets, 'queue music packets at the caller').toBeGreaterThan(40);
      expect(music.hz, 'the queue music tone').toBeGreaterThan(280);
      expect(music.hz).toBeLessThan(320);
    }

    // the agent comes free: the first caller is offered first
    await agent.client.setPresence('available');
    const inc1 = await agent.waitForEvent('incoming', undefined, 3000);
    expect(inc1.call.id).toBe(firstId);
    expect(inc1.call.queue).toBe('support');
    await agent.client.answer(firstId);
    const c1 = await flowing(agent, firstId);
    expect(c1.received, 'the first caller\'s audio at the agent').toBeGreaterThan(25);
    const t1 = Date.now();
    await sleep(1000);
    const heard1 = await first.capture.heardUntil(t1, Date.now());
    expect(heard1.packets, 'the agent\'s audio at the first caller').toBeGreaterThan(30);
    expect(heard1.hz).toBeGreaterThan(650);
    expect(heard1.hz).toBeLessThan(750);
    const stillWaiting = second.capture.heard(t1, Date.now());
    expect(stillWaiting.hz, 'the second caller still hears the music, not the agent').toBeLessThan(320);
    expect(stillWaiting.hz).toBeGreaterThan(280);
    expect((await queued(1)).calls[0]).toMatchObject({ callId: secondId, position: 1 });

    // the agent hangs up: the second caller is offered next
    await agent.client.hangup(firstId);
    const inc2 = await agent.waitForEvent('incoming', undefined, 3000);
    expect(inc2.call.id).toBe(secondId);
    await agent.client.answer(secondId);
    const c2 = await flowing(agent, secondId);
    expect(c2.received).toBeGreaterThan(25);
    const t2 = Date.now();
    await sleep(1000);
    const heard2 = await second.capture.heardUntil(t2, Date.now());
    expect(heard2.packets).toBeGreaterThan(30);
    expect(heard2.hz).toBeGreaterThan(650);
    await queued(0);
    await agent.client.hangup(secondId);
    for (const c of [first, second]) {
      const r = await c.sipp.result;
      expect(r.exitCode, r.describe()).toBe(0);
    }
    const m = await metrics();
    expect(m).toContain('ringbridge_queue_calls_total{group="support",outcome="answered"} 2');
    expect(m).toContain('ringbridge_queue_wait_seconds_count{group="support",outcome="answered"} 2');
    expect(m).toContain('ringbridge_queue_calls{group="support"} 0');
  }, 60_000);

  it('a DID recording rule records a queued caller from the agent\'s answer, not from the queue\'s, and tells that agent', async () => {
    const recDir = await mkdtemp(path.join(tmpdir(), 'rb-queue-rec-'));
    dirs.push(recDir);
    const base = config({ maxWaitS: 60 });
    fx = await startCallGateway({
      ...base,
      routing: { ...base.routing, dids: [{ number: '*', group: 'support', record: true }] },
      recording: { enabled: true, dir: recDir, retentionS: 86400, onDemand: false },
    });
    const agent = await fx.agent('cc-q1', { toneHz: 700 });
    await agent.client.setPresence('busy');
    const c = await caller();
    const view = await queued(1);
    const callId = view.calls[0]!.callId;
    await sleep(1500);
    expect(await readdir(recDir), 'nothing recorded while the caller waits in the queue').toEqual([]);
    await agent.client.setPresence('available');
    const inc = await agent.waitForEvent('incoming', undefined, 3000);
    expect(inc.call.id).toBe(callId);
    const answeredAt = Date.now();
    await agent.client.answer(callId);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: true, recordingId: callId, reason: 'rule' });
    await flowing(agent, callId);
    await sleep(1000);
    await agent.client.hangup(callId);
    const r = await c.sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const file = path.join(recDir, `${callId}.wav`);
    // the call record names the recording once the file is complete
    await until('the call record names the recording', async () => ((await fx!.gw.store!.getCall(callId)).recordings ? true : undefined));
    const wav = parseWav(await readFile(file));
    const fileMs = (wav.data.length / 4 / 8000) * 1000;
    const talkMs = Date.now() - answeredAt;
    // the 1.5 s and more of queue wait are not in the file
    expect(fileMs).toBeLessThanOrEqual(talkMs + 300);
    expect(fileMs).toBeGreaterThan(800);
  }, 60_000);

  it('ends a caller who waited maxWaitS with the configured fallback (BYE with Reason cause=486)', async () => {
    fx = await startCallGateway(config({ maxWaitS: 2, fallback: { hangup: { status: 486 } } }));
    const c = await caller();
    await queued(1);
    const r = await c.sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const bye = r.received('BYE')[0]!;
    expect(sipHeader(bye, 'Reason')).toMatch(/^SIP;cause=486/);
    await queued(0);
    const m = await metrics();
    expect(m).toContain('ringbridge_queue_calls_total{group="support",outcome="timed_out"} 1');
    expect(Number(/ringbridge_queue_wait_seconds_sum\{group="support",outcome="timed_out"\} ([\d.]+)/.exec(m)?.[1])).toBeGreaterThanOrEqual(2);
  }, 40_000);

  it('hands a caller who waited maxWaitS to the fallback group, whose agent answers with audio', async () => {
    fx = await startCallGateway({
      routing: {
        dids: [{ number: '*', group: 'support' }],
        groups: [
          { id: 'support', members: ['cc-q1'], strategy: 'ring-all', queue: { maxWaitS: 2, fallback: { group: 'overflow' } } },
          { id: 'overflow', members: ['cc-o1'], strategy: 'ring-all' },
        ],
        defaultTrunk: '',
      },
      admin: { token: ADMIN },
    });
    const overflow = await fx.agent('cc-o1', { toneHz: 900 });
    const c = await caller();
    const [entry] = (await queued(1)).calls;
    const inc = await overflow.waitForEvent('incoming', undefined, 5000);
    expect(inc.call.id).toBe(entry!.callId);
    await queued(0);
    await overflow.client.answer(inc.call.id);
    const t = Date.now();
    await sleep(1200);
    const heard = await c.capture.heardUntil(t, Date.now());
    expect(heard.hz, 'the overflow agent at the caller').toBeGreaterThan(850);
    expect(heard.hz).toBeLessThan(950);
    expect((await overflow.packetCounts(inc.call.id)).received, 'the caller at the overflow agent').toBeGreaterThan(30);
    expect(await metrics()).toContain('ringbridge_queue_calls_total{group="support",outcome="timed_out"} 1');
    await overflow.client.hangup(inc.call.id);
    const r = await c.sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 40_000);

  it('dials the fallback number for a caller who waited maxWaitS, bridging caller and number in the router', async () => {
    const { number, atNumber } = await startNumber({ sipps, captures });
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', group: 'support' }], groups: [{ id: 'support', members: ['cc-q1'], strategy: 'ring-all', queue: { maxWaitS: 2, fallback: { number: '+4930777000' } } }], defaultTrunk: 'carrier' },
      trunks: [
        carrierTrunk(number.port),
      ],
      admin: { token: ADMIN },
    });
    const c = await caller();
    await queued(1);
    await queued(0); // the wait limit passed
    await sleep(1000); // the number answers
    const t = Date.now();
    await sleep(2000);
    const atCaller = await c.capture.heardUntil(t, Date.now());
    const heardByNumber = await atNumber.heardUntil(t, Date.now());
    expect(atCaller.packets, 'the number at the caller').toBeGreaterThan(50);
    expect(atCaller.rms).toBeGreaterThan(200);
    expect(heardByNumber.packets, 'the caller at the number').toBeGreaterThan(50);
    expect(heardByNumber.rms).toBeGreaterThan(200);
    // both pcaps end after 7 s: an RTP timeout (either leg) ends the call, and both dialogs get a BYE
    const r = await c.sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const rn = await number.result;
    expect(rn.exitCode, rn.describe()).toBe(0);
    expect(rn.received('INVITE')[0]!.split('\r\n')[0]).toMatch(/^INVITE sip:\+4930777000@/);
    expect(rn.received('BYE')).toHaveLength(1);
  }, 40_000);

  it('writes a waiting caller again when Redis lost the queue, and still offers it to the free agent', async () => {
    fx = await startCallGateway(config({ maxWaitS: 60 }));
    const agent = await fx.agent('cc-q1', { toneHz: 700 });
    await agent.client.setPresence('busy');
    const c = await caller();
    const [entry] = (await queued(1)).calls;
    const store = fx.gw.store!;
    await fx.gw.redis!.client.del(store.key('queue', 'support'), store.key('queue', 'support', 'nodes'));
    const back = await queued(1); // the node's tick put it back, with its original join time
    expect(back.calls[0]!.callId).toBe(entry!.callId);
    expect(back.calls[0]!.waitS).toBeGreaterThanOrEqual(entry!.waitS);
    await agent.client.setPresence('available');
    const inc = await agent.waitForEvent('incoming', undefined, 3000);
    expect(inc.call.id).toBe(entry!.callId);
    await agent.client.answer(inc.call.id);
    const t = Date.now();
    await sleep(1200);
    const heard = await c.capture.heardUntil(t, Date.now());
    expect(heard.hz, 'the agent at the caller').toBeGreaterThan(650);
    expect(heard.hz).toBeLessThan(750);
    await agent.client.hangup(inc.call.id);
    const r = await c.sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 40_000);

  it('takes a caller who hangs up out of the queue (abandoned)', async () => {
    fx = await startCallGateway(config({ maxWaitS: 60 }));
    const sipp = startSipp({ scenario: 'uac-invite-bye', target: fx.sipTarget, keys: { hold_ms: '1500' }, timeoutMs: 20_000 });
    sipps.push(sipp);
    await queued(1);
    const r = await sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    await queued(0);
    expect(await metrics()).toContain('ringbridge_queue_calls_total{group="support",outcome="abandoned"} 1');
  }, 40_000);

  it('refuses a caller to a full queue (maxCallers) with 480: the waiting callers stay, no further router is held', async () => {
    fx = await startCallGateway(config({ maxWaitS: 60, maxCallers: 2 }));
    await caller();
    await caller();
    await queued(2);
    const routers = fx.gw.calls!.calls.length;
    const third = startSipp({ scenario: 'uac-expect-480', target: fx.sipTarget, timeoutMs: 20_000 });
    sipps.push(third);
    const r = await third.result;
    expect(r.exitCode, `the third caller gets 480: ${r.describe()}`).toBe(0);
    const v = await queued(2);
    expect(v.calls).toHaveLength(2);
    expect(fx.gw.calls!.calls.length, 'no call (and router) kept for the refused caller').toBe(routers);
  }, 40_000);

  it("takes a dead node's callers out of the queue when the reaper reaps it (not listed for a day)", async () => {
    fx = await startCallGateway(config({ maxWaitS: 60 }));
    const store = fx.gw.store!;
    const redis = fx.gw.redis!.client;
    // a node that queued a caller and died
    await redis.multi().zadd(store.key('queue', 'support'), Date.now() - 5000, 'c-of-dead-node').hset(store.key('queue', 'support', 'nodes'), 'c-of-dead-node', 'dead-node').exec();
    await caller();
    const before = await queued(2);
    expect(before.calls.map((c) => c.node)).toContain('dead-node');
    await redis.zadd(store.key('nodes'), Date.now() - 60_000, 'dead-node');
    await store.reapNode('dead-node', 'node_failure'); // (or this gateway's reaper, first)
    const after = await queued(1);
    expect(after.calls.map((c) => c.callId), 'only the live node\'s caller').not.toContain('c-of-dead-node');
    expect(after.calls[0]!.node).not.toBe('dead-node');
  }, 40_000);
});
