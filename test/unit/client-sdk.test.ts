/**
 * The client SDK's protocol behaviour against a tiny scripted WebSocket server (a real `ws`
 * server on loopback that answers requests with canned responses): request/response correlation,
 * typed errors, timeouts, event dispatch, heartbeat, reconnect-and-resume and close. Media is
 * not exercised here (test/integration/client-sdk.test.ts does it with a real mediasoup worker).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocket, WebSocketServer, type WebSocket as ServerSocket } from 'ws';
import {
  RingbridgeClient,
  RingbridgeError,
  isRingbridgeError,
  type AudioTrack,
  type RingbridgeClientEvents,
  type RingbridgeClientOptions,
} from '../../src/client/index.js';
import type { CallInfo } from '../../src/signaling/protocol.js';

const TOKEN = 'token-0123456789';

type Reply = { data: unknown } | { error: { code: string; message: string } } | 'silent';
type Handler = (data: Record<string, unknown>, conn: number, id: string) => Reply | Promise<Reply>;

interface Received {
  conn: number;
  id: string;
  type: string;
  data: Record<string, unknown>;
}

/** A scripted gateway: canned responses per request type, events on demand, sockets to kill. */
class FakeServer {
  readonly wss: WebSocketServer;
  readonly sockets: ServerSocket[] = [];
  readonly received: Received[] = [];
  readonly closes: { conn: number; code: number }[] = [];
  readonly handlers: Record<string, Handler> = {};
  heartbeatIntervalMs = 5000;
  resumeGraceMs = 5000;
  /** Calls listed in the auth response. */
  calls: CallInfo[] = [];
  /** Whether a resume with the right sessionId/resumeToken is accepted. */
  acceptResume = true;
  session = { sessionId: '', resumeToken: '' };
  #sessions = 0;
  #waiters: (() => void)[] = [];

  private constructor() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    this.wss.on('connection', (ws) => {
      const conn = this.sockets.push(ws) - 1;
      ws.on('close', (code) => this.closes.push({ conn, code }));
      ws.on('message', (raw: Buffer) => {
        const frame = JSON.parse(raw.toString()) as { v: number; id: string; type: string; data: Record<string, unknown> };
        this.received.push({ conn, id: frame.id, type: frame.type, data: frame.data });
        for (const w of this.#waiters.splice(0)) {
          w();
        }
        void Promise.resolve((this.handlers[frame.type] ?? ((d: Record<string, unknown>) => this.#default(frame.type, d)))(frame.data, conn, frame.id)).then((reply) => {
          if (reply === 'silent' || ws.readyState !== ws.OPEN) {
            return;
          }
          ws.send(JSON.stringify('data' in reply ? { v: 1, id: frame.id, type: 'response', ok: true, data: reply.data } : { v: 1, id: frame.id, type: 'response', ok: false, error: reply.error }));
        });
      });
    });
  }

  static async start(): Promise<FakeServer> {
    const s = new FakeServer();
    await new Promise((r) => s.wss.once('listening', r));

    return s;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as { port: number }).port}/ws`;
  }

  #default(type: string, data: Record<string, unknown>): Reply {
    switch (type) {
      case 'auth': {
        const resume = data.resume as { sessionId: string; resumeToken: string } | undefined;
        const resumed = !!resume && this.acceptResume && resume.sessionId === this.session.sessionId && resume.resumeToken === this.session.resumeToken;
        this.#sessions++;
        this.session = { sessionId: resumed ? this.session.sessionId : `sess-${this.#sessions}`, resumeToken: `resume-${this.#sessions}` };

        return {
          data: {
            ...this.session,
            agentId: 'agent-1',
            resumed,
            heartbeatIntervalMs: this.heartbeatIntervalMs,
            resumeGraceMs: this.resumeGraceMs,
            presence: { status: 'available', effective: 'available' },
            calls: this.calls,
          },
        };
      }
      case 'ping':
        return { data: { now: new Date().toISOString() } };
      case 'calls.list':
        return { data: { calls: this.calls } };
      case 'presence.set':
        return { data: { status: data.status, effective: data.status } };
      case 'call.mute':
        return { data: { muted: data.muted } };
      case 'call.dtmf':
        return { data: { digits: data.digits } };
      case 'call.hangup':
      case 'call.hold':
      case 'call.resume':
      case 'call.decline':
        return { data: {} };
      default:
        return { error: { code: 'BAD_REQUEST', message: `not scripted: ${type}` } };
    }
  }

  /** Sends an event on the newest connection. */
  event(type: string, data: unknown): void {
    this.sockets.at(-1)!.send(JSON.stringify({ v: 1, type, data }));
  }

  /** Requests of a type, in order. */
  requests(type: string): Received[] {
    return this.received.filter((r) => r.type === type);
  }

  /** Resolves when a request of `type` (matching `pred`) has been received. */
  async waitForRequest(type: string, pred: (r: Received) => boolean = () => true, timeoutMs = 3000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find((r) => r.type === type && pred(r));
      if (found) {
        return found;
      }
      if (Date.now() > deadline) {
        throw new Error(`no ${type} request within ${timeoutMs} ms; got ${this.received.map((r) => r.type).join(', ')}`);
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) {
      ws.terminate();
    }
    await new Promise<void>((r) => this.wss.close(() => r()));
  }
}

