/**
 * The SIP message layer of the embedded SIP engine: the message model, a robust parser for what
 * arrives from the network and the serialiser for what we send (RFC 3261 §7, §20, §25; RFC 5118;
 * RFC 3581; the RFC 4475 torture cases). Pure code: no sockets, no timers.
 *
 * Helpers live in `./message/`: character classes, header names, URIs, name-addr, Via and the
 * error class; everything public is re-exported from here.
 */
import { allIn, isToken, skipWs, splitTopLevel, trimLws, WORD } from './message/chars.js';
import { SipParseError } from './message/errors.js';
import { headerKey } from './message/header-names.js';
import { parseNameAddr, type NameAddr } from './message/name-addr.js';
import { parseUri } from './message/uri.js';
import { parseVia, type Via } from './message/via.js';

export { SipParseError } from './message/errors.js';
export { canonicalHeaderName, compactToFull, isValidHeaderName } from './message/header-names.js';
export { formatNameAddr, getTag, parseNameAddr, type NameAddr } from './message/name-addr.js';
export { formatUri, parseUri, type SipUri } from './message/uri.js';
export { formatVia, parseVia, type Via } from './message/via.js';

/** One header line: the name exactly as received or given, the value trimmed and unfolded. */
export interface SipHeader {
  name: string;
  value: string;
}

/** What {@link SipMessage}'s constructor takes. */
export interface SipMessageInit {
  isRequest: boolean;
  method: string;
  uri: string;
  status: number;
  reason: string;
  headers: SipHeader[];
  body: Buffer;
}

const MAX_CSEQ = 2 ** 31 - 1;

/** Parses a CSeq value, `1*DIGIT LWS Method` with the number below 2^31 (RFC 3261 §20.16). */
function parseCSeq(value: string): { seq: number; method: string } | undefined {
  const s = trimLws(value);
  let i = 0;
  while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) {
    i++;
  }
  // Leading zeros are valid ("0009 INVITE", RFC 4475 §3.1.1.1); cap the digits before Number().
  const digits = s.slice(0, i).replace(/^0+(?=\d)/, '');
  const j = skipWs(s, i);
  if (i === 0 || digits.length > 10 || j === i) {
    return undefined;
  }
  const seq = Number(digits);
  const method = s.slice(j);

  return seq <= MAX_CSEQ && isToken(method) ? { seq, method } : undefined;
}

/** Parses a non-negative decimal up to `max` (leading zeros allowed), else undefined. */
function parseDecimal(value: string, max: number): number | undefined {
  if (!/^\d+$/.test(value)) {
    return undefined;
  }
  const digits = value.replace(/^0+(?=\d)/, '');
  if (digits.length > 10) {
    return undefined;
  }
  const n = Number(digits);

  return n <= max ? n : undefined;
}

function toBody(body: Buffer | string | undefined): Buffer {
  if (body === undefined) {
    return Buffer.alloc(0);
  }

  return typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
}

function checkName(name: string): void {
  if (!isToken(name)) {
    throw new TypeError(`header name must be an RFC 3261 token, got ${JSON.stringify(name)}`);
  }
}

function toHeaders(headers: Array<[string, string]> | undefined): SipHeader[] {
  return (headers ?? []).map(([name, value]) => {
    checkName(name);

    return { name, value };
  });
}

/** Replaces CR/LF runs by one space, which is what folding means (RFC 3261 §7.3.1). */
function oneLine(s: string): string {
  return /[\r\n]/.test(s) ? s.replace(/[\r\n]+/g, ' ') : s;
}

/**
 * A SIP request or response (RFC 3261 §7). Headers are an ordered, mutable list of lines; lookups
 * are case-insensitive and treat compact names (§7.3.3) as their full form. Structured getters
 * (`from`, `cseq`, `vias`...) parse the current header text on each call.
 */
