/**
 * The simulated agents of the calls benchmark: P child processes (agent-worker.ts), each holding
 * K agents with real WebRTC media, spread round-robin. Each child runs under
 * `setpriv --pdeathsig TERM` with an IPC channel; it is killed (with its whole tree) when the
 * benchmark exits, however it exits.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processTree } from '../sip-bench/procfs.js';
import { type AgentBehaviour, type CallSample, emptyCounters, type FromWorker, type StatsReply, type ToWorker, type ToneMode, type WorkerCounters } from './ipc.js';

/** Options of the agent pool. */
export interface AgentPoolOptions {
  url: string;
  secret: string;
  agentIds: string[];
  /** Agent processes. */
  processes: number;
  /** Their nice value (0: as the benchmark). */
  nice: number;
  tone: ToneMode;
  sampleRate: 8000 | 48000;
  /** How the agents take calls (load runner scenarios); default: answer at once, all with media. */
  behaviour?: AgentBehaviour;
  log: (msg: string) => void;
}

interface Worker {
  index: number;
  child: ChildProcess;
  pid: number;
  exited: Promise<number | string>;
  done: boolean;
  stderr: string;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  last?: { counters: WorkerCounters; loopDelayP99Ms: number; loopDelayMaxMs: number; at: number };
  setupMs: number[];
  dialPddMs: number[];
  dialAnswerMs: number[];
  /** Set when the benchmark asked it to stop. */
  stopping: boolean;
  /** Why it exited, when it exited on its own. */
  exitNote?: string;
}

/** Sum of the children's counters plus their worst event-loop delay. */
export interface PoolStatus {
  counters: Omit<WorkerCounters, 'setupMs' | 'dialPddMs' | 'dialAnswerMs'>;
  /** Worst p99 / max event-loop delay over the agent processes in the last second, ms. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /** Processes that exited. */
  exited: number;
}

let setpriv: boolean | undefined;
const live = new Set<Worker>();
let hooked = false;

function killTree(w: Worker): void {
  for (const pid of w.done ? [] : processTree(w.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

function hookExit(): void {
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const w of live) {
        killTree(w);
      }
    });
  }
}

const WORKER_JS = (): string => path.join(path.dirname(fileURLToPath(import.meta.url)), 'agent-worker.js');

/** A running pool. Create with AgentPool.start(). */
export class AgentPool {
  readonly #workers: Worker[];
  readonly #log: (msg: string) => void;
  #nextId = 1;

  private constructor(workers: Worker[], log: (msg: string) => void) {
    this.#workers = workers;
    this.#log = log;
  }

