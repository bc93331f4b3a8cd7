/**
 * The call layer: trunk INVITEs to agents and agents' dials to trunks, with drachtio-srf on the
 * SIP side, mediasoup (through CallMedia) for audio, the signaling server for agents, presence,
 * and Redis for call state and records.
 *
 * Inbound: admit (allow-list or digest) → SDP check (488) → DID route (404) → available targets
 * (480) → 180 and call.incoming → first call.answer wins (call.cancelled to the others) → media →
 * 200 OK → active. Ring timeout: 480. Everyone declines: 486 (all busy) or 603. Trunk CANCEL:
 * call.cancelled + 487 (sent by the SIP engine).
 * Outbound: call.dial → media → INVITE (digest by srf) → 18x (early media with SDP) → 200 → active.
 */
import type Srf from 'drachtio-srf';
import { type Config } from '../config/schema.js';
import { type Logger } from '../log/logger.js';
import { formatUri, parseNameAddr, parseUri } from '../sip/engine/message.js';
import { buildOffer, negotiateAnswer, negotiateFromAnswer, type PlanSrtp, reanswer, reofferFormats, SdpError, type SrtpAnswerer } from '../sip/sdp.js';
import { fromKeyParams, newMasterKey, SRTP_SUITE, toKeyParams } from '../media/rtp/srtp.js';
import { TrunkDirectory, trunkSource, trunkUacOptions, type TrunkConfig } from '../sip/trunks.js';
import { type AgentSession, SignalingError, type SignalingHandler, type SignalingServer } from '../signaling/server.js';
import { type AgentStatus, type CancelReason, type DeviceInfo, type EffectivePresence, type EndReason, type MediaOffer, type RequestData, type RequestType, type ResponseData } from '../signaling/protocol.js';
import { type NodeRegistry } from '../state/node-registry.js';
import { type ClusterPresence, type Device, type StateStore } from '../state/store.js';
import { Call, CallStateError, type RemoteLeg } from './call.js';
import { type Handoff, type HandoffInfo } from './handoff.js';
import { CallMedia, CallMediaError, type CallMediaSettings } from './call-media.js';
import { PresenceService } from './presence.js';
import { type WakeOutcome, type WakeService } from '../push/wake.js';
import { type CallMetrics } from '../metrics/call-metrics.js';
import { CallQualitySampler, type QualityMetrics } from './quality.js';
import { type RingTarget, Router, type RouteTarget } from './routing.js';
import { type RecordingService } from './recording.js';
import { dialRefusalMessage } from '../security/dial-policy.js';
import { type SecurityGuard } from '../security/guard.js';
import { type TrunkCodecName } from '../media/codecs.js';
import { type SipBinding } from '../sip/registrar/bindings.js';
import { type CallDevices, type DeviceAnswer, DeviceRinger, sipDevicePushes } from './device-ringer.js';
import { type DeviceAuthenticator, DeviceDialer } from './device-dial.js';
import { CallCentre } from './call-centre.js';
import { type QueueMetrics } from '../metrics/queue-metrics.js';

/** Options of the call manager. */
export interface CallManagerOptions {
  config: Config;
  srf: Srf;
  media: Omit<CallMediaSettings, 'logger'>;
  store: StateStore;
  logger: Logger;
  /** Whether new calls are accepted (false while draining). */
  accepting?: () => boolean;
  /**
   * Whether the state store (Redis) can be used now. While it cannot, new calls are refused at
   * once (trunk INVITE: 503 with Retry-After; call.dial: UNAVAILABLE) and calls in progress go on.
   */
  stateReady?: () => boolean;
  /** Several nodes (cluster.secret set): the node registry and the hand-off signer. */
  cluster?: { registry: NodeRegistry; handoff: Handoff };
  /** The wake-up flow (push configured): agents with no session are woken on their devices. */
  wake?: WakeService;
  /** Call metrics (finished calls, PDD, answer and talk times). */
  metrics?: CallMetrics;
  /** Per-leg quality metrics and the sampling interval (ms). */
  quality?: { metrics: QualityMetrics; intervalMs: number };
  /** Rate limits, lockout, dialling policy and caps (src/security); none: no such checks. */
  security?: SecurityGuard;
  /** Call recording (src/calls/recording.ts); none: nothing is recorded and call.record is FORBIDDEN. */
  recording?: RecordingService;
  /** Agents' registered SIP devices (the registrar, when sipDevices.enabled): rung with their sessions. */
  sipDevices?: { bindings(agentId: string): Promise<SipBinding[]>; realm: string; authenticate: DeviceAuthenticator };
  /** Queue metrics (call-centre.ts). */
  queueMetrics?: QueueMetrics;
}

/** Devices an agent may register (each call wakes every one of them). */
const MAX_DEVICES_PER_AGENT = 20;

/** How often a call with woken agents looks for their new sessions on other nodes (ms). */
const WAKE_POLL_MS = 200;

/** What srf's createUAC gives for an INVITE without SDP (noAck): the far end's offer and the ACK to send. */
interface LateOfferLeg {
  sdp: string;
  ack(sdp: string): Promise<Srf.Dialog>;
  destroy?: () => Promise<void>;
}

function isLateOfferLeg(r: Srf.Dialog | LateOfferLeg): r is LateOfferLeg {
  return typeof (r as LateOfferLeg).ack === 'function' && typeof (r as Srf.Dialog).modify !== 'function';
}

/** Whether a request carries an SDP body (else it is a late offer). */
/**
 * The negotiation's `srtp` option for a trunk (RFC 4568 SDES): accept the first offered
 * AES_CM_128_HMAC_SHA1_80 line with a usable inline key, answering with a new key of ours, or with
 * the key we already use when a re-INVITE offers the same line again (keeping the SRTP state).
 * `secure`: the dialog's signaling runs over TLS.
 */
function srtpOption(trunk: TrunkConfig, secure: boolean, current?: PlanSrtp): { srtp?: SrtpAnswerer } {
  // RFC 4568 §8.3: SDES keys travel in the SDP, so only over TLS (a plain-transport offer of
  // RTP/SAVP then gets 488, as if SRTP were off)
  if (trunk.media.srtp === 'off' || !secure) {
    return {};
  }

  return {
    srtp: (offered) => {
      const same = current && offered.find((c) => c.tag === current.local.tag && c.suite === current.local.suite && c.keyParams === current.remote.keyParams);
      if (same) {
        return current.local;
      }
      const usable = offered.find((c) => c.suite === SRTP_SUITE && fromKeyParams(c.keyParams) !== undefined);

      return usable ? { tag: usable.tag, suite: usable.suite, keyParams: toKeyParams(newMasterKey()) } : undefined;
    },
  };
}

/** Whether a trunk's outbound URI is reached over TLS (sips:, or ;transport=tls). */
function secureUri(uri: string): boolean {
  return /^sips:/i.test(uri) || /;transport=tls(?:[;>?]|$)/i.test(uri);
}

function hasSdp(req: Srf.SrfRequest): boolean {
  return typeof req.body === 'string' && req.body.includes('m=');
}

/** SIP status → the agent's end reason for a failed outbound call (PROTOCOL.md). */
export function endReasonForStatus(status: number): EndReason {
  if (status === 486 || status === 600) {
    return 'busy';
  }
  if (status === 404 || status === 604 || status === 484) {
    return 'not_found';
  }
  if (status === 480 || status === 503 || status === 502) {
    return 'unavailable';
  }
  if (status === 603) {
    return 'declined';
  }
  if (status === 408 || status === 504) {
    return 'timeout';
  }
  if (status === 487) {
    return 'cancelled';
  }

  return 'rejected';
}

/** The call layer of one gateway node. */
export class CallManager implements SignalingHandler {
  readonly #cfg: Config;
  readonly #srf: Srf;
  readonly #mediaSettings: CallMediaSettings;
  readonly #store: StateStore;
  readonly #log: Logger;
  readonly #trunks: TrunkDirectory;
  readonly #router: Router;
  readonly #calls = new Map<string, Call>();
  readonly #accepting: () => boolean;
  readonly #stateReady: () => boolean;
  readonly #cluster: { registry: NodeRegistry; handoff: Handoff } | undefined;
  readonly #wake: WakeService | undefined;
  readonly #metrics: CallMetrics | undefined;
  readonly #quality: { metrics: QualityMetrics; intervalMs: number } | undefined;
  readonly #recording: RecordingService | undefined;
  readonly presence: PresenceService;
  readonly #security: SecurityGuard | undefined;
  readonly #devices: DeviceRinger | undefined;
  /** Transfers and queues (call-centre.ts). */
  readonly #centre: CallCentre;
  /** Outbound calls from SIP devices (device-dial.ts). */
  readonly #deviceDialer: DeviceDialer | undefined;
  #signaling: SignalingServer | undefined;

  constructor(opts: CallManagerOptions) {
    this.#security = opts.security;
    this.#cfg = opts.config;
    this.#srf = opts.srf;
    this.#log = opts.logger;
    this.#mediaSettings = { ...opts.media, logger: opts.logger.child({ component: 'media' }) };
    this.#store = opts.store;
    this.#trunks = new TrunkDirectory(opts.config.trunks);
    this.#router = new Router(opts.config.routing);
    this.#accepting = opts.accepting ?? (() => true);
    this.#stateReady = opts.stateReady ?? (() => true);
    this.#cluster = opts.cluster;
    this.#wake = opts.wake;
    this.#metrics = opts.metrics;
    this.#quality = opts.quality;
    this.#recording = opts.recording;
    this.#recording?.bind((agentId, data) => this.#emit(agentId, 'call.recording', data));
    this.#devices = opts.sipDevices ? new DeviceRinger({ srf: opts.srf, bindings: (a) => opts.sipDevices!.bindings(a), media: this.#mediaSettings, logger: opts.logger.child({ component: 'devices' }) }) : undefined;
    this.#deviceDialer = opts.sipDevices ? this.#deviceDialHost(opts.sipDevices, opts.logger.child({ component: 'devices' })) : undefined;
    this.#cluster?.registry.on('refresh', () => this.#checkPeers());
    this.presence = new PresenceService({
      store: opts.store,
      logger: opts.logger,
      inputs: {
        sessions: (a) => this.#signaling?.sessionsOf(a).length ?? 0,
        activity: (a) => this.#activity(a),
        notify: (a, status, effective) => this.#signaling?.sendToAgent(a, 'presence.changed', { status, effective }),
      },
    });
    this.#centre = new CallCentre({
      config: opts.config,
      store: opts.store,
      logger: opts.logger.child({ component: 'call-centre' }),
      ...(opts.queueMetrics ? { metrics: opts.queueMetrics } : {}),
      host: {
        // calls offered anew ring this node's sessions (and, on a single node, wake pushes): the media stays in this router
        ringPlan: async (route, wake) => (await this.#ringPlan(route, false, true)).filter((t) => t.local || (wake && !this.#cluster && t.wake)),
        ringTargets: (call, targets) => this.#ringTargets(call, targets),
        unring: (call, agentId, reason) => this.#unring(call, agentId, reason),
        ringTimeout: (call) => this.#ringTimeout(call),
        emit: (agentId: string, type: 'call.ended' | 'call.answered' | 'call.reconsume' | 'call.consult', data: object) => this.#emit(agentId, type, data as never),
        hangupTrunk: (call, reason, sipReason) => this.#hangupTrunk(call, reason, sipReason),
        answerTrunk: async (call) => void (await this.#answerTrunk(call)),
        calls: () => this.#calls.values(),
        call: (id) => this.#calls.get(id),
        sessions: (agentId) => this.#signaling?.sessionsOf(agentId).length ?? 0,
        presence: this.presence,
        dialTarget: (agentId, to) => this.#dialTarget(agentId, to),
        adoptDialog: (call, dialog, localSdp) => {
          const old = call.dialog;
          for (const ev of ['destroy', 'modify', 'refer']) {
            old?.removeAllListeners(ev);
          }
          call.dialog = dialog;
          call.localSdp = localSdp;
          this.#watchDialog(call, dialog);
        },
      },
      srf: opts.srf,
      media: this.#mediaSettings,
    });
    this.#centre.start();
    this.#srf.invite((req, res) => this.#onInvite(req, res));
  }

  /** Transfers and queues: the admin API reads the queues through it. */
  get centre(): CallCentre {
    return this.#centre;
  }

