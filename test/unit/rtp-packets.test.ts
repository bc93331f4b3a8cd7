/**
 * The RTP relay's packet helpers on hand-built packets laid out as in the RFCs: RTP headers
 * (RFC 3550 §5.1, §5.3.1), RTCP compound packets and their SSRC rewriting (RFC 3550 §6, RFC 4585
 * §6, RFC 5104 §4, RFC 3611), RTP/RTCP demultiplexing (RFC 5761 §4) and RFC 4733 event payloads.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildRtpPacket, parseRtpHeader, rtpHeaderLength, rtpPaddingLength } from '../../src/media/rtp/rtp-packet.js';
import { isRtcpPacketType, isValidRtcp, RTCP_NO_REWRITE, rewriteRtcp, type RtcpRewrite } from '../../src/media/rtp/rtcp-packet.js';
import { dtmfDigit, dtmfEventCode, readTelephoneEvent, writeTelephoneEvent } from '../../src/media/rtp/telephone-event.js';

/** Bytes from hex text; spaces, newlines and `|` separators are ignored. */
function hex(text: string): Buffer {
  return Buffer.from(text.replace(/[\s|]/g, ''), 'hex');
}

const A = 0x11111111; // the trunk's SSRC
const P = 0x22222222; // the producer SSRC mediasoup knows
const C = 0x33333333; // the consumer SSRC toward the trunk

function rw(o: Partial<RtcpRewrite>): RtcpRewrite {
  return { ...RTCP_NO_REWRITE, ...o };
}

describe('RTP header (RFC 3550 §5.1)', () => {
  // V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq 0x1234 | ts 0x000000a0 | SSRC 0xdeadbeef | 4 payload bytes
  const minimal = hex('80 80 1234 | 000000a0 | deadbeef | ff fe fd fc');

  it('parses the fixed header and finds the payload after 12 bytes', () => {
    expect(rtpHeaderLength(minimal)).toBe(12);
    expect(parseRtpHeader(minimal)).toEqual({
      padding: false,
      marker: true,
      payloadType: 0,
      sequenceNumber: 0x1234,
      timestamp: 0xa0,
      ssrc: 0xdeadbeef,
      csrcs: [],
      extension: undefined,
      payloadOffset: 12,
      payloadLength: 4,
      paddingLength: 0,
    });
  });

  it('skips the CSRC list (CC × 4 bytes)', () => {
    const pkt = hex('82 08 0001 | 00000000 | 0000000a | 01010101 | 02020202 | aa bb');
    expect(rtpHeaderLength(pkt)).toBe(20);
    expect(parseRtpHeader(pkt)).toMatchObject({ payloadType: 8, csrcs: [0x01010101, 0x02020202], payloadOffset: 20, payloadLength: 2 });
  });

  it('skips the header extension: 4-byte header plus its length in 32-bit words (§5.3.1)', () => {
    // X=1 CC=1 | extension profile 0xBEDE, length 2 words
    const pkt = hex('91 00 0001 | 00000000 | 0000000a | 01010101 | bede 0002 | 10 ff 00 00 | 21 aa bb 00 | 99');
    expect(rtpHeaderLength(pkt)).toBe(12 + 4 + 4 + 8);
    const h = parseRtpHeader(pkt)!;
    expect(h.extension).toEqual({ profile: 0xbede, data: new Uint8Array(hex('10ff0000 21aabb00')) });
    expect(h.payloadLength).toBe(1);
  });

  it('counts padding from the last octet and leaves it out of the payload', () => {
    // P=1: 3 payload bytes then 5 bytes of padding, the last one being the count
    const pkt = hex('a0 00 0001 | 00000000 | 0000000a | 01 02 03 | 00 00 00 00 05');
    expect(rtpHeaderLength(pkt)).toBe(12);
    expect(rtpPaddingLength(pkt)).toBe(5);
    expect(parseRtpHeader(pkt)).toMatchObject({ padding: true, payloadLength: 3, paddingLength: 5 });
  });

  it.each([
    ['shorter than 12 bytes', '80 00 0001 00000000 000000'],
    ['version 1', '40 00 0001 | 00000000 | 0000000a'],
    ['version 0 (e.g. a STUN message)', '00 01 0000 | 2112a442 | 0000000a'],
    ['a CSRC list past the end', '83 00 0001 | 00000000 | 0000000a | 01010101'],
    ['an extension header past the end', '90 00 0001 | 00000000 | 0000000a | bede'],
    ['extension data past the end', '90 00 0001 | 00000000 | 0000000a | bede 0002 | 00000000'],
    ['a padding count of zero', 'a0 00 0001 | 00000000 | 0000000a | 01 00'],
    ['more padding than bytes after the header', 'a0 00 0001 | 00000000 | 0000000a | 01 09'],
  ])('rejects a packet with %s', (_name, bytes) => {
    expect(rtpHeaderLength(hex(bytes))).toBe(-1);
    expect(parseRtpHeader(hex(bytes))).toBeUndefined();
  });

  it('buildRtpPacket() writes every field where parseRtpHeader() reads it', () => {
    const pkt = buildRtpPacket({
      payloadType: 101,
      marker: true,
      sequenceNumber: 0x1_0005, // wraps to 5
      timestamp: 0xffff_fff0,
      ssrc: 0xcafebabe,
      csrcs: [7, 8],
      extension: { profile: 0x1000, data: new Uint8Array([1, 2, 3, 4]) },
      payload: new Uint8Array([9, 9]),
      padding: 2,
    });
    expect(pkt.subarray(0, 2)).toEqual(hex('b2 e5'));
    expect(parseRtpHeader(pkt)).toEqual({
      padding: true,
      marker: true,
      payloadType: 101,
      sequenceNumber: 5,
      timestamp: 0xffff_fff0,
      ssrc: 0xcafebabe,
      csrcs: [7, 8],
      extension: { profile: 0x1000, data: new Uint8Array([1, 2, 3, 4]) },
      payloadOffset: 12 + 8 + 8,
      payloadLength: 2,
      paddingLength: 2,
    });
    expect(() => buildRtpPacket({ payloadType: 0, sequenceNumber: 0, timestamp: 0, ssrc: 0, extension: { profile: 0, data: new Uint8Array(3) } })).toThrow(RangeError);
  });
});

