/**
 * Call quality per leg: every `intervalMs` the mediasoup stats of a call's four streams are read
 * (trunk → gateway: the trunk producer, with the loss the RTP relay counts from the trunk's own
 * sequence numbers (RFC 3550 A.3); gateway → trunk: the trunk consumer, from the trunk's RTCP
 * receiver reports; agent → gateway: the agent producer; gateway → agent: the agent consumer, from
 * the agent's receiver reports), turned into loss (% of the packets expected in the interval),
 * jitter (RFC 3550, ms), RTT (ms) and an estimated MOS (ITU-T G.107 E-model, src/metrics/mos.ts),
 * and exported as histograms by leg (trunk, agent) and direction (inbound: toward the gateway,
 * outbound: from it). At the end of the call a summary goes into the call record, and a call whose
 * MOS fell below `lowMosThreshold` is counted.
 *
 * An outbound stream is sampled only once the far end has sent a receiver report (an RTT exists):
 * before that its loss is unknown, not zero. mediasoup's send-side stats carry no jitter, so an
 * outbound sample has loss and RTT but no jitter (its MOS counts jitter as 0). RTT is a property of
 * the path: an inbound stream's MOS uses its leg's RTT from the outbound stream's reports (mediasoup
 * measures receive-side RTT only from RTCP XR, which peers rarely send).
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { estimateMos, type MosCodec } from '../metrics/mos.js';

/** One stream's sample. */
export interface LegSample {
  leg: 'trunk' | 'agent';
  direction: 'inbound' | 'outbound';
  lossPct: number;
  /** Undefined where mediasoup does not measure it (the send side: its stats carry no jitter). */
  jitterMs: number | undefined;
  /** The leg's RTT from RTCP (0 before the far end's first receiver report). */
  rttMs: number;
  mos: number;
}

/** The quality summary of a call, as the call record stores it (numbers rounded; absent when never sampled). */
export interface QualitySummary {
  /** The worst leg's mean MOS. */
  mos: number;
  mosTrunkIn?: number;
  mosTrunkOut?: number;
  mosAgentIn?: number;
  mosAgentOut?: number;
  lossPctMax: number;
  jitterMsMax: number;
  rttMsMax: number;
}

/** The quality metrics of one gateway process. */
export class QualityMetrics {
  readonly #mos: Histogram<'leg' | 'direction'>;
  readonly #jitter: Histogram<'leg' | 'direction'>;
  readonly #loss: Histogram<'leg' | 'direction'>;
  readonly #rtt: Histogram<'leg' | 'direction'>;
  readonly #lowMos: Counter;
  /** MOS under which a call counts as low quality. */
  readonly lowMosThreshold: number;

  constructor(registry: Registry, prefix: string, lowMosThreshold: number) {
    const registers = [registry];
    const labelNames = ['leg', 'direction'] as const;
    this.lowMosThreshold = lowMosThreshold;
    this.#mos = new Histogram({ name: `${prefix}leg_mos`, help: 'Estimated MOS (G.107 E-model) of call legs, per sampling interval.', labelNames, buckets: [1.5, 2, 2.5, 3, 3.25, 3.5, 3.75, 4, 4.1, 4.2, 4.3, 4.35, 4.4, 4.45], registers });
    this.#jitter = new Histogram({ name: `${prefix}leg_jitter_seconds`, help: 'RFC 3550 interarrival jitter of call legs, per sampling interval.', labelNames, buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2], registers });
    this.#loss = new Histogram({ name: `${prefix}leg_packet_loss_ratio`, help: 'Share of the packets expected in a sampling interval that were lost, per call leg.', labelNames, buckets: [0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5], registers });
    this.#rtt = new Histogram({ name: `${prefix}leg_rtt_seconds`, help: 'Round-trip time of call legs from RTCP, per sampling interval.', labelNames, buckets: [0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8, 1.5], registers });
    this.#lowMos = new Counter({ name: `${prefix}calls_low_mos_total`, help: 'Calls whose MOS (worst leg, mean over the call) fell below metrics.lowMosThreshold.', registers });
  }

