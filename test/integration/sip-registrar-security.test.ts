/**
 * The registrar's defences (issue 12 break-it review, findings b to g) on real engines and real
 * Redis, two registrars on one Redis standing for two nodes:
 *
 * b. a push token registered to another agent is refused (403), also when two agents race for it;
 * c. failed digest responses lock the source (IPv6 by /64) and the username, in the registrar's own
 *    lockout kinds, never a trunk's address or the trunks' `sip` kind; a malformed X-RB-Source
 *    from the trusted proxy counts against the proxy;
 * d. with the registrar on, the engine's unknown-source screen lets REGISTER through and nothing
 *    else;
 * e. the most bindings per agent holds when REGISTERs race on two nodes;
 * f. ever-new push tokens do not grow an agent's push devices past the cap;
 * g. STUN keep-alives: off unless enabled, rate-limited, and malformed STUN changes nothing.
 *
 *   npx vitest run --config .config/vitest.config.ts test/integration/sip-registrar-security.test.ts
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WindowCounter } from '../../src/security/rate-limit.js';
import { type RejectionReason } from '../../src/security/guard.js';
import { type SipDevicesConfig } from '../../src/sip/registrar/config.js';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { SipRegistrar } from '../../src/sip/registrar/registrar.js';
import { StateStore } from '../../src/state/store.js';
import { type EngineFixture, startEngine } from '../helpers/engine.js';
import { deletePrefix, quietLogger } from '../helpers/env.js';
import { isFinal, RawSipPeer, sipRequest, sleep, token } from '../helpers/raw-sip.js';
import { RawDevice } from '../helpers/sip-device.js';

const REALM = 'sec.ringbridge.test';
const PREFIX = `rbtest:regsec:${token()}:`;
const USERS = ['ann', 'ben', 'cat', 'dan', 'eve', 'fay', 'gus', 'hal', 'ivy', 'jon', 'kim', 'lou'] as const;
type User = (typeof USERS)[number];
const pw = (u: string) => `${u}-pw`;
const agent = (u: string) => `agent-${u}`;

const config: SipDevicesConfig = {
  enabled: true,
  realm: REALM,
  algorithms: ['MD5', 'SHA-256'],
  nonceTtlS: 300,
  minExpiresS: 2,
  maxExpiresS: 3600,
  defaultExpiresS: 3600,
  flowTimerS: 30,
  maxBindingsPerAgent: 3,
  maxPushDevicesPerAgent: 3,
  lockout: { maxFailuresPerSource: 3, maxFailuresPerUser: 5, windowMs: 60_000, lockMs: 60_000 },
  credentials: USERS.map((u) => ({ agentId: agent(u), username: u, ha1Md5: digestHa1('MD5', u, REALM, pw(u)), ha1Sha256: digestHa1('SHA-256', u, REALM, pw(u)) })),
};

let redis: Redis;
let store: StateStore;
/** Two nodes: two engines, each with its registrar, on one Redis. */
let nodeA: EngineFixture;
let nodeB: EngineFixture;
let regA: SipRegistrar;
let regB: SipRegistrar;
const rejected: RejectionReason[] = [];
const open: RawDevice[] = [];

beforeAll(async () => {
  redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: false });
  store = new StateStore({ redis, keyPrefix: PREFIX, nodeId: 'node-a', logger: quietLogger(), recordTtlS: 3600 });
  const storeB = new StateStore({ redis, keyPrefix: PREFIX, nodeId: 'node-b', logger: quietLogger(), recordTtlS: 3600 });
  const counter = new WindowCounter({ redis, keyPrefix: PREFIX, logger: quietLogger() });
  const security = { counter, rejected: (r: RejectionReason) => void rejected.push(r) };
  // 127.0.0.1 is the trusted proxy: its X-RB-Source names the device's "real" source, so that one
  // test host can stand for many sources; 198.51.100.0/24 is a trunk's allow-list
  const common = { config, redis, logger: quietLogger(), security, trunkSources: ['198.51.100.0/24'], trustedProxies: ['127.0.0.1'] };
  nodeA = await startEngine({ stunKeepAlives: { enabled: true, perSourcePerSecond: 5 } });
  nodeB = await startEngine();
  regA = new SipRegistrar({ ...common, srf: nodeA.srf, store });
  regB = new SipRegistrar({ ...common, srf: nodeB.srf, store: storeB });
}, 60_000);

