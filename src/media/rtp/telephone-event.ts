/**
 * RFC 4733 telephone-events (DTMF over RTP): the 4-byte event payload (§2.3) and the DTMF event
 * codes (§3.2, table 7).
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |     event     |E|R| volume    |          duration             |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 */

/** Bytes of one event payload (RFC 4733 §2.3). */
export const TELEPHONE_EVENT_BYTES = 4;

/** A DTMF key: 0–9, *, # and A–D (RFC 4733 §3.2, event codes 0–15). */
export type DtmfDigit = '0' | '1' | '2' | '3' | '4' | '5' | '6' | '7' | '8' | '9' | '*' | '#' | 'A' | 'B' | 'C' | 'D';

/** The DTMF keys in event-code order: the code of a key is its index (RFC 4733 §3.2). */
export const DTMF_DIGITS: readonly DtmfDigit[] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D'];

/** The event code of a DTMF key (a–d accepted for A–D), or -1 when `key` is not one. */
export function dtmfEventCode(key: string): number {
  if (key.length !== 1) {
    return -1;
  }

  return DTMF_DIGITS.indexOf(key.toUpperCase() as DtmfDigit);
}

/** The DTMF key of an event code, or undefined for codes above 15 (flash, tones, …). */
export function dtmfDigit(code: number): DtmfDigit | undefined {
  return DTMF_DIGITS[code];
}

/** One RFC 4733 event payload. */
export interface TelephoneEvent {
  /** Event code, 0–255 (DTMF 0–15). */
  event: number;
  /** E bit: this packet ends the event. */
  end: boolean;
  /** Power level in dBm0 below zero, 0–63 (RFC 4733 §2.3.4); DTMF senders use 0–36. */
  volume: number;
  /** Duration so far, in RTP timestamp units of the event's clock rate, 0–65535 (§2.3.5). */
  duration: number;
}

/**
 * Writes an event payload at `offset` of `buf` (R, the reserved bit, is sent as 0).
 * @throws {RangeError} when the payload does not fit
 */
export function writeTelephoneEvent(buf: Buffer, offset: number, ev: Readonly<TelephoneEvent>): void {
  if (offset < 0 || offset + TELEPHONE_EVENT_BYTES > buf.length) {
    throw new RangeError(`writeTelephoneEvent: no room for 4 bytes at offset ${offset} of ${buf.length}`);
  }
  buf[offset] = ev.event & 0xff;
  buf[offset + 1] = (ev.end ? 0x80 : 0) | (ev.volume & 0x3f);
  buf.writeUInt16BE(ev.duration & 0xffff, offset + 2);
}

/**
 * Reads the event payload at `offset` (the RTP payload offset); undefined when fewer than 4 bytes
 * are left before `end` (default: the end of the buffer; pass the offset where RTP padding starts).
 */
export function readTelephoneEvent(buf: Buffer, offset: number, end = buf.length): TelephoneEvent | undefined {
  if (offset < 0 || offset + TELEPHONE_EVENT_BYTES > end || end > buf.length) {
    return undefined;
  }
  const flags = buf[offset + 1]!;

  return { event: buf[offset]!, end: (flags & 0x80) !== 0, volume: flags & 0x3f, duration: buf.readUInt16BE(offset + 2) };
}
