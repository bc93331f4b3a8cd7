/**
 * RIFF/WAVE (PCM, format tag 1) reading and streaming writing.
 *
 * - {@link parseWav} reads a whole file's bytes: the `fmt ` and `data` chunks, skipping others
 *   (LIST, fact, …) and honouring the RIFF pad byte of odd-sized chunks.
 * - {@link WavWriter} streams 16-bit PCM frames to disk with a 44-byte header whose RIFF and data
 *   sizes follow the data written (updated at least once per second of audio, on flush() and on
 *   close()), so a call of any length never sits in memory and a process killed mid-recording
 *   leaves a file whose header covers nearly all of its audio.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';

/** What {@link parseWav} found. */
export interface WavInfo {
  /** 1 = PCM. */
  formatTag: number;
  channels: number;
  /** Samples per second per channel. */
  sampleRate: number;
  bitsPerSample: number;
  /** The data chunk's bytes (a view into the input). */
  data: Buffer;
}

/** Thrown for a file that is not a RIFF/WAVE with a fmt and a data chunk. */
export class WavFormatError extends Error {
  override readonly name = 'WavFormatError';
}

/**
 * Parses a RIFF/WAVE file.
 * @throws {WavFormatError} when it is not RIFF/WAVE or lacks a fmt or data chunk
 */
