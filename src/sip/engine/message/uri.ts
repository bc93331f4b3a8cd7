/**
 * SIP, SIPS and TEL URIs (RFC 3261 §19.1, §25.1; RFC 3966), with the IPv6 reference rules of
 * RFC 5118 and tolerance for other absolute-URI schemes.
 */
import { isIPv6 } from 'node:net';
import { allIn, dict, HNV, HOST, IPV6, PARAMCHAR, PASSWORD, TELNUM, URIC, USER, validEscapes } from './chars.js';

/**
 * A parsed URI. Percent-escapes are kept as received in `user`, `password`, parameter values and
 * header names/values, so that {@link formatUri} gives back the same text.
 */
export interface SipUri {
  /** Lower-cased scheme: 'sip', 'sips', 'tel' or any other absolute-URI scheme. */
  scheme: 'sip' | 'sips' | 'tel' | (string & {});
  /** sip/sips: the user part (escapes kept); tel: the number; other schemes: everything after the ':'. */
  user?: string;
  /** sip/sips: the password after `user:` (discouraged by RFC 3261 but valid). */
  password?: string;
  /** sip/sips: host name, IPv4 address or IPv6 address WITHOUT brackets; '' for tel and other schemes. */
  host: string;
  /** Port, when the URI names one (0–65535). */
  port?: number;
  /** URI parameters with lower-cased names; null for a flag such as `lr`. Values as received. */
  params: Record<string, string | null>;
  /** URI headers (`?name=value&...`), names and values as received. */
  headers: Record<string, string>;
}

const SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*$/;

/**
 * Validates the content of an IPv6 reference (without brackets) and tolerates the RFC 3261 ABNF
 * bug of RFC 5118 §4.10 (`2001:db8:::192.0.2.1`), which is normalised to the two-colon form.
 * @returns the address to use, or undefined when it is not an IPv6 address
 */
export function normaliseIpv6(s: string): string | undefined {
  if (s.length < 2 || s.length > 64 || !allIn(s, IPV6) || !s.includes(':')) {
    return undefined;
  }
  const n = s.includes(':::') ? s.replace(':::', '::') : s;

  return isIPv6(n) ? n : undefined;
}

/** True for a host name or IPv4 address (RFC 3261 `hostname` / `IPv4address`, '_' tolerated). */
export function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > 255 || !allIn(s, HOST)) {
    return false;
  }
  const body = s.endsWith('.') ? s.slice(0, -1) : s;
  if (body.length === 0) {
    return false;
  }
  for (const label of body.split('.')) {
    if (label.length === 0 || label.startsWith('-') || label.endsWith('-')) {
      return false;
    }
  }

  return true;
}

/** Parses a decimal port (1–5 digits, at most 65535). */
export function parsePort(s: string): number | undefined {
  if (s.length === 0 || s.length > 5) {
    return undefined;
  }
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) {
      return undefined;
    }
  }
  const n = Number(s);

  return n <= 65535 ? n : undefined;
}

function parseUriParams(seg: string, out: Record<string, string | null>): boolean {
  for (const p of seg.split(';')) {
    const eq = p.indexOf('=');
    const name = eq < 0 ? p : p.slice(0, eq);
    const value = eq < 0 ? null : p.slice(eq + 1);
    if (name.length === 0 || !allIn(name, PARAMCHAR) || !validEscapes(name)) {
      return false;
    }
    if (value !== null && (!allIn(value, PARAMCHAR) || !validEscapes(value))) {
      return false;
    }
    const key = name.toLowerCase();
    if (!(key in out)) {
      out[key] = value;
    }
  }

  return true;
}

function parseUriHeaders(seg: string, out: Record<string, string>): boolean {
  for (const h of seg.split('&')) {
    const eq = h.indexOf('=');
    if (eq <= 0) {
      return false;
    }
    const name = h.slice(0, eq);
    const value = h.slice(eq + 1);
    if (!allIn(name, HNV) || !validEscapes(name) || !allIn(value, HNV) || !validEscapes(value)) {
      return false;
    }
    if (!(name in out)) {
      out[name] = value;
    }
  }

  return true;
}

