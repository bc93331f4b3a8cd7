/**
 * Estimated MOS of one call leg with the ITU-T G.107 E-model, in the simplified form used for
 * VoIP monitoring: every parameter the gateway does not measure keeps its G.107 default, and
 * only delay, packet loss and the codec move the rating.
 *
 *   R = R0 − Id − Ie,eff + A       (G.107 §7.1, with Is folded into R0 and A = 0)
 *
 * - R0 = 93.2: G.107's rating with every parameter at its default value (G.107 states that the
 *   defaults give R = 93.2: Ro − Is, minus the default Id at T = 0). The default Id it contains
 *   (a fraction of a point) is counted again by the Id below; far below the model's accuracy.
 * - Id: the simplification of G.107's delay impairment for its default echo parameters by Cole
 *   and Rosenbluth, "Voice over IP performance monitoring", ACM SIGCOMM CCR 31(2), 2001:
 *     Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3), d = one-way mouth-to-ear delay in ms,
 *   H the unit step. It is not G.107's full Idte/Idle/Idd formula, which needs the echo
 *   parameters the gateway cannot measure.
 * - d = RTT/2 + jitter buffer + packetization + codec look-ahead, where the jitter buffer is
 *   estimated as 2 × the RFC 3550 interarrival jitter (an adaptive buffer typically holds about
 *   twice the jitter), packetization is the ptime (default 20 ms) and the look-ahead is the
 *   codec's algorithmic delay beyond one frame (see CODEC_PARAMS).
 * - Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)   (G.107 §7.4), Ppl in percent,
 *   BurstR = 1 (random loss: RTCP receiver reports give no burst statistics).
 *   Ie and Bpl per codec in CODEC_PARAMS (ITU-T G.113 Appendix I where the codec is listed).
 * - MOS from R per G.107 Annex B:
 *     R < 0: 1;  0 ≤ R ≤ 100: 1 + 0.035R + R(R − 60)(100 − R)·7·10⁻⁶;  R > 100: 4.5,
 *   and at least 1 (the polynomial is slightly below 1 for 0 < R < 6.5).
 *
 * Wideband codecs (G.722, Opus) are rated on the narrowband scale (R ≤ 93.2, MOS ≤ 4.41), not
 * on G.107.1's wideband scale (R up to 129): the trunk leg is usually G.711 and the agent leg
 * Opus, and one scale lets both legs share the low-MOS threshold and histogram buckets. A
 * wideband codec therefore gets Ie = 0 (it cannot be better than the narrowband ceiling on this
 * scale) and only its loss robustness and delay distinguish it. A clean wideband call rates the
 * same as a clean G.711 call, which understates wideband's advantage; the estimate is meant to
 * find degraded legs, not to compare codecs.
 */

/** Codecs the gateway negotiates (config `trunks.*.codecs`, src/media/codecs.ts). */
export type MosCodec = 'PCMU' | 'PCMA' | 'G722' | 'opus';

/** The E-model's per-codec inputs. */
export interface CodecParams {
  /** Equipment impairment factor Ie (narrowband R scale). */
  ie: number;
  /** Packet-loss robustness factor Bpl, with packet loss concealment at the receiver. */
  bpl: number;
  /** Packet-loss robustness factor Bpl without packet loss concealment. */
  bplNoPlc: number;
  /** Algorithmic delay beyond the frame itself (look-ahead, filter delay), in ms. */
  lookaheadMs: number;
}

/**
 * Per-codec values.
 *
 * - G.711 (PCMU, PCMA): ITU-T G.113 (11/2007) Appendix I: Ie = 0; Bpl = 25.1 with the packet
 *   loss concealment of G.711 Appendix I, Bpl = 4.3 without (random loss). The default assumes
 *   PLC, because the receivers of both legs conceal loss (libwebrtc's NetEq on the agent side,
 *   any current SBC or PBX on the trunk side). No look-ahead.
 * - G.722 (64 kbit/s): not in G.113 Appendix I (narrowband). Its wideband Ie,wb in G.113
 *   Appendix IV (13 on the 129-point scale) leaves the wideband R far above 93.2, so on the
 *   narrowband scale used here Ie = 0 (true for any Ie,wb below 129 − 93.2 = 35.8). Bpl: the G.711-with-PLC value 25.1 is assumed for G.722 with its
 *   Appendix III/IV concealment (an assumption, not a G.113 value); without PLC the G.711 value
 *   4.3. Look-ahead 3 ms: the QMF analysis and synthesis filters (24 taps each at 16 kHz).
 * - Opus: not in G.113. Ie = 0: at the bit rates WebRTC uses for speech (≥ 24 kbit/s wideband)
 *   Opus is at least as good as G.711 in listening tests, and the narrowband scale caps it there.
 *   Bpl = 25.1, the G.711-with-PLC value: Opus has a built-in PLC and the gateway offers in-band
 *   FEC (useinbandfec=1), so it is at least that robust; the value gives FEC no credit because
 *   the sender only adds FEC once it sees loss. Without PLC (not a real Opus decoder) 4.3.
 *   Look-ahead 6.5 ms: Opus's algorithmic delay with 20 ms frames is 26.5 ms (RFC 6716).
 */
