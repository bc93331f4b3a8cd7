/**
 * The audio codecs ringbridge negotiates on trunks, their SDP names and RTP clocks, and the RFC 3551
 * static payload types (for m= formats listed without a=rtpmap).
 */
import { TRUNK_CODEC_NAMES, type TrunkCodecName } from '../../media/codecs.js';

/** What the SDP module knows of one trunk codec. */
export interface CodecInfo {
  name: TrunkCodecName;
  /** Encoding name as we write it in a=rtpmap (matched case-insensitively, RFC 4855 §3). */
  encodingName: string;
  /** RTP clock rate (8000 for G.722 too, RFC 3551 §4.5.2; 48000 for Opus, RFC 7587 §7). */
  clockRate: number;
  /** Channels in a=rtpmap (Opus is always written /2, RFC 7587 §7). */
  channels: number;
  /** Payload type in our offers: the static one (RFC 3551 table 4) or our dynamic choice. */
  offerPayloadType: number;
  /** a=fmtp we write for it (what we want to receive), if any. */
  fmtp?: string;
}

/** ringbridge's trunk codecs. */
export const CODEC_INFO: ReadonlyMap<TrunkCodecName, CodecInfo> = new Map<TrunkCodecName, CodecInfo>([
  ['PCMU', { name: 'PCMU', encodingName: 'PCMU', clockRate: 8000, channels: 1, offerPayloadType: 0 }],
  ['PCMA', { name: 'PCMA', encodingName: 'PCMA', clockRate: 8000, channels: 1, offerPayloadType: 8 }],
  ['G722', { name: 'G722', encodingName: 'G722', clockRate: 8000, channels: 1, offerPayloadType: 9 }],
  ['opus', { name: 'opus', encodingName: 'opus', clockRate: 48000, channels: 2, offerPayloadType: 111, fmtp: 'useinbandfec=1' }],
]);

/** telephone-event (RFC 4733): the payload types of our offers per clock, and the events we accept. */
export const TELEPHONE_EVENT = {
  encodingName: 'telephone-event',
  /** DTMF 0-9, *, #, A-D and flash (RFC 4733 §7.1.1 default set plus 16). */
  fmtp: '0-16',
  offerPayloadTypes: { 8000: 101, 48000: 110 } as Readonly<Record<number, number>>,
} as const;

/** The telephone-event clock rates the router handles (src/media/codecs.ts). */
export const TELEPHONE_EVENT_CLOCKS: readonly number[] = [8000, 48000];

/** RFC 3551 table 4 and 5: static payload types, used when a format has no a=rtpmap. */
export const STATIC_PAYLOAD_TYPES: ReadonlyMap<number, { encodingName: string; clockRate: number; channels?: number }> = new Map([
  [0, { encodingName: 'PCMU', clockRate: 8000, channels: 1 }],
  [3, { encodingName: 'GSM', clockRate: 8000, channels: 1 }],
  [4, { encodingName: 'G723', clockRate: 8000, channels: 1 }],
  [5, { encodingName: 'DVI4', clockRate: 8000, channels: 1 }],
  [6, { encodingName: 'DVI4', clockRate: 16000, channels: 1 }],
  [7, { encodingName: 'LPC', clockRate: 8000, channels: 1 }],
  [8, { encodingName: 'PCMA', clockRate: 8000, channels: 1 }],
  [9, { encodingName: 'G722', clockRate: 8000, channels: 1 }],
  [10, { encodingName: 'L16', clockRate: 44100, channels: 2 }],
  [11, { encodingName: 'L16', clockRate: 44100, channels: 1 }],
  [12, { encodingName: 'QCELP', clockRate: 8000, channels: 1 }],
  [13, { encodingName: 'CN', clockRate: 8000, channels: 1 }],
  [14, { encodingName: 'MPA', clockRate: 90000 }],
  [15, { encodingName: 'G728', clockRate: 8000, channels: 1 }],
  [16, { encodingName: 'DVI4', clockRate: 11025, channels: 1 }],
  [17, { encodingName: 'DVI4', clockRate: 22050, channels: 1 }],
  [18, { encodingName: 'G729', clockRate: 8000, channels: 1 }],
  [25, { encodingName: 'CelB', clockRate: 90000 }],
  [26, { encodingName: 'JPEG', clockRate: 90000 }],
  [28, { encodingName: 'nv', clockRate: 90000 }],
  [31, { encodingName: 'H261', clockRate: 90000 }],
  [32, { encodingName: 'MPV', clockRate: 90000 }],
  [33, { encodingName: 'MP2T', clockRate: 90000 }],
  [34, { encodingName: 'H263', clockRate: 90000 }],
]);

/** Whether a value (from configuration or a JS caller) names a trunk codec, exactly as spelled. */
export function isTrunkCodecName(value: unknown): value is TrunkCodecName {
  return typeof value === 'string' && (TRUNK_CODEC_NAMES as readonly string[]).includes(value);
}

/**
 * The mediasoup/MIME type of a codec: `audio/PCMU`, `audio/PCMA`, `audio/G722`, `audio/opus`,
 * `audio/telephone-event`.
 * @throws {TypeError} for any other name
 */
export function mimeTypeOf(name: TrunkCodecName | 'telephone-event'): string {
  if (name === 'telephone-event') {
    return 'audio/telephone-event';
  }
  const info = isTrunkCodecName(name) ? CODEC_INFO.get(name) : undefined;
  if (!info) {
    throw new TypeError(`unknown codec name ${JSON.stringify(name)}; expected one of ${TRUNK_CODEC_NAMES.join(', ')}, telephone-event`);
  }

  return `audio/${info.encodingName}`;
}

/** What identifies an RTP payload format (RFC 4566 §6 a=rtpmap). */
export interface FormatIdentity {
  encodingName?: string | undefined;
  clockRate?: number | undefined;
  channels?: number | undefined;
}

/**
 * The trunk codec a payload format is, or undefined: the encoding name (any case), the clock rate
 * and the channels must be ours (G.711/G.722 mono with channels absent or 1; Opus 48000/2 only).
 */
export function codecOfFormat(format: FormatIdentity): TrunkCodecName | undefined {
  const enc = format.encodingName?.toLowerCase();
  if (enc === undefined) {
    return undefined;
  }
  for (const info of CODEC_INFO.values()) {
    if (info.encodingName.toLowerCase() === enc && format.clockRate === info.clockRate && (format.channels ?? 1) === info.channels) {
      return info.name;
    }
  }

  return undefined;
}

/** Whether a payload format is telephone-event (any clock; mono). */
export function isTelephoneEvent(format: FormatIdentity): boolean {
  return format.encodingName?.toLowerCase() === 'telephone-event' && (format.channels ?? 1) === 1 && format.clockRate !== undefined;
}

/** `PCMU/8000`, `opus/48000/2`, `?` for an unknown format: for reasons and logs. */
export function describeFormat(format: FormatIdentity & { payloadType?: number }): string {
  if (format.encodingName === undefined) {
    return format.payloadType === undefined ? '?' : `PT ${format.payloadType}`;
  }

  return `${format.encodingName}/${format.clockRate ?? '?'}${format.channels !== undefined && format.channels !== 1 ? `/${format.channels}` : ''}`;
}
