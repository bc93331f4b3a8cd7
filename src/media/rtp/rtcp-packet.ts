/**
 * RTCP compound packets (RFC 3550 §6): a bounds-checked walk over SR, RR, SDES, BYE and APP
 * (RFC 3550 §6.4–6.7), transport-layer and payload-specific feedback (RTPFB/PSFB, RFC 4585 §6,
 * RFC 5104 §4) and extended reports (XR, RFC 3611), rewriting the SSRCs a relay must translate,
 * in place.
 *
 * A relay that gives a stream a new SSRC (and shifts its sequence numbers and timestamps) has to
 * translate the RTCP about that stream both ways:
 *  - where an SSRC names the *sender* of an RTCP packet or a source it describes (SR/RR sender,
 *    SDES chunk, BYE, APP, feedback sender, XR sender), see {@link RtcpRewrite.senderFrom};
 *  - where an SSRC names the *reported-on* source (SR/RR report blocks, feedback media source and
 *    FCI entries, XR report blocks), see {@link RtcpRewrite.sourceFrom}.
 * Nothing here allocates; a malformed compound packet makes {@link rewriteRtcp} return -1 (the
 * caller drops it) and never throws.
 */

/** RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611 §2). */
export const RTCP_PT = {
  /** Sender report, RFC 3550 §6.4.1. */
  SR: 200,
  /** Receiver report, RFC 3550 §6.4.2. */
  RR: 201,
  /** Source description, RFC 3550 §6.5. */
  SDES: 202,
  /** Goodbye, RFC 3550 §6.6. */
  BYE: 203,
  /** Application-defined, RFC 3550 §6.7. */
  APP: 204,
  /** Transport-layer feedback, RFC 4585 §6.2. */
  RTPFB: 205,
  /** Payload-specific feedback, RFC 4585 §6.3. */
  PSFB: 206,
  /** Extended report, RFC 3611 §2. */
  XR: 207,
} as const;

/** Bytes of an SR/RR report block (RFC 3550 §6.4.1). */
const REPORT_BLOCK_BYTES = 24;

/**
 * Whether the second octet of a packet received on a port shared by RTP and RTCP marks it as RTCP
 * (RFC 5761 §4: RTCP packet types 192–223 occupy the octet where RTP has M and PT 64–95, which RTP
 * must not use when multiplexed; this covers SR…XR, 200–207).
 */
export function isRtcpPacketType(secondOctet: number): boolean {
  return secondOctet >= 192 && secondOctet <= 223;
}

/**
 * What {@link rewriteRtcp} changes. Use -1 in `senderFrom` or `sourceFrom` to leave that kind
 * alone. Relays keep one instance per direction and update it before each call (no allocation
 * per packet).
 */
export interface RtcpRewrite {
  /**
   * SSRC replaced by `senderTo` where it names an RTCP packet's sender or a source being
   * described: SR and RR sender SSRC, SDES chunk SSRC/CSRC, BYE SSRC/CSRC list, APP SSRC, RTPFB
   * and PSFB "SSRC of packet sender", XR sender SSRC. -1 for none.
   */
  senderFrom: number;
  /** Replacement for `senderFrom`. */
  senderTo: number;
  /**
   * Added (mod 2^32) to the RTP timestamp of an SR whose sender SSRC was replaced, so that the
   * NTP↔RTP mapping follows a timestamp offset the relay applies to the stream (RFC 3550 §6.4.1).
   */
  srTimestampDelta: number;
  /**
   * SSRC replaced by `sourceTo` where it names the source reported on: SR/RR report blocks
   * ("SSRC_n"), RTPFB/PSFB "SSRC of media source", TMMBR/TMMBN (RFC 5104 §4.2) and FIR
   * (RFC 5104 §4.3.1) FCI entries, REMB SSRC lists (draft-alvestrand-rmcat-remb), XR loss/
   * duplicate RLE, packet receipt times, statistics summary and VoIP metrics blocks (RFC 3611
   * §4.1–4.3, 4.6, 4.7) and DLRR sub-blocks (§4.5). -1 for none.
   */
  sourceFrom: number;
  /** Replacement for `sourceFrom`. */
  sourceTo: number;
  /**
   * Added to the "extended highest sequence number received" of a report block whose SSRC matched
   * `sourceFrom`, so that it follows a sequence-number offset the relay applies to the stream
   * (RFC 3550 §6.4.1). The low 16 bits come out exact; a result below zero is taken as the
   * first cycle (the relay does not track the other side's cycle count across rebases).
   */
  extSeqDelta: number;
}

/** A rewrite that changes nothing: {@link rewriteRtcp} with it only validates. */
export const RTCP_NO_REWRITE: Readonly<RtcpRewrite> = Object.freeze({
  senderFrom: -1,
  senderTo: 0,
  srTimestampDelta: 0,
  sourceFrom: -1,
  sourceTo: 0,
  extSeqDelta: 0,
});

