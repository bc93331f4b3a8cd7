/**
 * Offer/answer (RFC 3264) for the trunk leg: the answer to a trunk's offer, our offers and
 * re-offers, the plan from the trunk's answer, and answers to the trunk's re-offers. One audio
 * stream, one codec plus telephone-event, never transcoded.
 */
import ipaddr from 'ipaddr.js';
import net from 'node:net';
import { parseParams } from 'sdp-transform';
import { type TrunkCodecName } from '../../media/codecs.js';
import {
  CODEC_INFO,
  codecOfFormat,
  describeFormat,
  isTelephoneEvent,
  isTrunkCodecName,
  mimeTypeOf,
  TELEPHONE_EVENT,
  TELEPHONE_EVENT_CLOCKS,
  type FormatIdentity,
} from './codecs.js';
import { SdpError } from './errors.js';
import { toSession, type SdpCrypto, type SdpDirection, type SdpMedia, type SdpRtpFormat, type SdpSession } from './parse.js';
import { newSdpSessionIds, writeLocalSdp, type LocalAudioLine, type LocalFormat, type OriginSource, type RejectedLine, type SdpSessionIds } from './write.js';

/** Exactly one of A and B. */
export type Either<A, B> = (A & { [K in Exclude<keyof B, keyof A>]?: undefined }) | (B & { [K in Exclude<keyof A, keyof B>]?: undefined });

/** Our media address: one IP literal, or one per family (the remote's family picks, IPv4-mapped IPv6 counting as IPv4). */
export type LocalAddress = string | { ipv4?: string; ipv6?: string };

/** The call's codec, as both legs use it. */
export interface PlanCodec {
  name: TrunkCodecName;
  /** `audio/PCMU`, `audio/opus`, … */
  mimeType: string;
  /** Payload type of the RTP we send to the remote: the number in the remote's SDP. */
  payloadType: number;
  /** Payload type of the RTP the remote sends us: the number in our SDP. Equal to payloadType unless an answer renumbered it (RFC 3264 §6.1 allows it). */
  localPayloadType: number;
  clockRate: number;
  channels: number;
  /** The remote's a=fmtp for it, as written. */
  fmtp?: string;
  /** That a=fmtp as key=value parameters. */
  parameters: Record<string, string | number>;
}

/** The telephone-event format (RFC 4733) at the codec's clock. */
export interface PlanTelephoneEvent {
  payloadType: number;
  localPayloadType: number;
  clockRate: number;
  /** The remote's a=fmtp (event list), as written. */
  events?: string;
}

/** Where the remote wants its media. */
export interface PlanRemote {
  /** RTP address; an IPv4-mapped IPv6 address is given as IPv4 (RFC 5118 §4.9); `0.0.0.0` or `::` on an RFC 2543 hold. */
  address: string;
  port: number;
  rtcpAddress: string;
  /** a=rtcp (RFC 3605), else port + 1; the RTP port with rtcp-mux. */
  rtcpPort: number;
  /** rtcp-mux in use (RFC 5761): offered and accepted. */
  rtcpMux: boolean;
  /** The first a=ssrc of the stream, when the remote announced one. */
  ssrc?: number;
}

/** Why the remote does not want our media: `direction` for a=sendonly/inactive, `null-address` for c=0.0.0.0 (RFC 3264 §8.4). */
export type HoldKind = 'none' | 'direction' | 'null-address';

/** SDES keys of an RTP/SAVP stream (RFC 4568). */
export interface PlanSrtp {
  /** The remote's a=crypto we accepted (it encrypts with this key). */
  remote: SdpCrypto;
  /** Ours (same tag and suite). */
  local: SdpCrypto;
}

/** What the media layer needs to run one call's trunk leg. JSON-safe. */
export interface MediaPlan {
  /** Position of the audio m= line (streams are matched by position, RFC 3264 §8). */
  mediaIndex: number;
  mid?: string;
  transport: 'RTP/AVP' | 'RTP/SAVP';
  codec: PlanCodec;
  telephoneEvent?: PlanTelephoneEvent;
  remote: PlanRemote;
  /**
   * The remote's direction as its SDP declares it, with c=0.0.0.0 taking away its receiving
   * (RFC 3264 §8.4); for an answer to our offer, also narrowed to what our offer allowed.
   */
  direction: SdpDirection;
  /** Our direction as our SDP says. */
  localDirection: SdpDirection;
  /** What actually flows: send = we send RTP to the remote, receive = the remote sends to us. */
  flow: { send: boolean; receive: boolean };
  hold: HoldKind;
  /** The remote's a=ptime / a=maxptime. */
  ptime?: number;
  maxptime?: number;
  srtp?: PlanSrtp;
  /** Whether the remote's c= line was IN IP6 (an IPv4-mapped address included). */
  connectionIPv6: boolean;
  /** The remote's o= id and version (decimal strings). */
  remoteSession: { id: string; version: string };
}

/**
 * Enables RTP/SAVP (SDES, RFC 4568): gets the offered a=crypto lines and returns ours, with the
 * tag and suite of one of them and our own key, or undefined to refuse them all.
 */
export type SrtpAnswerer = (offered: readonly SdpCrypto[]) => SdpCrypto | undefined;

/** Options of an answer, shared by negotiateAnswer() and reanswer(). */
interface AnswerMediaOptions {
  /** Our RTCP port when it is not localPort + 1 (written as a=rtcp, RFC 3605); ignored with rtcp-mux. */
  localRtcpPort?: number;
  /** Accept rtcp-mux when offered (RFC 5761). Default true. */
  rtcpMux?: boolean;
  /** a=ptime of the answer; default: the offer's, and none when it had none. */
  ptime?: number;
  /** The most we agree to: our answer is the offer's direction mirrored (RFC 3264 §6.1) and limited to this. Default sendrecv; sendonly while we hold the call. */
  localDirection?: SdpDirection;
  /** Enables RTP/SAVP, see {@link SrtpAnswerer}. Default: RTP/SAVP streams are not usable (`SRTP_REQUIRED`). */
  srtp?: SrtpAnswerer;
}

