/**
 * A call as a state machine. The call layer (call-manager.ts) drives it; this module keeps the
 * state, the transitions that are allowed, the timestamps of the call record and the ending.
 *
 *   inbound:  ringing ─answer→ answering ─200 sent→ active ⇄ held ─→ ended
 *   outbound: dialing ─18x→ early ─200→ active ⇄ held ─→ ended
 *   any state ─→ ended (exactly once, with one end reason)
 *
 * Call centre (call-centre.ts): an established call (trunk dialog up) can be offered anew —
 * active/held ─transfer→ ringing ─answer→ answering → active — or wait in a queue —
 * active ─→ queued ⇄ ringing (offered to the next free agent, back to the queue unanswered);
 * queued ─→ active for a queue fallback to a number (two trunk legs bridged, no agent).
 */
import { randomUUID } from 'node:crypto';
import type Srf from 'drachtio-srf';
import { type CallInfo, type EndReason } from '../signaling/protocol.js';
import { type TrunkConfig } from '../sip/trunks.js';
import { type Device } from '../state/store.js';
import { type CallQualitySampler, type QualitySummary } from './quality.js';
import { type CallMedia } from './call-media.js';

/** States of a call. */
export type CallState = 'ringing' | 'answering' | 'dialing' | 'early' | 'active' | 'held' | 'queued' | 'ended';

const TRANSITIONS: Record<CallState, CallState[]> = {
  ringing: ['answering', 'queued', 'ended'],
  answering: ['active', 'ended'],
  dialing: ['early', 'active', 'ended'],
  early: ['active', 'ended'],
  active: ['held', 'ringing', 'queued', 'ended'],
  held: ['active', 'ringing', 'queued', 'ended'],
  queued: ['ringing', 'active', 'ended'],
  ended: [],
};

/** Thrown for a transition the state machine does not allow (a bug, or a request at the wrong time). */
export class CallStateError extends Error {
  override readonly name = 'CallStateError';
}

/** A hand-off leg: the INVITE this node sent to another node to ring agents connected there. */
export interface RemoteLeg {
  node: string;
  agents: string[];
  /** The INVITE sent (for CANCEL), once srf reports it. */
  req: Srf.SrfRequest | undefined;
  /** CANCEL wanted (sent as soon as the request is known). */
  cancelled: boolean;
  /** A final response came (or the leg was given up). */
  done: boolean;
}

/** One call between a trunk and an agent. */
export class Call {
  readonly id: string;
  readonly direction: 'inbound' | 'outbound';
  readonly trunk: TrunkConfig;
  readonly from: { number: string; name?: string };
  readonly to: { number: string };
  /** SIP Call-ID of the trunk leg (for logs). */
  sipCallId = '';
  #state: CallState;
  /** Agents currently rung (inbound) and those who declined. */
  readonly ringing = new Set<string>();
  readonly declined = new Set<string>();
  /** Declines that gave "busy" (all busy → 486, else 603). */
  busyDeclines = 0;
  /** longest-idle: agents still to ring, in order. */
  ringQueue: { agentId: string; local: boolean; nodes: string[]; wake?: Device[] }[] | undefined;
  /** Agents woken by push for this call, not connected yet: agentId → when the pushes left (ms). */
  readonly waking = new Map<string, number>();
  /** Polls the cluster for woken agents' new sessions while the call rings. */
  wakePoll: NodeJS.Timeout | undefined;
  /** Samples the media's quality while the call is up (on the node that holds the media). */
  quality: CallQualitySampler | undefined;
  /** The quality summary, once the call ended. */
  qualitySummary: QualitySummary | undefined;
  /** The agent on the call (answered inbound, or dialling outbound). */
  agentId: string | undefined;
  /** The agent's session that answered or dialled the call: its WebRTC media lives there. */
  sessionId: string | undefined;
  /** The trunk's dialog runs over TLS: only then are SDES keys (a=crypto) sent or accepted (RFC 4568 §8.3). */
  signalingSecure = false;
  /** The trunk leg is SDES-SRTP: the call rings only agents of this node (no hand-off leg carries its keys). */
  srtp = false;
  media: CallMedia | undefined;
  /** Inbound: the trunk's INVITE until answered; outbound: the INVITE sent. */
  inviteReq: Srf.SrfRequest | undefined;
  inviteRes: Srf.SrfResponse | undefined;
  dialog: Srf.Dialog | undefined;
  /** Our last SDP in the trunk dialog (for re-offers and re-answers, RFC 3264 §8). */
  localSdp = '';
  /** Hold state per side. */
  heldLocal = false;
  heldRemote = false;
  muted = false;
  /** Offered anew by call.transfer: the agent who passed the call on (call-centre.ts). */
  transferredBy: string | undefined;
  /** Waiting in (or offered from) a group's queue: the group and when the call joined it (ms since the epoch). */
  queue: { groupId: string; since: number } | undefined;
  /** The ring timer of a call offered anew (cleared when it is answered or given up). */
  reofferTimer: NodeJS.Timeout | undefined;
  readonly timers = new Set<NodeJS.Timeout>();
  readonly times: { offeredAt: Date; ringingAt?: Date; answeredAt?: Date; endedAt?: Date };
  end?: { reason: EndReason; by: 'local' | 'remote' | 'system'; sipStatus?: number };
  /** A call handed to this node by another (its trunk-side SIP leg is that node): its id. */
  origin: string | undefined;
  /** Hand-off legs ringing agents on other nodes, by node id. */
  readonly legs = new Map<string, RemoteLeg>();
  /**
   * Answered on another node: that node, its agent, and our dialog with it (no media here); until
   * a late-offer leg is ACKed, `release` abandons it instead.
   */
  remote: { node: string; agentId: string; dialog: Srf.Dialog | undefined; release: (() => void) | undefined } | undefined;
  /** Legs to agents' SIP devices (device-ringer.ts), when any was rung; ended with the call. */
  devices: { readonly ringing: boolean; readonly answered: boolean; cancel(answeredElsewhere: boolean): void; end(): void } | undefined;
  /** When the inbound call stops ringing (ms since the epoch). */
  ringDeadline: number | undefined;
  /** Since when the call depends on another node (ms since the epoch). */
  peerSince: number | undefined;
  /**
   * The runs (registry `startedAt`) of the other nodes this call depends on, as they were when it
   * started to: a node that restarted under the same id no longer holds its side of the call.
   */
  readonly peerRuns = new Map<string, string>();

