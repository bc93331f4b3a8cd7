/**
 * The control port of the embedded SIP engine: the server side of the drachtio wire protocol
 * (../shared/docs/drachtio-wire-protocol.md §5). It authenticates apps with the shared secret,
 * keeps their route registrations, answers ping, and hands `sip` and `proxy` messages to the
 * engine core. New requests are routed round-robin per method over the apps that asked for it.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { type Logger } from '../../../log/logger.js';
import { encodeFrame, FrameDecoder, FrameError, splitPayload } from './framing.js';

/** The version reported to apps: drachtio-server's protocol level plus ours (srf pings ≥ v0.8.2). */
export const PROTOCOL_VERSION = 'v0.9.10';

/** One connected app (a drachtio-srf instance). */
export class AppConnection {
  readonly id = randomUUID();
  readonly socket: net.Socket;
  readonly remote: string;
  tags: string[] = [];
  authenticated = false;
  readonly routes = new Set<string>();
  #closed = false;
  readonly #log: Logger | undefined;

  /** @private */
  constructor(socket: net.Socket, logger?: Logger) {
    this.socket = socket;
    this.remote = `${socket.remoteAddress ?? ''}:${socket.remotePort ?? 0}`;
    this.#log = logger;
  }

  /** Whether the connection is gone. */
  get closed(): boolean {
    return this.#closed || this.socket.destroyed;
  }

  /** @private */
  markClosed(): void {
    this.#closed = true;
  }

  /**
   * Sends one frame made of leader tokens (the fresh message id is added first) and optional SIP text.
   * A token holding "|", CR or LF would shift every later token (srf reads them by position) or
   * end the leader early, so such a frame is logged and dropped, never sent.
   * @returns whether the frame was sent
   */
  send(tokens: string[], sip?: string): boolean {
    if (this.closed) {
      return false;
    }
    for (const t of tokens) {
      if (t.includes('|') || t.includes('\r') || t.includes('\n')) {
        this.#log?.warn({ remote: this.remote, type: tokens[0], token: t.slice(0, 120) }, 'refusing to send a control frame: a leader token holds "|", CR or LF');

        return false;
      }
    }
    const leader = [randomUUID(), ...tokens].join('|');
    this.socket.write(encodeFrame(sip === undefined ? leader : `${leader}\r\n${sip}`));

    return true;
  }

  /** Sends a `response` frame answering the app message `msgId`. */
  reply(msgId: string, tokens: string[], sip?: string): boolean {
    return this.send(['response', msgId, ...tokens], sip);
  }

