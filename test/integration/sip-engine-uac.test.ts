/**
 * The embedded engine as the SIP server of drachtio-srf UAC, B2BUA, proxy and registrar logic,
 * with sipp as the far end: createUAC, re-INVITE from each side, BYE from each side, reliable
 * provisionals with PRACK, CANCEL, digest challenges (INVITE and REGISTER), createB2BUA and
 * proxyRequest, over UDP and TCP.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type Srf from 'drachtio-srf';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { hostPort, runSipp, sipHeader, type SippTransport, startSipp } from '../helpers/sipp.js';

let fx: EngineFixture;

afterEach(async () => {
  await fx?.close();
});

function uri(port: number, transport: SippTransport, user = 'sipp'): string {
  return `sip:${user}@${hostPort('127.0.0.1', port)}${transport === 'tcp' ? ';transport=tcp' : ''}`;
}

describe.each(['udp', 'tcp'] as SippTransport[])('engine for srf UAC and B2BUA over %s', (transport) => {
  beforeEach(async () => {
    fx = await startEngine();
  });

  it('createUAC reaches sipp as UAS; the far end BYE destroys the dialog', async () => {
    const uas = startSipp({ scenario: 'uas-answer-send-bye', transport });
    await uas.ready;
    const dlg = await fx.srf.createUAC(uri(uas.port, transport), { localSdp: sdp(43000) });
    expect(dlg.remote.sdp).toContain('m=audio');
    const reason = await new Promise<string>((resolve) => dlg.on('destroy', () => resolve('bye')));
    expect(reason).toBe('bye');
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const invite = r.received('INVITE')[0]!;
    // wire protocol §7.1: the engine fills Via (rport, fresh branch), Max-Forwards, tags, Contact
    expect(sipHeader(invite, 'Via')).toMatch(/^SIP\/2\.0\/(UDP|TCP) 127\.0\.0\.1:\d+;rport;branch=z9hG4bK[A-Za-z0-9_-]{20,}/);
    expect(sipHeader(invite, 'Max-Forwards')).toBe('70');
    expect(sipHeader(invite, 'From')).toMatch(/;tag=/);
    expect(sipHeader(invite, 'Contact')).toBe(`<sip:${fx.target(transport)}${transport === 'tcp' ? ';transport=tcp' : ''}>`);
    expect(r.received('ACK')).toHaveLength(1);
  });

  it('createUAC, then srf re-INVITEs (dialog.modify) and hangs up', async () => {
    const uas = startSipp({ scenario: 'uas-recv-reinvite', transport });
    await uas.ready;
    const dlg = await fx.srf.createUAC(uri(uas.port, transport), { localSdp: sdp(43100) });
    const answer = await dlg.modify(sdp(43102));
    expect(answer).toContain('m=audio');
    await new Promise((r) => setTimeout(r, 100));
    dlg.destroy();
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const invites = r.received('INVITE');
    expect(invites).toHaveLength(2);
    // RFC 3261 §14.1: same dialog, higher CSeq
    const cseq = invites.map((i) => Number(sipHeader(i, 'CSeq')!.split(' ')[0]));
    expect(cseq[1]).toBeGreaterThan(cseq[0]!);
    expect(sipHeader(invites[1]!, 'To')).toMatch(/;tag=/);
    expect(invites[1]).toContain('m=audio 43102');
  });

  it('follows a reliable 180 with PRACK (RFC 3262) and completes the call', async () => {
    const uas = startSipp({ scenario: 'uas-reliable-180', transport });
    await uas.ready;
    const dlg = await fx.srf.createUAC(uri(uas.port, transport), { localSdp: sdp(), headers: { Supported: '100rel' } });
    dlg.destroy();
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const prack = r.received('PRACK')[0]!;
    expect(sipHeader(prack, 'RAck')).toMatch(/^\d+ \d+ INVITE$/);
  });

  it('cancels its own INVITE (req.cancel) with the Reason the app gives', async () => {
    const uas = startSipp({ scenario: 'uas-cancel', transport });
    await uas.ready;
    const err = await new Promise<unknown>((resolve) => {
      fx.srf
        .createUAC(uri(uas.port, transport), { localSdp: sdp() }, {
          cbProvisional: () => undefined,
          // srf calls cbRequest(err, req), although its typings declare cbRequest(req)
          cbRequest: ((_err: unknown, req: { cancel(opts: object, cb: () => void): void }) =>
            setTimeout(() => req.cancel({ headers: { Reason: 'SIP;cause=200;text="Call completed elsewhere"' } }, () => undefined), 300)) as unknown as (req: Srf.SrfRequest) => void,
        })
        .then(() => resolve(undefined), resolve);
    });
    expect((err as { status?: number }).status).toBe(487);
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const cancel = r.received('CANCEL')[0]!;
    const invite = r.received('INVITE')[0]!;
    // RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via
    expect(cancel.split('\r\n')[0]!.replace('CANCEL', 'INVITE')).toBe(invite.split('\r\n')[0]);
    expect(sipHeader(cancel, 'Via')).toBe(sipHeader(invite, 'Via'));
    expect(sipHeader(cancel, 'CSeq')!.split(' ')[0]).toBe(sipHeader(invite, 'CSeq')!.split(' ')[0]);
    expect(sipHeader(cancel, 'Reason')).toBe('SIP;cause=200;text="Call completed elsewhere"');
  });

  it('retries an INVITE challenged with 407 (srf digest client): same Call-ID, CSeq+1, credentials', async () => {
    const creds = { username: 'trunk-user', password: 'trunk-secret' };
    const uas = startSipp({ scenario: 'uas-auth', transport, auth: creds });
    await uas.ready;
    const dlg = await fx.srf.createUAC(uri(uas.port, transport), { localSdp: sdp(), auth: creds });
    dlg.destroy();
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const [first, second] = r.received('INVITE');
    expect(sipHeader(second!, 'Call-ID')).toBe(sipHeader(first!, 'Call-ID'));
    expect(Number(sipHeader(second!, 'CSeq')!.split(' ')[0])).toBe(Number(sipHeader(first!, 'CSeq')!.split(' ')[0]) + 1);
    expect(sipHeader(second!, 'Proxy-Authorization')).toMatch(/^Digest /);
    // the Request-URI is never rewritten (the digest covers it)
    expect(second!.split('\r\n')[0]).toBe(first!.split('\r\n')[0]);
  });

  it('bridges sipp → srf.createB2BUA → sipp, with BYE from the caller ending both legs', async () => {
    const uas = startSipp({ scenario: 'uas-answer', transport });
    await uas.ready;
    const legs: Promise<void>[] = [];
    fx.srf.invite((req, res) => {
      void fx.srf.createB2BUA(req, res, uri(uas.port, transport), { localSdpB: req.body, headers: { 'X-Leg': 'B' } }).then(({ uas: a, uac: b }) => {
        legs.push(new Promise((resolve) => a.on('destroy', () => { b.destroy(); resolve(); })));
      });
    });
    const r = await runSipp({ scenario: 'uac-invite-bye', target: fx.target(transport), transport, keys: { hold_ms: '200' } });
    expect(r.exitCode, r.describe()).toBe(0);
    const b = await uas.result;
    expect(b.exitCode, b.describe()).toBe(0);
    expect(sipHeader(b.received('INVITE')[0]!, 'X-Leg')).toBe('B');
    expect(b.received('BYE')).toHaveLength(1);
    await legs[0];
  });

  it('propagates a caller CANCEL through createB2BUA to the B leg', async () => {
    const uas = startSipp({ scenario: 'uas-cancel', transport });
    await uas.ready;
    fx.srf.invite((req, res) => {
      fx.srf.createB2BUA(req, res, uri(uas.port, transport), { localSdpB: req.body }).catch(() => undefined);
    });
    const r = await runSipp({ scenario: 'uac-cancel', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    const b = await uas.result;
    expect(b.exitCode, b.describe()).toBe(0);
    expect(b.received('CANCEL')).toHaveLength(1);
  });

  it('proxies with srf.proxyRequest, record-routing the dialog so ACK and BYE come through', async () => {
    const uas = startSipp({ scenario: 'uas-answer', transport });
    await uas.ready;
    const results: unknown[] = [];
    fx.srf.invite((req) => {
      fx.srf.proxyRequest(req, [uri(uas.port, transport)], { recordRoute: true }, (err: unknown, res: unknown) => results.push(err ?? res));
    });
    const r = await runSipp({ scenario: 'uac-invite-bye', target: fx.target(transport), transport, keys: { hold_ms: '100' } });
    expect(r.exitCode, r.describe()).toBe(0);
    const b = await uas.result;
    expect(b.exitCode, b.describe()).toBe(0);
    const proxied = b.received('INVITE')[0]!;
    // the Record-Route carries the token that later lets ACK and BYE through (no open relay)
    expect(sipHeader(proxied, 'Record-Route')).toMatch(/^<sip:127\.0\.0\.1:\d+(;transport=tcp)?;lr;rr=[A-Za-z0-9_-]{22}>$/);
    expect(sipHeader(proxied, 'Max-Forwards')).toBe('69');
    // ACK and BYE traversed the proxy: two Vias
    expect(b.received('BYE')[0]!.match(/^Via:/gim)).toHaveLength(2);
    await expect.poll(() => results.length).toBe(1);
    expect(results[0]).toMatchObject({ connected: true, finalStatus: 200 });
  });
});

describe('engine as registrar for an srf app', () => {
  beforeEach(async () => {
    fx = await startEngine();
  });

  it('lets the app challenge REGISTER with digest and accept the retry (sipp computes the digest)', async () => {
    const creds = { username: 'agent-7', password: 'pa55word' };
    const realm = 'ringbridge.test';
    const nonces = new Set<string>();
    fx.srf.use('register', (req, res) => {
      const auth = req.get('Authorization');
      if (!auth) {
        const nonce = createHash('sha1').update(String(Math.random())).digest('hex');
        nonces.add(nonce);
        res.send(401, { headers: { 'WWW-Authenticate': `Digest realm="${realm}", nonce="${nonce}", algorithm=MD5, qop="auth"` } });

        return;
      }
      const p = Object.fromEntries([...auth.matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]+))/g)].map((m) => [m[1]!, m[2] ?? m[3]!]));
      const md5 = (s: string) => createHash('md5').update(s).digest('hex');
      const ha1 = md5(`${creds.username}:${realm}:${creds.password}`);
      const ha2 = md5(`REGISTER:${p.uri}`);
      const expected = p.qop ? md5(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`) : md5(`${ha1}:${p.nonce}:${ha2}`);
      if (nonces.has(p.nonce ?? '') && p.response === expected) {
        res.send(200, { headers: { Contact: req.get('Contact'), Expires: '3600' } });
      } else {
        res.send(403);
      }
    });
    const r = await runSipp({ scenario: 'uac-register-auth', target: fx.target('udp'), transport: 'udp', auth: creds });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(401, 'REGISTER')).toHaveLength(1);
    expect(r.received(200, 'REGISTER')).toHaveLength(1);
  });
});
