/**
 * One agent process of the calls benchmark: K agents on the client SDK (src/client) with real
 * WebRTC media (@roamhq/wrtc, mediasoup-client's Chrome111 handler), each signed in with its own
 * HS256 token, answering every call at once, sending a sine tone and receiving the trunk's audio.
 *
 * Started by agent-pool.ts with an IPC channel; never run by hand. Messages: ipc.ts. The process
 * exits on `stop`, when the IPC channel closes (the benchmark died) and on SIGTERM; @roamhq/wrtc
 * can keep a process alive after everything is closed, so it always ends with process.exit().
 *
 * With a `behaviour` (the load runner's scenarios) an agent answers after the ring time, hangs up
 * after the talk time, holds and resumes or sends DTMF in a share of its calls, and only the first
 * `mediaShare` of the agents have WebRTC media: the others are signaling only (the SDK's signaling
 * connection, src/client/signaling.ts, without media transports).
 *
 * Tone: `shared` feeds one RTCAudioSource per process and gives every call a track of it (each
 * call still encodes and sends its own RTP stream); `per-agent` gives every agent a source of its
 * own, all fed by the same 10 ms timer, as separate apps would.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import wrtc from '@roamhq/wrtc';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { type AudioTrack, RingbridgeClient, isRingbridgeError } from '../../src/client/index.js';
import { Signaling } from '../../src/client/signaling.js';
import { type AgentBehaviour, type CallSample, emptyCounters, type FromWorker, type StatsReply, type ToWorker, type WorkerCounters } from './ipc.js';

interface Agent {
  id: string;
  client: RingbridgeClient;
  source: ToneSource;
  /** Live calls of this agent (answered, not ended). */
  calls: Set<string>;
  /** Calls ringing this agent, not yet answered (it dials only when idle). */
  ringing: Set<string>;
  /** The outbound call this agent is dialling (one at a time). */
  out?: Outbound;
}

/** An outbound call in progress: when call.dial was sent, its id once known. */
interface Outbound {
  t0: number;
  callId?: string;
  progressed: boolean;
}

/** What the benchmark uses of @roamhq/wrtc's RTCPeerConnection. */
interface PeerConnectionLike {
  connectionState: string;
  getStats(): Promise<{ forEach(cb: (s: Record<string, unknown>) => void): void }>;
  getSenders(): { track: { id: string } | null }[];
  getReceivers(): { track: { id: string } | null }[];
  close(): void;
}

type PeerConnectionClass = new (...args: unknown[]) => PeerConnectionLike;

/**
 * Every live peer connection of this process, so that a call's counters can be read from its
 * own two (found by the ids of the tracks they send and receive).
 */
const livePcs = new Set<PeerConnectionLike>();
const pcByTrack = new Map<string, PeerConnectionLike>();
const BasePc = wrtc.RTCPeerConnection as unknown as PeerConnectionClass;
class TrackedPeerConnection extends BasePc {
  constructor(...args: unknown[]) {
    super(...args);
    livePcs.add(this);
  }

  override close(): void {
    livePcs.delete(this);
    for (const [id, pc] of pcByTrack) {
      if (pc === this) {
        pcByTrack.delete(id);
      }
    }
    super.close();
  }
}
const webrtc = { ...wrtc, RTCPeerConnection: TrackedPeerConnection };

/** The peer connection sending or receiving a track, indexing new ones as needed. */
function pcOfTrack(trackId: string | undefined): PeerConnectionLike | undefined {
  if (!trackId) {
    return undefined;
  }
  let pc = pcByTrack.get(trackId);
  if (!pc) {
    for (const p of livePcs) {
      for (const x of [...p.getReceivers(), ...p.getSenders()]) {
        if (x.track) {
          pcByTrack.set(x.track.id, p);
        }
      }
    }
    pc = pcByTrack.get(trackId);
  }

  return pc;
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

interface ToneSource {
  source: InstanceType<typeof wrtc.nonstandard.RTCAudioSource>;
}

const counters: WorkerCounters = emptyCounters();
const agents: Agent[] = [];
const sources: ToneSource[] = [];
let toneTimer: NodeJS.Timeout | undefined;
const loop = monitorEventLoopDelay({ resolution: 5 });

function send(msg: FromWorker): void {
  if (process.connected) {
    process.send?.(msg);
  }
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

/** Feeds every source 10 ms frames of a sine tone (a different pitch per source). */
function startTone(sampleRate: number): void {
  const frame = sampleRate / 100;
  const buffers = sources.map(() => new Int16Array(frame));
  let n = 0;
  const started = performance.now();
  let frames = 0;
  const feed = (): void => {
    // catch up with wall time (setInterval drifts and stalls under load), at most 10 frames
    const due = Math.min(frames + 10, Math.floor((performance.now() - started) / 10) + 1);
    for (; frames < due; frames++) {
      for (let s = 0; s < sources.length; s++) {
        const hz = 300 + ((s * 37) % 500);
        const samples = buffers[s]!;
        for (let i = 0; i < frame; i++) {
          samples[i] = Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * hz * (n + i)) / sampleRate));
        }
        sources[s]!.source.onData({ samples, sampleRate, bitsPerSample: 16, channelCount: 1, numberOfFrames: frame });
      }
      n = (n + frame) % (sampleRate * 100);
    }
  };
  toneTimer = setInterval(feed, 10);
}

