/**
 * The Redis connection (ioredis) in one of three modes, chosen by redis.mode:
 *
 * - standalone: one server at redis.url, with the embedded-defaults fallback: when the URL points
 *   at loopback and nothing answers, a local redis-server is started as a child of the gateway
 *   (installing Debian's redis-server package first when it is missing) and stopped with it;
 * - sentinel: the primary of redis.sentinel.name as the sentinels name it, followed through
 *   failovers;
 * - cluster: a Redis Cluster through redis.cluster.nodes (ioredis Cluster, reads and writes on
 *   the primaries).
 *
 * In sentinel and cluster modes redis.url supplies the data nodes' username, password, database
 * (sentinel only) and TLS (rediss://); its host and port are not used.
 *
 * Connection policy, the same in every mode (a telephony gateway must not stall a call on Redis):
 * - every connection attempt is bounded by connectTimeoutMs; at start the gateway gives sentinel
 *   and cluster 3 × connectTimeoutMs to become ready, then fails with RedisUnavailableError;
 * - once running it reconnects forever, backoff 100 ms doubling to 2 s (retryStrategy,
 *   sentinelRetryStrategy when no sentinel answers, clusterRetryStrategy);
 * - a command issued while the connection is down fails fast instead of piling up:
 *   standalone and sentinel keep ioredis' offline queue (a command issued during a blip that heals
 *   at the next attempt still goes through, e.g. right after a failover) but flush it with an
 *   error after 2 failed reconnection attempts (maxRetriesPerRequest 1, well under a second at
 *   the start of an outage); the Cluster's own offline queue has no such bound (it would grow
 *   for as long as the whole cluster is unreachable), so it is off: while the cluster client is
 *   not ready commands fail at once. A command to one failed cluster node is retried by ioredis
 *   (retryDelayOnFailover 100 ms, at most 16 times) while the cluster fails over, then fails.
 *   The state store logs failed writes and the call goes on;
 * - sentinel: failoverDetector subscribes to the sentinels' +switch-master and drops the
 *   connection at once when the primary changes (covers an old primary that is cut off but
 *   alive); a READONLY reply (connected to a demoted primary) reconnects too;
 * - 'ready' after a loss, the loss itself and a final 'end' are logged once each, connection
 *   errors once per distinct message.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { aptInstall, hasCommand, SetupError } from '../setup/apt.mjs';
import { type Logger } from '../log/logger.js';

/** The client of any mode: a Redis (standalone, sentinel) or a Cluster. */
export type RedisClient = Redis | Cluster;

/** redis.mode */
export type RedisMode = 'standalone' | 'sentinel' | 'cluster';

/** Sentinel settings (redis.sentinel). */
export interface RedisSentinelSettings {
  /** Sentinels, "host:port" each. */
  nodes: string[];
  /** Name of the monitored primary group. */
  name: string;
  /** The sentinels' own password; empty: none. */
  password: string;
  /** master (default) or a read-only replica. */
  role: 'master' | 'replica';
}

/** Cluster settings (redis.cluster). */
export interface RedisClusterSettings {
  /** Startup nodes, "host:port" each. */
  nodes: string[];
}

/** Options of connectRedis(); the redis config section fits as is. */
export interface ConnectRedisOptions {
  /** redis:// or rediss:// URL; in sentinel and cluster modes only credentials, db and TLS. */
  url: string;
  /** Start a local redis-server when the URL is loopback and nothing answers (standalone only). */
  autoStart: boolean;
  /** Connect timeout in ms. */
  connectTimeoutMs: number;
  /** Default standalone. */
  mode?: RedisMode;
  /** Required in sentinel mode. */
  sentinel?: RedisSentinelSettings;
  /** Required in cluster mode. */
  cluster?: RedisClusterSettings;
  logger: Logger;
}

/** Thrown when Redis cannot be reached (and could not be started). */
export class RedisUnavailableError extends Error {
  override readonly name = 'RedisUnavailableError';
  readonly code = 'RB_ERR_REDIS_UNAVAILABLE';
}

/** A connected Redis client, plus the local server when this process started one. */
export interface RedisHandle {
  client: RedisClient;
  mode: RedisMode;
  /** Present when this process started redis-server itself. */
  localServer?: LocalRedisServer;
  /** Closes the client and stops the local server, if any. Idempotent. */
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** A redis-server child process started by the gateway. */
export class LocalRedisServer {
  #child: ChildProcess;
  #dir: string;
  #exited: Promise<void>;

