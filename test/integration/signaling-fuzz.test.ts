/**
 * Fuzzing of the agent WebSocket protocol (src/signaling, PROTOCOL.md) against a real gateway
 * with real `ws` clients: fast-check generates and mutates frames (malformed JSON, wrong types,
 * huge fields, unknown methods, binary frames, requests out of order, forged and replayed
 * tokens, resume attempts on another agent's session) on fresh and on signed-in connections.
 *
 * Every frame must get a well-formed protocol response (an error with a documented code for
 * every bad frame) or a documented close code; meanwhile another agent's session, its presence
 * and its stored state stay as they were, a third agent's active call (sipp trunk, Node WebRTC
 * agent) goes on with audio flowing, and a clean sign-in still works at the end.
 *
 * Runs: FUZZ_RUNS (default 400 connections, each up to 8 frames). Long run:
 *   FUZZ_RUNS=20000 npx vitest run --config .config/vitest.config.ts test/integration/signaling-fuzz.test.ts
 * FUZZ_SEED replays a seed that fast-check reported.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { CLOSE_CODES, ENVELOPE, ERROR_CODES, REQUESTS, type RequestType } from '../../src/signaling/protocol.js';
import { type NodeAgent } from '../helpers/agent.js';
import { agentToken, type CallFixture, startCallGateway, TEST_JWT_SECRET } from '../helpers/calls.js';
import { pcmaFromPcap } from '../../load/calls-bench/rtp-capture.js';
import { writeScenario } from '../../load/runner/scenario.js';
import { freePort, type SippProcess, startSipp } from '../helpers/sipp.js';

const DEFAULT_RUNS = 400;
const RUNS = Math.max(1, Number(process.env.FUZZ_RUNS ?? DEFAULT_RUNS) || DEFAULT_RUNS);
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : undefined;
/** Close codes PROTOCOL.md documents, plus 1009 (frame over the size limit, "Limits"). */
const DOCUMENTED_CLOSES = new Set<number>([...Object.values(CLOSE_CODES), 1009]);
const CODES = new Set<string>(ERROR_CODES);
/** How long a frame may take to be answered on a loaded 2-core machine, ms. */
const REPLY_MS = 10_000;

/** A reply to one frame: the frame the server sent back, or the close of the connection. */
type Reply = { frame: Record<string, unknown> } | { close: number };

