/**
 * The WebRTC side of one call: a send and a receive transport created from the gateway's
 * MediaOffer, the agent's audio producer (forced to the call's codec) and the consumer of the
 * trunk's audio. Each step maps to a protocol request (PROTOCOL.md "Inbound call"):
 *
 *   transport 'connect' → media.connect {callId, transportId, dtlsParameters}
 *   transport 'produce' → media.produce {callId, transportId, kind, rtpParameters} → producerId
 *   consume()           → media.consume {callId, rtpCapabilities}, recvTransport.consume(),
 *                         media.resume {callId, consumerId}
 *
 * Closing it closes the producer, the consumer and both transports (their peer connections).
 */
import type { types as msc, Device } from 'mediasoup-client';
import type { CallCodec, MediaOffer, RequestData, RequestType, ResponseData, TransportInfo } from '../signaling/protocol.js';
import { RingbridgeError } from './errors.js';
import type { AudioTrack, CallStats } from './types.js';

/** @internal Sends one protocol request (the client's signaling). */
export type Requester = <T extends RequestType>(type: T, data: RequestData<T>) => Promise<ResponseData[T]>;

/** @internal What a CallMedia needs from its owner. */
export interface CallMediaOptions {
  callId: string;
  /** A loaded Device (shared by the calls of one router capability set). */
  device: Device;
  offer: MediaOffer;
  request: Requester;
  /** A transport's connection state changed. */
  onTransportState: (direction: 'send' | 'recv', state: msc.ConnectionState) => void;
}

/** The report a transport's getStats() resolves with (an RTCStatsReport: a Map of stats by id). */
interface StatsReportLike {
  forEach(cb: (stat: Record<string, unknown>) => void): void;
}

/** @internal The media of one call. Create with CallMedia.create(); close() is idempotent. */
export class CallMedia {
  readonly #callId: string;
  readonly #device: Device;
  readonly #request: Requester;
  readonly #send: msc.Transport;
  readonly #recv: msc.Transport;
  #producer: msc.Producer | undefined;
  #consumer: msc.Consumer | undefined;
  #closed = false;

