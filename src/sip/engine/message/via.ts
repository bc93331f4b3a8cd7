/** Via header values (RFC 3261 §20.42, §25.1; RFC 3581 rport; RFC 5118 §4.5 received). */
import { HOST, isWs, skipWs, splitTopLevel, TOKEN } from './chars.js';
import { SipParseError } from './errors.js';
import { formatParams, parseGenericParams } from './name-addr.js';
import { isHostname, normaliseIpv6, parsePort } from './uri.js';

/** One via-parm: `SIP/2.0/UDP host:port;branch=...`. */
export interface Via {
  /** Protocol name and version, e.g. 'SIP/2.0' (name upper-cased). */
  protocol: string;
  /** Upper-cased transport: UDP, TCP, TLS, WS, WSS, SCTP or another token. */
  transport: string;
  /** sent-by host: name, IPv4 or IPv6 address, without brackets. */
  host: string;
  /** sent-by port, when present. */
  port?: number;
  /**
   * Parameters with lower-cased names: `branch`, `received` (IPv6 brackets stripped, RFC 5118
   * §4.5), `rport` (null when empty, else the port as text, RFC 3581), `maddr` (brackets
   * stripped), `ttl`, others as received. Quoted values keep their quotes.
   */
  params: Record<string, string | null>;
}

function readToken(s: string, i: number): number {
  while (i < s.length && s.charCodeAt(i) < 128 && TOKEN[s.charCodeAt(i)] === 1) {
    i++;
  }

  return i;
}

function bad(): never {
  throw new SipParseError('Bad Via');
}

function unbracket(v: string | null): string | null {
  if (v !== null && v.startsWith('[') && v.endsWith(']')) {
    return normaliseIpv6(v.slice(1, -1)) ?? bad();
  }

  return v;
}

function parseOne(s: string): Via {
  // sent-protocol = protocol-name SLASH protocol-version SLASH transport (SLASH = SWS "/" SWS)
  const parts: string[] = [];
  let i = skipWs(s, 0);
  for (let k = 0; k < 3; k++) {
    if (k > 0) {
      if (s[i] !== '/') {
        bad();
      }
      i = skipWs(s, i + 1);
    }
    const start = i;
    i = readToken(s, i);
    if (i === start) {
      bad();
    }
    parts.push(s.slice(start, i));
    i = skipWs(s, i);
  }
  if (!isWs(s.charCodeAt(i - 1))) {
    bad(); // LWS is mandatory between sent-protocol and sent-by
  }
  let host: string;
  if (s[i] === '[') {
    const close = s.indexOf(']', i);
    host = (close < 0 ? undefined : normaliseIpv6(s.slice(i + 1, close))) ?? bad();
    i = close + 1;
  } else {
    const start = i;
    while (i < s.length && s.charCodeAt(i) < 128 && HOST[s.charCodeAt(i)] === 1) {
      i++;
    }
    host = s.slice(start, i);
    if (!isHostname(host)) {
      bad();
    }
  }
  const via: Via = { protocol: `${parts[0]!.toUpperCase()}/${parts[1]!}`, transport: parts[2]!.toUpperCase(), host, params: {} };
  i = skipWs(s, i);
  if (s[i] === ':') {
    i = skipWs(s, i + 1);
    const start = i;
    while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) {
      i++;
    }
    via.port = parsePort(s.slice(start, i)) ?? bad();
  }
  const params = parseGenericParams(s.slice(i)) ?? bad();
  if ('received' in params) {
    params.received = unbracket(params.received ?? null);
  }
  if ('maddr' in params) {
    params.maddr = unbracket(params.maddr ?? null);
  }
  const rport = params.rport;
  if (rport !== undefined && rport !== null && parsePort(rport) === undefined) {
    bad();
  }
  via.params = params;

  return via;
}

/**
 * Parses one Via header value, which may hold several comma-separated via-parms (RFC 3261
 * §7.3.1, §20.42), tolerating LWS around '/', ':', ';', '=' and ',' (RFC 4475 §3.1.1.1) and
 * bracketed or bare IPv6 `received` values (RFC 5118 §4.5).
 * @returns the entries in order
 * @throws {SipParseError} reason 'Bad Via' when any entry is malformed or empty
 */
export function parseVia(value: string): Via[] {
  const out: Via[] = [];
  for (const part of splitTopLevel(value)) {
    if (part.length === 0) {
      bad();
    }
    out.push(parseOne(part));
  }

  return out;
}

/**
 * Formats one via-parm: `SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK...;rport=5060`. IPv6
 * hosts and `maddr` get brackets; `received` is written without them (RFC 3261 ABNF, which
 * RFC 5118 §4.5 keeps as the form to send).
 */
export function formatVia(v: Via): string {
  const host = v.host.includes(':') ? `[${v.host}]` : v.host;
  const port = v.port !== undefined ? `:${v.port}` : '';
  const params = { ...v.params };
  const maddr = params.maddr;
  if (maddr && maddr.includes(':') && !maddr.startsWith('[')) {
    params.maddr = `[${maddr}]`;
  }

  return `${v.protocol}/${v.transport} ${host}${port}${formatParams(params)}`;
}
