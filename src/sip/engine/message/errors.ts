/** The error thrown by the SIP message layer. */
import type { SipMessage } from '../message.js';

/**
 * A SIP message (or a part of one: URI, Via) that does not follow RFC 3261's grammar or misses a
 * mandatory header. `code` is stable across releases; `reason` is short enough to be the reason
 * phrase of the 400 (or 505) the caller answers with.
 */
export class SipParseError extends Error {
  /** Stable error code for matching across module boundaries. */
  readonly code = 'RB_ERR_SIP_PARSE';
  /** Short text usable as a 400 reason phrase, e.g. 'Missing Call-ID', 'Bad CSeq'. */
  readonly reason: string;
  /**
   * The request as far as it was read, set when it failed after its header list was read and Via
   * (parseable), From, To, Call-ID and CSeq are present, so that a 400/505 can be built from it;
   * undefined otherwise (and always for responses).
   */
  readonly partial?: SipMessage;

  /**
   * @param reason short reason phrase
   * @param partial the partly validated request, see {@link SipParseError.partial}
   */
  constructor(reason: string, partial?: SipMessage) {
    super(`SIP parse error: ${reason}`);
    this.name = 'SipParseError';
    this.reason = reason;
    if (partial) {
      this.partial = partial;
    }
  }
}
