/**
 * Regressions of the engine's review (tiers 2 and 3): transactions and dialogs that leaked or hung
 * (an UPDATE parked on a canceled INVITE, a caller gone before the answer, a canceled re-INVITE,
 * colliding dialog ids, unroutable Contacts, a ringing INVITE never answered...) and RFC 3261
 * behaviour (CANCEL crossing the 200, responses over a closed connection, glare, forked 2xx, the
 * BYE that must wait for the ACK). Raw SIP peers on real sockets, a real srf app.
 */
import net from 'node:net';
import type Srf from 'drachtio-srf';
import { afterEach, describe, expect, it } from 'vitest';
import { type EngineFixture, type EngineFixtureOptions, sdp, startEngine } from '../helpers/engine.js';
import { splitPayload } from '../../src/sip/engine/control/framing.js';
import { ackFor2xx, branch, isFinal, isRequest, isResponse, type RawMessage, rawControlClient, RawSipPeer, sipRequest, sipResponse, sleep, token } from '../helpers/raw-sip.js';

let fx: EngineFixture | undefined;
const peers: RawSipPeer[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) {
    p.close();
  }
  await fx?.close();
  fx = undefined;
});

async function engine(opts: EngineFixtureOptions = {}): Promise<EngineFixture> {
  fx = await startEngine(opts);

  return fx;
}

async function udpPeer(target?: number): Promise<RawSipPeer> {
  const p = await RawSipPeer.udp(target === undefined ? undefined : { port: target });
  peers.push(p);

  return p;
}

/** A caller on a raw UDP socket: sends an INVITE and the requests of its dialog. */
class Caller {
  readonly callId = token('call-');
  readonly fromTag = token('ft');
  readonly inviteBranch = branch();
  toTag: string | undefined;
  cseq = 1;

  constructor(
    readonly peer: RawSipPeer,
    readonly enginePort: number,
  ) {}

  get uri(): string {
    return `sip:svc@127.0.0.1:${this.enginePort}`;
  }

  invite(extra: Partial<Parameters<typeof sipRequest>[0]> = {}): void {
    this.peer.send(sipRequest({ method: 'INVITE', uri: this.uri, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, cseq: 1, branch: this.inviteBranch, body: sdp(5000), ...extra }));
  }

  /** A request in the dialog (To tag known), with the next CSeq unless given. */
  request(method: string, o: { cseq?: number; branch?: string; headers?: string[]; body?: string } = {}): { cseq: number; branch: string } {
    const cseq = o.cseq ?? ++this.cseq;
    const b = o.branch ?? branch();
    this.peer.send(sipRequest({ method, uri: this.uri, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, toTag: this.toTag, cseq, branch: b, headers: o.headers, body: o.body }));

    return { cseq, branch: b };
  }

  /** CANCEL of the INVITE (same branch, RFC 3261 §9.1). */
  cancel(): void {
    this.peer.send(sipRequest({ method: 'CANCEL', uri: this.uri, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, cseq: 1, branch: this.inviteBranch, contact: null }));
  }

  ack(ok: RawMessage): void {
    this.peer.send(ackFor2xx({ uri: this.uri, callId: this.callId, fromTag: this.fromTag, cseq: 1, viaPort: this.peer.port }, ok.msg));
  }

  /** Waits for a response of the INVITE (CSeq 1) with this status and learns the To tag. */
  async response(status: number, method = 'INVITE'): Promise<RawMessage> {
    const m = await this.peer.waitFor((x) => isResponse(status, method, this.callId)(x), 5000, `${status} ${method}`);
    this.toTag ??= m.msg.to?.params.tag ?? undefined;

    return m;
  }

  final(method: string, cseq?: number): Promise<RawMessage> {
    return this.peer.waitFor((m) => isFinal(method, this.callId)(m) && (cseq === undefined || m.msg.cseq?.seq === cseq), 5000, `a final response to ${method}`);
  }
}

async function caller(enginePort: number): Promise<Caller> {
  return new Caller(await udpPeer(enginePort), enginePort);
}

/** Resolves with the Reason of the BYE that destroyed a dialog. */
function destroyed(dlg: Srf.Dialog): Promise<string> {
  return new Promise((resolve) => dlg.on('destroy', (bye: Srf.SrfRequest) => resolve(bye?.get?.('Reason') ?? '')));
}

