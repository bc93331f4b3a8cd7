/**
 * The RFC 3261 §17 transaction layer (with RFC 6026's Accepted states), read as a list of RFC
 * requirements. The transport is the only fake: it records what was sent, when (fake clock) and to
 * which destination. Messages, timers and state machines are the real ones.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { parseMessage, SipMessage } from '../../src/sip/engine/message.js';
import { DEFAULT_TIMER_BASE, type TimerBase, timersFor } from '../../src/sip/engine/transaction/timers.js';
import {
  BRANCH_COOKIE,
  type ClientCallbacks,
  newBranch,
  type ServerTransaction,
  TransactionLayer,
  TransactionStateError,
  type TransactionUser,
  type TransportSender,
} from '../../src/sip/engine/transaction/transaction-layer.js';
import { type Destination, type Flow } from '../../src/sip/engine/transport/types.js';

// -------------------------------------------------------------------------------------------------
// Fixtures
// -------------------------------------------------------------------------------------------------

interface Sent {
  data: Buffer;
  msg: SipMessage;
  dest: Destination;
  /** Fake-clock time of the send, ms since the test started. */
  at: number;
}

/** The only fake: records every send; can be told to fail. */
class RecordingTransport implements TransportSender {
  readonly sent: Sent[] = [];
  /** When set, every send from now on rejects with it (after being recorded). */
  failWith: Error | undefined;

  send(data: Buffer, dest: Destination): Promise<Flow> {
    this.sent.push({ data, msg: parseMessage(data), dest, at: Date.now() });
    if (this.failWith) {
      return Promise.reject(this.failWith);
    }

    return Promise.resolve(dest.flow ?? flowTo(dest));
  }

  requests(method: string): Sent[] {
    return this.sent.filter((s) => s.msg.isRequest && s.msg.method === method);
  }

  responses(status?: number): Sent[] {
    return this.sent.filter((s) => !s.msg.isRequest && (status === undefined || s.msg.status === status));
  }
}

function flowTo(dest: Destination): Flow {
  return {
    protocol: dest.protocol,
    local: { address: '192.0.2.1', port: 5060 },
    remote: { address: dest.host, port: dest.port },
    connectionId: dest.protocol === 'udp' ? undefined : 'conn-out-1',
  };
}

/** The transaction user: records everything the layer hands up. */
class RecordingTu implements TransactionUser {
  readonly requests: { req: SipMessage; flow: Flow; txn: ServerTransaction | undefined }[] = [];
  readonly stray: SipMessage[] = [];
  readonly acksInAccepted: { ack: SipMessage; txn: ServerTransaction }[] = [];

  onRequest(req: SipMessage, flow: Flow, txn: ServerTransaction | undefined): void {
    this.requests.push({ req, flow, txn });
  }

  onStrayResponse(res: SipMessage): void {
    this.stray.push(res);
  }

  onAckInAccepted(ack: SipMessage, _flow: Flow, txn: ServerTransaction): void {
    this.acksInAccepted.push({ ack, txn });
  }

  /** The server transaction of the only request received so far. */
  get txn(): ServerTransaction {
    expect(this.requests).toHaveLength(1);
    const txn = this.requests[0]!.txn;
    expect(txn).toBeDefined();

    return txn!;
  }
}

interface RecordingCallbacks extends ClientCallbacks {
  responses: SipMessage[];
  timeouts: number;
  errors: Error[];
}

function callbacks(): RecordingCallbacks {
  const cb: RecordingCallbacks = {
    responses: [],
    timeouts: 0,
    errors: [],
    onResponse: (res) => cb.responses.push(res),
    onTimeout: () => cb.timeouts++,
    onTransportError: (err) => cb.errors.push(err),
  };

  return cb;
}

const UDP_DEST: Destination = { protocol: 'udp', host: '203.0.113.5', port: 5060 };
const TCP_DEST: Destination = { protocol: 'tcp', host: '203.0.113.5', port: 5060 };

/** Where requests to our server transactions come from (the transport stamped received/rport). */
const UDP_FLOW: Flow = { protocol: 'udp', local: { address: '192.0.2.1', port: 5060 }, remote: { address: '198.51.100.7', port: 5062 } };
const TCP_FLOW: Flow = {
  protocol: 'tcp',
  local: { address: '192.0.2.1', port: 5060 },
  remote: { address: '198.51.100.7', port: 40112 },
  connectionId: 'conn-in-1',
};

const CALL_ID = 'a84b4c76e66710@pc33.atlanta.example.com';
const REQUEST_URI = 'sip:bob@biloxi.example.com';

interface RequestOptions {
  method?: string;
  /** The top Via branch; null for none (an RFC 2543 peer). Default: a fresh newBranch(). */
  branch?: string | null;
  transport?: 'UDP' | 'TCP';
  sentBy?: string;
  /** Extra top-Via parameters, e.g. ';received=198.51.100.7;rport=5062'. */
  viaParams?: string;
  /** A second Via below the top one (as a proxy forwards). */
  lowerVia?: string;
  uri?: string;
  cseq?: number;
  fromTag?: string;
  toTag?: string;
  routes?: string[];
  body?: string;
}

/** A request as a UA would build it (RFC 3261 §8.1.1). */
function request(o: RequestOptions = {}): SipMessage {
  const method = o.method ?? 'INVITE';
  const branch = o.branch === undefined ? newBranch() : o.branch;
  const headers: [string, string][] = [
    ['Via', `SIP/2.0/${o.transport ?? 'UDP'} ${o.sentBy ?? 'pc33.atlanta.example.com:5060'}${branch === null ? '' : `;branch=${branch}`}${o.viaParams ?? ''}`],
  ];
  if (o.lowerVia) {
    headers.push(['Via', o.lowerVia]);
  }
  headers.push(['Max-Forwards', '70']);
  for (const r of o.routes ?? []) {
    headers.push(['Route', r]);
  }
  headers.push(
    ['From', `Alice <sip:alice@atlanta.example.com>;tag=${o.fromTag ?? '1928301774'}`],
    ['To', `Bob <sip:bob@biloxi.example.com>${o.toTag ? `;tag=${o.toTag}` : ''}`],
    ['Call-ID', CALL_ID],
    ['CSeq', `${o.cseq ?? 314159} ${method}`],
    ['Contact', '<sip:alice@pc33.atlanta.example.com>'],
  );
  if (o.body !== undefined) {
    headers.push(['Content-Type', 'application/sdp']);
  }

  return SipMessage.request(method, o.uri ?? REQUEST_URI, headers, o.body);
}

/** The same message as it would arrive from the network (serialised and parsed). */
function wire(msg: SipMessage): SipMessage {
  return parseMessage(msg.toBuffer(), { datagram: true });
}

/** A response to `req` as the far end would send it (RFC 3261 §8.2.6.2), off the wire. */
function responseTo(req: SipMessage, status: number, o: { toTag?: string | null; reason?: string; cseqMethod?: string } = {}): SipMessage {
  const headers: [string, string][] = req.getHeaders('via').map((v) => ['Via', v]);
  const to = req.getHeader('to')!;
  const toTag = o.toTag === undefined ? 'a6c85cf' : o.toTag;
  const cseq = req.cseq!;
  headers.push(
    ['From', req.getHeader('from')!],
    ['To', toTag === null || /;tag=/.test(to) ? to : `${to};tag=${toTag}`],
    ['Call-ID', req.callId],
    ['CSeq', `${cseq.seq} ${o.cseqMethod ?? cseq.method}`],
  );

  return wire(SipMessage.response(status, o.reason ?? 'Reason', headers));
}

