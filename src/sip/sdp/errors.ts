/** The error of the SDP module: why a session description cannot be used, ready for a SIP response. */

/**
 * Stable reasons, for matching across module boundaries and for the termination taxonomy:
 *
 * | code | meaning | status | Warning (RFC 3261 §20.43) |
 * |---|---|---|---|
 * | `MALFORMED` | not SDP, or a mandatory line is missing or unreadable (RFC 4566 §5) | 400 | 399 |
 * | `NO_AUDIO` | no audio stream to accept: none offered, all disabled (port 0), or the call's stream is gone from a re-offer | 488 | 304 |
 * | `UNSUPPORTED_TRANSPORT` | audio only over transports other than RTP/AVP (RTP/AVPF, UDP/TLS/RTP/SAVPF, TCP, a re-offer changing the transport) | 488 | 302 |
 * | `SRTP_REQUIRED` | audio only over RTP/SAVP and SRTP is not enabled (or no offered a=crypto is acceptable) | 488 | 302 |
 * | `UNSUPPORTED_ADDRESS` | the connection address is a host name or multicast, or of a family we have no local address for | 488 | 301 |
 * | `NO_COMMON_CODEC` | no codec both sides allow (or the answer to our offer rejected the audio stream) | 488 | 305 |
 * | `CODEC_CHANGE` | a re-offer without the call's codec (ringbridge never transcodes) | 488 | 305 |
 * | `BAD_ANSWER` | an answer to our offer breaks RFC 3264 §6 (m-line count, types, payload type meaning) | 488 | 399 |
 */
export type SdpErrorCode =
  | 'MALFORMED'
  | 'NO_AUDIO'
  | 'UNSUPPORTED_TRANSPORT'
  | 'SRTP_REQUIRED'
  | 'UNSUPPORTED_ADDRESS'
  | 'NO_COMMON_CODEC'
  | 'CODEC_CHANGE'
  | 'BAD_ANSWER';

const RESPONSE: Record<SdpErrorCode, { status: 400 | 488; warnCode: number }> = {
  MALFORMED: { status: 400, warnCode: 399 },
  NO_AUDIO: { status: 488, warnCode: 304 },
  UNSUPPORTED_TRANSPORT: { status: 488, warnCode: 302 },
  SRTP_REQUIRED: { status: 488, warnCode: 302 },
  UNSUPPORTED_ADDRESS: { status: 488, warnCode: 301 },
  NO_COMMON_CODEC: { status: 488, warnCode: 305 },
  CODEC_CHANGE: { status: 488, warnCode: 305 },
  BAD_ANSWER: { status: 488, warnCode: 399 },
};

/** Longest reason kept; longer ones are cut with an ellipsis. */
const MAX_REASON = 120;

/** Printable ASCII only (the reason may quote remote input and ends up in a header), at most 120 characters. */
function sanitize(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');

  return clean.length > MAX_REASON ? `${clean.slice(0, MAX_REASON - 3)}...` : clean;
}

/**
 * An SDP body that cannot be used. `code` is stable; `reason` is short printable ASCII, fit for a
 * 400 reason phrase or the text of a Warning header; `status` and `warnCode` are what a UAS
 * answers an offer with (a UAC that gets a bad answer ACKs and sends BYE instead).
 */
export class SdpError extends Error {
  override readonly name = 'SdpError';
  /** Stable error code, see {@link SdpErrorCode}. */
  readonly code: SdpErrorCode;
  /** Short printable-ASCII reason (at most 120 characters). */
  readonly reason: string;
  /** SIP status to answer an offer with: 400 for `MALFORMED`, else 488 Not Acceptable Here. */
  readonly status: 400 | 488;
  /** Warning code for the response (RFC 3261 §20.43: 301, 302, 304, 305 or 399). */
  readonly warnCode: number;

  /**
   * @param code stable code
   * @param reason what is wrong, in a few words; non-printable characters become '?'
   */
  constructor(code: SdpErrorCode, reason: string) {
    const clean = sanitize(reason);
    super(`SDP ${code}: ${clean}`);
    this.code = code;
    this.reason = clean;
    this.status = RESPONSE[code].status;
    this.warnCode = RESPONSE[code].warnCode;
  }

  /**
   * The value of a Warning header for the response (RFC 3261 §20.43), e.g.
   * `305 gw.example.com "no common codec: offered G729; allowed PCMU, PCMA"`.
   * @param agent our host name or address (warn-agent)
   */
  warning(agent: string): string {
    return `${this.warnCode} ${agent} "${this.reason.replace(/["\\]/g, '\\$&')}"`;
  }
}
