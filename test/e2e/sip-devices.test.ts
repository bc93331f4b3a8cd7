/**
 * Agents' SIP devices on a whole gateway (issue 12, item 1): the registrar is wired in when
 * sipDevices.enabled, its bindings show in the admin export, and the admin erase leaves nothing
 * under the Redis prefix that names the agent, its device or its push token.
 *
 *   npx vitest run --config .config/vitest.config.ts test/e2e/sip-devices.test.ts
 */
import { generateKeyPairSync } from 'node:crypto';
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { FakeApns } from '../helpers/push-servers/apns.js';
import { pushTestCerts } from '../helpers/push-servers/common.js';
import { isFinal, isRequest, sipRequest, sipResponse, token } from '../helpers/raw-sip.js';
import { freePort, runSipp, startSipp } from '../helpers/sipp.js';
import { RawDevice } from '../helpers/sip-device.js';
import { type Baresip, baresipAvailable, startBaresip } from '../helpers/baresip.js';
import { createTestCerts, type TestCerts } from '../helpers/tls-certs.js';

const REALM = 'gw.ringbridge.test';
const ADMIN = 'admin-token-0123456789abcdef-0123456789';

describe('SIP devices on the gateway', () => {
  let fx: CallFixture;

  beforeAll(async () => {
    fx = await startCallGateway({
      admin: { token: ADMIN },
      sipDevices: {
        enabled: true,
        realm: REALM,
        minExpiresS: 2,
        credentials: [{ agentId: 'agent-sip', username: 'frank', ha1Md5: digestHa1('MD5', 'frank', REALM, 'frank-pw'), ha1Sha256: digestHa1('SHA-256', 'frank', REALM, 'frank-pw') }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
  });

  it('registers a device, exports its binding and push device, and the erase leaves nothing about the agent', async () => {
    const port = Number(fx.sipTarget.split(':')[1]);
    const dev = await RawDevice.open(port, REALM, 'frank', 'frank-pw');
    const pushToken = `fcm-token-${token()}`;
    try {
      const contact = `<${dev.contactUri};pn-provider=fcm;pn-prid=${pushToken};pn-param=example-project>;+sip.instance="<urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee>"`;
      const ok = await dev.register({ contact, expires: 600, algorithm: 'SHA-256' });
      expect(ok.msg.status).toBe(200);
      expect((await fx.gw.registrar!.bindings('agent-sip')).map((b) => b.instance)).toEqual(['<urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee>']);

      const base = `http://127.0.0.1:${fx.gw.httpAddress.port}/admin/agents/agent-sip`;
      const auth = { authorization: `Bearer ${ADMIN}` };
      const exported = (await (await fetch(base, { headers: auth })).json()) as { sipBindings: { contact: string; flow: { transport: string } }[]; devices: { channel: string; token: string }[] };
      expect(exported.sipBindings).toEqual([expect.objectContaining({ contact: expect.stringContaining(dev.contactUri) as unknown, flow: expect.objectContaining({ transport: 'udp' }) as unknown })]);
      expect(exported.devices).toEqual([expect.objectContaining({ channel: 'fcm', token: pushToken })]);

      expect((await fetch(base, { method: 'DELETE', headers: auth })).status).toBe(200);
      const redis = fx.gw.redis!.client;
      const keys = await redis.keys(`${fx.gw.config.redis.keyPrefix}*`);
      for (const key of keys) {
        expect(key).not.toContain('agent-sip');
        const type = await redis.type(key);
        const dump = type === 'hash' ? JSON.stringify(await redis.hgetall(key)) : type === 'zset' ? JSON.stringify(await redis.zrange(key, 0, -1)) : type === 'set' ? JSON.stringify(await redis.smembers(key)) : type === 'string' ? String(await redis.get(key)) : '';
        expect(dump, key).not.toContain('agent-sip');
        expect(dump, key).not.toContain(pushToken);
        expect(dump, key).not.toContain(`127.0.0.1:${dev.peer.port}`);
      }
      expect(await fx.gw.registrar!.bindings('agent-sip')).toEqual([]);
      // the device's next refresh registers it again
      expect((await dev.register({ contact, expires: 600 })).msg.status).toBe(200);
      expect(await fx.gw.registrar!.bindings('agent-sip')).toHaveLength(1);
      expect((await dev.register({ contact: '*', expires: 0 })).msg.status).toBe(200);
      expect(await fx.gw.registrar!.bindings('agent-sip')).toEqual([]);
      // un-registering removed the push device too: the device no longer wants calls
      expect(await fx.gw.store!.devices('agent-sip')).toEqual([]);
      // the REGISTERs counted by result: three answered 2xx, each after a 401
      const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
      expect(metrics).toMatch(/^ringbridge_sip_registrations_total\{result="ok"\} 3$/m);
      expect(metrics).toMatch(/^ringbridge_sip_registrations_total\{result="challenged"\} 3$/m);
    } finally {
      dev.close();
    }
  }, 60_000);
});

/** A registered device that answers (or only rings) and, once answered, sends PCMA to the offer's port and counts what comes back. */
async function phone(fx: CallFixture, answer: boolean | 486, o: { contact?: string; user?: string; telephoneEvent?: boolean } = {}) {
  const user = o.user ?? 'gail';
  const dev = await RawDevice.open(Number(fx.sipTarget.split(':')[1]), REALM, user, `${user}-pw`);
  const rtp = dgram.createSocket('udp4');
  await new Promise<void>((r) => rtp.bind(0, '127.0.0.1', r));
  const got: Buffer[] = [];
  rtp.on('message', (m) => got.push(m));
  let sender: NodeJS.Timeout | undefined;
  dev.peer.onMessage((m) => {
    if (!m.msg.isRequest) {
      return;
    }
    if (m.msg.method === 'INVITE') {
      dev.peer.reply(m, sipResponse(m.msg, 180, 'Ringing', { toTag: 'gail1' }));
      if (answer === 486) {
        dev.peer.reply(m, sipResponse(m.msg, 486, 'Busy Here', { toTag: 'gail1' }));
      } else if (answer) {
        const offerPort = Number(/m=audio (\d+)/.exec(m.msg.body.toString())![1]);
        const te = o.telephoneEvent ? ['a=rtpmap:101 telephone-event/8000'] : [];
        const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${rtp.address().port} RTP/AVP 8${o.telephoneEvent ? ' 101' : ''}`, 'a=rtpmap:8 PCMA/8000', ...te, 'a=sendrecv', ''].join('\r\n');
        dev.peer.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'gail1', contact: `<sip:gail@127.0.0.1:${dev.peer.port}>`, body: sdp }));
        let seq = 0;
        sender = setInterval(() => {
          const b = Buffer.alloc(172, 0x55);
          b[0] = 0x80;
          b[1] = 8;
          b.writeUInt16BE(seq++ & 0xffff, 2);
          b.writeUInt32BE((seq * 160) >>> 0, 4);
          b.writeUInt32BE(0x6a11, 8);
          rtp.send(b, offerPort, '127.0.0.1');
        }, 20);
      }
    } else if (m.msg.method === 'CANCEL') {
      dev.peer.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'gail1' }));
      const inv = dev.peer.received.find((x) => x.msg.isRequest && x.msg.method === 'INVITE' && x.msg.callId === m.msg.callId)!;
      dev.peer.reply(inv, sipResponse(inv.msg, 487, 'Request Terminated', { toTag: 'gail1' }));
    } else if (m.msg.method === 'BYE') {
      clearInterval(sender);
      dev.peer.reply(m, sipResponse(m.msg, 200, 'OK'));
    }
  });
  expect((await dev.register({ expires: 600, ...(o.contact ? { contact: o.contact.replace('PORT', String(dev.peer.port)) } : {}) })).msg.status).toBe(200);

  return {
    dev,
    got,
    close: async () => {
      clearInterval(sender);
      await dev.register({ contact: '*', expires: 0 }).catch(() => undefined);
      dev.close();
      rtp.close();
    },
  };
}

/**
 * Item 3: inbound calls ring registered SIP devices (a raw UDP device with its own RTP socket),
 * alone or together with the agent's WebRTC session; sipp is the trunk with real PCMA (its pcap
 * play), watched by tshark on its media port.
 */
describe('inbound calls ring SIP devices', () => {
  let fx: CallFixture;
  const AGENT = 'agent-dev';

  beforeAll(async () => {
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: AGENT }], groups: [], defaultTrunk: '' },
      sipDevices: {
        enabled: true,
        realm: REALM,
        minExpiresS: 2,
        credentials: [{ agentId: AGENT, username: 'gail', ha1Md5: digestHa1('MD5', 'gail', REALM, 'gail-pw'), ha1Sha256: digestHa1('SHA-256', 'gail', REALM, 'gail-pw') }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
  });

  it('rings a registered device of an agent with no session; it answers, audio flows both ways, the trunk BYE hangs it up', async () => {
    const p = await phone(fx, true);
    try {
      const mediaPort = await freePort();
      const capture = captureUdp(mediaPort);
      await capture.ready;
      const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
      const invite = await p.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      expect(invite.msg.body.toString()).toMatch(/m=audio \d+ RTP\/AVP 8 101/);
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      await p.dev.peer.waitFor(isRequest('BYE'), 5000);
      const atSipp = await capture.stop();
      // the device's PCMA reached the trunk, the trunk's reached the device
      expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA from the device at the sipp trunk').toBeGreaterThan(50);
      const audio = p.got.filter((b) => b.length > 12 && (b[1]! & 0x7f) === 8);
      expect(audio.length, 'PCMA from the trunk at the device').toBeGreaterThan(50);
      // not silence: the trunk's pcap is speech, its bytes vary
      expect(new Set(audio.flatMap((b) => [...b.subarray(-160)])).size).toBeGreaterThan(16);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ direction: 'inbound', agentId: AGENT, endReason: 'hangup_remote', codec: 'PCMA' });
    } finally {
      await p.close();
    }
  }, 60_000);

  it('answers the trunk 486 when the agent\'s only device is busy', async () => {
    const p = await phone(fx, 486);
    try {
      const r = await runSipp({ scenario: 'uac-expect-486', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
      expect(r.exitCode, r.describe()).toBe(0);
      expect(r.received(486, 'INVITE')).toHaveLength(1);
    } finally {
      await p.close();
    }
  }, 60_000);

  it('ends the trunk call (BYE) when the device hangs up first', async () => {
    const p = await phone(fx, true);
    try {
      const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())] });
      const invite = await p.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      await p.dev.peer.waitFor(isRequest('ACK'), 5000);
      await new Promise((r) => setTimeout(r, 500));
      const fromTag = /;\s*tag=([^;>\s]+)/.exec(invite.msg.getHeader('from') ?? '')![1]!;
      const target = /<([^>]+)>/.exec(invite.msg.getHeader('contact') ?? '')![1]!;
      p.dev.peer.send(
        sipRequest({
          method: 'BYE',
          uri: target,
          viaPort: p.dev.peer.port,
          callId: invite.msg.callId,
          fromTag: 'gail1',
          toTag: fromTag,
          cseq: 1,
          fromUri: /<([^>]+)>/.exec(invite.msg.getHeader('to') ?? '')![1]!,
          toUri: /<([^>]+)>/.exec(invite.msg.getHeader('from') ?? '')![1]!,
          contact: null,
        }),
      );
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ agentId: AGENT, endReason: 'hangup_local' });
    } finally {
      await p.close();
    }
  }, 60_000);

  it('passes the trunk\'s RFC 4733 digits to the device, and answers the device\'s hold re-INVITE recvonly', async () => {
    const p = await phone(fx, true, { telephoneEvent: true });
    try {
      const trunk = startSipp({ scenario: 'trunk-in-dtmf', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
      const invite = await p.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      await p.dev.peer.waitFor(isRequest('ACK'), 5000);
      // the trunk's digits 1 and # arrive at the device as telephone-event (101, as offered)
      const deadline = Date.now() + 8000;
      const events = () => [...new Set(p.got.filter((b) => b.length >= 16 && (b[1]! & 0x7f) === 101).map((b) => b[12]!))];
      while (events().length < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(events()).toEqual([1, 11]);
      // hold from the device: sendonly is answered recvonly (RFC 3264 §8.4)
      const fromTag = /;\s*tag=([^;>\s]+)/.exec(invite.msg.getHeader('from') ?? '')![1]!;
      const target = /<([^>]+)>/.exec(invite.msg.getHeader('contact') ?? '')![1]!;
      const sdp = ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 8', 'a=rtpmap:8 PCMA/8000', 'a=sendonly', ''].join('\r\n');
      const dialog = { uri: target, viaPort: p.dev.peer.port, callId: invite.msg.callId, fromTag: 'gail1', toTag: fromTag, fromUri: /<([^>]+)>/.exec(invite.msg.getHeader('to') ?? '')![1]!, toUri: /<([^>]+)>/.exec(invite.msg.getHeader('from') ?? '')![1]! };
      p.dev.peer.send(sipRequest({ ...dialog, method: 'INVITE', cseq: 5, contact: `<sip:gail@127.0.0.1:${p.dev.peer.port}>`, body: sdp }));
      const ok = await p.dev.peer.waitFor((m) => isFinal('INVITE', invite.msg.callId)(m) && m.msg.getHeader('cseq')?.startsWith('5 ') === true, 5000, 'the answer to the hold');
      expect(ok.msg.status).toBe(200);
      expect(ok.msg.body.toString()).toMatch(/^a=recvonly\r?$/m);
      p.dev.peer.send(sipRequest({ ...dialog, method: 'ACK', cseq: 5, contact: null }));
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
    } finally {
      await p.close();
    }
  }, 60_000);

  it('rings the device and the agent\'s WebRTC session together: the session answers, the device gets CANCEL with Reason cause=200', async () => {
    const p = await phone(fx, false);
    const agent = await fx.agent(AGENT);
    try {
      const mediaPort = await freePort();
      const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '1000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
      const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
      await p.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      await agent.client.answer(incoming.call.id);
      const cancel = await p.dev.peer.waitFor(isRequest('CANCEL'), 5000);
      expect(cancel.msg.getHeader('reason')).toBe('SIP;cause=200;text="Call completed elsewhere"');
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      expect(p.dev.peer.all(isRequest('BYE'))).toHaveLength(0);
    } finally {
      await p.close();
    }
  }, 60_000);
});

/**
 * Item 2b: a SIP device registered with RFC 8599 APNs parameters whose binding is gone (asleep)
 * is woken by a push to the local APNs (test/helpers/push-servers/apns.ts); when it registers
 * again the waiting call is sent to its new binding, it answers and audio flows.
 */
describe('a sleeping SIP device is woken by push and gets the waiting call', () => {
  const TEAM = 'TEAM123456';
  const BUNDLE = 'com.acme.agent';
  const AGENT = 'agent-sleepy';
  const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  let apns: FakeApns;
  let fx: CallFixture;

  beforeAll(async () => {
    apns = await FakeApns.start({ teamId: TEAM, keyId: 'KEY1234567', publicKey: keys.publicKey });
    const certs = await pushTestCerts();
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: AGENT }], groups: [], defaultTrunk: '' },
      push: {
        caFile: certs.caFile,
        timeoutMs: 2000,
        apns: { enabled: true, teamId: TEAM, keyId: 'KEY1234567', key: keys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), bundleId: BUNDLE, baseUrl: apns.url },
      },
      sipDevices: {
        enabled: true,
        realm: REALM,
        minExpiresS: 2,
        credentials: [{ agentId: AGENT, username: 'hank', ha1Md5: digestHa1('MD5', 'hank', REALM, 'hank-pw'), ha1Sha256: '' }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
    await apns?.close();
  });

  it('pushes the device, rings its new registration, and the call connects with audio both ways', async () => {
    const voipToken = 'ab'.repeat(32);
    const contact = `<sip:hank@127.0.0.1:PORT;pn-provider=apns;pn-prid=${voipToken};pn-param=${TEAM}.${BUNDLE}.voip>;+sip.instance="<urn:uuid:5ee9e000-0000-4000-8000-000000000001>"`;
    const p = await phone(fx, true, { user: 'hank', contact });
    try {
      // the device went to sleep: its binding is gone (as at expiry), its push device stays
      await fx.gw.redis!.client.del(fx.gw.store!.key('agent', AGENT, 'sip'));
      expect((await fx.gw.store!.devices(AGENT)).map((d) => d.token)).toEqual([voipToken]);
      const mediaPort = await freePort();
      const capture = captureUdp(mediaPort);
      await capture.ready;
      const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
      // the VoIP push reaches the provider for the device's token
      const deadline = Date.now() + 10_000;
      while (!apns.accepted.some((x) => x.token === voipToken) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const push = apns.accepted.find((x) => x.token === voipToken);
      expect(push).toMatchObject({ pushType: 'voip', topic: `${BUNDLE}.voip` });
      expect(p.dev.peer.all(isRequest('INVITE'))).toHaveLength(0);
      // the woken device registers again; the waiting call comes to its new binding
      expect((await p.dev.register({ expires: 600, contact: contact.replace('PORT', String(p.dev.peer.port)) })).msg.status).toBe(200);
      await p.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      const atSipp = await capture.stop();
      expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA from the device at the sipp trunk').toBeGreaterThan(50);
      expect(p.got.filter((b) => b.length > 12 && (b[1]! & 0x7f) === 8).length, 'PCMA from the trunk at the device').toBeGreaterThan(50);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ agentId: AGENT, endReason: 'hangup_remote' });
    } finally {
      await p.close();
    }
  }, 60_000);

  it('pushes a registered device whose app sleeps AND invites its binding; its registration from a new flow gets the call, once', async () => {
    const voipToken = 'cd'.repeat(32);
    const instance = '+sip.instance="<urn:uuid:5ee9e000-0000-4000-8000-000000000002>"';
    const contactOf = (port: number) => `<sip:hank@127.0.0.1:${port};pn-provider=apns;pn-prid=${voipToken};pn-param=${TEAM}.${BUNDLE}.voip>;${instance}`;
    // the app registered, then iOS suspended it: its binding is live, nothing answers on its socket
    const asleep = await RawDevice.open(Number(fx.sipTarget.split(':')[1]), REALM, 'hank', 'hank-pw');
    let woke: Awaited<ReturnType<typeof phone>> | undefined;
    try {
      expect((await asleep.register({ expires: 600, contact: contactOf(asleep.peer.port) })).msg.status).toBe(200);
      expect(await fx.gw.registrar!.bindings(AGENT)).toHaveLength(1);
      const pushesBefore = apns.accepted.filter((x) => x.token === voipToken).length;
      const mediaPort = await freePort();
      const capture = captureUdp(mediaPort);
      await capture.ready;
      const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
      // the INVITE goes to the live binding and the VoIP push goes out, both
      await asleep.peer.waitFor(isRequest('INVITE'), 10_000);
      const deadline = Date.now() + 10_000;
      while (apns.accepted.filter((x) => x.token === voipToken).length === pushesBefore && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(apns.accepted.filter((x) => x.token === voipToken).slice(pushesBefore)).toEqual([expect.objectContaining({ pushType: 'voip', topic: `${BUNDLE}.voip` })]);
      // a refresh over the same flow rings nothing again
      expect((await asleep.register({ expires: 600, contact: contactOf(asleep.peer.port) })).msg.status).toBe(200);
      await new Promise((r) => setTimeout(r, 500));
      expect(new Set(asleep.peer.all(isRequest('INVITE')).map((m) => m.msg.callId)).size).toBe(1);
      // woken, the app registers from a new socket (same +sip.instance): the waiting call goes there
      woke = await phone(fx, true, { user: 'hank', contact: contactOf(0).replace(':0;', ':PORT;') });
      await woke.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      expect(await fx.gw.registrar!.bindings(AGENT)).toHaveLength(1);
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      const atSipp = await capture.stop();
      expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA from the woken device at the sipp trunk').toBeGreaterThan(50);
      expect(woke.got.filter((b) => b.length > 12 && (b[1]! & 0x7f) === 8).length, 'PCMA from the trunk at the woken device').toBeGreaterThan(50);
      // one push for the call, one INVITE to each flow, nothing answered on the stale one
      expect(apns.accepted.filter((x) => x.token === voipToken && x.pushType === 'voip')).toHaveLength(pushesBefore + 1);
      expect(new Set(asleep.peer.all(isRequest('INVITE')).map((m) => m.msg.callId)).size).toBe(1);
      expect(woke.dev.peer.all(isRequest('INVITE'))).toHaveLength(1);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ agentId: AGENT, endReason: 'hangup_remote' });
    } finally {
      await woke?.close();
      asleep.close();
    }
  }, 60_000);
});

/**
 * SDES-SRTP toward a device registered over TLS: baresip (srtp module, mediaenc=srtp-mand: it
 * refuses plain RTP) registers over SIP TLS with digest and answers a sipp trunk call at once; the
 * device leg is RTP/SAVP with our key, and audio crosses it both ways (baresip counts what it
 * received, which it drops unless it authenticates; the trunk gets the device's audio only if the
 * relay authenticated and decrypted it).
 */
describe.skipIf(!baresipAvailable())('SDES-SRTP toward a SIP device over TLS', () => {
  const AGENT = 'agent-tls';
  let fx: CallFixture;
  let phone: Baresip | undefined;
  let certs: TestCerts;

  beforeAll(async () => {
    certs = await createTestCerts();
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: AGENT }], groups: [], defaultTrunk: '' },
      sip: { tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile, caFile: certs.caFile, verifyPeer: false } },
      sipDevices: {
        enabled: true,
        realm: REALM,
        algorithms: ['MD5'],
        credentials: [{ agentId: AGENT, username: 'jill', ha1Md5: digestHa1('MD5', 'jill', REALM, 'jill-pw'), ha1Sha256: '' }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await phone?.stop();
    await fx?.close();
  });

  it('rings the TLS device with RTP/SAVP and our a=crypto; SRTP audio flows both ways', async () => {
    const tlsPort = fx.gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'tls')!.port;
    phone = await startBaresip({
      name: 'tls-device',
      sipTrace: true,
      tls: { certFile: certs.combinedFile, caFile: certs.caFile },
      extraModules: ['srtp'],
      accounts: [{ user: 'jill', domain: `127.0.0.1:${tlsPort}`, transport: 'tls', regint: 600, auth: { user: 'jill', password: 'jill-pw' }, answerMode: 'auto', mediaenc: 'srtp-mand', audioCodecs: ['pcma'] }],
    });
    await phone.waitForEvent('REGISTER_OK', { timeoutMs: 20_000 });
    expect((await fx.gw.registrar!.bindings(AGENT)).map((b) => b.flow.transport)).toEqual(['tls']);
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '4000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    await phone.waitForEvent('CALL_ESTABLISHED', 15_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'the device\'s audio, decrypted, at the sipp trunk').toBeGreaterThan(50);
    const stats = await phone.waitForAudioStats(1, 10_000);
    expect(stats.rx.packets, 'SRTP from the gateway that baresip authenticated and decoded').toBeGreaterThan(50);
    expect(stats.tx.packets).toBeGreaterThan(50);
    // the offer baresip got was RTP/SAVP with our key
    expect(phone.output()).toMatch(/INVITE sip:[^\n]*\n[\s\S]*?m=audio \d+ RTP\/SAVP 8 101/);
    expect(phone.output()).toMatch(/a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:/);
    const record = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(record).toMatchObject({ agentId: AGENT, endReason: 'hangup_remote', codec: 'PCMA' });
  }, 90_000);
});

/**
 * A longest-idle group rings its agents' SIP devices in its steps: the first agent's device rings
 * for ringStepMs and gets CANCEL (no "answered elsewhere" Reason), the second agent's device is
 * rung next and answers, with audio.
 */
describe('longest-idle groups ring SIP devices step by step', () => {
  let fx: CallFixture;

  beforeAll(async () => {
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', group: 'desk' }], groups: [{ id: 'desk', strategy: 'longest-idle', members: ['agent-kate', 'agent-liam'] }], defaultTrunk: '' },
      calls: { ringStepMs: 1500 },
      sipDevices: {
        enabled: true,
        realm: REALM,
        minExpiresS: 2,
        credentials: ['kate', 'liam'].map((u) => ({ agentId: `agent-${u}`, username: u, ha1Md5: digestHa1('MD5', u, REALM, `${u}-pw`), ha1Sha256: digestHa1('SHA-256', u, REALM, `${u}-pw`) })),
      },
    });
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
  });

  it('rings the first agent\'s device for one step, then the next agent\'s device, which answers', async () => {
    const kate = await phone(fx, false, { user: 'kate' });
    const liam = await phone(fx, true, { user: 'liam' });
    try {
      const mediaPort = await freePort();
      const capture = captureUdp(mediaPort);
      await capture.ready;
      const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '2000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
      await kate.dev.peer.waitFor(isRequest('INVITE'), 10_000);
      expect(liam.dev.peer.all(isRequest('INVITE'))).toHaveLength(0);
      const cancel = await kate.dev.peer.waitFor(isRequest('CANCEL'), 5000);
      expect(cancel.msg.getHeader('reason')).toBeUndefined();
      await liam.dev.peer.waitFor(isRequest('INVITE'), 5000);
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      const atSipp = await capture.stop();
      expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA from the second agent\'s device at the trunk').toBeGreaterThan(50);
      expect(kate.dev.peer.all(isRequest('INVITE'))).toHaveLength(1);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ agentId: 'agent-liam', endReason: 'hangup_remote' });
    } finally {
      await kate.close();
      await liam.close();
    }
  }, 60_000);
});
