/**
 * Call metrics (Prometheus naming: base units, `_total` counters). Labels carry bounded sets only:
 * direction (inbound, outbound), end_reason (protocol END_REASONS), state, presence — never a call
 * id, a number or an agent id.
 *
 * In a cluster a handed-off call is counted once: finished on the node that writes its record
 * (the agent's node), timed (PDD, answer) on the node that holds the trunk's leg.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What the gauges read when Prometheus scrapes. */
export interface CallMetricsSources {
  /** Live calls on this node by direction. */
  activeCalls(): { inbound: number; outbound: number };
  /** Agent sessions on this node by state. */
  sessions(): { connected: number; suspended: number };
  /** Agents with a session on this node, by effective presence. */
  agents(): Record<string, number>;
}

/** A finished call as the metrics see it: ISO or Date times are converted by the caller. */
export interface FinishedCall {
  direction: 'inbound' | 'outbound';
  endReason: string;
  /** ms since the epoch */
  offeredAt: number;
  ringingAt?: number;
  answeredAt?: number;
  endedAt: number;
}

/** The call metrics of one gateway process. */
export class CallMetrics {
  readonly finished: Counter<'direction' | 'end_reason'>;
  readonly pdd: Histogram<'direction'>;
  readonly answer: Histogram<'direction'>;
  readonly duration: Histogram<'direction'>;
  #sources: CallMetricsSources | undefined;

  /** Registers the metrics in `registry` with names starting with `prefix` (e.g. "ringbridge_"). */
  constructor(registry: Registry, prefix: string) {
    const registers = [registry];
    this.finished = new Counter({ name: `${prefix}calls_finished_total`, help: 'Calls that ended, by direction and end reason (counted once per call in a cluster).', labelNames: ['direction', 'end_reason'], registers });
    this.pdd = new Histogram({
      name: `${prefix}call_pdd_seconds`,
      help: 'Post-dial delay: inbound, trunk INVITE in to 180 out; outbound, dial to the first provisional from the trunk.',
      labelNames: ['direction'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.answer = new Histogram({
      name: `${prefix}call_answer_seconds`,
      help: 'From the INVITE (inbound) or the dial (outbound) to the answer.',
      labelNames: ['direction'],
      buckets: [0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 90],
      registers,
    });
    this.duration = new Histogram({
      name: `${prefix}call_duration_seconds`,
      help: 'Talk time of answered calls, answer to end.',
      labelNames: ['direction'],
      buckets: [5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200],
      registers,
    });
    const sources = (): CallMetricsSources | undefined => this.#sources;
    new Gauge({
      name: `${prefix}calls_active`,
      help: 'Live calls on this node.',
      labelNames: ['direction'],
      registers,
      collect() {
        const a = sources()?.activeCalls() ?? { inbound: 0, outbound: 0 };
        this.set({ direction: 'inbound' }, a.inbound);
        this.set({ direction: 'outbound' }, a.outbound);
      },
    });
    new Gauge({
      name: `${prefix}ws_sessions`,
      help: 'Agent WebSocket sessions on this node, connected or suspended (dropped, within the resume grace period).',
      labelNames: ['state'],
      registers,
      collect() {
        const s = sources()?.sessions() ?? { connected: 0, suspended: 0 };
        this.set({ state: 'connected' }, s.connected);
        this.set({ state: 'suspended' }, s.suspended);
      },
    });
    new Gauge({
      name: `${prefix}agents`,
      help: 'Agents with a session on this node, by effective presence.',
      labelNames: ['presence'],
      registers,
      collect() {
        const by = sources()?.agents() ?? {};
        for (const p of ['available', 'busy', 'away', 'ringing', 'on_call']) {
          this.set({ presence: p }, by[p] ?? 0);
        }
      },
    });
  }

  /** Connects the gauges to the live state (after the call layer and signaling exist). */
  bind(sources: CallMetricsSources): void {
    this.#sources = sources;
  }

  /**
   * The call started ringing (inbound: our 180 to the trunk; outbound: the trunk's first
   * provisional): its post-dial delay is observed now, not when the call ends, so that a PDD alert
   * sees it at once. Times in ms since the epoch.
   */
  ringing(direction: 'inbound' | 'outbound', offeredAt: number, ringingAt: number): void {
    this.pdd.observe({ direction }, Math.max(0, ringingAt - offeredAt) / 1000);
  }

  /** Times of a call whose trunk leg this node held, at its end (answer time, talk time). */
  timed(c: FinishedCall): void {
    const labels = { direction: c.direction };
    if (c.answeredAt !== undefined) {
      this.answer.observe(labels, Math.max(0, c.answeredAt - c.offeredAt) / 1000);
      this.duration.observe(labels, Math.max(0, c.endedAt - c.answeredAt) / 1000);
    }
  }

  /** A call this node records (once per call in the cluster). */
  ended(c: Pick<FinishedCall, 'direction' | 'endReason'>): void {
    this.finished.inc({ direction: c.direction, end_reason: c.endReason });
  }
}

/** The SIP engine's counters (EngineCore.counters): method or status code → count. */
export interface SipCounters {
  requestsIn: Record<string, number>;
  requestsOut: Record<string, number>;
  responsesIn: Record<string, number>;
  responsesOut: Record<string, number>;
}

/**
 * SIP requests and responses by direction and method / status class, read from the embedded
 * engine's counters when Prometheus scrapes (`read` resolves undefined with an external engine).
 */
export function registerSipMetrics(registry: Registry, prefix: string, read: () => Promise<SipCounters | undefined>): void {
  let last: Promise<SipCounters | undefined> | undefined;
  // one read per scrape for both metrics
  const counters = (): Promise<SipCounters | undefined> => {
    last ??= read()
      .catch(() => undefined)
      .finally(() => setImmediate(() => (last = undefined)));

    return last;
  };
  new Counter({
    name: `${prefix}sip_requests_total`,
    help: 'SIP requests by direction (in: received, out: sent by the engine) and method (unknown methods as OTHER); retransmissions excluded.',
    labelNames: ['direction', 'method'],
    registers: [registry],
    async collect() {
      const c = await counters();
      this.reset();
      for (const [direction, table] of [['in', c?.requestsIn], ['out', c?.requestsOut]] as const) {
        for (const [method, n] of Object.entries(table ?? {})) {
          this.inc({ direction, method }, n);
        }
      }
    },
  });
  new Counter({
    name: `${prefix}sip_responses_total`,
    help: 'SIP responses by direction (out: sent by the engine, in: received) and status class (1xx to 6xx).',
    labelNames: ['direction', 'status_class'],
    registers: [registry],
    async collect() {
      const c = await counters();
      this.reset();
      for (const [direction, table] of [['out', c?.responsesOut], ['in', c?.responsesIn]] as const) {
        for (const [status, n] of Object.entries(table ?? {})) {
          this.inc({ direction, status_class: /^[1-6]\d\d$/.test(status) ? `${status[0]}xx` : 'other' }, n);
        }
      }
    },
  });
}
