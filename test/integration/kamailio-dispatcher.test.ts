/**
 * The Kamailio dispatcher of docker/kamailio/kamailio.cfg in front of gateway nodes, everything
 * real and on loopback: Debian's kamailio (test/helpers/kamailio.ts), sipp as the trunk, and as
 * the nodes small SIP user agents on UDP/TCP sockets of their own (`SipNode` below) whose answers
 * to OPTIONS and INVITE the tests switch at run time; besides them an srf app on our embedded SIP
 * engine (a node calling a trunk) and two real ringbridge gateways.
 *
 * Each node listens on an address of its own (127.0.0.2, 127.0.0.3, ...), as nodes on separate
 * hosts would: the cfg recognises a node by its IP address, and the trunk (sipp) is on 127.0.0.1.
 *
 * What is checked: INVITEs spread over the nodes; ACK and BYE reach the node that answered,
 * through Kamailio (Record-Route) in both directions; a node answering OPTIONS with 503 leaves the
 * rotation and comes back on 200; an INVITE refused with 503 is retried on the other node, and the
 * refusing node is taken out at once; 503 to the caller when every node refuses; a node that is
 * down is skipped; a 408 (the node's after ringing, or Kamailio's own on a ringing branch) goes
 * back to the caller and is not retried; CANCEL; a node over TCP; calls from a node to a trunk;
 * that Kamailio relays for nobody else; that a trunk's request reaches the node with exactly one
 * X-RB-Source, Kamailio's, naming the trunk's address; and real gateways behind it.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startCallGateway } from '../helpers/calls.js';
import { sdp, startEngine } from '../helpers/engine.js';
import { hasKamailio, type KamailioNode, type KamailioOptions, type KamailioProcess, nodeUri, startKamailio } from '../helpers/kamailio.js';
import { isResponse, RawSipPeer, sipRequest } from '../helpers/raw-sip.js';
import { runSipp, sipHeader, sipHeaders, startSipp, type SippResult } from '../helpers/sipp.js';
import { parseMessage, parseNameAddr, type SipMessage } from '../../src/sip/engine/message.js';
import { StreamFramer } from '../../src/sip/engine/transport/framer.js';

const runnable = hasKamailio();
if (!runnable) {
  console.warn('[kamailio-dispatcher] skipped: kamailio/kamcmd are not installed (Debian package kamailio; npm test installs it)');
}

// -------------------------------------------------------------------------------------------------
// A gateway node stand-in
// -------------------------------------------------------------------------------------------------

/** A request as a node received it. */
interface Seen {
  method: string;
  callId: string;
  uri: string;
  /** Where it came from, `address:port`. */
  source: string;
  transport: 'udp' | 'tcp';
  /** Top Via. */
  via: string;
  recordRoute: string[];
  /** X-RB-Source header values (the trunk's address as Kamailio saw it). */
  rbSource: string[];
}

type Flow = { kind: 'udp'; address: string; port: number } | { kind: 'tcp'; conn: net.Socket };

interface NodeCall {
  invite: SipMessage;
  flow: Flow;
  toTag: string;
  /** The last final response, resent over UDP until the ACK. */
  final?: string;
  acked: boolean;
  timers: NodeJS.Timeout[];
}

function tag(): string {
  return randomBytes(6).toString('hex');
}

/**
 * A SIP user agent standing in for a gateway node: UDP and TCP on one port of its own address.
 * It answers OPTIONS with `optionsStatus`; INVITEs with 100 and then 200 (SDP; Record-Route
 * copied, RFC 3261 §12.1.1), 180 and nothing more (`'ring'`), or a refusal (after 180 and
 * `ringMs` of ringing when that is set); BYE and CANCEL as a UAS does; and can hang up itself. It
 * records every request it gets.
 */
class SipNode {
  optionsStatus = 200;
  inviteAnswer: number | 'ring' = 200;
  /** With a refusal as inviteAnswer: send 180 first and the refusal this long after it (ms). */
  ringMs?: number;
  /** Hang up this long after the ACK (ms); undefined: wait for the caller's BYE. */
  hangupAfterMs?: number;
  readonly requests: Seen[] = [];
  /** Call-IDs this node answered with 200. */
  readonly answered: string[] = [];
  /** Responses to the BYEs this node sent. */
  readonly byeAnswers: { callId: string; status: number }[] = [];
  readonly #calls = new Map<string, NodeCall>();
  readonly #conns = new Set<net.Socket>();
  #closed = false;