  private constructor(child: ChildProcess, dir: string) {
    this.#child = child;
    this.#dir = dir;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** PID of redis-server. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /**
   * Starts redis-server on host:port with no persistence, installing Debian's redis-server when
   * it is missing.
   * @throws {SetupError} when redis-server is missing and cannot be installed
   * @throws {RedisUnavailableError} when it does not start answering within 5 s
   */
  static async start(host: string, port: number, logger: Logger): Promise<LocalRedisServer> {
    if (!hasCommand('redis-server')) {
      aptInstall(['redis-server'], 'starting a local Redis for the embedded defaults', (m) => logger.warn(m));
      // Debian's package may start its own service on 6379 right away.
      if (await ping(host, port, 1000)) {
        throw new SetupError(`redis-server was installed and its service now answers on ${host}:${port}; start again`);
      }
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-redis-'));
    const bind = host === 'localhost' ? '127.0.0.1' : host.replace(/^\[|\]$/g, '');
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', bind, '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-2000)));
    child.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-2000)));
    const server = new LocalRedisServer(child, dir);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) {
        break;
      }
      if (await ping(host, port, 300)) {
        return server;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await server.stop();
    throw new RedisUnavailableError(`local redis-server on ${bind}:${port} did not start: ${output.trim().split('\n').slice(-3).join(' | ')}`);
  }

  /** Stops the server (SIGTERM, then SIGKILL after 3 s) and removes its directory. */
  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill('SIGTERM');
      const t = setTimeout(() => this.#child.kill('SIGKILL'), 3000);
      await this.#exited;
      clearTimeout(t);
    }
    fs.rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** Whether a Redis server answers PING at host:port within timeoutMs. */