async function signToken(agentId: string, secret: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);

  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(agentId).setIssuedAt(now).setExpirationTime(now + 24 * 3600).sign(Buffer.from(secret));
}

/** What a scenario does with an answered call, whichever kind of agent holds it. */
interface CallOps {
  hangup(callId: string): Promise<unknown>;
  hold(callId: string): Promise<unknown>;
  resume(callId: string): Promise<unknown>;
  dtmf(callId: string, digits: string): Promise<unknown>;
}

/** Timers of each call's scenario (answer, hold, resume, DTMF, hang-up), cleared when it ends. */
const callTimers = new Map<string, NodeJS.Timeout[]>();

function later(callId: string, ms: number, fn: () => void): void {
  const t = setTimeout(fn, ms);
  const list = callTimers.get(callId) ?? [];
  list.push(t);
  callTimers.set(callId, list);
}

function clearCall(callId: string): void {
  for (const t of callTimers.get(callId) ?? []) {
    clearTimeout(t);
  }
  callTimers.delete(callId);
}

const codeOf = (err: unknown): string => (isRingbridgeError(err) ? err.code : String((err as Error).message).slice(0, 60));

/**
 * Schedules an answered call's talk per the behaviour: hold at a third of the talk time, resume at
 * two thirds, DTMF at five sixths (a held call takes no DTMF), the hang-up at the end.
 */
function scheduleTalk(ops: CallOps, callId: string, b: AgentBehaviour): void {
  if (b.talkMs <= 0) {
    return;
  }
  const step = (what: 'hold' | 'resume' | 'dtmf' | 'hangup', ms: number, run: () => Promise<unknown>, done: () => void): void =>
    later(callId, ms, () => {
      run().then(done, (err: unknown) => bump(counters.errors, `${what}:${codeOf(err)}`));
    });
  if (Math.random() < b.holdShare) {
    step('hold', b.talkMs / 3, () => ops.hold(callId), () => counters.holds++);
    step('resume', (2 * b.talkMs) / 3, () => ops.resume(callId), () => counters.holds++);
  }
  if (Math.random() < b.dtmfShare) {
    step('dtmf', (5 * b.talkMs) / 6, () => ops.dtmf(callId, '1234#'), () => counters.dtmf++);
  }
  step('hangup', b.talkMs, () => ops.hangup(callId), () => counters.hungUp++);
}

/** What an agent of either kind needs for outbound calls. */
interface Dialler {
  calls: Set<string>;
  ringing: Set<string>;
  out?: Outbound;
}

/** Whether an event of call `callId` belongs to the agent's outbound call (adopting the id when still unknown). */
function outboundOf(a: Dialler, callId: string): Outbound | undefined {
  if (!a.out || (a.out.callId !== undefined && a.out.callId !== callId)) {
    return undefined;
  }
  a.out.callId = callId;

  return a.out;
}

/** call.progress of an outbound call: the first one gives the post-dial delay. */
function outboundProgress(a: Dialler, callId: string): void {
  const o = outboundOf(a, callId);
  if (o && !o.progressed) {
    o.progressed = true;
    counters.dialPddMs.push(Math.round(performance.now() - o.t0));
  }
}

/** call.answered of an outbound call: the trunk answered; the talk starts. */
function outboundAnswered(a: Dialler, callId: string, ops: CallOps, b: AgentBehaviour | undefined): void {
  const o = outboundOf(a, callId);
  if (!o) {
    return;
  }
  a.out = undefined;
  counters.dialAnswered++;
  counters.dialAnswerMs.push(Math.round(performance.now() - o.t0));
  a.calls.add(callId);
  counters.activeCalls++;
  if (b) {
    scheduleTalk(ops, callId, b);
  }
}