/**
 * Walks an RTCP compound packet (RFC 3550 §6.1) and rewrites SSRCs in place as `rw` says.
 *
 * Checks, per RFC 3550 A.2 and each type's layout: version 2 in every packet; packet types
 * 192–223; every length within the datagram and the lengths summing to it exactly; padding count
 * non-zero and inside its packet; SR/RR long enough for their report blocks; SDES chunks and
 * items inside the packet, each chunk ended by a null item; BYE long enough for its SSRC list;
 * APP, RTPFB and PSFB at least 12 bytes; FCI and XR blocks inside their packet. Packets of other
 * types in the RTCP range are passed through untouched. Reduced-size RTCP (RFC 5506: a compound
 * that does not start with SR/RR) is accepted.
 * @returns the number of SSRC fields rewritten (≥ 0), or -1 when the packet is malformed (the
 *   buffer may then have been partly rewritten; drop it)
 */
export function rewriteRtcp(buf: Buffer, rw: Readonly<RtcpRewrite>): number {
  const total = buf.length;
  if (total < 4) {
    return -1;
  }
  let n = 0;
  let off = 0;
  while (off < total) {
    if (total - off < 4) {
      return -1;
    }
    const b0 = buf[off]!;
    const pt = buf[off + 1]!;
    if (b0 >> 6 !== 2 || pt < 192 || pt > 223) {
      return -1;
    }
    const count = b0 & 0x1f;
    const next = off + (buf.readUInt16BE(off + 2) + 1) * 4;
    if (next > total) {
      return -1;
    }
    let end = next;
    if ((b0 & 0x20) !== 0) {
      const pad = buf[next - 1]!;
      if (pad === 0 || pad > next - off - 4) {
        return -1;
      }
      end = next - pad;
    }
    let r: number;
    switch (pt) {
      case RTCP_PT.SR:
        r = rewriteSenderReport(buf, off, end, count, rw);
        break;
      case RTCP_PT.RR:
        r = off + 8 + count * REPORT_BLOCK_BYTES > end ? -1 : swapSender(buf, off + 4, rw) + rewriteReportBlocks(buf, off + 8, count, rw);
        break;
      case RTCP_PT.SDES:
        r = rewriteSdes(buf, off, end, count, rw);
        break;
      case RTCP_PT.BYE:
        r = rewriteBye(buf, off, end, count, rw);
        break;
      case RTCP_PT.APP:
        r = off + 12 > end ? -1 : swapSender(buf, off + 4, rw);
        break;
      case RTCP_PT.RTPFB:
      case RTCP_PT.PSFB:
        r = rewriteFeedback(buf, off, end, pt, count, rw);
        break;
      case RTCP_PT.XR:
        r = rewriteXr(buf, off, end, rw);
        break;
      default:
        r = 0;
    }
    if (r < 0) {
      return -1;
    }
    n += r;
    off = next;
  }

  return n;
}

/** Whether `buf` is a well-formed RTCP compound packet (see {@link rewriteRtcp} for the checks). */
export function isValidRtcp(buf: Buffer): boolean {
  return rewriteRtcp(buf, RTCP_NO_REWRITE) >= 0;
}

function swapSender(buf: Buffer, at: number, rw: Readonly<RtcpRewrite>): number {
  if (buf.readUInt32BE(at) !== rw.senderFrom) {
    return 0;
  }
  buf.writeUInt32BE(rw.senderTo >>> 0, at);

  return 1;
}

function swapSource(buf: Buffer, at: number, rw: Readonly<RtcpRewrite>): number {
  if (buf.readUInt32BE(at) !== rw.sourceFrom) {
    return 0;
  }
  buf.writeUInt32BE(rw.sourceTo >>> 0, at);

  return 1;
}

/** SR: sender SSRC at +4, NTP at +8, RTP timestamp at +16, counts, report blocks from +28. */
function rewriteSenderReport(buf: Buffer, off: number, end: number, count: number, rw: Readonly<RtcpRewrite>): number {
  if (off + 28 + count * REPORT_BLOCK_BYTES > end) {
    return -1;
  }
  let n = 0;
  if (swapSender(buf, off + 4, rw) === 1) {
    n = 1;
    if (rw.srTimestampDelta !== 0) {
      buf.writeUInt32BE((buf.readUInt32BE(off + 16) + rw.srTimestampDelta) >>> 0, off + 16);
    }
  }

  return n + rewriteReportBlocks(buf, off + 28, count, rw);
}

