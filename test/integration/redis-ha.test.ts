/**
 * Redis high availability through ioredis (issue 5, item 6), against real servers on loopback:
 *
 * - cluster: a 3-primary Redis Cluster from Debian's redis-server; connectRedis() in cluster mode
 *   (password from redis.url); one entity's hash-tagged keys share a slot and go through one MULTI,
 *   the same keys without the tag do not (CROSSSLOT from Redis itself), and entities spread over
 *   the 3 primaries;
 * - sentinel: a primary, a replica and 3 sentinels; connectRedis() in sentinel mode, the primary
 *   is killed, the sentinels promote the replica and the client writes again on it; the times
 *   are printed ("[redis-ha] sentinel failover: ...");
 * - configuration: bad sentinel/cluster settings are refused naming the key, and passwords are
 *   not shown.
 *
 * Reproduce the failover measurement alone:
 *   npx vitest run --config .config/vitest.config.ts test/integration/redis-ha.test.ts -t failover
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Cluster, type Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { connectRedis, type RedisHandle, RedisUnavailableError } from '../../src/state/redis.js';
import { projectRoot } from '../../src/util/paths.js';
import { captureLogger, deletePrefix } from '../helpers/env.js';
import { type RedisClusterSetup, type SentinelSetup, sentinelPrimary, startRedisCluster, startSentinelSetup } from '../helpers/redis-cluster.js';

const prefix = `rbtest:${randomBytes(4).toString('hex')}:`;

/** The owner ("host:port") of each slot, from CLUSTER SLOTS. */
async function slotOwners(client: Cluster): Promise<Map<number, string>> {
  const owners = new Map<number, string>();
  for (const [from, to, primary] of await client.cluster('SLOTS')) {
    for (let s = from; s <= to; s++) {
      owners.set(s, `${primary?.[0]}:${primary?.[1]}`);
    }
  }

  return owners;
}

async function keySlot(client: Cluster, key: string): Promise<number> {
  return Number(await client.cluster('KEYSLOT', key));
}

