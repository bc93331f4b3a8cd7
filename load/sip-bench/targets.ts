/**
 * The SIP elements the benchmark can measure. Each one listens for SIP over UDP on 127.0.0.1 at a
 * port the harness gives it and relays every call to the sipp UAS.
 *
 * - `kamailio`: Debian's kamailio as a transaction-stateful, record-routing proxy
 *   (load/sip-bench/kamailio-proxy.cfg), installed with apt-get when missing.
 * - `command`: any command line, so that ringbridge's SIP engine (or anything else) can be
 *   plugged in. `{port}`, `{host}`, `{uas}`, `{uas_port}` and `{uas_uri}` in it are replaced,
 *   and the same values are in the environment as SIP_BENCH_PORT, SIP_BENCH_HOST,
 *   SIP_BENCH_UAS and SIP_BENCH_UAS_URI. It runs through /bin/sh (`exec`), from the project root.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { aptInstall, hasCommand } from '../../src/setup/apt.mjs';
import { projectRoot } from '../../src/util/paths.js';
import { spawnBenchProcess, waitListening, type BenchProcess } from './procs.js';

/** Where the element under test sends the calls it relays. */
export interface UasAddress {
  host: string;
  port: number;
}

/** A started element under test. */
export interface Target {
  /** `kamailio` or `command`. */
  kind: 'kamailio' | 'command';
  /** One line saying what runs, with its version when known. */
  description: string;
  /** The SIP port it listens on (UDP, 127.0.0.1). */
  port: number;
  process: BenchProcess;
  /** Stops it (SIGTERM, then SIGKILL of its process tree). */
  stop(): Promise<void>;
}

/** Options of the kamailio target. */
export interface KamailioOptions {
  port: number;
  uas: UasAddress;
  /** UDP worker processes (kamailio -n). */
  workers: number;
  /** Shared memory in MB (kamailio -m). */
  shmMb?: number;
  /** Private memory per process in MB (kamailio -M). */
  pkgMb?: number;
  log?: (msg: string) => void;
}

/** The first line of `kamailio -v`, or undefined when it is not installed. */
export function kamailioVersion(): string | undefined {
  const r = spawnSync('kamailio', ['-v'], { encoding: 'utf8' });

  return r.status === 0 ? r.stdout.split('\n')[0]?.replace(/^version:\s*/, '').trim() : undefined;
}

/**
 * Makes sure kamailio is installed: apt-get install as root, otherwise a SetupError that names
 * the package and the command to run.
 */
export function ensureKamailio(log: (msg: string) => void = () => undefined): void {
  if (!hasCommand('kamailio')) {
    aptInstall(['kamailio'], 'the SIP benchmark (target kamailio)', log);
  }
}

/** Starts kamailio with load/sip-bench/kamailio-proxy.cfg and waits until it listens. */
export async function startKamailio(opts: KamailioOptions): Promise<Target> {
  ensureKamailio(opts.log);
  const cfg = path.join(projectRoot(), 'load', 'sip-bench', 'kamailio-proxy.cfg');
  const args = [
    '-f', cfg,
    '-DD', // stay in the foreground, fork the workers
    '-E', // log to stderr
    '-l', `udp:127.0.0.1:${opts.port}`,
    '-n', String(opts.workers),
    '-m', String(opts.shmMb ?? 256),
    '-M', String(opts.pkgMb ?? 16),
    '-A', `UAS_URI="sip:${opts.uas.host}:${opts.uas.port}"`,
  ];
  const proc = spawnBenchProcess('kamailio', 'kamailio', args, { cwd: projectRoot() });
  try {
    await waitListening(proc, opts.port, 'udp');
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }

  return {
    kind: 'kamailio',
    description: `${kamailioVersion() ?? 'kamailio (version unknown)'}, ${opts.workers} UDP workers, ${opts.shmMb ?? 256} MB shared memory, stateful proxy with record-routing`,
    port: opts.port,
    process: proc,
    stop: async () => {
      await proc.stop(5000);
    },
  };
}

/** Replaces the placeholders of a `--cmd` line. */
export function expandCommand(cmd: string, port: number, uas: UasAddress): string {
  const values: Record<string, string> = {
    port: String(port),
    host: '127.0.0.1',
    uas: `${uas.host}:${uas.port}`,
    uas_port: String(uas.port),
    uas_uri: `sip:${uas.host}:${uas.port}`,
  };

  return cmd.replace(/\{(port|host|uas|uas_port|uas_uri)\}/g, (_m, k: string) => values[k]!);
}

/** Starts an arbitrary command line as the element under test and waits until it listens. */
export async function startCommand(cmd: string, port: number, uas: UasAddress, readyTimeoutMs = 30_000): Promise<Target> {
  const line = expandCommand(cmd, port, uas);
  const env = {
    ...process.env,
    SIP_BENCH_PORT: String(port),
    SIP_BENCH_HOST: '127.0.0.1',
    SIP_BENCH_UAS: `${uas.host}:${uas.port}`,
    SIP_BENCH_UAS_URI: `sip:${uas.host}:${uas.port}`,
  };
  const proc = spawnBenchProcess(`command "${line}"`, '/bin/sh', ['-c', `exec ${line}`], { cwd: projectRoot(), env });
  try {
    await waitListening(proc, port, 'udp', readyTimeoutMs);
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }

  return {
    kind: 'command',
    description: line,
    port,
    process: proc,
    stop: async () => {
      await proc.stop(5000);
    },
  };
}
