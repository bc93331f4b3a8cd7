/**
 * The RTP relay between a SIP trunk (plain RTP/RTCP) and a mediasoup PlainTransport on loopback,
 * one per trunk call leg.
 *
 * Why: mediasoup routes RTP to a Producer by SSRC only (or MID/RID extensions, which trunks never
 * send), SIP SDP rarely announces the SSRC and trunks change it after hold or transfer; trunks move
 * their media with re-INVITEs while PlainTransport.connect() works once; they sit behind NAT
 * (comedia, RFC 4961 symmetric RTP); and DTMF toward them must be RFC 4733 packets inside the
 * stream they receive. So:
 *
 * ```
 *  trunk ──RTP/RTCP──▶ publicSide ─┐  SSRC → producerSsrc, seq/ts kept continuous   ┌─▶ PlainTransport ─▶ Producer
 *                                  └─ RTCP sender SSRCs rewritten, RFC 4733 decoded ─┘     (rtcpMux false, loopback)
 *  trunk ◀─RTP/RTCP── publicSide ◀── seq offset (RFC 4733 events injected), hold ◀── mediasoupSide ◀── Consumer(s)
 *                                    RTCP report blocks about producerSsrc → trunk SSRC
 * ```
 *
 * Usage:
 * ```ts
 * const relay = await RtpRelay.create({ listenAddress: '0.0.0.0', portRange: { min: 30000, max: 39999 }, logger });
 * const t = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: false, comedia: false });
 * await t.connect(relay.mediasoupSide);
 * relay.setMediasoupTarget({ port: t.tuple.localPort, rtcpPort: t.rtcpTuple!.localPort });
 * await t.produce({ kind: 'audio', rtpParameters: { codecs, encodings: [{ ssrc: relay.producerSsrc }] } });
 * relay.setRemote({ address: sdp.address, port: sdp.port });   // again on every re-INVITE
 * // our SDP: relay.publicSide.port (and the node's public address)
 * ```
 *
 * Per-packet work is a header check, a few in-place field writes on the datagram Node already
 * allocated, and one send (loopback sockets are connected, so they need no address per send);
 * nothing is logged per packet. RFC 4733 events do not cross mediasoup 3.12 (see
 * setTelephoneEventPt()): the relay decodes the trunk's and generates the agent's.
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { type Logger } from '../log/logger.js';
import { RTP_FIXED_HEADER_BYTES, RTP_OFFSET, rtpHeaderLength, rtpPaddingLength } from './rtp/rtp-packet.js';
import { isRtcpPacketType, rewriteRtcp, type RtcpRewrite } from './rtp/rtcp-packet.js';
import { SrtpContext, type SrtpKeys, type SrtpStats } from './rtp/srtp.js';
import { dtmfDigit, dtmfEventCode, type DtmfDigit, TELEPHONE_EVENT_BYTES, writeTelephoneEvent } from './rtp/telephone-event.js';

/** RFC 3550 A.1: a forward jump of this many sequence numbers or more is a restart, not loss. */
const MAX_DROPOUT = 3000;
/** RFC 3550 A.1: packets up to this many sequence numbers behind are late, not a restart. */
const MAX_MISORDER = 100;
/** RFC 4733 event packets are sent every this many ms (the usual audio packetization). */
export const DTMF_PACKET_INTERVAL_MS = 20;
/** RFC 4733 §2.5.1.4: the final packet of an event is sent this many times. */
export const DTMF_END_PACKETS = 3;
/** Default trunk-facing RTP port range (even RTP ports, RTCP on RTP + 1). */
export const DEFAULT_RTP_PORT_RANGE: Readonly<RtpPortRange> = Object.freeze({ min: 30000, max: 39999 });
/** Default `rtpTimeoutMs`. */
export const DEFAULT_RTP_TIMEOUT_MS = 30_000;
/** Socket errors are logged at most once per this many ms (with a count). */
const ERROR_LOG_INTERVAL_MS = 10_000;

/** A UDP port range, both ends inclusive. */
export interface RtpPortRange {
  /** First port (inclusive). */
  min: number;
  /** Last port (inclusive). */
  max: number;
}

/** Options of {@link RtpRelay.create}. */
export interface RtpRelayOptions {
  /** Address the mediasoup-facing sockets bind to (default '127.0.0.1'); use the PlainTransport's listen IP. */
  loopbackAddress?: string;
  /** Address the trunk-facing sockets bind to, IPv4 or IPv6 (default '0.0.0.0'). */
  listenAddress?: string;
  /** Range for the trunk-facing pair: an even RTP port and RTP + 1 for RTCP (default 30000–39999, as media.relayMinPort/relayMaxPort). */
  portRange?: RtpPortRange;
  /** Port pairs tried before giving up when ports are taken (default 32). */
  bindAttempts?: number;
  /** SSRC of the stream toward mediasoup, 1–2^32−1 (default random); create the Producer with `encodings: [{ ssrc }]`. */
  producerSsrc?: number;
  /**
   * Comedia / NAT: send to the source of the first RTP (and RTCP) packet received after create()
   * or setRemote(), and accept only that source from then on (RFC 4961). Default false: accept
   * only the address and ports given to setRemote().
   */
  latching?: boolean;
  /** RTP clock rate of the trunk's audio codec, Hz (default 8000), for continuous timestamps across SSRC changes. */
  clockRate?: number;
  /** 'inactivity' after this many ms without RTP from the trunk (default 30000; 0: default; negative: never). */
  rtpTimeoutMs?: number;
  /** Logger for lifecycle events and rate-limited socket errors (never per packet). */
  logger: Logger;
}

/** The trunk's media address, as the SDP gives it. */
export interface RtpRemote {
  /** IPv4 or IPv6 address (c= line). */
  address: string;
  /** RTP port (m= line). */
  port: number;
  /** RTCP port (a=rtcp, RFC 3605); default port + 1. */
  rtcpPort?: number;
  /** RTCP multiplexed on the RTP port (a=rtcp-mux, RFC 5761); default false, also turned on when the trunk sends RTCP there. */
  rtcpMux?: boolean;
}

/** Where the relay currently sends to the trunk, and whether it was learned. */
export interface RtpRemoteState {
  /** RTP destination address. */
  address: string;
  /** RTP destination port. */
  port: number;
  /** RTCP destination address. */
  rtcpAddress: string;
  /** RTCP destination port (the RTP port when `rtcpMux`). */
  rtcpPort: number;
  /** RTCP goes to the RTP port. */
  rtcpMux: boolean;
  /** RTP destination learned from the trunk's packets (latching). */
  latched: boolean;
  /** RTCP destination learned from the trunk's packets (latching). */
  rtcpLatched: boolean;
}

/** The mediasoup PlainTransport (created with `rtcpMux: false`) the relay sends the trunk's media to. */
export interface MediasoupTarget {
  /** Its listen IP (default: the relay's `loopbackAddress`). */
  ip?: string;
  /** `plainTransport.tuple.localPort`. */
  port: number;
  /** `plainTransport.rtcpTuple.localPort`. */
  rtcpPort: number;
}

/** Options of {@link RtpRelay.sendDtmf}. */
export interface DtmfSendOptions {
  /** Length of each tone, ms (default 100; 20 or more, and at most 65535 timestamp units). */
  durationMs?: number;
  /** Pause after each tone, ms (default 50). */
  gapMs?: number;
  /** RTP payload type of telephone-event toward the trunk, 96–127 usually (default: the one given to setTelephoneEventPt()). */
  payloadType?: number;
  /** RTP clock rate of telephone-event, Hz (default: the one given to setTelephoneEventPt(), else 8000). */
  clockRate?: number;
  /** Tone power, dBm0 below zero, 0–63 (default 10; RFC 4733 §2.3.4). */
  volume?: number;
}