/** Records a client's events; `next()` resolves with the first unconsumed matching one. */
function record(client: RingbridgeClient) {
  const names: (keyof RingbridgeClientEvents)[] = ['incoming', 'cancelled', 'progress', 'answered', 'held', 'resumed', 'dtmf', 'track', 'ended', 'presence', 'connectionstatechange', 'error'];
  const events: { name: keyof RingbridgeClientEvents; arg: unknown; taken?: boolean }[] = [];
  for (const name of names) {
    client.on(name, (arg: unknown) => events.push({ name, arg }));
  }

  return {
    events,
    of<K extends keyof RingbridgeClientEvents>(name: K): RingbridgeClientEvents[K][0][] {
      return events.filter((e) => e.name === name).map((e) => e.arg as RingbridgeClientEvents[K][0]);
    },
    async next<K extends keyof RingbridgeClientEvents>(name: K, pred: (a: RingbridgeClientEvents[K][0]) => boolean = () => true, timeoutMs = 3000): Promise<RingbridgeClientEvents[K][0]> {
      await vi.waitFor(
        () => {
          if (!events.some((e) => !e.taken && e.name === name && pred(e.arg as RingbridgeClientEvents[K][0]))) {
            throw new Error(`no '${name}' event yet; got ${events.map((e) => e.name).join(', ')}`);
          }
        },
        { timeout: timeoutMs, interval: 10 },
      );
      const e = events.find((x) => !x.taken && x.name === name && pred(x.arg as RingbridgeClientEvents[K][0]))!;
      e.taken = true;

      return e.arg as RingbridgeClientEvents[K][0];
    },
  };
}

function callInfo(callId: string, over: Partial<CallInfo> = {}): CallInfo {
  return {
    callId,
    direction: 'inbound',
    state: 'ringing',
    from: { number: '+15550100', name: 'Caller' },
    to: { number: '+15550199' },
    trunkId: 'loopback',
    startedAt: '2026-01-01T00:00:00.000Z',
    ...over,
  };
}

