/**
 * Trunk admission behind the Kamailio dispatcher: a real gateway whose sip.trustedProxies names
 * Kamailio admits a trunk by the X-RB-Source header Kamailio writes (the trunk's own address), not
 * by Kamailio's address; a trunk's spoofed header is replaced by Kamailio, and one sent straight to
 * the gateway is ignored.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { startCallGateway } from '../helpers/calls.js';
import { sdp } from '../helpers/engine.js';
import { hasKamailio, startKamailio } from '../helpers/kamailio.js';
import { RawSipPeer, sipRequest } from '../helpers/raw-sip.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    await c();
  }
});
const tag = () => randomBytes(6).toString('hex');

describe.skipIf(!hasKamailio())('trunk admission behind the dispatcher', () => {
  it('admits a trunk behind Kamailio by the X-RB-Source it writes, and ignores a spoofed one', async () => {
    const gw = await startCallGateway({
      sip: { listenAddresses: ['127.0.0.5'], publicAddress: '127.0.0.5', trustedProxies: ['127.0.0.8'] },
      trunks: [{ id: 'loopback', inbound: { allow: ['127.0.0.1/32'], auth: { username: '', password: '', realm: 'x' } }, outbound: { uri: '', proxy: '', auth: { username: '', password: '' }, callerId: '' }, codecs: ['PCMA', 'PCMU'], media: { latching: false } }],
    });
    cleanups.push(() => gw.close());
    const port = Number(gw.sipTarget.split(':').pop());
    const kam = await startKamailio({ address: '127.0.0.8', nodes: [{ host: '127.0.0.5', port }] });
    cleanups.push(() => kam.stop());
    await kam.waitForState({ host: '127.0.0.5', port }, 'active', 5000);
    const statusFrom = async (bind: string, headers: string[] = []) => {
      const peer = await RawSipPeer.udp({ address: kam.address, port: kam.port }, bind);
      cleanups.push(() => peer.close());
      const callId = tag();
      peer.send(sipRequest({ method: 'INVITE', uri: `sip:999@${kam.sipTarget}`, callId, fromTag: tag(), cseq: 1, viaHost: bind, viaPort: peer.port, viaParams: ';rport', contact: `<sip:t@${bind}:${peer.port}>`, headers, body: sdp(40010, bind) }));
      const m = await peer.waitFor((x) => x.msg.callId === callId && !x.msg.isRequest && x.msg.status >= 200, 8000, 'final');

      return m.msg.status;
    };
    expect(await statusFrom('127.0.0.1')).toBe(404); // admitted (allowed trunk), no route
    expect(await statusFrom('127.0.0.9')).toBe(403); // not allowed
    expect(await statusFrom('127.0.0.9', ['X-RB-Source: 127.0.0.1:5060'])).toBe(403); // spoof replaced by Kamailio
    // straight to the gateway from a trunk address, no proxy: as before
    const direct = await RawSipPeer.udp({ address: '127.0.0.5', port }, '127.0.0.1');
    cleanups.push(() => direct.close());
    const callId = tag();
    direct.send(sipRequest({ method: 'INVITE', uri: `sip:999@127.0.0.5:${port}`, callId, fromTag: tag(), cseq: 1, viaPort: direct.port, headers: ['X-RB-Source: 127.0.0.9'], body: sdp(40012, '127.0.0.1') }));
    expect((await direct.waitFor((x) => x.msg.callId === callId && !x.msg.isRequest && x.msg.status >= 200, 8000, 'final')).msg.status).toBe(404);
  });
});
