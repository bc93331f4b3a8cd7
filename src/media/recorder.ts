/**
 * Records both directions of a call from its mediasoup router into a stereo WAV file (PCM 16-bit,
 * 8 kHz; left = caller / trunk, right = agent).
 *
 *   caller's producer ─→ consumer on PlainTransport ─ RTP ─→ Node UDP socket ─┐
 *                                                                             ├─ G.711 decode ─→ per-channel ring ─→ WavWriter
 *   agent's producer  ─→ consumer on PlainTransport ─ RTP ─→ Node UDP socket ─┘
 *   (127.0.0.1 on both ends; each socket is connected to its transport's port, so it takes
 *   datagrams from that transport only)
 *
 * Usage:
 *
 * ```ts
 * const rec = await CallRecorder.create({ router, codec: media.codec!, path: '/var/…/call.wav', logger });
 * await rec.setSource('caller', media.trunkProducer);
 * await rec.setSource('agent', media.agentProducer); // again with the new agent's producer after a transfer
 * const summary = rec.stop(); // { path, durationMs, bytes } at once; summary is final once rec.closed resolves
 * await rec.closed;
 * ```
 *
 * Timing: the file's sample k is wall-clock time start + k/8000 s (performance.now()). Each
 * channel places a packet by its RTP timestamp relative to the first packet of its stream, whose
 * position comes from the wall clock; a new SSRC, a timestamp more than {@link RESYNC_AHEAD_MS}
 * ahead of the wall clock, or {@link LATE_PACKETS_RESYNC} packets in a row that arrive too late
 * (timestamps that did not advance over a hold) place the stream on the wall clock again.
 * Samples are written {@link WRITE_DELAY_MS} behind the wall clock (a jitter allowance); what no
 * packet covered (loss, hold, silence suppression, no source yet) is written as silence, so the
 * file's length is the recording's wall-clock duration. stop() writes up to the stop time.
 *
 * Memory and work: two rings of {@link RING_MS} per channel and one decode buffer; per packet one
 * header parse and one G.711 table decode, nothing logged. The file is written as it goes.
 *
 * Codecs: PCMU and PCMA. G.722 and Opus: {@link RecorderCodecError} from create() (same decision
 * as the player, src/media/player.ts: no G.722/Opus codec dependency for now).
 */
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { type types as ms } from 'mediasoup';
import { type Logger } from '../log/logger.js';
import { type CallCodec } from '../signaling/protocol.js';
import { decodeG711, type G711Law, g711LawOf } from './g711.js';
import { rtpHeaderLength, rtpPaddingLength } from './rtp/rtp-packet.js';
import { WAV_HEADER_BYTES, WavWriter } from './wav.js';

/** The recorder's two channels: left (caller / trunk) and right (agent). */
export type RecorderChannel = 'caller' | 'agent';

/** Thrown by CallRecorder.create() for a codec it cannot decode (nothing is created). */
export class RecorderCodecError extends Error {
  override readonly name = 'RecorderCodecError';
  readonly code = 'RB_ERR_RECORDER_CODEC';
}

/** Samples are written this far behind the wall clock, ms. */
export const WRITE_DELAY_MS = 300;
/** A stream whose timestamps run further ahead of the wall clock is placed again, ms. */
export const RESYNC_AHEAD_MS = 1000;
/** This many wholly late packets in a row place the stream again. */
export const LATE_PACKETS_RESYNC = 3;
/** Ring per channel, ms (must exceed WRITE_DELAY_MS + RESYNC_AHEAD_MS + the write interval). */
export const RING_MS = 4000;
const WRITE_INTERVAL_MS = 100;
const RATE = 8000;
const RING = (RING_MS * RATE) / 1000;
/** Largest payload decoded per packet (120 ms); longer ones are cut. */
const MAX_PACKET_SAMPLES = 960;