/** A DTMF key pressed at the trunk's end (RFC 4733 event decoded when it ended). */
export interface DtmfEvent {
  /** The key. */
  digit: DtmfDigit;
  /** Its duration, ms (from the event's final duration field and clock rate). */
  durationMs: number;
}

/** Packet and byte counts of one direction. */
export interface RtpRelayDirectionStats {
  /** RTP packets forwarded (RFC 4733 events included). */
  rtpPackets: number;
  /** RTP bytes forwarded (RTP header and payload, no UDP/IP). */
  rtpBytes: number;
  /** RTCP compound packets forwarded. */
  rtcpPackets: number;
  /** RTCP bytes forwarded. */
  rtcpBytes: number;
}

/** Counters of an {@link RtpRelay} (a snapshot). */
export interface RtpRelayStats {
  /** Trunk → mediasoup. */
  fromTrunk: RtpRelayDirectionStats;
  /** mediasoup → trunk. */
  toTrunk: RtpRelayDirectionStats;
  /** Packets dropped, by direction and reason. */
  dropped: {
    /**
     * From the trunk: not RTP v2 / malformed RTCP; from a source other than the remote (latched
     * or given); before setMediasoupTarget() took effect.
     */
    fromTrunk: { malformed: number; unknownSource: number; noMediasoup: number };
    /**
     * Toward the trunk: malformed; before setMediasoupTarget() took effect; no remote known yet;
     * `sendEnabled` false (hold); agent audio replaced by an RFC 4733 event being sent.
     */
    toTrunk: { malformed: number; noMediasoup: number; noRemote: number; hold: number; dtmf: number };
  };
  /** Time of the last RTP packet accepted from the trunk, ms since the epoch; undefined before the first. */
  lastTrunkRtpAt: number | undefined;
  /** The trunk's current SSRC; undefined before its first RTP packet. */
  trunkSsrc: number | undefined;
  /**
   * RTP from the trunk as RFC 3550 A.3 counts it: packets received, and packets expected from the
   * sequence numbers (summed over the stream's restarts). Lost = expected − received. And its
   * interarrival jitter (RFC 3550 §6.4.1, ms), taken as the packets arrive from the network.
   */
  trunkReceive: { received: number; expected: number; jitterMs: number };
  /** Times the trunk's stream was rebased: SSRC changes and sequence-number restarts. */
  trunkRestarts: number;
  /** DTMF events received from the trunk. */
  dtmfReceived: number;
  /** DTMF events sent to the trunk. */
  dtmfSent: number;
  /** Socket errors (send failures, ICMP errors on the loopback side). */
  socketErrors: number;
}

/** Events of {@link RtpRelay} (listener arguments). */
export interface RtpRelayEvents {
  /** A DTMF key from the trunk, once per event, when it ends (its end packet repeats; duplicates are dropped). */
  dtmf: [event: DtmfEvent];
  /** No RTP from the trunk for `rtpTimeoutMs` while `expectMedia`; fires again only after RTP came back. */
  inactivity: [info: { idleMs: number }];
  /** The remote was learned from the trunk's packets (latching). */
  latched: [info: { address: string; port: number; rtcp: boolean }];
  /** The trunk's stream restarted: new SSRC (`previous` undefined on the first packet) or a sequence-number jump. */
  trunkrestart: [info: { previous: number | undefined; ssrc: number; reason: 'ssrc' | 'sequence' }];
  /** The relay closed (once). */
  close: [];
}

/** Error codes of {@link RtpRelayError}. */
export type RtpRelayErrorCode = 'RB_ERR_RTP_RELAY_BIND' | 'RB_ERR_RTP_RELAY_CLOSED';

/** Thrown when the relay cannot bind its sockets, or is used after close(). */
export class RtpRelayError extends Error {
  override readonly name = 'RtpRelayError';
  /** Stable code for matching across module boundaries. */
  readonly code: RtpRelayErrorCode;

