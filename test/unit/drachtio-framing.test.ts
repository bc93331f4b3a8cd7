/**
 * Frames of the drachtio control protocol (docs/drachtio-wire-protocol.md §1.2):
 * `<decimal byte count>#<payload>`, frames back to back, the payload a `|`-separated leader
 * optionally followed by CRLF and a SIP message.
 */
import { describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameError, splitPayload } from '../../src/sip/engine/control/framing.js';

const MAX = 1024 * 1024;

const INVITE_PAYLOAD = [
  '4a1c6f2e-0c39-4e1b-9a73-5b2f0e7d9c11|sip|network|512|udp|198.51.100.7|5062|13:40:49.123456|4ab5d3e0-7a11-4a3f-b5c1-9d1b8d0a1f22||192.0.2.1|5060|',
  'INVITE sip:bob@biloxi.example.com SIP/2.0',
  'Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK776asdhds',
  'From: "Алиса 🦊" <sip:alice@atlanta.example.com>;tag=1928301774',
  'To: "山田太郎" <sip:bob@biloxi.example.com>',
  'Call-ID: a84b4c76e66710@pc33.atlanta.example.com',
  'CSeq: 314159 INVITE',
  'Content-Length: 0',
  '',
  '',
].join('\r\n');

/** Feeds `data` in the given chunk sizes (cycled), collecting payloads. */
function feed(decoder: FrameDecoder, data: Buffer, sizes: number[] = [data.length]): string[] {
  const out: string[] = [];
  let i = 0;
  let k = 0;
  while (i < data.length) {
    const n = Math.max(1, sizes[k++ % sizes.length]!);
    out.push(...decoder.push(data.subarray(i, i + n)));
    i += n;
  }

  return out;
}

describe('encodeFrame() (wire protocol §1.2)', () => {
  it('prefixes the payload with its length in UTF-8 bytes, not characters, and "#"', () => {
    expect(encodeFrame('1|ping').toString('utf8')).toBe('6#1|ping');
    const frame = encodeFrame('1|x|Grüße 😀');
    const n = Buffer.byteLength('1|x|Grüße 😀');
    expect(n).toBeGreaterThan('1|x|Grüße 😀'.length);
    expect(frame.toString('utf8')).toBe(`${n}#1|x|Grüße 😀`);
  });

  it('round-trips through FrameDecoder', () => {
    expect(new FrameDecoder(MAX).push(encodeFrame(INVITE_PAYLOAD))).toEqual([INVITE_PAYLOAD]);
  });
});

