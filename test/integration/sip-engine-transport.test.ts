/**
 * The engine's transport layer on real sockets: IPv6, RFC 3581 received/rport, stream framing,
 * keep-alives, limits, and what happens to messages that do not parse.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { parseMessage } from '../../src/sip/engine/message.js';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { runSipp, sipHeader } from '../helpers/sipp.js';

let fx: EngineFixture | undefined;

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

const hasIPv6Loopback = Object.values(os.networkInterfaces()).some((l) => l?.some((i) => i.address === '::1'));

function options(branch: string, extra = '', viaHost = '127.0.0.1:5999'): string {
  return [
    `OPTIONS sip:ping@127.0.0.1 SIP/2.0`,
    `Via: SIP/2.0/UDP ${viaHost};branch=z9hG4bK${branch}`,
    'Max-Forwards: 70',
    'From: <sip:probe@127.0.0.1>;tag=p1',
    'To: <sip:ping@127.0.0.1>',
    `Call-ID: ${branch}@probe`,
    'CSeq: 1 OPTIONS',
    extra,
    'Content-Length: 0',
    '',
    '',
  ]
    .filter((l, i, a) => l !== '' || i >= a.length - 2)
    .join('\r\n');
}

/** Sends one datagram and resolves with the first reply (or undefined after timeoutMs). */
function udpExchange(port: number, data: Buffer | string, timeoutMs = 1500): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m.toString());
    });
    s.send(typeof data === 'string' ? Buffer.from(data) : data, port, '127.0.0.1');
  });
}

describe('engine transports', () => {
  it.runIf(hasIPv6Loopback)('serves a call over IPv6 (sipp on ::1), with bracketed IPv6 in Via and Contact', async () => {
    fx = await startEngine({ listenAddresses: ['::1'] });
    fx.srf.invite((req, res) => void fx!.srf.createUAS(req, res, { localSdp: sdp() }));
    const r = await runSipp({ scenario: 'uac-invite-bye', target: fx.target('udp'), localIp: '::1', keys: { hold_ms: '50' } });
    expect(r.exitCode, r.describe()).toBe(0);
    const ok = r.received(200, 'INVITE')[0]!;
    expect(sipHeader(ok, 'Contact')).toMatch(/^<sip:\[::1\]:\d+>$/);
    expect(sipHeader(ok, 'Via')).toMatch(/^SIP\/2\.0\/UDP \[::1\]:\d+;/);
  });

  it('stamps received and rport on the top Via of requests it delivers (RFC 3581)', async () => {
    fx = await startEngine();
    const seen: string[] = [];
    fx.srf.use('options', (req, res) => {
      seen.push(req.get('Via'));
      res.send(200);
    });
    const reply = await udpExchange(fx.port('udp'), options('rport1', '', '192.0.2.1:5999'));
    expect(reply).toMatch(/^SIP\/2\.0 200 OK/);
    expect(seen[0]).toMatch(/^SIP\/2\.0\/UDP 192\.0\.2\.1:5999;branch=z9hG4bKrport1;received=127\.0\.0\.1;rport=\d+$/);
    // the response went back to the real source (we got it), not to 192.0.2.1
    expect(sipHeader(reply!, 'Via')).toContain('received=127.0.0.1');
  });

  it('answers 400 with a reason to a request that does not parse but can be answered', async () => {
    fx = await startEngine();
    const bad = options('bad1').replace('CSeq: 1 OPTIONS', 'CSeq: one OPTIONS');
    const reply = await udpExchange(fx.port('udp'), bad);
    expect(reply).toMatch(/^SIP\/2\.0 400 /);
    expect(fx.engine.stats().transport.rejected).toBe(1);
  });

  it('drops garbage silently and counts it, and still serves the next request', async () => {
    fx = await startEngine();
    fx.srf.use('options', (_req, res) => res.send(200));
    expect(await udpExchange(fx.port('udp'), Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]), 300)).toBeUndefined();
    expect(await udpExchange(fx.port('udp'), 'HELLO WORLD\r\n\r\n', 300)).toBeUndefined();
    expect(fx.engine.stats().transport.dropped).toBe(2);
    expect(await udpExchange(fx.port('udp'), options('after'))).toMatch(/^SIP\/2\.0 200 OK/);
  });

  it('answers 400 when a datagram declares more body than it carries (RFC 3261 §18.3)', async () => {
    fx = await startEngine();
    const bad = options('cl1').replace('Content-Length: 0', 'Content-Length: 500');
    expect(await udpExchange(fx.port('udp'), bad)).toMatch(/^SIP\/2\.0 400 /);
  });

  it('frames several requests arriving in one TCP segment and one split byte by byte, answers a CRLF ping with a pong', async () => {
    fx = await startEngine();
    fx.srf.use('options', (_req, res) => res.send(200));
    const sock = net.connect(fx.port('tcp'), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString()));
    const one = options('tcp1').replace('SIP/2.0/UDP', 'SIP/2.0/TCP');
    const two = options('tcp2').replace('SIP/2.0/UDP', 'SIP/2.0/TCP');
    sock.write(one + two);
    await expect.poll(() => (got.match(/^SIP\/2\.0 200 OK/gm) ?? []).length).toBe(2);
    const three = options('tcp3').replace('SIP/2.0/UDP', 'SIP/2.0/TCP');
    for (const ch of Buffer.from(three)) {
      sock.write(Buffer.from([ch]));
    }
    await expect.poll(() => (got.match(/^SIP\/2\.0 200 OK/gm) ?? []).length).toBe(3);
    got = '';
    sock.write('\r\n\r\n');
    await expect.poll(() => got).toBe('\r\n');
    sock.destroy();
  });

  it('closes a TCP connection that exceeds the message size limit', async () => {
    fx = await startEngine({ limits: { maxMessageBytes: 2048 } });
    const sock = net.connect(fx.port('tcp'), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    const closed = new Promise((r) => sock.once('close', r));
    const huge = options('big').replace('Content-Length: 0', 'Content-Length: 100000');
    sock.write(huge);
    await closed;
    expect(fx.engine.stats().transport.dropped).toBe(1);
  });

  it('answers responses for a TCP request over the same connection (RFC 3261 §18.2.2)', async () => {
    fx = await startEngine();
    fx.srf.use('options', (_req, res) => res.send(200));
    const sock = net.connect(fx.port('tcp'), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString()));
    // the Via names a port nobody listens on: only the connection can carry the answer
    sock.write(options('reuse', '', '127.0.0.1:1').replace('SIP/2.0/UDP', 'SIP/2.0/TCP'));
    await expect.poll(() => got).toMatch(/^SIP\/2\.0 200 OK/);
    const res = parseMessage(Buffer.from(got));
    expect(res.topVia?.params.branch).toBe('z9hG4bKreuse');
    sock.destroy();
  });

  it('rejects more header lines than allowed with 400', async () => {
    fx = await startEngine({ limits: { maxHeaders: 20 } });
    const many = options('many', Array.from({ length: 40 }, (_, i) => `X-H${i}: ${i}`).join('\r\n'));
    expect(await udpExchange(fx.port('udp'), many)).toMatch(/^SIP\/2\.0 400 /);
  });
});