function parseSip(scheme: string, rest: string): SipUri | undefined {
  const uri: SipUri = { scheme, host: '', params: dict(), headers: dict() };
  let hostpart = rest;
  // '@' cannot appear unescaped after the userinfo (RFC 3261 §25.1), so the first one ends it;
  // the user part itself may hold ';' and '?' (user-unreserved, RFC 4475 §3.1.1.9).
  const at = rest.indexOf('@');
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    hostpart = rest.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const user = colon < 0 ? userinfo : userinfo.slice(0, colon);
    if (user.length === 0 || !allIn(user, USER) || !validEscapes(user)) {
      return undefined;
    }
    uri.user = user;
    if (colon >= 0) {
      const password = userinfo.slice(colon + 1);
      if (!allIn(password, PASSWORD) || !validEscapes(password)) {
        return undefined;
      }
      uri.password = password;
    }
  }
  let i: number;
  if (hostpart.startsWith('[')) {
    const close = hostpart.indexOf(']');
    const host = close < 0 ? undefined : normaliseIpv6(hostpart.slice(1, close));
    if (host === undefined) {
      return undefined;
    }
    uri.host = host;
    i = close + 1;
  } else {
    i = 0;
    while (i < hostpart.length && hostpart[i] !== ':' && hostpart[i] !== ';' && hostpart[i] !== '?') {
      i++;
    }
    const host = hostpart.slice(0, i);
    // An IPv6 address without [ ] lands here and fails on its second ':' (RFC 5118 §4.2).
    if (!isHostname(host)) {
      return undefined;
    }
    uri.host = host;
  }
  if (hostpart[i] === ':') {
    let j = i + 1;
    while (j < hostpart.length && hostpart[j] !== ';' && hostpart[j] !== '?') {
      j++;
    }
    const port = parsePort(hostpart.slice(i + 1, j));
    if (port === undefined) {
      return undefined;
    }
    uri.port = port;
    i = j;
  }
  if (i < hostpart.length && hostpart[i] !== ';' && hostpart[i] !== '?') {
    return undefined;
  }
  if (hostpart[i] === ';') {
    const q = hostpart.indexOf('?', i);
    const end = q < 0 ? hostpart.length : q;
    if (!parseUriParams(hostpart.slice(i + 1, end), uri.params)) {
      return undefined;
    }
    i = end;
  }
  if (hostpart[i] === '?' && !parseUriHeaders(hostpart.slice(i + 1), uri.headers)) {
    return undefined;
  }

  return uri;
}

function parseTel(rest: string): SipUri | undefined {
  const semi = rest.indexOf(';');
  const number = semi < 0 ? rest : rest.slice(0, semi);
  if (!/[0-9A-Fa-f*#]/.test(number) || !allIn(number, TELNUM)) {
    return undefined;
  }
  const uri: SipUri = { scheme: 'tel', user: number, host: '', params: dict(), headers: dict() };
  if (semi >= 0 && !parseUriParams(rest.slice(semi + 1), uri.params)) {
    return undefined;
  }

  return uri;
}

/**
 * Parses a URI as found in a Request-URI, a name-addr or an addr-spec (RFC 3261 §19.1.1, §25.1).
 *
 * - `sip:`/`sips:`: user, password, host (IPv6 without brackets; an unbracketed IPv6 address is
 *   malformed, RFC 5118 §4.2), port, parameters (names lower-cased) and headers;
 * - `tel:` (RFC 3966): the number in `user`, its parameters in `params`, host '';
 * - any other scheme: host '' and everything after the ':' in `user`.
 *
 * Percent-escapes are validated but not decoded. The scheme is lower-cased.
 * @returns the parts, or undefined when the text is not a well-formed URI
 */
export function parseUri(text: string): SipUri | undefined {
  const colon = text.indexOf(':');
  if (colon <= 0 || colon > 32) {
    return undefined;
  }
  const scheme = text.slice(0, colon).toLowerCase();
  const rest = text.slice(colon + 1);
  if (!SCHEME_RE.test(scheme) || rest.length === 0) {
    return undefined;
  }
  if (scheme === 'sip' || scheme === 'sips') {
    return parseSip(scheme, rest);
  }
  if (scheme === 'tel') {
    return parseTel(rest);
  }
  if (!allIn(rest, URIC) || !validEscapes(rest)) {
    return undefined;
  }

  return { scheme, user: rest, host: '', params: dict(), headers: dict() };
}

/**
 * Formats a URI (RFC 3261 §19.1.1): IPv6 hosts get their brackets; parameters as `;name` (null
 * value) or `;name=value`; headers as `?name=value&...`. For a URI that {@link parseUri} accepted
 * it gives back the same text, except for a lower-cased scheme and parameter names and the
 * RFC 5118 §4.10 three-colon IPv6 form written with two colons.
 */
export function formatUri(u: SipUri): string {
  let s = `${u.scheme}:`;
  if (u.scheme === 'sip' || u.scheme === 'sips') {
    if (u.user !== undefined && u.user !== '') {
      s += u.user;
      if (u.password !== undefined) {
        s += `:${u.password}`;
      }
      s += '@';
    }
    s += u.host.includes(':') ? `[${u.host}]` : u.host;
    if (u.port !== undefined) {
      s += `:${u.port}`;
    }
  } else {
    s += u.user ?? '';
  }
  for (const [k, v] of Object.entries(u.params)) {
    s += v === null ? `;${k}` : `;${k}=${v}`;
  }
  const hs = Object.entries(u.headers);
  if (hs.length > 0) {
    s += '?' + hs.map(([k, v]) => `${k}=${v}`).join('&');
  }

  return s;
}