  /** Records one stream's sample. */
  observe(s: LegSample): void {
    const labels = { leg: s.leg, direction: s.direction };
    this.#mos.observe(labels, s.mos);
    if (s.jitterMs !== undefined) {
      this.#jitter.observe(labels, s.jitterMs / 1000);
    }
    this.#loss.observe(labels, s.lossPct / 100);
    if (s.rttMs > 0) {
      this.#rtt.observe(labels, s.rttMs / 1000);
    }
  }

  /** A call ended with this summary (on the node that records it). */
  callEnded(summary: QualitySummary | undefined): void {
    if (summary && summary.mos < this.lowMosThreshold) {
      this.#lowMos.inc();
    }
  }
}

/** The mediasoup objects a call's streams come from (CallMedia's fields). */
export interface QualitySources {
  /** The RTP relay facing the trunk: its RFC 3550 receive counts give the trunk leg's inbound loss. */
  relay?: { stats: { trunkReceive: { received: number; expected: number; jitterMs: number } } };
  trunkProducer?: { getStats(): Promise<unknown[]> };
  trunkConsumer?: { getStats(): Promise<unknown[]> };
  agentProducer?: { getStats(): Promise<unknown[]> };
  agentConsumer?: { getStats(): Promise<unknown[]> };
}

interface Cumulative {
  packets: number;
  lost: number;
}

const STREAMS = [
  { key: 'trunkProducer', leg: 'trunk', direction: 'inbound' },
  { key: 'trunkConsumer', leg: 'trunk', direction: 'outbound' },
  { key: 'agentProducer', leg: 'agent', direction: 'inbound' },
  { key: 'agentConsumer', leg: 'agent', direction: 'outbound' },
] as const;

const round = (n: number): number => Math.round(n * 100) / 100;

/** Running aggregates of one stream over the call. */
interface StreamAgg {
  samples: number;
  mosSum: number;
  lossMax: number;
  jitterMax: number;
  rttMax: number;
}

/** Samples one call's streams until stop(). */
export class CallQualitySampler {
  readonly #sources: () => QualitySources | undefined;
  readonly #codec: () => { name: string; clockRate: number } | undefined;
  readonly #metrics: QualityMetrics | undefined;
  readonly #onError: (err: unknown) => void;
  readonly #timer: NodeJS.Timeout;
  readonly #prev = new Map<string, Cumulative>();
  readonly #agg = new Map<string, StreamAgg>();
  #running = false;

  /**
   * @param sources the call's mediasoup objects (read at every tick: they appear as the call sets up)
   * @param codec the negotiated codec (name as mediasoup writes it without "audio/", RTP clock rate in Hz)
   * @param intervalMs sampling interval, ms
   * @param onError told of a failed sample (logged by the caller); sampling goes on
   */
  constructor(sources: () => QualitySources | undefined, codec: () => { name: string; clockRate: number } | undefined, metrics: QualityMetrics | undefined, intervalMs: number, onError: (err: unknown) => void = () => undefined) {
    this.#sources = sources;
    this.#codec = codec;
    this.#metrics = metrics;
    this.#onError = onError;
    this.#timer = setInterval(() => void this.sample(), intervalMs);
    this.#timer.unref();
  }

  /** Takes one sample of every stream now (also what the timer does). Never throws. */
  async sample(): Promise<void> {
    if (this.#running) {
      return;
    }
    this.#running = true;
    try {
      await this.#sample();
    } catch (err) {
      this.#onError(err);
    } finally {
      this.#running = false;
    }
  }

