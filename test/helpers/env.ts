/** Shared test helpers: configuration with a private Redis key prefix, loggers, free ports. */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { Cluster, type Redis } from 'ioredis';
import { loadConfig, type ConfigTree } from '../../src/config/load.js';
import { type Config } from '../../src/config/schema.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { type RedisClient } from '../../src/state/redis.js';

/** The test profile with a Redis key prefix unique to this call, plus overrides. */
export function testConfig(overrides: ConfigTree = {}): Config {
  const prefix = `rbtest:${randomBytes(4).toString('hex')}:`;

  return loadConfig({ profile: 'test', env: {}, overrides: { redis: { keyPrefix: prefix }, ...overrides } }).config;
}

/** A logger whose JSON lines are kept in memory (and not printed). */
export function captureLogger(level = 'debug'): { logger: Logger; lines: () => Record<string, unknown>[]; text: () => string } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger({ level, destination: dest as unknown as NodeJS.WritableStream & { write(s: string): boolean } });
  const text = () => chunks.join('');

  return {
    logger,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** A logger that prints warnings and errors only. */
export function quietLogger(): Logger {
  return createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'warn' });
}

/**
 * Deletes every key under a prefix (SCAN, never KEYS); on a Cluster, on each primary (a SCAN
 * only sees its own node's keys), deleting key by key (the keys sit in different slots).
 */
export async function deletePrefix(redis: RedisClient, prefix: string): Promise<number> {
  if (redis instanceof Cluster) {
    let n = 0;
    for (const node of redis.nodes('master')) {
      for (const key of await scanAll(node, prefix)) {
        n += await redis.del(key);
      }
    }

    return n;
  }
  const keys = await scanAll(redis, prefix);
  let n = 0;
  for (let i = 0; i < keys.length; i += 500) {
    n += await redis.del(...keys.slice(i, i + 500));
  }

  return n;
}

async function scanAll(redis: Redis, prefix: string): Promise<string[]> {
  const all: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    all.push(...keys);
  } while (cursor !== '0');

  return all;
}

/** A TCP port that was free a moment ago. */
export async function freeTcpPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A UDP port that was free a moment ago. */
export async function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.once('error', reject);
    s.bind(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