/** Options of CallRecorder.create(). */
export interface CallRecorderOptions {
  router: ms.Router;
  /** The call's codec (both legs use it: no transcoding). */
  codec: CallCodec;
  /** The WAV file to create (its directory must exist). */
  path: string;
  logger: Logger;
  /** Called with the bytes of each write to disk (for a metric). */
  onWrite?: (bytes: number) => void;
  /**
   * performance.now() of the file's first sample, at most a few seconds back (default: now).
   * The owner passes the moment the recording was asked for (the answer), so that the time
   * spent creating the file and the transports is silence in the file, not a shorter file.
   */
  startAt?: number;
}

/** What a recording produced. */
export interface RecordingSummary {
  path: string;
  /** Audio length, ms (the wall-clock time from the start (startAt, else create()) to stop()). */
  durationMs: number;
  /** File size, bytes (header included). */
  bytes: number;
}

interface ChannelState {
  ring: Int16Array;
  transport?: ms.PlainTransport;
  consumer?: ms.Consumer;
  socket?: dgram.Socket;
  ssrc: number | undefined;
  /** RTP timestamp and file position (samples) of the stream's reference packet. */
  refTs: number;
  refPos: number;
  late: number;
  packets: number;
}

/** How far back CallRecorderOptions.startAt may place the file's start, ms. */
const MAX_START_BACKDATE_MS = 10_000;

