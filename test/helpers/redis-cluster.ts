/**
 * Redis high-availability setups for the tests, from Debian's redis-server on loopback:
 *
 * - `startRedisCluster()`: a Redis Cluster of 3 primaries (no replicas), created with
 *   `redis-cli --cluster create ... --cluster-yes`, ready once every node reports
 *   `cluster_state:ok`;
 * - `startSentinelSetup()`: a primary, one replica and 3 sentinels (quorum 2) with a short
 *   `down-after-milliseconds`, so that killing the primary fails over within seconds.
 *
 * Every process runs with no persistence (`--save '' --appendonly no`) in a temporary directory of
 * its own (cluster and sentinel config files included) on ports from `freePort()` (below the
 * kernel's ephemeral range; the cluster bus port is chosen the same way, `--cluster-port`).
 * Nothing outlives the test: each server runs under `setpriv --pdeathsig KILL` when available,
 * is killed on process exit, and `stop()` (idempotent; also run when starting fails halfway)
 * kills the servers and removes the directory.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './sipp.js';

/** A running Redis Cluster. */
export interface RedisClusterSetup {
  /** The primaries, "127.0.0.1:port" each. */
  nodes: string[];
  /** Password of every node (requirepass/masterauth), when one was asked for. */
  password?: string;
  /** The temporary directory. */
  dir: string;
  /** Kills the nodes and removes the directory. Idempotent. */
  stop(): Promise<void>;
}

/** A running primary + replica + 3 sentinels. */
export interface SentinelSetup {
  /** The sentinels, "127.0.0.1:port" each. */
  sentinels: string[];
  /** The monitored group's name. */
  name: string;
  /** The primary at the start, "127.0.0.1:port". */
  primary: string;
  /** The replica at the start, "127.0.0.1:port". */
  replica: string;
  /** Data nodes' password, when one was asked for. */
  password?: string;
  /** Sentinels' own password, when one was asked for. */
  sentinelPassword?: string;
  dir: string;
  /** SIGKILLs the primary; resolves once it has exited. */
  killPrimary(): Promise<void>;
  /** Kills everything and removes the directory. Idempotent. */
  stop(): Promise<void>;
}

/** A redis-server (or sentinel) child. */
interface Server {
  name: string;
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
let setprivOk: boolean | undefined;

function installExitHook(): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const child of running) {
        child.kill('SIGKILL');
      }
    });
  }
}

function hasSetpriv(): boolean {
  setprivOk ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' }).status === 0;

  return setprivOk;
}

/** Starts redis-server with the given arguments (a config file first for a sentinel). */
function startServer(name: string, port: number, args: string[], cwd: string): Server {
  installExitHook();
  const [cmd, cmdArgs] = hasSetpriv() ? ['setpriv', ['--pdeathsig', 'KILL', '--', 'redis-server', ...args]] : ['redis-server', args];
  const child = spawn(cmd, cmdArgs, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      out += `\ncannot start redis-server: ${err.message} (is the Debian package redis-server installed?)`;
    });
    child.once('close', () => {
      running.delete(child);
      resolve();
    });
  });

  return { name, port, child, exited, output: () => out };
}

async function kill(s: Server): Promise<void> {
  if (s.child.exitCode === null && s.child.signalCode === null) {
    s.child.kill('SIGKILL');
  }
  await s.exited;
}

