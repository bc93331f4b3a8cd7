/**
 * Header names: compact forms (RFC 3261 §7.3.3 and the extensions registered with IANA), the
 * standard capitalisation, and the case-insensitive lookup key used by SipMessage.
 */
import { isToken } from './chars.js';

/** Compact form (lower case) → full name. */
const COMPACT: Readonly<Record<string, string>> = {
  a: 'Accept-Contact',
  b: 'Referred-By',
  c: 'Content-Type',
  d: 'Request-Disposition',
  e: 'Content-Encoding',
  f: 'From',
  i: 'Call-ID',
  j: 'Reject-Contact',
  k: 'Supported',
  l: 'Content-Length',
  m: 'Contact',
  o: 'Event',
  r: 'Refer-To',
  s: 'Subject',
  t: 'To',
  u: 'Allow-Events',
  v: 'Via',
  x: 'Session-Expires',
  y: 'Identity',
};

/** Header names whose standard spelling is not plain "capitalise after each '-'". */
const CANONICAL_LIST = [
  'Accept',
  'Accept-Contact',
  'Accept-Encoding',
  'Accept-Language',
  'Accept-Resource-Priority',
  'Alert-Info',
  'Allow',
  'Allow-Events',
  'Answer-Mode',
  'Authentication-Info',
  'Authorization',
  'Call-ID',
  'Call-Info',
  'Contact',
  'Content-Disposition',
  'Content-Encoding',
  'Content-ID',
  'Content-Language',
  'Content-Length',
  'Content-Type',
  'CSeq',
  'Date',
  'Diversion',
  'Error-Info',
  'Event',
  'Expires',
  'Feature-Caps',
  'Flow-Timer',
  'From',
  'Geolocation',
  'Geolocation-Error',
  'Geolocation-Routing',
  'History-Info',
  'Identity',
  'Identity-Info',
  'In-Reply-To',
  'Info-Package',
  'Join',
  'Max-Breadth',
  'Max-Forwards',
  'MIME-Version',
  'Min-Expires',
  'Min-SE',
  'Organization',
  'P-Access-Network-Info',
  'P-Asserted-Identity',
  'P-Asserted-Service',
  'P-Associated-URI',
  'P-Called-Party-ID',
  'P-Charging-Function-Addresses',
  'P-Charging-Vector',
  'P-Early-Media',
  'P-Preferred-Identity',
  'P-Preferred-Service',
  'P-Visited-Network-ID',
  'Path',
  'Priority',
  'Priv-Answer-Mode',
  'Privacy',
  'Proxy-Authenticate',
  'Proxy-Authorization',
  'Proxy-Require',
  'RAck',
  'Reason',
  'Record-Route',
  'Recv-Info',
  'Refer-Sub',
  'Refer-To',
  'Referred-By',
  'Reject-Contact',
  'Remote-Party-ID',
  'Replaces',
  'Reply-To',
  'Request-Disposition',
  'Require',
  'Resource-Priority',
  'Retry-After',
  'Route',
  'RSeq',
  'Security-Client',
  'Security-Server',
  'Security-Verify',
  'Server',
  'Service-Route',
  'Session-Expires',
  'Session-ID',
  'SIP-ETag',
  'SIP-If-Match',
  'Subject',
  'Subscription-State',
  'Supported',
  'Target-Dialog',
  'Timestamp',
  'To',
  'Unsupported',
  'User-Agent',
  'User-to-User',
  'Via',
  'Warning',
  'WWW-Authenticate',
];

const CANONICAL: ReadonlyMap<string, string> = new Map(CANONICAL_LIST.map((n) => [n.toLowerCase(), n]));

/**
 * The full name of a compact header name (RFC 3261 §7.3.3): `'i'` → `'Call-ID'`, `'V'` → `'Via'`.
 * @param name a header name in any case
 * @returns the full name, or `name` unchanged when it is not a known compact form
 */
export function compactToFull(name: string): string {
  return name.length === 1 ? (COMPACT[name.toLowerCase()] ?? name) : name;
}

/**
 * The case-insensitive key under which a header is looked up: lower case, compact forms mapped
 * to their full name (`'I'` and `'call-id'` → `'call-id'`).
 */
export function headerKey(name: string): string {
  const known = KEY_CACHE.get(name);
  if (known !== undefined) {
    return known;
  }
  let key: string;
  if (name.length === 1) {
    const full = COMPACT[name.toLowerCase()];
    key = full ? full.toLowerCase() : name.toLowerCase();
  } else {
    key = name.toLowerCase();
  }
  // Header names repeat endlessly on the hot path; remember a bounded number of spellings.
  if (KEY_CACHE.size < 2048) {
    KEY_CACHE.set(name, key);
  }

  return key;
}

const KEY_CACHE = new Map<string, string>();

/**
 * The standard capitalisation of a header name: known names from the RFCs as registered
 * (`'call-id'` → `'Call-ID'`, `'cseq'` → `'CSeq'`, `'www-authenticate'` → `'WWW-Authenticate'`),
 * compact forms expanded, other names lower-cased and capitalised after each '-'
 * (`'FOO-bar'` → `'Foo-Bar'`), except names starting with `x-`/`X-`, returned unchanged.
 */
export function canonicalHeaderName(name: string): string {
  const full = compactToFull(name);
  const known = CANONICAL.get(full.toLowerCase());
  if (known) {
    return known;
  }
  if (/^x-/i.test(full)) {
    return full;
  }

  return full
    .toLowerCase()
    .split('-')
    .map((w) => (w.length > 0 ? w[0]!.toUpperCase() + w.slice(1) : w))
    .join('-');
}

/** True when `name` is a valid header field name: an RFC 3261 `token` (§25.1, `header-name`). */
export function isValidHeaderName(name: string): boolean {
  return isToken(name);
}
