/**
 * One agent process of the calls benchmark: K agents on the client SDK (src/client) with real
 * WebRTC media (@roamhq/wrtc, mediasoup-client's Chrome111 handler), each signed in with its own
 * HS256 token, answering every call at once, sending a sine tone and receiving the trunk's audio.
 *
 * Started by agent-pool.ts with an IPC channel; never run by hand. Messages: ipc.ts. The process
 * exits on `stop`, when the IPC channel closes (the benchmark died) and on SIGTERM; @roamhq/wrtc
 * can keep a process alive after everything is closed, so it always ends with process.exit().
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
import { type CallSample, type FromWorker, type StatsReply, type ToWorker, type WorkerCounters } from './ipc.js';

interface Agent {
  id: string;
  client: RingbridgeClient;
  source: ToneSource;
  /** Live calls of this agent (answered, not ended). */
  calls: Set<string>;
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

const counters: WorkerCounters = {
  agents: 0,
  connected: 0,
  incoming: 0,
  answered: 0,
  answerErrors: 0,
  answerErrorCodes: {},
  ended: 0,
  endReasons: {},
  activeCalls: 0,
  maxCallsPerAgent: 0,
  doubleBooked: 0,
  reconnects: 0,
  errors: {},
  setupMs: [],
};
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
  const agent: Agent = { id, client, source, calls: new Set() };
  client.on('incoming', ({ call }) => {
    counters.incoming++;
    const t0 = performance.now();
    if (agent.calls.size > 0) {
      counters.doubleBooked++;
    }
    client.answer(call.id).then(
      (c) => {
        if (c.state === 'ended') {
          return;
        }
        counters.answered++;
        counters.setupMs.push(Math.round(performance.now() - t0));
        agent.calls.add(c.id);
        counters.activeCalls++;
        counters.maxCallsPerAgent = Math.max(counters.maxCallsPerAgent, agent.calls.size);
      },
      (err: unknown) => {
        counters.answerErrors++;
        bump(counters.answerErrorCodes, isRingbridgeError(err) ? err.code : String((err as Error).message).slice(0, 60));
      },
    );
  });
  client.on('ended', ({ call, reason }) => {
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
  for (const id of msg.agentIds) {
    let source = shared;
    if (!source) {
      source = { source: new wrtc.nonstandard.RTCAudioSource() };
      sources.push(source);
    }
    agents.push(makeAgent(id, msg, source));
  }
  counters.agents = agents.length;
  startTone(msg.sampleRate);
  // connect a few at a time: a burst of hundreds of WebSocket sign-ins is not what we measure
  let next = 0;
  const failures: string[] = [];
  const worker = async (): Promise<void> => {
    while (next < agents.length) {
      const a = agents[next++]!;
      try {
        await a.client.connect();
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

async function hangupAll(): Promise<{ hungUp: number; failed: number }> {
  let hungUp = 0;
  let failed = 0;
  await Promise.all(
    agents.flatMap((a) =>
      [...a.calls].map((callId) =>
        a.client.hangup(callId).then(
          () => hungUp++,
          () => failed++,
        ),
      ),
    ),
  );

  return { hungUp, failed };
}

function shutdown(code: number): void {
  clearInterval(toneTimer);
  clearInterval(tickTimer);
  for (const a of agents) {
    try {
      a.client.close();
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
  loop.reset();
}, 1000);