  /** Closes the connection. */
  close(): void {
    this.#closed = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

/** What the control server hands to the engine core. */
export interface ControlHandler {
  /** A `sip` or `proxy` message from an authenticated app. */
  onAppMessage(conn: AppConnection, tokens: string[], sip: string | undefined): void;
  /** An app connection closed (after authentication). */
  onAppDisconnect(conn: AppConnection): void;
}

/** Options of ControlServer.start(). */
export interface ControlServerOptions {
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  secret: string;
  /** Serve the control port over TLS instead of plain TCP. */
  tls?: tls.TlsOptions;
  /** Largest frame accepted, bytes (default 1 MiB). */
  maxFrameBytes?: number;
  /** Largest frame accepted before authentication, bytes (default 4096; srf's authenticate is far smaller). */
  maxPreAuthFrameBytes?: number;
  /** A connection must authenticate within this many ms or is closed (default 5000). */
  authTimeoutMs?: number;
  /** Most concurrent control connections from one source address (default 64). */
  maxConnectionsPerSource?: number;
  /**
   * After this many wrong secrets from one source address within authFailureWindowMs, that
   * address is refused until the window has passed (default 10, window 60000 ms).
   */
  maxAuthFailures?: number;
  authFailureWindowMs?: number;
  /** Transports for the authenticate reply: public and local "proto/host:port" lists. */
  hostports(): { public: string; local: string };
  /** Version string after PROTOCOL_VERSION, e.g. "ringbridge-0.1.0". */
  versionSuffix: string;
  handler: ControlHandler;
  logger: Logger;
}

/** A listening control port. */
export class ControlServer {
  readonly #opts: ControlServerOptions;
  readonly #server: net.Server;
  readonly #conns = new Set<AppConnection>();
  readonly #rr = new Map<string, number>();
  readonly #log: Logger;
  readonly #perSource = new Map<string, number>();
  readonly #authFailures = new Map<string, { count: number; since: number }>();
  #lastRefusalLog = 0;

  private constructor(opts: ControlServerOptions, server: net.Server) {
    this.#opts = opts;
    this.#server = server;
    this.#log = opts.logger;
  }

  /**
   * Listens on the control port.
   * @throws {Error} when the port cannot be bound
   */
  static async start(opts: ControlServerOptions): Promise<ControlServer> {
    const holder: { self?: ControlServer } = {};
    const onSocket = (socket: net.Socket) => {
      if (holder.self) {
        holder.self.#adopt(socket);
      } else {
        socket.destroy();
      }
    };
    const server = opts.tls ? tls.createServer(opts.tls, onSocket) : net.createServer(onSocket);
    const self = new ControlServer(opts, server);
    holder.self = self;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => opts.logger.error({ err }, 'control port error'));

    return self;
  }

  /** The bound address. */
  address(): net.AddressInfo {
    return this.#server.address() as net.AddressInfo;
  }

  /** Authenticated connections. */
  get connections(): AppConnection[] {
    return [...this.#conns].filter((c) => c.authenticated && !c.closed);
  }

  /**
   * The next app registered for a verb (lower-case method or cdr:*), round-robin over live
   * connections; undefined when none.
   */
  pickRoute(verb: string): AppConnection | undefined {
    const v = verb.toLowerCase();
    const candidates = this.connections.filter((c) => c.routes.has(v));
    if (candidates.length === 0) {
      return undefined;
    }
    const i = (this.#rr.get(v) ?? 0) % candidates.length;
    this.#rr.set(v, i + 1);

    return candidates[i];
  }

  /** Whether a source address has used up its wrong secrets for now. */
  #locked(source: string): boolean {
    const f = this.#authFailures.get(source);
    if (!f) {
      return false;
    }
    if (Date.now() - f.since > (this.#opts.authFailureWindowMs ?? 60_000)) {
      this.#authFailures.delete(source);

      return false;
    }

    return f.count >= (this.#opts.maxAuthFailures ?? 10);
  }

  #authFailed(source: string): void {
    const now = Date.now();
    const window = this.#opts.authFailureWindowMs ?? 60_000;
    const f = this.#authFailures.get(source);
    if (!f || now - f.since > window) {
      this.#authFailures.set(source, { count: 1, since: now });
    } else {
      f.count++;
    }
    if (this.#authFailures.size > 10_000) {
      for (const [k, v] of this.#authFailures) {
        if (now - v.since > window) {
          this.#authFailures.delete(k);
        }
      }
    }
  }

  #refuse(socket: net.Socket, source: string, why: string): void {
    const now = Date.now();
    if (now - this.#lastRefusalLog > 10_000) {
      this.#lastRefusalLog = now;
      this.#log.warn({ source }, `control connection refused: ${why}`);
    }
    socket.destroy();
  }

  #adopt(socket: net.Socket): void {
    const source = socket.remoteAddress ?? '';
    if (this.#locked(source)) {
      this.#refuse(socket, source, 'too many wrong secrets from this address');

      return;
    }
    const n = this.#perSource.get(source) ?? 0;
    if (n >= (this.#opts.maxConnectionsPerSource ?? 64)) {
      this.#refuse(socket, source, 'too many connections from this address');

      return;
    }
    this.#perSource.set(source, n + 1);
    socket.once('close', () => {
      const left = (this.#perSource.get(source) ?? 1) - 1;
      if (left <= 0) {
        this.#perSource.delete(source);
      } else {
        this.#perSource.set(source, left);
      }
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    const conn = new AppConnection(socket, this.#log);
    this.#conns.add(conn);
    // Until it authenticates a connection gets small frames only, and little time.
    const decoder = new FrameDecoder(this.#opts.maxPreAuthFrameBytes ?? 4096);
    const authTimer = setTimeout(() => {
      if (!conn.authenticated) {
        this.#log.debug({ remote: conn.remote }, 'closing control connection: no authentication in time');
        socket.destroy();
      }
    }, this.#opts.authTimeoutMs ?? 5000);
    authTimer.unref();
    const onAuthenticated = () => {
      clearTimeout(authTimer);
      decoder.maxFrameBytes = this.#opts.maxFrameBytes ?? 1024 * 1024;
    };
    socket.on('data', (chunk: Buffer) => {
      let payloads: string[];
      let malformed: Error | undefined;
      try {
        payloads = decoder.push(chunk);
      } catch (err) {
        // frames before the malformed one are still handled (an app's last answers matter)
        payloads = err instanceof FrameError ? err.frames : [];
        malformed = err as Error;
      }
      for (const p of payloads) {
        if (conn.closed) {
          break;
        }
        try {
          this.#onPayload(conn, p, onAuthenticated);
        } catch (err) {
          if (err instanceof FrameError) {
            socket.destroy();

            return;
          }
          this.#log.error({ err, remote: conn.remote }, 'control message handling failed');
        }
      }
      if (malformed) {
        this.#log.warn({ err: malformed.message, remote: conn.remote }, 'closing control connection: malformed frame');
        socket.destroy();
      }
    });
    socket.on('error', (err) => this.#log.debug({ err: err.message, remote: conn.remote }, 'control connection error'));
    socket.on('close', () => {
      clearTimeout(authTimer);
      this.#conns.delete(conn);
      conn.markClosed();
      if (conn.authenticated) {
        this.#log.info({ remote: conn.remote, tags: conn.tags }, 'application disconnected from the control port');
        this.#opts.handler.onAppDisconnect(conn);
      }
    });
  }

  #onPayload(conn: AppConnection, payload: string, onAuthenticated: () => void): void {
    const { tokens, sip } = splitPayload(payload);
    const [msgId = '', type = ''] = tokens;
    if (msgId === '') {
      throw new FrameError('Invalid message format: empty message id');
    }
    if (!conn.authenticated) {
      if (type !== 'authenticate') {
        conn.reply(msgId, ['NO', 'authenticate first']);
        conn.close();

        return;
      }
      this.#authenticate(conn, msgId, tokens[2] ?? '', tokens[3] ?? '');
      if (conn.authenticated) {
        onAuthenticated();
      }

      return;
    }
    switch (type) {
      case 'authenticate':
        conn.reply(msgId, ['NO', 'already authenticated']);
        break;
      case 'route': {
        const verb = (tokens[2] ?? '').toLowerCase();
        if (!/^[a-z:]+$/.test(verb)) {
          conn.reply(msgId, ['NO', `invalid verb: ${verb}`]);
          break;
        }
        conn.routes.add(verb);
        conn.reply(msgId, ['OK']);
        break;
      }
      case 'remove_route':
        conn.routes.delete((tokens[2] ?? '').toLowerCase());
        conn.reply(msgId, ['OK']);
        break;
      case 'ping':
        conn.reply(msgId, ['OK', 'pong']);
        break;
      case 'sip':
      case 'proxy':
        this.#opts.handler.onAppMessage(conn, tokens, sip);
        break;
      default:
        conn.reply(msgId, ['NO', 'Unknown message type']);
        conn.close();
    }
  }

  #authenticate(conn: AppConnection, msgId: string, secret: string, tags: string): void {
    const source = conn.socket.remoteAddress ?? '';
    if (this.#locked(source)) {
      conn.reply(msgId, ['NO', 'too many failed attempts']);
      conn.close();

      return;
    }
    const want = Buffer.from(this.#opts.secret);
    const got = Buffer.from(secret);
    if (want.length !== got.length || !timingSafeEqual(want, got)) {
      this.#log.warn({ remote: conn.remote }, 'control connection refused: incorrect secret');
      this.#authFailed(source);
      conn.reply(msgId, ['NO', 'incorrect secret']);
      conn.close();

      return;
    }
    conn.authenticated = true;
    conn.tags = tags === '' ? [] : tags.split(',');
    const hp = this.#opts.hostports();
    conn.reply(msgId, ['OK', hp.public, `${PROTOCOL_VERSION}-${this.#opts.versionSuffix}`, hp.local]);
    this.#log.info({ remote: conn.remote, tags: conn.tags }, 'application connected to the control port');
  }

  /** Closes the port and every connection. */
  async close(): Promise<void> {
    for (const c of this.#conns) {
      c.socket.destroy();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