describe('an UPDATE parked on an unanswered INVITE (finding 5)', () => {
  it('is answered when the INVITE is canceled', async () => {
    const f = await engine();
    const updates: string[] = [];
    f.srf.invite((req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      res.send(180);
      (req as unknown as NodeJS.EventEmitter).on('update', () => updates.push('update')); // never answered
      req.on('cancel', () => undefined);
    });
    const c = await caller(f.port());
    c.invite();
    await c.response(180);
    c.request('UPDATE', { body: sdp(5002) });
    await expect.poll(() => updates.length).toBe(1);
    c.cancel();
    expect((await c.final('CANCEL')).msg.status).toBe(200);
    expect((await c.final('INVITE')).msg.status).toBe(487);
    expect((await c.final('UPDATE')).msg.status).toBe(487);
  });

  it('is answered 500 by its own guard when the app never answers it', async () => {
    const f = await engine({ timers: { t1Ms: 20 } });
    f.srf.invite((req: Srf.SrfRequest, res: Srf.SrfResponse) => {
      res.send(180);
      (req as unknown as NodeJS.EventEmitter).on('update', () => undefined); // never answered
    });
    const c = await caller(f.port());
    c.invite();
    await c.response(180);
    c.request('UPDATE', { body: sdp(5002) });
    expect((await c.final('UPDATE')).msg.status).toBe(500);
  });
});

describe('a caller that is gone before the answer (finding 6)', () => {
  it('leaves no dialog behind when the 200 cannot be sent over its closed TCP connection', async () => {
    const f = await engine();
    const closedPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const failed: unknown[] = [];
    let goAhead!: () => void;
    const gone = new Promise<void>((r) => (goAhead = r));
    f.srf.invite((req, res) => {
      void gone.then(() => f.srf.createUAS(req, res, { localSdp: sdp() }).catch((err: unknown) => failed.push(err)));
    });
    const c = await RawSipPeer.tcpClient(f.port('tcp'));
    peers.push(c);
    c.send(sipRequest({ method: 'INVITE', uri: `sip:svc@127.0.0.1:${f.port('tcp')}`, transport: 'TCP', viaPort: closedPort, callId: token('gone-'), fromTag: 'g1', cseq: 1, body: sdp() }));
    await c.waitFor(isResponse(100, 'INVITE'));
    await expect.poll(() => f.engine.stats().sizes.incoming).toBe(1);
    c.socket.destroy();
    await expect.poll(() => f.engine.stats().transport.connections).toBe(0);
    goAhead();
    await expect.poll(() => failed.length).toBe(1);
    expect(f.engine.stats().sizes.dialogs).toBe(0);
    expect(f.engine.stats().sizes.incoming).toBe(0);
  });
});

describe('a CANCEL of a re-INVITE (finding 7)', () => {
  it('fails only the re-INVITE; the dialog lives on and a BYE ends it normally', async () => {
    const f = await engine();
    const ends: Promise<string>[] = [];
    f.srf.invite((req, res) => {
      void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => {
        dlg.on('modify', () => undefined); // the re-INVITE stays unanswered
        ends.push(destroyed(dlg));
      });
    });
    const c = await caller(f.port());
    c.invite();
    c.ack(await c.response(200));
    const re = c.request('INVITE', { body: sdp(5004) });
    await c.peer.waitFor((m) => isResponse(100, 'INVITE')(m) && m.msg.cseq?.seq === re.cseq);
    c.peer.send(sipRequest({ method: 'CANCEL', uri: c.uri, viaPort: c.peer.port, callId: c.callId, fromTag: c.fromTag, toTag: c.toTag, cseq: re.cseq, branch: re.branch, contact: null }));
    expect((await c.final('CANCEL')).msg.status).toBe(200);
    expect((await c.final('INVITE', re.cseq)).msg.status).toBe(487);
    expect(f.engine.stats().sizes.dialogs).toBe(1);
    const bye = c.request('BYE');
    expect((await c.final('BYE', bye.cseq)).msg.status).toBe(200);
    await ends[0];
  });
});

