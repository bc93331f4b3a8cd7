/**
 * Call-centre features on established trunk calls: offering a call anew (blind transfer to an
 * agent or a group, call.transfer), blind and attended (call.consult) transfer to a number, group
 * queues (routing.groups[].queue) and a trunk's REFER (RFC 3515, trunks[].refer). Each part's
 * decisions are written at its section below and in the README ("Transfers and queues").
 *
 * Single node vs. cluster: wake pushes for calls offered anew are sent only without a cluster
 * (with one, an agent's devices may hold sessions on other nodes, which a call anchored here
 * cannot ring).
 *
 * Offering anew. The trunk's dialog stays up and no SIP goes to the trunk: the agent's WebRTC
 * transports close (CallMedia.releaseAgent(), so the PlainTransport's consumer of the agent's
 * audio too), the call goes back to `ringing`, the targets get `call.incoming` (with
 * `transferredBy` or `queue`), and the agent who answers (`call.answer`, as for any call) gets new
 * transports in the same router: it consumes the trunk's producer and the PlainTransport consumes
 * its producer. Only agents with a session on this node are rung, plus wake pushes to agents with
 * no session anywhere (transfers only); no hand-off leg is opened, because a hand-off carries the
 * trunk's SDP to another node's router, while this call's media is anchored in this node's router
 * (moving it would take a re-INVITE toward the trunk). A woken agent that connects to another
 * node is therefore not rung for such a call.
 *
 * Blind transfer (agent or group). The transferring agent gets `call.ended {reason: transferred}`
 * at once. Nobody answers within calls.ringTimeoutMs (or everyone declines): the call is offered
 * back to the transferring agent once, if that agent is still connected and available; else a
 * transfer to a group with a queue waits in that queue; else the trunk gets a BYE with
 * `Reason: SIP;cause=480`. A target that nobody can take at once is refused (UNAVAILABLE) and the
 * call stays with the agent — except for a group with a queue, where the caller joins the queue.
 *
 * Blind transfer to a number. A UAC INVITE to the default trunk under the transferring agent's
 * dialling policy, offering the call's codec only (no transcoding), with a second RtpRelay and
 * PlainTransport in the call's router (CallMedia.create({router})); on the answer (or early media)
 * the two trunk producers are cross-consumed. Either dialog's BYE ends the other. A failed dial
 * offers the call back to the transferring agent once, else BYE with the failure in the Reason.
 *
 * Queues. A call to a group with a queue, while no member of the group is available, is answered
 * (200 OK: call centres answer, so that the wait is not bounded by the trunk's INVITE timers and
 * the caller hears the queue audio as an ordinary call) and joins the queue: a sorted set per group
 * in Redis scored by the time it joined (store.ts), so that the cluster shares one order and the
 * admin API shows each caller's position. Every QUEUE_TICK_MS, and when a call of this node ends,
 * this node walks its groups' queues in order and offers each of its own waiting callers to the
 * members available here (ring-all: all of them; longest-idle: the longest idle, for
 * calls.ringStepMs); an offer nobody answers puts the caller back in its place. Callers held by
 * other nodes are offered by those nodes (the media stays where it is), so across nodes the order
 * is kept per node: an agent on node B is never offered node A's caller. A caller who hangs up
 * leaves the queue (abandoned); after `maxWaitS` the configured fallback takes the call (timed out).
 * While waiting (and while offered) the caller hears the group's music through the media-rec
 * player (src/media/player.ts), consumed by the trunk's PlainTransport; the answering agent's
 * producer replaces it.
 */
import type Srf from 'drachtio-srf';
import { type Config } from '../config/schema.js';
import { buildOffer, negotiateFromAnswer, reanswer } from '../sip/sdp.js';
import { parseNameAddr, parseUri } from '../sip/engine/message.js';
import { type TrunkConfig, trunkUacOptions } from '../sip/trunks.js';
import { CallMedia, type CallMediaSettings } from './call-media.js';
import { type Logger } from '../log/logger.js';
import { type QueueMetrics, type QueueOutcome } from '../metrics/queue-metrics.js';
import { type AudioSource, defaultAudioSource, loadWavSource } from '../media/audio-source.js';
import { AudioPlayer } from '../media/player.js';
import { type AgentSession, SignalingError } from '../signaling/server.js';
import { type CancelReason, type EndReason, type RequestData, type ResponseData } from '../signaling/protocol.js';
import { type StateStore } from '../state/store.js';
import { type Call } from './call.js';
import { type PresenceService } from './presence.js';
import { type RingTarget, type RouteTarget } from './routing.js';

/**
 * The number a new trunk leg presents (From user): the trunk's outbound.callerId, else, for a
 * transfer, the trunk party who stays (the caller of an inbound call, the dialled number of an
 * outbound one); for a REFER, where our agent stays, our side's number (the DID called, or the
 * outbound call's own From).
 */
function presentedNumber(call: Call, trunk: TrunkConfig, refer = false): string {
  const inbound = call.direction === 'inbound';

  return trunk.outbound.callerId || (refer === inbound ? call.to.number : call.from.number);
}

/** How often each node offers its waiting callers to free agents, ms. */
export const QUEUE_TICK_MS = 500;

type GroupConfig = Config['routing']['groups'][number];
type QueueConfig = NonNullable<GroupConfig['queue']>;

/** What the call centre needs from the call layer (call-manager.ts). */
export interface CallCentreHost {
  /** Agents to ring for a route: sessions on this node and, when `wake`, pushes to agents with no session anywhere. */
  ringPlan(route: RouteTarget, wake: boolean): Promise<RingTarget[]>;
  /** Rings targets (call.incoming to sessions, wake pushes). */
  ringTargets(call: Call, targets: RingTarget[]): void;
  /** Takes a ringing call away from an agent (call.cancelled). */
  unring(call: Call, agentId: string, reason: CancelReason): void;
  /** The ring timeout of a call (ends in unanswered() through the call layer). */
  ringTimeout(call: Call): void;
  /** Sends an event to an agent's sessions. */
  emit(agentId: string, type: 'call.ended', data: { callId: string; reason: EndReason; by: 'local' | 'remote' | 'system'; sipStatus?: number }): void;
  emit(agentId: string, type: 'call.answered' | 'call.reconsume', data: { callId: string }): void;
  emit(agentId: string, type: 'call.consult', data: { callId: string; consultCallId: string; state: 'answered' | 'failed' | 'ended' | 'completed'; sipStatus?: number }): void;
  /** Ends the call toward the trunk (BYE with an RFC 3326 Reason) and for its agent. */
  hangupTrunk(call: Call, reason: EndReason, sipReason: string): void;
  /**
   * Answers a ringing inbound call toward the trunk (media, 200 OK) without an agent.
   * @throws when it cannot (the call is then ended)
   */
  answerTrunk(call: Call): Promise<void>;
  /** Live calls of this node. */
  calls(): Iterable<Call>;
  call(id: string): Call | undefined;
  /** Sessions of an agent on this node. */
  sessions(agentId: string): number;
  presence: PresenceService;
  /**
   * The trunk and Request-URI for a transfer to a number: the agent's dialling policy and rate as
   * for call.dial (`agentId` undefined: a configured fallback, not checked), the default trunk.
   * @throws {SignalingError} DIAL_POLICY, RATE_LIMITED, NO_ROUTE
   */
  dialTarget(agentId: string | undefined, to: string): Promise<{ trunk: TrunkConfig; ruri: string }>;
  /** Makes `dialog` the call's trunk dialog (REFER done): the old one is no longer watched; the new one is. */
  adoptDialog(call: Call, dialog: Srf.Dialog, localSdp: string): void;
}