/** A response our TU would hand to a server transaction (not parsed). */
function tuResponse(req: SipMessage, status: number, toTag = 'srv-tag-1'): SipMessage {
  const headers: [string, string][] = req.getHeaders('via').map((v) => ['Via', v]);
  const to = req.getHeader('to')!;
  headers.push(['From', req.getHeader('from')!], ['To', /;tag=/.test(to) || status === 100 ? to : `${to};tag=${toTag}`], ['Call-ID', req.callId], [
    'CSeq',
    req.getHeader('cseq')!,
  ]);

  return SipMessage.response(status, `Status ${status}`, headers);
}

/** The ACK a UAC sends for a non-2xx final response (same branch, To from the response). */
function ackFor(invite: SipMessage, final: SipMessage): SipMessage {
  const ack = invite.clone();
  ack.method = 'ACK';
  ack.body = Buffer.alloc(0);
  ack.removeHeader('content-type');
  ack.setHeader('To', final.getHeader('to')!);
  ack.setHeader('CSeq', `${invite.cseq!.seq} ACK`);

  return wire(ack);
}

/** Only what the layer needs; the logger stays silent. */
function makeLayer(timers: TimerBase = DEFAULT_TIMER_BASE): { layer: TransactionLayer; transport: RecordingTransport; tu: RecordingTu } {
  const transport = new RecordingTransport();
  const tu = new RecordingTu();
  const layer = new TransactionLayer({ transport, timers, tu, logger: createLogger({ level: 'silent' }) });

  return { layer, transport, tu };
}

/** Lets promise callbacks run (the transaction arms Timers A and E once the first send resolves). */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

/**
 * Timer bases every timing test runs with: the RFC 3261 §A defaults, and a non-default base that
 * proves T1, T2 and T4 are honoured. `a` lists the send times of Timer A (interval T1 doubling
 * without a cap, stopped by Timer B at 64·T1); `eg` those of Timers E and G (interval doubling up to
 * T2, stopped at 64·T1). Written out by hand from the RFC text, not computed by the code under test.
 */
const BASES = [
  {
    label: 'the RFC 3261 defaults (T1=500, T2=4000, T4=5000)',
    base: DEFAULT_TIMER_BASE,
    a: [0, 500, 1500, 3500, 7500, 15500, 31500],
    eg: [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500],
  },
  {
    label: 'a non-default base (T1=100, T2=1000, T4=2000)',
    base: { t1: 100, t2: 1000, t4: 2000 },
    a: [0, 100, 300, 700, 1500, 3100, 6300],
    eg: [0, 100, 300, 700, 1500, 2500, 3500, 4500, 5500],
  },
];

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(0);
});

afterEach(() => {
  vi.useRealTimers();
});

// -------------------------------------------------------------------------------------------------
// Timer values
// -------------------------------------------------------------------------------------------------

describe('timersFor() (RFC 3261 Table 4, RFC 6026 §8.4 and §8.7)', () => {
  it('derives every timer from T1, T2 and T4 for an unreliable transport', () => {
    expect(timersFor({ t1: 100, t2: 1000, t4: 2000 }, false)).toEqual({
      A: 100,
      B: 6400,
      D: 32_000,
      E: 100,
      F: 6400,
      G: 100,
      H: 6400,
      I: 2000,
      J: 6400,
      K: 2000,
      L: 6400,
      M: 6400,
      T2: 1000,
    });
  });

  it('sets the retransmission and absorption timers A, D, E, G, I, J and K to zero over a reliable transport', () => {
    const t = timersFor(DEFAULT_TIMER_BASE, true);
    expect([t.A, t.D, t.E, t.G, t.I, t.J, t.K]).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect([t.B, t.F, t.H, t.L, t.M]).toEqual([32_000, 32_000, 32_000, 32_000, 32_000]);
  });

  it('keeps Timer D at 64·T1 when that exceeds 32 s ("at least 32 seconds", RFC 3261 §17.1.1.2)', () => {
    expect(timersFor({ t1: 1000, t2: 4000, t4: 5000 }, false).D).toBe(64_000);
  });
});

// -------------------------------------------------------------------------------------------------
// INVITE client transaction
// -------------------------------------------------------------------------------------------------