describe('dialog ids cannot collide (finding 8)', () => {
  it('answers 491 to a new INVITE with the Call-ID and From tag of a live dialog, which stays intact', async () => {
    const f = await engine();
    const invites: string[] = [];
    const ends: Promise<string>[] = [];
    f.srf.invite((req, res) => {
      invites.push(req.get('CSeq'));
      void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => ends.push(destroyed(dlg)));
    });
    const c = await caller(f.port());
    c.invite();
    c.ack(await c.response(200));
    await expect.poll(() => ends.length).toBe(1);
    // same Call-ID and From tag, no To tag: a new INVITE that would take over the dialog's id
    c.peer.send(sipRequest({ method: 'INVITE', uri: c.uri, viaPort: c.peer.port, callId: c.callId, fromTag: c.fromTag, cseq: 5, body: sdp(5010) }));
    expect((await c.final('INVITE', 5)).msg.status).toBe(491);
    expect(invites).toEqual(['1 INVITE']);
    const bye = c.request('BYE', { cseq: 6 });
    expect((await c.final('BYE', bye.cseq)).msg.status).toBe(200);
    await ends[0];
  });

  it('answers 482 to a merged request: same Call-ID, From tag and CSeq on another branch (RFC 3261 §8.2.2.2)', async () => {
    const f = await engine();
    const invites: string[] = [];
    f.srf.invite((req, res) => {
      invites.push(req.get('Via'));
      setTimeout(() => res.send(486), 300);
    });
    const c = await caller(f.port());
    c.invite();
    await c.response(100);
    c.peer.send(sipRequest({ method: 'INVITE', uri: c.uri, viaPort: c.peer.port, callId: c.callId, fromTag: c.fromTag, cseq: 1, branch: branch(), body: sdp() }));
    const merged = await c.peer.waitFor((m) => isFinal('INVITE', c.callId)(m) && m.msg.topVia?.params.branch !== c.inviteBranch);
    expect(merged.msg.status).toBe(482);
    expect((await c.peer.waitFor((m) => isFinal('INVITE', c.callId)(m) && m.msg.topVia?.params.branch === c.inviteBranch)).msg.status).toBe(486);
    expect(invites).toHaveLength(1);
  });
});

describe('a dialog whose remote target cannot be routed (finding 9)', () => {
  it('sends the app\'s BYE to where the peer is when its Contact is a tel: URI', async () => {
    const f = await engine();
    const dialogs: Srf.Dialog[] = [];
    f.srf.invite((req, res) => void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => dialogs.push(dlg)));
    const c = await caller(f.port());
    c.peer.onMessage((m) => m.msg.isRequest && m.msg.method === 'BYE' && c.peer.reply(m, sipResponse(m.msg, 200, 'OK')));
    c.invite({ contact: '<tel:+15551234567>' });
    c.ack(await c.response(200));
    await expect.poll(() => dialogs.length).toBe(1);
    await new Promise<void>((resolve, reject) => dialogs[0]!.destroy({ headers: {} }, (err: Error | undefined) => (err ? reject(err) : resolve())));
    const bye = await c.peer.waitFor(isRequest('BYE', c.callId));
    expect(bye.msg.uri).toBe('tel:+15551234567');
    await expect.poll(() => f.engine.stats().sizes.dialogs).toBe(0);
  });

  it('ends the dialog on ACK timeout toward a tel: Contact, and tells the app', async () => {
    const f = await engine({ timers: { t1Ms: 30 } });
    const reasons: Promise<string>[] = [];
    f.srf.invite((req, res) => void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => reasons.push(destroyed(dlg))));
    const c = await caller(f.port());
    c.invite({ contact: '<tel:+15551234567>' });
    await c.response(200); // and no ACK
    await c.peer.waitFor(isRequest('BYE', c.callId));
    await expect.poll(() => reasons.length).toBe(1);
    expect(await reasons[0]).toContain('ACK timeout');
    expect(f.engine.stats().sizes.dialogs).toBe(0);
  });

  it('ACKs and ends a call whose callee answered with a sips: Contact although the engine has no TLS', async () => {
    const f = await engine();
    const uas = await udpPeer();
    uas.onMessage((m) => {
      if (m.msg.isRequest && m.msg.method === 'INVITE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'callee1', contact: `<sips:callee@127.0.0.1:${uas.port}>`, body: sdp(6000) }));
      } else if (m.msg.isRequest && m.msg.method === 'BYE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK'));
      }
    });
    const dlg = await f.srf.createUAC(`sip:callee@127.0.0.1:${uas.port}`, { localSdp: sdp() });
    await uas.waitFor(isRequest('ACK'));
    dlg.destroy();
    const bye = await uas.waitFor(isRequest('BYE'));
    expect(bye.msg.uri).toBe(`sips:callee@127.0.0.1:${uas.port}`);
    await expect.poll(() => f.engine.stats().sizes.dialogs).toBe(0);
  });
});

