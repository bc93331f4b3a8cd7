/**
 * Agents' SIP devices on a whole gateway (issue 12, item 1): the registrar is wired in when
 * sipDevices.enabled, its bindings show in the admin export, and the admin erase leaves nothing
 * under the Redis prefix that names the agent, its device or its push token.
 *
 *   npx vitest run --config .config/vitest.config.ts test/e2e/sip-devices.test.ts
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { token } from '../helpers/raw-sip.js';
import { RawDevice } from '../helpers/sip-device.js';

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
