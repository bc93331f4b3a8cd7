/**
 * The embedded SIP engine: SIP transports, transactions and dialogs plus the drachtio control
 * port, so that drachtio-srf (unchanged, from npm) drives it with
 * `srf.connect({ host, port, secret })` exactly as it drives drachtio-server.
 *
 * Layers, bottom up: transport/ (RFC 3261 §18, RFC 3581), transaction/ (§17, RFC 6026),
 * core/ (drachtio-server's UAS/UAC/proxy behaviour and dialogs), control/ (the wire protocol).
 */
import { randomBytes } from 'node:crypto';
import { type Logger } from '../../log/logger.js';
import { ringbridgeVersion } from '../../util/version.js';
import { hostportOf } from './core/build.js';
import { EngineCore } from './core/engine-core.js';
import { ControlServer } from './control/server.js';
import { TransportLayer, type TransportOptions, type TransportStats } from './transport/transport-layer.js';
import { type ListenPoint } from './transport/types.js';
import { type SipScreenOptions } from '../../security/sip-screen.js';

/** Options of SipEngine.start(). */
export interface SipEngineOptions {
  listenAddresses: string[];
  publicAddress: string;
  udp: { enabled: boolean; port: number };
  tcp: { enabled: boolean; port: number };
  tls: TransportOptions['tls'];
  /**
   * The control port; optional limits: authentication deadline (default 5000 ms), connections per
   * source address (64), wrong secrets per address per minute (10).
   */
  control: { host: string; port: number; secret: string; authTimeoutMs?: number; maxConnectionsPerSource?: number; maxAuthFailures?: number };
  /**
   * RFC 3261 timer bases, ms; `timerCMs`: how long an INVITE the app keeps ringing waits after its
   * last provisional before the engine answers 408 (default 180000).
   */
  timers: { t1Ms: number; t2Ms: number; t4Ms: number; timerCMs?: number };
  /**
   * Transport limits (bytes, counts; defaults in TransportLayer), and the most unanswered INVITEs
   * from one source address (default 1000; more get 503).
   */
  limits?: Pick<TransportOptions, 'maxMessageBytes' | 'maxHeaderBytes' | 'maxHeaders' | 'idleTimeoutMs' | 'maxConnections' | 'maxConnectionsPerSource' | 'messageTimeoutMs'> & {
    maxPendingInvitesPerSource?: number;
  };
  /** Scanner and unknown-source screen (src/security/sip-screen.ts); none: off. */
  screen?: SipScreenOptions;
  /** RFC 5626 STUN keep-alives on the UDP port (TransportOptions.stunKeepAlives); none: off. */
  stunKeepAlives?: TransportOptions['stunKeepAlives'];
  logger: Logger;
}

/** A running engine. */
export class SipEngine {
  readonly #transport: TransportLayer;
  readonly #core: EngineCore;
  readonly #control: ControlServer;
  readonly #secret: string;
  #closed = false;

  private constructor(transport: TransportLayer, core: EngineCore, control: ControlServer, secret: string) {
    this.#transport = transport;
    this.#core = core;
    this.#control = control;
    this.#secret = secret;
  }

  /**
   * Binds the SIP listeners and the control port.
   * @throws {TransportError} when a SIP listener cannot be bound
   * @throws {Error} when the control port cannot be bound
   */
  static async start(opts: SipEngineOptions): Promise<SipEngine> {
    const log = opts.logger;
    const secret = opts.control.secret || randomBytes(24).toString('base64url');
    const { maxPendingInvitesPerSource, ...transportLimits } = opts.limits ?? {};
    const transport = await TransportLayer.start({
      listenAddresses: opts.listenAddresses,
      publicAddress: opts.publicAddress,
      udp: opts.udp,
      tcp: opts.tcp,
      tls: opts.tls,
      ...transportLimits,
      ...(opts.stunKeepAlives ? { stunKeepAlives: opts.stunKeepAlives } : {}),
      logger: log.child({ layer: 'transport' }),
    });
    let control: ControlServer | undefined;
    try {
      const holder: { core?: EngineCore } = {};
      control = await ControlServer.start({
        host: opts.control.host,
        port: opts.control.port,
        secret,
        authTimeoutMs: opts.control.authTimeoutMs,
        maxConnectionsPerSource: opts.control.maxConnectionsPerSource,
        maxAuthFailures: opts.control.maxAuthFailures,
        versionSuffix: `ringbridge-${ringbridgeVersion()}`,
        hostports: () => ({
          public: transport.listenPoints.map((p) => hostportOf(p, false)).join(','),
          local: transport.listenPoints.map((p) => hostportOf(p, true)).join(','),
        }),
        handler: {
          onAppMessage: (conn, tokens, sip) => holder.core?.onAppMessage(conn, tokens, sip),
          onAppDisconnect: (conn) => holder.core?.onAppDisconnect(conn),
        },
        logger: log.child({ layer: 'control' }),
      });
      const ctl = control;
      const core = new EngineCore({
        transport,
        timers: { t1: opts.timers.t1Ms, t2: opts.timers.t2Ms, t4: opts.timers.t4Ms },
        logger: log.child({ layer: 'core' }),
        pickRoute: (verb) => ctl.pickRoute(verb),
        timerCMs: opts.timers.timerCMs,
        maxPendingInvitesPerSource,
        ...(opts.screen ? { screen: opts.screen } : {}),
      });
      holder.core = core;
      const engine = new SipEngine(transport, core, control, secret);
      log.info(
        { listeners: transport.listenPoints.map((p) => hostportOf(p, true)), control: control.address() },
        'embedded SIP engine listening',
      );

      return engine;
    } catch (err) {
      await control?.close();
      await transport.close();
      throw err;
    }
  }

  /** Where drachtio-srf connects: host, port and secret of the control port. */
  get control(): { host: string; port: number; secret: string } {
    const a = this.#control.address();

    return { host: a.address, port: a.port, secret: this.#secret };
  }

  /** The SIP listeners. */
  get listenPoints(): readonly ListenPoint[] {
    return this.#transport.listenPoints;
  }

  /** Number of authenticated apps on the control port. */
  get appCount(): number {
    return this.#control.connections.length;
  }

  /** Counters and table sizes, for metrics and health. */
  stats(): { transport: TransportStats; sizes: EngineCore['sizes']; counters: EngineCore['counters'] } {
    return { transport: { ...this.#transport.stats }, sizes: this.#core.sizes, counters: this.#core.counters };
  }

  /** Dialogs by role, kind and state, with a few examples, for diagnosing leaks. */
  dialogSummary(): { counts: Record<string, number>; sample: { id: string; role: string; kind: string; state: string; owner: boolean; pending2xx: boolean }[] } {
    const counts: Record<string, number> = {};
    const all = this.#core.dialogs.all();
    for (const d of all) {
      const k = `${d.role}/${d.kind}/${d.state}`;
      counts[k] = (counts[k] ?? 0) + 1;
    }
    const sample = all.slice(0, 5).map((d) => ({ id: d.id, role: d.role, kind: d.kind, state: d.state, owner: !!d.owner && !d.owner.closed, pending2xx: !!d.pending2xx }));

    return { counts, sample };
  }

  /** Stops the control port, every transaction and the transports. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#core.close();
    await this.#control.close();
    await this.#transport.close();
  }
}
