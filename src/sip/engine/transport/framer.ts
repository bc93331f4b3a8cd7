/**
 * Splits a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3: framing by Content-Length) and
 * recognises RFC 5626 §4.4.1 keep-alives (a double CRLF "ping", answered by a single CRLF "pong").
 */

/** What the framer found in the stream. */
export type FrameEvent =
  | { kind: 'message'; data: Buffer }
  | { kind: 'ping' }
  | { kind: 'error'; reason: string };

/** Limits of one stream. */
export interface FramerLimits {
  /** Largest header section (start line and header lines with their line ends), bytes. */
  maxHeaderBytes: number;
  /** Largest whole message (headers + body), bytes. */
  maxMessageBytes: number;
}

/** The Content-Length line (full or compact name, RFC 3261 §7.3.3, §20.14); the value is checked apart. */
const CONTENT_LENGTH_RE = /^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$/im;

const CR = 0x0d;
const LF = 0x0a;
/** The RFC 5626 §4.4.1 ping. */
const PING = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Where the header section ends: the first empty line, with CRLF or bare LF line ends, exactly as
 * parseMessage() reads it. `headerBytes` counts the start line and header lines with their line
 * ends; `bodyStart` is the first byte after the empty line. Undefined while no empty line is there.
 */
function findHeaderEnd(buf: Buffer): { headerBytes: number; bodyStart: number } | undefined {
  for (let p = buf.indexOf(LF); p >= 0; p = buf.indexOf(LF, p + 1)) {
    if (buf[p + 1] === LF) {
      return { headerBytes: p + 1, bodyStart: p + 2 };
    }
    if (buf[p + 1] === CR && buf[p + 2] === LF) {
      return { headerBytes: p + 1, bodyStart: p + 3 };
    }
  }

  return undefined;
}

/** Incremental framer for one stream connection. */
export class StreamFramer {
  #buf: Buffer = Buffer.alloc(0);
  #failed = false;

  constructor(private readonly limits: FramerLimits) {}

  /**
   * Feeds received bytes; returns the complete frames found. After an error the stream cannot be
   * resynchronised and the caller closes the connection.
   */
  push(chunk: Buffer): FrameEvent[] {
    if (this.#failed) {
      return [];
    }
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: FrameEvent[] = [];
    for (;;) {
      // Keep-alives and stray line ends between messages (RFC 3261 §7.5 allows leading CRLFs).
      // A double CRLF is a ping that wants a single-CRLF pong; a lone CRLF needs no answer. A
      // run that may still become a ping ("\r", "\r\n", "\r\n\r") stays buffered: TCP may split
      // the four bytes over several reads, and the pong must not depend on how it did.
      const buf = this.#buf;
      let i = 0;
      let partialPing = false;
      while (i < buf.length && (buf[i] === CR || buf[i] === LF)) {
        const left = buf.length - i;
        if (left >= 4 && buf[i] === CR && buf[i + 1] === LF && buf[i + 2] === CR && buf[i + 3] === LF) {
          out.push({ kind: 'ping' });
          i += 4;
        } else if (left < 4 && PING.subarray(0, left).equals(buf.subarray(i))) {
          partialPing = true;
          break;
        } else {
          i++;
        }
      }
      this.#buf = buf.subarray(i);
      if (partialPing || this.#buf.length === 0) {
        break;
      }
      // The first empty line, whatever its line ends: searching "\r\n\r\n" first would, for a
      // bare-LF message, find a blank line inside a later message of the same chunk.
      const end = findHeaderEnd(this.#buf);
      if (!end) {
        // A section within the limit ends (empty line included) at most 2 bytes after it; testing
        // the buffer against the bare limit rejected allowed sections whose empty line came in a
        // later read, i.e. depending on TCP segmentation.
        if (this.#buf.length > this.limits.maxHeaderBytes + 2) {
          return this.#fail(out, 'Header section too large');
        }
        break;
      }
      if (end.headerBytes > this.limits.maxHeaderBytes) {
        return this.#fail(out, 'Header section too large');
      }
      const head = this.#buf.subarray(0, end.headerBytes).toString('latin1');
      const m = CONTENT_LENGTH_RE.exec(head);
      // RFC 3261 §18.3: over a stream the Content-Length is the only way to find the end of the
      // body, so a value that is not a number cannot be framed (reading it as 0 would desynchronise
      // the stream). A missing header is read as 0 (no body).
      const digits = m ? m[1]!.replace(/^0+(?=\d)/, '') : '0';
      if (!/^\d{1,10}$/.test(digits)) {
        return this.#fail(out, 'Bad Content-Length');
      }
      const total = end.bodyStart + Number(digits);
      if (total > this.limits.maxMessageBytes) {
        return this.#fail(out, 'Message too large');
      }
      if (this.#buf.length < total) {
        break;
      }
      out.push({ kind: 'message', data: Buffer.from(this.#buf.subarray(0, total)) });
      this.#buf = this.#buf.subarray(total);
    }
    // What stays buffered is one unfinished message, never more than a message may be; and only its
    // own bytes: a slice of a large read would pin the whole read in memory.
    if (this.#buf.length > this.limits.maxMessageBytes) {
      return this.#fail(out, 'Message too large');
    }
    if (this.#buf.length > 0 && this.#buf.buffer.byteLength > this.#buf.length + 4096) {
      this.#buf = Buffer.from(this.#buf);
    }

    return out;
  }

  /** Bytes buffered but not yet framed. */
  get pending(): number {
    return this.#buf.length;
  }

  /** Bytes of memory the buffered part holds on to (its backing store). */
  get retainedBytes(): number {
    return this.#buf.buffer.byteLength;
  }

  #fail(out: FrameEvent[], reason: string): FrameEvent[] {
    this.#failed = true;
    this.#buf = Buffer.alloc(0);
    out.push({ kind: 'error', reason });

    return out;
  }
}
