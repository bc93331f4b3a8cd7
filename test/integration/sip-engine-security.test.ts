/**
 * Regressions of the engine's security review (tier 1): the loose-route forwarder is no open relay,
 * RFC 3581 `received` cannot be forged, TCP connection slots cannot be exhausted, a REGISTER
 * cannot hijack someone else's Contact, tags cannot break control-protocol leaders, and the
 * control port does not keep unauthenticated connections. Real sockets and a real srf throughout.
 */
import net from 'node:net';
import type Srf from 'drachtio-srf';
import { afterEach, describe, expect, it } from 'vitest';
import { splitPayload } from '../../src/sip/engine/control/framing.js';
import { BINDING_FLOW_HEADER, bindingFlowToken } from '../../src/sip/engine/core/registered-flows.js';
import { type EngineFixture, startEngine } from '../helpers/engine.js';
import { isFinal, isRequest, isResponse, rawControlClient, RawSipPeer, sipRequest, sipResponse, sleep, token } from '../helpers/raw-sip.js';

let fx: EngineFixture | undefined;
const peers: RawSipPeer[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) {
    p.close();
  }
  await fx?.close();
  fx = undefined;
});

async function udpPeer(target?: number): Promise<RawSipPeer> {
  const p = await RawSipPeer.udp(target === undefined ? undefined : { port: target });
  peers.push(p);

  return p;
}

async function tcpServer(): Promise<RawSipPeer> {
  const p = await RawSipPeer.tcpServer();
  peers.push(p);

  return p;
}

describe('loose-route forwarding is no open relay (finding 1)', () => {
  it('does not forward an in-dialog request whose Route names us without our Record-Route token, to UDP or TCP', async () => {
    fx = await startEngine();
    const port = fx.port('udp');
    const victimUdp = await udpPeer();
    const victimTcp = await tcpServer();
    const attacker = await udpPeer(port);
    for (const [route, forged] of [
      [`<sip:127.0.0.1:${victimUdp.port};lr>`, ''],
      [`<sip:127.0.0.1:${victimUdp.port};lr>`, ';rr=AAAAAAAAAAAAAAAAAAAAAA'],
      [`<sip:127.0.0.1:${victimTcp.port};transport=tcp;lr>`, ''],
    ] as const) {
      const callId = token('relay-');
      attacker.send(
        sipRequest({
          method: 'BYE',
          uri: `sip:x@127.0.0.1:${victimUdp.port}`,
          viaPort: attacker.port,
          callId,
          fromTag: 'a1',
          toTag: 'b1',
          cseq: 2,
          headers: [`Route: <sip:127.0.0.1:${port};lr${forged}>`, `Route: ${route}`],
        }),
      );
      const res = await attacker.waitFor(isFinal('BYE', callId));
      expect(res.msg.status).toBe(481);
    }
    await sleep(300);
    expect(victimUdp.received).toHaveLength(0);
    expect(victimTcp.received).toHaveLength(0);
    expect(victimTcp.connections).toHaveLength(0);
  });

  it('forwards requests of a dialog it record-routed (token valid both ways), and answers 483 when Max-Forwards is 0', async () => {
    fx = await startEngine();
    const port = fx.port('udp');
    const uas = await udpPeer();
    const caller = await udpPeer(port);
    fx.srf.invite((req: Srf.SrfRequest) => {
      fx!.srf.proxyRequest(req, [`sip:callee@127.0.0.1:${uas.port}`], { recordRoute: true }, () => undefined);
    });
    uas.onMessage((m) => {
      if (m.msg.isRequest && m.msg.method === 'INVITE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'uas1', contact: `<sip:callee@127.0.0.1:${uas.port}>` }));
      } else if (m.msg.isRequest && m.msg.method === 'BYE') {
        uas.reply(m, sipResponse(m.msg, 200, 'OK'));
      }
    });
    caller.onMessage((m) => {
      if (m.msg.isRequest && m.msg.method === 'BYE') {
        caller.reply(m, sipResponse(m.msg, 200, 'OK'));
      }
    });
    const callId = token('rr-');
    caller.send(sipRequest({ method: 'INVITE', uri: `sip:svc@127.0.0.1:${port}`, viaPort: caller.port, callId, fromTag: 'c1', cseq: 1 }));
    const ok = await caller.waitFor(isResponse(200, 'INVITE', callId));
    const rr = ok.msg.getHeader('record-route')!;
    expect(rr).toMatch(new RegExp(`^<sip:127\\.0\\.0\\.1:${port};lr;rr=[A-Za-z0-9_-]{22}>$`));
    const bye = (mf: number, cseq: number) =>
      sipRequest({ method: 'BYE', uri: `sip:callee@127.0.0.1:${uas.port}`, viaPort: caller.port, callId, fromTag: 'c1', toTag: 'uas1', cseq, maxForwards: mf, headers: [`Route: ${rr}`] });
    caller.send(bye(0, 2));
    expect((await caller.waitFor(isFinal('BYE', callId))).msg.status).toBe(483);
    expect(uas.all(isRequest('BYE'))).toHaveLength(0);
    // the callee's BYE (its From tag is the caller's To tag) is forwarded too
    uas.send(
      sipRequest({ method: 'BYE', uri: `sip:raw@127.0.0.1:${caller.port}`, viaPort: uas.port, callId, fromTag: 'uas1', toTag: 'c1', cseq: 9, fromUri: 'sip:callee@127.0.0.1', toUri: 'sip:svc@127.0.0.1', headers: [`Route: ${rr}`] }),
      { port },
    );
    const fwd = await caller.waitFor(isRequest('BYE', callId));
    expect(fwd.msg.getHeader('max-forwards')).toBe('69');
    await uas.waitFor(isResponse(200, 'BYE', callId));
    caller.send(bye(70, 3));
    const atUas = await uas.waitFor(isRequest('BYE', callId));
    expect(atUas.msg.getHeader('max-forwards')).toBe('69');
    expect(atUas.msg.hasHeader('route')).toBe(false);
  });
});