/** call.ended of a call that may be an unanswered outbound call (counted as a failed dial). */
function outboundEnded(a: Dialler, callId: string, reason: string): void {
  if (outboundOf(a, callId)) {
    a.out = undefined;
    counters.dialFailed++;
    bump(counters.endReasons, `dial:${reason}`);
  }
}

/** Starts an outbound call from an idle agent; failures of call.dial itself count as failed dials. */
function startDial(a: Dialler, dial: () => Promise<{ id?: string; callId?: string }>): void {
  a.out = { t0: performance.now(), progressed: false };
  const out = a.out;
  counters.dialed++;
  dial().then(
    (r) => {
      out.callId ??= r.callId ?? r.id;
    },
    (err: unknown) => {
      if (a.out === out) {
        a.out = undefined;
      }
      counters.dialFailed++;
      bump(counters.errors, `dial:${codeOf(err)}`);
    },
  );
}

/** A signaling-only agent: signs in, answers and hangs up over the WebSocket, never opens media. */
interface SignalingAgent {
  id: string;
  signaling: Signaling;
  calls: Set<string>;
  ringing: Set<string>;
  out?: Outbound;
  ops: CallOps;
}
const signalingAgents: SignalingAgent[] = [];

function makeSignalingAgent(id: string, msg: Extract<ToWorker, { type: 'start' }>, b: AgentBehaviour): SignalingAgent {
  const ops: CallOps = {
    hangup: (callId) => agent.signaling.request('call.hangup', { callId }),
    hold: (callId) => agent.signaling.request('call.hold', { callId }),
    resume: (callId) => agent.signaling.request('call.resume', { callId }),
    dtmf: (callId, digits) => agent.signaling.request('call.dtmf', { callId, digits }),
  };
  const agent: SignalingAgent = { id, calls: new Set(), ringing: new Set(), signaling: undefined as unknown as Signaling, ops };
  const ended = (callId: string, reason: string): void => {
    clearCall(callId);
    outboundEnded(agent, callId, reason);
    if (agent.calls.delete(callId)) {
      counters.ended++;
      bump(counters.endReasons, reason);
      counters.activeCalls--;
    }
  };
  agent.signaling = new Signaling({
    url: msg.url,
    token: () => signToken(id, msg.secret),
    deviceId: undefined,
    WebSocket,
    requestTimeoutMs: msg.requestTimeoutMs,
    reconnect: false,
    onEvent: (type, data) => {
      const callId = (data as { callId?: string }).callId ?? '';
      if (type === 'call.incoming') {
        counters.incoming++;
        if (agent.calls.size > 0) {
          counters.doubleBooked++;
        }
        const t0 = performance.now();
        agent.ringing.add(callId);
        later(callId, b.answerDelayMs, () => {
          agent.signaling.request('call.answer', { callId }).then(
            () => {
              agent.ringing.delete(callId);
              counters.answered++;
              counters.setupMs.push(Math.round(performance.now() - t0));
              agent.calls.add(callId);
              counters.activeCalls++;
              counters.maxCallsPerAgent = Math.max(counters.maxCallsPerAgent, agent.calls.size);
              scheduleTalk(ops, callId, b);
            },
            (err: unknown) => {
              agent.ringing.delete(callId);
              counters.answerErrors++;
              bump(counters.answerErrorCodes, codeOf(err));
            },
          );
        });
      } else if (type === 'call.cancelled') {
        agent.ringing.delete(callId);
        clearCall(callId);
      } else if (type === 'call.progress') {
        outboundProgress(agent, callId);
      } else if (type === 'call.answered') {
        outboundAnswered(agent, callId, ops, b);
      } else if (type === 'call.ended') {
        ended(callId, (data as { reason?: string }).reason ?? 'unknown');
      }
    },
    onStateChange: (state) => {
      if (state === 'reconnecting') {
        counters.reconnects++;
      }
    },
    onAuthenticated: () => undefined,
    onSessionLost: (err) => bump(counters.errors, `session:${err.code}`),
    onError: (err) => bump(counters.errors, err.code),
  });

  return agent;
}

