/**
 * Messages between the calls benchmark and its agent processes (agent-worker.ts), over the Node
 * IPC channel of each child. The parent asks, the child answers with the same `id`; the child
 * also sends a `tick` every second on its own.
 */

/** How the agents of one process make their tone. */
export type ToneMode = 'shared' | 'per-agent';

/**
 * How the agents take calls (the load runner's scenarios). Without it an agent answers every call
 * at once, keeps it until told to hang up (`hangup-all`) and every agent has WebRTC media.
 */
export interface AgentBehaviour {
  /** Ring time: incoming → answer, ms. */
  answerDelayMs: number;
  /** Talk time: answered → the agent hangs up, ms (0: never). */
  talkMs: number;
  /** Share of calls (0..1) the agent puts on hold at a third of the talk time and resumes at two thirds. */
  holdShare: number;
  /** Share of calls (0..1) in which the agent sends DTMF digits (`1234#`) at five sixths of the talk time. */
  dtmfShare: number;
  /**
   * Share of this process's agents (0..1, the first ones) with real WebRTC media; the others are
   * signaling only: they answer and hang up over the WebSocket and never open media transports.
   */
  mediaShare: number;
}

/** Parent → child. */
export type ToWorker =
  | {
      type: 'start';
      id: number;
      /** ws:// URL of the gateway's /ws. */
      url: string;
      /** HS256 secret the agents sign their tokens with. */
      secret: string;
      agentIds: string[];
      tone: ToneMode;
      /** Sample rate of the generated tone (8000 avoids resampling for G.711). */
      sampleRate: 8000 | 48000;
      /** How many agents connect at once. */
      connectConcurrency: number;
      requestTimeoutMs: number;
      /** Scenario behaviour (load runner); absent: answer at once, WebRTC media for every agent. */
      behaviour?: AgentBehaviour;
    }
  | {
      /** Outbound calls: `count` idle agents dial `to` (load runner; needs a behaviour for the talk). */
      type: 'dial';
      id: number;
      count: number;
      to: string;
    }
  | { type: 'stats'; id: number }
  | { type: 'hangup-all'; id: number }
  | { type: 'stop'; id: number };

/**
 * RTP counters of one call at one moment, read from its two peer connections' own stats (the
 * SDK's getStats() sums drop the time stamps the benchmark needs).
 */
export interface CallSample {
  callId: string;
  agentId: string;
  /** libwebrtc's time of the inbound-rtp stats, ms since the epoch. */
  at: number;
  /** When the last RTP packet of the trunk's audio arrived, ms since the epoch (0: none yet). */
  lastPacketAt: number;
  packetsReceived: number;
  /**
   * libwebrtc's cumulative loss. It misses burst loss: a gap of more than a few packets counts as
   * a stream restart (ReceiveStatistics' max_reordering_threshold), not as loss.
   */
  packetsLost: number;
  /** Inbound jitter, seconds (RFC 3550, from libwebrtc). */
  jitter: number;
  /** Samples NetEq had to conceal (played without audio), cumulative. */
  concealedSamples: number;
  /** Samples NetEq put out, cumulative, at its own output rate (the denominator of concealedSamples). */
  totalSamplesReceived: number;
  packetsSent: number;
  sendState: string;
  recvState: string;
}

/** Counters of one agent process since it started. */
export interface WorkerCounters {
  agents: number;
  /** Agents whose signaling session is up. */
  connected: number;
  incoming: number;
  answered: number;
  answerErrors: number;
  /** Error codes of failed answers, counted. */
  answerErrorCodes: Record<string, number>;
  ended: number;
  /** End reasons, counted. */
  endReasons: Record<string, number>;
  /** Calls answered and not yet ended. */
  activeCalls: number;
  /** Most calls one agent of this process had at the same time (1 expected). */
  maxCallsPerAgent: number;
  /** Answers given while the agent already had a live call. */
  doubleBooked: number;
  /** Times an agent's session went to `reconnecting`. */
  reconnects: number;
  /** Other client errors, counted by code (failed hold, resume, DTMF and hang-up requests as `hold:CODE`, ...). */
  errors: Record<string, number>;
  /** Calls the agents hung up themselves after the talk time. */
  hungUp: number;
  /** Holds and resumes done, DTMF requests sent. */
  holds: number;
  dtmf: number;
  /** Agents with WebRTC media / signaling only. */
  mediaAgents: number;
  signalingAgents: number;
  /** Outbound calls dialled, answered by the trunk, failed (call.dial refused or ended before the answer). */
  dialed: number;
  dialAnswered: number;
  dialFailed: number;
  /** Dial asked but no idle agent to dial with. */
  dialNoIdle: number;
  /** call.dial → first call.progress (post-dial delay) and → call.answered, ms, since the last tick. */
  dialPddMs: number[];
  dialAnswerMs: number[];
  /** incoming → answer() resolved (media flowing), ms, of answers since the last tick. */
  setupMs: number[];
}

/** Counters at zero (a new agent process; the pool's sum before adding them up). */
export function emptyCounters(): WorkerCounters {
  return {
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
    hungUp: 0,
    holds: 0,
    dtmf: 0,
    mediaAgents: 0,
    signalingAgents: 0,
    dialed: 0,
    dialAnswered: 0,
    dialFailed: 0,
    dialNoIdle: 0,
    dialPddMs: [],
    dialAnswerMs: [],
  };
}

/** Child → parent. */
export type FromWorker =
  | { type: 'reply'; id: number; ok: true; data?: unknown }
  | { type: 'reply'; id: number; ok: false; error: string }
  | {
      type: 'tick';
      counters: WorkerCounters;
      /** Event-loop delay of the agent process over the last second, ms. */
      loopDelayP99Ms: number;
      loopDelayMaxMs: number;
    };

/** Reply data of `stats`. */
export interface StatsReply {
  calls: CallSample[];
  /** Calls whose stats could not be read (ended meanwhile). */
  failed: number;
  /** How long reading took, ms. */
  tookMs: number;
}
