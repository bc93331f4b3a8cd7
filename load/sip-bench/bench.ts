/**
 * The SIP benchmark itself: a sipp UAC (possibly several, splitting the rate) calls the element
 * under test, which relays every call to one sipp UAS; both legs do INVITE/180/200/ACK/BYE over
 * UDP on loopback. The call rate goes up step by step; each step reports how many calls
 * completed, the post-dial delay, and the CPU and memory of the element and of sipp.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { projectRoot } from '../../src/util/paths.js';
import { latency, type Latency } from '../runner/stats.js';
import { cpuMeter, memoryMb } from './procfs.js';
import { pickFreePort, spawnBenchProcess, waitListening, type BenchProcess } from './procs.js';
import { startCommand, startKamailio, type Target } from './targets.js';

/** What to measure and how. */
export interface BenchOptions {
  /** The element under test. */
  target: 'kamailio' | 'command';
  /** For `command`: the command line (placeholders: see targets.ts). */
  cmd?: string;
  /** SIP port of the element; default: a free port. */
  targetPort?: number;
  /** Call rates to step through, calls per second. */
  rates: number[];
  /** Length of each step (calls are placed for this long), ms. */
  durationMs: number;
  /** Talk time between ACK and BYE, ms. */
  holdMs: number;
  /** sipp UAC processes that split each rate. */
  uacShards: number;
  /** How long a step may run after its last call was placed before unfinished calls count as failed, ms. */
  drainMs: number;
  /** Pause between steps, ms. */
  settleMs: number;
  /** kamailio UDP workers (-n). */
  kamailioWorkers: number;
  /** kamailio shared memory in MB (-m): transactions live there, about 5 s each after they end. */
  kamailioShmMb: number;
  /** sipp's limit of simultaneous calls per shard (-l); default rate × (hold + 35 s), so it never throttles. */
  maxOpenCalls?: number;
  /** Completion (% of planned calls) a step needs to count as sustained. */
  threshold: number;
  /** Stop stepping up after a step completes less than this %; 0 never stops. */
  stopBelow: number;
  /** Keep sipp's error logs (-trace_err) in the step directories. */
  traceErrors: boolean;
  /**
   * Where post-dial delays come from: `shortmsg` (default), the UAC's one-line-per-message log
   * (-trace_shortmsg), time-stamped with gettimeofday for every message, so microseconds; or
   * `rtd`, sipp's own response-time measure (-trace_rtt), cheaper for sipp but read from
   * CLOCK_MONOTONIC_COARSE, so in steps of one kernel tick (4 ms here).
   */
  pddSource: 'shortmsg' | 'rtd';
  /** Where step directories (sipp CSV and logs) go; default a temporary directory. */
  workDir?: string;
  /** Progress lines. */
  log: (msg: string) => void;
}


export { latency, parseDuration, type Latency } from '../runner/stats.js';

/** One rate step's figures. */
export interface StepResult {
  /** Offered rate, calls/s. */
  rate: number;
  /** Calls the step should place: rate × duration. */
  planned: number;
  /** Calls sipp placed (OutgoingCall). */
  attempted: number;
  /** Calls that went through INVITE/180/200/ACK/BYE/200 (SuccessfulCall). */
  completed: number;
  /** Calls sipp counted as failed (FailedCall). */
  failed: number;
  /** Calls still open when the step ended (counted as not completed). */
  unfinished: number;
  /** completed / planned, %. */
  completionPct: number;
  /** Calls placed per second over the step, as sipp achieved it. */
  achievedRate: number;
  /** Post-dial delay: INVITE sent → 180 received at the UAC, ms. */
  pddMs: Latency;
  /** INVITE sent → 200 received at the UAC, ms (only with pddSource shortmsg). */
  answerMs: Latency | null;
  /** sipp's retransmissions (UAC side), a sign of overload or loss. */
  retransmissions: number;
  /** Non-zero failure counters of the UAC statistics (FailedMaxUDPRetrans, FailedUnexpectedMessage, ...). */
  failures: Record<string, number>;
  /** CPU of the element under test while the step placed calls (not while it drained), % of one core. */
  targetCpuPct: number;
  /** Largest resident memory of the element during the step, MiB (sum over its processes). */
  targetRssMb: number;
  /** Same, with shared pages split between processes (PSS), MiB. */
  targetPssMb: number;
  /** CPU of the sipp UAC processes together, % of one core. */
  uacCpuPct: number;
  /** CPU of the sipp UAS, % of one core. */
  uasCpuPct: number;
  /** The UAS's own count of calls it completed and failed (a fresh UAS runs each step). */
  uasCompleted: number;
  uasFailed: number;
  /** Set when the UAS exited before the step ended: its exit status and last output lines. */
  uasExitedEarly: string | null;
  /** Wall time of the step, s. */
  wallS: number;
  /** Exit status of each UAC shard (sipp: 0 all calls succeeded, 1 some failed; a signal name when stopped). */
  uacExit: (number | string)[];
  /** The last lines sipp printed on stderr, for shards that did not exit 0 (empty otherwise). */
  uacStderr: string[];
  /** The step's directory (sipp statistics, rtt samples, logs). */
  dir: string;
}

