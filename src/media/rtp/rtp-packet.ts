/**
 * RTP data packets (RFC 3550 §5.1): validation of the fixed header, CSRC list, header extension
 * (§5.3.1) and padding, and a builder for the few packets ringbridge makes itself (RFC 4733
 * events, tests).
 *
 * The relay's per-packet path only calls {@link rtpHeaderLength} and reads or writes the fixed
 * header fields in place with Buffer's big-endian accessors, so nothing here allocates per packet;
 * {@link parseRtpHeader} and {@link buildRtpPacket} allocate and are meant for the rare paths.
 */

/** The RTP version every packet must carry (RFC 3550 §5.1, field V). */
export const RTP_VERSION = 2;

/** Size of the fixed RTP header, bytes (RFC 3550 §5.1). */
export const RTP_FIXED_HEADER_BYTES = 12;

/** Byte offsets of the fixed header fields (RFC 3550 §5.1). */
export const RTP_OFFSET = {
  /** V(2) P(1) X(1) CC(4) */
  flags: 0,
  /** M(1) PT(7) */
  markerAndPayloadType: 1,
  /** sequence number, uint16 */
  sequenceNumber: 2,
  /** timestamp, uint32 */
  timestamp: 4,
  /** synchronization source, uint32 */
  ssrc: 8,
} as const;

/**
 * Length of the RTP header of `buf` in bytes — fixed header, CSRC list and header extension — that
 * is the offset of the payload; or -1 when `buf` is not an acceptable RTP packet: version other
 * than 2, shorter than 12 bytes, a CSRC list or extension running past the end, or (P set) a
 * padding count of zero or larger than what follows the header (RFC 3550 §5.1, §5.3.1, A.1).
 */
export function rtpHeaderLength(buf: Uint8Array): number {
  const len = buf.length;
  if (len < RTP_FIXED_HEADER_BYTES) {
    return -1;
  }
  const b0 = buf[0]!;
  if (b0 >> 6 !== RTP_VERSION) {
    return -1;
  }
  let hl = RTP_FIXED_HEADER_BYTES + (b0 & 0x0f) * 4;
  if ((b0 & 0x10) !== 0) {
    if (hl + 4 > len) {
      return -1;
    }
    hl += 4 + ((buf[hl + 2]! << 8) | buf[hl + 3]!) * 4;
  }
  if (hl > len) {
    return -1;
  }
  if ((b0 & 0x20) !== 0) {
    const pad = buf[len - 1]!;
    if (pad === 0 || hl + pad > len) {
      return -1;
    }
  }

  return hl;
}

/** Number of padding bytes at the end of an RTP packet already checked by {@link rtpHeaderLength} (0 when P is clear). */
export function rtpPaddingLength(buf: Uint8Array): number {
  return (buf[0]! & 0x20) !== 0 ? buf[buf.length - 1]! : 0;
}

/** The header extension of an RTP packet (RFC 3550 §5.3.1). */
export interface RtpHeaderExtension {
  /** "defined by profile" 16-bit value (0xBEDE for RFC 8285 one-byte headers). */
  profile: number;
  /** Extension data, a multiple of 4 bytes (a copy when parsed). */
  data: Uint8Array;
}

/** An RTP header as parsed by {@link parseRtpHeader}. */
export interface RtpHeader {
  /** P bit. */
  padding: boolean;
  /** M bit. */
  marker: boolean;
  /** PT, 0–127. */
  payloadType: number;
  /** 16-bit sequence number. */
  sequenceNumber: number;
  /** 32-bit timestamp in the payload's clock-rate units. */
  timestamp: number;
  /** 32-bit synchronization source. */
  ssrc: number;
  /** Contributing sources (CC of them). */
  csrcs: number[];
  /** The extension when X is set. */
  extension: RtpHeaderExtension | undefined;
  /** Offset of the payload, bytes (= header length). */
  payloadOffset: number;
  /** Length of the payload without padding, bytes. */
  payloadLength: number;
  /** Padding bytes at the end, including the count octet (0 when P is clear). */
  paddingLength: number;
}

/**
 * Parses an RTP header (allocates; for diagnostics and tests, not for the per-packet path).
 * @returns undefined when {@link rtpHeaderLength} rejects the packet
 */