  private constructor(opts: CallMediaOptions) {
    this.#callId = opts.callId;
    this.#device = opts.device;
    this.#request = opts.request;
    this.#send = opts.device.createSendTransport(transportOptions(opts.offer.sendTransport));
    try {
      this.#recv = opts.device.createRecvTransport(transportOptions(opts.offer.recvTransport));
    } catch (err) {
      this.#send.close();
      throw err;
    }
    for (const transport of [this.#send, this.#recv]) {
      this.#wire(transport, opts.onTransportState);
    }
  }

  /**
   * Creates both transports from the offer (no request is sent until the first produce/consume).
   * @throws {RingbridgeError} LOCAL_MEDIA when mediasoup-client refuses the transport parameters
   */
  static create(opts: CallMediaOptions): CallMedia {
    try {
      return new CallMedia(opts);
    } catch (err) {
      throw new RingbridgeError('LOCAL_MEDIA', `cannot create the call's transports: ${(err as Error).message}`, { callId: opts.callId, cause: err });
    }
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the local producer exists. */
  get producing(): boolean {
    return this.#producer !== undefined;
  }

  /** Whether the consumer of the trunk's audio exists. */
  get consuming(): boolean {
    return this.#consumer !== undefined;
  }

  /** The agent's track being sent, once produced. */
  get localTrack(): AudioTrack | undefined {
    return (this.#producer?.track ?? undefined) as AudioTrack | undefined;
  }

  /** The trunk's audio, once consumed. */
  get remoteTrack(): AudioTrack | undefined {
    return this.#consumer?.track as AudioTrack | undefined;
  }

  /**
   * Sends `track` with exactly the call's codec (the gateway accepts no other).
   * @throws {RingbridgeError} LOCAL_MEDIA when this device cannot send the codec; the media.connect/media.produce error
   */
  async produce(track: AudioTrack, codec: CallCodec, paused: boolean): Promise<void> {
    this.#assertOpen();
    const capability = matchCodec(this.#device.sendRtpCapabilities, codec);
    if (!capability) {
      throw new RingbridgeError('LOCAL_MEDIA', `this device cannot send ${codecName(codec)}`, { callId: this.#callId });
    }
    let producer: msc.Producer;
    try {
      const options: msc.ProducerOptions = { codec: capability, stopTracks: true, zeroRtpOnPause: false };
      // the DOM's MediaStreamTrack type is not part of this compilation: attach the track untyped
      Object.assign(options, { track });
      producer = await this.#send.produce(options);
    } catch (err) {
      throw mediaError(err, this.#callId, 'cannot produce the audio track');
    }
    if (this.#closed) {
      producer.close();
      throw new RingbridgeError('INVALID_STATE', 'the call ended while its audio was being set up', { callId: this.#callId });
    }
    this.#producer = producer;
    if (paused) {
      producer.pause();
    }
  }

  /**
   * Consumes the trunk's audio: media.consume, then the local consumer, then media.resume.
   * @throws {RingbridgeError} the media.consume/media.connect/media.resume error, or LOCAL_MEDIA
   */
  async consume(): Promise<AudioTrack> {
    this.#assertOpen();
    const res = await this.#request('media.consume', { callId: this.#callId, rtpCapabilities: this.#device.recvRtpCapabilities });
    let consumer: msc.Consumer;
    try {
      consumer = await this.#recv.consume({
        id: res.consumerId,
        producerId: res.producerId,
        kind: 'audio',
        rtpParameters: res.rtpParameters as msc.RtpParameters,
      });
    } catch (err) {
      throw mediaError(err, this.#callId, 'cannot consume the trunk audio');
    }
    if (this.#closed) {
      consumer.close();
      throw new RingbridgeError('INVALID_STATE', 'the call ended while its audio was being set up', { callId: this.#callId });
    }
    this.#consumer = consumer;
    await this.#request('media.resume', { callId: this.#callId, consumerId: res.consumerId });

    return consumer.track as AudioTrack;
  }

  /**
   * The gateway changed what this agent hears (`call.reconsume`, an attended transfer's
   * consultation starting or ending): closes the consumer and consumes again.
   * @throws {RingbridgeError} as consume()
   */
  async reconsume(): Promise<AudioTrack> {
    this.#assertOpen();
    this.#consumer?.close();
    this.#consumer = undefined;

    return this.consume();
  }

  /**
   * Pauses or resumes the local producer (no request: the client tells the gateway). Pausing
   * disables the track, so only silence leaves this device; RTP keeps flowing (no renegotiation)
   * and the gateway stops forwarding it.
   */
  setSending(sending: boolean): void {
    const p = this.#producer;
    if (!p || p.closed) {
      return;
    }
    if (sending && p.paused) {
      p.resume();
    } else if (!sending && !p.paused) {
      p.pause();
    }
  }

  /** RTP counters of both transports' peer connections (`inbound-rtp`, `outbound-rtp`). */
  async getStats(): Promise<CallStats> {
    const stats: CallStats = {
      packetsReceived: 0,
      bytesReceived: 0,
      packetsLost: 0,
      jitter: 0,
      roundTripTime: undefined,
      packetsSent: 0,
      bytesSent: 0,
      sendTransportState: this.#send.connectionState,
      recvTransportState: this.#recv.connectionState,
    };
    let rtcpRtt: number | undefined;
    let icePairRtt: number | undefined;
    for (const transport of [this.#send, this.#recv]) {
      if (transport.closed) {
        continue;
      }
      const report = (await transport.getStats()) as unknown as StatsReportLike;
      report.forEach((s) => {
        if (s.type === 'remote-inbound-rtp' && typeof s.roundTripTime === 'number') {
          rtcpRtt = Math.max(rtcpRtt ?? 0, s.roundTripTime);
        } else if (s.type === 'candidate-pair' && s.nominated === true && typeof s.currentRoundTripTime === 'number') {
          icePairRtt = Math.max(icePairRtt ?? 0, s.currentRoundTripTime);
        }
        if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) !== 'video') {
          stats.packetsReceived += num(s.packetsReceived);
          stats.bytesReceived += num(s.bytesReceived);
          stats.packetsLost += num(s.packetsLost);
          stats.jitter = Math.max(stats.jitter, num(s.jitter));
        } else if (s.type === 'outbound-rtp' && (s.kind ?? s.mediaType) !== 'video') {
          stats.packetsSent += num(s.packetsSent);
          stats.bytesSent += num(s.bytesSent);
        }
      });
    }
    stats.roundTripTime = rtcpRtt ?? icePairRtt;

    return stats;
  }

  /** Closes the producer, the consumer and both transports. Idempotent. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#producer?.close();
    this.#consumer?.close();
    this.#send.close();
    this.#recv.close();
  }

  #wire(transport: msc.Transport, onState: CallMediaOptions['onTransportState']): void {
    const callId = this.#callId;
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.#request('media.connect', { callId, transportId: transport.id, dtlsParameters }).then(
        () => callback(),
        (err: unknown) => errback(err as Error),
      );
    });
    transport.on('produce', ({ kind, rtpParameters }, callback, errback) => {
      if (kind !== 'audio') {
        errback(new RingbridgeError('LOCAL_MEDIA', `only audio can be produced, not ${kind}`, { callId }));

        return;
      }
      this.#request('media.produce', { callId, transportId: transport.id, kind: 'audio', rtpParameters }).then(
        ({ producerId }) => callback({ id: producerId }),
        (err: unknown) => errback(err as Error),
      );
    });
    transport.on('connectionstatechange', (state) => onState(transport.direction, state));
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new RingbridgeError('INVALID_STATE', 'the call has ended', { callId: this.#callId });
    }
  }
}

/** The device codec to force for a call codec: same MIME type (case-insensitive), clock rate and channels. */
export function matchCodec(caps: msc.RtpCapabilities, codec: CallCodec): msc.RtpCodecCapability | undefined {
  const mime = normaliseMime(codec.mimeType);

  return caps.codecs?.find(
    (c) => c.mimeType.toLowerCase() === mime && c.clockRate === codec.clockRate && (codec.channels === undefined || (c.channels ?? 1) === codec.channels),
  );
}

/** 'PCMU' or 'audio/PCMU' → 'audio/pcmu'. */
function normaliseMime(mimeType: string): string {
  const m = mimeType.toLowerCase();

  return m.includes('/') ? m : `audio/${m}`;
}

function codecName(codec: CallCodec): string {
  return `${codec.mimeType}/${codec.clockRate}${codec.channels ? `/${codec.channels}` : ''}`;
}

function transportOptions(info: TransportInfo): msc.TransportOptions {
  return {
    id: info.id,
    iceParameters: info.iceParameters as msc.IceParameters,
    iceCandidates: info.iceCandidates as msc.IceCandidate[],
    dtlsParameters: info.dtlsParameters as msc.DtlsParameters,
  };
}

function mediaError(err: unknown, callId: string, context: string): RingbridgeError {
  if (err instanceof RingbridgeError) {
    return err;
  }

  return new RingbridgeError('LOCAL_MEDIA', `${context}: ${(err as Error).message}`, { callId, cause: err });
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}
