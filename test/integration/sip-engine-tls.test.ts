/**
 * SIP over TLS through the embedded engine, with baresip as the real peer (sipp on this machine
 * has no TLS): a TLS call into an srf UAS, an srf UAC calling out over TLS with the peer's
 * certificate verified against the configured CA, and a refused handshake with the wrong CA.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Baresip, startBaresip } from '../helpers/baresip.js';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { createTestCerts, type TestCerts } from '../helpers/tls-certs.js';

let certs: TestCerts;
let otherCerts: TestCerts;
let fx: EngineFixture | undefined;
let peer: Baresip | undefined;

beforeAll(async () => {
  [certs, otherCerts] = await Promise.all([createTestCerts(), createTestCerts()]);
});

afterAll(() => {
  certs?.cleanup();
  otherCerts?.cleanup();
});

afterEach(async () => {
  await peer?.stop();
  peer = undefined;
  await fx?.close();
  fx = undefined;
});

function tlsEngine(caFile: string): Promise<EngineFixture> {
  return startEngine({ tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile, caFile, verifyPeer: true } });
}

describe('engine over TLS with baresip', () => {
  it('takes a call over TLS into an srf UAS and delivers the peer BYE', async () => {
    fx = await tlsEngine(certs.caFile);
    const protocols: string[] = [];
    const ended: Promise<void>[] = [];
    fx.srf.invite((req, res) => {
      protocols.push(req.protocol);
      void fx!.srf.createUAS(req, res, { localSdp: sdp(44000) }).then((dlg) => ended.push(new Promise((r) => dlg.on('destroy', () => r()))));
    });
    peer = await startBaresip({ name: 'caller', accounts: [{ user: 'caller', answerMode: 'manual' }], tls: { certFile: certs.combinedFile, caFile: certs.caFile } });
    await peer.dial(`sip:agent@${fx.target('tls')};transport=tls`);
    await peer.waitForEvent('CALL_ESTABLISHED', 10_000);
    expect(protocols).toEqual(['tls']);
    await peer.hangup();
    await peer.waitForEvent('CALL_CLOSED', 10_000);
    expect(ended).toHaveLength(1);
    await ended[0];
    await expect.poll(() => fx!.engine.stats().sizes.dialogs).toBe(0);
  });

  it('places an srf UAC call over TLS to a peer whose certificate the configured CA signed', async () => {
    fx = await tlsEngine(certs.caFile);
    peer = await startBaresip({ name: 'callee', accounts: [{ user: 'callee', answerMode: 'auto' }], tls: { certFile: certs.combinedFile, caFile: certs.caFile } });
    const dlg = await fx.srf.createUAC(peer.uri('tls', 'callee'), { localSdp: sdp(44100) });
    await peer.waitForEvent('CALL_ESTABLISHED', 10_000);
    expect(dlg.remote.sdp).toContain('m=audio');
    dlg.destroy();
    await peer.waitForEvent('CALL_CLOSED', 10_000);
  });

  it('refuses to call a TLS peer whose certificate another CA signed (503 to the app)', async () => {
    fx = await tlsEngine(otherCerts.caFile);
    peer = await startBaresip({ name: 'impostor', accounts: [{ user: 'impostor', answerMode: 'auto' }], tls: { certFile: certs.combinedFile, caFile: certs.caFile } });
    const err = await fx.srf.createUAC(peer.uri('tls', 'impostor'), { localSdp: sdp() }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as { status?: number }).status).toBe(503);
    expect(peer.events.filter((e) => e.type === 'CALL_ESTABLISHED')).toEqual([]);
  });
});
