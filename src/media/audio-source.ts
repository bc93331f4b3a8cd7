/**
 * Audio sources for the player (src/media/player.ts): 16-bit mono PCM at 8 kHz, from a WAV file
 * (decoded once and cached per absolute path) or a built-in generated default.
 *
 * Decision: only WAV PCM 16-bit mono 8000 Hz is accepted. Other rates, widths or channel counts
 * are refused with an {@link AudioSourceError} naming the configuration key, rather than
 * resampled: a telephony prompt should be prepared at 8 kHz once (e.g.
 * `ffmpeg -i in.mp3 -ar 8000 -ac 1 -c:a pcm_s16le out.wav`) instead of being filtered at every
 * start with a resampler whose quality we would have to own.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseWav, type WavFormatError } from './wav.js';

/** The sample rate of every source (the G.711 clock). */
export const SOURCE_SAMPLE_RATE = 8000;

/** Audio to play: mono 16-bit samples at {@link SOURCE_SAMPLE_RATE}. */
export interface AudioSource {
  /** `default` or the file's absolute path (for logs; not personal data). */
  readonly name: string;
  readonly sampleRate: typeof SOURCE_SAMPLE_RATE;
  readonly samples: Int16Array;
}

/** Thrown for an audio file that cannot be used; `key` is the configuration key that named it. */
export class AudioSourceError extends Error {
  override readonly name = 'AudioSourceError';
  readonly code = 'RB_ERR_AUDIO_SOURCE';
  readonly key: string;

  constructor(key: string, message: string, options?: ErrorOptions) {
    super(`${key}: ${message}`, options);
    this.key = key;
  }
}

const cache = new Map<string, Promise<AudioSource>>();

/**
 * Loads a WAV file as a source, once per absolute path (later calls share the decoded samples;
 * a failed load is not cached, so a fixed file is picked up on the next call).
 * @param configKey the configuration key that named the file, for the error message
 * @throws {AudioSourceError} when the file is missing, not WAV, or not PCM 16-bit mono 8000 Hz
 */
export function loadWavSource(file: string, configKey = 'audio file'): Promise<AudioSource> {
  const abs = path.resolve(file);
  let p = cache.get(abs);
  if (!p) {
    p = decode(abs, configKey);
    cache.set(abs, p);
    p.catch(() => cache.delete(abs));
  }

  return p;
}

async function decode(abs: string, key: string): Promise<AudioSource> {
  let buf: Buffer;
  try {
    buf = await readFile(abs);
  } catch (err) {
    throw new AudioSourceError(key, `cannot read ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  let wav;
  try {
    wav = parseWav(buf);
  } catch (err) {
    throw new AudioSourceError(key, `${abs} is not a WAV file (${(err as WavFormatError).message})`, { cause: err });
  }
  if (wav.formatTag !== 1 || wav.bitsPerSample !== 16 || wav.channels !== 1 || wav.sampleRate !== SOURCE_SAMPLE_RATE) {
    throw new AudioSourceError(
      key,
      `${abs} must be PCM 16-bit mono 8000 Hz, not format ${wav.formatTag} ${wav.bitsPerSample}-bit ${wav.channels} channel(s) ${wav.sampleRate} Hz (convert it: ffmpeg -i in -ar 8000 -ac 1 -c:a pcm_s16le out.wav)`,
    );
  }
  const n = Math.floor(wav.data.length / 2);
  if (n === 0) {
    throw new AudioSourceError(key, `${abs} has no audio`);
  }
  const samples = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    samples[i] = wav.data.readInt16LE(i * 2);
  }

  return { name: abs, sampleRate: SOURCE_SAMPLE_RATE, samples };
}

let defaultSourceCache: AudioSource | undefined;

/**
 * The built-in source when no file is configured: a soft two-note chime (440 Hz then 660 Hz,
 * 500 ms each with 10 ms fades, at −18 dBFS) followed by silence, 4 s per loop.
 */
export function defaultAudioSource(): AudioSource {
  if (defaultSourceCache) {
    return defaultSourceCache;
  }
  const rate = SOURCE_SAMPLE_RATE;
  const samples = new Int16Array(4 * rate);
  const amplitude = 32767 * 10 ** (-18 / 20);
  const note = (startS: number, hz: number): void => {
    const len = rate / 2;
    const fade = rate / 100;
    for (let i = 0; i < len; i++) {
      const env = Math.min(1, i / fade, (len - 1 - i) / fade);
      samples[Math.round(startS * rate) + i] = Math.round(amplitude * env * Math.sin((2 * Math.PI * hz * i) / rate));
    }
  };
  note(0, 440);
  note(0.75, 660);
  defaultSourceCache = { name: 'default', sampleRate: rate, samples };

  return defaultSourceCache;
}