describe('RFC 3581 received cannot be forged (finding 2)', () => {
  it('overwrites a received parameter the client supplied, so the response goes to the real source', async () => {
    fx = await startEngine();
    const seen: string[] = [];
    fx.srf.use('options', (req, res) => {
      seen.push(req.get('Via'));
      res.send(200);
    });
    const client = await udpPeer(fx.port('udp'));
    // where a forged received would send the response: the same port on another loopback address
    const victim = await RawSipPeer.udp(undefined, '127.0.0.2', client.port).catch(() => undefined);
    if (victim) {
      peers.push(victim);
    }
    const callId = token('rcv-');
    client.send(sipRequest({ method: 'OPTIONS', uri: `sip:ping@127.0.0.1:${fx.port('udp')}`, viaPort: client.port, viaParams: ';rport;received=127.0.0.2', callId, fromTag: 'r1', cseq: 1 }));
    const res = await client.waitFor(isResponse(200, 'OPTIONS', callId));
    expect(res.msg.topVia?.params.received).toBe('127.0.0.1');
    expect(seen[0]).toMatch(/;rport=\d+;received=127\.0\.0\.1$/);
    expect(victim?.received ?? []).toHaveLength(0);
  });
});

describe('TCP connection slots cannot be exhausted (finding 3)', () => {
  function options(port: number, callId: string): string {
    return sipRequest({ method: 'OPTIONS', uri: `sip:ping@127.0.0.1:${port}`, transport: 'TCP', callId, fromTag: 'o1', cseq: 1 });
  }

  it('refuses inbound connections beyond the per-source cap', async () => {
    fx = await startEngine({ limits: { maxConnectionsPerSource: 3 } });
    const closed: number[] = [];
    const socks = await Promise.all(
      [0, 1, 2, 3, 4].map(
        (i) =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect(fx!.port('tcp'), '127.0.0.1', () => resolve(s));
            s.on('error', () => undefined);
            s.on('close', () => closed.push(i));
          }),
      ),
    );
    await expect.poll(() => closed.length).toBe(2);
    await sleep(200);
    expect(closed).toHaveLength(2);
    expect(fx.engine.stats().transport.connections).toBe(3);
    for (const s of socks) {
      s.destroy();
    }
    // slots come back when connections close
    await expect.poll(() => fx!.engine.stats().transport.connections).toBe(0);
    const again = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(again);
    fx.srf.use('options', (_req, res) => res.send(200));
    again.send(options(fx.port('tcp'), 'slot-back'));
    await again.waitFor(isResponse(200, 'OPTIONS'));
  });

  it('closes an inbound connection that sends no complete message within the deadline, or stalls inside a message', async () => {
    fx = await startEngine({ limits: { messageTimeoutMs: 400 } });
    fx.srf.use('options', (_req, res) => res.send(200));
    const silent = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(silent);
    const silentClosed = new Promise<number>((r) => silent.socket.once('close', () => r(Date.now())));
    const t0 = Date.now();
    silent.socket.write('\r\n\r\n'); // a ping is no message
    expect((await silentClosed) - t0).toBeLessThan(2000);

    const staller = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(staller);
    const stallerClosed = new Promise<void>((r) => staller.socket.once('close', () => r()));
    staller.send(options(fx.port('tcp'), 'stall-1'));
    await staller.waitFor(isResponse(200, 'OPTIONS'));
    staller.send(options(fx.port('tcp'), 'stall-2').slice(0, 60)); // and never the rest
    await stallerClosed;
    await expect.poll(() => fx!.engine.stats().transport.connections).toBe(0);
  });

  it('does not let keep-alive pings hold an idle connection open', async () => {
    fx = await startEngine({ limits: { idleTimeoutMs: 500 } });
    fx.srf.use('options', (_req, res) => res.send(200));
    const c = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(c);
    c.send(options(fx.port('tcp'), 'ping-idle'));
    await c.waitFor(isResponse(200, 'OPTIONS'));
    const ended = new Promise<void>((r) => c.socket.once('end', () => r()));
    const pinger = setInterval(() => c.socket.writable && c.socket.write('\r\n\r\n'), 100);
    try {
      await Promise.race([ended, sleep(4000).then(() => Promise.reject(new Error('the engine kept a ping-only connection open')))]);
    } finally {
      clearInterval(pinger);
    }
  });

  it('destroys an idle connection whose peer never completes the close (half-open), freeing its slot', async () => {
    fx = await startEngine({ limits: { idleTimeoutMs: 400 } });
    fx.srf.use('options', (_req, res) => res.send(200));
    const c = await RawSipPeer.tcpClient(fx.port('tcp'), { allowHalfOpen: true });
    peers.push(c);
    c.send(options(fx.port('tcp'), 'half-open'));
    await c.waitFor(isResponse(200, 'OPTIONS'));
    expect(fx.engine.stats().transport.connections).toBe(1);
    await expect.poll(() => fx!.engine.stats().transport.connections, { timeout: 4000 }).toBe(0);
  });
});

