/**
 * The push bridge's provider layer: one `PushProvider` interface that every channel adapter
 * implements, the message and result types they share, and the typed errors of src/push.
 *
 * An adapter turns a `PushMessage` into one provider request for one device token and classifies
 * the answer into a `PushResult`. It never deletes anything itself: a `dead-token` result is acted
 * on by the bridge (`onDeadToken`), and only for the definite dead-token signals that
 * ../shared/docs/push-channels.md lists per channel. Payload and configuration errors are
 * `rejected`, never `dead-token`.
 */
import { createHash } from 'node:crypto';

/** Push channels the bridge can wake a device through (push-channels.md, one adapter each). */
export const PUSH_CHANNELS = ['apns', 'fcm', 'webpush', 'umeng', 'huawei', 'honor', 'xiaomi', 'oppo', 'vivo', 'meizu'] as const;
/** A push channel. */
export type PushChannel = (typeof PUSH_CHANNELS)[number];

/**
 * What a push is for:
 * - `call`: wake the app for an incoming call (APNs PushKit VoIP, high-priority data messages);
 * - `cancel`: the call was answered elsewhere or cancelled (stop ringing);
 * - `missed`: a visible "missed call" notice.
 */
export type PushKind = 'call' | 'cancel' | 'missed';

/** One push, independent of the channel. */
export interface PushMessage {
  kind: PushKind;
  /** The gateway's call id; the app asks the gateway for the call with it. */
  callId: string;
  /** Caller as the app may show it, already masked by the caller of the bridge (e.g. "+49******56"). */
  callerDisplay?: string;
  /**
   * How long the provider may hold the push for an offline device, seconds (0: deliver now or
   * drop, where the channel allows it). Call wake-ups should use 30–60 s.
   */
  ttlSeconds: number;
  /** Collapse / dedupe id (apns-collapse-id, FCM collapse_key, ...); default the call id. */
  collapseId?: string;
  /** Visible text for `cancel` and `missed` notices (already localised); defaults are English. */
  alert?: { title?: string; body?: string };
}

/** The device a push goes to: its channel and token (what src/state keeps per device). */
export interface PushDevice {
  channel: PushChannel;
  /**
   * The push token: APNs the PushKit VoIP token, FCM the registration token, Web Push the
   * subscription JSON ({endpoint, keys: {p256dh, auth}}), vendors their regId / push id.
   */
  token: string;
  /**
   * APNs only: the app's ordinary remote-notification token, for `cancel` and `missed` alert
   * pushes (a VoIP token cannot receive those; Apple requires every VoIP push to report a call).
   */
  alertToken?: string;
  /** APNs topic (bundle id) or vendor package name when it differs from the configured one. */
  topic?: string;
}

/** The outcome of one push. */
export type PushResult =
  /** The provider accepted the push. */
  | { status: 'delivered'; providerMessageId?: string }
  /** Transient failure (429, 5xx, timeout, flow control): try again after `retryAfterMs`. */
  | { status: 'retry-later'; retryAfterMs: number; reason: string }
  /** The provider said the token is gone for good: delete it. */
  | { status: 'dead-token'; reason: string }
  /** Anything else (payload, configuration, permissions, quota): do not retry, do not delete. */
  | { status: 'rejected'; reason: string };

/** Per-send context the bridge hands to an adapter. */
export interface PushSendContext {
  /** Aborted when the bridge's timeout for this attempt fires. */
  signal: AbortSignal;
}

/** One channel's adapter. */
export interface PushProvider {
  readonly channel: PushChannel;
  /**
   * Sends `message` to one device. Resolves with the classified result; rejects only with a
   * `PushError` (or on a programming error), which the bridge turns into a result.
   */
  send(device: PushDevice, message: PushMessage, ctx: PushSendContext): Promise<PushResult>;
  /** Releases connections; idempotent. */
  close(): Promise<void>;
}

/** Stable codes of the push errors (match on `code`, not on the message). */
export type PushErrorCode = 'GW_ERR_PUSH_CONFIG' | 'GW_ERR_PUSH_AUTH' | 'GW_ERR_PUSH_TRANSPORT' | 'GW_ERR_PUSH_TIMEOUT' | 'GW_ERR_PUSH_PROTOCOL';

/** Base class of src/push errors. */
export class PushError extends Error {
  override name = 'PushError';

  constructor(
    readonly code: PushErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A channel's configuration cannot work (missing credential, unreadable key file). Thrown by constructors. */
export class PushConfigError extends PushError {
  override name = 'PushConfigError';

  constructor(message: string, options?: { cause?: unknown }) {
    super('GW_ERR_PUSH_CONFIG', message, options);
  }
}

/** The provider's auth endpoint refused our credentials or answered something unusable. */
export class PushAuthError extends PushError {
  override name = 'PushAuthError';

  constructor(
    message: string,
    /** Whether trying again later may help (5xx, network) rather than fixing the credentials. */
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super('GW_ERR_PUSH_AUTH', message, options);
  }
}

/** The request did not get an HTTP answer (connection refused, reset, TLS failure). */
export class PushTransportError extends PushError {
  override name = 'PushTransportError';

  constructor(message: string, options?: { cause?: unknown }) {
    super('GW_ERR_PUSH_TRANSPORT', message, options);
  }
}

/** No answer within the configured timeout. */
export class PushTimeoutError extends PushError {
  override name = 'PushTimeoutError';

  constructor(message: string, options?: { cause?: unknown }) {
    super('GW_ERR_PUSH_TIMEOUT', message, options);
  }
}

/** The provider answered something the adapter cannot read (not JSON, missing fields). */
export class PushProtocolError extends PushError {
  override name = 'PushProtocolError';

  constructor(message: string, options?: { cause?: unknown }) {
    super('GW_ERR_PUSH_PROTOCOL', message, options);
  }
}

/** First 12 hex digits of the token's SHA-256: what logs may show of a push token. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 12);
}

/** `message.collapseId`, else the call id. */
export function collapseIdOf(message: PushMessage): string {
  return message.collapseId ?? message.callId;
}

/**
 * The custom data every channel carries to the app, all values strings (FCM and most vendors
 * require string values): `type` (incoming_call | call_cancelled | missed_call), `callId`,
 * `caller` when known, `ttl` (s) and `sentAt` (ms since the epoch).
 */
export function wakeData(message: PushMessage, now = Date.now()): Record<string, string> {
  const type = message.kind === 'call' ? 'incoming_call' : message.kind === 'cancel' ? 'call_cancelled' : 'missed_call';
  const data: Record<string, string> = { type, callId: message.callId, ttl: String(message.ttlSeconds), sentAt: String(now) };
  if (message.callerDisplay !== undefined && message.callerDisplay !== '') {
    data.caller = message.callerDisplay;
  }

  return data;
}

/** Visible title and body of a notice (`message.alert`, else English defaults naming the caller). */
export function alertText(message: PushMessage): { title: string; body: string } {
  const title = message.alert?.title ?? (message.kind === 'call' ? 'Incoming call' : message.kind === 'cancel' ? 'Call ended' : 'Missed call');
  const body = message.alert?.body ?? message.callerDisplay ?? 'Unknown caller';

  return { title, body };
}

/** A non-negative integer id in 0..2^31-1 derived from a string (notify ids of Xiaomi, vivo). */
export function numericId(s: string): number {
  return createHash('sha256').update(s).digest().readUInt32BE(0) & 0x7fffffff;
}