/** A raw protocol client that hands out the server's frames (and its close) one at a time. */
class Conn {
  readonly ws: WebSocket;
  readonly #frames: Reply[] = [];
  readonly #waiters: ((r: Reply) => void)[] = [];
  closeCode: number | undefined;
  /** Frames that were not JSON (a protocol violation by the server). */
  readonly garbage: string[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (d, isBinary) => {
      const text = (d as Buffer).toString('utf8');
      let f: Record<string, unknown>;
      try {
        f = JSON.parse(text) as Record<string, unknown>;
      } catch {
        this.garbage.push(`${isBinary ? 'binary ' : ''}${text.slice(0, 200)}`);

        return;
      }
      this.#push({ frame: f });
    });
    ws.once('close', (code) => {
      this.closeCode = code;
      this.#push({ close: code });
    });
    ws.on('error', () => undefined);
  }

  static async open(url: string): Promise<Conn> {
    const ws = new WebSocket(url);
    const c = new Conn(ws);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });

    return c;
  }

  #push(r: Reply): void {
    const w = this.#waiters.shift();
    if (w) {
      w(r);
    } else {
      this.#frames.push(r);
    }
  }

  /** The next reply that is not an event (events carry no `id` and are not responses). */
  async next(): Promise<Reply> {
    for (;;) {
      const r = await new Promise<Reply>((resolve, reject) => {
        const f = this.#frames.shift();
        if (f) {
          resolve(f);

          return;
        }
        if (this.closeCode !== undefined) {
          resolve({ close: this.closeCode });

          return;
        }
        const t = setTimeout(() => reject(new Error(`no reply within ${REPLY_MS} ms`)), REPLY_MS);
        this.#waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
      if ('frame' in r && r.frame.type !== 'response') {
        continue; // an event (presence.changed...)
      }

      return r;
    }
  }

  async request(type: string, data: unknown = {}, id = 'req'): Promise<Record<string, unknown>> {
    this.ws.send(JSON.stringify({ v: 1, id, type, data }));
    const r = await this.next();
    if (!('frame' in r)) {
      throw new Error(`closed ${r.close} instead of answering ${type}`);
    }

    return r.frame;
  }
}

// ------------------------------------------------------------------------------------------------
// Frame generators
// ------------------------------------------------------------------------------------------------

/** A frame to send, and whether the protocol must refuse it. */
interface Frame {
  what: string;
  payload: string | Buffer;
  binary: boolean;
  /** Must be answered with an error (or a close): the frame is bad. */
  bad: boolean;
}

const METHODS = Object.keys(REQUESTS);

/** The id of another agent's live call, once it exists: fuzzed call requests aim at it too. */
let liveCallId: string | undefined;

/**
 * Plausible `data` for each method, so that mutations start from something close to valid;
 * `live`: call requests name another agent's live call.
 */
function validData(type: string, live = false): Record<string, unknown> {
  const cid = live && liveCallId ? liveCallId : 'c-1';
  switch (type) {
    case 'auth':
      return { token: 'eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl' };
    case 'presence.set':
      return { status: 'busy' };
    case 'device.register':
      return { deviceId: 'fz-device', platform: 'web', channel: 'none' };
    case 'device.unregister':
      return { deviceId: 'fz-device' };
    case 'call.answer':
    case 'call.hangup':
    case 'call.hold':
    case 'call.resume':
      return { callId: cid };
    case 'call.decline':
      return { callId: cid, reason: 'busy' };
    case 'call.dial':
      return { to: '+4930123456' };
    case 'call.mute':
      return { callId: cid, muted: true };
    case 'call.dtmf':
      return { callId: cid, digits: '12#' };
    case 'media.connect':
      return { callId: cid, transportId: 't-1', dtlsParameters: { role: 'client', fingerprints: [] } };
    case 'media.produce':
      return { callId: cid, transportId: 't-1', kind: 'audio', rtpParameters: { codecs: [] } };
    case 'media.consume':
      return { callId: cid, rtpCapabilities: { codecs: [] } };
    case 'media.resume':
      return { callId: cid, consumerId: 'k-1' };
    default:
      return {};
  }
}

/** Whether a text is a request the protocol accepts (JSON, envelope, and the method's data schema). */
function isValidRequest(text: string): boolean {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return false;
  }
  const env = ENVELOPE.safeParse(frame);

  return env.success && Object.hasOwn(REQUESTS, env.data.type) && REQUESTS[env.data.type as RequestType].safeParse(env.data.data ?? {}).success;
}

/** Any JSON value, including deep and odd ones. */
const anyJson = fc.jsonValue({ maxDepth: 4 });
/** Values of the wrong type for most fields. */
const weird = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.array(fc.integer(), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.integer(), { maxKeys: 4 }),
  fc.constantFrom('__proto__', 'constructor', 'toString', '\u0000', '\uFFFF', '\uD800', '0'.repeat(70_000).slice(0, 5000)),
);
/** Keys that try prototype pollution. */
const evilKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty');