describe('an INVITE the app keeps ringing and never answers (finding 11)', () => {
  it('gets 408 after Timer C from the last provisional, its early dialog is removed and the app is told', async () => {
    const f = await engine({ timers: { t1Ms: 20, timerCMs: 800 } });
    const canceled: string[] = [];
    f.srf.invite((req, res) => {
      res.send(180);
      req.on('cancel', () => canceled.push(req.get('Call-ID')));
    });
    const c = await caller(f.port());
    c.invite();
    const ringing = await c.response(180);
    expect(f.engine.stats().sizes.dialogs).toBe(1);
    const timeout = await c.final('INVITE');
    expect(timeout.msg.status).toBe(408);
    expect(timeout.at - ringing.at).toBeGreaterThanOrEqual(700);
    expect(timeout.at - ringing.at).toBeLessThan(3000);
    expect(timeout.msg.to?.params.tag).toBe(ringing.msg.to?.params.tag);
    expect(f.engine.stats().sizes.dialogs).toBe(0);
    await expect.poll(() => canceled).toEqual([c.callId]);
  });

  it('answers 503 to INVITEs beyond the cap of unanswered INVITEs from one source, and frees a slot when one ends', async () => {
    const f = await engine({ limits: { maxPendingInvitesPerSource: 2 } });
    f.srf.invite((req) => req.on('cancel', () => undefined)); // never answers
    const calls = await Promise.all([0, 1, 2].map(() => caller(f.port())));
    // all three from one address (127.0.0.1), different ports
    for (const c of calls) {
      c.invite();
      await c.response(100);
    }
    expect((await calls[2]!.final('INVITE')).msg.status).toBe(503);
    await expect.poll(() => f.engine.stats().sizes.incoming).toBe(2);
    calls[0]!.cancel();
    expect((await calls[0]!.final('INVITE')).msg.status).toBe(487);
    const again = await caller(f.port());
    again.invite();
    await again.response(100);
    await expect.poll(() => f.engine.stats().sizes.incoming).toBe(2);
    expect(again.peer.all(isFinal('INVITE'))).toHaveLength(0);
  });
});

describe('proxying that cannot start (findings 12 and 13)', () => {
  it('answers 500 upstream and NOK to the app when no target can be tried', async () => {
    const f = await engine();
    const results: unknown[] = [];
    f.srf.invite((req) => f.srf.proxyRequest(req, ['tel:+15550001111'], {}, (err: unknown) => results.push(err)));
    const c = await caller(f.port());
    c.invite();
    expect((await c.final('INVITE')).msg.status).toBe(500);
    await expect.poll(() => results.length).toBe(1);
    expect(String(results[0])).toMatch(/^error proxying request to/);
  });

  it('leaves the request with the app when it refuses a proxy message, so the app can still answer it', async () => {
    const f = await engine();
    const app = await rawControlClient(f.engine.control.port, { secret: f.engine.control.secret, routes: ['invite'] });
    // srf must not get this INVITE: it registered no handler, but route round-robin would pick it
    f.srf.disconnect();
    const c = await caller(f.port());
    c.invite();
    let delivered = splitPayload(await app.next()).tokens;
    while (delivered[1] !== 'sip' || delivered[2] !== 'network') {
      delivered = splitPayload(await app.next()).tokens;
    }
    const txnId = delivered[8]!;
    // no destination at all, then a skeleton that is not SIP
    app.send(`p1|proxy|${txnId}|remainInDialog|fullResponse||serial|||\r\nINVITE sip:x SIP/2.0\r\n\r\n`);
    app.send(`p2|proxy|${txnId}|remainInDialog|fullResponse||serial|||sip:127.0.0.1:9\r\nthis is not a SIP message\r\n\r\n`);
    for (const id of ['p1', 'p2']) {
      const { tokens } = splitPayload(await app.next());
      expect(tokens.slice(1, 4)).toEqual(['response', id, 'NOK']);
    }
    app.send(`s1|sip|${txnId}|\r\nSIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n`);
    expect(splitPayload(await app.next()).tokens.slice(1, 4)).toEqual(['response', 's1', 'OK']);
    expect((await c.final('INVITE')).msg.status).toBe(486);
    app.socket.destroy();
  });
});