  constructor(init: { id?: string; direction: 'inbound' | 'outbound'; trunk: TrunkConfig; from: { number: string; name?: string }; to: { number: string } }) {
    this.id = init.id ?? randomUUID();
    this.direction = init.direction;
    this.trunk = init.trunk;
    this.from = init.from;
    this.to = init.to;
    this.#state = init.direction === 'inbound' ? 'ringing' : 'dialing';
    this.times = { offeredAt: new Date() };
  }

  /** Current state. */
  get state(): CallState {
    return this.#state;
  }

  /**
   * Moves to a state.
   * @throws {CallStateError} when the transition is not allowed
   */
  transition(to: CallState): void {
    if (!TRANSITIONS[this.#state].includes(to)) {
      throw new CallStateError(`call ${this.id}: ${this.#state} → ${to} is not allowed`);
    }
    this.#state = to;
    if ((to === 'active' && !this.times.answeredAt) || (to === 'answering' && !this.times.answeredAt)) {
      this.times.answeredAt = new Date();
    }
  }

  /** The other node this call depends on (origin or remote), if any. */
  get peerNode(): string | undefined {
    return this.origin ?? this.remote?.node;
  }

  /** Whether a hand-off leg or a SIP device leg is still ringing. */
  get legsRinging(): boolean {
    if (this.devices?.ringing) {
      return true;
    }
    for (const l of this.legs.values()) {
      if (!l.done) {
        return true;
      }
    }

    return false;
  }

  /** Whether the call can still change (not ended). */
  get live(): boolean {
    return this.#state !== 'ended';
  }

  /** Starts a timer owned by the call (cleared when it ends). */
  timer(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);

    return t;
  }

  /**
   * Ends the call once; later calls return false. Clears the call's timers and closes its media.
   * @returns whether this call ended it
   */
  finish(reason: EndReason, by: 'local' | 'remote' | 'system', sipStatus?: number): boolean {
    if (this.#state === 'ended') {
      return false;
    }
    this.#state = 'ended';
    this.end = { reason, by, ...(sipStatus !== undefined ? { sipStatus } : {}) };
    this.times.endedAt = new Date();
    for (const t of this.timers) {
      clearTimeout(t);
    }
    this.timers.clear();
    this.devices?.end();
    this.media?.close();

    return true;
  }

  /** The call as the protocol lists it. */
  info(): CallInfo {
    const state: CallInfo['state'] =
      this.#state === 'answering' ? 'active' : this.#state === 'queued' ? 'ringing' : this.#state === 'ringing' || this.#state === 'dialing' || this.#state === 'early' || this.#state === 'active' || this.#state === 'held' || this.#state === 'ended' ? this.#state : 'active';

    return {
      callId: this.id,
      direction: this.direction,
      state,
      from: this.from,
      to: this.to,
      trunkId: this.trunk.id,
      startedAt: this.times.offeredAt.toISOString(),
      ...(this.times.answeredAt ? { answeredAt: this.times.answeredAt.toISOString() } : {}),
      ...(this.transferredBy ? { transferredBy: this.transferredBy } : {}),
      ...(this.queue ? { queue: this.queue.groupId } : {}),
    };
  }
}
