/**
 * The Contact header of a REGISTER (RFC 3261 §10.2.1, §20.10): `*` or a list of name-addrs with
 * their `expires`, `q`, `+sip.instance` (RFC 5626 §4.1 / RFC 5627) and `reg-id` (RFC 5626 §4.2)
 * parameters, and the push parameters in the Contact URI: RFC 8599's `pn-provider`, `pn-prid`,
 * `pn-param`, and Linphone's older `pn-type` / `pn-tok` / `app-id` form.
 */
import { splitTopLevel } from '../engine/message/chars.js';
import { parseNameAddr, parseUri } from '../engine/message.js';

/** A SIP error answer to a REGISTER: status, reason phrase and extra headers. */
export class RegistrarError extends Error {
  override readonly name = 'RegistrarError';
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(status: number, reason: string, headers: Record<string, string> = {}) {
    super(reason);
    this.status = status;
    this.headers = headers;
  }
}

/** One Contact of a REGISTER. */
export interface RegisterContact {
  /** The Contact URI, as received. */
  uri: string;
  /** Header parameters, names lower-cased (`expires`, `q`, `+sip.instance`, `reg-id`, ...), values as received. */
  params: Record<string, string | null>;
  /** URI parameters, names lower-cased (`transport`, `ob`, `pn-*`, ...). */
  uriParams: Record<string, string | null>;
  /** The `expires` parameter (s), when present. */
  expires?: number;
  /** The `+sip.instance` value without its quotes, e.g. `<urn:uuid:...>`. */
  instance?: string;
  /** The `reg-id` parameter (RFC 5626: 1 to 2^31-1). */
  regId?: number;
  /** The `q` parameter (0 to 1). */
  q?: number;
}

/** The Contact header of a REGISTER: `*` (remove all), a list (possibly empty: a query). */
export type RegisterContacts = { star: true } | { star: false; contacts: RegisterContact[] };

/**
 * Parses the Contact header value(s) of a REGISTER (several headers joined by commas).
 * @throws {RegistrarError} 400 for a malformed Contact, a `*` among others, or a bad parameter
 */
export function parseRegisterContacts(value: string | undefined): RegisterContacts {
  if (value === undefined || value.trim() === '') {
    return { star: false, contacts: [] };
  }
  const parts = splitTopLevel(value);
  if (parts.some((p) => p === '*')) {
    if (parts.length > 1) {
      throw new RegistrarError(400, 'Contact * with other contacts');
    }

    return { star: true };
  }
  const contacts = parts.map((part) => {
    const na = parseNameAddr(part);
    const u = na ? parseUri(na.uri) : undefined;
    if (!na || !u || (u.scheme !== 'sip' && u.scheme !== 'sips')) {
      throw new RegistrarError(400, 'Invalid Contact');
    }
    const c: RegisterContact = { uri: na.uri, params: na.params, uriParams: u.params };
    if ('expires' in na.params) {
      const e = na.params.expires;
      if (e === null || !/^\d{1,10}$/.test(e)) {
        throw new RegistrarError(400, 'Invalid Contact expires');
      }
      c.expires = Math.min(Number(e), 2 ** 32 - 1);
    }
    if ('q' in na.params) {
      const q = na.params.q;
      if (q === null || !/^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(q)) {
        throw new RegistrarError(400, 'Invalid Contact q');
      }
      c.q = Number(q);
    }
    if ('+sip.instance' in na.params) {
      const inst = na.params['+sip.instance'];
      const m = inst ? /^"(<[^"<>\s]{1,256}>)"$/.exec(inst) : null;
      if (!m) {
        throw new RegistrarError(400, 'Invalid Contact +sip.instance');
      }
      c.instance = m[1]!;
    }
    if ('reg-id' in na.params) {
      const r = na.params['reg-id'];
      if (r === null || !/^\d{1,10}$/.test(r) || Number(r) < 1 || Number(r) > 2 ** 31 - 1) {
        throw new RegistrarError(400, 'Invalid Contact reg-id');
      }
      c.regId = Number(r);
    }

    return c;
  });

  return { star: false, contacts };
}

/** A device's push registration from its Contact: what the push bridge needs to wake it. */
export interface SipPushRegistration {
  platform: 'ios' | 'android';
  channel: 'apns' | 'fcm';
  /** The push token: the APNs VoIP token (PushKit), or the FCM registration token. */
  token: string;
  /** APNs only: the app's ordinary (remote/alert) token, when the device gave one. */
  alertToken?: string;
  /** APNs: the topic the token belongs to (bundle id, `.voip` for VoIP pushes); FCM: the project or sender id. */
  topic?: string;
  /** APNs: the device's app is a development build (APNs sandbox: `pn-provider=apns.dev`, `app-id=....dev`). */
  sandbox?: boolean;
}

const PN_TOKEN = /^[A-Za-z0-9_:.+/=-]{8,4096}$/;

