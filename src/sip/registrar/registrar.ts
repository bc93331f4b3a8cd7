/**
 * The SIP registrar for agents' native SIP devices (issue 12, item 1): REGISTER over UDP, TCP or
 * TLS on the embedded engine, through drachtio-srf.
 *
 * Per REGISTER (RFC 3261 §10.3, in this order):
 * 1. the To URI's user is the address-of-record's user (400 without one);
 * 2. `Require` options other than `outbound` and `path` → 420 with `Unsupported`;
 * 3. digest authentication (RFC 7616, MD5 and SHA-256): no or stale credentials → 401 with one
 *    challenge per algorithm; wrong credentials or an unknown user → 403; the authenticated user
 *    must be the AOR's user (403 otherwise);
 * 4. Contact: none → a query (200 with the current bindings); `*` with `Expires: 0` → every
 *    binding of the agent removed; else per contact: expires from its parameter, else the
 *    `Expires` header, else `sipDevices.defaultExpiresS`; 0 removes; a non-zero value below
 *    `minExpiresS` fails the whole request with 423 and `Min-Expires`; above `maxExpiresS` it is
 *    shortened;
 * 5. bindings are identified by `+sip.instance` and `reg-id` (RFC 5626 §6: the same flow of the
 *    same device replaces its binding), by `+sip.instance` alone (RFC 5627), else by the Contact
 *    URI; a REGISTER with the same Call-ID and a CSeq not higher than the stored one is out of
 *    order → 500 (step 7);
 * 6. 200 lists every current binding with its remaining `expires`; `Require: outbound` and
 *    `Flow-Timer` when the device asked for outbound (Supported: outbound, reg-id and
 *    +sip.instance, no Path: we are its edge proxy); the `Path` echoed when the device supports
 *    path (RFC 3327 §5.3).
 *
 * Flows: each binding keeps the REGISTER's source (transport, address, port). The engine itself
 * remembers the connection of a REGISTER answered 2xx over TCP/TLS, and sends a later request to
 * that binding through it only when the request names the binding (`X-RB-Binding-Flow: <the
 * binding's flowToken>`, src/sip/engine/core/registered-flows.ts); it answers RFC 5626 CRLF
 * keep-alives on streams; bare CRLF keep-alives over UDP are absorbed.
 *
 * Defences (README "SIP devices (registrar)"): a lockout of its own against digest guessing (per
 * source, IPv6 by /64, and per username; lockout.ts); a push token registered to another agent is
 * refused with 403 (never moves silently); at most `maxPushDevicesPerAgent` SIP push devices per
 * agent (the one seen longest ago is evicted); at most `maxBindingsPerAgent` bindings, checked in
 * the same compare-and-set that writes them (bindings.ts).
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type Srf from 'drachtio-srf';
import { Counter, type Registry } from 'prom-client';
import { type Logger } from '../../log/logger.js';
import { type StateStore, type StoreRedis } from '../../state/store.js';
import { type SecurityGuard } from '../../security/guard.js';
import { bindingFlowToken } from '../engine/core/registered-flows.js';
import { parseDigest } from '../trunks.js';
import { RegisterLockout } from './lockout.js';
import { parseNameAddr, parseUri } from '../engine/message.js';
import { splitTopLevel } from '../engine/message/chars.js';
import { SipBindingStore, type SipBinding, type SipFlow } from './bindings.js';
import { type SipDevicesConfig } from './config.js';
import { DigestAuthenticator } from './digest.js';
import { parsePushParams, parseRegisterContacts, RegistrarError, type RegisterContact } from './contact.js';

/** Options of SipRegistrar. */
export interface SipRegistrarOptions {
  config: SipDevicesConfig;
  srf: Srf;
  store: StateStore;
  redis: StoreRedis;
  logger: Logger;
  /** Called after an agent's bindings changed (registered, refreshed away, removed, expired); must not throw. */
  onChange?: (agentId: string, bindings: number) => void;
  /** Where to register `<prefix>sip_registrations_total{result}`. */
  metrics?: { registry: Registry; prefix: string };
  /**
   * The gateway's defences: their Redis window counters carry the registrar's lockout, and its
   * refusals count as `register_locked`. Without it there is no lockout (unit tests).
   */
  security?: Pick<SecurityGuard, 'counter' | 'rejected'>;
  /** Every trunk's `inbound.allow` (never locked out) and `sip.trustedProxies` (X-RB-Source). */
  trunkSources?: readonly string[];
  trustedProxies?: readonly string[];
}