describe('FrameDecoder (wire protocol §1.2)', () => {
  const payloads = ['a1|ping', INVITE_PAYLOAD, 'b2|response|a1|OK|pong', 'c3|sip|||\r\nOPTIONS sip:x SIP/2.0\r\n\r\n', '日本語|🦊|'];
  const stream = Buffer.concat(payloads.map(encodeFrame));

  it('decodes several frames delivered in one chunk, in order', () => {
    expect(new FrameDecoder(MAX).push(stream)).toEqual(payloads);
  });

  it('decodes frames split anywhere: inside the length digits, at "#", inside the payload and inside a multibyte character', () => {
    const failures: number[] = [];
    for (let cut = 1; cut < stream.length; cut++) {
      const got = feed(new FrameDecoder(MAX), stream, [cut, stream.length]);
      if (got.join('\u0000') !== payloads.join('\u0000')) {
        failures.push(cut);
      }
    }
    expect(failures).toEqual([]);
  });

  it('decodes a stream fed one byte at a time', () => {
    expect(feed(new FrameDecoder(MAX), stream, [1])).toEqual(payloads);
  });

  it('waits for the rest of a frame whose length digits are incomplete ("51" then "2#…")', () => {
    const payload = 'x'.repeat(512);
    const frame = encodeFrame(payload);
    const decoder = new FrameDecoder(MAX);
    expect(decoder.push(frame.subarray(0, 2))).toEqual([]);
    expect(decoder.push(frame.subarray(2, 3))).toEqual([]);
    expect(decoder.push(frame.subarray(3))).toEqual([payload]);
  });

  it('counts the length in bytes: a payload of emoji and Japanese text is cut exactly, and the next frame follows', () => {
    const p = '1|sip|山田太郎 🦊 Grüße';
    const raw = Buffer.concat([Buffer.from(`${Buffer.byteLength(p)}#${p}`, 'utf8'), encodeFrame('2|ping')]);
    expect(new FrameDecoder(MAX).push(raw)).toEqual([p, '2|ping']);
  });

  it('accepts a frame of exactly maxFrameBytes', () => {
    const p = 'y'.repeat(100);
    expect(new FrameDecoder(100).push(encodeFrame(p))).toEqual([p]);
  });

  describe('malformed length prefixes throw FrameError (the connection is closed)', () => {
    it.each([
      ['a non-digit before "#"', '5a#hello'],
      ['a sign', '+5#hello'],
      ['a negative length', '-5#hello'],
      ['a space', ' 5#hello'],
      ['an empty length', '#hello'],
      ['a zero length', '0#'],
      ['a zero length with leading zeros', '000#'],
      ['a length over maxFrameBytes', '2000000#x'],
      ['more than 10 digits', '12345678901#x'],
    ])('%s (%j)', (_label, text) => {
      expect(() => new FrameDecoder(MAX).push(Buffer.from(text, 'latin1'))).toThrow(FrameError);
    });

    it('garbage before any "#" is refused at once, without waiting for one', () => {
      expect(() => new FrameDecoder(MAX).push(Buffer.from('GET / HTTP/1.1\r\n'))).toThrow(FrameError);
      expect(() => new FrameDecoder(MAX).push(Buffer.from('x'))).toThrow(FrameError);
    });

    it('a run of digits longer than maxFrameBytes can have is refused without waiting for "#"', () => {
      const decoder = new FrameDecoder(1_000_000); // 7 digits at most
      expect(decoder.push(Buffer.from('1000000'))).toEqual([]);
      expect(() => decoder.push(Buffer.from('0'))).toThrow(FrameError);
    });

    it('a length over the limit is refused as soon as "#" arrives, before the payload', () => {
      const decoder = new FrameDecoder(100);
      expect(decoder.push(Buffer.from('10'))).toEqual([]);
      expect(() => decoder.push(Buffer.from('1#'))).toThrow(/101 bytes \(limit 100\)/);
    });

    it('a malformed frame after good ones in the same read is still refused', () => {
      const raw = Buffer.concat([encodeFrame('1|ping'), Buffer.from('x#')]);
      expect(() => new FrameDecoder(MAX).push(raw)).toThrow(FrameError);
    });

    it('FrameError is an Error named FrameError', () => {
      try {
        new FrameDecoder(MAX).push(Buffer.from('?'));
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).name).toBe('FrameError');
      }
    });
  });
});

describe('splitPayload() (wire protocol §1.2)', () => {
  it('splits the leader on "|" and keeps empty tokens (sip||dialog has an empty transaction id)', () => {
    expect(splitPayload('7|sip||a84b4c76e66710;from-tag=1928301774')).toEqual({ tokens: ['7', 'sip', '', 'a84b4c76e66710;from-tag=1928301774'], sip: undefined });
  });

  it('keeps the extra empty token produced by a trailing "|"', () => {
    expect(splitPayload('1|authenticate|secret|').tokens).toEqual(['1', 'authenticate', 'secret', '']);
    expect(splitPayload('9|sip|||').tokens).toEqual(['9', 'sip', '', '', '']);
  });

  it('takes everything after the first CRLF as the SIP message, "|" and CRLFs included', () => {
    const { tokens, sip } = splitPayload(INVITE_PAYLOAD);
    expect(tokens).toHaveLength(13);
    expect(tokens.slice(0, 4)).toEqual(['4a1c6f2e-0c39-4e1b-9a73-5b2f0e7d9c11', 'sip', 'network', '512']);
    expect(tokens.at(-1)).toBe('');
    expect(sip).toBe(INVITE_PAYLOAD.slice(INVITE_PAYLOAD.indexOf('\r\n') + 2));
    expect(sip).toContain('山田太郎');
    expect(splitPayload('1|sip|t1|\r\nSIP/2.0 486 Busy | Here\r\n\r\n').sip).toBe('SIP/2.0 486 Busy | Here\r\n\r\n');
  });

  it('distinguishes "no SIP message" (undefined) from an empty one after the CRLF', () => {
    expect(splitPayload('1|ping').sip).toBeUndefined();
    expect(splitPayload('1|ping\r\n').sip).toBe('');
  });

  it('returns one empty token for an empty payload', () => {
    expect(splitPayload('')).toEqual({ tokens: [''], sip: undefined });
  });
});
