/**
 * Raw SIP peers for the engine's integration tests: a UDP socket, a TCP client connection or a
 * TCP listener that sends hand-written SIP text and records every message it receives (parsed with
 * the engine's own parser, framed on streams with its own framer). Tests use them where sipp cannot
 * produce the exact sequence a regression needs (forged headers, CANCEL crossing a 200, glare,
 * forked 2xx, peers that never answer...).
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { encodeFrame, FrameDecoder, splitPayload } from '../../src/sip/engine/control/framing.js';
import { parseMessage, SipMessage } from '../../src/sip/engine/message.js';
import { StreamFramer } from '../../src/sip/engine/transport/framer.js';

/** One message a peer received. */
export interface RawMessage {
  msg: SipMessage;
  text: string;
  from: { address: string; port: number };
  /** When it arrived (Date.now()). */
  at: number;
  /** TCP: the connection it came on. */
  conn?: net.Socket;
}

/** Where a UDP peer sends by default. */
export interface RawTarget {
  address?: string;
  port: number;
}

/** Options of a request built by sipRequest(). */
export interface RawRequestOptions {
  method: string;
  uri: string;
  /** Via transport token. Default UDP. */
  transport?: 'UDP' | 'TCP' | 'TLS';
  /** Via sent-by. Default 127.0.0.1:<viaPort>. */
  viaHost?: string;
  viaPort?: number;
  /** Extra Via parameters, e.g. ';rport' or ';received=192.0.2.1'. */
  viaParams?: string;
  branch?: string;
  callId: string;
  fromTag: string;
  toTag?: string;
  cseq: number;
  /** Contact header value; null for none. Default <sip:raw@127.0.0.1:<viaPort>>. */
  contact?: string | null;
  maxForwards?: number;
  /** Extra header lines, `Name: value`. */
  headers?: string[];
  body?: string;
  /** From/To URIs. */
  fromUri?: string;
  toUri?: string;
}

/** A fresh branch with the magic cookie. */
export function branch(): string {
  return `z9hG4bK${randomBytes(8).toString('hex')}`;
}

/** A fresh Call-ID or tag. */
export function token(prefix = ''): string {
  return `${prefix}${randomBytes(6).toString('hex')}`;
}

/** Builds request text (CRLF line ends, Content-Length computed). */
export function sipRequest(o: RawRequestOptions): string {
  const viaPort = o.viaPort ?? 5999;
  const body = o.body ?? '';
  const lines = [
    `${o.method} ${o.uri} SIP/2.0`,
    `Via: SIP/2.0/${o.transport ?? 'UDP'} ${o.viaHost ?? '127.0.0.1'}:${viaPort};branch=${o.branch ?? branch()}${o.viaParams ?? ''}`,
    `Max-Forwards: ${o.maxForwards ?? 70}`,
    `From: <${o.fromUri ?? 'sip:caller@127.0.0.1'}>;tag=${o.fromTag}`,
    `To: <${o.toUri ?? o.uri}>${o.toTag ? `;tag=${o.toTag}` : ''}`,
    `Call-ID: ${o.callId}`,
    `CSeq: ${o.cseq} ${o.method}`,
  ];
  const contact = o.contact === undefined ? `<sip:raw@127.0.0.1:${viaPort}${o.transport === 'TCP' ? ';transport=tcp' : ''}>` : o.contact;
  if (contact !== null) {
    lines.push(`Contact: ${contact}`);
  }
  lines.push(...(o.headers ?? []));
  if (body !== '') {
    lines.push('Content-Type: application/sdp');
  }
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`, '', body);

  return lines.join('\r\n');
}

/** Options of a response built by sipResponse(). */
export interface RawResponseOptions {
  /** To tag to add when the request's To has none. */
  toTag?: string;
  contact?: string;
  headers?: string[];
  body?: string;
}

/** Builds a response to a received request: its Via lines, From, To (+ tag), Call-ID and CSeq. */
export function sipResponse(req: SipMessage, status: number, reason: string, o: RawResponseOptions = {}): string {
  const lines = [`SIP/2.0 ${status} ${reason}`];
  for (const v of req.getHeaders('via')) {
    lines.push(`Via: ${v}`);
  }
  for (const rr of req.getHeaders('record-route')) {
    lines.push(`Record-Route: ${rr}`);
  }
  lines.push(`From: ${req.getHeader('from')}`);
  const to = req.getHeader('to') ?? '';
  lines.push(`To: ${/;\s*tag=/i.test(to) || !o.toTag ? to : `${to};tag=${o.toTag}`}`);
  lines.push(`Call-ID: ${req.callId}`, `CSeq: ${req.getHeader('cseq')}`);
  if (o.contact) {
    lines.push(`Contact: ${o.contact}`);
  }
  lines.push(...(o.headers ?? []));
  const body = o.body ?? '';
  if (body !== '') {
    lines.push('Content-Type: application/sdp');
  }
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`, '', body);

  return lines.join('\r\n');
}

