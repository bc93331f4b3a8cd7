/**
 * The defences end to end (src/security, README "Security"), with real parts: sipp as scanner,
 * flooder and password guesser; two gateways on one Redis for the shared limits and for
 * revocation; the Node client SDK and raw WebSocket clients for sign-ins and dials.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { type ConfigTree } from '../../src/config/load.js';
import { agentToken, type CallFixture, startCallGateway, TEST_JWT_SECRET } from '../helpers/calls.js';
import { freePort, runSipp, type SippOptions, type SippResult, SippTimeoutError, sipHeader, startSipp } from '../helpers/sipp.js';

const fixtures: CallFixture[] = [];
const sockets: WebSocket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) {
    s.terminate();
  }
  for (const f of fixtures.splice(0).reverse()) {
    await f.close();
  }
});

async function gateway(overrides: ConfigTree): Promise<CallFixture> {
  const fx = await startCallGateway(overrides);
  fixtures.push(fx);

  return fx;
}

const routeAll = { routing: { dids: [{ number: '*', agent: 'agent-1' }], groups: [], defaultTrunk: '' } };

/** The test profile's trunk, with changes. */
function trunk(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'loopback',
    inbound: { allow: ['127.0.0.0/8', '::1/128'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
    outbound: { uri: '', proxy: '', auth: { username: '', password: '' }, callerId: '' },
    codecs: ['PCMA', 'PCMU'],
    media: { latching: false },
    ...extra,
  };
}

/** A sipp run that may end on its deadline (no answer at all): its result either way. */
async function sippUntilDeadline(opts: SippOptions): Promise<SippResult> {
  try {
    return await runSipp(opts);
  } catch (err) {
    if (err instanceof SippTimeoutError) {
      return err.result;
    }
    throw err;
  }
}

/** The value of one rejections series in the gateway's /metrics. */
async function rejections(fx: CallFixture, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
  const m = new RegExp(`^ringbridge_security_rejections_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);

  return m ? Number(m[1]) : NaN;
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A raw WebSocket client: sign in and collect the frames and the close. */
async function signIn(url: string, token: string): Promise<{ reply: Record<string, unknown>; frames: Record<string, unknown>[]; closed: Promise<number>; ws: WebSocket }> {
  const ws = new WebSocket(url);
  sockets.push(ws);
  const frames: Record<string, unknown>[] = [];
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  let first: (f: Record<string, unknown>) => void = () => undefined;
  const reply = new Promise<Record<string, unknown>>((resolve) => (first = resolve));
  ws.on('message', (d) => {
    const f = JSON.parse((d as Buffer).toString('utf8')) as Record<string, unknown>;
    frames.push(f);
    if (f.id === 'a1') {
      first(f);
    }
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ v: 1, id: 'a1', type: 'auth', data: { token } }));

  return { reply: await reply, frames, closed, ws };
}

describe('SIP screen: scanners and unknown sources', () => {
  it("drops a scanner's INVITE without any answer (its retransmissions too) and counts it; an ordinary INVITE is served", async () => {
    const fx = await gateway(routeAll);
    const r = await sippUntilDeadline({ scenario: 'trunk-in-expect-403', target: fx.sipTarget, keys: { ua: 'friendly-scanner' }, timeoutMs: 5000 });
    expect(r.log.filter((m) => m.direction === 'received'), r.describe()).toEqual([]);
    expect(r.sent('INVITE').length, 'sipp retransmitted an unanswered INVITE').toBeGreaterThan(1);
    expect(await rejections(fx, 'scanner')).toBeGreaterThanOrEqual(1);
    // the same trunk with its own User-Agent: answered (480, nobody online)
    const ok = await runSipp({ scenario: 'uac-expect-480', target: fx.sipTarget });
    expect(ok.exitCode, ok.describe()).toBe(0);
  });

  it('answers a scanner 403 when security.scanners.action is 403', async () => {
    const fx = await gateway({ ...routeAll, security: { scanners: { action: '403' } } });
    const r = await runSipp({ scenario: 'trunk-in-expect-403', target: fx.sipTarget, keys: { ua: 'SIPVicious 0.3.4' } });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(100)).toEqual([]); // refused before the engine's 100 Trying
  });

  it('drops requests from an unknown source when security.unknownSources.action is drop, and answers 403 by default', async () => {
    const other = [trunk({ inbound: { allow: ['203.0.113.0/24'], auth: { username: '', password: '', realm: '' } } })];
    const dropping = await gateway({ ...routeAll, trunks: other, security: { unknownSources: { action: 'drop' } } });
    const r = await sippUntilDeadline({ scenario: 'trunk-in-expect-403', target: dropping.sipTarget, timeoutMs: 5000 });
    expect(r.log.filter((m) => m.direction === 'received'), r.describe()).toEqual([]);
    expect(await rejections(dropping, 'unknown_source')).toBeGreaterThanOrEqual(1);
    const answering = await gateway({ ...routeAll, trunks: other });
    const a = await runSipp({ scenario: 'trunk-in-expect-403', target: answering.sipTarget });
    expect(a.exitCode, a.describe()).toBe(0);
  });
});

describe('rate limits shared through Redis', () => {
  it('counts a source address across two gateways on one Redis: over the limit is 503 with Retry-After on either', async () => {
    const keyPrefix = `rbtest:${randomBytes(4).toString('hex')}:`;
    const cfg = { ...routeAll, redis: { keyPrefix }, security: { rateLimits: { perSource: { requests: 3, windowMs: 60_000 } } } };
    const a = await gateway(cfg);
    const b = await gateway(cfg);
    const first = await runSipp({ scenario: 'uac-expect-480', target: a.sipTarget, calls: 2 });
    expect(first.successfulCalls, first.describe()).toBe(2);
    const third = await runSipp({ scenario: 'uac-expect-480', target: b.sipTarget });
    expect(third.exitCode, third.describe()).toBe(0);
    for (const fx of [b, a]) {
      const over = await runSipp({ scenario: 'uac-expect-503', target: fx.sipTarget });
      expect(over.exitCode, over.describe()).toBe(0);
      const retryAfter = Number(sipHeader(over.received(503)[0]!, 'Retry-After'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(await rejections(fx, 'source_rate')).toBe(1);
    }
    // one counter for both nodes, which expires with its window
    const redis = a.gw.redis!.client;
    expect(await redis.get(`${keyPrefix}rl:{src:127.0.0.1}`)).toBe('5');
    const ttl = await redis.pttl(`${keyPrefix}rl:{src:127.0.0.1}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("limits a trunk's INVITEs per window", async () => {
    const fx = await gateway({ ...routeAll, security: { rateLimits: { perTrunk: { invites: 1, windowMs: 60_000 } } } });
    const ok = await runSipp({ scenario: 'uac-expect-480', target: fx.sipTarget });
    expect(ok.exitCode, ok.describe()).toBe(0);
    const over = await runSipp({ scenario: 'uac-expect-503', target: fx.sipTarget });
    expect(over.exitCode, over.describe()).toBe(0);
    expect(await rejections(fx, 'trunk_rate')).toBe(1);
  });
});

describe('lockout after failed authentication', () => {
  it('locks a source after repeated digest failures: even the right credentials then get 403', async () => {
    const digest = trunk({ id: 'digest', inbound: { allow: [], auth: { username: 'trunk-user', password: 'right-pass', realm: 'ringbridge.test' } } });
    const fx = await gateway({ ...routeAll, trunks: [digest], security: { lockout: { maxFailures: 2, windowMs: 60_000, lockMs: 60_000 } } });
    // the right credentials are admitted (then 480: nobody online)
    const right = await sippUntilDeadline({ scenario: 'uac-invite-auth', target: fx.sipTarget, auth: { username: 'trunk-user', password: 'right-pass' }, timeoutMs: 10_000 });
    expect(right.received(401).length, right.describe()).toBe(1);
    expect(right.received(480).length, right.describe()).toBeGreaterThan(0);
    for (let i = 0; i < 2; i++) {
      const wrong = await sippUntilDeadline({ scenario: 'uac-invite-auth', target: fx.sipTarget, auth: { username: 'trunk-user', password: 'guess' }, timeoutMs: 10_000 });
      expect(wrong.received(403).length, wrong.describe()).toBeGreaterThan(0);
    }
    const locked = await sippUntilDeadline({ scenario: 'uac-invite-auth', target: fx.sipTarget, auth: { username: 'trunk-user', password: 'right-pass' }, timeoutMs: 10_000 });
    expect(locked.received(401), locked.describe()).toEqual([]);
    expect(locked.received(403).length, locked.describe()).toBeGreaterThan(0);
    expect(await rejections(fx, 'sip_locked')).toBeGreaterThanOrEqual(1);
    const pttl = await fx.gw.redis!.client.pttl(`${fx.gw.config.redis.keyPrefix}lock:{sip:127.0.0.1}`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
  });

  it('locks an address after repeated failed sign-ins: a valid token then gets AUTH_LOCKED and close 4429', async () => {
    const fx = await gateway({ security: { lockout: { maxFailures: 2, windowMs: 60_000, lockMs: 60_000 } } });
    // expired tokens are an honest client's stale token: they do not count
    const stale = await signIn(fx.wsUrl, await agentToken('agent-1', { expiresInS: -60 }));
    expect(stale.reply).toMatchObject({ ok: false, error: { code: 'TOKEN_EXPIRED' } });
    for (let i = 0; i < 2; i++) {
      const forged = await signIn(fx.wsUrl, await agentToken('agent-1', { secret: 'a-guessed-secret-that-is-long-enough-0123' }));
      expect(forged.reply).toMatchObject({ ok: false, error: { code: 'AUTH_FAILED' } });
      expect(await forged.closed).toBe(4403);
    }
    const valid = await signIn(fx.wsUrl, await agentToken('agent-1'));
    expect(valid.reply).toMatchObject({ ok: false, error: { code: 'AUTH_LOCKED' } });
    expect(await valid.closed).toBe(4429);
    expect(await rejections(fx, 'ws_locked')).toBe(1);
  });
});

describe('concurrent-call caps', () => {
  it("refuses an INVITE with 503 while the trunk has its maxConcurrentCalls, and frees the slot when the call ends", async () => {
    const fx = await gateway({ ...routeAll, trunks: [trunk({ maxConcurrentCalls: 1 })] });
    await fx.agent('agent-1');
    const ringing = startSipp({ scenario: 'uac-expect-480', target: fx.sipTarget, timeoutMs: 30_000 });
    await until('the first call ringing', () => fx.gw.calls!.calls.length === 1);
    expect(await fx.gw.store!.trunkCallCount('loopback')).toBe(1);
    const over = await runSipp({ scenario: 'uac-expect-503', target: fx.sipTarget });
    expect(over.exitCode, over.describe()).toBe(0);
    expect(sipHeader(over.received(503)[0]!, 'Warning')).toMatch(/too many calls on this trunk/);
    const first = await ringing.result; // rings out: 480
    expect(first.exitCode, first.describe()).toBe(0);
    await until('the slot freed', async () => (await fx.gw.store!.trunkCallCount('loopback')) === 0);
    expect(await rejections(fx, 'trunk_cap')).toBe(1);
  });

  it("frees a dead node's slots when the reaper reaps it", async () => {
    const fx = await gateway({ trunks: [trunk({ maxConcurrentCalls: 1 })] });
    const store = fx.gw.store!;
    const redis = fx.gw.redis!.client;
    // a node that admitted a call and died before storing it anywhere else
    await redis.hset(store.key('trunk', 'loopback', 'calls'), 'c-of-dead-node', 'dead-node');
    await redis.zadd(store.key('nodes'), Date.now() - 60_000, 'dead-node');
    expect(await store.admitTrunkCall('loopback', 'c-new', 1)).toBe(false);
    expect(await store.reapNode('dead-node', 'node_failure')).toMatchObject({ calls: 0 });
    expect(await store.trunkCallCount('loopback')).toBe(0);
    expect(await store.admitTrunkCall('loopback', 'c-new', 1)).toBe(true);
    await store.releaseTrunkCall('loopback', 'c-new');
  });
});

describe('per-agent call cap across nodes', () => {
  it("refuses an agent's dial on one node (CALL_LIMIT) while it is on a call on another, and allows it once that call ends", async () => {
    const keyPrefix = `rbtest:${randomBytes(4).toString('hex')}:`;
    const port = await freePort();
    const cfg = {
      redis: { keyPrefix },
      cluster: { secret: 'security-test-cluster-secret-0123456789ab', heartbeatIntervalMs: 300, nodeTtlMs: 1500 },
      trunks: [trunk({ outbound: { uri: `sip:127.0.0.1:${port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' } })],
    };
    const a = await gateway({ ...cfg, node: { id: 'sec-node-a' } });
    const b = await gateway({ ...cfg, node: { id: 'sec-node-b' }, media: { relayMinPort: 36000, relayMaxPort: 36999 } });
    const onA = await a.agent('agent-1');
    const onB = await b.agent('agent-1');
    // a call on node A (to a port where nothing answers: it stays dialing)
    const call = await onA.client.dial('+4930123456');
    await until('node B sees the agent on a call on node A', async () => {
      const view = (await b.gw.store!.agentHash('agent-1'))['n:sec-node-a'];

      return view !== undefined && (JSON.parse(view) as { a: string }).a === 'on_call' && b.gw.registry!.isLive('sec-node-a');
    });
    await expect(onB.client.dial('+4930123457')).rejects.toMatchObject({ code: 'CALL_LIMIT' });
    expect(await rejections(b, 'agent_cap')).toBe(1);
    await onA.client.hangup(call.id);
    await until('node A reports the agent idle', async () => {
      const view = (await b.gw.store!.agentHash('agent-1'))['n:sec-node-a'];

      return view === undefined || (JSON.parse(view) as { a: string }).a !== 'on_call';
    });
    const second = await onB.client.dial('+4930123457');
    await onB.client.hangup(second.id);
  });
});

describe('outbound dialling policy', () => {
  it('refuses numbers the policy does not allow (DIAL_POLICY) and more dials per minute than allowed (RATE_LIMITED)', async () => {
    const port = await freePort();
    const fx = await gateway({
      trunks: [trunk({ outbound: { uri: `sip:127.0.0.1:${port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' } })],
      security: { dialPolicy: { deniedPrefixes: ['+1900'], international: false, homeCountryCode: '49', callsPerMinute: 1 } },
    });
    const agent = await fx.agent('agent-1');
    await expect(agent.client.dial('+19005550123')).rejects.toMatchObject({ code: 'DIAL_POLICY' });
    await expect(agent.client.dial('+442071234567')).rejects.toMatchObject({ code: 'DIAL_POLICY', message: expect.stringContaining('international') });
    expect(await rejections(fx, 'dial_policy')).toBe(2);
    // an allowed number goes out (to a port where nothing answers); hang it up
    const call = await agent.client.dial('+4930123456');
    await agent.client.hangup(call.id);
    await until('the call ended', () => fx.gw.calls!.calls.length === 0);
    await expect(agent.client.dial('+4930123457')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    expect(await rejections(fx, 'dial_rate')).toBe(1);
  });
});

describe('JWT revocation', () => {
  it('revoked through one node: a live session on the other node closes, and the token cannot sign in again anywhere', async () => {
    const keyPrefix = `rbtest:${randomBytes(4).toString('hex')}:`;
    const adminToken = 'admin-token-for-the-revocation-test-0123456789';
    const a = await gateway({ redis: { keyPrefix }, admin: { token: adminToken } });
    const b = await gateway({ redis: { keyPrefix } });
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('agent-1').setJti('jti-revoke-me').setIssuedAt(now).setExpirationTime(now + 600).sign(Buffer.from(TEST_JWT_SECRET));
    const live = await signIn(b.wsUrl, token);
    expect(live.reply).toMatchObject({ ok: true });
    const bystander = await signIn(b.wsUrl, await agentToken('agent-2'));
    expect(bystander.reply).toMatchObject({ ok: true });
    const post = (body: unknown) => fetch(`http://127.0.0.1:${a.gw.httpAddress.port}/admin/revocations`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post({ jti: '' })).status).toBe(400);
    expect((await post({ jti: 'x', expiresAt: '2001-01-01T00:00:00Z' })).status).toBe(400);
    const res = await post({ jti: 'jti-revoke-me', expiresAt: now + 600 });
    expect(res.status).toBe(201);
    expect(await live.closed).toBe(4403);
    expect(live.frames.at(-1)).toMatchObject({ ok: false, error: { code: 'AUTH_REVOKED' } });
    await until('the session ended on node b', () => b.gw.signaling!.sessionsOf('agent-1').length === 0);
    for (const fx of [a, b]) {
      const again = await signIn(fx.wsUrl, token);
      expect(again.reply).toMatchObject({ ok: false, error: { code: 'AUTH_REVOKED' } });
      expect(await again.closed).toBe(4403);
    }
    // other tokens and sessions are untouched
    expect(bystander.ws.readyState).toBe(WebSocket.OPEN);
    expect((await signIn(a.wsUrl, await agentToken('agent-1'))).reply).toMatchObject({ ok: true });
    const ttl = await a.gw.redis!.client.ttl(`${keyPrefix}revoked:{jti-revoke-me}`);
    expect(ttl).toBeGreaterThan(500);
    expect(ttl).toBeLessThanOrEqual(600);
  });
});
