/**
 * The gateway: starts the components that make up a ringbridge node in dependency order, reports
 * their health, and stops them in reverse order.
 *
 * Components: metrics registry, Redis, mediasoup worker pool, SIP (embedded engine and
 * drachtio-srf), HTTP listener (health, metrics, admin API), state store and node registry, call
 * layer, agents' signaling. A node drains (drain()): it refuses new calls, lets its calls end
 * within a deadline, then stops.
 */
import os from 'node:os';
import path from 'node:path';
import { type Config } from './config/schema.js';
import { adminHandler } from './http/admin.js';
import { RecordingService } from './calls/recording.js';
import { startHttpServer, type HttpReply, type HttpServerHandle } from './http/server.js';
import { type Logger } from './log/logger.js';
import { MediaWorkerPool } from './media/worker-pool.js';
import { createMetrics, type Metrics } from './metrics/registry.js';
import { QueueMetrics } from './metrics/queue-metrics.js';
import { CallManager } from './calls/call-manager.js';
import { SipRegistrar } from './sip/registrar/registrar.js';
import { Handoff } from './calls/handoff.js';
import { JwtVerifier } from './signaling/auth.js';
import { type SignInGuard, SignalingServer } from './signaling/server.js';
import { SipService } from './sip/sip-service.js';
import { NodeRegistry } from './state/node-registry.js';
import { PushBridge } from './push/bridge.js';
import { resolvePushConfig } from './push/config.js';
import { PUSH_CHANNELS } from './push/provider.js';
import { WakeService } from './push/wake.js';
import { CdrWebhook } from './calls/cdr-webhook.js';
import { QualityMetrics } from './calls/quality.js';
import { instrumentRedis, registerWorkerMetrics } from './metrics/system-metrics.js';
import { cdrWebhookOptions } from './calls/cdr-webhook-config.js';
import { CallMetrics, registerSipMetrics, type SipCounters } from './metrics/call-metrics.js';
import { presenceOf, StateStore } from './state/store.js';
import { connectRedis, type RedisHandle } from './state/redis.js';
import { projectRoot } from './util/paths.js';
import { ringbridgeVersion } from './util/version.js';
import { SecurityGuard, screenOptions } from './security/guard.js';

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
  status: 'ok' | 'degraded' | 'down' | 'draining' | 'stopping';
  /** Set while the node drains: when it started and the deadline (ISO times). */
  draining?: { since: string; deadline: string; calls: number };
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
  /** False while Redis's connection is up but it does not answer (a stalled or partitioned Redis). */
  #redisAnswering = true;
  #redisProbe?: NodeJS.Timeout;
  #media?: MediaWorkerPool;
  #sip?: SipService;
  #http?: HttpServerHandle;
  #calls?: CallManager;
  #recording?: RecordingService;
  #signaling?: SignalingServer;
  #security?: SecurityGuard;
  #registrar?: SipRegistrar;
  #store?: StateStore;
  #registry?: NodeRegistry;
  #push?: PushBridge;
  #cdrWebhook?: CdrWebhook;
  #startedAt = Date.now();
  #stopping?: Promise<void>;
  #drain?: { since: number; deadline: number; done: Promise<void> };
  #stopped: Promise<void>;
  #resolveStopped: () => void = () => undefined;

  private constructor(config: Config, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.metrics = createMetrics({ prefix: config.metrics.prefix, defaultMetrics: config.metrics.defaultMetrics, version: ringbridgeVersion() });
    this.#nodeId = config.node.id;
    this.#stopped = new Promise((resolve) => (this.#resolveStopped = resolve));
  }

  /** Resolves once the gateway has stopped (after stop(), or a drain through the admin API). */
  get stopped(): Promise<void> {
    return this.#stopped;
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
    // A PING a second: a connection that stays 'ready' while Redis answers nothing (commands time
    // out after 2 s) counts as Redis away, for new calls (503) and /health alike.
    const redisClient = this.#redis.client;
    this.#redisProbe = setInterval(() => {
      if (redisClient.status === 'ready') {
        redisClient.ping().then(
          () => {
            this.#redisAnswering = true;
          },
          () => {
            this.#redisAnswering = false;
          },
        );
      }
    }, 1000);
    this.#redisProbe.unref();
    this.#media = await MediaWorkerPool.create({
      size: config.media.workers,
      logLevel: config.media.logLevel,
      rtcMinPort: config.media.rtcMinPort,
      rtcMaxPort: config.media.rtcMaxPort,
      logger: logger.child({ component: 'media' }),
    });
    this.#sip = await SipService.start({ config: config.sip, screen: screenOptions(config), stunKeepAlives: config.sipDevices.enabled, logger: logger.child({ component: 'sip' }), logLevel: config.log.level, logPretty: config.log.pretty });
    const sipEngine = this.#sip.engine;
    this.#security = new SecurityGuard({
      config: config.security,
      redis: this.#redis.client,
      keyPrefix: config.redis.keyPrefix,
      logger: logger.child({ component: 'security' }),
      metrics: { registry: this.metrics.registry, prefix: this.metrics.prefix },
      engineScreened: async () => ((await sipEngine?.stats()) as { counters?: { screened?: Record<string, number> } } | undefined)?.counters?.screened,
    });
    this.#http = await startHttpServer({
      host: config.http.host,
      port: config.http.port,
      logger: logger.child({ component: 'http' }),
      webRoot: path.join(projectRoot(), 'dist', 'web'),
      ...(config.http.tls.enabled ? { tls: { certFile: config.http.tls.certFile, keyFile: config.http.tls.keyFile } } : {}),
      routes: {
        health: () => this.#healthReply(),
        metrics: () => this.#metricsReply(),
        admin: (req) => this.#admin(req),
      },
    });
    if (this.#nodeId === '') {
      this.#nodeId = `${os.hostname()}-${this.#http.address().port}`;
    }
    const cdrOpts = cdrWebhookOptions(config.calls.cdrWebhook, logger.child({ component: 'cdr-webhook' }));
    const cdrWebhook = cdrOpts ? new CdrWebhook(cdrOpts) : undefined;
    this.#cdrWebhook = cdrWebhook;
    this.#store = new StateStore({
      ...(cdrWebhook ? { onRecord: (r) => cdrWebhook.post(r) } : {}),
      redis: this.#redis.client,
      keyPrefix: config.redis.keyPrefix,
      nodeId: this.#nodeId,
      logger: logger.child({ component: 'state' }),
      recordTtlS: config.calls.recordTtlS,
      maskNumbers: config.calls.maskNumbers,
      nodeTtlMs: config.cluster.nodeTtlMs,
      trunkIds: config.trunks.map((t) => t.id),
      queueGroupIds: config.routing.groups.filter((g) => g.queue?.enabled).map((g) => g.id),
    });
    const publicMedia = config.media.announcedAddress || config.sip.publicAddress || firstExternalAddress();
    const sip = this.#sip;
    const httpUrl = `${this.#http.secure ? 'https' : 'http'}://${config.http.host === '0.0.0.0' || config.http.host === '::' ? publicMedia : config.http.host}:${this.#http.address().port}`;
    const startedAt = new Date(this.#startedAt).toISOString();
    this.#registry = new NodeRegistry({
      store: this.#store,
      logger: logger.child({ component: 'cluster' }),
      heartbeatIntervalMs: config.cluster.heartbeatIntervalMs,
      info: () => ({
        sipUri: config.cluster.sipUri || sip.sipUri() || '',
        httpUrl,
        mediaAddress: publicMedia,
        version: ringbridgeVersion(),
        startedAt,
        draining: this.#drain !== undefined || this.#stopping !== undefined,
        calls: this.#calls?.calls.length ?? 0,
        sessions: this.#signaling?.counts().connected ?? 0,
      }),
    });
    const store = this.#store;
    const pushLog = logger.child({ component: 'push' });
    this.#push = new PushBridge({
      config: config.push,
      logger: pushLog,
      onDeadToken: async (channel, token) => {
        const owner = await store.removeDeadToken(channel, token);
        if (owner) {
          pushLog.info({ channel, agent: owner.agentId, device: owner.deviceId }, 'push token reported dead: device removed');
        }
      },
    });
    const wake = PUSH_CHANNELS.some((c) => this.#push?.provider(c)) ? new WakeService({ store, bridge: this.#push, logger: pushLog, metrics: { registry: this.metrics.registry, prefix: this.metrics.prefix } }) : undefined;
    const callMetrics = new CallMetrics(this.metrics.registry, this.metrics.prefix);
    this.#recording = new RecordingService({ config, logger: logger.child({ component: 'recording' }), metrics: { registry: this.metrics.registry, prefix: this.metrics.prefix } });
    if (config.recording.enabled) {
      this.#recording.startSweeper();
    }
    registerWorkerMetrics(this.metrics.registry, this.metrics.prefix, () => this.#media);
    instrumentRedis(this.metrics.registry, this.metrics.prefix, this.#redis.client);
    const engine = this.#sip.engine;
    registerSipMetrics(this.metrics.registry, this.metrics.prefix, async () => {
      const st = (await engine?.stats()) as { counters?: SipCounters } | undefined;

      return st?.counters;
    });
    if (config.sipDevices.enabled) {
      this.#registrar = new SipRegistrar({
        config: config.sipDevices,
        srf: this.#sip.srf,
        store: this.#store,
        redis: this.#redis.client,
        logger: logger.child({ component: 'registrar' }),
        metrics: { registry: this.metrics.registry, prefix: this.metrics.prefix },
        security: this.#security,
        // a woken device's new registration gets the call that waits for it (item 2b)
        onChange: (agentId, bindings) => this.#calls?.sipBindingsChanged(agentId, bindings),
        trunkSources: config.trunks.flatMap((t) => t.inbound.allow),
        trustedProxies: config.sip.trustedProxies,
      });
    }
    this.#calls = new CallManager({
      ...(wake ? { wake } : {}),
      ...(this.#registrar ? { sipDevices: this.#registrar } : {}),
      metrics: callMetrics,
      queueMetrics: new QueueMetrics(this.metrics.registry, this.metrics.prefix),
      security: this.#security,
      recording: this.#recording,
      quality: { metrics: new QualityMetrics(this.metrics.registry, this.metrics.prefix, config.metrics.lowMosThreshold), intervalMs: config.metrics.qualityIntervalMs },
      config,
      srf: this.#sip.srf,
      store: this.#store,
      accepting: () => this.#drain === undefined && this.#stopping === undefined,
      stateReady: () => this.#redis?.client.status === 'ready' && this.#redisAnswering,
      ...(config.cluster.secret ? { cluster: { registry: this.#registry, handoff: new Handoff(config.cluster.secret) } } : {}),
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
      acceptingSessions: () => this.#drain === undefined && this.#stopping === undefined,
      ...(this.#push?.provider('webpush') ? { vapidPublicKey: resolvePushConfig(config.push).webpush?.vapidPublicKey } : {}),
      guard: signInGuard(this.#security),
      logger: logger.child({ component: 'signaling' }),
    });
    const signalingServer = this.#signaling;
    await this.#security.revocations.subscribe((jti) => signalingServer.closeRevoked(jti));
    this.#calls.attachSignaling(this.#signaling);
    const calls = this.#calls;
    const signaling = this.#signaling;
    callMetrics.bind({
      activeCalls: () => ({ inbound: calls.calls.filter((c) => c.direction === 'inbound').length, outbound: calls.calls.filter((c) => c.direction === 'outbound').length }),
      sessions: () => signaling.counts(),
      agents: () => {
        const by: Record<string, number> = {};
        for (const agentId of new Set(signaling.allSessions().map((x) => x.agentId))) {
          const p = calls.presence.effective(agentId);
          by[p] = (by[p] ?? 0) + 1;
        }

        return by;
      },
    });
    // Reaped while alive (a stall longer than the node TTL) or Redis lost its data: write again.
    this.#registry.on('lost', () => this.#calls?.resync());
    await this.#registry.start();
    // Redis back after an outage (maybe restarted empty): write what this node holds again.
    let redisLost = false;
    const client = this.#redis.client;
    client.on('end', () => (redisLost = true));
    client.on('reconnecting', () => (redisLost = true));
    client.on('ready', () => {
      if (redisLost && !this.#stopping) {
        redisLost = false;
        logger.info('Redis is back: writing this node\'s calls, sessions and presence again');
        void this.#registry?.tick();
        this.#calls?.resync();
      }
    });
    logger.info({ node: this.nodeId, http: this.#http.address(), version: ringbridgeVersion() }, 'ringbridge gateway started');
  }

  /** When a drain in progress hangs up what is left (ms since the epoch); undefined when not draining. */
  get drainDeadline(): number | undefined {
    return this.#drain?.deadline;
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

  /** The registrar of agents' SIP devices (after start, when sipDevices.enabled). */
  get registrar(): SipRegistrar | undefined {
    return this.#registrar;
  }

  /** The Redis state store (after start). */
  get store(): StateStore | undefined {
    return this.#store;
  }

  /** The node registry: live nodes as this node sees them (after start). */
  get registry(): NodeRegistry | undefined {
    return this.#registry;
  }

  /** The agents' signaling server (after start). */
  get signaling(): SignalingServer | undefined {
    return this.#signaling;
  }

  /** Health of every component. */
  health(): HealthReport {
    const components: HealthReport['components'] = {};
    const stopping = this.#stopping !== undefined;
    const draining = this.#drain !== undefined && !stopping;
    components.http = { state: this.#http ? (stopping ? 'stopping' : 'up') : 'down' };
    const redisStatus = this.#redis?.client.status;
    components.redis = { state: redisStatus === 'ready' && this.#redisAnswering ? 'up' : 'down', status: redisStatus === 'ready' && !this.#redisAnswering ? 'not answering' : (redisStatus ?? 'none'), local: this.#redis?.localServer !== undefined };
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
      : draining
        ? 'draining'
        : states.every((s) => s === 'up')
        ? 'ok'
        : states.some((s) => s === 'down')
          ? 'down'
          : 'degraded';

    return {
      status,
      node: this.nodeId,
      version: ringbridgeVersion(),
      uptimeS: Math.round((Date.now() - this.#startedAt) / 1000),
      ...(this.#drain ? { draining: { since: new Date(this.#drain.since).toISOString(), deadline: new Date(this.#drain.deadline).toISOString(), calls: this.#calls?.calls.length ?? 0 } } : {}),
      components,
    };
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

  /**
   * Drains the node: new calls are refused (503 to INVITE and OPTIONS, /health 503 "draining",
   * the registry entry flagged), the node's calls go on until they end or `deadlineMs` passes
   * (default shutdown.drainTimeoutMs); the rest are then hung up and the gateway stops. Resolves
   * when it has stopped. Idempotent: a second call returns the first drain.
   */
  drain(deadlineMs = this.config.shutdown.drainTimeoutMs): Promise<void> {
    if (this.#drain) {
      return this.#drain.done;
    }
    const since = Date.now();
    const deadline = since + deadlineMs;
    const done = (async () => {
      if (this.#sip) {
        this.#sip.draining = true;
      }
      await this.#registry?.tick().catch(() => undefined);
      this.logger.info({ calls: this.#calls?.calls.length ?? 0, deadlineMs }, 'draining: new calls are refused; waiting for the calls here to end');
      // Agents without a call here reconnect elsewhere (1001), so that other nodes can ring them.
      const busy = (agentId: string) => this.#calls?.calls.some((c) => c.agentId === agentId || c.ringing.has(agentId)) ?? false;
      const moved = this.#signaling?.closeIdleSessions(busy) ?? 0;
      if (moved > 0) {
        this.logger.info({ sessions: moved }, 'draining: asked idle agent sessions to reconnect to another node');
      }
      while ((this.#calls?.calls.length ?? 0) > 0 && Date.now() < deadline && !this.#stopping) {
        this.#signaling?.closeIdleSessions(busy);
        await new Promise((r) => setTimeout(r, Math.min(250, Math.max(1, deadline - Date.now()))));
      }
      const left = this.#calls?.calls.length ?? 0;
      if (left > 0) {
        this.logger.warn({ calls: left }, 'drain deadline passed: hanging up the remaining calls');
      } else {
        this.logger.info('drained: no call left');
      }
      await this.stop();
    })();
    this.#drain = { since, deadline, done };

    return done;
  }

  async #admin(req: Parameters<ReturnType<typeof adminHandler>>[0]): Promise<HttpReply> {
    const store = this.#store;
    const registry = this.#registry;
    if (!store || !registry) {
      return { status: 503, contentType: 'application/json', body: JSON.stringify({ error: 'starting' }) };
    }
    const handler = adminHandler({
      token: this.config.admin.token,
      store,
      logger: this.logger.child({ component: 'admin' }),
      nodes: () => store.liveNodes(),
      queues: (groupId) => (this.#calls ? this.#calls.centre.queues(groupId) : Promise.resolve(undefined)),
      ...(this.#security ? { revocations: this.#security.revocations } : {}),
      ...(this.#recording ? { recordings: this.#recording } : {}),
      drain: (deadlineMs) => {
        const ms = deadlineMs ?? this.config.shutdown.drainTimeoutMs;
        void this.drain(ms);

        return { deadline: new Date((this.#drain?.deadline ?? Date.now() + ms)).toISOString() };
      },
      agentOnline: async (agentId) => {
        if ((this.#signaling?.sessionsOf(agentId).length ?? 0) > 0 || this.#calls?.calls.some((c) => c.agentId === agentId)) {
          return true;
        }
        const live = new Set((await store.liveNodes()).map((n) => n.id));
        const p = presenceOf(agentId, await store.agentHash(agentId), live);

        return p.effective !== 'offline';
      },
    });

    return handler(req);
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
      this.#registrar?.close();
      await step('cluster', () => this.#registry?.stop(true));
      await step('signaling', () => this.#signaling?.close());
      await step('security', () => this.#security?.close());
      await step('http', () => this.#http?.close());
      await step('sip', () => this.#sip?.close());
      await step('recording', () => this.#recording?.close());
      await step('media', () => this.#media?.close());
      await step('push', () => this.#push?.close());
      await step('cdr-webhook', async () => {
        await this.#cdrWebhook?.close(5000);
      });
      clearInterval(this.#redisProbe);
      await step('redis', () => this.#redis?.close());
      this.logger.info({ node: this.nodeId }, errors.length ? 'ringbridge gateway stopped with errors' : 'ringbridge gateway stopped');
      this.#resolveStopped();
    })();

    return this.#stopping;
  }
}

/** The signaling server's sign-in checks from the defences (lockout kind `ws`, revocation). */
function signInGuard(sec: SecurityGuard): SignInGuard {
  return {
    isLocked: async (address) => {
      const locked = await sec.lockout.isLocked('ws', address);
      if (locked) {
        sec.rejected('ws_locked');
      }

      return locked;
    },
    failed: (address) => sec.lockout.failed('ws', address),
    isRevoked: async (jti) => {
      const revoked = await sec.revocations.isRevoked(jti);
      if (revoked) {
        sec.rejected('revoked');
      }

      return revoked;
    },
  };
}
