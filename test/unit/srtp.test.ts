/**
 * SrtpContext (src/media/rtp/srtp.ts): SDES key-params, a protect/unprotect round trip between two
 * contexts holding each other's keys, tampering and replays dropped (RFC 3711 §3.3.2), the
 * sequence-number wrap (ROC), and SRTCP.
 */
import { describe, expect, it } from 'vitest';
import { ProtectionProfileAes128CmHmacSha1_80, RtpPacket, SrtpSession } from 'werift-rtp';
import { estimateRoc, fromKeyParams, newMasterKey, SrtpContext, toKeyParams } from '../../src/media/rtp/srtp.js';

function rtp(seq: number, ssrc = 0x11223344, payload = Buffer.alloc(160, 0xd5)): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 0x80;
  h[1] = 8;
  h.writeUInt16BE(seq, 2);
  h.writeUInt32BE(seq * 160, 4);
  h.writeUInt32BE(ssrc, 8);

  return Buffer.concat([h, payload]);
}

function withPadding(seq: number): Buffer {
  const p = rtp(seq, 0x11223344, Buffer.concat([Buffer.alloc(157, 0x55), Buffer.from([0, 0, 3])]));
  p[0] = 0xa0; // P bit: the last byte counts the padding (3)

  return p;
}

function pair(): { a: SrtpContext; b: SrtpContext } {
  const ka = newMasterKey();
  const kb = newMasterKey();

  return { a: new SrtpContext({ local: ka, remote: kb }), b: new SrtpContext({ local: kb, remote: ka }) };
}

describe('SDES key-params (RFC 4568 §6.1)', () => {
  it('round-trips a 30-byte inline key, accepts a lifetime, refuses an MKI or a wrong length', () => {
    const k = newMasterKey();
    const params = toKeyParams(k);
    expect(params).toMatch(/^inline:[A-Za-z0-9+/]{40}$/);
    expect(fromKeyParams(params)).toEqual(k);
    expect(fromKeyParams(`${params}|2^31`)).toEqual(k);
    expect(fromKeyParams(`${params}|2^20|1:4`)).toBeUndefined();
    expect(fromKeyParams('inline:AAAA')).toBeUndefined();
    expect(fromKeyParams('uri:https://example.com/key')).toBeUndefined();
  });
});

