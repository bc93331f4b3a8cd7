/**
 * The signaling connection under a RingbridgeClient: one WebSocket at a time, request/response
 * correlation with timeouts, heartbeat, and reconnect-and-resume (PROTOCOL.md "Session,
 * heartbeat and resume"). It knows nothing about calls; the client gets events and session
 * changes through the callbacks it passes in.
 *
 * States: disconnected → connecting → connected ⇄ reconnecting → disconnected. Requests made
 * while connecting or reconnecting wait in a queue (their timeout runs) and go out once the
 * session is (re)authenticated; requests in flight when the socket drops reject with
 * CONNECTION_LOST, since the gateway may or may not have acted on them.
 */
import type { ErrorCode, RequestData, RequestType, ResponseData } from '../signaling/protocol.js';
import { RingbridgeError } from './errors.js';
import type { ConnectionState, ReconnectPolicy, WebSocketConstructorLike, WebSocketLike } from './types.js';

/** The `auth` response: the session the gateway gave us. */
export type AuthResult = ResponseData['auth'];

/** A token, or a function that returns a fresh one (called on connect and on every resume). */
export type TokenSource = string | (() => string | Promise<string>);

/** Close codes after which reconnecting cannot help (PROTOCOL.md; protocol.ts CLOSE_CODES). */
const FATAL_CLOSE_CODES = new Set([4401, 4403, 4409, 4426, 4429]);
/** Error codes of an `auth` response after which reconnecting cannot help. */
const FATAL_AUTH_CODES = new Set<string>(['AUTH_FAILED', 'AUTH_REVOKED', 'AUTH_LOCKED', 'UNSUPPORTED_VERSION', 'BAD_REQUEST', 'FORBIDDEN']);
/** WebSocket readyState OPEN. */
const OPEN = 1;

/** @internal Options of Signaling. */
export interface SignalingOptions {
  url: string;
  token: TokenSource;
  /** The device this client runs on, sent in every `auth`. */
  deviceId: string | undefined;
  WebSocket: WebSocketConstructorLike;
  requestTimeoutMs: number;
  /** `false`: never reconnect. */
  reconnect: false | ReconnectPolicy;
  /** A server event (synchronously, in arrival order). */
  onEvent: (type: string, data: unknown) => void;
  /** The state changed. */
  onStateChange: (state: ConnectionState) => void;
  /**
   * An `auth` succeeded (synchronously, before any event that follows it is delivered).
   * `reconnect` is true on a reconnect, where `auth.resumed` says whether the session survived.
   */
  onAuthenticated: (auth: AuthResult, reconnect: boolean) => void;
  /** The session is gone for good: reconnecting gave up or was refused. Not called by close(). */
  onSessionLost: (err: RingbridgeError) => void;
  /** An error not tied to a request (an unreadable frame, an error response without id). */
  onError: (err: RingbridgeError) => void;
}

/** @internal Per-request options. */
export interface RequestOptions<T extends RequestType> {
  /** Runs synchronously when the success response arrives, before later frames are handled. */
  onSuccess?: (data: ResponseData[T]) => void;
}

interface Pending {
  type: RequestType;
  data: unknown;
  resolve: (data: unknown) => void;
  reject: (err: RingbridgeError) => void;
  onSuccess: ((data: unknown) => void) | undefined;
  timer: ReturnType<typeof setTimeout>;
}

interface Frame {
  v?: unknown;
  id?: unknown;
  type?: unknown;
  ok?: unknown;
  data?: unknown;
  error?: { code?: unknown; message?: unknown };
}

/** @internal The signaling connection. Create one per client. */
export class Signaling {
  readonly #opts: SignalingOptions;
  #state: ConnectionState = 'disconnected';
  #socket: WebSocketLike | undefined;
  /** Sent requests awaiting their response, by id. */
  readonly #inFlight = new Map<string, Pending>();
  /** Requests waiting for an authenticated socket. */
  #queue: Pending[] = [];
  #nextId = 1;
  #auth: AuthResult | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #lastFrameAt = 0;
  #droppedAt = 0;
  #attempt = 0;

  constructor(opts: SignalingOptions) {
    this.#opts = opts;
  }

  /** Current state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The last successful `auth` response of the current session, if any. */
  get auth(): AuthResult | undefined {
    return this.#auth;
  }

