/**
 * sipp under the runner's control: a UAC whose call rate follows the scenario (sipp's UDP
 * control port: `cset rate N`, `p` to pause and resume, `q` to stop placing calls and let the
 * open ones end), a UAS, and the readings of their statistics CSV and short-message log.
 * Every sipp runs as a child under `setpriv --pdeathsig TERM` (../sip-bench/procs.ts).
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { lastStatsRow } from '../sip-bench/bench.js';
import { type BenchProcess, pickFreePort, spawnBenchProcess, waitListening } from '../sip-bench/procs.js';
import { parseShortmsg, type SippCall } from '../wake-bench/bench.js';

/** Options of a sipp UAC. */
export interface SippUacOptions {
  /** Name in messages ("sipp trunk UAC"). */
  name: string;
  /** The scenario XML (already filled in). */
  scenarioFile: string;
  /** Where the calls go (host:port). */
  remote: string;
  /** Request-URI user ([service]). */
  service: string;
  /** Rate at the start, calls/s (0: start paused). */
  initialRate: number;
  /** Most calls open at once (sipp -l). */
  limit: number;
  /** Directory for the statistics CSV, logs and short-message trace. */
  dir: string;
  /** Media port (-mp), for scenarios that send RTP. */
  mediaPort?: number;
  /** sipp -timeout: the whole run's limit, ms. */
  timeoutMs: number;
}

/** The counters of sipp's statistics CSV (cumulative) that the runner follows. */
export interface SippCounters {
  created: number;
  current: number;
  successful: number;
  failed: number;
  retransmissions: number;
}

/** Reads the last row of a sipp statistics CSV (undefined until sipp wrote one). */
export function readCounters(statsFile: string): SippCounters | undefined {
  const row = lastStatsRow(statsFile);
  if (!row) {
    return undefined;
  }
  const n = (k: string): number => Number(row[k] ?? 0) || 0;

  return { created: n('TotalCallCreated'), current: n('CurrentCall'), successful: n('SuccessfulCall(C)'), failed: n('FailedCall(C)'), retransmissions: n('Retransmissions(C)') };
}

/** A port p with p..p+3 free (sipp binds the media port, +2 for video). */
export function pickMediaPort(): number {
  for (let i = 0; i < 50; i++) {
    const p = pickFreePort();
    if (p % 2 === 0 && p + 3 < 32768) {
      return p;
    }
  }

  return pickFreePort();
}

async function sendControl(port: number, cmd: string): Promise<void> {
  const sock = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => sock.send(cmd, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  } finally {
    sock.close();
  }
}

/** A sipp UAC whose rate the runner sets. Create with SippUac.start(). */
export class SippUac {
  readonly proc: BenchProcess;
  readonly statsFile: string;
  readonly shortFile: string;
  readonly #controlPort: number;
  #paused: boolean;
  #rate: number;
  #quitting = false;

  private constructor(proc: BenchProcess, controlPort: number, statsFile: string, shortFile: string, rate: number) {
    this.proc = proc;
    this.#controlPort = controlPort;
    this.statsFile = statsFile;
    this.shortFile = shortFile;
    this.#rate = rate;
    this.#paused = rate === 0;
  }

