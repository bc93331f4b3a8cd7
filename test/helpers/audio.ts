/**
 * Audio checks for media tests: the Goertzel power of one frequency, RMS energy, and a sine-tone
 * WAV writer for test sources.
 */
import { writeFile } from 'node:fs/promises';
import { wavHeader } from '../../src/media/wav.js';

/** Relative power of `hz` in `samples` (Goertzel), normalised by the sample count squared. */
export function goertzel(samples: ArrayLike<number>, hz: number, sampleRate: number): number {
  const k = (2 * Math.cos((2 * Math.PI * hz) / sampleRate));
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < samples.length; i++) {
    const s0 = samples[i]! + k * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - k * s1 * s2;

  return power / (samples.length * samples.length);
}

/** Root mean square of the samples. */
export function rms(samples: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    sum += samples[i]! * samples[i]!;
  }

  return samples.length === 0 ? 0 : Math.sqrt(sum / samples.length);
}

/** The frequency among `candidates` with the most Goertzel power. */
export function dominant(samples: ArrayLike<number>, candidates: readonly number[], sampleRate: number): number {
  let best = candidates[0]!;
  let bestPower = -1;
  for (const hz of candidates) {
    const p = goertzel(samples, hz, sampleRate);
    if (p > bestPower) {
      bestPower = p;
      best = hz;
    }
  }

  return best;
}

/** Writes a 16-bit PCM WAV of a sine tone (amplitude 0..1 of full scale). */
export async function writeToneWav(file: string, opts: { hz: number; seconds: number; sampleRate?: number; channels?: number; amplitude?: number }): Promise<void> {
  const rate = opts.sampleRate ?? 8000;
  const channels = opts.channels ?? 1;
  const n = Math.round(rate * opts.seconds);
  const data = Buffer.alloc(n * channels * 2);
  for (let i = 0; i < n; i++) {
    const v = Math.round((opts.amplitude ?? 0.3) * 32767 * Math.sin((2 * Math.PI * opts.hz * i) / rate));
    for (let c = 0; c < channels; c++) {
      data.writeInt16LE(v, (i * channels + c) * 2);
    }
  }
  await writeFile(file, Buffer.concat([wavHeader(channels, rate, 16, data.length), data]));
}