/** Everything one benchmark run measured. */
export interface BenchReport {
  tool: 'ringbridge sip-bench';
  startedAt: string;
  finishedAt: string;
  /** The command line that reproduces the run. */
  command: string;
  host: {
    cpus: number;
    cpuModel: string;
    kernel: string;
    udpRmemMaxBytes: number | null;
    sipp: string;
    node: string;
    /** 1-minute load average before and after the run: other work on the machine skews the figures. */
    loadAvg: { start: number; end: number };
  };
  target: { kind: string; description: string; port: number; uasPort: number };
  options: Omit<BenchOptions, 'log'>;
  steps: StepResult[];
  /** Highest rate whose completion reached the threshold (none: null). */
  ceiling: { rate: number; completionPct: number; threshold: number } | null;
}

const BENCH_DIR = (): string => path.join(projectRoot(), 'load', 'sip-bench');


/** The last row of a sipp statistics CSV, by column name. */
export function lastStatsRow(file: string): Record<string, string> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length < 2) {
    return undefined;
  }
  const names = lines[0]!.split(';');
  const values = lines[lines.length - 1]!.split(';');
  const row: Record<string, string> = {};
  names.forEach((n, i) => {
    if (n !== '') {
      row[n] = values[i] ?? '';
    }
  });

  return row;
}

/** Response-time samples (ms) of one rtd name from the `*_rtt.csv` files in a directory. */
export function rttSamples(dir: string, rtd: string): number[] {
  const out: number[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('_rtt.csv'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n').slice(1)) {
      const [, ms, name] = line.split(';');
      if (name?.trim() === rtd && ms !== undefined && ms !== '') {
        out.push(Number(ms));
      }
    }
  }

  return out;
}

/** One line of a sipp `-trace_shortmsg` file. */
export interface ShortMsg {
  /** Epoch µs of the message. */
  us: number;
  /** S: sipp sent it; R: sipp received it. */
  dir: string;
  callId: string;
  /** The CSeq header value (`1 INVITE`). */
  cseq: string;
  /** The start line (`INVITE sip:…` or `SIP/2.0 180 Ringing`). */
  first: string;
}

/**
 * A `-trace_shortmsg` line (date, time, epoch seconds, S|R, Call-ID, CSeq, first line;
 * tab-separated), or undefined for a line that is not one.
 */
export function parseShortmsgLine(line: string): ShortMsg | undefined {
  const c = line.split('\t');
  if (c.length < 7) {
    return undefined;
  }
  const [sec, frac = '0'] = c[2]!.split('.');

  return { us: Number(sec) * 1e6 + Number(frac.padEnd(6, '0').slice(0, 6)), dir: c[3]!, callId: c[4]!, cseq: c[5]!, first: c[6]! };
}

/**
 * Post-dial delays and answer times (ms) from sipp `-trace_shortmsg` files (`*-short.log` in a
 * directory): per Call-ID, the first INVITE sent to the first 180 and to the first 200 received.
 * A call whose 180 never arrived (a provisional over UDP is sent once and may be lost) counts its
 * post-dial delay to the 200, as RFC 6076 §4.1 (Session Request Delay) measures it: to the first
 * non-100 provisional or the 2xx, whichever comes first.
 * Lines: date, time, epoch seconds, S|R, Call-ID, CSeq, first line; tab-separated.
 */