  /** Starts sipp and waits until it holds its SIP port (and its media port when it has one). */
  static async start(o: SippUacOptions): Promise<SippUac> {
    fs.mkdirSync(o.dir, { recursive: true });
    const sipPort = pickFreePort();
    const controlPort = pickFreePort();
    const statsFile = path.join(o.dir, 'uac-stats.csv');
    const shortFile = path.join(o.dir, 'uac-short.log');
    const args = [
      '-sf', o.scenarioFile,
      o.remote,
      '-s', o.service,
      '-t', 'u1', '-i', '127.0.0.1', '-p', String(sipPort),
      ...(o.mediaPort ? ['-mi', '127.0.0.1', '-mp', String(o.mediaPort)] : []),
      '-r', String(o.initialRate > 0 ? o.initialRate : 1), '-rp', '1000', '-l', String(o.limit),
      '-nostdin',
      '-ci', '127.0.0.1', '-cp', String(controlPort),
      '-trace_stat', '-stf', statsFile, '-fd', '1',
      '-trace_shortmsg', '-shortmessage_file', shortFile,
      '-trace_err', '-error_file', path.join(o.dir, 'uac-errors.log'),
      '-buff_size', String(4 * 1024 * 1024),
      '-timeout', `${Math.ceil(o.timeoutMs / 1000)}s`,
    ];
    const proc = spawnBenchProcess(o.name, 'sipp', args, { cwd: o.dir });
    const uac = new SippUac(proc, controlPort, statsFile, shortFile, o.initialRate);
    try {
      if (o.initialRate === 0) {
        await sendControl(controlPort, 'p');
      }
      await waitListening(proc, sipPort, 'udp', 15_000);
    } catch (err) {
      await proc.stop(1000);
      throw err;
    }

    return uac;
  }

  /** The rate asked for last, calls/s. */
  get rate(): number {
    return this.#paused ? 0 : this.#rate;
  }

  /** Sets the call rate (0 pauses placing calls; open calls go on). */
  async setRate(rate: number): Promise<void> {
    if (this.#quitting || this.proc.hasExited()) {
      return;
    }
    if (rate <= 0) {
      if (!this.#paused) {
        this.#paused = true;
        await sendControl(this.#controlPort, 'p');
      }

      return;
    }
    if (rate !== this.#rate) {
      this.#rate = rate;
      await sendControl(this.#controlPort, `cset rate ${rate}`);
    }
    if (this.#paused) {
      this.#paused = false;
      await sendControl(this.#controlPort, 'p');
    }
  }

  /** The latest counters (undefined before the first statistics row). */
  counters(): SippCounters | undefined {
    return readCounters(this.statsFile);
  }

  /**
   * Stops placing calls and lets the open ones end (`q`), up to `graceMs`; then stops sipp
   * (SIGTERM, SIGKILL of its tree). Resolves with sipp's exit status.
   */
  async finish(graceMs: number): Promise<number | string> {
    if (!this.#quitting && !this.proc.hasExited()) {
      this.#quitting = true;
      await sendControl(this.#controlPort, 'q').catch(() => undefined);
    }
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
    const first = await Promise.race([this.proc.exited, timer]);
    if (first === 'timeout') {
      return this.proc.stop(3000);
    }

    return first;
  }

  /** The calls of the short-message trace (read after the run). */
  calls(): Map<string, SippCall> {
    return parseShortmsg(this.shortFile);
  }
}

/** Options of a sipp UAS. */
export interface SippUasOptions {
  name: string;
  scenarioFile: string;
  dir: string;
  mediaPort?: number;
  timeoutMs: number;
}

/** Starts a sipp UAS on a free port; resolves once it listens. */
export async function startSippUas(o: SippUasOptions): Promise<{ proc: BenchProcess; port: number; statsFile: string }> {
  fs.mkdirSync(o.dir, { recursive: true });
  const port = pickFreePort();
  const statsFile = path.join(o.dir, 'uas-stats.csv');
  const args = [
    '-sf', o.scenarioFile,
    '-t', 'u1', '-i', '127.0.0.1', '-p', String(port),
    ...(o.mediaPort ? ['-mi', '127.0.0.1', '-mp', String(o.mediaPort)] : []),
    '-nostdin',
    '-ci', '127.0.0.1', '-cp', String(pickFreePort()),
    '-trace_stat', '-stf', statsFile, '-fd', '1',
    '-trace_err', '-error_file', path.join(o.dir, 'uas-errors.log'),
    '-buff_size', String(4 * 1024 * 1024),
    '-timeout', `${Math.ceil(o.timeoutMs / 1000)}s`,
  ];
  const proc = spawnBenchProcess(o.name, 'sipp', args, { cwd: o.dir });
  try {
    await waitListening(proc, port, 'udp', 15_000);
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }

  return { proc, port, statsFile };
}