export class SipMessage {
  /** True for a request, false for a response. */
  readonly isRequest: boolean;
  /** Requests: the method as on the wire (unknown methods allowed); responses: ''. */
  method: string;
  /** Requests: the Request-URI text as received; responses: ''. */
  uri: string;
  /** Responses: the status code (100–699); requests: 0. */
  status: number;
  /** Responses: the reason phrase (may be empty, may hold UTF-8); requests: ''. */
  reason: string;
  /** Header lines in order, one entry per line (or per value if added that way). */
  headers: SipHeader[];
  /** The body, raw bytes. */
  body: Buffer;

  /**
   * @private Use {@link SipMessage.request}, {@link SipMessage.response} or {@link parseMessage};
   * this constructor takes the parts as they are, unchecked.
   */
  constructor(init: SipMessageInit) {
    this.isRequest = init.isRequest;
    this.method = init.method;
    this.uri = init.uri;
    this.status = init.status;
    this.reason = init.reason;
    this.headers = init.headers;
    this.body = init.body;
  }

  /**
   * Builds a request.
   * @param method a token, normally upper-case (`INVITE`)
   * @param uri the Request-URI text (not checked beyond "non-empty, no whitespace")
   * @param headers `[name, value]` pairs in order
   * @param body bytes, or text encoded as UTF-8
   * @throws {TypeError} when the method is not a token, the URI is empty or holds whitespace, or a
   *   header name is not a token
   */
  static request(method: string, uri: string, headers?: Array<[string, string]>, body?: Buffer | string): SipMessage {
    if (!isToken(method)) {
      throw new TypeError(`method must be an RFC 3261 token, got ${JSON.stringify(method)}`);
    }
    if (uri.length === 0 || /\s/.test(uri)) {
      throw new TypeError(`uri must be non-empty and without whitespace, got ${JSON.stringify(uri)}`);
    }

    return new SipMessage({ isRequest: true, method, uri, status: 0, reason: '', headers: toHeaders(headers), body: toBody(body) });
  }

  /**
   * Builds a response.
   * @param status the status code, an integer from 100 to 699
   * @param reason the reason phrase (may be empty; no CR/LF)
   * @param headers `[name, value]` pairs in order
   * @param body bytes, or text encoded as UTF-8
   * @throws {TypeError} when the status is out of range, the reason holds CR/LF, or a header name
   *   is not a token
   */
  static response(status: number, reason: string, headers?: Array<[string, string]>, body?: Buffer | string): SipMessage {
    if (!Number.isInteger(status) || status < 100 || status > 699) {
      throw new TypeError(`status must be an integer from 100 to 699, got ${status}`);
    }
    if (/[\r\n]/.test(reason)) {
      throw new TypeError('reason must not contain CR or LF');
    }

    return new SipMessage({ isRequest: false, method: '', uri: '', status, reason, headers: toHeaders(headers), body: toBody(body) });
  }

  /**
   * Lookup keys of the header lines (lower case, compact forms expanded), recomputed when a line
   * was added, removed or renamed since the last lookup: lookups run many times per message.
   */
  #keys: { names: string[]; keys: string[] } | undefined;

  #lineKeys(): string[] {
    const hs = this.headers;
    const c = this.#keys;
    if (c && c.names.length === hs.length) {
      let same = true;
      for (let i = 0; i < hs.length; i++) {
        if (c.names[i] !== hs[i]!.name) {
          same = false;
          break;
        }
      }
      if (same) {
        return c.keys;
      }
    }
    const names = hs.map((h) => h.name);
    const keys = names.map(headerKey);
    this.#keys = { names, keys };

