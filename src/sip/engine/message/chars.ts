/**
 * Character classes and small scanners shared by the SIP message parsers (RFC 3261 §25.1).
 * Everything here is linear in its input: no backtracking regular expressions.
 */

function table(chars: string, alnum = true): Uint8Array {
  const t = new Uint8Array(128);
  if (alnum) {
    for (let c = 0x30; c <= 0x39; c++) {
      t[c] = 1;
    }
    for (let c = 0x41; c <= 0x5a; c++) {
      t[c] = 1;
      t[c + 0x20] = 1;
    }
  }
  for (let i = 0; i < chars.length; i++) {
    t[chars.charCodeAt(i)] = 1;
  }

  return t;
}

/** RFC 3261 `unreserved` marks. */
const MARK = "-_.!~*'()";

/** RFC 3261 `token`. */
export const TOKEN = table("-.!%*_+`'~");
/** RFC 3261 `word` (Call-ID halves). */
export const WORD = table('-.!%*_+`\'~()<>:\\"/[]?{}');
/** RFC 3261 `user` (unreserved / escaped / user-unreserved); '%' is checked by {@link validEscapes}. */
export const USER = table(MARK + '%&=+$,;?/');
/** RFC 3261 `password`. */
export const PASSWORD = table(MARK + '%&=+$,');
/** RFC 3261 `paramchar` (URI parameters). */
export const PARAMCHAR = table(MARK + '%[]/:&+$');
/** RFC 3261 `hname` / `hvalue` characters (URI headers). */
export const HNV = table(MARK + '%[]/?:+$');
/** hostname / IPv4 characters (underscore tolerated, as many deployments use it). */
export const HOST = table('-._');
/** IPv6 reference content. */
export const IPV6 = table(':.', false);
for (const c of '0123456789abcdefABCDEF') {
  IPV6[c.charCodeAt(0)] = 1;
}
/** Characters of an absolute URI of another scheme (RFC 3261 `uric` plus '#', '[' and ']'). */
export const URIC = table(MARK + '%;/?:@&=+$,#[]');
/** Local and global telephone-number characters (RFC 3966), visual separators included. */
export const TELNUM = table('+-.()*#0123456789abcdefABCDEF', false);
/** Generic-param values that are not quoted: token / host (RFC 3261 `gen-value`), tolerating '/'. */
export const GENVALUE = table("-.!%*_+`'~[]:/");

/** True when every UTF-16 unit of `s[from, to)` is ASCII and in `t`. */
export function allIn(s: string, t: Uint8Array, from = 0, to = s.length): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || t[c] !== 1) {
      return false;
    }
  }

  return true;
}

/** True for a non-empty RFC 3261 token. */
export function isToken(s: string): boolean {
  return s.length > 0 && allIn(s, TOKEN);
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** True when every '%' in `s` starts an `escaped` triplet (`%` HEXDIG HEXDIG). */
export function validEscapes(s: string): boolean {
  for (let i = s.indexOf('%'); i >= 0; i = s.indexOf('%', i + 3)) {
    if (i + 2 >= s.length || !isHex(s.charCodeAt(i + 1)) || !isHex(s.charCodeAt(i + 2))) {
      return false;
    }
  }

  return true;
}

/** SP or HTAB. */
export function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Index of the first non-SP/HTAB character at or after `i`. */
export function skipWs(s: string, i: number): number {
  while (i < s.length && isWs(s.charCodeAt(i))) {
    i++;
  }

  return i;
}

/** Trims SP, HTAB and CR at both ends (not the wider Unicode set of String.prototype.trim). */
export function trimLws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (isWs(s.charCodeAt(a)) || s.charCodeAt(a) === 0x0d)) {
    a++;
  }
  while (b > a && (isWs(s.charCodeAt(b - 1)) || s.charCodeAt(b - 1) === 0x0d)) {
    b--;
  }

  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Reads a quoted-string starting at `s[i] === '"'` (RFC 3261 §25.1: qdtext and quoted-pair).
 * @returns the index just after the closing quote and the unescaped content, or undefined when
 *   the string is not terminated
 */
export function readQuoted(s: string, i: number): { end: number; text: string } | undefined {
  let out = '';
  let runStart = i + 1;
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c === 0x5c) {
      if (j + 1 >= s.length) {
        return undefined;
      }
      out += s.slice(runStart, j) + s[j + 1]!;
      j++;
      runStart = j + 1;
    } else if (c === 0x22) {
      return { end: j + 1, text: out + s.slice(runStart, j) };
    }
  }

  return undefined;
}

/**
 * Splits a header value on commas outside quoted strings and outside `<...>` (RFC 3261 §7.3.1).
 * Parts are trimmed; empty parts are kept so that callers can reject them when the grammar does.
 */
export function splitTopLevel(value: string): string[] {
  const parts: string[] = [];
  let inQuote = false;
  let angle = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (inQuote) {
      if (c === 0x5c) {
        i++;
      } else if (c === 0x22) {
        inQuote = false;
      }
    } else if (c === 0x22) {
      inQuote = true;
    } else if (c === 0x3c) {
      angle = true;
    } else if (c === 0x3e) {
      angle = false;
    } else if (c === 0x2c && !angle) {
      parts.push(trimLws(value.slice(start, i)));
      start = i + 1;
    }
  }
  parts.push(trimLws(value.slice(start)));

  return parts;
}

/** A record without a prototype, so that names like `__proto__` are plain keys. */
export function dict<V>(): Record<string, V> {
  return Object.create(null) as Record<string, V>;
}