/** Options of negotiateAnswer(). */
export type NegotiateAnswerOptions = AnswerMediaOptions & {
  /** Codecs this trunk may use. The offer's order decides among them (RFC 3264 §6.1). */
  allowedCodecs: readonly TrunkCodecName[];
  /** Our RTP relay's public address. */
  localAddress: LocalAddress;
  /** Our RTP relay's public port. */
  localPort: number;
} & Either<
    {
      /** o= id and version for the first SDP of the dialog; default newSdpSessionIds(). */
      session?: SdpSessionIds;
    },
    {
      /** Our last SDP in this dialog: its o= is kept and the version incremented (RFC 3264 §8). */
      previous: string | SdpSession;
    }
  >;

/** What negotiateAnswer() and reanswer() return. */
export interface AnswerResult {
  answerSdp: string;
  plan: MediaPlan;
  /** The o= id and version of answerSdp. */
  session: SdpSessionIds;
}

/** Options of reanswer(). Local address and ports default to those of the previous SDP. */
export type ReanswerOptions = AnswerMediaOptions & {
  /** Our last SDP in this dialog (RFC 3264 §8). */
  previous: string | SdpSession;
  localAddress?: LocalAddress;
  localPort?: number;
};

/** What a trunk's re-offer changed for the call (the caller updates its relay, mediasoup and agents). */
export interface PlanChanges {
  /** The remote's RTP or RTCP address or port, or rtcp-mux, changed: re-point the relay. */
  remoteAddress: boolean;
  /** The remote's direction or hold changed (hold or resume). */
  direction: boolean;
  /** The codec stayed but under another payload type number. */
  payloadType: boolean;
  /** telephone-event appeared, went or changed its payload type. */
  telephoneEvent: boolean;
  /** The re-offer has the same o= id and version as the remote's previous SDP: nothing should have changed (RFC 3264 §8). */
  sameRemoteVersion: boolean;
}

/** What reanswer() returns. */
export interface ReanswerResult extends AnswerResult {
  changes: PlanChanges;
}

/** A codec of an offer: the name with its usual payload type, or an explicit one (to keep a call's numbers in a re-offer). */
export type OfferCodec = TrunkCodecName | { name: TrunkCodecName; payloadType: number };

/** A telephone-event format of an offer. */
export interface TelephoneEventFormat {
  payloadType: number;
  clockRate: 8000 | 48000;
}

/** Options of buildOffer(). */
export type BuildOfferOptions = {
  /** Codecs in our order of preference. Default payload types: PCMU 0, PCMA 8, G722 9, opus 111. */
  codecs: readonly OfferCodec[];
  /** true (default): 101/8000 when a codec runs at 8000, 110/48000 when opus is offered; false: none; or these formats. */
  telephoneEvent?: boolean | readonly TelephoneEventFormat[];
  /** Our RTP relay's public address (IP literal). */
  localAddress: string;
  localPort: number;
  /** Our RTCP port when it is not localPort + 1 (written as a=rtcp). */
  localRtcpPort?: number;
  /** Offer rtcp-mux (RFC 5761). Default false. */
  rtcpMux?: boolean;
  /** Default sendrecv; sendonly to hold the call (RFC 3264 §8.4). */
  direction?: SdpDirection;
  ptime?: number;
  maxptime?: number;
  /** Offer RTP/SAVP with this a=crypto (SDES, RFC 4568) instead of RTP/AVP. */
  crypto?: SdpCrypto;
} & Either<
  {
    /** o= id and version for a new dialog; default newSdpSessionIds(). */
    session?: SdpSessionIds;
  },
  {
    /** Our last SDP of this dialog, for a re-offer: o= kept, version + 1, its streams kept in place (RFC 3264 §8). */
    previous: string | SdpSession;
  }
>;

/** What buildOffer() returns. */
export interface OfferResult {
  offerSdp: string;
  /** The o= id and version of offerSdp. */
  session: SdpSessionIds;
}

// ------------------------------------------------------------------------------------------------
// Directions (RFC 3264 §6.1)
// ------------------------------------------------------------------------------------------------

function canSend(d: SdpDirection): boolean {
  return d === 'sendrecv' || d === 'sendonly';
}

function canReceive(d: SdpDirection): boolean {
  return d === 'sendrecv' || d === 'recvonly';
}

function direction(send: boolean, receive: boolean): SdpDirection {
  return send ? (receive ? 'sendrecv' : 'sendonly') : receive ? 'recvonly' : 'inactive';
}

/** The other side's view: sendonly ⇄ recvonly. */
function mirror(d: SdpDirection): SdpDirection {
  return direction(canReceive(d), canSend(d));
}

/** What both allow. */
function intersect(a: SdpDirection, b: SdpDirection): SdpDirection {
  return direction(canSend(a) && canSend(b), canReceive(a) && canReceive(b));
}

const DIRECTIONS: readonly SdpDirection[] = ['sendrecv', 'sendonly', 'recvonly', 'inactive'];

// ------------------------------------------------------------------------------------------------
// Argument checks (programming errors: TypeError)
// ------------------------------------------------------------------------------------------------

/** Array.isArray without widening the elements to any. */
function isList(v: unknown): v is readonly unknown[] {
  return Array.isArray(v);
}

function checkPort(name: string, v: unknown, optional = false): void {
  if (optional && v === undefined) {
    return;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw new TypeError(`${name} must be an integer from 1 to 65535`);
  }
}

