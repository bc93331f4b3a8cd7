/**
 * The Redis connection (ioredis), with the embedded-defaults fallback: when the configured URL
 * points at loopback and nothing answers, a local redis-server is started as a child of the
 * gateway (installing Debian's redis-server package first when it is missing) and stopped with it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { aptInstall, hasCommand, SetupError } from '../setup/apt.mjs';
import { type Logger } from '../log/logger.js';

/** Options of connectRedis(). */
export interface ConnectRedisOptions {
  /** redis:// or rediss:// URL. */
  url: string;
  /** Start a local redis-server when the URL is loopback and nothing answers. */
  autoStart: boolean;
  /** Connect timeout in ms. */
  connectTimeoutMs: number;
  logger: Logger;
}

/** Thrown when Redis cannot be reached (and could not be started). */
export class RedisUnavailableError extends Error {
  override readonly name = 'RedisUnavailableError';
  readonly code = 'RB_ERR_REDIS_UNAVAILABLE';
}

/** A connected Redis client, plus the local server when this process started one. */
export interface RedisHandle {
  client: Redis;
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

/**
 * Connects to Redis; starts a local server first when allowed and needed.
 * @throws {RedisUnavailableError} when Redis does not answer
 * @throws {SetupError} when a local server was needed but redis-server cannot be installed
 */
export async function connectRedis(opts: ConnectRedisOptions): Promise<RedisHandle> {
  const url = new URL(opts.url);
  const host = url.hostname || '127.0.0.1';
  const port = url.port ? Number(url.port) : 6379;
  let localServer: LocalRedisServer | undefined;

  const client = new Redis(opts.url, {
    lazyConnect: true,
    connectTimeout: opts.connectTimeoutMs,
    // Fail commands fast while Redis is away instead of queueing them without bound; the
    // connection itself keeps retrying with a capped backoff.
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
  });
  let lastError: Error | undefined;
  client.on('error', (err: Error) => {
    if (err.message !== lastError?.message) {
      opts.logger.warn({ err }, 'redis connection error');
    }
    lastError = err;
  });

  const reachable = await ping(host, port, opts.connectTimeoutMs);
  if (!reachable) {
    const loopback = LOOPBACK.has(host);
    if (!opts.autoStart || !loopback || url.protocol !== 'redis:' || url.password !== '') {
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
    client.disconnect();
    await localServer?.stop();
    throw new RedisUnavailableError(`redis at ${host}:${port}: ${(err as Error).message}`, { cause: err });
  }

  let closed = false;

  return {
    client,
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