/** A raw SIP peer. */
export class RawSipPeer {
  readonly protocol: 'udp' | 'tcp';
  readonly received: RawMessage[] = [];
  /** Local port (UDP socket, TCP client's local port, or TCP listener's port). */
  port = 0;
  readonly address = '127.0.0.1';
  #udp?: dgram.Socket;
  #server?: net.Server;
  #client?: net.Socket;
  readonly #sockets = new Set<net.Socket>();
  #target?: RawTarget;
  readonly #handlers: ((m: RawMessage) => void)[] = [];
  readonly #waiters: { pred: (m: RawMessage) => boolean; resolve: (m: RawMessage) => void }[] = [];

  private constructor(protocol: 'udp' | 'tcp') {
    this.protocol = protocol;
  }

  /** A UDP socket on 127.0.0.1 that sends to `target` by default. */
  static async udp(target?: RawTarget, bindAddress = '127.0.0.1', bindPort = 0): Promise<RawSipPeer> {
    const p = new RawSipPeer('udp');
    p.#target = target;
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(bindPort, bindAddress, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('message', (data, rinfo) => p.#onMessage(data, { address: rinfo.address, port: rinfo.port }));
    p.#udp = s;
    p.port = s.address().port;

    return p;
  }

  /** A TCP connection to the engine. */
  static async tcpClient(port: number, opts: { allowHalfOpen?: boolean; address?: string } = {}): Promise<RawSipPeer> {
    const p = new RawSipPeer('tcp');
    const s = net.connect({ port, host: opts.address ?? '127.0.0.1', allowHalfOpen: opts.allowHalfOpen ?? false });
    s.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
    p.#client = s;
    p.port = s.localPort ?? 0;
    p.#attach(s);

    return p;
  }

  /** A TCP listener on 127.0.0.1 (a UAS or a would-be victim); replies go over the request's connection. */
  static async tcpServer(): Promise<RawSipPeer> {
    const p = new RawSipPeer('tcp');
    const server = net.createServer((s) => {
      s.on('error', () => undefined);
      p.#attach(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    p.#server = server;
    p.port = (server.address() as net.AddressInfo).port;

    return p;
  }

  /** The TCP client's socket. */
  get socket(): net.Socket {
    if (!this.#client) {
      throw new Error('not a TCP client');
    }

    return this.#client;
  }

  /** Connections accepted by a TCP listener (and the client's own). */
  get connections(): net.Socket[] {
    return [...this.#sockets];
  }

  #attach(s: net.Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    const framer = new StreamFramer({ maxHeaderBytes: 65535, maxMessageBytes: 1 << 20 });
    s.on('data', (chunk: Buffer) => {
      for (const ev of framer.push(chunk)) {
        if (ev.kind === 'message') {
          this.#onMessage(ev.data, { address: s.remoteAddress ?? '', port: s.remotePort ?? 0 }, s);
        }
      }
    });
  }

  #onMessage(data: Buffer, from: { address: string; port: number }, conn?: net.Socket): void {
    let msg: SipMessage;
    try {
      msg = parseMessage(data, { datagram: !conn });
    } catch {
      // what the engine sends back about a bad request may itself not pass the strict parser
      // (a 400 echoing a forged tag): read it loosely
      const lenient = parseLenient(data);
      if (!lenient) {
        return;
      }
      msg = lenient;
    }
    const m: RawMessage = { msg, text: data.toString('utf8'), from, at: Date.now(), conn };
    this.received.push(m);
    for (const h of this.#handlers) {
      h(m);
    }
    for (let i = 0; i < this.#waiters.length; i++) {
      const w = this.#waiters[i]!;
      if (w.pred(m)) {
        this.#waiters.splice(i, 1);
        w.resolve(m);
        break;
      }
    }
  }

  /** Calls `handler` for every message received from now on. */
  onMessage(handler: (m: RawMessage) => void): void {
    this.#handlers.push(handler);
  }

  /** Sends text: UDP to `to` (default: the target), TCP over the client connection or `to.conn`. */
  send(text: string, to?: RawTarget | { conn: net.Socket }): void {
    const data = Buffer.from(text, 'utf8');
    if (to && 'conn' in to) {
      to.conn.write(data);

      return;
    }
    if (this.#udp) {
      const t = to ?? this.#target;
      if (!t) {
        throw new Error('no target');
      }
      this.#udp.send(data, t.port, t.address ?? '127.0.0.1');

      return;
    }
    if (!this.#client) {
      throw new Error('a TCP listener replies with reply()');
    }
    this.#client.write(data);
  }

  /** Answers a received message where it came from (its connection, or its source address). */
  reply(m: RawMessage, text: string): void {
    if (m.conn) {
      m.conn.write(Buffer.from(text, 'utf8'));
    } else {
      this.send(text, m.from);
    }
  }

  /** The first message (already received or still to come) matching `pred`; rejects after `timeoutMs`. */
  waitFor(pred: (m: RawMessage) => boolean, timeoutMs = 5000, what = 'a matching message'): Promise<RawMessage> {
    const seen = this.received.find(pred);
    if (seen) {
      return Promise.resolve(seen);
    }

    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (m: RawMessage) => {
          clearTimeout(t);
          resolve(m);
        },
      };
      const t = setTimeout(() => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) {
          this.#waiters.splice(i, 1);
        }
        reject(new Error(`timed out waiting for ${what}; received: ${this.received.map((r) => startLine(r.msg)).join(' | ') || 'nothing'}`));
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  /** Messages received so far that match. */
  all(pred: (m: RawMessage) => boolean): RawMessage[] {
    return this.received.filter(pred);
  }

  /** Closes every socket of the peer. */
  close(): void {
    this.#udp?.close();
    for (const s of this.#sockets) {
      s.destroy();
    }
    this.#server?.close();
  }
}

/** Start line, `Name: value` lines and body, with no checks; undefined when there is no start line. */
function parseLenient(data: Buffer): SipMessage | undefined {
  const text = data.toString('utf8');
  const sep = text.indexOf('\r\n\r\n');
  const [start = '', ...lines] = (sep < 0 ? text : text.slice(0, sep)).split('\r\n');
  const res = /^SIP\/2\.0 (\d{3}) ?(.*)$/.exec(start);
  const req = /^(\S+) (\S+) SIP\/2\.0$/.exec(start);
  if (!res && !req) {
    return undefined;
  }
  const headers = lines.filter((l) => l.includes(':')).map((l) => ({ name: l.slice(0, l.indexOf(':')).trim(), value: l.slice(l.indexOf(':') + 1).trim() }));

  return new SipMessage({
    isRequest: !!req,
    method: req?.[1] ?? '',
    uri: req?.[2] ?? '',
    status: res ? Number(res[1]) : 0,
    reason: res?.[2] ?? '',
    headers,
    body: Buffer.from(sep < 0 ? '' : text.slice(sep + 4), 'utf8'),
  });
}

/** `INVITE sip:...` or `200 INVITE`, for diagnostics. */
export function startLine(m: SipMessage): string {
  return m.isRequest ? `${m.method} ${m.uri}` : `${m.status} ${m.cseq?.method ?? ''}`;
}

/** Predicate: a request of a method (optionally with a Call-ID). */
export function isRequest(method: string, callId?: string): (m: RawMessage) => boolean {
  return (m) => m.msg.isRequest && m.msg.method === method && (callId === undefined || m.msg.callId === callId);
}

/** Predicate: a response with a status (or class, e.g. 200 matches only 200) to a CSeq method. */
export function isResponse(status: number, method?: string, callId?: string): (m: RawMessage) => boolean {
  return (m) => !m.msg.isRequest && m.msg.status === status && (method === undefined || m.msg.cseq?.method === method) && (callId === undefined || m.msg.callId === callId);
}

/** Predicate: any final response (≥ 200) to a CSeq method. */
export function isFinal(method: string, callId?: string): (m: RawMessage) => boolean {
  return (m) => !m.msg.isRequest && m.msg.status >= 200 && m.msg.cseq?.method === method && (callId === undefined || m.msg.callId === callId);
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The ACK for a 2xx (RFC 3261 §13.2.2.4): a new transaction to the Contact of the 2xx with the
 * dialog's tags and the INVITE's CSeq number.
 */
export function ackFor2xx(invite: { uri: string; callId: string; fromTag: string; cseq: number; transport?: 'UDP' | 'TCP'; viaPort?: number }, ok: SipMessage): string {
  const contact = ok.getHeader('contact');
  const uri = contact ? (/<([^>]+)>/.exec(contact)?.[1] ?? contact) : invite.uri;
  const routes = ok.getHeaderValues('record-route').reverse();

  return sipRequest({
    method: 'ACK',
    uri,
    transport: invite.transport,
    viaPort: invite.viaPort,
    callId: invite.callId,
    fromTag: invite.fromTag,
    toTag: ok.to?.params.tag ?? undefined,
    toUri: invite.uri,
    cseq: invite.cseq,
    contact: null,
    headers: routes.map((r) => `Route: ${r}`),
  });
}

/** A raw drachtio control-protocol client (an "app" that sends hand-written frames). */
export interface RawControlClient {
  socket: net.Socket;
  /** Sends one payload (leader plus optional CRLF and SIP text) as a frame. */
  send(payload: string): void;
  /** The next frame received (payload), in order. */
  next(timeoutMs?: number): Promise<string>;
  /** Resolves when the server closes the connection. */
  closed: Promise<void>;
}

/** Connects a raw control client; with `secret`, authenticates and registers `routes` first. */
export async function rawControlClient(port: number, auth?: { secret: string; routes?: string[] }): Promise<RawControlClient> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const frames: string[] = [];
  const waiters: ((f: string) => void)[] = [];
  const decoder = new FrameDecoder(1 << 20);
  socket.on('data', (d: Buffer) => {
    for (const f of decoder.push(d)) {
      const w = waiters.shift();
      if (w) {
        w(f);
      } else {
        frames.push(f);
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const c: RawControlClient = {
    socket,
    closed,
    send: (payload) => socket.write(encodeFrame(payload)),
    next: (timeoutMs = 5000) => {
      const f = frames.shift();
      if (f !== undefined) {
        return Promise.resolve(f);
      }

      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('timed out waiting for a control frame')), timeoutMs);
        waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
    },
  };
  if (auth) {
    c.send(`a1|authenticate|${auth.secret}|`);
    const reply = splitPayload(await c.next()).tokens;
    if (reply[3] !== 'OK') {
      throw new Error(`authentication refused: ${reply.join('|')}`);
    }
    for (const [i, r] of (auth.routes ?? []).entries()) {
      c.send(`r${i}|route|${r}`);
      await c.next();
    }
  }

  return c;
}