    return keys;
  }

  /** The value of the first line named `name` (case-insensitive, compact names equivalent). */
  getHeader(name: string): string | undefined {
    const key = headerKey(name);
    const keys = this.#lineKeys();
    const i = keys.indexOf(key);

    return i < 0 ? undefined : this.headers[i]!.value;
  }

  /** The values of every line named `name`, in order. */
  getHeaders(name: string): string[] {
    const key = headerKey(name);
    const keys = this.#lineKeys();
    const out: string[] = [];
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === key) {
        out.push(this.headers[i]!.value);
      }
    }

    return out;
  }

  /**
   * Every value of a list header (Via, Route, Record-Route, Contact, Supported, Require, Allow...)
   * across all its lines, split on commas outside quotes and `<>` (RFC 3261 §7.3.1), trimmed,
   * empty elements dropped. Not meant for headers whose values contain commas (Date,
   * WWW-Authenticate...).
   */
  getHeaderValues(name: string): string[] {
    const out: string[] = [];
    for (const v of this.getHeaders(name)) {
      for (const part of splitTopLevel(v)) {
        if (part.length > 0) {
          out.push(part);
        }
      }
    }

    return out;
  }

  /** True when at least one line is named `name` (compact names equivalent). */
  hasHeader(name: string): boolean {
    return this.getHeader(name) !== undefined;
  }

  /**
   * Replaces every line named `name` (full or compact) by one line `name: value` at the position
   * of the first; appends it when there is none.
   * @throws {TypeError} when `name` is not a token
   */
  setHeader(name: string, value: string): void {
    checkName(name);
    const key = headerKey(name);
    const first = this.headers.findIndex((h) => headerKey(h.name) === key);
    if (first < 0) {
      this.headers.push({ name, value });

      return;
    }
    this.headers = this.headers.filter((h, i) => i <= first || headerKey(h.name) !== key);
    this.headers[first] = { name, value };
  }

  /**
   * Adds a line. `'first'`: before the first line of the same name, else at the top of the header
   * list (how a proxy prepends Via or Record-Route); `'last'` (default): after the last line of
   * the same name, else at the end.
   * @throws {TypeError} when `name` is not a token
   */
  addHeader(name: string, value: string, position: 'first' | 'last' = 'last'): void {
    checkName(name);
    const key = headerKey(name);
    if (position === 'first') {
      const i = this.headers.findIndex((h) => headerKey(h.name) === key);
      this.headers.splice(i < 0 ? 0 : i, 0, { name, value });

      return;
    }
    const i = this.headers.findLastIndex((h) => headerKey(h.name) === key);
    this.headers.splice(i < 0 ? this.headers.length : i + 1, 0, { name, value });
  }

  /** Removes every line named `name` (full or compact). @returns how many were removed */
  removeHeader(name: string): number {
    const key = headerKey(name);
    const before = this.headers.length;
    this.headers = this.headers.filter((h) => headerKey(h.name) !== key);

    return before - this.headers.length;
  }

  /** The Call-ID, '' when absent. */
  get callId(): string {
    return this.getHeader('call-id') ?? '';
  }

  /**
   * Parsed header values, remembered per header and keyed by the exact text they were parsed
   * from: a later edit of the header (even through `headers` directly) changes the text and so
   * misses the cache. Results are shared between calls: treat them as read-only.
   */
  #parsed = new Map<string, { src: string; value: unknown }>();

  #memo<T>(slot: string, src: string, parse: (src: string) => T): T {
    const hit = this.#parsed.get(slot);
    if (hit && hit.src === src) {
      return hit.value as T;
    }
    const value = parse(src);
    this.#parsed.set(slot, { src, value });

    return value;
  }

  /** The CSeq number and method; undefined when absent or malformed. Read-only. */
  get cseq(): { seq: number; method: string } | undefined {
    const v = this.getHeader('cseq');

    return v === undefined ? undefined : this.#memo('cseq', v, parseCSeq);
  }

  /** The From header parsed; undefined when absent or unparseable. Read-only. */
  get from(): NameAddr | undefined {
    const v = this.getHeader('from');

    return v === undefined ? undefined : this.#memo('from', v, parseNameAddr);
  }

  /** The To header parsed; undefined when absent or unparseable. Read-only. */
  get to(): NameAddr | undefined {
    const v = this.getHeader('to');

    return v === undefined ? undefined : this.#memo('to', v, parseNameAddr);
  }

  /**
   * Every Via entry in order (a line may hold several). Read-only.
   * @throws {SipParseError} 'Bad Via' when a Via line is malformed (never for a parsed message)
   */
  get vias(): Via[] {
    const lines = this.getHeaders('via');

    return this.#memo('vias', lines.join('\n'), () => lines.flatMap((v) => parseVia(v)));
  }

  /**
   * The first Via entry; undefined when there is no Via. Read-only.
   * @throws {SipParseError} 'Bad Via' when the first Via line is malformed
   */
  get topVia(): Via | undefined {
    const v = this.getHeader('via');

    return v === undefined ? undefined : this.#memo('topVia', v, (src) => parseVia(src)[0]);
  }

  /** The declared Content-Length, when present and numeric. */
  get contentLengthHeader(): number | undefined {
    const v = this.getHeader('content-length');

    return v === undefined ? undefined : parseDecimal(v, Number.MAX_SAFE_INTEGER);
  }

  /**
   * Serialises the message: start line, headers as stored (`name: value`), an empty line, the
   * body; CRLF line ends. The first Content-Length line gets the body's length in bytes (further
   * ones are dropped); `Content-Length` is appended when there is none. CR/LF inside a stored
   * value, method, URI or reason phrase become one space, so none can inject a header line.
   */
  toBuffer(): Buffer {
    const lines = [this.isRequest ? `${oneLine(this.method)} ${oneLine(this.uri)} SIP/2.0` : `SIP/2.0 ${this.status} ${oneLine(this.reason)}`];
    let lengthWritten = false;
    for (const h of this.headers) {
      if (headerKey(h.name) === 'content-length') {
        if (!lengthWritten) {
          lines.push(`${h.name}: ${this.body.length}`);
          lengthWritten = true;
        }
        continue;
      }
      lines.push(`${h.name}: ${oneLine(h.value)}`);
    }
    if (!lengthWritten) {
      lines.push(`Content-Length: ${this.body.length}`);
    }
    lines.push('', '');

    return Buffer.concat([Buffer.from(lines.join('\r\n'), 'utf8'), this.body]);
  }

  /** {@link SipMessage.toBuffer} decoded as UTF-8. */
  toString(): string {
    return this.toBuffer().toString('utf8');
  }

  /** A deep copy (headers and body copied). */
  clone(): SipMessage {
    return new SipMessage({
      isRequest: this.isRequest,
      method: this.method,
      uri: this.uri,
      status: this.status,
      reason: this.reason,
      headers: this.headers.map((h) => ({ name: h.name, value: h.value })),
      body: Buffer.from(this.body),
    });
  }
}

