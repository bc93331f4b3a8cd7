/**
 * Flows of registered bindings (RFC 5626 §5.3, wire protocol §6.3 last bullet): after a 2xx to a
 * REGISTER that came over a TCP/TLS connection, the app may send requests to that binding through
 * the same connection (a device behind NAT cannot be reached otherwise).
 *
 * A flow belongs to exactly one binding: the address-of-record of the REGISTER's To (user@host),
 * the Contact's `+sip.instance` and `reg-id` and the Contact URI itself. It is used only for a
 * request the app sends with `X-RB-Binding-Flow: <token>` naming that binding
 * ({@link bindingFlowToken}) whose Request-URI is that Contact URI, without a next hop of its own;
 * any other request, whatever its Request-URI, is routed as usual (a registered Contact such as
 * `sip:+15551234@carrier.example` must never pull calls to the carrier onto a device's
 * connection). The engine removes the header before sending.
 *
 * A flow dies with its binding (a later 2xx to a REGISTER of the same address-of-record that no
 * longer lists it: un-REGISTER, `*`, replacement by the same instance and reg-id with another
 * Contact), at the binding's expiry, or when its connection closes.
 */
import { createHash } from 'node:crypto';
import { parseNameAddr, parseUri, type SipMessage } from '../message.js';
import { type Flow } from '../transport/types.js';

/** The header with which the app names the binding whose flow a request is to use. */
export const BINDING_FLOW_HEADER = 'X-RB-Binding-Flow';

/** What identifies a binding (RFC 5626 §6, RFC 3261 §10.3). */
export interface BindingIdentity {
  /** The address-of-record: the REGISTER's To URI as `user@host` (lower-cased by the function). */
  aor: string;
  /** `+sip.instance` with its `<>`, as in the Contact (without quotes). */
  instance?: string | undefined;
  regId?: number | undefined;
  /** The Contact URI exactly as registered. */
  contact: string;
}

/** The token naming a binding's flow: hex SHA-256 (first 32 digits) of its identity. */
export function bindingFlowToken(b: BindingIdentity): string {
  return createHash('sha256')
    .update([b.aor.toLowerCase(), b.instance ?? '', b.regId === undefined ? '' : String(b.regId), b.contact].join('\n'))
    .digest('hex')
    .slice(0, 32);
}

interface Entry {
  aor: string;
  contact: string;
  flow: Flow;
  /** Expiry, ms since the epoch. */
  expires: number;
}

/** The table of registered flows (bounded; the engine core owns one). */
export class RegisteredFlows {
  readonly #max: number;
  readonly #isOpen: (connectionId: string) => boolean;
  /** token → entry */
  readonly #byToken = new Map<string, Entry>();

  /**
   * @param isOpen whether a stream connection is still open (transport layer)
   * @param max most flows remembered (default 100 000)
   */
  constructor(isOpen: (connectionId: string) => boolean, max = 100_000) {
    this.#isOpen = isOpen;
    this.#max = max;
  }

  /** Flows remembered now. */
  get size(): number {
    return this.#byToken.size;
  }

