/**
 * parseSdp(): an SDP body (RFC 4566) read with sdp-transform, checked, and turned into a typed
 * view of what offer/answer needs. sdp-transform is lenient by design (lines it cannot match are
 * silently dropped), so the structure it returns is checked here: a mandatory line it could not
 * read is an error, not an absent field.
 *
 * Strict on structure (v= first, o=, m= and c= lines readable, c= for every active stream, RTP
 * payload types 0-127), lenient on the rest, as RFC 4566 §5 asks of parsers: LF line ends, blank
 * lines, missing s=/t=, unknown attributes, and unreadable or impossible a=rtpmap/a=fmtp/a=ptime/
 * a=rtcp/a=crypto lines (ignored: their format then counts as unknown).
 */
import net from 'node:net';
import { parse as sdpParse, type MediaDescription, type SessionDescription } from 'sdp-transform';
import { STATIC_PAYLOAD_TYPES } from './codecs.js';
import { SdpError } from './errors.js';

/** Largest SDP body accepted (characters); a SIP message over UDP cannot carry more. */
export const MAX_SDP_LENGTH = 65_535;
/** Longest line accepted (characters). */
const MAX_LINE_LENGTH = 4096;
/** Most m= lines accepted. */
const MAX_MEDIA = 64;

/** Media direction attribute (RFC 3264 §5.1, §6.1). */
export type SdpDirection = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

/** A c= line (RFC 4566 §5.7). */
export interface SdpConnection {
  addressType: 'IP4' | 'IP6';
  /** As written; a multicast address keeps its `/ttl` suffix. */
  address: string;
  /** 4 or 6 for an IP literal (an IPv4-mapped IPv6 address is 6 here), undefined for a host name. */
  ipVersion: 4 | 6 | undefined;
}

/** The o= line (RFC 4566 §5.2). Session id and version are decimal strings: they may exceed 2^53. */
export interface SdpOrigin {
  username: string;
  sessionId: string;
  sessionVersion: string;
  addressType: 'IP4' | 'IP6';
  address: string;
}

/** One RTP payload format of an m= line, from its a=rtpmap or the RFC 3551 static table. */
export interface SdpRtpFormat {
  payloadType: number;
  /** Encoding name as written (undefined: dynamic payload type without a readable a=rtpmap). */
  encodingName: string | undefined;
  clockRate: number | undefined;
  /** Encoding parameters of a=rtpmap (audio channels); undefined when not written. */
  channels: number | undefined;
  /** The a=fmtp value as written, trimmed. */
  fmtp: string | undefined;
  /** Whether the identity came from the static table (no a=rtpmap). */
  static: boolean;
}

/** An a=crypto line (RFC 4568 §9.1). */
export interface SdpCrypto {
  tag: number;
  suite: string;
  keyParams: string;
  sessionParams?: string;
}

/** One m= section, with session-level defaults applied. */
export interface SdpMedia {
  /** Position of the m= line (RFC 3264 matches streams by position). */
  index: number;
  /** Media type: `audio`, `video`, `application`, … */
  type: string;
  /** 0 means disabled or rejected (RFC 3264 §6). */
  port: number;
  /** Transport protocol as written: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `DTLS/SCTP`, … */
  protocol: string;
  /** The m= line's formats as written. */
  formats: string[];
  /** For RTP protocols: the formats as payload types, in m= order; empty otherwise. */
  rtp: SdpRtpFormat[];
  /** The media-level c=, else the session-level one; always set when port ≠ 0. */
  connection: SdpConnection | undefined;
  /** The media-level direction attribute, else the session-level one, else sendrecv (RFC 3264 §5.1). */
  direction: SdpDirection;
  /** a=rtcp (RFC 3605). */
  rtcp: { port: number; connection?: SdpConnection } | undefined;
  /** a=rtcp-mux (RFC 5761). */
  rtcpMux: boolean;
  /** a=ptime in ms. */
  ptime: number | undefined;
  /** a=maxptime in ms. */
  maxptime: number | undefined;
  crypto: SdpCrypto[];
  /** SSRCs of a=ssrc lines (RFC 5576), in order, without repeats. */
  ssrcs: number[];
  /** a=mid (RFC 5888). */
  mid: string | undefined;
}