function pct(v: string | null | undefined, what: string): string {
  if (v === null || v === undefined || v === '') {
    throw new RegistrarError(400, `Contact ${what} without a value`);
  }
  try {
    return decodeURIComponent(v);
  } catch {
    throw new RegistrarError(400, `Contact ${what} is not well escaped`);
  }
}

/**
 * The push registration in a Contact URI's parameters, or undefined when it carries none.
 *
 * RFC 8599 §4.1: `pn-provider` (`apns`, and Linphone's `apns.dev` for the sandbox; `fcm`),
 * `pn-prid` (the token) and `pn-param` (APNs: `<team id>.<bundle id>.<service>`, where service is
 * `voip`, `remote` or both as `voip&remote`; FCM: the sender/project id). Linphone writes two APNs
 * tokens into one pn-prid as `<voip token>:voip&<remote token>:remote`: the VoIP one becomes the
 * token, the remote one the alert token. Linphone's legacy form: `pn-type` (`apple`, `google`,
 * `firebase`), `pn-tok` (the token) and `app-id` (the bundle id with `.prod` or `.dev`, or the
 * sender id).
 * @throws {RegistrarError} 400 (or 555 Push Notification Service Not Supported, RFC 8599 §4.1.2,
 *   for a provider other than APNs and FCM) when the parameters are there but unusable
 */
export function parsePushParams(uriParams: Record<string, string | null>): SipPushRegistration | undefined {
  if ('pn-provider' in uriParams) {
    const provider = pct(uriParams['pn-provider'], 'pn-provider').toLowerCase();
    const prid = pct(uriParams['pn-prid'], 'pn-prid');
    const param = 'pn-param' in uriParams ? pct(uriParams['pn-param'], 'pn-param') : undefined;
    if (provider === 'apns' || provider === 'apns.dev') {
      return apns(prid, param, provider === 'apns.dev');
    }
    if (provider === 'fcm') {
      if (!PN_TOKEN.test(prid)) {
        throw new RegistrarError(400, 'Contact pn-prid is not a push token');
      }

      return { platform: 'android', channel: 'fcm', token: prid, ...(param ? { topic: param } : {}) };
    }
    throw new RegistrarError(555, 'Push Notification Service Not Supported', { 'Feature-Caps': '*;+sip.pns="apns";+sip.pns="fcm"' });
  }
  if ('pn-type' in uriParams) {
    const type = pct(uriParams['pn-type'], 'pn-type').toLowerCase();
    const tok = pct(uriParams['pn-tok'], 'pn-tok');
    const appId = 'app-id' in uriParams ? pct(uriParams['app-id'], 'app-id') : undefined;
    if (!PN_TOKEN.test(tok)) {
      throw new RegistrarError(400, 'Contact pn-tok is not a push token');
    }
    if (type === 'apple') {
      const sandbox = appId?.endsWith('.dev') ?? false;
      const topic = appId?.replace(/\.(prod|dev)$/, '');

      return { platform: 'ios', channel: 'apns', token: tok, ...(topic ? { topic } : {}), sandbox };
    }
    if (type === 'google' || type === 'firebase') {
      return { platform: 'android', channel: 'fcm', token: tok, ...(appId ? { topic: appId } : {}) };
    }
    throw new RegistrarError(555, 'Push Notification Service Not Supported', { 'Feature-Caps': '*;+sip.pns="apns";+sip.pns="fcm"' });
  }

  return undefined;
}

function apns(prid: string, param: string | undefined, sandbox: boolean): SipPushRegistration {
  // pn-prid: a bare token, or Linphone's "<voip>:voip&<remote>:remote" (either part optional)
  const tokens: Record<string, string> = {};
  for (const part of prid.split('&')) {
    const m = /^([^:]+)(?::(voip|remote))?$/.exec(part);
    if (!m || !PN_TOKEN.test(m[1]!)) {
      throw new RegistrarError(400, 'Contact pn-prid is not a push token');
    }
    tokens[m[2] ?? 'voip'] = m[1]!;
  }
  // pn-param: "<team id>.<bundle id>.<services>"; the topic is the bundle id (+ ".voip" for the VoIP token)
  let bundle: string | undefined;
  let services: string[] = ['voip'];
  if (param) {
    const m = /^(?:[A-Z0-9]{10}\.)?(.+)\.((?:voip|remote)(?:&(?:voip|remote))?)$/.exec(param);
    if (!m) {
      throw new RegistrarError(400, 'Contact pn-param is not "<team id>.<bundle id>.<voip|remote>"');
    }
    bundle = m[1]!;
    services = m[2]!.split('&');
  }
  const voip = services.includes('voip') ? tokens.voip : undefined;
  const remote = services.includes('remote') ? tokens.remote : undefined;
  const token = voip ?? remote;
  if (!token) {
    throw new RegistrarError(400, 'Contact pn-prid has no token for the services in pn-param');
  }
  const topic = bundle ? (voip ? `${bundle}.voip` : bundle) : undefined;

  return { platform: 'ios', channel: 'apns', token, ...(voip && remote ? { alertToken: remote } : {}), ...(topic ? { topic } : {}), sandbox };
}