/** Options of the call centre. */
export interface CallCentreOptions {
  config: Config;
  store: StateStore;
  logger: Logger;
  host: CallCentreHost;
  metrics?: QueueMetrics;
  /** For the UAC leg of a transfer to a number. */
  srf: Srf;
  /** Media settings: the second trunk leg's relay. */
  media: CallMediaSettings;
}

/** A transfer to a number: the second trunk leg (UAC) bridged with the caller's inside the call's router. */
interface NumberBridge {
  leg: CallMedia;
  trunk: TrunkConfig;
  /** Id the leg is counted under for the trunk's cap. */
  legId: string;
  req: Srf.SrfRequest | undefined;
  dialog: Srf.Dialog | undefined;
  /** Our last SDP in the leg's dialog. */
  localSdp: string;
  done: boolean;
  /** An attended transfer's consultation (call.consult): its id and the consulting agent; undefined: a bridge to the caller. */
  consult: { id: string; agentId: string } | undefined;
}

/** One waiting caller as the admin API lists it: no number. */
export interface QueuedCallInfo {
  callId: string;
  /** 1 = next to be offered. */
  position: number;
  /** Seconds since the caller joined the queue. */
  waitS: number;
  /** The node holding the call. */
  node: string;
}

/** Transfers and queues of one gateway node. */
export class CallCentre {
  readonly #cfg: Config;
  readonly #store: StateStore;
  readonly #log: Logger;
  readonly #host: CallCentreHost;
  readonly #metrics: QueueMetrics | undefined;
  readonly #groups: Map<string, GroupConfig>;
  /** Calls already offered back to their transferring agent (once only). */
  readonly #returned = new WeakSet<Call>();
  /** Calls transferred to a group with a queue: that group (they queue when nobody answers). */
  readonly #queueOnMiss = new WeakMap<Call, string>();
  /** The queue audio playing into each waiting call's router. */
  readonly #players = new Map<Call, AudioPlayer>();
  /** Transfers to a number in progress or connected. */
  readonly #bridges = new Map<Call, NumberBridge>();
  readonly #srf: Srf;
  readonly #media: CallMediaSettings;
  /** Trunk legs that replaced a referring dialog (REFER), counted against their trunk's cap. */
  readonly #referLegs = new Map<Call, { trunk: TrunkConfig; legId: string } | undefined>();
  /**
   * Calls whose call.transfer / call.consult is between its checks and its first state change
   * (awaiting the dialling policy, the trunk's cap, the media): a second request meanwhile is
   * refused, else both would pass their checks and two legs would be dialled for one call.
   */
  readonly #starting = new Set<Call>();
  /** This node's calls in each group's queue (waiting or being offered from it). */
  readonly #waiting = new Map<string, Set<Call>>();
  #tick: NodeJS.Timeout | undefined;
  #pumping = false;
  #again = false;

