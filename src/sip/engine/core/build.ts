/**
 * Building blocks of the engine core: reading the SIP text apps send (which is looser than what
 * the network must send), ids and tags, meta fields of the wire protocol, and the header rules of
 * drachtio-server (wire protocol §6.3 and §7.1).
 */
import { randomUUID } from 'node:crypto';
import { randomPoolBytes } from '../../../util/random.js';
import { canonicalHeaderName, compactToFull, isValidHeaderName, SipMessage } from '../message.js';
import { formatHost, type HostPort, type ListenPoint, type SipProtocol } from '../transport/types.js';

/** Thrown when an app's SIP text cannot be used; the reason goes back to the app as NOK. */
export class AppMessageError extends Error {
  override readonly name = 'AppMessageError';
}

/**
 * Reads the SIP text of an A→S `sip` message. Unlike network messages, an app's request may lack
 * Via, From, To, Call-ID and CSeq (the engine fills them in), its Content-Length is ignored (srf
 * computes it in UTF-16 code units, wire protocol §2.5), and the body is everything after the
 * first empty line.
 * @throws {AppMessageError} when the start line or a header line is malformed
 */
export function parseAppMessage(text: string): SipMessage {
  let sep = text.indexOf('\r\n\r\n');
  let sepLen = 4;
  if (sep < 0) {
    const lf = text.indexOf('\n\n');
    if (lf >= 0) {
      sep = lf;
      sepLen = 2;
    }
  }
  const head = sep < 0 ? text.replace(/(\r?\n)+$/, '') : text.slice(0, sep);
  const body = sep < 0 ? '' : text.slice(sep + sepLen);
  const lines = head.split(/\r?\n/);
  const start = (lines.shift() ?? '').trim();
  let msg: SipMessage;
  const resp = /^SIP\/2\.0\s+(\d{3})\s*(.*)$/i.exec(start);
  if (resp) {
    msg = SipMessage.response(Number(resp[1]), resp[2] ?? '');
  } else {
    const req = /^([A-Za-z][A-Za-z0-9.!%*_+`'~-]*)\s+(\S+)\s+SIP\/2\.0$/i.exec(start);
    if (!req) {
      throw new AppMessageError(`malformed start line: ${start.slice(0, 80)}`);
    }
    msg = SipMessage.request(req[1]!.toUpperCase(), req[2]!);
  }
  for (const line of lines) {
    if (line.trim() === '') {
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) {
      throw new AppMessageError(`malformed header line: ${line.slice(0, 80)}`);
    }
    const name = line.slice(0, colon).trim();
    if (!isValidHeaderName(name)) {
      continue; // wire protocol §6.3: header lines with an invalid name are dropped
    }
    msg.headers.push({ name, value: line.slice(colon + 1).trim() });
  }
  msg.removeHeader('content-length');
  msg.body = Buffer.from(body, 'utf8');

  return msg;
}

const TAG_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A random tag (RFC 3261 §19.3: at least 32 bits of randomness; this has ~77). */
export function newTag(): string {
  const bytes = randomPoolBytes(13);
  let s = '';
  for (const b of bytes) {
    s += TAG_ALPHABET[b % TAG_ALPHABET.length];
  }

  return s;
}

/** A new Call-ID. */
export function newCallId(): string {
  return randomUUID();
}

/** A new initial CSeq number, below 2^31 (RFC 3261 §8.1.1.5). */
export function newCSeq(): number {
  return 1 + (randomPoolBytes(4).readUInt32BE(0) % 100_000_000);
}

/** The wire protocol's time field: UTC HH:MM:SS.uuuuuu. */
export function wireTime(d = new Date()): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const micros = d.getUTCMilliseconds() * 1000 + Math.floor((performance.now() * 1000) % 1000);

  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(micros, 6)}`;
}

/** IPv6 addresses in brackets for the meta address field (safer for srf's digest pin, §4). */
export function metaAddress(address: string): string {
  return formatHost(address);
}

/** `<sip:[user@]host:port[;transport=x]>` of a listener. */
export function contactOf(point: ListenPoint, user?: string): string {
  return `<${uriOf(point, user)}>`;
}

/** `sip:[user@]host:port[;transport=x]` of a listener. */
export function uriOf(point: ListenPoint, user?: string): string {
  const t = point.protocol === 'udp' ? '' : `;transport=${point.protocol}`;

  return `sip:${user ? `${user}@` : ''}${formatHost(point.advertisedAddress)}:${point.advertisedPort}${t}`;
}

/** "proto/host:port" of a listener for the authenticate reply. */
export function hostportOf(point: ListenPoint, local: boolean): string {
  return `${point.protocol}/${formatHost(local ? point.address : point.advertisedAddress)}:${point.port}`;
}

/**
 * Replaces a `localhost` host (with or without port) in a URI-bearing header value with the
 * listener's address and port (wire protocol §7.1: srf's callingNumber sends sip:123@localhost).
 */
export function substituteLocalhost(value: string, point: ListenPoint): string {
  return value.replace(/(sips?:(?:[^@<>;\s"]*@)?)localhost(?::\d+)?/gi, (_m, pre: string) => `${pre}${formatHost(point.advertisedAddress)}:${point.advertisedPort}`);
}

/** Header names (lower case, full form) the engine always owns and never takes from an app. */
export const ENGINE_OWNED = new Set(['via', 'route', 'record-route', 'rseq', 'content-length']);

/**
 * The header name to send for an app-supplied one: compact forms expanded, known headers in
 * standard capitalisation, unknown ones capitalised after each "-" (X- headers untouched).
 */
export function outgoingHeaderName(name: string): string {
  return canonicalHeaderName(compactToFull(name));
}

/** Lower-case full name of a header, for comparisons. */
export function headerKey(name: string): string {
  return compactToFull(name).toLowerCase();
}

/** Whether a message's Supported or Require lists an option tag (e.g. 100rel, timer). */
export function hasOptionTag(msg: SipMessage, tag: string): boolean {
  const t = tag.toLowerCase();

  return [...msg.getHeaderValues('supported'), ...msg.getHeaderValues('require')].some((v) => v.toLowerCase() === t);
}

/** The meta tokens `source|bytes|protocol|address|port|time` (wire protocol §4). */
export function meta(source: 'network' | 'application', bytes: number, protocol: SipProtocol, hp: HostPort): string[] {
  return [source, String(bytes), protocol, metaAddress(hp.address), String(hp.port), wireTime()];
}