function makeAgent(id: string, msg: Extract<ToWorker, { type: 'start' }>, source: ToneSource): Agent {
  const client = new RingbridgeClient({
    url: msg.url,
    token: () => signToken(id, msg.secret),
    WebSocket,
    webrtc,
    handlerName: 'Chrome111',
    getAudioTrack: () => Promise.resolve(source.source.createTrack() as AudioTrack),
    requestTimeoutMs: msg.requestTimeoutMs,
  });
  const agent: Agent = { id, client, source, calls: new Set(), ringing: new Set() };
  const b = msg.behaviour;
  const ops: CallOps = {
    hangup: (callId) => client.hangup(callId),
    hold: (callId) => client.hold(callId),
    resume: (callId) => client.resume(callId),
    dtmf: (callId, digits) => client.sendDtmf(callId, digits),
  };
  client.on('incoming', ({ call }) => {
    counters.incoming++;
    const t0 = performance.now();
    if (agent.calls.size > 0) {
      counters.doubleBooked++;
    }
    agent.ringing.add(call.id);
    const answer = (): void => {
      client.answer(call.id).then(
        (c) => {
          agent.ringing.delete(call.id);
          if (c.state === 'ended') {
            return;
          }
          counters.answered++;
          counters.setupMs.push(Math.round(performance.now() - t0));
          agent.calls.add(c.id);
          counters.activeCalls++;
          counters.maxCallsPerAgent = Math.max(counters.maxCallsPerAgent, agent.calls.size);
          if (b) {
            scheduleTalk(ops, c.id, b);
          }
        },
        (err: unknown) => {
          agent.ringing.delete(call.id);
          counters.answerErrors++;
          bump(counters.answerErrorCodes, codeOf(err));
        },
      );
    };
    if (b && b.answerDelayMs > 0) {
      later(call.id, b.answerDelayMs, answer);
    } else {
      answer();
    }
  });
  client.on('cancelled', ({ call }) => {
    agent.ringing.delete(call.id);
    clearCall(call.id);
  });
  client.on('progress', ({ call }) => outboundProgress(agent, call.id));
  client.on('answered', ({ call }) => outboundAnswered(agent, call.id, ops, b));
  client.on('ended', ({ call, reason }) => {
    clearCall(call.id);
    outboundEnded(agent, call.id, reason);
    counters.ended++;
    bump(counters.endReasons, reason);
    if (agent.calls.delete(call.id)) {
      counters.activeCalls--;
    }
  });
  client.on('connectionstatechange', (state) => {
    if (state === 'reconnecting') {
      counters.reconnects++;
    }
  });
  client.on('error', (err) => bump(counters.errors, err.code));

  return agent;
}

