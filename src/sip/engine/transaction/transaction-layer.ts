/**
 * The transaction layer (RFC 3261 §17, amended by RFC 6026): INVITE and non-INVITE client and
 * server transactions with timers A–K (plus RFC 6026's L and M), retransmission over UDP only,
 * request and response matching (§17.1.3, §17.2.3), ACK generation for non-2xx final responses
 * (§17.1.1.3), and unguessable branch ids.
 *
 * State machines (RFC 3261 Figures 5–8, RFC 6026 Figures 3 and 5):
 *
 *   ICT:  calling ─1xx→ proceeding ─2xx→ accepted ─M→ terminated
 *            │  └─300-699→ completed ─D→ terminated          (calling ─B→ terminated, 408)
 *   NICT: trying ─1xx→ proceeding ─final→ completed ─K→ terminated (─F→ terminated, 408)
 *   IST:  proceeding ─2xx→ accepted ─L→ terminated
 *            └─300-699→ completed ─ACK→ confirmed ─I→ terminated (completed ─H→ terminated)
 *   NIST: trying ─1xx→ proceeding ─final→ completed ─J→ terminated
 */
import { type Logger } from '../../../log/logger.js';
import { randomPoolBytes } from '../../../util/random.js';
import { parseNameAddr, type SipMessage } from '../message.js';
import { type Destination, type Flow, isReliable, type SipProtocol } from '../transport/types.js';
import { type TimerBase, timersFor, type TransactionTimers } from './timers.js';

/** The RFC 3261 §8.1.1.7 magic cookie that starts every branch we generate. */
export const BRANCH_COOKIE = 'z9hG4bK';

/** A new branch id: the magic cookie plus 128 random bits (unguessable, RFC 3261 §8.1.1.7). */
export function newBranch(): string {
  return `${BRANCH_COOKIE}${randomPoolBytes(16).toString('base64url')}`;
}

/** What the transaction layer needs from the transport layer. */
export interface TransportSender {
  send(data: Buffer, dest: Destination): Promise<Flow>;
}

/** The transaction user (the engine core): receives requests that start server transactions. */
export interface TransactionUser {
  /**
   * A request that matched no server transaction. `txn` is the new server transaction, or
   * undefined for ACK (an ACK that matches no INVITE server transaction belongs to a 2xx and is
   * the TU's business, RFC 3261 §17.2.3 and RFC 6026 §8.9).
   */
  onRequest(req: SipMessage, flow: Flow, txn: ServerTransaction | undefined): void;
  /** A response that matched no client transaction (e.g. a 2xx retransmitted late or a forked 2xx). */
  onStrayResponse(res: SipMessage, flow: Flow): void;
  /** An ACK that matched an INVITE server transaction in the Accepted state (RFC 6026 §8.7). */
  onAckInAccepted?(ack: SipMessage, flow: Flow, txn: ServerTransaction): void;
}

/** Callbacks of one client transaction. */
export interface ClientCallbacks {
  /** Every response passed up (1xx, the first final, and 2xx retransmissions for INVITE). */
  onResponse(res: SipMessage, flow: Flow): void;
  /** Timer B or F fired without a final response (the TU reports 408). */
  onTimeout(): void;
  /** The request could not be sent (the TU reports 503). */
  onTransportError(err: Error): void;
}

type ClientState = 'calling' | 'trying' | 'proceeding' | 'accepted' | 'completed' | 'terminated';
type ServerState = 'trying' | 'proceeding' | 'accepted' | 'completed' | 'confirmed' | 'terminated';

const CLIENT_TRANSITIONS: Record<ClientState, ClientState[]> = {
  calling: ['proceeding', 'accepted', 'completed', 'terminated'],
  trying: ['proceeding', 'completed', 'terminated'],
  proceeding: ['accepted', 'completed', 'terminated'],
  accepted: ['terminated'],
  completed: ['terminated'],
  terminated: [],
};

const SERVER_TRANSITIONS: Record<ServerState, ServerState[]> = {
  trying: ['proceeding', 'completed', 'terminated'],
  proceeding: ['accepted', 'completed', 'terminated'],
  accepted: ['terminated'],
  completed: ['confirmed', 'terminated'],
  confirmed: ['terminated'],
  terminated: [],
};

