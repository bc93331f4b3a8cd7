/**
 * An audio player that plays a source into a call's mediasoup router as a Producer (music on
 * hold, queue prompts).
 *
 *   AudioSource (8 kHz PCM) ─ G.711 encode once ─→ Node UDP socket ─ RTP ─→ PlainTransport ─→ Producer
 *                                                  (127.0.0.1)           (127.0.0.1, rtcpMux, comedia false)
 *
 * How another module uses it:
 *
 * ```ts
 * const player = await AudioPlayer.create({ router: media.router, codec: media.codec!, source: await loadWavSource(file, 'queues[0].music'), logger });
 * // or source: defaultAudioSource()
 * const consumer = await media.plain.consume({ producerId: player.producer.id, rtpCapabilities }); // e.g. toward the trunk
 * player.pause(); player.resume();
 * player.close(); // idempotent; closes the producer, the transport and the socket
 * ```
 *
 * The player closes itself when its router (hence its transport) closes; `onClose()` tells the
 * owner. Errors: {@link PlayerCodecError} (code `RB_ERR_PLAYER_CODEC`) for a codec the player does
 * not encode, thrown before anything is created: the caller falls back to silence (e.g. pauses
 * the consumer toward the trunk) and the call goes on.
 *
 * Codec decision: PCMU and PCMA (the trunk codecs in practice) are encoded here (src/media/g711.ts,
 * no dependency). G.722 and Opus are refused with PlayerCodecError: the npm encoders are either
 * native addons (@discordjs/opus, a compiler on every deployment host) or an Emscripten build
 * (opusscript) we would pull in for one feature; neither is worth it until a trunk needs it.
 *
 * Timing: packets of `ptimeMs` (default 20 ms, 160 samples) are due at start + k·ptime on the
 * monotonic clock (performance.now()), and each timer is set for the next due time, so errors
 * never accumulate. After an event-loop stall it sends at most {@link MAX_BURST} late packets and
 * skips the rest (timestamps stay on the wall clock; sequence numbers stay continuous). RTP
 * timestamps are k·(samples per packet) from a random base; the marker bit is set on the first
 * packet and on the first after resume() (RFC 3551 §4.1: start of a talkspurt).
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type types as ms } from 'mediasoup';
import { type Logger } from '../log/logger.js';
import { type CallCodec } from '../signaling/protocol.js';
import { type AudioSource } from './audio-source.js';
import { encodeG711, type G711Law, g711LawOf } from './g711.js';
import { buildRtpPacket } from './rtp/rtp-packet.js';

/** Thrown by AudioPlayer.create() for a codec it cannot encode; fall back to silence. */
export class PlayerCodecError extends Error {
  override readonly name = 'PlayerCodecError';
  readonly code = 'RB_ERR_PLAYER_CODEC';
}

/** Options of AudioPlayer.create(). */
export interface AudioPlayerOptions {
  /** The call's router. */
  router: ms.Router;
  /** The call's codec (CallMedia.codec). PCMU or PCMA; others throw PlayerCodecError. */
  codec: CallCodec;
  source: AudioSource;
  logger: Logger;
  /** Packet duration in ms (default 20; 10–60 in steps of 10). */
  ptimeMs?: number;
  /** Start again at the end of the source (default true); when false, the player pauses at the end and calls its onEnd callbacks. */
  loop?: boolean;
  /** Start paused (default false). */
  paused?: boolean;
  /** appData of the producer. */
  appData?: Record<string, unknown>;
}

/** Most late packets sent at once after a stall; the rest are skipped. */
export const MAX_BURST = 5;

const encodedCache = new WeakMap<AudioSource, Map<G711Law, Buffer>>();

function encoded(source: AudioSource, law: G711Law): Buffer {
  let byLaw = encodedCache.get(source);
  if (!byLaw) {
    byLaw = new Map();
    encodedCache.set(source, byLaw);
  }
  let buf = byLaw.get(law);
  if (!buf) {
    buf = encodeG711(law, source.samples);
    byLaw.set(law, buf);
  }

  return buf;
}

