/**
 * Proxying for apps (srf.proxyRequest, wire protocol §8): an RFC 3261 §16 stateful proxy with
 * serial or parallel forking, Record-Route, relayed provisionals, best-response selection
 * (§16.7), CANCEL fan-out, per-target provisional/final timeouts, and the forwarding of later
 * requests in record-routed dialogs (§16.12 loose routing).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { type Logger } from '../../../log/logger.js';
import { type AppConnection } from '../control/server.js';
import { formatVia, parseNameAddr, parseUri, parseVia, SipMessage } from '../message.js';
import { type ClientTransaction, newBranch, type ServerTransaction } from '../transaction/transaction-layer.js';
import { type Flow } from '../transport/types.js';
import { AppMessageError, headerKey, meta, outgoingHeaderName, parseAppMessage, uriOf } from './build.js';
import { type EngineCore } from './engine-core.js';
import { type IncomingRequest } from './state.js';

interface Branch {
  target: string;
  client?: ClientTransaction;
  req?: SipMessage;
  /** A 1xx other than 100 arrived (the provisional timeout then gives way to the final one). */
  gotProvisional: boolean;
  /** Any 1xx arrived, 100 included: only then may a CANCEL go out (RFC 3261 §9.1, §16.10). */
  gotAnyProvisional: boolean;
  /** A CANCEL is wanted but waits for the first provisional. */
  cancelPending: boolean;
  final: number;
  timer?: NodeJS.Timeout;
}

interface ProxyContext {
  inc: IncomingRequest;
  conn: AppConnection;
  msgId: string;
  recordRoute: boolean;
  fullResponse: boolean;
  followRedirects: boolean;
  serial: boolean;
  provisionalTimeoutMs: number;
  finalTimeoutMs: number;
  targets: string[];
  next: number;
  branches: Branch[];
  extraHeaders: { name: string; value: string }[];
  best?: SipMessage;
  answered: boolean;
  canceled: boolean;
  finished: boolean;
  redirects: number;
}

/** Parses "2s", "1500ms", "3" (seconds) or "" (default). */
function parseTimeout(text: string, defaultMs: number): number {
  const m = /^(\d+)(ms|s)?$/.exec(text.trim());
  if (!m) {
    return defaultMs;
  }

  return m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000;
}

/** RFC 3261 §16.7 step 6: which final response is "best" (6xx, then the lowest class, 503 → 500). */
function better(a: SipMessage | undefined, b: SipMessage): boolean {
  if (!a) {
    return true;
  }
  const cls = (s: number) => (s >= 600 ? 0 : Math.floor(s / 100));
  if (a.status >= 600) {
    return false;
  }
  if (b.status >= 600) {
    return true;
  }

  return cls(b.status) < cls(a.status);
}

/** The stateful proxy of the engine. */
export class ProxyCore {
  readonly #core: EngineCore;
  readonly #log: Logger;
  readonly #byServer = new WeakMap<ServerTransaction, ProxyContext>();
  readonly #active = new Set<ProxyContext>();
  /**
   * Key of the Record-Route tokens: our Record-Route URI carries `rr=<HMAC(Call-ID, From tag)>`, and
   * only requests whose Route names us with a valid token are forwarded (else anyone could use the
   * engine as an open relay toward any host and port). Random per engine.
   */
  readonly #rrKey = randomBytes(32);

  constructor(core: EngineCore, logger: Logger) {
    this.#core = core;
    this.#log = logger;
  }

  /** The Record-Route token of a dialog: HMAC of its Call-ID and the From tag of its initial request. */
  #rrToken(callId: string, fromTag: string): string {
    return createHmac('sha256', this.#rrKey).update(`${callId}\n${fromTag}`).digest('base64url').slice(0, 22);
  }

