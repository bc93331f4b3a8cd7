/**
 * The SIP registrar for agents' devices (issue 12, item 1) on the embedded engine and real Redis,
 * with real devices: baresip registering over UDP, TCP and TLS (digest, RFC 5626 outbound,
 * refresh, un-REGISTER), sipp's digest REGISTER scenario, and raw REGISTERs where the exact
 * sequence matters (423, `*`, query, expiry, out-of-order CSeq, reg-id replacement, SHA-256).
 *
 *   npx vitest run --config .config/vitest.config.ts test/integration/sip-registrar.test.ts
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SipDevicesConfig } from '../../src/sip/registrar/config.js';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { SipRegistrar } from '../../src/sip/registrar/registrar.js';
import { parseDigest } from '../../src/sip/trunks.js';
import { StateStore } from '../../src/state/store.js';
import { type Baresip, baresipAvailable, startBaresip, type SipTransport } from '../helpers/baresip.js';
import { type EngineFixture, startEngine } from '../helpers/engine.js';
import { captureLogger, deletePrefix, freeTcpPort, quietLogger } from '../helpers/env.js';
import { token } from '../helpers/raw-sip.js';
import { RawDevice } from '../helpers/sip-device.js';
import { runSipp } from '../helpers/sipp.js';
import { createTestCerts, type TestCerts } from '../helpers/tls-certs.js';

const REALM = 'ringbridge.test';
const PREFIX = `rbtest:reg:${token()}:`;

const users = {
  alice: { agentId: 'agent-alice', password: 'alice-pw' },
  bob: { agentId: 'agent-bob', password: 'bob-pw' },
  carol: { agentId: 'agent-carol', password: 'carol-pw' },
  dave: { agentId: 'agent-dave', password: 'dave-pw' },
  erin: { agentId: 'agent-erin', password: 'erin-pw' },
  sippy: { agentId: 'agent-sippy', password: 'sippy-pw' },
};

const config: SipDevicesConfig = {
  enabled: true,
  realm: REALM,
  // MD5 first: sipp 3.6 and baresip 1.0 answer the first challenge only, and know only MD5
  // (RFC 7616 §3.7 wants clients to skip those they do not support); the raw devices pick SHA-256
  algorithms: ['MD5', 'SHA-256'],
  nonceTtlS: 300,
  minExpiresS: 2,
  maxExpiresS: 3600,
  defaultExpiresS: 3600,
  flowTimerS: 30,
  maxBindingsPerAgent: 5,
  maxPushDevicesPerAgent: 5,
  lockout: { maxFailuresPerSource: 0, maxFailuresPerUser: 0, windowMs: 60_000, lockMs: 60_000 },
  credentials: Object.entries(users).map(([username, u]) => ({ agentId: u.agentId, username, ha1Md5: digestHa1('MD5', username, REALM, u.password), ha1Sha256: digestHa1('SHA-256', username, REALM, u.password) })),
};

let fx: EngineFixture;
let certs: TestCerts;
let redis: Redis;
let store: StateStore;
let registrar: SipRegistrar;
const changes: { agentId: string; bindings: number }[] = [];

beforeAll(async () => {
  certs = await createTestCerts();
  fx = await startEngine({ tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile }, stunKeepAlives: { enabled: true } });
  redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: false });
  store = new StateStore({ redis, keyPrefix: PREFIX, nodeId: 'node-reg', logger: quietLogger(), recordTtlS: 3600 });
  registrar = new SipRegistrar({ config, srf: fx.srf, store, redis, logger: quietLogger(), onChange: (agentId, bindings) => changes.push({ agentId, bindings }) });
}, 60_000);

afterAll(async () => {
  registrar?.close();
  await fx?.close();
  if (redis) {
    await deletePrefix(redis, PREFIX);
    redis.disconnect();
  }
});

/** Polls until `fn` returns a value that `ok` accepts; returns it. */
async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) {
      return v;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last value ${JSON.stringify(v)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('REGISTER with raw UDP devices', () => {
  it('challenges with MD5 and SHA-256 (one WWW-Authenticate each, in the configured order), registers with SHA-256, lists the binding with its expires and flow', async () => {
    const dev = await RawDevice.open(fx.port('udp'), REALM, 'alice', users.alice.password);
    try {
      const ok = await dev.register({ expires: 300, algorithm: 'SHA-256' });
      expect(ok.msg.status).toBe(200);
      const challenge = dev.peer.all((m) => m.msg.status === 401)[0]!;
      expect(challenge.msg.getHeaders('www-authenticate').map((c) => parseDigest(c)?.algorithm)).toEqual(['MD5', 'SHA-256']);
      expect(ok.msg.getHeader('contact')).toMatch(new RegExp(`^<${dev.contactUri}>;expires=(300|29\\d)$`)); // the seconds left when the 200 left
      const [b] = await registrar.bindings('agent-alice');
      expect(b).toMatchObject({ contact: dev.contactUri, expires: 300, outbound: false, flow: { transport: 'udp', address: '127.0.0.1', port: dev.peer.port }, callId: dev.callId, node: 'node-reg' });
      const ttl = await redis.pttl(store.key('agent', 'agent-alice', 'sip'));
      expect(ttl).toBeGreaterThan(295_000);
      expect(ttl).toBeLessThanOrEqual(301_000);
      // a query (no Contact) lists the binding and changes nothing
      const q = await dev.register({ contact: null });
      expect(q.msg.status).toBe(200);
      expect(q.msg.getHeader('contact')).toContain(dev.contactUri);
      // Expires: 0 removes it
      const off = await dev.register({ expires: 0 });
      expect(off.msg.status).toBe(200);
      expect(off.msg.getHeader('contact')).toBeUndefined();
      expect(await registrar.bindings('agent-alice')).toEqual([]);
      expect(await redis.exists(store.key('agent', 'agent-alice', 'sip'))).toBe(0);
    } finally {
      dev.close();
    }
  });

  it('answers a wrong password 403 and a too-brief interval 423 with Min-Expires, leaving no binding', async () => {
    const dev = await RawDevice.open(fx.port('udp'), REALM, 'bob', users.bob.password);
    try {
      const wrong = await dev.register({ password: 'nope' });
      expect(wrong.msg.status).toBe(403);
      const brief = await dev.register({ expires: 1 });
      expect(brief.msg.status).toBe(423);
      expect(brief.msg.getHeader('min-expires')).toBe('2');
      expect(await registrar.bindings('agent-bob')).toEqual([]);
      // bob's credentials for alice's address-of-record: 403
      const forAlice = await dev.register({ toUser: 'alice' });
      expect(forAlice.msg.status).toBe(403);
      expect(await registrar.bindings('agent-alice')).toEqual([]);
      expect(await registrar.bindings('agent-bob')).toEqual([]);
    } finally {
      dev.close();
    }
  });

  it('removes a binding when it expires, and tells presence', async () => {
    const dev = await RawDevice.open(fx.port('udp'), REALM, 'carol', users.carol.password);
    try {
      expect((await dev.register({ expires: 2 })).msg.status).toBe(200);
      expect(await registrar.bindings('agent-carol')).toHaveLength(1);
      await until(() => redis.exists(store.key('agent', 'agent-carol', 'sip')), (n) => n === 0, 10_000, 'the binding key to go');
      expect(await registrar.bindings('agent-carol')).toEqual([]);
      await until(
        () => Promise.resolve(changes.filter((c) => c.agentId === 'agent-carol').at(-1)?.bindings),
        (n) => n === 0,
        5000,
        'the expiry change',
      );
    } finally {
      dev.close();
    }
  });

  it('keeps several contacts of one agent, removes them all with "*", and refuses an out-of-order CSeq with 500', async () => {
    const a = await RawDevice.open(fx.port('udp'), REALM, 'dave', users.dave.password);
    const b = await RawDevice.open(fx.port('udp'), REALM, 'dave', users.dave.password);
    try {
      a.cseq = 10;
      expect((await a.register({ expires: 600 })).msg.status).toBe(200);
      const r = await b.register({ expires: 600 });
      expect(r.msg.status).toBe(200);
      // the 200 lists both bindings with their remaining expires
      const listed = r.msg.getHeaderValues('contact');
      expect(listed).toHaveLength(2);
      for (const d of [a, b]) {
        expect(listed.some((c) => new RegExp(`^<${d.contactUri.replace(/\./g, '\\.')}>;expires=(600|59\\d)$`).test(c)), listed.join(' | ')).toBe(true);
      }
      expect((await registrar.bindings('agent-dave')).map((x) => x.contact).sort()).toEqual([a.contactUri, b.contactUri].sort());
      // the same Call-ID with a lower CSeq than the stored one: out of order
      a.cseq = 5;
      const late = await a.register({ expires: 600 });
      expect(late.msg.status).toBe(500);
      expect((await registrar.bindings('agent-dave')).find((x) => x.contact === a.contactUri)?.cseq).toBe(12);
      const star = await b.register({ contact: '*', expires: 0 });
      expect(star.msg.status).toBe(200);
      expect(await registrar.bindings('agent-dave')).toEqual([]);
    } finally {
      a.close();
      b.close();
    }
  });

  it('replaces the binding of the same +sip.instance and reg-id (RFC 5626) and answers Require: outbound with a Flow-Timer', async () => {
    const instance = '<urn:uuid:11111111-2222-4333-8444-555555555555>';
    const first = await RawDevice.open(fx.port('udp'), REALM, 'erin', users.erin.password);
    const second = await RawDevice.open(fx.port('udp'), REALM, 'erin', users.erin.password);
    try {
      const ob = (d: RawDevice) => `<${d.contactUri};ob>;+sip.instance="${instance}";reg-id=1`;
      const r1 = await first.register({ contact: ob(first), expires: 600, headers: ['Supported: outbound, path'] });
      expect(r1.msg.status).toBe(200);
      expect(r1.msg.getHeader('require')).toBe('outbound');
      expect(r1.msg.getHeader('flow-timer')).toBe('30');
      // the device came back from another address (a new flow): same instance and reg-id, one binding
      const r2 = await second.register({ contact: ob(second), expires: 600, headers: ['Supported: outbound'] });
      expect(r2.msg.status).toBe(200);
      const bs = await registrar.bindings('agent-erin');
      expect(bs).toHaveLength(1);
      expect(bs[0]).toMatchObject({ id: `${instance}#1`, contact: `${second.contactUri};ob`, instance, regId: 1, outbound: true, flow: { port: second.peer.port } });
      // without Supported: outbound the reg-id is ignored (RFC 5626 §6): the instance alone identifies it
      const r3 = await first.register({ contact: ob(first), expires: 600 });
      expect(r3.msg.getHeader('require')).toBeUndefined();
      expect((await registrar.bindings('agent-erin')).map((b) => b.id).sort()).toEqual([instance, `${instance}#1`].sort());
      await first.register({ contact: '*', expires: 0 });
      expect(await registrar.bindings('agent-erin')).toEqual([]);
    } finally {
      first.close();
      second.close();
    }
  });

  it('keeps the Path of a proxy in front (RFC 3327) and no outbound then; 420 for unknown Require; 403 past the device limit', async () => {
    const dev = await RawDevice.open(fx.port('udp'), REALM, 'bob', users.bob.password);
    try {
      const path = '<sip:edge.example.net;lr;ob>';
      const viaProxy = await dev.register({ contact: `<${dev.contactUri};ob>;+sip.instance="<urn:uuid:22222222-2222-4222-8222-222222222222>";reg-id=1`, expires: 600, headers: [`Path: ${path}`, 'Supported: path, outbound'] });
      expect(viaProxy.msg.status).toBe(200);
      expect(viaProxy.msg.getHeader('path')).toBe(path);
      // the proxy is the device's edge, not us: no Require: outbound
      expect(viaProxy.msg.getHeader('require')).toBeUndefined();
      expect(await registrar.bindings('agent-bob')).toEqual([expect.objectContaining({ path: [path], outbound: false })]);
      const ext = await dev.register({ expires: 600, headers: ['Require: gruu, path'] });
      expect(ext.msg.status).toBe(420);
      expect(ext.msg.getHeader('unsupported')).toBe('gruu');
      // five devices at most (maxBindingsPerAgent): one more than that in one REGISTER is refused whole
      const many = Array.from({ length: 5 }, (_, i) => `<sip:bob-${i}@192.0.2.${i + 1}:5060>`).join(', ');
      const tooMany = await dev.register({ contact: many, expires: 600 });
      expect(tooMany.msg.status).toBe(403);
      expect(await registrar.bindings('agent-bob')).toHaveLength(1);
      expect((await dev.register({ contact: '*', expires: 0 })).msg.status).toBe(200);
    } finally {
      dev.close();
    }
  });

  it('exports the bindings with the agent and erases them with it', async () => {
    const dev = await RawDevice.open(fx.port('udp'), REALM, 'alice', users.alice.password);
    try {
      const pn = `;pn-provider=fcm;pn-prid=fcm-token-${token()};pn-param=example-project`;
      expect((await dev.register({ contact: `<${dev.contactUri}${pn}>`, expires: 600 })).msg.status).toBe(200);
      const exported = await store.exportAgent('agent-alice');
      expect(exported.sipBindings).toHaveLength(1);
      expect(exported.sipBindings[0]!.contact).toBe(`${dev.contactUri}${pn}`);
      // the RFC 8599 parameters became a push device of the agent
      expect(exported.devices).toEqual([expect.objectContaining({ deviceId: exported.sipBindings[0]!.deviceId, platform: 'android', channel: 'fcm', topic: 'example-project' })]);
      await store.eraseAgent('agent-alice');
      expect(await redis.exists(store.key('agent', 'agent-alice', 'sip'), store.key('agent', 'agent-alice', 'devices'))).toBe(0);
      expect(await registrar.bindings('agent-alice')).toEqual([]);
    } finally {
      dev.close();
    }
  });
});

describe('Redis unavailable', () => {
  it('answers 500 with Retry-After (after the challenge, which needs no Redis) and stays up', async () => {
    const deadPort = await freeTcpPort();
    const dead = new Redis({ host: '127.0.0.1', port: deadPort, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on('error', () => undefined);
    const log = captureLogger('warn');
    const deadFx = await startEngine();
    const deadStore = new StateStore({ redis: dead, keyPrefix: PREFIX, nodeId: 'node-dead', logger: log.logger, recordTtlS: 3600 });
    const deadRegistrar = new SipRegistrar({ config, srf: deadFx.srf, store: deadStore, redis: dead, logger: log.logger });
    const dev = await RawDevice.open(deadFx.port('udp'), REALM, 'bob', users.bob.password);
    const dev2 = await RawDevice.open(deadFx.port('udp'), REALM, 'bob', users.bob.password);
    try {
      const r = await dev.register({ expires: 600 });
      expect(dev.peer.all((m) => m.msg.status === 401)).toHaveLength(1);
      expect(r.msg.status).toBe(500);
      expect(r.msg.getHeader('retry-after')).toBe('5');
      // the node still serves: a second device gets its challenge and the same answer
      const again = await dev2.register({ expires: 600 });
      expect(again.msg.status).toBe(500);
      expect(log.lines().filter((l) => l.msg === 'REGISTER failed')).toHaveLength(2);
      // no credentials in the log
      expect(log.text()).not.toContain('response=');
    } finally {
      dev.close();
      dev2.close();
      deadRegistrar.close();
      await deadFx.close();
      dead.disconnect();
    }
  });
});

describe('keep-alives of devices behind NAT (RFC 5626 §4.4)', () => {
  it('answers a STUN Binding request on the SIP UDP port with the source in XOR-MAPPED-ADDRESS, and ignores other STUN', async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    try {
      const got: Buffer[] = [];
      sock.on('message', (m) => got.push(m));
      const txn = randomBytes(12);
      // RFC 5389 §6: Binding request, no attributes
      const req = Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), txn]);
      sock.send(req, fx.port('udp'), '127.0.0.1');
      await until(() => Promise.resolve(got.length), (n) => n > 0, 5000, 'the STUN answer');
      const res = got[0]!;
      expect(res.readUInt16BE(0)).toBe(0x0101);
      expect(res.readUInt32BE(4)).toBe(0x2112a442);
      expect(res.subarray(8, 20).equals(txn)).toBe(true);
      expect(res.readUInt16BE(20)).toBe(0x0020);
      expect(res.readUInt8(25)).toBe(0x01);
      expect(res.readUInt16BE(26) ^ 0x2112).toBe(sock.address().port);
      expect([...res.subarray(28, 32)].map((b, i) => b ^ [0x21, 0x12, 0xa4, 0x42][i]!).join('.')).toBe('127.0.0.1');
      // a Binding indication (0x0011) and a SIP-looking datagram get nothing back
      sock.send(Buffer.concat([Buffer.from([0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), randomBytes(12)]), fx.port('udp'), '127.0.0.1');
      await new Promise((r) => setTimeout(r, 500));
      expect(got).toHaveLength(1);
    } finally {
      sock.close();
    }
  });
});

describe('sipp registers with digest', () => {
  it.each(['udp', 'tcp'] as const)('%s: 401 then 200, and the binding is in Redis', async (transport) => {
    const r = await runSipp({ scenario: 'uac-register-auth', target: fx.target(transport), transport, service: 'sippy', auth: { username: 'sippy', password: users.sippy.password }, timeoutMs: 30_000 });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.flow).toEqual(expect.arrayContaining(['< 401 REGISTER', '< 200 REGISTER']));
    const bs = await registrar.bindings('agent-sippy');
    expect(bs.find((b) => b.flow.port === r.port && b.flow.transport === transport), JSON.stringify(bs)).toBeDefined();
    // sipp ends without un-registering: remove the binding for the next run
    await redis.del(store.key('agent', 'agent-sippy', 'sip'));
  });

  it('a wrong password gets 403 and no binding', async () => {
    const r = await runSipp({ scenario: 'uac-register-auth', target: fx.target('udp'), service: 'sippy', auth: { username: 'sippy', password: 'wrong' }, timeoutMs: 30_000 });
    expect(r.exitCode).not.toBe(0);
    expect(r.flow).toContain('< 403 REGISTER');
    expect(await registrar.bindings('agent-sippy')).toEqual([]);
  });
});