/** Thrown on an invalid state change; a bug in the engine, never caused by input. */
export class TransactionStateError extends Error {
  override readonly name = 'TransactionStateError';
}

function cseqMethod(msg: SipMessage): string {
  return msg.cseq?.method.toUpperCase() ?? '';
}

function topBranch(msg: SipMessage): string {
  return msg.topVia?.params.branch ?? '';
}

/** Key of a client transaction (RFC 3261 §17.1.3): top Via branch + CSeq method. */
function clientKey(branch: string, method: string): string {
  return `${branch}|${method}`;
}

/**
 * Key of a server transaction (RFC 3261 §17.2.3): branch + sent-by + method, ACK counted as
 * INVITE. Requests without the magic cookie (RFC 2543 peers) are keyed by Request-URI, Call-ID,
 * CSeq number, From tag and top Via instead.
 */
export function serverKey(req: SipMessage, methodOverride?: string): string {
  const via = req.topVia;
  const method = (methodOverride ?? req.method).toUpperCase();
  const m = method === 'ACK' ? 'INVITE' : method;
  const branch = via?.params.branch ?? '';
  const sentBy = `${via?.host ?? ''}:${via?.port ?? ''}`;
  if (branch.startsWith(BRANCH_COOKIE)) {
    return `${branch}|${sentBy}|${m}`;
  }
  const fromTag = req.from?.params.tag ?? '';

  // RFC 3261 §17.2.3 (and §9.2 for CANCEL): without the cookie, the Request-URI and the whole top
  // Via must match too, not just its sent-by: a request spiralling back through an RFC 2543 proxy
  // has the same Call-ID, CSeq and From tag and the same sent-by, but a new Request-URI and/or a
  // new (cookie-less) branch, and is a new transaction, not a retransmission. The ACK for a
  // non-2xx and the CANCEL carry the INVITE's Request-URI and top Via, so they still match. The
  // To tag is left out because the ACK carries the response's tag, which the INVITE did not.
  return `2543|${req.uri}|${req.callId}|${req.cseq?.seq ?? ''}|${fromTag}|${via?.transport ?? ''}|${sentBy}|${branch}|${m}`;
}

/** Common timer bookkeeping of a transaction. */
abstract class TransactionBase {
  protected readonly timers = new Map<string, NodeJS.Timeout>();

  protected startTimer(name: string, ms: number, fn: () => void): void {
    this.stopTimer(name);
    const t = setTimeout(() => {
      this.timers.delete(name);
      fn();
    }, ms);
    this.timers.set(name, t);
  }

  protected stopTimer(name: string): void {
    const t = this.timers.get(name);
    if (t) {
      clearTimeout(t);
      this.timers.delete(name);
    }
  }

  protected stopAllTimers(): void {
    for (const t of this.timers.values()) {
      clearTimeout(t);
    }
    this.timers.clear();
  }
}

/** An INVITE or non-INVITE client transaction. Created by TransactionLayer.sendRequest(). */
export class ClientTransaction extends TransactionBase {
  readonly request: SipMessage;
  readonly method: string;
  readonly branch: string;
  readonly key: string;
  readonly isInvite: boolean;
  #state: ClientState;
  #dest: Destination;
  #flow?: Flow;
  #t: TransactionTimers;
  #data: Buffer;
  #ack?: Buffer;
  #interval = 0;

  /** @private Use TransactionLayer.sendRequest(). */
  constructor(
    private readonly layer: TransactionLayer,
    request: SipMessage,
    dest: Destination,
    private readonly cb: ClientCallbacks,
    data?: Buffer,
  ) {
    super();
    this.request = request;
    this.method = request.method.toUpperCase();
    this.branch = topBranch(request);
    this.key = clientKey(this.branch, this.method);
    this.isInvite = this.method === 'INVITE';
    this.#state = this.isInvite ? 'calling' : 'trying';
    this.#dest = dest;
    this.#t = timersFor(layer.timerBase, isReliable(dest.protocol));
    this.#data = data ?? request.toBuffer();
  }

  /** Current state. */
  get state(): ClientState {
    return this.#state;
  }

  /** The flow the request went out on (after the first send). */
  get flow(): Flow | undefined {
    return this.#flow;
  }

  /** The request as sent, serialised. */
  get data(): Buffer {
    return this.#data;
  }