describe('INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §8.4)', () => {
  describe.each(BASES)('Calling, over UDP, with $label', ({ base, a }) => {
    it('RFC 3261 §17.1.1.2: MUST retransmit the request at T1, 2·T1, 4·T1 … (Timer A, doubling without a cap) until Timer B', async () => {
      const { layer, transport } = makeLayer(base);
      const invite = request();
      const txn = layer.sendRequest(invite, UDP_DEST, callbacks());
      expect(txn.state).toBe('calling');
      await settle();
      await advance(64 * base.t1 - 1);
      const sends = transport.requests('INVITE');
      expect(sends.map((s) => s.at)).toEqual(a);
      for (const s of sends) {
        expect(s.data.equals(invite.toBuffer())).toBe(true);
        expect(s.dest).toMatchObject({ protocol: 'udp', host: UDP_DEST.host, port: UDP_DEST.port });
      }
    });

    it('RFC 3261 §17.1.1.2: when Timer B (64·T1) fires in Calling it MUST inform the TU of the timeout, exactly once, and send nothing more', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const txn = layer.sendRequest(request(), UDP_DEST, cb);
      await settle();
      await advance(64 * base.t1 - 1);
      expect(cb.timeouts).toBe(0);
      await advance(1);
      expect(cb.timeouts).toBe(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
      const sendsAtTimeout = transport.sent.length;
      await advance(20 * 64 * base.t1);
      expect(cb.timeouts).toBe(1);
      expect(cb.errors).toEqual([]);
      expect(transport.sent).toHaveLength(sendsAtTimeout);
    });

    it('RFC 3261 §17.1.1.2: a provisional response MUST move it to Proceeding, be passed to the TU, and stop Timer A (and Timer B)', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const invite = request();
      const txn = layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      await advance(base.t1 + 1); // one retransmission happened
      layer.receive(responseTo(invite, 180, { reason: 'Ringing' }), UDP_FLOW);
      expect(txn.state).toBe('proceeding');
      expect(cb.responses.map((r) => r.status)).toEqual([180]);
      await advance(10 * 64 * base.t1);
      expect(transport.requests('INVITE')).toHaveLength(2);
      expect(cb.timeouts).toBe(0);
      expect(txn.state).toBe('proceeding');
    });
  });

  describe('Proceeding', () => {
    it('RFC 3261 §17.1.1.2: further provisional responses MUST be passed to the TU', async () => {
      const { layer } = makeLayer();
      const cb = callbacks();
      const invite = request();
      layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 100, { toTag: null }), UDP_FLOW);
      layer.receive(responseTo(invite, 180), UDP_FLOW);
      layer.receive(responseTo(invite, 183), UDP_FLOW);
      expect(cb.responses.map((r) => r.status)).toEqual([100, 180, 183]);
    });
  });

  describe.each(BASES)('Accepted (RFC 6026 §8.4), with $label', ({ base }) => {
    it('RFC 6026 §8.4: a 2xx in Calling or Proceeding MUST move it to Accepted and be passed to the TU; the transaction MUST NOT send an ACK for it', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const invite = request();
      const txn = layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 200, { reason: 'OK' }), UDP_FLOW);
      expect(txn.state).toBe('accepted');
      expect(cb.responses.map((r) => r.status)).toEqual([200]);
      await advance(10 * base.t1);
      expect(transport.requests('INVITE')).toHaveLength(1); // Timer A stopped
      expect(transport.requests('ACK')).toHaveLength(0);
    });

    it('RFC 6026 §8.4: 2xx retransmissions and 2xx from other forks in Accepted MUST be passed to the TU', async () => {
      const { layer } = makeLayer(base);
      const cb = callbacks();
      const invite = request();
      layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 180), UDP_FLOW);
      const ok = responseTo(invite, 200, { toTag: 'fork-1' });
      layer.receive(ok, UDP_FLOW);
      layer.receive(responseTo(invite, 200, { toTag: 'fork-1' }), UDP_FLOW);
      layer.receive(responseTo(invite, 200, { toTag: 'fork-2' }), UDP_FLOW);
      expect(cb.responses.map((r) => `${r.status}/${r.to?.params.tag}`)).toEqual(['180/a6c85cf', '200/fork-1', '200/fork-1', '200/fork-2']);
    });

    it('RFC 6026 §8.4: Timer M (64·T1) MUST end the Accepted state; later 2xx are strays for the TU core', async () => {
      const { layer, tu } = makeLayer(base);
      const cb = callbacks();
      const invite = request();
      const txn = layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 200), UDP_FLOW);
      await advance(64 * base.t1 - 1);
      expect(txn.state).toBe('accepted');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
      layer.receive(responseTo(invite, 200), UDP_FLOW);
      expect(cb.responses).toHaveLength(1);
      expect(tu.stray.map((r) => r.status)).toEqual([200]);
      expect(cb.timeouts).toBe(0);
    });
  });

  describe('Completed (300–699), over UDP', () => {
    const routes = ['<sip:p1.example.com;lr>', '<sip:p2.example.com;lr>'];

    async function rejected(status = 486): Promise<{
      layer: TransactionLayer;
      transport: RecordingTransport;
      tu: RecordingTu;
      cb: RecordingCallbacks;
      invite: SipMessage;
      final: SipMessage;
      txn: ReturnType<TransactionLayer['sendRequest']>;
    }> {
      const { layer, transport, tu } = makeLayer();
      const cb = callbacks();
      const invite = request({ routes, lowerVia: 'SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKupstream1', body: 'v=0\r\n' });
      const txn = layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 180), UDP_FLOW);
      const final = responseTo(invite, status, { toTag: 'busy-tag' });
      layer.receive(final, UDP_FLOW);

      return { layer, transport, tu, cb, invite, final, txn };
    }

    it('RFC 3261 §17.1.1.2: a 300–699 response MUST move it to Completed, be passed to the TU and be acknowledged', async () => {
      const { cb, txn, transport } = await rejected();
      expect(txn.state).toBe('completed');
      expect(cb.responses.map((r) => r.status)).toEqual([180, 486]);
      expect(transport.requests('ACK')).toHaveLength(1);
    });

    it('RFC 3261 §17.1.1.3: the ACK MUST carry the Request-URI, Call-ID and From of the original request and the To of the response (with its tag)', async () => {
      const { transport, invite, final } = await rejected();
      const ack = transport.requests('ACK')[0]!.msg;
      expect(ack.uri).toBe(invite.uri);
      expect(ack.callId).toBe(invite.callId);
      expect(ack.getHeader('from')).toBe(invite.getHeader('from'));
      expect(ack.getHeader('to')).toBe(final.getHeader('to'));
      expect(ack.to?.params.tag).toBe('busy-tag');
    });

    it('RFC 3261 §17.1.1.3: the ACK MUST have the CSeq number of the request with method ACK, and a single Via equal to the top Via of the request', async () => {
      const { transport, invite } = await rejected();
      const ack = transport.requests('ACK')[0]!.msg;
      expect(ack.cseq).toEqual({ seq: 314159, method: 'ACK' });
      expect(ack.getHeaders('via')).toEqual([invite.getHeaders('via')[0]]);
      expect(ack.vias).toHaveLength(1);
      expect(ack.topVia?.params.branch).toBe(invite.topVia?.params.branch);
    });

    it('RFC 3261 §17.1.1.3: the Route header fields of the INVITE MUST appear in the ACK, in order; the ACK has no body', async () => {
      const { transport } = await rejected();
      const ack = transport.requests('ACK')[0]!.msg;
      expect(ack.getHeaders('route')).toEqual(routes);
      expect(ack.body.length).toBe(0);
      expect(ack.hasHeader('content-type')).toBe(false);
      expect(ack.contentLengthHeader).toBe(0);
    });

    it('RFC 3261 §17.1.1.3: the ACK MUST be sent to the same address, port and transport as the original request', async () => {
      const { transport } = await rejected();
      const [inv] = transport.requests('INVITE');
      const [ack] = transport.requests('ACK');
      expect(ack!.dest).toMatchObject({ protocol: inv!.dest.protocol, host: inv!.dest.host, port: inv!.dest.port });
    });

    it('RFC 3261 §17.1.1.3: the ACK keeps the top Via intact even when it carries a comma inside a quoted parameter', async () => {
      const { layer, transport } = makeLayer();
      const branch = newBranch();
      const invite = request({ branch, viaParams: ';x-note="a, b"', lowerVia: 'SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKupstream1' });
      layer.sendRequest(invite, UDP_DEST, callbacks());
      await settle();
      layer.receive(responseTo(invite, 503), UDP_FLOW);
      const ack = transport.requests('ACK')[0]!.msg;
      expect(ack.getHeaders('via')).toEqual([invite.getHeader('via')]);
      expect(ack.topVia?.params['x-note']).toBe('"a, b"');
    });

    it('RFC 3261 §17.1.1.2: each retransmission of the final response MUST cause the ACK to be re-sent, and MUST NOT be passed to the TU', async () => {
      const { layer, transport, cb, invite } = await rejected();
      layer.receive(responseTo(invite, 486, { toTag: 'busy-tag' }), UDP_FLOW);
      layer.receive(responseTo(invite, 486, { toTag: 'busy-tag' }), UDP_FLOW);
      const acks = transport.requests('ACK');
      expect(acks).toHaveLength(3);
      expect(acks[1]!.data.equals(acks[0]!.data)).toBe(true);
      expect(acks[2]!.data.equals(acks[0]!.data)).toBe(true);
      expect(cb.responses.map((r) => r.status)).toEqual([180, 486]);
    });

    it('RFC 3261 §17.1.1.2: Timer D (at least 32 s over UDP) keeps it in Completed, then it MUST move to Terminated', async () => {
      const { layer, txn, cb } = await rejected();
      await advance(32_000 - 1);
      expect(txn.state).toBe('completed');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
      expect(cb.timeouts).toBe(0);
    });

    it('RFC 3261 §17.1.1.2: Timer D is at least 32 s even when 64·T1 is shorter, and 64·T1 when longer', async () => {
      for (const [t1, d] of [
        [100, 32_000],
        [1000, 64_000],
      ] as const) {
        const { layer } = makeLayer({ t1, t2: 8 * t1, t4: 10 * t1 });
        const invite = request();
        const txn = layer.sendRequest(invite, UDP_DEST, callbacks());
        await settle();
        layer.receive(responseTo(invite, 404), UDP_FLOW);
        await advance(d - 1);
        expect(txn.state).toBe('completed');
        await advance(1);
        expect(txn.state).toBe('terminated');
      }
    });

    it('RFC 3261 §17.1.1.2: a final response in Calling (no provisional) is handled the same way', async () => {
      const { layer, transport } = makeLayer();
      const cb = callbacks();
      const invite = request();
      const txn = layer.sendRequest(invite, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(invite, 603), UDP_FLOW);
      expect(txn.state).toBe('completed');
      expect(transport.requests('ACK')).toHaveLength(1);
      await advance(60_000);
      expect(transport.requests('INVITE')).toHaveLength(1); // Timer A stopped
      expect(cb.timeouts).toBe(0); // Timer B stopped
    });
  });

  describe('over TCP (reliable)', () => {
    it('RFC 3261 §17.1.1.2: the request MUST NOT be retransmitted over a reliable transport (no Timer A)', async () => {
      const { layer, transport } = makeLayer();
      const cb = callbacks();
      layer.sendRequest(request({ transport: 'TCP' }), TCP_DEST, cb);
      await settle();
      await advance(32_000 - 1);
      expect(transport.requests('INVITE')).toHaveLength(1);
      await advance(1);
      expect(cb.timeouts).toBe(1); // Timer B runs over every transport
      await advance(100_000);
      expect(transport.sent).toHaveLength(1);
    });

    it('RFC 3261 §17.1.1.2: Timer D is zero over a reliable transport: Terminated right after the ACK', async () => {
      const { layer, transport } = makeLayer();
      const cb = callbacks();
      const invite = request({ transport: 'TCP' });
      const txn = layer.sendRequest(invite, TCP_DEST, cb);
      await settle();
      const flow = txn.flow!;
      expect(flow.connectionId).toBe('conn-out-1');
      layer.receive(responseTo(invite, 480), flow);
      expect(cb.responses.map((r) => r.status)).toEqual([480]);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
      const [ack] = transport.requests('ACK');
      expect(ack!.dest.flow).toEqual(flow); // over the same connection
    });

    it('RFC 6026 §8.4: Timer M (64·T1) applies over a reliable transport too', async () => {
      const { layer } = makeLayer();
      const invite = request({ transport: 'TCP' });
      const txn = layer.sendRequest(invite, TCP_DEST, callbacks());
      await settle();
      layer.receive(responseTo(invite, 200), txn.flow!);
      await advance(32_000 - 1);
      expect(txn.state).toBe('accepted');
      await advance(1);
      expect(txn.state).toBe('terminated');
    });
  });
});

