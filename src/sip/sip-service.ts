/**
 * The gateway's SIP side: the embedded SIP engine (unless an external drachtio-server is
 * configured) and the drachtio-srf application connected to it.
 *
 * sip.engine = embedded: the engine runs in this process and srf connects to its control port
 * over loopback. sip.engine = external: srf connects to sip.control (a drachtio-server, or a
 * ringbridge engine started with `ringbridge-sip-engine`).
 */
import Srf from 'drachtio-srf';
import { type Config } from '../config/schema.js';
import { type Logger } from '../log/logger.js';
import { SipEngine } from './engine/engine.js';
import { SipEngineThread } from './engine/thread.js';
import { type SipScreenOptions } from '../security/sip-screen.js';

/** Thrown when srf cannot reach the SIP engine at start. */
export class SipConnectError extends Error {
  override readonly name = 'SipConnectError';
  readonly code = 'RB_ERR_SIP_CONNECT';
}

/** Options of SipService.start(). */
export interface SipServiceOptions {
  config: Config['sip'];
  logger: Logger;
  /** How long to wait for the first srf connection, ms (default 10 000). */
  connectTimeoutMs?: number;
  /** Log settings for an engine thread, which makes its own logger. */
  logLevel?: string;
  logPretty?: boolean;
  /** The embedded engine's scanner and unknown-source screen (src/security/sip-screen.ts). */
  screen?: SipScreenOptions;
  /** RFC 5626 STUN keep-alives on the engine's UDP port: on only when SIP devices register (`sipDevices.enabled`). */
  stunKeepAlives?: boolean;
}

/** The engine (when embedded) and the connected srf. */
export class SipService {
  readonly srf: Srf;
  readonly engine: SipEngine | SipEngineThread | undefined;
  readonly #log: Logger;
  readonly #mode: 'embedded' | 'external';
  #connected = false;
  #serverHostports = '';
  #closed = false;

  private constructor(srf: Srf, engine: SipEngine | SipEngineThread | undefined, mode: 'embedded' | 'external', logger: Logger) {
    this.srf = srf;
    this.engine = engine;
    this.#mode = mode;
    this.#log = logger;
  }

  /**
   * Starts the embedded engine (if configured) and connects srf.
   * @throws {TransportError} when SIP listeners cannot be bound
   * @throws {SipConnectError} when srf cannot connect within the timeout
   */
  static async start(opts: SipServiceOptions): Promise<SipService> {
    const { config, logger } = opts;
    let engine: SipEngine | SipEngineThread | undefined;
    let target: { host: string; port: number; secret: string };
    if (config.engine === 'embedded') {
      const engineOpts = {
        listenAddresses: config.listenAddresses,
        publicAddress: config.publicAddress,
        udp: config.udp,
        tcp: config.tcp,
        tls: config.tls,
        control: config.control,
        timers: config.timers,
        limits: config.limits,
        ...(opts.screen ? { screen: opts.screen } : {}),
        ...(opts.stunKeepAlives ? { stunKeepAlives: { enabled: true } } : {}),
      };
      engine = config.engineThread
        ? await SipEngineThread.start({ ...engineOpts, log: { level: opts.logLevel ?? 'info', pretty: opts.logPretty ?? false } })
        : await SipEngine.start({ ...engineOpts, logger: logger.child({ subsystem: 'engine' }) });
      target = { ...engine.control, host: engine.control.host === '0.0.0.0' ? '127.0.0.1' : engine.control.host };
    } else {
      target = config.control;
    }
    const srf = new Srf('ringbridge');
    const service = new SipService(srf, engine, config.engine, logger);
    try {
      await service.#connect(target, opts.connectTimeoutMs ?? 10_000);
    } catch (err) {
      try {
        srf.disconnect();
      } catch {
        // srf throws when it never had a connection; the real error is `err`
      }
      await engine?.close();
      throw err;
    }
    service.#installDefaultHandlers();

    return service;
  }

  #connect(target: { host: string; port: number; secret: string }, timeoutMs: number): Promise<void> {
    const srf = this.srf;

    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new SipConnectError(`cannot connect to the SIP engine control port at ${target.host}:${target.port} within ${timeoutMs} ms`));
      }, timeoutMs);
      srf.on('connect', (err: Error | null, hostports: string) => {
        if (err) {
          this.#log.warn({ err: err.message }, 'SIP engine refused the connection');
          clearTimeout(timer);
          reject(new SipConnectError(`SIP engine at ${target.host}:${target.port} refused the connection: ${err.message}`));

          return;
        }
        this.#connected = true;
        this.#serverHostports = hostports;
        clearTimeout(timer);
        this.#log.info({ hostports, mode: this.#mode }, 'drachtio-srf connected to the SIP engine');
        resolve();
      });
      srf.on('error', (err: Error) => {
        this.#connected = false;
        if (!this.#closed) {
          this.#log.warn({ err: err.message }, 'SIP engine connection error; srf reconnects');
        }
      });
      srf.on('disconnect', () => {
        this.#connected = false;
      });
      // drachtio-srf's connect() both returns a promise and emits events; the events are enough.
      void Promise.resolve(srf.connect({ host: target.host, port: target.port, secret: target.secret })).catch(() => undefined);
    });
  }

  /**
   * Draining: OPTIONS get 503 so that a dispatcher (Kamailio's dispatcher module probing with
   * OPTIONS) stops sending new calls here; the call layer answers new INVITEs 503 itself.
   */
  draining = false;

  /** OPTIONS keep-alives from trunks and dispatchers are answered 200 (503 while draining). */
  #installDefaultHandlers(): void {
    this.srf.use('options', (req, res) => {
      if (this.draining) {
        res.send(503, { headers: { 'Retry-After': '60' } });

        return;
      }
      res.send(200, { headers: { Allow: 'INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, NOTIFY, REFER', Accept: 'application/sdp' } });
      void req;
    });
  }

  /**
   * The URI other nodes send SIP to, from the engine's listening addresses ("udp/10.0.0.5:5060,...");
   * undefined until srf is connected.
   */
  sipUri(): string | undefined {
    const entries = this.#serverHostports.split(',').map((e) => e.trim());
    const pick = entries.find((e) => e.startsWith('udp/')) ?? entries.find((e) => e.startsWith('tcp/'));
    if (!pick) {
      return undefined;
    }
    const [proto, hostport] = pick.split('/') as [string, string];

    return `sip:${hostport}${proto === 'tcp' ? ';transport=tcp' : ''}`;
  }

  /** Health for /health. */
  health(): { state: 'up' | 'down'; mode: 'embedded' | 'external'; connected: boolean; hostports: string } {
    return { state: this.#connected ? 'up' : 'down', mode: this.#mode, connected: this.#connected, hostports: this.#serverHostports };
  }

  /** Disconnects srf and stops the embedded engine. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    try {
      this.srf.disconnect();
    } catch {
      // not connected
    }
    await this.engine?.close();
  }
}
