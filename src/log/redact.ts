/**
 * Redaction of personal data before anything is logged.
 *
 * What counts as personal data here: telephone numbers (in SIP/SIPS/TEL URIs, in From, To,
 * Contact, P-Asserted-Identity, Remote-Party-ID, Diversion and similar headers, and as bare E.164
 * strings), display names in those headers, push tokens, SIP credentials (Authorization and
 * Proxy-Authorization headers, digest responses, passwords, secrets) and JWTs.
 *
 * Numbers are replaced by a short keyed hash ("<num:1a2b3c4d>") so that one number can still be
 * followed through a node's log without being readable; the key is random per process.
 */
import { createHmac, randomBytes } from 'node:crypto';

const hashKey = randomBytes(16);

/** Short per-process pseudonym of a sensitive value. */
export function pseudonym(kind: string, value: string): string {
  const h = createHmac('sha256', hashKey).update(value).digest('hex').slice(0, 8);

  return `<${kind}:${h}>`;
}

const JWT_RE = /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g;
// user part of sip:/sips:/tel: URIs that looks like a phone number (digits with visual separators,
// an optional leading +, and optional ;phone-context style parameters left in place).
const URI_NUMBER_RE = /\b(sips?:|tel:)(\+?[0-9][0-9().\-*#]{2,}[0-9#*])(?=[@;>?,\s"']|$)/gi;
// E.164-like numbers standing alone: +4930123456, 0049 30 123456 is not matched (too fuzzy).
const BARE_E164_RE = /(^|[^\w+])(\+[1-9][0-9]{6,14})(?![\w])/g;
// SIP header lines (full or compact names) whose whole value is a credential.
const CREDENTIAL_HEADER_RE = /^(authorization|proxy-authorization)([ \t]*:[ \t]*)(.*)$/gim;
// Display names in identity headers: From, To, Contact, PAI, PPI, RPID, Diversion, Referred-By
// (full and compact names f, t, m, b).
const DISPLAY_NAME_HEADER_RE =
  /^(from|to|contact|p-asserted-identity|p-preferred-identity|remote-party-id|diversion|history-info|referred-by|f|t|m|b)([ \t]*:[ \t]*)("(?:[^"\\]|\\.)*"|[^<\r\n,]*?)([ \t]*<)/gim;
// Query/field style credentials inside free text: password=..., token=..., pn-prid=...
const INLINE_SECRET_RE = /\b(password|passwd|secret|token|access_token|refresh_token|pn-prid|pn-param|nonce-count|response)=("?)([^"\s;,&]+)\2/gi;