// -------------------------------------------------------------------------------------------------
// Non-INVITE client transaction
// -------------------------------------------------------------------------------------------------

describe('non-INVITE client transaction (RFC 3261 §17.1.2)', () => {
  describe.each(BASES)('Trying and Proceeding, over UDP, with $label', ({ base, eg }) => {
    it('RFC 3261 §17.1.2.2: MUST retransmit at T1, then at intervals doubling up to T2 (Timer E), until Timer F', async () => {
      const { layer, transport } = makeLayer(base);
      const options = request({ method: 'OPTIONS' });
      const txn = layer.sendRequest(options, UDP_DEST, callbacks());
      expect(txn.state).toBe('trying');
      await settle();
      await advance(64 * base.t1 - 1);
      expect(transport.requests('OPTIONS').map((s) => s.at)).toEqual(eg);
    });

    it('RFC 3261 §17.1.2.2: when Timer F (64·T1) fires in Trying the TU MUST be informed of the timeout, once, and nothing more is sent', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const txn = layer.sendRequest(request({ method: 'OPTIONS' }), UDP_DEST, cb);
      await settle();
      await advance(64 * base.t1);
      expect(cb.timeouts).toBe(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
      const n = transport.sent.length;
      await advance(10 * 64 * base.t1);
      expect(transport.sent).toHaveLength(n);
      expect(cb.timeouts).toBe(1);
    });

    it('RFC 3261 §17.1.2.2: in Proceeding, Timer E MUST be reset to T2 when it fires, and Timer F still ends it with a timeout', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const options = request({ method: 'OPTIONS' });
      const txn = layer.sendRequest(options, UDP_DEST, cb);
      await settle();
      await advance(base.t1 / 5);
      layer.receive(responseTo(options, 100, { toTag: null }), UDP_FLOW);
      expect(txn.state).toBe('proceeding');
      expect(cb.responses.map((r) => r.status)).toEqual([100]);
      await advance(64 * base.t1 - base.t1 / 5 - 1);
      // The pending Timer E fires at T1, then every T2.
      const expected = [0];
      for (let t = base.t1; t < 64 * base.t1; t += base.t2) {
        expected.push(t);
      }
      expect(transport.requests('OPTIONS').map((s) => s.at)).toEqual(expected);
      expect(cb.timeouts).toBe(0);
      await advance(1);
      expect(cb.timeouts).toBe(1);
      expect(txn.state).toBe('terminated');
    });
  });

  describe.each(BASES)('Completed, over UDP, with $label', ({ base }) => {
    it('RFC 3261 §17.1.2.2: a final response MUST move it to Completed, be passed to the TU, and stop Timers E and F', async () => {
      const { layer, transport } = makeLayer(base);
      const cb = callbacks();
      const bye = request({ method: 'BYE', toTag: 'a6c85cf' });
      const txn = layer.sendRequest(bye, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(bye, 200), UDP_FLOW);
      expect(txn.state).toBe('completed');
      expect(cb.responses.map((r) => r.status)).toEqual([200]);
      await advance(100 * base.t1);
      expect(transport.requests('BYE')).toHaveLength(1);
      expect(cb.timeouts).toBe(0);
    });

    it('RFC 3261 §17.1.2.2: retransmissions of the final response in Completed MUST be absorbed (not passed to the TU)', async () => {
      const { layer, tu } = makeLayer(base);
      const cb = callbacks();
      const bye = request({ method: 'BYE', toTag: 'a6c85cf' });
      layer.sendRequest(bye, UDP_DEST, cb);
      await settle();
      layer.receive(responseTo(bye, 200), UDP_FLOW);
      layer.receive(responseTo(bye, 200), UDP_FLOW);
      layer.receive(responseTo(bye, 200), UDP_FLOW);
      expect(cb.responses).toHaveLength(1);
      expect(tu.stray).toHaveLength(0);
    });

    it('RFC 3261 §17.1.2.2: Timer K (T4 over UDP) MUST move it from Completed to Terminated', async () => {
      const { layer } = makeLayer(base);
      const bye = request({ method: 'BYE', toTag: 'a6c85cf' });
      const txn = layer.sendRequest(bye, UDP_DEST, callbacks());
      await settle();
      await advance(base.t1 + 1);
      layer.receive(responseTo(bye, 481), UDP_FLOW);
      await advance(base.t4 - 1);
      expect(txn.state).toBe('completed');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
    });
  });

  describe('over TCP (reliable)', () => {
    it('RFC 3261 §17.1.2.2: the request MUST NOT be retransmitted (no Timer E); Timer F (64·T1) still times it out', async () => {
      const { layer, transport } = makeLayer();
      const cb = callbacks();
      layer.sendRequest(request({ method: 'REGISTER', transport: 'TCP' }), TCP_DEST, cb);
      await settle();
      await advance(32_000);
      expect(transport.sent).toHaveLength(1);
      expect(cb.timeouts).toBe(1);
    });

    it('RFC 3261 §17.1.2.2: Timer K is zero over a reliable transport: Terminated as soon as the final response is passed up', async () => {
      const { layer } = makeLayer();
      const cb = callbacks();
      const reg = request({ method: 'REGISTER', transport: 'TCP' });
      const txn = layer.sendRequest(reg, TCP_DEST, cb);
      await settle();
      layer.receive(responseTo(reg, 200), txn.flow!);
      expect(cb.responses).toHaveLength(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.clients).toBe(0);
    });
  });
});