/** A request frame with one field replaced, removed, or added: nearly valid, so it probes validation. */
const mutatedRequest: fc.Arbitrary<Frame> = fc
  .record({
    type: fc.constantFrom(...METHODS),
    live: fc.boolean(),
    op: fc.constantFrom('replace', 'drop', 'extra', 'evil', 'envelope', 'version', 'id'),
    value: weird,
    extraKey: fc.string({ minLength: 1, maxLength: 12 }),
    evil: evilKey,
  })
  .map(({ type, live, op, value, extraKey, evil }) => {
    const data = validData(type, live);
    const keys = Object.keys(data);
    const env: Record<string, unknown> = { v: 1, id: 'fz', type, data };
    let bad = true;
    switch (op) {
      case 'replace':
        if (keys.length === 0) {
          env.data = value; // data itself of a wrong type (not an object)
          bad = !(typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0);
        } else {
          data[keys[0]!] = value;
          bad = JSON.stringify(value) !== JSON.stringify(validData(type)[keys[0]!]);
        }
        break;
      case 'drop':
        if (keys.length === 0) {
          delete env.data; // no data at all: allowed for methods without fields
          bad = false;
        } else {
          delete data[keys[0]!];
        }
        break;
      case 'extra':
        if (Object.hasOwn(data, extraKey)) {
          bad = false;
        } else {
          own(data, extraKey, value);
        }
        break;
      case 'evil':
        // JSON.stringify drops __proto__ set by assignment: write it into the text instead
        return { what: `${type} with key ${evil}`, payload: JSON.stringify(env).replace('"data":{', `"data":{"${evil}":${JSON.stringify(value ?? null)},`).replace('"data":{}', `"data":{"${evil}":1}`), binary: false, bad: true };
      case 'envelope':
        own(env, ['data', 'id', 'type', 'v'].includes(extraKey) ? 'x' : extraKey, value);
        break;
      case 'version':
        env.v = value === 1 ? 2 : value;
        break;
      case 'id':
        env.id = value;
        // a usable id leaves a valid request
        bad = typeof value !== 'string' || value.length < 1 || value.length > 64;
        break;
    }

    const payload = JSON.stringify(env);
    // the hand-made verdict must agree with the protocol's schemas (a null `data` counts as none)
    // a request on another agent's call must fail even when its form is valid
    const foreign = live && payload.includes(String(liveCallId));

    return { what: `${type} ${op}${foreign ? " on another agent's call" : ''}`, payload, binary: false, bad: foreign || (bad && !isValidRequest(payload)) };
  });

/** Text that is not a request: broken JSON, JSON of the wrong shape, byte-level mutations. */
const garbageText: fc.Arbitrary<Frame> = fc.oneof(
  fc.string({ maxLength: 200 }).map((s) => ({ what: 'random text', payload: s, binary: false, bad: true })),
  fc.string({ unit: 'binary', maxLength: 200 }).map((s) => ({ what: 'random unicode', payload: s, binary: false, bad: true })),
  anyJson.map((j) => ({ what: 'random JSON', payload: JSON.stringify(j) ?? 'null', binary: false, bad: true })),
  fc
    .record({ type: fc.constantFrom(...METHODS), cut: fc.nat(), flips: fc.array(fc.record({ at: fc.nat(), ch: fc.constantFrom('{', '}', '"', ',', ':', '\\', '\u0000', 'x', ' ', ']') }), { minLength: 1, maxLength: 4 }) })
    .map(({ type, cut, flips }) => {
      let s = JSON.stringify({ v: 1, id: 'fz', type, data: validData(type) });
      for (const f of flips) {
        const i = f.at % s.length;
        s = s.slice(0, i) + f.ch + s.slice(i + 1);
      }
      if (cut % 3 === 0) {
        s = s.slice(0, cut % s.length);
      }

      // a mutation can leave a valid request ("fz" → "f "): the protocol's own schemas decide
      return { what: `${type} mutated bytes`, payload: s, binary: false, bad: !isValidRequest(s) };
    }),
  fc.constantFrom(
    { what: 'empty frame', payload: '', binary: false, bad: true },
    { what: 'deep nesting', payload: `${'['.repeat(5000)}${']'.repeat(5000)}`, binary: false, bad: true },
    { what: 'number', payload: '1e309', binary: false, bad: true },
  ),
);

/** Unknown methods, responses and events sent by a client, and huge fields. */
const oddRequest: fc.Arbitrary<Frame> = fc.oneof(
  fc.string({ minLength: 1, maxLength: 64 }).filter((t) => !Object.hasOwn(REQUESTS, t)).map((t) => ({ what: 'unknown method', payload: JSON.stringify({ v: 1, id: 'fz', type: t, data: {} }), binary: false, bad: true })),
  fc.constantFrom('response', 'call.incoming', 'presence.changed', 'toString', '__proto__', 'constructor', 'hasOwnProperty').map((t) => ({ what: `client sends ${t}`, payload: JSON.stringify({ v: 1, id: 'fz', type: t, data: {} }), binary: false, bad: true })),
  fc.record({ type: fc.constantFrom(...METHODS), size: fc.integer({ min: 200, max: 60_000 }) }).map(({ type, size }) => {
    const data = validData(type);
    const key = Object.keys(data)[0] ?? 'pad';
    data[key] = 'A'.repeat(size);

    return { what: `${type} huge field`, payload: JSON.stringify({ v: 1, id: 'fz', type, data }), binary: false, bad: true };
  }),
  fc.integer({ min: 66_000, max: 200_000 }).map((n) => ({ what: 'frame over 64 KiB', payload: JSON.stringify({ v: 1, id: 'fz', type: 'ping', data: {}, pad: 'x'.repeat(n) }), binary: false, bad: true })),
);