describe('RTP/RTCP demultiplexing (RFC 5761 §4)', () => {
  it('takes second octets 192–223 (SR…XR and the rest of the RTCP range) as RTCP, RTP payload types with or without marker as RTP', () => {
    for (let pt = 200; pt <= 207; pt++) {
      expect(isRtcpPacketType(pt)).toBe(true);
    }
    expect(isRtcpPacketType(192)).toBe(true);
    expect(isRtcpPacketType(223)).toBe(true);
    // PCMU, PCMA, G722, telephone-event 101, with and without the marker bit
    for (const octet of [0, 8, 9, 101, 0x80, 0x88, 0x80 | 101, 0x80 | 127]) {
      expect(isRtcpPacketType(octet)).toBe(false);
    }
  });
});

describe('RTCP SSRC rewriting (RFC 3550 §6)', () => {
  // SR (§6.4.1): V=2 P=0 RC=1, PT=200, length 12 (words - 1); sender SSRC A; NTP; RTP ts; counts;
  // one report block about C: fraction/cumulative lost, ext. highest seq 0x00010005, jitter, LSR, DLSR
  const sr = () =>
    hex(`81 c8 000c | 11111111 | e8a1b2c3 d4e5f607 | 00001000 | 00000064 | 00003e80
         33333333 | 05 000002 | 00010005 | 00000010 | b2c3d4e5 | 00001000`);

  it('SR: the sender SSRC and the RTP timestamp follow the relay (sender rewrite)', () => {
    const pkt = sr();
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P, srTimestampDelta: 0x100 }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(P);
    expect(pkt.readUInt32BE(16)).toBe(0x1100); // RTP timestamp + 0x100
    expect(pkt.readUInt32BE(8)).toBe(0xe8a1b2c3); // NTP untouched
    expect(pkt.readUInt32BE(28)).toBe(C); // the report block is about another source
  });

  it('SR: a report block about a source follows the relay (source rewrite, extended sequence shifted)', () => {
    const pkt = sr();
    expect(rewriteRtcp(pkt, rw({ sourceFrom: C, sourceTo: A, extSeqDelta: -10 }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(A);
    expect(pkt.readUInt32BE(28)).toBe(A);
    expect(pkt.readUInt32BE(36)).toBe(0x0000fffb); // 0x00010005 - 10 crosses a cycle back
    expect(pkt.readUInt32BE(44)).toBe(0xb2c3d4e5); // LSR untouched
  });

  it('report block: an extended sequence number shifted below zero lands in the first cycle with the right low 16 bits', () => {
    const pkt = sr();
    pkt.writeUInt32BE(11, 36);
    expect(rewriteRtcp(pkt, rw({ sourceFrom: C, sourceTo: A, extSeqDelta: -15547 }))).toBe(1);
    expect(pkt.readUInt32BE(36)).toBe(50000); // 11 - 15547 + 65536
  });

  it('RR (§6.4.2): sender and report blocks', () => {
    const pkt = hex(`82 c9 000d | 22222222
                     22222222 | 00 000000 | 00000100 | 00000000 | 00000000 | 00000000
                     44444444 | 00 000000 | 00000100 | 00000000 | 00000000 | 00000000`);
    expect(rewriteRtcp(pkt, rw({ senderFrom: P, senderTo: A, sourceFrom: P, sourceTo: A, extSeqDelta: 5 }))).toBe(2);
    expect([pkt.readUInt32BE(4), pkt.readUInt32BE(8), pkt.readUInt32BE(32)]).toEqual([A, A, 0x44444444]);
    expect(pkt.readUInt32BE(16)).toBe(0x105);
    expect(pkt.readUInt32BE(40)).toBe(0x100);
  });

  it('SDES (§6.5): each chunk SSRC, items walked to the null octet and 32-bit boundary', () => {
    // chunk 1: SSRC A, CNAME "ab" (2+2 bytes), null + 3 pad → 12 bytes; chunk 2: SSRC B, NAME "xyz" (2+3) + null + 2 pad → 12 bytes
    const pkt = hex(`82 ca 0006 | 11111111 | 01 02 6162 | 00 000000 | 55555555 | 02 03 78797a | 00 0000`);
    expect(rewriteRtcp(pkt, rw({ senderFrom: 0x55555555, senderTo: P }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(A);
    expect(pkt.readUInt32BE(16)).toBe(P);
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(P);
  });

  it('SDES: items ending on a boundary still need a whole word of nulls', () => {
    // CNAME of 6 bytes: 2 + 6 = 8 bytes of items exactly, then 4 null bytes
    const ok = hex(`81 ca 0004 | 11111111 | 01 06 616263646566 | 00000000`);
    expect(isValidRtcp(ok)).toBe(true);
    const noNull = hex(`81 ca 0003 | 11111111 | 01 06 616263646566`);
    expect(isValidRtcp(noNull)).toBe(false);
  });

  it('BYE (§6.6): every SSRC in the list, the reason left alone', () => {
    const pkt = hex(`82 cb 0003 | 11111111 | 66666666 | 03 627965`); // reason "bye"
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(1);
    expect([pkt.readUInt32BE(4), pkt.readUInt32BE(8)]).toEqual([P, 0x66666666]);
    expect(pkt.subarray(13).toString('latin1')).toBe('bye');
  });

  it('APP (§6.7): the SSRC, name and data kept', () => {
    const pkt = hex(`80 cc 0003 | 11111111 | 54455354 | 01020304`); // name "TEST"
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(P);
    expect(pkt.subarray(8, 12).toString('latin1')).toBe('TEST');
  });

  it('RTPFB NACK (RFC 4585 §6.2.1): sender and media source', () => {
    const pkt = hex(`81 cd 0003 | 22222222 | 33333333 | 0010 0003`);
    expect(rewriteRtcp(pkt, rw({ sourceFrom: C, sourceTo: A }))).toBe(1);
    expect([pkt.readUInt32BE(4), pkt.readUInt32BE(8)]).toEqual([P, A]);
    expect(rewriteRtcp(pkt, rw({ senderFrom: P, senderTo: A }))).toBe(1);
    expect(pkt.readUInt32BE(4)).toBe(A);
  });

  it('RTPFB TMMBR (RFC 5104 §4.2.1): the SSRC of every FCI entry', () => {
    const pkt = hex(`83 cd 0004 | 22222222 | 00000000 | 22222222 | 04 0a 0028`);
    expect(rewriteRtcp(pkt, rw({ sourceFrom: P, sourceTo: A }))).toBe(1);
    expect(pkt.readUInt32BE(12)).toBe(A);
    expect(isValidRtcp(hex(`83 cd 0003 | 22222222 | 00000000 | 22222222`))).toBe(false); // 4-byte FCI, not 8
  });

  it('PSFB PLI (RFC 4585 §6.3.1), FIR (RFC 5104 §4.3.1) and REMB', () => {
    const pli = hex(`81 ce 0002 | 11111111 | 22222222`);
    expect(rewriteRtcp(pli, rw({ sourceFrom: P, sourceTo: A }))).toBe(1);
    expect(pli.readUInt32BE(8)).toBe(A);
    const fir = hex(`84 ce 0004 | 11111111 | 00000000 | 22222222 | 07 000000`);
    expect(rewriteRtcp(fir, rw({ sourceFrom: P, sourceTo: A }))).toBe(1);
    expect(fir.readUInt32BE(12)).toBe(A);
    // REMB: "REMB", num SSRC 2, BR exp/mantissa, then the SSRC list
    const remb = hex(`8f ce 0006 | 11111111 | 00000000 | 52454d42 | 02 0a 1234 | 22222222 | 77777777`);
    expect(rewriteRtcp(remb, rw({ sourceFrom: P, sourceTo: A }))).toBe(1);
    expect([remb.readUInt32BE(20), remb.readUInt32BE(24)]).toEqual([A, 0x77777777]);
    const shortRemb = hex(`8f ce 0005 | 11111111 | 00000000 | 52454d42 | 03 0a 1234 | 22222222`);
    expect(isValidRtcp(shortRemb)).toBe(false);
  });

  it('XR (RFC 3611): sender, DLRR sub-blocks and VoIP metrics source; RRT carries none', () => {
    const pkt = hex(`80 cf 000b | 11111111
                     04 00 0002 | e8a1b2c3 d4e5f607
                     05 00 0003 | 22222222 | 00001000 | 00000010
                     07 00 0002 | 22222222 | 01020304`);
    // the counts check the walk: RRT 12 bytes, DLRR 16, VoIP metrics (truncated to 12 to keep the test small)
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(1);
    expect(rewriteRtcp(pkt, rw({ sourceFrom: P, sourceTo: A }))).toBe(2);
    expect([pkt.readUInt32BE(4), pkt.readUInt32BE(24), pkt.readUInt32BE(40)]).toEqual([P, A, A]);
    expect(pkt.readUInt32BE(12)).toBe(0xe8a1b2c3);
  });

  it('a compound SR + SDES + BYE, with padding on the last packet', () => {
    const pkt = Buffer.concat([
      sr(),
      hex(`81 ca 0003 | 11111111 | 01 02 6162 | 00 000000`),
      // BYE with P set: one SSRC, then 4 bytes of padding (count 4)
      hex(`a1 cb 0002 | 11111111 | 00000004`),
    ]);
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(3);
    expect([pkt.readUInt32BE(4), pkt.readUInt32BE(56), pkt.readUInt32BE(72)]).toEqual([P, P, P]);
  });

  it('passes other RTCP packet types through untouched', () => {
    const pkt = hex(`80 d0 0001 | 11111111`); // PT 208
    expect(rewriteRtcp(pkt, rw({ senderFrom: A, senderTo: P }))).toBe(0);
    expect(pkt.readUInt32BE(4)).toBe(A);
  });

  it.each([
    ['empty', ''],
    ['a 3-byte datagram', '81 c8 00'],
    ['version 1', '41 c9 0001 | 11111111'],
    ['a packet type outside 192–223 (RTP)', '80 00 0001 | 11111111'],
    ['a length past the datagram', '81 c9 0007 | 11111111'],
    ['bytes after the last packet', '80 c9 0001 | 11111111 | 00'],
    ['an SR too short for its report block', '81 c8 0006 | 11111111 | e8a1b2c3 d4e5f607 | 00001000 | 00000064 | 00003e80'],
    ['an RR too short for its report block', '81 c9 0001 | 11111111'],
    ['SDES items past the packet', '81 ca 0002 | 11111111 | 01 09 6162'],
    ['an SDES chunk missing', '82 ca 0003 | 11111111 | 01 02 6162 | 00 000000'],
    ['a BYE list longer than the packet', '83 cb 0002 | 11111111 | 22222222'],
    ['an APP without its name', '80 cc 0001 | 11111111'],
    ['a feedback packet without media source', '81 cd 0001 | 22222222'],
    ['an XR block past the packet', '80 cf 0003 | 11111111 | 05 00 0004 | 22222222'],
    ['a DLRR that is not whole sub-blocks', '80 cf 0003 | 11111111 | 05 00 0001 | 22222222'],
    ['a padding count of 0', 'a0 c9 0001 | 11111100'],
    ['a padding count larger than the packet', 'a0 c9 0001 | 11111109'],
  ])('rejects %s (returns -1, never throws)', (_name, bytes) => {
    expect(rewriteRtcp(hex(bytes), rw({ senderFrom: A, senderTo: P, sourceFrom: C, sourceTo: A }))).toBe(-1);
  });

  it('rejects every truncation of a compound packet that does not end on a packet boundary', () => {
    const whole = Buffer.concat([sr(), hex(`81 ca 0003 | 11111111 | 01 02 6162 | 00 000000`), hex(`81 cb 0001 | 11111111`)]);
    const boundaries = new Set([52, 52 + 16, whole.length]);
    for (let len = 0; len < whole.length; len++) {
      expect(isValidRtcp(Buffer.from(whole.subarray(0, len))), `length ${len}`).toBe(boundaries.has(len));
    }
  });

  it('never throws on arbitrary bytes, with or without an RTCP-looking first word', () => {
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.tuple(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 192, max: 223 }), fc.integer({ min: 0, max: 60 }), fc.uint8Array({ maxLength: 200 })).map(
        ([count, pt, words, rest]) => new Uint8Array([0x80 | count, pt, words >> 8, words & 0xff, ...rest]),
      ),
    );
    fc.assert(
      fc.property(arb, (bytes) => {
        const r = rewriteRtcp(Buffer.from(bytes), rw({ senderFrom: A, senderTo: P, sourceFrom: P, sourceTo: A, extSeqDelta: 3, srTimestampDelta: 7 }));
        expect(r).toBeGreaterThanOrEqual(-1);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('RFC 4733 telephone-event payload (§2.3)', () => {
  it('encodes event, E bit, volume and duration as laid out in §2.3', () => {
    const buf = Buffer.alloc(6);
    writeTelephoneEvent(buf, 2, { event: 11, end: true, volume: 10, duration: 800 });
    expect(buf).toEqual(hex('0000 | 0b 8a 0320'));
    expect(() => writeTelephoneEvent(buf, 3, { event: 1, end: false, volume: 0, duration: 0 })).toThrow(RangeError);
  });

  it('decodes a captured event packet (sipp dtmf_2833_1.pcap: key 1, end, volume 10, duration 2240)', () => {
    const pkt = hex('80 65 1f37 | 000033e0 | 0e05384e | 01 8a 08c0');
    const hl = rtpHeaderLength(pkt);
    expect(readTelephoneEvent(pkt, hl)).toEqual({ event: 1, end: true, volume: 10, duration: 2240 });
    expect(readTelephoneEvent(pkt, hl + 1)).toBeUndefined();
    expect(readTelephoneEvent(pkt, hl, pkt.length - 1)).toBeUndefined();
  });

  it('maps DTMF keys to event codes 0–15 and back (§3.2)', () => {
    expect([...'0123456789*#ABCD'].map(dtmfEventCode)).toEqual([...Array(16).keys()]);
    expect(dtmfEventCode('d')).toBe(15);
    expect(dtmfEventCode('E')).toBe(-1);
    expect(dtmfEventCode('12')).toBe(-1);
    expect(dtmfDigit(11)).toBe('#');
    expect(dtmfDigit(10)).toBe('*');
    expect(dtmfDigit(16)).toBeUndefined(); // flash is not a key
  });
});