// -------------------------------------------------------------------------------------------------
// Transport failures of client transactions
// -------------------------------------------------------------------------------------------------

describe('client transaction transport errors (RFC 3261 §17.1.4, §8.1.3.1)', () => {
  it.each([
    ['INVITE', UDP_DEST],
    ['INVITE', TCP_DEST],
    ['OPTIONS', UDP_DEST],
    ['OPTIONS', TCP_DEST],
  ] as const)('RFC 3261 §17.1.4: a failed send of %s over %o MUST inform the TU once (onTransportError) and remove the transaction', async (method, dest) => {
    const { layer, transport } = makeLayer();
    transport.failWith = new Error('connect ECONNREFUSED');
    const cb = callbacks();
    const txn = layer.sendRequest(request({ method, transport: dest.protocol === 'udp' ? 'UDP' : 'TCP' }), dest, cb);
    await settle();
    expect(cb.errors.map((e) => e.message)).toEqual(['connect ECONNREFUSED']);
    expect(txn.state).toBe('terminated');
    expect(layer.size.clients).toBe(0);
    await advance(100_000);
    expect(transport.sent).toHaveLength(1); // no retransmissions after the failure
    expect(cb.timeouts).toBe(0); // and no Timer B/F
    expect(cb.errors).toHaveLength(1);
  });

  it('RFC 3261 §17.1.4: a failed retransmission ends the transaction with one onTransportError and no timeout', async () => {
    const { layer, transport } = makeLayer();
    const cb = callbacks();
    const txn = layer.sendRequest(request({ method: 'MESSAGE' }), UDP_DEST, cb);
    await settle();
    transport.failWith = new Error('send EHOSTUNREACH');
    await advance(500);
    expect(cb.errors).toHaveLength(1);
    expect(txn.state).toBe('terminated');
    expect(layer.size.clients).toBe(0);
    await advance(100_000);
    expect(transport.sent).toHaveLength(2);
    expect(cb.errors).toHaveLength(1);
    expect(cb.timeouts).toBe(0);
  });
});

// -------------------------------------------------------------------------------------------------
// INVITE server transaction
// -------------------------------------------------------------------------------------------------

