/**
 * name-addr / addr-spec values of From, To, Contact, Route, Record-Route, Refer-To… (RFC 3261
 * §20.10, §25.1) and the generic `;name=value` parameters that follow them.
 */
import { dict, GENVALUE, isToken, readQuoted, skipWs, TOKEN, trimLws } from './chars.js';
import { parseUri } from './uri.js';

/** A parsed name-addr or addr-spec with its header parameters. */
export interface NameAddr {
  /** Display name, unquoted and unescaped; undefined when there is none. */
  displayName?: string;
  /** The URI text between `<` and `>` (or the addr-spec), or '*' for `Contact: *`. */
  uri: string;
  /**
   * Header parameters (`;tag=...`, `;expires=...`) with lower-cased names; null for a flag.
   * Quoted values keep their quotes (`+sip.instance="<urn:uuid:...>"`), so formatting is lossless.
   */
  params: Record<string, string | null>;
}

/**
 * Parses `*( SEMI generic-param )` (RFC 3261 §25.1): `;name`, `;name=token-or-host` or
 * `;name="quoted"`, with optional whitespace around ';' and '='.
 * @returns the parameters, or undefined when `s` is not such a list (an empty parameter, a
 *   character that cannot start one, an unterminated quote)
 */
export function parseGenericParams(s: string): Record<string, string | null> | undefined {
  const params = dict<string | null>();
  let i = skipWs(s, 0);
  while (i < s.length) {
    if (s[i] !== ';') {
      return undefined;
    }
    i = skipWs(s, i + 1);
    const nameStart = i;
    while (i < s.length && s.charCodeAt(i) < 128 && TOKEN[s.charCodeAt(i)] === 1) {
      i++;
    }
    if (i === nameStart) {
      return undefined;
    }
    const name = s.slice(nameStart, i).toLowerCase();
    i = skipWs(s, i);
    let value: string | null = null;
    if (s[i] === '=') {
      i = skipWs(s, i + 1);
      if (s[i] === '"') {
        const q = readQuoted(s, i);
        if (!q) {
          return undefined;
        }
        value = s.slice(i, q.end);
        i = q.end;
      } else {
        const valueStart = i;
        while (i < s.length && s.charCodeAt(i) < 128 && GENVALUE[s.charCodeAt(i)] === 1) {
          i++;
        }
        if (i === valueStart) {
          return undefined;
        }
        value = s.slice(valueStart, i);
      }
      i = skipWs(s, i);
    }
    if (!(name in params)) {
      params[name] = value;
    }
  }

  return params;
}

/** Formats parameters as `;name` / `;name=value` (values as stored). */
export function formatParams(params: Record<string, string | null>): string {
  let s = '';
  for (const [k, v] of Object.entries(params)) {
    s += v === null ? `;${k}` : `;${k}=${v}`;
  }

  return s;
}

/** True for a URI acceptable inside a name-addr: no whitespace, and well-formed per parseUri. */
function validUri(uri: string): boolean {
  for (let i = 0; i < uri.length; i++) {
    const c = uri.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) {
      return false;
    }
  }

  return parseUri(uri) !== undefined;
}

/**
 * Parses a From/To/Contact-style value (RFC 3261 §20.10, §25.1):
 *
 * - name-addr: `"Bob \"B\"" <sip:b@x>;tag=1`, `Bob <sip:b@x>`, `<sip:b@x>` — the display name is
 *   unquoted and unescaped. RFC 3261 wants an unquoted display name to be tokens; any printable
 *   text but '"', ',' and '>' is tolerated (`bob@example.com <sip:...>`, UTF-8 letters), while a
 *   comma still fails, since it means a list (RFC 4475 baddn);
 * - addr-spec: `sip:b@x;tag=1` — parameters after an addr-spec belong to the header, so the URI
 *   ends at the first ';' (a URI with ',', ';' or '?' must be in `<>`);
 * - `*` (Contact, REGISTER) → uri '*'.
 *
 * The URI must be well-formed per {@link parseUri} (any scheme) and may not hold whitespace, even
 * just inside the `<>` (RFC 4475 badaspec).
 * @returns the parts, or undefined when the text is not one such value (a comma-separated list,
 *   an unterminated quote, trailing garbage...)
 */
export function parseNameAddr(text: string): NameAddr | undefined {
  const s = trimLws(text);
  if (s === '*') {
    return { uri: '*', params: dict() };
  }
  let displayName: string | undefined;
  let lt = -1;
  if (s.startsWith('"')) {
    const q = readQuoted(s, 0);
    if (!q) {
      return undefined;
    }
    displayName = q.text;
    lt = skipWs(s, q.end);
    if (s[lt] !== '<') {
      return undefined;
    }
  } else {
    let j = 0;
    while (j < s.length) {
      const c = s.charCodeAt(j);
      if (c === 0x3c || c === 0x22 || c === 0x2c || c === 0x3e || c === 0x7f || (c < 0x20 && c !== 0x09)) {
        break;
      }
      j++;
    }
    if (s[j] === '<') {
      lt = j;
      const dn = trimLws(s.slice(0, j));
      if (dn.length > 0) {
        displayName = dn;
      }
    }
  }
  if (lt >= 0) {
    const gt = s.indexOf('>', lt + 1);
    if (gt < 0) {
      return undefined;
    }
    const uri = s.slice(lt + 1, gt);
    const params = parseGenericParams(s.slice(gt + 1));
    if (!validUri(uri) || !params) {
      return undefined;
    }

    return displayName === undefined ? { uri, params } : { displayName, uri, params };
  }
  const semi = s.indexOf(';');
  const uri = trimLws(semi < 0 ? s : s.slice(0, semi));
  if (uri.includes(',') || uri.includes('?') || !validUri(uri)) {
    return undefined;
  }
  const params = parseGenericParams(semi < 0 ? '' : s.slice(semi));

  return params ? { uri, params } : undefined;
}

/** Quotes a display name unless it is a run of tokens separated by single spaces. */
function formatDisplayName(dn: string): string {
  if (dn.split(' ').every((w) => isToken(w))) {
    return dn;
  }
  let out = '"';
  for (const ch of dn) {
    const c = ch.charCodeAt(0);
    if (c === 0x0d || c === 0x0a) {
      out += ' ';
    } else if (ch === '"' || ch === '\\' || (c < 0x20 && c !== 0x09) || c === 0x7f) {
      out += '\\' + ch;
    } else {
      out += ch;
    }
  }

  return out + '"';
}

/**
 * Formats a name-addr (RFC 3261 §25.1): always `<uri>`, preceded by the display name (quoted and
 * escaped unless it is plain tokens) and followed by the parameters; `*` stays `*`.
 */
export function formatNameAddr(n: NameAddr): string {
  if (n.uri === '*') {
    return '*';
  }
  const dn = n.displayName !== undefined && n.displayName !== '' ? formatDisplayName(n.displayName) + ' ' : '';

  return `${dn}<${n.uri}>${formatParams(n.params)}`;
}

/** The `tag` parameter of a From/To value (RFC 3261 §19.3); undefined when absent or a flag. */
export function getTag(n: NameAddr | undefined): string | undefined {
  return n?.params.tag ?? undefined;
}