/** Limits and framing for {@link parseMessage}. */
export interface ParseOptions {
  /** Most header lines accepted (after unfolding). Default 256. */
  maxHeaders?: number;
  /** Most bytes in the start line plus headers (line ends included, blank line excluded). Default 16384. */
  maxHeaderBytes?: number;
  /**
   * True for a datagram (UDP): the body is the rest of the buffer, cut to Content-Length when that
   * is smaller; a Content-Length larger than the rest is an error (RFC 3261 §18.3). False
   * (default) for a stream message already framed elsewhere: the body is everything after the
   * blank line and Content-Length is only checked for syntax.
   */
  datagram?: boolean;
}

interface StartLine {
  isRequest: boolean;
  method: string;
  uri: string;
  status: number;
  reason: string;
  error?: string;
}

function isVersion(v: string): boolean {
  return /^SIP\/\d+\.\d+$/i.test(v);
}

function validRequestUri(uri: string): boolean {
  for (let i = 0; i < uri.length; i++) {
    const c = uri.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) {
      return false;
    }
  }

  return parseUri(uri) !== undefined;
}

/** Parses `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason` (RFC 3261 §7.1, §7.2). */
function parseStartLine(line: string): StartLine {
  if (/^SIP\//i.test(line)) {
    const res: StartLine = { isRequest: false, method: '', uri: '', status: 0, reason: '' };
    const sp = line.indexOf(' ');
    const version = sp < 0 ? line : line.slice(0, sp);
    if (version.toUpperCase() !== 'SIP/2.0') {
      res.error = isVersion(version) ? 'Version Not Supported' : 'Malformed start line';

      return res;
    }
    const rest = line.slice(sp + 1);
    if (sp < 0 || !/^[1-6]\d\d(?: |$)/.test(rest)) {
      res.error = 'Malformed start line';

      return res;
    }
    res.status = Number(rest.slice(0, 3));
    res.reason = trimLws(rest.slice(4));

    return res;
  }
  const req: StartLine = { isRequest: true, method: '', uri: '', status: 0, reason: '' };
  const sp1 = line.indexOf(' ');
  const sp2 = line.lastIndexOf(' ');
  const method = sp1 < 0 ? line : line.slice(0, sp1);
  if (!isToken(method)) {
    req.error = 'Malformed start line';

    return req;
  }
  req.method = method;
  if (sp1 < 0 || sp1 === sp2) {
    req.error = 'Malformed start line';

    return req;
  }
  const version = line.slice(sp2 + 1);
  req.uri = line.slice(sp1 + 1, sp2);
  if (version.toUpperCase() !== 'SIP/2.0') {
    req.error = isVersion(version) ? 'Version Not Supported' : 'Malformed start line';
  } else if (!validRequestUri(req.uri)) {
    // Also catches extra or missing spaces (RFC 4475 §3.1.2.7–3.1.2.9): they end up in the URI.
    req.error = 'Malformed Request-URI';
  }

  return req;
}