async function ping(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const probe = new Redis({ host, port, lazyConnect: true, connectTimeout: timeoutMs, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    await probe.ping();

    return true;
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** Reconnection delay after `times` failed attempts: 100 ms doubling to 2 s, forever. */
export function reconnectDelayMs(times: number): number {
  return Math.min(50 * 2 ** Math.min(Math.max(times, 1), 6), 2000);
}

/** Parses "host:port" or "[v6]:port". */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) {
    throw new Error(`not "host:port": ${JSON.stringify(s)}`);
  }

  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

/** What sentinel and cluster modes take from redis.url. */
interface UrlCredentials {
  username?: string;
  password?: string;
  db: number;
  tls: boolean;
}

function urlCredentials(url: string): UrlCredentials {
  const u = new URL(url);
  const username = decodeURIComponent(u.username);
  const password = decodeURIComponent(u.password);

  return {
    ...(username !== '' ? { username } : {}),
    ...(password !== '' ? { password } : {}),
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:',
  };
}

/** Reconnect (without resending) when a node answers READONLY: we are talking to a replica. */
function reconnectOnReadonly(err: Error): boolean {
  return err.message.startsWith('READONLY');
}

/** Options shared by every data-node connection (standalone, sentinel, cluster nodes). */
function dataNodeOptions(connectTimeoutMs: number): RedisOptions {
  return {
    lazyConnect: true,
    connectTimeout: connectTimeoutMs,
    // Fail commands fast while Redis is away instead of queueing them without bound (they are
    // flushed with an error every 2nd failed attempt); the connection itself keeps retrying.
    maxRetriesPerRequest: 1,
    // A Redis that stops answering on an open connection (a stalled process, a partition with no
    // RST) must not hang calls: commands fail after 2 s, and TCP keep-alives find a dead peer.
    commandTimeout: 2000,
    keepAlive: 10_000,
    reconnectOnError: reconnectOnReadonly,
  };
}

/** ioredis options of standalone mode (the URL is passed separately). */
export function standaloneOptions(opts: Pick<ConnectRedisOptions, 'connectTimeoutMs'>): RedisOptions {
  return { ...dataNodeOptions(opts.connectTimeoutMs), retryStrategy: reconnectDelayMs };
}

/** ioredis options of sentinel mode. */
export function sentinelOptions(opts: Pick<ConnectRedisOptions, 'url' | 'connectTimeoutMs' | 'sentinel'>): RedisOptions {
  const s = opts.sentinel;
  if (!s || s.nodes.length === 0 || s.name === '') {
    throw new RedisUnavailableError('redis.mode is "sentinel" but redis.sentinel.nodes or redis.sentinel.name is empty');
  }
  const cred = urlCredentials(opts.url);

  return {
    ...dataNodeOptions(opts.connectTimeoutMs),
    retryStrategy: reconnectDelayMs,
    sentinels: s.nodes.map(parseHostPort),
    name: s.name,
    role: s.role === 'replica' ? 'slave' : 'master',
    ...(s.password !== '' ? { sentinelPassword: s.password } : {}),
    ...(cred.username !== undefined ? { username: cred.username } : {}),
    ...(cred.password !== undefined ? { password: cred.password } : {}),
    db: cred.db,
    // No sentinel answers: keep asking, with the same backoff.
    sentinelRetryStrategy: reconnectDelayMs,
    sentinelCommandTimeout: opts.connectTimeoutMs,
    // Subscribe to +switch-master and reconnect as soon as the sentinels switch the primary.
    failoverDetector: true,
    ...(cred.tls ? { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
  };
}

/** Startup nodes and ioredis options of cluster mode. */
export function clusterOptions(opts: Pick<ConnectRedisOptions, 'url' | 'connectTimeoutMs' | 'cluster'>): {
  nodes: { host: string; port: number }[];
  options: ClusterOptions;
} {
  const c = opts.cluster;
  if (!c || c.nodes.length === 0) {
    throw new RedisUnavailableError('redis.mode is "cluster" but redis.cluster.nodes is empty');
  }
  const cred = urlCredentials(opts.url);
  if (cred.db !== 0) {
    throw new RedisUnavailableError('redis.url names a database other than 0, which a Redis Cluster does not have');
  }

  return {
    nodes: c.nodes.map(parseHostPort),
    options: {
      lazyConnect: true,
      // Reads and writes on the primaries: what a node just wrote is what the next node reads.
      scaleReads: 'master',
      // See the file header: an unbounded queue while the whole cluster is away; fail at once.
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnectDelayMs,
      redisOptions: {
        ...dataNodeOptions(opts.connectTimeoutMs),
        ...(cred.username !== undefined ? { username: cred.username } : {}),
        ...(cred.password !== undefined ? { password: cred.password } : {}),
        ...(cred.tls ? { tls: {} } : {}),
      },
    },
  };
}

/**
 * What is logged of an ioredis error: its class, message and the name (not the arguments) of the
 * command it answers, and the same of a cluster's last node error. ioredis errors carry the
 * command's arguments, and those of AUTH and HELLO are the password.
 */
export function loggableError(err: Error): Record<string, unknown> {
  const e = err as Error & { code?: unknown; command?: { name?: unknown }; lastNodeError?: Error };

  return {
    type: e.name,
    message: e.message,
    ...(typeof e.code === 'string' ? { code: e.code } : {}),
    ...(typeof e.command?.name === 'string' ? { command: e.command.name } : {}),
    ...(e.lastNodeError instanceof Error ? { lastNodeError: loggableError(e.lastNodeError) } : {}),
  };
}

/** Logs the connection's transitions: errors once per message, loss, ready again, end. */
function watch(client: RedisClient, mode: RedisMode, logger: Logger, closing: () => boolean): void {
  let lastError: string | undefined;
  let everReady = false;
  let lostAt: number | undefined;
  const onError = (err: Error, extra: Record<string, unknown> = {}) => {
    if (err.message !== lastError) {
      logger.warn({ err: loggableError(err), mode, ...extra }, 'redis connection error');
    }
    lastError = err.message;
  };
  client.on('error', (err: Error) => onError(err));
  client.on('ready', () => {
    if (lostAt !== undefined) {
      logger.info({ mode, downMs: Date.now() - lostAt }, 'redis ready again');
    }
    everReady = true;
    lostAt = undefined;
    lastError = undefined;
  });
  client.on('close', () => {
    if (everReady && lostAt === undefined && !closing()) {
      lostAt = Date.now();
      logger.warn({ mode }, 'redis connection lost; reconnecting');
    }
  });
  client.on('end', () => {
    if (!closing()) {
      logger.error({ mode }, 'redis connection ended; no more reconnection attempts');
    }
  });
  if (mode === 'sentinel') {
    client.on('sentinelError', (err: Error) => onError(err));
  }
  if (mode === 'cluster') {
    client.on('node error', (err: Error, node: string) => onError(err, { node }));
  }
}

/** Resolves when the client is ready; rejects after ms or when it ends. */
function whenReady(client: RedisClient, ms: number): Promise<void> {
  if (client.status === 'ready') {
    return Promise.resolve();
  }

  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      if (err) {
        reject(err);
      } else {
        resolve();
      }
    };
    const onReady = () => done();
    const onEnd = () => done(new Error('the connection ended'));
    const timer = setTimeout(() => done(new Error(`not ready within ${ms} ms`)), ms);
    client.on('ready', onReady);
    client.on('end', onEnd);
  });
}

/**
 * Connects to Redis in the configured mode; in standalone mode starts a local server first when
 * allowed and needed.
 * @throws {RedisUnavailableError} when Redis does not answer (sentinel, cluster: is not ready
 *   within 3 × connectTimeoutMs)
 * @throws {SetupError} when a local server was needed but redis-server cannot be installed
 */
export async function connectRedis(opts: ConnectRedisOptions): Promise<RedisHandle> {
  const mode = opts.mode ?? 'standalone';
  if (mode === 'standalone') {
    return connectStandalone(opts);
  }
  let closed = false;
  let client: RedisClient;
  let where: string;
  if (mode === 'sentinel') {
    client = new Redis(sentinelOptions(opts));
    where = `sentinel group "${opts.sentinel!.name}" via ${opts.sentinel!.nodes.join(', ')} (redis.sentinel.nodes)`;
  } else {
    const { nodes, options } = clusterOptions(opts);
    client = new Cluster(nodes, options);
    where = `cluster via ${opts.cluster!.nodes.join(', ')} (redis.cluster.nodes)`;
  }
  let lastError: Error | undefined;
  const remember = (err: Error) => (lastError = err);
  client.on('error', remember);
  client.on('node error', remember);
  watch(client, mode, opts.logger, () => closed);

  const startupMs = 3 * opts.connectTimeoutMs;
  try {
    // ioredis keeps retrying after a failed first attempt; wait for 'ready' rather than the
    // first attempt's promise, up to the deadline.
    client.connect().catch(remember);
    await whenReady(client, startupMs);
    await client.ping();
  } catch (err) {
    closed = true;
    client.disconnect();
    const why = lastError?.message ?? (err as Error).message;
    throw new RedisUnavailableError(`redis ${where} is not ready after ${startupMs} ms: ${why}`, { cause: lastError ?? err });
  } finally {
    client.off('error', remember);
    client.off('node error', remember);
  }
  opts.logger.info({ mode, nodes: (mode === 'sentinel' ? opts.sentinel?.nodes : opts.cluster?.nodes) ?? [] }, 'redis ready');

  return {
    client,
    mode,
    async close() {
      if (closed) {
        return;
      }
      closed = true;
      try {
        await client.quit();
      } catch {
        // not connected: nothing to say goodbye to
      }
      // Also ends the sentinel failover detector's subscriptions and any pending reconnect.
      client.disconnect();
    },
  };
}

/** Standalone mode: one server at opts.url, with the local fallback. */
async function connectStandalone(opts: ConnectRedisOptions): Promise<RedisHandle> {
  const url = new URL(opts.url);
  const host = url.hostname || '127.0.0.1';
  const port = url.port ? Number(url.port) : 6379;
  let localServer: LocalRedisServer | undefined;
  let closed = false;

  const client = new Redis(opts.url, standaloneOptions(opts));
  watch(client, 'standalone', opts.logger, () => closed);

  const reachable = await ping(host, port, opts.connectTimeoutMs);
  if (!reachable) {
    const loopback = LOOPBACK.has(host);
    if (!opts.autoStart || !loopback || url.protocol !== 'redis:' || url.password !== '') {
      closed = true;
      client.disconnect();
      throw new RedisUnavailableError(
        `redis at ${host}:${port} does not answer${opts.autoStart && !loopback ? ' (redis.autoStart only starts a server for loopback URLs)' : ''}`,
      );
    }
    opts.logger.warn({ host, port }, 'no Redis answers on the configured loopback address; starting a local redis-server');
    localServer = await LocalRedisServer.start(host, port, opts.logger);
    opts.logger.info({ host, port, redisPid: localServer.pid }, 'started a local redis-server (no persistence); it stops with the gateway');
  }

  try {
    await client.connect();
    await client.ping();
  } catch (err) {
    closed = true;
    client.disconnect();
    await localServer?.stop();
    throw new RedisUnavailableError(`redis at ${host}:${port}: ${(err as Error).message}`, { cause: err });
  }

  return {
    client,
    mode: 'standalone',
    localServer,
    async close() {
      if (closed) {
        return;
      }
      closed = true;
      try {
        await client.quit();
      } catch {
        client.disconnect();
      }
      await localServer?.stop();
    },
  };
}