describe('RingbridgeClient against a scripted WebSocket server', () => {
  let server: FakeServer;
  const clients: RingbridgeClient[] = [];

  function newClient(over: Partial<RingbridgeClientOptions> = {}): RingbridgeClient {
    const c = new RingbridgeClient({ url: server.url, token: TOKEN, WebSocket, requestTimeoutMs: 1000, reconnect: { initialDelayMs: 20, maxDelayMs: 100, jitter: 0 }, ...over });
    clients.push(c);

    return c;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) {
      c.close();
    }
    await server?.close();
  });

  describe('construction and connect', () => {
    it('new RingbridgeClient() with wrong options throws TypeError naming the option', () => {
      const ok = { url: 'ws://127.0.0.1:1/ws', token: TOKEN, WebSocket };
      expect(() => new RingbridgeClient({ ...ok, url: 'http://x/ws' })).toThrow(/options\.url/);
      expect(() => new RingbridgeClient({ ...ok, token: '' })).toThrow(/options\.token/);
      expect(() => new RingbridgeClient({ ...ok, requestTimeoutMs: 0 })).toThrow(/requestTimeoutMs/);
      expect(() => new RingbridgeClient({ ...ok, reconnect: { factor: -1 } })).toThrow(/reconnect\.factor/);
      expect(() => new RingbridgeClient({ ...ok, webrtc: { RTCPeerConnection: 1, RTCSessionDescription: 1, RTCIceCandidate: 1, MediaStream: 1 } })).toThrow(TypeError);
      // Node 20 has no global WebSocket
      expect(() => new RingbridgeClient({ url: ok.url, token: TOKEN })).toThrow(/options\.WebSocket/);
    });

    it('connect() sends auth with a fresh token from the function and reports connecting → connected', async () => {
      server = await FakeServer.start();
      const token = vi.fn(() => Promise.resolve(TOKEN));
      const client = newClient({ token });
      const rec = record(client);
      const session = await client.connect();
      expect(session).toMatchObject({ sessionId: 'sess-1', resumeToken: 'resume-1', agentId: 'agent-1', resumed: false });
      expect(client.session).toBe(session);
      expect(client.presence).toEqual({ status: 'available', effective: 'available' });
      expect(token).toHaveBeenCalledTimes(1);
      const [auth] = server.requests('auth');
      expect(auth!.data).toEqual({ token: TOKEN });
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected']);
      expect(client.connectionState).toBe('connected');
      await expect(client.connect()).rejects.toMatchObject({ code: 'INVALID_STATE' });
    });

    it('connect() rejects with AUTH_FAILED and goes back to disconnected', async () => {
      server = await FakeServer.start();
      server.handlers.auth = () => ({ error: { code: 'AUTH_FAILED', message: 'bad signature' } });
      const client = newClient();
      const rec = record(client);
      const err = await client.connect().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RingbridgeError);
      expect(err).toMatchObject({ name: 'RingbridgeError', code: 'AUTH_FAILED', message: 'bad signature', request: 'auth' });
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'disconnected']);
      await vi.waitFor(() => expect(server.closes).toHaveLength(1));
    });

    it('connect() rejects with TIMEOUT when auth gets no response, and with CONNECTION_LOST when nothing listens', async () => {
      server = await FakeServer.start();
      server.handlers.auth = () => 'silent';
      const client = newClient({ requestTimeoutMs: 150 });
      await expect(client.connect()).rejects.toMatchObject({ code: 'TIMEOUT', message: 'no response to auth within 150 ms' });
      expect(client.connectionState).toBe('disconnected');

      const url = server.url;
      await server.close();
      const nobody = new RingbridgeClient({ url, token: TOKEN, WebSocket, reconnect: false });
      clients.push(nobody);
      await expect(nobody.connect()).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
    });

    it('connect() announces calls already ringing this agent with incoming', async () => {
      server = await FakeServer.start();
      server.calls = [callInfo('c-ring'), callInfo('c-active', { state: 'active', direction: 'outbound' })];
      const client = newClient();
      const rec = record(client);
      await client.connect();
      expect(rec.of('incoming').map((e) => e.call.id)).toEqual(['c-ring']);
      expect(client.calls.map((c) => [c.id, c.state])).toEqual([
        ['c-ring', 'ringing'],
        ['c-active', 'active'],
      ]);
    });
  });

  describe('requests', () => {
    it('responses are matched to requests by id, whatever their order', async () => {
      server = await FakeServer.start();
      server.handlers['presence.set'] = async (d) => {
        await new Promise((r) => setTimeout(r, 100));

        return { data: { status: d.status, effective: 'busy' } };
      };
      server.calls = [callInfo('c1', { state: 'active' })];
      const client = newClient();
      await client.connect();
      const order: string[] = [];
      const [presence, calls] = await Promise.all([
        client.setPresence('busy').then((p) => (order.push('presence.set'), p)),
        client.listCalls().then((c) => (order.push('calls.list'), c)),
      ]);
      expect(order).toEqual(['calls.list', 'presence.set']);
      expect(presence).toEqual({ status: 'busy', effective: 'busy' });
      expect(client.presence).toEqual({ status: 'busy', effective: 'busy' });
      expect(calls.map((c) => c.callId)).toEqual(['c1']);
      const ids = server.received.map((r) => r.id);
      expect(new Set(ids).size).toBe(ids.length);
      for (const r of server.received) {
        expect(r.id).toMatch(/^.{1,64}$/);
      }
    });

    it('an error response rejects with a RingbridgeError carrying code, message, request and callId', async () => {
      server = await FakeServer.start();
      server.handlers['call.hangup'] = () => ({ error: { code: 'NOT_FOUND', message: 'no such call for this agent' } });
      const client = newClient();
      await client.connect();
      const err = await client.hangup('c-x').catch((e: unknown) => e);
      expect(isRingbridgeError(err, 'NOT_FOUND')).toBe(true);
      expect(err).toMatchObject({ code: 'NOT_FOUND', message: 'no such call for this agent', request: 'call.hangup', callId: 'c-x' });
      expect(server.requests('call.hangup')[0]!.data).toEqual({ callId: 'c-x' });
    });

    it('a request with no response rejects with TIMEOUT; its late response is ignored and the session goes on', async () => {
      server = await FakeServer.start();
      let release: () => void = () => undefined;
      server.handlers['call.hold'] = () => new Promise<Reply>((r) => (release = () => r({ data: {} })));
      const client = newClient({ requestTimeoutMs: 150 });
      const rec = record(client);
      await client.connect();
      const started = Date.now();
      await expect(client.hold('c1')).rejects.toMatchObject({ code: 'TIMEOUT', request: 'call.hold', callId: 'c1' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
      release();
      expect(await client.setPresence('away')).toEqual({ status: 'away', effective: 'away' });
      expect(rec.of('error')).toEqual([]);
    });

    it('hold, resume, mute, sendDtmf and decline send the protocol requests', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.event('call.incoming', { ...callInfo('c1'), ringTimeoutMs: 5000 });
      await rec.next('incoming');
      await client.hold('c1');
      await client.resume('c1');
      await client.mute('c1', true);
      expect(client.call('c1')!.muted).toBe(true);
      await client.sendDtmf('c1', '12#');
      await client.sendDtmf('c1', '9', { durationMs: 200 });
      await client.decline('c1', 'busy');
      expect(server.received.filter((r) => r.type.startsWith('call.')).map((r) => [r.type, r.data])).toEqual([
        ['call.hold', { callId: 'c1' }],
        ['call.resume', { callId: 'c1' }],
        ['call.mute', { callId: 'c1', muted: true }],
        ['call.dtmf', { callId: 'c1', digits: '12#' }],
        ['call.dtmf', { callId: 'c1', digits: '9', durationMs: 200 }],
        ['call.decline', { callId: 'c1', reason: 'busy' }],
      ]);
      const ended = await rec.next('ended');
      expect(ended).toMatchObject({ reason: 'declined', by: 'local' });
      expect(client.call('c1')).toBeUndefined();
    });

    it('mute() refused by the gateway restores the local mute state and rejects', async () => {
      server = await FakeServer.start();
      server.handlers['call.mute'] = () => ({ error: { code: 'INVALID_STATE', message: 'not active' } });
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.event('call.incoming', { ...callInfo('c1'), ringTimeoutMs: 5000 });
      const { call } = await rec.next('incoming');
      await expect(client.mute('c1', true)).rejects.toMatchObject({ code: 'INVALID_STATE', callId: 'c1' });
      expect(call.muted).toBe(false);
    });
  });

  describe('events', () => {
    it('dispatches call and presence events as typed events; unknown events and calls are ignored', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.event('call.incoming', { ...callInfo('c1'), ringTimeoutMs: 4000 });
      const { call, ringTimeoutMs } = await rec.next('incoming');
      expect(ringTimeoutMs).toBe(4000);
      expect(call).toMatchObject({ id: 'c1', direction: 'inbound', state: 'ringing', trunkId: 'loopback', ringTimeoutMs: 4000, codec: undefined, remoteTrack: undefined });
      expect(call.remote).toEqual({ number: '+15550100', name: 'Caller' });
      expect(client.call('c1')).toBe(call);

      server.event('some.future.event', { x: 1 });
      server.event('call.dtmf', { callId: 'nope', digit: '1', durationMs: 100 });
      server.event('call.answered', { callId: 'c1' });
      await rec.next('answered');
      expect(call.state).toBe('active');
      expect(call.answeredAt).toBeDefined();
      server.event('call.held', { callId: 'c1', by: 'remote' });
      expect(await rec.next('held')).toEqual({ call, by: 'remote' });
      expect(call.state).toBe('held');
      server.event('call.resumed', { callId: 'c1', by: 'remote' });
      expect(await rec.next('resumed')).toEqual({ call, by: 'remote' });
      expect(call.state).toBe('active');
      server.event('call.dtmf', { callId: 'c1', digit: '5', durationMs: 120 });
      expect(await rec.next('dtmf')).toEqual({ call, digit: '5', durationMs: 120 });
      server.event('presence.changed', { status: 'available', effective: 'on_call' });
      expect(await rec.next('presence')).toEqual({ status: 'available', effective: 'on_call' });
      expect(client.presence?.effective).toBe('on_call');
      server.event('call.ended', { callId: 'c1', reason: 'hangup_remote', by: 'remote', sipStatus: 200 });
      expect(await rec.next('ended')).toEqual({ call, reason: 'hangup_remote', by: 'remote', sipStatus: 200 });
      expect(call.state).toBe('ended');
      expect(call.ending).toMatchObject({ reason: 'hangup_remote', by: 'remote', sipStatus: 200 });
      expect(client.call('c1')).toBeUndefined();
      server.event('call.ended', { callId: 'c1', reason: 'hangup_remote', by: 'remote' });
      await client.listCalls(); // a round trip: every event sent before it has been handled
      expect(rec.of('ended')).toHaveLength(1);
      expect(rec.of('dtmf')).toHaveLength(1);
      expect(rec.of('error')).toEqual([]);
    });

    it('call.cancelled emits cancelled, then ended once with the matching end reason', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      const cases = [
        ['caller_cancelled', 'cancelled', 'remote'],
        ['answered_elsewhere', 'answered_elsewhere', 'system'],
        ['ring_timeout', 'no_answer', 'system'],
      ] as const;
      for (const [reason, endReason, by] of cases) {
        const id = `c-${reason}`;
        server.event('call.incoming', { ...callInfo(id), ringTimeoutMs: 5000 });
        await rec.next('incoming', (e) => e.call.id === id);
        server.event('call.cancelled', { callId: id, reason });
        server.event('call.ended', { callId: id, reason: 'cancelled', by: 'remote' });
        expect(await rec.next('cancelled')).toMatchObject({ reason, call: { id } });
        expect(await rec.next('ended')).toMatchObject({ reason: endReason, by, call: { id, state: 'ended' } });
      }
      await client.listCalls();
      expect(rec.of('ended')).toHaveLength(3);
      expect(rec.events.filter((e) => e.name === 'cancelled' || e.name === 'ended').map((e) => e.name)).toEqual(['cancelled', 'ended', 'cancelled', 'ended', 'cancelled', 'ended']);
    });

    it("a throwing listener is reported as 'error' LISTENER_ERROR and the other listeners still run", async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      const second = vi.fn();
      client.on('presence', () => {
        throw new Error('boom');
      });
      client.on('presence', second);
      await client.connect();
      server.event('presence.changed', { status: 'away', effective: 'away' });
      const err = await rec.next('error');
      expect(err).toMatchObject({ code: 'LISTENER_ERROR', message: "a 'presence' listener threw: boom" });
      expect(second).toHaveBeenCalledTimes(1);
    });

    it('an unreadable frame is reported as PROTOCOL_ERROR and the connection goes on', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.sockets[0]!.send('{not json');
      expect(await rec.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR' });
      expect(await client.listCalls()).toEqual([]);
    });
  });

  describe('heartbeat', () => {
    it('pings at least once per heartbeatIntervalMs', async () => {
      server = await FakeServer.start();
      server.heartbeatIntervalMs = 100;
      const client = newClient();
      await client.connect();
      await new Promise((r) => setTimeout(r, 600));
      const pings = server.requests('ping');
      expect(pings.length).toBeGreaterThanOrEqual(5);
      expect(pings[0]!.data).toEqual({});
    });

    it('a gateway silent for two intervals is taken as a drop: the client reconnects and resumes', async () => {
      server = await FakeServer.start();
      server.heartbeatIntervalMs = 100;
      server.handlers.ping = (_d, conn) => (conn === 0 ? 'silent' : { data: { now: new Date().toISOString() } });
      const client = newClient();
      const rec = record(client);
      await client.connect();
      await vi.waitFor(() => expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected', 'reconnecting', 'connected']), { timeout: 2000 });
      const auths = server.requests('auth');
      expect(auths).toHaveLength(2);
      expect(auths[1]!.data).toEqual({ token: TOKEN, resume: { sessionId: 'sess-1', resumeToken: 'resume-1' } });
      expect(client.session).toMatchObject({ sessionId: 'sess-1', resumeToken: 'resume-2', resumed: true });
    });
  });

  describe('reconnect and resume', () => {
    it('a socket killed by the server is resumed with sessionId and resumeToken; calls go on; requests made meanwhile are sent after the resume', async () => {
      server = await FakeServer.start();
      let n = 0;
      const token = vi.fn(() => Promise.resolve(`${TOKEN}-${++n}`));
      const client = newClient({ token, reconnect: { initialDelayMs: 150, jitter: 0 } });
      const rec = record(client);
      await client.connect();
      server.event('call.incoming', { ...callInfo('c1'), ringTimeoutMs: 5000 });
      const { call } = await rec.next('incoming');
      server.calls = [callInfo('c1')];

      server.sockets[0]!.terminate();
      await rec.next('connectionstatechange', (s) => s === 'reconnecting');
      const presence = client.setPresence('busy'); // queued until resumed
      expect(await presence).toEqual({ status: 'busy', effective: 'busy' });

      const auths = server.requests('auth');
      expect(auths.map((a) => a.data)).toEqual([{ token: `${TOKEN}-1` }, { token: `${TOKEN}-2`, resume: { sessionId: 'sess-1', resumeToken: 'resume-1' } }]);
      expect(server.requests('presence.set')[0]!.conn).toBe(1);
      expect(client.session).toMatchObject({ sessionId: 'sess-1', resumeToken: 'resume-2', resumed: true });
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected', 'reconnecting', 'connected']);

      // events queued while away arrive on the new socket; the call went on
      server.event('call.answered', { callId: 'c1' });
      await rec.next('answered');
      await server.waitForRequest('calls.list', (r) => r.conn === 1);
      await client.listCalls();
      expect(call.state).toBe('active');
      expect(rec.of('ended')).toEqual([]);

      // and a second drop resumes with the rotated resume token
      server.sockets[1]!.terminate();
      await server.waitForRequest('auth', (r) => r.conn === 2);
      expect(server.requests('auth')[2]!.data).toMatchObject({ resume: { sessionId: 'sess-1', resumeToken: 'resume-2' } });
    });

    it('a request in flight when the socket drops rejects with CONNECTION_LOST', async () => {
      server = await FakeServer.start();
      server.handlers['call.hold'] = (_d, conn) => {
        server.sockets[conn]!.terminate();

        return 'silent';
      };
      const client = newClient();
      await client.connect();
      await expect(client.hold('c1')).rejects.toMatchObject({ code: 'CONNECTION_LOST', request: 'call.hold', callId: 'c1' });
    });

    it('after a resume, calls the gateway no longer lists end with session_lost', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      server.calls = [callInfo('keep', { state: 'active' }), callInfo('gone', { state: 'active' })];
      await client.connect();
      server.calls = [callInfo('keep', { state: 'active' })];
      server.sockets[0]!.terminate();
      const ended = await rec.next('ended');
      expect(ended).toMatchObject({ reason: 'session_lost', by: 'system', call: { id: 'gone' } });
      expect(client.calls.map((c) => c.id)).toEqual(['keep']);
    });

    it('resumed: false ends every call with session_lost and starts a new session', async () => {
      server = await FakeServer.start();
      server.calls = [callInfo('c1', { state: 'active' })];
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.calls = [];
      server.acceptResume = false;
      server.sockets[0]!.terminate();
      expect(await rec.next('ended')).toMatchObject({ reason: 'session_lost', by: 'system', call: { id: 'c1' } });
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected', 'reconnecting', 'connected']);
      expect(client.session).toMatchObject({ sessionId: 'sess-2', resumed: false });
      expect(client.calls).toEqual([]);
    });

    it('gives up after maxTimeMs when the gateway stays away: disconnected, CONNECTION_LOST, calls ended, queued requests rejected', async () => {
      server = await FakeServer.start();
      server.calls = [callInfo('c1', { state: 'active' })];
      const client = newClient({ reconnect: { initialDelayMs: 20, maxDelayMs: 50, jitter: 0, maxTimeMs: 400 } });
      const rec = record(client);
      await client.connect();
      await server.close();
      await rec.next('connectionstatechange', (s) => s === 'reconnecting');
      const queued = client.setPresence('away').catch((e: unknown) => e);
      const lost = await rec.next('error', undefined, 3000);
      expect(lost).toMatchObject({ code: 'CONNECTION_LOST' });
      expect(lost.message).toMatch(/could not resume the session within 400 ms/);
      expect(await queued).toMatchObject({ code: 'CONNECTION_LOST', request: 'presence.set' });
      expect(client.connectionState).toBe('disconnected');
      expect(rec.of('ended')).toMatchObject([{ reason: 'session_lost', call: { id: 'c1' } }]);
      await expect(client.listCalls()).rejects.toMatchObject({ code: 'CLOSED' });
    });

    it('the default maxTimeMs is the gateway resumeGraceMs', async () => {
      server = await FakeServer.start();
      server.resumeGraceMs = 300;
      const client = newClient({ reconnect: { initialDelayMs: 20, maxDelayMs: 50, jitter: 0 } });
      const rec = record(client);
      await client.connect();
      await server.close();
      const started = Date.now();
      expect((await rec.next('error', undefined, 3000)).message).toMatch(/within 300 ms/);
      expect(Date.now() - started).toBeLessThan(1500);
    });

    it('close code 4409 (session resumed elsewhere) is not retried', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.sockets[0]!.close(4409, 'replaced');
      expect(await rec.next('error')).toMatchObject({ code: 'CONNECTION_LOST', message: 'connection lost (code 4409, replaced)' });
      expect(client.connectionState).toBe('disconnected');
      await new Promise((r) => setTimeout(r, 100));
      expect(server.requests('auth')).toHaveLength(1);
    });

    it('a resume refused with AUTH_FAILED is not retried', async () => {
      server = await FakeServer.start();
      const client = newClient();
      const rec = record(client);
      await client.connect();
      server.handlers.auth = () => ({ error: { code: 'AUTH_FAILED', message: 'agent disabled' } });
      server.sockets[0]!.terminate();
      expect(await rec.next('error')).toMatchObject({ code: 'AUTH_FAILED', message: 'agent disabled' });
      expect(client.connectionState).toBe('disconnected');
      await new Promise((r) => setTimeout(r, 150));
      expect(server.requests('auth')).toHaveLength(2);
    });

    it('reconnect: false never reconnects', async () => {
      server = await FakeServer.start();
      const client = newClient({ reconnect: false });
      const rec = record(client);
      await client.connect();
      server.sockets[0]!.terminate();
      await rec.next('connectionstatechange', (s) => s === 'disconnected');
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected', 'disconnected']);
    });
  });

  describe('close', () => {
    it('close() rejects pending requests with CLOSED, closes the socket with 1000, ends calls and is idempotent', async () => {
      server = await FakeServer.start();
      server.handlers['call.hold'] = () => 'silent';
      server.calls = [callInfo('c1', { state: 'active' })];
      const client = newClient();
      const rec = record(client);
      await client.connect();
      const pending = client.hold('c1');
      await server.waitForRequest('call.hold');
      client.close();
      client.close();
      await expect(pending).rejects.toMatchObject({ code: 'CLOSED' });
      expect(client.closed).toBe(true);
      expect(client.connectionState).toBe('disconnected');
      expect(rec.of('ended')).toMatchObject([{ reason: 'session_lost', by: 'local', call: { id: 'c1' } }]);
      expect(rec.of('connectionstatechange')).toEqual(['connecting', 'connected', 'disconnected']);
      await vi.waitFor(() => expect(server.closes).toEqual([{ conn: 0, code: 1000 }]));
      await expect(client.setPresence('away')).rejects.toMatchObject({ code: 'CLOSED' });
      await expect(client.connect()).rejects.toMatchObject({ code: 'CLOSED' });
    });

    it('close() while reconnecting stops the attempts', async () => {
      server = await FakeServer.start();
      const client = newClient({ reconnect: { initialDelayMs: 100, jitter: 0 } });
      const rec = record(client);
      await client.connect();
      server.sockets[0]!.terminate();
      await rec.next('connectionstatechange', (s) => s === 'reconnecting');
      client.close();
      await new Promise((r) => setTimeout(r, 300));
      expect(server.requests('auth')).toHaveLength(1);
      expect(client.connectionState).toBe('disconnected');
    });
  });

  describe('calls without a WebRTC stack', () => {
    function fakeTrack() {
      return { id: 't1', kind: 'audio', enabled: true, readyState: 'live', stop: vi.fn() };
    }

    it('answer() without an audio track rejects with LOCAL_MEDIA and sends no call.answer', async () => {
      server = await FakeServer.start();
      const client = newClient({ getAudioTrack: () => Promise.reject(new Error('permission denied')) });
      const rec = record(client);
      await client.connect();
      server.event('call.incoming', { ...callInfo('c1'), ringTimeoutMs: 5000 });
      await rec.next('incoming');
      await expect(client.answer('c1')).rejects.toMatchObject({ code: 'LOCAL_MEDIA', callId: 'c1', message: 'no audio track: permission denied' });
      expect(server.requests('call.answer')).toEqual([]);
      expect(client.call('c1')?.state).toBe('ringing');
    });

    it('answer() refused by the gateway rejects with its code and stops the track', async () => {
      server = await FakeServer.start();
      server.handlers['call.answer'] = () => ({ error: { code: 'ALREADY_ANSWERED', message: 'another agent answered first' } });
      const track = fakeTrack();
      const client = newClient({ getAudioTrack: () => Promise.resolve(track as AudioTrack) });
      await client.connect();
      await expect(client.answer('c1')).rejects.toMatchObject({ code: 'ALREADY_ANSWERED', callId: 'c1' });
      expect(track.stop).toHaveBeenCalled();
      expect(client.call('c1')).toBeUndefined(); // never announced, so not kept
    });

    it('dial(): the call exists as soon as the response is read, so events right behind it are kept; a media failure hangs up and ends the call', async () => {
      server = await FakeServer.start();
      server.handlers['call.dial'] = (_d, conn, id) => {
        // the response and the first event leave in one burst
        const media = { routerRtpCapabilities: { codecs: [] }, sendTransport: { id: 's' }, recvTransport: { id: 'r' } };
        const ws = server.sockets[conn]!;
        ws.send(JSON.stringify({ v: 1, id, type: 'response', ok: true, data: { callId: 'out-1', media } }));
        ws.send(JSON.stringify({ v: 1, type: 'call.progress', data: { callId: 'out-1', status: 180, earlyMedia: false } }));

        return 'silent';
      };
      const track = fakeTrack();
      // 'Chrome111' without RTCPeerConnection in this process: the device cannot load
      const client = newClient({ handlerName: 'Chrome111', getAudioTrack: () => Promise.resolve(track as AudioTrack) });
      const rec = record(client);
      await client.connect();
      const err = await client.dial('+15550123', { trunkId: 'loopback' }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'LOCAL_MEDIA', callId: 'out-1' });
      expect(server.requests('call.dial')[0]!.data).toEqual({ to: '+15550123', trunkId: 'loopback' });
      expect(await rec.next('progress')).toMatchObject({ status: 180, call: { id: 'out-1', direction: 'outbound' } });
      expect(await rec.next('ended')).toMatchObject({ reason: 'media_error', by: 'local', call: { id: 'out-1', state: 'ended' } });
      await server.waitForRequest('call.hangup');
      expect(server.requests('call.hangup')[0]!.data).toEqual({ callId: 'out-1' });
      expect(track.stop).toHaveBeenCalled();
    });
  });
});