function checkMs(name: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1000)) {
    throw new TypeError(`if given, ${name} must be an integer from 1 to 1000 (ms)`);
  }
}

function checkDirection(name: string, v: unknown): void {
  if (v !== undefined && !DIRECTIONS.includes(v as SdpDirection)) {
    throw new TypeError(`if given, ${name} must be one of ${DIRECTIONS.join(', ')}`);
  }
}

function checkLocalAddress(v: unknown): void {
  if (typeof v === 'string') {
    if (net.isIP(v) === 0) {
      throw new TypeError('localAddress must be an IP address literal');
    }

    return;
  }
  const o = v as { ipv4?: unknown; ipv6?: unknown } | null;
  if (typeof o !== 'object' || o === null || (o.ipv4 === undefined && o.ipv6 === undefined)) {
    throw new TypeError('localAddress must be an IP address or { ipv4?, ipv6? } with at least one of them');
  }
  if (o.ipv4 !== undefined && !(typeof o.ipv4 === 'string' && net.isIPv4(o.ipv4))) {
    throw new TypeError('localAddress.ipv4 must be an IPv4 address');
  }
  if (o.ipv6 !== undefined && !(typeof o.ipv6 === 'string' && net.isIPv6(o.ipv6))) {
    throw new TypeError('localAddress.ipv6 must be an IPv6 address');
  }
}

function checkOrigin(o: { session?: SdpSessionIds; previous?: string | SdpSession }): void {
  if (o.session !== undefined && o.previous !== undefined) {
    throw new TypeError('only one of session and previous may be given');
  }
  if (o.session !== undefined) {
    const { id, version } = o.session;
    if (typeof id !== 'string' || !/^\d{1,20}$/.test(id)) {
      throw new TypeError('session.id must be a string of 1 to 20 decimal digits');
    }
    if (!Number.isSafeInteger(version) || version < 0 || !Number.isSafeInteger(version + 1)) {
      throw new TypeError('session.version must be a non-negative safe integer');
    }
  }
}

function checkAnswerMediaOptions(opts: AnswerMediaOptions): void {
  checkPort('localRtcpPort', opts.localRtcpPort, true);
  checkMs('ptime', opts.ptime);
  checkDirection('localDirection', opts.localDirection);
  if (opts.srtp !== undefined && typeof opts.srtp !== 'function') {
    throw new TypeError('if given, srtp must be a function');
  }
}

// ------------------------------------------------------------------------------------------------
// Reading a remote stream
// ------------------------------------------------------------------------------------------------

interface RemoteEndpoint {
  address: string;
  family: 4 | 6;
  nullAddress: boolean;
  ipv6Connection: boolean;
}

/** The address to send to, from a c= line (or a=rtcp). */
function endpointOf(conn: SdpMedia['connection'], what: string): RemoteEndpoint {
  if (!conn) {
    throw new SdpError('MALFORMED', `no c= line for the ${what}`);
  }
  if (conn.ipVersion === undefined) {
    throw new SdpError('UNSUPPORTED_ADDRESS', `the ${what}'s connection address ${conn.address} is a host name; ringbridge needs an IP address`);
  }
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // a multicast address may carry /ttl or /count (RFC 4566 §5.7)
    ip = ipaddr.parse(conn.address.split('/', 1)[0]!);
  } catch {
    throw new SdpError('UNSUPPORTED_ADDRESS', `the ${what}'s connection address ${conn.address} is not usable`);
  }
  const range = ip.range();
  if (range === 'multicast' || range === 'broadcast') {
    throw new SdpError('UNSUPPORTED_ADDRESS', `the ${what}'s connection address ${conn.address} is ${range}; ringbridge does unicast only`);
  }
  if (conn.address.includes('/')) {
    throw new SdpError('MALFORMED', `the ${what}'s connection address ${conn.address} has a TTL or count, which only a multicast address may have (RFC 4566 §5.7)`);
  }
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) {
    // RFC 5118 §4.9: an IPv4-mapped IPv6 address is the IPv4 node it maps to
    const v4 = (ip as ipaddr.IPv6).toIPv4Address();

    return { address: v4.toString(), family: 4, nullAddress: v4.range() === 'unspecified', ipv6Connection: true };
  }

  return { address: conn.address, family: conn.ipVersion, nullAddress: range === 'unspecified', ipv6Connection: conn.addressType === 'IP6' };
}

function localAddressFor(local: LocalAddress, family: 4 | 6, offerConn: string): string {
  const address = typeof local === 'string' ? (net.isIPv4(local) === (family === 4) ? local : undefined) : family === 4 ? local.ipv4 : local.ipv6;
  if (address === undefined) {
    throw new SdpError('UNSUPPORTED_ADDRESS', `the remote media address ${offerConn} is IPv${family} and ringbridge has no IPv${family} media address here`);
  }

  return address;
}

/** a=fmtp key=value parameters; values as numbers where they are integers (as mediasoup expects). */
export function fmtpParameters(fmtp: string | undefined): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (fmtp === undefined) {
    return out;
  }
  for (const [k, v] of Object.entries(parseParams(fmtp))) {
    const key = k.trim();
    if (v !== undefined && key !== '' && key !== '__proto__') {
      const text = String(v).trim();
      // as sdp-transform does: a number when it reads back the same
      out[key] = String(Number(text)) === text ? Number(text) : text;
    }
  }

  return out;
}

function planCodec(name: TrunkCodecName, remote: SdpRtpFormat, localPayloadType: number): PlanCodec {
  const info = CODEC_INFO.get(name)!;

  return {
    name,
    mimeType: mimeTypeOf(name),
    payloadType: remote.payloadType,
    localPayloadType,
    clockRate: info.clockRate,
    channels: info.channels,
    ...(remote.fmtp === undefined ? {} : { fmtp: remote.fmtp }),
    parameters: fmtpParameters(remote.fmtp),
  };
}

