/**
 * A media plan as mediasoup parameters for the trunk leg's PlainTransport (mediasoup 3.12, a router
 * created with src/media/codecs.ts): the Producer that carries the trunk's RTP into the router and
 * the capabilities with which the trunk consumes the agent's audio.
 *
 * mediasoup Consumers send with the router's payload types, not the trunk's, so the relay maps them
 * with {@link consumerPayloadTypeMap}; Producers take the trunk's numbers as they are.
 */
import { type types as ms } from 'mediasoup';
import { type MediaPlan } from './negotiate.js';

/**
 * The plan's codec and telephone-event as mediasoup codec parameters.
 * @param side `receive`: RTP the remote sends us (our SDP's payload types, for a Producer);
 *   `send`: RTP we send to the remote (its SDP's payload types)
 */
export function toRtpCodecParameters(plan: MediaPlan, side: 'receive' | 'send' = 'receive'): ms.RtpCodecParameters[] {
  const { codec, telephoneEvent: te } = plan;
  const codecs: ms.RtpCodecParameters[] = [
    {
      mimeType: codec.mimeType,
      payloadType: side === 'receive' ? codec.localPayloadType : codec.payloadType,
      clockRate: codec.clockRate,
      channels: codec.channels,
      parameters: { ...codec.parameters },
      rtcpFeedback: [],
    },
  ];
  if (te) {
    codecs.push({
      mimeType: 'audio/telephone-event',
      payloadType: side === 'receive' ? te.localPayloadType : te.payloadType,
      clockRate: te.clockRate,
      channels: 1,
      parameters: {},
      rtcpFeedback: [],
    });
  }

  return codecs;
}

/** Options of toProducerRtpParameters(). */
export interface ProducerRtpOptions {
  /** SSRC of the RTP that reaches mediasoup; default the remote's a=ssrc, else none (mediasoup then needs another way to match the stream). */
  ssrc?: number;
  /** RTCP CNAME; default none (mediasoup picks the transport's). */
  cname?: string;
}

/**
 * RTP parameters for `plainTransport.produce({ kind: 'audio', rtpParameters })`: the trunk's audio
 * with the payload types of our SDP (the ones the trunk sends with).
 */
export function toProducerRtpParameters(plan: MediaPlan, opts: ProducerRtpOptions = {}): ms.RtpParameters {
  const ssrc = opts.ssrc ?? plan.remote.ssrc;

  return {
    codecs: toRtpCodecParameters(plan, 'receive'),
    headerExtensions: [],
    encodings: ssrc === undefined ? [] : [{ ssrc }],
    rtcp: { reducedSize: false, mux: plan.remote.rtcpMux, ...(opts.cname === undefined ? {} : { cname: opts.cname }) },
  };
}

/**
 * The trunk's receive capabilities for `plainTransport.consume({ producerId, rtpCapabilities })`:
 * the plan's codec and telephone-event with the trunk's payload types as preferred ones, no header
 * extensions, no RTCP feedback (RTP/AVP).
 */
export function toRtpCapabilities(plan: MediaPlan): ms.RtpCapabilities {
  const { codec, telephoneEvent: te } = plan;
  const codecs: ms.RtpCodecCapability[] = [
    { kind: 'audio', mimeType: codec.mimeType, preferredPayloadType: codec.payloadType, clockRate: codec.clockRate, channels: codec.channels, parameters: { ...codec.parameters }, rtcpFeedback: [] },
  ];
  if (te) {
    codecs.push({ kind: 'audio', mimeType: 'audio/telephone-event', preferredPayloadType: te.payloadType, clockRate: te.clockRate, channels: 1, parameters: {}, rtcpFeedback: [] });
  }

  return { codecs, headerExtensions: [] };
}

/**
 * For the relay: the payload type of each codec of a Consumer (the router's numbers) → the one
 * the trunk expects (its SDP's), matched by MIME type and clock rate. Codecs the plan does not
 * have are left out.
 */
export function consumerPayloadTypeMap(plan: MediaPlan, consumerRtpParameters: ms.RtpParameters): Map<number, number> {
  const map = new Map<number, number>();
  const wanted = toRtpCodecParameters(plan, 'send');
  for (const c of consumerRtpParameters.codecs) {
    const match = wanted.find((w) => w.mimeType.toLowerCase() === c.mimeType.toLowerCase() && w.clockRate === c.clockRate);
    if (match) {
      map.set(c.payloadType, match.payloadType);
    }
  }

  return map;
}