  /** Whether a Route URI's `rr` token was made by us for this request's dialog (either direction). */
  #validRrToken(token: string | null | undefined, req: SipMessage): boolean {
    if (!token || token.length !== 22) {
      return false;
    }
    const got = Buffer.from(token);
    for (const tag of [req.from?.params.tag, req.to?.params.tag]) {
      if (tag && timingSafeEqual(got, Buffer.from(this.#rrToken(req.callId, tag)))) {
        return true;
      }
    }

    return false;
  }

  /** Whether a server transaction is being proxied. */
  owns(txn: ServerTransaction): boolean {
    return this.#byServer.has(txn);
  }

  /** `proxy|<txnId>|...` from an app. */
  onProxyMessage(conn: AppConnection, tokens: string[], sip: string | undefined): void {
    const [msgId = '', , txnId = '', remain = '', full = '', follow = '', mode = '', provTmo = '', finalTmo = '', ...dests] = tokens;
    // Everything that can refuse the message is checked before the request is taken from the app:
    // a refused proxy message leaves the request with the app, which can still answer it.
    const pending = this.#core.peekIncoming(txnId);
    if (!pending || pending.server.finalSent || pending.canceled) {
      throw new AppMessageError(`Unknown transaction id: ${txnId}`);
    }
    const targets = dests.filter((d) => d !== '').map((d) => (/^[a-z]+:/i.test(d) ? d : `sip:${d}`));
    if (targets.length === 0) {
      throw new AppMessageError('no destination to proxy to');
    }
    const skeleton = sip ? parseAppMessage(sip) : SipMessage.request(pending.req.method, targets[0]!);
    const inc = this.#core.takeIncoming(txnId)!;
    const mf = inc.req.getHeader('max-forwards');
    if (mf !== undefined && Number(mf) <= 0) {
      this.#respondUpstream(inc, synth(inc.req, 483, 'Too Many Hops'));
      throw new AppMessageError('Too Many Hops');
    }
    try {
      this.#start(conn, inc, msgId, { remain, full, follow, mode, provTmo, finalTmo }, targets, skeleton);
    } catch (err) {
      // taken from the app and not proxied: the caller must still get an answer
      this.#log.error({ err, callId: inc.req.callId }, 'proxying failed');
      if (!inc.server.finalSent) {
        this.#respondUpstream(inc, synth(inc.req, 500, 'Server Internal Error'));
      }
      throw new AppMessageError(`error proxying request to ${targets.join(', ')}`);
    }
  }

  #start(
    conn: AppConnection,
    inc: IncomingRequest,
    msgId: string,
    o: { remain: string; full: string; follow: string; mode: string; provTmo: string; finalTmo: string },
    targets: string[],
    skeleton: SipMessage,
  ): void {
    const { remain, full, follow, mode, provTmo, finalTmo } = o;
    const extraHeaders = skeleton.headers.filter((h) => !['via', 'route', 'record-route', 'content-length', 'from', 'to', 'call-id', 'cseq', 'max-forwards'].includes(headerKey(h.name)));
    const ctx: ProxyContext = {
      inc,
      conn,
      msgId,
      recordRoute: remain === 'remainInDialog',
      fullResponse: full === 'fullResponse',
      followRedirects: follow === 'followRedirects',
      serial: mode !== 'simultaneous',
      provisionalTimeoutMs: parseTimeout(provTmo, 5_000),
      finalTimeoutMs: parseTimeout(finalTmo, 60_000),
      targets,
      next: 0,
      branches: [],
      extraHeaders,
      answered: false,
      canceled: false,
      finished: false,
      redirects: 0,
    };
    this.#byServer.set(inc.server, ctx);
    this.#active.add(ctx);
    if (ctx.serial) {
      this.#tryNext(ctx);
    } else {
      while (ctx.next < ctx.targets.length) {
        this.#tryNext(ctx);
      }
    }
    if (ctx.branches.length === 0) {
      // no target could be tried (wire protocol §8.2): 500 upstream and NOK
      this.#forwardBest(ctx);
    }
  }

  #tryNext(ctx: ProxyContext): boolean {
    while (ctx.next < ctx.targets.length) {
      const target = ctx.targets[ctx.next++]!;
      try {
        this.#startBranch(ctx, target);

        return true;
      } catch (err) {
        this.#log.debug({ err: (err as Error).message, target }, 'proxy target unusable');
      }
    }