describe('a REGISTER cannot bind someone else\'s Contact to its connection (finding 4)', () => {
  /** srf.request(uri, {method}) through srf's untyped callback form; resolves with the error, if any. */
  function appRequest(srf: Srf, uri: string, method: string, headers: Record<string, string> = {}): Promise<unknown> {
    const r = srf as unknown as { request(uri: string, opts: object, cb: (err: unknown) => void): void };

    return new Promise((resolve) => r.request(uri, { method, headers: { From: 'sip:app@localhost', ...headers } }, (err) => resolve(err ?? undefined)));
  }

  /** The header with which the app names a binding's flow (registered-flows.ts). */
  function naming(b: { aor: string; contact: string; instance?: string; regId?: number }): Record<string, string> {
    return { [BINDING_FLOW_HEADER]: bindingFlowToken(b) };
  }

  async function register(c: RawSipPeer, port: number, contact: string, o: { aorUser?: string; expires?: number; callId?: string; cseq?: number } = {}): Promise<void> {
    const callId = o.callId ?? token('reg-');
    const cseq = o.cseq ?? 1;
    const to = o.aorUser ? `sip:${o.aorUser}@127.0.0.1` : undefined;
    c.send(sipRequest({ method: 'REGISTER', uri: `sip:127.0.0.1:${port}`, transport: 'TCP', viaPort: c.port, callId, fromTag: 'r1', cseq, contact, ...(to ? { toUri: to, fromUri: to } : {}), headers: [`Expires: ${o.expires ?? 600}`] }));
    const res = await c.waitFor((m) => isFinal('REGISTER', callId)(m) && m.msg.getHeader('cseq')?.startsWith(`${cseq} `) === true);
    expect(res.msg.status).toBe(200);
  }

  it('does not send the apps\' requests for a Contact naming another host:port over the registering connection', async () => {
    fx = await startEngine();
    fx.srf.use('register', (req, res) => res.send(200, { headers: { Contact: req.get('Contact'), Expires: '600' } }));
    const victim = await tcpServer();
    victim.onMessage((m) => m.msg.isRequest && victim.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'v1' })));
    const attacker = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(attacker);
    await register(attacker, fx.port('tcp'), `<sip:bob@127.0.0.1:${victim.port};transport=tcp>`);
    await appRequest(fx.srf, `sip:bob@127.0.0.1:${victim.port};transport=tcp`, 'OPTIONS');
    await victim.waitFor(isRequest('OPTIONS'));
    await sleep(200);
    expect(attacker.all(isRequest('OPTIONS'))).toHaveLength(0);
  });

  it('remembers nothing when the app\'s 2xx carries no Contact', async () => {
    fx = await startEngine();
    fx.srf.use('register', (_req, res) => res.send(200, { headers: { Expires: '600' } }));
    const client = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(client);
    // an RFC 5626 Contact, yet the registrar granted nothing
    await register(client, fx.port('tcp'), '<sip:carol@192.0.2.60:5060;transport=tcp;ob>');
    void appRequest(fx.srf, 'sip:carol@192.0.2.60:5060;transport=tcp', 'OPTIONS');
    await sleep(300);
    expect(client.all(isRequest('OPTIONS'))).toHaveLength(0);
  });

  it('reaches a client over its connection when the granted Contact is its own address or carries ;ob', async () => {
    fx = await startEngine();
    fx.srf.use('register', (req, res) => res.send(200, { headers: { Contact: req.get('Contact'), Expires: '600' } }));
    const own = await RawSipPeer.tcpClient(fx.port('tcp'));
    const nat = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(own, nat);
    for (const p of [own, nat]) {
      p.onMessage((m) => m.msg.isRequest && p.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'c1' })));
    }
    await register(own, fx.port('tcp'), `<sip:dave@127.0.0.1:${own.port};transport=tcp>`);
    await register(nat, fx.port('tcp'), '<sip:erin@192.0.2.50:5060;transport=tcp;ob>');
    // the app names the binding whose flow it wants (X-RB-Binding-Flow)
    expect(await appRequest(fx.srf, `sip:dave@127.0.0.1:${own.port};transport=tcp`, 'OPTIONS', naming({ aor: '@127.0.0.1', contact: `sip:dave@127.0.0.1:${own.port};transport=tcp` }))).toBeUndefined();
    expect(await appRequest(fx.srf, 'sip:erin@192.0.2.50:5060;transport=tcp;ob', 'OPTIONS', naming({ aor: '@127.0.0.1', contact: 'sip:erin@192.0.2.50:5060;transport=tcp;ob' }))).toBeUndefined();
    await own.waitFor(isRequest('OPTIONS'));
    await nat.waitFor(isRequest('OPTIONS'));
  });

  it('keeps a registered flow open on keep-alive pings alone (RFC 5626), while unregistered ones idle out', async () => {
    fx = await startEngine({ limits: { idleTimeoutMs: 400 } });
    fx.srf.use('register', (req, res) => res.send(200, { headers: { Contact: req.get('Contact'), Expires: '600' } }));
    const c = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(c);
    c.onMessage((m) => m.msg.isRequest && c.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'k1' })));
    await register(c, fx.port('tcp'), '<sip:frank@192.0.2.70:5060;transport=tcp;ob>');
    let ended = false;
    c.socket.once('end', () => (ended = true));
    const pinger = setInterval(() => c.socket.write('\r\n\r\n'), 100);
    try {
      await sleep(2000);
    } finally {
      clearInterval(pinger);
    }
    expect(ended).toBe(false);
    expect(await appRequest(fx.srf, 'sip:frank@192.0.2.70:5060;transport=tcp;ob', 'OPTIONS', naming({ aor: '@127.0.0.1', contact: 'sip:frank@192.0.2.70:5060;transport=tcp;ob' }))).toBeUndefined();
    await c.waitFor(isRequest('OPTIONS'));
  });

  // issue 12 review, finding a: a flow serves only requests that name the binding that made it
  it('never sends a request over a device\'s flow because its Request-URI matches a registered Contact: the binding must be named', async () => {
    fx = await startEngine();
    fx.srf.use('register', (req, res) => res.send(200, { headers: { Contact: req.get('Contact'), Expires: '600' } }));
    // the "carrier": where calls to sip:+15550001@127.0.0.1:<port> really go
    const carrier = await tcpServer();
    carrier.onMessage((m) => m.msg.isRequest && carrier.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'v1' })));
    const attacker = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(attacker);
    attacker.onMessage((m) => m.msg.isRequest && attacker.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'a1' })));
    const trap = `sip:+15550001@127.0.0.1:${carrier.port};transport=tcp`;
    // an agent registers the carrier's URI as its Contact, with RFC 5626 hints
    const contact = `${trap};ob`;
    await register(attacker, fx.port('tcp'), `<${contact}>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-00000000000a>";reg-id=1`, { aorUser: 'mallory' });
    const binding = { aor: 'mallory@127.0.0.1', instance: '<urn:uuid:00000000-0000-4000-8000-00000000000a>', regId: 1, contact };
    // 1. a call to the carrier (no binding named), to the trap URI and to the exact Contact
    expect(await appRequest(fx.srf, trap, 'OPTIONS')).toBeUndefined();
    expect(await appRequest(fx.srf, contact, 'OPTIONS')).toBeUndefined();
    // 2. naming the binding but another Request-URI, or another agent's binding with this URI
    expect(await appRequest(fx.srf, trap, 'OPTIONS', naming(binding))).toBeUndefined();
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming({ ...binding, aor: 'alice@127.0.0.1' }))).toBeUndefined();
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming({ ...binding, regId: 2 }))).toBeUndefined();
    await sleep(200);
    expect(carrier.all(isRequest('OPTIONS'))).toHaveLength(5);
    expect(attacker.all(isRequest('OPTIONS'))).toHaveLength(0);
    // the header never leaves the engine
    expect(carrier.all((m) => m.msg.getHeader(BINDING_FLOW_HEADER.toLowerCase()) !== undefined)).toHaveLength(0);
    // 3. the request that names this binding, to its Contact: over its flow
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming(binding))).toBeUndefined();
    const got = await attacker.waitFor(isRequest('OPTIONS'));
    expect(got.msg.getHeader(BINDING_FLOW_HEADER.toLowerCase())).toBeUndefined();
    expect(carrier.all(isRequest('OPTIONS'))).toHaveLength(5);
  });

  it('ends a binding\'s flow with the binding (a 2xx that no longer lists it) and with its connection', async () => {
    fx = await startEngine();
    fx.srf.use('register', (req, res) => {
      const expires = req.get('Expires');
      res.send(200, { headers: expires === '0' ? {} : { Contact: req.get('Contact'), Expires: '600' } });
    });
    const elsewhere = await tcpServer();
    elsewhere.onMessage((m) => m.msg.isRequest && elsewhere.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'e1' })));
    const contact = `sip:gina@127.0.0.1:${elsewhere.port};transport=tcp;ob`;
    const b = { aor: 'gina@127.0.0.1', contact };
    const dev = await RawSipPeer.tcpClient(fx.port('tcp'));
    peers.push(dev);
    dev.onMessage((m) => m.msg.isRequest && dev.reply(m, sipResponse(m.msg, 200, 'OK', { toTag: 'd1' })));
    const callId = token('reg-');
    await register(dev, fx.port('tcp'), `<${contact}>`, { aorUser: 'gina', callId, cseq: 1 });
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming(b))).toBeUndefined();
    await dev.waitFor(isRequest('OPTIONS'));
    // un-REGISTER: the 2xx lists no binding; the flow is gone, the request is routed as usual
    await register(dev, fx.port('tcp'), `<${contact}>`, { aorUser: 'gina', callId, cseq: 2, expires: 0 });
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming(b))).toBeUndefined();
    await elsewhere.waitFor(isRequest('OPTIONS'));
    expect(dev.all(isRequest('OPTIONS'))).toHaveLength(1);
    // registered again, then the connection closes: routed as usual again
    await register(dev, fx.port('tcp'), `<${contact}>`, { aorUser: 'gina', callId, cseq: 3 });
    dev.close();
    await sleep(200);
    expect(await appRequest(fx.srf, contact, 'OPTIONS', naming(b))).toBeUndefined();
    await expect.poll(() => elsewhere.all(isRequest('OPTIONS')).length).toBe(2);
    expect(dev.all(isRequest('OPTIONS'))).toHaveLength(1);
  });
});

