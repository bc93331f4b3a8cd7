/**
 * Frames of the drachtio control protocol: `<byte length>#<payload>`, where the payload is a
 * leader (tokens separated by "|") optionally followed by CRLF and a SIP message. See
 * ../shared/docs/drachtio-wire-protocol.md §1.2.
 */

/** Encodes one frame; the length counts UTF-8 bytes, never characters. */
export function encodeFrame(payload: string): Buffer {
  const body = Buffer.from(payload, 'utf8');

  return Buffer.concat([Buffer.from(`${body.length}#`, 'latin1'), body]);
}

/** Splits a payload into its leader tokens and the SIP text after the first CRLF (if any). */
export function splitPayload(payload: string): { tokens: string[]; sip: string | undefined } {
  const crlf = payload.indexOf('\r\n');
  const leader = crlf < 0 ? payload : payload.slice(0, crlf);

  return { tokens: leader.split('|'), sip: crlf < 0 ? undefined : payload.slice(crlf + 2) };
}

/** Thrown for a malformed frame; the connection is closed. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  /** Complete frames that preceded the malformed one in the same push(); still valid. */
  frames: string[] = [];
}

/** Incremental decoder of one control connection's byte stream. */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0);
  /** The largest payload accepted (bytes); may change between pushes (e.g. once authenticated). */
  maxFrameBytes: number;

  /**
   * @param maxFrameBytes the largest payload accepted (bytes)
   */
  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /**
   * Feeds bytes and returns the complete payloads (UTF-8 decoded).
   * @throws {FrameError} on a non-numeric or oversized length; the stream cannot be resynchronised.
   *   The error's `frames` holds the complete frames that came before the bad one.
   */
  push(chunk: Buffer): string[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: string[] = [];
    try {
      this.#drain(out);
    } catch (err) {
      if (err instanceof FrameError) {
        err.frames = out;
      }
      throw err;
    }

    return out;
  }

  #drain(out: string[]): void {
    const maxDigits = String(this.maxFrameBytes).length;
    for (;;) {
      const hash = this.#buf.indexOf(0x23); // '#'
      if (hash < 0) {
        if (this.#buf.length > maxDigits) {
          throw new FrameError('Invalid message format: length prefix too long or missing');
        }
        if (!/^\d*$/.test(this.#buf.toString('latin1'))) {
          throw new FrameError('Invalid message format: non-digit before #');
        }
        break;
      }
      const digits = this.#buf.toString('latin1', 0, hash);
      if (!/^\d{1,10}$/.test(digits)) {
        throw new FrameError('Invalid message format: bad length prefix');
      }
      const len = Number(digits);
      if (len === 0 || len > this.maxFrameBytes) {
        throw new FrameError(`Invalid message format: frame of ${len} bytes (limit ${this.maxFrameBytes})`);
      }
      if (this.#buf.length < hash + 1 + len) {
        break;
      }
      out.push(this.#buf.toString('utf8', hash + 1, hash + 1 + len));
      this.#buf = this.#buf.subarray(hash + 1 + len);
    }
  }
}
