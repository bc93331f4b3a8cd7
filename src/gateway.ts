/**
 * The gateway: starts the components that make up a ringbridge node in dependency order, reports
 * their health, and stops them in reverse order.
 *
 * Components so far: metrics registry, Redis, mediasoup worker pool, SIP (embedded engine and
 * drachtio-srf), HTTP listener.
 */
import os from 'node:os';
import { type Config } from './config/schema.js';
import { startHttpServer, type HttpReply, type HttpServerHandle } from './http/server.js';
import { type Logger } from './log/logger.js';
import { MediaWorkerPool } from './media/worker-pool.js';
import { createMetrics, type Metrics } from './metrics/registry.js';
import { CallManager } from './calls/call-manager.js';
import { JwtVerifier } from './signaling/auth.js';
import { SignalingServer } from './signaling/server.js';
import { SipService } from './sip/sip-service.js';
import { StateStore } from './state/store.js';
import { connectRedis, type RedisHandle } from './state/redis.js';
import { ringbridgeVersion } from './util/version.js';

function isWildcard(a: string): boolean {
  return a === '0.0.0.0' || a === '::';
}

/** The first non-internal IPv4 address of this host (what peers can reach), else loopback. */
function firstExternalAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) {
      if (!i.internal && i.family === 'IPv4') {
        return i.address;
      }
    }
  }

  return '127.0.0.1';
}

/** State of one component as /health reports it. */
export type ComponentState = 'starting' | 'up' | 'degraded' | 'down' | 'stopping' | 'stopped' | 'disabled';

/** The /health body. */
export interface HealthReport {
  status: 'ok' | 'degraded' | 'down' | 'stopping';
  node: string;
  version: string;
  /** Seconds since the gateway started. */
  uptimeS: number;
  components: Record<string, { state: ComponentState } & Record<string, unknown>>;
}

/** A running gateway node. Create it with Gateway.start(). */
export class Gateway {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  #nodeId: string;
  #redis?: RedisHandle;
  #media?: MediaWorkerPool;
  #sip?: SipService;
  #http?: HttpServerHandle;
  #calls?: CallManager;
  #signaling?: SignalingServer;
  #store?: StateStore;
  #startedAt = Date.now();
  #stopping?: Promise<void>;

  private constructor(config: Config, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.metrics = createMetrics({ prefix: config.metrics.prefix, defaultMetrics: config.metrics.defaultMetrics, version: ringbridgeVersion() });
    this.#nodeId = config.node.id;
  }

  /**
   * Starts every component; on failure stops what was started and rethrows.
   * @throws {RedisUnavailableError | MediaWorkerError | SetupError | Error} naming the component
   */
  static async start(config: Config, logger: Logger): Promise<Gateway> {
    const gw = new Gateway(config, logger);
    try {
      await gw.#start();
    } catch (err) {
      await gw.stop();
      throw err;
    }

    return gw;
  }