  /** The destination the request is sent to. */
  get destination(): Destination {
    return this.#dest;
  }

  #transition(to: ClientState): void {
    if (!CLIENT_TRANSITIONS[this.#state].includes(to)) {
      throw new TransactionStateError(`client transaction ${this.key}: ${this.#state} → ${to} is not allowed`);
    }
    this.#state = to;
    if (to === 'terminated') {
      this.stopAllTimers();
      this.layer.removeClient(this);
    }
  }

  /** @private Sends the request and starts the timers. */
  start(): void {
    // Timer B/F run from the first send; A/E only over unreliable transports.
    this.startTimer(this.isInvite ? 'B' : 'F', this.isInvite ? this.#t.B : this.#t.F, () => this.#onTimeout());
    this.#interval = this.isInvite ? this.#t.A : this.#t.E;
    this.#send(true);
  }

  #send(first: boolean): void {
    this.layer.transport.send(this.#data, this.#flow ? { ...this.#dest, flow: this.#flow } : this.#dest).then(
      (flow) => {
        this.#flow ??= flow;
        if (first && this.#interval > 0 && flow.protocol === 'udp' && this.#state !== 'terminated') {
          this.#armRetransmit();
        }
      },
      (err: Error) => {
        if (this.#state === 'terminated' || this.#state === 'completed' || this.#state === 'accepted') {
          return;
        }
        this.#transition('terminated');
        this.cb.onTransportError(err);
      },
    );
  }

  #armRetransmit(): void {
    const name = this.isInvite ? 'A' : 'E';
    this.startTimer(name, this.#interval, () => {
      if (this.#state === 'calling' || this.#state === 'trying' || (!this.isInvite && this.#state === 'proceeding')) {
        this.#send(false);
        // Timer A doubles without a cap; Timer E doubles up to T2, and stays at T2 in Proceeding.
        this.#interval = this.isInvite ? this.#interval * 2 : this.#state === 'proceeding' ? this.#t.T2 : Math.min(this.#interval * 2, this.#t.T2);
        this.#armRetransmit();
      }
    });
  }

  #onTimeout(): void {
    if (this.#state === 'calling' || this.#state === 'trying' || (!this.isInvite && this.#state === 'proceeding')) {
      this.#transition('terminated');
      this.cb.onTimeout();
    }
  }

  /** @private A response matched this transaction. */
  receive(res: SipMessage, flow: Flow): void {
    const status = res.status;
    if (this.isInvite) {
      this.#receiveInvite(res, status, flow);
    } else {
      this.#receiveNonInvite(res, status, flow);
    }
  }

  #receiveInvite(res: SipMessage, status: number, flow: Flow): void {
    switch (this.#state) {
      case 'calling':
      case 'proceeding':
        if (status < 200) {
          if (this.#state === 'calling') {
            this.#transition('proceeding');
            this.stopTimer('A');
            this.stopTimer('B'); // RFC 3261 §17.1.1.2: Timer B only runs in Calling
          }
          this.cb.onResponse(res, flow);
        } else if (status < 300) {
          this.#transition('accepted');
          this.stopTimer('A');
          this.stopTimer('B');
          this.startTimer('M', this.#t.M, () => this.#transition('terminated'));
          this.cb.onResponse(res, flow);
        } else {
          this.#transition('completed');
          this.stopTimer('A');
          this.stopTimer('B');
          this.#sendAck(res);
          this.startTimer('D', this.#t.D, () => this.#transition('terminated'));
          this.cb.onResponse(res, flow);
          if (this.#t.D === 0) {
            this.#transition('terminated');
          }
        }
        break;
      case 'accepted':
        // RFC 6026 §8.4: 2xx retransmissions (and 2xx from other forks) go to the TU.
        if (status >= 200 && status < 300) {
          this.cb.onResponse(res, flow);
        }
        break;
      case 'completed':
        if (status >= 300) {
          this.#sendAck(res);
        }
        break;
      default:
        break;
    }
  }

  #receiveNonInvite(res: SipMessage, status: number, flow: Flow): void {
    switch (this.#state) {
      case 'trying':
      case 'proceeding':
        if (status < 200) {
          if (this.#state === 'trying') {
            this.#transition('proceeding');
          }
          this.cb.onResponse(res, flow);
        } else {
          this.#transition('completed');
          this.stopTimer('E');
          this.stopTimer('F');
          this.cb.onResponse(res, flow);
          if (this.#t.K === 0) {
            this.#transition('terminated');
          } else {
            this.startTimer('K', this.#t.K, () => this.#transition('terminated'));
          }
        }
        break;
      default:
        break; // Completed absorbs retransmissions
    }
  }

  /** RFC 3261 §17.1.1.3: the ACK for a non-2xx final response, part of this transaction. */
  #sendAck(res: SipMessage): void {
    if (!this.#ack) {
      const req = this.request;
      const ack = req.clone();
      ack.method = 'ACK';
      ack.body = Buffer.alloc(0);
      ack.headers = [];
      for (const h of req.headers) {
        const n = h.name.toLowerCase();
        if (n === 'via' || n === 'v') {
          if (!ack.hasHeader('via')) {
            // Only the top Via (§17.1.1.3). Split with the list-aware splitter: a plain split(',')
            // would cut a quoted Via parameter that holds a comma and send a malformed ACK.
            ack.headers.push({ name: h.name, value: req.getHeaderValues('via')[0] ?? '' });
          }
        } else if (n === 'from' || n === 'f' || n === 'call-id' || n === 'i' || n === 'route' || n === 'max-forwards') {
          ack.headers.push({ name: h.name, value: h.value });
        }
      }
      ack.addHeader('To', res.getHeader('to') ?? req.getHeader('to') ?? '');
      ack.addHeader('CSeq', `${req.cseq?.seq ?? 1} ACK`);
      ack.addHeader('Content-Length', '0');
      this.#ack = ack.toBuffer();
    }
    this.layer.transport.send(this.#ack, this.#flow ? { ...this.#dest, flow: this.#flow } : this.#dest).catch(() => undefined);
  }

  /** Ends the transaction at once (engine shutdown, owner gone); no callback fires. */
  terminate(): void {
    if (this.#state !== 'terminated') {
      this.#transition('terminated');
    }
  }
}

