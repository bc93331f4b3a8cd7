/**
 * The defences' Redis stores (src/security) against the real Redis at 127.0.0.1:6379, each "node"
 * with its own connection: fixed-window limits shared between nodes, their in-process front and
 * fail-open when Redis is unreachable (a closed port), the lockout, and revocations with their
 * pub/sub channel.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { Lockout } from '../../src/security/lockout.js';
import { WindowCounter } from '../../src/security/rate-limit.js';
import { RevocationList } from '../../src/security/revocation.js';
import { captureLogger, deletePrefix, freeTcpPort, quietLogger } from '../helpers/env.js';

const clients: Redis[] = [];
const prefixes: string[] = [];
const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0)) {
    await c();
  }
  const admin = clients[0];
  for (const p of prefixes.splice(0)) {
    await deletePrefix(admin!, p);
  }
  for (const c of clients.splice(0)) {
    c.disconnect();
  }
});

function redis(url = 'redis://127.0.0.1:6379'): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false, retryStrategy: () => 200 });
  r.on('error', () => undefined);
  clients.push(r);

  return r;
}

async function ready(r: Redis): Promise<void> {
  if (r.status !== 'ready') {
    await new Promise((resolve) => r.once('ready', resolve));
  }
}

function prefix(): string {
  const p = `rbtest:${randomBytes(4).toString('hex')}:`;
  prefixes.push(p);

  return p;
}

describe('WindowCounter', () => {
  it('limit() counts two nodes in one window: the hit past the limit is refused on either, and the counter expires with its window', async () => {
    const p = prefix();
    const [ra, rb] = [redis(), redis()];
    await Promise.all([ready(ra), ready(rb)]);
    const a = new WindowCounter({ redis: ra, keyPrefix: p, logger: quietLogger() });
    const b = new WindowCounter({ redis: rb, keyPrefix: p, logger: quietLogger() });
    const verdicts = [];
    for (let i = 0; i < 6; i++) {
      verdicts.push(await (i % 2 === 0 ? a : b).limit('src', '192.0.2.1', 5, 30_000));
    }
    expect(verdicts.map((v) => v.allowed)).toEqual([true, true, true, true, true, false]);
    expect(verdicts.every((v) => v.counted)).toBe(true);
    expect(verdicts[5]!.retryAfterS).toBeGreaterThanOrEqual(29);
    expect(verdicts[5]!.retryAfterS).toBeLessThanOrEqual(30);
    expect(await ra.get(a.key('src', '192.0.2.1'))).toBe('6');
    const ttl = await ra.pttl(a.key('src', '192.0.2.1'));
    expect(ttl).toBeGreaterThan(25_000);
    expect(ttl).toBeLessThanOrEqual(30_000);
    // another id has its own window; a limit of 0 counts nothing
    expect((await a.limit('src', '192.0.2.2', 5, 30_000)).allowed).toBe(true);
    expect(await a.limit('src', '192.0.2.3', 0, 30_000)).toEqual({ allowed: true, retryAfterS: 0, counted: false });
    expect(await ra.exists(a.key('src', '192.0.2.3'))).toBe(0);
  });

  it('a new window starts when the old one expires', async () => {
    const p = prefix();
    const r = redis();
    await ready(r);
    const c = new WindowCounter({ redis: r, keyPrefix: p, logger: quietLogger() });
    expect((await c.limit('trunk', 't1', 1, 300)).allowed).toBe(true);
    expect((await c.limit('trunk', 't1', 1, 300)).allowed).toBe(false);
    await new Promise((res) => setTimeout(res, 400));
    expect((await c.limit('trunk', 't1', 1, 300)).allowed).toBe(true);
  });

  it('fails open when Redis is unreachable (warned once), and the in-process front still refuses past the limit', async () => {
    const dead = redis(`redis://127.0.0.1:${await freeTcpPort()}`);
    const log = captureLogger('warn');
    const c = new WindowCounter({ redis: dead, keyPrefix: 'rbtest:dead:', logger: log.logger, timeoutMs: 200 });
    const v = [];
    for (let i = 0; i < 4; i++) {
      v.push(await c.limit('src', '192.0.2.9', 3, 60_000));
    }
    expect(v.map((x) => [x.allowed, x.counted])).toEqual([
      [true, false],
      [true, false],
      [true, false],
      [false, true],
    ]);
    const warnings = log.lines().filter((l) => String(l.msg).includes('fail open'));
    expect(warnings).toHaveLength(1);
  });
});

describe('Lockout', () => {
  it('locks an address on the failure that reaches maxFailures, for lockMs, per kind', async () => {
    const p = prefix();
    const r = redis();
    await ready(r);
    const lockout = new Lockout({ counter: new WindowCounter({ redis: r, keyPrefix: p, logger: quietLogger() }), maxFailures: 3, windowMs: 60_000, lockMs: 5_000 });
    expect([await lockout.failed('sip', '192.0.2.7'), await lockout.failed('sip', '192.0.2.7')]).toEqual([false, false]);
    expect(await lockout.isLocked('sip', '192.0.2.7')).toBe(false);
    expect(await lockout.failed('sip', '192.0.2.7')).toBe(true);
    expect(await lockout.isLocked('sip', '192.0.2.7')).toBe(true);
    expect(await lockout.isLocked('ws', '192.0.2.7')).toBe(false);
    expect(await lockout.isLocked('sip', '192.0.2.8')).toBe(false);
    const pttl = await r.pttl(lockout.key('sip', '192.0.2.7'));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(5_000);
    // the failures were reset with the lock: after it, the count starts again
    expect(await r.exists(`${p}rl:{fail-sip:192.0.2.7}`)).toBe(0);
  });

  it('is off with maxFailures 0', async () => {
    const r = redis();
    await ready(r);
    const lockout = new Lockout({ counter: new WindowCounter({ redis: r, keyPrefix: prefix(), logger: quietLogger() }), maxFailures: 0, windowMs: 60_000, lockMs: 5_000 });
    for (let i = 0; i < 5; i++) {
      expect(await lockout.failed('ws', '192.0.2.7')).toBe(false);
    }
    expect(await lockout.isLocked('ws', '192.0.2.7')).toBe(false);
  });
});

describe('RevocationList', () => {
  it('revokes until the token expires, tells every node on the channel, and refuses expiries in the past', async () => {
    const p = prefix();
    const [ra, rb] = [redis(), redis()];
    await Promise.all([ready(ra), ready(rb)]);
    const a = new RevocationList({ counter: new WindowCounter({ redis: ra, keyPrefix: p, logger: quietLogger() }), defaultTtlS: 3600, logger: quietLogger() });
    const b = new RevocationList({ counter: new WindowCounter({ redis: rb, keyPrefix: p, logger: quietLogger() }), defaultTtlS: 3600, logger: quietLogger() });
    closers.push(() => a.close(), () => b.close());
    const heard: string[] = [];
    await b.subscribe((jti) => heard.push(jti));
    expect(await b.isRevoked('tok-1')).toBe(false);
    expect(await a.revoke('tok-1', new Date(Date.now() + 120_000))).toEqual({ ttlS: 120 });
    expect(await b.isRevoked('tok-1')).toBe(true);
    const ttl = await ra.ttl(a.key('tok-1'));
    expect(ttl).toBeGreaterThan(110);
    expect(ttl).toBeLessThanOrEqual(120);
    expect(await a.revoke('tok-2')).toEqual({ ttlS: 3600 });
    const end = Date.now() + 5000;
    while (heard.length < 2 && Date.now() < end) {
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(heard).toEqual(['tok-1', 'tok-2']);
    await expect(a.revoke('tok-3', new Date(Date.now() - 1000))).rejects.toThrow(RangeError);
    expect(await a.isRevoked(undefined)).toBe(false);
  });
});