function planTelephoneEvent(remote: SdpRtpFormat, localPayloadType: number): PlanTelephoneEvent {
  return {
    payloadType: remote.payloadType,
    localPayloadType,
    clockRate: remote.clockRate!,
    ...(remote.fmtp === undefined ? {} : { events: remote.fmtp }),
  };
}

/** The first telephone-event format at a clock rate. */
function telephoneEventAt(m: SdpMedia, clockRate: number): SdpRtpFormat | undefined {
  return m.rtp.find((f) => isTelephoneEvent(f) && f.clockRate === clockRate);
}

/** The remote's RTCP destination (RFC 3605 a=rtcp, else port + 1, RFC 3550 §11). */
function rtcpOf(m: SdpMedia, rtp: RemoteEndpoint, mux: boolean): { rtcpAddress: string; rtcpPort: number } {
  if (mux) {
    return { rtcpAddress: rtp.address, rtcpPort: m.port };
  }
  let rtcpAddress = rtp.address;
  if (m.rtcp?.connection?.ipVersion !== undefined) {
    try {
      rtcpAddress = endpointOf(m.rtcp.connection, 'RTCP').address;
    } catch {
      // an unusable a=rtcp address: RTCP goes to the RTP address
    }
  }
  if (m.rtcp) {
    return { rtcpAddress, rtcpPort: m.rtcp.port };
  }
  if (m.port === 65535) {
    throw new SdpError('MALFORMED', 'RTP port 65535 leaves no port for RTCP and there is no a=rtcp (RFC 3605)');
  }

  return { rtcpAddress, rtcpPort: m.port + 1 };
}

function holdOf(declared: SdpDirection, rtp: RemoteEndpoint): HoldKind {
  return rtp.nullAddress ? 'null-address' : canReceive(declared) ? 'none' : 'direction';
}

/** The remote's effective direction: c=0.0.0.0 means send it nothing (RFC 3264 §8.4). */
function remoteDirectionOf(declared: SdpDirection, rtp: RemoteEndpoint): SdpDirection {
  return rtp.nullAddress ? intersect(declared, 'sendonly') : declared;
}

function rejectedLine(m: SdpMedia): RejectedLine {
  return { kind: 'rejected', type: m.type, protocol: m.protocol, formats: m.formats, ...(m.mid === undefined ? {} : { mid: m.mid }) };
}

function isAudio(m: SdpMedia): boolean {
  return m.type.toLowerCase() === 'audio';
}

function transportOf(m: SdpMedia): 'RTP/AVP' | 'RTP/SAVP' | undefined {
  const p = m.protocol.toUpperCase();

  return p === 'RTP/AVP' || p === 'RTP/SAVP' ? p : undefined;
}

function uniqueDescriptions(formats: readonly SdpRtpFormat[]): string {
  const list = [...new Set(formats.map((f) => describeFormat(f)))];

  return list.length > 0 ? list.join(', ') : 'nothing';
}

function pickCrypto(m: SdpMedia, srtp: SrtpAnswerer | undefined): PlanSrtp | undefined {
  if (!srtp || m.crypto.length === 0) {
    return undefined;
  }
  const local = srtp(m.crypto);
  if (local === undefined) {
    return undefined;
  }
  const remote = m.crypto.find((c) => c.tag === local.tag && c.suite === local.suite);
  if (!remote) {
    throw new TypeError('srtp() must return a crypto attribute with the tag and suite of an offered one (RFC 4568 §5.1.2)');
  }

  return { remote, local };
}

// ------------------------------------------------------------------------------------------------
// Answers
// ------------------------------------------------------------------------------------------------

interface ResolvedAnswerOptions extends AnswerMediaOptions {
  localAddress: LocalAddress;
  localPort: number;
  origin: OriginSource;
}

/** Answers one accepted stream and rejects the others (RFC 3264 §6). */
function answerStream(offer: SdpSession, m: SdpMedia, chosen: { name: TrunkCodecName; format: SdpRtpFormat }, srtp: PlanSrtp | undefined, opts: ResolvedAnswerOptions): AnswerResult {
  const rtp = endpointOf(m.connection, 'audio stream');
  const localAddress = localAddressFor(opts.localAddress, rtp.family, m.connection!.address);
  const info = CODEC_INFO.get(chosen.name)!;
  const te = telephoneEventAt(m, info.clockRate);
  const rtcpMux = m.rtcpMux && opts.rtcpMux !== false;
  const remoteDirection = remoteDirectionOf(m.direction, rtp);
  const localDirection = intersect(mirror(remoteDirection), opts.localDirection ?? 'sendrecv');
  const ptime = opts.ptime ?? m.ptime;
  const formats: LocalFormat[] = [
    {
      payloadType: chosen.format.payloadType,
      encodingName: info.encodingName,
      clockRate: info.clockRate,
      channels: info.channels,
      ...(info.fmtp === undefined ? {} : { fmtp: info.fmtp }),
    },
  ];
  if (te) {
    formats.push({ payloadType: te.payloadType, encodingName: TELEPHONE_EVENT.encodingName, clockRate: te.clockRate!, fmtp: TELEPHONE_EVENT.fmtp });
  }
  const audio: LocalAudioLine = {
    kind: 'audio',
    port: opts.localPort,
    protocol: m.protocol,
    formats,
    direction: localDirection,
    rtcpMux,
    ...(opts.localRtcpPort === undefined ? {} : { rtcpPort: opts.localRtcpPort }),
    ...(ptime === undefined ? {} : { ptime }),
    ...(m.maxptime === undefined ? {} : { maxptime: m.maxptime }),
    ...(srtp ? { crypto: srtp.local } : {}),
    ...(m.mid === undefined ? {} : { mid: m.mid }),
  };
  const lines = offer.media.map((x) => (x.index === m.index ? audio : rejectedLine(x)));
  const { text, session } = writeLocalSdp(localAddress, net.isIPv4(localAddress) ? 4 : 6, lines, opts.origin);
  const plan: MediaPlan = {
    mediaIndex: m.index,
    ...(m.mid === undefined ? {} : { mid: m.mid }),
    transport: transportOf(m)!,
    codec: planCodec(chosen.name, chosen.format, chosen.format.payloadType),
    ...(te ? { telephoneEvent: planTelephoneEvent(te, te.payloadType) } : {}),
    remote: {
      address: rtp.address,
      port: m.port,
      ...rtcpOf(m, rtp, rtcpMux),
      rtcpMux,
      ...(m.ssrcs[0] === undefined ? {} : { ssrc: m.ssrcs[0] }),
    },
    direction: remoteDirection,
    localDirection,
    flow: { send: canSend(localDirection), receive: canReceive(localDirection) },
    hold: holdOf(m.direction, rtp),
    ...(m.ptime === undefined ? {} : { ptime: m.ptime }),
    ...(m.maxptime === undefined ? {} : { maxptime: m.maxptime }),
    ...(srtp ? { srtp } : {}),
    connectionIPv6: rtp.ipv6Connection,
    remoteSession: { id: offer.origin.sessionId, version: offer.origin.sessionVersion },
  };

  return { answerSdp: text, plan, session };
}

