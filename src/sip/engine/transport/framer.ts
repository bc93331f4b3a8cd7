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
  /** Largest header section, bytes. */
  maxHeaderBytes: number;
  /** Largest whole message (headers + body), bytes. */
  maxMessageBytes: number;
}

const CONTENT_LENGTH_RE = /^(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*$/im;

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
      // A double CRLF is a ping that wants a single-CRLF pong; a lone CRLF needs no answer.
      let skip = 0;
      while (skip < this.#buf.length && (this.#buf[skip] === 0x0d || this.#buf[skip] === 0x0a)) {
        skip++;
      }
      if (skip > 0) {
        if (skip >= 4 && this.#buf.toString('latin1', 0, 4) === '\r\n\r\n') {
          out.push({ kind: 'ping' });
        }
        this.#buf = this.#buf.subarray(skip);
      }
      if (this.#buf.length === 0) {
        break;
      }
      let headerEnd = this.#buf.indexOf('\r\n\r\n');
      let sepLen = 4;
      if (headerEnd < 0) {
        const lf = this.#buf.indexOf('\n\n');
        if (lf >= 0) {
          headerEnd = lf;
          sepLen = 2;
        }
      }
      if (headerEnd < 0) {
        if (this.#buf.length > this.limits.maxHeaderBytes) {
          return this.#fail(out, 'Header section too large');
        }
        break;
      }
      if (headerEnd > this.limits.maxHeaderBytes) {
        return this.#fail(out, 'Header section too large');
      }
      const head = this.#buf.subarray(0, headerEnd).toString('latin1');
      const m = CONTENT_LENGTH_RE.exec(head);
      const bodyLen = m ? Number(m[1]) : 0;
      const total = headerEnd + sepLen + bodyLen;
      if (total > this.limits.maxMessageBytes) {
        return this.#fail(out, 'Message too large');
      }
      if (this.#buf.length < total) {
        break;
      }
      out.push({ kind: 'message', data: Buffer.from(this.#buf.subarray(0, total)) });
      this.#buf = this.#buf.subarray(total);
    }

    return out;
  }

  /** Bytes buffered but not yet framed. */
  get pending(): number {
    return this.#buf.length;
  }

  #fail(out: FrameEvent[], reason: string): FrameEvent[] {
    this.#failed = true;
    this.#buf = Buffer.alloc(0);
    out.push({ kind: 'error', reason });

    return out;
  }
}
