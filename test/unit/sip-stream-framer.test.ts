/**
 * Stream framing of SIP over TCP/TLS (RFC 3261 §18.3) and RFC 5626 §4.4.1 CRLF keep-alives.
 */
import { describe, expect, it } from 'vitest';
import { parseMessage } from '../../src/sip/engine/message.js';
import { type FrameEvent, type FramerLimits, StreamFramer } from '../../src/sip/engine/transport/framer.js';

const LIMITS: FramerLimits = { maxHeaderBytes: 1024, maxMessageBytes: 4096 };

interface MessageOptions {
  method?: string;
  body?: string;
  /** The Content-Length line to write; null for none; default `Content-Length: <bytes of body>`. */
  lengthLine?: string | null;
  /** Where the Content-Length line goes: 'last' (default) or 'first' header. */
  lengthAt?: 'first' | 'last';
  /** Line end, CRLF by default. */
  eol?: string;
  /** Extra header lines. */
  extra?: string[];
}

/** A complete SIP request as it would travel over TCP. */
function message(o: MessageOptions = {}): Buffer {
  const method = o.method ?? 'INVITE';
  const body = Buffer.from(o.body ?? '', 'utf8');
  const eol = o.eol ?? '\r\n';
  const lengthLine = o.lengthLine === undefined ? `Content-Length: ${body.length}` : o.lengthLine;
  const headers = [
    'Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9',
    'Max-Forwards: 70',
    'From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl',
    'To: Bob <sip:bob@biloxi.example.com>',
    'Call-ID: 3848276298220188511@atlanta.example.com',
    `CSeq: 1 ${method}`,
    ...(o.extra ?? []),
  ];
  if (lengthLine !== null) {
    if (o.lengthAt === 'first') {
      headers.unshift(lengthLine);
    } else {
      headers.push(lengthLine);
    }
  }
  const head = [`${method} sip:bob@biloxi.example.com SIP/2.0`, ...headers, '', ''].join(eol);

  return Buffer.concat([Buffer.from(head, 'utf8'), body]);
}

function messages(events: FrameEvent[]): Buffer[] {
  return events.flatMap((e) => (e.kind === 'message' ? [e.data] : []));
}

/** The messages as latin1 text, for fast exact comparison of many runs. */
function texts(events: FrameEvent[]): string[] {
  return messages(events).map((b) => b.toString('latin1'));
}

function latin1(bufs: Buffer[]): string[] {
  return bufs.map((b) => b.toString('latin1'));
}

function kinds(events: FrameEvent[]): string[] {
  return events.map((e) => e.kind);
}

/** Feeds `data` in the given chunk sizes (cycled) and collects every event. */
function feed(framer: StreamFramer, data: Buffer, sizes: number[] = [data.length]): FrameEvent[] {
  const out: FrameEvent[] = [];
  let i = 0;
  let k = 0;
  while (i < data.length) {
    const n = Math.max(1, sizes[k++ % sizes.length]!);
    out.push(...framer.push(data.subarray(i, i + n)));
    i += n;
  }

  return out;
}