/**
 * Answers a trunk's offer (RFC 3264 §6): accepts the first audio stream (port ≠ 0, RTP/AVP, or
 * RTP/SAVP when `srtp` is given) that has a common codec, with the first codec in the offer's order
 * that `allowedCodecs` allows (RFC 3264 §6.1), under the offer's payload type, plus the offer's
 * telephone-event at that codec's clock; every other stream is rejected with port 0.
 * @param offer the trunk's SDP
 * @throws {SdpError} `MALFORMED`, `NO_AUDIO`, `UNSUPPORTED_TRANSPORT`, `SRTP_REQUIRED`, `UNSUPPORTED_ADDRESS`, `NO_COMMON_CODEC`
 * @throws {TypeError} for wrong options
 */
export function negotiateAnswer(offer: string | SdpSession, opts: NegotiateAnswerOptions): AnswerResult {
  const allowed = opts.allowedCodecs as readonly unknown[];
  if (!isList(allowed) || allowed.length === 0 || !allowed.every(isTrunkCodecName)) {
    throw new TypeError('allowedCodecs must list at least one of PCMU, PCMA, G722, opus');
  }
  checkLocalAddress(opts.localAddress);
  checkPort('localPort', opts.localPort);
  checkAnswerMediaOptions(opts);
  checkOrigin(opts);
  const session = toSession(offer);
  const previous = opts.previous === undefined ? undefined : toSession(opts.previous);
  const audio = session.media.filter((m) => isAudio(m) && m.port !== 0);
  if (audio.length === 0) {
    const types = session.media.map((m) => m.type);
    throw new SdpError(
      'NO_AUDIO',
      session.media.some(isAudio) ? 'every offered audio stream is disabled (port 0)' : `no audio stream offered (${types.length > 0 ? types.join(', ') : 'no m= line'})`,
    );
  }
  const usable: Array<{ m: SdpMedia; srtp?: PlanSrtp }> = [];
  let savp = false;
  for (const m of audio) {
    const transport = transportOf(m);
    if (transport === 'RTP/AVP') {
      usable.push({ m });
    } else if (transport === 'RTP/SAVP') {
      savp = true;
      const srtp = pickCrypto(m, opts.srtp);
      if (srtp) {
        usable.push({ m, srtp });
      }
    }
  }
  if (usable.length === 0) {
    if (savp) {
      throw new SdpError('SRTP_REQUIRED', opts.srtp ? 'no offered a=crypto of the RTP/SAVP audio stream is acceptable' : 'audio is offered over RTP/SAVP only and SRTP is not enabled');
    }
    throw new SdpError('UNSUPPORTED_TRANSPORT', `audio is offered over ${[...new Set(audio.map((m) => m.protocol))].join(', ')} only; ringbridge terminates RTP/AVP`);
  }
  for (const u of usable) {
    const format = u.m.rtp.find((f) => {
      const name = codecOfFormat(f);

      return name !== undefined && allowed.includes(name);
    });
    if (format) {
      return answerStream(session, u.m, { name: codecOfFormat(format)!, format }, u.srtp, {
        ...opts,
        origin: previous ? { previous } : { session: opts.session ?? newSdpSessionIds() },
      });
    }
  }
  throw new SdpError('NO_COMMON_CODEC', `no common codec: offered ${uniqueDescriptions(usable.flatMap((u) => u.m.rtp))}; allowed ${allowed.join(', ')}`);
}

/**
 * Answers a trunk's re-offer in an established call (RFC 3264 §8): the call's stream stays where
 * it is and keeps its codec (refused with `CODEC_CHANGE` when the re-offer drops it: ringbridge
 * does not transcode and mediasoup's producers are fixed); address, port, direction (hold and
 * resume) and telephone-event follow the re-offer, and `changes` says what moved.
 * @param current the call's plan
 * @param newOffer the trunk's re-offer
 * @throws {SdpError} `MALFORMED`, `NO_AUDIO` (stream removed or disabled), `UNSUPPORTED_TRANSPORT`, `SRTP_REQUIRED`, `UNSUPPORTED_ADDRESS`, `CODEC_CHANGE`
 * @throws {TypeError} for wrong options, or a previous SDP without an active audio stream and no local address/port given
 */
