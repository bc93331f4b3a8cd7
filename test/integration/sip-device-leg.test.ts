/**
 * The INVITE leg to a registered SIP device (src/calls/device-leg.ts, issue 12 item 3, signalling
 * part) on a real engine, registrar and Redis, with raw devices: the INVITE reaches a UDP device at
 * its REGISTER's source and a TCP device over its registration's own connection, an answer comes
 * back with the device's SDP, a CANCEL after an answer elsewhere carries
 * `Reason: SIP;cause=200;text="Call completed elsewhere"`, and a refusal is reported.
 *
 *   npx vitest run --config .config/vitest.config.ts test/integration/sip-device-leg.test.ts
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANSWERED_ELSEWHERE, DeviceLeg, deviceTarget } from '../../src/calls/device-leg.js';
import { BINDING_FLOW_HEADER } from '../../src/sip/engine/core/registered-flows.js';
import { type SipDevicesConfig } from '../../src/sip/registrar/config.js';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { SipRegistrar } from '../../src/sip/registrar/registrar.js';
import { StateStore } from '../../src/state/store.js';
import { type EngineFixture, startEngine } from '../helpers/engine.js';
import { deletePrefix, quietLogger } from '../helpers/env.js';
import { isRequest, type RawMessage, sipResponse, token } from '../helpers/raw-sip.js';
import { RawDevice } from '../helpers/sip-device.js';

const REALM = 'leg.ringbridge.test';
const PREFIX = `rbtest:leg:${token()}:`;
const OFFER = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0 101', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=sendrecv', ''].join('\r\n');
const ANSWER = ['v=0', 'o=- 2 2 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 41000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', 'a=sendrecv', ''].join('\r\n');

const config: SipDevicesConfig = {
  enabled: true,
  realm: REALM,
  algorithms: ['MD5'],
  nonceTtlS: 300,
  minExpiresS: 2,
  maxExpiresS: 3600,
  defaultExpiresS: 3600,
  flowTimerS: 30,
  maxBindingsPerAgent: 5,
  maxPushDevicesPerAgent: 5,
  lockout: { maxFailuresPerSource: 0, maxFailuresPerUser: 0, windowMs: 60_000, lockMs: 60_000 },
  credentials: ['uma', 'vic', 'wes'].map((u) => ({ agentId: `agent-${u}`, username: u, ha1Md5: digestHa1('MD5', u, REALM, `${u}-pw`), ha1Sha256: '' })),
};

let fx: EngineFixture;
let redis: Redis;
let registrar: SipRegistrar;
const open: RawDevice[] = [];

beforeAll(async () => {
  fx = await startEngine();
  redis = new Redis('redis://127.0.0.1:6379');
  const store = new StateStore({ redis, keyPrefix: PREFIX, nodeId: 'node-leg', logger: quietLogger(), recordTtlS: 3600 });
  registrar = new SipRegistrar({ config, srf: fx.srf, store, redis, logger: quietLogger() });
}, 60_000);

afterAll(async () => {
  for (const d of open) {
    d.close();
  }
  registrar?.close();
  await fx?.close();
  if (redis) {
    await deletePrefix(redis, PREFIX);
    redis.disconnect();
  }
});

/** A device registered with a Contact naming a private address it cannot be reached at (behind NAT). */
async function registered(user: string, transport: 'udp' | 'tcp'): Promise<RawDevice> {
  const d = await RawDevice.open(fx.port(transport), REALM, user, `${user}-pw`, { transport });
  open.push(d);
  const contact = `<sip:${user}@10.255.0.1:5060${transport === 'tcp' ? ';transport=tcp' : ''};ob>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-0000000000${transport === 'tcp' ? '02' : '01'}>";reg-id=1`;
  expect((await d.register({ contact, expires: 600, headers: ['Supported: outbound'] })).msg.status).toBe(200);

  return d;
}