/** Binary frames: random bytes, or a valid request sent as binary. */
const binaryFrame: fc.Arbitrary<Frame> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => ({ what: 'binary bytes', payload: Buffer.from(b), binary: true, bad: true })),
  fc.constantFrom(...METHODS).map((t) => ({ what: `${t} as binary`, payload: Buffer.from(JSON.stringify({ v: 1, id: 'fz', type: t, data: validData(t) })), binary: true, bad: true })),
);

/** Frames that are valid on their own; out of order they must still get a clean answer. */
const validRequest: fc.Arbitrary<Frame> = fc
  .tuple(fc.constantFrom(...METHODS), fc.boolean())
  .map(([t, live]) => {
    const data = validData(t, live);
    // a request on another agent's call is valid in form but must never succeed
    const foreign = live && 'callId' in data;

    return { what: `valid ${t}${foreign ? " on another agent's call" : ''}`, payload: JSON.stringify({ v: 1, id: 'fz', type: t, data }), binary: false, bad: foreign };
  });

/** Token forgeries and resume attempts; built per run (they need the victim's ids). */
function authAttacks(victim: { agentId: string; sessionId: string }): fc.Arbitrary<() => Promise<Frame>> {
  /** An auth frame whose data is made when the step runs (tokens carry the current time). */
  const frame =
    (what: string, data: () => Promise<Record<string, unknown>>, bad = true) =>
    async (): Promise<Frame> => ({ what, payload: JSON.stringify({ v: 1, id: 'fz', type: 'auth', data: await data() }), binary: false, bad });
  const now = () => Math.floor(Date.now() / 1000);
  const hs = (claims: Record<string, unknown>, alg = 'HS256') => new SignJWT(claims).setProtectedHeader({ alg }).setExpirationTime(now() + 60).sign(Buffer.from(TEST_JWT_SECRET));
  const other = 'not-the-secret-but-long-enough-0123456789';

  return fc.oneof(
    fc.constant(frame('alg none', () => Promise.resolve({ token: new UnsecuredJWT({ sub: victim.agentId }).setExpirationTime('5m').encode() }))),
    fc.constant(frame('wrong secret', async () => ({ token: await agentToken(victim.agentId, { secret: other }) }))),
    fc.constant(frame('HS256 with a tampered payload', async () => ({ token: tamper(await agentToken('fz-attacker'), victim.agentId) }))),
    fc.constant(frame('HS384 with the HS256 secret', async () => ({ token: await hs({ sub: victim.agentId }, 'HS384') }))),
    fc.constant(frame('expired', async () => ({ token: await agentToken(victim.agentId, { expiresInS: -120 }) }))),
    fc.constant(frame('no sub', async () => ({ token: await hs({}) }))),
    fc.constant(frame('sub of the wrong type', async () => ({ token: await hs({ sub: 42 }) }))),
    fc.string({ minLength: 1, maxLength: 256 }).map((rt) => frame('resume the victim with a forged token', async () => ({ token: await agentToken(victim.agentId, { secret: other }), resume: { sessionId: victim.sessionId, resumeToken: rt } }))),
    // a valid token of another agent signs in as that agent (a new session), never into the victim's
    fc.string({ minLength: 1, maxLength: 256 }).map((rt) => frame("resume the victim's session with the attacker's own token", async () => ({ token: await agentToken('fz-attacker'), resume: { sessionId: victim.sessionId, resumeToken: rt } }), false)),
  );
}