describe('tags that could break control-protocol leaders (finding 10)', () => {
  it('answers 400 to a request whose From or To tag is not a token, without bothering the app', async () => {
    fx = await startEngine();
    const invites: string[] = [];
    fx.srf.invite((req, res) => {
      invites.push(req.get('From'));
      res.send(486);
    });
    const c = await udpPeer(fx.port('udp'));
    for (const [from, to, reason] of [
      ['tag="x|y"', '', 'Bad From'],
      ['tag=ok1', ';tag="a|b"', 'Bad To'],
    ] as const) {
      const callId = token('tag-');
      const text = sipRequest({ method: 'INVITE', uri: `sip:svc@127.0.0.1:${fx.port('udp')}`, viaPort: c.port, callId, fromTag: 'PLACEHOLDER', cseq: 1 })
        .replace(';tag=PLACEHOLDER', `;${from}`)
        .replace(/^(To: [^\r]*)/m, `$1${to}`);
      c.send(text);
      const res = await c.waitFor(isFinal('INVITE', callId));
      expect(res.msg.status).toBe(400);
      expect(res.msg.reason).toBe(reason);
    }
    expect(invites).toHaveLength(0);
  });
});

describe('the control port does not keep unauthenticated connections (finding 14)', () => {
  it('closes a connection that does not authenticate within the deadline', async () => {
    fx = await startEngine({ control: { authTimeoutMs: 300 } });
    const c = await rawControlClient(fx.engine.control.port);
    const t0 = Date.now();
    await c.closed;
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('closes a connection that announces a large frame before authenticating', async () => {
    fx = await startEngine();
    const c = await rawControlClient(fx.engine.control.port);
    c.socket.write(`1000000#${'x'.repeat(100)}`);
    const t0 = Date.now();
    await c.closed;
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('limits connections per source address (srf\'s own connection included)', async () => {
    fx = await startEngine({ control: { maxConnectionsPerSource: 4 } });
    const clients = await Promise.all([0, 1, 2, 3].map(() => rawControlClient(fx!.engine.control.port)));
    let closedCount = 0;
    for (const c of clients) {
      void c.closed.then(() => closedCount++);
    }
    await expect.poll(() => closedCount).toBe(1);
    await sleep(100);
    expect(closedCount).toBe(1);
    for (const c of clients) {
      c.socket.destroy();
    }
  });

  it('refuses even the right secret from an address after too many wrong ones', async () => {
    fx = await startEngine({ control: { maxAuthFailures: 3 } });
    for (let i = 0; i < 3; i++) {
      const bad = await rawControlClient(fx.engine.control.port);
      bad.send(`m${i}|authenticate|wrong-${i}|`);
      expect(splitPayload(await bad.next()).tokens.slice(1, 5)).toEqual(['response', `m${i}`, 'NO', 'incorrect secret']);
      await bad.closed;
    }
    const good = await rawControlClient(fx.engine.control.port);
    good.send(`m9|authenticate|${fx.engine.control.secret}|`);
    const reply = await Promise.race([good.next(1500).then((f) => splitPayload(f).tokens[3]), good.closed.then(() => 'closed')]);
    expect(reply).not.toBe('OK');
    await good.closed;
  });
});
