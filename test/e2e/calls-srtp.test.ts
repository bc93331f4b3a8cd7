/**
 * Encrypted trunk legs end to end, with baresip (Debian's baresip-core and its srtp module) as the
 * SIP trunk and a Node WebRTC agent:
 * - a trunk calling in over SIP TLS with SDES-SRTP (mediaenc=srtp-mand): the gateway answers
 *   RTP/SAVP with an a=crypto of its own (AES_CM_128_HMAC_SHA1_80), audio flows both ways (the
 *   agent counts the trunk's packets, which the relay could only forward after authenticating and
 *   decrypting them; baresip counts ours, which it drops unless they authenticate), and no packet
 *   failed authentication;
 * - hold and resume keep the call SRTP (RTP/SAVP re-offers with our key);
 * - an SRTP offer over plain UDP gets 488 (keys only over TLS), as does one on a trunk whose
 *   media.srtp is "off";
 * - an agent's outbound call to a trunk reached over SIP TLS (sips-less `;transport=tls`, its
 *   certificate checked against the configured CA).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type Baresip, baresipAvailable, startBaresip } from '../helpers/baresip.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { createTestCerts } from '../helpers/tls-certs.js';

let fx: CallFixture | undefined;
let peer: Baresip | undefined;

afterEach(async () => {
  await peer?.stop();
  peer = undefined;
  await fx?.close();
  fx = undefined;
});

type SrtpMode = 'off' | 'optional' | 'required';

async function gateway(srtp: SrtpMode, extra: Record<string, unknown> = {}): Promise<CallFixture> {
  const certs = await createTestCerts();
  fx = await startCallGateway({
    routing: { dids: [{ number: '*', agent: 'agent-1' }], groups: [], defaultTrunk: 'loopback' },
    sip: { tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile, caFile: certs.caFile, verifyPeer: true } },
    trunks: [
      {
        id: 'loopback',
        inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
        outbound: { uri: '', proxy: '', auth: { username: '', password: '' }, callerId: '' },
        codecs: ['PCMA', 'PCMU'],
        media: { latching: false, srtp },
      },
    ],
    ...extra,
  });

  return fx;
}

describe.skipIf(!baresipAvailable())('encrypted trunk legs (SIP TLS, SDES-SRTP)', () => {
  it('answers a trunk call over TLS with SDES-SRTP, and the audio flows both ways', async () => {
    await gateway('optional');
    const tlsPort = fx!.gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'tls')!.port;
    const agent = await fx!.agent('agent-1', { autoAnswer: true });
    peer = await startBaresip({ name: 'srtp-trunk', accounts: [{ user: 'trunk', mediaenc: 'srtp-mand', audioCodecs: ['pcma', 'pcmu'] }], extraModules: ['srtp'] });
    await peer.dial(`sip:+4930123456@127.0.0.1:${tlsPort};transport=tls`);
    await peer.waitForEvent('CALL_ESTABLISHED', 15_000);
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = fx!.gw.calls!.call(incoming.call.id)!;
    expect(call.localSdp).toMatch(/^m=audio \d+ RTP\/SAVP /m);
    expect(call.localSdp).toMatch(/^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}$/m);
    await expect.poll(async () => (await agent.packetCounts(incoming.call.id)).received, { timeout: 10_000, interval: 250 }).toBeGreaterThan(50);
    expect((await agent.packetCounts(incoming.call.id)).sent).toBeGreaterThan(50);
    expect(call.media!.relay.srtpStats).toMatchObject({ rtpAuthFailures: 0, replays: 0 });

    // hold and resume re-offer RTP/SAVP with our key: the call stays encrypted and the audio comes back
    await agent.client.hold(incoming.call.id);
    expect(call.localSdp).toMatch(/^m=audio \d+ RTP\/SAVP /m);
    expect(call.localSdp).toMatch(/^a=sendonly\r?$/m);
    await agent.client.resume(incoming.call.id);
    expect(call.localSdp).toMatch(/^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 /m);
    expect(call.media!.plan!.srtp).toBeDefined();
    const before = (await agent.packetCounts(incoming.call.id)).received;
    await expect.poll(async () => (await agent.packetCounts(incoming.call.id)).received - before, { timeout: 10_000, interval: 250 }).toBeGreaterThan(30);
    expect(call.media!.relay.srtpStats).toMatchObject({ rtpAuthFailures: 0, replays: 0 });

    await peer.hangup();
    await agent.waitForEvent('ended', undefined, 10_000);
    const stats = await peer.waitForAudioStats(1, 10_000);
    expect(stats.rx.packets, 'SRTP packets baresip authenticated and decoded').toBeGreaterThan(50);
    expect(stats.tx.packets).toBeGreaterThan(50);
  }, 60_000);

  it('refuses an SRTP-only offer over plain UDP with 488: SDES keys only over TLS (RFC 4568 §8.3)', async () => {
    await gateway('optional');
    await fx!.agent('agent-1', { autoAnswer: true });
    peer = await startBaresip({ name: 'srtp-udp', accounts: [{ user: 'trunk', mediaenc: 'srtp-mand', audioCodecs: ['pcma'] }], extraModules: ['srtp'] });
    await peer.dial(`sip:+4930123456@127.0.0.1:${fx!.sipTarget.split(':')[1]}`);
    const closed = await peer.waitForEvent('CALL_CLOSED', 15_000);
    expect(JSON.stringify(closed)).toMatch(/488/);
    expect(fx!.gw.calls!.calls).toHaveLength(0);
  }, 40_000);

  it('refuses an SRTP-only offer with 488 on a trunk whose media.srtp is off', async () => {
    await gateway('off');
    await fx!.agent('agent-1', { autoAnswer: true });
    peer = await startBaresip({ name: 'srtp-refused', accounts: [{ user: 'trunk', mediaenc: 'srtp-mand', audioCodecs: ['pcma'] }], extraModules: ['srtp'] });
    await peer.dial(`sip:+4930123456@127.0.0.1:${fx!.gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'tls')!.port};transport=tls`);
    const closed = await peer.waitForEvent('CALL_CLOSED', 15_000);
    expect(JSON.stringify(closed)).toMatch(/488/);
    expect(fx!.gw.calls!.calls).toHaveLength(0);
  }, 40_000);

  it("places an agent's call to a trunk over SIP TLS, the trunk's certificate checked", async () => {
    const certs = await createTestCerts();
    peer = await startBaresip({ name: 'tls-trunk', accounts: [{ user: '4930123456', answerMode: 'auto', audioCodecs: ['pcma'] }], tls: { certFile: certs.combinedFile, caFile: certs.caFile } });
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: 'agent-1' }], groups: [], defaultTrunk: 'carrier' },
      sip: { tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile, caFile: certs.caFile, verifyPeer: true } },
      trunks: [
        {
          id: 'carrier',
          inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
          outbound: { uri: `sip:127.0.0.1:${peer.sipPort('tls')};transport=tls`, proxy: '', auth: { username: '', password: '' }, callerId: '' },
          codecs: ['PCMA'],
          media: { latching: false },
        },
      ],
    });
    const agent = await fx.agent('agent-1');
    // baresip answers only calls to its account's user: the dialled number
    const call = await agent.client.dial('4930123456');
    await agent.waitForEvent('answered', undefined, 15_000).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${JSON.stringify(agent.events.filter((e) => e.name === 'ended').map((e) => e.args))}\n${peer!.describe()}`);
    });
    await expect.poll(async () => (await agent.packetCounts(call.id)).received, { timeout: 10_000, interval: 250 }).toBeGreaterThan(30);
    await agent.client.hangup(call.id);
    await peer.waitForEvent('CALL_CLOSED', 10_000);
    const stats = await peer.waitForAudioStats(1, 10_000);
    expect(stats.rx.packets).toBeGreaterThan(30);
    expect(peer.output()).toMatch(/TLS/);
  }, 60_000);
});