/** Headers that must appear in every request and response (RFC 3261 §8.1.1, §8.2.6.2). */
const MANDATORY: ReadonlyArray<[string, string]> = [
  ['via', 'Via'],
  ['from', 'From'],
  ['to', 'To'],
  ['call-id', 'Call-ID'],
  ['cseq', 'CSeq'],
];

/** Single-valued headers that may repeat only with the same value (RFC 4475 multi01, mcl01). */
const SINGLE: ReadonlyArray<[string, string]> = [
  ['call-id', 'Call-ID'],
  ['cseq', 'CSeq'],
  ['from', 'From'],
  ['to', 'To'],
  ['content-length', 'Content-Length'],
  ['max-forwards', 'Max-Forwards'],
];

function normalised(key: string, value: string): string {
  if (key === 'content-length' || key === 'max-forwards') {
    const n = parseDecimal(value, Number.MAX_SAFE_INTEGER);

    return n === undefined ? value : String(n);
  }
  if (key === 'cseq') {
    const c = parseCSeq(value);

    return c ? `${c.seq} ${c.method}` : value;
  }

  return value.replace(/[ \t]+/g, ' ');
}

/** Call-ID = word [ "@" word ] (RFC 3261 §25.1). */
function validCallId(v: string): boolean {
  const at = v.indexOf('@');
  if (at < 0) {
    return v.length > 0 && allIn(v, WORD);
  }

  return at > 0 && at < v.length - 1 && allIn(v, WORD, 0, at) && allIn(v, WORD, at + 1);
}

/**
 * A tag parameter, when present, is a token (RFC 3261 §19.3, §25.1 `tag-param`): a quoted tag
 * could hold "|", CR or LF, which end up in drachtio dialog ids inside control-protocol leaders.
 */
function validTag(n: NameAddr): boolean {
  if (!('tag' in n.params)) {
    return true;
  }
  const tag = n.params.tag;

  return tag !== null && tag !== undefined && isToken(tag);
}

function hasParseableVias(msg: SipMessage): boolean {
  try {
    return msg.vias.length > 0;
  } catch {
    return false;
  }
}

