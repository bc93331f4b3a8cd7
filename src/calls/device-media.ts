/**
 * The media of a call's leg to a SIP device (issue 12, item 3, media part), like the trunk leg:
 *
 *   trunk ⇄ trunk RtpRelay ⇄ PlainTransport ─ trunk producer ──→ consumer on the device's PlainTransport ⇄ device RtpRelay ⇄ device
 *                                          ←─ consumer ──────── device producer ←
 *
 * in the call's router, without transcoding: the device is offered the trunk leg's codec only (and
 * telephone-event). The relay is bound when the device is rung (its port goes in the INVITE's
 * offer); the PlainTransport, producer and consumers follow once the device answered and the
 * call's router exists (CallMedia.create at answer time).
 *
 * SDES-SRTP toward a device registered over TLS (or whose INVITE came over TLS): the relay's
 * public side encrypts and decrypts (RtpRelay.setSrtp), as the trunk leg's does.
 * RFC 4733 digits cross between the legs as signalling (decoded by one relay, sent again by the
 * other), since mediasoup's consumers drop telephone-event.
 * Re-INVITEs from the device (hold, resume, a new address) are answered from the leg's plan
 * (serveReinvites); the trunk leg is not re-INVITEd for them.
 */
import { type types as ms } from 'mediasoup';
import { RtpRelay } from '../media/rtp-relay.js';
import type Srf from 'drachtio-srf';
import { consumerPayloadTypeMap, buildOffer, negotiateAnswer, negotiateFromAnswer, reanswer, SdpError, toProducerRtpParameters, toRtpCapabilities, type MediaPlan, type SrtpAnswerer } from '../sip/sdp.js';
import { type TrunkCodecName } from '../media/codecs.js';
import { fromKeyParams, newMasterKey, SRTP_SUITE, toKeyParams } from '../media/rtp/srtp.js';
import { type CallMedia, CallMediaError, type CallMediaSettings, FAR_LEG_ROLE } from './call-media.js';

/** Answers an offered a=crypto of our suite with a fresh key of ours (RFC 4568 §6.1). */
const sdesAnswerer: SrtpAnswerer = (offered) => {
  const usable = offered.find((c) => c.suite === SRTP_SUITE && fromKeyParams(c.keyParams) !== undefined);

  return usable ? { tag: usable.tag, suite: usable.suite, keyParams: toKeyParams(newMasterKey()) } : undefined;
};

/** One device leg's media. Create with DeviceMedia.create(). */
export class DeviceMedia {
  readonly relay: RtpRelay;
  /** The SDP offer for the device (our relay's address, the trunk leg's codec). */
  readonly offerSdp: string;
  plain?: ms.PlainTransport;
  /** Audio from the device, and the trunk's audio toward it. */
  producer?: ms.Producer;
  consumer?: ms.Consumer;
  plan?: MediaPlan;
  #closed = false;
  /** Our last SDP toward the device (the offer, or our answer): re-answers continue its o= line (RFC 3264 §8). */
  #localSdp: string;

  private constructor(relay: RtpRelay, offerSdp: string) {
    this.relay = relay;
    this.offerSdp = offerSdp;
    this.#localSdp = offerSdp;
  }

  /**
   * A re-INVITE from the device in an established call (RFC 3264 §8; hold and resume, RFC 3264
   * §8.4, or a new address): answers it from the current plan (same codec, SRTP key kept) and
   * applies it to the relay: a new remote address, and the directions (a device that holds with
   * sendonly/inactive gets none of the trunk's audio; the trunk leg is not re-INVITEd).
   * @returns our answer, and whether the device holds the call now
   * @throws {SdpError} for an unusable re-offer (488); {CallMediaError} before connect()
   */
  reinvite(offerSdp: string): { answerSdp: string; held: boolean } {
    const current = this.plan;
    if (!current) {
      throw new CallMediaError('the device leg has no media yet');
    }
    const keep = current.srtp;
    const r = reanswer(current, offerSdp, {
      previous: this.#localSdp,
      // the device's same key keeps ours (RFC 4568 §7.1.4 allows it); a new key of the device gets a new one of ours
      ...(keep
        ? {
            srtp: (offered) => {
              const same = offered.find((c) => c.suite === keep.local.suite && c.keyParams === keep.remote.keyParams);

              return same ? { ...keep.local, tag: same.tag } : sdesAnswerer(offered);
            },
          }
        : {}),
    });
    if (keep && !r.plan.srtp) {
      throw new SdpError('SRTP_REQUIRED', 'an SRTP device leg stays SRTP');
    }
    const relay = this.relay;
    if (r.plan.srtp && (r.plan.srtp.remote.keyParams !== keep?.remote.keyParams || r.plan.srtp.local.keyParams !== keep.local.keyParams)) {
      const local = fromKeyParams(r.plan.srtp.local.keyParams);
      const remote = fromKeyParams(r.plan.srtp.remote.keyParams);
      if (local && remote) {
        relay.setSrtp({ local, remote });
      }
    }
    relay.setRemote({ address: r.plan.remote.address, port: r.plan.remote.port, rtcpPort: r.plan.remote.rtcpPort, rtcpMux: r.plan.remote.rtcpMux });
    relay.sendEnabled = r.plan.flow.send;
    relay.expectMedia = r.plan.flow.receive;
    this.plan = r.plan;
    this.#localSdp = r.answerSdp;

    return { answerSdp: r.answerSdp, held: r.plan.hold !== 'none' };
  }