  /** Connects the signaling server (it is created with this manager as its handler). */
  attachSignaling(s: SignalingServer): void {
    this.#signaling = s;
  }

  /** Live calls. */
  get calls(): Call[] {
    return [...this.#calls.values()];
  }

  /** A live call by id (tests, admin). */
  call(id: string): Call | undefined {
    return this.#calls.get(id);
  }

  #activity(agentId: string): 'on_call' | 'ringing' | undefined {
    let ringing = false;
    for (const c of this.#calls.values()) {
      if (c.agentId === agentId && c.live) {
        return 'on_call';
      }
      if (c.state === 'ringing' && c.ringing.has(agentId)) {
        ringing = true;
      }
    }

    return ringing ? 'ringing' : undefined;
  }

  /**
   * An agent's calls across the cluster: its live calls on this node, plus one for each other
   * live node whose view of the agent (the agent hash's `n:<node>` field, which the reaper removes
   * with a dead node) says it is on a call. Redis unavailable: this node's count.
   */
  async #agentCallCount(agentId: string): Promise<number> {
    let n = 0;
    for (const c of this.#calls.values()) {
      if (c.agentId === agentId && c.live) {
        n++;
      }
    }
    const registry = this.#cluster?.registry;
    if (!registry) {
      return n;
    }
    try {
      for (const [field, raw] of Object.entries(await this.#store.agentHash(agentId))) {
        const node = field.startsWith('n:') ? field.slice(2) : undefined;
        if (node && node !== this.#store.nodeId && registry.isLive(node) && (JSON.parse(raw) as { a?: string }).a === 'on_call') {
          n++;
        }
      }
    } catch (err) {
      this.#log.warn({ err }, 'cannot read the agent\'s calls on other nodes');
    }

    return n;
  }