  private constructor(
    readonly name: string,
    readonly address: string,
    readonly port: number,
    readonly transport: 'udp' | 'tcp',
    private readonly udp: dgram.Socket,
    private readonly tcp: net.Server,
  ) {
    udp.on('message', (data, rinfo) => this.#onData(data, { kind: 'udp', address: rinfo.address, port: rinfo.port }));
    tcp.on('connection', (conn) => {
      this.#conns.add(conn);
      conn.on('error', () => undefined);
      conn.on('close', () => this.#conns.delete(conn));
      const framer = new StreamFramer({ maxHeaderBytes: 65535, maxMessageBytes: 1 << 20 });
      conn.on('data', (chunk: Buffer) => {
        for (const ev of framer.push(chunk)) {
          if (ev.kind === 'message') {
            this.#onData(ev.data, { kind: 'tcp', conn });
          }
        }
      });
    });
  }

  /** Binds UDP and TCP on one free port of `address`; the dispatcher reaches it over `transport`. */
  static async start(name: string, address: string, transport: 'udp' | 'tcp' = 'udp'): Promise<SipNode> {
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(0, address, () => resolve());
      });
      const port = udp.address().port;
      const tcp = net.createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(port, address, () => resolve());
        });
      } catch (err) {
        udp.close();
        if (attempt < 5) {
          continue;
        }
        throw err;
      }

      return new SipNode(name, address, port, transport, udp, tcp);
    }
  }

  /** As the dispatcher list names it. */
  get node(): KamailioNode {
    return { host: this.address, port: this.port, transport: this.transport };
  }

  /** Requests of one method received. */
  got(method: string): Seen[] {
    return this.requests.filter((r) => r.method === method);
  }

  /** Call-IDs of the INVITEs received. */
  inviteCallIds(): string[] {
    return this.got('INVITE').map((r) => r.callId);
  }

  summary(): string {
    const count = (m: string) => this.got(m).length;

    return `node ${this.name} ${nodeUri(this.node)}: INVITE ${count('INVITE')}, answered ${this.answered.length}, ACK ${count('ACK')}, BYE ${count('BYE')}, CANCEL ${count('CANCEL')}, OPTIONS ${count('OPTIONS')} (answering ${this.optionsStatus})`;
  }

  /** Closes its sockets: the node is down (its port closed). */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    for (const c of this.#calls.values()) {
      c.timers.forEach(clearTimeout);
    }
    for (const conn of this.#conns) {
      conn.destroy();
    }
    await new Promise<void>((r) => this.tcp.close(() => r()));
    await new Promise<void>((r) => this.udp.close(() => r()));
  }

  #send(flow: Flow, text: string): void {
    if (this.#closed) {
      return;
    }
    if (flow.kind === 'udp') {
      this.udp.send(Buffer.from(text), flow.port, flow.address);
    } else {
      flow.conn.write(text);
    }
  }

  #onData(data: Buffer, flow: Flow): void {
    let msg: SipMessage;
    try {
      msg = parseMessage(data, { datagram: flow.kind === 'udp' });
    } catch {
      return;
    }
    if (!msg.isRequest) {
      if (msg.cseq?.method === 'BYE') {
        this.byeAnswers.push({ callId: msg.callId, status: msg.status });
      }

      return;
    }
    const source = flow.kind === 'udp' ? `${flow.address}:${flow.port}` : `${flow.conn.remoteAddress ?? ''}:${flow.conn.remotePort ?? 0}`;
    this.requests.push({
      method: msg.method,
      callId: msg.callId,
      uri: msg.uri,
      source,
      transport: flow.kind,
      via: msg.getHeaderValues('via')[0] ?? '',
      recordRoute: msg.getHeaderValues('record-route'),
      rbSource: msg.getHeaders('x-rb-source'),
    });
    const call = this.#calls.get(msg.callId);
    switch (msg.method) {
      case 'OPTIONS':
        this.#send(flow, this.#response(msg, this.optionsStatus, this.optionsStatus === 200 ? 'OK' : 'Service Unavailable', { toTag: tag() }));
        break;
      case 'INVITE':
        if (call) {
          // a retransmission: the last response again
          if (call.final) {
            this.#send(flow, call.final);
          }
          break;
        }
        this.#invite(msg, flow);
        break;
      case 'ACK':
        if (call) {
          call.acked = true;
          call.timers.forEach(clearTimeout);
          call.timers = [];
          if (this.answered.includes(msg.callId) && this.hangupAfterMs !== undefined) {
            call.timers.push(setTimeout(() => this.#hangup(call), this.hangupAfterMs));
          }
        }
        break;
      case 'BYE':
        this.#send(flow, this.#response(msg, 200, 'OK'));
        if (call) {
          call.timers.forEach(clearTimeout);
        }
        break;
      case 'CANCEL':
        this.#send(flow, this.#response(msg, call ? 200 : 481, call ? 'OK' : 'Call/Transaction Does Not Exist', { toTag: call?.toTag }));
        if (call && !call.final) {
          this.#final(call, this.#response(call.invite, 487, 'Request Terminated', { toTag: call.toTag }));
        }
        break;
      default:
        this.#send(flow, this.#response(msg, 501, 'Not Implemented', { toTag: tag() }));
    }
  }

  #invite(invite: SipMessage, flow: Flow): void {
    const call: NodeCall = { invite, flow, toTag: tag(), acked: false, timers: [] };
    this.#calls.set(invite.callId, call);
    this.#send(flow, this.#response(invite, 100, 'Trying'));
    const answer = this.inviteAnswer;
    if (answer === 'ring') {
      this.#send(flow, this.#response(invite, 180, 'Ringing', { toTag: call.toTag, dialog: true }));

      return;
    }
    if (answer === 200) {
      this.answered.push(invite.callId);
      this.#final(call, this.#response(invite, 200, 'OK', { toTag: call.toTag, dialog: true, body: sdp(40000, this.address) }));

      return;
    }
    const refusal = this.#response(invite, answer, ({ 408: 'Request Timeout', 503: 'Service Unavailable' } as Record<number, string>)[answer] ?? 'Refused', { toTag: call.toTag });
    if (this.ringMs !== undefined) {
      this.#send(flow, this.#response(invite, 180, 'Ringing', { toTag: call.toTag, dialog: true }));
      call.timers.push(setTimeout(() => call.final === undefined && this.#final(call, refusal), this.ringMs));

      return;
    }
    this.#final(call, refusal);
  }

  /** Sends a final response to an INVITE, resent over UDP (500 ms, doubling) until the ACK. */
  #final(call: NodeCall, text: string): void {
    call.final = text;
    this.#send(call.flow, text);
    if (call.flow.kind === 'udp') {
      let wait = 500;
      const again = () => {
        if (call.acked || wait > 4000) {
          return;
        }
        this.#send(call.flow, text);
        wait *= 2;
        call.timers.push(setTimeout(again, wait));
      };
      call.timers.push(setTimeout(again, wait));
    }
  }

  /** BYE for an answered call: to the caller's Contact, along the route set (the Record-Route as received). */
  #hangup(call: NodeCall): void {
    const inv = call.invite;
    const target = parseNameAddr(inv.getHeader('contact') ?? '')?.uri ?? inv.uri;
    const lines = [
      `BYE ${target} SIP/2.0`,
      `Via: SIP/2.0/${this.transport.toUpperCase()} ${this.address}:${this.port};branch=z9hG4bK${tag()};rport`,
      'Max-Forwards: 70',
      ...inv.getHeaderValues('record-route').map((rr) => `Route: ${rr}`),
      `From: ${inv.getHeader('to')!};tag=${call.toTag}`,
      `To: ${inv.getHeader('from')!}`,
      `Call-ID: ${inv.callId}`,
      'CSeq: 1 BYE',
      'Content-Length: 0',
      '',
      '',
    ];
    this.#send(call.flow, lines.join('\r\n'));
  }

  #response(req: SipMessage, status: number, reason: string, o: { toTag?: string; dialog?: boolean; body?: string } = {}): string {
    const body = o.body ?? '';
    const lines = [`SIP/2.0 ${status} ${reason}`];
    for (const v of req.getHeaders('via')) {
      lines.push(`Via: ${v}`);
    }
    if (o.dialog) {
      for (const rr of req.getHeaders('record-route')) {
        lines.push(`Record-Route: ${rr}`);
      }
    }
    const to = req.getHeader('to')!;
    lines.push(`From: ${req.getHeader('from')!}`, `To: ${to}${o.toTag && !req.to?.params.tag ? `;tag=${o.toTag}` : ''}`, `Call-ID: ${req.callId}`, `CSeq: ${req.getHeader('cseq')!}`);
    if (o.dialog) {
      lines.push(`Contact: <sip:${this.name}@${this.address}:${this.port}${this.transport === 'tcp' ? ';transport=tcp' : ''}>`);
    }
    if (body) {
      lines.push('Content-Type: application/sdp');
    }
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`, '', body);

    return lines.join('\r\n');
  }
}

// -------------------------------------------------------------------------------------------------
// Test plumbing
// -------------------------------------------------------------------------------------------------

let nodes: SipNode[] = [];
let kam: KamailioProcess | undefined;
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  const k = kam;
  const ns = nodes;
  kam = undefined;
  nodes = [];
  await k?.stop();
  await Promise.all(ns.map((n) => n.close()));
  for (const c of cleanups.splice(0).reverse()) {
    await c();
  }
});

/** Starts nodes A (127.0.0.2) and B (127.0.0.3) and a kamailio in front of them. */
async function cluster(
  opts: Omit<KamailioOptions, 'nodes'> & { transportB?: 'udp' | 'tcp'; awaitProbes?: boolean } = {},
): Promise<{ a: SipNode; b: SipNode; k: KamailioProcess }> {
  const a = await SipNode.start('a', '127.0.0.2');
  const b = await SipNode.start('b', '127.0.0.3', opts.transportB ?? 'udp');
  nodes.push(a, b);
  kam = await startKamailio({ ...opts, nodes: [a.node, b.node] });
  // Both start active. By default wait for a first probe of each, so that probing is known to work.
  if (opts.awaitProbes !== false) {
    await waitUntil(() => a.got('OPTIONS').length > 0 && b.got('OPTIONS').length > 0, 10_000, 'the first OPTIONS probe of each node');
  }

  return { a, b, k: kam };
}

async function waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const started = Date.now();
  while (!pred()) {
    if (Date.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${describeAll()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `calls` calls from sipp (the trunk, on 127.0.0.1) through kamailio; by default INVITE, ACK, pause, BYE. */
function call(calls: number, scenario = 'uac-invite-bye', extra: { keys?: Record<string, string>; extraArgs?: string[]; target?: string } = {}): Promise<SippResult> {
  return runSipp({ scenario, target: extra.target ?? kam!.sipTarget, calls, rate: 5, keys: { hold_ms: '100', ...extra.keys }, extraArgs: extra.extraArgs, timeoutMs: 30_000 });
}

/** Diagnostics for assertion messages: sipp's run, the nodes' counts, kamailio's log. */
function describeAll(r?: SippResult): string {
  return [r?.describe() ?? '', ...nodes.map((n) => n.summary()), kam ? `kamailio log (tail):\n${kam.log().split('\n').slice(-25).join('\n')}` : ''].join('\n');
}

function requestLine(msg: string): string {
  return msg.split('\r\n')[0] ?? '';
}

// -------------------------------------------------------------------------------------------------
// The tests
// -------------------------------------------------------------------------------------------------

describe.skipIf(!runnable)('Kamailio dispatcher (docker/kamailio/kamailio.cfg) in front of gateway nodes', () => {
  it('spreads INVITEs over both nodes; ACK and BYE go through Kamailio to the node that answered', async () => {
    const { a, b, k } = await cluster();
    const r = await call(6);
    const info = describeAll(r);
    // sipp's own address, as its INVITEs' Via names it (sipp sends from the port it puts there)
    const sippPort = /^SIP\/2\.0\/UDP 127\.0\.0\.1:(\d+)/.exec(sipHeader(r.sent('INVITE')[0] ?? '', 'Via') ?? '')?.[1];
    expect(sippPort, info).toBeDefined();
    expect(r.exitCode, info).toBe(0);
    expect(r.successfulCalls, info).toBe(6);
    // every call reached exactly one node, and both took calls (round-robin: 3 each while both are active)
    expect(a.got('INVITE').length + b.got('INVITE').length, info).toBe(6);
    expect(a.got('INVITE').length, info).toBeGreaterThanOrEqual(2);
    expect(b.got('INVITE').length, info).toBeGreaterThanOrEqual(2);
    expect(new Set([...a.inviteCallIds(), ...b.inviteCallIds()]).size).toBe(6);
    for (const [n, other] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const inv of n.got('INVITE')) {
        // from Kamailio, which record-routed it and named the trunk (sipp) in X-RB-Source
        expect(inv.source, info).toBe(k.sipTarget);
        expect(inv.recordRoute, info).toEqual([`<sip:${k.sipTarget};lr>`]);
        expect(inv.rbSource, info).toEqual([`127.0.0.1:${sippPort};transport=udp`]);
        // its ACK and BYE came here too, from Kamailio, loose-routed to this node's Contact
        for (const method of ['ACK', 'BYE']) {
          const got = n.got(method).filter((x) => x.callId === inv.callId);
          expect(got, `${method} of ${inv.callId}\n${info}`).toHaveLength(1);
          expect(got[0]!.source, info).toBe(k.sipTarget);
          expect(got[0]!.via, info).toContain(k.sipTarget);
          expect(got[0]!.uri, info).toBe(`sip:${n.name}@${n.address}:${n.port}`);
          expect(other.got(method).filter((x) => x.callId === inv.callId), info).toHaveLength(0);
        }
      }
    }
    // The trunk's side: the 200 carries Kamailio's Record-Route; ACK and BYE went to Kamailio
    // with a Route naming it and the answering node's Contact as Request-URI.
    for (const ok of r.received(200, 'INVITE')) {
      expect(sipHeaders(ok, 'Record-Route'), ok).toEqual([`<sip:${k.sipTarget};lr>`]);
    }
    for (const req of [...r.sent('ACK'), ...r.sent('BYE')]) {
      expect(sipHeader(req, 'Route'), req).toBe(`<sip:${k.sipTarget};lr>`);
      expect(requestLine(req), req).toMatch(/^(ACK|BYE) sip:[ab]@127\.0\.0\.[23]:\d+ SIP\/2\.0$/);
    }
    expect(r.received(200, 'BYE')).toHaveLength(6);
  });

  it('routes a BYE from the node that answered back to the trunk through Kamailio', async () => {
    const { a, b, k } = await cluster();
    a.hangupAfterMs = 200;
    b.hangupAfterMs = 200;
    const r = await call(2, 'uac-invite-wait-bye');
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    const byes = r.received('BYE');
    expect(byes, info).toHaveLength(2);
    for (const bye of byes) {
      const vias = sipHeaders(bye, 'Via').flatMap((v) => v.split(',').map((s) => s.trim()));
      // top Via: Kamailio; then the node that sent it; Kamailio consumed its own Route entry
      expect(vias[0], bye).toContain(k.sipTarget);
      expect(vias[1], bye).toMatch(/127\.0\.0\.[23]:\d+/);
      expect(sipHeaders(bye, 'Route'), bye).toEqual([]);
      expect(requestLine(bye), bye).toMatch(/^BYE sip:sipp@127\.0\.0\.1:\d+/);
    }
    // the trunk's 200 to each BYE got back to the node
    await waitUntil(() => a.byeAnswers.length + b.byeAnswers.length === 2, 5000, 'the 200s to the nodes\' BYEs');
    expect([...a.byeAnswers, ...b.byeAnswers].map((x) => x.status)).toEqual([200, 200]);
  });

  it('takes a node that answers OPTIONS with 503 out of the rotation, and back in once it answers 200 again', async () => {
    const pingIntervalS = 1;
    const { a, b, k } = await cluster({ pingIntervalS });
    expect((await k.entry(a.node))?.flags).toBe('AP');
    expect((await k.entry(b.node))?.flags).toBe('AP');

    // B drains: 503 to OPTIONS
    b.optionsStatus = 503;
    const probesBefore = b.got('OPTIONS').length;
    const tookMs = await k.waitForState(b.node, 'inactive', 10_000);
    // within about two probe intervals (plus slack for a loaded machine)
    expect(tookMs, describeAll()).toBeLessThan(2 * pingIntervalS * 1000 + 2000);
    expect(b.got('OPTIONS').length).toBeGreaterThan(probesBefore);
    expect((await k.entry(b.node))?.flags).toBe('IP'); // inactive, still probed
    expect((await k.entry(a.node))?.state).toBe('active');

    const before1 = { a: a.got('INVITE').length, b: b.got('INVITE').length };
    const r1 = await call(4);
    expect(r1.exitCode, describeAll(r1)).toBe(0);
    expect(r1.successfulCalls).toBe(4);
    expect(b.got('INVITE').length - before1.b, describeAll(r1)).toBe(0);
    expect(a.got('INVITE').length - before1.a, describeAll(r1)).toBe(4);

    // B is back
    b.optionsStatus = 200;
    const backMs = await k.waitForState(b.node, 'active', 10_000);
    expect(backMs, describeAll()).toBeLessThan(2 * pingIntervalS * 1000 + 2000);
    const before2 = { a: a.got('INVITE').length, b: b.got('INVITE').length };
    const r2 = await call(4);
    expect(r2.exitCode, describeAll(r2)).toBe(0);
    expect(r2.successfulCalls).toBe(4);
    const newA = a.got('INVITE').length - before2.a;
    const newB = b.got('INVITE').length - before2.b;
    expect(newA + newB, describeAll(r2)).toBe(4);
    expect(newB, describeAll(r2)).toBeGreaterThanOrEqual(1);
    expect(newA, describeAll(r2)).toBeGreaterThanOrEqual(1);
  });

  it('retries an INVITE that a node refuses with 503 on the other node, and takes the refusing node out at once', async () => {
    // Probes only every 60 s: none happens during the test, so only the 503 to the INVITE can
    // take B out, and nothing brings it back.
    const { a, b, k } = await cluster({ pingIntervalS: 60, awaitProbes: false });
    b.inviteAnswer = 503;
    const r = await call(4);
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.successfulCalls, info).toBe(4);
    // the caller never saw the 503, only A's 200s
    expect(r.received(503), info).toHaveLength(0);
    for (const ok of r.received(200, 'INVITE')) {
      expect(sipHeader(ok, 'Contact'), info).toContain(`@${a.address}:${a.port}`);
    }
    expect(a.answered, info).toHaveLength(4);
    // Round-robin sent B exactly one of the first two INVITEs; its 503 took it out, so it got no other.
    expect(b.got('INVITE'), info).toHaveLength(1);
    const refused = b.got('INVITE')[0]!.callId;
    expect(a.inviteCallIds(), info).toContain(refused);
    // Kamailio absorbed B's 503 with an ACK (hop by hop)
    await waitUntil(() => b.got('ACK').length === 1, 5000, 'the ACK of the 503');
    expect(b.got('ACK')[0]!.callId).toBe(refused);
    const entryB = await k.entry(b.node);
    expect(entryB?.state, info).toBe('inactive');
    expect(entryB?.probing, info).toBe(true);
    expect((await k.entry(a.node))?.state).toBe('active');
  });

  it('answers the caller 503 when every node refuses, and keep-alive OPTIONS to itself with 503 then', async () => {
    const { a, b, k } = await cluster({ pingIntervalS: 60, awaitProbes: false });
    const peer = await RawSipPeer.udp({ address: k.address, port: k.port });
    cleanups.push(() => peer.close());
    const keepAlive = async (): Promise<number> => {
      const callId = tag();
      peer.send(sipRequest({ method: 'OPTIONS', uri: `sip:${k.sipTarget}`, callId, fromTag: tag(), cseq: 1, viaPort: peer.port }));

      return (await peer.waitFor((m) => m.msg.callId === callId && !m.msg.isRequest, 5000, 'the answer to a keep-alive')).msg.status;
    };
    expect(await keepAlive()).toBe(200);

    a.inviteAnswer = 503;
    b.inviteAnswer = 503;
    const r = await call(1, 'uac-expect-503');
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.received(503, 'INVITE'), info).toHaveLength(1);
    // each node was tried once, then both were out
    expect(a.got('INVITE'), info).toHaveLength(1);
    expect(b.got('INVITE'), info).toHaveLength(1);
    expect((await k.list()).map((e) => e.state)).toEqual(['inactive', 'inactive']);
    expect(await keepAlive()).toBe(503);
    // a further INVITE is refused by Kamailio itself, no node is bothered
    const r2 = await call(1, 'uac-expect-503');
    expect(r2.exitCode, describeAll(r2)).toBe(0);
    expect(a.got('INVITE').length + b.got('INVITE').length).toBe(2);
  });

  it('completes calls on the other node when a node is down (port closed), and marks it inactive', async () => {
    const { a, b, k } = await cluster({ pingIntervalS: 1 });
    await b.close();
    const r = await call(4);
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.successfulCalls, info).toBe(4);
    expect(a.answered, info).toHaveLength(4);
    for (const ok of r.received(200, 'INVITE')) {
      expect(sipHeader(ok, 'Contact'), info).toContain(`@${a.address}:${a.port}`);
    }
    await k.waitForState(b.node, 'inactive', 10_000);
    expect((await k.entry(a.node))?.state).toBe('active');
  });

  it('passes a 408 that a node sends after ringing back to the caller, without ringing the call on the other node', async () => {
    const { a, b, k } = await cluster({ pingIntervalS: 60, awaitProbes: false });
    for (const n of [a, b]) {
      n.inviteAnswer = 408;
      n.ringMs = 300;
    }
    const r = await call(1, 'uac-expect-408');
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.received(408, 'INVITE'), info).toHaveLength(1);
    expect(r.received(503), info).toHaveLength(0);
    // one node rang and gave up; the other never saw the call
    const rang = [a, b].filter((n) => n.got('INVITE').length > 0);
    expect(rang, info).toHaveLength(1);
    expect(rang[0]!.got('INVITE'), info).toHaveLength(1);
    await waitUntil(() => rang[0]!.got('ACK').length === 1, 5000, 'the ACK of the 408');
    // a node whose call rang out is healthy: still in the rotation
    expect((await k.list()).map((e) => e.state), info).toEqual(['active', 'active']);
  });

  it('passes its own 408 for a ringing branch that runs out of FR_INV_MS back to the caller, and cancels that branch', async () => {
    const { a, b, k } = await cluster({ pingIntervalS: 60, awaitProbes: false, defines: { FR_INV_MS: 1500 } });
    a.inviteAnswer = 'ring';
    b.inviteAnswer = 'ring';
    const started = Date.now();
    const r = await call(1, 'uac-expect-408');
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.received(408, 'INVITE'), info).toHaveLength(1);
    expect(r.received(503), info).toHaveLength(0);
    expect(Date.now() - started, info).toBeGreaterThanOrEqual(1400);
    const rang = [a, b].filter((n) => n.got('INVITE').length > 0);
    expect(rang, info).toHaveLength(1);
    expect(rang[0]!.got('INVITE'), info).toHaveLength(1);
    await waitUntil(() => rang[0]!.got('CANCEL').length === 1, 5000, 'the CANCEL of the timed-out branch');
    expect((await k.list()).map((e) => e.state), info).toEqual(['active', 'active']);
  });

  it('replaces a trunk\'s own X-RB-Source with the address the request came from', async () => {
    const { a, b, k } = await cluster();
    a.inviteAnswer = 486;
    b.inviteAnswer = 486;
    const trunk = await RawSipPeer.udp({ address: k.address, port: k.port });
    cleanups.push(() => trunk.close());
    const callId = tag();
    trunk.send(
      sipRequest({
        method: 'INVITE',
        uri: `sip:service@${k.sipTarget}`,
        callId,
        fromTag: tag(),
        cseq: 1,
        viaPort: trunk.port,
        viaParams: ';rport',
        // spoofed, in two spellings: both must go
        headers: ['X-RB-Source: 198.51.100.7:5060;transport=udp', 'x-rb-source: 10.0.0.1'],
        body: sdp(40006, '127.0.0.1'),
      }),
    );
    await trunk.waitFor(isResponse(486, 'INVITE', callId), 5000, 'the node\'s 486');
    const inv = [...a.got('INVITE'), ...b.got('INVITE')].find((x) => x.callId === callId);
    const info = describeAll();
    expect(inv, info).toBeDefined();
    expect(inv!.source, info).toBe(k.sipTarget);
    expect(inv!.rbSource, info).toEqual([`127.0.0.1:${trunk.port};transport=udp`]);
  });

  it('relays a CANCEL to the ringing node; the 487 ends the call without trying another node', async () => {
    const { a, b } = await cluster();
    a.inviteAnswer = 'ring';
    b.inviteAnswer = 'ring';
    const r = await call(1, 'uac-cancel');
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.received(487, 'INVITE'), info).toHaveLength(1);
    const rang = [a, b].filter((n) => n.got('INVITE').length > 0);
    expect(rang, info).toHaveLength(1);
    expect(rang[0]!.got('CANCEL'), info).toHaveLength(1);
    await waitUntil(() => rang[0]!.got('ACK').length === 1, 5000, 'the ACK of the 487');
  });

  it('reaches a node over TCP (Record-Route on both sides of the transport change)', async () => {
    const { a, b, k } = await cluster({ transportB: 'tcp' });
    expect(b.got('OPTIONS').every((o) => o.transport === 'tcp')).toBe(true);
    const r = await call(4);
    const info = describeAll(r);
    expect(r.exitCode, info).toBe(0);
    expect(r.successfulCalls, info).toBe(4);
    expect(a.got('INVITE').length, info).toBeGreaterThanOrEqual(1);
    expect(b.got('INVITE').length, info).toBeGreaterThanOrEqual(1);
    for (const m of ['INVITE', 'ACK', 'BYE']) {
      expect(
        b.got(m).every((x) => x.transport === 'tcp'),
        info,
      ).toBe(true);
      expect(b.got(m).length, `${m}\n${info}`).toBe(b.got('INVITE').length);
    }
    // UDP on the trunk's side, TCP on the node's: two Record-Routes (r2=on)
    const inv = b.got('INVITE')[0]!;
    expect(inv.recordRoute, info).toHaveLength(2);
    expect(inv.recordRoute[0], info).toMatch(new RegExp(`^<sip:${k.sipTarget.replace(/\./g, '\\.')};transport=tcp;r2=on;lr>$`));
  });

  it('relays a call from a node (our SIP engine, srf createUAC) to a trunk, and its BYE, through Kamailio', async () => {
    const node = await startEngine({ listenAddresses: ['127.0.0.4'] });
    cleanups.push(() => node.close());
    const trunk = startSipp({ scenario: 'uas-answer', timeoutMs: 20_000 });
    cleanups.push(() => trunk.stop());
    await trunk.ready;
    kam = await startKamailio({ nodes: [{ host: '127.0.0.4', port: node.port('udp') }] });
    const dlg = await node.srf.createUAC(`sip:trunk@127.0.0.1:${trunk.port}`, { proxy: `sip:${kam.sipTarget}`, localSdp: sdp(40002, '127.0.0.4') });
    await new Promise((r) => setTimeout(r, 200));
    dlg.destroy();
    const res = await trunk.result;
    const info = `${res.describe()}\n${describeAll()}`;
    expect(res.exitCode, info).toBe(0);
    const invite = res.received('INVITE')[0]!;
    // the Request-URI is the node's, untouched; Kamailio's Via on top and its Record-Route
    expect(requestLine(invite)).toBe(`INVITE sip:trunk@127.0.0.1:${trunk.port} SIP/2.0`);
    const vias = sipHeaders(invite, 'Via').flatMap((v) => v.split(',').map((s) => s.trim()));
    expect(vias[0], info).toContain(kam.sipTarget);
    expect(vias[1], info).toContain('127.0.0.4');
    expect(sipHeaders(invite, 'Record-Route'), info).toEqual([`<sip:${kam.sipTarget};lr>`]);
    expect(sipHeaders(invite, 'Route'), info).toEqual([]);
    // ACK and BYE from the node came through Kamailio as well
    for (const m of ['ACK', 'BYE']) {
      const got = res.received(m)[0]!;
      expect(sipHeaders(got, 'Via')[0], `${m}\n${info}`).toContain(kam.sipTarget);
    }
  });

  it('is no open relay: a trunk cannot choose the next hop, out of dialog or in a forged dialog', async () => {
    const { a, b, k } = await cluster();
    const victim = await RawSipPeer.udp(undefined, '127.0.0.9');
    cleanups.push(() => victim.close());

    // An INVITE whose Request-URI names the victim, sent to Kamailio (sipp -rsa): it goes to a node.
    const r = await call(1, 'uac-invite-bye', { target: `127.0.0.9:${victim.port}`, extraArgs: ['-rsa', k.sipTarget] });
    expect(r.exitCode, describeAll(r)).toBe(0);
    expect(a.got('INVITE').length + b.got('INVITE').length).toBe(1);
    const inv = [...a.got('INVITE'), ...b.got('INVITE')][0]!;
    expect(inv.uri).toBe(`sip:service@127.0.0.9:${victim.port}`);

    // Out of dialog with a preloaded Route naming the victim: the Route is dropped, a node gets it.
    const peer = await RawSipPeer.udp({ address: k.address, port: k.port });
    cleanups.push(() => peer.close());
    const callId1 = tag();
    peer.send(
      sipRequest({ method: 'OPTIONS', uri: `sip:someone@127.0.0.9:${victim.port}`, callId: callId1, fromTag: tag(), cseq: 1, viaPort: peer.port, headers: [`Route: <sip:127.0.0.9:${victim.port};lr>`] }),
    );
    await peer.waitFor(isResponse(200, 'OPTIONS', callId1), 5000, 'the node\'s 200 to the OPTIONS');
    expect([...a.got('OPTIONS'), ...b.got('OPTIONS')].some((o) => o.callId === callId1)).toBe(true);

    // A forged in-dialog BYE (To tag, Route to Kamailio) towards the victim: refused.
    const callId2 = tag();
    peer.send(
      sipRequest({
        method: 'BYE',
        uri: `sip:victim@127.0.0.9:${victim.port}`,
        callId: callId2,
        fromTag: tag(),
        toTag: tag(),
        cseq: 2,
        viaPort: peer.port,
        headers: [`Route: <sip:${k.sipTarget};lr>`],
      }),
    );
    const refused = await peer.waitFor((m) => m.msg.callId === callId2 && !m.msg.isRequest, 5000, 'the answer to the forged BYE');
    expect(refused.msg.status).toBe(403);

    // Max-Forwards 0: 483, not forwarded.
    const callId3 = tag();
    peer.send(sipRequest({ method: 'OPTIONS', uri: `sip:someone@${k.sipTarget}`, callId: callId3, fromTag: tag(), cseq: 1, viaPort: peer.port, maxForwards: 0 }));
    const hops = await peer.waitFor((m) => m.msg.callId === callId3 && !m.msg.isRequest, 5000, 'the answer to Max-Forwards 0');
    expect(hops.msg.status).toBe(483);

    await new Promise((r2) => setTimeout(r2, 300));
    expect(victim.received, 'the victim got nothing').toHaveLength(0);
    expect([...a.requests, ...b.requests].filter((x) => x.callId === callId3 || x.callId === callId2)).toHaveLength(0);
  });
});

describe.skipIf(!runnable)('Kamailio dispatcher in front of two real ringbridge gateways', () => {
  it('probes both gateways active through their OPTIONS answers, and passes a trunk INVITE to one of them', async () => {
    const gws = [];
    for (const address of ['127.0.0.5', '127.0.0.6']) {
      const gw = await startCallGateway({ sip: { listenAddresses: [address], publicAddress: address } });
      cleanups.push(() => gw.close());
      gws.push({ address, port: Number(gw.sipTarget.split(':').pop()) });
    }
    kam = await startKamailio({ nodes: gws.map((g) => ({ host: g.address, port: g.port })) });
    for (const g of gws) {
      await kam.waitForState({ host: g.address, port: g.port }, 'active', 5000);
    }
    // let at least one probe round pass, then both must still be active (a 2xx to OPTIONS)
    await new Promise((r) => setTimeout(r, 1500));
    expect((await kam.list()).map((e) => e.flags)).toEqual(['AP', 'AP']);
    // No route is configured for the called number: the gateway answers 404, and the caller gets it.
    const r = await call(1, 'uac-expect-404');
    expect(r.exitCode, describeAll(r)).toBe(0);
    expect(r.received(404, 'INVITE')).toHaveLength(1);
    expect((await kam.list()).map((e) => e.state)).toEqual(['active', 'active']);
  });
});

describe.skipIf(!runnable)('Kamailio dispatcher in front of our SIP engine answering calls', () => {
  // RFC 3261 §12.1.1: the engine copies the INVITE's Record-Route into its 2xx, so the trunk's
  // ACK and BYE come back through Kamailio.
  it('keeps Kamailio in the path of an answered call: the 200 carries its Record-Route, ACK and BYE reach the node', async () => {
    const node = await startEngine({ listenAddresses: ['127.0.0.7'] });
    cleanups.push(() => node.close());
    const byes: string[] = [];
    node.srf.invite((req, res) => {
      void node.srf.createUAS(req, res, { localSdp: sdp(40004, '127.0.0.7') }).then((dlg) => dlg.on('destroy', () => byes.push(req.get('Call-ID'))));
    });
    kam = await startKamailio({ nodes: [{ host: '127.0.0.7', port: node.port('udp') }] });
    await kam.waitForState({ host: '127.0.0.7', port: node.port('udp') }, 'active', 5000);
    const r = await call(1);
    expect(sipHeaders(r.received(200, 'INVITE')[0] ?? '', 'Record-Route'), r.describe()).toEqual([`<sip:${kam.sipTarget};lr>`]);
    expect(r.exitCode, describeAll(r)).toBe(0);
    expect(byes).toHaveLength(1);
  });
});