/** The first rule the message breaks, or undefined. */
function check(msg: SipMessage, start: StartLine, datagram: boolean, rest: number): string | undefined {
  if (start.error) {
    return start.error;
  }
  for (const [key, label] of MANDATORY) {
    if (!msg.hasHeader(key)) {
      return `Missing ${label}`;
    }
  }
  for (const [key, label] of SINGLE) {
    const values = msg.getHeaders(key);
    if (values.length > 1 && values.some((v) => normalised(key, v) !== normalised(key, values[0]!))) {
      return `Conflicting ${label}`;
    }
  }
  if (!hasParseableVias(msg)) {
    return 'Bad Via';
  }
  if (!msg.from || !validTag(msg.from)) {
    return 'Bad From';
  }
  if (!msg.to || !validTag(msg.to)) {
    return 'Bad To';
  }
  if (!validCallId(msg.callId)) {
    return 'Bad Call-ID';
  }
  const cseq = msg.cseq;
  if (!cseq) {
    return 'Bad CSeq';
  }
  if (msg.isRequest && cseq.method !== msg.method) {
    return 'CSeq method does not match';
  }
  const cl = msg.getHeader('content-length');
  const length = cl === undefined ? undefined : parseDecimal(cl, MAX_CSEQ);
  if (cl !== undefined && length === undefined) {
    return 'Bad Content-Length';
  }
  const mf = msg.getHeader('max-forwards');
  if (mf !== undefined && parseDecimal(mf, 255) === undefined) {
    return 'Bad Max-Forwards';
  }
  if (datagram && length !== undefined && length > rest) {
    return 'Content-Length exceeds message size';
  }

  return undefined;
}

/**
 * Unfolds the header lines (RFC 3261 §7.3.1) and splits each into name and value, stopping at
 * `maxHeaders` (then `overflow` is true and the rest is not looked at).
 * @throws {SipParseError} 'Malformed header line'
 */
function parseHeaderLines(lines: string[], maxHeaders: number): { headers: SipHeader[]; overflow: boolean } {
  const headers: SipHeader[] = [];
  let overflow = false;
  let parts: string[] = [];
  const flush = (): void => {
    // A continuation line may even carry the colon (RFC 4475 §3.1.1.1: "CaLl-Id\r\n : ...").
    const joined = parts.length === 1 ? parts[0]! : parts.map(trimLws).filter((p, i) => i === 0 || p.length > 0).join(' ');
    const colon = joined.indexOf(':');
    const name = colon < 0 ? '' : trimLws(joined.slice(0, colon));
    if (!isToken(name)) {
      throw new SipParseError('Malformed header line');
    }
    if (headers.length >= maxHeaders) {
      overflow = true;

      return;
    }
    headers.push({ name, value: trimLws(joined.slice(colon + 1)) });
  };
  for (let i = 1; i < lines.length && !overflow; i++) {
    const line = lines[i]!;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) {
      if (parts.length === 0) {
        throw new SipParseError('Malformed header line');
      }
      parts.push(line);
    } else {
      if (parts.length > 0) {
        flush();
      }
      parts = [line];
    }
  }
  if (parts.length > 0 && !overflow) {
    flush();
  }

  return { headers, overflow };
}

/** Where the header section ends: [end of the last header line, start of the body]. */
function findHeaderEnd(data: Buffer, start: number, maxHeaderBytes: number): [number, number] {
  // Look no further than the limit allows, so a huge line costs nothing (RFC 3261 §18.3 hygiene).
  const limit = Math.min(data.length, start + maxHeaderBytes + 4);
  const region = data.subarray(0, limit);
  let lineStart = start;
  for (let p = region.indexOf(0x0a, start); p >= 0; p = region.indexOf(0x0a, lineStart)) {
    const lineEnd = p > lineStart && data[p - 1] === 0x0d ? p - 1 : p;
    if (lineEnd === lineStart) {
      return [lineStart, p + 1];
    }
    lineStart = p + 1;
  }
  if (limit < data.length || lineStart - start > maxHeaderBytes) {
    throw new SipParseError('Header section too large');
  }
  if (lineStart !== data.length) {
    throw new SipParseError('Incomplete header section');
  }

  // No blank line but complete lines: headers only (the RFC 5118 archive has two such messages).
  return [data.length, data.length];
}

/** `v` when it is a positive number, else the default (so NaN can never lift a limit). */
function positive(v: number | undefined, dflt: number): number {
  return typeof v === 'number' && v > 0 ? v : dflt;
}

