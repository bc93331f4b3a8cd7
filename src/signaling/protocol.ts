/**
 * The agent signaling protocol, version 1: JSON messages over a WebSocket at /ws. Shared by the
 * gateway (src/signaling) and the client SDK (src/client); the SDK imports types only, so this
 * module must stay free of Node-only imports. PROTOCOL.md next to this file documents every
 * message; keep the two in step.
 *
 * Envelope:
 *   request   client → server  { v: 1, id, type: <method>, data }
 *   response  server → client  { v: 1, id, type: 'response', ok: true, data }
 *                              { v: 1, id, type: 'response', ok: false, error: { code, message } }
 *   event     server → client  { v: 1, type: <event>, data }
 */
import { z } from 'zod';

/** The protocol version this gateway speaks. */
export const PROTOCOL_VERSION = 1;

/** WebSocket close codes the gateway uses (4000–4999 are application codes, RFC 6455 §7.4.2). */
export const CLOSE_CODES = {
  /** Not authenticated in time, or a request before `auth`. */
  UNAUTHENTICATED: 4401,
  /** The token was refused. */
  AUTH_FAILED: 4403,
  /** The same session was resumed on another connection. */
  REPLACED: 4409,
  /** No heartbeat within the allowed time. */
  HEARTBEAT_TIMEOUT: 4408,
  /** Unsupported protocol version. */
  UNSUPPORTED_VERSION: 4426,
  /** Too many failed sign-ins from this address: locked for a while (AUTH_LOCKED). */
  AUTH_LOCKED: 4429,
  /** Gateway shutting down or draining; reconnect elsewhere. */
  GOING_AWAY: 1001,
} as const;

/** Typed error codes of failed requests. */
export const ERROR_CODES = [
  'BAD_REQUEST',
  'UNSUPPORTED_VERSION',
  'UNAUTHENTICATED',
  'AUTH_FAILED',
  'TOKEN_EXPIRED',
  'AUTH_REVOKED',
  'AUTH_LOCKED',
  'NOT_FOUND',
  'INVALID_STATE',
  'ALREADY_ANSWERED',
  'FORBIDDEN',
  'NO_ROUTE',
  'MEDIA_ERROR',
  'RATE_LIMITED',
  'DIAL_POLICY',
  'CALL_LIMIT',
  'UNAVAILABLE',
  'INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Presence an agent sets. */
export const AGENT_STATUSES = ['available', 'busy', 'away'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];
/** Presence as the gateway sees it: the agent's choice, overridden while ringing or on a call. */
export type EffectivePresence = AgentStatus | 'ringing' | 'on_call' | 'offline';

/** Why a call ended, as the agent sees it. */
export const END_REASONS = [
  'hangup_local',
  'hangup_remote',
  'cancelled',
  'answered_elsewhere',
  'declined',
  'busy',
  'not_found',
  'unavailable',
  'no_answer',
  'timeout',
  'rejected',
  'rtp_timeout',
  'media_error',
  'session_lost',
  'failed',
  'node_failure',
  'shutdown',
  /** The agent passed the call on (call.transfer); the caller stays connected. */
  'transferred',
] as const;
export type EndReason = (typeof END_REASONS)[number];

/** Why a ringing call was taken away from an agent. */
export type CancelReason = 'answered_elsewhere' | 'caller_cancelled' | 'ring_timeout' | 'declined' | 'session_lost' | 'node_failure';

// ------------------------------------------------------------------------------------------------
// mediasoup shapes carried in messages (kept structural so that the SDK needs no server types)
// ------------------------------------------------------------------------------------------------

/** What a client needs to create one mediasoup-client transport. */
export interface TransportInfo {
  id: string;
  iceParameters: unknown;
  iceCandidates: unknown[];
  dtlsParameters: unknown;
}

/** The audio codec of a call (the trunk's; never transcoded). */
export interface CallCodec {
  mimeType: string;
  clockRate: number;
  channels?: number;
}

/** Media set-up data returned by call.answer and call.dial. */
export interface MediaOffer {
  routerRtpCapabilities: unknown;
  sendTransport: TransportInfo;
  recvTransport: TransportInfo;
  /** Known at once for inbound calls; for outbound calls it comes with `call.media`. */
  codec?: CallCodec;
}

/** A call as listed to an agent. */
export interface CallInfo {
  callId: string;
  direction: 'inbound' | 'outbound';
  state: 'ringing' | 'dialing' | 'early' | 'active' | 'held' | 'ended';
  from: { number: string; name?: string };
  to: { number: string };
  trunkId: string;
  startedAt: string;
  answeredAt?: string;
  /** For ringing calls: how long they ring in total, ms. */
  ringTimeoutMs?: number;
  /** A call offered anew (call.transfer): the agent who passed it on. */
  transferredBy?: string;
  /** A call offered from a queue (routing.groups[].queue): the group whose queue it waited in. */
  queue?: string;
}

// ------------------------------------------------------------------------------------------------
// Requests (client → server): name → data schema, and the data of their responses
// ------------------------------------------------------------------------------------------------

const callId = z.string().min(1).max(128);
const deviceId = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'a device id: 1 to 128 letters, digits, ".", "_", ":" or "-"');