describe('a CANCEL crossing the 200 (finding 15, wire protocol §6.6 case 3)', () => {
  it('gets 481, the caller gets a BYE with Reason "CANCEL after 200 OK", and the app an unsolicited BYE', async () => {
    const f = await engine();
    const reasons: Promise<string>[] = [];
    f.srf.invite((req, res) => void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => reasons.push(destroyed(dlg))));
    const c = await caller(f.port());
    c.peer.onMessage((m) => m.msg.isRequest && m.msg.method === 'BYE' && c.peer.reply(m, sipResponse(m.msg, 200, 'OK')));
    c.invite();
    await c.response(200); // no ACK: the CANCEL was already on its way
    c.cancel();
    expect((await c.final('CANCEL')).msg.status).toBe(481);
    const bye = await c.peer.waitFor(isRequest('BYE', c.callId));
    expect(bye.msg.getHeader('reason')).toBe('SIP ;cause=200 ;text="CANCEL after 200 OK"');
    await expect.poll(() => reasons.length).toBe(1);
    expect(await reasons[0]).toContain('CANCEL after 200 OK');
    expect(f.engine.stats().sizes.dialogs).toBe(0);
  });
});

describe('responses for a TCP request whose connection closed (finding 16, RFC 3261 §18.2.2)', () => {
  it('go to the received address and the sent-by port over a new connection', async () => {
    const f = await engine();
    const listener = await RawSipPeer.tcpServer();
    peers.push(listener);
    let answer!: () => void;
    const later = new Promise<void>((r) => (answer = r));
    f.srf.use('options', (_req, res) => void later.then(() => res.send(200)));
    const c = await RawSipPeer.tcpClient(f.port('tcp'));
    peers.push(c);
    const callId = token('sentby-');
    c.send(sipRequest({ method: 'OPTIONS', uri: `sip:svc@127.0.0.1:${f.port('tcp')}`, transport: 'TCP', viaPort: listener.port, callId, fromTag: 's1', cseq: 1 }));
    await expect.poll(() => f.engine.stats().sizes.incoming).toBe(1);
    c.socket.destroy();
    await expect.poll(() => f.engine.stats().transport.connections).toBe(0);
    answer();
    const res = await listener.waitFor(isResponse(200, 'OPTIONS', callId));
    expect(res.msg.topVia?.port).toBe(listener.port);
  });
});

describe('overlapping INVITEs in a dialog (finding 17, RFC 3261 §14.2)', () => {
  it('answers 491 to the peer\'s re-INVITE while the app\'s own re-INVITE is pending (glare)', async () => {
    const f = await engine();
    const dialogs: Srf.Dialog[] = [];
    f.srf.invite((req, res) => void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => dialogs.push(dlg)));
    const c = await caller(f.port());
    c.invite();
    c.ack(await c.response(200));
    await expect.poll(() => dialogs.length).toBe(1);
    void dialogs[0]!.modify(sdp(41010)).catch(() => undefined);
    await c.peer.waitFor((m) => isRequest('INVITE', c.callId)(m) && !!m.msg.to?.params.tag); // ours stays unanswered
    const re = c.request('INVITE', { body: sdp(5006) });
    expect((await c.final('INVITE', re.cseq)).msg.status).toBe(491);
  });

  it('answers 500 with Retry-After to a second re-INVITE while the first is unanswered', async () => {
    const f = await engine();
    const modifies: string[] = [];
    f.srf.invite((req, res) => {
      void f.srf.createUAS(req, res, { localSdp: sdp() }).then((dlg) => dlg.on('modify', (r: Srf.SrfRequest) => modifies.push(r.get('CSeq'))));
    });
    const c = await caller(f.port());
    c.invite();
    c.ack(await c.response(200));
    const first = c.request('INVITE', { body: sdp(5006) });
    await c.peer.waitFor((m) => isResponse(100, 'INVITE')(m) && m.msg.cseq?.seq === first.cseq);
    const second = c.request('INVITE', { body: sdp(5008) });
    const res = await c.final('INVITE', second.cseq);
    expect(res.msg.status).toBe(500);
    expect(Number(res.msg.getHeader('retry-after'))).toBeGreaterThanOrEqual(0);
    expect(Number(res.msg.getHeader('retry-after'))).toBeLessThanOrEqual(10);
    expect(modifies).toEqual([`${first.cseq} INVITE`]);
  });
});