  async #sample(): Promise<void> {
    const src = this.#sources();
    const codec = this.#codec();
    if (!src || !codec) {
      return;
    }
    const mosCodec: MosCodec | undefined = ({ PCMU: 'PCMU', PCMA: 'PCMA', G722: 'G722', OPUS: 'opus' } as const)[codec.name.toUpperCase() as 'PCMU' | 'PCMA' | 'G722' | 'OPUS'];
    if (!mosCodec) {
      return;
    }
    const reports = new Map<string, Record<string, unknown>>();
    for (const s of STREAMS) {
      const o = src[s.key];
      if (!o) {
        continue;
      }
      try {
        const stats = (await o.getStats()) as Record<string, unknown>[];
        const st = Array.isArray(stats) ? stats.find((x) => x.type === (s.direction === 'inbound' ? 'inbound-rtp' : 'outbound-rtp')) : undefined;
        if (st) {
          reports.set(s.key, st);
        }
      } catch {
        // closed meanwhile
      }
    }
    // the path's RTT per leg, from the far end's receiver reports on our outbound stream
    const legRtt = { trunk: Number(reports.get('trunkConsumer')?.roundTripTime) || 0, agent: Number(reports.get('agentConsumer')?.roundTripTime) || 0 };
    for (const s of STREAMS) {
      const st = reports.get(s.key);
      if (!st) {
        continue;
      }
      const rttMs = legRtt[s.leg];
      if (s.direction === 'outbound' && rttMs <= 0) {
        continue; // no receiver report yet: loss unknown
      }
      // mediasoup updates packetsLost only when it builds a receiver report (seconds apart); the
      // relay sees the trunk's own sequence numbers at once, so the trunk's inbound loss is its
      const rx = s.key === 'trunkProducer' ? src.relay?.stats.trunkReceive : undefined;
      const now: Cumulative = rx ? { packets: rx.received, lost: Math.max(0, rx.expected - rx.received) } : { packets: Number(st.packetCount) || 0, lost: Math.max(0, Number(st.packetsLost) || 0) };
      const before = this.#prev.get(s.key);
      this.#prev.set(s.key, now);
      if (!before) {
        continue; // the first reading is the baseline (counters may start anywhere)
      }
      const dPackets = Math.max(0, now.packets - before.packets);
      const dLost = Math.max(0, now.lost - before.lost);
      if (dPackets === 0 && dLost === 0) {
        continue; // nothing flowed in this interval (hold, or not started)
      }
      // inbound: packetCount counts what arrived, so expected = arrived + lost; outbound: what was sent
      const expected = s.direction === 'inbound' ? dPackets + dLost : dPackets;
      const lossPct = Math.min(100, expected > 0 ? (dLost / expected) * 100 : 0);
      // mediasoup reports receive-side jitter in RTP timestamp units (RFC 3550 §6.4.1); the send side has none
      // (the trunk's from the relay, where its packets arrive: mediasoup's would add our own event-loop delay)
      const jitterMs = rx ? rx.jitterMs : s.direction === 'inbound' ? ((Number(st.jitter) || 0) / codec.clockRate) * 1000 : undefined;
      const { mos } = estimateMos({ codec: mosCodec, lossPct, jitterMs: jitterMs ?? 0, rttMs });
      this.#metrics?.observe({ leg: s.leg, direction: s.direction, lossPct, jitterMs, rttMs, mos });
      const a = this.#agg.get(s.key) ?? { samples: 0, mosSum: 0, lossMax: 0, jitterMax: 0, rttMax: 0 };
      a.samples++;
      a.mosSum += mos;
      a.lossMax = Math.max(a.lossMax, lossPct);
      a.jitterMax = Math.max(a.jitterMax, jitterMs ?? 0);
      a.rttMax = Math.max(a.rttMax, rttMs);
      this.#agg.set(s.key, a);
    }
  }

  /** Stops sampling; returns the call's summary (undefined when nothing was sampled). */
  stop(): QualitySummary | undefined {
    clearInterval(this.#timer);
    if (this.#agg.size === 0) {
      return undefined;
    }
    const mean = (key: string): number | undefined => {
      const a = this.#agg.get(key);

      return a ? round(a.mosSum / a.samples) : undefined;
    };
    const legs = { mosTrunkIn: mean('trunkProducer'), mosTrunkOut: mean('trunkConsumer'), mosAgentIn: mean('agentProducer'), mosAgentOut: mean('agentConsumer') };
    const present = Object.values(legs).filter((v): v is number => v !== undefined);
    const all = [...this.#agg.values()];

    return {
      mos: Math.min(...present),
      ...Object.fromEntries(Object.entries(legs).filter(([, v]) => v !== undefined)),
      lossPctMax: round(Math.max(...all.map((a) => a.lossMax))),
      jitterMsMax: round(Math.max(...all.map((a) => a.jitterMax))),
      rttMsMax: round(Math.max(...all.map((a) => a.rttMax))),
    };
  }
}
