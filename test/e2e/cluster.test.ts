/**
 * Several gateway nodes on one Redis: node A in this process, node B a real process
 * (node dist/src/main.js) so that it can be killed. sipp is the trunk, agents are Node WebRTC
 * agents (client SDK on @roamhq/wrtc). Short heartbeats (300 ms) and node TTL (1500 ms) keep the
 * failure tests quick; production defaults are 2 s and 6 s.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { type ConfigTree } from '../../src/config/load.js';
import { type ClusterPresence, type StateStore } from '../../src/state/store.js';
import { agentToken, captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { type NodeAgent, startNodeAgent } from '../helpers/agent.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/process.js';
import { freePort, runSipp, startSipp } from '../helpers/sipp.js';

const SECRET = 'cluster-test-secret-0123456789abcdef-0123';
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // best effort
    }
  }
});

/** Settings both nodes share: Redis prefix, cluster secret, quick heartbeats, routing. */
function shared(prefix: string, route: ConfigTree): ConfigTree {
  return {
    redis: { keyPrefix: prefix },
    cluster: { secret: SECRET, heartbeatIntervalMs: 300, nodeTtlMs: 1500 },
    ...route,
  };
}

/** Node A, in this process. */
async function nodeA(prefix: string, route: ConfigTree, extra: ConfigTree = {}): Promise<CallFixture> {
  const fx = await startCallGateway({ ...shared(prefix, route), node: { id: 'node-a' }, ...extra });
  cleanups.push(() => fx.close());

  return fx;
}