describe('Redis Cluster: 3 primaries, cluster mode', () => {
  const password = `cl-${randomBytes(6).toString('hex')}`;
  const log = captureLogger('debug');
  let cluster: RedisClusterSetup;
  let handle: RedisHandle;
  let client: Cluster;

  beforeAll(async () => {
    cluster = await startRedisCluster({ password });
    handle = await connectRedis({
      mode: 'cluster',
      // host and port are not used in cluster mode; the password and the scheme are
      url: `redis://:${password}@redis-cluster`,
      cluster: { nodes: [cluster.nodes[0]!] },
      autoStart: false,
      connectTimeoutMs: 2000,
      logger: log.logger,
    });
    if (!(handle.client instanceof Cluster)) {
      throw new Error('connectRedis() in cluster mode returned no Cluster');
    }
    client = handle.client;
  }, 45_000);

  afterAll(async () => {
    if (handle) {
      await deletePrefix(handle.client, prefix);
      await handle.close();
    }
    await cluster?.stop();
  });

  it('connects through one startup node and discovers the 3 primaries', () => {
    expect(handle.mode).toBe('cluster');
    expect(client.status).toBe('ready');
    expect(client.nodes('master').map((n) => `${n.options.host}:${n.options.port}`).sort()).toEqual([...cluster.nodes].sort());
    expect(log.text()).not.toContain(password);
  });

  it("runs one MULTI over an entity's hash-tagged keys, all in one slot", async () => {
    const keys = [`${prefix}agent:{a1}`, `${prefix}agent:{a1}:sessions`, `${prefix}agent:{a1}:devices`];
    const slots = await Promise.all(keys.map((k) => keySlot(client, k)));
    expect(new Set(slots).size).toBe(1);
    const result = await client
      .multi()
      .hset(keys[0]!, { status: 'available', node: 'gw-1' })
      .sadd(keys[1]!, 's1', 's2')
      .sadd(keys[2]!, 'd1')
      .exec();
    expect(result).toEqual([
      [null, 2],
      [null, 2],
      [null, 1],
    ]);
    expect(await client.hget(keys[0]!, 'status')).toBe('available');
    expect(await client.scard(keys[1]!)).toBe(2);
  });

  it('refuses the same MULTI without the hash tag: CROSSSLOT from Redis', async () => {
    const owners = await slotOwners(client);
    // Untagged keys of one entity hash to unrelated slots. Pick an entity whose two keys land in
    // different slots of the same primary, so that ioredis sends the MULTI and Redis judges it.
    let pair: [string, string] | undefined;
    for (let i = 0; i < 200 && !pair; i++) {
      const a = `${prefix}agent:x${i}`;
      const b = `${prefix}agent:x${i}:sessions`;
      const [sa, sb] = [await keySlot(client, a), await keySlot(client, b)];
      if (sa !== sb && owners.get(sa) === owners.get(sb)) {
        pair = [a, b];
      }
    }
    expect(pair, 'an untagged key pair in two slots of one primary').toBeDefined();
    const [a, b] = pair!;
    const err = (await client.multi().hset(a, { status: 'available' }).sadd(b, 's1').exec().then(
      () => undefined,
      (e: unknown) => e,
    )) as (Error & { previousErrors?: Error[] }) | undefined;
    expect(err, 'MULTI across two slots must fail').toBeInstanceOf(Error);
    const messages = [err!.message, ...(err!.previousErrors ?? []).map((e) => e.message)].join(' | ');
    expect(messages).toMatch(/CROSSSLOT/);
    // nothing of the transaction was applied
    expect([await client.exists(a), await client.exists(b)]).toEqual([0, 0]);

    // Two entities on different primaries: ioredis refuses before sending anything.
    let far: string | undefined;
    for (let i = 0; i < 200 && !far; i++) {
      const k = `${prefix}agent:{y${i}}`;
      if (owners.get(await keySlot(client, k)) !== owners.get(await keySlot(client, `${prefix}agent:{a1}`))) {
        far = k;
      }
    }
    await expect(client.multi().hset(`${prefix}agent:{a1}`, { x: '1' }).hset(far!, { x: '1' }).exec()).rejects.toThrow(/same slot/);
  });

  it('spreads entities over the 3 primaries; global indexes take single-key commands', async () => {
    for (let i = 0; i < 60; i++) {
      await client.multi().hset(`${prefix}agent:{s${i}}`, { status: 'available' }).sadd(`${prefix}agent:{s${i}}:sessions`, `sess-${i}`).exec();
      await client.zadd(`${prefix}agents:idle`, Date.now(), `s${i}`);
    }
    const perNode: Record<string, number> = {};
    for (const node of client.nodes('master')) {
      let cursor = '0';
      let n = 0;
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}agent:{s*`, 'COUNT', 500);
        cursor = next;
        n += keys.length;
      } while (cursor !== '0');
      perNode[`${node.options.host}:${node.options.port}`] = n;
    }
    expect(Object.keys(perNode)).toHaveLength(3);
    for (const n of Object.values(perNode)) {
      expect(n).toBeGreaterThan(0);
    }
    expect(Object.values(perNode).reduce((a, b) => a + b, 0)).toBe(120);
    expect(await client.zcard(`${prefix}agents:idle`)).toBe(60);
  });

  it('fails the start within 3 × connectTimeoutMs on a wrong password, without printing it', async () => {
    const wrong = captureLogger('debug');
    const t0 = Date.now();
    const err = await connectRedis({
      mode: 'cluster',
      url: 'redis://:not-the-password@redis-cluster',
      cluster: { nodes: cluster.nodes },
      autoStart: false,
      connectTimeoutMs: 500,
      logger: wrong.logger,
    }).then(
      (h) => h.close().then(() => undefined),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toContain('redis.cluster.nodes');
    expect((err as Error).message).not.toContain('not-the-password');
    expect(wrong.text()).not.toContain('not-the-password');
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe('Redis Sentinel: primary, replica, 3 sentinels', () => {
  const password = `dn-${randomBytes(6).toString('hex')}`;
  const sentinelPassword = `sn-${randomBytes(6).toString('hex')}`;
  const log = captureLogger('debug');
  let setup: SentinelSetup;
  let handle: RedisHandle | undefined;

  beforeAll(async () => {
    setup = await startSentinelSetup({ password, sentinelPassword, downAfterMs: 1000, failoverTimeoutMs: 3000 });
  }, 45_000);

  afterAll(async () => {
    if (handle) {
      await deletePrefix(handle.client, prefix).catch(() => 0);
      await handle.close();
    }
    await setup?.stop();
  });

  it('follows a failover: the primary is killed, the client writes on the promoted replica', async () => {
    handle = await connectRedis({
      mode: 'sentinel',
      url: `redis://:${password}@sentinel-group`,
      sentinel: { nodes: setup.sentinels, name: setup.name, password: sentinelPassword, role: 'master' },
      autoStart: false,
      connectTimeoutMs: 1000,
      logger: log.logger,
    });
    const client = handle.client as Redis;
    const port = async () => Number(/tcp_port:(\d+)/.exec(await client.info('server'))?.[1]);
    expect(await port()).toBe(Number(setup.primary.split(':')[1]));

    const key = `${prefix}agent:{a1}`;
    await client.hset(key, { status: 'available', before: '1' });
    // the replica has it before the primary goes
    expect(await client.wait(1, 2000)).toBeGreaterThanOrEqual(1);

    // Watch the sentinels' view in parallel: when does the group name the replica?
    let switchedAt: number | undefined;
    const t0 = Date.now();
    await setup.killPrimary();
    const watcher = (async () => {
      while (switchedAt === undefined && Date.now() - t0 < 20_000) {
        const now = await sentinelPrimary(setup.sentinels[0]!, setup.name, sentinelPassword).catch(() => '');
        if (now === setup.replica) {
          switchedAt = Date.now();
        } else {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();

    // Keep writing as the gateway would; each failed write must fail fast, not hang.
    let attempts = 0;
    let failures = 0;
    let slowest = 0;
    let wroteAt: number | undefined;
    while (wroteAt === undefined && Date.now() - t0 < 20_000) {
      attempts++;
      const a0 = Date.now();
      try {
        await client.hset(key, { status: 'available', after: String(attempts) });
        wroteAt = Date.now();
      } catch {
        failures++;
        await new Promise((r) => setTimeout(r, 100));
      }
      slowest = Math.max(slowest, Date.now() - a0);
    }
    await watcher;
    const reconnectMs = wroteAt === undefined ? undefined : wroteAt - t0;
    const switchMs = switchedAt === undefined ? undefined : switchedAt - t0;
    console.log(
      `[redis-ha] sentinel failover (down-after-milliseconds 1000): sentinels named the new primary after ${switchMs ?? '-'} ms; ` +
        `the client wrote again after ${reconnectMs ?? '-'} ms (${failures} failed writes before, slowest attempt ${slowest} ms)`,
    );
    expect(switchMs, 'sentinels promote the replica').toBeDefined();
    expect(reconnectMs, 'the client writes on the new primary').toBeDefined();
    expect(reconnectMs!).toBeLessThan(15_000);
    // a write during the outage fails within a few seconds (maxRetriesPerRequest 1), never hangs
    expect(slowest).toBeLessThan(5000);

    expect(await port()).toBe(Number(setup.replica.split(':')[1]));
    expect(await client.hgetall(key)).toMatchObject({ status: 'available', before: '1' });

    const messages = log.lines().map((l) => l.msg);
    expect(messages).toContain('redis connection lost; reconnecting');
    expect(messages).toContain('redis ready again');
    expect(log.text()).not.toContain(password);
    expect(log.text()).not.toContain(sentinelPassword);
  }, 45_000);
});

describe('Redis HA configuration errors name the key', () => {
  function problems(env: Record<string, string>): ConfigError {
    try {
      loadConfig({ env });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);

      return err as ConfigError;
    }
    throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
  }
  const keysOf = (e: ConfigError) => e.problems.map((p) => p.key);

  it('sentinel mode without sentinels or a group name', () => {
    const e = problems({ RINGBRIDGE_REDIS__MODE: 'sentinel' });
    expect(keysOf(e).sort()).toEqual(['redis.sentinel.name', 'redis.sentinel.nodes']);
    expect(e.message).toContain('redis.sentinel.nodes = [] (config/default.yaml): expected at least one sentinel "host:port" because redis.mode is "sentinel"');
  });

  it('malformed sentinel and cluster nodes, an unknown mode and role', () => {
    const e = problems({
      RINGBRIDGE_REDIS__MODE: 'sentinels',
      RINGBRIDGE_REDIS__SENTINEL__NODES: '10.0.0.1:26379,10.0.0.2',
      RINGBRIDGE_REDIS__SENTINEL__ROLE: 'primary',
      RINGBRIDGE_REDIS__CLUSTER__NODES: '10.0.0.1:70000',
    });
    expect(keysOf(e).sort()).toEqual(['redis.cluster.nodes.0', 'redis.mode', 'redis.sentinel.nodes.1', 'redis.sentinel.role']);
    expect(e.message).toContain('redis.mode = "sentinels" (environment variable RINGBRIDGE_REDIS__MODE): expected one of "standalone", "sentinel", "cluster"');
    expect(e.message).toContain('redis.sentinel.nodes.1 = "10.0.0.2" (environment variable RINGBRIDGE_REDIS__SENTINEL__NODES): expected "host:port"');
    expect(e.message).toContain('redis.cluster.nodes.0 = "10.0.0.1:70000"');
  });

  it('cluster mode without nodes, or with a database number; the password is not shown', () => {
    const e = problems({ RINGBRIDGE_REDIS__MODE: 'cluster', RINGBRIDGE_REDIS__URL: 'rediss://app:hunter2secret@x/3' });
    expect(keysOf(e).sort()).toEqual(['redis.cluster.nodes', 'redis.url']);
    expect(e.message).toContain('redis.url = "rediss://app:[set]@x/3"');
    expect(e.message).toContain('Redis Cluster has only database 0');
    expect(e.message).not.toContain('hunter2secret');
  });

  it('accepts good settings, lists from the environment included', () => {
    const { config } = loadConfig({
      env: {
        RINGBRIDGE_REDIS__MODE: 'sentinel',
        RINGBRIDGE_REDIS__SENTINEL__NODES: '10.0.0.1:26379, [2001:db8::5]:26379,sentinel-3.internal:26379',
        RINGBRIDGE_REDIS__SENTINEL__NAME: 'ringbridge',
      },
    });
    expect(config.redis.mode).toBe('sentinel');
    expect(config.redis.sentinel.nodes).toEqual(['10.0.0.1:26379', '[2001:db8::5]:26379', 'sentinel-3.internal:26379']);
  });

  it('--check-config shows the URL and sentinel passwords as [set]', () => {
    const r = spawnSync(process.execPath, [path.join(projectRoot(), 'dist', 'src', 'main.js'), '--check-config'], {
      encoding: 'utf8',
      env: {
        PATH: process.env.PATH,
        RINGBRIDGE_REDIS__MODE: 'sentinel',
        RINGBRIDGE_REDIS__URL: 'rediss://app:hunter2secret@redis-ha',
        RINGBRIDGE_REDIS__SENTINEL__NODES: '10.0.0.1:26379',
        RINGBRIDGE_REDIS__SENTINEL__NAME: 'ringbridge',
        RINGBRIDGE_REDIS__SENTINEL__PASSWORD: 'sentinel-hunter3',
      },
      timeout: 20_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const printed = JSON.parse(r.stdout) as { redis: { url: string; sentinel: { password: string } } };
    expect(printed.redis.url).toBe('rediss://app:[set]@redis-ha');
    expect(printed.redis.sentinel.password).toBe('[set]');
    expect(r.stdout).not.toContain('hunter2secret');
    expect(r.stdout).not.toContain('sentinel-hunter3');
  });
});