/** A small deterministic PRNG (mulberry32), so random chunkings are reproducible. */
function prng(seed: number): () => number {
  let a = seed;

  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;

    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('StreamFramer: framing by Content-Length (RFC 3261 §18.3)', () => {
  const sdp = 'v=0\r\no=alice 2890844526 2890844526 IN IP4 atlanta.example.com\r\ns=-\r\nc=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\n';

  it('emits one message for one complete message in one chunk, byte for byte', () => {
    const m = message({ body: sdp });
    const events = new StreamFramer(LIMITS).push(m);
    expect(kinds(events)).toEqual(['message']);
    expect(messages(events)[0]!.equals(m)).toBe(true);
  });

  it('reassembles a message split into two chunks at every possible position', () => {
    const m = message({ body: sdp });
    for (let cut = 1; cut < m.length; cut++) {
      const framer = new StreamFramer(LIMITS);
      const first = framer.push(m.subarray(0, cut));
      expect(first).toEqual([]);
      const second = framer.push(m.subarray(cut));
      expect(kinds(second)).toEqual(['message']);
      expect(messages(second)[0]!.equals(m)).toBe(true);
      expect(framer.pending).toBe(0);
    }
  });

  it('reassembles a message fed one byte at a time, emitting it only with its last byte', () => {
    const m = message({ body: sdp });
    const framer = new StreamFramer(LIMITS);
    for (let i = 0; i < m.length - 1; i++) {
      expect(framer.push(m.subarray(i, i + 1))).toEqual([]);
    }
    const last = framer.push(m.subarray(m.length - 1));
    expect(messages(last)).toEqual([m]);
  });

  it('splits several messages coalesced in one chunk, in order', () => {
    const ms = [message({ body: sdp }), message({ method: 'OPTIONS' }), message({ method: 'MESSAGE', body: 'hello\r\n\r\nworld' })];
    const framer = new StreamFramer(LIMITS);
    const events = framer.push(Buffer.concat(ms));
    expect(messages(events)).toEqual(ms);
    expect(framer.pending).toBe(0);
  });

  it('splits coalesced messages cut at every position, and under random chunkings', () => {
    const ms = [message({ body: sdp }), message({ method: 'BYE' }), message({ method: 'INFO', body: 'Signal=5\r\nDuration=160\r\n' })];
    const all = Buffer.concat(ms);
    const want = latin1(ms).join('|');
    const failures: number[] = [];
    for (let cut = 1; cut < all.length; cut++) {
      if (texts(feed(new StreamFramer(LIMITS), all, [cut, all.length])).join('|') !== want) {
        failures.push(cut);
      }
    }
    expect(failures).toEqual([]);
    const rnd = prng(5626);
    for (let run = 0; run < 200; run++) {
      const sizes = Array.from({ length: 8 }, () => 1 + Math.floor(rnd() * 60));
      expect(texts(feed(new StreamFramer(LIMITS), all, sizes)).join('|')).toBe(want);
    }
  });

  it('counts Content-Length in bytes: a body with multibyte UTF-8 is framed exactly (and parses)', () => {
    const body = 'Grüße aus Köln 😀 こんにちは\r\n';
    expect(Buffer.byteLength(body)).toBeGreaterThan(body.length);
    const m = message({ method: 'MESSAGE', body, extra: ['Content-Type: text/plain;charset=utf-8'] });
    const next = message({ method: 'OPTIONS' });
    for (const sizes of [[m.length + next.length], [1], [3, 7]]) {
      const got = messages(feed(new StreamFramer(LIMITS), Buffer.concat([m, next]), sizes));
      expect(got).toEqual([m, next]);
      expect(parseMessage(got[0]!).body.toString('utf8')).toBe(body);
    }
  });

  it('reads the compact form "l:" and any case and spacing of the header name (RFC 3261 §7.3.3)', () => {
    for (const line of ['l: 5', 'L:5', 'content-length:5', 'CONTENT-LENGTH   :   5  ', 'Content-Length: 005']) {
      const m = message({ method: 'MESSAGE', body: 'hello', lengthLine: line });
      const next = message({ method: 'OPTIONS' });
      expect(messages(new StreamFramer(LIMITS).push(Buffer.concat([m, next])))).toEqual([m, next]);
    }
  });

  it('finds Content-Length wherever it is in the header section, not only on the last line', () => {
    const m = message({ method: 'MESSAGE', body: 'hello', lengthAt: 'first' });
    const next = message({ method: 'OPTIONS' });
    expect(messages(new StreamFramer(LIMITS).push(Buffer.concat([m, next])))).toEqual([m, next]);
  });

  it('does not take a header that merely ends in "l" or contains "Content-Length" for it', () => {
    const m = message({ method: 'MESSAGE', body: 'hi', extra: ['X-Original-Content-Length: 999', 'Xl: 999'] });
    expect(messages(new StreamFramer(LIMITS).push(m))).toEqual([m]);
  });

  it('treats a missing Content-Length as 0: the message ends at the empty line', () => {
    const m = message({ method: 'OPTIONS', lengthLine: null });
    const next = message({ method: 'OPTIONS' });
    expect(messages(new StreamFramer(LIMITS).push(Buffer.concat([m, next])))).toEqual([m, next]);
  });

  it('keeps a body containing empty lines and CRLF pairs intact (only Content-Length decides)', () => {
    const body = '\r\n\r\n--boundary\r\n\r\n\r\n\r\n';
    const m = message({ method: 'MESSAGE', body });
    const next = message({ method: 'OPTIONS' });
    expect(messages(feed(new StreamFramer(LIMITS), Buffer.concat([m, next]), [2]))).toEqual([m, next]);
  });

  it('accepts bare-LF line ends like the parser does, even when a CRLF message follows in the same chunk', () => {
    const lf = message({ method: 'MESSAGE', body: 'hi', eol: '\n' });
    const crlf = message({ method: 'OPTIONS' });
    const got = messages(new StreamFramer(LIMITS).push(Buffer.concat([lf, crlf])));
    expect(got).toEqual([lf, crlf]);
    expect(parseMessage(got[0]!).body.toString()).toBe('hi');
  });

  it('ignores CRLFs before a message (RFC 3261 §7.5) and does not include them in it', () => {
    const m = message({ method: 'OPTIONS' });
    const events = new StreamFramer(LIMITS).push(Buffer.concat([Buffer.from('\r\n'), m]));
    expect(kinds(events)).toEqual(['message']);
    expect(messages(events)).toEqual([m]);
  });
});

describe('StreamFramer: RFC 5626 §4.4.1 CRLF keep-alives', () => {
  const PING = Buffer.from('\r\n\r\n');

  it('RFC 5626 §4.4.1: a double CRLF is a ping (the caller answers with a single CRLF pong)', () => {
    const framer = new StreamFramer(LIMITS);
    expect(framer.push(PING)).toEqual([{ kind: 'ping' }]);
    expect(framer.pending).toBe(0);
  });

  it('RFC 5626 §4.4.1: a ping split over two reads is still a ping', () => {
    for (const cut of [1, 2, 3]) {
      const framer = new StreamFramer(LIMITS);
      const events = [...framer.push(PING.subarray(0, cut)), ...framer.push(PING.subarray(cut))];
      expect(events).toEqual([{ kind: 'ping' }]);
    }
  });

  it('RFC 5626 §4.4.1: a ping arriving one byte at a time is still a ping', () => {
    expect(feed(new StreamFramer(LIMITS), PING, [1])).toEqual([{ kind: 'ping' }]);
  });

  it('RFC 5626 §4.4.1: each ping gets its own pong', () => {
    expect(new StreamFramer(LIMITS).push(Buffer.concat([PING, PING]))).toEqual([{ kind: 'ping' }, { kind: 'ping' }]);
  });

  it('RFC 5626 §4.4.1: a lone CRLF (a pong, or a stray line end) needs no answer and does not disturb the next message', () => {
    const framer = new StreamFramer(LIMITS);
    expect(framer.push(Buffer.from('\r\n'))).toEqual([]);
    const m = message({ method: 'OPTIONS' });
    const events = framer.push(m);
    expect(kinds(events)).toEqual(['message']);
    expect(messages(events)).toEqual([m]);
  });

  it('RFC 5626 §4.4.1: pings between messages are reported in stream order, whatever the chunking', () => {
    const a = message({ method: 'REGISTER' });
    const b = message({ method: 'OPTIONS' });
    const stream = Buffer.concat([a, PING, b, Buffer.from('\r\n'), a]);
    for (const sizes of [[stream.length], [1], [2], [5, 3]]) {
      expect(kinds(feed(new StreamFramer(LIMITS), stream, sizes))).toEqual(['message', 'ping', 'message', 'message']);
    }
  });
});

describe('StreamFramer: limits and malformed streams', () => {
  it('reports a header section larger than maxHeaderBytes once, then emits nothing more', () => {
    const big = message({ extra: [`X-Padding: ${'a'.repeat(2000)}`] });
    const framer = new StreamFramer(LIMITS);
    expect(framer.push(big)).toEqual([{ kind: 'error', reason: 'Header section too large' }]);
    expect(framer.push(message({ method: 'OPTIONS' }))).toEqual([]);
    expect(framer.push(Buffer.from('\r\n\r\n'))).toEqual([]);
    expect(framer.pending).toBe(0);
  });

  it('reports an endless header section as soon as it exceeds the limit, without waiting for an empty line', () => {
    const framer = new StreamFramer(LIMITS);
    const events = feed(framer, Buffer.from(`INVITE sip:x SIP/2.0\r\nX: ${'a'.repeat(5000)}`), [100]);
    expect(events).toEqual([{ kind: 'error', reason: 'Header section too large' }]);
  });

  it('accepts a header section of exactly maxHeaderBytes (line ends included, as the parser counts) even byte by byte; one more byte is too many', () => {
    const base = message({ method: 'OPTIONS' });
    const headerBytes = base.indexOf('\r\n\r\n') + 2;
    const pad = (n: number) => message({ method: 'OPTIONS', extra: [`X-Pad: ${'p'.repeat(n)}`] });
    const padLen = 256;
    const sized = pad(padLen);
    const size = sized.indexOf('\r\n\r\n') + 2;
    expect(size).toBe(headerBytes + 'X-Pad: \r\n'.length + padLen);
    const limits = { maxHeaderBytes: size, maxMessageBytes: 4096 };
    expect(messages(feed(new StreamFramer(limits), sized, [1]))).toEqual([sized]);
    expect(parseMessage(sized, { maxHeaderBytes: size }).method).toBe('OPTIONS');
    expect(kinds(feed(new StreamFramer(limits), pad(padLen + 1), [1]))).toEqual(['error']);
  });

  it('reports a message larger than maxMessageBytes as soon as its Content-Length is known', () => {
    const framer = new StreamFramer(LIMITS);
    const head = message({ method: 'MESSAGE', lengthLine: 'Content-Length: 5000' });
    expect(framer.push(head)).toEqual([{ kind: 'error', reason: 'Message too large' }]);
    expect(framer.push(Buffer.alloc(5000, 0x61))).toEqual([]);
  });

  it('accepts a message of exactly maxMessageBytes', () => {
    const probe = message({ method: 'MESSAGE', body: 'x'.repeat(1000) }); // same number of length digits
    const body = 'x'.repeat(LIMITS.maxMessageBytes - probe.length + 1000);
    const m = message({ method: 'MESSAGE', body });
    expect(m.length).toBe(LIMITS.maxMessageBytes);
    expect(messages(new StreamFramer(LIMITS).push(m))).toEqual([m]);
  });

  it('delivers the messages before a malformed one in the same chunk, then the error', () => {
    const ok = message({ method: 'OPTIONS' });
    const bad = message({ extra: [`X-Padding: ${'a'.repeat(2000)}`] });
    const events = new StreamFramer(LIMITS).push(Buffer.concat([ok, bad]));
    expect(kinds(events)).toEqual(['message', 'error']);
  });

  it('RFC 3261 §18.3: a Content-Length that is not a number cannot frame the stream and is an error (not read as 0)', () => {
    for (const line of ['Content-Length: abc', 'Content-Length: -1', 'Content-Length: 12345678901', 'l: 5 5', 'Content-Length:']) {
      const framer = new StreamFramer(LIMITS);
      const events = framer.push(Buffer.concat([message({ method: 'MESSAGE', lengthLine: line }), Buffer.from('hello')]));
      expect(events).toEqual([{ kind: 'error', reason: 'Bad Content-Length' }]);
    }
  });

  it('keeps only the bytes of the unfinished message, not the large read it came in (no 64 KiB pinned per connection)', () => {
    const framer = new StreamFramer({ maxHeaderBytes: 4096, maxMessageBytes: 65535 });
    const one = message({ method: 'OPTIONS' });
    const many = Buffer.concat([...Array.from({ length: Math.floor(60_000 / one.length) }, () => one), one.subarray(0, 40)]);
    expect(many.length).toBeGreaterThan(50_000);
    const events = framer.push(many);
    expect(events.length).toBe(Math.floor(60_000 / one.length));
    expect(framer.pending).toBe(40);
    expect(framer.retainedBytes).toBeLessThan(16 * 1024);
    expect(messages(framer.push(one.subarray(40)))).toEqual([one]);
  });
});
