/**
 * The SIP transport layer (RFC 3261 §18): UDP, TCP and TLS listeners on IPv4 and IPv6, stream
 * framing, connection reuse per flow, RFC 3581 received/rport stamping, size limits, RFC 5626
 * keep-alives, and the stateless 400 for requests that do not parse.
 */
import { randomUUID } from 'node:crypto';
import dgram from 'node:dgram';
import { isStun, StunResponder } from './stun.js';
import dns from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { type Logger } from '../../../log/logger.js';
import { loadTlsFiles, TlsFileWatcher } from '../../../net/tls-files.js';
import { formatVia, parseMessage, parseVia, SipMessage, SipParseError } from '../message.js';
import { StreamFramer } from './framer.js';
import { type Destination, type Flow, type HostPort, type ListenPoint, type SipProtocol } from './types.js';

/** Listen configuration of the transport layer. */
export interface TransportOptions {
  /** Addresses to bind; "::" is skipped with a warning on hosts without IPv6. */
  listenAddresses: string[];
  /** Address advertised in Via/Contact/Record-Route; empty: derived from the bound address. */
  publicAddress: string;
  udp: { enabled: boolean; port: number };
  tcp: { enabled: boolean; port: number };
  /** TLS listener and outbound TLS; the PEM files are reloaded when they change (every `reloadIntervalMs`, default 2000). */
  tls: { enabled: boolean; port: number; certFile: string; keyFile: string; caFile?: string; verifyPeer?: boolean; reloadIntervalMs?: number };
  /** Largest message accepted, bytes (default 65535). */
  maxMessageBytes?: number;
  /** Largest header section, bytes (default 16384). */
  maxHeaderBytes?: number;
  /** Most header lines per message (default 256). */
  maxHeaders?: number;
  /** Stream connections idle this long are closed, ms (default 600000). */
  idleTimeoutMs?: number;
  /** Most concurrent stream connections (default 10000). */
  maxConnections?: number;
  /** Most concurrent inbound stream connections from one source IP address (default 256). */
  maxConnectionsPerSource?: number;
  /**
   * Deadline for a complete SIP message, ms (default 10000): an inbound connection must deliver
   * its first message this long after it was accepted (TLS: after the handshake, which has the same
   * deadline), and a message once started must be complete within it; else the connection is
   * closed.
   */
  messageTimeoutMs?: number;
  /**
   * Answer RFC 5626 §4.4.2 STUN Binding keep-alives on the UDP listeners (only when SIP devices
   * register here: `sipDevices.enabled`), at most `perSourcePerSecond` per source (IPv6 by /64,
   * default 5) and `totalPerSecond` in all (default 2000). Off (default): STUN datagrams are
   * dropped unanswered.
   */
  stunKeepAlives?: { enabled: boolean; perSourcePerSecond?: number; totalPerSecond?: number };
  logger: Logger;
}

/** Thrown when a message cannot be sent. */
export class TransportError extends Error {
  override readonly name = 'TransportError';
  readonly code = 'RB_ERR_SIP_TRANSPORT';
}

/** Counters of the transport layer, for metrics. */
export interface TransportStats {
  received: number;
  sent: number;
  /** Messages that did not parse and were answered 400. */
  rejected: number;
  /** Messages that did not parse and could not be answered; dropped. */
  dropped: number;
  connections: number;
}

interface StreamConn {
  id: string;
  protocol: 'tcp' | 'tls';
  socket: net.Socket;
  framer: StreamFramer;
  local: HostPort;
  remote: HostPort;
  ready: Promise<void>;
  /** Last complete SIP message received or sent (keep-alive pings do not count). */
  lastActivity: number;
  /** Last RFC 5626 ping received. */
  lastPing: number;
  /** Until when a registration keeps the connection open as long as pings arrive (RFC 5626 flows). */
  heldUntil: number;
  /** When the message being received started (undefined between messages). */
  partialSince?: number;
  /** Accepted from a peer (not opened by us). */
  inbound: boolean;
  /** Inbound: the first-message deadline, cleared by the first complete message. */
  firstMessageTimer?: NodeJS.Timeout;
  /** Being closed by us (idle or over a deadline); never reused for sending. */
  closing: boolean;
}

interface UdpListener {
  point: ListenPoint;
  socket: dgram.Socket;
}