/** One-shot connection to a node; no retries, no queue. */
function probe(port: number, password?: string): Redis {
  const r = new Redis({
    host: '127.0.0.1',
    port,
    ...(password ? { password } : {}),
    lazyConnect: true,
    connectTimeout: 500,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  r.on('error', () => undefined);

  return r;
}

/** Runs fn against a fresh connection to the node, then closes it. */
async function withNode<T>(port: number, password: string | undefined, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = probe(port, password);
  try {
    await r.connect();

    return await fn(r);
  } finally {
    r.disconnect();
  }
}

/** Polls until check() is true (errors count as false); throws with what() after timeoutMs. */
async function waitFor(what: () => string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      if (await check()) {
        return;
      }
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what()} within ${timeoutMs} ms${last ? ` (last error: ${last})` : ''}`);
}

function assertAlive(servers: Server[]): void {
  for (const s of servers) {
    if (s.child.exitCode !== null || s.child.signalCode !== null) {
      throw new Error(`${s.name} on port ${s.port} exited: ${s.output().trim().split('\n').slice(-3).join(' | ')}`);
    }
  }
}

function noPersistence(dir: string): string[] {
  return ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', '--logfile', ''];
}

function auth(password: string | undefined): string[] {
  return password ? ['--requirepass', password, '--masterauth', password] : [];
}

/** Stops servers and removes dir; returned as the setups' stop(). */
function stopper(servers: Server[], dir: string): () => Promise<void> {
  let stopping: Promise<void> | undefined;

  return () => {
    stopping ??= (async () => {
      await Promise.all(servers.map(kill));
      fs.rmSync(dir, { recursive: true, force: true });
    })();

    return stopping;
  };
}

/**
 * Starts a Redis Cluster of `primaries` (default 3) primaries without replicas on free loopback
 * ports and waits until every node reports cluster_state:ok.
 */
export async function startRedisCluster(opts: { primaries?: number; password?: string; timeoutMs?: number } = {}): Promise<RedisClusterSetup> {
  const count = opts.primaries ?? 3;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-redis-cluster-'));
  const servers: Server[] = [];
  const stop = stopper(servers, dir);
  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const bus = await freePort();
      const nodeDir = path.join(dir, String(port));
      fs.mkdirSync(nodeDir);
      servers.push(
        startServer(`cluster node ${i + 1}`, port, [
          '--port', String(port),
          '--cluster-enabled', 'yes',
          '--cluster-port', String(bus),
          '--cluster-config-file', path.join(nodeDir, 'nodes.conf'),
          '--cluster-node-timeout', '2000',
          ...noPersistence(nodeDir),
          ...auth(opts.password),
        ], nodeDir),
      );
    }
    for (const s of servers) {
      await waitFor(() => `${s.name} on port ${s.port} did not answer PING: ${s.output()}`, 5000, async () => {
        assertAlive(servers);

        return withNode(s.port, opts.password, async (r) => (await r.ping()) === 'PONG');
      });
    }
    const nodes = servers.map((s) => `127.0.0.1:${s.port}`);
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes', ...(opts.password ? ['-a', opts.password, '--no-auth-warning'] : [])], {
      encoding: 'utf8',
      timeout: timeoutMs,
    });
    if (create.status !== 0 || !/All 16384 slots covered/.test(create.stdout)) {
      throw new Error(`redis-cli --cluster create failed (status ${create.status}): ${(create.stdout + create.stderr).trim().split('\n').slice(-5).join(' | ')}`);
    }
    for (const s of servers) {
      await waitFor(() => `${s.name} on port ${s.port} did not reach cluster_state:ok`, timeoutMs, async () => {
        assertAlive(servers);

        return withNode(s.port, opts.password, async (r) => /cluster_state:ok/.test(await r.cluster('INFO')));
      });
    }

    return { nodes, ...(opts.password ? { password: opts.password } : {}), dir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** SENTINEL MASTER <name> as a field → value map. */
async function sentinelMaster(port: number, password: string | undefined, name: string): Promise<Record<string, string>> {
  return withNode(port, password, async (r) => {
    const flat = (await r.call('SENTINEL', 'MASTER', name)) as string[];
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) {
      out[flat[i]!] = flat[i + 1]!;
    }

    return out;
  });
}

/**
 * Starts a primary, one replica of it and 3 sentinels monitoring them (quorum 2,
 * down-after-milliseconds `downAfterMs`, default 1000; failover-timeout `failoverTimeoutMs`,
 * default 3000) and waits until the replica is in sync and every sentinel knows the replica and
 * the other two sentinels (so that a failover can be agreed on at once).
 */
export async function startSentinelSetup(
  opts: { name?: string; password?: string; sentinelPassword?: string; downAfterMs?: number; failoverTimeoutMs?: number; timeoutMs?: number } = {},
): Promise<SentinelSetup> {
  const name = opts.name ?? 'rbtest';
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-redis-sentinel-'));
  const servers: Server[] = [];
  const stop = stopper(servers, dir);
  try {
    const dataNode = async (label: string, extra: string[]) => {
      const port = await freePort();
      const nodeDir = path.join(dir, `${label}-${port}`);
      fs.mkdirSync(nodeDir);
      const s = startServer(label, port, ['--port', String(port), ...noPersistence(nodeDir), ...auth(opts.password), ...extra], nodeDir);
      servers.push(s);
      await waitFor(() => `${label} on port ${port} did not answer PING: ${s.output()}`, 5000, async () => {
        assertAlive(servers);

        return withNode(port, opts.password, async (r) => (await r.ping()) === 'PONG');
      });

      return s;
    };
    const primary = await dataNode('primary', []);
    const replica = await dataNode('replica', ['--replicaof', '127.0.0.1', String(primary.port)]);
    await waitFor(() => `the replica did not sync with the primary`, timeoutMs, async () => {
      assertAlive(servers);

      return withNode(replica.port, opts.password, async (r) => /master_link_status:up/.test(await r.info('replication')));
    });

    const sentinelPorts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      sentinelPorts.push(port);
      const sDir = path.join(dir, `sentinel-${port}`);
      fs.mkdirSync(sDir);
      const conf = [
        `port ${port}`,
        'bind 127.0.0.1',
        'daemonize no',
        `dir ${sDir}`,
        'loglevel warning',
        'logfile ""',
        `sentinel monitor ${name} 127.0.0.1 ${primary.port} 2`,
        `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1000}`,
        `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 3000}`,
        `sentinel parallel-syncs ${name} 1`,
        ...(opts.password ? [`sentinel auth-pass ${name} ${opts.password}`] : []),
        ...(opts.sentinelPassword ? [`requirepass ${opts.sentinelPassword}`, `sentinel sentinel-pass ${opts.sentinelPassword}`] : []),
      ];
      const file = path.join(sDir, 'sentinel.conf');
      fs.writeFileSync(file, `${conf.join('\n')}\n`);
      servers.push(startServer(`sentinel ${i + 1}`, port, [file, '--sentinel'], sDir));
    }
    for (const port of sentinelPorts) {
      await waitFor(() => `sentinel on port ${port} did not see the replica and the 2 other sentinels`, timeoutMs, async () => {
        assertAlive(servers);
        const m = await sentinelMaster(port, opts.sentinelPassword, name);

        return m['num-slaves'] === '1' && m['num-other-sentinels'] === '2' && !/down/.test(m.flags ?? '');
      });
    }

    return {
      sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`),
      name,
      primary: `127.0.0.1:${primary.port}`,
      replica: `127.0.0.1:${replica.port}`,
      ...(opts.password ? { password: opts.password } : {}),
      ...(opts.sentinelPassword ? { sentinelPassword: opts.sentinelPassword } : {}),
      dir,
      killPrimary: () => kill(primary),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The primary's address ("host:port") as a sentinel names it now. */
export async function sentinelPrimary(sentinel: string, name: string, password?: string): Promise<string> {
  const port = Number(sentinel.slice(sentinel.lastIndexOf(':') + 1));
  const addr = await withNode(port, password, async (r) => (await r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as [string, string] | null);
  if (!addr) {
    throw new Error(`sentinel ${sentinel} knows no primary named ${name}`);
  }

  return `${addr[0]}:${addr[1]}`;
}
