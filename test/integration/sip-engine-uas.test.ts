/**
 * The embedded engine as the SIP server of a drachtio-srf UAS app, with sipp as the caller:
 * answers (200, 486, 404), BYE from each side, INFO, OPTIONS, CANCEL, ACK timeout and a lost
 * 200, over UDP and TCP.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type Srf from 'drachtio-srf';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { runSipp, sipHeader, type SippTransport } from '../helpers/sipp.js';

let fx: EngineFixture;

afterEach(async () => {
  await fx?.close();
});

/** Resolves with the dialog's destroy reason (the Reason header of a BYE it did not send). */
function onDestroy(dlg: Srf.Dialog): Promise<string> {
  return new Promise((resolve) => dlg.on('destroy', (bye: Srf.SrfRequest) => resolve(bye.get('Reason') ?? '')));
}

describe.each(['udp', 'tcp'] as SippTransport[])('engine as UAS over %s', (transport) => {
  beforeEach(async () => {
    fx = await startEngine();
  });

  it('answers 200 through srf.createUAS: 100 Trying first, a To tag, our Contact, and the caller BYE destroys the dialog', async () => {
    const destroyed: Promise<string>[] = [];
    fx.srf.invite((req, res) => {
      void fx.srf.createUAS(req, res, { localSdp: sdp(41000) }).then((dlg) => destroyed.push(onDestroy(dlg)));
    });
    const r = await runSipp({ scenario: 'uac-invite-bye', target: fx.target(transport), transport, keys: { hold_ms: '100' } });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.flow.filter((l) => l.startsWith('<')).slice(0, 2)).toEqual(['< 100 INVITE', expect.stringMatching(/^< (180|200) INVITE$/)]);
    const ok = r.received(200, 'INVITE')[0]!;
    expect(sipHeader(ok, 'To')).toMatch(/;tag=[A-Za-z0-9]+/);
    expect(sipHeader(ok, 'Contact')).toBe(`<sip:${fx.target(transport)}${transport === 'tcp' ? ';transport=tcp' : ''}>`);
    expect(ok).toContain('m=audio 41000 RTP/AVP 0 101');
    expect(r.received(200, 'BYE')).toHaveLength(1);
    expect(destroyed).toHaveLength(1);
    await destroyed[0];
    expect(fx.engine.stats().sizes.dialogs).toBe(0);
  });

  for (const status of [486, 404] as const) {
    it(`relays an app rejection ${status} and absorbs the caller's ACK`, async () => {
      fx.srf.invite((_req, res) => res.send(status));
      const r = await runSipp({ scenario: `uac-expect-${status}`, target: fx.target(transport), transport });
      expect(r.exitCode, r.describe()).toBe(0);
      expect(r.received(status, 'INVITE')).toHaveLength(1);
      expect(r.flow).toContain('> ACK');
      expect(fx.engine.stats().sizes.dialogs).toBe(0);
    });
  }

  it('sends BYE for the app (dialog.destroy) toward the caller', async () => {
    fx.srf.invite((req, res) => {
      void fx.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => setTimeout(() => dlg.destroy(), 200));
    });
    const r = await runSipp({ scenario: 'uac-invite-wait-bye', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    const bye = r.received('BYE')[0]!;
    // RFC 3261 §12.2.1.1: in-dialog request to the remote target with both tags and the next CSeq
    expect(bye.split('\r\n')[0]).toMatch(/^BYE sip:sipp@127\.0\.0\.1:\d+;transport=(UDP|TCP) SIP\/2\.0$/i);
    expect(sipHeader(bye, 'From')).toMatch(/;tag=/);
    expect(sipHeader(bye, 'To')).toMatch(/;tag=/);
  });

  it('delivers in-dialog INFO to the dialog and sends the app answer', async () => {
    const infos: string[] = [];
    fx.srf.invite((req, res) => {
      void fx.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => {
        dlg.on('info', (info: Srf.SrfRequest, infoRes: Srf.SrfResponse) => {
          infos.push(info.body);
          infoRes.send(200);
        });
      });
    });
    const r = await runSipp({ scenario: 'uac-info', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(infos).toHaveLength(1);
    expect(infos[0]).toMatch(/Signal=/);
    expect(r.received(200, 'INFO')).toHaveLength(1);
  });

  it('answers OPTIONS through the app', async () => {
    fx.srf.use('options', (_req, res) => res.send(200, { headers: { Allow: 'INVITE, ACK, BYE, OPTIONS' } }));
    const r = await runSipp({ scenario: 'uac-options', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(sipHeader(r.received(200, 'OPTIONS')[0]!, 'Allow')).toBe('INVITE, ACK, BYE, OPTIONS');
  });

  it('answers 503 itself when no app handles the method', async () => {
    const r = await runSipp({ scenario: 'uac-expect-503', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
  });

  it('handles a caller CANCEL before the answer: 200 to the CANCEL, 487 to the INVITE, cancel event to the app', async () => {
    const canceled: string[] = [];
    fx.srf.invite((req, res) => {
      res.send(180);
      req.on('cancel', () => canceled.push(req.get('Call-ID')));
    });
    const r = await runSipp({ scenario: 'uac-cancel', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(200, 'CANCEL')).toHaveLength(1);
    expect(r.received(487, 'INVITE')).toHaveLength(1);
    await expect.poll(() => canceled.length).toBe(1);
  });

  it('lets the caller re-INVITE: the dialog emits modify and the answer carries the new SDP', async () => {
    const offers: string[] = [];
    fx.srf.invite((req, res) => {
      void fx.srf.createUAS(req, res, { localSdp: sdp(42000) }).then((dlg) => {
        dlg.on('modify', (reinvite: Srf.SrfRequest, reRes: Srf.SrfResponse) => {
          offers.push(reinvite.body);
          reRes.send(200, { body: sdp(42002) });
        });
      });
    });
    const r = await runSipp({ scenario: 'uac-reinvite', target: fx.target(transport), transport });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(offers).toHaveLength(1);
    const answers = r.received(200, 'INVITE');
    expect(answers.at(-1)).toContain('m=audio 42002');
  });
});

describe('engine as UAS: timers', () => {
  it('re-sends the 200 when the caller lost it (RFC 3261 §13.3.1.4) and the call completes', async () => {
    fx = await startEngine();
    fx.srf.invite((req, res) => void fx.srf.createUAS(req, res, { localSdp: sdp() }));
    const r = await runSipp({ scenario: 'uac-lost-200', target: fx.target('udp'), transport: 'udp' });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(200, 'INVITE').length).toBeGreaterThanOrEqual(2);
  });

  it('ends the dialog with BYE (Reason: ACK timeout) when no ACK comes within 64*T1, and tells the app', async () => {
    // T1 = 100 ms makes 64*T1 = 6.4 s instead of 32 s.
    fx = await startEngine({ timers: { t1Ms: 100 } });
    const reasons: Promise<string>[] = [];
    fx.srf.invite((req, res) => {
      void fx.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => reasons.push(onDestroy(dlg)));
    });
    const r = await runSipp({ scenario: 'uac-no-ack', target: fx.target('udp'), transport: 'udp', timeoutMs: 40_000 });
    expect(r.exitCode, r.describe()).toBe(0);
    const bye = r.received('BYE')[0]!;
    expect(sipHeader(bye, 'Reason')).toBe('SIP ;cause=200 ;text="ACK timeout"');
    // the 200 was re-sent while waiting (T1, 2T1, 4T1 ... capped at T2)
    expect(r.received(200, 'INVITE').length).toBeGreaterThanOrEqual(4);
    expect(await reasons[0]).toContain('ACK timeout');
    expect(fx.engine.stats().sizes.dialogs).toBe(0);
  }, 45_000);
});
