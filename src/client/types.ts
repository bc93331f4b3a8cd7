/**
 * Options and platform types of the client SDK. Kept structural (no DOM or Node types needed):
 * the SDK compiles in this Node project and bundles for browsers, where the DOM types apply.
 */
import type { types as msc } from 'mediasoup-client';

/**
 * The parts of a `MediaStreamTrack` the SDK uses. Where the DOM library is in the compilation (a
 * browser app), `AudioTrack` is the DOM's own `MediaStreamTrack` instead.
 */
export interface MediaStreamTrackLike {
  readonly id: string;
  readonly kind: string;
  enabled: boolean;
  readonly readyState: string;
  stop(): void;
}

/** A media track: the DOM `MediaStreamTrack` when the DOM types are present, else `MediaStreamTrackLike`. */
export type AudioTrack = typeof globalThis extends { MediaStreamTrack: { prototype: infer T } } ? T : MediaStreamTrackLike;

/** What the SDK reads from WebSocket events (`MessageEvent.data`, `CloseEvent.code/reason`). */
export interface SocketEventLike {
  readonly type?: string;
  readonly data?: unknown;
  readonly code?: number;
  readonly reason?: unknown;
  readonly message?: unknown;
}

/**
 * The WebSocket the SDK drives: the browser's `WebSocket` or the `ws` package's. Text frames
 * only. `terminate()` (ws only) is used, when present, to drop a dead connection at once.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate?(): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: SocketEventLike) => void): void;
}

/** A WebSocket constructor (`globalThis.WebSocket` in browsers, `WebSocket` from 'ws' in Node). */
export type WebSocketConstructorLike = new (url: string) => WebSocketLike;

/**
 * A WebRTC implementation to use where the platform has none (Node: `import wrtc from
 * '@roamhq/wrtc'`). mediasoup-client looks these up on `globalThis`, so the client installs them
 * there (process-wide) when it is constructed.
 */
export interface WebRtcImplementation {
  RTCPeerConnection: unknown;
  RTCSessionDescription: unknown;
  RTCIceCandidate: unknown;
  MediaStream: unknown;
  MediaStreamTrack?: unknown;
}

/** mediasoup-client's built-in handler names ('Chrome111' in Node with @roamhq/wrtc). */
export type HandlerName = msc.BuiltinHandlerName;

/**
 * How the client reconnects after the socket drops. Delays grow from `initialDelayMs` by `factor`
 * up to `maxDelayMs`, each with up to ±`jitter` of random spread; the client gives up once
 * `maxTimeMs` have passed since the drop.
 */
export interface ReconnectPolicy {
  /** First delay after a drop, in ms (default 250). */
  initialDelayMs?: number;
  /** Longest delay between attempts, in ms (default 5000). */
  maxDelayMs?: number;
  /** Growth of the delay per attempt (default 2). */
  factor?: number;
  /** Random spread of each delay as a fraction, 0–1 (default 0.2). */
  jitter?: number;
  /** Give up this long after the drop, in ms (default: the gateway's `resumeGraceMs`, after which the session is gone anyway). */
  maxTimeMs?: number;
}

/** Where the signaling connection stands. */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** Per-call RTP counters from the call's transports (the peer connections' `inbound-rtp`/`outbound-rtp` stats). */
export interface CallStats {
  /** RTP packets received on the receive transport. */
  packetsReceived: number;
  /** Payload bytes received. */
  bytesReceived: number;
  /** Packets lost as the receiver counts them (0 when not reported). */
  packetsLost: number;
  /** Interarrival jitter in seconds (0 when not reported). */
  jitter: number;
  /**
   * Round-trip time in seconds: from the gateway's RTCP receiver reports on what we send
   * (`remote-inbound-rtp`), else the ICE candidate pair's STUN round trip; undefined when neither
   * is reported yet.
   */
  roundTripTime: number | undefined;
  /** RTP packets sent on the send transport. */
  packetsSent: number;
  /** Payload bytes sent. */
  bytesSent: number;
  /** The send transport's connection state ('none' before it exists). */
  sendTransportState: msc.ConnectionState | 'none';
  /** The receive transport's connection state ('none' before it exists). */
  recvTransportState: msc.ConnectionState | 'none';
}