describe('INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §8.5–8.7)', () => {
  /** An INVITE from 198.51.100.7:5062 as the transport layer hands it over (received/rport stamped). */
  function incomingInvite(o: RequestOptions = {}): SipMessage {
    return wire(request({ viaParams: o.transport === 'TCP' ? ';rport=40112;received=198.51.100.7' : ';rport=5062;received=198.51.100.7', body: 'v=0\r\n', ...o }));
  }

  function receiveInvite(base: TimerBase = DEFAULT_TIMER_BASE, o: RequestOptions = {}, flow: Flow = UDP_FLOW) {
    const env = makeLayer(base);
    const invite = incomingInvite(o);
    env.layer.receive(invite, flow);

    return { ...env, invite, txn: env.tu.txn };
  }

  describe('Proceeding', () => {
    it('RFC 3261 §17.2.1: a new INVITE MUST create a server transaction in Proceeding and be passed to the TU', () => {
      const { tu, txn, invite, layer } = receiveInvite();
      expect(txn.state).toBe('proceeding');
      expect(txn.isInvite).toBe(true);
      expect(tu.requests[0]!.req).toBe(invite);
      expect(layer.size.servers).toBe(1);
    });

    it('RFC 3261 §17.2.1: a retransmitted INVITE MUST cause the most recent provisional response to be re-sent, and MUST NOT reach the TU', async () => {
      const { layer, tu, transport, txn, invite } = receiveInvite();
      await txn.respond(tuResponse(invite, 100));
      await txn.respond(tuResponse(invite, 180));
      layer.receive(wire(invite), UDP_FLOW);
      layer.receive(wire(invite), UDP_FLOW);
      expect(transport.responses().map((s) => s.msg.status)).toEqual([100, 180, 180, 180]);
      expect(transport.sent[3]!.data.equals(transport.sent[1]!.data)).toBe(true);
      expect(tu.requests).toHaveLength(1);
      expect(txn.state).toBe('proceeding');
    });

    it('RFC 3261 §17.2.1: a retransmission before any provisional response is absorbed without sending', () => {
      const { layer, tu, transport, invite } = receiveInvite();
      layer.receive(wire(invite), UDP_FLOW);
      expect(transport.sent).toHaveLength(0);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 3261 §18.2.2 and RFC 3581 §4: responses over UDP go to the received address and rport of the top Via', async () => {
      const { transport, txn, invite } = receiveInvite();
      await txn.respond(tuResponse(invite, 180));
      expect(transport.sent[0]!.dest).toEqual({ protocol: 'udp', host: '198.51.100.7', port: 5062, flow: UDP_FLOW });
    });

    it('RFC 3261 §18.2.2: responses over TCP go back over the connection of the request', async () => {
      const { transport, txn, invite } = receiveInvite(DEFAULT_TIMER_BASE, { transport: 'TCP' }, TCP_FLOW);
      await txn.respond(tuResponse(invite, 180));
      expect(transport.sent[0]!.dest.flow).toEqual(TCP_FLOW);
      expect(transport.sent[0]!.dest.protocol).toBe('tcp');
    });

    it('RFC 3261 §18.2.2: over TCP the fallback when the connection is gone is received + the sent-by port (default 5060), never rport', async () => {
      const { transport, txn, invite } = receiveInvite(DEFAULT_TIMER_BASE, { transport: 'TCP', sentBy: 'pc33.atlanta.example.com:5072' }, TCP_FLOW);
      await txn.respond(tuResponse(invite, 180));
      expect(transport.sent[0]!.dest).toEqual({ protocol: 'tcp', host: '198.51.100.7', port: 5072, flow: TCP_FLOW });
      const portless = receiveInvite(DEFAULT_TIMER_BASE, { transport: 'TCP', sentBy: 'pc33.atlanta.example.com' }, TCP_FLOW);
      await portless.txn.respond(tuResponse(portless.invite, 180));
      expect(portless.transport.sent[0]!.dest).toEqual({ protocol: 'tcp', host: '198.51.100.7', port: 5060, flow: TCP_FLOW });
    });
  });

  describe.each(BASES)('Accepted (RFC 6026 §8.7), with $label', ({ base }) => {
    it('RFC 6026 §8.7: a 2xx from the TU MUST move it to Accepted; the transaction MUST NOT retransmit the 2xx itself', async () => {
      const { transport, txn, invite } = receiveInvite(base);
      await txn.respond(tuResponse(invite, 200));
      expect(txn.state).toBe('accepted');
      expect(txn.finalSent).toBe(true);
      await advance(64 * base.t1 - 1);
      expect(transport.responses(200)).toHaveLength(1);
    });

    it('RFC 6026 §8.7: INVITE retransmissions in Accepted MUST be absorbed: nothing re-sent, nothing passed to the TU', async () => {
      const { layer, tu, transport, txn, invite } = receiveInvite(base);
      await txn.respond(tuResponse(invite, 180));
      await txn.respond(tuResponse(invite, 200));
      layer.receive(wire(invite), UDP_FLOW);
      layer.receive(wire(invite), UDP_FLOW);
      expect(transport.sent).toHaveLength(2);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 6026 §8.7: an ACK in Accepted MUST be passed to the TU (onAckInAccepted) and leave the state unchanged', async () => {
      const { layer, tu, txn, invite } = receiveInvite(base);
      const ok = tuResponse(invite, 200);
      await txn.respond(ok);
      const ack = ackFor(invite, ok);
      layer.receive(ack, UDP_FLOW);
      layer.receive(wire(ack), UDP_FLOW);
      expect(tu.acksInAccepted.map((a) => a.txn)).toEqual([txn, txn]);
      expect(tu.acksInAccepted[0]!.ack).toBe(ack);
      expect(tu.requests).toHaveLength(1);
      expect(txn.state).toBe('accepted');
    });

    it('RFC 6026 §8.7: 2xx retransmissions from the TU pass through in Accepted; any other response MUST be refused', async () => {
      const { transport, txn, invite } = receiveInvite(base);
      const ok = tuResponse(invite, 200);
      await txn.respond(ok);
      await txn.respond(ok);
      expect(transport.responses(200)).toHaveLength(2);
      await expect(txn.respond(tuResponse(invite, 486))).rejects.toBeInstanceOf(TransactionStateError);
      await expect(txn.respond(tuResponse(invite, 180))).rejects.toBeInstanceOf(TransactionStateError);
      expect(transport.sent).toHaveLength(2);
    });

    it('RFC 6026 §8.7: Timer L (64·T1) MUST move it to Terminated; onTerminate listeners run; a later ACK goes to the TU core without a transaction', async () => {
      const { layer, tu, txn, invite } = receiveInvite(base);
      let ended = 0;
      txn.onTerminate(() => ended++);
      const ok = tuResponse(invite, 200);
      await txn.respond(ok);
      await advance(64 * base.t1 - 1);
      expect(txn.state).toBe('accepted');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(ended).toBe(1);
      expect(layer.size.servers).toBe(0);
      const ack = ackFor(invite, ok);
      layer.receive(ack, UDP_FLOW);
      expect(tu.requests.at(-1)).toEqual({ req: ack, flow: UDP_FLOW, txn: undefined });
      expect(tu.acksInAccepted).toHaveLength(0);
    });
  });

  describe.each(BASES)('Completed (300–699), over UDP, with $label', ({ base, eg }) => {
    it('RFC 3261 §17.2.1: a 300–699 response MUST move it to Completed and be retransmitted at T1, then doubling up to T2 (Timer G)', async () => {
      const { transport, txn, invite } = receiveInvite(base);
      await txn.respond(tuResponse(invite, 486));
      expect(txn.state).toBe('completed');
      await advance(64 * base.t1 - 1);
      const sends = transport.responses(486);
      expect(sends.map((s) => s.at)).toEqual(eg);
      expect(sends.every((s) => s.data.equals(sends[0]!.data))).toBe(true);
    });

    it('RFC 3261 §17.2.1: when Timer H (64·T1) fires in Completed it MUST move to Terminated and report the failure (onAckTimeout) once', async () => {
      const { layer, transport, txn, invite } = receiveInvite(base);
      let failures = 0;
      txn.onAckTimeout = () => failures++;
      await txn.respond(tuResponse(invite, 500));
      await advance(64 * base.t1 - 1);
      expect(failures).toBe(0);
      await advance(1);
      expect(failures).toBe(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.servers).toBe(0);
      const n = transport.sent.length;
      await advance(10 * 64 * base.t1);
      expect(transport.sent).toHaveLength(n);
      expect(failures).toBe(1);
    });

    it('RFC 3261 §17.2.1: a retransmitted INVITE in Completed MUST cause the final response to be re-sent', async () => {
      const { layer, tu, transport, txn, invite } = receiveInvite(base);
      await txn.respond(tuResponse(invite, 180));
      await txn.respond(tuResponse(invite, 404));
      layer.receive(wire(invite), UDP_FLOW);
      expect(transport.responses().map((s) => s.msg.status)).toEqual([180, 404, 404]);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 3261 §17.2.1: no further response may be sent once the final one was (respond() rejects with TransactionStateError)', async () => {
      const { transport, txn, invite } = receiveInvite(base);
      await txn.respond(tuResponse(invite, 486));
      await expect(txn.respond(tuResponse(invite, 200))).rejects.toBeInstanceOf(TransactionStateError);
      await expect(txn.respond(tuResponse(invite, 180))).rejects.toBeInstanceOf(TransactionStateError);
      expect(transport.sent).toHaveLength(1);
      expect(txn.lastStatus).toBe(486);
    });
  });

  describe.each(BASES)('Confirmed, over UDP, with $label', ({ base }) => {
    it('RFC 3261 §17.2.1: an ACK in Completed MUST move it to Confirmed, stop Timer G and Timer H, and not reach the TU', async () => {
      const { layer, tu, transport, txn, invite } = receiveInvite(base);
      let failures = 0;
      txn.onAckTimeout = () => failures++;
      const busy = tuResponse(invite, 486);
      await txn.respond(busy);
      await advance(base.t1); // one retransmission by Timer G
      layer.receive(ackFor(invite, busy), UDP_FLOW);
      expect(txn.state).toBe('confirmed');
      expect(tu.requests).toHaveLength(1);
      expect(tu.acksInAccepted).toHaveLength(0);
      await advance(64 * base.t1);
      expect(transport.responses(486)).toHaveLength(2);
      expect(failures).toBe(0);
    });

    it('RFC 3261 §17.2.1: ACK retransmissions in Confirmed MUST be absorbed, and Timer I (T4) MUST move it to Terminated', async () => {
      const { layer, tu, transport, txn, invite } = receiveInvite(base);
      const busy = tuResponse(invite, 486);
      await txn.respond(busy);
      layer.receive(ackFor(invite, busy), UDP_FLOW);
      layer.receive(ackFor(invite, busy), UDP_FLOW);
      layer.receive(wire(invite), UDP_FLOW); // a late INVITE retransmission
      expect(tu.requests).toHaveLength(1);
      expect(transport.sent).toHaveLength(1);
      await advance(base.t4 - 1);
      expect(txn.state).toBe('confirmed');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(layer.size.servers).toBe(0);
    });
  });

  describe('over TCP (reliable)', () => {
    it('RFC 3261 §17.2.1: a non-2xx final response MUST NOT be retransmitted (no Timer G), but Timer H (64·T1) still runs', async () => {
      const { transport, txn, invite } = receiveInvite(DEFAULT_TIMER_BASE, { transport: 'TCP' }, TCP_FLOW);
      let failures = 0;
      txn.onAckTimeout = () => failures++;
      await txn.respond(tuResponse(invite, 486));
      await advance(32_000 - 1);
      expect(transport.sent).toHaveLength(1);
      expect(failures).toBe(0);
      await advance(1);
      expect(failures).toBe(1);
      expect(txn.state).toBe('terminated');
    });

    it('RFC 3261 §17.2.1: Timer I is zero over a reliable transport: Terminated as soon as the ACK arrives', async () => {
      const { layer, txn, invite } = receiveInvite(DEFAULT_TIMER_BASE, { transport: 'TCP' }, TCP_FLOW);
      const busy = tuResponse(invite, 486);
      await txn.respond(busy);
      layer.receive(ackFor(invite, busy), TCP_FLOW);
      expect(txn.state).toBe('terminated');
      expect(layer.size.servers).toBe(0);
    });
  });
});

