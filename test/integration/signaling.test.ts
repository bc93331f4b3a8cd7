/**
 * The agent WebSocket at /ws against a raw client (the `ws` package): envelope and version checks,
 * JWT authentication with HS256, RS256 and ES256 (exp, nbf, claim), heartbeats, rate limits,
 * presence, and typed errors. Plus trunk admission (allow-list, digest) with sipp.
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { agentToken, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, runSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;
const sockets: WebSocket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) {
    s.terminate();
  }
  await fx?.close();
  fx = undefined;
});

/** A raw protocol client: send frames, await the response with an id, collect events and the close. */
async function raw(url: string): Promise<{ ws: WebSocket; request(type: string, data?: unknown, id?: string): Promise<Record<string, unknown>>; sendRaw(text: string): void; next(): Promise<Record<string, unknown>>; closed: Promise<number> }> {
  const ws = new WebSocket(url);
  sockets.push(ws);
  const frames: Record<string, unknown>[] = [];
  const waiters: ((f: Record<string, unknown>) => void)[] = [];
  ws.on('message', (d) => {
    const f = JSON.parse((d as Buffer).toString('utf8')) as Record<string, unknown>;
    const w = waiters.shift();
    if (w) {
      w(f);
    } else {
      frames.push(f);
    }
  });
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const next = () => {
    const f = frames.shift();

    return f ? Promise.resolve(f) : new Promise<Record<string, unknown>>((resolve) => waiters.push(resolve));
  };
  let n = 0;

  return {
    ws,
    next,
    closed,
    sendRaw: (text) => ws.send(text),
    async request(type, data = {}, id = `r${++n}`) {
      ws.send(JSON.stringify({ v: 1, id, type, data }));
      for (;;) {
        const f = await next();
        if (f.id === id) {
          return f;
        }
      }
    },
  };
}

const routeAll = { routing: { dids: [{ number: '*', agent: 'agent-1' }], groups: [], defaultTrunk: '' } };

