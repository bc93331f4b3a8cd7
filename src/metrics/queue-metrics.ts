/**
 * Queue metrics (routing.groups[].queue, src/calls/call-centre.ts). Labels: `group` (a configured
 * group id, a bounded set) and `outcome` (answered, abandoned, timed_out) — never a call id or a
 * number. Each node counts the callers whose trunk leg it holds.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** How a caller's wait in a queue ended. */
export type QueueOutcome = 'answered' | 'abandoned' | 'timed_out';

/** The queue metrics of one gateway process. */
export class QueueMetrics {
  readonly waiting: Gauge<'group'>;
  readonly wait: Histogram<'group' | 'outcome'>;
  readonly left: Counter<'group' | 'outcome'>;
  #source: (() => Map<string, number>) | undefined;

  /** Registers the metrics in `registry` with names starting with `prefix` (e.g. "ringbridge_"). */
  constructor(registry: Registry, prefix: string) {
    const registers = [registry];
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.waiting = new Gauge({
      name: `${prefix}queue_calls`,
      help: 'Callers waiting in a group queue (or being offered from it) on this node.',
      labelNames: ['group'],
      registers,
      collect() {
        this.reset();
        for (const [group, n] of self.#source?.() ?? []) {
          this.set({ group }, n);
        }
      },
    });
    this.wait = new Histogram({
      name: `${prefix}queue_wait_seconds`,
      help: 'Time callers waited in a group queue, from joining it to its end (answered, abandoned, timed out).',
      labelNames: ['group', 'outcome'],
      buckets: [1, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200],
      registers,
    });
    this.left = new Counter({ name: `${prefix}queue_calls_total`, help: 'Callers that left a group queue, by outcome.', labelNames: ['group', 'outcome'], registers });
  }

  /** What the gauge reads at scrape time: waiting callers per group id. */
  bind(source: () => Map<string, number>): void {
    this.#source = source;
  }

  /** A caller left a queue after `waitS` seconds. */
  leftQueue(group: string, outcome: QueueOutcome, waitS: number): void {
    this.wait.observe({ group, outcome }, waitS);
    this.left.inc({ group, outcome });
  }
}
