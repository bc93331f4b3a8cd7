/**
 * A real WebRTC agent inside the test process: the client SDK (src/client) on @roamhq/wrtc, with
 * the `ws` WebSocket and mediasoup-client's 'Chrome111' handler, sending a generated sine tone so
 * that calls carry real RTP.
 *
 * - The tone comes from a `nonstandard.RTCAudioSource` fed 10 ms frames of 16-bit mono samples
 *   (8 kHz or 48 kHz) by a timer; every call gets a fresh track of that source (the SDK stops it
 *   when the call ends).
 * - `waitForEvent()` also sees events that fired before it was called and that no earlier
 *   `waitForEvent()` took, so "act, then wait" has no race.
 * - `close()` closes the client (which closes every call's transports, hence their peer
 *   connections) and stops the feeding timer. @roamhq/wrtc may still keep a process alive after
 *   that (docs/webrtc-agent-in-node.md); vitest's forks end their process, so tests do not hang,
 *   but scripts using this helper should exit explicitly.
 */
import wrtc from '@roamhq/wrtc';
import { WebSocket } from 'ws';
import { RingbridgeClient, type AudioTrack, type ReconnectPolicy, type RingbridgeClientEvents, type SessionInfo, type TokenSource } from '../../src/client/index.js';

/** Options of startNodeAgent(). */
export interface NodeAgentOptions {
  /** The gateway's (or a test server's) ws:// URL. */
  url: string;
  /** The agent's token (or a function returning one). */
  token: TokenSource;
  /** Frequency of the generated tone in Hz (default 440). */
  toneHz?: number;
  /** Sample rate of the generated audio (default 48000). */
  sampleRate?: 8000 | 48000;
  /** Answer every incoming call at once (default false). */
  autoAnswer?: boolean;
  /** Request timeout of the client in ms (default 5000). */
  requestTimeoutMs?: number;
  /** Reconnect policy of the client (default: the SDK's). */
  reconnect?: false | ReconnectPolicy;
  /** The device id the client sends in auth. */
  deviceId?: string;
  /** Connect before resolving (default true). */
  connect?: boolean;
}

/** A recorded client event. */
export interface RecordedEvent {
  name: keyof RingbridgeClientEvents;
  args: unknown[];
  taken: boolean;
}

/** RTP packet counts of a call, from its transports' stats. */
export interface PacketCounts {
  received: number;
  sent: number;
}

/** An agent running in this process. */
export interface NodeAgent {
  client: RingbridgeClient;
  /** The auth response (undefined when started with `connect: false`). */
  session: SessionInfo | undefined;
  /** Every event the client emitted, in order. */
  events: RecordedEvent[];
  /** Errors from auto-answering. */
  answerErrors: unknown[];
  /**
   * Resolves with the first argument of the first matching event not taken by an earlier call
   * (including events that fired before this call); rejects after `timeoutMs` (default 5000).
   */
  waitForEvent<K extends keyof RingbridgeClientEvents>(name: K, predicate?: (...args: RingbridgeClientEvents[K]) => boolean, timeoutMs?: number): Promise<RingbridgeClientEvents[K][0]>;
  /** RTP packets received and sent on the call's transports. */
  packetCounts(callId: string): Promise<PacketCounts>;
  /** Closes the client, every peer connection and the tone timer. Idempotent. */
  close(): Promise<void>;
}

const EVENT_NAMES: (keyof RingbridgeClientEvents)[] = [
  'incoming',
  'cancelled',
  'progress',
  'answered',
  'held',
  'resumed',
  'dtmf',
  'recording',
  'consult',
  'track',
  'ended',
  'presence',
  'wakecancelled',
  'connectionstatechange',
  'error',
];

/** Starts an agent (and connects it unless `connect: false`). */
export async function startNodeAgent(opts: NodeAgentOptions): Promise<NodeAgent> {
  const tone = startTone(opts.toneHz ?? 440, opts.sampleRate ?? 48000);
  const client = new RingbridgeClient({
    url: opts.url,
    token: opts.token,
    ...(opts.deviceId ? { deviceId: opts.deviceId } : {}),
    WebSocket,
    webrtc: wrtc,
    handlerName: 'Chrome111',
    getAudioTrack: () => Promise.resolve(tone.createTrack()),
    requestTimeoutMs: opts.requestTimeoutMs ?? 5000,
    reconnect: opts.reconnect,
  });
  const events: RecordedEvent[] = [];
  const waiters = new Set<(e: RecordedEvent) => boolean>();
  const answerErrors: unknown[] = [];
  for (const name of EVENT_NAMES) {
    client.on(name, (...args: unknown[]) => {
      const e: RecordedEvent = { name, args, taken: false };
      events.push(e);
      for (const w of [...waiters]) {
        if (w(e)) {
          break;
        }
      }
    });
  }
  if (opts.autoAnswer) {
    client.on('incoming', ({ call }) => {
      client.answer(call.id).catch((err: unknown) => answerErrors.push(err));
    });
  }

  let closed = false;
  const agent: NodeAgent = {
    client,
    session: undefined,
    events,
    answerErrors,
    waitForEvent(name, predicate, timeoutMs = 5000) {
      type Arg = RingbridgeClientEvents[typeof name][0];
      const matches = (e: RecordedEvent): boolean => !e.taken && e.name === name && (!predicate || (predicate as (...a: unknown[]) => boolean)(...e.args));
      const past = events.find(matches);
      if (past) {
        past.taken = true;

        return Promise.resolve(past.args[0] as Arg);
      }

      return new Promise<Arg>((resolve, reject) => {
        const waiter = (e: RecordedEvent): boolean => {
          if (!matches(e)) {
            return false;
          }
          e.taken = true;
          waiters.delete(waiter);
          clearTimeout(timer);
          resolve(e.args[0] as Arg);

          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no '${name}' event within ${timeoutMs} ms; events so far: ${events.map((e) => e.name).join(', ')}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    async packetCounts(callId) {
      const call = client.call(callId);
      if (!call) {
        throw new Error(`the agent has no call ${callId}`);
      }
      const stats = await call.getStats();

      return { received: stats.packetsReceived, sent: stats.packetsSent };
    },
    async close() {
      if (closed) {
        return;
      }
      closed = true;
      client.close();
      tone.stop();
      // let the peer connections' close callbacks run
      await new Promise((r) => setTimeout(r, 20));
    },
  };
  if (opts.connect !== false) {
    try {
      agent.session = await client.connect();
    } catch (err) {
      await agent.close();
      throw err;
    }
  }

  return agent;
}

interface Tone {
  createTrack(): AudioTrack;
  stop(): void;
}

/** An RTCAudioSource fed a sine tone in 10 ms frames of 16-bit mono samples. */
function startTone(hz: number, sampleRate: number): Tone {
  const source = new wrtc.nonstandard.RTCAudioSource();
  const frame = sampleRate / 100;
  let n = 0;
  const timer = setInterval(() => {
    const samples = new Int16Array(frame);
    for (let i = 0; i < frame; i++, n++) {
      samples[i] = Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * hz * n) / sampleRate));
    }
    n %= sampleRate;
    source.onData({ samples, sampleRate, bitsPerSample: 16, channelCount: 1, numberOfFrames: frame });
  }, 10);

  return {
    createTrack: () => source.createTrack() as AudioTrack,
    stop: () => clearInterval(timer),
  };
}