describe('SrtpContext', () => {
  it('protects and unprotects RTP; the ciphertext hides the payload and carries a 10-byte tag', () => {
    const { a, b } = pair();
    const plain = rtp(1);
    const srtp = a.protectRtp(plain);
    expect(srtp.length).toBe(plain.length + 10);
    expect(srtp.subarray(0, 12)).toEqual(plain.subarray(0, 12)); // the header stays clear
    expect(srtp.subarray(12, plain.length).equals(plain.subarray(12))).toBe(false);
    expect(b.unprotectRtp(srtp)).toEqual(plain);
  });

  it('drops a tampered packet, a packet under the wrong key and a replay', () => {
    const { a, b } = pair();
    const srtp = a.protectRtp(rtp(7));
    const bad = Buffer.from(srtp);
    bad[20]! ^= 0x01;
    expect(b.unprotectRtp(bad)).toBeUndefined();
    expect(pair().b.unprotectRtp(srtp)).toBeUndefined();
    expect(b.unprotectRtp(srtp)).toBeDefined();
    expect(b.unprotectRtp(srtp)).toBeUndefined();
    expect(b.stats).toEqual({ rtpAuthFailures: 1, rtcpAuthFailures: 0, replays: 1 });
  });

  it('accepts late packets inside the 64-packet window once, and none older than it', () => {
    const { a, b } = pair();
    const packets = Array.from({ length: 100 }, (_, i) => a.protectRtp(rtp(1000 + i)));
    expect(b.unprotectRtp(packets[99]!)).toBeDefined();
    expect(b.unprotectRtp(packets[50]!)).toBeDefined(); // 49 behind: inside the window
    expect(b.unprotectRtp(packets[50]!)).toBeUndefined(); // twice: a replay
    expect(b.unprotectRtp(packets[10]!)).toBeUndefined(); // 89 behind: too old
    expect(b.stats.replays).toBe(2);
  });

  it('follows the sequence number through its wrap (rollover counter)', () => {
    const { a, b } = pair();
    for (let i = 0; i < 20; i++) {
      const seq = (65530 + i) & 0xffff;
      expect(b.unprotectRtp(a.protectRtp(rtp(seq))), `seq ${seq}`).toEqual(rtp(seq));
    }
    expect(b.stats).toEqual({ rtpAuthFailures: 0, rtcpAuthFailures: 0, replays: 0 });
  });

  it('protects and unprotects RTCP; a plain RTCP packet and an SRTCP replay are dropped', () => {
    const { a, b } = pair();
    const rr = Buffer.from('81c90007' + '11223344' + '55667788' + '00000000' + '00000000' + '00000000' + '00000000' + '00000000', 'hex');
    const srtcp = a.protectRtcp(rr);
    expect(b.unprotectRtcp(srtcp)).toEqual(rr);
    expect(b.unprotectRtcp(srtcp)).toBeUndefined();
    expect(b.unprotectRtcp(rr)).toBeUndefined();
    expect(b.stats).toEqual({ rtpAuthFailures: 0, rtcpAuthFailures: 1, replays: 1 });
  });

  it('interoperates with another SRTP implementation (werift-rtp) both ways', () => {
    const ka = newMasterKey();
    const kb = newMasterKey();
    const ours = new SrtpContext({ local: ka, remote: kb });
    const theirs = new SrtpSession({ keys: { localMasterKey: kb.key, localMasterSalt: kb.salt, remoteMasterKey: ka.key, remoteMasterSalt: ka.salt }, profile: ProtectionProfileAes128CmHmacSha1_80 });
    for (const seq of [100, 101, 102]) {
      expect(theirs.decrypt(ours.protectRtp(rtp(seq)))).toEqual(rtp(seq));
      const fromThem = theirs.encrypt(Buffer.alloc(160, seq & 0xff), RtpPacket.deSerialize(rtp(seq, 0x55667788)).header);
      expect(ours.unprotectRtp(fromThem)).toEqual(rtp(seq, 0x55667788, Buffer.alloc(160, seq & 0xff)));
    }
  });

  it('keeps the padding (encrypted with the payload, P bit and count intact)', () => {
    const { a, b } = pair();
    expect(b.unprotectRtp(a.protectRtp(withPadding(9)))).toEqual(withPadding(9));
  });

  it('RFC 3711 §3.3.1 index estimate: a packet from before the wrap arriving after it, and a loss burst across the wrap', () => {
    expect(estimateRoc({ roc: 0, sl: 65535 }, 0)).toBe(1);
    expect(estimateRoc({ roc: 1, sl: 1 }, 65535)).toBe(0);
    expect(estimateRoc({ roc: 0, sl: 65300 }, 200)).toBe(1);
    // sent in order 65533 65534 65535 0 1 2 3; 65535 arrives late, after 0 and 1
    const { a: a2, b: b2 } = pair();
    const order = [65533, 65534, 65535, 0, 1, 2, 3];
    const packets = new Map(order.map((seq) => [seq, a2.protectRtp(rtp(seq))]));
    for (const seq of [65533, 65534, 0, 1, 65535, 2, 3]) {
      expect(b2.unprotectRtp(packets.get(seq)!), `seq ${seq}`).toEqual(rtp(seq));
    }
    expect(b2.stats).toEqual({ rtpAuthFailures: 0, rtcpAuthFailures: 0, replays: 0 });
    // a burst of 300 lost packets across the wrap
    const { a: a3, b: b3 } = pair();
    let seq = 65400;
    for (let i = 0; i < 1000; i++, seq = (seq + 1) & 0xffff) {
      const p = a3.protectRtp(rtp(seq));
      if (i < 50 || i >= 350) {
        expect(b3.unprotectRtp(p), `packet ${i} (seq ${seq})`).toEqual(rtp(seq));
      }
    }
    expect(b3.stats.rtpAuthFailures).toBe(0);
  });

  it('refuses a packet replayed from long ago (over 2^15 packets back)', () => {
    const { a, b } = pair();
    const old = a.protectRtp(rtp(10));
    expect(b.unprotectRtp(old)).toBeDefined();
    let last: Buffer | undefined;
    for (let seq = 11; seq < 40_000; seq += 1) {
      last = a.protectRtp(rtp(seq));
      if (seq % 1000 === 0 || seq > 39_990) {
        b.unprotectRtp(last);
      }
    }
    expect(b.unprotectRtp(old)).toBeUndefined();
  });
});