/** A source playing into a router. Create with AudioPlayer.create(). */
export class AudioPlayer {
  /** The producer carrying the audio; consume it like any other. */
  readonly producer: ms.Producer;
  readonly transport: ms.PlainTransport;
  readonly #socket: dgram.Socket;
  readonly #logger: Logger;
  readonly #audio: Buffer;
  readonly #payloadType: number;
  /** The codeword of a zero sample (0xff µ-law, 0xd5 A-law). */
  readonly #silence: number;
  readonly #ssrc: number;
  readonly #ptimeMs: number;
  readonly #samplesPerPacket: number;
  readonly #loop: boolean;
  readonly #target: { ip: string; port: number };
  readonly #tsBase: number;
  #seq: number;
  /** Monotonic time of packet index 0. */
  #startAt = 0;
  /** Index of the next packet on the wall-clock grid. */
  #k = 0;
  /** Read position in the encoded source, bytes. */
  #pos = 0;
  #marker = true;
  #paused = true;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #sent = 0;
  readonly #onClose: (() => void)[] = [];
  readonly #onEnd: (() => void)[] = [];

  private constructor(opts: Required<Pick<AudioPlayerOptions, 'ptimeMs' | 'loop'>> & { logger: Logger; audio: Buffer; law: G711Law; payloadType: number; ssrc: number }, transport: ms.PlainTransport, producer: ms.Producer, socket: dgram.Socket) {
    this.transport = transport;
    this.producer = producer;
    this.#socket = socket;
    this.#logger = opts.logger;
    this.#audio = opts.audio;
    this.#payloadType = opts.payloadType;
    this.#silence = opts.law === 'PCMU' ? 0xff : 0xd5;
    this.#ssrc = opts.ssrc;
    this.#ptimeMs = opts.ptimeMs;
    this.#samplesPerPacket = (8000 * opts.ptimeMs) / 1000;
    this.#loop = opts.loop;
    this.#target = { ip: transport.tuple.localIp, port: transport.tuple.localPort };
    this.#tsBase = randomInt(0, 2 ** 32);
    this.#seq = randomInt(0, 2 ** 16);
    transport.observer.once('close', () => this.close());
    socket.on('error', (err) => {
      this.#logger.warn({ err, producerId: producer.id }, 'audio player socket error; closing the player');
      this.close();
    });
    // RTCP receiver reports from mediasoup arrive here; nothing to do with them
    socket.on('message', () => undefined);
  }

