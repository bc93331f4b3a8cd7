/**
 * Writing our own SDP (offers and answers) with sdp-transform, and the o= line rules of RFC 3264
 * §5 and §8: a new session gets a fresh id and version; a later SDP of the same session keeps
 * username, id and address and increments the version by one, unless nothing else changed.
 */
import { randomInt } from 'node:crypto';
import { write as sdpWrite, type MediaDescription, type SessionDescription } from 'sdp-transform';
import { type SdpCrypto, type SdpDirection, type SdpSession } from './parse.js';

/** The o= session id and version of our SDP in one dialog. */
export interface SdpSessionIds {
  /** Decimal session id (RFC 4566 §5.2), kept for the whole dialog. */
  id: string;
  /** Session version, a safe non-negative integer; incremented on each changed SDP (RFC 3264 §8). */
  version: number;
}

/** o= username of the SDP we write. */
export const SDP_USERNAME = 'ringbridge';
/** s= of the SDP we write. */
export const SDP_SESSION_NAME = 'ringbridge';

/** Fresh ids for a new session: a random 48-bit id and a random 31-bit starting version. */
export function newSdpSessionIds(): SdpSessionIds {
  return { id: String(randomInt(1, 2 ** 48)), version: randomInt(1, 2 ** 31) };
}

/** One RTP format of our active audio line. */
export interface LocalFormat {
  payloadType: number;
  encodingName: string;
  clockRate: number;
  channels?: number;
  fmtp?: string;
}

/** Our active audio m= line. */
export interface LocalAudioLine {
  kind: 'audio';
  port: number;
  protocol: string;
  formats: LocalFormat[];
  direction: SdpDirection;
  rtcpMux: boolean;
  /** Written as a=rtcp (RFC 3605) when not port + 1 and without rtcp-mux. */
  rtcpPort?: number;
  ptime?: number;
  maxptime?: number;
  crypto?: SdpCrypto;
  mid?: string;
}

/** A stream we reject or keep disabled: port 0 with the formats as they were (RFC 3264 §6, §8.2). */
export interface RejectedLine {
  kind: 'rejected';
  type: string;
  protocol: string;
  formats: string[];
  mid?: string;
}

/** Where the o= line comes from. */
export type OriginSource = { session: SdpSessionIds; previous?: undefined } | { previous: SdpSession; session?: undefined };

function toMedia(line: LocalAudioLine | RejectedLine): MediaDescription {
  if (line.kind === 'rejected') {
    const m: MediaDescription = { type: line.type, port: 0, protocol: line.protocol, payloads: line.formats.length > 0 ? line.formats.join(' ') : '0', rtp: [], fmtp: [] };
    if (line.mid !== undefined) {
      m.mid = line.mid;
    }

    return m;
  }
  const m: MediaDescription = {
    type: 'audio',
    port: line.port,
    protocol: line.protocol,
    payloads: line.formats.map((f) => f.payloadType).join(' '),
    rtp: line.formats.map((f) => ({
      payload: f.payloadType,
      codec: f.encodingName,
      rate: f.clockRate,
      ...(f.channels !== undefined && f.channels !== 1 ? { encoding: f.channels } : {}),
    })),
    fmtp: line.formats.flatMap((f) => (f.fmtp === undefined ? [] : [{ payload: f.payloadType, config: f.fmtp }])),
    direction: line.direction,
  };
  if (line.rtcpMux) {
    m.rtcpMux = 'rtcp-mux';
  } else if (line.rtcpPort !== undefined && line.rtcpPort !== line.port + 1) {
    m.rtcp = { port: line.rtcpPort };
  }
  if (line.ptime !== undefined) {
    m.ptime = line.ptime;
  }
  if (line.maxptime !== undefined) {
    m.maxptime = line.maxptime;
  }
  if (line.crypto) {
    m.crypto = [{ id: line.crypto.tag, suite: line.crypto.suite, config: line.crypto.keyParams, ...(line.crypto.sessionParams === undefined ? {} : { sessionConfig: line.crypto.sessionParams }) }];
  }
  if (line.mid !== undefined) {
    m.mid = line.mid;
  }

  return m;
}

/**
 * Writes our SDP: session-level c= with our address, t=0 0, one line per stream.
 * @param address our media address (IP literal)
 * @param family its family
 * @param lines the m= lines in order
 * @param origin fresh ids, or our previous SDP of the dialog (o= kept; version + 1 unless the text is otherwise identical)
 * @returns the text and the ids written in o=
 * @throws {TypeError} when the previous o= version is not a safe integer below 2^53 - 1
 */
export function writeLocalSdp(address: string, family: 4 | 6, lines: ReadonlyArray<LocalAudioLine | RejectedLine>, origin: OriginSource): { text: string; session: SdpSessionIds } {
  const prev = origin.previous?.origin;
  const username = prev ? prev.username : SDP_USERNAME;
  const id = prev ? prev.sessionId : origin.session!.id;
  const oType = prev ? (prev.addressType === 'IP6' ? 6 : 4) : family;
  const oAddress = prev ? prev.address : address;
  let version: number;
  if (prev) {
    version = Number(prev.sessionVersion);
    if (!Number.isSafeInteger(version + 1)) {
      throw new TypeError(`previous SDP o= version ${prev.sessionVersion} cannot be incremented as a safe integer; previous must be an SDP ringbridge wrote`);
    }
  } else {
    version = origin.session!.version;
  }
  const render = (v: number): string => {
    const desc: SessionDescription = {
      version: 0,
      origin: { username, sessionId: id, sessionVersion: v, netType: 'IN', ipVer: oType, address: oAddress },
      name: SDP_SESSION_NAME,
      connection: { version: family, ip: address },
      timing: { start: 0, stop: 0 },
      media: lines.map(toMedia),
    };

    return sdpWrite(desc);
  };
  if (origin.previous) {
    const same = render(version);
    if (same === sdpWrite(structuredClone(origin.previous.raw))) {
      return { text: same, session: { id, version } };
    }
    version += 1;
  }

  return { text: render(version), session: { id, version } };
}
