/**
 * HTTPS/WSS for agents and certificate reload: a gateway with http.tls and sip.tls serves the
 * agents' WebSocket over TLS (a real `ws` client signs in over wss://), and when the certificate
 * files are replaced (a new CA, as a renewal by another issuer would be) new TLS connections on
 * both listeners get the new certificate within the poll interval, while a WSS session opened
 * before stays connected. A broken pair (key of another certificate) is refused and the listener
 * keeps the certificate it has.
 */
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { agentToken, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { createTestCerts, type TestCerts } from '../helpers/tls-certs.js';

let fx: CallFixture | undefined;

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

/** The SHA-256 fingerprint of the certificate a TLS server presents to a new connection. */
function presented(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(ca), servername: 'localhost' }, () => {
      const fp = s.getPeerX509Certificate()?.fingerprint256 ?? '';
      s.end();
      resolve(fp);
    });
    s.once('error', reject);
  });
}

/** Tries a TLS connection trusting `ca`; resolves with the certificate's fingerprint or the error message. */
async function tryPresented(port: number, ca: string): Promise<string> {
  try {
    return await presented(port, ca);
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

const fingerprint = (file: string): string => new X509Certificate(fs.readFileSync(file)).fingerprint256;

/** Copies a cert/key pair into the files the gateway watches, key first as certbot does not promise any order. */
function install(from: TestCerts, to: { certFile: string; keyFile: string }): void {
  fs.copyFileSync(from.keyFile, `${to.keyFile}.tmp`);
  fs.renameSync(`${to.keyFile}.tmp`, to.keyFile);
  fs.copyFileSync(from.certFile, `${to.certFile}.tmp`);
  fs.renameSync(`${to.certFile}.tmp`, to.certFile);
}

describe('TLS for agents (WSS) and certificate reload', () => {
  it('serves wss:// and picks up renewed certificates on HTTPS and SIP TLS without a restart', async () => {
    const first = await createTestCerts();
    const second = await createTestCerts();
    const live = { certFile: path.join(first.dir, 'live-cert.pem'), keyFile: path.join(first.dir, 'live-key.pem') };
    install(first, live);
    fx = await startCallGateway({
      routing: { dids: [{ number: '*', agent: 'agent-1' }], groups: [], defaultTrunk: '' },
      http: { tls: { enabled: true, ...live } },
      sip: { tls: { enabled: true, port: 0, ...live, caFile: '', verifyPeer: false } },
    });
    const httpsPort = fx.gw.httpAddress.port;
    const sipTls = fx.gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'tls')!;

    // /health over HTTPS, and an agent signs in over wss://
    expect(await presented(httpsPort, first.caFile)).toBe(fingerprint(first.certFile));
    expect(await presented(sipTls.port, first.caFile)).toBe(fingerprint(first.certFile));
    const ws = new WebSocket(`wss://127.0.0.1:${httpsPort}/ws`, { ca: fs.readFileSync(first.caFile) });
    const responses = new Map<string, (frame: { ok: boolean; data?: { agentId?: string } }) => void>();
    ws.on('message', (m: Buffer) => {
      const frame = JSON.parse(m.toString('utf8')) as { id?: string; ok: boolean; data?: { agentId?: string } };
      if (frame.id !== undefined) {
        responses.get(frame.id)?.(frame);
      }
    });
    const request = (id: string, type: string, data: Record<string, unknown>) =>
      new Promise<{ ok: boolean; data?: { agentId?: string } }>((resolve) => {
        responses.set(id, resolve);
        ws.send(JSON.stringify({ v: 1, id, type, data }));
      });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    expect(await request('a1', 'auth', { token: await agentToken('agent-1') })).toMatchObject({ ok: true, data: { agentId: 'agent-1' } });

    // a broken pair (the second key with the first certificate) is refused: the old one stays
    fs.copyFileSync(second.keyFile, live.keyFile);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await presented(httpsPort, first.caFile)).toBe(fingerprint(first.certFile));

    // the renewal: new connections get the new certificate on both listeners
    install(second, live);
    await expect.poll(() => tryPresented(httpsPort, second.caFile), { timeout: 10_000, interval: 250 }).toBe(fingerprint(second.certFile));
    await expect.poll(() => tryPresented(sipTls.port, second.caFile), { timeout: 10_000, interval: 250 }).toBe(fingerprint(second.certFile));
    expect(await tryPresented(httpsPort, first.caFile)).toMatch(/^error: .*(self.signed|unable to (get|verify)|certificate)/i);

    // the session opened before the renewal is still there
    expect(await request('p1', 'ping', {})).toMatchObject({ ok: true });
    expect(fx.gw.signaling!.sessionsOf('agent-1')).toHaveLength(1);
    ws.close(1000);
  }, 40_000);

  it('refuses to start on a missing certificate file, naming it', async () => {
    await expect(startCallGateway({ http: { tls: { enabled: true, certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem' } } })).rejects.toThrow(/cannot read the TLS certificate \/nonexistent\/cert\.pem/);
  });
});