describe('agent signaling', () => {
  it('authenticates an HS256 token and reports session, presence and heartbeat settings', async () => {
    fx = await startCallGateway();
    const c = await raw(fx.wsUrl);
    const r = await c.request('auth', { token: await agentToken('agent-7') });
    expect(r).toMatchObject({ ok: true, data: { agentId: 'agent-7', resumed: false, heartbeatIntervalMs: 5000, presence: { status: 'available', effective: 'available' }, calls: [] } });
    expect((r.data as { sessionId: string }).sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(await c.request('ping')).toMatchObject({ ok: true });
    expect(await c.request('presence.set', { status: 'away' })).toMatchObject({ ok: true, data: { status: 'away', effective: 'away' } });
    const stored = await fx.gw.redis!.client.hgetall(`${fx.gw.config.redis.keyPrefix}agent:{agent-7}`);
    expect(stored).toMatchObject({ status: 'away', effective: 'away' });
  });

  for (const alg of ['RS256', 'ES256'] as const) {
    it(`authenticates an ${alg} token with a configured public key`, async () => {
      const { publicKey, privateKey } = alg === 'RS256' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rb-jwt-')), 'pub.pem');
      fs.writeFileSync(file, publicKey.export({ type: 'spki', format: 'pem' }));
      fx = await startCallGateway({ signaling: { auth: { publicKeyFiles: [file], issuer: 'https://login.test/', audience: 'ringbridge' } } });
      const sign = (claims: { iss?: string; aud?: string }) =>
        new SignJWT({}).setProtectedHeader({ alg }).setSubject('agent-9').setIssuedAt().setExpirationTime('5m').setIssuer(claims.iss ?? 'https://login.test/').setAudience(claims.aud ?? 'ringbridge').sign(privateKey);
      const ok = await raw(fx.wsUrl);
      expect(await ok.request('auth', { token: await sign({}) })).toMatchObject({ ok: true, data: { agentId: 'agent-9' } });
      const wrongAud = await raw(fx.wsUrl);
      expect(await wrongAud.request('auth', { token: await sign({ aud: 'other' }) })).toMatchObject({ ok: false, error: { code: 'AUTH_FAILED' } });
      expect(await wrongAud.closed).toBe(4403);
    });
  }

  it('refuses expired and not-yet-valid tokens with TOKEN_EXPIRED, and a bad signature with AUTH_FAILED', async () => {
    fx = await startCallGateway();
    const expired = await raw(fx.wsUrl);
    expect(await expired.request('auth', { token: await agentToken('a', { expiresInS: -60 }) })).toMatchObject({ ok: false, error: { code: 'TOKEN_EXPIRED' } });
    const early = await raw(fx.wsUrl);
    expect(await early.request('auth', { token: await agentToken('a', { notBeforeS: 600 }) })).toMatchObject({ ok: false, error: { code: 'TOKEN_EXPIRED' } });
    const forged = await raw(fx.wsUrl);
    expect(await forged.request('auth', { token: await agentToken('a', { secret: 'another-secret-of-at-least-32-bytes!!' }) })).toMatchObject({ ok: false, error: { code: 'AUTH_FAILED' } });
  });

  it('answers malformed frames with BAD_REQUEST and keeps the connection; refuses requests before auth and other versions', async () => {
    fx = await startCallGateway();
    const c = await raw(fx.wsUrl);
    c.sendRaw('not json');
    expect(await c.next()).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
    c.sendRaw(JSON.stringify({ v: 1, id: 'x', type: 'auth', data: { token: 'short' } }));
    expect(await c.next()).toMatchObject({ id: 'x', ok: false, error: { code: 'BAD_REQUEST', message: expect.stringContaining('token') } });
    expect(await c.request('auth', { token: await agentToken('agent-1') })).toMatchObject({ ok: true });
    expect(await c.request('call.answer', { callId: 'nope' })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } });
    expect(await c.request('call.dial', { to: 'not a number' })).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
    expect(await c.request('no.such.request')).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } });
    const unauth = await raw(fx.wsUrl);
    expect(await unauth.request('presence.set', { status: 'busy' })).toMatchObject({ ok: false, error: { code: 'UNAUTHENTICATED' } });
    expect(await unauth.closed).toBe(4401);
    const v2 = await raw(fx.wsUrl);
    v2.sendRaw(JSON.stringify({ v: 2, id: 'v', type: 'auth', data: {} }));
    expect(await v2.next()).toMatchObject({ ok: false, error: { code: 'UNSUPPORTED_VERSION' } });
    expect(await v2.closed).toBe(4426);
  });

  it('rate-limits a session that floods requests', async () => {
    fx = await startCallGateway({ signaling: { maxRequestsPerSecond: 5 } });
    const c = await raw(fx.wsUrl);
    await c.request('auth', { token: await agentToken('agent-1') });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => c.request('ping', {}, `p${i}`)));
    expect(results.filter((r) => r.ok === false && (r.error as { code: string }).code === 'RATE_LIMITED').length).toBeGreaterThan(10);
  });

  it('drops a session that stops sending heartbeats and makes it offline after the grace period', async () => {
    fx = await startCallGateway({ signaling: { heartbeatIntervalMs: 300, resumeGraceMs: 300 } });
    const c = await raw(fx.wsUrl);
    await c.request('auth', { token: await agentToken('agent-1') });
    // stop answering the server's pings: pause the socket so nothing is read or written
    (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    await expect.poll(() => fx!.gw.signaling!.sessionsOf('agent-1').length, { timeout: 5000 }).toBe(0);
    expect(fx.gw.calls!.presence.effective('agent-1')).toBe('offline');
  });
});

describe('trunk admission', () => {
  it('answers 403 to a source that no trunk allows', async () => {
    fx = await startCallGateway({
      ...routeAll,
      trunks: [{ id: 'far', inbound: { allow: ['192.0.2.0/24'], auth: { username: '', password: '', realm: 'x' } }, outbound: { uri: '', proxy: '', auth: { username: '', password: '' }, callerId: '' }, codecs: ['PCMA'], media: { latching: false } }],
    });
    const r = await runSipp({ scenario: 'trunk-in-expect-403', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(403, 'INVITE')).toHaveLength(1);
  });

  it('challenges a trunk with digest credentials and admits the authenticated retry', async () => {
    fx = await startCallGateway({
      ...routeAll,
      trunks: [{ id: 'pbx', inbound: { allow: [], auth: { username: 'pbx', password: 'pbx-secret', realm: 'ringbridge.test' } }, outbound: { uri: '', proxy: '', auth: { username: '', password: '' }, callerId: '' }, codecs: ['PCMA', 'PCMU'], media: { latching: false } }],
    });
    await fx.agent('agent-1', { autoAnswer: true });
    const r = await runSipp({ scenario: 'uac-invite-auth', target: fx.sipTarget, auth: { username: 'pbx', password: 'pbx-secret' }, keys: { hold_ms: '300' }, extraArgs: ['-mp', String(await freePort())] });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(401, 'INVITE')).toHaveLength(1);
    const bad = await runSipp({ scenario: 'uac-invite-auth', target: fx.sipTarget, auth: { username: 'pbx', password: 'wrong' }, keys: { hold_ms: '300' }, extraArgs: ['-mp', String(await freePort())] });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.received(403, 'INVITE')).toHaveLength(1);
  }, 30_000);
});
