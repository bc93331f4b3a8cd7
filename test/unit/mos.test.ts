import { describe, expect, it } from 'vitest';
import { CODEC_PARAMS, delayImpairment, estimateMos, mosFromR, type MosCodec } from '../../src/metrics/mos.js';

// Hand-computed expectations (R0 = 93.2, Id = 0.024d + 0.11(d − 177.3)H(d − 177.3),
// Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl + Bpl), MOS = 1 + 0.035R + R(R − 60)(100 − R)·7e-6).
describe('estimateMos()', () => {
  it('rates a clean G.711 leg with 20 ms RTT at MOS ≈ 4.39', () => {
    // d = 20/2 + 2·0 + 20 (ptime) + 0 (look-ahead) = 30 ms; Id = 0.72; Ie,eff = 0
    // R = 93.2 − 0.72 = 92.48; MOS = 1 + 3.2368 + 92.48·32.48·7.52·7e-6 (0.15812) = 4.3949
    for (const codec of ['PCMU', 'PCMA'] as const) {
      const { r, mos } = estimateMos({ codec, lossPct: 0, jitterMs: 0, rttMs: 20 });
      expect(r).toBeCloseTo(92.48, 6);
      expect(mos).toBeCloseTo(4.3949, 3);
    }
  });

  it('lowers the rating with 5 % random loss (G.711 with PLC, Bpl 25.1)', () => {
    // Ie,eff = 95·5/(5 + 25.1) = 15.7807; R = 92.48 − 15.7807 = 76.6993; MOS = 3.8934
    const { r, mos } = estimateMos({ codec: 'PCMU', lossPct: 5, jitterMs: 0, rttMs: 20 });
    expect(r).toBeCloseTo(76.6993, 3);
    expect(mos).toBeCloseTo(3.8934, 3);
  });

  it('uses Bpl 4.3 for G.711 without PLC', () => {
    // Ie,eff = 95·5/(5 + 4.3) = 51.0753; R = 92.48 − 51.0753 = 41.4047; MOS = 2.1334
    const { r, mos } = estimateMos({ codec: 'PCMA', lossPct: 5, jitterMs: 0, rttMs: 20, plc: false });
    expect(r).toBeCloseTo(41.4047, 3);
    expect(mos).toBeCloseTo(2.1334, 3);
  });

  it('counts jitter buffer and the delay beyond the 177.3 ms knee', () => {
    // d = 400/2 + 2·10 + 20 = 240 ms; Id = 5.76 + 0.11·62.7 = 12.657; R = 80.543; MOS = 4.0444
    const { r, mos } = estimateMos({ codec: 'PCMU', lossPct: 0, jitterMs: 10, rttMs: 400 });
    expect(r).toBeCloseTo(80.543, 3);
    expect(mos).toBeCloseTo(4.0444, 3);
  });

  it('adds the codec look-ahead and the packetization to the delay', () => {
    // Opus: d = 10 + 20 + 6.5 = 36.5 ms; Id = 0.876; R = 92.324
    expect(estimateMos({ codec: 'opus', lossPct: 0, jitterMs: 0, rttMs: 20 }).r).toBeCloseTo(92.324, 6);
    // G.711 at 40 ms ptime: d = 10 + 40 = 50 ms; Id = 1.2; R = 92.0
    expect(estimateMos({ codec: 'PCMU', lossPct: 0, jitterMs: 0, rttMs: 20, packetizationMs: 40 }).r).toBeCloseTo(92, 6);
  });

  it('is monotonic: more loss, jitter or RTT never raises the MOS', () => {
    for (const codec of Object.keys(CODEC_PARAMS) as MosCodec[]) {
      let prev = Infinity;
      for (let loss = 0; loss <= 100; loss += 0.5) {
        const { mos } = estimateMos({ codec, lossPct: loss, jitterMs: 5, rttMs: 60 });
        expect(mos, `${codec} loss ${loss}`).toBeLessThanOrEqual(prev);
        prev = mos;
      }
      prev = Infinity;
      for (let rtt = 0; rtt <= 2000; rtt += 10) {
        const { mos } = estimateMos({ codec, lossPct: 1, jitterMs: 5, rttMs: rtt });
        expect(mos, `${codec} rtt ${rtt}`).toBeLessThanOrEqual(prev);
        prev = mos;
      }
      prev = Infinity;
      for (let jitter = 0; jitter <= 500; jitter += 5) {
        const { mos } = estimateMos({ codec, lossPct: 1, jitterMs: jitter, rttMs: 60 });
        expect(mos, `${codec} jitter ${jitter}`).toBeLessThanOrEqual(prev);
        prev = mos;
      }
    }
    // strictly lower across the clearly distinct points
    const at = (lossPct: number, rttMs: number) => estimateMos({ codec: 'PCMU', lossPct, jitterMs: 0, rttMs }).mos;
    expect(at(1, 20)).toBeLessThan(at(0, 20));
    expect(at(0, 300)).toBeLessThan(at(0, 20));
  });

  it('stays within 1..4.5 for any input, down to 1 for a dreadful leg', () => {
    for (const codec of Object.keys(CODEC_PARAMS) as MosCodec[]) {
      for (const lossPct of [0, 3, 20, 100]) {
        for (const rttMs of [0, 150, 800, 5000]) {
          for (const plc of [true, false]) {
            const { mos } = estimateMos({ codec, lossPct, jitterMs: 30, rttMs, plc });
            expect(mos).toBeGreaterThanOrEqual(1);
            expect(mos).toBeLessThanOrEqual(4.5);
          }
        }
      }
    }
    const worst = estimateMos({ codec: 'PCMU', lossPct: 100, jitterMs: 200, rttMs: 5000 });
    expect(worst.r).toBeLessThan(0);
    expect(worst.mos).toBe(1);
  });

  it('rates wideband codecs on the narrowband scale: a clean leg tops out at R0 = 93.2', () => {
    // zero delay is not reachable (ptime), so all are below R0's MOS 4.4093
    for (const codec of ['G722', 'opus'] as const) {
      const { r, mos } = estimateMos({ codec, lossPct: 0, jitterMs: 0, rttMs: 0 });
      expect(r).toBeLessThan(93.2);
      expect(mos).toBeLessThan(4.41);
    }
  });

  it('rejects negative, non-finite and out-of-range inputs', () => {
    expect(() => estimateMos({ codec: 'PCMU', lossPct: -1, jitterMs: 0, rttMs: 0 })).toThrow(RangeError);
    expect(() => estimateMos({ codec: 'PCMU', lossPct: 101, jitterMs: 0, rttMs: 0 })).toThrow(RangeError);
    expect(() => estimateMos({ codec: 'PCMU', lossPct: 0, jitterMs: Number.NaN, rttMs: 0 })).toThrow(RangeError);
    expect(() => estimateMos({ codec: 'PCMU', lossPct: 0, jitterMs: 0, rttMs: Infinity })).toThrow(RangeError);
    expect(() => estimateMos({ codec: 'G729' as MosCodec, lossPct: 0, jitterMs: 0, rttMs: 0 })).toThrow(RangeError);
  });
});

describe('mosFromR() (G.107 Annex B)', () => {
  it('maps the defaults R = 93.2 to 4.41 and clamps outside 0..100', () => {
    expect(mosFromR(93.2)).toBeCloseTo(4.4093, 4);
    expect(mosFromR(0)).toBe(1);
    expect(mosFromR(-10)).toBe(1);
    // the polynomial is 0.9983 at R = 3: clamped
    expect(mosFromR(3)).toBe(1);
    expect(mosFromR(100)).toBeCloseTo(4.5, 10);
    expect(mosFromR(120)).toBe(4.5);
    // R = 50: 1 + 1.75 + 50·(−10)·50·7e-6 = 2.575
    expect(mosFromR(50)).toBeCloseTo(2.575, 10);
  });
});

describe('delayImpairment()', () => {
  it('has slope 0.024 below the 177.3 ms knee and 0.134 above it', () => {
    expect(delayImpairment(100)).toBeCloseTo(2.4, 10);
    expect(delayImpairment(177.3)).toBeCloseTo(4.2552, 10);
    expect(delayImpairment(277.3) - delayImpairment(177.3)).toBeCloseTo(13.4, 10);
  });
});