/** Answers the device's INVITEs: 180, then `final` (with SDP for a 2xx); answers CANCEL with 200 and 487. */
function behave(d: RawDevice, final: number | 'ring'): void {
  d.peer.onMessage((m: RawMessage) => {
    if (!m.msg.isRequest) {
      return;
    }
    if (m.msg.method === 'INVITE') {
      d.peer.reply(m, sipResponse(m.msg, 180, 'Ringing', { toTag: 'dev1' }));
      if (final !== 'ring') {
        d.peer.reply(m, sipResponse(m.msg, final, final === 200 ? 'OK' : 'Busy Here', { toTag: 'dev1', ...(final === 200 ? { body: ANSWER, contact: `<sip:dev@127.0.0.1:${d.peer.port}>` } : {}) }));
      }
    } else if (m.msg.method === 'CANCEL') {
      d.peer.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'dev1' }));
      const invite = d.peer.received.find((x) => x.msg.isRequest && x.msg.method === 'INVITE' && x.msg.callId === m.msg.callId)!;
      d.peer.reply(invite, sipResponse(invite.msg, 487, 'Request Terminated', { toTag: 'dev1' }));
    } else if (m.msg.method === 'BYE') {
      d.peer.reply(m, sipResponse(m.msg, 200, 'OK'));
    }
  });
}

describe('DeviceLeg', () => {
  it('reaches a UDP device at its REGISTER\'s source (not its private Contact address) and returns its answer', async () => {
    const d = await registered('uma', 'udp');
    behave(d, 200);
    const [binding] = await registrar.bindings('agent-uma');
    expect(deviceTarget(binding!).proxy).toBe(`sip:127.0.0.1:${d.peer.port};transport=udp`);
    const leg = DeviceLeg.start({ srf: fx.srf, binding: binding!, offerSdp: OFFER, from: '"Caller" <sip:caller@example.com>', logger: quietLogger() });
    let rang = false;
    leg.onRinging(() => (rang = true));
    const out = await leg.done;
    expect(out.answered).toBe(true);
    expect(rang).toBe(true);
    const invite = await d.peer.waitFor(isRequest('INVITE'));
    expect(invite.msg.uri).toBe(binding!.contact);
    expect(invite.msg.body.toString()).toContain('m=audio 40000 RTP/AVP 0 101');
    expect(invite.msg.getHeader('from')).toContain('sip:caller@example.com');
    if (out.answered) {
      expect(out.sdp).toContain('m=audio 41000');
      await d.peer.waitFor(isRequest('ACK'));
      out.dialog.destroy();
      await d.peer.waitFor(isRequest('BYE'));
    }
  });

  it('reaches a TCP device over its registration\'s connection, named by the binding\'s flow token; the header stays inside', async () => {
    const d = await registered('vic', 'tcp');
    behave(d, 486);
    const [binding] = await registrar.bindings('agent-vic');
    expect(binding!.flowToken).toMatch(/^[0-9a-f]{32}$/);
    expect(deviceTarget(binding!)).toEqual({ uri: binding!.contact, headers: { [BINDING_FLOW_HEADER]: binding!.flowToken } });
    const out = await DeviceLeg.start({ srf: fx.srf, binding: binding!, offerSdp: OFFER, from: '<sip:caller@example.com>', logger: quietLogger() }).done;
    expect(out).toEqual({ answered: false, status: 486, cancelled: false });
    const invite = await d.peer.waitFor(isRequest('INVITE'));
    // it came over the device's own connection (the Contact's 10.255.0.1 is unreachable)
    expect(invite.conn).toBeDefined();
    expect(invite.msg.getHeader(BINDING_FLOW_HEADER.toLowerCase())).toBeUndefined();
  });

  it('CANCELs a ringing device with Reason cause=200 "Call completed elsewhere" when the call was answered elsewhere', async () => {
    const d = await registered('wes', 'udp');
    behave(d, 'ring');
    const [binding] = await registrar.bindings('agent-wes');
    const leg = DeviceLeg.start({ srf: fx.srf, binding: binding!, offerSdp: OFFER, from: '<sip:caller@example.com>', logger: quietLogger() });
    await new Promise<void>((r) => leg.onRinging(r));
    leg.cancel(true);
    const cancel = await d.peer.waitFor(isRequest('CANCEL'));
    expect(cancel.msg.getHeader('reason')).toBe(ANSWERED_ELSEWHERE);
    expect(await leg.done).toEqual({ answered: false, status: 487, cancelled: true });
  });
});