export function parseRtpHeader(buf: Buffer): RtpHeader | undefined {
  const hl = rtpHeaderLength(buf);
  if (hl < 0) {
    return undefined;
  }
  const b0 = buf[0]!;
  const cc = b0 & 0x0f;
  const csrcs: number[] = [];
  for (let i = 0; i < cc; i++) {
    csrcs.push(buf.readUInt32BE(RTP_FIXED_HEADER_BYTES + 4 * i));
  }
  let extension: RtpHeaderExtension | undefined;
  if ((b0 & 0x10) !== 0) {
    const at = RTP_FIXED_HEADER_BYTES + 4 * cc;
    extension = { profile: buf.readUInt16BE(at), data: new Uint8Array(buf.subarray(at + 4, hl)) };
  }
  const paddingLength = rtpPaddingLength(buf);

  return {
    padding: (b0 & 0x20) !== 0,
    marker: (buf[1]! & 0x80) !== 0,
    payloadType: buf[1]! & 0x7f,
    sequenceNumber: buf.readUInt16BE(RTP_OFFSET.sequenceNumber),
    timestamp: buf.readUInt32BE(RTP_OFFSET.timestamp),
    ssrc: buf.readUInt32BE(RTP_OFFSET.ssrc),
    csrcs,
    extension,
    payloadOffset: hl,
    payloadLength: buf.length - hl - paddingLength,
    paddingLength,
  };
}

/** What {@link buildRtpPacket} puts in a packet. */
export interface RtpPacketInit {
  /** PT, 0–127. */
  payloadType: number;
  /** 16-bit sequence number. */
  sequenceNumber: number;
  /** 32-bit timestamp. */
  timestamp: number;
  /** 32-bit SSRC. */
  ssrc: number;
  /** M bit (default false). */
  marker?: boolean;
  /** Contributing sources, at most 15 (default none). */
  csrcs?: readonly number[];
  /** Header extension; its data length must be a multiple of 4 (default none). */
  extension?: RtpHeaderExtension;
  /** Payload bytes (default empty). */
  payload?: Uint8Array;
  /** Padding bytes to append, 0–255, the last being the count (default 0: P clear). */
  padding?: number;
}

/**
 * Builds an RTP packet (RFC 3550 §5.1).
 * @throws {RangeError} when a field is out of range (more than 15 CSRCs, extension data not a
 *   multiple of 4 bytes, padding above 255)
 */
export function buildRtpPacket(init: RtpPacketInit): Buffer {
  const csrcs = init.csrcs ?? [];
  const ext = init.extension;
  const payload = init.payload ?? new Uint8Array(0);
  const padding = init.padding ?? 0;
  if (csrcs.length > 15) {
    throw new RangeError(`buildRtpPacket: at most 15 CSRCs, got ${csrcs.length}`);
  }
  if (ext && ext.data.length % 4 !== 0) {
    throw new RangeError(`buildRtpPacket: extension data must be a multiple of 4 bytes, got ${ext.data.length}`);
  }
  if (!Number.isInteger(padding) || padding < 0 || padding > 255) {
    throw new RangeError(`buildRtpPacket: padding must be 0..255, got ${padding}`);
  }
  const hl = RTP_FIXED_HEADER_BYTES + 4 * csrcs.length + (ext ? 4 + ext.data.length : 0);
  const buf = Buffer.alloc(hl + payload.length + padding);
  buf[0] = (RTP_VERSION << 6) | (padding > 0 ? 0x20 : 0) | (ext ? 0x10 : 0) | csrcs.length;
  buf[1] = (init.marker ? 0x80 : 0) | (init.payloadType & 0x7f);
  buf.writeUInt16BE(init.sequenceNumber & 0xffff, RTP_OFFSET.sequenceNumber);
  buf.writeUInt32BE(init.timestamp >>> 0, RTP_OFFSET.timestamp);
  buf.writeUInt32BE(init.ssrc >>> 0, RTP_OFFSET.ssrc);
  let at = RTP_FIXED_HEADER_BYTES;
  for (const c of csrcs) {
    buf.writeUInt32BE(c >>> 0, at);
    at += 4;
  }
  if (ext) {
    buf.writeUInt16BE(ext.profile & 0xffff, at);
    buf.writeUInt16BE(ext.data.length / 4, at + 2);
    buf.set(ext.data, at + 4);
    at += 4 + ext.data.length;
  }
  buf.set(payload, at);
  if (padding > 0) {
    buf[buf.length - 1] = padding;
  }

  return buf;
}