  /**
   * After the app's 2xx to a REGISTER: remembers the connection for each Contact the client asked
   * for and the registrar granted, when it names the client itself (its host:port is the
   * connection's remote end) or carries RFC 5626 hints (`ob`, `reg-id`, `+sip.instance`); forgets
   * the flows of the same address-of-record that the 2xx no longer lists. Never throws.
   * @returns the connection and how long (epoch ms) to keep it open, when one was remembered
   */
  remember(req: SipMessage, res: SipMessage, flow: Flow, now = Date.now()): { connectionId: string; until: number } | undefined {
    const aor = aorOf(req);
    if (!aor) {
      return undefined;
    }
    const granted = new Set<string>();
    let keep: { connectionId: string; until: number } | undefined;
    const expiresHeader = Number(res.getHeader('expires') ?? 3600);
    const defaultExpires = Number.isFinite(expiresHeader) ? expiresHeader : 3600;
    const grantedUris = new Map<string, Record<string, string | null>>();
    for (const c of res.getHeaderValues('contact')) {
      const na = parseNameAddr(c);
      if (na) {
        grantedUris.set(na.uri, na.params);
      }
    }
    for (const c of req.getHeaderValues('contact')) {
      const na = parseNameAddr(c);
      const u = na ? parseUri(na.uri) : undefined;
      const grant = na ? grantedUris.get(na.uri) : undefined;
      if (!na || !u || !grant) {
        continue;
      }
      const expires = Number(grant.expires ?? na.params.expires ?? defaultExpires);
      if (!(expires > 0) || !flow.connectionId) {
        continue;
      }
      const defaultPort = u.scheme === 'sips' || (u.params.transport ?? '').toLowerCase() === 'tls' ? 5061 : 5060;
      const itself = u.host.toLowerCase().replace(/^\[|\]$/g, '') === flow.remote.address.toLowerCase() && (u.port ?? defaultPort) === flow.remote.port;
      const outbound = 'ob' in u.params || 'reg-id' in na.params || '+sip.instance' in na.params;
      if (!itself && !outbound) {
        continue;
      }
      const instance = unquote(na.params['+sip.instance']);
      const regId = na.params['reg-id'] != null && /^\d{1,10}$/.test(na.params['reg-id']) ? Number(na.params['reg-id']) : undefined;
      const token = bindingFlowToken({ aor, instance, regId, contact: na.uri });
      granted.add(token);
      if (!this.#byToken.has(token) && this.#byToken.size >= this.#max) {
        this.prune(now);
        if (this.#byToken.size >= this.#max) {
          continue;
        }
      }
      const until = now + Math.min(expires, 86_400) * 1000;
      this.#byToken.set(token, { aor, contact: na.uri, flow, expires: until });
      keep = { connectionId: flow.connectionId, until };
    }
    // the 2xx lists every current binding of the AOR: flows of bindings not among them are gone
    for (const [token, e] of this.#byToken) {
      if (e.aor === aor && !granted.has(token) && !grantedUris.has(e.contact)) {
        this.#byToken.delete(token);
      }
    }

    return keep;
  }

  /**
   * The flow for a request the app sends: only with a token naming a live binding whose Contact URI
   * is exactly the Request-URI, and whose connection is still open.
   */
  flowFor(token: string | undefined, requestUri: string, now = Date.now()): Flow | undefined {
    if (!token) {
      return undefined;
    }
    const e = this.#byToken.get(token.trim());
    if (!e) {
      return undefined;
    }
    if (e.expires < now || !e.flow.connectionId || !this.#isOpen(e.flow.connectionId)) {
      this.#byToken.delete(token.trim());

      return undefined;
    }

    return e.contact === requestUri ? e.flow : undefined;
  }

  /** Forgets the flows of a connection that closed. */
  connectionClosed(connectionId: string): void {
    for (const [token, e] of this.#byToken) {
      if (e.flow.connectionId === connectionId) {
        this.#byToken.delete(token);
      }
    }
  }

  /** Drops expired flows and those whose connection is gone. */
  prune(now = Date.now()): void {
    for (const [token, e] of this.#byToken) {
      if (e.expires < now || !e.flow.connectionId || !this.#isOpen(e.flow.connectionId)) {
        this.#byToken.delete(token);
      }
    }
  }
}

/** The REGISTER's address-of-record, `user@host` lower-cased (`@host` without a user), or undefined. */
function aorOf(req: SipMessage): string | undefined {
  const to = parseNameAddr(req.getHeader('to') ?? '');
  const u = to ? parseUri(to.uri) : undefined;

  return u ? `${u.user ?? ''}@${u.host}`.toLowerCase() : undefined;
}

function unquote(v: string | null | undefined): string | undefined {
  if (v === null || v === undefined) {
    return undefined;
  }
  const m = /^"(.*)"$/.exec(v);

  return m ? m[1] : v;
}