// Password in the userinfo of a URL with an authority: redis://user:PASSWORD@host, rediss://:PASSWORD@h.
// The password runs to the last "@" before the path (WHATWG URL does the same).
const URL_PASSWORD_RE = /\b([a-z][a-z0-9+.-]*:\/\/[^\s/?#@:]*:)([^\s/?#]*)@/gi;

/** Replaces the password of any scheme://user:password@ URL in `s` by `mask`. */
export function maskUrlPassword(s: string, mask = '[redacted]'): string {
  return s.replace(URL_PASSWORD_RE, (_m, head: string) => `${head}${mask}@`);
}

/**
 * Redacts personal data inside a free-text string (a SIP message, a log message, a URL).
 * Pure; safe on any string.
 */
export function redactText(input: string): string {
  if (input.length === 0) {
    return input;
  }
  let s = input;
  s = s.replace(JWT_RE, '[jwt]');
  s = s.replace(CREDENTIAL_HEADER_RE, (_m, name: string, sep: string) => `${name}${sep}[redacted]`);
  s = s.replace(DISPLAY_NAME_HEADER_RE, (m, name: string, sep: string, display: string, lt: string) =>
    display.trim() === '' ? m : `${name}${sep}"[name]"${lt}`,
  );
  s = s.replace(URI_NUMBER_RE, (_m, scheme: string, num: string) => `${scheme}${pseudonym('num', num.replace(/[^0-9+*#]/g, ''))}`);
  s = s.replace(BARE_E164_RE, (_m, pre: string, num: string) => `${pre}${pseudonym('num', num)}`);
  s = s.replace(INLINE_SECRET_RE, (_m, key: string, q: string) => `${key}=${q}[redacted]${q}`);
  s = maskUrlPassword(s);

  return s;
}

/** Field names whose values are secret as a whole (compared lower-case, without - and _). */
const SECRET_KEYS = new Set([
  'authorization',
  'proxyauthorization',
  'password',
  'passwd',
  'secret',
  'token',
  'pushtoken',
  'devicetoken',
  'registrationid',
  'regid',
  'fcmtoken',
  'apnstoken',
  'voiptoken',
  'jwt',
  'accesstoken',
  'refreshtoken',
  'idtoken',
  'apikey',
  'privatekey',
  'credentials',
  'ha1',
  'ha1md5',
  'ha1sha256',
  'cookie',
  'pnprid',
  'pnparam',
  'endpoint', // Web Push endpoint URLs embed the subscription token
  'p256dh',
  'auth',
]);

/** Field names whose values are telephone numbers or identities as a whole. */
const NUMBER_KEYS = new Set(['from', 'to', 'caller', 'callee', 'number', 'phone', 'phonenumber', 'msisdn', 'ani', 'dnis', 'did', 'callingnumber', 'callednumber', 'called', 'calling', 'dialed', 'dialled', 'displayname']);

function normaliseKey(k: string): string {
  return k.toLowerCase().replace(/[-_]/g, '');
}

/**
 * Deep-copies a log record, redacting secret fields, identity fields and personal data in every
 * string. Depth and breadth are bounded so a huge or cyclic object cannot stall logging.
 */
export function redactValue(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') {
    return redactText(value);
  }
  if (value === null || typeof value !== 'object') {
    return value;
  }
  if (depth > 8) {
    return '[depth]';
  }
  if (seen.has(value)) {
    return '[circular]';
  }
  seen.add(value);
  if (Buffer.isBuffer(value)) {
    return `[${value.length} bytes]`;
  }
  if (Array.isArray(value)) {
    const out = value.slice(0, 100).map((v) => redactValue(v, depth + 1, seen));
    if (value.length > 100) {
      out.push(`[${value.length - 100} more]`);
    }

    return out;
  }
  if (value instanceof Error) {
    // Keep the prototype so pino's error serializer still sees the error's class name.
    const e = Object.create(Object.getPrototypeOf(value) as object) as Record<string, unknown>;
    for (const [k, v] of Object.entries(value)) {
      e[k] = redactField(k, v, depth, seen);
    }
    e.message = redactText(value.message);
    if (value.stack) {
      e.stack = redactText(value.stack);
    }
    if (value.cause !== undefined) {
      e.cause = redactValue(value.cause, depth + 1, seen);
    }

    return e;
  }
  const out: Record<string, unknown> = {};
  const obj = value as Record<string, unknown>;
  // A Redis command as ioredis attaches it to its errors: AUTH's and HELLO's arguments hold the password.
  if (typeof obj.name === 'string' && /^(auth|hello)$/i.test(obj.name) && Array.isArray(obj.args)) {
    const { args: _args, ...rest } = obj;

    return { ...(redactValue(rest, depth + 1, seen) as Record<string, unknown>), args: '[redacted]' };
  }
  let n = 0;
  for (const [k, v] of Object.entries(obj)) {
    if (++n > 200) {
      out['[truncated]'] = true;
      break;
    }
    out[k] = redactField(k, v, depth, seen);
  }

  return out;
}

function redactField(key: string, v: unknown, depth: number, seen: WeakSet<object>): unknown {
  const nk = normaliseKey(key);
  if (SECRET_KEYS.has(nk) && v !== null && v !== undefined && typeof v !== 'boolean') {
    return '[redacted]';
  }
  if (NUMBER_KEYS.has(nk) && typeof v === 'string' && v.trim() !== '') {
    if (nk === 'displayname') {
      return pseudonym('name', v);
    }
    // A bare number in such a field is personal data even without a URI around it.
    if (/^[+0-9][0-9 ().\-*#]*$/.test(v.trim())) {
      return pseudonym('num', v.replace(/[^0-9+*#]/g, ''));
    }

    return redactText(v);
  }

  return redactValue(v, depth + 1, seen);
}