/** How a REGISTER ended, for the metric: 2xx, 401, 403, 423, another 4xx/555, 5xx. */
type RegisterResult = 'ok' | 'challenged' | 'forbidden' | 'too_brief' | 'bad_request' | 'error';

function resultOf(status: number): RegisterResult {
  return status < 300 ? 'ok' : status === 401 ? 'challenged' : status === 403 ? 'forbidden' : status === 423 ? 'too_brief' : status < 500 || status === 555 ? 'bad_request' : 'error';
}

/**
 * drachtio-srf sends only the status codes its `sip-status` table knows, and RFC 8599's
 * `555 Push Notification Service Not Supported` is not among them: it is added there once (the
 * table is srf's own copy of the module). Returns whether srf can send 555 now; when it cannot,
 * #send answers 400 with the same reason and headers instead.
 */
function teachSrf555(): boolean {
  try {
    const req = createRequire(import.meta.url);
    const fromSrf = createRequire(req.resolve('drachtio-srf'));
    const codes = fromSrf('sip-status') as Record<number, string>;
    codes[555] ??= 'Push Notification Service Not Supported';

    return 555 in codes;
  } catch {
    return false;
  }
}
const SRF_SENDS_555 = teachSrf555();

/** Extensions this registrar supports (RFC 5626 outbound, RFC 3327 path). */
const SUPPORTED = ['outbound', 'path'];

/** The registrar: srf's REGISTER handler, the agents' bindings, and their expiry timers. */
export class SipRegistrar {
  readonly #cfg: SipDevicesConfig;
  readonly #store: StateStore;
  readonly #bindings: SipBindingStore;
  readonly #auth: DigestAuthenticator;
  readonly #log: Logger;
  readonly #onChange: ((agentId: string, bindings: number) => void) | undefined;
  readonly #results: Counter<'result'> | undefined;
  readonly #lockout: RegisterLockout | undefined;
  readonly #security: Pick<SecurityGuard, 'counter' | 'rejected'> | undefined;
  /** username (lower-case) → agent id */
  readonly #agentOf = new Map<string, string>();
  /** agentId → the timer of its next binding expiry (bindings this node wrote or read). */
  readonly #timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  #closed = false;