/** Node B, a gateway process with its own media port ranges. */
async function nodeB(prefix: string, route: ConfigTree): Promise<{ proc: GatewayProcess; wsUrl: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-cluster-'));
  const file = path.join(dir, 'node-b.yaml');
  const tree: ConfigTree = {
    ...shared(prefix, route),
    node: { id: 'node-b' },
    media: { rtcMinPort: 40000, rtcMaxPort: 44999, relayMinPort: 36000, relayMaxPort: 36999 },
  };
  fs.writeFileSync(file, YAML.stringify(tree));
  const proc = startGatewayProcess({ RINGBRIDGE_CONFIG: file });
  cleanups.push(async () => {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const started = await proc.waitForLog('ringbridge gateway started', 20_000);
  const http = started.http as { port: number };

  return { proc, wsUrl: `ws://127.0.0.1:${http.port}/ws` };
}

async function agentOn(wsUrl: string, agentId: string, deviceId?: string): Promise<NodeAgent> {
  const a = await startNodeAgent({ url: wsUrl, token: () => agentToken(agentId), reconnect: false, ...(deviceId ? { deviceId } : {}) });
  cleanups.push(() => a.close());

  return a;
}

async function waitUntil(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) {
      return Date.now() - t0;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Agent presence across the cluster as node A reads it (live nodes from the registry). */
async function presenceOf(store: StateStore, agentId: string): Promise<ClusterPresence | undefined> {
  const live = new Set((await store.liveNodes()).map((n) => n.id));

  return (await store.clusterPresence([agentId], live))[0];
}

/** Whether the cluster sees a session of the agent on the node. */
async function agentOnNode(store: StateStore, agentId: string, node: string): Promise<boolean> {
  return (await presenceOf(store, agentId))?.nodes.includes(node) === true;
}

const routeTo = (agentId: string): ConfigTree => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' } });

describe('several nodes on one Redis', () => {
  it('hands a call that reaches node A to the agent on node B: media anchored on B, audio both ways, one call record', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-b'));
    const b = await nodeB(prefix, routeTo('agent-b'));
    const agent = await agentOn(b.wsUrl, 'agent-b');
    const store = a.gw.store!;
    await waitUntil('node A to see node B and its agent', () => agentOnNode(store, 'agent-b', 'node-b'));

    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    await new Promise((r) => setTimeout(r, 2000));
    const counts = await agent.packetCounts(call.id);
    expect(counts.received, 'RTP from the trunk at the agent on node B').toBeGreaterThan(50);
    expect(counts.sent, 'RTP from the agent').toBeGreaterThan(50);
    const ended = await agent.waitForEvent('ended', undefined, 15_000);
    expect(ended).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP at the sipp trunk').toBeGreaterThan(50);
    // The trunk's 200 OK carries node B's relay port: the RTP goes trunk <-> B, not through A.
    const ok = r.received(200, 'INVITE')[0]!;
    const port = Number(/m=audio (\d+) /.exec(ok)?.[1]);
    expect(port, ok).toBeGreaterThanOrEqual(36000);
    expect(port, ok).toBeLessThanOrEqual(36999);
    // One record, written by the answering node, naming both nodes.
    await waitUntil('the call record', async () => (await store.recentRecords(10)).length > 0);
    await new Promise((r) => setTimeout(r, 300));
    const records = await store.recentRecords(10);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ direction: 'inbound', agentId: 'agent-b', node: 'node-a', agentNode: 'node-b', endReason: 'hangup_remote', codec: 'PCMA' });
    expect(records[0]!.answeredAt).toBeTruthy();
    // Neither node keeps the call in Redis.
    expect(await store.nodeCalls('node-a')).toEqual([]);
    expect(await store.nodeCalls('node-b')).toEqual([]);
  }, 60_000);

  it('ends the call within the node TTL when the agent\'s node dies mid-call, and frees its agents in Redis', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-b'));
    const b = await nodeB(prefix, routeTo('agent-b'));
    const agent = await agentOn(b.wsUrl, 'agent-b');
    const store = a.gw.store!;
    await waitUntil('node A to see agent-b on node B', () => agentOnNode(store, 'agent-b', 'node-b'));
    // the trunk waits for our BYE (up to 20 s)
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: a.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    await waitUntil('the call on node A', () => a.gw.calls!.calls.length === 1);
    const callId = a.gw.calls!.calls[0]!.id;

    const killedAt = Date.now();
    b.proc.child.kill('SIGKILL');
    await b.proc.exited;
    await waitUntil('node A to end the call', () => a.gw.calls!.calls.length === 0, 10_000);
    const tookMs = Date.now() - killedAt;
    // bound: node TTL (1500) + a heartbeat (300) + slack for a loaded machine
    expect(tookMs).toBeLessThan(1500 + 300 + 2500);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('BYE')).toHaveLength(1);
    await waitUntil('the call record', async () => (await store.recentRecords(10)).some((x) => x.callId === callId), 5000);
    const rec = (await store.recentRecords(10)).find((x) => x.callId === callId)!;
    expect(rec).toMatchObject({ endReason: 'node_failure', node: 'node-a', agentId: 'agent-b' });
    // node B reaped: not live, no call, agent-b offline with no session
    await waitUntil('node B reaped', async () => !(await store.liveNodes()).some((n) => n.id === 'node-b') && (await store.nodeCalls('node-b')).length === 0, 5000);
    const p = await presenceOf(store, 'agent-b');
    expect(p?.nodes ?? []).toEqual([]);
    expect(p?.effective ?? 'offline').toBe('offline');
    expect(await store.getCall(callId)).toMatchObject({ state: 'ended', endReason: 'node_failure' });
    // one record for the call, whoever wrote it (the reaper or node A)
    await new Promise((r) => setTimeout(r, 500));
    expect((await store.recentRecords(10)).filter((x) => x.callId === callId)).toHaveLength(1);
    // node A still takes calls: a call for nobody gets 480 at once
    const r2 = await runSipp({ scenario: 'uac-expect-480', target: a.sipTarget });
    expect(r2.exitCode, r2.describe()).toBe(0);
  }, 60_000);

  it('answers the trunk 480 within the node TTL when the agent\'s node dies while the call rings there', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-b'));
    const b = await nodeB(prefix, routeTo('agent-b'));
    const agent = await agentOn(b.wsUrl, 'agent-b');
    const store = a.gw.store!;
    await waitUntil('node A to see agent-b on node B', () => agentOnNode(store, 'agent-b', 'node-b'));
    const trunk = runSipp({ scenario: 'uac-expect-480', target: a.sipTarget, timeoutMs: 20_000 });
    await agent.waitForEvent('incoming', undefined, 10_000);
    const killedAt = Date.now();
    b.proc.child.kill('SIGKILL');
    await b.proc.exited;
    const r = await trunk;
    // the 5 s ring timeout of the test profile (from the INVITE) would also give 480: the node
    // TTL (1.5 s) plus a beat (0.3 s) must come first, with slack for a loaded machine
    expect(Date.now() - killedAt).toBeLessThan(4000);
    expect(r.exitCode, r.describe()).toBe(0);
    expect(a.gw.calls!.calls).toHaveLength(0);
    // node A takes the next call
    const r2 = await runSipp({ scenario: 'uac-expect-480', target: a.sipTarget });
    expect(r2.exitCode, r2.describe()).toBe(0);
  }, 60_000);

  it('drains a node: 503 to new INVITEs and OPTIONS, /health draining, its call goes on, then it stops', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-a'));
    const agent = await a.agent('agent-a');
    const idle = await agentOn(a.wsUrl, 'agent-idle');
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '4000' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);

    const drained = a.gw.drain(20_000);
    // the idle agent is asked to reconnect elsewhere (1001); the one on a call stays; newcomers are refused
    await idle.waitForEvent('connectionstatechange', (st) => st === 'disconnected', 5000);
    expect(agent.client.connectionState).toBe('connected');
    await expect(agentOn(a.wsUrl, 'agent-new')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const health = await fetch(`http://127.0.0.1:${a.gw.httpAddress.port}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'draining', draining: { calls: 1 } });
    const options = await runSipp({ scenario: 'uac-options', target: a.sipTarget, timeoutMs: 5000 });
    expect(options.received(503, 'OPTIONS'), options.describe()).toHaveLength(1);
    const refused = await runSipp({ scenario: 'uac-expect-503', target: a.sipTarget });
    expect(refused.exitCode, refused.describe()).toBe(0);
    const nodes = await a.gw.store!.liveNodes();
    expect(nodes.find((n) => n.id === 'node-a')?.draining).toBe(true);
    // the call in progress is untouched: the trunk hangs up after 4 s of audio
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    await agent.waitForEvent('ended', undefined, 5000);
    await drained;
    expect(a.gw.health().status).toBe('stopping');
  }, 60_000);

  it('rings an agent on every device across nodes; the answer on one cancels the other with answered_elsewhere', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-x'));
    const b = await nodeB(prefix, routeTo('agent-x'));
    const desk = await agentOn(a.wsUrl, 'agent-x', 'desk-1');
    const phone = await agentOn(b.wsUrl, 'agent-x', 'phone-1');
    const store = a.gw.store!;
    await waitUntil('node A to see agent-x on node B', () => agentOnNode(store, 'agent-x', 'node-b'));
    const sessions = Object.values(await a.gw.redis!.client.hgetall(store.key('agent', 'agent-x', 'sessions'))).map((v) => JSON.parse(v) as { node: string; deviceId?: string });
    expect(sessions.map((x) => `${x.node}/${x.deviceId}`).sort()).toEqual(['node-a/desk-1', 'node-b/phone-1']);

    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '2000' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const onDesk = await desk.waitForEvent('incoming', undefined, 10_000);
    const onPhone = await phone.waitForEvent('incoming', undefined, 10_000);
    expect(onPhone.call.id).toBe(onDesk.call.id);
    const call = await phone.client.answer(onPhone.call.id);
    const cancelled = await desk.waitForEvent('cancelled', undefined, 5000);
    expect(cancelled.reason).toBe('answered_elsewhere');
    await phone.waitForEvent('answered', undefined, 5000);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await phone.packetCounts(call.id)).received).toBeGreaterThan(20);
    await phone.waitForEvent('ended', undefined, 15_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    await waitUntil('the call record', async () => (await store.recentRecords(5)).length === 1);
    expect((await store.recentRecords(5))[0]).toMatchObject({ agentId: 'agent-x', agentNode: 'node-b' });
  }, 60_000);

  it('keeps an agent\'s devices, drops a token a provider reports dead, and exports then erases everything about the agent', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const adminToken = 'admin-token-0123456789abcdef-0123456789';
    const a = await nodeA(prefix, routeTo('agent-p'), { admin: { token: adminToken } });
    const agent = await a.agent('agent-p');
    const phone = await agent.client.registerDevice({ deviceId: 'phone-1', platform: 'ios', channel: 'apns', token: 'apns-token-aaaa', topic: 'com.example.agent.voip', appVersion: '4.2.0' });
    expect(phone).toMatchObject({ deviceId: 'phone-1', channel: 'apns', hasToken: true, topic: 'com.example.agent.voip' });
    expect(JSON.stringify(phone)).not.toContain('apns-token-aaaa');
    await agent.client.registerDevice({ deviceId: 'tab-1', platform: 'android', channel: 'fcm', token: 'fcm-token-bbbb' });
    await agent.client.registerDevice({ deviceId: 'desk-1', platform: 'desktop', channel: 'none' });
    await expect(agent.client.registerDevice({ deviceId: 'x', platform: 'ios', channel: 'apns' })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect((await agent.client.listDevices()).map((d) => d.deviceId).sort()).toEqual(['desk-1', 'phone-1', 'tab-1']);
    // at most 20 devices per agent (each call wakes every one)
    for (let i = 0; i < 17; i++) {
      await agent.client.registerDevice({ deviceId: `extra-${i}`, platform: 'web', channel: 'none' });
    }
    await expect(agent.client.registerDevice({ deviceId: 'one-too-many', platform: 'web', channel: 'none' })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await agent.client.registerDevice({ deviceId: 'extra-0', platform: 'web', channel: 'none', appVersion: '2' }); // an update is fine
    for (let i = 0; i < 17; i++) {
      await agent.client.unregisterDevice(`extra-${i}`);
    }

    // APNs said 410 Unregistered for the phone's token: the device goes, the others stay.
    expect(await a.gw.store!.removeDeadToken('apns', 'apns-token-aaaa')).toEqual({ agentId: 'agent-p', deviceId: 'phone-1' });
    expect((await agent.client.listDevices()).map((d) => d.deviceId).sort()).toEqual(['desk-1', 'tab-1']);
    expect(await agent.client.unregisterDevice('desk-1')).toBe(true);
    expect(await agent.client.unregisterDevice('desk-1')).toBe(false);

    // a finished call, so that there is a call record to export and erase
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '500' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('ended', undefined, 15_000);
    expect((await trunk.result).exitCode).toBe(0);
    await waitUntil('the call record', async () => (await a.gw.store!.recentRecords(5)).length === 1);

    const base = `http://127.0.0.1:${a.gw.httpAddress.port}/admin/agents/agent-p`;
    const auth = { authorization: `Bearer ${adminToken}` };
    expect((await fetch(base)).status).toBe(401);
    const exported = (await (await fetch(base, { headers: auth })).json()) as { devices: { deviceId: string; token?: string }[]; callRecords: { callId: string }[] };
    expect(exported.devices.map((d) => d.deviceId)).toEqual(['tab-1']);
    expect(exported.devices[0]!.token).toBe('fcm-token-bbbb'); // the agent's own data, in full
    expect(exported.callRecords.map((c) => c.callId)).toEqual([incoming.call.id]);
    // erase refuses while the agent is online
    expect((await fetch(base, { method: 'DELETE', headers: auth })).status).toBe(409);
    await agent.close();
    await waitUntil('agent-p offline', async () => (await fetch(base, { method: 'DELETE', headers: auth })).status === 200, 10_000);
    // nothing left that names the agent or its token, in any key or value under the prefix
    const redis = a.gw.redis!.client;
    const keys = await redis.keys(`${prefix}*`);
    for (const key of keys) {
      expect(key).not.toContain('agent-p');
      const type = await redis.type(key);
      const dump = type === 'hash' ? JSON.stringify(await redis.hgetall(key)) : type === 'stream' ? JSON.stringify(await redis.xrange(key, '-', '+')) : type === 'zset' ? JSON.stringify(await redis.zrange(key, 0, -1)) : type === 'set' ? JSON.stringify(await redis.smembers(key)) : type === 'string' ? String(await redis.get(key)) : '';
      expect(dump, key).not.toContain('agent-p');
      expect(dump, key).not.toContain('fcm-token-bbbb');
    }
  }, 60_000);

  it('a node restarted under the same id clears what its previous run left in Redis before it takes calls', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    // A long node TTL: node A must not reap B before B's new run does.
    const route = { ...routeTo('agent-r'), cluster: { secret: SECRET, heartbeatIntervalMs: 300, nodeTtlMs: 20_000 } };
    const a = await nodeA(prefix, route);
    const b = await nodeB(prefix, route);
    const agent = await agentOn(b.wsUrl, 'agent-r');
    const store = a.gw.store!;
    await waitUntil('agent-r on node B', () => agentOnNode(store, 'agent-r', 'node-b'));
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: a.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    await waitUntil('the call listed under node B', async () => (await store.nodeCalls('node-b')).length === 1);
    b.proc.child.kill('SIGKILL');
    await b.proc.exited;
    const b2 = await nodeB(prefix, route);
    // The new run of node-b ended the old call in Redis and removed the old session.
    const cleared = b2.proc.logs.find((l) => l.msg === 'cleared what the previous run of this node left in Redis');
    expect(cleared, b2.proc.output()).toMatchObject({ calls: 1, agents: 1 });
    expect(await store.nodeCalls('node-b')).toEqual([]);
    expect(await store.getCall(incoming.call.id)).toMatchObject({ state: 'ended' });
    const sessions = await a.gw.redis!.client.hgetall(store.key('agent', 'agent-r', 'sessions'));
    expect(Object.keys(sessions)).toEqual([]);
    expect(await store.getCall(incoming.call.id)).toMatchObject({ endReason: 'node_restart' });
    // node A hangs up its trunk leg: the peer's call is gone
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('BYE')).toHaveLength(1);
  }, 60_000);

  it('keeps a cross-node call through a Redis restart (empty), and writes the state again', async () => {
    // Our own redis-server, so that killing it touches no other test.
    const port = await freePort();
    const startRedis = (): ChildProcess => spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    let redis = startRedis();
    cleanups.push(() => redis.kill('SIGKILL'));
    const url = `redis://127.0.0.1:${port}`;
    const listening = (): Promise<boolean> =>
      new Promise((resolve) => {
        const sock = net.connect({ host: '127.0.0.1', port }, () => {
          sock.destroy();
          resolve(true);
        });
        sock.once('error', () => resolve(false));
      });
    await waitUntil('redis-server', listening);
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const route = { ...routeTo('agent-b'), redis: { keyPrefix: prefix, url, autoStart: false } };
    const a = await nodeA(prefix, route);
    const b = await nodeB(prefix, route);
    const agent = await agentOn(b.wsUrl, 'agent-b');
    const store = a.gw.store!;
    await waitUntil('agent-b on node B', () => agentOnNode(store, 'agent-b', 'node-b'));
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '7000' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    // Redis dies for 2 s (longer than the 1.5 s node TTL) and comes back empty
    redis.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 2000));
    redis = startRedis();
    await waitUntil('both nodes and the call written again', async () => {
      try {
        const nodes = (await store.liveNodes()).map((n) => n.id).sort();

        return nodes.join() === 'node-a,node-b' && (await store.getCall(incoming.call.id)).state === 'active';
      } catch {
        return false;
      }
    }, 8000);
    // the call went on: audio still flows, and it ends when the trunk hangs up, not before
    const before = (await agent.packetCounts(call.id)).received;
    await new Promise((r) => setTimeout(r, 500));
    expect((await agent.packetCounts(call.id)).received).toBeGreaterThan(before);
    const ended = await agent.waitForEvent('ended', undefined, 15_000);
    expect(ended).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
  }, 60_000);

  it('a node reaped after a stall longer than the node TTL writes its agents again and takes calls', async () => {
    const prefix = `rbtest:cluster:${process.pid}:${Date.now()}:`;
    const a = await nodeA(prefix, routeTo('agent-b'));
    const b = await nodeB(prefix, routeTo('agent-b'));
    const agent = await agentOn(b.wsUrl, 'agent-b');
    const store = a.gw.store!;
    const onB = (): Promise<boolean> => agentOnNode(store, 'agent-b', 'node-b');
    await waitUntil('agent-b on node B', onB);
    b.proc.child.kill('SIGSTOP');
    await waitUntil('node A to reap node B', async () => !(await store.liveNodes()).some((n) => n.id === 'node-b') && !(await onB()), 8000);
    b.proc.child.kill('SIGCONT');
    await waitUntil('node B to write its agent again', onB, 8000);
    await b.proc.waitForLog(/registry entry was gone/, 1000);
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: a.sipTarget, keys: { hold_ms: '500' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('ended', undefined, 15_000);
    expect((await trunk.result).exitCode).toBe(0);
  }, 60_000);
});