/** A recording in progress. Create with CallRecorder.create(). */
export class CallRecorder {
  readonly path: string;
  readonly #router: ms.Router;
  readonly #law: G711Law;
  readonly #logger: Logger;
  readonly #writer: WavWriter;
  readonly #onWrite: ((bytes: number) => void) | undefined;
  readonly #startAt: number;
  readonly #channels: Record<RecorderChannel, ChannelState>;
  readonly #decoded = new Int16Array(MAX_PACKET_SAMPLES);
  readonly #rtpCaps: ms.RtpCapabilities;
  /** File position (samples per channel) written so far. */
  #written = 0;
  #timer: NodeJS.Timeout | undefined;
  /** The router's close stops the recording (removed at stop(): a stopped recorder is not kept alive by the router). */
  readonly #onRouterClose = (): void => {
    void this.close().catch(() => undefined);
  };
  #stopped: RecordingSummary | undefined;
  #closed: Promise<RecordingSummary> | undefined;
  readonly #onStop: ((s: RecordingSummary) => void)[] = [];
  readonly #sourceQueue: Record<RecorderChannel, Promise<void>> = { caller: Promise.resolve(), agent: Promise.resolve() };

  private constructor(opts: CallRecorderOptions, law: G711Law, cap: ms.RtpCodecCapability, writer: WavWriter) {
    this.path = opts.path;
    this.#router = opts.router;
    this.#law = law;
    this.#logger = opts.logger;
    this.#writer = writer;
    this.#onWrite = opts.onWrite;
    const now = performance.now();
    this.#startAt = opts.startAt !== undefined && opts.startAt <= now ? Math.max(opts.startAt, now - MAX_START_BACKDATE_MS) : now;
    this.#rtpCaps = { codecs: [{ ...cap, rtcpFeedback: [] }], headerExtensions: [] };
    const channel = (): ChannelState => ({ ring: new Int16Array(RING), ssrc: undefined, refTs: 0, refPos: 0, late: 0, packets: 0 });
    this.#channels = { caller: channel(), agent: channel() };
    this.#timer = setInterval(() => this.#write(this.#position() - (WRITE_DELAY_MS * RATE) / 1000), WRITE_INTERVAL_MS);
    opts.router.observer.once('close', this.#onRouterClose);
  }

  /**
   * Creates the file (header only) and starts the clock; channels are silent until setSource().
   * @throws {RecorderCodecError} for a codec other than PCMU/PCMA, or one the router lacks
   * @throws the fs error when the file cannot be created
   */
  static async create(opts: CallRecorderOptions): Promise<CallRecorder> {
    const law = g711LawOf(opts.codec.mimeType);
    if (!law) {
      throw new RecorderCodecError(`the recorder decodes PCMU and PCMA only, not ${opts.codec.mimeType}`);
    }
    const cap = opts.router.rtpCapabilities.codecs?.find((c) => c.mimeType.toLowerCase() === opts.codec.mimeType.toLowerCase());
    if (!cap) {
      throw new RecorderCodecError(`the router has no ${opts.codec.mimeType}`);
    }
    const writer = await WavWriter.create(opts.path, 2, RATE);

    return new CallRecorder(opts, law, cap, writer);
  }

  /** Whether stop() ran (or the router closed). */
  get stopped(): boolean {
    return this.#stopped !== undefined;
  }

  /** RTP packets received per channel (for tests and logs at the end). */
  get packets(): Record<RecorderChannel, number> {
    return { caller: this.#channels.caller.packets, agent: this.#channels.agent.packets };
  }

  /** Registers a callback for the end (stop(), close() or the router's close), with the summary. */
  onStop(fn: (s: RecordingSummary) => void): void {
    if (this.#stopped) {
      fn(this.#stopped);
    } else {
      this.#onStop.push(fn);
    }
  }

  /**
   * Records `producer` on a channel, replacing the channel's previous source (transfers re-bridge
   * the call to another agent's producer); undefined leaves the channel silent. Calls for one
   * channel run one after the other, in call order.
   * @throws mediasoup's error when the producer cannot be consumed (closed, other codec)
   */
  setSource(channel: RecorderChannel, producer: ms.Producer | undefined): Promise<void> {
    const run = this.#sourceQueue[channel].then(() => this.#setSource(channel, producer));
    this.#sourceQueue[channel] = run.catch(() => undefined);

    return run;
  }

  async #setSource(channel: RecorderChannel, producer: ms.Producer | undefined): Promise<void> {
    const ch = this.#channels[channel];
    if (this.#stopped) {
      return;
    }
    if (ch.consumer && !ch.consumer.closed && producer && ch.consumer.producerId === producer.id) {
      return;
    }
    ch.consumer?.close();
    ch.consumer = undefined;
    if (!producer) {
      return;
    }
    if (!ch.transport) {
      const socket = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, '127.0.0.1', () => {
          socket.off('error', reject);
          resolve();
        });
      });
      socket.on('message', (msg) => this.#onRtp(ch, msg));
      socket.on('error', (err) => this.#logger.warn({ err, channel }, 'recorder socket error'));
      ch.socket = socket;
      try {
        ch.transport = await this.#router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false, appData: { role: 'recorder' } });
        await ch.transport.connect({ ip: '127.0.0.1', port: socket.address().port });
        // a connected socket takes datagrams from that transport only: another local process
        // sending to the port cannot put audio into the recording
        const from = ch.transport.tuple.localPort;
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.connect(from, '127.0.0.1', () => {
            socket.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        ch.transport?.close();
        ch.transport = undefined;
        closeSocket(ch);
        throw err;
      }
    }
    if (this.#stopped) {
      // stop() ran during the awaits: it closed what existed then
      ch.transport.close();
      ch.transport = undefined;
      closeSocket(ch);

      return;
    }
    ch.consumer = await ch.transport.consume({ producerId: producer.id, rtpCapabilities: this.#rtpCaps, appData: { role: 'recorder', channel } });
    // a new consumer has its own SSRC: the stream is placed on the wall clock again
    ch.ssrc = undefined;
  }

  /** Current file position from the wall clock, samples. */
  #position(): number {
    return Math.floor(((performance.now() - this.#startAt) * RATE) / 1000);
  }

  #onRtp(ch: ChannelState, msg: Buffer): void {
    if (this.#stopped) {
      return;
    }
    const hl = rtpHeaderLength(msg);
    if (hl < 0) {
      return;
    }
    const pt = msg[1]! & 0x7f;
    if (pt >= 64 && pt <= 95) {
      return; // RTCP on the muxed port (RFC 5761 §4)
    }
    const codecPt = this.#rtpCaps.codecs![0]!.preferredPayloadType;
    if (codecPt !== undefined && pt !== codecPt) {
      return; // telephone-event, CN
    }
    const ssrc = msg.readUInt32BE(8);
    const ts = msg.readUInt32BE(4);
    const n = decodeG711(this.#law, msg.subarray(hl, msg.length - rtpPaddingLength(msg)), this.#decoded);
    if (n === 0) {
      return;
    }
    ch.packets++;
    const wall = this.#position();
    let pos = ch.refPos + ((ts - ch.refTs) | 0);
    const late = pos + n <= this.#written;
    if (ch.ssrc !== ssrc || pos > wall + (RESYNC_AHEAD_MS * RATE) / 1000 || (late && ++ch.late >= LATE_PACKETS_RESYNC)) {
      ch.ssrc = ssrc;
      ch.refTs = ts;
      ch.refPos = Math.max(wall - n, this.#written);
      pos = ch.refPos;
      ch.late = 0;
    } else if (late) {
      return;
    } else {
      ch.late = 0;
    }
    // clip to what is not written yet and what the ring holds
    let from = 0;
    if (pos < this.#written) {
      from = this.#written - pos;
    }
    const end = Math.min(n, this.#written + RING - pos);
    const ring = ch.ring;
    for (let i = from; i < end; i++) {
      ring[(pos + i) % RING] = this.#decoded[i]!;
    }
  }

  /** Writes both channels up to file position `to` (interleaved), zeroing the ring behind. */
  #write(to: number): void {
    if (to <= this.#written) {
      return;
    }
    const count = to - this.#written;
    const frames = new Int16Array(2 * count);
    const left = this.#channels.caller.ring;
    const right = this.#channels.agent.ring;
    // past RING samples (a long stall) the rest is silence: the rings hold no more
    const fromRing = Math.min(count, RING);
    for (let i = 0; i < fromRing; i++) {
      const at = (this.#written + i) % RING;
      frames[2 * i] = left[at]!;
      frames[2 * i + 1] = right[at]!;
      left[at] = 0;
      right[at] = 0;
    }
    this.#written = to;
    this.#writer.write(frames);
    this.#onWrite?.(frames.byteLength);
  }

  /**
   * Stops recording now: writes the audio up to this moment and closes the consumers, transports
   * and sockets. Returns the final summary at once (the bytes still reach the disk until
   * {@link closed} resolves). Idempotent.
   */
  stop(): RecordingSummary {
    if (this.#stopped) {
      return this.#stopped;
    }
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#router.observer.off('close', this.#onRouterClose);
    this.#write(this.#position());
    this.#stopped = { path: this.path, durationMs: Math.round((this.#written * 1000) / RATE), bytes: WAV_HEADER_BYTES + this.#written * 4 };
    for (const ch of Object.values(this.#channels)) {
      ch.consumer?.close();
      ch.transport?.close();
      closeSocket(ch);
    }
    this.#closed = this.#writer.close().then(() => this.#stopped!);
    this.#closed.catch((err: unknown) => this.#logger.warn({ err }, 'recording file could not be finished'));
    for (const fn of this.#onStop.splice(0)) {
      fn(this.#stopped);
    }

    return this.#stopped;
  }

  /**
   * Resolves with the summary when the file is complete on disk (after stop()).
   * @throws the write error when the file could not be written
   */
  get closed(): Promise<RecordingSummary> {
    return this.#closed ?? Promise.reject(new Error('the recording is not stopped'));
  }

  /** stop() and wait for the file. */
  async close(): Promise<RecordingSummary> {
    this.stop();

    return this.closed;
  }
}

/** Closes a channel's socket once (stop() and a late setSource() may both try). */
function closeSocket(ch: ChannelState): void {
  const socket = ch.socket;
  ch.socket = undefined;
  try {
    socket?.close();
  } catch {
    // closed already
  }
}
