/**
 * The media of one call inside mediasoup, without transcoding:
 *
 *   trunk ⇄ RtpRelay ⇄ PlainTransport ─ trunk producer ─→ consumer on the agent's recv transport ⇄ agent
 *                                    ←─ consumer ────── agent producer on the agent's send transport ←
 *
 * One router per call on the least-loaded worker. The relay (rtp-relay.ts) faces the trunk:
 * SSRC and payload-type mapping, latching, DTMF and RTP-timeout detection.
 *
 * Closure: close() closes the router (and so every transport, producer and consumer) and the
 * relay; it is idempotent and also runs when the router's worker dies.
 */
import { type types as ms } from 'mediasoup';
import { type Logger } from '../log/logger.js';
import { ROUTER_MEDIA_CODECS } from '../media/codecs.js';
import { RtpRelay } from '../media/rtp-relay.js';
import { fromKeyParams, type SrtpKeys } from '../media/rtp/srtp.js';
import { type MediaWorkerPool } from '../media/worker-pool.js';
import { type CallCodec, type MediaOffer, type TransportInfo } from '../signaling/protocol.js';
import { consumerPayloadTypeMap, type MediaPlan, type PlanSrtp, toProducerRtpParameters, toRtpCapabilities } from '../sip/sdp.js';

/**
 * appData.role of a PlainTransport that carries the far party of a call in place of a WebRTC
 * agent: a SIP device's leg, or the second trunk leg of a transfer to a number.
 */
export const FAR_LEG_ROLE = 'far-leg';

/** Media settings shared by every call. */
export interface CallMediaSettings {
  pool: MediaWorkerPool;
  /** Address the agents' WebRTC transports bind to, and the one they announce. */
  listenIp: string;
  announcedAddress: string;
  /** Address the trunk relay binds to and the one our SDP announces. */
  relayBindAddress: string;
  relayAnnouncedAddress: string;
  relayPortRange: { min: number; max: number };
  rtpTimeoutMs: number;
  logger: Logger;
}

/** Thrown when mediasoup refuses a media request (the agent gets MEDIA_ERROR). */
export class CallMediaError extends Error {
  override readonly name = 'CallMediaError';
}

/**
 * The master keys of an accepted SDES pair.
 * @throws {CallMediaError} when a key is not one inline key of 30 bytes (the negotiation accepts only such)
 */
function srtpKeys(p: PlanSrtp): SrtpKeys {
  const local = fromKeyParams(p.local.keyParams);
  const remote = fromKeyParams(p.remote.keyParams);
  if (!local || !remote) {
    throw new CallMediaError('unusable SDES key parameters');
  }

  return { local, remote };
}

function transportInfo(t: ms.WebRtcTransport): TransportInfo {
  return { id: t.id, iceParameters: t.iceParameters, iceCandidates: t.iceCandidates, dtlsParameters: t.dtlsParameters };
}

/** One call's media. Create with CallMedia.create(). */
export class CallMedia {
  readonly router: ms.Router;
  readonly relay: RtpRelay;
  readonly plain: ms.PlainTransport;
  readonly #settings: CallMediaSettings;
  sendTransport?: ms.WebRtcTransport;
  recvTransport?: ms.WebRtcTransport;
  /** Audio from the trunk. */
  trunkProducer?: ms.Producer;
  /** Agent audio toward the trunk. */
  trunkConsumer?: ms.Consumer;
  agentProducer?: ms.Producer;
  agentConsumer?: ms.Consumer;
  plan?: MediaPlan;
  /** What the agent hears instead of the trunk (an attended transfer's consulted party); undefined: the trunk. */
  #agentSource: ms.Producer | undefined;
  #closed = false;
  readonly #onClose: (() => void)[] = [];
  /** Whether close() closes the router (false for a second trunk leg in another call's router). */
  readonly #ownsRouter: boolean;

  private constructor(settings: CallMediaSettings, router: ms.Router, relay: RtpRelay, plain: ms.PlainTransport, ownsRouter: boolean) {
    this.#settings = settings;
    this.router = router;
    this.relay = relay;
    this.plain = plain;
    this.#ownsRouter = ownsRouter;
    router.observer.once('close', () => this.close());
    if (!ownsRouter) {
      plain.observer.once('close', () => this.close());
    }
  }