/** Events: 'message' (msg: SipMessage, flow: Flow, bytes: number). */
export class TransportLayer extends EventEmitter<{ message: [SipMessage, Flow, number] }> {
  readonly #opts: Required<Omit<TransportOptions, 'logger' | 'tls' | 'stunKeepAlives'>> & Pick<TransportOptions, 'logger' | 'tls'>;
  /** Answers STUN keep-alives; undefined when they are off. */
  readonly #stun: StunResponder | undefined;
  readonly #log: Logger;
  readonly #points: ListenPoint[] = [];
  readonly #udp: UdpListener[] = [];
  readonly #servers: net.Server[] = [];
  readonly #conns = new Map<string, StreamConn>();
  readonly #connsByRemote = new Map<string, StreamConn>();
  /** Open inbound connections per source IP address (accepted sockets, TLS handshakes included). */
  readonly #connsPerSource = new Map<string, number>();
  #lastRefusalLog = 0;
  #tlsContext?: tls.SecureContextOptions;
  #tlsWatcher?: TlsFileWatcher;
  #idleTimer?: NodeJS.Timeout;
  #closed = false;
  readonly stats: TransportStats = { received: 0, sent: 0, rejected: 0, dropped: 0, connections: 0 };

  private constructor(opts: TransportOptions) {
    super();
    this.#opts = {
      maxMessageBytes: 65535,
      maxHeaderBytes: 16384,
      maxHeaders: 256,
      idleTimeoutMs: 600_000,
      maxConnections: 10_000,
      maxConnectionsPerSource: 256,
      messageTimeoutMs: 10_000,
      ...opts,
    };
    const stun = opts.stunKeepAlives;
    this.#stun = stun?.enabled
      ? new StunResponder({
          ...(stun.perSourcePerSecond === undefined ? {} : { perSourcePerSecond: stun.perSourcePerSecond }),
          ...(stun.totalPerSecond === undefined ? {} : { totalPerSecond: stun.totalPerSecond }),
        })
      : undefined;
    this.#log = opts.logger;
  }

  /**
   * Binds every configured listener. Port 0 picks a free port; UDP and TCP then share one number
   * when possible, as SIP peers expect.
   * @throws {TransportError} when a listener cannot be bound (other than a missing IPv6 stack)
   */
  static async start(opts: TransportOptions): Promise<TransportLayer> {
    const layer = new TransportLayer(opts);
    try {
      await layer.#bindAll();
    } catch (err) {
      await layer.close();
      if (err instanceof TransportError) {
        throw err;
      }
      const e = err as NodeJS.ErrnoException;
      // Node repeats the address in the message ("bind EADDRINUSE 0.0.0.0:5060: ..."): say it once, with the keys to change.
      const hint = e.code === 'EADDRINUSE' ? ' (another process uses it; change sip.udp.port / sip.tcp.port / sip.tls.port, e.g. RINGBRIDGE_SIP__UDP__PORT)' : '';
      throw new TransportError(`cannot bind SIP listeners: ${e.code ? `${e.code} ${(e as { address?: string }).address ?? ''}:${(e as { port?: number }).port ?? ''}` : e.message}${hint}`, { cause: err });
    }
    // often enough for the message deadline too (a partial message is checked here, not by a timer
    // per message)
    const every = Math.max(100, Math.min(layer.#opts.idleTimeoutMs, layer.#opts.messageTimeoutMs / 2, 30_000));
    layer.#idleTimer = setInterval(() => layer.#reapIdle(), every);
    layer.#idleTimer.unref();

    return layer;
  }

  /** The bound listeners. */
  get listenPoints(): readonly ListenPoint[] {
    return this.#points;
  }

  /** The listener to advertise for a protocol and address family (first match, else any of the protocol). */
  listenPointFor(protocol: SipProtocol, family?: 4 | 6): ListenPoint | undefined {
    return this.#points.find((p) => p.protocol === protocol && (!family || p.family === family)) ?? this.#points.find((p) => p.protocol === protocol);
  }

  /** Whether host:port names one of our own listeners (for "request to myself" and Route checks). */
  isLocal(host: string, port: number | undefined, protocol?: SipProtocol): boolean {
    const h = host.replace(/^\[|\]$/g, '');
    return this.#points.some(
      (p) =>
        (protocol === undefined || p.protocol === protocol || (protocol === 'tcp' && p.protocol === 'udp') || (protocol === 'udp' && p.protocol === 'tcp')) &&
        (port === undefined ? p.port === (p.protocol === 'tls' ? 5061 : 5060) : p.port === port) &&
        (h === p.advertisedAddress || h === p.address || (isWildcard(p.address) && localAddresses().has(h))),
    );
  }

  async #bindAll(): Promise<void> {
    const { listenAddresses, udp, tcp, tls: tlsOpts } = this.#opts;
    if (tlsOpts.enabled) {
      const paths = { certFile: tlsOpts.certFile, keyFile: tlsOpts.keyFile, ...(tlsOpts.caFile ? { caFile: tlsOpts.caFile } : {}) };
      this.#tlsContext = loadTlsFiles(paths).options;
      // renewed files: new inbound and outbound TLS connections use them, open ones keep theirs
      this.#tlsWatcher = new TlsFileWatcher({
        paths,
        name: 'sip-tls',
        logger: this.#opts.logger,
        ...(tlsOpts.reloadIntervalMs === undefined ? {} : { intervalMs: tlsOpts.reloadIntervalMs }),
        onReload: (loaded) => {
          this.#tlsContext = loaded.options;
          for (const server of this.#servers) {
            if (server instanceof tls.Server) {
              server.setSecureContext(loaded.options);
            }
          }
        },
      });
    }
    for (const address of listenAddresses) {
      const family: 4 | 6 = net.isIPv6(address) ? 6 : 4;
      try {
        let sharedPort = udp.port;
        if (udp.enabled) {
          sharedPort = await this.#bindUdp(address, family, udp.port, tcp.enabled && tcp.port === 0);
        }
        if (tcp.enabled) {
          const port = tcp.port === 0 && udp.enabled ? sharedPort : tcp.port;
          await this.#bindStream('tcp', address, family, port);
        }
        if (tlsOpts.enabled) {
          await this.#bindStream('tls', address, family, tlsOpts.port);
        }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (family === 6 && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
          this.#log.warn({ address, code }, 'IPv6 is not available on this host; skipping this SIP listen address');
          continue;
        }
        throw err;
      }
    }
    if (this.#points.length === 0) {
      throw new TransportError('no SIP listener could be bound (check sip.listenAddresses and the enabled transports)');
    }
  }

  /** Binds UDP; when `pairWithTcp`, retries until the same port is free for TCP too. */
  async #bindUdp(address: string, family: 4 | 6, port: number, pairWithTcp: boolean): Promise<number> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6, reuseAddr: false });
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(port, address, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      const bound = socket.address().port;
      if (pairWithTcp && port === 0 && !(await tcpPortFree(address, bound))) {
        socket.close();
        continue;
      }
      this.#attachUdp(socket, address, family, bound);

      return bound;
    }
    throw new TransportError(`no port free for both UDP and TCP on ${address}`);
  }

  #attachUdp(socket: dgram.Socket, address: string, family: 4 | 6, port: number): void {
    const point = this.#point('udp', address, family, port);
    socket.on('message', (data, rinfo) => {
      const flow: Flow = { protocol: 'udp', local: { address: point.address, port }, remote: { address: rinfo.address, port: rinfo.port } };
      this.#onData(data, flow, true);
    });
    socket.on('error', (err) => this.#log.error({ err, address, port }, 'SIP UDP socket error'));
    // Room for bursts: the default receive buffer drops datagrams under load.
    try {
      socket.setRecvBufferSize(4 * 1024 * 1024);
      socket.setSendBufferSize(4 * 1024 * 1024);
    } catch {
      // kernel limits (net.core.rmem_max) may refuse; the defaults still work
    }
    this.#udp.push({ point, socket });
  }

  async #bindStream(protocol: 'tcp' | 'tls', address: string, family: 4 | 6, port: number): Promise<void> {
    const server =
      protocol === 'tls'
        ? tls.createServer({ ...this.#tlsContext, handshakeTimeout: this.#opts.messageTimeoutMs }, (s) => this.#adoptSocket(s, 'tls'))
        : net.createServer((s) => this.#admit(s) && this.#adoptSocket(s, 'tcp'));
    if (protocol === 'tls') {
      // counted before the handshake: a handshake is work and a slot too
      server.prependListener('connection', (raw: net.Socket) => this.#admit(raw));
      server.on('tlsClientError', (err: Error) => this.#log.debug({ err: err.message }, 'TLS handshake failed'));
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host: address, ipv6Only: family === 6 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.#log.error({ err, protocol, address }, 'SIP stream listener error'));
    this.#servers.push(server);
    this.#point(protocol, address, family, (server.address() as net.AddressInfo).port);
  }

  #point(protocol: SipProtocol, address: string, family: 4 | 6, port: number): ListenPoint {
    const advertised = this.#opts.publicAddress || (isWildcard(address) ? firstInterfaceAddress(family) : address);
    const point: ListenPoint = { protocol, address, port, advertisedAddress: advertised, advertisedPort: port, family };
    this.#points.push(point);

    return point;
  }

  /**
   * Counts an accepted socket against its source address's share; refuses (destroys) it when the
   * source already holds maxConnectionsPerSource connections.
   * @returns whether the socket may stay
   */
  #admit(socket: net.Socket): boolean {
    const source = normaliseAddress(socket.remoteAddress ?? '');
    const n = this.#connsPerSource.get(source) ?? 0;
    if (n >= this.#opts.maxConnectionsPerSource) {
      const now = Date.now();
      if (now - this.#lastRefusalLog > 10_000) {
        this.#lastRefusalLog = now;
        this.#log.warn({ source, max: n }, 'too many SIP connections from one source; refusing more');
      }
      socket.destroy();

      return false;
    }
    this.#connsPerSource.set(source, n + 1);
    socket.once('close', () => this.#release(source));

    return true;
  }

  #release(source: string): void {
    const n = (this.#connsPerSource.get(source) ?? 1) - 1;
    if (n <= 0) {
      this.#connsPerSource.delete(source);
    } else {
      this.#connsPerSource.set(source, n);
    }
  }

  #adoptSocket(socket: net.Socket, protocol: 'tcp' | 'tls', ready?: Promise<void>, remote?: HostPort): StreamConn | undefined {
    if (socket.destroyed) {
      return undefined;
    }
    if (this.#conns.size >= this.#opts.maxConnections) {
      this.#log.warn({ max: this.#opts.maxConnections }, 'too many SIP connections; refusing one');
      socket.destroy();

      return undefined;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    const now = Date.now();
    const inbound = ready === undefined;
    const conn: StreamConn = {
      id: randomUUID(),
      protocol,
      socket,
      framer: new StreamFramer({ maxHeaderBytes: this.#opts.maxHeaderBytes, maxMessageBytes: this.#opts.maxMessageBytes }),
      local: { address: normaliseAddress(socket.localAddress ?? ''), port: socket.localPort ?? 0 },
      remote: remote ?? { address: normaliseAddress(socket.remoteAddress ?? ''), port: socket.remotePort ?? 0 },
      ready: ready ?? Promise.resolve(),
      lastActivity: now,
      lastPing: 0,
      heldUntil: 0,
      inbound,
      closing: false,
    };
    if (inbound) {
      // a peer that connects must say something within the deadline (no idle slot holders)
      conn.firstMessageTimer = setTimeout(() => {
        this.#log.debug({ remote: conn.remote }, 'closing SIP connection: no complete message within the deadline');
        socket.destroy();
      }, this.#opts.messageTimeoutMs);
      conn.firstMessageTimer.unref();
    }
    this.#registerConn(conn);
    socket.on('data', (chunk: Buffer) => {
      let progress = false;
      for (const ev of conn.framer.push(chunk)) {
        if (ev.kind === 'ping') {
          // RFC 5626 keep-alives do not count as activity (see #reapIdle)
          conn.lastPing = Date.now();
          socket.write('\r\n');
        } else if (ev.kind === 'error') {
          this.stats.dropped++;
          this.#log.warn({ reason: ev.reason, remote: conn.remote }, 'closing SIP connection: unframeable stream');
          socket.destroy();
        } else {
          progress = true;
          conn.lastActivity = Date.now();
          if (conn.firstMessageTimer) {
            clearTimeout(conn.firstMessageTimer);
            conn.firstMessageTimer = undefined;
          }
          this.#onData(ev.data, this.#flowOf(conn), false);
        }
      }
      // the deadline runs from the start of the message still incomplete (a busy stream whose
      // reads always end inside a message keeps making progress)
      if (conn.framer.pending === 0) {
        conn.partialSince = undefined;
      } else if (progress || conn.partialSince === undefined) {
        conn.partialSince = Date.now();
      }
    });
    socket.on('error', (err) => this.#log.debug({ err: err.message, remote: conn.remote }, 'SIP connection error'));
    socket.on('close', () => {
      clearTimeout(conn.firstMessageTimer);
      this.#unregisterConn(conn);
    });

    return conn;
  }

  #registerConn(conn: StreamConn): void {
    this.#conns.set(conn.id, conn);
    this.#connsByRemote.set(remoteKey(conn.protocol, conn.remote), conn);
    this.stats.connections = this.#conns.size;
  }

  #unregisterConn(conn: StreamConn): void {
    this.#conns.delete(conn.id);
    const key = remoteKey(conn.protocol, conn.remote);
    if (this.#connsByRemote.get(key) === conn) {
      this.#connsByRemote.delete(key);
    }
    this.stats.connections = this.#conns.size;
  }

  #flowOf(conn: StreamConn): Flow {
    return { protocol: conn.protocol, local: conn.local, remote: conn.remote, connectionId: conn.id };
  }

  /** Sends a STUN answer back on the UDP listener it came in on; never throws (a failure is logged at debug). */
  #sendStun(res: Buffer, flow: Flow): void {
    const listener = this.#udp.find((u) => u.point.address === flow.local.address && u.point.port === flow.local.port);
    if (!listener) {
      return;
    }
    try {
      listener.socket.send(res, flow.remote.port, flow.remote.address, (err) => {
        if (err) {
          this.#log.debug({ err: err.message }, 'STUN keep-alive answer not sent');
        }
      });
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'STUN keep-alive answer not sent');
    }
  }

  #onData(data: Buffer, flow: Flow, datagram: boolean): void {
    if (this.#closed) {
      return;
    }
    if (datagram && data.length <= 4 && /^[\r\n]*$/.test(data.toString('latin1'))) {
      return; // UDP keep-alive: many UAs send bare CRLFs
    }
    if (datagram && isStun(data)) {
      // RFC 5626 §4.4.2 / §8.4: STUN Binding keep-alives of outbound devices on the SIP port; off
      // unless SIP devices register here, rate-limited (the source of a datagram is not verified)
      const res = this.#stun?.answer(data, flow.remote);
      if (res) {
        this.#sendStun(res, flow);
      }

      return;
    }
    let msg: SipMessage;
    try {
      msg = parseMessage(data, { datagram, maxHeaders: this.#opts.maxHeaders, maxHeaderBytes: this.#opts.maxHeaderBytes });
    } catch (err) {
      this.#onParseError(err, flow);

      return;
    }
    this.stats.received++;
    if (msg.isRequest) {
      stampVia(msg, flow.remote);
    }
    try {
      this.emit('message', msg, flow, data.length);
    } catch (err) {
      this.#log.error({ err }, 'SIP message handler threw');
    }
  }

  #onParseError(err: unknown, flow: Flow): void {
    if (!(err instanceof SipParseError)) {
      this.stats.dropped++;
      this.#log.error({ err, remote: flow.remote }, 'SIP parser failed unexpectedly; message dropped');

      return;
    }
    const partial = err.partial;
    if (!partial?.isRequest || partial.method === 'ACK') {
      this.stats.dropped++;
      this.#log.debug({ reason: err.reason, remote: flow.remote }, 'unparseable SIP message dropped');

      return;
    }
    this.stats.rejected++;
    stampVia(partial, flow.remote);
    const status = err.reason === 'Version Not Supported' ? 505 : 400;
    const res = buildStatelessResponse(partial, status, err.reason);
    this.#log.debug({ reason: err.reason, remote: flow.remote, status }, 'rejecting unparseable SIP request');
    this.send(res.toBuffer(), { protocol: flow.protocol, host: flow.remote.address, port: flow.remote.port, flow }).catch((e: unknown) =>
      this.#log.debug({ err: e }, 'cannot send 400 for unparseable request'),
    );
  }

  /**
   * Sends bytes to a destination: over the flow's connection when it is open, else over an
   * existing connection to the same remote, else a new one (TCP/TLS), or from the UDP socket of the
   * flow's local address (symmetric response routing, RFC 3581) or of the right address family.
   * @returns the flow actually used
   * @throws {TransportError} when the protocol is not available, the host does not resolve or the
   *   connection fails
   */
  async send(data: Buffer, dest: Destination): Promise<Flow> {
    if (this.#closed) {
      throw new TransportError('transport layer is closed');
    }
    if (dest.protocol === 'udp') {
      const address = await resolveHost(dest.host);
      const family = net.isIPv6(address) ? 6 : 4;
      const listener =
        (dest.flow?.protocol === 'udp' && this.#udp.find((u) => u.point.address === dest.flow!.local.address && u.point.port === dest.flow!.local.port)) ||
        this.#udp.find((u) => u.point.family === family);
      if (!listener) {
        throw new TransportError(`requested protocol/transport not available: udp over IPv${family}`);
      }
      await new Promise<void>((resolve, reject) => listener.socket.send(data, dest.port, address, (err) => (err ? reject(new TransportError(err.message)) : resolve())));
      this.stats.sent++;

      return { protocol: 'udp', local: { address: listener.point.address, port: listener.point.port }, remote: { address, port: dest.port } };
    }
    let conn = dest.flow?.connectionId ? this.#conns.get(dest.flow.connectionId) : undefined;
    if (!conn || conn.socket.destroyed || conn.closing) {
      const address = await resolveHost(dest.host);
      conn = this.#connsByRemote.get(remoteKey(dest.protocol, { address, port: dest.port }));
      if (!conn || conn.socket.destroyed || conn.closing) {
        conn = this.#connect(dest.protocol, address, dest.port, dest.host);
      }
    }
    await conn.ready;
    if (conn.socket.destroyed || !conn.socket.writable) {
      throw new TransportError('transport for response has been shutdown or closed');
    }
    const c = conn;
    await new Promise<void>((resolve, reject) => c.socket.write(data, (err) => (err ? reject(new TransportError(err.message)) : resolve())));
    conn.lastActivity = Date.now();
    this.stats.sent++;

    return this.#flowOf(conn);
  }

  #connect(protocol: SipProtocol, address: string, port: number, servername: string): StreamConn {
    if (protocol === 'tls' && !this.#opts.tls.enabled) {
      throw new TransportError('requested protocol/transport not available: tls');
    }
    if (protocol === 'tcp' && !this.#opts.tcp.enabled) {
      throw new TransportError('requested protocol/transport not available: tcp');
    }
    let socket: net.Socket;
    let ready: Promise<void>;
    if (protocol === 'tls') {
      const s = tls.connect({
        host: address,
        port,
        ...this.#tlsContext,
        servername: net.isIP(servername) ? undefined : servername,
        rejectUnauthorized: this.#opts.tls.verifyPeer ?? true,
      });
      socket = s;
      ready = new Promise((resolve, reject) => {
        s.once('secureConnect', () => resolve());
        s.once('error', (err: Error) => reject(new TransportError(`TLS connection to ${address}:${port} failed: ${err.message}`)));
      });
    } else {
      socket = net.connect({ host: address, port });
      ready = new Promise((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('error', (err) => reject(new TransportError(`TCP connection to ${address}:${port} failed: ${err.message}`)));
      });
    }
    ready.catch(() => undefined);
    // the remote is known before the socket connects; the local address is filled in on connect
    const conn = this.#adoptSocket(socket, protocol as 'tcp' | 'tls', ready, { address, port });
    if (!conn) {
      throw new TransportError('too many SIP connections');
    }
    void ready.then(
      () => {
        conn.local = { address: normaliseAddress(socket.localAddress ?? ''), port: socket.localPort ?? 0 };
      },
      () => socket.destroy(),
    );

    return conn;
  }

  /**
   * Closes idle connections and those whose message is overdue. Idle means no SIP message for
   * idleTimeoutMs; keep-alive pings only count while a registration holds the connection (RFC 5626
   * flows), so pings alone cannot keep a slot forever. A closed connection gets a FIN and, since a
   * half-open peer may never answer it, is destroyed after a short grace.
   */
  #reapIdle(): void {
    const now = Date.now();
    const cutoff = now - this.#opts.idleTimeoutMs;
    const messageCutoff = now - this.#opts.messageTimeoutMs;
    for (const conn of this.#conns.values()) {
      if (conn.closing) {
        continue;
      }
      const last = conn.heldUntil > now ? Math.max(conn.lastActivity, conn.lastPing) : conn.lastActivity;
      if (conn.partialSince !== undefined && conn.partialSince < messageCutoff) {
        this.#log.debug({ remote: conn.remote }, 'closing SIP connection: message not complete within the deadline');
        conn.closing = true;
        conn.socket.destroy();
      } else if (last < cutoff) {
        this.#log.debug({ remote: conn.remote }, 'closing idle SIP connection');
        conn.closing = true;
        conn.socket.end();
        const s = conn.socket;
        setTimeout(() => s.destroy(), Math.min(2000, this.#opts.idleTimeoutMs)).unref();
      }
    }
  }

  /**
   * Keeps a connection open while pings arrive, until `untilMs` (epoch ms): a client registered over
   * it (RFC 5626 §4.4.1) may send nothing but keep-alives between calls. 0 releases it.
   */
  holdConnection(connectionId: string, untilMs: number): void {
    const c = this.#conns.get(connectionId);
    if (c) {
      c.heldUntil = untilMs;
    }
  }

  /** Whether a stream connection is still open. */
  isConnectionOpen(connectionId: string): boolean {
    const c = this.#conns.get(connectionId);

    return !!c && !c.socket.destroyed && !c.closing;
  }

  /** Closes every listener and connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#tlsWatcher?.close();
    if (this.#idleTimer) {
      clearInterval(this.#idleTimer);
    }
    for (const u of this.#udp) {
      u.socket.close();
    }
    for (const c of this.#conns.values()) {
      c.socket.destroy();
    }
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

function remoteKey(protocol: SipProtocol, remote: HostPort): string {
  return `${protocol}|${remote.address}|${remote.port}`;
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

function normaliseAddress(a: string): string {
  return a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a;
}

let localAddressCache: Set<string> | undefined;
function localAddresses(): Set<string> {
  if (!localAddressCache) {
    localAddressCache = new Set(['127.0.0.1', '::1']);
    for (const list of Object.values(os.networkInterfaces())) {
      for (const i of list ?? []) {
        localAddressCache.add(i.address);
      }
    }
  }

  return localAddressCache;
}

function firstInterfaceAddress(family: 4 | 6): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) {
      if (!i.internal && i.family === (family === 6 ? 'IPv6' : 'IPv4') && !i.address.startsWith('fe80')) {
        return i.address;
      }
    }
  }

  return family === 6 ? '::1' : '127.0.0.1';
}

async function resolveHost(host: string): Promise<string> {
  const h = host.replace(/^\[|\]$/g, '');
  if (net.isIP(h)) {
    return h;
  }
  try {
    const { address } = await dns.lookup(h);

    return address;
  } catch (err) {
    throw new TransportError(`cannot resolve ${h}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

async function tcpPortFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: address, ipv6Only: net.isIPv6(address) }, () => s.close(() => resolve(true)));
  });
}

/**
 * RFC 3581 §4 / RFC 3261 §18.2.1: records where a request really came from in its top Via:
 * `received` and `rport` with the source address and port, always (as drachtio-server does), so
 * that a `received` the client wrote itself never steers our responses toward someone else.
 */
export function stampVia(msg: SipMessage, source: HostPort): void {
  const idx = msg.headers.findIndex((h) => h.name.toLowerCase() === 'via' || h.name.toLowerCase() === 'v');
  if (idx < 0) {
    return;
  }
  const header = msg.headers[idx]!;
  let vias;
  try {
    vias = parseVia(header.value);
  } catch {
    return;
  }
  const top = vias[0];
  if (!top) {
    return;
  }
  top.params.received = source.address;
  top.params.rport = String(source.port);
  header.value = vias.map((v) => formatVia(v)).join(', ');
}

/**
 * Builds a response outside any transaction from a request's Via, From, To (with a tag added),
 * Call-ID and CSeq (RFC 3261 §8.2.6).
 */
export function buildStatelessResponse(req: SipMessage, status: number, reason: string): SipMessage {
  const res = SipMessage.response(status, reason);
  for (const h of req.headers) {
    const n = h.name.toLowerCase();
    if (n === 'via' || n === 'v' || n === 'from' || n === 'f' || n === 'call-id' || n === 'i' || n === 'cseq') {
      res.headers.push({ name: h.name, value: h.value });
    } else if (n === 'to' || n === 't') {
      res.headers.push({ name: h.name, value: /;\s*tag=/i.test(h.value) ? h.value : `${h.value};tag=${randomUUID().slice(0, 8)}` });
    }
  }

  return res;
}