  #emit<T extends Parameters<SignalingServer['sendToAgent']>[1]>(agentId: string, type: T, data: Parameters<SignalingServer['sendToAgent']>[2] & object): void {
    this.#signaling?.sendToAgent(agentId, type, data as never);
  }

  // ----------------------------------------------------------------------------------------------
  // Inbound
  // ----------------------------------------------------------------------------------------------

  #onInvite(req: Srf.SrfRequest, res: Srf.SrfResponse): void {
    this.#inbound(req, res).catch((err: unknown) => {
      this.#log.error({ err, sipCallId: req.get('Call-ID') }, 'inbound call failed');
      if (!res.finalResponseSent) {
        res.send(500);
      }
    });
  }

  async #inbound(req: Srf.SrfRequest, res: Srf.SrfResponse): Promise<void> {
    const sipCallId = req.get('Call-ID');
    const log = this.#log.child({ sipCallId });
    if (!this.#accepting()) {
      res.send(503, { headers: { 'Retry-After': '30' } });

      return;
    }
    if (!this.#stateReady()) {
      // no presence, no call state: nobody can be rung reliably; a trunk or dispatcher retries elsewhere
      log.warn('rejecting INVITE: the state store (Redis) is unavailable');
      res.send(503, { headers: { 'Retry-After': '10', Warning: '399 ringbridge "state store unavailable"' } });

      return;
    }
    // A hand-off from another node of the cluster (handoff.ts), or a trunk's call.
    let handoff: HandoffInfo | undefined;
    let trunk: TrunkConfig;
    if (req.has('X-RB-Auth')) {
      if (!this.#cluster) {
        log.warn('rejecting a hand-off INVITE: cluster.secret is not set on this node');
        res.send(403);

        return;
      }
      try {
        handoff = this.#cluster.handoff.verify((n) => req.get(n), req.body ?? '');
      } catch (err) {
        log.warn({ reason: (err as Error).message, source: req.source_address }, 'rejecting a hand-off INVITE');
        res.send(403);

        return;
      }
      const t = this.#trunks.byId(handoff.trunkId);
      if (!t) {
        log.error({ trunk: handoff.trunkId, origin: handoff.origin }, 'hand-off for a trunk this node does not know: the nodes run different trunk configurations');
        res.send(503, { headers: { Warning: '399 ringbridge "unknown trunk on this node"' } });

        return;
      }
      if (this.#calls.has(handoff.callId)) {
        res.send(482); // the same call handed to us twice (a loop)

        return;
      }
      trunk = t;
    } else {
      // Behind the dispatcher the packet comes from it: the trunk's own address is in X-RB-Source.
      const source = trunkSource(req.source_address, req.get('X-RB-Source') || undefined, this.#cfg.sip.trustedProxies);
      if (source.ignored) {
        log.warn({ source: req.source_address, ignored: source.ignored }, 'X-RB-Source not used to admit a trunk');
      }
      // the address the defences count: the trunk's own (behind a trusted proxy, from X-RB-Source;
      // '' when the proxy named none: then nothing is counted, never the proxy's own address)
      const address = source.address;
      const sec = this.#security;
      if (sec && (await sec.lockout.isLocked('sip', address))) {
        log.info({ source: address }, 'rejecting INVITE: the source is locked after failed authentications');
        sec.rejected('sip_locked');
        res.send(403);

        return;
      }
      const perSource = sec && address !== '' ? await sec.sourceLimit(address) : undefined;
      if (sec && perSource && !perSource.allowed) {
        log.info({ source: address }, 'rejecting INVITE: the source sends more than its rate limit');
        sec.rejected('source_rate');
        res.send(503, { headers: { 'Retry-After': String(perSource.retryAfterS) } });

        return;
      }
      // an agent's SIP device calling out (device-dial.ts): never a trunk's address, always digest
      if (this.#deviceDialer && !this.#trunks.byAddress(address) && this.#deviceDialer.claims(req)) {
        await this.#deviceDialer.handle(req, res);

        return;
      }
      const admission = this.#trunks.admit(source.address, 'INVITE', req.get('Authorization') || undefined);
      if (!admission.ok) {
        if (admission.status === 401) {
          res.send(401, { headers: { 'WWW-Authenticate': admission.challenge } });
        } else {
          const locked = admission.reason === 'bad credentials' && sec ? await sec.lockout.failed('sip', address) : false;
          log.info({ reason: admission.reason, locked }, 'rejecting INVITE: not from a known trunk');
          res.send(403);
        }

        return;
      }
      trunk = admission.trunk;
      const perTrunk = sec ? await sec.trunkLimit(trunk.id) : undefined;
      if (sec && perTrunk && !perTrunk.allowed) {
        log.info({ trunk: trunk.id }, 'rejecting INVITE: the trunk sends more than its rate limit');
        sec.rejected('trunk_rate');
        res.send(503, { headers: { 'Retry-After': String(perTrunk.retryAfterS) } });

        return;
      }
    }
    // Codec and address check before anyone rings (RFC 3264 §6: no common codec → 488 + Warning).
    // An INVITE without SDP is a late offer (RFC 3261 §13.2.1): we offer in the 200 OK.
    const secure = req.protocol === 'tls';
    let srtpCall = false;
    try {
      if (hasSdp(req)) {
        const { plan } = negotiateAnswer(req.body, { allowedCodecs: trunk.codecs, localAddress: this.#localAddress(this.#mediaSettings.relayAnnouncedAddress || '0.0.0.0'), localPort: 9, ...srtpOption(trunk, secure) });
        srtpCall = plan.srtp !== undefined;
      }
      if (trunk.media.srtp === 'required' && !srtpCall) {
        throw new SdpError('SRTP_REQUIRED', `trunk ${trunk.id} requires SDES-SRTP (${SRTP_SUITE}) over SIP TLS, offered in the INVITE`);
      }
    } catch (err) {
      if (err instanceof SdpError) {
        log.info({ reason: err.reason, code: err.code }, 'rejecting INVITE: unusable SDP');
        res.send(err.status, { headers: { Warning: err.warning('ringbridge') } });

        return;
      }
      throw err;
    }
    const called = parseUri(req.uri)?.user ?? '';
    const route: RouteTarget | undefined = handoff ? { kind: 'group', groupId: `handoff:${handoff.origin}`, members: handoff.agents, strategy: 'ring-all' } : this.#router.resolve(called);
    if (!route) {
      log.info({ called }, 'rejecting INVITE: no route for the called number');
      res.send(404);

      return;
    }
    const fromNa = parseNameAddr(req.get('From') ?? '');
    const callerNumber = (fromNa && parseUri(fromNa.uri)?.user) ?? 'anonymous';
    const call = new Call({ ...(handoff ? { id: handoff.callId } : {}), direction: 'inbound', trunk, from: { number: callerNumber, ...(fromNa?.displayName ? { name: fromNa.displayName } : {}) }, to: { number: called } });
    call.sipCallId = sipCallId;
    call.inviteReq = req;
    call.inviteRes = res;
    call.origin = handoff?.origin;
    call.signalingSecure = secure;
    call.srtp = srtpCall;
    if (handoff) {
      this.#notePeerRun(call, handoff.origin);
    }
    // the trunk's cap before any ringing work; the node holding the trunk leg counts the call
    const capped = !handoff && trunk.maxConcurrentCalls > 0;
    if (capped && !(await this.#store.admitTrunkCall(trunk.id, call.id, trunk.maxConcurrentCalls))) {
      log.info({ trunk: trunk.id, max: trunk.maxConcurrentCalls }, 'rejecting INVITE: the trunk has its most concurrent calls');
      this.#security?.rejected('trunk_cap');
      res.send(503, { headers: { 'Retry-After': '5', Warning: '399 ringbridge "too many calls on this trunk"' } });

      return;
    }
    let plan: RingTarget[];
    try {
      // an SRTP call rings this node's agents only: a hand-off leg would carry its keys in clear
      plan = await this.#ringPlan(route, handoff !== undefined, srtpCall);
    } catch (err) {
      if (capped) {
        void this.#store.releaseTrunkCall(trunk.id, call.id);
      }
      throw err;
    }
    if (plan.length === 0 && !handoff && route.kind === 'group' && this.#centre.canQueue(route.groupId)) {
      // nobody free: the caller is answered and waits in the group's queue (call-centre.ts)
      this.#calls.set(call.id, call);
      req.on('cancel', () => this.#callerCancelled(call));
      void this.#store.putCall(call.id, { direction: 'inbound', state: 'queued', trunkId: trunk.id, from: this.#store.storedNumber(call.from.number), to: this.#store.storedNumber(called), node: this.#store.nodeId, offeredAt: call.times.offeredAt.toISOString() });
      await this.#centre.enqueueNew(call, route.groupId).catch((err: unknown) => log.warn({ err }, 'cannot queue the call'));

      return;
    }
    if (plan.length === 0) {
      log.info({ route: route.kind, handoff: handoff !== undefined }, 'rejecting INVITE: no agent available');
      if (capped) {
        void this.#store.releaseTrunkCall(trunk.id, call.id);
      }
      res.send(480);
      if (!handoff) {
        this.#record(call, 'unavailable', 'system', 480);
      }

      return;
    }
    this.#calls.set(call.id, call);
    req.on('cancel', (cancel?: { get?: (h: string) => string | undefined }) => {
      // RFC 3326 Reason cause=200: the origin node's call was answered on another node
      const reason = cancel?.get?.('Reason') ?? '';
      this.#callerCancelled(call, /cause=200\b/.test(reason) ? 'answered_elsewhere' : 'caller_cancelled');
    });
    res.send(180);
    call.times.ringingAt = new Date();
    if (!handoff) {
      this.#metrics?.ringing('inbound', call.times.offeredAt.getTime(), call.times.ringingAt.getTime());
    }
    const ringMs = handoff ? handoff.ringMs : this.#cfg.calls.ringTimeoutMs;
    call.ringDeadline = Date.now() + ringMs;
    void this.#store.putCall(
      call.id,
      handoff
        ? { agentNode: this.#store.nodeId }
        : { direction: 'inbound', state: 'ringing', trunkId: trunk.id, from: this.#store.storedNumber(call.from.number), to: this.#store.storedNumber(called), node: this.#store.nodeId, offeredAt: call.times.offeredAt.toISOString(), ringingAt: call.times.ringingAt.toISOString() },
    );
    log.info({ callId: call.id, trunk: trunk.id, targets: plan.length, remote: plan.filter((t) => t.nodes.length > 0).length, strategy: route.kind === 'group' ? route.strategy : 'agent', origin: handoff?.origin }, 'ringing agents');
    call.timer(ringMs, () => this.#ringTimeout(call));
    if (route.kind === 'group' && route.strategy === 'longest-idle') {
      this.#ringNext(call, plan);
    } else {
      this.#ringTargets(call, plan);
    }
  }

  /**
   * Who to ring for a route: agents available here (a local session, not ringing or on a call) and,
   * with the cluster on, agents available on other live, non-draining nodes; longest idle first for
   * that strategy. For a hand-off, only this node's sessions of the named agents count.
   */
  async #ringPlan(route: RouteTarget, handoff: boolean, localOnly = false): Promise<RingTarget[]> {
    const candidates = route.kind === 'agent' ? [route.agentId] : route.members;
    if (handoff) {
      // the origin node checked the cluster view; re-read the agents' own status, set maybe on another node
      await Promise.all(candidates.map((a) => this.presence.reload(a)));
    }
    const plan: RingTarget[] = [];
    let cluster: Map<string, ClusterPresence> | undefined;
    const registry = this.#cluster?.registry;
    if (registry && !handoff && !localOnly) {
      try {
        const live = await this.#nodesTakingCalls(registry);
        live.add(this.#store.nodeId);
        cluster = new Map((await this.#store.clusterPresence(candidates, live)).map((p) => [p.agentId, p]));
      } catch (err) {
        this.#log.warn({ err }, 'cannot read presence across the cluster; ringing this node only');
      }
    }
    for (const agentId of candidates) {
      const p = cluster?.get(agentId);
      if (p && p.effective !== 'available' && p.effective !== 'offline') {
        continue; // on a call, ringing or busy somewhere in the cluster
      }
      const local = this.presence.isAvailable(agentId);
      const nodes = p ? p.nodes.filter((n) => n !== this.#store.nodeId && registry?.isLive(n)) : [];
      // registered SIP devices ring with the sessions; alone, they make the agent ringable (README "SIP devices")
      const devices = !handoff && !localOnly ? await this.#ringableDevices(agentId, local, p?.status) : [];
      if (local || nodes.length > 0 || devices.length > 0) {
        // bindings with RFC 8599 push parameters are pushed too: their app may sleep behind a live binding
        const push = devices.length > 0 && this.#wake ? await sipDevicePushes(this.#wake, agentId, devices) : [];
        plan.push({ agentId, local, nodes, ...(devices.length > 0 ? { devices } : {}), ...(push.length > 0 ? { wake: push } : {}) });
      } else if (!handoff && this.#wake && (this.#signaling?.sessionsOf(agentId).length ?? 0) === 0 && (p === undefined || p.effective === 'offline')) {
        // No session anywhere: wake the agent's devices, if its own status says it takes calls.
        const wake = await this.#wakeTargets(agentId, p?.status);
        if (wake.length > 0) {
          plan.push({ agentId, local: false, nodes: [], wake });
        }
      }
    }
    if (route.kind === 'group' && route.strategy === 'longest-idle') {
      const order = await this.#store.longestIdleFirst(plan.map((t) => t.agentId));
      const byId = new Map(plan.map((t) => [t.agentId, t]));

      return order.map((a) => byId.get(a)!);
    }

    return plan;
  }

  /** The devices to wake for an offline agent whose own status is available (none on a Redis error). */
  async #wakeTargets(agentId: string, status: string | undefined): Promise<Device[]> {
    try {
      // both reads at once: the wake path is INVITE → push, every Redis round trip counts
      const [own, devices] = await Promise.all([status ?? this.#store.getStatus(agentId), this.#wake!.wakeableDevices(agentId)]);

      return (own ?? 'available') === 'available' ? devices : [];
    } catch (err) {
      this.#log.warn({ err, agent: agentId }, 'cannot read the agent\'s devices; not waking it');

      return [];
    }
  }

  /** Ids of the live nodes that take calls (not draining), read fresh from Redis. @throws when Redis fails */
  async #nodesTakingCalls(registry: NodeRegistry): Promise<Set<string>> {
    return new Set([...(await registry.refreshLive()).values()].filter((n) => !n.draining).map((n) => n.id));
  }

  /** Rings targets at once: local sessions here, one hand-off leg per other node, pushes to sleeping devices. */
  #ringTargets(call: Call, targets: RingTarget[]): void {
    const byNode = new Map<string, string[]>();
    for (const t of targets) {
      if (t.local) {
        this.#ring(call, t.agentId);
      }
      if (t.wake) {
        this.#wakeAgent(call, t.agentId, t.wake);
      }
      if (t.devices) {
        this.#ringDevices(call, t.agentId, t.devices);
      }
      for (const n of t.nodes) {
        byNode.set(n, [...(byNode.get(n) ?? []), t.agentId]);
      }
    }
    for (const [node, agents] of byNode) {
      this.#openLeg(call, node, agents);
    }
  }

  #ring(call: Call, agentId: string): void {
    call.ringing.add(agentId);
    const ringTimeoutMs = Math.max(0, (call.ringDeadline ?? Date.now() + this.#cfg.calls.ringTimeoutMs) - Date.now());
    this.#emit(agentId, 'call.incoming', { ...call.info(), ringTimeoutMs });
    this.presence.refresh(agentId);
  }

  #unring(call: Call, agentId: string, reason: CancelReason): void {
    if (call.ringing.delete(agentId)) {
      this.#emit(agentId, 'call.cancelled', { callId: call.id, reason });
      this.presence.refresh(agentId);
    }
  }

  /** Sends the wake pushes for an agent and watches for its devices to connect. */
  #wakeAgent(call: Call, agentId: string, devices: Device[]): void {
    const wake = this.#wake;
    if (!wake || call.waking.has(agentId)) {
      return;
    }
    call.waking.set(agentId, Date.now());
    const ringLeftMs = Math.max(1000, (call.ringDeadline ?? Date.now()) - Date.now());
    void wake
      .wake({ id: call.id, callerDisplay: this.#store.storedNumber(call.from.number), ringLeftMs }, agentId, devices)
      .catch((err: unknown) => {
        this.#log.warn({ err, callId: call.id }, 'wake pushes failed');

        return 0;
      })
      .then((delivered: number) => {
        if (delivered === 0 && call.waking.delete(agentId)) {
          this.#ringingDone(call); // no device can wake: do not wait for it
        }
      });
    call.wakePoll ??= setInterval(() => void this.#pollWakes(call), WAKE_POLL_MS);
  }

  /** A woken agent connected somewhere: ring it there (here, or through a hand-off leg). */
  async #pollWakes(call: Call): Promise<void> {
    if (call.state !== 'ringing' || call.waking.size === 0) {
      clearInterval(call.wakePoll);
      call.wakePoll = undefined;

      return;
    }
    const agents = [...call.waking.keys()];
    for (const agentId of agents) {
      if ((this.#signaling?.sessionsOf(agentId).length ?? 0) > 0 && call.waking.delete(agentId)) {
        this.#ring(call, agentId);
      }
    }
    const registry = this.#cluster?.registry;
    const remaining = [...call.waking.keys()];
    if (!registry || remaining.length === 0) {
      return;
    }
    let found: ClusterPresence[];
    try {
      const live = await this.#nodesTakingCalls(registry);
      found = await this.#store.clusterPresence(remaining, live);
    } catch {
      return; // Redis away: try again on the next tick
    }
    for (const p of found) {
      const nodes = p.nodes.filter((n) => n !== this.#store.nodeId);
      if (call.state === 'ringing' && nodes.length > 0 && call.waking.delete(p.agentId)) {
        for (const n of nodes) {
          this.#openLeg(call, n, [p.agentId]);
        }
      }
    }
  }

  /**
   * The call stopped ringing: woken devices that did not connect get a cancel or missed notice,
   * and the wake records say why (whoever connects later is told at once).
   */
  #settleWakes(call: Call, outcome: WakeOutcome, answeredBy?: string): void {
    clearInterval(call.wakePoll);
    call.wakePoll = undefined;
    call.waking.clear();
    if (!this.#wake?.woke(call.id)) {
      return;
    }
    const outcomes = new Map<string, WakeOutcome>();
    for (const a of this.#wake.wokenAgents(call.id)) {
      outcomes.set(a, a === answeredBy ? 'answered' : outcome);
    }
    void this.#wake.settle(call.id, outcomes, this.#store.storedNumber(call.from.number));
  }

  /** longest-idle: ring the next agent still available (here or on its nodes), for ringStepMs. */
  #ringNext(call: Call, queue: RingTarget[]): void {
    if (call.state !== 'ringing') {
      return;
    }
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'ring_timeout');
    }
    this.#cancelLegs(call, 'ring_timeout');
    (call.devices as CallDevices | undefined)?.stepAway();
    let next: RingTarget | undefined;
    for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
      if (call.declined.has(t.agentId)) {
        continue;
      }
      const local = t.local && this.presence.isAvailable(t.agentId);
      const nodes = t.nodes.filter((n) => this.#cluster?.registry.isLive(n));
      if (local || nodes.length > 0 || t.devices) {
        // the agent's SIP devices (and their pushes) ring in its step too
        next = { agentId: t.agentId, local, nodes, ...(t.devices ? { devices: t.devices } : {}), ...(t.devices && t.wake ? { wake: t.wake } : {}) };
        break;
      }
      if (t.wake) {
        next = t;
        break;
      }
    }
    if (next === undefined) {
      this.#allDeclinedOrGone(call);

      return;
    }
    this.#ringTargets(call, [next]);
    call.timer(this.#cfg.calls.ringStepMs, () => this.#ringNext(call, queue));
    call.ringQueue = queue;
  }

  /** Nobody rings any more (declines, lost sessions, failed legs): the next step, or the end. */
  #ringingDone(call: Call): void {
    if (call.state !== 'ringing' || call.ringing.size > 0 || call.legsRinging || call.waking.size > 0) {
      return;
    }
    if (call.ringQueue && call.ringQueue.length > 0) {
      this.#ringNext(call, call.ringQueue);
    } else {
      this.#allDeclinedOrGone(call);
    }
  }

  #allDeclinedOrGone(call: Call): void {
    if (call.state !== 'ringing') {
      return;
    }
    const busyOnly = call.busyDeclines === call.declined.size && call.declined.size > 0;
    const status = call.declined.size === 0 ? 480 : busyOnly ? 486 : 603;
    this.#rejectInbound(call, status, call.declined.size === 0 ? 'unavailable' : busyOnly ? 'busy' : 'declined');
  }

  #rejectInbound(call: Call, status: number, reason: EndReason): void {
    this.#settleWakes(call, status === 480 ? 'ring_timeout' : 'declined');
    for (const a of [...call.ringing]) {
      this.#unring(call, a, status === 480 ? 'ring_timeout' : 'declined');
    }
    this.#cancelLegs(call, 'ring_timeout');
    if (call.dialog) {
      // an established call offered anew (call-centre.ts): its next step, not a SIP status
      this.#centre.unanswered(call);

      return;
    }
    if (call.inviteRes && !call.inviteRes.finalResponseSent) {
      call.inviteRes.send(status);
    }
    this.#finish(call, reason, 'system', status);
  }

  #ringTimeout(call: Call): void {
    if (call.state === 'ringing') {
      this.#log.info({ callId: call.id }, 'nobody answered within the ring timeout');
      this.#rejectInbound(call, 480, 'no_answer');
    }
  }

  #callerCancelled(call: Call, reason: 'caller_cancelled' | 'answered_elsewhere' = 'caller_cancelled'): void {
    if (call.state !== 'ringing' && call.state !== 'answering') {
      return;
    }
    this.#settleWakes(call, reason);
    for (const a of [...call.ringing]) {
      this.#unring(call, a, reason);
    }
    this.#cancelLegs(call, 'caller_cancelled');
    if (call.agentId) {
      this.#emit(call.agentId, 'call.ended', { callId: call.id, reason: reason === 'answered_elsewhere' ? 'answered_elsewhere' : 'cancelled', by: 'remote', sipStatus: 487 });
    }
    this.#finish(call, 'cancelled', 'remote', 487);
  }

  // ----------------------------------------------------------------------------------------------
  // Agents' SIP devices (device-ringer.ts, issue 12)
  // ----------------------------------------------------------------------------------------------

  /**
   * The registrar's onChange: an agent's SIP bindings changed. A ringing call that is waking the
   * agent by push (its SIP device was asleep: no binding left, or a binding whose app sleeps) or
   * already rings its devices rings the registrations it has not rung yet: the woken device's new
   * binding (or its binding refreshed over a new flow) gets the waiting call, and the fork to the
   * stale flow of the same binding is cancelled (CallDevices.add). A refresh over the same flow
   * rings nothing again, and nothing is pushed twice (WakeService.wake: one wake per agent and call).
   */
  sipBindingsChanged(agentId: string, bindings: number): void {
    if (bindings === 0 || !this.#devices) {
      return;
    }
    for (const call of this.#calls.values()) {
      if (call.state !== 'ringing' || !(call.waking.has(agentId) || (call.devices as CallDevices | undefined)?.rings(agentId))) {
        continue;
      }
      void this.#ringableDevices(agentId, true, undefined).then((bs) => {
        const fresh = bs.filter((b) => !(call.devices as CallDevices | undefined)?.rang(b));
        if (fresh.length > 0 && call.state === 'ringing') {
          call.waking.delete(agentId);
          this.#log.info({ callId: call.id, agent: agentId, bindings: fresh.length }, 'a woken SIP device registered: ringing its new binding');
          this.#ringDevices(call, agentId, fresh);
          for (const b of fresh) {
            if (b.deviceId) {
              void this.#wake?.sessionReady(agentId, b.deviceId); // push-to-connect time, wake record
            }
          }
        }
      });
    }
  }

  /** An agent's SIP bindings to ring: with a session here, or alone when the agent's own status is available and it is on no call here. */
  async #ringableDevices(agentId: string, local: boolean, status: string | undefined): Promise<SipBinding[]> {
    if (!this.#devices || (!local && this.#activity(agentId) !== undefined)) {
      return [];
    }
    // a TCP/TLS binding's connection is on the node that took its REGISTER: only that node can ring it
    const bindings = (await this.#devices.ringable(agentId)).filter((b) => b.flow.transport === 'udp' || b.node === this.#store.nodeId);
    if (bindings.length === 0 || local) {
      return bindings;
    }
    const own = status ?? (await this.#store.getStatus(agentId).catch(() => undefined));

    return (own ?? 'available') === 'available' ? bindings : [];
  }

  #ringDevices(call: Call, agentId: string, bindings: SipBinding[]): void {
    const offer = call.inviteReq && hasSdp(call.inviteReq) ? call.inviteReq.body : undefined;
    if (!this.#devices || !offer) {
      return; // late offer: WebRTC sessions only (device-ringer.ts; SRTP calls ring devices over TLS only)
    }
    let codec: TrunkCodecName;
    try {
      codec = negotiateAnswer(offer, { allowedCodecs: call.trunk.codecs, localAddress: this.#localAddress(this.#mediaSettings.relayAnnouncedAddress || '0.0.0.0'), localPort: 9, ...srtpOption(call.trunk, call.signalingSecure) }).plan.codec.name;
    } catch {
      return;
    }
    call.ringing.add(agentId);
    this.presence.refresh(agentId);
    void this.#devices.ring(call, agentId, bindings, codec, {
      answered: (a) => {
        this.#deviceAnswered(call, a).catch((err: unknown) => {
          this.#log.warn({ err, callId: call.id }, 'a SIP device answered but the call could not be connected');
          this.#hangupTrunk(call, 'media_error', 'SIP;cause=500;text="device leg failed"');
        });
      },
      gone: (gone, declined, busy) => {
        if (declined && !call.declined.has(gone)) {
          call.waking.delete(gone); // the device refused: no woken device is awaited for the agent
          call.declined.add(gone);
          call.busyDeclines += busy ? 1 : 0;
        }
        if (!this.#signaling?.sessionsOf(gone).length) {
          call.ringing.delete(gone);
        }
        this.#ringingDone(call);
      },
    });
  }

  /** A SIP device answered first among the devices: first answer wins against sessions too; bridge it to the trunk. */
  async #deviceAnswered(call: Call, a: DeviceAnswer): Promise<void> {
    if (call.state !== 'ringing' || !call.inviteReq || !call.inviteRes) {
      a.dialog.destroy();
      a.media.close();

      return;
    }
    call.transition('answering');
    call.agentId = a.agentId;
    // from now on the call's end hangs up the device (BYE), and the device's BYE ends the call
    (call.devices as CallDevices).keep(a.dialog, a.media, () => {
      if (!call.live) {
        return;
      }
      if (call.dialog) {
        call.dialog.destroy();
        this.#finish(call, 'hangup_local', 'local');
      } else {
        this.#hangupTrunk(call, 'failed', 'SIP;cause=487;text="the device hung up"');
      }
    });
    call.ringing.delete(a.agentId);
    this.#settleWakes(call, 'answered_elsewhere', a.agentId);
    for (const other of [...call.ringing]) {
      this.#unring(call, other, 'answered_elsewhere');
    }
    this.#emit(a.agentId, 'call.cancelled', { callId: call.id, reason: 'answered_elsewhere' });
    this.#cancelLegs(call, 'answered_elsewhere');
    for (const t of call.timers) {
      clearTimeout(t);
    }
    call.timers.clear();
    this.presence.refresh(a.agentId);
    const media = await CallMedia.create(this.#mediaSettings, { latching: call.trunk.media.latching });
    call.media = media;
    media.onClose(() => {
      a.media.close();
      if (call.live) {
        this.#hangupTrunk(call, 'media_error', 'SIP;cause=500;text="media failure"');
      }
    });
    const { answerSdp, plan } = negotiateAnswer(call.inviteReq.body, { allowedCodecs: call.trunk.codecs, localAddress: this.#localAddress(media.localRtp.address), localPort: media.localRtp.port });
    call.localSdp = answerSdp;
    await media.applyPlan(plan);
    this.#watchRelay(call);
    await a.media.bridge(a.sdp, media);
    if (!call.live || !call.inviteReq || !call.inviteRes) {
      throw new Error('the caller hung up');
    }
    const dialog = await this.#srf.createUAS(call.inviteReq, call.inviteRes, { localSdp: call.localSdp });
    call.dialog = dialog;
    call.inviteReq = undefined;
    call.inviteRes = undefined;
    call.transition('active');
    this.#sampleQuality(call);
    this.#recording?.answered(call);
    this.#watchDialog(call, dialog);
    void this.#store.putCall(call.id, { state: 'active', agentId: a.agentId, answeredAt: call.times.answeredAt?.toISOString(), codec: plan.codec.name });
    this.#log.info({ callId: call.id, agent: a.agentId, transport: a.binding.flow.transport, codec: plan.codec.name }, 'call answered on a SIP device');
  }

  /** The call manager's part in SIP devices' outbound calls: call.dial's checks and the call life cycle. */
  #deviceDialHost(devices: NonNullable<CallManagerOptions['sipDevices']>, logger: Logger): DeviceDialer {
    return new DeviceDialer({
      srf: this.#srf,
      media: this.#mediaSettings,
      logger,
      realm: devices.realm,
      dialTimeoutMs: this.#cfg.calls.dialTimeoutMs,
      authenticate: (method, req) => devices.authenticate(method, req),
      admit: async (agentId, to) => {
        if (!this.#accepting() || !this.#stateReady()) {
          throw new SignalingError('UNAVAILABLE', 'draining, or the state store is unavailable');
        }

        return this.#admitDial(agentId, to, undefined);
      },
      admitTrunkCall: async (call) => call.trunk.maxConcurrentCalls === 0 || (await this.#store.admitTrunkCall(call.trunk.id, call.id, call.trunk.maxConcurrentCalls)),
      started: (call) => {
        this.#calls.set(call.id, call);
        this.presence.refresh(call.agentId!);
        void this.#store.putCall(call.id, { direction: 'outbound', state: 'dialing', trunkId: call.trunk.id, agentId: call.agentId, node: this.#store.nodeId, from: this.#store.storedNumber(call.from.number), to: this.#store.storedNumber(call.to.number), offeredAt: call.times.offeredAt.toISOString() });
      },
      ringing: (call) => this.#metrics?.ringing('outbound', call.times.offeredAt.getTime(), call.times.ringingAt!.getTime()),
      answered: (call, dialog) => {
        call.transition('active');
        this.#sampleQuality(call);
        this.#recording?.answered(call);
        call.media?.relay.restartInactivity();
        this.#watchDialog(call, dialog);
        void this.#store.putCall(call.id, { state: 'active', answeredAt: call.times.answeredAt?.toISOString(), codec: call.media?.plan?.codec.name });
      },
      watchRelay: (call) => this.#watchRelay(call),
      finish: (call, reason, by, status) => this.#finish(call, reason, by, status),
      endReason: endReasonForStatus,
    });
  }

  // ----------------------------------------------------------------------------------------------
  // Hand-off legs (handoff.ts): ringing agents connected to other nodes
  // ----------------------------------------------------------------------------------------------

  /** Opens a hand-off leg: an INVITE to another node to ring its sessions of these agents. */
  #openLeg(call: Call, nodeId: string, agents: string[]): void {
    const node = this.#cluster?.registry.live.get(nodeId);
    const invite = call.inviteReq;
    if (!this.#cluster || !node || !invite || !node.sipUri) {
      return;
    }
    const leg: RemoteLeg = { node: nodeId, agents, req: undefined, cancelled: false, done: false };
    call.legs.set(nodeId, leg);
    call.peerSince = Date.now();
    this.#notePeerRun(call, nodeId);
    const ringMs = Math.max(1000, (call.ringDeadline ?? Date.now()) - Date.now());
    const user = parseUri(invite.uri)?.user ?? 'ringbridge';
    const uri = node.sipUri.replace(/^sip:/, `sip:${user}@`);
    const from = (invite.get('From') ?? '').replace(/;\s*tag=[^;>\s]*/i, '');
    const headers: Record<string, string> = { ...this.#cluster.handoff.headers({ callId: call.id, agents, trunkId: call.trunk.id, origin: this.#store.nodeId, ringMs }, hasSdp(invite) ? invite.body : ''), ...(from ? { From: from } : {}) };
    const late = !hasSdp(invite);
    const log = this.#log.child({ callId: call.id, node: nodeId });
    log.debug({ agents: agents.length }, 'hand-off leg: ringing agents on another node');
    this.#srf
      .createUAC(uri, { headers, ...(late ? { noAck: true } : { localSdp: invite.body }) }, {
        cbRequest: ((_err: unknown, sent: Srf.SrfRequest) => {
          leg.req = sent;
          if (leg.cancelled && sent) {
            sent.cancel(() => undefined);
          }
        }) as unknown as (req: Srf.SrfRequest) => void,
      })
      .then(
        (r: unknown) => {
          this.#legAnswered(call, leg, r as Srf.Dialog | LateOfferLeg).catch((err: unknown) => {
            log.warn({ err }, 'hand-off leg answered but the call could not be connected');
            this.#hangupTrunk(call, 'failed', 'SIP;cause=500;text="hand-off failed"');
          });
        },
        (err: { status?: number }) => this.#legFailed(call, leg, err.status ?? 500),
      );
  }

  /** CANCELs the hand-off legs still ringing; `answered_elsewhere` says so (RFC 3326 Reason cause=200). */
  #cancelLegs(call: Call, why: CancelReason): void {
    for (const leg of call.legs.values()) {
      if (leg.done || leg.cancelled) {
        continue;
      }
      leg.cancelled = true;
      leg.done = true;
      const opts = why === 'answered_elsewhere' ? { headers: { Reason: 'SIP;cause=200;text="Call completed elsewhere"' } } : {};
      try {
        (leg.req as unknown as { cancel(opts: object, cb: () => void): void } | undefined)?.cancel(opts, () => undefined);
      } catch (err) {
        this.#log.debug({ err, node: leg.node }, 'cannot cancel a hand-off leg');
      }
    }
  }

  #legFailed(call: Call, leg: RemoteLeg, status: number): void {
    const wasCancelled = leg.cancelled;
    leg.done = true;
    if (wasCancelled || call.state !== 'ringing') {
      return;
    }
    this.#log.debug({ callId: call.id, node: leg.node, status }, 'hand-off leg ended without an answer');
    if (status === 486 || status === 600 || status === 603) {
      for (const a of leg.agents) {
        if (!call.declined.has(a)) {
          call.declined.add(a);
          if (status !== 603) {
            call.busyDeclines++;
          }
        }
      }
    }
    this.#ringingDone(call);
  }

  /** An agent on another node answered: the trunk gets that node's SDP; this node keeps only signaling. */
  async #legAnswered(call: Call, leg: RemoteLeg, r: Srf.Dialog | LateOfferLeg): Promise<void> {
    const late = isLateOfferLeg(r);
    leg.done = true;
    if (call.state !== 'ringing' || leg.cancelled || !call.inviteReq || !call.inviteRes) {
      // another answer won, or the caller left: release this one (BYE)
      if (late) {
        void r.destroy?.();
      } else {
        r.destroy();
      }

      return;
    }
    call.transition('answering');
    const agentId = late ? '' : ((r as unknown as { res?: { get(h: string): string | undefined } }).res?.get('X-RB-Agent') ?? '');
    call.remote = { node: leg.node, agentId, dialog: late ? undefined : r, release: late ? () => void r.destroy?.() : undefined };
    call.devices?.cancel(true);
    this.#settleWakes(call, 'answered_elsewhere', agentId || leg.agents[0]);
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'answered_elsewhere');
    }
    this.#cancelLegs(call, 'answered_elsewhere');
    for (const t of call.timers) {
      clearTimeout(t);
    }
    call.timers.clear();
    const sdp = late ? r.sdp : r.remote.sdp;
    const trunkDialog = await this.#srf.createUAS(call.inviteReq, call.inviteRes, { localSdp: sdp });
    call.dialog = trunkDialog;
    call.inviteReq = undefined;
    call.inviteRes = undefined;
    if (!call.live) {
      trunkDialog.destroy();

      return;
    }
    call.transition('active');
    if (late) {
      // the trunk's ACK carries its answer to the other node's offer (RFC 3264 §5)
      (trunkDialog as unknown as { once(event: 'ack', listener: (ack: Srf.SrfRequest) => void): void }).once('ack', (ack) => {
        r.ack(ack.body ?? '').then(
          (legDialog) => {
            if (!call.live || !call.remote) {
              legDialog.destroy();

              return;
            }
            call.remote.dialog = legDialog;
            call.remote.release = undefined;
            this.#watchRemote(call, trunkDialog, legDialog);
          },
          (err: unknown) => {
            this.#log.warn({ err, callId: call.id }, 'cannot complete the hand-off leg of a late-offer call');
            this.#hangupTrunk(call, 'failed', 'SIP;cause=500;text="hand-off failed"');
          },
        );
      });
    } else {
      this.#watchRemote(call, trunkDialog, r);
    }
    this.#watchTrunkOnly(call, trunkDialog);
    void this.#store.putCall(call.id, { state: 'active', agentNode: leg.node, answeredAt: call.times.answeredAt?.toISOString() });
    this.#log.info({ callId: call.id, node: leg.node }, 'call answered on another node');
  }

  /** A call answered on another node: BYE and re-INVITEs pass between the trunk and that node. */
  #watchRemote(call: Call, trunkDialog: Srf.Dialog, legDialog: Srf.Dialog): void {
    legDialog.on('destroy', () => {
      if (call.remote) {
        call.remote.dialog = undefined; // it is gone: no BYE back
      }
      if (call.live) {
        trunkDialog.destroy();
        this.#finish(call, 'hangup_local', 'local');
      }
    });
    trunkDialog.on('modify', (req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      legDialog.modify(req.body ?? '').then(
        (sdp: string) => res.send(200, { body: sdp }),
        (err: { status?: number }) => res.send(err.status && err.status >= 400 ? err.status : 500),
      );
    });
    legDialog.on('modify', (req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      trunkDialog.modify(req.body ?? '').then(
        (sdp: string) => res.send(200, { body: sdp }),
        (err: { status?: number }) => res.send(err.status && err.status >= 400 ? err.status : 500),
      );
    });
  }

  /** The trunk's BYE on a call answered on another node. */
  #watchTrunkOnly(call: Call, trunkDialog: Srf.Dialog): void {
    trunkDialog.on('destroy', () => {
      if (call.live) {
        this.#finish(call, 'hangup_remote', 'remote');
      }
    });
  }

  /**
   * After each registry refresh: calls that depend on a node that stopped beating end. A call that
   * rings there loses that leg; one answered there is hung up toward the trunk; one handed here by
   * a dead node ends for its agent.
   */
  /** Remembers which run of a peer node the call depends on (see Call.peerRuns). */
  #notePeerRun(call: Call, nodeId: string): void {
    const run = this.#cluster?.registry.live.get(nodeId)?.startedAt;
    if (run) {
      call.peerRuns.set(nodeId, run);
    }
  }

  /** Whether a peer node is live and still the run the call started with. */
  #peerHolds(call: Call, nodeId: string): boolean {
    const info = this.#cluster?.registry.live.get(nodeId);
    if (!info) {
      return false;
    }
    const run = call.peerRuns.get(nodeId);

    return run === undefined || info.startedAt === run;
  }

  #checkPeers(): void {
    const registry = this.#cluster?.registry;
    if (!registry) {
      return;
    }
    const graceMs = this.#cfg.cluster.nodeTtlMs;
    for (const call of this.calls) {
      for (const leg of call.legs.values()) {
        const legGone = !this.#peerHolds(call, leg.node) && (registry.isLive(leg.node) || registry.silentForMs(leg.node) > graceMs);
        if (!leg.done && legGone && Date.now() - (call.peerSince ?? 0) > graceMs) {
          this.#log.warn({ callId: call.id, node: leg.node }, 'the node a hand-off leg rings is down');
          leg.cancelled = true;
          leg.done = true;
          this.#ringingDone(call);
        }
      }
      const peer = call.peerNode;
      if (!peer || !call.live) {
        continue;
      }
      const restarted = registry.isLive(peer) && !this.#peerHolds(call, peer);
      if (!restarted && (registry.isLive(peer) || registry.silentForMs(peer) <= graceMs || Date.now() - (call.peerSince ?? 0) <= graceMs)) {
        continue;
      }
      if (call.remote) {
        this.#log.warn({ callId: call.id, node: peer }, restarted ? 'the node holding the agent of this call restarted; hanging up' : 'the node holding the agent of this call is down; hanging up');
        call.remote.dialog = undefined;
        this.#hangupTrunk(call, 'node_failure', 'SIP;cause=503;text="agent node lost"');
      } else if (call.origin) {
        this.#log.warn({ callId: call.id, node: peer }, restarted ? 'the node holding the trunk side of this call restarted; ending it' : 'the node holding the trunk side of this call is down; ending it');
        for (const a of [...call.ringing]) {
          this.#unring(call, a, 'node_failure');
        }
        this.#hangupTrunk(call, 'node_failure', 'SIP;cause=503;text="trunk node lost"');
      }
    }
  }

  async #answer(session: AgentSession, callId: string): Promise<ResponseData['call.answer']> {
    const call = this.#calls.get(callId);
    if (!call || call.direction !== 'inbound' || (!call.ringing.has(session.agentId) && call.agentId !== session.agentId)) {
      throw new SignalingError('NOT_FOUND', `no call ${callId} ringing for you`);
    }
    if (call.state !== 'ringing') {
      throw new SignalingError(call.agentId && call.agentId !== session.agentId ? 'ALREADY_ANSWERED' : 'INVALID_STATE', `call ${callId} is ${call.state}`);
    }
    // One call at a time per agent (unless security.agents.maxConcurrentCalls allows more): a
    // second answer would leave the first call up with nobody able to see it (the softphone shows
    // one call); the ringing call stays for others.
    if ((this.#security?.maxCallsPerAgent ?? 1) === 1) {
      for (const other of this.#calls.values()) {
        if (other !== call && other.agentId === session.agentId && other.live && other.state !== 'ringing') {
          throw new SignalingError('INVALID_STATE', 'you are already on a call: hang it up first');
        }
      }
    }
    // First answer wins: the transition happens before anything asynchronous.
    call.transition('answering');
    call.agentId = session.agentId;
    call.sessionId = session.id;
    call.ringing.delete(session.agentId);
    call.devices?.cancel(true);
    this.#settleWakes(call, 'answered_elsewhere', session.agentId);
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'answered_elsewhere');
    }
    this.presence.refresh(session.agentId);
    for (const t of call.timers) {
      clearTimeout(t);
    }
    call.timers.clear();
    if (call.dialog) {
      // an established call offered anew (call-centre.ts): the trunk leg stays, the agent joins its router
      const joined = await this.#centre.answered(call, session);
      this.#recording?.agentJoined(call);

      return joined;
    }
    const log = this.#log.child({ callId: call.id, agent: session.agentId });
    try {
      const offer = (await this.#answerTrunk(call, session.agentId))!;
      this.#emit(session.agentId, 'call.answered', { callId: call.id });
      void this.#store.putCall(call.id, { state: 'active', agentId: session.agentId, answeredAt: call.times.answeredAt?.toISOString(), codec: call.media?.plan?.codec.name });
      log.info({ codec: call.media?.plan?.codec.name ?? 'late offer' }, 'call answered');

      return { callId: call.id, media: offer };
    } catch (err) {
      if (err instanceof SignalingError) {
        throw err;
      }
      throw new SignalingError('MEDIA_ERROR', `cannot answer: ${(err as Error).message}`);
    }
  }

  /**
   * Answers an inbound call (state answering) toward the trunk: the call's media (a router, the
   * relay), our SDP answer (or, for a late offer, our offer), the 200 OK; the call becomes active.
   * With `agentId`, that agent's WebRTC transports are made before the 200 OK and returned.
   * A failure rejects the INVITE (500) or ends the call, and is rethrown.
   * @throws {SignalingError | CallMediaError | SdpError | Error}
   */
  async #answerTrunk(call: Call, agentId?: string): Promise<MediaOffer | undefined> {
    const log = this.#log.child({ callId: call.id, ...(agentId ? { agent: agentId } : {}) });
    try {
      const media = await CallMedia.create(this.#mediaSettings, { latching: call.trunk.media.latching });
      call.media = media;
      media.onClose(() => {
        if (call.live) {
          this.#hangupTrunk(call, 'media_error', 'SIP;cause=500;text="media failure"');
        }
      });
      const local = media.localRtp;
      const lateOffer = !hasSdp(call.inviteReq!);
      if (lateOffer) {
        // RFC 3264 §5: our offer goes in the 200 OK; the trunk's answer comes in the ACK.
        call.localSdp = buildOffer({ codecs: call.trunk.codecs, localAddress: local.address, localPort: local.port, direction: 'sendrecv' }).offerSdp;
      } else {
        const { answerSdp, plan } = negotiateAnswer(call.inviteReq!.body, { allowedCodecs: call.trunk.codecs, localAddress: this.#localAddress(local.address), localPort: local.port, ...srtpOption(call.trunk, call.signalingSecure) });
        call.localSdp = answerSdp;
        await media.applyPlan(plan);
      }
      this.#watchRelay(call);
      const offer = agentId !== undefined ? await media.agentTransports() : undefined;
      if (!call.live) {
        throw new SignalingError('INVALID_STATE', 'the caller hung up');
      }
      // 200 OK to the trunk now; the agent's media joins within moments.
      const dialog = await this.#srf.createUAS(call.inviteReq!, call.inviteRes!, { localSdp: call.localSdp, ...(call.origin && agentId ? { headers: { 'X-RB-Agent': agentId } } : {}) });
      call.dialog = dialog;
      call.inviteReq = undefined;
      call.inviteRes = undefined;
      call.transition('active');
      this.#sampleQuality(call);
      if (agentId !== undefined) {
        // a queue's answer (no agent) is not recorded: recording starts when an agent takes the call
        this.#recording?.answered(call);
      }
      this.#watchDialog(call, dialog);
      if (lateOffer) {
        const ourOffer = call.localSdp;
        // srf emits 'ack' on a UAS dialog with the ACK request; its typings do not list the event.
        (dialog as unknown as { once(event: 'ack', listener: (ack: Srf.SrfRequest) => void): void }).once('ack', (ack) => {
          this.#lateAnswer(call, ourOffer, ack.body ?? '').catch((err: unknown) => {
            log.warn({ err }, 'the trunk ACK carried no usable SDP answer; hanging up');
            this.#hangupTrunk(call, 'failed', 'SIP;cause=488;text="no usable SDP answer in the ACK"');
          });
        });
      }

      return offer;
    } catch (err) {
      if (!call.live) {
        // ended meanwhile (caller gone, the agent's session closed): its end ran before the media
        // existed, so the media is closed here
        call.media?.close();
      }
      if (call.live) {
        log.warn({ err }, 'answer failed; rejecting the call');
        if (call.inviteRes && !call.inviteRes.finalResponseSent) {
          call.inviteRes.send(500);
        }
        this.#finish(call, 'media_error', 'system', 500);
      }
      throw err;
    }
  }

  /** The trunk's answer to our late offer, from its ACK: apply it and tell the agent the codec. */
  async #lateAnswer(call: Call, ourOffer: string, answer: string): Promise<void> {
    if (!call.live || !call.media) {
      return;
    }
    const plan = negotiateFromAnswer(ourOffer, answer);
    await call.media.applyPlan(plan);
    if (call.agentId) {
      this.#emit(call.agentId, 'call.media', { callId: call.id, codec: call.media.codec! });
    }
    void this.#store.putCall(call.id, { codec: plan.codec.name });
  }

  #decline(session: AgentSession, callId: string, reason: 'busy' | 'decline' | undefined): void {
    const call = this.#calls.get(callId);
    if (!call || !call.ringing.has(session.agentId)) {
      throw new SignalingError('NOT_FOUND', `no call ${callId} ringing for you`);
    }
    call.ringing.delete(session.agentId);
    call.declined.add(session.agentId);
    if (reason === 'busy') {
      call.busyDeclines++;
    }
    this.presence.refresh(session.agentId);
    this.#ringingDone(call);
  }

  // ----------------------------------------------------------------------------------------------
  // Outbound
  // ----------------------------------------------------------------------------------------------

  #pickTrunk(trunkId: string | undefined): TrunkConfig {
    const id = trunkId ?? this.#cfg.routing.defaultTrunk;
    const trunk = id ? this.#trunks.byId(id) : this.#trunks.trunks.find((t) => t.outbound.uri !== '');
    if (!trunk || trunk.outbound.uri === '') {
      throw new SignalingError('NO_ROUTE', trunkId ? `trunk ${trunkId} takes no outbound calls` : 'no trunk takes outbound calls');
    }

    return trunk;
  }

  /**
   * Where a call.transfer (or a queue fallback) to a number goes: the agent's dialling policy and
   * dial rate as for call.dial (none for a configured fallback, `agentId` undefined), the default
   * trunk, and the Request-URI.
   * @throws {SignalingError} DIAL_POLICY, RATE_LIMITED, NO_ROUTE
   */
  async #dialTarget(agentId: string | undefined, to: string): Promise<{ trunk: TrunkConfig; ruri: string }> {
    if (agentId !== undefined) {
      await this.#checkDialPolicy(agentId, to);
    }
    const trunk = this.#pickTrunk(undefined);
    const base = parseUri(trunk.outbound.uri);
    if (!base || trunk.media.srtp === 'required') {
      throw new SignalingError('NO_ROUTE', `trunk ${trunk.id} cannot take a transferred call (${base ? 'it requires SRTP' : 'invalid outbound uri'})`);
    }

    return { trunk, ruri: formatUri({ ...base, user: to }) };
  }

  /**
   * The dialling policy and the per-agent dial rate, for every number an agent has dialled
   * (call.dial, a SIP device's INVITE, a transfer or consultation to a number).
   * @throws {SignalingError} DIAL_POLICY, RATE_LIMITED
   */
  async #checkDialPolicy(agentId: string, to: string): Promise<void> {
    const sec = this.#security;
    if (!sec) {
      return;
    }
    const refusal = sec.dialPolicy.check(to);
    if (refusal) {
      // no number in the log: the reason says enough
      this.#log.info({ agent: agentId, reason: refusal }, 'dial refused by the dialling policy');
      sec.rejected('dial_policy');
      throw new SignalingError('DIAL_POLICY', dialRefusalMessage(refusal));
    }
    const rate = await sec.dialLimit(agentId);
    if (!rate.allowed) {
      sec.rejected('dial_rate');
      throw new SignalingError('RATE_LIMITED', `more dials per minute than the dialling policy allows; try again in ${rate.retryAfterS} s`);
    }
  }

  /**
   * The checks every outbound call of an agent passes (call.dial, a SIP device's INVITE): the
   * per-agent call cap, the dialling policy, the per-agent dial rate, and the trunk (the named or
   * default one, with a usable outbound uri).
   * @throws {SignalingError} INVALID_STATE, DIAL_POLICY, RATE_LIMITED, CALL_LIMIT, NO_ROUTE
   */
  async #admitDial(agentId: string, to: string, trunkId: string | undefined): Promise<TrunkConfig> {
    const sec = this.#security;
    const maxCalls = sec?.maxCallsPerAgent ?? 1;
    if (maxCalls === 1 && this.#activity(agentId) === 'on_call') {
      throw new SignalingError('INVALID_STATE', 'you are already on a call');
    }
    await this.#checkDialPolicy(agentId, to);
    if ((await this.#agentCallCount(agentId)) >= maxCalls) {
      sec?.rejected('agent_cap');
      throw new SignalingError('CALL_LIMIT', `at most ${maxCalls} call${maxCalls === 1 ? '' : 's'} at once per agent`);
    }
    const trunk = this.#pickTrunk(trunkId);
    const base = parseUri(trunk.outbound.uri);
    if (!base) {
      throw new SignalingError('NO_ROUTE', `trunk ${trunk.id} has an invalid outbound uri`);
    }
    if (trunk.media.srtp === 'required' && !secureUri(trunk.outbound.uri)) {
      throw new SignalingError('NO_ROUTE', `trunk ${trunk.id} requires SRTP, whose keys may only travel over SIP TLS, and its outbound uri is not sips: or ;transport=tls`);
    }

    return trunk;
  }

  async #dial(session: AgentSession, data: RequestData<'call.dial'>): Promise<ResponseData['call.dial']> {
    if (!this.#accepting()) {
      throw new SignalingError('UNAVAILABLE', 'this gateway is draining');
    }
    if (!this.#stateReady()) {
      throw new SignalingError('UNAVAILABLE', 'state store unavailable; try again');
    }
    const sec = this.#security;
    const trunk = await this.#admitDial(session.agentId, data.to, data.trunkId);
    const base = parseUri(trunk.outbound.uri)!;
    const ruri = formatUri({ ...base, user: data.to });
    const call = new Call({ direction: 'outbound', trunk, from: { number: trunk.outbound.callerId || session.agentId }, to: { number: data.to } });
    call.agentId = session.agentId;
    call.sessionId = session.id;
    if (trunk.maxConcurrentCalls > 0 && !(await this.#store.admitTrunkCall(trunk.id, call.id, trunk.maxConcurrentCalls))) {
      sec?.rejected('trunk_cap');
      throw new SignalingError('CALL_LIMIT', `trunk ${trunk.id} has its most concurrent calls (${trunk.maxConcurrentCalls}); try again later`);
    }
    if (this.#signaling && !this.#signaling.sessionsOf(session.agentId).includes(session)) {
      // the session closed during the awaits above: its end did not see this call yet
      if (trunk.maxConcurrentCalls > 0) {
        void this.#store.releaseTrunkCall(trunk.id, call.id);
      }
      throw new SignalingError('INVALID_STATE', 'the session closed');
    }
    this.#calls.set(call.id, call);
    this.presence.refresh(session.agentId);
    const log = this.#log.child({ callId: call.id, agent: session.agentId, trunk: trunk.id });
    let mediaOffer;
    try {
      const media = await CallMedia.create(this.#mediaSettings, { latching: trunk.media.latching });
      call.media = media;
      media.onClose(() => {
        if (call.live) {
          this.#hangupTrunk(call, 'media_error', 'SIP;cause=500;text="media failure"');
        }
      });
      const local = media.localRtp;
      // a trunk that requires SRTP gets an RTP/SAVP offer with a new key of ours (its uri is TLS: checked above)
      const crypto = trunk.media.srtp === 'required' ? { tag: 1, suite: SRTP_SUITE, keyParams: toKeyParams(newMasterKey()) } : undefined;
      call.signalingSecure = secureUri(trunk.outbound.uri);
      call.localSdp = buildOffer({ codecs: trunk.codecs, localAddress: local.address, localPort: local.port, direction: 'sendrecv', ...(crypto ? { crypto } : {}) }).offerSdp;
      mediaOffer = await media.agentTransports();
      this.#watchRelay(call);
    } catch (err) {
      this.#finish(call, 'media_error', 'system');
      call.media?.close();
      throw new SignalingError('MEDIA_ERROR', `cannot set up media: ${(err as Error).message}`);
    }
    if (!call.live) {
      // the agent's session closed while the media was set up: its end ran before the media existed
      call.media?.close();
      throw new SignalingError('INVALID_STATE', 'the call ended while it was set up');
    }
    void this.#store.putCall(call.id, { direction: 'outbound', state: 'dialing', trunkId: trunk.id, agentId: session.agentId, node: this.#store.nodeId, from: this.#store.storedNumber(call.from.number), to: this.#store.storedNumber(data.to), offeredAt: call.times.offeredAt.toISOString() });
    call.timer(this.#cfg.calls.dialTimeoutMs, () => {
      if (call.state === 'dialing' || call.state === 'early') {
        log.info('dial timeout; cancelling');
        call.inviteReq?.cancel(() => undefined);
        this.#emit(session.agentId, 'call.ended', { callId: call.id, reason: 'timeout', by: 'system' });
        this.#finish(call, 'timeout', 'system');
      }
    });
    const offerSdp = call.localSdp;
    const applyAnswer = async (sdp: string) => {
      const plan = negotiateFromAnswer(offerSdp, sdp);
      const first = !call.media!.plan;
      await call.media!.applyPlan(plan);
      if (first) {
        this.#emit(session.agentId, 'call.media', { callId: call.id, codec: call.media!.codec! });
      }
    };
    void this.#srf
      .createUAC(
        ruri,
        trunkUacOptions(trunk, call.from.number, offerSdp),
        {
          cbRequest: ((_err: unknown, req: Srf.SrfRequest) => {
            call.inviteReq = req;
            call.sipCallId = req?.get?.('Call-ID') ?? '';
            if (!call.live) {
              req.cancel(() => undefined);
            }
          }) as unknown as (req: Srf.SrfRequest) => void,
          cbProvisional: (prov: Srf.SrfResponse) => {
            if (!call.live || prov.status === 100) {
              return;
            }
            const early = !!prov.body && prov.body.includes('m=audio');
            if (call.state === 'dialing') {
              call.transition('early');
              call.times.ringingAt = new Date();
              this.#metrics?.ringing('outbound', call.times.offeredAt.getTime(), call.times.ringingAt.getTime());
            }
            this.#emit(session.agentId, 'call.progress', { callId: call.id, status: prov.status, earlyMedia: early });
            if (early) {
              applyAnswer(prov.body).catch((err: unknown) => log.warn({ err }, 'unusable early-media SDP'));
            }
          },
        },
      )
      .then(
        async (dialog) => {
          if (!call.live) {
            dialog.destroy();

            return;
          }
          call.dialog = dialog;
          call.inviteReq = undefined;
          try {
            await applyAnswer(dialog.remote.sdp);
          } catch (err) {
            log.warn({ err }, 'the trunk answered with unusable SDP; hanging up');
            dialog.destroy({ headers: { Reason: 'SIP;cause=488;text="no common codec"' } });
            this.#emit(session.agentId, 'call.ended', { callId: call.id, reason: 'failed', by: 'system', sipStatus: 488 });
            this.#finish(call, 'failed', 'system', 488);

            return;
          }
          for (const t of call.timers) {
            clearTimeout(t);
          }
          call.timers.clear();
          call.transition('active');
          this.#sampleQuality(call);
          this.#recording?.answered(call);
          // the RTP timeout counts from the answer: silent early media is not a dead call
          call.media?.relay.restartInactivity();
          this.#watchDialog(call, dialog);
          this.#emit(session.agentId, 'call.answered', { callId: call.id });
          void this.#store.putCall(call.id, { state: 'active', answeredAt: call.times.answeredAt?.toISOString(), codec: call.media?.plan?.codec.name });
          log.info('outbound call answered');
        },
        (err: { status?: number; message?: string }) => {
          if (!call.live) {
            return;
          }
          const status = err.status ?? 503;
          const reason = endReasonForStatus(status);
          log.info({ status }, 'outbound call failed');
          this.#emit(session.agentId, 'call.ended', { callId: call.id, reason, by: 'remote', sipStatus: status });
          this.#finish(call, reason, 'remote', status);
        },
      );

    return { callId: call.id, media: mediaOffer };
  }

  // ----------------------------------------------------------------------------------------------
  // During the call
  // ----------------------------------------------------------------------------------------------

  #watchRelay(call: Call): void {
    const relay = call.media!.relay;
    relay.on('dtmf', (ev: { digit: string; durationMs: number }) => {
      if (call.agentId && call.live) {
        this.#emit(call.agentId, 'call.dtmf', { callId: call.id, digit: ev.digit, durationMs: ev.durationMs });
      }
    });
    relay.on('inactivity', () => {
      if (call.state === 'active' || call.state === 'held') {
        this.#log.info({ callId: call.id, rtpTimeoutMs: this.#cfg.calls.rtpTimeoutMs }, 'no RTP from the trunk; ending the call');
        this.#hangupTrunk(call, 'rtp_timeout', 'SIP;cause=408;text="RTP timeout"');
      }
    });
  }

  #watchDialog(call: Call, dialog: Srf.Dialog): void {
    dialog.on('destroy', () => {
      if (!call.live) {
        return;
      }
      if (call.agentId) {
        this.#emit(call.agentId, 'call.ended', { callId: call.id, reason: 'hangup_remote', by: 'remote' });
      }
      this.#finish(call, 'hangup_remote', 'remote');
    });
    // RFC 3515 REFER from the trunk (call-centre.ts; srf would answer 200 to it without a listener)
    dialog.on('refer', (req: Srf.SrfRequest, res: Srf.SrfResponse) => this.#centre.refer(call, req, res));
    dialog.on('modify', (req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      this.#trunkReinvite(call, req, res).catch((err: unknown) => {
        this.#log.warn({ err, callId: call.id }, 'cannot handle the trunk re-INVITE');
        res.send(err instanceof SdpError ? 488 : 500);
      });
    });
  }

  /** A trunk re-INVITE: new media address, hold (sendonly/inactive) or resume. */
  async #trunkReinvite(call: Call, req: Srf.SrfRequest, res: Srf.SrfResponse): Promise<void> {
    const media = call.media;
    if (!media?.plan) {
      res.send(491);

      return;
    }
    const r = reanswer(media.plan, req.body ?? '', { previous: call.localSdp, localDirection: call.heldLocal ? 'sendonly' : 'sendrecv', ...srtpOption(call.trunk, call.signalingSecure, media.plan.srtp) });
    if ((call.trunk.media.srtp === 'required' || media.plan.srtp) && !r.plan.srtp) {
      // an SRTP call stays SRTP: a re-INVITE dropping a=crypto is refused, the media stays as it is
      res.send(488, { headers: { Warning: `302 ringbridge "trunk ${call.trunk.id} requires SDES-SRTP"` } });

      return;
    }
    await media.applyPlan(r.plan);
    call.localSdp = r.answerSdp;
    const held = r.plan.hold !== 'none';
    res.send(200, { body: r.answerSdp });
    if (held !== call.heldRemote) {
      call.heldRemote = held;
      this.#updateHeldState(call);
      if (call.agentId) {
        this.#emit(call.agentId, held ? 'call.held' : 'call.resumed', { callId: call.id, by: 'remote' });
      }
    }
  }

  /** Our media address in the form negotiateAnswer() takes (the offer's family must match it). */
  #localAddress(address: string): { ipv4: string } | { ipv6: string } {
    return address.includes(':') ? { ipv6: address } : { ipv4: address };
  }

  #updateHeldState(call: Call): void {
    const held = call.heldLocal || call.heldRemote;
    if (held && call.state === 'active') {
      call.transition('held');
    } else if (!held && call.state === 'held') {
      call.transition('active');
    }
  }

  async #hold(session: AgentSession, callId: string, hold: boolean): Promise<void> {
    const call = this.#ownCall(session, callId);
    if (call.state !== 'active' && call.state !== 'held') {
      throw new SignalingError('INVALID_STATE', `call ${callId} is ${call.state}`);
    }
    if (call.heldLocal === hold) {
      return;
    }
    const media = call.media!;
    if (!media.plan || !call.dialog) {
      throw new SignalingError('INVALID_STATE', 'call has no established media');
    }
    const local = media.localRtp;
    const formats = reofferFormats(media.plan);
    // an SRTP call re-offers RTP/SAVP with the key it has (RFC 4568 §7.1.4 allows keeping it)
    const crypto = media.plan.srtp?.local;
    const { offerSdp } = buildOffer({ codecs: formats.codecs, telephoneEvent: formats.telephoneEvent, localAddress: local.address, localPort: local.port, direction: hold ? 'sendonly' : 'sendrecv', previous: call.localSdp, ...(crypto ? { crypto } : {}) });
    await media.setAgentAudio(!hold && !call.muted);
    try {
      const answer = await call.dialog.modify(offerSdp);
      const plan = negotiateFromAnswer(offerSdp, answer);
      call.localSdp = offerSdp;
      await media.applyPlan(plan);
    } catch (err) {
      await media.setAgentAudio(!call.heldLocal && !call.muted);
      throw new SignalingError('INVALID_STATE', `the trunk refused the re-INVITE: ${(err as Error).message}`);
    }
    call.heldLocal = hold;
    this.#updateHeldState(call);
    this.#emit(session.agentId, hold ? 'call.held' : 'call.resumed', { callId: call.id, by: 'local' });
  }

  #ownCall(session: AgentSession, callId: string): Call {
    const call = this.#calls.get(callId);
    if (!call || call.agentId !== session.agentId) {
      throw new SignalingError('NOT_FOUND', `no call ${callId} of yours`);
    }

    return call;
  }

  #hangup(session: AgentSession, callId: string): void {
    const call = this.#calls.get(callId);
    if (call && call.state === 'ringing' && call.ringing.has(session.agentId)) {
      this.#decline(session, callId, 'decline');

      return;
    }
    const c = this.#ownCall(session, callId);
    if (!c.live) {
      return;
    }
    if (c.direction === 'outbound' && (c.state === 'dialing' || c.state === 'early')) {
      c.inviteReq?.cancel(() => undefined);
    } else if (c.dialog) {
      c.dialog.destroy();
    } else if (c.inviteRes && !c.inviteRes.finalResponseSent) {
      c.inviteRes.send(480);
    }
    this.#emit(session.agentId, 'call.ended', { callId: c.id, reason: 'hangup_local', by: 'local' });
    this.#finish(c, 'hangup_local', 'local');
  }

  /** Ends the call from our side toward the trunk (BYE with a Reason, RFC 3326). */
  #hangupTrunk(call: Call, reason: EndReason, sipReason: string): void {
    if (!call.live) {
      return;
    }
    if (call.dialog) {
      call.dialog.destroy({ headers: { Reason: sipReason } });
    } else if (call.inviteRes && !call.inviteRes.finalResponseSent) {
      call.inviteRes.send(500);
    } else if (call.inviteReq) {
      call.inviteReq.cancel(() => undefined);
    }
    if (call.agentId) {
      this.#emit(call.agentId, 'call.ended', { callId: call.id, reason, by: 'system' });
    }
    this.#finish(call, reason, 'system');
  }

  /**
   * Ends a call: state, presence, hand-off legs, record. Across nodes one record is written: by the
   * node of the agent who answered, else by the node that holds the trunk's SIP leg.
   */
  #finish(call: Call, reason: EndReason, by: 'local' | 'remote' | 'system', sipStatus?: number): void {
    this.#settleWakes(call, reason === 'answered_elsewhere' ? 'answered_elsewhere' : 'caller_cancelled');
    if (!call.finish(reason, by, sipStatus)) {
      return;
    }
    if (!call.origin && call.trunk.maxConcurrentCalls > 0) {
      // this node counted the call against its trunk's cap
      void this.#store.releaseTrunkCall(call.trunk.id, call.id);
    }
    call.qualitySummary = call.quality?.stop();
    call.quality = undefined;
    this.#calls.delete(call.id);
    this.#centre.ended(call);
    if (!call.origin) {
      // this node held the trunk's leg: its times are the caller's
      this.#metrics?.timed({
        direction: call.direction,
        endReason: reason,
        offeredAt: call.times.offeredAt.getTime(),
        ...(call.times.ringingAt ? { ringingAt: call.times.ringingAt.getTime() } : {}),
        ...(call.times.answeredAt ? { answeredAt: call.times.answeredAt.getTime() } : {}),
        endedAt: (call.times.endedAt ?? new Date()).getTime(),
      });
    }
    for (const a of [...call.ringing]) {
      // hangup_remote: the caller of a call offered anew (call-centre.ts) hung up while it rang
      this.#unring(call, a, reason === 'cancelled' || reason === 'hangup_remote' ? 'caller_cancelled' : 'ring_timeout');
    }
    this.#cancelLegs(call, reason === 'cancelled' ? 'caller_cancelled' : 'ring_timeout');
    if (call.remote) {
      const { dialog, release } = call.remote;
      call.remote.dialog = undefined;
      try {
        dialog?.destroy();
        release?.();
      } catch (err) {
        this.#log.debug({ err, callId: call.id }, 'cannot release the hand-off leg');
      }
    }
    if (call.agentId) {
      if (call.times.answeredAt) {
        void this.#store.agentBecameIdle(call.agentId);
      }
      this.presence.refresh(call.agentId);
    }
    if (call.remote || (call.origin && !call.agentId)) {
      void this.#store.dropCall(call.id); // the agent's node records it (or, unanswered, the origin)
    } else {
      this.#record(call, reason, by, sipStatus);
    }
  }

  /** Starts sampling the call's media quality (the node that holds the media). */
  #sampleQuality(call: Call): void {
    if (!this.#quality || !call.media || call.quality) {
      return;
    }
    const media = call.media;
    call.quality = new CallQualitySampler(
      () => (media.closed ? undefined : media),
      () => media.plan?.codec,
      this.#quality.metrics,
      this.#quality.intervalMs,
      (err) => this.#log.warn({ err, callId: call.id }, 'call quality sample failed'),
    );
  }

  #record(call: Call, reason: EndReason, _by: string, sipStatus?: number): void {
    this.#metrics?.ended({ direction: call.direction, endReason: reason });
    this.#quality?.metrics.callEnded(call.qualitySummary);
    const endedAt = call.times.endedAt ?? new Date();
    const answeredAt = call.times.answeredAt;
    void this.#store.endCall({
      callId: call.id,
      direction: call.direction,
      trunkId: call.trunk.id,
      from: this.#store.storedNumber(call.from.number),
      to: this.#store.storedNumber(call.to.number),
      // a call the agent passed to a number (blind or attended) is still that agent's call
      agentId: call.agentId ?? call.remote?.agentId ?? call.transferredBy ?? '',
      node: call.origin ?? this.#store.nodeId,
      ...(call.origin ? { agentNode: this.#store.nodeId } : call.remote ? { agentNode: call.remote.node } : {}),
      offeredAt: call.times.offeredAt.toISOString(),
      ...(call.times.ringingAt ? { ringingAt: call.times.ringingAt.toISOString() } : {}),
      ...(answeredAt ? { answeredAt: answeredAt.toISOString() } : {}),
      endedAt: endedAt.toISOString(),
      endReason: reason,
      ...(sipStatus !== undefined ? { sipStatus } : {}),
      ...(call.media?.plan ? { codec: call.media.plan.codec.name } : {}),
      durationS: answeredAt ? Math.round((endedAt.getTime() - answeredAt.getTime()) / 1000) : 0,
      ...(call.qualitySummary ?? {}),
      ...this.#recording?.ended(call),
    });
  }

  // ----------------------------------------------------------------------------------------------
  // SignalingHandler
  // ----------------------------------------------------------------------------------------------

  /** @private SignalingHandler */
  async onSessionReady(session: AgentSession, resumed: boolean): Promise<{ presence: { status: AgentStatus; effective: EffectivePresence }; calls: ReturnType<Call['info']>[] }> {
    await this.presence.load(session.agentId);
    void this.#store.putSession(session.agentId, session.id, 'connected', session.startedAt, session.deviceId);
    if (session.deviceId) {
      void this.#store.touchDevice(session.agentId, session.deviceId);
    }
    // A woken device: ring it on a call here that still waits for it (the auth response lists the
    // call); a call that stopped ringing meanwhile is reported at once, whichever node held it.
    for (const c of this.calls) {
      if (c.state === 'ringing' && c.waking.delete(session.agentId)) {
        c.ringing.add(session.agentId);
      }
    }
    if (this.#wake) {
      const settled = await this.#wake.sessionReady(session.agentId, session.deviceId);
      if (settled.length > 0) {
        setImmediate(() => {
          for (const w of settled) {
            this.#signaling?.sendToSession(session, 'call.cancelled', { callId: w.callId, reason: w.outcome === 'answered_elsewhere' ? 'answered_elsewhere' : w.outcome === 'ring_timeout' ? 'ring_timeout' : w.outcome === 'declined' ? 'declined' : 'caller_cancelled' });
          }
        });
      }
    }
    this.presence.refresh(session.agentId);
    const calls = this.calls
      .filter((c) => c.agentId === session.agentId || (c.state === 'ringing' && c.ringing.has(session.agentId)))
      .map((c) => ({ ...c.info(), ...(c.state === 'ringing' ? { ringTimeoutMs: Math.max(0, (c.ringDeadline ?? Date.now() + this.#cfg.calls.ringTimeoutMs) - Date.now()) } : {}) }));
    void resumed;

    return { presence: { status: this.presence.status(session.agentId), effective: this.presence.effective(session.agentId) }, calls };
  }

  /** @private SignalingHandler: calls go on during the grace period. */
  onSessionSuspended(session: AgentSession): void {
    // media keeps flowing; the agent resumes or the grace period ends the session
    void this.#store.putSession(session.agentId, session.id, 'suspended', session.startedAt, session.deviceId);
  }

  /** @private SignalingHandler */
  onSessionEnded(session: AgentSession, reason: 'grace_expired' | 'closed' | 'shutdown'): void {
    void this.#store.removeSession(session.agentId, session.id);
    const remaining = this.#signaling?.sessionsOf(session.agentId).length ?? 0;
    if (remaining > 0) {
      // the agent is still signed in elsewhere: calls keep ringing there, but a call whose media
      // lived in this session (its app closed) cannot go on without it
      for (const call of this.calls) {
        if (call.sessionId === session.id && call.live && reason !== 'shutdown') {
          this.#log.info({ callId: call.id, agent: session.agentId }, 'the session holding the call ended; ending the call');
          this.#hangupTrunk(call, 'session_lost', 'SIP;cause=480;text="agent connection lost"');
        }
      }
      this.presence.refresh(session.agentId);

      return;
    }
    for (const call of this.calls) {
      if (call.ringing.has(session.agentId)) {
        this.#unring(call, session.agentId, 'session_lost');
        this.#ringingDone(call);
      } else if (call.agentId === session.agentId && call.live && reason !== 'shutdown') {
        this.#log.info({ callId: call.id, agent: session.agentId }, 'agent session lost; ending its call');
        this.#hangupTrunk(call, 'session_lost', 'SIP;cause=480;text="agent connection lost"');
      }
    }
    this.presence.refresh(session.agentId);
  }

  /** @private SignalingHandler */
  async onRequest<T extends Exclude<RequestType, 'auth' | 'ping'>>(session: AgentSession, type: T, data: RequestData<T>): Promise<ResponseData[T]> {
    try {
      return (await this.#dispatch(session, type, data)) as ResponseData[T];
    } catch (err) {
      if (err instanceof SignalingError) {
        throw err;
      }
      if (err instanceof CallMediaError) {
        throw new SignalingError('MEDIA_ERROR', err.message);
      }
      if (err instanceof CallStateError) {
        throw new SignalingError('INVALID_STATE', err.message);
      }
      throw err;
    }
  }

  /** Runs a Redis read or write for a request; a Redis failure becomes UNAVAILABLE. */
  async #storeCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.#log.warn({ err }, 'Redis unavailable for a device request');
      throw new SignalingError('UNAVAILABLE', 'state store unavailable; try again');
    }
  }

  async #dispatch(session: AgentSession, type: Exclude<RequestType, 'auth' | 'ping'>, data: Record<string, unknown>): Promise<unknown> {
    switch (type) {
      case 'presence.set':
        return this.presence.set(session.agentId, (data as RequestData<'presence.set'>).status);
      case 'calls.list':
        return { calls: this.calls.filter((c) => c.agentId === session.agentId || c.ringing.has(session.agentId)).map((c) => c.info()) };
      case 'device.register': {
        const d = data as RequestData<'device.register'>;
        const known = await this.#storeCall(() => this.#store.devices(session.agentId));
        if (known.length >= MAX_DEVICES_PER_AGENT && !known.some((k) => k.deviceId === d.deviceId)) {
          throw new SignalingError('FORBIDDEN', `at most ${MAX_DEVICES_PER_AGENT} devices per agent; unregister one first`);
        }
        const stored = await this.#storeCall(() =>
          this.#store.putDevice(session.agentId, {
            deviceId: d.deviceId,
            platform: d.platform,
            channel: d.channel,
            ...(d.token !== undefined ? { token: d.token } : {}),
            ...(d.alertToken !== undefined ? { alertToken: d.alertToken } : {}),
            ...(d.topic !== undefined ? { topic: d.topic } : {}),
            ...(d.appVersion !== undefined ? { appVersion: d.appVersion } : {}),
          }),
        );
        this.#log.info({ agent: session.agentId, device: d.deviceId, platform: d.platform, channel: d.channel }, 'device registered');

        return { device: deviceInfo(stored) };
      }
      case 'device.unregister': {
        const removed = await this.#storeCall(() => this.#store.removeDevice(session.agentId, (data as RequestData<'device.unregister'>).deviceId));

        return { removed };
      }
      case 'device.list':
        return { devices: (await this.#storeCall(() => this.#store.devices(session.agentId))).map(deviceInfo) };
      case 'call.answer':
        return this.#answer(session, (data as RequestData<'call.answer'>).callId);
      case 'call.decline': {
        const d = data as RequestData<'call.decline'>;
        this.#decline(session, d.callId, d.reason);

        return {};
      }
      case 'call.dial':
        return this.#dial(session, data as RequestData<'call.dial'>);
      case 'call.hangup':
        if (this.#centre.cancelConsult(session, (data as RequestData<'call.hangup'>).callId)) {
          return {}; // the consultation of an attended transfer (call-centre.ts)
        }
        this.#hangup(session, (data as RequestData<'call.hangup'>).callId);

        return {};
      case 'call.hold':
        await this.#hold(session, (data as RequestData<'call.hold'>).callId, true);

        return {};
      case 'call.resume':
        await this.#hold(session, (data as RequestData<'call.resume'>).callId, false);

        return {};
      case 'call.mute': {
        const d = data as RequestData<'call.mute'>;
        const call = this.#ownCall(session, d.callId);
        call.muted = d.muted;
        await call.media?.setAgentAudio(!d.muted && !call.heldLocal);

        return { muted: d.muted };
      }
      case 'call.dtmf': {
        const d = data as RequestData<'call.dtmf'>;
        const call = this.#ownCall(session, d.callId);
        const te = call.media?.plan?.telephoneEvent;
        if (!call.media || !te || (call.state !== 'active' && call.state !== 'early')) {
          throw new SignalingError('INVALID_STATE', te ? `call ${d.callId} is ${call.state}` : 'the trunk did not negotiate telephone-event (RFC 4733)');
        }
        void call.media.relay.sendDtmf(d.digits.toUpperCase(), { durationMs: d.durationMs ?? 100, payloadType: te.payloadType, clockRate: te.clockRate });

        return { digits: d.digits };
      }
      case 'call.record': {
        const d = data as RequestData<'call.record'>;
        const call = this.#ownCall(session, d.callId);
        if (!this.#recording) {
          throw new SignalingError('FORBIDDEN', 'recording is not configured on this gateway');
        }

        return this.#recording.request(call, d.on);
      }
      case 'call.transfer': {
        const d = data as RequestData<'call.transfer'>;
        const call = this.#ownCall(session, d.callId);
        this.#refuseOnDevice(call);
        if (call.heldLocal) {
          await this.#hold(session, d.callId, false); // the next agent gets the caller off hold
        }

        return this.#centre.transfer(session, call, d);
      }
      case 'call.consult': {
        const d = data as RequestData<'call.consult'>;
        this.#refuseOnDevice(this.#ownCall(session, d.callId));

        return this.#centre.consult(session, this.#ownCall(session, d.callId), d.to.number);
      }
      case 'media.connect': {
        const d = data as RequestData<'media.connect'>;
        await this.#mediaOf(session, d.callId).connectAgent(d.transportId, d.dtlsParameters);

        return {};
      }
      case 'media.produce': {
        const d = data as RequestData<'media.produce'>;
        const call = this.#ownCall(session, d.callId);
        const producerId = await this.#mediaOf(session, d.callId).produceAgent(d.transportId, d.rtpParameters);
        if (call.muted || call.heldLocal) {
          await call.media!.setAgentAudio(false);
        }

        return { producerId };
      }
      case 'media.consume': {
        const d = data as RequestData<'media.consume'>;

        return this.#mediaOf(session, d.callId).consumeForAgent(d.rtpCapabilities);
      }
      case 'media.resume': {
        const d = data as RequestData<'media.resume'>;
        await this.#mediaOf(session, d.callId).resumeAgentConsumer(d.consumerId);

        return {};
      }
      default:
        throw new SignalingError('BAD_REQUEST', `unsupported request ${String(type)}`);
    }
  }

  /**
   * Transfers move a WebRTC agent's media; a call answered on a SIP device has none to move.
   * @throws {SignalingError} INVALID_STATE for a call a SIP device answered
   */
  #refuseOnDevice(call: Call): void {
    if (call.devices?.answered) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} was answered on a SIP device: transfers of SIP-device calls are not supported`);
    }
  }

  #mediaOf(session: AgentSession, callId: string): CallMedia {
    const call = this.#ownCall(session, callId);
    if (!call.media || call.media.closed) {
      throw new SignalingError('INVALID_STATE', `call ${callId} has no media`);
    }

    return call.media;
  }

  /**
   * Writes what this node holds to Redis again: its live calls, its agents' sessions and presence.
   * Called when Redis comes back after an outage (a restarted Redis may have lost everything).
   */
  resync(): void {
    for (const call of this.calls) {
      const answeredAt = call.times.answeredAt?.toISOString();
      void this.#store.putCall(
        call.id,
        call.origin
          ? { agentNode: this.#store.nodeId, agentId: call.agentId, state: call.state, answeredAt, codec: call.media?.plan?.codec.name }
          : {
              direction: call.direction,
              state: call.state,
              trunkId: call.trunk.id,
              from: this.#store.storedNumber(call.from.number),
              to: this.#store.storedNumber(call.to.number),
              node: this.#store.nodeId,
              agentId: call.agentId ?? call.remote?.agentId,
              agentNode: call.remote?.node,
              offeredAt: call.times.offeredAt.toISOString(),
              ringingAt: call.times.ringingAt?.toISOString(),
              answeredAt,
              codec: call.media?.plan?.codec.name,
            },
      );
    }
    for (const s of this.#signaling?.allSessions() ?? []) {
      void this.#store.putSession(s.agentId, s.id, s.state === 'suspended' ? 'suspended' : 'connected', s.startedAt, s.deviceId);
    }
    this.presence.rewriteAll();
  }

  /** Ends every call (shutdown): BYE/CANCEL/480 to trunks, call.ended to agents. */
  shutdown(): void {
    this.#centre.stop();
    for (const call of this.calls) {
      if (call.state === 'ringing' && !call.dialog) {
        this.#rejectInbound(call, 480, 'unavailable');
      } else {
        this.#hangupTrunk(call, 'shutdown', 'SIP;cause=503;text="gateway shutting down"');
      }
    }
  }
}

/** A stored device as the protocol reports it: the push token itself never leaves the gateway. */
function deviceInfo(d: Device): DeviceInfo {
  return {
    deviceId: d.deviceId,
    platform: d.platform,
    channel: d.channel,
    hasToken: d.token !== undefined && d.token !== '',
    ...(d.topic ? { topic: d.topic } : {}),
    ...(d.appVersion ? { appVersion: d.appVersion } : {}),
    addedAt: d.addedAt,
    lastSeen: d.lastSeen,
  };
}
