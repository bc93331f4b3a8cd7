/**
 * ClientCall: one call as this agent sees it. The client owns each call's mutable record and
 * updates it from the gateway's events; applications read it through ClientCall's getters.
 */
import type { CallCodec, CallInfo, EndReason } from '../signaling/protocol.js';
import { RingbridgeError } from './errors.js';
import type { CallMedia } from './media.js';
import type { AudioTrack, CallStats } from './types.js';

/** A call's state, as in the protocol's CallInfo. */
export type CallState = CallInfo['state'];

/** How a call ended. */
export interface CallEnding {
  reason: EndReason;
  /** Who ended it: this agent, the trunk side, or the gateway. */
  by: 'local' | 'remote' | 'system';
  /** The SIP status when a SIP response ended it. */
  sipStatus?: number;
  /** When the client learnt of the end. */
  endedAt: Date;
}

/** @internal The client's mutable state of one call. */
export interface CallRecord {
  callId: string;
  direction: CallInfo['direction'];
  state: CallState;
  from: CallInfo['from'];
  to: CallInfo['to'];
  trunkId: string;
  startedAt: string;
  answeredAt: string | undefined;
  ringTimeoutMs: number | undefined;
  codec: CallCodec | undefined;
  media: CallMedia | undefined;
  /** The agent's track, until a producer owns it (outbound calls wait for call.media). */
  pendingTrack: AudioTrack | undefined;
  /** Outbound: produce/consume started once the codec and the transports were both there. */
  mediaStarted: boolean;
  /** Outbound: media.consume was refused before the answer; try again on call.answered. */
  consumeOnAnswer: boolean;
  muted: boolean;
  heldLocally: boolean;
  ending: CallEnding | undefined;
  /** Offered anew by call.transfer: the agent who passed it on. */
  transferredBy: string | undefined;
  /** Offered from a group's queue: the group. */
  queue: string | undefined;
}

/** @internal A fresh record from what the gateway told us. */
export function newCallRecord(info: Partial<CallInfo> & Pick<CallInfo, 'callId' | 'direction'>): CallRecord {
  return {
    callId: info.callId,
    direction: info.direction,
    state: info.state ?? (info.direction === 'inbound' ? 'ringing' : 'dialing'),
    from: info.from ?? { number: '' },
    to: info.to ?? { number: '' },
    trunkId: info.trunkId ?? '',
    startedAt: info.startedAt ?? new Date().toISOString(),
    answeredAt: info.answeredAt,
    transferredBy: info.transferredBy,
    queue: info.queue,
    ringTimeoutMs: undefined,
    codec: undefined,
    media: undefined,
    pendingTrack: undefined,
    mediaStarted: false,
    consumeOnAnswer: false,
    muted: false,
    heldLocally: false,
    ending: undefined,
  };
}

/**
 * One call of this agent. Get it from the client's events, `dial()`, `answer()` or
 * `client.call(callId)`; act on it through the client (`client.hangup(call.id)`, ...).
 */
export class ClientCall {
  readonly #rec: CallRecord;

  /** @internal Created by RingbridgeClient only. */
  constructor(record: CallRecord) {
    this.#rec = record;
  }

  /** The gateway's call id. */
  get id(): string {
    return this.#rec.callId;
  }

  /** 'inbound' (trunk → agent) or 'outbound' (agent → trunk). */
  get direction(): CallInfo['direction'] {
    return this.#rec.direction;
  }

  /** 'ringing' | 'dialing' | 'early' | 'active' | 'held' | 'ended'. */
  get state(): CallState {
    return this.#rec.state;
  }

  /** The caller. */
  get from(): CallInfo['from'] {
    return this.#rec.from;
  }

  /** The called number. */
  get to(): CallInfo['to'] {
    return this.#rec.to;
  }

  /** The other party: the caller of an inbound call, the called number of an outbound one. */
  get remote(): { number: string; name?: string } {
    return this.#rec.direction === 'inbound' ? this.#rec.from : this.#rec.to;
  }

  /** The trunk the call runs over ('' until the gateway says). */
  get trunkId(): string {
    return this.#rec.trunkId;
  }

  /** The audio codec (inbound: from the answer; outbound and late-offer inbound: from `call.media`), once known. */
  get codec(): CallCodec | undefined {
    return this.#rec.codec;
  }

  /** The trunk's audio as a track, once consumed (see the client's 'track' event). */
  get remoteTrack(): AudioTrack | undefined {
    return this.#rec.media?.remoteTrack;
  }

  /** The agent's audio track being sent, once produced (disabled while muted or held). */
  get localTrack(): AudioTrack | undefined {
    return this.#rec.media?.localTrack;
  }

  /** Whether this agent muted the call. */
  get muted(): boolean {
    return this.#rec.muted;
  }

  /** How long the call rings this agent, in ms (from `call.incoming`). */
  get ringTimeoutMs(): number | undefined {
    return this.#rec.ringTimeoutMs;
  }

  /** When the gateway started the call (ISO 8601). */
  get startedAt(): string {
    return this.#rec.startedAt;
  }

  /** When it was answered (ISO 8601), if it was. */
  get answeredAt(): string | undefined {
    return this.#rec.answeredAt;
  }

  /** For a call offered anew by a blind transfer: the agent who transferred it. */
  get transferredBy(): string | undefined {
    return this.#rec.transferredBy;
  }

  /** For a call offered from a group's queue: that group. */
  get queue(): string | undefined {
    return this.#rec.queue;
  }

  /** How the call ended, once it has. */
  get ending(): CallEnding | undefined {
    return this.#rec.ending;
  }

  /**
   * RTP counters of the call's transports.
   * @throws {RingbridgeError} INVALID_STATE when the call has no media (not answered here, or ended)
   */
  async getStats(): Promise<CallStats> {
    const media = this.#rec.media;
    if (!media || media.closed) {
      throw new RingbridgeError('INVALID_STATE', `call ${this.#rec.callId} has no media`, { callId: this.#rec.callId });
    }

    return media.getStats();
  }

  /** A plain snapshot for logs. */
  toJSON(): Record<string, unknown> {
    const { callId, direction, state, trunkId, codec, muted, ending } = this.#rec;

    return { callId, direction, state, trunkId, codec, muted, ending };
  }
}