  /**
   * Opens the socket and authenticates.
   * @throws {RingbridgeError} INVALID_STATE when not disconnected; the `auth` error, TIMEOUT or CONNECTION_LOST
   */
  async connect(): Promise<AuthResult> {
    if (this.#state !== 'disconnected') {
      throw new RingbridgeError('INVALID_STATE', `connect() while ${this.#state}`);
    }
    this.#setState('connecting');
    try {
      return await this.#open(false);
    } catch (err) {
      const e = asRingbridgeError(err, 'CONNECTION_LOST');
      if ((this.#state as ConnectionState) === 'connecting') {
        this.#dropSocket();
        this.#rejectAll(e);
        this.#setState('disconnected');
      }
      throw e;
    }
  }

  /**
   * Sends a request and resolves with its response data.
   * @throws {RingbridgeError} the gateway's error code, TIMEOUT, CONNECTION_LOST or CLOSED
   */
  request<T extends RequestType>(type: T, data: RequestData<T>, options: RequestOptions<T> = {}): Promise<ResponseData[T]> {
    if (this.#state === 'disconnected') {
      return Promise.reject(new RingbridgeError('CLOSED', `cannot send ${type}: not connected`, { request: type }));
    }

    return new Promise<ResponseData[T]>((resolve, reject) => {
      const pending: Pending = {
        type,
        data,
        resolve: resolve as (data: unknown) => void,
        reject,
        onSuccess: options.onSuccess as ((data: unknown) => void) | undefined,
        timer: setTimeout(() => this.#timeOut(pending), this.#opts.requestTimeoutMs),
      };
      if (this.#state === 'connected' && this.#socket) {
        this.#send(this.#socket, pending);
      } else {
        this.#queue.push(pending);
      }
    });
  }

  /** Closes the socket and stops reconnecting; pending requests reject with CLOSED. Idempotent. */
  close(): void {
    this.#stopTimers();
    const sock = this.#socket;
    this.#socket = undefined;
    this.#auth = undefined;
    this.#rejectAll(new RingbridgeError('CLOSED', 'client closed'));
    if (sock) {
      closeQuietly(sock, 1000, 'client closed');
    }
    this.#setState('disconnected');
  }

  // ----------------------------------------------------------------------------------------------
  // Opening and authenticating
  // ----------------------------------------------------------------------------------------------

  async #open(resume: boolean): Promise<AuthResult> {
    const token = await this.#token();
    if (this.#state !== (resume ? 'reconnecting' : 'connecting')) {
      throw new RingbridgeError('CLOSED', 'client closed while connecting');
    }
    const sock = await this.#openSocket();
    const prev = this.#auth;
    const device = this.#opts.deviceId ? { deviceId: this.#opts.deviceId } : {};
    const data: RequestData<'auth'> = resume && prev ? { token, ...device, resume: { sessionId: prev.sessionId, resumeToken: prev.resumeToken } } : { token, ...device };

    return new Promise<AuthResult>((resolve, reject) => {
      const pending: Pending = {
        type: 'auth',
        data,
        resolve: resolve as (data: unknown) => void,
        reject,
        onSuccess: (auth) => this.#authenticated(auth as AuthResult, resume),
        timer: setTimeout(() => this.#timeOut(pending), this.#opts.requestTimeoutMs),
      };
      this.#send(sock, pending);
    });
  }

  async #token(): Promise<string> {
    const source = this.#opts.token;
    if (typeof source === 'string') {
      return source;
    }
    try {
      return await source();
    } catch (err) {
      throw asRingbridgeError(err, 'AUTH_FAILED', 'the token function failed');
    }
  }

  #openSocket(): Promise<WebSocketLike> {
    const { url, requestTimeoutMs } = this.#opts;

    return new Promise<WebSocketLike>((resolve, reject) => {
      let opened = false;
      let settled = false;
      const fail = (err: RingbridgeError): void => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          if (this.#socket === sock) {
            this.#socket = undefined;
          }
          killQuietly(sock);
          reject(err);
        }
      };
      let sock: WebSocketLike;
      try {
        sock = new this.#opts.WebSocket(url);
      } catch (err) {
        reject(asRingbridgeError(err, 'CONNECTION_LOST', `cannot connect to ${url}`));

        return;
      }
      this.#socket = sock;
      const timer = setTimeout(() => fail(new RingbridgeError('TIMEOUT', `no connection to ${url} within ${requestTimeoutMs} ms`)), requestTimeoutMs);
      sock.addEventListener('open', () => {
        if (settled) {
          return;
        }
        settled = true;
        opened = true;
        clearTimeout(timer);
        this.#lastFrameAt = Date.now();
        resolve(sock);
      });
      sock.addEventListener('error', (ev) => {
        if (!opened) {
          fail(new RingbridgeError('CONNECTION_LOST', `cannot connect to ${url}${typeof ev.message === 'string' && ev.message ? `: ${ev.message}` : ''}`));
        }
      });
      sock.addEventListener('close', (ev) => {
        if (!opened) {
          fail(new RingbridgeError('CONNECTION_LOST', `connection to ${url} closed before it opened (code ${ev.code ?? 'none'})`));
        } else {
          this.#onSocketGone(sock, ev.code ?? 1006, typeof ev.reason === 'string' ? ev.reason : '');
        }
      });
      sock.addEventListener('message', (ev) => this.#onMessage(sock, ev.data));
    });
  }

  #authenticated(auth: AuthResult, reconnect: boolean): void {
    this.#auth = auth;
    this.#attempt = 0;
    this.#setState('connected');
    this.#startHeartbeat(auth.heartbeatIntervalMs);
    this.#opts.onAuthenticated(auth, reconnect);
    const queued = this.#queue;
    this.#queue = [];
    for (const p of queued) {
      if (this.#socket && this.#state === 'connected') {
        this.#send(this.#socket, p);
      } else {
        this.#queue.push(p);
      }
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Frames
  // ----------------------------------------------------------------------------------------------

  #send(sock: WebSocketLike, p: Pending): void {
    const id = (this.#nextId++).toString(36);
    this.#inFlight.set(id, p);
    try {
      if (sock.readyState !== OPEN) {
        throw new Error('socket not open');
      }
      sock.send(JSON.stringify({ v: 1, id, type: p.type, data: p.data }));
    } catch (err) {
      this.#inFlight.delete(id);
      clearTimeout(p.timer);
      p.reject(asRingbridgeError(err, 'CONNECTION_LOST', `cannot send ${p.type}`, p.type));
    }
  }

  #onMessage(sock: WebSocketLike, raw: unknown): void {
    if (sock !== this.#socket) {
      return;
    }
    this.#lastFrameAt = Date.now();
    let frame: Frame;
    try {
      const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw as ArrayBuffer);
      frame = JSON.parse(text) as Frame;
      if (typeof frame !== 'object' || frame === null || typeof frame.type !== 'string') {
        throw new Error('no envelope');
      }
    } catch (err) {
      this.#opts.onError(new RingbridgeError('PROTOCOL_ERROR', `unreadable frame from the gateway: ${(err as Error).message}`, { cause: err }));

      return;
    }
    if (frame.type !== 'response') {
      try {
        this.#opts.onEvent(frame.type, frame.data);
      } catch (err) {
        this.#opts.onError(asRingbridgeError(err, 'INTERNAL', `handling the ${frame.type} event failed`));
      }

      return;
    }
    const id = typeof frame.id === 'string' ? frame.id : undefined;
    const p = id === undefined ? undefined : this.#inFlight.get(id);
    if (!p || id === undefined) {
      if (frame.ok !== true) {
        this.#opts.onError(errorFromFrame(frame, undefined));
      }

      return; // a late response to a request that timed out
    }
    this.#inFlight.delete(id);
    clearTimeout(p.timer);
    if (frame.ok === true) {
      const data = frame.data ?? {};
      try {
        p.onSuccess?.(data);
      } catch (err) {
        p.reject(asRingbridgeError(err, 'INTERNAL', `handling the ${p.type} response failed`, p.type));

        return;
      }
      p.resolve(data);
    } else {
      p.reject(errorFromFrame(frame, p.type));
    }
  }

  #timeOut(p: Pending): void {
    for (const [id, q] of this.#inFlight) {
      if (q === p) {
        this.#inFlight.delete(id);
      }
    }
    this.#queue = this.#queue.filter((q) => q !== p);
    p.reject(new RingbridgeError('TIMEOUT', `no response to ${p.type} within ${this.#opts.requestTimeoutMs} ms`, { request: p.type }));
  }

  // ----------------------------------------------------------------------------------------------
  // Heartbeat, drops and reconnects
  // ----------------------------------------------------------------------------------------------

  #startHeartbeat(intervalMs: number): void {
    if (this.#heartbeatTimer) {
      clearInterval(this.#heartbeatTimer);
    }
    // ping a little more often than asked, so timer drift never makes us late
    const every = Math.max(10, Math.floor(intervalMs * 0.8));
    this.#heartbeatTimer = setInterval(() => {
      const sock = this.#socket;
      if (!sock || this.#state !== 'connected') {
        return;
      }
      if (Date.now() - this.#lastFrameAt > 2 * intervalMs) {
        // the gateway treats two silent intervals as a drop; so do we
        this.#onSocketGone(sock, 4408, 'no frame from the gateway for two heartbeat intervals');
        killQuietly(sock);

        return;
      }
      this.request('ping', {}).catch(() => undefined);
    }, every);
  }

  /** The socket of an authenticated (or authenticating) session is gone. */
  #onSocketGone(sock: WebSocketLike, code: number, reason: string): void {
    if (sock !== this.#socket) {
      return;
    }
    this.#socket = undefined;
    if (this.#heartbeatTimer) {
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
    }
    const lost = new RingbridgeError('CONNECTION_LOST', `connection lost (code ${code}${reason ? `, ${reason}` : ''})`);
    for (const [id, p] of this.#inFlight) {
      this.#inFlight.delete(id);
      clearTimeout(p.timer);
      p.reject(new RingbridgeError('CONNECTION_LOST', `connection lost before the response to ${p.type} (code ${code})`, { request: p.type }));
    }
    if (this.#state !== 'connected') {
      return; // an auth in flight failed with the socket; #open's caller handles it
    }
    if (FATAL_CLOSE_CODES.has(code) || this.#opts.reconnect === false || !this.#auth) {
      this.#lose(lost);

      return;
    }
    this.#droppedAt = Date.now();
    this.#attempt = 0;
    this.#setState('reconnecting');
    this.#scheduleReconnect(lost);
  }

  #scheduleReconnect(lastError: RingbridgeError): void {
    const policy = this.#opts.reconnect === false ? {} : this.#opts.reconnect;
    const { initialDelayMs = 250, maxDelayMs = 5000, factor = 2, jitter = 0.2 } = policy;
    const maxTimeMs = policy.maxTimeMs ?? this.#auth?.resumeGraceMs ?? 0;
    const remaining = this.#droppedAt + maxTimeMs - Date.now();
    if (remaining <= 0) {
      this.#lose(new RingbridgeError('CONNECTION_LOST', `could not resume the session within ${maxTimeMs} ms: ${lastError.message}`, { cause: lastError }));

      return;
    }
    const base = Math.min(maxDelayMs, initialDelayMs * factor ** this.#attempt);
    const delay = Math.min(remaining, Math.max(0, base * (1 + jitter * (2 * Math.random() - 1))));
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      void this.#reconnect();
    }, delay);
  }

  async #reconnect(): Promise<void> {
    try {
      await this.#open(true);
    } catch (err) {
      if (this.#state !== 'reconnecting') {
        return; // closed meanwhile
      }
      this.#dropSocket();
      const e = asRingbridgeError(err, 'CONNECTION_LOST');
      const tokenFn = typeof this.#opts.token === 'function';
      const fatal = FATAL_AUTH_CODES.has(e.code) && e.request === 'auth';
      if (fatal || (e.code === 'TOKEN_EXPIRED' && !tokenFn)) {
        this.#lose(e);
      } else {
        this.#scheduleReconnect(e);
      }
    }
  }

  /** The session is gone: stop, fail everything queued, tell the owner. */
  #lose(err: RingbridgeError): void {
    this.#stopTimers();
    this.#dropSocket();
    this.#auth = undefined;
    this.#rejectAll(err);
    this.#opts.onSessionLost(err);
    this.#setState('disconnected');
  }

  #dropSocket(): void {
    const sock = this.#socket;
    this.#socket = undefined;
    if (sock) {
      killQuietly(sock);
    }
  }

  #rejectAll(err: RingbridgeError): void {
    const all = [...this.#inFlight.values(), ...this.#queue];
    this.#inFlight.clear();
    this.#queue = [];
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new RingbridgeError(err.code, `${p.type}: ${err.message}`, { request: p.type, cause: err }));
    }
  }

  #stopTimers(): void {
    if (this.#heartbeatTimer) {
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
    }
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
    }
  }

  #setState(state: ConnectionState): void {
    if (state !== this.#state) {
      this.#state = state;
      this.#opts.onStateChange(state);
    }
  }
}

function errorFromFrame(frame: Frame, request: RequestType | undefined): RingbridgeError {
  const code = typeof frame.error?.code === 'string' ? (frame.error.code as ErrorCode) : 'INTERNAL';
  const message = typeof frame.error?.message === 'string' ? frame.error.message : 'error response without a message';

  return new RingbridgeError(code, message, { request });
}

function asRingbridgeError(err: unknown, code: RingbridgeError['code'], context?: string, request?: string): RingbridgeError {
  if (err instanceof RingbridgeError) {
    return err;
  }
  const message = err instanceof Error ? err.message : String(err);

  return new RingbridgeError(code, context ? `${context}: ${message}` : message, { cause: err, request });
}

function closeQuietly(sock: WebSocketLike, code: number, reason: string): void {
  try {
    sock.close(code, reason);
  } catch {
    // already closing
  }
}

function killQuietly(sock: WebSocketLike): void {
  try {
    if (sock.terminate) {
      sock.terminate();
    } else {
      sock.close(4000, 'dropped');
    }
  } catch {
    // already closed
  }
}