afterAll(async () => {
  for (const d of open) {
    d.close();
  }
  regA?.close();
  regB?.close();
  await nodeA?.close();
  await nodeB?.close();
  if (redis) {
    await deletePrefix(redis, PREFIX);
    redis.disconnect();
  }
});

async function device(user: User, node: EngineFixture = nodeA, transport: 'udp' | 'tcp' = 'udp'): Promise<RawDevice> {
  const d = await RawDevice.open(node.port(transport), REALM, user, pw(user), { transport });
  open.push(d);

  return d;
}

const from = (address: string) => [`X-RB-Source: ${address}:5060;transport=udp`];
const lockKey = (kind: string, id: string) => `${PREFIX}lock:{${kind}:${id}}`;
const pushContact = (d: RawDevice, instance: string, prid: string) => `<${d.contactUri};pn-provider=fcm;pn-prid=${prid};pn-param=proj>;+sip.instance="<urn:uuid:${instance}>"`;
const uuid = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

describe('c. digest guessing is locked out per source and per username, apart from the trunks', () => {
  it('locks a source after maxFailuresPerSource wrong responses, even for the right password then; another source still registers', async () => {
    const d = await device('ann');
    for (let i = 0; i < 3; i++) {
      expect((await d.register({ password: 'guess', headers: from('203.0.113.5') })).msg.status).toBe(403);
    }
    const locked = await d.register({ headers: from('203.0.113.5') });
    expect(locked.msg.status).toBe(403);
    expect(locked.msg.reason).toMatch(/locked/);
    expect(rejected).toContain('register_locked');
    expect(await regA.bindings(agent('ann'))).toEqual([]);
    // the registrar's own kind: the trunks' INVITE lockout (kind sip) knows nothing of it
    expect(await redis.exists(lockKey('reg', '203.0.113.5'))).toBe(1);
    expect(await redis.exists(lockKey('sip', '203.0.113.5'))).toBe(0);
    // on the other node too (Redis), and a different source is fine
    const other = await device('ann', nodeB);
    expect((await other.register({ headers: from('203.0.113.5') })).msg.status).toBe(403);
    expect((await other.register({ expires: 600, headers: from('203.0.113.6') })).msg.status).toBe(200);
    await other.register({ contact: '*', expires: 0, headers: from('203.0.113.6') });
  });

  it('counts IPv6 sources by their /64', async () => {
    const d = await device('ben');
    for (const host of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:ffff::3']) {
      expect((await d.register({ password: 'guess', headers: [`X-RB-Source: [${host}]:5060`] })).msg.status).toBe(403);
    }
    expect((await d.register({ headers: ['X-RB-Source: [2001:db8:1:2::99]:5060'] })).msg.reason).toMatch(/locked/);
    expect((await d.register({ expires: 600, headers: ['X-RB-Source: [2001:db8:1:3::1]:5060'] })).msg.status).toBe(200);
    await d.register({ contact: '*', expires: 0, headers: ['X-RB-Source: [2001:db8:1:3::1]:5060'] });
  });

  it('locks a username after maxFailuresPerUser failures from rotating sources; other users are not affected', async () => {
    const d = await device('cat');
    for (let i = 0; i < 5; i++) {
      expect((await d.register({ password: 'guess', headers: from(`203.0.113.${20 + i}`) })).msg.status).toBe(403);
    }
    // a fresh source, the right password: the account is locked
    const r = await d.register({ headers: from('203.0.113.40') });
    expect(r.msg.status).toBe(403);
    expect(r.msg.reason).toMatch(/locked/);
    // another user from a fresh source is not affected
    const dan = await device('dan');
    expect((await dan.register({ expires: 600, headers: from('203.0.113.41') })).msg.status).toBe(200);
    await dan.register({ contact: '*', expires: 0, headers: from('203.0.113.41') });
  });

  it('never locks a trunk\'s allow-listed address, and a malformed X-RB-Source from the proxy counts against the proxy', async () => {
    const d = await device('eve');
    // four failures "from the trunk" (over maxFailuresPerSource, under maxFailuresPerUser)
    for (let i = 0; i < 4; i++) {
      expect((await d.register({ password: 'guess', headers: from('198.51.100.7') })).msg.status).toBe(403);
    }
    expect(await redis.exists(lockKey('reg', '198.51.100.7'))).toBe(0);
    expect((await d.register({ expires: 600, headers: from('198.51.100.7') })).msg.status).toBe(200);
    await d.register({ contact: '*', expires: 0, headers: from('198.51.100.7') });
    // a header the proxy mangled: counted against what the proxy shows us (its own address)
    const f = await device('fay');
    for (let i = 0; i < 3; i++) {
      expect((await f.register({ password: 'guess', headers: ['X-RB-Source: not-an-address'] })).msg.status).toBe(403);
    }
    expect(await redis.exists(lockKey('reg', '127.0.0.1'))).toBe(1);
    expect((await f.register({ headers: ['X-RB-Source: ;;'] })).msg.reason).toMatch(/locked/);
    // a device with a well-formed header behind the same proxy is not locked
    expect((await f.register({ expires: 600, headers: from('203.0.113.50') })).msg.status).toBe(200);
    await f.register({ contact: '*', expires: 0, headers: from('203.0.113.50') });
    await redis.del(lockKey('reg', '127.0.0.1'));
  });
});