/** Platforms of agents' devices. */
export const DEVICE_PLATFORMS = ['ios', 'android', 'harmonyos', 'web', 'desktop'] as const;
/** Push channels a device can be woken through ('none': never woken, e.g. a desktop app). */
export const DEVICE_CHANNELS = ['apns', 'fcm', 'webpush', 'umeng', 'huawei', 'honor', 'xiaomi', 'oppo', 'vivo', 'meizu', 'none'] as const;

/** A device as the gateway reports it back: never its push token. */
export interface DeviceInfo {
  deviceId: string;
  platform: (typeof DEVICE_PLATFORMS)[number];
  channel: (typeof DEVICE_CHANNELS)[number];
  /** Whether a push token is registered. */
  hasToken: boolean;
  topic?: string;
  appVersion?: string;
  /** ISO times. */
  addedAt: string;
  lastSeen: string;
}
const digits = z.string().regex(/^[0-9*#A-Da-d]{1,32}$/, 'DTMF digits 0-9, *, #, A-D (1 to 32)');

/** Schemas of every request's `data`. Unknown keys are refused. */
export const REQUESTS = {
  auth: z.strictObject({
    token: z.string().min(10).max(16384),
    /** The device this session runs on (registered with device.register); its pushes stop while connected. */
    deviceId: deviceId.optional(),
    resume: z.strictObject({ sessionId: z.string().min(1).max(128), resumeToken: z.string().min(1).max(256) }).optional(),
  }),
  ping: z.strictObject({}),
  'presence.set': z.strictObject({ status: z.enum(AGENT_STATUSES) }),
  'calls.list': z.strictObject({}),
  'device.register': z
    .strictObject({
      deviceId,
      platform: z.enum(DEVICE_PLATFORMS),
      channel: z.enum(DEVICE_CHANNELS),
      /** The provider's push token; for webpush the PushSubscription as JSON. */
      token: z.string().min(1).max(4096).optional(),
      /** APNs only: the app's ordinary remote-notification token, for missed and cancelled call notices (a VoIP token cannot show them). */
      alertToken: z.string().min(1).max(4096).optional(),
      /** APNs topic (bundle id), or the app id / package name a vendor channel needs. */
      topic: z.string().min(1).max(256).optional(),
      appVersion: z.string().min(1).max(64).optional(),
    })
    .refine((d) => (d.channel === 'none') === (d.token === undefined), { message: 'token is required for a push channel and not allowed with channel "none"', path: ['token'] }),
  'device.unregister': z.strictObject({ deviceId }),
  'device.list': z.strictObject({}),
  'call.answer': z.strictObject({ callId }),
  'call.decline': z.strictObject({ callId, reason: z.enum(['busy', 'decline']).optional() }),
  'call.dial': z.strictObject({ to: z.string().regex(/^\+?[0-9*#]{2,32}$/, 'a dialable number: digits, * and #, optional leading +'), trunkId: z.string().min(1).max(64).optional() }),
  'call.hangup': z.strictObject({ callId }),
  'call.hold': z.strictObject({ callId }),
  'call.resume': z.strictObject({ callId }),
  'call.mute': z.strictObject({ callId, muted: z.boolean() }),
  'call.dtmf': z.strictObject({ callId, digits, durationMs: z.int().min(40).max(2000).optional() }),
  /** Starts (on: true) or stops recording the call on demand (recording.onDemand). */
  'call.record': z.strictObject({ callId, on: z.boolean() }),
  /**
   * Blind transfer: the caller is offered to another agent, a group, or a number dialled toward
   * the trunk; the transferring agent's media leaves at once.
   */
  /**
   * Attended (warm) transfer, step 1: the caller hears hold audio while the agent consults a
   * number (a trunk leg in the call's router); complete with call.transfer {callId, consultCallId},
   * cancel with call.hangup {callId: consultCallId}.
   */
  'call.consult': z.strictObject({
    callId,
    to: z.strictObject({ number: z.string().regex(/^\+?[0-9*#]{2,32}$/, 'a dialable number: digits, * and #, optional leading +') }),
  }),
  'call.transfer': z.strictObject({
    callId,
    /** Completes an attended transfer (call.consult): the caller and the consulted party stay. */
    consultCallId: z.string().min(1).max(140).optional(),
    to: z.union([
      z.strictObject({ agent: z.string().min(1).max(128) }),
      z.strictObject({ group: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a group id') }),
      z.strictObject({ number: z.string().regex(/^\+?[0-9*#]{2,32}$/, 'a dialable number: digits, * and #, optional leading +') }),
    ]).optional(),
  }).refine((d) => (d.to === undefined) !== (d.consultCallId === undefined), { message: 'either to (blind) or consultCallId (attended)', path: ['to'] }),
  'media.connect': z.strictObject({ callId, transportId: z.string().min(1).max(128), dtlsParameters: z.record(z.string(), z.unknown()) }),
  'media.produce': z.strictObject({ callId, transportId: z.string().min(1).max(128), kind: z.literal('audio'), rtpParameters: z.record(z.string(), z.unknown()) }),
  'media.consume': z.strictObject({ callId, rtpCapabilities: z.record(z.string(), z.unknown()) }),
  'media.resume': z.strictObject({ callId, consumerId: z.string().min(1).max(128) }),
} as const;

export type RequestType = keyof typeof REQUESTS;
export type RequestData<T extends RequestType> = z.infer<(typeof REQUESTS)[T]>;

/** The `data` of successful responses, per request. */
export interface ResponseData {
  auth: {
    sessionId: string;
    resumeToken: string;
    agentId: string;
    resumed: boolean;
    heartbeatIntervalMs: number;
    resumeGraceMs: number;
    presence: { status: AgentStatus; effective: EffectivePresence };
    calls: CallInfo[];
    /** Present when the gateway sends Web Push: the VAPID public key (RFC 8292, URL-safe base64) a browser subscribes with. */
    webPush?: { vapidPublicKey: string };
  };
  ping: { now: string };
  'presence.set': { status: AgentStatus; effective: EffectivePresence };
  'calls.list': { calls: CallInfo[] };
  'device.register': { device: DeviceInfo };
  'device.unregister': { removed: boolean };
  'device.list': { devices: DeviceInfo[] };
  'call.answer': { callId: string; media: MediaOffer };
  'call.decline': Record<string, never>;
  'call.dial': { callId: string; media: MediaOffer };
  'call.hangup': Record<string, never>;
  'call.hold': Record<string, never>;
  'call.resume': Record<string, never>;
  'call.mute': { muted: boolean };
  'call.dtmf': { digits: string };
  /** Whether the call is being recorded now (by any trigger), and the current file's id. */
  'call.record': { recording: boolean; recordingId?: string };
  /** The target rings (agent, group) or is being dialled (number). */
  'call.transfer': { callId: string };
  /** The consultation is being dialled; its progress comes as `call.consult` events. */
  'call.consult': { callId: string; consultCallId: string };
  'media.connect': Record<string, never>;
  'media.produce': { producerId: string };
  'media.consume': { consumerId: string; producerId: string; kind: 'audio'; rtpParameters: unknown };
  'media.resume': Record<string, never>;
}

// ------------------------------------------------------------------------------------------------
// Events (server → client)
// ------------------------------------------------------------------------------------------------

/** Why recording started or stopped: a trunk or DID rule, the agent (call.record), a failure, recording.maxDurationS reached ('limit'), or the call's end ('ended': internal, never sent; call.ended implies it). */
export type RecordingChangeReason = 'rule' | 'on_demand' | 'failed' | 'limit' | 'ended';

/** Every event's `data`. */
export interface EventData {
  'call.incoming': CallInfo & { ringTimeoutMs: number };
  'call.cancelled': { callId: string; reason: CancelReason };
  'call.progress': { callId: string; status: number; earlyMedia: boolean };
  'call.media': { callId: string; codec: CallCodec };
  'call.answered': { callId: string };
  'call.held': { callId: string; by: 'local' | 'remote' };
  'call.resumed': { callId: string; by: 'local' | 'remote' };
  'call.dtmf': { callId: string; digit: string; durationMs: number };
  /** Recording of the call started or stopped (trunk/DID rule, call.record, a failure, the end). */
  'call.recording': { callId: string; recording: boolean; recordingId?: string; reason: RecordingChangeReason };
  'call.ended': { callId: string; reason: EndReason; by: 'local' | 'remote' | 'system'; sipStatus?: number };
  /**
   * An attended transfer's consultation: `answered` (the agent now hears the consulted party),
   * `failed` (it did not answer; back with the caller), `ended` (cancelled or the party hung up;
   * back with the caller), `completed` (the caller and the party talk; `call.ended` follows).
   */
  'call.consult': { callId: string; consultCallId: string; state: 'answered' | 'failed' | 'ended' | 'completed'; sipStatus?: number };
  /** The audio the agent hears on the call now comes from another producer: media.consume again. */
  'call.reconsume': { callId: string };
  'presence.changed': { status: AgentStatus; effective: EffectivePresence };
}
export type EventType = keyof EventData;

/** A request frame as the client sends it. */
export interface RequestFrame<T extends RequestType = RequestType> {
  v: 1;
  id: string;
  type: T;
  data: RequestData<T>;
}

/** A response frame. */
export type ResponseFrame<T extends RequestType = RequestType> =
  | { v: 1; id: string; type: 'response'; ok: true; data: ResponseData[T] }
  | { v: 1; id: string; type: 'response'; ok: false; error: { code: ErrorCode; message: string } };

/** An event frame. */
export interface EventFrame<T extends EventType = EventType> {
  v: 1;
  type: T;
  data: EventData[T];
}

/** The envelope every client frame must have. */
export const ENVELOPE = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().min(1).max(64),
  type: z.string().min(1).max(64),
  data: z.unknown().optional(),
});
