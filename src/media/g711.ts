/**
 * G.711 µ-law (PCMU) and A-law (PCMA) per ITU-T G.711 (1988) tables, between 16-bit linear PCM
 * samples and 8-bit codewords (one byte per sample at 8 kHz, RFC 3551 §4.5.14).
 *
 * The encoders follow the reference algorithm (segment search, 14-bit µ-law with bias 0x84,
 * 13-bit A-law, even-bit inversion 0x55 for A-law, all bits inverted for µ-law). Decoding uses
 * 256-entry tables built once at load.
 */

/** The G.711 variants by their RTP encoding names. */
export type G711Law = 'PCMU' | 'PCMA';

const MULAW_BIAS = 0x84;
const MULAW_CLIP = 32635;

/** One 16-bit sample (−32768…32767) as a µ-law codeword. */
export function linearToMulaw(sample: number): number {
  let s = sample | 0;
  const sign = s < 0 ? 0x80 : 0;
  if (s < 0) {
    s = -s;
  }
  if (s > MULAW_CLIP) {
    s = MULAW_CLIP;
  }
  s += MULAW_BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) {
    exponent--;
  }
  const mantissa = (s >> (exponent + 3)) & 0x0f;

  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

/** One µ-law codeword as a 16-bit sample. */
export function mulawToLinear(code: number): number {
  const u = ~code & 0xff;
  const exponent = (u >> 4) & 0x07;
  const mantissa = u & 0x0f;
  const magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;

  // 0 - m, not -m: negative zero (0x7f) decodes to +0
  return u & 0x80 ? 0 - magnitude : magnitude;
}

/** One 16-bit sample (−32768…32767) as an A-law codeword. */
export function linearToAlaw(sample: number): number {
  let s = sample | 0;
  let sign: number;
  if (s >= 0) {
    sign = 0x80;
  } else {
    sign = 0;
    s = -s - 1;
  }
  if (s > 32767) {
    s = 32767;
  }
  let code: number;
  if (s < 256) {
    code = s >> 4;
  } else {
    let exponent = 7;
    for (let mask = 0x4000; (s & mask) === 0 && exponent > 1; mask >>= 1) {
      exponent--;
    }
    code = (exponent << 4) | ((s >> (exponent + 3)) & 0x0f);
  }

  return (code | sign) ^ 0x55;
}

/** One A-law codeword as a 16-bit sample. */
export function alawToLinear(code: number): number {
  const a = (code ^ 0x55) & 0xff;
  const exponent = (a >> 4) & 0x07;
  const mantissa = a & 0x0f;
  let magnitude = exponent === 0 ? (mantissa << 4) + 8 : ((mantissa << 4) + 0x108) << (exponent - 1);
  if (magnitude > 32767) {
    magnitude = 32767;
  }

  return a & 0x80 ? magnitude : -magnitude;
}

const MULAW_TABLE = Int16Array.from({ length: 256 }, (_, i) => mulawToLinear(i));
const ALAW_TABLE = Int16Array.from({ length: 256 }, (_, i) => alawToLinear(i));

/**
 * Decodes G.711 codewords into `out` (one sample per byte) from `out[offset]`; returns the number
 * of samples written (at most out.length − offset).
 */
export function decodeG711(law: G711Law, payload: Uint8Array, out: Int16Array, offset = 0): number {
  const table = law === 'PCMU' ? MULAW_TABLE : ALAW_TABLE;
  const n = Math.min(payload.length, out.length - offset);
  for (let i = 0; i < n; i++) {
    out[offset + i] = table[payload[i]!]!;
  }

  return n;
}

/** Encodes 16-bit samples as G.711 codewords (one byte per sample). */
export function encodeG711(law: G711Law, samples: Int16Array): Buffer {
  const out = Buffer.alloc(samples.length);
  const enc = law === 'PCMU' ? linearToMulaw : linearToAlaw;
  for (let i = 0; i < samples.length; i++) {
    out[i] = enc(samples[i]!);
  }

  return out;
}

/** The G.711 law of a mediasoup/RTP MIME type (`audio/PCMU`, `audio/pcma`), or undefined for any other codec. */
export function g711LawOf(mimeType: string): G711Law | undefined {
  const m = mimeType.toLowerCase();

  return m === 'audio/pcmu' ? 'PCMU' : m === 'audio/pcma' ? 'PCMA' : undefined;
}