  async #start(): Promise<void> {
    const { config, logger } = this;
    this.#redis = await connectRedis({ ...config.redis, logger: logger.child({ component: 'redis' }) });
    this.#media = await MediaWorkerPool.create({
      size: config.media.workers,
      logLevel: config.media.logLevel,
      rtcMinPort: config.media.rtcMinPort,
      rtcMaxPort: config.media.rtcMaxPort,
      logger: logger.child({ component: 'media' }),
    });
    this.#sip = await SipService.start({ config: config.sip, logger: logger.child({ component: 'sip' }), logLevel: config.log.level, logPretty: config.log.pretty });
    this.#http = await startHttpServer({
      host: config.http.host,
      port: config.http.port,
      logger: logger.child({ component: 'http' }),
      routes: {
        health: () => this.#healthReply(),
        metrics: () => this.#metricsReply(),
      },
    });
    if (this.#nodeId === '') {
      this.#nodeId = `${os.hostname()}-${this.#http.address().port}`;
    }
    this.#store = new StateStore({ redis: this.#redis.client, keyPrefix: config.redis.keyPrefix, nodeId: this.#nodeId, logger: logger.child({ component: 'state' }), recordTtlS: config.calls.recordTtlS });
    const publicMedia = config.media.announcedAddress || config.sip.publicAddress || firstExternalAddress();
    this.#calls = new CallManager({
      config,
      srf: this.#sip.srf,
      store: this.#store,
      logger: logger.child({ component: 'calls' }),
      media: {
        pool: this.#media,
        listenIp: config.media.listenIp,
        announcedAddress: config.media.announcedAddress || (isWildcard(config.media.listenIp) ? publicMedia : ''),
        relayBindAddress: config.media.listenIp,
        relayAnnouncedAddress: isWildcard(config.media.listenIp) ? publicMedia : config.media.announcedAddress || config.media.listenIp,
        relayPortRange: { min: config.media.relayMinPort, max: config.media.relayMaxPort },
        rtpTimeoutMs: config.calls.rtpTimeoutMs,
      },
    });
    const verifier = await JwtVerifier.create(config.signaling.auth);
    if (!verifier.hasKeys) {
      logger.warn('no signaling.auth key is configured: no agent can sign in');
    }
    this.#signaling = new SignalingServer({
      http: this.#http.server,
      verifier,
      heartbeatIntervalMs: config.signaling.heartbeatIntervalMs,
      resumeGraceMs: config.signaling.resumeGraceMs,
      authTimeoutMs: config.signaling.authTimeoutMs,
      maxRequestsPerSecond: config.signaling.maxRequestsPerSecond,
      handler: this.#calls,
      logger: logger.child({ component: 'signaling' }),
    });
    this.#calls.attachSignaling(this.#signaling);
    logger.info({ node: this.nodeId, http: this.#http.address(), version: ringbridgeVersion() }, 'ringbridge gateway started');
  }

  /** This node's id in the cluster (config node.id, or "<hostname>-<http port>"). */
  get nodeId(): string {
    return this.#nodeId;
  }

  /** Address of the HTTP listener (after start). */
  get httpAddress(): { host: string; port: number } {
    const a = this.#http?.address();
    if (!a) {
      throw new Error('gateway HTTP listener is not running');
    }

    return { host: a.address, port: a.port };
  }

  /** The Redis handle (after start). */
  get redis(): RedisHandle | undefined {
    return this.#redis;
  }

  /** The media worker pool (after start). */
  get media(): MediaWorkerPool | undefined {
    return this.#media;
  }

  /** The SIP service: embedded engine (if any) and drachtio-srf (after start). */
  get sip(): SipService | undefined {
    return this.#sip;
  }

  /** The call layer (after start). */
  get calls(): CallManager | undefined {
    return this.#calls;
  }

  /** The Redis state store (after start). */
  get store(): StateStore | undefined {
    return this.#store;
  }

  /** The agents' signaling server (after start). */
  get signaling(): SignalingServer | undefined {
    return this.#signaling;
  }

  /** Health of every component. */
  health(): HealthReport {
    const components: HealthReport['components'] = {};
    const stopping = this.#stopping !== undefined;
    components.http = { state: this.#http ? (stopping ? 'stopping' : 'up') : 'down' };
    const redisStatus = this.#redis?.client.status;
    components.redis = { state: redisStatus === 'ready' ? 'up' : 'down', status: redisStatus ?? 'none', local: this.#redis?.localServer !== undefined };
    components.media = this.#media ? this.#media.health() : { state: 'down' };
    components.sip = this.#sip ? this.#sip.health() : { state: 'down' };
    components.signaling = this.#signaling ? { state: stopping ? 'stopping' : 'up', ...this.#signaling.counts() } : { state: 'down' };
    components.calls = this.#calls ? { state: 'up', active: this.#calls.calls.length } : { state: 'down' };
    for (const [name, c] of Object.entries(components)) {
      if (c.state !== 'disabled') {
        this.metrics.componentUp.set({ component: name }, c.state === 'up' ? 1 : 0);
      }
    }
    const states = Object.values(components).map((c) => c.state).filter((s) => s !== 'disabled');
    const status: HealthReport['status'] = stopping
      ? 'stopping'
      : states.every((s) => s === 'up')
        ? 'ok'
        : states.some((s) => s === 'down')
          ? 'down'
          : 'degraded';

    return { status, node: this.nodeId, version: ringbridgeVersion(), uptimeS: Math.round((Date.now() - this.#startedAt) / 1000), components };
  }

  #healthReply(): HttpReply {
    const report = this.health();
    const status = report.status === 'ok' || report.status === 'degraded' ? 200 : 503;

    return { status, contentType: 'application/json', body: JSON.stringify(report) };
  }

  async #metricsReply(): Promise<HttpReply> {
    this.health(); // refreshes component_up

    return { status: 200, contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() };
  }

  /** Stops listeners, media workers and Redis, in that order. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const errors: unknown[] = [];
      const step = async (name: string, fn: () => Promise<void> | undefined) => {
        try {
          await fn();
        } catch (err) {
          errors.push(err);
          this.logger.error({ err, component: name }, 'error while stopping component');
        }
      };
      this.#calls?.shutdown();
      await step('signaling', () => this.#signaling?.close());
      await step('http', () => this.#http?.close());
      await step('sip', () => this.#sip?.close());
      await step('media', () => this.#media?.close());
      await step('redis', () => this.#redis?.close());
      this.logger.info({ node: this.nodeId }, errors.length ? 'ringbridge gateway stopped with errors' : 'ringbridge gateway stopped');
    })();

    return this.#stopping;
  }
}