describe('b. push tokens of other agents', () => {
  it('refuses with 403 a REGISTER whose pn-prid is another agent\'s token; the owner keeps it', async () => {
    const tokenT = `fcm-${randomBytes(12).toString('hex')}`;
    const gus = await device('gus');
    const hal = await device('hal');
    expect((await gus.register({ contact: pushContact(gus, uuid(1), tokenT), expires: 600, headers: from('203.0.113.60') })).msg.status).toBe(200);
    const taken = await hal.register({ contact: pushContact(hal, uuid(2), tokenT), expires: 600, headers: from('203.0.113.61') });
    expect(taken.msg.status).toBe(403);
    expect(taken.msg.reason).toMatch(/push token/);
    expect(await store.devices(agent('hal'))).toEqual([]);
    expect(await regA.bindings(agent('hal'))).toEqual([]);
    expect((await store.devices(agent('gus'))).map((d) => d.token)).toEqual([tokenT]);
    // the owner refreshes as before
    expect((await gus.register({ contact: pushContact(gus, uuid(1), tokenT), expires: 600, headers: from('203.0.113.60') })).msg.status).toBe(200);
    await gus.register({ contact: '*', expires: 0, headers: from('203.0.113.60') });
    expect(await store.devices(agent('gus'))).toEqual([]);
  });

  it('gives a token to exactly one of several agents registering it at once on two nodes', async () => {
    const tokenT = `fcm-${randomBytes(12).toString('hex')}`;
    const racers = ['ivy', 'jon', 'kim', 'lou'] as const;
    const devs = await Promise.all(racers.map((u, i) => device(u, i % 2 === 0 ? nodeA : nodeB)));
    const results = await Promise.all(devs.map((d, i) => d.register({ contact: pushContact(d, uuid(10 + i), tokenT), expires: 600, headers: from(`203.0.113.${70 + i}`) })));
    const winners = racers.filter((_, i) => results[i]!.msg.status === 200);
    expect(winners, results.map((r) => `${r.msg.status} ${r.msg.reason}`).join(' | ')).toHaveLength(1);
    expect(results.filter((r) => r.msg.status === 403)).toHaveLength(racers.length - 1);
    for (const u of racers) {
      expect((await store.devices(agent(u))).map((d) => d.token)).toEqual(u === winners[0] ? [tokenT] : []);
    }
    await Promise.all(devs.map((d, i) => d.register({ contact: '*', expires: 0, headers: from(`203.0.113.${70 + i}`) })));
  });
});

