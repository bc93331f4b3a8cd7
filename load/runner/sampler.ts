/**
 * CPU, memory and open file descriptors of named groups of processes over time (`/proc`, see
 * ../sip-bench/procfs.ts): each `sample()` gives every group's CPU since the previous sample (% of
 * one core), its RSS now (MiB) and its open file descriptors now (sockets included). Groups are functions returning pids, so that processes that come and go (mediasoup
 * workers, agent processes) are followed.
 */
import fs from 'node:fs';
import { CLOCK_TICKS, cpuTicks, memoryMb } from '../sip-bench/procfs.js';

/** One reading of every group. */
export interface ResourceSample {
  cpuPct: Record<string, number>;
  rssMb: Record<string, number>;
  fds: Record<string, number>;
}

/** Open file descriptors of a process (0 when it is gone). */
export function openFds(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

const r1 = (v: number): number => Math.round(v * 10) / 10;

/** Samples groups of processes; create one per target. */
export class ProcessSampler {
  readonly #groups: Record<string, () => number[]>;
  #last = new Map<number, number>();
  #lastAt = 0;

  /** `groups`: name → the pids of that group now. */
  constructor(groups: Record<string, () => number[]>) {
    this.#groups = groups;
  }

  /** Starts the interval (the first sample() measures from here). */
  start(): void {
    this.#lastAt = performance.now();
    this.#last = new Map();
    for (const pids of Object.values(this.#groups)) {
      for (const pid of pids()) {
        this.#last.set(pid, cpuTicks(pid));
      }
    }
  }

  /** CPU per group since the previous sample (a process first seen now counts from its birth) and RSS now. */
  sample(): ResourceSample {
    const now = performance.now();
    const seconds = Math.max(1e-3, (now - this.#lastAt) / 1000);
    const next = new Map<number, number>();
    const out: ResourceSample = { cpuPct: {}, rssMb: {}, fds: {} };
    for (const [name, pidsOf] of Object.entries(this.#groups)) {
      const pids = pidsOf();
      let ticks = 0;
      for (const pid of pids) {
        const t = cpuTicks(pid);
        if (t > 0) {
          ticks += t - (this.#last.get(pid) ?? 0);
          next.set(pid, t);
        }
      }
      out.cpuPct[name] = r1((Math.max(0, ticks) / CLOCK_TICKS / seconds) * 100);
      out.rssMb[name] = r1(memoryMb(pids).rssMb);
      out.fds[name] = pids.reduce((n, pid) => n + openFds(pid), 0);
    }
    this.#last = next;
    this.#lastAt = now;

    return out;
  }
}