/** An INVITE or non-INVITE server transaction. Created by the transaction layer for each new request. */
export class ServerTransaction extends TransactionBase {
  readonly request: SipMessage;
  readonly method: string;
  readonly key: string;
  readonly flow: Flow;
  readonly isInvite: boolean;
  #state: ServerState;
  #t: TransactionTimers;
  #last?: Buffer;
  #lastStatus = 0;
  #interval = 0;
  #onTerminated: (() => void)[] = [];
  /** Fires when Timer H expires without an ACK for a non-2xx final response. */
  onAckTimeout?: () => void;

  /** @private */
  constructor(
    private readonly layer: TransactionLayer,
    request: SipMessage,
    flow: Flow,
  ) {
    super();
    this.request = request;
    this.method = request.method.toUpperCase();
    this.key = serverKey(request);
    this.flow = flow;
    this.isInvite = this.method === 'INVITE';
    this.#state = this.isInvite ? 'proceeding' : 'trying';
    this.#t = timersFor(layer.timerBase, isReliable(flow.protocol));
  }

  /** Current state. */
  get state(): ServerState {
    return this.#state;
  }

  /** Status of the last response sent (0 when none). */
  get lastStatus(): number {
    return this.#lastStatus;
  }

  /** Whether a final response was sent. */
  get finalSent(): boolean {
    return this.#lastStatus >= 200;
  }

  /** Registers a callback for the end of the transaction. */
  onTerminate(fn: () => void): void {
    this.#onTerminated.push(fn);
  }

  #transition(to: ServerState): void {
    if (!SERVER_TRANSITIONS[this.#state].includes(to)) {
      throw new TransactionStateError(`server transaction ${this.key}: ${this.#state} → ${to} is not allowed`);
    }
    this.#state = to;
    if (to === 'terminated') {
      this.stopAllTimers();
      this.layer.removeServer(this);
      for (const fn of this.#onTerminated.splice(0)) {
        fn();
      }
    }
  }