/** A parsed session description. Treat it as read-only: every function here leaves it alone. */
export interface SdpSession {
  origin: SdpOrigin;
  /** s= (empty when missing). */
  name: string;
  /** Session-level c=. */
  connection: SdpConnection | undefined;
  /** Session-level direction attribute. */
  direction: SdpDirection | undefined;
  media: SdpMedia[];
  /** The sdp-transform tree, for attributes this view does not model. */
  raw: SessionDescription;
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/;

/**
 * Reads the address of a c= line or a=rtcp: an IP literal of the stated type (a multicast one may
 * carry `/ttl` or `/count`), or a host name. Undefined when it is neither, or a literal of the other
 * family.
 */
export function classifyAddress(addressType: 'IP4' | 'IP6', address: string): SdpConnection | undefined {
  const base = address.split('/', 1)[0] ?? '';
  if (base === '' || address.split('/').length > 3) {
    return undefined;
  }
  const literal = net.isIPv4(base) ? 4 : net.isIPv6(base) ? 6 : undefined;
  if (literal !== undefined) {
    return (literal === 4) === (addressType === 'IP4') ? { addressType, address, ipVersion: literal } : undefined;
  }
  // a dotted quad that is not an IPv4 address, or a colon that is not IPv6, is garbage, not a host name
  if (/^[\d.]+$/.test(base) || !HOST_NAME.test(base) || base !== address) {
    return undefined;
  }

  return { addressType, address, ipVersion: undefined };
}

function bad(reason: string): SdpError {
  return new SdpError('MALFORMED', reason);
}

/** Quotes a piece of remote input for a reason text. */
function quote(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 37)}...` : text);
}

function isRtpProtocol(protocol: string): boolean {
  return /(^|\/)RTP\//i.test(protocol);
}

function asInt(v: unknown, min: number, max: number): number | undefined {
  const n = typeof v === 'string' && /^\d{1,10}$/.test(v) ? Number(v) : v;

  return typeof n === 'number' && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
}

function asPositive(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 10_000 ? v : undefined;
}

function ipVersionOf(v: unknown): 'IP4' | 'IP6' | undefined {
  return v === 4 ? 'IP4' : v === 6 ? 'IP6' : undefined;
}

interface LineCounts {
  /** c= lines per section: index 0 is the session, i + 1 the i-th m= section. */
  connections: number[];
  /** Text of each m= line. */
  mLines: string[];
}

/** Checks the line structure (RFC 4566 §5) that sdp-transform does not: what it would skip silently. */
function checkLines(text: string): LineCounts {
  const lines = text.split(/\r\n|\n|\r/);
  const counts: LineCounts = { connections: [0], mLines: [] };
  let first = true;
  let origins = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') {
      continue;
    }
    if (line.length > MAX_LINE_LENGTH) {
      throw bad(`line ${i + 1} is longer than ${MAX_LINE_LENGTH} characters`);
    }
    if (!/^[a-z]=/.test(line) || line.includes('\0')) {
      throw bad(`line ${i + 1} is not <type>=<value>: ${quote(line)}`);
    }
    const type = line[0];
    if (first) {
      if (line !== 'v=0') {
        throw bad(`the first line must be v=0 (RFC 4566 §5.1), not ${quote(line)}`);
      }
      first = false;
      continue;
    }
    const inSession = counts.mLines.length === 0;
    switch (type) {
      case 'v':
        throw bad(`a second v= line at line ${i + 1}`);
      case 'o':
      case 's':
      case 't':
        if (!inSession) {
          throw bad(`${type}= line inside a media section at line ${i + 1}`);
        }
        origins += type === 'o' ? 1 : 0;
        break;
      case 'm':
        if (counts.mLines.length === MAX_MEDIA) {
          throw bad(`more than ${MAX_MEDIA} m= lines`);
        }
        counts.mLines.push(line);
        counts.connections.push(0);
        break;
      case 'c':
        counts.connections[counts.connections.length - 1]!++;
        break;
      default:
        break;
    }
  }
  if (first) {
    throw bad('empty SDP body');
  }
  if (origins !== 1) {
    throw bad(origins === 0 ? 'no o= line (RFC 4566 §5.2)' : 'more than one o= line');
  }

  return counts;
}

function readOrigin(raw: SessionDescription): SdpOrigin {
  const o = raw.origin as Partial<SessionDescription['origin']> | undefined;
  const sessionId = String(o?.sessionId ?? '');
  const sessionVersion = String(o?.sessionVersion ?? '');
  const addressType = ipVersionOf(o?.ipVer);
  const username = String(o?.username ?? '');
  const address = String(o?.address ?? '');
  if (!o || !/^\d{1,64}$/.test(sessionId) || !/^\d{1,64}$/.test(sessionVersion) || o.netType !== 'IN' || !addressType || address === '' || username === '') {
    throw bad('unreadable o= line: expected "<username> <sess-id> <sess-version> IN IP4|IP6 <address>" with numeric id and version');
  }

  return { username, sessionId, sessionVersion, addressType, address };
}

function readConnection(c: SessionDescription['connection'], where: string): SdpConnection {
  const addressType = ipVersionOf(c?.version);
  const conn = addressType && c ? classifyAddress(addressType, String(c.ip)) : undefined;
  if (!conn) {
    throw bad(`unreadable c= line ${where}: expected "IN IP4|IP6 <address>" with an address of that type`);
  }

  return conn;
}

function readRtpFormats(m: MediaDescription, payloadTypes: number[]): SdpRtpFormat[] {
  return payloadTypes.map((pt) => {
    const map = m.rtp.find((r) => r.payload === pt);
    const fmtp = m.fmtp.find((f) => f.payload === pt);
    const fmtpText = typeof fmtp?.config === 'string' && fmtp.config.trim() !== '' ? fmtp.config.trim() : undefined;
    const clockRate = asInt(map?.rate, 1, 10_000_000);
    const channels = map?.encoding === undefined ? undefined : asInt(map.encoding, 1, 255);
    const mapOk = map !== undefined && typeof map.codec === 'string' && map.codec !== '' && clockRate !== undefined && (map.encoding === undefined || channels !== undefined);
    if (mapOk) {
      return { payloadType: pt, encodingName: map.codec, clockRate, channels, fmtp: fmtpText, static: false };
    }
    const known = STATIC_PAYLOAD_TYPES.get(pt);

    return {
      payloadType: pt,
      encodingName: known?.encodingName,
      clockRate: known?.clockRate,
      channels: undefined,
      fmtp: fmtpText,
      static: known !== undefined,
    };
  });
}

function readMedia(raw: SessionDescription, m: MediaDescription, index: number, counts: LineCounts, sessionConn: SdpConnection | undefined): SdpMedia {
  const mLine = counts.mLines[index] ?? '';
  const port = asInt(m.port, 0, 65535);
  if (typeof m.type !== 'string' || m.type === '' || port === undefined || typeof m.protocol !== 'string' || m.protocol === '') {
    const why = /^m=\S+ \d+\/\d+ /.test(mLine) ? ' (port counts are not supported)' : '';
    throw bad(`unreadable m= line ${quote(mLine)}${why}: expected "<media> <port> <proto> <fmt> ..."`);
  }
  const formats = typeof m.payloads === 'string' || typeof m.payloads === 'number' ? String(m.payloads).split(/\s+/).filter((f) => f !== '') : [];
  let rtp: SdpRtpFormat[] = [];
  if (isRtpProtocol(m.protocol)) {
    const pts = formats.map((f) => asInt(f, 0, 127));
    const wrong = formats.find((_f, i) => pts[i] === undefined);
    if (wrong !== undefined) {
      throw bad(`m= line ${index + 1} (${m.protocol}) lists ${quote(wrong)}, not an RTP payload type 0-127`);
    }
    rtp = readRtpFormats(m, pts as number[]);
  }
  let connection = sessionConn;
  if ((counts.connections[index + 1] ?? 0) > 0) {
    connection = readConnection(m.connection, `in m= section ${index + 1}`);
  }
  if (!connection && port !== 0) {
    throw bad(`no c= line for m= line ${index + 1} and none at session level (RFC 4566 §5.7)`);
  }
  let rtcp: SdpMedia['rtcp'];
  const rtcpPort = asInt(m.rtcp?.port, 1, 65535);
  if (m.rtcp && rtcpPort !== undefined) {
    const type = ipVersionOf(m.rtcp.ipVer);
    const rtcpConn = m.rtcp.address !== undefined && type ? classifyAddress(type, String(m.rtcp.address)) : undefined;
    rtcp = rtcpConn ? { port: rtcpPort, connection: rtcpConn } : { port: rtcpPort };
  }
  const ssrcs: number[] = [];
  for (const s of m.ssrcs ?? []) {
    const id = asInt(s.id, 0, 0xffffffff);
    if (id !== undefined && !ssrcs.includes(id)) {
      ssrcs.push(id);
    }
  }
  const crypto: SdpCrypto[] = [];
  for (const c of m.crypto ?? []) {
    const tag = asInt(c.id, 0, 999_999_999);
    if (tag !== undefined && typeof c.suite === 'string' && c.suite !== '' && typeof c.config === 'string' && c.config !== '') {
      crypto.push(c.sessionConfig === undefined ? { tag, suite: c.suite, keyParams: c.config } : { tag, suite: c.suite, keyParams: c.config, sessionParams: String(c.sessionConfig) });
    }
  }

  return {
    index,
    type: m.type,
    port,
    protocol: m.protocol,
    formats,
    rtp,
    connection,
    direction: m.direction ?? raw.direction ?? 'sendrecv',
    rtcp,
    rtcpMux: m.rtcpMux === 'rtcp-mux',
    ptime: asPositive(m.ptime),
    maxptime: asPositive(m.maxptime),
    crypto,
    ssrcs,
    mid: m.mid === undefined ? undefined : String(m.mid),
  };
}

/**
 * Parses an SDP body.
 * @param text the body (CRLF or LF line ends)
 * @throws {SdpError} `MALFORMED` (and nothing else, whatever the input) when it is not usable SDP
 */
export function parseSdp(text: string): SdpSession {
  if (typeof text !== 'string') {
    throw bad('the SDP body is not text');
  }
  if (text.length > MAX_SDP_LENGTH) {
    throw bad(`the SDP body is longer than ${MAX_SDP_LENGTH} characters`);
  }
  const counts = checkLines(text);
  let raw: SessionDescription;
  try {
    raw = sdpParse(text);
  } catch (err) {
    throw bad(`unreadable SDP (${err instanceof Error ? err.message : String(err)})`);
  }
  if (raw.media.length !== counts.mLines.length) {
    throw bad('unreadable m= lines');
  }
  const origin = readOrigin(raw);
  const connection = (counts.connections[0] ?? 0) > 0 ? readConnection(raw.connection, 'at session level') : undefined;
  const media = raw.media.map((m, i) => readMedia(raw, m, i, counts, connection));

  return {
    origin,
    name: raw.name === undefined ? '' : String(raw.name),
    connection,
    direction: raw.direction,
    media,
    raw,
  };
}

/** A session as given: parsed already, or text to parse. */
export function toSession(sdp: string | SdpSession): SdpSession {
  return typeof sdp === 'string' ? parseSdp(sdp) : sdp;
}