export function shortmsgDelays(dir: string): { pdd: number[]; answer: number[] } {
  const invite = new Map<string, number>();
  const ringing = new Map<string, number>();
  const answered = new Map<string, number>();
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('-short.log'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const m = parseShortmsgLine(line);
      if (!m) {
        continue;
      }
      const { us, callId, first } = m;
      if (m.dir === 'S' && first.startsWith('INVITE ')) {
        if (!invite.has(callId)) {
          invite.set(callId, us);
        }
      } else if (m.dir === 'R' && m.cseq.endsWith(' INVITE')) {
        if (first.startsWith('SIP/2.0 180') && !ringing.has(callId)) {
          ringing.set(callId, us);
        } else if (first.startsWith('SIP/2.0 200') && !answered.has(callId)) {
          answered.set(callId, us);
        }
      }
    }
  }
  const delays = (m: Map<string, number>): number[] =>
    [...m].flatMap(([id, t]) => {
      const t0 = invite.get(id);

      return t0 === undefined ? [] : [(t - t0) / 1000];
    });

  for (const [id, t] of answered) {
    if (!ringing.has(id)) {
      ringing.set(id, t);
    }
  }

  return { pdd: delays(ringing), answer: delays(answered) };
}

function sippVersion(): string {
  const r = spawnSync('sipp', ['-v'], { encoding: 'utf8' });

  return /SIPp v\S+/.exec(r.stdout + r.stderr)?.[0] ?? 'unknown';
}