  /**
   * Where responses go (RFC 3261 §18.2.2 with RFC 3581): for TCP/TLS back over the request's
   * connection while it is open, else a new connection to the `received` address and the sent-by
   * port (default 5060, 5061 for TLS), never rport (the client's ephemeral port); for UDP to the
   * source address and rport of the top Via, from the socket the request arrived on.
   */
  responseDestination(): Destination {
    const via = this.request.topVia;
    const received = via?.params.received ?? via?.host ?? this.flow.remote.address;
    if (isReliable(this.flow.protocol)) {
      return { protocol: this.flow.protocol, host: received, port: via?.port ?? (this.flow.protocol === 'tls' ? 5061 : 5060), flow: this.flow };
    }
    const rport = via?.params.rport;
    const port = rport ? Number(rport) : (via?.port ?? this.flow.remote.port);

    return { protocol: this.flow.protocol, host: received, port: Number.isFinite(port) && port > 0 ? port : this.flow.remote.port, flow: this.flow };
  }

  /**
   * Sends a response through the state machine. A response after the final one is refused.
   * @param data the response already serialised (saves a second serialisation), if the caller has it
   * @returns the flow used
   * @throws {TransactionStateError} when the transaction cannot send it (already final, terminated)
   * @throws {TransportError} when the transport fails
   */
  async respond(res: SipMessage, data?: Buffer): Promise<Flow> {
    const status = res.status;
    if (this.#state === 'terminated' || this.#state === 'completed' || this.#state === 'confirmed') {
      throw new TransactionStateError(`final response already sent on ${this.method} transaction`);
    }
    // RFC 6026: in Accepted, further 2xx (retransmissions by the TU) pass straight through.
    if (this.#state === 'accepted') {
      if (status < 200 || status >= 300) {
        throw new TransactionStateError('final response already sent on INVITE transaction');
      }

      return this.#sendRaw(data ?? res.toBuffer());
    }
    data ??= res.toBuffer();
    this.#last = data;
    this.#lastStatus = status;
    if (status < 200) {
      if (this.#state === 'trying') {
        this.#transition('proceeding');
      }

      return this.#sendRaw(data);
    }
    if (this.isInvite && status < 300) {
      this.#transition('accepted');
      this.startTimer('L', this.#t.L, () => this.#transition('terminated'));

      return this.#sendRaw(data);
    }
    this.#transition('completed');
    if (this.isInvite) {
      if (this.#t.G > 0) {
        this.#interval = this.#t.G;
        this.#armG();
      }
      this.startTimer('H', this.#t.H, () => {
        this.#transition('terminated');
        this.onAckTimeout?.();
      });
    } else if (this.#t.J === 0) {
      queueMicrotask(() => this.#state === 'completed' && this.#transition('terminated'));
    } else {
      this.startTimer('J', this.#t.J, () => this.#transition('terminated'));
    }

    return this.#sendRaw(data);
  }

  #armG(): void {
    this.startTimer('G', this.#interval, () => {
      if (this.#state !== 'completed' || !this.#last) {
        return;
      }
      void this.#sendRaw(this.#last).catch(() => undefined);
      this.#interval = Math.min(this.#interval * 2, this.#t.T2);
      this.#armG();
    });
  }