describe('e. the most bindings per agent under concurrency', () => {
  it('keeps at most maxBindingsPerAgent when ten devices of one agent register at once on two nodes', async () => {
    const devs = await Promise.all(Array.from({ length: 10 }, (_, i) => device('dan', i % 2 === 0 ? nodeA : nodeB)));
    const results = await Promise.all(devs.map((d, i) => d.register({ contact: `<${d.contactUri}>;+sip.instance="<urn:uuid:${uuid(100 + i)}>"`, expires: 600, headers: from(`203.0.113.${100 + i}`) })));
    const ok = results.filter((r) => r.msg.status === 200).length;
    expect(ok, results.map((r) => r.msg.status).join(' ')).toBe(3);
    expect(results.every((r) => r.msg.status === 200 || r.msg.status === 403)).toBe(true);
    expect(await regA.bindings(agent('dan'))).toHaveLength(3);
    await redis.del(store.key('agent', agent('dan'), 'sip'));
  });
});

describe('f. push devices per agent are capped', () => {
  it('keeps the newest maxPushDevicesPerAgent SIP push devices when ever-new pn-prid values arrive; the app\'s devices stay', async () => {
    await store.putDevice(agent('eve'), { deviceId: 'app-phone', platform: 'android', channel: 'fcm', token: `app-${randomBytes(8).toString('hex')}` });
    const d = await device('eve');
    const tokens: string[] = [];
    for (let i = 0; i < 6; i++) {
      const t = `fcm-${i}-${randomBytes(8).toString('hex')}`;
      tokens.push(t);
      expect((await d.register({ contact: pushContact(d, uuid(200 + i), t), expires: 600, headers: from('203.0.113.150') })).msg.status).toBe(200);
      // the binding went away (as it does when a sleeping device stops refreshing); its push device stays
      await redis.del(store.key('agent', agent('eve'), 'sip'));
      await sleep(5); // distinct lastSeen times
    }
    const devices = await store.devices(agent('eve'));
    expect(devices.filter((x) => x.deviceId.startsWith('sip-')).map((x) => x.token).sort()).toEqual(tokens.slice(3).sort());
    expect(devices.some((x) => x.deviceId === 'app-phone')).toBe(true);
    // one REGISTER with more push contacts than the cap is refused whole
    const many = [0, 1, 2, 3].map((i) => pushContact(d, uuid(300 + i), `fcm-many-${i}-${randomBytes(6).toString('hex')}`)).join(', ');
    expect((await d.register({ contact: many, expires: 600, headers: from('203.0.113.150') })).msg.status).toBe(403);
    expect((await store.devices(agent('eve'))).filter((x) => x.deviceId.startsWith('sip-'))).toHaveLength(3);
    // a REGISTER refused for another reason (the binding limit) evicts nothing and adds nothing
    const three = [0, 1, 2].map((i) => `<${d.contactUri}>;+sip.instance="<urn:uuid:${uuid(400 + i)}>"`).join(', ');
    expect((await d.register({ contact: three, expires: 600, headers: from('203.0.113.150') })).msg.status).toBe(200);
    const refused = await d.register({ contact: pushContact(d, uuid(500), `fcm-late-${randomBytes(6).toString('hex')}`), expires: 600, headers: from('203.0.113.150') });
    expect(refused.msg.status).toBe(403);
    expect(refused.msg.reason).toMatch(/devices per agent/);
    expect((await store.devices(agent('eve'))).filter((x) => x.deviceId.startsWith('sip-')).map((x) => x.token).sort()).toEqual(tokens.slice(3).sort());
    await d.register({ contact: '*', expires: 0, headers: from('203.0.113.150') });
  });
});