async function start(msg: Extract<ToWorker, { type: 'start' }>): Promise<unknown> {
  const shared: ToneSource | undefined = msg.tone === 'shared' ? { source: new wrtc.nonstandard.RTCAudioSource() } : undefined;
  if (shared) {
    sources.push(shared);
  }
  const withMedia = msg.behaviour ? Math.round(msg.behaviour.mediaShare * msg.agentIds.length) : msg.agentIds.length;
  for (const [i, id] of msg.agentIds.entries()) {
    if (i >= withMedia) {
      signalingAgents.push(makeSignalingAgent(id, msg, msg.behaviour!));
      continue;
    }
    let source = shared;
    if (!source) {
      source = { source: new wrtc.nonstandard.RTCAudioSource() };
      sources.push(source);
    }
    agents.push(makeAgent(id, msg, source));
  }
  counters.agents = agents.length + signalingAgents.length;
  counters.mediaAgents = agents.length;
  counters.signalingAgents = signalingAgents.length;
  startTone(msg.sampleRate);
  // connect a few at a time: a burst of hundreds of WebSocket sign-ins is not what we measure
  let next = 0;
  const failures: string[] = [];
  const all: { id: string; connect: () => Promise<unknown> }[] = [
    ...agents.map((a) => ({ id: a.id, connect: () => a.client.connect() })),
    ...signalingAgents.map((a) => ({ id: a.id, connect: () => a.signaling.connect() })),
  ];
  const worker = async (): Promise<void> => {
    while (next < all.length) {
      const a = all[next++]!;
      try {
        await a.connect();
        counters.connected++;
      } catch (err) {
        failures.push(`${a.id}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, msg.connectConcurrency) }, () => worker()));
  if (failures.length > 0) {
    throw new Error(`${failures.length} agents could not sign in, first: ${failures[0]}`);
  }

  return { connected: counters.connected };
}

async function stats(): Promise<StatsReply> {
  const t0 = performance.now();
  const calls: CallSample[] = [];
  let failed = 0;
  const jobs: (() => Promise<void>)[] = [];
  for (const a of agents) {
    for (const callId of a.calls) {
      jobs.push(async () => {
        const call = a.client.call(callId);
        if (!call) {
          failed++;

          return;
        }
        const recv = pcOfTrack(call.remoteTrack?.id);
        const snd = pcOfTrack(call.localTrack?.id);
        if (!recv || !snd) {
          failed++;

          return;
        }
        try {
          const sample: CallSample = {
            callId,
            agentId: a.id,
            at: Date.now(),
            lastPacketAt: 0,
            packetsReceived: 0,
            packetsLost: 0,
            jitter: 0,
            concealedSamples: 0,
            totalSamplesReceived: 0,
            packetsSent: 0,
            sendState: snd.connectionState,
            recvState: recv.connectionState,
          };
          (await recv.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'audio') {
              sample.at = num(s.timestamp) || sample.at;
              sample.lastPacketAt = num(s.lastPacketReceivedTimestamp);
              sample.packetsReceived += num(s.packetsReceived);
              sample.packetsLost += num(s.packetsLost);
              sample.jitter = Math.max(sample.jitter, num(s.jitter));
              sample.concealedSamples += num(s.concealedSamples);
              sample.totalSamplesReceived += num(s.totalSamplesReceived);
            }
          });
          (await snd.getStats()).forEach((s) => {
            if (s.type === 'outbound-rtp' && (s.kind ?? s.mediaType) === 'audio') {
              sample.packetsSent += num(s.packetsSent);
            }
          });
          calls.push(sample);
        } catch {
          failed++;
        }
      });
    }
  }
  // a bounded number of getStats() in flight: each walks two peer connections' stats
  let i = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (i < jobs.length) {
        await jobs[i++]!();
      }
    }),
  );

  return { calls, failed, tookMs: Math.round(performance.now() - t0) };
}

let dialCursor = 0;

/** Has up to `count` idle agents (no call, not dialling) dial `to`; resolves with the calls started. */
function dialOut(count: number, to: string): Promise<{ started: number }> {
  const all: { a: Dialler; dial: () => Promise<{ id?: string; callId?: string }> }[] = [
    ...agents.map((a) => ({ a, dial: () => a.client.dial(to) })),
    ...signalingAgents.map((a) => ({ a, dial: () => a.signaling.request('call.dial', { to }) })),
  ];
  let started = 0;
  for (let i = 0; i < all.length && started < count; i++) {
    const { a, dial } = all[(dialCursor + i) % all.length]!;
    if (a.calls.size === 0 && a.ringing.size === 0 && !a.out) {
      startDial(a, dial);
      started++;
    }
  }
  dialCursor = (dialCursor + started) % Math.max(1, all.length);
  counters.dialNoIdle += count - started;

  return Promise.resolve({ started });
}

async function hangupAll(): Promise<{ hungUp: number; failed: number }> {
  let hungUp = 0;
  let failed = 0;
  await Promise.all([
    ...agents.flatMap((a) =>
      [...a.calls].map((callId) =>
        a.client.hangup(callId).then(
          () => hungUp++,
          () => failed++,
        ),
      ),
    ),
    ...signalingAgents.flatMap((a) =>
      [...a.calls].map((callId) =>
        a.signaling.request('call.hangup', { callId }).then(
          () => hungUp++,
          () => failed++,
        ),
      ),
    ),
  ]);

  return { hungUp, failed };
}

function shutdown(code: number): void {
  clearInterval(toneTimer);
  clearInterval(tickTimer);
  for (const t of callTimers.keys()) {
    clearCall(t);
  }
  for (const a of agents) {
    try {
      a.client.close();
    } catch {
      // closing anyway
    }
  }
  for (const a of signalingAgents) {
    try {
      a.signaling.close();
    } catch {
      // closing anyway
    }
  }
  // let the peer connections' close callbacks run; @roamhq/wrtc may not let the process end
  setTimeout(() => process.exit(code), 200).unref();
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 3000).unref();
}

process.on('message', (raw: ToWorker) => {
  const reply = (p: Promise<unknown>): void => {
    p.then(
      (data) => send({ type: 'reply', id: raw.id, ok: true, data }),
      (err: unknown) => send({ type: 'reply', id: raw.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  };
  switch (raw.type) {
    case 'start':
      reply(start(raw));
      break;
    case 'stats':
      reply(stats());
      break;
    case 'hangup-all':
      reply(hangupAll());
      break;
    case 'dial':
      reply(dialOut(raw.count, raw.to));
      break;
    case 'stop':
      send({ type: 'reply', id: raw.id, ok: true });
      shutdown(0);
      break;
  }
});
process.on('disconnect', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));

loop.enable();
const tickTimer = setInterval(() => {
  send({ type: 'tick', counters: { ...counters, setupMs: counters.setupMs }, loopDelayP99Ms: loop.percentile(99) / 1e6, loopDelayMaxMs: loop.max / 1e6 });
  counters.setupMs = [];
  counters.dialPddMs = [];
  counters.dialAnswerMs = [];
  loop.reset();
}, 1000);