function rmemMax(): number | null {
  try {
    return Number(fs.readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return null;
  }
}

const SIPP_SOCKET_BUFFER = String(8 * 1024 * 1024); // the kernel caps it at net.core.rmem_max/wmem_max

/**
 * sipp obeys any UDP datagram on its control port ('q' quits, 'p' pauses, '-' lowers the rate).
 * By default that is the first free port from 8888 on all addresses, where stray packets of other
 * programs land; each sipp here gets a free port of its own on loopback instead.
 */
const CONTROL_PORT = (): string[] => ['-ci', '127.0.0.1', '-cp', String(pickFreePort())];

function startUas(dir: string, port: number, timeoutMs: number): BenchProcess {
  return spawnBenchProcess(
    'sipp UAS',
    'sipp',
    [
      '-sf', path.join(BENCH_DIR(), 'bench-uas.xml'),
      '-t', 'u1', '-i', '127.0.0.1', '-p', String(port),
      '-buff_size', SIPP_SOCKET_BUFFER,
      '-nostdin',
      ...CONTROL_PORT(),
      '-trace_stat', '-stf', path.join(dir, 'uas-stats.csv'), '-fd', '1',
      '-trace_err', '-error_file', path.join(dir, 'uas-errors.log'),
      '-timeout', `${Math.ceil(timeoutMs / 1000)}s`,
    ],
    { cwd: dir },
  );
}

interface Shard {
  proc: BenchProcess;
  statsFile: string;
}

function startUacShard(o: BenchOptions, dir: string, i: number, rate: number, calls: number, targetPort: number): Shard {
  const statsFile = path.join(dir, `uac-${i}-stats.csv`);
  const maxOpen = o.maxOpenCalls ?? Math.max(100, Math.ceil(rate * (o.holdMs / 1000 + 35)));
  const args = [
    '-sf', path.join(BENCH_DIR(), 'bench-uac.xml'),
    `127.0.0.1:${targetPort}`,
    '-t', 'u1', '-i', '127.0.0.1', '-p', String(pickFreePort()),
    '-r', rate.toFixed(3), '-m', String(calls), '-l', String(maxOpen),
    '-key', 'hold_ms', String(o.holdMs),
    '-buff_size', SIPP_SOCKET_BUFFER,
    '-nostdin',
    ...CONTROL_PORT(),
    '-trace_stat', '-stf', statsFile, '-fd', '1',
    ...(o.pddSource === 'rtd' ? ['-trace_rtt', '-rtt_freq', '10'] : ['-trace_shortmsg', '-shortmessage_file', path.join(dir, `uac-${i}-short.log`)]),
    // sipp stops by itself at this deadline; the harness ends the step earlier (drainMs).
    '-timeout', `${Math.ceil((o.durationMs + o.drainMs) / 1000) + 10}s`,
  ];
  if (o.traceErrors) {
    args.push('-trace_err', '-error_file', path.join(dir, `uac-${i}-errors.log`));
  }

  return { proc: spawnBenchProcess(`sipp UAC ${i}`, 'sipp', args, { cwd: dir }), statsFile };
}

/** Splits `calls` calls at `rate` cps over `n` shards (rates and counts that add up). */
export function splitShards(rate: number, calls: number, n: number): { rate: number; calls: number }[] {
  const out: { rate: number; calls: number }[] = [];
  for (let i = 0; i < n; i++) {
    const c = Math.floor(calls / n) + (i < calls % n ? 1 : 0);
    out.push({ rate: rate / n, calls: c });
  }

  return out.filter((s) => s.calls > 0);
}

async function runStep(o: BenchOptions, rate: number, dir: string, target: Target, uasPort: number): Promise<StepResult> {
  fs.mkdirSync(dir, { recursive: true });
  // A fresh UAS for every step, on the port the target relays to: its statistics are the step's
  // own, and whatever happened to the previous one does not carry over.
  const uas = startUas(dir, uasPort, o.durationMs + o.drainMs + 60_000);
  try {
    await waitListening(uas, uasPort, 'udp');
  } catch (err) {
    await uas.stop(1000);
    throw err;
  }
  const planned = Math.max(1, Math.round((rate * o.durationMs) / 1000));
  const shardPlan = splitShards(rate, planned, Math.max(1, o.uacShards));
  const targetCpu = cpuMeter(() => target.process.tree());
  const uasCpu = cpuMeter(() => (uas.hasExited() ? [] : [uas.pid]));
  let shards: Shard[] = [];
  const uacCpu = cpuMeter(() => shards.flatMap((s) => (s.proc.hasExited() ? [] : [s.proc.pid])));
  let maxRss = 0;
  let maxPss = 0;
  const sampleMem = (): void => {
    const m = memoryMb(target.process.tree());
    maxRss = Math.max(maxRss, m.rssMb);
    maxPss = Math.max(maxPss, m.pssMb);
  };
  targetCpu.start();
  uasCpu.start();
  uacCpu.start();
  sampleMem();
  const t0 = performance.now();
  shards = shardPlan.map((s, i) => startUacShard(o, dir, i, s.rate, s.calls, target.port));
  const sampler = setInterval(() => {
    targetCpu.sample();
    uasCpu.sample();
    uacCpu.sample();
    sampleMem();
  }, 250);
  // Each shard stops by itself after its calls; unfinished calls get drainMs past the planned end.
  const deadline = setTimeout(() => {
    for (const s of shards) {
      if (!s.proc.hasExited()) {
        o.log(`  step ${rate} cps: ${s.proc.name} still has calls open ${o.drainMs} ms after the last one was due; stopping it`);
        void s.proc.stop(3000);
      }
    }
  }, o.durationMs + o.drainMs);
  // CPU and memory are measured while calls are being placed and talked, not during the drain.
  const allExited = Promise.all(shards.map((s) => s.proc.exited));
  await Promise.race([allExited, new Promise((r) => setTimeout(r, o.durationMs + o.holdMs + 1000))]);
  clearInterval(sampler);
  const targetCpuPct = targetCpu.stop();
  const uasCpuPct = uasCpu.stop();
  const uacCpuPct = uacCpu.stop();
  sampleMem();
  const uacExit = await allExited;
  clearTimeout(deadline);
  const wallS = (performance.now() - t0) / 1000;
  let uasExitedEarly: string | null = null;
  if (uas.hasExited()) {
    const out = uas.output();
    uasExitedEarly = `exit ${await uas.exited}: ${(out.stderr + out.stdout).trim().split('\n').slice(-5).join('\n')}`;
    o.log(`  step ${rate} cps: the sipp UAS exited before the step ended (${uasExitedEarly.split(':')[0]})`);
  }
  await uas.stop(3000);
  const uasRow = lastStatsRow(path.join(dir, 'uas-stats.csv'));

  let attempted = 0;
  let completed = 0;
  let failed = 0;
  let retransmissions = 0;
  const failures: Record<string, number> = {};
  for (const s of shards) {
    const row = lastStatsRow(s.statsFile);
    if (!row) {
      const out = s.proc.output();
      throw new Error(`${s.proc.name} left no statistics (exit ${await s.proc.exited}):\n${(out.stderr + out.stdout).slice(-2000)}`);
    }
    attempted += Number(row['OutgoingCall(C)'] ?? 0);
    completed += Number(row['SuccessfulCall(C)'] ?? 0);
    failed += Number(row['FailedCall(C)'] ?? 0);
    retransmissions += Number(row['Retransmissions(C)'] ?? 0);
    for (const [k, v] of Object.entries(row)) {
      if (/^Failed.+\(C\)$/.test(k) && k !== 'FailedCall(C)' && Number(v) > 0) {
        const name = k.replace(/\(C\)$/, '');
        failures[name] = (failures[name] ?? 0) + Number(v);
      }
    }
  }
  const round1 = (v: number): number => Math.round(v * 10) / 10;

  return {
    rate,
    planned,
    attempted,
    completed,
    failed,
    unfinished: Math.max(0, attempted - completed - failed),
    completionPct: Math.round((completed / planned) * 100_000) / 1000,
    achievedRate: round1(attempted / Math.max(o.durationMs / 1000, 0.001)),
    ...(o.pddSource === 'rtd'
      ? { pddMs: latency(rttSamples(dir, 'pdd')), answerMs: null }
      : ((d) => ({ pddMs: latency(d.pdd), answerMs: latency(d.answer) }))(shortmsgDelays(dir))),
    retransmissions,
    failures,
    targetCpuPct: round1(targetCpuPct),
    targetRssMb: round1(maxRss),
    targetPssMb: round1(maxPss),
    uacCpuPct: round1(uacCpuPct),
    uasCpuPct: round1(uasCpuPct),
    uasCompleted: Number(uasRow?.['SuccessfulCall(C)'] ?? 0),
    uasFailed: Number(uasRow?.['FailedCall(C)'] ?? 0),
    uasExitedEarly,
    wallS: round1(wallS),
    uacExit,
    uacStderr: shards.map((sh, i) => (uacExit[i] === 0 ? '' : sh.proc.output().stderr.trim().split('\n').slice(-5).join('\n'))),
    dir,
  };
}

/** The highest rate whose completion reached the threshold, or null. */
export function findCeiling(steps: StepResult[], threshold: number): BenchReport['ceiling'] {
  const ok = steps.filter((s) => s.completionPct >= threshold).sort((a, b) => b.rate - a.rate)[0];

  return ok ? { rate: ok.rate, completionPct: ok.completionPct, threshold } : null;
}

/** Runs the benchmark: starts the UAS and the target, steps through the rates, stops everything. */
export async function runBench(o: BenchOptions, command: string): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const loadStart = os.loadavg()[0] ?? 0;
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-sip-bench-'));
  fs.mkdirSync(workDir, { recursive: true });
  const uasPort = pickFreePort();
  const targetPort = o.targetPort ?? pickFreePort();
  let target: Target | undefined;
  const steps: StepResult[] = [];
  try {
    const uasAddr = { host: '127.0.0.1', port: uasPort };
    if (o.target === 'kamailio') {
      target = await startKamailio({ port: targetPort, uas: uasAddr, workers: o.kamailioWorkers, shmMb: o.kamailioShmMb, log: o.log });
    } else {
      if (!o.cmd) {
        throw new TypeError('--target command needs --cmd "<command line>"');
      }
      target = await startCommand(o.cmd, targetPort, uasAddr);
    }
    o.log(`target: ${target.description} on udp 127.0.0.1:${target.port}; sipp UAS on ${uasPort}; files in ${workDir}`);
    for (const rate of o.rates) {
      o.log(`step ${rate} cps for ${o.durationMs / 1000} s (${o.uacShards} UAC shard${o.uacShards > 1 ? 's' : ''}) ...`);
      const step = await runStep(o, rate, path.join(workDir, `step-${String(steps.length + 1).padStart(2, '0')}-${rate}cps`), target, uasPort);
      steps.push(step);
      o.log(`  ${step.completed}/${step.planned} completed (${step.completionPct} %), pdd p50 ${step.pddMs.p50 ?? '-'} ms p99 ${step.pddMs.p99 ?? '-'} ms, target CPU ${step.targetCpuPct} %`);
      if (target.process.hasExited()) {
        throw new Error(`the target exited during the ${rate} cps step (${await target.process.exited}):\n${target.process.output().stderr.slice(-2000)}`);
      }
      if (o.stopBelow > 0 && step.completionPct < o.stopBelow) {
        o.log(`  completion below ${o.stopBelow} %: not stepping further`);
        break;
      }
      if (rate !== o.rates[o.rates.length - 1]) {
        await new Promise((r) => setTimeout(r, o.settleMs));
      }
    }
  } finally {
    await target?.stop();
  }
  const { log: _log, ...options } = o;

  return {
    tool: 'ringbridge sip-bench',
    startedAt,
    finishedAt: new Date().toISOString(),
    command,
    host: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      kernel: os.release(),
      udpRmemMaxBytes: rmemMax(),
      sipp: sippVersion(),
      node: process.version,
      loadAvg: { start: loadStart, end: os.loadavg()[0] ?? 0 },
    },
    target: { kind: target?.kind ?? o.target, description: target?.description ?? '', port: targetPort, uasPort },
    options: { ...options, workDir },
    steps,
    ceiling: findCeiling(steps, o.threshold),
  };
}