  /**
   * Serves re-INVITEs of the device's dialog with reinvite(): 200 with our answer, 488 for an
   * unusable re-offer (the media stays as it was), 500 otherwise. Never throws.
   */
  serveReinvites(dialog: Srf.Dialog, onHold?: (held: boolean) => void): void {
    dialog.on('modify', (req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      try {
        const { answerSdp, held } = this.reinvite(req.body ?? '');
        res.send(200, { body: answerSdp });
        onHold?.(held);
      } catch (err) {
        res.send(err instanceof SdpError ? 488 : 500);
      }
    });
  }

  /**
   * Binds the device leg's relay and builds the offer.
   * @param codec the trunk leg's codec (the device gets no other: no transcoding)
   * @param srtp offer SDES-SRTP (RTP/SAVP, AES_CM_128_HMAC_SHA1_80): only for a binding over TLS (keys travel in the SDP)
   * @throws {CallMediaError} when no relay port is free
   */
  static async create(settings: Pick<CallMediaSettings, 'relayBindAddress' | 'relayAnnouncedAddress' | 'relayPortRange' | 'rtpTimeoutMs' | 'logger'>, codec: TrunkCodecName, srtp = false): Promise<DeviceMedia> {
    let relay: RtpRelay;
    try {
      relay = await RtpRelay.create({ listenAddress: settings.relayBindAddress, portRange: settings.relayPortRange, latching: true, rtpTimeoutMs: settings.rtpTimeoutMs, logger: settings.logger });
    } catch (err) {
      throw new CallMediaError(`cannot set up the device media: ${(err as Error).message}`, { cause: err });
    }
    const address = settings.relayAnnouncedAddress || relay.publicSide.address;
    // SDES (RFC 4568): RTP/SAVP with a fresh key of ours; the device's answer must carry a=crypto
    const crypto = srtp ? { tag: 1, suite: SRTP_SUITE, keyParams: toKeyParams(newMasterKey()) } : undefined;
    const offerSdp = buildOffer({ codecs: [codec], localAddress: address, localPort: relay.publicSide.port, direction: 'sendrecv', ...(crypto ? { crypto } : {}) }).offerSdp;

    return new DeviceMedia(relay, offerSdp);
  }

  /**
   * The device's SDP answer (its 200 OK), and the bridge to the trunk leg inside the call's
   * router: a PlainTransport toward this relay, the device's producer (consumed by the trunk's
   * PlainTransport through CallMedia.useAgentProducer) and a consumer of the trunk's audio.
   * @throws {SdpError} for an unusable answer; {CallMediaError} when the codecs do not match or mediasoup refuses
   */
  async bridge(answerSdp: string, trunk: CallMedia): Promise<void> {
    await this.connect(negotiateFromAnswer(this.offerSdp, answerSdp), trunk);
  }

  /**
   * A device that called (issue 12, item 4): binds the leg's relay and answers the device's SDP
   * offer with one codec the trunk may use (the device's order decides), plain RTP/AVP. The
   * returned plan is connected with connect() once the trunk leg answered. With `srtp` (the
   * INVITE came over TLS) an RTP/SAVP offer is answered with a key of ours (SDES, RFC 4568).
   * @throws {SdpError} for an unusable offer (no common codec: 488); {CallMediaError} when no relay port is free
   */
  static async answer(settings: Pick<CallMediaSettings, 'relayBindAddress' | 'relayAnnouncedAddress' | 'relayPortRange' | 'rtpTimeoutMs' | 'logger'>, offerSdp: string, codecs: readonly TrunkCodecName[], srtp = false): Promise<{ media: DeviceMedia; answerSdp: string; plan: MediaPlan }> {
    let relay: RtpRelay;
    try {
      relay = await RtpRelay.create({ listenAddress: settings.relayBindAddress, portRange: settings.relayPortRange, latching: true, rtpTimeoutMs: settings.rtpTimeoutMs, logger: settings.logger });
    } catch (err) {
      throw new CallMediaError(`cannot set up the device media: ${(err as Error).message}`, { cause: err });
    }
    try {
      const address = settings.relayAnnouncedAddress || relay.publicSide.address;
      const { answerSdp, plan } = negotiateAnswer(offerSdp, { allowedCodecs: codecs, localAddress: address.includes(':') ? { ipv6: address } : { ipv4: address }, localPort: relay.publicSide.port, ...(srtp ? { srtp: sdesAnswerer } : {}) });

      const media = new DeviceMedia(relay, '');
      media.#localSdp = answerSdp;

      return { media, answerSdp, plan };
    } catch (err) {
      relay.close();
      throw err;
    }
  }

