/**
 * The SDK's one error class. Every failed request, timeout and local media failure is a
 * `RingbridgeError` with a stable `code`: match on `code`, never on the message.
 */
import type { ErrorCode } from '../signaling/protocol.js';

/**
 * Codes the SDK adds to the protocol's `ErrorCode`s (PROTOCOL.md "Error codes"):
 *
 * - `TIMEOUT`: no response within `requestTimeoutMs` (or the socket did not open in time);
 * - `CONNECTION_LOST`: the socket dropped while the request was in flight (the gateway may or may
 *   not have acted on it), or reconnecting failed for good;
 * - `CLOSED`: the client is closed, or not connected;
 * - `LOCAL_MEDIA`: WebRTC in this app failed (no audio track, the device cannot load the router's
 *   capabilities or cannot send the call's codec, a transport or producer could not be created);
 * - `PROTOCOL_ERROR`: the gateway sent a frame the SDK cannot read;
 * - `LISTENER_ERROR`: an application event listener threw (the SDK carries on).
 */
export const CLIENT_ERROR_CODES = ['TIMEOUT', 'CONNECTION_LOST', 'CLOSED', 'LOCAL_MEDIA', 'PROTOCOL_ERROR', 'LISTENER_ERROR'] as const;

/** Codes the SDK itself produces. */
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

/** Every code a `RingbridgeError` can carry: the gateway's and the SDK's. */
export type RingbridgeErrorCode = ErrorCode | ClientErrorCode;

/** Options of the RingbridgeError constructor. */
export interface RingbridgeErrorOptions {
  /** The call the error is about, when there is one. */
  callId?: string;
  /** The request type that failed (`call.answer`, `media.produce`, ...), when a request failed. */
  request?: string;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * An error from the gateway or from the SDK. `code` is one of the protocol's error codes (for an
 * error response) or one of `CLIENT_ERROR_CODES`.
 */
export class RingbridgeError extends Error {
  override readonly name = 'RingbridgeError';
  /** Stable machine-readable code. */
  readonly code: RingbridgeErrorCode;
  /** The call the error is about, if any. */
  readonly callId: string | undefined;
  /** The request type that failed, if a request failed. */
  readonly request: string | undefined;

  constructor(code: RingbridgeErrorCode, message: string, options: RingbridgeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.callId = options.callId;
    this.request = options.request;
  }
}

/** Whether `err` is a RingbridgeError, optionally with the given code (works across bundles). */
export function isRingbridgeError(err: unknown, code?: RingbridgeErrorCode): err is RingbridgeError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { name?: unknown }).name === 'RingbridgeError' &&
    typeof (err as { code?: unknown }).code === 'string' &&
    (code === undefined || (err as { code: string }).code === code)
  );
}