  /**
   * @param code stable error code
   * @param message what failed
   */
  constructor(code: RtpRelayErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

interface Resolved {
  loopbackAddress: string;
  listenAddress: string;
  portRange: RtpPortRange;
  bindAttempts: number;
  producerSsrc: number;
  latching: boolean;
  clockRate: number;
  rtpTimeoutMs: number;
  logger: Logger;
}

interface DtmfJob {
  code: number;
  digit: DtmfDigit;
  /** Total duration in timestamp units. */
  durationUnits: number;
  /** Duration growth per update packet, timestamp units. */
  stepUnits: number;
  gapMs: number;
  payloadType: number;
  clockRate: number;
  volume: number;
  /** Set on the last key of a sendDtmf() call. */
  done?: (played: boolean) => void;
}

interface DtmfPlaying {
  job: DtmfJob;
  timestamp: number;
  /** Packets sent (or due) so far. */
  packets: number;
  /** Final packets sent (or due) so far. */
  ends: number;
}

/**
 * One trunk call leg's RTP relay. Create it with {@link RtpRelay.create}; the events are in
 * {@link RtpRelayEvents}. Close it with {@link RtpRelay.close} when the leg ends (closing the
 * mediasoup transport does not close it).
 */
export class RtpRelay extends EventEmitter<RtpRelayEvents> {
  readonly #o: Resolved;
  readonly #log: Logger;
  #pubRtp?: dgram.Socket;
  #pubRtcp?: dgram.Socket;
  #msRtp?: dgram.Socket;
  #msRtcp?: dgram.Socket;
  #publicPort = 0;
  #loopbackPort = 0;
  #loopbackRtcpPort = 0;
  /** Both loopback sockets are connected to the PlainTransport. */
  #msReady = false;
  #msTarget: Required<MediasoupTarget> | undefined;
  /** Loopback socket connects in flight. */
  #msConnecting = 0;
  #closed = false;

  // remote (trunk) destination; port 0: unknown
  #rtpAddress = '';
  #rtpPort = 0;
  #rtcpAddress = '';
  #rtcpPort = 0;
  #rtcpMux = false;
  #rtpLatched = false;
  #rtcpLatched = false;

  #sendEnabled = true;
  #expectMedia = true;
  #tePt = -1;
  #teClockRate = 8000;
  /** Outbound payload-type map (index: mediasoup's PT, value: the trunk's), or undefined for identity. */
  #ptMap: Uint8Array | undefined;

  // trunk → mediasoup stream state (out = what mediasoup sees)
  #inStarted = false;
  #inSsrc = 0;
  #inHighSeq = 0;
  #inSeqOffset = 0;
  #inTsOffset = 0;
  #inLastOutSeq = 0;
  /** Timestamp (mediasoup's view) of the newest audio packet and when it came, for rebasing. */
  #inRefTs = 0;
  #inRefTime = 0;
  #lastTrunkRtp = 0;
  #activitySince = 0;
  #inactive = false;

  // mediasoup → trunk stream state
  #outStarted = false;
  #outSsrc = 0;
  /** Added to mediasoup's sequence numbers, mod 2^16: +1 per injected packet, −1 per suppressed one. */
  #outSeqOffset = 0;
  #outLastSeq = 0;
  /** The outgoing stream's media clock: the newest audio timestamp and when it came (-1: none yet). */
  #mediaTs = 0;
  #mediaTime = -1;

  // DTMF toward the trunk
  readonly #dtmfQueue: DtmfJob[] = [];
  #dtmfPlaying: DtmfPlaying | undefined;
  #dtmfGapUntil = 0;
  #dtmfTimer: NodeJS.Timeout | undefined;

  // DTMF from the trunk: the event in progress and the last one reported (timestamps in mediasoup's view)
  #evInTs = -1;
  #evInCode = -1;
  #evInDuration = 0;
  #evInDoneTs = -1;

  #inactivityTimer: NodeJS.Timeout | undefined;
  #lastErrorLog = 0;
  #errorsSinceLog = 0;

  readonly #rwFromTrunk: RtcpRewrite = { senderFrom: -1, senderTo: 0, srTimestampDelta: 0, sourceFrom: -1, sourceTo: 0, extSeqDelta: 0 };
  readonly #rwToTrunk: RtcpRewrite = { senderFrom: -1, senderTo: 0, srTimestampDelta: 0, sourceFrom: -1, sourceTo: 0, extSeqDelta: 0 };

  readonly #from: RtpRelayDirectionStats = { rtpPackets: 0, rtpBytes: 0, rtcpPackets: 0, rtcpBytes: 0 };
  readonly #to: RtpRelayDirectionStats = { rtpPackets: 0, rtpBytes: 0, rtcpPackets: 0, rtcpBytes: 0 };
  readonly #dropFrom = { malformed: 0, unknownSource: 0, noMediasoup: 0 };
  /** SDES-SRTP toward the trunk (setSrtp), or undefined for plain RTP. */
  #srtp: SrtpContext | undefined;
  readonly #dropTo = { malformed: 0, noMediasoup: 0, noRemote: 0, hold: 0, dtmf: 0 };
  #trunkRestarts = 0;
  #dtmfReceived = 0;
  #dtmfSent = 0;
  #socketErrors = 0;

  private constructor(o: Resolved) {
    super();
    this.#o = o;
    this.#log = o.logger;
  }

  /**
   * Binds the trunk-facing pair (an even port from `portRange` and the next one, retrying other
   * pairs when taken) and the loopback pair (ephemeral ports), and starts the inactivity timer.
   * Then: `plainTransport.connect(relay.mediasoupSide)` and `relay.setMediasoupTarget(…)`.
   * @throws {TypeError} when an option is invalid (the message names it)
   * @throws {RtpRelayError} RB_ERR_RTP_RELAY_BIND when no port pair could be bound
   */
  static async create(opts: RtpRelayOptions): Promise<RtpRelay> {
    const relay = new RtpRelay(resolveOptions(opts));
    try {
      await relay.#bind();
    } catch (err) {
      relay.#closeSockets();
      throw err instanceof RtpRelayError ? err : new RtpRelayError('RB_ERR_RTP_RELAY_BIND', `cannot bind RTP relay sockets: ${(err as Error).message}`, { cause: err });
    }
    relay.#activitySince = performance.now();
    const timeout = relay.#o.rtpTimeoutMs;
    if (timeout > 0) {
      relay.#inactivityTimer = setInterval(() => relay.#checkInactivity(), Math.max(20, Math.min(1000, Math.floor(timeout / 4))));
      relay.#inactivityTimer.unref();
    }
    relay.#log.debug({ publicSide: relay.publicSide, mediasoupSide: relay.mediasoupSide, producerSsrc: relay.#o.producerSsrc }, 'RTP relay bound');

    return relay;
  }

  /** SSRC of every RTP packet sent to mediasoup: create the Producer with `encodings: [{ ssrc: producerSsrc }]`. */
  get producerSsrc(): number {
    return this.#o.producerSsrc;
  }

  /** The trunk-facing sockets: bound address, RTP port (even) and RTCP port (RTP + 1); put these in the SDP. */
  get publicSide(): { address: string; port: number; rtcpPort: number } {
    return { address: this.#o.listenAddress, port: this.#publicPort, rtcpPort: this.#publicPort + 1 };
  }

  /** The loopback sockets: pass to `plainTransport.connect()`. */
  get mediasoupSide(): { ip: string; port: number; rtcpPort: number } {
    return { ip: this.#o.loopbackAddress, port: this.#loopbackPort, rtcpPort: this.#loopbackRtcpPort };
  }

  /** The PlainTransport the trunk's media goes to; undefined before setMediasoupTarget(). */
  get mediasoupTarget(): Readonly<Required<MediasoupTarget>> | undefined {
    return this.#msTarget;
  }

  /** Whether latching (comedia) is on. */
  get latching(): boolean {
    return this.#o.latching;
  }

  /** Where media to the trunk goes now; undefined while no remote is known. */
  get remote(): RtpRemoteState | undefined {
    if (this.#rtpPort === 0) {
      return undefined;
    }

    return {
      address: this.#rtpAddress,
      port: this.#rtpPort,
      rtcpAddress: this.#rtcpMux ? this.#rtpAddress : this.#rtcpAddress,
      rtcpPort: this.#rtcpMux ? this.#rtpPort : this.#rtcpPort,
      rtcpMux: this.#rtcpMux,
      latched: this.#rtpLatched,
      rtcpLatched: this.#rtcpLatched,
    };
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Whether the agent's audio is sent to the trunk (default true). Set false while the call is on
   * hold (our side sendonly/inactive); RTP is then dropped and its sequence numbers closed up, so
   * the trunk sees no gap on resume. RTCP keeps flowing.
   */
  get sendEnabled(): boolean {
    return this.#sendEnabled;
  }

  set sendEnabled(on: boolean) {
    this.#sendEnabled = on;
  }

  /**
   * Whether RTP from the trunk is expected (default true). Set false while the trunk holds the
   * call (its side sendonly/inactive): no 'inactivity' then; setting it true again restarts the
   * timeout.
   */
  get expectMedia(): boolean {
    return this.#expectMedia;
  }

  set expectMedia(on: boolean) {
    if (on && !this.#expectMedia) {
      this.#activitySince = performance.now();
      this.#inactive = false;
    }
    this.#expectMedia = on;
  }

  /**
   * Starts the inactivity timeout afresh (and re-arms 'inactivity' if it already fired): the call
   * manager calls it when a call is answered, so silent early media does not count against the
   * answered call, and an answered call whose timeout already ran out still gets its 'inactivity'.
   */
  restartInactivity(): void {
    this.#activitySince = performance.now();
    this.#inactive = false;
  }

  /** A snapshot of the counters. */
  /** RFC 3550 A.3 receive counts of the trunk's RTP; a new run at each SSRC change or sequence restart. */
  readonly #rx = { received: 0, expectedBefore: 0, baseExt: 0, maxExt: -1, cycles: 0, jitter: 0, lastArrival: -1, lastTs: 0 };

  /** RFC 3550 §6.4.1 / A.8 interarrival jitter of the trunk's audio, in timestamp units, measured where the trunk's packets arrive. */
  #rxJitter(nowMs: number, ts: number): void {
    const arrival = (nowMs * this.#o.clockRate) / 1000;
    if (this.#rx.lastArrival >= 0) {
      const d = Math.abs(arrival - this.#rx.lastArrival - ((ts - this.#rx.lastTs) | 0));
      if (d < this.#o.clockRate) {
        this.#rx.jitter += (d - this.#rx.jitter) / 16; // a jump of a second or more is a restart, not jitter
      }
    }
    this.#rx.lastArrival = arrival;
    this.#rx.lastTs = ts;
  }

  #rxNewRun(seq: number): void {
    this.#rx.lastArrival = -1;
    if (this.#rx.maxExt >= this.#rx.baseExt) {
      this.#rx.expectedBefore += this.#rx.maxExt - this.#rx.baseExt + 1;
    }
    this.#rx.cycles = 0;
    this.#rx.baseExt = seq;
    this.#rx.maxExt = seq;
  }

  get stats(): RtpRelayStats {
    return {
      fromTrunk: { ...this.#from },
      toTrunk: { ...this.#to },
      dropped: { fromTrunk: { ...this.#dropFrom }, toTrunk: { ...this.#dropTo } },
      lastTrunkRtpAt: this.#lastTrunkRtp > 0 ? Math.round(performance.timeOrigin + this.#lastTrunkRtp) : undefined,
      trunkSsrc: this.#inStarted ? this.#inSsrc : undefined,
      trunkReceive: {
        received: this.#rx.received,
        expected: this.#rx.expectedBefore + (this.#rx.maxExt >= this.#rx.baseExt ? this.#rx.maxExt - this.#rx.baseExt + 1 : 0),
        jitterMs: (this.#rx.jitter / this.#o.clockRate) * 1000,
      },
      trunkRestarts: this.#trunkRestarts,
      dtmfReceived: this.#dtmfReceived,
      dtmfSent: this.#dtmfSent,
      socketErrors: this.#socketErrors,
    };
  }

  /**
   * Sets the PlainTransport the trunk's media goes to (its `tuple.localPort` and
   * `rtcpTuple.localPort`); the loopback sockets are connected to it, so they take packets from it
   * only. Packets from the trunk are dropped (`noMediasoup`) until the connection is made, a moment
   * later. Calling it again re-targets.
   * @throws {TypeError} when the IP or a port is invalid
   * @throws {RtpRelayError} RB_ERR_RTP_RELAY_CLOSED after close()
   */
  setMediasoupTarget(target: MediasoupTarget): void {
    this.#assertOpen('setMediasoupTarget');
    const ip = target.ip ?? this.#o.loopbackAddress;
    if (net.isIP(ip) !== net.isIP(this.#o.loopbackAddress)) {
      throw new TypeError(`setMediasoupTarget: ip must be an IP address of the loopbackAddress's family, got ${JSON.stringify(ip)}`);
    }
    checkPort('setMediasoupTarget: port', target.port);
    checkPort('setMediasoupTarget: rtcpPort', target.rtcpPort);
    this.#msTarget = { ip, port: target.port, rtcpPort: target.rtcpPort };
    this.#msReady = false;
    if (this.#msConnecting === 0) {
      this.#connectMediasoup();
    }
  }

  /** Connects both loopback sockets to #msTarget; when it changed meanwhile, again. */
  #connectMediasoup(): void {
    const target = this.#msTarget!;
    this.#msConnecting = 2;
    const connected = (): void => {
      if (--this.#msConnecting > 0 || this.#closed) {
        return;
      }
      if (this.#msTarget !== target) {
        this.#connectMediasoup();
      } else {
        this.#msReady = true;
      }
    };
    for (const [socket, port] of [
      [this.#msRtp!, target.port],
      [this.#msRtcp!, target.rtcpPort],
    ] as const) {
      try {
        socket.disconnect();
      } catch {
        // not connected yet
      }
      socket.connect(port, target.ip, connected);
    }
  }

  /**
   * Sets the trunk's media address from its SDP, at the start and on every re-INVITE that moves
   * it. With latching, the relay sends there until the first packet from the trunk arrives, then
   * locks to that packet's source again. Restarts the inactivity timeout.
   * @throws {TypeError} when the address or a port is invalid, or IPv6 on an IPv4 relay
   * @throws {RtpRelayError} RB_ERR_RTP_RELAY_CLOSED after close()
   */
  setRemote(remote: RtpRemote): void {
    this.#assertOpen('setRemote');
    const family = net.isIP(remote.address);
    if (family === 0) {
      throw new TypeError(`setRemote: address must be an IP address, got ${JSON.stringify(remote.address)}`);
    }
    checkPort('setRemote: port', remote.port);
    const rtcpPort = remote.rtcpPort ?? remote.port + 1;
    checkPort('setRemote: rtcpPort', rtcpPort);
    const v6socket = net.isIPv6(this.#o.listenAddress);
    if (family === 6 && !v6socket) {
      throw new TypeError(`setRemote: IPv6 address ${remote.address} on a relay bound to IPv4 ${this.#o.listenAddress}`);
    }
    // an IPv6 socket sees IPv4 peers as IPv4-mapped addresses (dual stack)
    const address = family === 4 && v6socket ? `::ffff:${remote.address}` : remote.address;
    this.#rtpAddress = address;
    this.#rtpPort = remote.port;
    this.#rtcpAddress = address;
    this.#rtcpPort = rtcpPort;
    this.#rtcpMux = remote.rtcpMux ?? false;
    this.#rtpLatched = false;
    this.#rtcpLatched = false;
    this.#activitySince = performance.now();
    this.#inactive = false;
    this.#log.debug({ remote: this.remote }, 'RTP relay remote set');
  }

  /**
   * The RTP clock rate of the trunk's audio codec, once negotiated (Hz; 8000 for G.711 and G.722,
   * 48000 for Opus): timestamps across SSRC changes and the jitter of the trunk's stream use it.
   * @throws {TypeError} when not a positive integer
   */
  setAudioClockRate(clockRate: number): void {
    checkPositiveInt('setAudioClockRate: clockRate', clockRate);
    if (clockRate !== this.#o.clockRate) {
      this.#o.clockRate = clockRate;
      this.#rx.jitter = 0;
      this.#rx.lastArrival = -1;
    }
  }

  /**
   * Sets the negotiated telephone-event payload type (RFC 4733 §7.1.1): packets from the trunk
   * with it are decoded into 'dtmf' events (and still forwarded), and sendDtmf() uses it by
   * default. undefined stops decoding.
   *
   * mediasoup 3.12's Producer takes telephone-event packets but its Consumers drop them (they
   * forward "media" codecs only: worker/src/RTC/Consumer.cpp fills supportedCodecPayloadTypes from
   * IsMediaCodec(), and telephone-event is a "complementary" codec), so DTMF crosses mediasoup as
   * signalling: the trunk's keys through 'dtmf', the agent's through sendDtmf().
   * @param clockRate its RTP clock rate, Hz (default 8000)
   * @throws {TypeError} when pt is not 0–127 or clockRate not a positive integer
   */
  setTelephoneEventPt(pt: number | undefined, clockRate = 8000): void {
    if (pt !== undefined) {
      checkPayloadType('setTelephoneEventPt: pt', pt);
    }
    checkPositiveInt('setTelephoneEventPt: clockRate', clockRate);
    this.#tePt = pt ?? -1;
    this.#teClockRate = clockRate;
  }

  /**
   * Maps payload types of the packets mediasoup sends toward the trunk: mediasoup's Consumer uses
   * the router's payload types (dynamic ones such as Opus's are the router's choice), the trunk
   * expects the ones in its SDP. Keys (mediasoup's) and values (the trunk's) 0–127; unmapped types
   * pass unchanged; an empty map turns mapping off. Costs one table lookup per packet.
   * @throws {TypeError} when a key or value is not 0–127
   */
  setPayloadTypeMap(map: ReadonlyMap<number, number>): void {
    if (map.size === 0) {
      this.#ptMap = undefined;

      return;
    }
    const table = new Uint8Array(128);
    for (let i = 0; i < 128; i++) {
      table[i] = i;
    }
    for (const [from, to] of map) {
      checkPayloadType('setPayloadTypeMap: key', from);
      checkPayloadType('setPayloadTypeMap: value', to);
      table[from] = to;
    }
    this.#ptMap = table;
  }

  /**
   * Queues DTMF keys to send to the trunk as RFC 4733 events inside the stream mediasoup sends
   * (same SSRC, sequence numbers continued; the agent's audio is held back while a tone plays and
   * its later packets renumbered so the sequence stays contiguous). Each event: timestamp at the
   * stream's current media time, marker bit on its first packet, an update every 20 ms with the
   * duration so far, the final packet (E bit) three times (RFC 4733 §2.5.1.4). With no audio from
   * mediasoup yet, a random SSRC, sequence number and timestamp are used. While `sendEnabled` is
   * false the packets are not sent (the keys still take their time).
   * @param digits keys 0–9, *, #, A–D (a–d)
   * @returns resolves true when the last key's final packet went out, false when the relay closed first
   * @throws {TypeError} synchronously, when a key or an option is invalid or no payload type is known
   * @throws {RtpRelayError} RB_ERR_RTP_RELAY_CLOSED synchronously, after close()
   */
  sendDtmf(digits: string, opts: DtmfSendOptions = {}): Promise<boolean> {
    this.#assertOpen('sendDtmf');
    const durationMs = opts.durationMs ?? 100;
    const gapMs = opts.gapMs ?? 50;
    const payloadType = opts.payloadType ?? (this.#tePt >= 0 ? this.#tePt : undefined);
    const clockRate = opts.clockRate ?? this.#teClockRate;
    const volume = opts.volume ?? 10;
    if (payloadType === undefined) {
      throw new TypeError('sendDtmf: payloadType is required when setTelephoneEventPt() was not called');
    }
    checkPayloadType('sendDtmf: payloadType', payloadType);
    checkPositiveInt('sendDtmf: clockRate', clockRate);
    if (!Number.isInteger(volume) || volume < 0 || volume > 63) {
      throw new TypeError(`sendDtmf: volume must be an integer 0..63 (dBm0 below zero), got ${volume}`);
    }
    if (!Number.isInteger(gapMs) || gapMs < 0) {
      throw new TypeError(`sendDtmf: gapMs must be a non-negative integer, got ${gapMs}`);
    }
    const durationUnits = Math.round((durationMs * clockRate) / 1000);
    if (!Number.isInteger(durationMs) || durationMs < DTMF_PACKET_INTERVAL_MS || durationUnits > 0xffff) {
      throw new TypeError(`sendDtmf: durationMs must be an integer from ${DTMF_PACKET_INTERVAL_MS} to ${Math.floor((0xffff * 1000) / clockRate)} at ${clockRate} Hz, got ${durationMs}`);
    }
    const jobs: DtmfJob[] = [];
    for (const key of digits) {
      const code = dtmfEventCode(key);
      if (code < 0) {
        throw new TypeError(`sendDtmf: ${JSON.stringify(key)} is not a DTMF key (0-9, *, #, A-D)`);
      }
      const stepUnits = Math.round((DTMF_PACKET_INTERVAL_MS * clockRate) / 1000);
      jobs.push({ code, digit: dtmfDigit(code)!, durationUnits, stepUnits, gapMs, payloadType, clockRate, volume });
    }
    if (jobs.length === 0) {
      return Promise.resolve(true);
    }
    const played = new Promise<boolean>((resolve) => {
      jobs[jobs.length - 1]!.done = resolve;
    });
    this.#dtmfQueue.push(...jobs);
    if (!this.#dtmfTimer) {
      this.#dtmfTimer = setInterval(() => this.#dtmfTick(), DTMF_PACKET_INTERVAL_MS);
      this.#dtmfTimer.unref();
      this.#dtmfTick();
    }

    return played;
  }

  /**
   * Turns SDES-SRTP on the trunk side on (with the keys of the accepted a=crypto lines) or off.
   * Called again when a re-INVITE changes the keys; packets then use the new keys at once.
   */
  setSrtp(keys: SrtpKeys | undefined): void {
    this.#srtp = keys ? new SrtpContext(keys) : undefined;
  }

  /** SRTP drops (bad tag, replay) on the trunk side, when SRTP is on. */
  get srtpStats(): SrtpStats | undefined {
    return this.#srtp ? { ...this.#srtp.stats } : undefined;
  }

  /** Closes the sockets, stops the timers, settles pending sendDtmf() promises with false and emits 'close'. Idempotent. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    clearInterval(this.#inactivityTimer);
    this.#stopDtmf();
    this.#closeSockets();
    this.#log.debug({ stats: this.stats }, 'RTP relay closed');
    this.#safeEmit('close');
  }

  // ---------------------------------------------------------------------------------------------
  // trunk → mediasoup

  readonly #onTrunkRtp = (packet: Buffer, rinfo: dgram.RemoteInfo): void => {
    if (packet.length >= 2 && isRtcpPacketType(packet[1]!)) {
      this.#onTrunkRtcp(packet, rinfo, true);

      return;
    }
    // SRTP: a packet from another address than the trunk's is not even authenticated (it must not
    // move the replay window); then authenticated and decrypted before anything else (latching
    // included) looks at it
    if (this.#srtp && !(this.#o.latching && !this.#rtpLatched) && (rinfo.port !== this.#rtpPort || rinfo.address !== this.#rtpAddress)) {
      this.#dropFrom.unknownSource++;

      return;
    }
    const msg = this.#srtp ? this.#srtp.unprotectRtp(packet) : packet;
    if (!msg) {
      return;
    }
    const hl = rtpHeaderLength(msg);
    if (hl < 0) {
      this.#dropFrom.malformed++;

      return;
    }
    if (this.#o.latching && !this.#rtpLatched) {
      this.#latchRtp(rinfo);
    } else if (rinfo.port !== this.#rtpPort || rinfo.address !== this.#rtpAddress) {
      this.#dropFrom.unknownSource++;

      return;
    }
    const now = performance.now();
    const ssrc = msg.readUInt32BE(RTP_OFFSET.ssrc);
    const seq = msg.readUInt16BE(RTP_OFFSET.sequenceNumber);
    let inOrder = true;
    if (!this.#inStarted || ssrc !== this.#inSsrc) {
      this.#rebaseIn(ssrc, seq, msg.readUInt32BE(RTP_OFFSET.timestamp), now, 'ssrc');
      this.#rxNewRun(seq);
    } else {
      const delta = (seq - this.#inHighSeq) & 0xffff;
      if (delta < MAX_DROPOUT) {
        if (seq < this.#inHighSeq) {
          this.#rx.cycles += 0x10000; // wrapped (RFC 3550 A.1)
        }
        this.#inHighSeq = seq;
        this.#rx.maxExt = this.#rx.cycles + seq;
      } else if (delta <= 0x10000 - MAX_MISORDER) {
        this.#rebaseIn(ssrc, seq, msg.readUInt32BE(RTP_OFFSET.timestamp), now, 'sequence');
        this.#rxNewRun(seq);
      } else {
        inOrder = false;
      }
    }
    this.#rx.received++;
    if (inOrder && (msg[1]! & 0x7f) !== this.#tePt) {
      this.#rxJitter(now, msg.readUInt32BE(RTP_OFFSET.timestamp));
    }
    const outSeq = (seq + this.#inSeqOffset) & 0xffff;
    const outTs = (msg.readUInt32BE(RTP_OFFSET.timestamp) + this.#inTsOffset) >>> 0;
    msg.writeUInt32BE(this.#o.producerSsrc, RTP_OFFSET.ssrc);
    msg.writeUInt16BE(outSeq, RTP_OFFSET.sequenceNumber);
    msg.writeUInt32BE(outTs, RTP_OFFSET.timestamp);
    if ((msg[1]! & 0x7f) === this.#tePt) {
      this.#onTrunkEvent(msg, hl, outTs);
    } else if (inOrder) {
      this.#inRefTs = outTs;
      this.#inRefTime = now;
    }
    if (inOrder) {
      this.#inLastOutSeq = outSeq;
    }
    this.#lastTrunkRtp = now;
    this.#inactive = false;
    if (!this.#msReady) {
      this.#dropFrom.noMediasoup++;

      return;
    }
    this.#from.rtpPackets++;
    this.#from.rtpBytes += msg.length;
    this.#msRtp!.send(msg);
  };

  readonly #onTrunkRtcpPort = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    this.#onTrunkRtcp(msg, rinfo, false);
  };

  #onTrunkRtcp(packet: Buffer, rinfo: dgram.RemoteInfo, muxed: boolean): void {
    const msg = this.#srtp ? this.#srtp.unprotectRtcp(packet) : packet;
    if (!msg) {
      return;
    }
    if (muxed) {
      if (rinfo.port !== this.#rtpPort || rinfo.address !== this.#rtpAddress || (this.#o.latching && !this.#rtpLatched)) {
        this.#dropFrom.unknownSource++;

        return;
      }
    } else if (this.#o.latching && !this.#rtcpLatched && (!this.#rtpLatched || rinfo.address === this.#rtpAddress)) {
      if (!isValidRtcpHeader(msg)) {
        this.#dropFrom.malformed++;

        return;
      }
      this.#latchRtcp(rinfo);
    } else if (rinfo.port !== this.#rtcpPort || rinfo.address !== this.#rtcpAddress) {
      this.#dropFrom.unknownSource++;

      return;
    }
    const rw = this.#rwFromTrunk;
    rw.senderFrom = this.#inStarted ? this.#inSsrc : -1;
    rw.senderTo = this.#o.producerSsrc;
    rw.srTimestampDelta = this.#inTsOffset;
    rw.sourceFrom = this.#outStarted ? this.#outSsrc : -1;
    rw.sourceTo = this.#outSsrc;
    rw.extSeqDelta = -signed16(this.#outSeqOffset);
    if (rewriteRtcp(msg, rw) < 0) {
      this.#dropFrom.malformed++;

      return;
    }
    if (muxed) {
      this.#rtcpMux = true;
    }
    if (!this.#msReady) {
      this.#dropFrom.noMediasoup++;

      return;
    }
    this.#from.rtcpPackets++;
    this.#from.rtcpBytes += msg.length;
    this.#msRtcp!.send(msg);
  }

  /** New SSRC or restarted sequence: continue mediasoup's view where it was (RFC 3550 A.1 would otherwise drop packets). */
  #rebaseIn(ssrc: number, seq: number, ts: number, now: number, reason: 'ssrc' | 'sequence'): void {
    const previous = this.#inStarted ? this.#inSsrc : undefined;
    if (this.#inStarted) {
      const elapsed = Math.max(1, Math.round(((now - this.#inRefTime) * this.#o.clockRate) / 1000));
      this.#inSeqOffset = (this.#inLastOutSeq + 1 - seq) & 0xffff;
      this.#inTsOffset = (this.#inRefTs + elapsed - ts) >>> 0;
      this.#trunkRestarts++;
    }
    this.#inStarted = true;
    this.#inSsrc = ssrc;
    this.#inHighSeq = seq;
    this.#inRefTs = (ts + this.#inTsOffset) >>> 0;
    this.#inRefTime = now;
    this.#log.debug({ previous, ssrc, reason, seqOffset: this.#inSeqOffset, tsOffset: this.#inTsOffset }, 'RTP relay: trunk stream (re)started');
    this.#safeEmit('trunkrestart', { previous, ssrc, reason });
  }

  /** An RFC 4733 packet from the trunk: report each event once, at its end (or when the next one starts without an end seen). */
  #onTrunkEvent(msg: Buffer, hl: number, ts: number): void {
    if (msg.length - rtpPaddingLength(msg) - hl < TELEPHONE_EVENT_BYTES || ts === this.#evInDoneTs) {
      return;
    }
    const code = msg[hl]!;
    const end = (msg[hl + 1]! & 0x80) !== 0;
    const duration = msg.readUInt16BE(hl + 2);
    if (this.#evInTs >= 0 && this.#evInTs !== ts) {
      // the previous event's final packets were all lost
      this.#reportTrunkEvent(this.#evInTs, this.#evInCode, this.#evInDuration);
    }
    if (end) {
      this.#reportTrunkEvent(ts, code, duration);
    } else {
      this.#evInTs = ts;
      this.#evInCode = code;
      this.#evInDuration = duration;
    }
  }

  #reportTrunkEvent(ts: number, code: number, duration: number): void {
    this.#evInDoneTs = ts;
    this.#evInTs = -1;
    const digit = dtmfDigit(code);
    if (digit === undefined) {
      return;
    }
    this.#dtmfReceived++;
    this.#safeEmit('dtmf', { digit, durationMs: Math.round((duration * 1000) / this.#teClockRate) });
  }

  #latchRtp(rinfo: dgram.RemoteInfo): void {
    this.#rtpAddress = rinfo.address;
    this.#rtpPort = rinfo.port;
    this.#rtpLatched = true;
    if (!this.#rtcpLatched) {
      this.#rtcpAddress = rinfo.address;
      this.#rtcpPort = rinfo.port + 1;
    }
    this.#log.info({ address: rinfo.address, port: rinfo.port }, 'RTP relay latched to the trunk media source');
    this.#safeEmit('latched', { address: rinfo.address, port: rinfo.port, rtcp: false });
  }

  #latchRtcp(rinfo: dgram.RemoteInfo): void {
    this.#rtcpAddress = rinfo.address;
    this.#rtcpPort = rinfo.port;
    this.#rtcpLatched = true;
    this.#log.debug({ address: rinfo.address, port: rinfo.port }, 'RTP relay latched to the trunk RTCP source');
    this.#safeEmit('latched', { address: rinfo.address, port: rinfo.port, rtcp: true });
  }

  // ---------------------------------------------------------------------------------------------
  // mediasoup → trunk

  readonly #onMediasoupRtp = (msg: Buffer): void => {
    if (msg.length >= 2 && isRtcpPacketType(msg[1]!)) {
      this.#onMediasoupRtcp(msg);

      return;
    }
    if (rtpHeaderLength(msg) < 0) {
      this.#dropTo.malformed++;

      return;
    }
    if (!this.#msReady) {
      this.#dropTo.noMediasoup++;

      return;
    }
    const ssrc = msg.readUInt32BE(RTP_OFFSET.ssrc);
    const seq = msg.readUInt16BE(RTP_OFFSET.sequenceNumber);
    if (!this.#outStarted || ssrc !== this.#outSsrc) {
      // a new stream (first packet, another Consumer, or audio after a synthetic DTMF stream)
      this.#outStarted = true;
      this.#outSsrc = ssrc;
      this.#outSeqOffset = 0;
      this.#outLastSeq = (seq + 0xffff) & 0xffff;
    }
    let pt = msg[1]! & 0x7f;
    if (this.#ptMap) {
      const mapped = this.#ptMap[pt]!;
      if (mapped !== pt) {
        msg[1] = (msg[1]! & 0x80) | mapped;
        pt = mapped;
      }
    }
    if (pt !== this.#tePt) {
      this.#mediaTs = msg.readUInt32BE(RTP_OFFSET.timestamp);
      this.#mediaTime = performance.now();
    }
    if (this.#dtmfPlaying !== undefined || !this.#sendEnabled || this.#rtpPort === 0) {
      // close the gap this packet leaves so the trunk sees a contiguous sequence
      this.#outSeqOffset = (this.#outSeqOffset + 0xffff) & 0xffff;
      if (this.#dtmfPlaying !== undefined) {
        this.#dropTo.dtmf++;
      } else if (!this.#sendEnabled) {
        this.#dropTo.hold++;
      } else {
        this.#dropTo.noRemote++;
      }

      return;
    }
    const outSeq = (seq + this.#outSeqOffset) & 0xffff;
    if (this.#outSeqOffset !== 0) {
      msg.writeUInt16BE(outSeq, RTP_OFFSET.sequenceNumber);
    }
    this.#outLastSeq = outSeq;
    this.#to.rtpPackets++;
    this.#to.rtpBytes += msg.length;
    this.#pubRtp!.send(this.#srtp ? this.#srtp.protectRtp(msg) : msg, this.#rtpPort, this.#rtpAddress);
  };

  readonly #onMediasoupRtcp = (msg: Buffer): void => {
    if (!this.#msReady) {
      this.#dropTo.noMediasoup++;

      return;
    }
    const rw = this.#rwToTrunk;
    rw.senderFrom = -1;
    rw.sourceFrom = this.#inStarted ? this.#o.producerSsrc : -1;
    rw.sourceTo = this.#inSsrc;
    rw.extSeqDelta = -signed16(this.#inSeqOffset);
    if (rewriteRtcp(msg, rw) < 0) {
      this.#dropTo.malformed++;

      return;
    }
    if (this.#rtpPort === 0) {
      this.#dropTo.noRemote++;

      return;
    }
    this.#to.rtcpPackets++;
    this.#to.rtcpBytes += msg.length;
    const out = this.#srtp ? this.#srtp.protectRtcp(msg) : msg;
    if (this.#rtcpMux) {
      this.#pubRtp!.send(out, this.#rtpPort, this.#rtpAddress);
    } else {
      this.#pubRtcp!.send(out, this.#rtcpPort, this.#rtcpAddress);
    }
  };

  // ---------------------------------------------------------------------------------------------
  // DTMF toward the trunk (RFC 4733 §2.5.1)

  #dtmfTick(): void {
    if (this.#closed) {
      return;
    }
    const now = performance.now();
    let cur = this.#dtmfPlaying;
    if (!cur) {
      if (now < this.#dtmfGapUntil) {
        return;
      }
      const job = this.#dtmfQueue.shift();
      if (!job) {
        clearInterval(this.#dtmfTimer);
        this.#dtmfTimer = undefined;

        return;
      }
      cur = { job, timestamp: this.#mediaClock(now, job.clockRate), packets: 0, ends: 0 };
      this.#dtmfPlaying = cur;
    }
    const { job } = cur;
    cur.packets++;
    const duration = Math.min(cur.packets * job.stepUnits, job.durationUnits);
    const end = duration >= job.durationUnits;
    if (end) {
      cur.ends++;
    }
    this.#sendEvent(job, cur.timestamp, cur.packets === 1, end, duration);
    if (cur.ends >= DTMF_END_PACKETS) {
      this.#dtmfPlaying = undefined;
      this.#dtmfGapUntil = now + job.gapMs;
      this.#dtmfSent++;
      job.done?.(true);
    }
  }

  /**
   * The outgoing stream's current RTP time. When mediasoup sent nothing yet (the agent is muted),
   * starts a synthetic stream: random SSRC, sequence number and timestamp (RFC 3550 §5.1).
   */
  #mediaClock(now: number, clockRate: number): number {
    if (!this.#outStarted) {
      this.#outStarted = true;
      this.#outSsrc = randomInt(1, 0x1_0000_0000);
      this.#outLastSeq = randomInt(0, 0x1_0000);
      this.#outSeqOffset = 0;
    }
    if (this.#mediaTime < 0) {
      this.#mediaTs = randomInt(0, 0x1_0000_0000);
      this.#mediaTime = now;
    }

    return (this.#mediaTs + Math.round(((now - this.#mediaTime) * clockRate) / 1000)) >>> 0;
  }

  #sendEvent(job: DtmfJob, timestamp: number, marker: boolean, end: boolean, duration: number): void {
    if (!this.#sendEnabled) {
      this.#dropTo.hold++;

      return;
    }
    if (this.#rtpPort === 0) {
      this.#dropTo.noRemote++;

      return;
    }
    const seq = (this.#outLastSeq + 1) & 0xffff;
    this.#outLastSeq = seq;
    this.#outSeqOffset = (this.#outSeqOffset + 1) & 0xffff;
    const pkt = Buffer.allocUnsafe(RTP_FIXED_HEADER_BYTES + TELEPHONE_EVENT_BYTES);
    pkt[0] = 0x80;
    pkt[1] = (marker ? 0x80 : 0) | job.payloadType;
    pkt.writeUInt16BE(seq, RTP_OFFSET.sequenceNumber);
    pkt.writeUInt32BE(timestamp, RTP_OFFSET.timestamp);
    pkt.writeUInt32BE(this.#outSsrc, RTP_OFFSET.ssrc);
    writeTelephoneEvent(pkt, RTP_FIXED_HEADER_BYTES, { event: job.code, end, volume: job.volume, duration });
    this.#to.rtpPackets++;
    this.#to.rtpBytes += pkt.length;
    this.#pubRtp!.send(this.#srtp ? this.#srtp.protectRtp(pkt) : pkt, this.#rtpPort, this.#rtpAddress);
  }

  #stopDtmf(): void {
    clearInterval(this.#dtmfTimer);
    this.#dtmfTimer = undefined;
    const pending = this.#dtmfPlaying ? [this.#dtmfPlaying.job, ...this.#dtmfQueue] : [...this.#dtmfQueue];
    this.#dtmfPlaying = undefined;
    this.#dtmfQueue.length = 0;
    for (const job of pending) {
      job.done?.(false);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // lifecycle

  #checkInactivity(): void {
    if (this.#closed || !this.#expectMedia || this.#inactive) {
      return;
    }
    const idleMs = performance.now() - Math.max(this.#lastTrunkRtp, this.#activitySince);
    if (idleMs >= this.#o.rtpTimeoutMs) {
      this.#inactive = true;
      this.#log.info({ idleMs: Math.round(idleMs), rtpTimeoutMs: this.#o.rtpTimeoutMs }, 'RTP relay: no RTP from the trunk');
      this.#safeEmit('inactivity', { idleMs: Math.round(idleMs) });
    }
  }

  async #bind(): Promise<void> {
    const o = this.#o;
    const type = net.isIPv6(o.listenAddress) ? 'udp6' : 'udp4';
    const first = o.portRange.min + (o.portRange.min % 2);
    const pairs = Math.floor((o.portRange.max - first - 1) / 2) + 1;
    if (pairs < 1) {
      throw new RtpRelayError('RB_ERR_RTP_RELAY_BIND', `portRange ${o.portRange.min}-${o.portRange.max} holds no even port with a free odd one above it`);
    }
    const start = randomInt(0, pairs);
    const attempts = Math.min(pairs, o.bindAttempts);
    let lastErr: unknown;
    for (let i = 0; i < attempts && !this.#pubRtp; i++) {
      const port = first + 2 * ((start + i) % pairs);
      let rtp: dgram.Socket | undefined;
      try {
        rtp = await bindUdp(type, o.listenAddress, port);
        this.#pubRtcp = await bindUdp(type, o.listenAddress, port + 1);
        this.#pubRtp = rtp;
        this.#publicPort = port;
      } catch (err) {
        lastErr = err;
        rtp?.close();
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
          throw err;
        }
      }
    }
    if (!this.#pubRtp || !this.#pubRtcp) {
      throw new RtpRelayError('RB_ERR_RTP_RELAY_BIND', `no free RTP/RTCP port pair in ${o.portRange.min}-${o.portRange.max} on ${o.listenAddress} after ${attempts} attempts`, { cause: lastErr });
    }
    const ltype = net.isIPv6(o.loopbackAddress) ? 'udp6' : 'udp4';
    this.#msRtp = await bindLoopback(ltype, o.loopbackAddress);
    this.#msRtcp = await bindLoopback(ltype, o.loopbackAddress);
    this.#loopbackPort = this.#msRtp.address().port;
    this.#loopbackRtcpPort = this.#msRtcp.address().port;
    for (const s of [this.#pubRtp, this.#pubRtcp, this.#msRtp, this.#msRtcp]) {
      s.on('error', this.#onSocketError);
    }
    this.#pubRtp.on('message', this.#onTrunkRtp);
    this.#pubRtcp.on('message', this.#onTrunkRtcpPort);
    this.#msRtp.on('message', this.#onMediasoupRtp);
    this.#msRtcp.on('message', this.#onMediasoupRtcp);
  }

  readonly #onSocketError = (err: Error): void => {
    this.#socketErrors++;
    this.#errorsSinceLog++;
    const now = performance.now();
    if (this.#closed || now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS) {
      return;
    }
    this.#log.warn({ err, errors: this.#errorsSinceLog }, 'RTP relay socket error');
    this.#lastErrorLog = now;
    this.#errorsSinceLog = 0;
  };

  #closeSockets(): void {
    for (const s of [this.#pubRtp, this.#pubRtcp, this.#msRtp, this.#msRtcp]) {
      if (!s) {
        continue;
      }
      s.removeAllListeners('message');
      try {
        s.close();
      } catch {
        // already closed
      }
    }
  }

  #assertOpen(method: string): void {
    if (this.#closed) {
      throw new RtpRelayError('RB_ERR_RTP_RELAY_CLOSED', `${method}() called on a closed RTP relay`);
    }
  }

  /** Emits without letting a throwing listener break packet handling or teardown. */
  #safeEmit<K extends keyof RtpRelayEvents>(event: K, ...args: RtpRelayEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: RtpRelayEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#log.error({ err, event }, 'RTP relay event listener threw');
    }
  }
}

function resolveOptions(opts: RtpRelayOptions): Resolved {
  const loopbackAddress = opts.loopbackAddress ?? '127.0.0.1';
  if (net.isIP(loopbackAddress) === 0) {
    throw new TypeError(`RtpRelay: loopbackAddress must be an IP address, got ${JSON.stringify(loopbackAddress)}`);
  }
  const listenAddress = opts.listenAddress ?? '0.0.0.0';
  if (net.isIP(listenAddress) === 0) {
    throw new TypeError(`RtpRelay: listenAddress must be an IP address, got ${JSON.stringify(listenAddress)}`);
  }
  const portRange = { ...(opts.portRange ?? DEFAULT_RTP_PORT_RANGE) };
  checkPort('RtpRelay: portRange.min', portRange.min);
  checkPort('RtpRelay: portRange.max', portRange.max);
  if (portRange.max <= portRange.min) {
    throw new TypeError(`RtpRelay: portRange.max (${portRange.max}) must be above portRange.min (${portRange.min})`);
  }
  const bindAttempts = opts.bindAttempts ?? 32;
  checkPositiveInt('RtpRelay: bindAttempts', bindAttempts);
  const producerSsrc = opts.producerSsrc ?? randomInt(1, 0x1_0000_0000);
  if (!Number.isInteger(producerSsrc) || producerSsrc < 1 || producerSsrc > 0xffff_ffff) {
    throw new TypeError(`RtpRelay: producerSsrc must be an integer 1..4294967295, got ${producerSsrc}`);
  }
  const clockRate = opts.clockRate ?? 8000;
  checkPositiveInt('RtpRelay: clockRate', clockRate);
  const rawTimeout = opts.rtpTimeoutMs ?? 0;
  if (!Number.isInteger(rawTimeout)) {
    throw new TypeError(`RtpRelay: rtpTimeoutMs must be an integer (0: default, negative: never), got ${rawTimeout}`);
  }

  return {
    loopbackAddress,
    listenAddress,
    portRange,
    bindAttempts,
    producerSsrc,
    latching: opts.latching ?? false,
    clockRate,
    rtpTimeoutMs: rawTimeout === 0 ? DEFAULT_RTP_TIMEOUT_MS : rawTimeout,
    logger: opts.logger,
  };
}

function checkPort(name: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`${name} must be a port number 1..65535, got ${port}`);
  }
}

function checkPayloadType(name: string, pt: number): void {
  if (!Number.isInteger(pt) || pt < 0 || pt > 127) {
    throw new TypeError(`${name} must be an RTP payload type 0..127, got ${pt}`);
  }
}

function checkPositiveInt(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) {
    throw new TypeError(`${name} must be a positive integer, got ${n}`);
  }
}

/** A 16-bit offset as a signed number (−32768…32767). */
function signed16(n: number): number {
  return n > 0x7fff ? n - 0x10000 : n;
}

/** Cheap check before latching RTCP to a source: version 2 and an RTCP packet type. */
function isValidRtcpHeader(msg: Buffer): boolean {
  return msg.length >= 8 && msg[0]! >> 6 === 2 && isRtcpPacketType(msg[1]!);
}

/**
 * A socket on a free port of `address`, bound to that port *by number*: Linux releases the local
 * port of a UDP socket bound to port 0 when it is disconnected (udp_disconnect without
 * SOCK_BINDPORT_LOCK), and setMediasoupTarget() disconnects to re-target, while mediasoup keeps
 * sending to the port it was given.
 */
async function bindLoopback(type: 'udp4' | 'udp6', address: string): Promise<dgram.Socket> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 8; attempt++) {
    const probe = await bindUdp(type, address, 0);
    const { port } = probe.address();
    await new Promise<void>((resolve) => probe.close(resolve));
    try {
      return await bindUdp(type, address, port);
    } catch (err) {
      lastErr = err;
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
        throw err;
      }
    }
  }
  throw lastErr;
}

/**
 * Receive buffer of each relay socket (bytes): room for a couple of hundred RTP packets (the
 * kernel charges each small datagram about 1 KiB), seconds of one call's audio, so that a busy
 * event loop (hundreds of calls on one thread) delays packets instead of dropping them. The kernel
 * caps it at net.core.rmem_max.
 */
const RELAY_RECV_BUFFER_BYTES = 256 * 1024;

async function bindUdp(type: 'udp4' | 'udp6', address: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type, ipv6Only: false, recvBufferSize: RELAY_RECV_BUFFER_BYTES });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.close();
      reject(err);
    };
    socket.once('error', onError);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });

  return socket;
}