  /** Starts the processes and signs every agent in; rejects when one cannot. */
  static async start(o: AgentPoolOptions): Promise<AgentPool> {
    hookExit();
    setpriv ??= spawnSync('setpriv', ['--pdeathsig', 'TERM', '--', 'true'], { stdio: 'ignore' }).status === 0;
    const n = Math.max(1, Math.min(o.processes, o.agentIds.length));
    const workers: Worker[] = [];
    for (let i = 0; i < n; i++) {
      const argv = [...(o.nice !== 0 ? ['nice', '-n', String(o.nice)] : []), process.execPath, WORKER_JS()];
      const [file, args] = setpriv ? ['setpriv', ['--pdeathsig', 'TERM', '--', ...argv]] : [argv[0]!, argv.slice(1)];
      // own process group (a terminal's Ctrl-C goes to the runner only; pdeathsig still ends it with the runner)
      const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], detached: true, env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '4' } });
      const w: Worker = {
        index: i,
        child,
        pid: child.pid ?? -1,
        exited: new Promise((resolve) => {
          child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
          child.once('error', () => resolve(-1));
        }),
        done: false,
        stderr: '',
        pending: new Map(),
        setupMs: [],
        dialPddMs: [],
        dialAnswerMs: [],
        stopping: false,
      };
      void w.exited.then((code) => {
        w.done = true;
        live.delete(w);
        if (!w.stopping) {
          w.exitNote = `agent process ${i} (pid ${w.pid}) exited unexpectedly (${code}): ${w.stderr.trim().slice(-1500) || 'no output'}`;
          o.log(w.exitNote);
        }
        for (const p of w.pending.values()) {
          p.reject(new Error(`agent process ${i} exited (${code}): ${w.stderr.trim().slice(-1500)}`));
        }
        w.pending.clear();
      });
      child.stderr?.on('data', (d: Buffer) => {
        w.stderr = (w.stderr + d.toString()).slice(-16384);
      });
      child.on('message', (m: FromWorker) => {
        if (m.type === 'tick') {
          w.last = { counters: m.counters, loopDelayP99Ms: m.loopDelayP99Ms, loopDelayMaxMs: m.loopDelayMaxMs, at: Date.now() };
          w.setupMs.push(...m.counters.setupMs);
          w.dialPddMs.push(...m.counters.dialPddMs);
          w.dialAnswerMs.push(...m.counters.dialAnswerMs);
        } else {
          const p = w.pending.get(m.id);
          if (p) {
            w.pending.delete(m.id);
            if (m.ok) {
              p.resolve(m.data);
            } else {
              p.reject(new Error(`agent process ${i}: ${m.error}`));
            }
          }
        }
      });
      live.add(w);
      workers.push(w);
    }
    const pool = new AgentPool(workers, o.log);
    const shares = workers.map((_, i) => o.agentIds.filter((_id, j) => j % n === i));
    try {
      await Promise.all(
        workers.map((w, i) =>
          pool.#ask(w, {
            type: 'start',
            id: 0,
            url: o.url,
            secret: o.secret,
            agentIds: shares[i]!,
            tone: o.tone,
            sampleRate: o.sampleRate,
            connectConcurrency: 10,
            requestTimeoutMs: 30_000,
            ...(o.behaviour ? { behaviour: o.behaviour } : {}),
          }),
        ),
      );
    } catch (err) {
      await pool.stop();
      throw err;
    }

    return pool;
  }

  /** Process ids of the agent processes (with their descendants). */
  pids(): number[] {
    return this.#workers.flatMap((w) => (w.done ? [] : processTree(w.pid)));
  }

  /** Why agent processes exited on their own (crashed), one line each; cleared by the call. */
  takeExitNotes(): string[] {
    return this.#workers.flatMap((w) => {
      const n = w.exitNote;
      w.exitNote = undefined;

      return n ? [n] : [];
    });
  }

  /** Number of processes. */
  get size(): number {
    return this.#workers.length;
  }

  #ask<T>(w: Worker, msg: ToWorker, timeoutMs = 120_000): Promise<T> {
    if (w.done) {
      return Promise.reject(new Error(`agent process ${w.index} has exited: ${w.stderr.trim().slice(-1500)}`));
    }
    const id = this.#nextId++;

    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        w.pending.delete(id);
        reject(new Error(`agent process ${w.index} did not answer ${msg.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      w.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      w.child.send({ ...msg, id });
    });
  }

  /** The latest counters of every process, summed. */
  status(): PoolStatus {
    const { setupMs: _setup, dialPddMs: _pdd, dialAnswerMs: _answer, ...sum }: WorkerCounters = emptyCounters();
    let p99 = 0;
    let max = 0;
    const add = (to: Record<string, number>, from: Record<string, number>): void => {
      for (const [k, v] of Object.entries(from)) {
        to[k] = (to[k] ?? 0) + v;
      }
    };
    for (const w of this.#workers) {
      const c = w.last?.counters;
      if (!c) {
        continue;
      }
      sum.agents += c.agents;
      sum.connected += c.connected;
      sum.incoming += c.incoming;
      sum.answered += c.answered;
      sum.answerErrors += c.answerErrors;
      add(sum.answerErrorCodes, c.answerErrorCodes);
      sum.ended += c.ended;
      add(sum.endReasons, c.endReasons);
      sum.activeCalls += c.activeCalls;
      sum.maxCallsPerAgent = Math.max(sum.maxCallsPerAgent, c.maxCallsPerAgent);
      sum.doubleBooked += c.doubleBooked;
      sum.reconnects += c.reconnects;
      add(sum.errors, c.errors);
      sum.hungUp += c.hungUp;
      sum.holds += c.holds;
      sum.dtmf += c.dtmf;
      sum.mediaAgents += c.mediaAgents;
      sum.signalingAgents += c.signalingAgents;
      sum.dialed += c.dialed;
      sum.dialAnswered += c.dialAnswered;
      sum.dialFailed += c.dialFailed;
      sum.dialNoIdle += c.dialNoIdle;
      p99 = Math.max(p99, w.last!.loopDelayP99Ms);
      max = Math.max(max, w.last!.loopDelayMaxMs);
    }

    return { counters: sum, loopDelayP99Ms: p99, loopDelayMaxMs: max, exited: this.#workers.filter((w) => w.done).length };
  }

  /** Outbound post-dial delays (call.dial → call.progress) and answer times (→ call.answered) since the last call, ms. */
  takeDialTimes(): { pddMs: number[]; answerMs: number[] } {
    return { pddMs: this.#workers.flatMap((w) => w.dialPddMs.splice(0)), answerMs: this.#workers.flatMap((w) => w.dialAnswerMs.splice(0)) };
  }

  /**
   * Has `count` idle agents dial `to` (outbound calls), spread over the processes; resolves with
   * the calls started (fewer when agents are busy).
   */
  async dial(count: number, to: string): Promise<number> {
    const live = this.#workers.filter((w) => !w.done);
    if (count <= 0 || live.length === 0) {
      return 0;
    }
    const shares = live.map((_, i) => Math.floor(count / live.length) + (i < count % live.length ? 1 : 0));
    const replies = await Promise.allSettled(live.map((w, i) => (shares[i]! > 0 ? this.#ask<{ started: number }>(w, { type: 'dial', id: 0, count: shares[i]!, to }, 30_000) : Promise.resolve({ started: 0 }))));

    return replies.reduce((n, r) => n + (r.status === 'fulfilled' ? r.value.started : 0), 0);
  }

  /** Call set-up times (incoming → media flowing) collected since the last call, ms. */
  takeSetupTimes(): number[] {
    return this.#workers.flatMap((w) => w.setupMs.splice(0));
  }

  /**
   * Reads every live call's RTP counters. A process that does not answer within `timeoutMs`
   * (starved of CPU) contributes nothing; `unanswered` counts such processes.
   */
  async stats(timeoutMs = 60_000): Promise<{ calls: CallSample[]; failed: number; unanswered: number; tookMs: number }> {
    const t0 = performance.now();
    const replies = await Promise.allSettled(this.#workers.map((w) => this.#ask<StatsReply>(w, { type: 'stats', id: 0 }, timeoutMs)));
    const ok = replies.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));

    return {
      calls: ok.flatMap((r) => r.calls),
      failed: ok.reduce((n, r) => n + r.failed, 0),
      unanswered: replies.length - ok.length,
      tookMs: Math.round(performance.now() - t0),
    };
  }

  /** Every agent hangs up its calls (`call.hangup`: the gateway sends BYE to the trunk). */
  async hangupAll(timeoutMs = 60_000): Promise<{ hungUp: number; failed: number; unanswered: number }> {
    const replies = await Promise.allSettled(this.#workers.map((w) => this.#ask<{ hungUp: number; failed: number }>(w, { type: 'hangup-all', id: 0 }, timeoutMs)));
    const ok = replies.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));

    return { hungUp: ok.reduce((n, r) => n + r.hungUp, 0), failed: ok.reduce((n, r) => n + r.failed, 0), unanswered: replies.length - ok.length };
  }

  /** Asks every process to close its agents and exit; kills what is left after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    await Promise.all(
      this.#workers.map(async (w) => {
        if (w.done) {
          return;
        }
        w.stopping = true;
        const pids = processTree(w.pid);
        this.#ask(w, { type: 'stop', id: 0 }, graceMs).catch(() => undefined);
        const timer = setTimeout(() => {
          for (const pid of [...pids, ...(w.done ? [] : processTree(w.pid))]) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // gone
            }
          }
        }, graceMs);
        await w.exited;
        clearTimeout(timer);
      }),
    );
    this.#log(`agent processes stopped`);
  }
}