  /**
   * Connects a negotiated plan of the device leg to the trunk leg in the call's router (see bridge()).
   * @throws {CallMediaError} when the codecs do not match, the trunk has no audio yet or mediasoup refuses
   */
  async connect(plan: MediaPlan, trunk: CallMedia): Promise<void> {
    if (trunk.plan && trunk.plan.codec.mimeType.toLowerCase() !== plan.codec.mimeType.toLowerCase()) {
      throw new CallMediaError(`the device answered ${plan.codec.mimeType}, the trunk leg uses ${trunk.plan.codec.mimeType}`);
    }
    if (!trunk.trunkProducer) {
      throw new CallMediaError('no trunk audio to bridge yet');
    }
    this.plan = plan;
    const relay = this.relay;
    if (plan.srtp) {
      const local = fromKeyParams(plan.srtp.local.keyParams);
      const remote = fromKeyParams(plan.srtp.remote.keyParams);
      if (!local || !remote) {
        throw new CallMediaError('unusable SDES key parameters');
      }
      relay.setSrtp({ local, remote });
    }
    relay.setRemote({ address: plan.remote.address, port: plan.remote.port, rtcpPort: plan.remote.rtcpPort, rtcpMux: plan.remote.rtcpMux });
    relay.setTelephoneEventPt(plan.telephoneEvent?.localPayloadType, plan.telephoneEvent?.clockRate);
    relay.setAudioClockRate(plan.codec.clockRate);
    relay.sendEnabled = plan.flow.send;
    relay.expectMedia = plan.flow.receive;
    const plain = await trunk.router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: false, comedia: false, appData: { role: FAR_LEG_ROLE } });
    this.plain = plain;
    const side = relay.mediasoupSide;
    await plain.connect({ ip: side.ip, port: side.port, rtcpPort: side.rtcpPort });
    relay.setMediasoupTarget({ port: plain.tuple.localPort, rtcpPort: plain.rtcpTuple!.localPort });
    try {
      this.producer = await plain.produce({ kind: 'audio', rtpParameters: toProducerRtpParameters(plan, { ssrc: relay.producerSsrc }) });
      this.consumer = await plain.consume({ producerId: trunk.trunkProducer.id, rtpCapabilities: toRtpCapabilities(plan) });
    } catch (err) {
      throw new CallMediaError(`mediasoup refused the device's codec ${plan.codec.mimeType}: ${(err as Error).message}`, { cause: err });
    }
    relay.setPayloadTypeMap(consumerPayloadTypeMap(plan, this.consumer.rtpParameters));
    await trunk.useAgentProducer(this.producer);
    // RFC 4733 digits cross as signalling (mediasoup's consumers drop telephone-event, rtp-relay.ts):
    // the device's keys are sent again toward the trunk, the trunk's toward the device
    const forward = (to: RtpRelay) => (ev: { digit: string; durationMs: number }) => {
      try {
        void to.sendDtmf(ev.digit, { durationMs: Math.max(40, ev.durationMs) }).catch(() => undefined);
      } catch {
        // closed, or no telephone-event negotiated on that leg: the key is lost, as on a plain call
      }
    };
    relay.on('dtmf', forward(trunk.relay));
    trunk.relay.on('dtmf', forward(relay));
  }

  /** Packet counters: from the device into the router, and from the router to the device. */
  async stats(): Promise<{ deviceIn: number; deviceOut: number }> {
    const sum = async (o?: { getStats(): Promise<unknown[]> }) => ((await o?.getStats()) as Record<string, number>[] | undefined)?.reduce((n, x) => n + (Number(x.packetCount) || 0), 0) ?? 0;

    return { deviceIn: await sum(this.producer), deviceOut: await sum(this.consumer) };
  }

  /** Closes the leg's transport (its producer and consumer with it) and the relay. Idempotent. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    if (this.plain && !this.plain.closed) {
      this.plain.close();
    }
    this.relay.close();
  }
}
