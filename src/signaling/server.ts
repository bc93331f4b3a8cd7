/**
 * The agent signaling server: WebSocket (ws) at /ws speaking protocol v1 (PROTOCOL.md). It owns
 * connections and sessions — authentication, heartbeats, resume within a grace period, rate
 * limits, request validation and correlation — and hands authenticated requests to a handler
 * (the call layer). Events for an agent go to all its sessions; a suspended session queues them
 * until it resumes.
 */
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { type IncomingMessage, type Server } from 'node:http';
import { type Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { requestUrl } from '../http/server.js';
import { type Logger } from '../log/logger.js';
import { AuthError, type JwtVerifier } from './auth.js';
import {
  CLOSE_CODES,
  ENVELOPE,
  type ErrorCode,
  type EventData,
  type EventType,
  PROTOCOL_VERSION,
  REQUESTS,
  type RequestData,
  type RequestType,
  type ResponseData,
} from './protocol.js';

/** An error a request handler throws to answer with a typed protocol error. */
export class SignalingError extends Error {
  override readonly name = 'SignalingError';

  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** One agent session: survives reconnects within the resume grace period. */
export class AgentSession {
  readonly id = randomUUID();
  readonly resumeToken = randomBytes(24).toString('base64url');
  readonly agentId: string;
  readonly startedAt = Date.now();
  /** JWT id of the token the session started with. */
  jti: string | undefined;
  /** The agent's device this session runs on, when the client named it in auth. */
  deviceId: string | undefined;
  ws: WebSocket | undefined;
  state: 'connected' | 'suspended' | 'closed' = 'connected';
  /** Events held while suspended, delivered on resume (bounded). */
  readonly queue: string[] = [];
  graceTimer: NodeJS.Timeout | undefined;
  lastSeen = Date.now();
  /** Token bucket for the request rate limit. */
  tokens: number;
  lastRefill = Date.now();

  /** @private */
  constructor(agentId: string, burst: number) {
    this.agentId = agentId;
    this.tokens = burst;
  }
}

/** What the call layer provides to the signaling server. */
export interface SignalingHandler {
  /** A session authenticated (new or resumed); returns the data of the auth response beyond the session fields. */
  onSessionReady(session: AgentSession, resumed: boolean): Promise<Pick<ResponseData['auth'], 'presence' | 'calls'>>;
  /** A session dropped (its socket is gone); the grace period starts. */
  onSessionSuspended(session: AgentSession): void;
  /** A session ended for good (grace expired, or the agent closed it). */
  onSessionEnded(session: AgentSession, reason: 'grace_expired' | 'closed' | 'shutdown'): void;
  /** An authenticated request other than auth and ping. */
  onRequest<T extends Exclude<RequestType, 'auth' | 'ping'>>(session: AgentSession, type: T, data: RequestData<T>): Promise<ResponseData[T]>;
}

/** The sign-in defences (src/security): lockout of addresses and revoked token ids. */
export interface SignInGuard {
  /** Whether an address is locked after failed sign-ins. */
  isLocked(address: string): Promise<boolean>;
  /** Counts a failed sign-in from an address; resolves true when it locked the address. */
  failed(address: string): Promise<boolean>;
  /** Whether a token id is revoked. */
  isRevoked(jti: string | undefined): Promise<boolean>;
}

/** Options of the signaling server. */
export interface SignalingServerOptions {
  http: Server;
  /** Path of the WebSocket endpoint (default /ws). */
  path?: string;
  verifier: JwtVerifier;
  heartbeatIntervalMs: number;
  resumeGraceMs: number;
  authTimeoutMs: number;
  maxRequestsPerSecond: number;
  /** Largest frame accepted, bytes (default 64 KiB). */
  maxFrameBytes?: number;
  handler: SignalingHandler;
  logger: Logger;
  /** Refuse new sessions (draining): answer auth with UNAVAILABLE. */
  acceptingSessions?: () => boolean;
  /** VAPID public key (URL-safe base64) given to agents in the auth response when Web Push is configured. */
  vapidPublicKey?: string;
  /** Lockout and revocation checks of sign-ins; none: no such checks. */
  guard?: SignInGuard;
}

const MAX_QUEUED_EVENTS = 500;

/** The WebSocket signaling endpoint. */
export class SignalingServer {
  readonly #opts: Required<Omit<SignalingServerOptions, 'acceptingSessions' | 'vapidPublicKey' | 'guard'>> & Pick<SignalingServerOptions, 'acceptingSessions' | 'vapidPublicKey' | 'guard'>;
  readonly #wss: WebSocketServer;
  readonly #log: Logger;
  readonly #sessions = new Map<string, AgentSession>();
  readonly #byAgent = new Map<string, Set<AgentSession>>();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  #closed = false;

  constructor(opts: SignalingServerOptions) {
    this.#opts = { path: '/ws', maxFrameBytes: 64 * 1024, ...opts };
    this.#log = opts.logger;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: this.#opts.maxFrameBytes, perMessageDeflate: false });
    this.#onUpgrade = (req, socket, head) => {
      const url = requestUrl(req.url);
      if (!url) {
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');

        return;
      }
      if (url.pathname !== this.#opts.path || this.#closed) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');

        return;
      }
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#onConnection(ws, req));
    };
    opts.http.on('upgrade', this.#onUpgrade);
    this.#heartbeat = setInterval(() => this.#checkHeartbeats(), Math.max(250, Math.floor(this.#opts.heartbeatIntervalMs / 2)));
    this.#heartbeat.unref();
  }

  /** Every session that is connected or within its grace period. */
  allSessions(): AgentSession[] {
    return [...this.#sessions.values()].filter((s) => s.state !== 'closed');
  }

  /** Sessions of an agent that are connected or within their grace period. */
  sessionsOf(agentId: string): AgentSession[] {
    return [...(this.#byAgent.get(agentId) ?? [])].filter((s) => s.state !== 'closed');
  }

  /** Whether an agent has a connected (not suspended) session. */
  isConnected(agentId: string): boolean {
    return this.sessionsOf(agentId).some((s) => s.state === 'connected');
  }

  /** Number of sessions by state. */
  counts(): { connected: number; suspended: number } {
    let connected = 0;
    let suspended = 0;
    for (const s of this.#sessions.values()) {
      if (s.state === 'connected') {
        connected++;
      } else if (s.state === 'suspended') {
        suspended++;
      }
    }

    return { connected, suspended };
  }

  /** Sends an event to every live session of an agent (queued for suspended ones). */
  sendToAgent<T extends EventType>(agentId: string, type: T, data: EventData[T]): void {
    for (const s of this.sessionsOf(agentId)) {
      this.sendToSession(s, type, data);
    }
  }

  /** Sends an event to one session (queued while it is suspended). */
  sendToSession<T extends EventType>(session: AgentSession, type: T, data: EventData[T]): void {
    const frame = JSON.stringify({ v: PROTOCOL_VERSION, type, data });
    if (session.state === 'connected' && session.ws?.readyState === WebSocket.OPEN) {
      session.ws.send(frame);
    } else if (session.state === 'suspended') {
      if (session.queue.length >= MAX_QUEUED_EVENTS) {
        session.queue.shift();
      }
      session.queue.push(frame);
    }
  }

  /**
   * Closes (4403, AUTH_REVOKED) and ends every session of this node that signed in with a revoked
   * token id. Returns how many were closed.
   */
  closeRevoked(jti: string): number {
    let n = 0;
    for (const s of [...this.#sessions.values()]) {
      if (s.state === 'closed' || s.jti !== jti) {
        continue;
      }
      if (s.ws) {
        this.#error(s.ws, undefined, 'AUTH_REVOKED', 'the token of this session was revoked');
        s.ws.close(CLOSE_CODES.AUTH_FAILED, 'AUTH_REVOKED');
      }
      s.ws = undefined;
      this.#endSession(s, 'closed');
      n++;
    }
    if (n > 0) {
      this.#log.warn({ sessions: n }, 'sessions of a revoked token closed');
    }

    return n;
  }

  #onConnection(ws: WebSocket, req: IncomingMessage): void {
    const remote = `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? 0}`;
    // the TCP peer (IPv4-mapped IPv6 as IPv4): what the lockout counts
    const address = (req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
    let session: AgentSession | undefined;
    let authenticating = false;
    const authTimer = setTimeout(() => {
      if (!session) {
        ws.close(CLOSE_CODES.UNAUTHENTICATED, 'authentication timeout');
      }
    }, this.#opts.authTimeoutMs);
    ws.on('message', (raw, isBinary) => {
      if (session) {
        session.lastSeen = Date.now();
      }
      if (isBinary) {
        this.#error(ws, undefined, 'BAD_REQUEST', 'binary frames are not part of the protocol');

        return;
      }
      let frame: unknown;
      try {
        const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : Array.isArray(raw) ? Buffer.concat(raw).toString('utf8') : Buffer.from(raw).toString('utf8');
        frame = JSON.parse(text);
      } catch {
        this.#error(ws, undefined, 'BAD_REQUEST', 'frame is not JSON');

        return;
      }
      const id = typeof (frame as { id?: unknown })?.id === 'string' ? (frame as { id: string }).id.slice(0, 64) : undefined;
      if (typeof frame === 'object' && frame !== null && (frame as { v?: unknown }).v !== PROTOCOL_VERSION) {
        this.#error(ws, id, 'UNSUPPORTED_VERSION', `protocol version ${String((frame as { v?: unknown }).v)} is not supported; this gateway speaks ${PROTOCOL_VERSION}`);
        ws.close(CLOSE_CODES.UNSUPPORTED_VERSION, 'unsupported protocol version');

        return;
      }
      const env = ENVELOPE.safeParse(frame);
      if (!env.success) {
        this.#error(ws, id, 'BAD_REQUEST', `bad envelope: ${describeZod(env.error)}`);

        return;
      }
      const { type } = env.data;
      if (!Object.hasOwn(REQUESTS, type)) {
        this.#error(ws, env.data.id, 'BAD_REQUEST', `unknown request type ${type}`);

        return;
      }
      const schema = REQUESTS[type as RequestType];
      const parsed = schema.safeParse(env.data.data ?? {});
      if (!parsed.success) {
        this.#error(ws, env.data.id, 'BAD_REQUEST', `${type}: ${describeZod(parsed.error)}`);

        return;
      }
      if (type === 'auth') {
        if (session || authenticating) {
          this.#error(ws, env.data.id, 'INVALID_STATE', 'already authenticated');

          return;
        }
        authenticating = true;
        void this.#authenticate(ws, env.data.id, parsed.data as RequestData<'auth'>, remote, address).then((s) => {
          authenticating = false;
          if (s) {
            clearTimeout(authTimer);
            session = s;
          }
        });

        return;
      }
      if (!session) {
        this.#error(ws, env.data.id, 'UNAUTHENTICATED', 'send auth first');
        ws.close(CLOSE_CODES.UNAUTHENTICATED, 'not authenticated');

        return;
      }
      if (!this.#takeToken(session)) {
        this.#error(ws, env.data.id, 'RATE_LIMITED', `more than ${this.#opts.maxRequestsPerSecond} requests per second`);

        return;
      }
      if (type === 'ping') {
        this.#respond(ws, env.data.id, { now: new Date().toISOString() });

        return;
      }
      const s = session;
      this.#opts.handler
        .onRequest(s, type as Exclude<RequestType, 'auth' | 'ping'>, parsed.data as never)
        .then(
          (data) => this.#respond(ws, env.data.id, data),
          (err: unknown) => {
            if (err instanceof SignalingError) {
              this.#error(ws, env.data.id, err.code, err.message);
            } else {
              this.#log.error({ err, type, agent: s.agentId }, 'signaling request failed');
              this.#error(ws, env.data.id, 'INTERNAL', `${type} failed: ${(err as Error).message}`);
            }
          },
        );
    });
    ws.on('pong', () => {
      if (session) {
        session.lastSeen = Date.now();
      }
    });
    ws.on('close', (code) => {
      clearTimeout(authTimer);
      if (session && session.ws === ws) {
        if (code === 1000) {
          // normal closure from the client: the agent signs off, no grace period
          session.ws = undefined;
          this.#endSession(session, 'closed');
        } else {
          this.#suspend(session);
        }
      }
    });
    ws.on('error', (err) => this.#log.debug({ err: err.message, remote }, 'agent WebSocket error'));
  }

  async #authenticate(ws: WebSocket, id: string, data: RequestData<'auth'>, remote: string, address: string): Promise<AgentSession | undefined> {
    if (this.#opts.acceptingSessions && !this.#opts.acceptingSessions() && !data.resume) {
      this.#error(ws, id, 'UNAVAILABLE', 'this gateway is draining; connect to another node');
      ws.close(CLOSE_CODES.GOING_AWAY, 'draining');

      return undefined;
    }
    const guard = this.#opts.guard;
    if (guard && (await guard.isLocked(address))) {
      this.#log.info({ remote }, 'agent sign-in refused: the address is locked after failed sign-ins');
      this.#error(ws, id, 'AUTH_LOCKED', 'too many failed sign-ins from this address; try again later');
      ws.close(CLOSE_CODES.AUTH_LOCKED, 'AUTH_LOCKED');

      return undefined;
    }
    let identity;
    try {
      identity = await this.#opts.verifier.verify(data.token);
    } catch (err) {
      const e = err instanceof AuthError ? err : new AuthError('AUTH_FAILED', (err as Error).message);
      // an expired token is an honest client's stale token, not a guess: only AUTH_FAILED counts
      const locked = e.code === 'AUTH_FAILED' && guard ? await guard.failed(address) : false;
      this.#log.info({ remote, code: e.code, locked }, locked ? 'agent authentication refused; the address is now locked' : 'agent authentication refused');
      this.#error(ws, id, e.code, e.message);
      ws.close(CLOSE_CODES.AUTH_FAILED, e.code);

      return undefined;
    }
    if (guard && (await guard.isRevoked(identity.jti))) {
      this.#log.info({ remote, agent: identity.agentId }, 'agent sign-in refused: the token was revoked');
      this.#error(ws, id, 'AUTH_REVOKED', 'this token was revoked');
      ws.close(CLOSE_CODES.AUTH_FAILED, 'AUTH_REVOKED');

      return undefined;
    }
    if (ws.readyState !== WebSocket.OPEN) {
      return undefined;
    }
    let session: AgentSession | undefined;
    let resumed = false;
    if (data.resume) {
      const old = this.#sessions.get(data.resume.sessionId);
      if (old && old.state !== 'closed' && old.agentId === identity.agentId && safeEqual(old.resumeToken, data.resume.resumeToken)) {
        session = old;
        resumed = true;
        clearTimeout(old.graceTimer);
        old.graceTimer = undefined;
        if (old.ws && old.ws !== ws && old.ws.readyState === WebSocket.OPEN) {
          old.ws.close(CLOSE_CODES.REPLACED, 'session resumed on another connection');
        }
        old.ws = ws;
        old.state = 'connected';
        old.lastSeen = Date.now();
      }
    }
    if (!session) {
      session = new AgentSession(identity.agentId, this.#opts.maxRequestsPerSecond);
      session.ws = ws;
      this.#sessions.set(session.id, session);
      let set = this.#byAgent.get(session.agentId);
      if (!set) {
        set = new Set();
        this.#byAgent.set(session.agentId, set);
      }
      set.add(session);
    }
    session.jti = identity.jti;
    session.deviceId = data.deviceId ?? session.deviceId;
    let extra: Pick<ResponseData['auth'], 'presence' | 'calls'>;
    try {
      extra = await this.#opts.handler.onSessionReady(session, resumed);
    } catch (err) {
      this.#log.error({ err, agent: session.agentId }, 'cannot set up agent session');
      this.#error(ws, id, err instanceof SignalingError ? err.code : 'INTERNAL', (err as Error).message);
      if (!resumed) {
        this.#endSession(session, 'closed');
      }
      ws.close(CLOSE_CODES.GOING_AWAY, 'session setup failed');

      return undefined;
    }
    this.#respond(ws, id, {
      sessionId: session.id,
      resumeToken: session.resumeToken,
      agentId: session.agentId,
      resumed,
      heartbeatIntervalMs: this.#opts.heartbeatIntervalMs,
      resumeGraceMs: this.#opts.resumeGraceMs,
      ...extra,
      ...(this.#opts.vapidPublicKey === undefined ? {} : { webPush: { vapidPublicKey: this.#opts.vapidPublicKey } }),
    } satisfies ResponseData['auth']);
    // events that happened while the session was away, in order
    for (const frame of session.queue.splice(0)) {
      ws.send(frame);
    }
    this.#log.info({ agent: session.agentId, session: session.id, resumed, remote }, resumed ? 'agent session resumed' : 'agent session started');

    return session;
  }

  #suspend(session: AgentSession): void {
    if (session.state !== 'connected') {
      return;
    }
    session.state = 'suspended';
    session.ws = undefined;
    this.#log.info({ agent: session.agentId, session: session.id, graceMs: this.#opts.resumeGraceMs }, 'agent session dropped; waiting for it to resume');
    this.#opts.handler.onSessionSuspended(session);
    session.graceTimer = setTimeout(() => this.#endSession(session, 'grace_expired'), this.#opts.resumeGraceMs);
    session.graceTimer.unref();
  }

  #endSession(session: AgentSession, reason: 'grace_expired' | 'closed' | 'shutdown'): void {
    if (session.state === 'closed') {
      return;
    }
    session.state = 'closed';
    clearTimeout(session.graceTimer);
    this.#sessions.delete(session.id);
    const set = this.#byAgent.get(session.agentId);
    set?.delete(session);
    if (set?.size === 0) {
      this.#byAgent.delete(session.agentId);
    }
    this.#log.info({ agent: session.agentId, session: session.id, reason }, 'agent session ended');
    this.#opts.handler.onSessionEnded(session, reason);
  }

  #checkHeartbeats(): void {
    const now = Date.now();
    for (const s of this.#sessions.values()) {
      if (s.state !== 'connected' || !s.ws) {
        continue;
      }
      if (now - s.lastSeen > 2 * this.#opts.heartbeatIntervalMs) {
        this.#log.info({ agent: s.agentId, session: s.id }, 'agent session missed its heartbeats');
        const ws = s.ws;
        this.#suspend(s);
        ws.terminate();
      } else if (s.ws.readyState === WebSocket.OPEN) {
        s.ws.ping();
      }
    }
  }

  #takeToken(s: AgentSession): boolean {
    const now = Date.now();
    const rate = this.#opts.maxRequestsPerSecond;
    s.tokens = Math.min(rate, s.tokens + ((now - s.lastRefill) / 1000) * rate);
    s.lastRefill = now;
    if (s.tokens < 1) {
      return false;
    }
    s.tokens -= 1;

    return true;
  }

  #respond(ws: WebSocket, id: string, data: unknown): void {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id, type: 'response', ok: true, data }));
    }
  }

  #error(ws: WebSocket, id: string | undefined, code: ErrorCode, message: string): void {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ v: PROTOCOL_VERSION, id: id ?? null, type: 'response', ok: false, error: { code, message } }));
    }
  }

  /**
   * Draining: closes (1001, "draining") the connected sessions of agents for whom `busy` is
   * false, and ends them at once, so that their clients reconnect (through the load balancer) to
   * a node that takes calls. Sessions of busy agents stay until a later call finds them idle.
   * Returns how many were closed.
   */
  closeIdleSessions(busy: (agentId: string) => boolean): number {
    let n = 0;
    for (const s of [...this.#sessions.values()]) {
      if (s.state === 'closed' || busy(s.agentId)) {
        continue;
      }
      s.ws?.close(CLOSE_CODES.GOING_AWAY, 'draining');
      this.#endSession(s, 'shutdown');
      n++;
    }

    return n;
  }

  /** Closes every connection (1001) and ends the sessions. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.#opts.http.off('upgrade', this.#onUpgrade);
    for (const s of [...this.#sessions.values()]) {
      s.ws?.close(CLOSE_CODES.GOING_AWAY, 'gateway stopping');
      this.#endSession(s, 'shutdown');
    }
    for (const ws of this.#wss.clients) {
      ws.terminate();
    }
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);

  return x.length === y.length && timingSafeEqual(x, y);
}

function describeZod(err: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return err.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.map(String).join('.') : '(data)'}: ${i.message}`)
    .join('; ');
}