  /**
   * Creates the transport, the socket and the producer and starts playing (unless `paused`).
   * @throws {PlayerCodecError} for a codec other than PCMU/PCMA (nothing is created)
   * @throws {RangeError} for a ptimeMs outside 10–60 or not a multiple of 10
   * @throws mediasoup's error when the router is closed or refuses the producer
   */
  static async create(opts: AudioPlayerOptions): Promise<AudioPlayer> {
    const law = g711LawOf(opts.codec.mimeType);
    if (!law) {
      throw new PlayerCodecError(`the audio player encodes PCMU and PCMA only, not ${opts.codec.mimeType}`);
    }
    const ptimeMs = opts.ptimeMs ?? 20;
    if (!Number.isInteger(ptimeMs) || ptimeMs < 10 || ptimeMs > 60 || ptimeMs % 10 !== 0) {
      throw new RangeError(`ptimeMs must be 10..60 in steps of 10, got ${ptimeMs}`);
    }
    const cap = opts.router.rtpCapabilities.codecs?.find((c) => c.mimeType.toLowerCase() === opts.codec.mimeType.toLowerCase());
    if (!cap || cap.preferredPayloadType === undefined) {
      throw new PlayerCodecError(`the router has no ${opts.codec.mimeType}`);
    }
    const socket = dgram.createSocket('udp4');
    let transport: ms.PlainTransport | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, '127.0.0.1', () => {
          socket.off('error', reject);
          resolve();
        });
      });
      transport = await opts.router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false, appData: { role: 'player' } });
      // comedia false: mediasoup takes RTP only from the connected tuple, our socket
      await transport.connect({ ip: '127.0.0.1', port: socket.address().port });
      const ssrc = randomInt(1, 2 ** 32);
      const producer = await transport.produce({
        kind: 'audio',
        rtpParameters: {
          codecs: [{ mimeType: cap.mimeType, payloadType: cap.preferredPayloadType, clockRate: cap.clockRate, parameters: {}, rtcpFeedback: [] }],
          headerExtensions: [],
          encodings: [{ ssrc }],
          rtcp: { cname: `player-${ssrc.toString(16)}`, reducedSize: true, mux: true },
        },
        appData: { role: 'player', source: opts.source.name, ...opts.appData },
      });
      const player = new AudioPlayer({ ptimeMs, loop: opts.loop ?? true, logger: opts.logger, audio: encoded(opts.source, law), law, payloadType: cap.preferredPayloadType, ssrc }, transport, producer, socket);
      if (!opts.paused) {
        player.resume();
      }

      return player;
    } catch (err) {
      transport?.close();
      socket.close();
      throw err;
    }
  }

  /** Whether it is paused (or ended without loop, or closed). */
  get paused(): boolean {
    return this.#paused;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** RTP packets sent so far. */
  get packetsSent(): number {
    return this.#sent;
  }

  /** The RTP SSRC of the producer. */
  get ssrc(): number {
    return this.#ssrc;
  }

  /** Stops sending; the sequence continues on resume(). No-op when paused or closed. */
  pause(): void {
    if (this.#paused || this.#closed) {
      return;
    }
    this.#paused = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Starts or resumes sending. After a pause the RTP timestamp jumps by the paused time (as
   * after silence suppression) and the packet carries the marker bit. No-op when playing or closed.
   */
  resume(): void {
    if (!this.#paused || this.#closed) {
      return;
    }
    this.#paused = false;
    this.#marker = true;
    const now = performance.now();
    if (this.#sent === 0) {
      this.#startAt = now;
      this.#k = 0;
    } else {
      this.#k = Math.max(this.#k, Math.ceil((now - this.#startAt) / this.#ptimeMs));
    }
    this.#tick();
  }

  /** Registers a callback for close (by close() or because the router closed). */
  onClose(fn: () => void): void {
    if (this.#closed) {
      fn();
    } else {
      this.#onClose.push(fn);
    }
  }

  /** Registers a callback for the end of a non-looping source. */
  onEnd(fn: () => void): void {
    this.#onEnd.push(fn);
  }

  /** Stops sending and closes the producer, the transport and the socket. Idempotent. */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.#paused = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.transport.closed) {
      this.transport.close();
    }
    try {
      this.#socket.close();
    } catch {
      // already closed after an error
    }
    for (const fn of this.#onClose.splice(0)) {
      fn();
    }
  }

  #tick(): void {
    this.#timer = undefined;
    if (this.#paused || this.#closed) {
      return;
    }
    const now = performance.now();
    let burst = 0;
    while (this.#startAt + this.#k * this.#ptimeMs <= now) {
      if (burst === MAX_BURST) {
        // a stall: skip what is still late so the audio stays on the wall clock
        this.#k = Math.floor((now - this.#startAt) / this.#ptimeMs) + 1;
        break;
      }
      if (!this.#sendOne()) {
        return;
      }
      burst++;
    }
    const delay = Math.max(0, this.#startAt + this.#k * this.#ptimeMs - performance.now());
    this.#timer = setTimeout(() => this.#tick(), delay);
  }

  /** Sends packet k; false when a non-looping source ended. */
  #sendOne(): boolean {
    const n = this.#samplesPerPacket;
    const audio = this.#audio;
    if (!this.#loop && this.#pos >= audio.length) {
      this.pause();
      this.#pos = 0;
      for (const fn of this.#onEnd) {
        fn();
      }

      return false;
    }
    const payload = Buffer.alloc(n, this.#silence);
    let filled = 0;
    while (filled < n) {
      if (this.#pos >= audio.length) {
        if (!this.#loop) {
          // the last packet is padded with silence
          payload.fill(this.#silence, filled);
          break;
        }
        this.#pos = 0;
      }
      const take = Math.min(n - filled, audio.length - this.#pos);
      audio.copy(payload, filled, this.#pos, this.#pos + take);
      filled += take;
      this.#pos += take;
    }
    const packet = buildRtpPacket({
      payloadType: this.#payloadType,
      sequenceNumber: this.#seq,
      timestamp: (this.#tsBase + this.#k * n) >>> 0,
      ssrc: this.#ssrc,
      marker: this.#marker,
      payload,
    });
    this.#marker = false;
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#k++;
    this.#sent++;
    this.#socket.send(packet, this.#target.port, this.#target.ip);

    return true;
  }
}