  async #sendRaw(data: Buffer): Promise<Flow> {
    return this.layer.transport.send(data, this.responseDestination());
  }

  /** @private A retransmission of the request, or an ACK for an INVITE, matched this transaction. */
  receive(req: SipMessage, flow: Flow): void {
    const method = req.method.toUpperCase();
    if (method === 'ACK') {
      if (this.#state === 'completed') {
        this.stopTimer('G');
        this.stopTimer('H');
        this.#transition('confirmed');
        if (this.#t.I === 0) {
          this.#transition('terminated');
        } else {
          this.startTimer('I', this.#t.I, () => this.#transition('terminated'));
        }
      } else if (this.#state === 'accepted') {
        this.layer.tu.onAckInAccepted?.(req, flow, this);
      }

      return;
    }
    // A retransmitted request: re-send the last response where the state machine says so.
    if ((this.#state === 'proceeding' || this.#state === 'completed') && this.#last) {
      void this.#sendRaw(this.#last).catch(() => undefined);
    }
  }

  /** Ends the transaction at once without sending anything. */
  terminate(): void {
    if (this.#state !== 'terminated') {
      this.#transition('terminated');
    }
  }
}

/** Options of the transaction layer. */
export interface TransactionLayerOptions {
  transport: TransportSender;
  timers: TimerBase;
  tu: TransactionUser;
  logger: Logger;
}

/** Matches messages to transactions and creates new ones. */
export class TransactionLayer {
  readonly transport: TransportSender;
  readonly timerBase: TimerBase;
  readonly tu: TransactionUser;
  readonly #log: Logger;
  readonly #clients = new Map<string, ClientTransaction>();
  readonly #servers = new Map<string, ServerTransaction>();

  constructor(opts: TransactionLayerOptions) {
    this.transport = opts.transport;
    this.timerBase = opts.timers;
    this.tu = opts.tu;
    this.#log = opts.logger;
  }

  /** Number of live client and server transactions. */
  get size(): { clients: number; servers: number } {
    return { clients: this.#clients.size, servers: this.#servers.size };
  }

  /**
   * Starts a client transaction for a request whose top Via already carries a fresh branch.
   * @param data the request already serialised, if the caller has it
   * @throws {Error} when the request has no branch
   */
  sendRequest(req: SipMessage, dest: Destination, cb: ClientCallbacks, data?: Buffer): ClientTransaction {
    if (!topBranch(req)) {
      throw new Error('request has no Via branch');
    }
    const txn = new ClientTransaction(this, req, dest, cb, data);
    this.#clients.set(txn.key, txn);
    txn.start();

    return txn;
  }

  /** Sends a message outside any transaction (ACK for a 2xx, stateless forwarding). */
  async sendStateless(msg: SipMessage | Buffer, dest: Destination): Promise<Flow> {
    return this.transport.send(Buffer.isBuffer(msg) ? msg : msg.toBuffer(), dest);
  }

  /** Feeds a message from the transport layer. */
  receive(msg: SipMessage, flow: Flow): void {
    if (msg.isRequest) {
      this.#receiveRequest(msg, flow);
    } else {
      this.#receiveResponse(msg, flow);
    }
  }

  #receiveResponse(res: SipMessage, flow: Flow): void {
    const txn = this.#clients.get(clientKey(topBranch(res), cseqMethod(res)));
    if (txn) {
      txn.receive(res, flow);

      return;
    }
    this.tu.onStrayResponse(res, flow);
  }

  #receiveRequest(req: SipMessage, flow: Flow): void {
    const key = serverKey(req);
    const existing = this.#servers.get(key);
    const method = req.method.toUpperCase();
    if (existing) {
      // For RFC 2543 peers the ACK for a 2xx carries the INVITE's branch-less key too; an ACK
      // whose To tag differs from ours is still for this transaction (RFC 3261 §17.2.3).
      existing.receive(req, flow);

      return;
    }
    if (method === 'ACK') {
      this.tu.onRequest(req, flow, undefined);

      return;
    }
    const txn = new ServerTransaction(this, req, flow);
    this.#servers.set(key, txn);
    this.tu.onRequest(req, flow, txn);
  }

  /** The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2), if still alive. */
  findInviteForCancel(cancel: SipMessage): ServerTransaction | undefined {
    return this.#servers.get(serverKey(cancel, 'INVITE'));
  }

  /** @private */
  removeClient(txn: ClientTransaction): void {
    if (this.#clients.get(txn.key) === txn) {
      this.#clients.delete(txn.key);
    }
  }

  /** @private */
  removeServer(txn: ServerTransaction): void {
    if (this.#servers.get(txn.key) === txn) {
      this.#servers.delete(txn.key);
    }
  }

  /** Terminates every transaction (shutdown). */
  close(): void {
    for (const t of [...this.#clients.values()]) {
      t.terminate();
    }
    for (const t of [...this.#servers.values()]) {
      t.terminate();
    }
    this.#log.debug('transaction layer closed');
  }
}

/** The protocol of a Via transport token, for response routing. */
export function viaProtocol(transport: string): SipProtocol {
  const t = transport.toUpperCase();

  return t === 'TLS' || t === 'WSS' ? 'tls' : t === 'TCP' || t === 'WS' ? 'tcp' : 'udp';
}

/** The From tag of a message, if any. */
export function fromTag(msg: SipMessage): string | undefined {
  const f = msg.getHeader('from');

  return f ? (parseNameAddr(f)?.params.tag ?? undefined) : undefined;
}
