/**
 * The audio codecs every call router offers. ringbridge never transcodes: a trunk leg and an agent
 * leg must share one of these (RFC 3551 static payload types for G.711 and G.722; Opus per
 * RFC 7587; DTMF as telephone-event per RFC 4733 at each clock rate in use).
 */
import { type types as ms } from 'mediasoup';

/** Router media codecs, in order of preference for WebRTC agents. */
export const ROUTER_MEDIA_CODECS: ms.RtpCodecCapability[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, parameters: { useinbandfec: 1, usedtx: 1 } },
  { kind: 'audio', mimeType: 'audio/PCMU', clockRate: 8000, preferredPayloadType: 0 },
  { kind: 'audio', mimeType: 'audio/PCMA', clockRate: 8000, preferredPayloadType: 8 },
  // G.722's RTP clock rate is 8000 although it samples at 16 kHz (RFC 3551 section 4.5.2).
  { kind: 'audio', mimeType: 'audio/G722', clockRate: 8000, preferredPayloadType: 9 },
  { kind: 'audio', mimeType: 'audio/telephone-event', clockRate: 8000 },
  { kind: 'audio', mimeType: 'audio/telephone-event', clockRate: 48000 },
];

/** Codec names a trunk may be limited to in configuration. */
export const TRUNK_CODEC_NAMES = ['PCMU', 'PCMA', 'G722', 'opus'] as const;
export type TrunkCodecName = (typeof TRUNK_CODEC_NAMES)[number];