export const CODEC_PARAMS: Readonly<Record<MosCodec, Readonly<CodecParams>>> = {
  PCMU: { ie: 0, bpl: 25.1, bplNoPlc: 4.3, lookaheadMs: 0 },
  PCMA: { ie: 0, bpl: 25.1, bplNoPlc: 4.3, lookaheadMs: 0 },
  G722: { ie: 0, bpl: 25.1, bplNoPlc: 4.3, lookaheadMs: 3 },
  opus: { ie: 0, bpl: 25.1, bplNoPlc: 4.3, lookaheadMs: 6.5 },
};

/** R with every G.107 parameter at its default (Ro − Is and the default Id, Ie = 0, A = 0). */
export const R0 = 93.2;

/** The knee of the Cole–Rosenbluth delay impairment, in ms one way. */
const DELAY_KNEE_MS = 177.3;

/** Inputs of estimateMos(). */
export interface MosInput {
  /** The leg's codec. */
  codec: MosCodec;
  /** Packet loss in percent (0–100) of the packets the receiver expected (RTCP fraction lost × 100). */
  lossPct: number;
  /** RFC 3550 interarrival jitter in ms. */
  jitterMs: number;
  /** Round-trip time in ms (from RTCP SR/RR). */
  rttMs: number;
  /** Audio per RTP packet (ptime) in ms; default 20. */
  packetizationMs?: number;
  /** Whether the receiver conceals lost packets (selects Bpl); default true. */
  plc?: boolean;
}

/** Result of estimateMos(). */
export interface MosEstimate {
  /** The transmission rating R (narrowband scale; not clamped, may be < 0 for a dreadful leg). */
  r: number;
  /** The estimated MOS-CQE, 1 to 4.5 (at most about 4.41 here, R0's MOS). */
  mos: number;
}

function check(name: string, v: number, max = Infinity): void {
  if (!Number.isFinite(v) || v < 0 || v > max) {
    throw new RangeError(`${name} must be a finite number from 0 to ${max}, got ${v}`);
  }
}

/** The one-way mouth-to-ear delay estimate d in ms (see the module comment). */
export function mouthToEarMs(input: Pick<MosInput, 'codec' | 'jitterMs' | 'rttMs' | 'packetizationMs'>): number {
  return input.rttMs / 2 + 2 * input.jitterMs + (input.packetizationMs ?? 20) + CODEC_PARAMS[input.codec].lookaheadMs;
}

/** The delay impairment Id for a one-way delay d in ms (Cole–Rosenbluth simplification of G.107). */
export function delayImpairment(dMs: number): number {
  return 0.024 * dMs + (dMs > DELAY_KNEE_MS ? 0.11 * (dMs - DELAY_KNEE_MS) : 0);
}

/** The effective equipment impairment Ie,eff (G.107 §7.4) for a loss in percent; BurstR 1 is random loss. */
export function effectiveEquipmentImpairment(ie: number, bpl: number, lossPct: number, burstR = 1): number {
  return ie + ((95 - ie) * lossPct) / (lossPct / burstR + bpl);
}

/** MOS-CQE from R, G.107 Annex B. */
export function mosFromR(r: number): number {
  if (r < 0) {
    return 1;
  }
  if (r > 100) {
    return 4.5;
  }

  // The polynomial dips slightly below 1 for 0 < R < 6.5; clamped to 1 there.
  return Math.max(1, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6);
}

/**
 * Estimates a leg's R and MOS with the simplified G.107 E-model (ITU-T G.107 §7 and Annex B,
 * codec values from ITU-T G.113 Appendix I; see the module comment for every choice). Units:
 * lossPct in percent, times in ms.
 * @throws RangeError for a negative or non-finite input, or a loss above 100 %
 */
export function estimateMos(input: MosInput): MosEstimate {
  const params = CODEC_PARAMS[input.codec];
  if (params === undefined) {
    throw new RangeError(`unknown codec ${String(input.codec)}`);
  }
  check('lossPct', input.lossPct, 100);
  check('jitterMs', input.jitterMs);
  check('rttMs', input.rttMs);
  check('packetizationMs', input.packetizationMs ?? 20);
  const id = delayImpairment(mouthToEarMs(input));
  const ieEff = effectiveEquipmentImpairment(params.ie, input.plc === false ? params.bplNoPlc : params.bpl, input.lossPct);
  const r = R0 - id - ieEff;

  return { r, mos: mosFromR(r) };
}