/** Report blocks (RFC 3550 §6.4.1): SSRC_n at +0, extended highest sequence number at +8. */
function rewriteReportBlocks(buf: Buffer, at: number, count: number, rw: Readonly<RtcpRewrite>): number {
  let n = 0;
  for (let i = 0; i < count; i++, at += REPORT_BLOCK_BYTES) {
    if (swapSource(buf, at, rw) === 1) {
      n++;
      if (rw.extSeqDelta !== 0) {
        // below zero: the other side's stream is in its first cycle while ours is not (rebased)
        const ext = buf.readUInt32BE(at + 8) + rw.extSeqDelta;
        buf.writeUInt32BE((ext < 0 ? ext + 0x10000 : ext) >>> 0, at + 8);
      }
    }
  }

  return n;
}

/**
 * SDES (RFC 3550 §6.5): `count` chunks, each an SSRC/CSRC then items (type, length, text) ended
 * by a null octet and padded with nulls to the next 32-bit boundary.
 */
function rewriteSdes(buf: Buffer, off: number, end: number, count: number, rw: Readonly<RtcpRewrite>): number {
  let n = 0;
  let p = off + 4;
  for (let c = 0; c < count; c++) {
    if (p + 4 > end) {
      return -1;
    }
    n += swapSender(buf, p, rw);
    p += 4;
    for (;;) {
      if (p >= end) {
        return -1;
      }
      if (buf[p] === 0) {
        // the null item, then nulls up to the next multiple of 4 (packets start 4-aligned)
        p = (p & ~3) + 4;
        break;
      }
      if (p + 2 > end) {
        return -1;
      }
      p += 2 + buf[p + 1]!;
    }
    if (p > end) {
      return -1;
    }
  }

  return n;
}

/** BYE (RFC 3550 §6.6): `count` SSRC/CSRCs from +4, then an optional reason. */
function rewriteBye(buf: Buffer, off: number, end: number, count: number, rw: Readonly<RtcpRewrite>): number {
  if (off + 4 + count * 4 > end) {
    return -1;
  }
  let n = 0;
  for (let i = 0; i < count; i++) {
    n += swapSender(buf, off + 4 + 4 * i, rw);
  }

  return n;
}

/**
 * RTPFB/PSFB (RFC 4585 §6.1): packet sender at +4, media source at +8, FCI from +12. FCI entries
 * that name SSRCs: TMMBR/TMMBN (RTPFB FMT 3/4) and FIR (PSFB FMT 4), 8-byte entries starting with
 * an SSRC; REMB (PSFB FMT 15, "REMB" at +12): an SSRC count at +16, the list from +20.
 */
function rewriteFeedback(buf: Buffer, off: number, end: number, pt: number, fmt: number, rw: Readonly<RtcpRewrite>): number {
  if (off + 12 > end) {
    return -1;
  }
  let n = swapSender(buf, off + 4, rw) + swapSource(buf, off + 8, rw);
  const fci = off + 12;
  if ((pt === RTCP_PT.RTPFB && (fmt === 3 || fmt === 4)) || (pt === RTCP_PT.PSFB && fmt === 4)) {
    if ((end - fci) % 8 !== 0) {
      return -1;
    }
    for (let p = fci; p < end; p += 8) {
      n += swapSource(buf, p, rw);
    }
  } else if (pt === RTCP_PT.PSFB && fmt === 15 && end - fci >= 8 && buf.readUInt32BE(fci) === 0x52454d42 /* "REMB" */) {
    const num = buf[fci + 4]!;
    if (fci + 8 + 4 * num > end) {
      return -1;
    }
    for (let i = 0; i < num; i++) {
      n += swapSource(buf, fci + 8 + 4 * i, rw);
    }
  }

  return n;
}

/**
 * XR (RFC 3611 §2): sender at +4, then report blocks (BT, type-specific, length in words − 1).
 * Blocks 1, 2, 3, 6 and 7 carry the SSRC of the source at +4; DLRR (5) is a list of 12-byte
 * sub-blocks each starting with an SSRC; RRT (4) and unknown blocks carry none.
 */
function rewriteXr(buf: Buffer, off: number, end: number, rw: Readonly<RtcpRewrite>): number {
  if (off + 8 > end) {
    return -1;
  }
  let n = swapSender(buf, off + 4, rw);
  let p = off + 8;
  while (p < end) {
    if (p + 4 > end) {
      return -1;
    }
    const bt = buf[p]!;
    const blockEnd = p + 4 + buf.readUInt16BE(p + 2) * 4;
    if (blockEnd > end) {
      return -1;
    }
    if (bt === 1 || bt === 2 || bt === 3 || bt === 6 || bt === 7) {
      if (p + 8 > blockEnd) {
        return -1;
      }
      n += swapSource(buf, p + 4, rw);
    } else if (bt === 5) {
      if ((blockEnd - p - 4) % 12 !== 0) {
        return -1;
      }
      for (let s = p + 4; s < blockEnd; s += 12) {
        n += swapSource(buf, s, rw);
      }
    }
    p = blockEnd;
  }

  return n;
}