    return false;
  }

  #startBranch(ctx: ProxyContext, target: string): void {
    const inc = ctx.inc;
    const req = inc.req.clone();
    const targetUri = parseUri(target);
    if (!targetUri) {
      throw new AppMessageError(`invalid proxy destination: ${target}`);
    }
    const ruri = parseUri(req.uri);
    // RFC 3261 §16.5: a Request-URI naming us is replaced by the target; otherwise the target is
    // only the next hop.
    if (!ruri || this.#core.transport.isLocal(ruri.host, ruri.port)) {
      req.uri = target;
    }
    const dest = this.#core.destinationOf(target);
    const mf = req.getHeader('max-forwards');
    req.setHeader('Max-Forwards', String(mf === undefined ? 70 : Math.max(0, Number(mf) - 1)));
    const point = this.#core.pointFor(dest.protocol, dest.host);
    if (ctx.recordRoute) {
      if (req.method.toUpperCase() === 'REGISTER') {
        req.addHeader('Path', `<${uriOf(point)};lr>`, 'first');
        req.addHeader('Require', 'path');
      } else {
        req.addHeader('Record-Route', `<${uriOf(point)};lr;rr=${this.#rrToken(req.callId, req.from?.params.tag ?? '')}>`, 'first');
      }
    }
    for (const h of ctx.extraHeaders) {
      req.setHeader(outgoingHeaderName(h.name), h.value);
    }
    req.addHeader('Via', this.#core.viaFor(dest, newBranch()), 'first');
    const branch: Branch = { target, req, gotProvisional: false, gotAnyProvisional: false, cancelPending: false, final: 0 };
    ctx.branches.push(branch);
    const isInvite = req.method.toUpperCase() === 'INVITE';
    if (isInvite) {
      branch.timer = setTimeout(() => this.#branchTimeout(ctx, branch), ctx.provisionalTimeoutMs);
    }
    branch.client = this.#core.txl.sendRequest(req, dest, {
      onResponse: (res, flow) => this.#onBranchResponse(ctx, branch, res, flow),
      onTimeout: () => this.#onBranchFinal(ctx, branch, synth(req, 408, 'Request Timeout'), undefined),
      onTransportError: () => this.#onBranchFinal(ctx, branch, synth(req, 503, 'Service Unavailable'), undefined),
    });
  }

  #branchTimeout(ctx: ProxyContext, b: Branch): void {
    if (b.final || ctx.finished) {
      return;
    }
    this.#cancelBranch(b);
    this.#onBranchFinal(ctx, b, synth(b.req!, 408, 'Request Timeout'), undefined);
  }

  /**
   * CANCELs a branch's INVITE, or — when it has had no provisional response yet — marks it to be
   * CANCELed on the first one (RFC 3261 §9.1, §16.10): a CANCEL must not overtake the INVITE. A
   * branch that never answers ends with Timer B.
   */
  #cancelBranch(b: Branch): void {
    if (!b.client || b.final || !b.req || b.req.method.toUpperCase() !== 'INVITE') {
      return;
    }
    if (!b.gotAnyProvisional) {
      b.cancelPending = true;

      return;
    }
    this.#sendBranchCancel(b);
  }

  #sendBranchCancel(b: Branch): void {
    const state = b.client?.state;
    if (!b.client || !b.req || (state !== 'calling' && state !== 'proceeding')) {
      return;
    }
    const inv = b.req;
    const cancel = SipMessage.request('CANCEL', inv.uri);
    cancel.addHeader('Via', inv.getHeaders('via')[0]!.split(',')[0]!.trim());
    for (const n of ['Max-Forwards', 'From', 'To', 'Call-ID', 'Route']) {
      for (const v of inv.getHeaders(n)) {
        cancel.addHeader(n, v);
      }
    }
    cancel.addHeader('CSeq', `${inv.cseq?.seq ?? 1} CANCEL`);
    cancel.addHeader('Content-Length', '0');
    const dest = b.client.flow ? { ...b.client.destination, flow: b.client.flow } : b.client.destination;
    this.#core.txl.sendRequest(cancel, dest, { onResponse: () => undefined, onTimeout: () => undefined, onTransportError: () => undefined });
  }

  #onBranchResponse(ctx: ProxyContext, b: Branch, res: SipMessage, flow: Flow): void {
    const status = res.status;
    if (status < 200) {
      b.gotAnyProvisional = true;
      if (b.cancelPending) {
        b.cancelPending = false;
        this.#sendBranchCancel(b);

        return;
      }
      if (status > 100) {
        b.gotProvisional = true;
        clearTimeout(b.timer);
        b.timer = setTimeout(() => this.#branchTimeout(ctx, b), ctx.finalTimeoutMs);
        if (!ctx.finished) {
          this.#respondUpstream(ctx.inc, stripTopVia(res));
        }
      }

      return;
    }
    if (status < 300) {
      // 2xx (first or retransmitted, any branch) go upstream at once (RFC 3261 §16.7 step 5).
      const first = !b.final;
      b.final = status;
      clearTimeout(b.timer);
      this.#respondUpstream(ctx.inc, stripTopVia(res));
      if (first && !ctx.answered) {
        ctx.answered = true;
        this.#report(ctx, res, flow);
        for (const other of ctx.branches) {
          if (other !== b) {
            this.#cancelBranch(other);
          }
        }
        this.#finish(ctx);
      }

      return;
    }
    this.#onBranchFinal(ctx, b, res, flow);
  }

  #onBranchFinal(ctx: ProxyContext, b: Branch, res: SipMessage, flow: Flow | undefined): void {
    if (b.final) {
      return;
    }
    b.final = res.status;
    clearTimeout(b.timer);
    if (ctx.finished) {
      return;
    }
    this.#report(ctx, res, flow);
    if (better(ctx.best, res)) {
      ctx.best = res;
    }
    if (ctx.followRedirects && res.status >= 300 && res.status < 400 && ctx.redirects < 5) {
      ctx.redirects++;
      for (const c of res.getHeaderValues('contact')) {
        const uri = parseNameAddr(c)?.uri;
        if (uri) {
          ctx.targets.push(uri);
        }
      }
    }
    if (res.status >= 600) {
      for (const other of ctx.branches) {
        this.#cancelBranch(other);
      }
      this.#forwardBest(ctx);

      return;
    }
    if (!ctx.canceled && (ctx.serial || ctx.next < ctx.targets.length) && this.#tryNext(ctx)) {
      return;
    }
    if (ctx.branches.every((x) => x.final)) {
      this.#forwardBest(ctx);
    }
  }

  #forwardBest(ctx: ProxyContext): void {
    if (ctx.finished) {
      return;
    }
    // A branch's response carries our Via on top; a response made from the upstream request does not.
    this.#respondUpstream(ctx.inc, ctx.best ? stripTopVia(ctx.best) : synth(ctx.inc.req, 500, 'Server Internal Error'));
    if (!ctx.best) {
      ctx.conn.reply(ctx.msgId, ['NOK', `error proxying request to ${ctx.targets.join(', ')}`]);
    }
    this.#finish(ctx);
  }

  #finish(ctx: ProxyContext): void {
    if (ctx.finished) {
      return;
    }
    ctx.finished = true;
    if (ctx.best || ctx.answered) {
      ctx.conn.reply(ctx.msgId, ['OK', 'done']);
    }
    // keep the context until the upstream transaction ends (CANCEL, 2xx retransmissions)
    ctx.inc.server.onTerminate(() => this.#active.delete(ctx));
  }

  #report(ctx: ProxyContext, res: SipMessage, flow: Flow | undefined): void {
    if (!ctx.fullResponse) {
      return;
    }
    const f = flow ?? { protocol: ctx.inc.flow.protocol, remote: { address: '', port: 0 } };
    ctx.conn.reply(ctx.msgId, ['OK', ...meta('network', res.toBuffer().length, f.protocol, f.remote), '', '', 'continue'], res.toString());
  }

  #respondUpstream(inc: IncomingRequest, res: SipMessage): void {
    inc.server.respond(res).catch((err: unknown) => this.#log.debug({ err }, 'cannot relay response upstream'));
  }

  /** A CANCEL from upstream for a proxied INVITE: CANCEL every branch (their 487s come back). */
  cancel(invite: ServerTransaction, _cancel: SipMessage): void {
    const ctx = this.#byServer.get(invite);
    if (!ctx) {
      return;
    }
    ctx.canceled = true;
    for (const b of ctx.branches) {
      this.#cancelBranch(b);
    }
    if (ctx.branches.every((b) => !b.client)) {
      this.#respondUpstream(ctx.inc, synth(ctx.inc.req, 487, 'Request Terminated'));
      this.#finish(ctx);
    }
  }

  /** Whether a request's top Route names us (a dialog record-routed through our proxy). */
  isLooseRouted(req: SipMessage): boolean {
    const top = req.getHeaderValues('route')[0];
    if (!top) {
      return false;
    }
    const u = parseUri(parseNameAddr(top)?.uri ?? '');

    return !!u && this.#core.transport.isLocal(u.host, u.port);
  }

  /**
   * Forwards a request in a record-routed dialog (RFC 3261 §16.12): pops our Route, sends to the
   * next Route or the Request-URI. ACK goes statelessly; anything else through a client
   * transaction whose responses are relayed on the request's server transaction.
   * Only a Route we wrote ourselves (its `rr` token matches the dialog) is honoured.
   * @returns false when the request is not ours to forward (no valid token): the caller then treats
   *   it as an ordinary in-dialog request
   */
  forwardInDialog(req: SipMessage, flow: Flow, txn: ServerTransaction | undefined): boolean {
    const routes = req.getHeaderValues('route');
    let i = 0;
    let valid = false;
    while (i < routes.length) {
      const u = parseUri(parseNameAddr(routes[i]!)?.uri ?? '');
      if (!u || !this.#core.transport.isLocal(u.host, u.port)) {
        break;
      }
      valid ||= this.#validRrToken(u.params.rr, req);
      i++;
    }
    if (!valid) {
      this.#log.debug({ method: req.method, callId: req.callId, remote: flow.remote }, 'request routed through us without a valid Record-Route token; not forwarded');

      return false;
    }
    const method = req.method.toUpperCase();
    const mf = req.getHeader('max-forwards');
    if (mf !== undefined && Number(mf) <= 0) {
      // RFC 3261 §16.3 step 2
      if (txn && method !== 'ACK') {
        this.#respondUpstream({ server: txn } as IncomingRequest, synth(req, 483, 'Too Many Hops'));
      }

      return true;
    }
    const fwd = req.clone();
    fwd.removeHeader('route');
    for (const r of routes.slice(i)) {
      fwd.addHeader('Route', r);
    }
    const nextRoute = routes[i];
    const nextHop = nextRoute ? (parseNameAddr(nextRoute)?.uri ?? fwd.uri) : fwd.uri;
    let dest;
    try {
      dest = this.#core.destinationOf(nextHop);
      this.#core.pointFor(dest.protocol, dest.host); // throws when we have no such transport
    } catch {
      if (txn && method !== 'ACK') {
        this.#respondUpstream({ server: txn } as IncomingRequest, synth(req, 400, 'Bad Route'));
      }

      return true;
    }
    fwd.setHeader('Max-Forwards', String(mf === undefined ? 70 : Math.max(0, Number(mf) - 1)));
    if (method === 'ACK' || !txn) {
      // RFC 3261 §16.11: a stateless branch must be the same for retransmissions.
      const branch = `z9hG4bK-sl-${createHash('sha1').update(`${req.topVia?.params.branch ?? ''}|${req.callId}|${req.cseq?.seq ?? ''}`).digest('hex').slice(0, 20)}`;
      fwd.addHeader('Via', this.#core.viaFor(dest, branch), 'first');
      void this.#core.txl.sendStateless(fwd, dest).catch(() => undefined);

      return true;
    }
    fwd.addHeader('Via', this.#core.viaFor(dest, newBranch()), 'first');
    const inc = { server: txn } as IncomingRequest;
    this.#core.txl.sendRequest(fwd, dest, {
      onResponse: (res) => {
        if (res.status > 100) {
          this.#respondUpstream(inc, stripTopVia(res));
        }
      },
      onTimeout: () => this.#respondUpstream(inc, synth(req, 408, 'Request Timeout')),
      onTransportError: () => this.#respondUpstream(inc, synth(req, 503, 'Service Unavailable')),
    });

    return true;
  }

  /** Responses to statelessly forwarded requests are not tracked (only ACK is forwarded so). */
  forwardStatelessResponse(_res: SipMessage): boolean {
    return false;
  }

  /** Proxy contexts continue without their app; only the reports stop. */
  onAppDisconnect(_conn: AppConnection): void {
    // the upstream and downstream transactions finish on their own
  }

  /** Stops every branch timer (shutdown). */
  close(): void {
    for (const ctx of this.#active) {
      for (const b of ctx.branches) {
        clearTimeout(b.timer);
      }
    }
    this.#active.clear();
  }
}

/** A response copied from a request (Via, From, To, Call-ID, CSeq). */
function synth(req: SipMessage, status: number, reason: string): SipMessage {
  const res = SipMessage.response(status, reason);
  for (const h of req.headers) {
    const k = headerKey(h.name);
    if (k === 'via' || k === 'from' || k === 'to' || k === 'call-id' || k === 'cseq') {
      res.headers.push({ name: h.name, value: h.value });
    }
  }

  return res;
}

/** A response with our (top) Via removed, for relaying upstream (RFC 3261 §16.7 step 9). */
function stripTopVia(res: SipMessage): SipMessage {
  const out = res.clone();
  const idx = out.headers.findIndex((h) => headerKey(h.name) === 'via');
  if (idx >= 0) {
    const h = out.headers[idx]!;
    const vias = parseVia(h.value);
    if (vias.length > 1) {
      h.value = vias.slice(1).map((v) => formatVia(v)).join(', ');
    } else {
      out.headers.splice(idx, 1);
    }
  }

  return out;
}
