/**
 * ringbridge client SDK: an agent app's side of the signaling protocol (src/signaling/PROTOCOL.md)
 * with WebRTC media through mediasoup-client. Runs in browsers and, with `ws` and
 * `@roamhq/wrtc` passed in, in Node. See README.md in this folder.
 */
export { RingbridgeClient, type RingbridgeClientOptions, type RingbridgeClientEvents, type SessionInfo, type Presence } from './client.js';
export { ClientCall, type CallState, type CallEnding } from './call.js';
export { RingbridgeError, isRingbridgeError, CLIENT_ERROR_CODES, type ClientErrorCode, type RingbridgeErrorCode, type RingbridgeErrorOptions } from './errors.js';
export { TypedEmitter, type EventMap, type Listener } from './emitter.js';
export type { TokenSource } from './signaling.js';
export type {
  AudioTrack,
  CallStats,
  ConnectionState,
  HandlerName,
  MediaStreamTrackLike,
  ReconnectPolicy,
  SocketEventLike,
  WebRtcImplementation,
  WebSocketConstructorLike,
  WebSocketLike,
} from './types.js';
export type { AgentStatus, CallCodec, CallInfo, CancelReason, DeviceInfo, EffectivePresence, EndReason, ErrorCode, RecordingChangeReason, RequestData } from '../signaling/protocol.js';