// -------------------------------------------------------------------------------------------------
// Non-INVITE server transaction
// -------------------------------------------------------------------------------------------------

describe('non-INVITE server transaction (RFC 3261 §17.2.2)', () => {
  function receiveRequest(base: TimerBase = DEFAULT_TIMER_BASE, o: RequestOptions = {}, flow: Flow = UDP_FLOW) {
    const env = makeLayer(base);
    const req = wire(request({ method: 'OPTIONS', viaParams: ';rport=5062;received=198.51.100.7', ...o }));
    env.layer.receive(req, flow);

    return { ...env, req, txn: env.tu.txn };
  }

  describe('Trying', () => {
    it('RFC 3261 §17.2.2: a new request MUST create a server transaction in Trying and be passed to the TU', () => {
      const { txn, tu } = receiveRequest();
      expect(txn.state).toBe('trying');
      expect(txn.isInvite).toBe(false);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 3261 §17.2.2: request retransmissions in Trying MUST be discarded silently', () => {
      const { layer, tu, transport, req } = receiveRequest();
      layer.receive(wire(req), UDP_FLOW);
      layer.receive(wire(req), UDP_FLOW);
      expect(transport.sent).toHaveLength(0);
      expect(tu.requests).toHaveLength(1);
    });
  });

  describe('Proceeding', () => {
    it('RFC 3261 §17.2.2: a provisional response MUST move it to Proceeding; retransmissions MUST re-send the most recent provisional', async () => {
      const { layer, tu, transport, txn, req } = receiveRequest();
      await txn.respond(tuResponse(req, 100));
      expect(txn.state).toBe('proceeding');
      await txn.respond(tuResponse(req, 183));
      layer.receive(wire(req), UDP_FLOW);
      expect(transport.responses().map((s) => s.msg.status)).toEqual([100, 183, 183]);
      expect(tu.requests).toHaveLength(1);
    });
  });

  describe.each(BASES)('Completed, with $label', ({ base }) => {
    it('RFC 3261 §17.2.2: a final response MUST move it to Completed; retransmissions MUST re-send the final response', async () => {
      const { layer, tu, transport, txn, req } = receiveRequest(base);
      await txn.respond(tuResponse(req, 100));
      await txn.respond(tuResponse(req, 200));
      expect(txn.state).toBe('completed');
      layer.receive(wire(req), UDP_FLOW);
      layer.receive(wire(req), UDP_FLOW);
      expect(transport.responses().map((s) => s.msg.status)).toEqual([100, 200, 200, 200]);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 3261 §17.2.2: the final response is not retransmitted on a timer, and no further response is accepted', async () => {
      const { transport, txn, req } = receiveRequest(base);
      await txn.respond(tuResponse(req, 404));
      await advance(64 * base.t1 - 1);
      expect(transport.sent).toHaveLength(1);
      await expect(txn.respond(tuResponse(req, 200))).rejects.toBeInstanceOf(TransactionStateError);
      await expect(txn.respond(tuResponse(req, 100))).rejects.toBeInstanceOf(TransactionStateError);
    });

    it('RFC 3261 §17.2.2: Timer J (64·T1 over UDP) MUST move it from Completed to Terminated', async () => {
      const { layer, tu, txn, req } = receiveRequest(base);
      let ended = 0;
      txn.onTerminate(() => ended++);
      await txn.respond(tuResponse(req, 200));
      await advance(64 * base.t1 - 1);
      expect(txn.state).toBe('completed');
      await advance(1);
      expect(txn.state).toBe('terminated');
      expect(ended).toBe(1);
      expect(layer.size.servers).toBe(0);
      // A retransmission after that is a new request for the TU (nothing is left to absorb it).
      layer.receive(wire(req), UDP_FLOW);
      expect(tu.requests).toHaveLength(2);
    });
  });

  describe('over TCP (reliable)', () => {
    it('RFC 3261 §17.2.2: Timer J is zero over a reliable transport: Terminated right after the final response', async () => {
      const { layer, txn, req } = receiveRequest(DEFAULT_TIMER_BASE, { transport: 'TCP' }, TCP_FLOW);
      await txn.respond(tuResponse(req, 200));
      await settle();
      expect(txn.state).toBe('terminated');
      expect(layer.size.servers).toBe(0);
    });
  });
});

// -------------------------------------------------------------------------------------------------
// Matching
// -------------------------------------------------------------------------------------------------

describe('matching responses to client transactions (RFC 3261 §17.1.3)', () => {
  it('RFC 3261 §17.1.3: a response matches by top Via branch AND CSeq method: the CANCEL response does not reach the INVITE transaction', async () => {
    const { layer, tu } = makeLayer();
    const branch = newBranch();
    const invite = request({ branch });
    const cancel = request({ method: 'CANCEL', branch });
    const inviteCb = callbacks();
    const cancelCb = callbacks();
    const ict = layer.sendRequest(invite, UDP_DEST, inviteCb);
    layer.sendRequest(cancel, UDP_DEST, cancelCb);
    await settle();
    expect(layer.size.clients).toBe(2);
    layer.receive(responseTo(cancel, 200), UDP_FLOW);
    expect(cancelCb.responses.map((r) => r.status)).toEqual([200]);
    expect(inviteCb.responses).toHaveLength(0);
    expect(ict.state).toBe('calling');
    layer.receive(responseTo(invite, 487), UDP_FLOW);
    expect(inviteCb.responses.map((r) => r.status)).toEqual([487]);
    expect(cancelCb.responses).toHaveLength(1);
    expect(tu.stray).toHaveLength(0);
  });

  it('RFC 3261 §17.1.3: a response whose branch matches no transaction goes to the TU core as a stray', async () => {
    const { layer, tu } = makeLayer();
    const cb = callbacks();
    const invite = request();
    layer.sendRequest(invite, UDP_DEST, cb);
    await settle();
    layer.receive(responseTo(request(), 200), UDP_FLOW);
    // Same branch, other method: no match either.
    layer.receive(responseTo(invite, 200, { cseqMethod: 'BYE' }), UDP_FLOW);
    expect(tu.stray.map((r) => r.status)).toEqual([200, 200]);
    expect(cb.responses).toHaveLength(0);
  });

  it('newBranch(): every branch starts with the magic cookie z9hG4bK (RFC 3261 §8.1.1.7) and 100 000 draws are unique', () => {
    const seen = new Set<string>();
    let bad = 0;
    for (let i = 0; i < 100_000; i++) {
      const b = newBranch();
      // The cookie, then token characters only (RFC 3261 §25.1), long enough to be unguessable.
      if (!/^z9hG4bK[A-Za-z0-9_-]{16,}$/.test(b)) {
        bad++;
      }
      seen.add(b);
    }
    expect(BRANCH_COOKIE).toBe('z9hG4bK');
    expect(bad).toBe(0);
    expect(seen.size).toBe(100_000);
  });

  it('sendRequest() refuses a request whose top Via has no branch', () => {
    const { layer } = makeLayer();
    expect(() => layer.sendRequest(request({ branch: null }), UDP_DEST, callbacks())).toThrow(/branch/);
  });
});