describe('d. the unknown-source screen with the registrar on', () => {
  it('lets REGISTER from an unknown source reach the registrar and refuses every other method', async () => {
    const fx = await startEngine({
      screen: { scannerUserAgents: ['friendly-scanner'], scannerAction: 'drop', unknownSourceAction: '403', knownSources: ['192.0.2.1'], digestTrunks: false, registrar: true },
    });
    const reg = new SipRegistrar({ config, srf: fx.srf, store, redis, logger: quietLogger() });
    const peer = await RawSipPeer.udp({ port: fx.port('udp') });
    try {
      const d = await RawDevice.open(fx.port('udp'), REALM, 'kim', pw('kim'));
      open.push(d);
      expect((await d.register({ expires: 600 })).msg.status).toBe(200);
      await d.register({ contact: '*', expires: 0 });
      for (const method of ['INVITE', 'OPTIONS', 'MESSAGE', 'SUBSCRIBE']) {
        const callId = token('scr-');
        peer.send(sipRequest({ method, uri: `sip:svc@127.0.0.1:${fx.port('udp')}`, viaPort: peer.port, callId, fromTag: 'f1', cseq: 1 }));
        expect((await peer.waitFor(isFinal(method, callId))).msg.status, method).toBe(403);
      }
    } finally {
      peer.close();
      reg.close();
      await fx.close();
    }
  });
});

describe('g. STUN keep-alives on the SIP UDP port', () => {
  const bindingRequest = () => Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), randomBytes(12)]);

  async function socket(): Promise<{ sock: dgram.Socket; got: Buffer[] }> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const got: Buffer[] = [];
    sock.on('message', (m) => got.push(m));

    return { sock, got };
  }

  it('answers nothing when SIP devices are not served (the default)', async () => {
    const { sock, got } = await socket();
    try {
      sock.send(bindingRequest(), nodeB.port('udp'), '127.0.0.1');
      await sleep(500);
      expect(got).toHaveLength(0);
      // answered where enabled
      sock.send(bindingRequest(), nodeA.port('udp'), '127.0.0.1');
      await expect.poll(() => got.length, { timeout: 3000 }).toBe(1);
    } finally {
      sock.close();
    }
  });

  it('answers at most perSourcePerSecond requests of one source per second', async () => {
    await sleep(1000); // a fresh one-second window for this source
    const { sock, got } = await socket();
    try {
      for (let i = 0; i < 30; i++) {
        sock.send(bindingRequest(), nodeA.port('udp'), '127.0.0.1');
      }
      await sleep(600);
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThanOrEqual(10); // 5 per second; the burst may straddle two windows
    } finally {
      sock.close();
    }
  });

  it('survives malformed and random STUN-looking datagrams and keeps serving SIP', async () => {
    const { sock } = await socket();
    try {
      const valid = bindingRequest();
      for (let i = 0; i < 300; i++) {
        const b = Buffer.from(valid);
        // flip bytes anywhere, keep or break the cookie and length, add random tails
        for (let k = 0; k < 1 + (i % 4); k++) {
          b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
        }
        const tail = randomBytes((i * 4) % 64);
        const fuzz = i % 3 === 0 ? Buffer.concat([b, tail]) : b;
        if (i % 5 === 0) {
          fuzz.writeUInt16BE(fuzz.length - 20, 2); // a length that matches
        }
        sock.send(fuzz, nodeA.port('udp'), '127.0.0.1');
      }
      await sleep(300);
      const d = await device('lou');
      expect((await d.register({ expires: 600, headers: from('203.0.113.200') })).msg.status).toBe(200);
      await d.register({ contact: '*', expires: 0, headers: from('203.0.113.200') });
    } finally {
      sock.close();
    }
  });
});

describe('e. the binding store is a compare-and-set', () => {
  it('decides again when another node wrote between its read and its write, so a limit checked in the change holds', async () => {
    const { SipBindingStore } = await import('../../src/sip/registrar/bindings.js');
    const key = store.key('agent', 'agent-cas', 'sip');
    const other = new Redis('redis://127.0.0.1:6379');
    await other.ping(); // connected: its write leaves at once
    try {
      const now = Date.now();
      const b = (id: string) => ({ id, contact: `sip:${id}@192.0.2.1`, outbound: false, flow: { transport: 'udp' as const, address: '192.0.2.1', port: 5060 }, callId: id, cseq: 1, expires: 600, expiresAt: now + 600_000, node: 'n', registeredAt: now, updatedAt: now });
      const bindings = new SipBindingStore({ redis, key: () => key, logger: quietLogger() });
      await bindings.update('agent-cas', () => ({ put: [b('one'), b('two')], remove: [] }));
      let decisions = 0;
      const attempt = bindings.update('agent-cas', (current) => {
        decisions++;
        if (decisions === 1) {
          // "another node" adds a binding after this read, before this write
          void other.hset(key, 'three', JSON.stringify(b('three')));
        }
        if (current.length + 1 > 3) {
          throw new Error('at most 3');
        }

        return { put: [b(`new-${decisions}`)], remove: [] };
      });
      await expect(attempt).rejects.toThrow('at most 3');
      expect(decisions).toBe(2);
      expect(Object.keys(await redis.hgetall(key)).sort()).toEqual(['one', 'three', 'two']);
    } finally {
      other.disconnect();
      await redis.del(key);
    }
  });
});

