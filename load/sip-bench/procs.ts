/**
 * Child processes of the SIP benchmark: spawned under `setpriv --pdeathsig TERM` (so that they
 * get SIGTERM when the benchmark dies, however it dies), with their output kept, a readiness wait
 * on their SIP port, and a stop that escalates from SIGTERM to SIGKILL of the whole tree.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { isListening, portInUse, processTree, type SocketProto } from './procfs.js';

/** A running child of the benchmark. */
export interface BenchProcess {
  /** What it is, for messages ("kamailio", "sipp UAS"). */
  name: string;
  child: ChildProcess;
  pid: number;
  /** stdout and stderr so far (the last 64 KiB of each). */
  output(): { stdout: string; stderr: string };
  /** Settles with the exit code (or the signal name) when it exits. */
  exited: Promise<number | string>;
  /** Whether it has exited. */
  hasExited(): boolean;
  /** The process and its descendants now. */
  tree(): number[];
  /** SIGTERM, then SIGKILL of the whole tree after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<number | string>;
}

let setpriv: boolean | undefined;

function withPdeathsig(cmd: string, args: string[]): [string, string[]] {
  setpriv ??= spawnSync('setpriv', ['--pdeathsig', 'TERM', '--', 'true'], { stdio: 'ignore' }).status === 0;

  return setpriv ? ['setpriv', ['--pdeathsig', 'TERM', '--', cmd, ...args]] : [cmd, args];
}

const live = new Set<BenchProcess>();
let hooked = false;

function hookExit(): void {
  if (hooked) {
    return;
  }
  hooked = true;
  process.once('exit', () => {
    for (const p of live) {
      for (const pid of p.tree()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });
}

/** Spawns a command as a benchmark child (no shell; `cwd` as given). */
export function spawnBenchProcess(name: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): BenchProcess {
  hookExit();
  const [file, argv] = withPdeathsig(cmd, args);
  // a process group of its own: a terminal's Ctrl-C reaches the runner only, which then ends the
  // run in order (its children still die with it: pdeathsig)
  const child = spawn(file, argv, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  const keep = (s: string): string => (s.length > 65536 ? s.slice(-65536) : s);
  child.stdout.on('data', (d: Buffer) => (stdout = keep(stdout + d.toString())));
  child.stderr.on('data', (d: Buffer) => (stderr = keep(stderr + d.toString())));
  let done = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('error', (err) => {
      done = true;
      stderr += `\n${err.message}`;
      resolve(-1);
    });
    child.once('exit', (code, signal) => {
      done = true;
      resolve(code ?? signal ?? -1);
    });
  });
  const pid = child.pid ?? -1;
  const proc: BenchProcess = {
    name,
    child,
    pid,
    output: () => ({ stdout, stderr }),
    exited,
    hasExited: () => done,
    tree: () => (done || pid < 0 ? [] : processTree(pid)),
    async stop(graceMs = 5000) {
      if (!done) {
        const pids = proc.tree();
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          for (const p of [...pids, ...proc.tree()]) {
            try {
              process.kill(p, 'SIGKILL');
            } catch {
              // already gone
            }
          }
        }, graceMs);
        await exited;
        clearTimeout(timer);
      }
      live.delete(proc);

      return exited;
    },
  };
  live.add(proc);
  void exited.then(() => live.delete(proc));

  return proc;
}

/**
 * Waits until the process (or one of its descendants) holds `port` (UDP bound, or TCP listening).
 * Rejects with its output when it exits first or does not get there within `timeoutMs`.
 */
export async function waitListening(p: BenchProcess, port: number, proto: SocketProto = 'udp', timeoutMs = 15_000): Promise<void> {
  const started = Date.now();
  for (;;) {
    if (p.hasExited()) {
      const code = await p.exited;
      const out = p.output();
      throw new Error(`${p.name} exited (${code}) before listening on ${proto} port ${port}:\n${(out.stderr + out.stdout).trim().slice(-3000)}`);
    }
    if (isListening(p.tree(), port, proto)) {
      return;
    }
    if (Date.now() - started > timeoutMs) {
      const out = p.output();
      throw new Error(`${p.name} did not listen on ${proto} port ${port} within ${timeoutMs} ms:\n${(out.stderr + out.stdout).trim().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

const taken = new Set<number>();

/**
 * A port that no UDP or TCP socket uses now, at random in 20000–32767 (below Linux's ephemeral
 * range), never the same twice in this process.
 */
export function pickFreePort(): number {
  for (let i = 0; i < 500; i++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    if (!taken.has(port) && !portInUse(port)) {
      taken.add(port);

      return port;
    }
  }
  throw new Error('no free port found in 20000-32767');
}