export function parseWav(buf: Buffer): WavInfo {
  if (buf.length < 12 || buf.toString('latin1', 0, 4) !== 'RIFF' || buf.toString('latin1', 8, 12) !== 'WAVE') {
    throw new WavFormatError('not a RIFF/WAVE file');
  }
  let at = 12;
  let fmt: Omit<WavInfo, 'data'> | undefined;
  let data: Buffer | undefined;
  while (at + 8 <= buf.length) {
    const id = buf.toString('latin1', at, at + 4);
    const size = buf.readUInt32LE(at + 4);
    const body = at + 8;
    // a data chunk whose size was never fixed (0 or past the end): take what is there
    const end = Math.min(buf.length, size === 0 && id === 'data' ? buf.length : body + size);
    if (id === 'fmt ') {
      if (end - body < 16) {
        throw new WavFormatError('fmt chunk shorter than 16 bytes');
      }
      fmt = { formatTag: buf.readUInt16LE(body), channels: buf.readUInt16LE(body + 2), sampleRate: buf.readUInt32LE(body + 4), bitsPerSample: buf.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      data = buf.subarray(body, end);
    }
    at = body + size + (size % 2);
  }
  if (!fmt) {
    throw new WavFormatError('no fmt chunk');
  }
  if (!data) {
    throw new WavFormatError('no data chunk');
  }

  return { ...fmt, data };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes of the header {@link WavWriter} writes. */
export const WAV_HEADER_BYTES = 44;

/** The canonical 44-byte PCM header for `dataBytes` of data. */
export function wavHeader(channels: number, sampleRate: number, bitsPerSample: number, dataBytes: number): Buffer {
  const h = Buffer.alloc(WAV_HEADER_BYTES);
  const blockAlign = (channels * bitsPerSample) / 8;
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(Math.min(0xffffffff, 36 + dataBytes), 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * blockAlign, 28);
  h.writeUInt16LE(blockAlign, 32);
  h.writeUInt16LE(bitsPerSample, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(Math.min(0xffffffff, dataBytes), 40);

  return h;
}

/**
 * A 16-bit PCM WAV file written as a stream. Writes are queued in order on one file handle;
 * close() fixes the RIFF and data sizes (RIFF sizes are 32-bit: past 4 GiB they stay at the
 * maximum, about 37 hours of 8 kHz stereo).
 */
export class WavWriter {
  readonly path: string;
  readonly channels: number;
  readonly sampleRate: number;
  #fh: FileHandle | undefined;
  #queue: Promise<void> = Promise.resolve();
  #dataBytes = 0;
  /** Data bytes the header on disk announces. */
  #headerBytes = 0;
  #error: Error | undefined;
  #closed: Promise<{ dataBytes: number; fileBytes: number }> | undefined;

  private constructor(path: string, channels: number, sampleRate: number, fh: FileHandle) {
    this.path = path;
    this.channels = channels;
    this.sampleRate = sampleRate;
    this.#fh = fh;
  }

  /**
   * Creates (or truncates) the file and writes a header with zero sizes. A symbolic link at
   * `path` is not followed (ELOOP): the bytes go to no other file.
   * @throws the fs error when the file cannot be created
   */
  static async create(path: string, channels: number, sampleRate: number): Promise<WavWriter> {
    const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o640);
    try {
      await fh.write(wavHeader(channels, sampleRate, 16, 0), 0, WAV_HEADER_BYTES, 0);
    } catch (err) {
      await fh.close();
      throw err;
    }

    return new WavWriter(path, channels, sampleRate, fh);
  }

  /** Bytes of PCM data queued so far. */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  /** The first write error, if any (later writes are dropped). */
  get error(): Error | undefined {
    return this.#error;
  }

  /**
   * Queues interleaved 16-bit frames (`samples.length` must be a multiple of `channels`). The
   * bytes are copied, so the caller may reuse its array.
   */
  write(samples: Int16Array): void {
    if (!this.#fh || this.#closed || this.#error || samples.length === 0) {
      return;
    }
    const bytes = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
    const copy = Buffer.allocUnsafe(bytes.length);
    if (LITTLE_ENDIAN) {
      bytes.copy(copy);
    } else {
      for (let i = 0; i < samples.length; i++) {
        copy.writeInt16LE(samples[i]!, i * 2);
      }
    }
    const position = WAV_HEADER_BYTES + this.#dataBytes;
    this.#dataBytes += copy.length;
    const fh = this.#fh;
    this.#queue = this.#queue.then(async () => {
      if (this.#error) {
        return;
      }
      try {
        await fh.write(copy, 0, copy.length, position);
        // keep the header's sizes at most a second of audio behind (a crash leaves a usable file)
        if (position + copy.length - WAV_HEADER_BYTES - this.#headerBytes >= this.sampleRate * this.channels * 2) {
          await this.#writeHeader(fh, position + copy.length - WAV_HEADER_BYTES);
        }
      } catch (err) {
        this.#error = err as Error;
      }
    });
  }

  async #writeHeader(fh: FileHandle, dataBytes: number): Promise<void> {
    await fh.write(wavHeader(this.channels, this.sampleRate, 16, dataBytes), 0, WAV_HEADER_BYTES, 0);
    this.#headerBytes = dataBytes;
  }

  /** Waits for the queued writes and brings the header's sizes up to date. */
  async flush(): Promise<void> {
    const upTo = this.#dataBytes; // what is queued now (later writes are not on disk yet then)
    this.#queue = this.#queue.then(async () => {
      const fh = this.#fh;
      if (!fh || this.#error || this.#headerBytes >= upTo) {
        return;
      }
      try {
        await this.#writeHeader(fh, upTo);
      } catch (err) {
        this.#error = err as Error;
      }
    });
    await this.#queue;
  }

  /**
   * Finishes the queued writes, writes the real sizes into the header and closes the file.
   * Idempotent (later calls return the same result).
   * @throws the first write error or the error of the header update
   */
  close(): Promise<{ dataBytes: number; fileBytes: number }> {
    this.#closed ??= (async () => {
      await this.#queue;
      const fh = this.#fh!;
      this.#fh = undefined;
      try {
        if (this.#error) {
          throw this.#error;
        }
        await this.#writeHeader(fh, this.#dataBytes);
      } finally {
        await fh.close();
      }

      return { dataBytes: this.#dataBytes, fileBytes: WAV_HEADER_BYTES + this.#dataBytes };
    })();

    return this.#closed;
  }
}