  constructor(opts: SipRegistrarOptions) {
    this.#cfg = opts.config;
    this.#store = opts.store;
    this.#log = opts.logger;
    this.#onChange = opts.onChange;
    this.#security = opts.security;
    this.#lockout = opts.security
      ? new RegisterLockout({ counter: opts.security.counter, config: opts.config.lockout, trunkSources: opts.trunkSources ?? [], trustedProxies: opts.trustedProxies ?? [] })
      : undefined;
    this.#results = opts.metrics
      ? new Counter({
          name: `${opts.metrics.prefix}sip_registrations_total`,
          help: 'REGISTER requests of agents\' SIP devices by result: ok (2xx), challenged (401), forbidden (403), too_brief (423), bad_request (other 4xx, 555), error (5xx).',
          labelNames: ['result'],
          registers: [opts.metrics.registry],
        })
      : undefined;
    const secrets = new Map<string, { ha1Md5: string; ha1Sha256: string }>();
    for (const c of opts.config.credentials) {
      secrets.set(c.username.toLowerCase(), { ha1Md5: c.ha1Md5, ha1Sha256: c.ha1Sha256 });
      this.#agentOf.set(c.username.toLowerCase(), c.agentId);
    }
    this.#auth = new DigestAuthenticator({
      realm: opts.config.realm,
      algorithms: opts.config.algorithms,
      nonceTtlMs: opts.config.nonceTtlS * 1000,
      lookup: (u) => secrets.get(u.toLowerCase()),
    });
    this.#bindings = new SipBindingStore({ redis: opts.redis, key: (a) => opts.store.key('agent', a, 'sip'), logger: opts.logger });
    opts.srf.use('register', (req, res) => {
      void this.#onRegister(req, res);
    });
  }

  /**
   * An agent's current SIP bindings (the devices registered now).
   * @throws when Redis is unavailable
   */
  bindings(agentId: string): Promise<SipBinding[]> {
    return this.#bindings.list(agentId);
  }

  /** The registrar's realm (devices' From host; sipDevices.realm). */
  get realm(): string {
    return this.#cfg.realm;
  }

  /**
   * Authenticates a request from an agent's SIP device (an INVITE, issue 12 item 4) with the
   * same per-agent digest secrets as REGISTER (RFC 7616; RFC 3261 §22.3: as a proxy-style
   * challenge, `407` with one `Proxy-Authenticate` per algorithm, read from `Proxy-Authorization`
   * or `Authorization`). The device need not be registered. A locked source or username gets 403
   * before its credentials are checked; wrong credentials (403) and mangled ones (400) count toward
   * the same lockout as failed REGISTERs. A replayed nonce count or another node's nonce is
   * challenged again (stale). Never throws for bad input.
   * @returns the agent, or the response to send (status, reason, headers)
   */
  async authenticate(method: string, req: Pick<Srf.SrfRequest, 'get' | 'source_address'>): Promise<{ ok: true; agentId: string; username: string } | { ok: false; status: number; reason: string; headers: Record<string, string> }> {
    if (!this.#cfg.enabled) {
      return { ok: false, status: 403, reason: 'Forbidden', headers: {} };
    }
    const authorization = req.get('Proxy-Authorization') || req.get('Authorization') || undefined;
    const source = this.#lockout?.source(req.source_address, req.get('X-RB-Source') || undefined) ?? '';
    const claimedUser = authorization ? parseDigest(authorization)?.username : undefined;
    if (await this.#lockout?.locked(source, claimedUser)) {
      this.#security?.rejected('register_locked');

      return { ok: false, status: 403, reason: 'Forbidden (locked after failed authentications)', headers: {} };
    }
    const verdict = this.#auth.verify(method, authorization);
    if (!verdict.ok && verdict.status !== 401 && this.#lockout) {
      const locked = await this.#lockout.failed(source, verdict.status === 403 ? claimedUser : undefined);
      if (locked.source || locked.user) {
        this.#log.warn({ source: locked.source ? source : undefined, method }, 'device lockout after failed authentications');
      }
    }
    if (!verdict.ok) {
      if (verdict.status === 401) {
        return { ok: false, status: 407, reason: 'Proxy Authentication Required', headers: { 'Proxy-Authenticate': this.#auth.challenges(verdict.stale).join('\r\nProxy-Authenticate: ') } };
      }

      return { ok: false, status: verdict.status, reason: verdict.status === 403 ? 'Forbidden' : 'Bad Request', headers: {} };
    }
    const agentId = this.#agentOf.get(verdict.username.toLowerCase());
    if (!agentId) {
      return { ok: false, status: 403, reason: 'Forbidden', headers: {} };
    }

    return { ok: true, agentId, username: verdict.username };
  }

  /** Stops the expiry timers (the bindings stay in Redis until they expire). */
  close(): void {
    this.#closed = true;
    for (const t of this.#timers.values()) {
      clearTimeout(t.timer);
    }
    this.#timers.clear();
  }

  async #onRegister(req: Srf.SrfRequest, res: Srf.SrfResponse): Promise<void> {
    const callId = req.get('Call-ID') ?? '';
    try {
      await this.#register(req, res);
    } catch (err) {
      if (err instanceof RegistrarError) {
        // a 401 is the first half of every registration; the rest are worth seeing
        this.#log[err.status === 401 ? 'debug' : 'info']({ status: err.status, reason: err.message, source: req.source_address, sipCallId: callId }, 'REGISTER refused');
        this.#send(res, err.status, err.message, err.headers);

        return;
      }
      this.#log.warn({ err, sipCallId: callId }, 'REGISTER failed');
      this.#send(res, 500, 'Server Internal Error', { 'Retry-After': '5' });
    }
  }

  async #register(req: Srf.SrfRequest, res: Srf.SrfResponse): Promise<void> {
    if (!this.#cfg.enabled) {
      throw new RegistrarError(403, 'Registration Not Served');
    }
    const to = parseNameAddr(req.get('To') ?? '');
    const aor = to ? parseUri(to.uri) : undefined;
    if (!aor || (aor.scheme !== 'sip' && aor.scheme !== 'sips') || !aor.user) {
      throw new RegistrarError(400, 'To is not a sip: address-of-record with a user');
    }
    const authorization = req.get('Authorization') || undefined;
    // the lockout: a locked source or username gets 403 before its credentials are checked
    const source = this.#lockout?.source(req.source_address, req.get('X-RB-Source') || undefined) ?? '';
    const claimedUser = (authorization ? parseDigest(authorization)?.username : undefined) ?? safeDecode(aor.user);
    const lockedBy = await this.#lockout?.locked(source, claimedUser);
    if (lockedBy) {
      this.#security?.rejected('register_locked');
      this.#log.info({ source, lockedBy }, 'REGISTER refused: locked after failed authentications');
      throw new RegistrarError(403, 'Forbidden (locked after failed authentications)');
    }
    const required = listHeader(req.get('Require'));
    const unsupported = required.filter((o) => !SUPPORTED.includes(o.toLowerCase()));
    if (unsupported.length > 0) {
      throw new RegistrarError(420, 'Bad Extension', { Unsupported: unsupported.join(', ') });
    }
    const verdict = this.#auth.verify('REGISTER', authorization);
    if (!verdict.ok && verdict.status !== 401 && this.#lockout) {
      // a wrong response (or an unknown user: 403), or a mangled one (400): a guess
      const locked = await this.#lockout.failed(source, verdict.status === 403 ? claimedUser : undefined);
      if (locked.source || locked.user) {
        this.#log.warn({ source: locked.source ? source : undefined, user: locked.user ? (this.#agentOf.get((claimedUser ?? '').toLowerCase()) ?? 'unknown user') : undefined }, 'REGISTER lockout after failed authentications');
      }
    }
    if (!verdict.ok) {
      if (verdict.status === 401) {
        this.#log.debug({ reason: verdict.reason }, 'REGISTER challenged');
        // one WWW-Authenticate line per algorithm (RFC 7616 §3.7); srf joins values of one header with
        // commas, which does not work for challenges, so the lines are joined here
        throw new RegistrarError(401, 'Unauthorized', { 'WWW-Authenticate': this.#auth.challenges(verdict.stale).join('\r\nWWW-Authenticate: ') });
      }
      throw new RegistrarError(verdict.status, verdict.status === 403 ? 'Forbidden' : `Bad Request (${verdict.reason})`);
    }
    let aorUser: string;
    try {
      aorUser = decodeURIComponent(aor.user);
    } catch {
      throw new RegistrarError(400, 'To user is not well escaped');
    }
    if (aorUser.toLowerCase() !== verdict.username.toLowerCase()) {
      throw new RegistrarError(403, 'Forbidden (not your address-of-record)');
    }
    const agentId = this.#agentOf.get(verdict.username.toLowerCase());
    if (!agentId) {
      throw new RegistrarError(403, 'Forbidden');
    }
    const aorKey = `${aor.user}@${aor.host}`.toLowerCase();
    const parsed = parseRegisterContacts(req.get('Contact'));
    const expiresHeader = req.get('Expires');
    if (expiresHeader !== undefined && !/^\s*\d{1,10}\s*$/.test(expiresHeader)) {
      throw new RegistrarError(400, 'Invalid Expires');
    }
    const headerExpires = expiresHeader === undefined ? undefined : Number(expiresHeader);
    const callId = req.get('Call-ID') ?? '';
    const cseq = Number.parseInt(req.get('CSeq') ?? '', 10);
    const supported = listHeader(req.get('Supported')).map((s) => s.toLowerCase());
    const path = req.get('Path') ? splitTopLevel(req.get('Path')) : [];
    const flow: SipFlow = { transport: transportOf(req.protocol), address: req.source_address, port: Number(req.source_port) };
    let after: SipBinding[];
    let outboundUsed = false;
    /** Push devices of bindings the device removed itself (Expires 0, `*`): it no longer wants calls. */
    const unregistered: string[] = [];
    if (parsed.star) {
      if (headerExpires !== 0) {
        throw new RegistrarError(400, 'Contact * requires Expires: 0');
      }
      after = await this.#bindings.update(agentId, (current) => {
        const gone = current.filter((b) => !(b.callId === callId && b.cseq >= cseq));
        unregistered.splice(0, unregistered.length, ...gone.flatMap((b) => (b.deviceId ? [b.deviceId] : [])));

        return { put: [], remove: gone.map((b) => b.id) };
      });
      this.#log.info({ agent: agentId, remaining: after.length }, 'SIP device bindings removed (Contact *)');
    } else if (parsed.contacts.length === 0) {
      after = await this.#bindings.list(agentId);
    } else {
      // RFC 5626 §6: outbound applies when the device asks for it and we are its first hop
      const wantsOutbound = supported.includes('outbound') && path.length === 0;
      const wanted = parsed.contacts.map((c) => {
        const raw = c.expires ?? headerExpires ?? this.#cfg.defaultExpiresS;
        if (raw > 0 && raw < this.#cfg.minExpiresS) {
          throw new RegistrarError(423, 'Interval Too Brief', { 'Min-Expires': String(this.#cfg.minExpiresS) });
        }
        const outbound = wantsOutbound && c.instance !== undefined && c.regId !== undefined;
        if (outbound && parsed.contacts.length > 1) {
          // RFC 5626 §6: an edge registrar rejects several Contacts with reg-id in one REGISTER
          throw new RegistrarError(400, 'Multiple Contacts with reg-id');
        }
        outboundUsed ||= outbound;
        const push = parsePushParams(c.uriParams);

        return { c, expires: Math.min(raw, this.#cfg.maxExpiresS), id: bindingId(c, outbound), outbound, push };
      });
      // push tokens first: one registered to another agent refuses the REGISTER before anything is written
      const created = await this.#registerPushDevices(agentId, wanted);
      try {
        after = await this.#bindings.update(agentId, (current, now) => {
        unregistered.length = 0;
        const byId = new Map(current.map((b) => [b.id, b]));
        const put: SipBinding[] = [];
        const remove: string[] = [];
        for (const w of wanted) {
          const old = byId.get(w.id);
          if (old && old.callId === callId && Number.isFinite(cseq) && cseq <= old.cseq) {
            throw new RegistrarError(500, 'Server Internal Error (REGISTER out of order)', { 'Retry-After': '1' });
          }
          if (w.expires === 0) {
            if (old) {
              remove.push(w.id);
              if (old.deviceId) {
                unregistered.push(old.deviceId);
              }
            }
            continue;
          }
          put.push({
            id: w.id,
            contact: w.c.uri,
            aor: aorKey,
            ...(flow.transport === 'tcp' || flow.transport === 'tls' ? { flowToken: bindingFlowToken({ aor: aorKey, instance: w.c.instance, regId: w.c.regId, contact: w.c.uri }) } : {}),
            ...(w.c.instance ? { instance: w.c.instance } : {}),
            ...(w.outbound && w.c.regId !== undefined ? { regId: w.c.regId } : {}),
            ...(w.c.q !== undefined ? { q: w.c.q } : {}),
            outbound: w.outbound,
            flow,
            ...(path.length > 0 ? { path } : {}),
            callId,
            cseq: Number.isFinite(cseq) ? cseq : 0,
            expires: w.expires,
            expiresAt: now + w.expires * 1000,
            node: this.#store.nodeId,
            ...(req.get('User-Agent') ? { userAgent: req.get('User-Agent').slice(0, 128) } : {}),
            ...(w.push ? { deviceId: sipDeviceId(w.id) } : old?.deviceId ? { deviceId: old.deviceId } : {}),
            registeredAt: old?.registeredAt ?? now,
            updatedAt: now,
          });
        }
        const count = new Set([...current.map((b) => b.id), ...put.map((b) => b.id)].filter((id) => !remove.includes(id))).size;
        if (count > this.#cfg.maxBindingsPerAgent) {
          throw new RegistrarError(403, `Forbidden (at most ${this.#cfg.maxBindingsPerAgent} devices per agent)`);
        }

        return { put, remove };
      });
      } catch (err) {
        // nothing registered: the push devices this REGISTER created go again
        for (const deviceId of created) {
          await this.#store.removeDevice(agentId, deviceId).catch(() => undefined);
        }
        throw err;
      }
      // only once the REGISTER succeeded: the cap may evict one of the agent's older push devices
      await this.#capPushDevices(agentId, wanted);
      this.#log.info({ agent: agentId, contacts: wanted.length, bindings: after.length, transport: flow.transport, outbound: outboundUsed }, 'SIP device registered');
    }
    for (const deviceId of unregistered) {
      await this.#store.removeDevice(agentId, deviceId).catch((err: unknown) => this.#log.warn({ err, agent: agentId }, 'could not remove the push device of a SIP registration'));
    }
    const now = Date.now();
    const headers: Record<string, string> = { Date: new Date(now).toUTCString() };
    if (after.length > 0) {
      headers.Contact = after.map((b) => `<${b.contact}>;expires=${Math.max(0, Math.round((b.expiresAt - now) / 1000))}${b.instance ? `;+sip.instance="${b.instance}"` : ''}${b.regId !== undefined ? `;reg-id=${b.regId}` : ''}`).join(', ');
    }
    if (outboundUsed) {
      headers.Require = 'outbound';
      headers['Flow-Timer'] = String(this.#cfg.flowTimerS);
    }
    if (path.length > 0 && supported.includes('path')) {
      headers.Path = path.join(', ');
    }
    headers.Supported = SUPPORTED.join(', ');
    this.#send(res, 200, 'OK', headers);
    this.#schedule(agentId, after);
    this.#onChange?.(agentId, after.length);
  }

  /** Sends the final response; never throws (a response srf refuses is logged, not thrown into the void). */
  #send(res: Srf.SrfResponse, status: number, reason: string, headers: Record<string, string>): void {
    if (res.finalResponseSent) {
      return;
    }
    const code = status === 555 && !SRF_SENDS_555 ? 400 : status;
    try {
      res.send(code, reason, { headers });
      this.#results?.inc({ result: resultOf(code) });
    } catch (err) {
      this.#log.warn({ err, status: code }, 'REGISTER response not sent');
    }
  }

  /**
   * RFC 8599 push parameters of the contacts become (or update) the agent's push devices, unless a
   * token is registered to another agent (403, nothing written; #capPushDevices trims afterwards).
   * Resolves with the ids of devices this call created (to remove them when the REGISTER fails).
   * @throws {RegistrarError} 403 when a token is another agent's, or one REGISTER carries more push
   *   registrations than the cap
   */
  async #registerPushDevices(agentId: string, wanted: { id: string; expires: number; push: ReturnType<typeof parsePushParams> }[]): Promise<string[]> {
    const withPush = wanted.filter((w) => w.push && w.expires > 0);
    if (withPush.length === 0) {
      return [];
    }
    const cap = this.#cfg.maxPushDevicesPerAgent;
    if (new Set(withPush.map((w) => w.id)).size > cap) {
      throw new RegistrarError(403, `Forbidden (at most ${cap} push devices per agent)`);
    }
    const existing = new Set((await this.#store.devices(agentId)).map((d) => d.deviceId));
    const created: string[] = [];
    for (const w of withPush) {
      const push = w.push!;
      const deviceId = sipDeviceId(w.id);
      const r = await this.#store.putDeviceIfTokensFree(agentId, {
        deviceId,
        platform: push.platform,
        channel: push.channel,
        token: push.token,
        ...(push.alertToken ? { alertToken: push.alertToken } : {}),
        ...(push.topic ? { topic: push.topic } : {}),
      });
      if (!r.ok) {
        for (const id of created) {
          await this.#store.removeDevice(agentId, id).catch(() => undefined);
        }
        this.#log.warn({ agent: agentId, taken: r.taken }, 'REGISTER refused: its push token is registered to another agent');
        throw new RegistrarError(403, 'Forbidden (push token registered to another agent)');
      }
      if (!existing.has(deviceId)) {
        created.push(deviceId);
      }
    }
    return created;
  }

  /** The cap: past `maxPushDevicesPerAgent`, the agent's SIP push devices seen longest ago go (not this REGISTER's; the app's devices do not count). */
  async #capPushDevices(agentId: string, wanted: { id: string; expires: number; push: ReturnType<typeof parsePushParams> }[]): Promise<void> {
    const mine = new Set(wanted.filter((w) => w.push && w.expires > 0).map((w) => sipDeviceId(w.id)));
    if (mine.size === 0) {
      return;
    }
    const cap = this.#cfg.maxPushDevicesPerAgent;
    const sipDevices = (await this.#store.devices(agentId)).filter((d) => d.deviceId.startsWith('sip-'));
    if (sipDevices.length <= cap) {
      return;
    }
    const evictable = sipDevices.filter((d) => !mine.has(d.deviceId)).sort((a, b) => a.lastSeen.localeCompare(b.lastSeen) || a.deviceId.localeCompare(b.deviceId));
    for (const d of evictable.slice(0, sipDevices.length - cap)) {
      await this.#store.removeDevice(agentId, d.deviceId);
      this.#log.info({ agent: agentId, device: d.deviceId }, 'SIP push device evicted (most push devices per agent)');
    }
  }

  /** Arms (or moves) the timer that removes the agent's next expiring binding. */
  #schedule(agentId: string, bindings: SipBinding[]): void {
    const old = this.#timers.get(agentId);
    if (this.#closed || bindings.length === 0) {
      if (old) {
        clearTimeout(old.timer);
        this.#timers.delete(agentId);
      }

      return;
    }
    const at = Math.min(...bindings.map((b) => b.expiresAt));
    if (old?.at === at) {
      return;
    }
    if (old) {
      clearTimeout(old.timer);
    }
    const timer = setTimeout(() => {
      this.#timers.delete(agentId);
      void this.#expire(agentId);
    }, Math.max(0, at - Date.now()) + 50);
    timer.unref();
    this.#timers.set(agentId, { at, timer });
  }

  async #expire(agentId: string): Promise<void> {
    try {
      const after = await this.#bindings.update(agentId, (current, now) => ({ put: [], remove: current.filter((b) => b.expiresAt <= now).map((b) => b.id) }));
      this.#log.info({ agent: agentId, bindings: after.length }, 'SIP device binding expired');
      this.#schedule(agentId, after);
      this.#onChange?.(agentId, after.length);
    } catch (err) {
      this.#log.warn({ err, agent: agentId }, 'could not remove expired SIP bindings; they expire in Redis by themselves');
    }
  }
}

/** A binding's identity (RFC 5626 §6 / RFC 5627 / RFC 3261 §10.3 step 7). */
export function bindingId(c: RegisterContact, outbound: boolean): string {
  if (c.instance && outbound && c.regId !== undefined) {
    return `${c.instance}#${c.regId}`;
  }
  if (c.instance) {
    return c.instance;
  }
  const u = parseUri(c.uri);

  return u ? `${u.scheme}:${u.user ? `${u.user}@` : ''}${u.host.toLowerCase()}:${u.port ?? ''};${(u.params.transport ?? '').toLowerCase()}` : c.uri;
}

/** The push device id of a SIP binding (stable per device instance, so re-registration updates it). */
function sipDeviceId(bindingId: string): string {
  return `sip-${createHash('sha256').update(bindingId).digest('hex').slice(0, 16)}`;
}

function transportOf(protocol: string | undefined): SipFlow['transport'] {
  const p = (protocol ?? 'udp').toLowerCase();

  return p === 'tcp' || p === 'tls' || p === 'ws' || p === 'wss' ? p : 'udp';
}

function safeDecode(v: string | undefined): string | undefined {
  if (v === undefined) {
    return undefined;
  }
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function listHeader(v: string | undefined): string[] {
  return v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : [];
}