  /**
   * A router on the least-loaded worker, the trunk relay and the loopback PlainTransport. With
   * `router`, a second trunk leg inside that (another call's) router instead: its close() leaves
   * the router alone (a transfer to a number bridges two trunk legs in one router).
   * @throws {MediaWorkerError | CallMediaError} when no worker or no relay port is available
   */
  static async create(settings: CallMediaSettings, opts: { latching: boolean; router?: ms.Router }): Promise<CallMedia> {
    const owns = opts.router === undefined;
    const router = opts.router ?? (await settings.pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS }));
    let plain: ms.PlainTransport | undefined;
    let relay: RtpRelay | undefined;
    try {
      relay = await RtpRelay.create({
        listenAddress: settings.relayBindAddress,
        portRange: settings.relayPortRange,
        latching: opts.latching,
        rtpTimeoutMs: settings.rtpTimeoutMs,
        logger: settings.logger,
      });
      // a second leg in another call's router is that call's far party (FAR_LEG_ROLE, recorded as the agent side)
      plain = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: false, comedia: false, ...(owns ? {} : { appData: { role: FAR_LEG_ROLE } }) });
      const side = relay.mediasoupSide;
      await plain.connect({ ip: side.ip, port: side.port, rtcpPort: side.rtcpPort });
      relay.setMediasoupTarget({ port: plain.tuple.localPort, rtcpPort: plain.rtcpTuple!.localPort });

      return new CallMedia(settings, router, relay, plain, owns);
    } catch (err) {
      if (owns) {
        router.close();
      } else {
        plain?.close();
      }
      relay?.close();
      throw err instanceof CallMediaError ? err : new CallMediaError(`cannot set up the trunk media: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Where our SDP tells the trunk to send RTP. */
  get localRtp(): { address: string; port: number } {
    return { address: this.#settings.relayAnnouncedAddress || this.relay.publicSide.address, port: this.relay.publicSide.port };
  }

  /** Registers a callback for the end of the media (router closed, worker died). */
  onClose(fn: () => void): void {
    this.#onClose.push(fn);
  }

  /** Whether close() ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Applies a negotiated plan: the relay's remote, telephone-event and payload-type mapping, the
   * producer of the trunk's audio, and (when the agent already produces) the consumer toward the
   * trunk. Idempotent for the same codec; a codec change is refused.
   * @throws {CallMediaError} on a codec the router does not have
   */
  async applyPlan(plan: MediaPlan): Promise<void> {
    if (this.plan && this.plan.codec.mimeType.toLowerCase() !== plan.codec.mimeType.toLowerCase()) {
      throw new CallMediaError('the trunk changed codec mid-call');
    }
    const previous = this.plan;
    this.plan = plan;
    if (!previous || previous.remote.address !== plan.remote.address || previous.remote.port !== plan.remote.port || previous.remote.rtcpPort !== plan.remote.rtcpPort) {
      // RFC 2543 hold (c=0.0.0.0) keeps the old destination: nothing is sent then anyway
      if (plan.hold !== 'null-address') {
        this.relay.setRemote({ address: plan.remote.address, port: plan.remote.port, rtcpPort: plan.remote.rtcpPort, rtcpMux: plan.remote.rtcpMux });
      }
    }
    // SDES-SRTP: new keys (a new call, or a re-INVITE with new a=crypto) replace the context;
    // the same keys keep it (and its rollover and replay state)
    if (previous?.srtp?.local.keyParams !== plan.srtp?.local.keyParams || previous?.srtp?.remote.keyParams !== plan.srtp?.remote.keyParams) {
      this.relay.setSrtp(plan.srtp ? srtpKeys(plan.srtp) : undefined);
    }
    // The trunk sends with the payload types of our SDP (localPayloadType).
    this.relay.setTelephoneEventPt(plan.telephoneEvent?.localPayloadType, plan.telephoneEvent?.clockRate);
    this.relay.setAudioClockRate(plan.codec.clockRate);
    this.relay.sendEnabled = plan.flow.send;
    this.relay.expectMedia = plan.flow.receive;
    if (!this.trunkProducer) {
      try {
        this.trunkProducer = await this.plain.produce({
          kind: 'audio',
          rtpParameters: toProducerRtpParameters(plan, { ssrc: this.relay.producerSsrc }),
        });
      } catch (err) {
        throw new CallMediaError(`mediasoup refused the trunk's codec ${plan.codec.mimeType}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (this.trunkConsumer && previous && (previous.codec.payloadType !== plan.codec.payloadType || previous.telephoneEvent?.payloadType !== plan.telephoneEvent?.payloadType)) {
      this.relay.setPayloadTypeMap(consumerPayloadTypeMap(plan, this.trunkConsumer.rtpParameters));
    }
    await this.#ensureTrunkConsumer();
  }

  /** The call's codec, as the agent must produce it. */
  get codec(): CallCodec | undefined {
    const c = this.plan?.codec;

    return c ? { mimeType: c.mimeType, clockRate: c.clockRate, ...(c.channels && c.channels > 1 ? { channels: c.channels } : {}) } : undefined;
  }

  /** Creates the agent's WebRTC send and recv transports; returns what the agent needs. */
  async agentTransports(): Promise<MediaOffer> {
    const s = this.#settings;
    const listen = [{ ip: s.listenIp, announcedIp: s.announcedAddress || undefined }];
    this.sendTransport ??= await this.router.createWebRtcTransport({ listenIps: listen, enableUdp: true, enableTcp: true, preferUdp: true });
    this.recvTransport ??= await this.router.createWebRtcTransport({ listenIps: listen, enableUdp: true, enableTcp: true, preferUdp: true });

    return {
      routerRtpCapabilities: this.router.rtpCapabilities,
      sendTransport: transportInfo(this.sendTransport),
      recvTransport: transportInfo(this.recvTransport),
      ...(this.codec ? { codec: this.codec } : {}),
    };
  }

  /**
   * DTLS parameters from the agent for one of its transports.
   * @throws {CallMediaError} for an unknown transport or refused parameters
   */
  async connectAgent(transportId: string, dtlsParameters: unknown): Promise<void> {
    const t = this.#agentTransport(transportId);
    try {
      await t.connect({ dtlsParameters: dtlsParameters as ms.DtlsParameters });
    } catch (err) {
      throw new CallMediaError(`transport ${transportId}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * The agent's audio producer; it must use the call's codec (no transcoding).
   * @throws {CallMediaError} when the codec differs or mediasoup refuses it
   */
  async produceAgent(transportId: string, rtpParameters: unknown): Promise<string> {
    const t = this.#agentTransport(transportId);
    if (t !== this.sendTransport) {
      throw new CallMediaError('produce on the send transport');
    }
    const params = rtpParameters as ms.RtpParameters;
    const want = this.plan?.codec.mimeType.toLowerCase();
    const first = params.codecs?.find((c) => !/\/(rtx|red|telephone-event|cn)$/i.test(c.mimeType));
    if (want && first && first.mimeType.toLowerCase() !== want) {
      throw new CallMediaError(`produce with the call's codec ${this.plan!.codec.mimeType}, not ${first.mimeType}`);
    }
    this.agentProducer?.close();
    try {
      this.agentProducer = await t.produce({ kind: 'audio', rtpParameters: params });
    } catch (err) {
      throw new CallMediaError(`produce refused: ${(err as Error).message}`, { cause: err });
    }
    if (this.trunkConsumer && this.trunkConsumer.producerId !== this.agentProducer.id) {
      // the trunk heard something else meanwhile (queue audio, a call offered anew): the agent now
      this.trunkConsumer.close();
      this.trunkConsumer = undefined;
    }
    await this.#ensureTrunkConsumer();

    return this.agentProducer.id;
  }

  /**
   * A paused consumer of the trunk's audio for the agent.
   * @throws {CallMediaError} when there is no trunk audio yet or the agent cannot receive its codec
   */
  async consumeForAgent(rtpCapabilities: unknown): Promise<{ consumerId: string; producerId: string; kind: 'audio'; rtpParameters: unknown }> {
    if (!this.recvTransport) {
      throw new CallMediaError('no receive transport; answer or dial first');
    }
    const source = this.#agentSource && !this.#agentSource.closed ? this.#agentSource : this.trunkProducer;
    if (!source) {
      throw new CallMediaError('no audio from the trunk yet (consume again after call.media)');
    }
    const caps = rtpCapabilities as ms.RtpCapabilities;
    if (!this.router.canConsume({ producerId: source.id, rtpCapabilities: caps })) {
      throw new CallMediaError(`the agent cannot receive ${this.plan?.codec.mimeType ?? 'the call codec'}`);
    }
    this.agentConsumer?.close();
    this.agentConsumer = await this.recvTransport.consume({ producerId: source.id, rtpCapabilities: caps, paused: true });

    return { consumerId: this.agentConsumer.id, producerId: source.id, kind: 'audio', rtpParameters: this.agentConsumer.rtpParameters };
  }

  /** Resumes the agent's consumer. */
  async resumeAgentConsumer(consumerId: string): Promise<void> {
    if (this.agentConsumer?.id !== consumerId) {
      throw new CallMediaError(`unknown consumer ${consumerId}`);
    }
    await this.agentConsumer.resume();
  }

  /** Pauses or resumes the agent's audio toward the trunk (mute, local hold). */
  async setAgentAudio(enabled: boolean): Promise<void> {
    if (!this.agentProducer) {
      return;
    }
    await (enabled ? this.agentProducer.resume() : this.agentProducer.pause());
  }

  /**
   * Makes another leg's producer (a SIP device's, device-media.ts) the audio toward the trunk, in
   * place of a WebRTC agent's; the trunk's PlainTransport consumes it.
   * @throws when mediasoup refuses the consumer
   */
  async useAgentProducer(producer: ms.Producer): Promise<void> {
    if (this.agentProducer !== producer) {
      this.trunkConsumer?.close();
      this.trunkConsumer = undefined;
    }
    this.agentProducer = producer;
    await this.#ensureTrunkConsumer();
  }

  /** Stops sending anything to the trunk (the consumer of the agent's audio closes) until feedTrunk() or the agent produces again. */
  stopTrunkFeed(): void {
    this.trunkConsumer?.close();
    this.trunkConsumer = undefined;
  }

  /**
   * Makes the agent hear another producer of this router (an attended transfer's consulted party),
   * or the trunk again (undefined). The agent's current consumer closes: the agent consumes again
   * (media.consume), which then takes this source.
   */
  setAgentSource(producer: ms.Producer | undefined): void {
    this.#agentSource = producer;
    this.agentConsumer?.close();
    this.agentConsumer = undefined;
  }

  /**
   * Takes the agent's leg away while the trunk leg stays up (a call offered anew, call-centre.ts):
   * closes the agent's WebRTC transports (and so its producer and consumer) and the
   * PlainTransport's consumer of the agent's audio. The trunk hears nothing until another agent
   * produces (agentTransports() then creates new transports in the same router) or feedTrunk()
   * gives it another producer.
   */
  releaseAgent(): void {
    this.#agentSource = undefined;
    this.trunkConsumer?.close();
    this.trunkConsumer = undefined;
    this.agentConsumer?.close();
    this.agentConsumer = undefined;
    this.agentProducer?.close();
    this.agentProducer = undefined;
    this.sendTransport?.close();
    this.sendTransport = undefined;
    this.recvTransport?.close();
    this.recvTransport = undefined;
  }

  /**
   * Sends another producer of this router to the trunk in place of the agent's audio (queue or
   * hold audio from a player, the other trunk leg of a transfer to a number). It must carry the
   * call's codec. Replaced again when an agent produces.
   * @throws {CallMediaError} before the plan is known, or when the PlainTransport cannot consume it
   */
  async feedTrunk(producerId: string): Promise<void> {
    if (!this.plan) {
      throw new CallMediaError('no negotiated media yet');
    }
    this.trunkConsumer?.close();
    this.trunkConsumer = undefined;
    try {
      this.trunkConsumer = await this.plain.consume({ producerId, rtpCapabilities: toRtpCapabilities(this.plan) });
    } catch (err) {
      throw new CallMediaError(`the trunk leg cannot take producer ${producerId}: ${(err as Error).message}`, { cause: err });
    }
    this.relay.setPayloadTypeMap(consumerPayloadTypeMap(this.plan, this.trunkConsumer.rtpParameters));
  }

  async #ensureTrunkConsumer(): Promise<void> {
    if (this.trunkConsumer || !this.agentProducer || !this.plan) {
      return;
    }
    // The PlainTransport consumes with the call codec only; the relay maps the router's payload
    // types to the ones the trunk negotiated.
    this.trunkConsumer = await this.plain.consume({ producerId: this.agentProducer.id, rtpCapabilities: toRtpCapabilities(this.plan) });
    this.relay.setPayloadTypeMap(consumerPayloadTypeMap(this.plan, this.trunkConsumer.rtpParameters));
  }

  #agentTransport(id: string): ms.WebRtcTransport {
    const t = this.sendTransport?.id === id ? this.sendTransport : this.recvTransport?.id === id ? this.recvTransport : undefined;
    if (!t) {
      throw new CallMediaError(`unknown transport ${id}`);
    }

    return t;
  }

  /** Packet counters of both legs, for tests, quality metrics and the call record. */
  async stats(): Promise<{ trunkIn: number; trunkOut: number; agentIn: number; agentOut: number }> {
    const sum = async (o?: { getStats(): Promise<unknown[]> }, field = 'packetCount') => {
      if (!o) {
        return 0;
      }
      const s = (await o.getStats()) as Record<string, number>[];

      return s.reduce((n, x) => n + (Number(x[field]) || 0), 0);
    };

    return {
      trunkIn: await sum(this.trunkProducer),
      trunkOut: await sum(this.trunkConsumer),
      agentIn: await sum(this.agentProducer),
      agentOut: await sum(this.agentConsumer),
    };
  }

  /** Closes the router (and every transport, producer and consumer) and the relay. Idempotent. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    if (!this.#ownsRouter) {
      // a second trunk leg: its own transport only, the router belongs to the call
      this.releaseAgent();
      this.trunkProducer?.close();
      this.plain.close();
    } else if (!this.router.closed) {
      this.router.close();
    }
    this.relay.close();
    for (const fn of this.#onClose.splice(0)) {
      fn();
    }
  }
}