  constructor(opts: CallCentreOptions) {
    this.#cfg = opts.config;
    this.#store = opts.store;
    this.#log = opts.logger;
    this.#host = opts.host;
    this.#metrics = opts.metrics;
    this.#srf = opts.srf;
    this.#media = opts.media;
    this.#groups = new Map(opts.config.routing.groups.map((g) => [g.id, g]));
    this.#metrics?.bind(() => {
      const by = new Map<string, number>();
      for (const g of this.#groups.values()) {
        if (this.#queueOf(g.id)) {
          by.set(g.id, 0);
        }
      }
      for (const c of this.#host.calls()) {
        if (c.queue && c.live) {
          by.set(c.queue.groupId, (by.get(c.queue.groupId) ?? 0) + 1);
        }
      }

      return by;
    });
  }

  /**
   * Starts offering queued callers (when a queue is configured) and loads the queue audio files
   * once, so that an unusable file is reported at start (an error naming its key; those callers
   * then hear the built-in chime).
   */
  start(): void {
    if (!this.#tick && [...this.#groups.values()].some((g) => this.#queueOf(g.id))) {
      this.#tick = setInterval(() => void this.#pump(), QUEUE_TICK_MS);
      this.#tick.unref();
      for (const g of this.#groups.values()) {
        if (this.#queueOf(g.id)?.music) {
          this.#music(g.id).catch((err: unknown) => this.#log.error({ err }, 'queue audio file unusable; its callers hear the built-in chime'));
        }
      }
    }
  }

  /** The configuration key of a group's queue music. */
  #musicKey(groupId: string): string {
    return `routing.groups.${[...this.#groups.keys()].indexOf(groupId)}.queue.music`;
  }

  /** A group's queue audio: its music file, or the built-in chime when none is set. @throws {AudioSourceError} */
  async #music(groupId: string): Promise<AudioSource> {
    const file = this.#queueOf(groupId)?.music ?? '';

    return file === '' ? defaultAudioSource() : loadWavSource(file, this.#musicKey(groupId));
  }

  /**
   * Plays the group's queue audio to the caller (a player producer in the call's router, consumed
   * by the trunk's PlainTransport). Any failure (a codec the player does not encode, a bad file, a
   * late offer whose codec is not known yet) leaves the caller in silence; the call goes on.
   */
  async #startMusic(call: Call, groupId: string): Promise<void> {
    let source: AudioSource;
    try {
      source = await this.#music(groupId);
    } catch (err) {
      this.#log.error({ err, callId: call.id }, 'queue audio file unusable; playing the built-in chime');
      source = defaultAudioSource();
    }
    await this.#startPlayer(call, source, () => call.queue !== undefined);
  }

  /** Plays `source` to the caller while `wanted()` holds (queue or hold audio); failures leave silence. */
  async #startPlayer(call: Call, source: AudioSource, wanted: () => boolean): Promise<void> {
    const media = call.media;
    const codec = media?.codec;
    if (!media || !codec || this.#players.has(call)) {
      return;
    }
    try {
      const player = await AudioPlayer.create({ router: media.router, codec, source, logger: this.#log });
      if (!call.live || !wanted() || this.#players.has(call)) {
        player.close();

        return;
      }
      this.#players.set(call, player);
      player.onClose(() => {
        if (this.#players.get(call) === player) {
          this.#players.delete(call);
        }
      });
      await media.feedTrunk(player.producer.id);
    } catch (err) {
      this.#log.warn({ err, callId: call.id }, 'cannot play the queue audio; the caller waits in silence');
    }
  }

  #stopMusic(call: Call): void {
    const player = this.#players.get(call);
    this.#players.delete(call);
    player?.close();
  }

  /** Stops the queue tick. */
  stop(): void {
    clearInterval(this.#tick);
    this.#tick = undefined;
  }

  #queueOf(groupId: string): QueueConfig | undefined {
    const q = this.#groups.get(groupId)?.queue;

    return q?.enabled ? q : undefined;
  }

  /** Whether a group has an enabled queue. */
  hasQueue(groupId: string): boolean {
    return this.#queueOf(groupId) !== undefined;
  }

  /**
   * Whether a call may join a group's queue now: the queue is enabled and fewer than its
   * `maxCallers` wait in it on this node (a full queue refuses further callers, so that a flood
   * of calls cannot hold routers, relay ports and players without bound).
   */
  canQueue(groupId: string): boolean {
    const q = this.#queueOf(groupId);
    if (!q) {
      return false;
    }
    const waiting = this.#waiting.get(groupId)?.size ?? 0;
    if (waiting >= q.maxCallers) {
      this.#log.info({ group: groupId, waiting, max: q.maxCallers }, 'queue full: caller refused');

      return false;
    }

    return true;
  }

  #route(to: { agent: string } | { group: string }): RouteTarget {
    if ('agent' in to) {
      return { kind: 'agent', agentId: to.agent };
    }
    const g = this.#groups.get(to.group);
    if (!g) {
      throw new SignalingError('NOT_FOUND', `no group ${to.group}`);
    }

    return { kind: 'group', groupId: g.id, members: g.members, strategy: g.strategy };
  }

  // ----------------------------------------------------------------------------------------------
  // Blind transfer
  // ----------------------------------------------------------------------------------------------

  /**
   * call.transfer to an agent or a group (blind): checks that someone can take the call, takes the
   * agent's media away and rings the target(s).
   * @throws {SignalingError} INVALID_STATE (not an established call of the agent), BAD_REQUEST
   *   (to oneself), NOT_FOUND (unknown group), UNAVAILABLE (nobody can be rung and no queue),
   *   NO_ROUTE (a number: not supported yet)
   */
  async transfer(session: AgentSession, call: Call, data: RequestData<'call.transfer'>): Promise<ResponseData['call.transfer']> {
    if (data.consultCallId !== undefined) {
      if (this.#starting.has(call)) {
        throw new SignalingError('INVALID_STATE', `call ${call.id} has a transfer in progress`);
      }

      return this.#completeConsult(session, call, data.consultCallId);
    }
    const to = data.to!;
    if ((call.state !== 'active' && call.state !== 'held') || !call.media?.plan || !call.dialog) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} is not an established call (${call.state})`);
    }
    this.#claim(call);
    try {
      return await this.#transferTo(session, call, to);
    } finally {
      this.#starting.delete(call);
    }
  }

  /** Refuses a call with a transfer, consultation or REFER running or starting; else marks it starting. */
  #claim(call: Call): void {
    if (this.#bridges.has(call) || this.#referLegs.has(call) || this.#starting.has(call)) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} has a transfer in progress`);
    }
    this.#starting.add(call);
  }

  async #transferTo(session: AgentSession, call: Call, to: NonNullable<RequestData<'call.transfer'>['to']>): Promise<ResponseData['call.transfer']> {
    if ('number' in to) {
      return this.#toNumber(session, call, to.number);
    }
    if ('agent' in to && to.agent === session.agentId) {
      throw new SignalingError('BAD_REQUEST', 'cannot transfer a call to yourself');
    }
    const route = this.#route(to);
    const plan = (await this.#host.ringPlan(route, true)).filter((t) => t.agentId !== session.agentId);
    if (!call.live || call.agentId !== session.agentId || (call.state !== 'active' && call.state !== 'held')) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} changed meanwhile`);
    }
    const queueGroup = route.kind === 'group' && this.canQueue(route.groupId) ? route.groupId : undefined;
    if (plan.length === 0 && !queueGroup) {
      throw new SignalingError('UNAVAILABLE', route.kind === 'agent' ? `agent ${route.agentId} is not available` : `no agent of group ${route.groupId} is available`);
    }
    this.#log.info({ callId: call.id, agent: session.agentId, to: route.kind === 'agent' ? { agent: route.agentId } : { group: route.groupId }, targets: plan.length }, 'blind transfer');
    this.#detachAgent(call, session.agentId);
    call.transferredBy = session.agentId;
    if (queueGroup) {
      this.#queueOnMiss.set(call, queueGroup);
    }
    if (plan.length === 0) {
      this.#enqueue(call, queueGroup!);
    } else {
      this.#offer(call, plan, this.#cfg.calls.ringTimeoutMs);
      // the caller hears hold audio (the built-in chime) until someone answers
      void this.#startPlayer(call, defaultAudioSource(), () => call.state === 'ringing' || call.state === 'answering');
    }

    return { callId: call.id };
  }

  // ----------------------------------------------------------------------------------------------
  // Blind transfer to a number: a second trunk leg in the same router
  // ----------------------------------------------------------------------------------------------

  /**
   * call.transfer to a number: a UAC INVITE toward the default trunk (the agent's dialling policy
   * applies), offering only the call's codec (no transcoding); the agent leaves at once; on the
   * answer the two trunk legs consume each other's producer inside the call's router. The caller's
   * identity goes out as the trunk's outbound.callerId, else the caller's own number. A failed
   * leg offers the call back to the transferring agent (still connected and available), else ends
   * it with the leg's status in the Reason. Either trunk's BYE ends both dialogs.
   * @throws {SignalingError} DIAL_POLICY, RATE_LIMITED, NO_ROUTE, CALL_LIMIT, MEDIA_ERROR, INVALID_STATE
   */
  async #toNumber(session: AgentSession, call: Call, number: string): Promise<ResponseData['call.transfer']> {
    const { trunk, ruri } = await this.#host.dialTarget(session.agentId, number);
    const { leg, legId } = await this.#prepareBridge(call, trunk);
    if (!call.live || call.agentId !== session.agentId || (call.state !== 'active' && call.state !== 'held')) {
      leg.close();
      this.#releaseCap(trunk, legId);
      throw new SignalingError('INVALID_STATE', `call ${call.id} changed meanwhile`);
    }
    this.#log.info({ callId: call.id, agent: session.agentId, trunk: trunk.id }, 'blind transfer to a number');
    this.#detachAgent(call, session.agentId);
    call.transferredBy = session.agentId;
    this.#dialBridge(call, leg, trunk, ruri, legId);
    // hold audio until the number's audio (early media or the answer) takes its place
    void this.#startPlayer(call, defaultAudioSource(), () => this.#bridges.has(call) && !call.media?.trunkConsumer);

    return { callId: call.id };
  }

  /**
   * The second leg's media in the call's router, after the codec and the trunk's cap are checked.
   * @throws {SignalingError} NO_ROUTE (the trunk lacks the call's codec), CALL_LIMIT, MEDIA_ERROR
   */
  async #prepareBridge(call: Call, trunk: TrunkConfig): Promise<{ leg: CallMedia; legId: string }> {
    const plan = call.media!.plan!;
    if (!trunk.codecs.some((c) => c.toLowerCase() === plan.codec.name.toLowerCase())) {
      throw new SignalingError('NO_ROUTE', `trunk ${trunk.id} does not carry the call's codec ${plan.codec.name} (no transcoding)`);
    }
    const legId = `${call.id}:transfer`;
    if (trunk.maxConcurrentCalls > 0 && !(await this.#store.admitTrunkCall(trunk.id, legId, trunk.maxConcurrentCalls))) {
      throw new SignalingError('CALL_LIMIT', `trunk ${trunk.id} has its most concurrent calls (${trunk.maxConcurrentCalls}); try again later`);
    }
    try {
      return { leg: await CallMedia.create(this.#media, { latching: trunk.media.latching, router: call.media!.router }), legId };
    } catch (err) {
      this.#releaseCap(trunk, legId);
      throw new SignalingError('MEDIA_ERROR', `cannot set up the transfer's media: ${(err as Error).message}`);
    }
  }

  /** A queue's fallback to a number (no dialling policy: the operator configured it). */
  async #fallbackToNumber(call: Call, number: string): Promise<void> {
    try {
      if (!call.media?.plan) {
        throw new Error('the call has no negotiated media');
      }
      const { trunk, ruri } = await this.#host.dialTarget(undefined, number);
      const { leg, legId } = await this.#prepareBridge(call, trunk);
      if (!call.live || call.state !== 'queued') {
        leg.close();
        this.#releaseCap(trunk, legId);

        return;
      }
      call.transition('active');
      this.#dialBridge(call, leg, trunk, ruri, legId);
    } catch (err) {
      this.#log.warn({ err, callId: call.id }, 'queue fallback to a number failed');
      this.#host.hangupTrunk(call, 'failed', 'SIP;cause=503;text="queue fallback failed"');
    }
  }

  #releaseCap(trunk: TrunkConfig, legId: string): void {
    if (trunk.maxConcurrentCalls > 0) {
      void this.#store.releaseTrunkCall(trunk.id, legId);
    }
  }

  /** Sends the INVITE of the second leg and bridges it on the answer (early media too). */
  #dialBridge(call: Call, leg: CallMedia, trunk: TrunkConfig, ruri: string, legId: string, consult?: { id: string; agentId: string }): void {
    const plan = call.media!.plan!;
    const local = leg.localRtp;
    const offerSdp = buildOffer({ codecs: [plan.codec.name], localAddress: local.address, localPort: local.port, direction: 'sendrecv' }).offerSdp;
    const bridge: NumberBridge = { leg, trunk, legId, req: undefined, dialog: undefined, localSdp: offerSdp, done: false, consult };
    this.#bridges.set(call, bridge);
    const log = this.#log.child({ callId: call.id, trunk: trunk.id });
    const timer = call.timer(this.#cfg.calls.dialTimeoutMs, () => {
      if (!bridge.dialog && !bridge.done) {
        bridge.req?.cancel(() => undefined);
        this.#bridgeFailed(call, 408);
      }
    });
    const connect = async (sdp: string): Promise<void> => {
      const fresh = !leg.trunkProducer;
      await leg.applyPlan(negotiateFromAnswer(offerSdp, sdp));
      if (bridge.consult) {
        // consultation: the agent and the consulted party hear each other; the caller hears hold audio
        const agentProducer = call.media!.agentProducer;
        if (agentProducer && leg.trunkConsumer?.producerId !== agentProducer.id) {
          await leg.feedTrunk(agentProducer.id);
        }
        if (fresh) {
          call.media!.setAgentSource(leg.trunkProducer);
          this.#host.emit(bridge.consult.agentId, 'call.reconsume', { callId: call.id });
        }

        return;
      }
      // cross-consume: each trunk leg's PlainTransport takes the other leg's producer
      this.#stopMusic(call);
      await leg.feedTrunk(call.media!.trunkProducer!.id);
      await call.media!.feedTrunk(leg.trunkProducer!.id);
    };
    this.#srf
      .createUAC(
        ruri,
        trunkUacOptions(trunk, presentedNumber(call, trunk), offerSdp),
        {
          cbRequest: ((_err: unknown, req: Srf.SrfRequest) => {
            bridge.req = req;
            if (bridge.done) {
              req.cancel(() => undefined);
            }
          }) as unknown as (req: Srf.SrfRequest) => void,
          cbProvisional: (prov: Srf.SrfResponse) => {
            if (!bridge.done && prov.body && prov.body.includes('m=audio')) {
              connect(prov.body).catch((err: unknown) => log.warn({ err }, 'unusable early-media SDP on the transfer leg'));
            }
          },
        },
      )
      .then(
        async (dialog) => {
          if (bridge.done || !call.live) {
            dialog.destroy();

            return;
          }
          bridge.dialog = dialog;
          bridge.req = undefined;
          clearTimeout(timer);
          call.timers.delete(timer);
          dialog.on('destroy', () => {
            bridge.dialog = undefined;
            if (call.live && this.#bridges.get(call) === bridge) {
              if (bridge.consult) {
                void this.#consultEnded(call, 'ended');
              } else {
                this.#host.hangupTrunk(call, 'hangup_remote', 'SIP;cause=200;text="transfer target hung up"');
              }
            }
          });
          dialog.on('modify', (req: Srf.SrfRequest, res: Srf.SrfResponse) => {
            try {
              const r = reanswer(leg.plan!, req.body ?? '', { previous: bridge.localSdp, localDirection: 'sendrecv' });
              leg.applyPlan(r.plan).then(
                () => {
                  bridge.localSdp = r.answerSdp;
                  res.send(200, { body: r.answerSdp });
                },
                () => res.send(488),
              );
            } catch {
              res.send(488);
            }
          });
          try {
            await connect(dialog.remote.sdp);
          } catch (err) {
            log.warn({ err }, 'the transfer target answered with unusable SDP');
            dialog.destroy({ headers: { Reason: 'SIP;cause=488;text="no common codec"' } });
            this.#bridgeFailed(call, 488);

            return;
          }
          leg.relay.restartInactivity();
          // no RTP from the number for calls.rtpTimeoutMs: as a BYE from it
          leg.relay.once('inactivity', () => {
            if (call.live && this.#bridges.get(call) === bridge) {
              log.info('no RTP from the transfer leg; ending it');
              if (bridge.consult) {
                void this.#consultEnded(call, 'ended');
              } else {
                this.#host.hangupTrunk(call, 'rtp_timeout', 'SIP;cause=408;text="RTP timeout on the transfer leg"');
              }
            }
          });
          if (bridge.consult) {
            this.#host.emit(bridge.consult.agentId, 'call.consult', { callId: call.id, consultCallId: bridge.consult.id, state: 'answered' });
            log.info('consultation connected');

            return;
          }
          void this.#store.putCall(call.id, { state: 'active' });
          log.info('transfer to a number connected');
        },
        (err: { status?: number }) => {
          if (!bridge.done) {
            log.info({ status: err.status }, 'transfer to a number failed');
            this.#bridgeFailed(call, err.status ?? 503);
          }
        },
      );
  }

  /** The second leg did not connect: back to the transferring agent once, else the end. */
  #bridgeFailed(call: Call, status: number): void {
    if (this.#bridges.get(call)?.consult) {
      void this.#consultEnded(call, 'failed', status);

      return;
    }
    this.#endBridge(call);
    if (!call.live) {
      return;
    }
    const back = call.transferredBy;
    if (back && !this.#returned.has(call) && this.#host.sessions(back) > 0 && this.#host.presence.isAvailable(back)) {
      this.#returned.add(call);
      this.#offer(call, [{ agentId: back, local: true, nodes: [] }], this.#cfg.calls.ringTimeoutMs);

      return;
    }
    this.#host.hangupTrunk(call, 'failed', `SIP;cause=${status};text="transfer failed"`);
  }

  /** Ends a transfer's second leg (BYE, or CANCEL while it rings) and its media. */
  #endBridge(call: Call): void {
    const bridge = this.#bridges.get(call);
    if (!bridge || bridge.done) {
      return;
    }
    bridge.done = true;
    this.#bridges.delete(call);
    const { dialog, req } = bridge;
    bridge.dialog = undefined;
    try {
      if (dialog) {
        dialog.destroy();
      } else {
        req?.cancel(() => undefined);
      }
    } catch (err) {
      this.#log.debug({ err, callId: call.id }, 'cannot end the transfer leg');
    }
    bridge.leg.close();
    this.#releaseCap(bridge.trunk, bridge.legId);
  }

  // ----------------------------------------------------------------------------------------------
  // Attended (warm) transfer to a number
  // ----------------------------------------------------------------------------------------------

  /**
   * call.consult: the caller hears hold audio (the built-in chime; never the consultation) while
   * the agent calls a number (the agent's dialling policy, the default trunk, the call's codec only)
   * through a second trunk leg in the call's router. When it answers the agent hears it
   * (`call.reconsume`, then `call.consult {state: answered}`). Complete with call.transfer
   * {consultCallId}; cancel with call.hangup {callId: consultCallId}; a failed or ended
   * consultation returns the agent to the caller (`call.consult {state: failed | ended}`).
   * @throws {SignalingError} INVALID_STATE (not an established call of the agent with its audio, or a transfer in progress), DIAL_POLICY, RATE_LIMITED, NO_ROUTE, CALL_LIMIT, MEDIA_ERROR
   */
  async consult(session: AgentSession, call: Call, number: string): Promise<ResponseData['call.consult']> {
    if (call.state !== 'active' || !call.media?.plan || !call.dialog || !call.media.agentProducer) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} is not an established call with the agent's audio (${call.state})`);
    }
    this.#claim(call);
    let prepared: { trunk: TrunkConfig; ruri: string; leg: CallMedia; legId: string };
    try {
      const { trunk, ruri } = await this.#host.dialTarget(session.agentId, number);
      const { leg, legId } = await this.#prepareBridge(call, trunk);
      prepared = { trunk, ruri, leg, legId };
    } finally {
      this.#starting.delete(call);
    }
    const { trunk, ruri, leg, legId } = prepared;
    if (!call.live || call.agentId !== session.agentId || call.state !== 'active' || this.#bridges.has(call) || this.#referLegs.has(call)) {
      leg.close();
      this.#releaseCap(trunk, legId);
      throw new SignalingError('INVALID_STATE', `call ${call.id} changed meanwhile`);
    }
    const consultCallId = `${call.id}:consult`;
    this.#log.info({ callId: call.id, agent: session.agentId, trunk: trunk.id }, 'consultation for an attended transfer');
    // the caller must not hear the consultation: the agent's audio stops reaching it at once
    call.media.stopTrunkFeed();
    this.#dialBridge(call, leg, trunk, ruri, legId, { id: consultCallId, agentId: session.agentId });
    void this.#startPlayer(call, defaultAudioSource(), () => this.#bridges.get(call)?.consult?.id === consultCallId);

    return { callId: call.id, consultCallId };
  }

  /** call.transfer {consultCallId}: the caller and the consulted party talk; the agent leaves. */
  async #completeConsult(session: AgentSession, call: Call, consultCallId: string): Promise<ResponseData['call.transfer']> {
    const bridge = this.#bridges.get(call);
    if (!bridge?.consult || bridge.consult.id !== consultCallId) {
      throw new SignalingError('NOT_FOUND', `no consultation ${consultCallId} on call ${call.id}`);
    }
    if (!bridge.dialog || !bridge.leg.trunkProducer || !call.media?.trunkProducer) {
      throw new SignalingError('INVALID_STATE', 'the consulted party has not answered yet');
    }
    bridge.consult = undefined;
    this.#stopMusic(call);
    this.#host.emit(session.agentId, 'call.consult', { callId: call.id, consultCallId, state: 'completed' });
    // the agent leaves first (its transports and the consumers of its audio close), then the two trunk legs are cross-connected
    this.#detachAgent(call, session.agentId);
    call.transferredBy = session.agentId;
    await bridge.leg.feedTrunk(call.media.trunkProducer.id);
    await call.media.feedTrunk(bridge.leg.trunkProducer.id);
    void this.#store.putCall(call.id, { state: 'active' });
    this.#log.info({ callId: call.id, agent: session.agentId }, 'attended transfer completed');

    return { callId: call.id };
  }

  /**
   * call.hangup with a consultation's id: cancels it (the agent returns to the caller).
   * @returns false when `id` is no consultation of this agent (an ordinary call.hangup)
   */
  cancelConsult(session: AgentSession, id: string): boolean {
    const call = this.#host.call(id.replace(/:consult$/, ''));
    const bridge = call ? this.#bridges.get(call) : undefined;
    if (!call || !bridge?.consult || bridge.consult.id !== id || bridge.consult.agentId !== session.agentId) {
      return false;
    }
    void this.#consultEnded(call, 'ended');

    return true;
  }

  /** The consultation is over without a transfer: its leg ends, the agent and the caller hear each other again. */
  async #consultEnded(call: Call, state: 'failed' | 'ended', sipStatus?: number): Promise<void> {
    const bridge = this.#bridges.get(call);
    const consult = bridge?.consult;
    if (!consult) {
      return;
    }
    this.#endBridge(call);
    this.#stopMusic(call);
    const media = call.media;
    if (call.live && media && !media.closed) {
      media.setAgentSource(undefined);
      try {
        if (media.agentProducer) {
          await media.feedTrunk(media.agentProducer.id);
        }
      } catch (err) {
        this.#log.warn({ err, callId: call.id }, 'cannot reconnect the agent to the caller');
      }
      this.#host.emit(consult.agentId, 'call.reconsume', { callId: call.id });
    }
    this.#host.emit(consult.agentId, 'call.consult', { callId: call.id, consultCallId: consult.id, state, ...(sipStatus !== undefined ? { sipStatus } : {}) });
    this.#log.info({ callId: call.id, state, sipStatus }, 'consultation over; the agent is back with the caller');
  }

  // ----------------------------------------------------------------------------------------------
  // A trunk's REFER (RFC 3515)
  // ----------------------------------------------------------------------------------------------

  /**
   * A REFER from the trunk inside an established call's dialog (RFC 3515), by the trunk's policy
   * `trunks[].refer`: off → 403. any → the Refer-To user is dialled as a number (the agent's
   * dialling policy, the default trunk, the call's codec only) and answered 202; NOTIFYs
   * (Event: refer, message/sipfrag) report `SIP/2.0 100 Trying`, then the final status. On a 2xx
   * the new party takes the referrer's place: its SDP answer points the call's RTP relay at it (the
   * agent's transports, producer and consumer stay as they are, the relay keeps SSRC and sequence
   * continuous), its dialog becomes the call's trunk dialog, and the referring dialog ends (the
   * referrer's BYE, else ours after 2 s). A failure leaves the call with the referrer.
   * internal (Refer-To routed as our DID) and REFER with Replaces (attended) → 501, not built.
   * Other refusals: 400 (no usable Refer-To), 403 (no agent on the call, SRTP, a REFER already
   * running).
   */
  refer(call: Call, req: Srf.SrfRequest, res: Srf.SrfResponse): void {
    const policy = call.trunk.refer;
    const log = this.#log.child({ callId: call.id, trunk: call.trunk.id });
    if (policy === 'off') {
      log.info('REFER refused: trunks[].refer is off');
      res.send(403, { headers: { Warning: `399 ringbridge "trunk ${call.trunk.id} may not transfer calls"` } });

      return;
    }
    const referTo = req.get('Refer-To') ?? '';
    const uri = parseUri(parseNameAddr(referTo)?.uri ?? referTo.replace(/^<|>$/g, ''));
    const user = uri?.user ?? '';
    // Replaces may come as an escaped header name (Repl%61ces): an attended REFER all the same
    const replaces = /replaces/i.test(referTo) || Object.keys(uri?.headers ?? {}).some((h) => unescapeHname(h).toLowerCase() === 'replaces');
    if (replaces || policy === 'internal') {
      res.send(501, { headers: { Warning: `399 ringbridge "${policy === 'internal' ? 'REFER to an internal target' : 'attended REFER (Replaces)'} is not supported"` } });

      return;
    }
    if (!/^\+?[0-9*#]{2,32}$/.test(user)) {
      res.send(400, { headers: { Warning: '399 ringbridge "Refer-To must name a dialable number"' } });

      return;
    }
    const referDialog = call.dialog;
    if ((call.state !== 'active' && call.state !== 'held') || !call.agentId || !referDialog || !call.media?.plan || call.media.plan.srtp || this.#referLegs.has(call) || this.#bridges.has(call) || this.#starting.has(call)) {
      res.send(403, { headers: { Warning: '399 ringbridge "the call cannot be transferred now"' } });

      return;
    }
    this.#referLegs.set(call, undefined);
    res.send(202);
    log.info('REFER accepted');
    void this.#referDial(call, referDialog, user, log);
  }

  async #referDial(call: Call, referDialog: Srf.Dialog, user: string, log: Logger): Promise<void> {
    // srf's typings take a whole SrfRequest; the method accepts {method, headers, body}
    const request = referDialog.request.bind(referDialog) as unknown as (opts: { method: string; headers: Record<string, string>; body: string }) => Promise<unknown>;
    const notify = (frag: string, final: boolean): Promise<void> =>
      request({
          method: 'NOTIFY',
          headers: { Event: 'refer', 'Subscription-State': final ? 'terminated;reason=noresource' : 'active;expires=60', 'Content-Type': 'message/sipfrag;version=2.0' },
          body: `${frag}\r\n`,
        })
        .then(
          () => undefined,
          (err: unknown) => log.debug({ err }, 'NOTIFY for the REFER failed'),
        );
    const fail = async (status: number, phrase: string): Promise<void> => {
      if (this.#referLegs.get(call) === undefined) {
        this.#referLegs.delete(call);
      }
      log.info({ status }, 'REFER failed; the call stays with the referrer');
      await notify(`SIP/2.0 ${status} ${phrase}`, true);
    };
    await notify('SIP/2.0 100 Trying', false);
    let target: { trunk: TrunkConfig; ruri: string };
    try {
      target = await this.#host.dialTarget(call.agentId, user);
    } catch (err) {
      await fail(403, 'Forbidden');
      log.info({ reason: (err as Error).message }, 'REFER target refused');

      return;
    }
    const { trunk, ruri } = target;
    const media = call.media!;
    const plan = media.plan!;
    if (!trunk.codecs.some((c) => c.toLowerCase() === plan.codec.name.toLowerCase())) {
      await fail(488, 'Not Acceptable Here');

      return;
    }
    const legId = `${call.id}:refer`;
    if (trunk.maxConcurrentCalls > 0 && !(await this.#store.admitTrunkCall(trunk.id, legId, trunk.maxConcurrentCalls))) {
      await fail(503, 'Service Unavailable');

      return;
    }
    const local = media.localRtp;
    const offer = buildOffer({ codecs: [plan.codec.name], localAddress: local.address, localPort: local.port, direction: 'sendrecv' }).offerSdp;
    let sent: Srf.SrfRequest | undefined;
    const timer = setTimeout(() => sent?.cancel(() => undefined), this.#cfg.calls.dialTimeoutMs);
    let dialog: Srf.Dialog;
    try {
      dialog = await this.#srf.createUAC(
        ruri,
        trunkUacOptions(trunk, presentedNumber(call, trunk, true), offer),
        {
          cbRequest: ((_err: unknown, req: Srf.SrfRequest) => {
            sent = req;
          }) as unknown as (req: Srf.SrfRequest) => void,
        },
      );
    } catch (err) {
      clearTimeout(timer);
      this.#releaseCap(trunk, legId);
      const e = err as { status?: number; reason?: string };
      await fail(e.status ?? 500, e.reason ?? 'Failed');

      return;
    }
    clearTimeout(timer);
    if (!call.live || call.dialog !== referDialog) {
      dialog.destroy();
      this.#releaseCap(trunk, legId);
      this.#referLegs.delete(call);

      return;
    }
    try {
      await media.applyPlan(negotiateFromAnswer(offer, dialog.remote.sdp));
    } catch (err) {
      log.warn({ err }, 'the REFER target answered with unusable SDP');
      dialog.destroy({ headers: { Reason: 'SIP;cause=488;text="no common codec"' } });
      this.#releaseCap(trunk, legId);
      await fail(488, 'Not Acceptable Here');

      return;
    }
    media.relay.restartInactivity();
    this.#referLegs.set(call, { trunk, legId });
    this.#host.adoptDialog(call, dialog, offer); // (drops the call layer's listeners of the referring dialog)
    let referGone = false;
    referDialog.once('destroy', () => (referGone = true));
    log.info('REFER done: the new party replaced the referrer');
    await notify('SIP/2.0 200 OK', true);
    // RFC 3515 §2.4.7: the referrer normally ends its dialog now; if it does not, we do
    setTimeout(() => {
      if (!referGone) {
        Promise.resolve()
          .then(() => referDialog.destroy())
          .catch((err: unknown) => log.debug({ err }, 'cannot end the referring dialog'));
      }
    }, 2000).unref();
  }

  /** The agent's media leaves the call; the agent is told the call went on without it. */
  #detachAgent(call: Call, agentId: string): void {
    call.media?.releaseAgent();
    call.agentId = undefined;
    call.sessionId = undefined;
    call.muted = false;
    this.#host.emit(agentId, 'call.ended', { callId: call.id, reason: 'transferred', by: 'local' });
    void this.#store.agentBecameIdle(agentId);
    this.#host.presence.refresh(agentId);
  }

  /** Rings targets for an established call (state → ringing) for `ringMs`. */
  #offer(call: Call, targets: RingTarget[], ringMs: number): void {
    if (call.state !== 'ringing') {
      call.transition('ringing');
    }
    call.declined.clear();
    call.busyDeclines = 0;
    call.ringQueue = undefined;
    call.ringDeadline = Date.now() + ringMs;
    this.#clearRingTimer(call);
    call.reofferTimer = call.timer(ringMs, () => this.#host.ringTimeout(call));
    void this.#store.putCall(call.id, { state: 'ringing' });
    this.#host.ringTargets(call, targets);
  }

  #clearRingTimer(call: Call): void {
    if (call.reofferTimer) {
      clearTimeout(call.reofferTimer);
      call.timers.delete(call.reofferTimer);
      call.reofferTimer = undefined;
    }
  }

  /**
   * An established call offered anew was not answered (ring timeout, every target declined or
   * left); the call layer has already taken it away from the agents it rang. Next: back to its
   * queue; else once back to the transferring agent; else into the target group's queue; else BYE.
   */
  unanswered(call: Call): void {
    this.#clearRingTimer(call);
    if (!call.live || call.state !== 'ringing') {
      return;
    }
    if (call.queue) {
      call.transition('queued');
      void this.#store.putCall(call.id, { state: 'queued' });

      return;
    }
    const back = call.transferredBy;
    if (back && !this.#returned.has(call) && this.#host.sessions(back) > 0 && this.#host.presence.isAvailable(back)) {
      this.#returned.add(call);
      this.#log.info({ callId: call.id, agent: back }, 'transfer not answered: offering the call back to the transferring agent');
      this.#offer(call, [{ agentId: back, local: true, nodes: [] }], this.#cfg.calls.ringTimeoutMs);

      return;
    }
    const group = this.#queueOnMiss.get(call);
    this.#queueOnMiss.delete(call);
    if (group && this.canQueue(group)) {
      call.transition('queued');
      this.#enqueue(call, group, true);

      return;
    }
    this.#log.info({ callId: call.id }, 'call offered anew and not answered; hanging up');
    this.#host.hangupTrunk(call, 'no_answer', 'SIP;cause=480;text="not answered"');
  }

  /**
   * An agent answered an established call offered anew (call.answer; the call layer made it
   * `answering` and took it away from the others): new WebRTC transports in the call's router.
   * @throws {SignalingError} INVALID_STATE when the call ended meanwhile
   */
  async answered(call: Call, session: AgentSession): Promise<ResponseData['call.answer']> {
    this.#clearRingTimer(call);
    const media = call.media!;
    let offer;
    try {
      offer = await media.agentTransports();
    } catch (err) {
      this.#host.hangupTrunk(call, 'media_error', 'SIP;cause=500;text="media failure"');
      throw new SignalingError('MEDIA_ERROR', `cannot answer: ${(err as Error).message}`);
    }
    if (!call.live) {
      throw new SignalingError('INVALID_STATE', 'the caller hung up');
    }
    call.transition('active');
    if (call.heldRemote) {
      call.transition('held');
    }
    if (call.queue) {
      this.#leaveQueue(call, 'answered');
    }
    this.#stopMusic(call); // queue or hold audio: the agent's producer feeds the trunk next
    this.#host.emit(session.agentId, 'call.answered', { callId: call.id });
    void this.#store.putCall(call.id, { state: 'active', agentId: session.agentId });
    this.#log.info({ callId: call.id, agent: session.agentId, transferredBy: call.transferredBy }, 'call offered anew answered');

    return { callId: call.id, media: offer };
  }

  /** The call ended (any reason): out of its queue; a transfer's second trunk leg ends with it. */
  ended(call: Call): void {
    this.#endBridge(call);
    const referred = this.#referLegs.get(call);
    this.#referLegs.delete(call);
    if (referred) {
      this.#releaseCap(referred.trunk, referred.legId);
    }
    if (call.queue) {
      this.#leaveQueue(call, 'abandoned');
    }
    if (this.#tick) {
      setImmediate(() => void this.#pump()); // an agent may be free now
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Queues
  // ----------------------------------------------------------------------------------------------

  /**
   * A new inbound call to a group with a queue while no member is available: answered toward the
   * trunk (200 OK) and queued.
   * @throws when the trunk cannot be answered (the call is ended by the call layer)
   */
  async enqueueNew(call: Call, groupId: string): Promise<void> {
    // counted at once: callers arriving while this one is answered see the queue's real size
    const waiting = this.#waitingIn(groupId);
    waiting.add(call);
    try {
      call.transition('answering');
      await this.#host.answerTrunk(call);
    } catch (err) {
      waiting.delete(call);
      throw err;
    }
    if (!call.live) {
      waiting.delete(call);

      return;
    }
    call.transition('queued');
    this.#enqueue(call, groupId);
  }

  /** Puts an established call (state queued, or active/held/ringing) into a group's queue. */
  #enqueue(call: Call, groupId: string, again = false): void {
    const q = this.#queueOf(groupId)!;
    if (call.state !== 'queued') {
      call.transition('queued');
    }
    const since = Date.now();
    call.queue = { groupId, since };
    this.#waitingIn(groupId).add(call);
    this.#stopMusic(call); // a transfer's hold audio gives way to the queue's
    void this.#store.queueAdd(groupId, call.id, since);
    void this.#store.putCall(call.id, { state: 'queued' });
    call.timer(q.maxWaitS * 1000, () => this.#maxWait(call));
    this.#log.info({ callId: call.id, group: groupId, again }, 'caller queued');
    void this.#startMusic(call, groupId);
    setImmediate(() => void this.#pump());
  }

  #waitingIn(groupId: string): Set<Call> {
    let waiting = this.#waiting.get(groupId);
    if (!waiting) {
      waiting = new Set();
      this.#waiting.set(groupId, waiting);
    }

    return waiting;
  }

  #leaveQueue(call: Call, outcome: QueueOutcome): void {
    const q = call.queue!;
    call.queue = undefined;
    this.#waiting.get(q.groupId)?.delete(call);
    this.#stopMusic(call);
    void this.#store.queueRemove(q.groupId, call.id);
    this.#metrics?.leftQueue(q.groupId, outcome, (Date.now() - q.since) / 1000);
  }

  /** The longest wait passed: the group's fallback takes the call. */
  #maxWait(call: Call): void {
    const q = call.queue;
    if (!call.live || !q) {
      return;
    }
    const fallback = this.#queueOf(q.groupId)?.fallback ?? { hangup: { status: 480 } };
    for (const a of [...call.ringing]) {
      this.#host.unring(call, a, 'ring_timeout');
    }
    this.#clearRingTimer(call);
    if (call.state === 'ringing') {
      call.transition('queued');
    }
    this.#leaveQueue(call, 'timed_out');
    this.#log.info({ callId: call.id, group: q.groupId, fallback: Object.keys(fallback)[0] }, 'queue wait limit reached');
    if ('hangup' in fallback) {
      this.#host.hangupTrunk(call, 'no_answer', `SIP;cause=${fallback.hangup.status};text="queue wait limit"`);

      return;
    }
    if ('number' in fallback) {
      void this.#fallbackToNumber(call, fallback.number);

      return;
    }
    const route = this.#route(fallback);
    void this.#host.ringPlan(route, true).then(
      (plan) => {
        if (!call.live || call.state !== 'queued') {
          return;
        }
        if (plan.length === 0) {
          this.#host.hangupTrunk(call, 'no_answer', 'SIP;cause=480;text="queue fallback unavailable"');
        } else {
          this.#offer(call, plan, this.#cfg.calls.ringTimeoutMs);
        }
      },
      (err: unknown) => {
        this.#log.warn({ err, callId: call.id }, 'queue fallback failed');
        this.#host.hangupTrunk(call, 'failed', 'SIP;cause=500;text="queue fallback failed"');
      },
    );
  }

  /** Offers this node's waiting callers, longest waiting first, to the members free here. */
  async #pump(): Promise<void> {
    if (this.#pumping) {
      this.#again = true;

      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        for (const g of this.#groups.values()) {
          if (this.#queueOf(g.id)) {
            await this.#pumpGroup(g);
          }
        }
      } while (this.#again);
    } catch (err) {
      this.#log.warn({ err }, 'cannot offer queued callers now');
    } finally {
      this.#pumping = false;
    }
  }

  async #pumpGroup(g: GroupConfig): Promise<void> {
    const local = [...this.#host.calls()].filter((c) => c.queue?.groupId === g.id && c.live);
    if (!local.some((c) => c.state === 'queued')) {
      return;
    }
    let entries: { callId: string; since: number }[];
    try {
      entries = await this.#store.queueEntries(g.id);
      // a caller of this node that Redis does not list (a failed write, a Redis that restarted
      // empty) is written again and takes its place by the time it joined
      const listed = new Set(entries.map((e) => e.callId));
      const missing = local.filter((c) => !listed.has(c.id));
      for (const c of missing) {
        void this.#store.queueAdd(g.id, c.id, c.queue!.since);
      }
      if (missing.length > 0) {
        entries = [...entries, ...missing.map((c) => ({ callId: c.id, since: c.queue!.since }))].sort((a, b) => a.since - b.since);
      }
    } catch (err) {
      // Redis away: this node's own callers in their order; the cluster order comes back with Redis
      this.#log.debug({ err, group: g.id }, 'queue order unavailable in Redis; offering this node\'s callers in local order');
      entries = local.map((c) => ({ callId: c.id, since: c.queue!.since })).sort((a, b) => a.since - b.since);
    }
    const route: RouteTarget = { kind: 'group', groupId: g.id, members: g.members, strategy: g.strategy };
    for (const e of entries) {
      const call = this.#host.call(e.callId);
      if (!call || call.queue?.groupId !== g.id || call.state !== 'queued') {
        continue; // another node's caller, or one being offered now
      }
      const plan = await this.#host.ringPlan(route, false);
      if (plan.length === 0) {
        return;
      }
      if (!call.live || call.state !== 'queued') {
        continue;
      }
      const longestIdle = g.strategy === 'longest-idle';
      this.#offer(call, longestIdle ? plan.slice(0, 1) : plan, longestIdle ? this.#cfg.calls.ringStepMs : this.#cfg.calls.ringTimeoutMs);
    }
  }

  /**
   * The queues as the admin API shows them: per group with a queue, its callers longest waiting
   * first, with position and wait (s). No phone numbers.
   * @throws when Redis fails
   */
  async queues(groupId?: string): Promise<{ group: string; maxWaitS: number; length: number; calls: QueuedCallInfo[] }[] | undefined> {
    if (groupId !== undefined && !this.hasQueue(groupId)) {
      return undefined;
    }
    const ids = groupId === undefined ? [...this.#groups.keys()].filter((id) => this.hasQueue(id)) : [groupId];
    const now = Date.now();
    const out = [];
    for (const id of ids) {
      const q = this.#queueOf(id)!;
      const entries = await this.#store.queueEntries(id, now);
      out.push({
        group: id,
        maxWaitS: q.maxWaitS,
        length: entries.length,
        calls: entries.map((e, i) => ({ callId: e.callId, position: i + 1, waitS: Math.max(0, Math.round((now - e.since) / 100) / 10), node: e.node })),
      });
    }

    return out;
  }
}

/** A SIP URI header name with its %HH escapes undone (RFC 3261 §25.1); as given when malformed. */
function unescapeHname(name: string): string {
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}