describe('a 2xx from a second fork of the app\'s INVITE (finding 18, RFC 3261 §13.2.2.4)', () => {
  it('is ACKed and then ended with BYE, while the app keeps its call with the first fork', async () => {
    const f = await engine();
    const uas = await udpPeer();
    uas.onMessage((m) => {
      if (m.msg.isRequest && m.msg.method === 'INVITE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'forkA', contact: `<sip:a@127.0.0.1:${uas.port}>`, body: sdp(6000) }));
        setTimeout(() => uas.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'forkB', contact: `<sip:b@127.0.0.1:${uas.port}>`, body: sdp(6002) })), 200);
      } else if (m.msg.isRequest && m.msg.method === 'BYE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK'));
      }
    });
    const dlg = await f.srf.createUAC(`sip:callee@127.0.0.1:${uas.port}`, { localSdp: sdp() });
    const ackB = await uas.waitFor((m) => isRequest('ACK')(m) && m.msg.to?.params.tag === 'forkB');
    expect(ackB.msg.uri).toBe(`sip:b@127.0.0.1:${uas.port}`);
    const byeB = await uas.waitFor((m) => isRequest('BYE')(m) && m.msg.to?.params.tag === 'forkB');
    expect(byeB.at).toBeGreaterThanOrEqual(ackB.at);
    expect(uas.all((m) => isRequest('ACK')(m) && m.msg.to?.params.tag === 'forkA')).toHaveLength(1);
    expect(uas.all((m) => isRequest('BYE')(m) && m.msg.to?.params.tag === 'forkA')).toHaveLength(0);
    expect(dlg.sip.remoteTag).toBe('forkA');
    dlg.destroy();
    await uas.waitFor((m) => isRequest('BYE')(m) && m.msg.to?.params.tag === 'forkA');
  });
});

describe('the proxy\'s CANCEL of a branch without a provisional (finding 19, RFC 3261 §9.1, §16.10)', () => {
  it('waits for the branch\'s first provisional', async () => {
    const f = await engine();
    const uas = await udpPeer();
    f.srf.invite((req) => f.srf.proxyRequest(req, [`sip:callee@127.0.0.1:${uas.port}`], {}, () => undefined));
    const c = await caller(f.port());
    c.invite();
    const invite = await uas.waitFor(isRequest('INVITE')); // and stays silent
    c.cancel();
    expect((await c.final('CANCEL')).msg.status).toBe(200);
    await sleep(700);
    expect(uas.all(isRequest('CANCEL'))).toHaveLength(0);
    uas.reply(invite, sipResponse(invite.msg, 100, 'Trying'));
    const cancel = await uas.waitFor(isRequest('CANCEL'));
    expect(cancel.msg.topVia?.params.branch).toBe(invite.msg.topVia?.params.branch);
    uas.reply(cancel, sipResponse(cancel.msg, 200, 'OK'));
    uas.reply(invite, sipResponse(invite.msg, 487, 'Request Terminated', { toTag: 'callee1' }));
    expect((await c.final('INVITE')).msg.status).toBe(487);
  });
});

describe('the app\'s CANCEL of an INVITE that got only 100 Trying (RFC 3261 §9.1)', () => {
  it('goes out at once: a 100 is a provisional response', async () => {
    const f = await engine();
    const uas = await udpPeer();
    uas.onMessage((m) => {
      if (m.msg.isRequest && m.msg.method === 'INVITE') {
        uas.reply(m, sipResponse(m.msg, 100, 'Trying'));
      } else if (m.msg.isRequest && m.msg.method === 'CANCEL') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK'));
        const invite = uas.received.find(isRequest('INVITE'))!;
        uas.reply(invite, sipResponse(invite.msg, 487, 'Request Terminated', { toTag: 'callee1' }));
      }
    });
    let sent!: (req: { cancel(opts: object, cb: () => void): void }) => void;
    const request = new Promise<{ cancel(opts: object, cb: () => void): void }>((r) => (sent = r));
    const result = f.srf
      .createUAC(`sip:callee@127.0.0.1:${uas.port}`, { localSdp: sdp() }, {
        cbRequest: ((_err: unknown, req: { cancel(opts: object, cb: () => void): void }) => sent(req)) as unknown as (req: Srf.SrfRequest) => void,
      })
      .then(() => 0, (err: { status?: number }) => err.status ?? -1);
    const req = await request;
    await uas.waitFor(isRequest('INVITE'));
    await sleep(200); // the 100 has arrived
    req.cancel({}, () => undefined);
    await uas.waitFor(isRequest('CANCEL'), 2000);
    expect(await result).toBe(487);
  });
});