describe('break-it: malformed, huge and many', () => {
  it('answers malformed Contacts, pn-* parameters and Expires with 4xx (or 555), never 5xx, and keeps serving', async () => {
    const d = await device('jon');
    const c = d.contactUri;
    const cases: [string | null, string[]][] = [
      [`<${c};pn-provider=fcm;pn-prid=%>`, []],
      [`<${c};pn-provider=fcm;pn-prid=>`, []],
      [`<${c};pn-provider=fcm>`, []],
      [`<${c};pn-provider=apns;pn-prid=${'a'.repeat(5000)};pn-param=ABCDE12345.com.example.voip>`, []],
      [`<${c};pn-provider=apns;pn-prid=aaaaaaaaaa:voip&bbbbbbbbbb:remote;pn-param=nonsense>`, []],
      [`<${c};pn-provider=webpush;pn-prid=abcdefghij>`, []],
      [`<${c};pn-type=apple;pn-tok=x>`, []],
      [`<${c}>;expires=99999999999`, []],
      [`<${c}>;+sip.instance=<urn:uuid:x>`, []],
      [`<${c}>;reg-id=0;+sip.instance="<urn:uuid:1>"`, []],
      [`<${c}>;q=7`, []],
      ['<mailto:someone@example.com>', []],
      ['garbage <<>>', []],
      [`*, <${c}>`, ['Expires: 0']],
      ['*', ['Expires: 5']],
      [`<${c}>`, ['Expires: -1']],
      [`<${c}>`, ['Expires: 99999999999']],
      [`<${c}>`, ['Require: gruu']],
    ];
    for (const [contact, headers] of cases) {
      const r = await d.register({ contact, headers: [...headers, ...from('203.0.113.210')] });
      const what = `${contact} ${headers.join(' ')} → ${r.msg.status} ${r.msg.reason}`;
      expect((r.msg.status >= 400 && r.msg.status < 500) || r.msg.status === 555, what).toBe(true);
    }
    // RFC 8599 §4.1.2: a provider we cannot serve gets 555 with the ones we can (srf had to learn the code:
    // before, srf threw inside the handler and the unhandled rejection took the process down)
    const pns = await d.register({ contact: `<${c};pn-provider=webpush;pn-prid=abcdefghij>`, headers: from('203.0.113.210') });
    expect(pns.msg.status).toBe(555);
    expect(pns.msg.getHeader('feature-caps')).toContain('+sip.pns="fcm"');
    expect(await regA.bindings(agent('jon'))).toEqual([]);
    expect(await store.devices(agent('jon'))).toEqual([]);
    // a huge expires is shortened to maxExpiresS; 200 contacts in one REGISTER are refused whole
    const huge = await d.register({ contact: `<${c}>;expires=4294967295`, headers: from('203.0.113.210') });
    expect(huge.msg.status).toBe(200);
    expect((await regA.bindings(agent('jon')))[0]!.expires).toBe(3600);
    const many = Array.from({ length: 200 }, (_, i) => `<sip:jon-${i}@192.0.2.${(i % 250) + 1}:5060>`).join(', ');
    expect((await d.register({ contact: many, expires: 600, headers: from('203.0.113.210') })).msg.status).toBe(403);
    expect(await regA.bindings(agent('jon'))).toHaveLength(1);
    expect((await d.register({ contact: '*', expires: 0, headers: from('203.0.113.210') })).msg.status).toBe(200);
  });
});
