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
import { buildOffer, negotiateAnswer, negotiateFromAnswer, reanswer, reofferFormats, SdpError } from '../sip/sdp.js';
import { TrunkDirectory, type TrunkConfig } from '../sip/trunks.js';
import { type AgentSession, SignalingError, type SignalingHandler, type SignalingServer } from '../signaling/server.js';
import { type AgentStatus, type EffectivePresence, type EndReason, type RequestData, type RequestType, type ResponseData } from '../signaling/protocol.js';
import { maskNumber, type StateStore } from '../state/store.js';
import { Call, CallStateError } from './call.js';
import { CallMedia, CallMediaError, type CallMediaSettings } from './call-media.js';
import { PresenceService } from './presence.js';
import { Router, type RouteTarget } from './routing.js';

/** Options of the call manager. */
export interface CallManagerOptions {
  config: Config;
  srf: Srf;
  media: Omit<CallMediaSettings, 'logger'>;
  store: StateStore;
  logger: Logger;
  /** Whether new calls are accepted (false while draining). */
  accepting?: () => boolean;
}

/** Whether a request carries an SDP body (else it is a late offer). */
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
  readonly presence: PresenceService;
  #signaling: SignalingServer | undefined;

  constructor(opts: CallManagerOptions) {
    this.#cfg = opts.config;
    this.#srf = opts.srf;
    this.#log = opts.logger;
    this.#mediaSettings = { ...opts.media, logger: opts.logger.child({ component: 'media' }) };
    this.#store = opts.store;
    this.#trunks = new TrunkDirectory(opts.config.trunks);
    this.#router = new Router(opts.config.routing);
    this.#accepting = opts.accepting ?? (() => true);
    this.presence = new PresenceService({
      store: opts.store,
      logger: opts.logger,
      inputs: {
        hasSession: (a) => (this.#signaling?.sessionsOf(a).length ?? 0) > 0,
        activity: (a) => this.#activity(a),
        notify: (a, status, effective) => this.#signaling?.sendToAgent(a, 'presence.changed', { status, effective }),
      },
    });
    this.#srf.invite((req, res) => this.#onInvite(req, res));
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
    const admission = this.#trunks.admit(req.source_address, 'INVITE', req.get('Authorization') || undefined);
    if (!admission.ok) {
      if (admission.status === 401) {
        res.send(401, { headers: { 'WWW-Authenticate': admission.challenge } });
      } else {
        log.info({ reason: admission.reason }, 'rejecting INVITE: not from a known trunk');
        res.send(403);
      }

      return;
    }
    const trunk = admission.trunk;
    // Codec and address check before anyone rings (RFC 3264 §6: no common codec → 488 + Warning).
    // An INVITE without SDP is a late offer (RFC 3261 §13.2.1): we offer in the 200 OK.
    try {
      if (hasSdp(req)) {
        negotiateAnswer(req.body, { allowedCodecs: trunk.codecs, localAddress: this.#localAddress(this.#mediaSettings.relayAnnouncedAddress || '0.0.0.0'), localPort: 9 });
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
    const route = this.#router.resolve(called);
    if (!route) {
      log.info({ called }, 'rejecting INVITE: no route for the called number');
      res.send(404);

      return;
    }
    const fromNa = parseNameAddr(req.get('From') ?? '');
    const callerNumber = (fromNa && parseUri(fromNa.uri)?.user) ?? 'anonymous';
    const call = new Call({ direction: 'inbound', trunk, from: { number: callerNumber, ...(fromNa?.displayName ? { name: fromNa.displayName } : {}) }, to: { number: called } });
    call.sipCallId = sipCallId;
    call.inviteReq = req;
    call.inviteRes = res;
    const targets = await this.#targets(route);
    if (targets.length === 0) {
      log.info({ route: route.kind }, 'rejecting INVITE: no agent available');
      res.send(480);
      this.#record(call, 'unavailable', 'system', 480);

      return;
    }
    this.#calls.set(call.id, call);
    req.on('cancel', () => this.#callerCancelled(call));
    res.send(180);
    call.times.ringingAt = new Date();
    void this.#store.putCall(call.id, { direction: 'inbound', state: 'ringing', trunkId: trunk.id, from: maskNumber(call.from.number), to: maskNumber(called), offeredAt: call.times.offeredAt.toISOString() });
    log.info({ callId: call.id, trunk: trunk.id, targets: targets.length, strategy: route.kind === 'group' ? route.strategy : 'agent' }, 'ringing agents');
    call.timer(this.#cfg.calls.ringTimeoutMs, () => this.#ringTimeout(call));
    if (route.kind === 'group' && route.strategy === 'longest-idle') {
      this.#ringNext(call, targets);
    } else {
      for (const a of targets) {
        this.#ring(call, a);
      }
    }
  }

  /** Available agents of a route, longest idle first for that strategy. */
  async #targets(route: RouteTarget): Promise<string[]> {
    if (route.kind === 'agent') {
      return this.presence.isAvailable(route.agentId) ? [route.agentId] : [];
    }
    const avail = route.members.filter((m) => this.presence.isAvailable(m));

    return route.strategy === 'longest-idle' ? this.#store.longestIdleFirst(avail) : avail;
  }

  #ring(call: Call, agentId: string): void {
    call.ringing.add(agentId);
    this.#emit(agentId, 'call.incoming', { ...call.info(), ringTimeoutMs: this.#cfg.calls.ringTimeoutMs });
    this.presence.refresh(agentId);
  }

  #unring(call: Call, agentId: string, reason: 'answered_elsewhere' | 'caller_cancelled' | 'ring_timeout' | 'declined' | 'session_lost'): void {
    if (call.ringing.delete(agentId)) {
      this.#emit(agentId, 'call.cancelled', { callId: call.id, reason });
      this.presence.refresh(agentId);
    }
  }

  /** longest-idle: ring the next agent still available, for ringStepMs. */
  #ringNext(call: Call, queue: string[]): void {
    if (call.state !== 'ringing') {
      return;
    }
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'ring_timeout');
    }
    let next: string | undefined;
    while ((next = queue.shift()) !== undefined) {
      if (!call.declined.has(next) && this.presence.isAvailable(next)) {
        break;
      }
    }
    if (next === undefined) {
      this.#allDeclinedOrGone(call);

      return;
    }
    this.#ring(call, next);
    call.timer(this.#cfg.calls.ringStepMs, () => this.#ringNext(call, queue));
    call.ringQueue = queue;
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
    for (const a of [...call.ringing]) {
      this.#unring(call, a, status === 480 ? 'ring_timeout' : 'declined');
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

  #callerCancelled(call: Call): void {
    if (call.state !== 'ringing' && call.state !== 'answering') {
      return;
    }
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'caller_cancelled');
    }
    if (call.agentId) {
      this.#emit(call.agentId, 'call.ended', { callId: call.id, reason: 'cancelled', by: 'remote', sipStatus: 487 });
    }
    this.#finish(call, 'cancelled', 'remote', 487);
  }

  async #answer(session: AgentSession, callId: string): Promise<ResponseData['call.answer']> {
    const call = this.#calls.get(callId);
    if (!call || call.direction !== 'inbound' || (!call.ringing.has(session.agentId) && call.agentId !== session.agentId)) {
      throw new SignalingError('NOT_FOUND', `no call ${callId} ringing for you`);
    }
    if (call.state !== 'ringing') {
      throw new SignalingError(call.agentId && call.agentId !== session.agentId ? 'ALREADY_ANSWERED' : 'INVALID_STATE', `call ${callId} is ${call.state}`);
    }
    // First answer wins: the transition happens before anything asynchronous.
    call.transition('answering');
    call.agentId = session.agentId;
    call.ringing.delete(session.agentId);
    for (const a of [...call.ringing]) {
      this.#unring(call, a, 'answered_elsewhere');
    }
    this.presence.refresh(session.agentId);
    for (const t of call.timers) {
      clearTimeout(t);
    }
    call.timers.clear();
    const log = this.#log.child({ callId: call.id, agent: session.agentId });
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
        const { answerSdp, plan } = negotiateAnswer(call.inviteReq!.body, { allowedCodecs: call.trunk.codecs, localAddress: this.#localAddress(local.address), localPort: local.port });
        call.localSdp = answerSdp;
        await media.applyPlan(plan);
      }
      this.#watchRelay(call);
      const offer = await media.agentTransports();
      if (!call.live) {
        throw new SignalingError('INVALID_STATE', 'the caller hung up');
      }
      // 200 OK to the trunk now; the agent's media joins within moments.
      const dialog = await this.#srf.createUAS(call.inviteReq!, call.inviteRes!, { localSdp: call.localSdp });
      call.dialog = dialog;
      call.inviteReq = undefined;
      call.inviteRes = undefined;
      call.transition('active');
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
      this.#emit(session.agentId, 'call.answered', { callId: call.id });
      void this.#store.putCall(call.id, { state: 'active', agentId: session.agentId, answeredAt: call.times.answeredAt?.toISOString(), codec: media.plan?.codec.name });
      log.info({ codec: media.plan?.codec.name ?? 'late offer' }, 'call answered');

      return { callId: call.id, media: offer };
    } catch (err) {
      if (call.live) {
        log.warn({ err }, 'answer failed; rejecting the call');
        if (call.inviteRes && !call.inviteRes.finalResponseSent) {
          call.inviteRes.send(500);
        }
        this.#finish(call, 'media_error', 'system', 500);
      }
      if (err instanceof SignalingError) {
        throw err;
      }
      throw new SignalingError('MEDIA_ERROR', `cannot answer: ${(err as Error).message}`);
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
    if (call.ringing.size === 0) {
      if (call.ringQueue && call.ringQueue.length > 0) {
        this.#ringNext(call, call.ringQueue);
      } else {
        this.#allDeclinedOrGone(call);
      }
    }
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

  async #dial(session: AgentSession, data: RequestData<'call.dial'>): Promise<ResponseData['call.dial']> {
    if (!this.#accepting()) {
      throw new SignalingError('UNAVAILABLE', 'this gateway is draining');
    }
    if (this.#activity(session.agentId) === 'on_call') {
      throw new SignalingError('INVALID_STATE', 'you are already on a call');
    }
    const trunk = this.#pickTrunk(data.trunkId);
    const base = parseUri(trunk.outbound.uri);
    if (!base) {
      throw new SignalingError('NO_ROUTE', `trunk ${trunk.id} has an invalid outbound uri`);
    }
    const ruri = formatUri({ ...base, user: data.to });
    const call = new Call({ direction: 'outbound', trunk, from: { number: trunk.outbound.callerId || session.agentId }, to: { number: data.to } });
    call.agentId = session.agentId;
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
      call.localSdp = buildOffer({ codecs: trunk.codecs, localAddress: local.address, localPort: local.port, direction: 'sendrecv' }).offerSdp;
      mediaOffer = await media.agentTransports();
      this.#watchRelay(call);
    } catch (err) {
      this.#finish(call, 'media_error', 'system');
      throw new SignalingError('MEDIA_ERROR', `cannot set up media: ${(err as Error).message}`);
    }
    void this.#store.putCall(call.id, { direction: 'outbound', state: 'dialing', trunkId: trunk.id, agentId: session.agentId, from: maskNumber(call.from.number), to: maskNumber(data.to), offeredAt: call.times.offeredAt.toISOString() });
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
        {
          localSdp: offerSdp,
          headers: { From: `<sip:${call.from.number}@localhost>` },
          ...(trunk.outbound.auth.username ? { auth: { username: trunk.outbound.auth.username, password: trunk.outbound.auth.password } } : {}),
          ...(trunk.outbound.proxy ? { proxy: trunk.outbound.proxy } : {}),
        },
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
    const r = reanswer(media.plan, req.body ?? '', { previous: call.localSdp, localDirection: call.heldLocal ? 'sendonly' : 'sendrecv' });
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
    const { offerSdp } = buildOffer({ codecs: formats.codecs, telephoneEvent: formats.telephoneEvent, localAddress: local.address, localPort: local.port, direction: hold ? 'sendonly' : 'sendrecv', previous: call.localSdp });
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

  /** Ends a call: state, presence, record. */
  #finish(call: Call, reason: EndReason, by: 'local' | 'remote' | 'system', sipStatus?: number): void {
    if (!call.finish(reason, by, sipStatus)) {
      return;
    }
    this.#calls.delete(call.id);
    for (const a of [...call.ringing]) {
      this.#unring(call, a, reason === 'cancelled' ? 'caller_cancelled' : 'ring_timeout');
    }
    if (call.agentId) {
      if (call.times.answeredAt) {
        void this.#store.agentBecameIdle(call.agentId);
      }
      this.presence.refresh(call.agentId);
    }
    this.#record(call, reason, by, sipStatus);
  }

  #record(call: Call, reason: EndReason, _by: string, sipStatus?: number): void {
    const endedAt = call.times.endedAt ?? new Date();
    const answeredAt = call.times.answeredAt;
    void this.#store.endCall({
      callId: call.id,
      direction: call.direction,
      trunkId: call.trunk.id,
      from: maskNumber(call.from.number),
      to: maskNumber(call.to.number),
      agentId: call.agentId ?? '',
      node: '',
      offeredAt: call.times.offeredAt.toISOString(),
      ...(call.times.ringingAt ? { ringingAt: call.times.ringingAt.toISOString() } : {}),
      ...(answeredAt ? { answeredAt: answeredAt.toISOString() } : {}),
      endedAt: endedAt.toISOString(),
      endReason: reason,
      ...(sipStatus !== undefined ? { sipStatus } : {}),
      ...(call.media?.plan ? { codec: call.media.plan.codec.name } : {}),
      durationS: answeredAt ? Math.round((endedAt.getTime() - answeredAt.getTime()) / 1000) : 0,
    });
  }

  // ----------------------------------------------------------------------------------------------
  // SignalingHandler
  // ----------------------------------------------------------------------------------------------

  /** @private SignalingHandler */
  async onSessionReady(session: AgentSession, resumed: boolean): Promise<{ presence: { status: AgentStatus; effective: EffectivePresence }; calls: ReturnType<Call['info']>[] }> {
    await this.presence.load(session.agentId);
    this.presence.refresh(session.agentId);
    const calls = this.calls
      .filter((c) => c.agentId === session.agentId || (c.state === 'ringing' && c.ringing.has(session.agentId)))
      .map((c) => ({ ...c.info(), ...(c.state === 'ringing' ? { ringTimeoutMs: this.#cfg.calls.ringTimeoutMs } : {}) }));
    void resumed;

    return { presence: { status: this.presence.status(session.agentId), effective: this.presence.effective(session.agentId) }, calls };
  }

  /** @private SignalingHandler: calls go on during the grace period. */
  onSessionSuspended(_session: AgentSession): void {
    // media keeps flowing; the agent resumes or the grace period ends the session
  }

  /** @private SignalingHandler */
  onSessionEnded(session: AgentSession, reason: 'grace_expired' | 'closed' | 'shutdown'): void {
    const remaining = this.#signaling?.sessionsOf(session.agentId).length ?? 0;
    if (remaining > 0) {
      return;
    }
    for (const call of this.calls) {
      if (call.ringing.has(session.agentId)) {
        this.#unring(call, session.agentId, 'session_lost');
        if (call.ringing.size === 0 && call.state === 'ringing') {
          if (call.ringQueue && call.ringQueue.length > 0) {
            this.#ringNext(call, call.ringQueue);
          } else {
            this.#allDeclinedOrGone(call);
          }
        }
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

  async #dispatch(session: AgentSession, type: Exclude<RequestType, 'auth' | 'ping'>, data: Record<string, unknown>): Promise<unknown> {
    switch (type) {
      case 'presence.set':
        return this.presence.set(session.agentId, (data as RequestData<'presence.set'>).status);
      case 'calls.list':
        return { calls: this.calls.filter((c) => c.agentId === session.agentId || c.ringing.has(session.agentId)).map((c) => c.info()) };
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

  #mediaOf(session: AgentSession, callId: string): CallMedia {
    const call = this.#ownCall(session, callId);
    if (!call.media || call.media.closed) {
      throw new SignalingError('INVALID_STATE', `call ${callId} has no media`);
    }

    return call.media;
  }

  /** Ends every call (shutdown): BYE/CANCEL/480 to trunks, call.ended to agents. */
  shutdown(): void {
    for (const call of this.calls) {
      if (call.state === 'ringing') {
        this.#rejectInbound(call, 480, 'unavailable');
      } else {
        this.#hangupTrunk(call, 'failed', 'SIP;cause=503;text="gateway shutting down"');
      }
    }
  }
}