describe('matching requests to server transactions (RFC 3261 §17.2.3)', () => {
  const via = ';rport=5062;received=198.51.100.7';

  it('RFC 3261 §17.2.3: a request matches by branch, sent-by and method: same branch from another sent-by is a new transaction', () => {
    const { layer, tu } = makeLayer();
    const branch = newBranch();
    layer.receive(wire(request({ branch, viaParams: via })), UDP_FLOW);
    layer.receive(wire(request({ branch, viaParams: via })), UDP_FLOW);
    layer.receive(wire(request({ branch, viaParams: via, sentBy: 'pc34.atlanta.example.com:5060' })), UDP_FLOW);
    expect(tu.requests).toHaveLength(2);
    expect(tu.requests[0]!.txn).not.toBe(tu.requests[1]!.txn);
    expect(layer.size.servers).toBe(2);
  });

  it('RFC 3261 §17.2.3: the method must match: a CANCEL with the INVITE branch gets its own non-INVITE transaction', () => {
    const { layer, tu } = makeLayer();
    const branch = newBranch();
    layer.receive(wire(request({ branch, viaParams: via })), UDP_FLOW);
    layer.receive(wire(request({ method: 'CANCEL', branch, viaParams: via })), UDP_FLOW);
    expect(tu.requests.map((r) => [r.req.method, r.txn?.state])).toEqual([
      ['INVITE', 'proceeding'],
      ['CANCEL', 'trying'],
    ]);
  });

  it('RFC 3261 §17.2.3: an ACK matches the INVITE server transaction (the method of the request that created it is INVITE)', async () => {
    const { layer, tu } = makeLayer();
    const invite = wire(request({ viaParams: via }));
    layer.receive(invite, UDP_FLOW);
    const txn = tu.txn;
    const busy = tuResponse(invite, 486);
    await txn.respond(busy);
    layer.receive(ackFor(invite, busy), UDP_FLOW);
    expect(txn.state).toBe('confirmed');
    expect(tu.requests).toHaveLength(1);
  });

  it('RFC 3261 §17.2.3: an ACK that matches no transaction (the ACK for a 2xx) goes to the TU without a transaction', () => {
    const { layer, tu } = makeLayer();
    const ack = wire(request({ method: 'ACK', toTag: 'x1', viaParams: via }));
    layer.receive(ack, UDP_FLOW);
    expect(tu.requests).toEqual([{ req: ack, flow: UDP_FLOW, txn: undefined }]);
    expect(layer.size.servers).toBe(0);
  });

  it('RFC 3261 §9.2: a CANCEL finds the INVITE server transaction it cancels (findInviteForCancel)', () => {
    const { layer, tu } = makeLayer();
    const branch = newBranch();
    layer.receive(wire(request({ branch, viaParams: via })), UDP_FLOW);
    const ist = tu.txn;
    const cancel = wire(request({ method: 'CANCEL', branch, viaParams: via }));
    layer.receive(cancel, UDP_FLOW);
    expect(layer.findInviteForCancel(cancel)).toBe(ist);
    expect(layer.findInviteForCancel(wire(request({ method: 'CANCEL', viaParams: via })))).toBeUndefined();
    expect(layer.findInviteForCancel(wire(request({ method: 'CANCEL', branch, sentBy: 'elsewhere.example.com', viaParams: via })))).toBeUndefined();
    ist.terminate();
    expect(layer.findInviteForCancel(cancel)).toBeUndefined();
  });

  describe('RFC 2543 peers (no magic cookie)', () => {
    it('RFC 3261 §17.2.3: a retransmitted INVITE without a branch matches its transaction by Request-URI, From tag, Call-ID, CSeq and top Via', async () => {
      const { layer, tu, transport } = makeLayer();
      const invite = wire(request({ branch: null, viaParams: via }));
      layer.receive(invite, UDP_FLOW);
      await tu.txn.respond(tuResponse(invite, 180));
      layer.receive(wire(invite), UDP_FLOW);
      expect(tu.requests).toHaveLength(1);
      expect(transport.responses(180)).toHaveLength(2);
    });

    it('RFC 3261 §17.2.3: a branch without the cookie is also matched the RFC 2543 way', () => {
      const { layer, tu } = makeLayer();
      layer.receive(wire(request({ branch: '7a83e2', viaParams: via })), UDP_FLOW);
      layer.receive(wire(request({ branch: '7a83e2', viaParams: via })), UDP_FLOW);
      expect(tu.requests).toHaveLength(1);
    });

    it('RFC 3261 §17.2.3: a different From tag, CSeq number or Request-URI (a spiral) makes a new transaction', () => {
      const { layer, tu } = makeLayer();
      layer.receive(wire(request({ branch: null, viaParams: via })), UDP_FLOW);
      layer.receive(wire(request({ branch: null, viaParams: via, fromTag: 'other' })), UDP_FLOW);
      layer.receive(wire(request({ branch: null, viaParams: via, cseq: 314160 })), UDP_FLOW);
      layer.receive(wire(request({ branch: null, viaParams: via, uri: 'sip:bob@192.0.2.44' })), UDP_FLOW);
      expect(tu.requests).toHaveLength(4);
      expect(layer.size.servers).toBe(4);
    });

    it('RFC 3261 §17.2.3: the top Via must match: the same request through another RFC 2543 branch of the same proxy is a new transaction', () => {
      const { layer, tu } = makeLayer();
      layer.receive(wire(request({ branch: '1', viaParams: via })), UDP_FLOW);
      layer.receive(wire(request({ branch: '2', viaParams: via })), UDP_FLOW);
      expect(tu.requests).toHaveLength(2);
    });

    it('RFC 3261 §17.2.3: the ACK for a non-2xx (To tag of the response) matches the INVITE transaction', async () => {
      const { layer, tu } = makeLayer();
      const invite = wire(request({ branch: null, viaParams: via }));
      layer.receive(invite, UDP_FLOW);
      const busy = tuResponse(invite, 486);
      await tu.txn.respond(busy);
      layer.receive(ackFor(invite, busy), UDP_FLOW);
      expect(tu.txn.state).toBe('confirmed');
    });

    it('RFC 3261 §9.2: a CANCEL without a branch finds its INVITE', () => {
      const { layer, tu } = makeLayer();
      layer.receive(wire(request({ branch: null, viaParams: via })), UDP_FLOW);
      const ist = tu.txn;
      expect(layer.findInviteForCancel(wire(request({ method: 'CANCEL', branch: null, viaParams: via })))).toBe(ist);
      expect(layer.findInviteForCancel(wire(request({ method: 'CANCEL', branch: null, viaParams: via, fromTag: 'x' })))).toBeUndefined();
    });
  });
});

describe('TransactionLayer.close()', () => {
  it('terminates every transaction without any callback or send', async () => {
    const { layer, tu, transport } = makeLayer();
    const cb = callbacks();
    layer.sendRequest(request(), UDP_DEST, cb);
    layer.receive(wire(request({ method: 'OPTIONS', viaParams: ';rport=5062;received=198.51.100.7' })), UDP_FLOW);
    await settle();
    expect(layer.size).toEqual({ clients: 1, servers: 1 });
    layer.close();
    expect(layer.size).toEqual({ clients: 0, servers: 0 });
    expect(tu.txn.state).toBe('terminated');
    await advance(100_000);
    expect(transport.sent).toHaveLength(1);
    expect(cb).toMatchObject({ timeouts: 0, errors: [], responses: [] });
  });
});