export function reanswer(current: MediaPlan, newOffer: string | SdpSession, opts: ReanswerOptions): ReanswerResult {
  checkAnswerMediaOptions(opts);
  if (opts.localAddress !== undefined) {
    checkLocalAddress(opts.localAddress);
  }
  checkPort('localPort', opts.localPort, true);
  if (opts.previous === undefined) {
    throw new TypeError('previous (our last SDP of the dialog) must be given');
  }
  const offer = toSession(newOffer);
  const previous = toSession(opts.previous);
  const idx = current.mediaIndex;
  const m = offer.media[idx];
  if (!m || !isAudio(m) || m.port === 0) {
    const what = !m ? 'drops' : m.port === 0 ? 'disables (port 0)' : `replaces with ${m.type}`;
    throw new SdpError('NO_AUDIO', `the re-offer ${what} the call's audio stream (m= line ${idx + 1}, RFC 3264 §8)`);
  }
  const transport = transportOf(m);
  if (transport !== current.transport) {
    throw new SdpError('UNSUPPORTED_TRANSPORT', `the re-offer moves the audio stream from ${current.transport} to ${m.protocol}`);
  }
  let srtp: PlanSrtp | undefined;
  if (transport === 'RTP/SAVP') {
    srtp = pickCrypto(m, opts.srtp);
    if (!srtp) {
      throw new SdpError('SRTP_REQUIRED', opts.srtp ? 'no a=crypto of the re-offer is acceptable' : 'the re-offer is RTP/SAVP and SRTP is not enabled');
    }
  }
  const same = m.rtp.filter((f) => codecOfFormat(f) === current.codec.name);
  const format = same.find((f) => f.payloadType === current.codec.payloadType) ?? same[0];
  if (!format) {
    throw new SdpError('CODEC_CHANGE', `the re-offer drops the call's codec ${describeFormat({ encodingName: current.codec.name, clockRate: current.codec.clockRate, channels: current.codec.channels })} (offered ${uniqueDescriptions(m.rtp)}); ringbridge does not transcode`);
  }
  const prevAudio = previous.media.find((x) => isAudio(x) && x.port !== 0);
  const localPort = opts.localPort ?? prevAudio?.port;
  const localAddress = opts.localAddress ?? prevAudio?.connection?.address;
  if (localPort === undefined || localAddress === undefined || (typeof localAddress === 'string' && net.isIP(localAddress) === 0)) {
    throw new TypeError('previous has no active audio stream with an IP address: give localAddress and localPort');
  }
  const localRtcpPort = opts.localRtcpPort ?? (prevAudio?.rtcp && !prevAudio.rtcpMux ? prevAudio.rtcp.port : undefined);
  const result = answerStream(offer, m, { name: current.codec.name, format }, srtp, {
    ...opts,
    localAddress,
    localPort,
    ...(localRtcpPort === undefined ? {} : { localRtcpPort }),
    origin: { previous },
  });
  const next = result.plan;
  const a = current.remote;
  const b = next.remote;
  const cte = current.telephoneEvent;
  const nte = next.telephoneEvent;

  return {
    ...result,
    changes: {
      remoteAddress: a.address !== b.address || a.port !== b.port || a.rtcpAddress !== b.rtcpAddress || a.rtcpPort !== b.rtcpPort || a.rtcpMux !== b.rtcpMux,
      direction: current.direction !== next.direction || current.hold !== next.hold,
      payloadType: current.codec.payloadType !== next.codec.payloadType,
      telephoneEvent: (cte === undefined) !== (nte === undefined) || cte?.payloadType !== nte?.payloadType || cte?.clockRate !== nte?.clockRate,
      sameRemoteVersion: offer.origin.sessionId === current.remoteSession.id && offer.origin.sessionVersion === current.remoteSession.version,
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Offers
// ------------------------------------------------------------------------------------------------

function checkPayloadType(name: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 127 || (v >= 72 && v <= 76)) {
    throw new TypeError(`${name} must be an RTP payload type 0-127 other than 72-76 (RFC 3551 §6, RFC 5761 §4)`);
  }
}

/**
 * Builds our offer: for an outbound call (`session`) or a re-INVITE (`previous`: hold with
 * `direction: 'sendonly'`, resume with `'sendrecv'`, a new relay address). One RTP/AVP audio
 * stream with the codecs in our order (a=rtpmap for static ones too), Opus as 111/48000/2 with
 * useinbandfec=1, telephone-event 101/8000 and 110/48000 (`a=fmtp 0-16`) for the clocks in use.
 * A re-offer keeps o= username, id and address, increments the version (kept when nothing else
 * changed) and keeps every earlier stream in place, rejected ones with port 0 (RFC 3264 §8).
 * To keep a call's payload type numbers in a re-offer, pass {@link reofferFormats}(plan).
 * @throws {TypeError} for wrong options (unknown codec, duplicate payload type, …)
 */
export function buildOffer(opts: BuildOfferOptions): OfferResult {
  const codecs = opts.codecs as readonly unknown[];
  if (!isList(codecs) || codecs.length === 0) {
    throw new TypeError('codecs must list at least one codec');
  }
  if (typeof opts.localAddress !== 'string' || net.isIP(opts.localAddress) === 0) {
    throw new TypeError('localAddress must be an IP address literal');
  }
  checkPort('localPort', opts.localPort);
  checkPort('localRtcpPort', opts.localRtcpPort, true);
  checkMs('ptime', opts.ptime);
  checkMs('maxptime', opts.maxptime);
  checkDirection('direction', opts.direction);
  checkOrigin(opts);
  const formats: LocalFormat[] = [];
  const used = new Map<number, string>();
  const add = (f: LocalFormat): void => {
    const label = describeFormat(f);
    if (used.has(f.payloadType)) {
      throw new TypeError(`payload type ${f.payloadType} is given to both ${used.get(f.payloadType)} and ${label}`);
    }
    used.set(f.payloadType, label);
    formats.push(f);
  };
  const names = new Set<TrunkCodecName>();
  for (const c of codecs) {
    const name = typeof c === 'object' && c !== null ? (c as { name?: unknown }).name : c;
    if (!isTrunkCodecName(name)) {
      throw new TypeError(`unknown codec ${JSON.stringify(name)} in codecs; expected PCMU, PCMA, G722 or opus`);
    }
    if (names.has(name)) {
      throw new TypeError(`codec ${name} is listed twice`);
    }
    names.add(name);
    const info = CODEC_INFO.get(name)!;
    const pt = typeof c === 'object' ? (c as { payloadType: unknown }).payloadType : info.offerPayloadType;
    checkPayloadType(`payload type of ${name}`, pt);
    add({ payloadType: pt as number, encodingName: info.encodingName, clockRate: info.clockRate, channels: info.channels, ...(info.fmtp === undefined ? {} : { fmtp: info.fmtp }) });
  }
  const te = opts.telephoneEvent ?? true;
  let events: readonly TelephoneEventFormat[];
  if (te === true) {
    const clocks = new Set([...names].map((n) => CODEC_INFO.get(n)!.clockRate));
    events = TELEPHONE_EVENT_CLOCKS.filter((c) => clocks.has(c)).map((c) => ({ payloadType: TELEPHONE_EVENT.offerPayloadTypes[c]!, clockRate: c as 8000 | 48000 }));
  } else if (te === false) {
    events = [];
  } else if (isList(te)) {
    events = te;
  } else {
    throw new TypeError('if given, telephoneEvent must be a boolean or a list of { payloadType, clockRate }');
  }
  for (const e of events) {
    if (!TELEPHONE_EVENT_CLOCKS.includes(e.clockRate)) {
      throw new TypeError(`telephone-event clockRate must be one of ${TELEPHONE_EVENT_CLOCKS.join(', ')}`);
    }
    checkPayloadType('telephone-event payload type', e.payloadType);
    add({ payloadType: e.payloadType, encodingName: TELEPHONE_EVENT.encodingName, clockRate: e.clockRate, fmtp: TELEPHONE_EVENT.fmtp });
  }
  const previous = opts.previous === undefined ? undefined : toSession(opts.previous);
  const prevIndex = previous ? previous.media.findIndex((m) => isAudio(m) && m.port !== 0) : -1;
  const prevMid = previous?.media[prevIndex]?.mid;
  const audio: LocalAudioLine = {
    kind: 'audio',
    port: opts.localPort,
    protocol: opts.crypto ? 'RTP/SAVP' : 'RTP/AVP',
    formats,
    ...(opts.crypto ? { crypto: opts.crypto } : {}),
    direction: opts.direction ?? 'sendrecv',
    rtcpMux: opts.rtcpMux === true,
    ...(opts.localRtcpPort === undefined ? {} : { rtcpPort: opts.localRtcpPort }),
    ...(opts.ptime === undefined ? {} : { ptime: opts.ptime }),
    ...(opts.maxptime === undefined ? {} : { maxptime: opts.maxptime }),
    ...(prevMid === undefined ? {} : { mid: prevMid }),
  };
  let lines: Array<LocalAudioLine | RejectedLine> = [audio];
  if (previous) {
    lines = previous.media.map((m, i) => (i === prevIndex ? audio : rejectedLine(m)));
    if (prevIndex < 0) {
      lines.push(audio);
    }
  }
  const { text, session } = writeLocalSdp(opts.localAddress, net.isIPv4(opts.localAddress) ? 4 : 6, lines, previous ? { previous } : { session: opts.session ?? newSdpSessionIds() });

  return { offerSdp: text, session };
}

/**
 * The codec and telephone-event of a call with the payload types the remote sends us, for
 * buildOffer() in a re-offer (RFC 3264 §8.3.2: a payload type keeps its meaning for the session).
 */
export function reofferFormats(plan: MediaPlan): { codecs: OfferCodec[]; telephoneEvent: TelephoneEventFormat[] } {
  const te = plan.telephoneEvent;

  return {
    codecs: [{ name: plan.codec.name, payloadType: plan.codec.localPayloadType }],
    telephoneEvent: te ? [{ payloadType: te.localPayloadType, clockRate: te.clockRate as 8000 | 48000 }] : [],
  };
}

// ------------------------------------------------------------------------------------------------
// The answer to our offer
// ------------------------------------------------------------------------------------------------

type FormatMeaning = { kind: 'codec'; name: TrunkCodecName } | { kind: 'te'; clockRate: number } | { kind: 'other'; label: string };

function meaningOf(f: FormatIdentity): FormatMeaning {
  const name = codecOfFormat(f);
  if (name) {
    return { kind: 'codec', name };
  }
  if (isTelephoneEvent(f)) {
    return { kind: 'te', clockRate: f.clockRate! };
  }

  return { kind: 'other', label: describeFormat(f).toLowerCase() };
}

function sameMeaning(a: FormatMeaning, b: FormatMeaning): boolean {
  return a.kind === b.kind && (a.kind === 'codec' ? a.name === (b as typeof a).name : a.kind === 'te' ? a.clockRate === (b as typeof a).clockRate : a.label === (b as typeof a).label);
}

/**
 * The plan from the trunk's answer to our offer (RFC 3264 §6, §7). The answer must have our
 * streams in place; its codec must be one we offered (the answer may give it another payload type
 * number: we send with the answer's number and receive with ours), and a payload type number of
 * our offer may not mean another format in the answer. The first codec of the answer wins. A
 * direction the answer may not choose (sendrecv to our sendonly) is narrowed to what our offer
 * allows. Call it again for each answer (183 then 200).
 * @param ourOffer the offer we sent (buildOffer's offerSdp)
 * @param answer the trunk's answer
 * @throws {SdpError} `MALFORMED`, `BAD_ANSWER`, `NO_COMMON_CODEC` (also when the answer rejects the audio stream), `UNSUPPORTED_ADDRESS`, `SRTP_REQUIRED`
 * @throws {TypeError} when ourOffer has no active audio stream
 */
export function negotiateFromAnswer(ourOffer: string | SdpSession, answer: string | SdpSession): MediaPlan {
  const offer = toSession(ourOffer);
  const idx = offer.media.findIndex((m) => isAudio(m) && m.port !== 0);
  const om = offer.media[idx];
  if (!om) {
    throw new TypeError('ourOffer has no active audio stream');
  }
  const ans = toSession(answer);
  if (ans.media.length !== offer.media.length) {
    throw new SdpError('BAD_ANSWER', `the answer has ${ans.media.length} m= lines, our offer ${offer.media.length} (RFC 3264 §6)`);
  }
  const am = ans.media[idx]!;
  if (!isAudio(am) || am.protocol.toUpperCase() !== om.protocol.toUpperCase()) {
    throw new SdpError('BAD_ANSWER', `the answer's m= line ${idx + 1} is ${am.type} ${am.protocol}, our offer's audio ${om.protocol} (RFC 3264 §6)`);
  }
  if (am.port === 0) {
    throw new SdpError('NO_COMMON_CODEC', 'the answer rejected the audio stream (port 0)');
  }
  // what each payload type number of our offer means
  const ours = new Map<number, FormatMeaning>();
  for (const f of om.rtp) {
    if (!ours.has(f.payloadType)) {
      ours.set(f.payloadType, meaningOf(f));
    }
  }
  let chosen: { name: TrunkCodecName; format: SdpRtpFormat; local: number } | undefined;
  const te = new Map<number, { format: SdpRtpFormat; local: number }>();
  for (const f of am.rtp) {
    let meaning = meaningOf(f);
    const our = ours.get(f.payloadType);
    if (f.encodingName === undefined) {
      // a dynamic payload type without a=rtpmap (RFC 3264 §6.1 wants one): take it as ours when we offered it
      if (!our) {
        continue;
      }
      meaning = our;
    } else if (our && !sameMeaning(our, meaning)) {
      throw new SdpError('BAD_ANSWER', `payload type ${f.payloadType} is ${describeFormat(om.rtp.find((o) => o.payloadType === f.payloadType)!)} in our offer but ${describeFormat(f)} in the answer`);
    }
    const localPt = (target: FormatMeaning): number | undefined => [...ours].find(([, v]) => sameMeaning(v, target))?.[0];
    if (meaning.kind === 'codec' && !chosen) {
      const local = localPt(meaning);
      if (local !== undefined) {
        chosen = { name: meaning.name, format: f, local };
      }
    } else if (meaning.kind === 'te' && !te.has(meaning.clockRate)) {
      const local = localPt(meaning);
      if (local !== undefined) {
        te.set(meaning.clockRate, { format: { ...f, clockRate: meaning.clockRate }, local });
      }
    }
  }
  if (!chosen) {
    throw new SdpError('NO_COMMON_CODEC', `the answer has none of our codecs (answered ${uniqueDescriptions(am.rtp)}; offered ${uniqueDescriptions(om.rtp)})`);
  }
  let srtp: PlanSrtp | undefined;
  if (transportOf(om) === 'RTP/SAVP') {
    const remote = am.crypto[0];
    const local = remote ? om.crypto.find((c) => c.tag === remote.tag && c.suite === remote.suite) : undefined;
    if (!remote || !local) {
      throw new SdpError('SRTP_REQUIRED', 'the answer has no a=crypto matching one of our offer (RFC 4568 §7.1.3)');
    }
    srtp = { remote, local };
  }
  const rtp = endpointOf(am.connection, 'audio stream');
  const rtcpMux = am.rtcpMux && om.rtcpMux;
  const info = CODEC_INFO.get(chosen.name)!;
  const teChosen = te.get(info.clockRate);
  // the answer may only narrow what our offer allows (RFC 3264 §6.1)
  const direction = intersect(remoteDirectionOf(am.direction, rtp), mirror(om.direction));

  return {
    mediaIndex: idx,
    ...(om.mid === undefined ? {} : { mid: om.mid }),
    transport: transportOf(om) ?? 'RTP/AVP',
    codec: planCodec(chosen.name, chosen.format, chosen.local),
    ...(teChosen ? { telephoneEvent: planTelephoneEvent(teChosen.format, teChosen.local) } : {}),
    remote: {
      address: rtp.address,
      port: am.port,
      ...rtcpOf(am, rtp, rtcpMux),
      rtcpMux,
      ...(am.ssrcs[0] === undefined ? {} : { ssrc: am.ssrcs[0] }),
    },
    direction,
    localDirection: om.direction,
    flow: { send: canSend(om.direction) && canReceive(direction), receive: canReceive(om.direction) && canSend(direction) },
    hold: holdOf(am.direction, rtp),
    ...(am.ptime === undefined ? {} : { ptime: am.ptime }),
    ...(am.maxptime === undefined ? {} : { maxptime: am.maxptime }),
    ...(srtp ? { srtp } : {}),
    connectionIPv6: rtp.ipv6Connection,
    remoteSession: { id: ans.origin.sessionId, version: ans.origin.sessionVersion },
  };
}