/** Sets an own, enumerable property (also `__proto__`, which plain assignment would not write). */
function own(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

/** A token whose payload was replaced (the signature no longer matches). */
function tamper(token: string, sub: string): string {
  const [h, , s] = token.split('.');

  return `${h}.${Buffer.from(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url')}.${s}`;
}

// ------------------------------------------------------------------------------------------------

let fx: CallFixture;
let victim: Conn;
let victimSession: { agentId: string; sessionId: string };
const VICTIM = 'fz-victim';
/** An agent on an active call with a sipp trunk for the whole run. */
const ON_CALL = 'fz-on-call';
let onCall: NodeAgent;
let onCallId: string;
let trunk: SippProcess | undefined;

/** Checks that a reply is a well-formed answer to a frame; returns whether the connection is gone. */
function checkReply(f: Frame, r: Reply, problems: string[]): boolean {
  if ('close' in r) {
    if (!DOCUMENTED_CLOSES.has(r.close)) {
      problems.push(`${f.what}: closed with undocumented code ${r.close}`);
    }

    return true;
  }
  const fr = r.frame;
  if (fr.v !== 1 || fr.type !== 'response' || typeof fr.ok !== 'boolean') {
    problems.push(`${f.what}: malformed response ${JSON.stringify(fr).slice(0, 200)}`);

    return false;
  }
  if (fr.ok === false) {
    const code = (fr.error as { code?: unknown } | undefined)?.code;
    if (typeof code !== 'string' || !CODES.has(code)) {
      problems.push(`${f.what}: error with undocumented code ${String(code)}`);
    }
    if (code === 'INTERNAL') {
      problems.push(`${f.what}: INTERNAL error: ${JSON.stringify(fr.error)}`);
    }
  } else if (f.bad) {
    problems.push(`${f.what}: a bad frame was accepted: ${JSON.stringify(fr).slice(0, 200)}`);
  }

  return false;
}

describe('agent signaling protocol fuzzing', () => {
  beforeAll(async () => {
    // a rate limit the fuzzer does not hit constantly, so that validation is what answers
    fx = await startCallGateway({ signaling: { maxRequestsPerSecond: 10_000 }, routing: { dids: [{ number: '*', agent: ON_CALL }], groups: [], defaultTrunk: '' } });
    onCall = await fx.agent(ON_CALL, { autoAnswer: true });
    // talks longer than any fuzz run, with audio the whole time (the load runner's trunk: sipp's
    // G.711 capture looped by rtp_stream); stopped in afterAll
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-fuzz-trunk-'));
    const pcma = path.join(dir, 'audio.alaw');
    fs.writeFileSync(pcma, pcmaFromPcap('/usr/share/sip-tester/g711a.pcap'));
    const scenario = writeScenario('trunk-uac.xml', dir, { PCMA_FILE: pcma, MAX_HOLD_MS: String(240_000 + RUNS * 20) });
    trunk = startSipp({ scenario, target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 300_000 + RUNS * 20 });
    onCallId = (await onCall.waitForEvent('answered', undefined, 20_000)).call.id;
    liveCallId = onCallId;
    victim = await Conn.open(fx.wsUrl);
    const auth = await victim.request('auth', { token: await agentToken(VICTIM) });
    expect(auth).toMatchObject({ ok: true });
    victimSession = { agentId: VICTIM, sessionId: (auth.data as { sessionId: string }).sessionId };
    expect(await victim.request('presence.set', { status: 'away' })).toMatchObject({ ok: true, data: { status: 'away' } });
    expect(await victim.request('device.register', { deviceId: 'victim-phone', platform: 'web', channel: 'none' })).toMatchObject({ ok: true });
  }, 60_000);

  afterAll(async () => {
    await trunk?.stop().catch(() => undefined);
    victim?.ws.terminate();
    await fx?.close();
  });

  it('answers every generated frame with a protocol response or a documented close, and never crashes', async () => {
    const problems: string[] = [];
    let fuzzAgents = 0;
    const seen = new Map<string, number>();
    let sent = 0;
    let foreign = 0;
    const frameArb = fc.oneof({ weight: 4, arbitrary: mutatedRequest }, { weight: 2, arbitrary: garbageText }, { weight: 2, arbitrary: oddRequest }, { weight: 1, arbitrary: binaryFrame }, { weight: 2, arbitrary: validRequest });
    const step = fc.oneof({ weight: 5, arbitrary: frameArb.map((f) => () => Promise.resolve(f)) }, { weight: 1, arbitrary: authAttacks(victimSession) });
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(step, { minLength: 1, maxLength: 8 }), async (signIn, steps) => {
        const c = await Conn.open(fx.wsUrl);
        try {
          if (signIn) {
            const r = await c.request('auth', { token: await agentToken(`fz-agent-${fuzzAgents++ % 5}`) });
            expect(r).toMatchObject({ ok: true });
          }
          for (const make of steps) {
            const f = await make();
            c.ws.send(f.payload, { binary: f.binary });
            sent++;
            foreign += f.what.endsWith("on another agent's call") ? 1 : 0;
            const r = await c.next();
            const outcome = 'close' in r ? `close ${r.close}` : r.frame.ok ? 'ok' : String((r.frame.error as { code?: string }).code);
            seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
            if (checkReply(f, r, problems)) {
              break;
            }
          }
          expect(c.garbage).toEqual([]);
          expect(problems).toEqual([]);
        } finally {
          c.ws.terminate();
        }
      }),
      { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) },
    );
    expect(problems).toEqual([]);
    // the frames reached the server's checks, not just its first one
    expect(sent).toBeGreaterThanOrEqual(RUNS);
    for (const outcome of ['BAD_REQUEST', 'UNAUTHENTICATED', 'close 4401']) {
      expect(seen.get(outcome) ?? 0, `${outcome} in ${JSON.stringify([...seen])}`).toBeGreaterThan(0);
    }
    if (RUNS >= 100) {
      expect(foreign, "requests on another agent's live call").toBeGreaterThan(0);
      for (const outcome of ['AUTH_FAILED', 'NOT_FOUND', 'ok', 'close 1009']) {
        expect(seen.get(outcome) ?? 0, `${outcome} in ${JSON.stringify([...seen])}`).toBeGreaterThan(0);
      }
    }
    console.info(`signaling fuzz: ${sent} frames (${foreign} on another agent's call); outcomes ${JSON.stringify(Object.fromEntries(seen))}`);
  }, 30_000 + RUNS * 2_000);

  it("leaves another agent's session, presence and stored state as they were", async () => {
    expect(victim.closeCode).toBeUndefined();
    const sessions = fx.gw.signaling!.sessionsOf(VICTIM);
    expect(sessions.map((s) => s.id)).toEqual([victimSession.sessionId]);
    expect(sessions[0]!.state).toBe('connected');
    expect(await victim.request('ping')).toMatchObject({ ok: true });
    expect(await victim.request('device.list')).toMatchObject({ ok: true, data: { devices: [{ deviceId: 'victim-phone' }] } });
    expect(fx.gw.calls!.presence.effective(VICTIM)).toBe('away');
    const stored = await fx.gw.redis!.client.hgetall(`${fx.gw.config.redis.keyPrefix}agent:{${VICTIM}}`);
    expect(stored).toMatchObject({ status: 'away', effective: 'away' });
  });

  it("leaves a third agent's active call up, with audio flowing both ways", async () => {
    const call = fx.gw.calls!.call(onCallId);
    expect(call?.state).toBe('active');
    expect(call?.agentId).toBe(ON_CALL);
    // audio still flows: both counts grow (polled: a loaded machine delays the stats)
    const before = await onCall.packetCounts(onCallId);
    let after = before;
    for (let i = 0; i < 100 && (after.received - before.received < 10 || after.sent - before.sent < 10); i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await onCall.packetCounts(onCallId);
    }
    expect(after.received - before.received, 'RTP from the trunk').toBeGreaterThanOrEqual(10);
    expect(after.sent - before.sent, 'RTP to the trunk').toBeGreaterThanOrEqual(10);
    expect(onCall.events.filter((e) => e.name === 'ended')).toEqual([]);
  });

  it('still serves a clean sign-in after the fuzzing', async () => {
    const c = await Conn.open(fx.wsUrl);
    try {
      const r = await c.request('auth', { token: await agentToken('fz-after') });
      expect(r).toMatchObject({ ok: true, data: { agentId: 'fz-after', resumed: false, presence: { status: 'available' } } });
      expect(await c.request('ping')).toMatchObject({ ok: true });
    } finally {
      c.ws.close(1000);
    }
  });
});