function parseUnchecked(input: unknown, opts: ParseOptions | undefined): SipMessage {
  if (!(input instanceof Uint8Array)) {
    throw new SipParseError('Empty message');
  }
  const data = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const maxHeaders = positive(opts?.maxHeaders, 256);
  const maxHeaderBytes = positive(opts?.maxHeaderBytes, 16384);
  const datagram = opts?.datagram ?? false;
  // RFC 3261 §7.5: CRLFs before the start line are ignored.
  let start = 0;
  while (start < data.length && (data[start] === 0x0d || data[start] === 0x0a)) {
    start++;
  }
  if (start === data.length) {
    throw new SipParseError('Empty message');
  }
  const [headEnd, bodyStart] = findHeaderEnd(data, start, maxHeaderBytes);
  if (headEnd - start > maxHeaderBytes) {
    throw new SipParseError('Header section too large');
  }
  // Header text is UTF-8 (RFC 3261 §7.3.1); invalid sequences become U+FFFD, never an exception.
  const lines = data.toString('utf8', start, headEnd).split('\n');
  if (lines[lines.length - 1] === '') {
    lines.pop();
  }
  const first = lines[0]!;
  const start0 = parseStartLine(first.endsWith('\r') ? first.slice(0, -1) : first);
  const { headers, overflow } = parseHeaderLines(lines, maxHeaders);
  const rest = data.subarray(bodyStart);
  const msg = new SipMessage({ ...start0, headers, body: rest });
  // Too many headers: still answerable (400) when the mandatory ones came within the limit.
  const reason = overflow ? 'Too many headers' : check(msg, start0, datagram, rest.length);
  if (reason !== undefined) {
    msg.body = Buffer.from(rest);
    const answerable = start0.isRequest && MANDATORY.every(([k]) => msg.hasHeader(k)) && hasParseableVias(msg);
    throw new SipParseError(reason, answerable ? msg : undefined);
  }
  const length = msg.contentLengthHeader;
  msg.body = Buffer.from(datagram && length !== undefined && length < rest.length ? rest.subarray(0, length) : rest);

  return msg;
}

/**
 * Parses one SIP message (RFC 3261 §7) the way a robust server must:
 *
 * - accepts CRLF or bare LF line ends, leading CRLFs (§7.5), folded headers (§7.3.1), whitespace
 *   around ':', compact names (§7.3.3), unknown methods, headers and URI schemes, any body bytes;
 * - a missing blank line after complete header lines means "no body";
 * - header text is decoded as UTF-8 with replacement; the body is kept as raw bytes (a copy);
 * - checks the start line (version SIP/2.0, a parseable Request-URI), the mandatory headers (Via,
 *   From, To, Call-ID, CSeq), that Call-ID, CSeq, From, To, Content-Length and Max-Forwards do
 *   not repeat with different values, and the syntax of Via, From, To, Call-ID, CSeq (number below
 *   2^31, method equal to the request's), Content-Length and Max-Forwards (0–255);
 * - bounded work: the header section is limited before it is decoded, and every step is linear.
 *
 * @param data exactly one message (stream transports frame it first), or one datagram
 * @throws {SipParseError} with a reason such as 'Missing Call-ID', 'Bad CSeq', 'CSeq method does
 *   not match', 'Malformed Request-URI', 'Malformed start line', 'Version Not Supported',
 *   'Malformed header line', 'Too many headers', 'Header section too large', 'Bad Content-Length',
 *   'Content-Length exceeds message size', 'Conflicting Call-ID'...; `partial` is set for a
 *   request whose header list was read and holds Via (parseable), From, To, Call-ID and CSeq.
 *   Never throws anything else: an unexpected internal failure is reported as SipParseError
 *   'Internal parser error'.
 */
export function parseMessage(data: Buffer, opts?: ParseOptions): SipMessage {
  try {
    return parseUnchecked(data, opts);
  } catch (err) {
    if (err instanceof SipParseError) {
      throw err;
    }
    throw new SipParseError('Internal parser error');
  }
}