describe.skipIf(!baresipAvailable())('baresip devices', () => {
  const devices: Baresip[] = [];
  // baresip 1.0 (libre) fails a REGISTER whose 401 carries any challenge it cannot answer, even
  // next to an MD5 one: its own engine and registrar offer MD5 alone (sipDevices.algorithms)
  let md5fx: EngineFixture;
  let md5registrar: SipRegistrar;
  beforeAll(async () => {
    md5fx = await startEngine({ tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile } });
    md5registrar = new SipRegistrar({ config: { ...config, algorithms: ['MD5'] }, srf: md5fx.srf, store, redis, logger: quietLogger() });
  });
  afterAll(async () => {
    await Promise.all(devices.map((d) => d.stop()));
    md5registrar?.close();
    await md5fx?.close();
  });

  it('registers over UDP, TCP and TLS with digest; a wrong password fails without a binding; un-REGISTER on exit removes them', async () => {
    const account = (user: 'alice' | 'bob', transport: SipTransport, password = users[user].password) => ({
      user,
      domain: `127.0.0.1:${md5fx.port(transport)}`,
      transport,
      regint: 600,
      auth: { user, password },
    });
    // one baresip per transport: baresip gives all its accounts one +sip.instance, and bindings of
    // one instance without outbound replace each other (RFC 5627), so three accounts of one
    // baresip would leave one binding
    const phones = await Promise.all(
      (['udp', 'tcp', 'tls'] as const).map((t) => startBaresip({ name: `phone-${t}`, tls: { certFile: certs.combinedFile, caFile: certs.caFile }, accounts: [account('alice', t)] })),
    );
    devices.push(...phones);
    const intruder = await startBaresip({ name: 'intruder', accounts: [account('bob', 'udp', 'wrong')] });
    devices.push(intruder);
    for (const phone of phones) {
      const ok = await phone.waitForEvent('REGISTER_OK', { timeoutMs: 20_000 });
      expect(ok.param, phone.describe()).toBe('200 OK');
    }
    const fail = await intruder.waitForEvent('REGISTER_FAIL', { timeoutMs: 20_000 });
    expect(fail.param).toMatch(/403/);
    const bs = await md5registrar.bindings('agent-alice');
    expect(bs.map((b) => b.flow.transport).sort()).toEqual(['tcp', 'tls', 'udp']);
    expect(bs.every((b) => b.contact.startsWith('sip:alice') && b.instance?.startsWith('<urn:uuid:'))).toBe(true);
    expect(await md5registrar.bindings('agent-bob')).toEqual([]);
    await Promise.all(phones.map((p) => p.stop(3000)));
    await until(() => md5registrar.bindings('agent-alice'), (b) => b.length === 0, 15_000, 'the un-REGISTERs');
  }, 90_000);

  it('two devices of one agent, one with RFC 5626 outbound over TCP; refreshes keep one binding each', async () => {
    const desk = await startBaresip({ name: 'desk', accounts: [{ user: 'carol', domain: `127.0.0.1:${md5fx.port('udp')}`, regint: 600, auth: { user: 'carol', password: users.carol.password } }] });
    devices.push(desk);
    const mobile = await startBaresip({
      name: 'mobile',
      extraConfig: { sip_verify_server: 'no' },
      accounts: [{ user: 'carol', domain: `127.0.0.1:${md5fx.port('tcp')}`, transport: 'tcp', regint: 4, sipnat: 'outbound', outbound: `sip:127.0.0.1:${md5fx.port('tcp')};transport=tcp`, auth: { user: 'carol', password: users.carol.password } }],
    });
    devices.push(mobile);
    await desk.waitForEvent('REGISTER_OK', { timeoutMs: 20_000 });
    await mobile.waitForEvent('REGISTER_OK', { timeoutMs: 20_000 });
    const bs = await until(() => md5registrar.bindings('agent-carol'), (b) => b.length === 2, 10_000, 'two bindings');
    const ob = bs.find((b) => b.outbound);
    expect(ob, JSON.stringify(bs)).toMatchObject({ flow: { transport: 'tcp' }, regId: 1, instance: expect.stringMatching(/^<urn:uuid:/) });
    // the mobile's registration is refreshed (regint 4 s) on the same binding
    const firstUpdate = ob!.updatedAt;
    const refreshed = await until(() => md5registrar.bindings('agent-carol'), (b) => (b.find((x) => x.outbound)?.updatedAt ?? 0) > firstUpdate, 20_000, 'a refresh');
    expect(refreshed).toHaveLength(2);
    await mobile.stop(3000);
    await until(() => md5registrar.bindings('agent-carol'), (b) => b.length === 1 && !b[0]!.outbound, 15_000, 'the mobile to unregister');
    await desk.stop(3000);
    await until(() => md5registrar.bindings('agent-carol'), (b) => b.length === 0, 15_000, 'the desk to unregister');
  }, 90_000);
});
