/**
 * Debian's kamailio running docker/kamailio/kamailio.cfg (the dispatcher in front of the gateway
 * nodes) on loopback, for the tests: `startKamailio({ nodes })` writes the dispatcher list of the
 * given nodes into a temporary directory, starts kamailio on a free port with that list and a
 * control socket of its own, waits until it listens and answers on its control socket, and
 * returns where to send SIP and how to read the live dispatcher state (`list()`, through `kamcmd`
 * on the control socket).
 *
 * - The cfg's defines are passed with `-A` (see the cfg's header); `defines` adds or overrides any.
 * - kamailio runs in the foreground (`-DD -E`) as the leader of a process group of its own, under
 *   `setpriv --pdeathsig TERM` when available: `stop()` sends SIGTERM to the group, SIGKILL after
 *   5 s; the group is killed on process exit too, so no kamailio outlives the tests.
 * - Its stderr (the log) is kept: `log()` returns it, and failures quote its tail.
 * - The temporary directory is removed by `stop()` unless `RINGBRIDGE_KAMAILIO_KEEP=1`.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isListening } from '../../load/sip-bench/procfs.js';
import { projectRoot } from '../../src/util/paths.js';
import { freePort } from './sipp.js';

/** A gateway node as the dispatcher reaches it. */
export interface KamailioNode {
  host: string;
  port: number;
  /** Default udp. */
  transport?: 'udp' | 'tcp';
}

/** Options of startKamailio(). */
export interface KamailioOptions {
  /** The gateway nodes: dispatcher set 1, in this order. */
  nodes: KamailioNode[];
  /** Seconds between OPTIONS probes of each node (PING_INTERVAL_S). Default 1. */
  pingIntervalS?: number;
  /** An INVITE branch without any reply from its node is given up after this long (NODE_TIMEOUT_MS). Default 1500. */
  nodeTimeoutMs?: number;
  /** Non-INVITE transactions and probes time out after this long (FR_TIMER_MS). Default 1500. */
  frTimerMs?: number;
  /** Listen address (SIP_ADDR). Default 127.0.0.1. */
  address?: string;
  /** Port (SIP_PORT, UDP and TCP). Default: a free one from freePort(). */
  port?: number;
  /** Further defines, `-A NAME=value` (string values are quoted for the cfg). */
  defines?: Record<string, string | number>;
  /** How long to wait until it listens and answers on its control socket. Default 15 000 ms. */
  readyTimeoutMs?: number;
}

/** One destination of the live dispatcher list. */
export interface DispatcherEntry {
  /** Dispatcher set id. */
  set: number;
  /** `sip:127.0.0.2:5060`, `sip:127.0.0.2:5060;transport=tcp`. */
  uri: string;
  /** Kamailio's two-letter flags: state (A, I, T, D) and probing (P) or not (X). */
  flags: string;
  state: 'active' | 'inactive' | 'trying' | 'disabled';
  probing: boolean;
  priority: number;
}

/** A running kamailio. */
export interface KamailioProcess {
  /** `127.0.0.1:<port>`: where SIP peers send (UDP or TCP). */
  sipTarget: string;
  address: string;
  port: number;
  pid: number;
  /** The temporary directory (dispatcher list, control socket). */
  dir: string;
  /** The dispatcher list file it was started with. */
  listFile: string;
  /** The live dispatcher state (`kamcmd dispatcher.list`). */
  list(): Promise<DispatcherEntry[]>;
  /** The live entry of one node (undefined if it is not in the list). */
  entry(node: KamailioNode): Promise<DispatcherEntry | undefined>;
  /**
   * Polls list() until the node's entry is in `state`; resolves with the time it took (ms),
   * rejects after `timeoutMs` naming what the list showed last.
   */
  waitForState(node: KamailioNode, state: DispatcherEntry['state'], timeoutMs?: number): Promise<number>;
  /** Runs an RPC command through kamcmd and returns its output. */
  rpc(command: string, ...args: string[]): Promise<string>;
  /** What kamailio wrote to stderr so far. */
  log(): string;
  /** Stops it (SIGTERM to its process group, SIGKILL after 5 s) and removes its directory. */
  stop(): Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>;
}

/** The cfg the tests run: the same file the Kamailio image (docker/kamailio/Dockerfile) copies in, which docker/compose.yaml builds. */
export function kamailioCfgPath(): string {
  return path.join(projectRoot(), 'docker', 'kamailio', 'kamailio.cfg');
}

function sbin(cmd: string): string {
  for (const dir of ['/usr/sbin', '/usr/local/sbin']) {
    const p = path.join(dir, cmd);
    if (fs.existsSync(p)) {
      return p;
    }
  }

  return cmd;
}

/** Whether kamailio and kamcmd are installed (Debian package kamailio). */
export function hasKamailio(): boolean {
  return spawnSync(sbin('kamailio'), ['-v'], { stdio: 'ignore' }).status === 0 && fs.existsSync(sbin('kamcmd'));
}

/** The SIP URI of a node in the dispatcher list. */
export function nodeUri(node: KamailioNode): string {
  const host = node.host.includes(':') ? `[${node.host}]` : node.host;

  return `sip:${host}:${node.port}${node.transport === 'tcp' ? ';transport=tcp' : ''}`;
}

/** The text of a dispatcher list: set 1, one line per node, flags 0 (active until a probe fails). */
export function dispatcherList(nodes: KamailioNode[], set = 1): string {
  return `# setid destination flags priority\n${nodes.map((n) => `${set} ${nodeUri(n)} 0 0\n`).join('')}`;
}

interface Tree {
  [key: string]: (string | Tree)[];
}

/** Parses kamcmd's indented `KEY: value` / `KEY: { ... }` output; repeated keys collect in arrays. */
export function parseKamcmd(text: string): Tree {
  const root: Tree = {};
  const stack: Tree[] = [root];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line === '{') {
      continue;
    }
    const top = stack[stack.length - 1]!;
    if (line === '}') {
      if (stack.length > 1) {
        stack.pop();
      }
      continue;
    }
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) {
      continue;
    }
    const key = m[1]!.trim();
    (top[key] ??= []);
    if (m[2] === '{') {
      const child: Tree = {};
      top[key].push(child);
      stack.push(child);
    } else {
      top[key].push(m[2]!);
    }
  }

  return root;
}

function sub(t: Tree | string | undefined, key: string): Tree[] {
  if (t === undefined || typeof t === 'string') {
    return [];
  }

  return (t[key] ?? []).filter((v): v is Tree => typeof v !== 'string');
}

function val(t: Tree, key: string): string | undefined {
  const v = t[key]?.[0];

  return typeof v === 'string' ? v : undefined;
}

const STATES: Record<string, DispatcherEntry['state']> = { A: 'active', I: 'inactive', T: 'trying', D: 'disabled' };

/** The destinations in `kamcmd dispatcher.list` output. */
export function parseDispatcherList(text: string): DispatcherEntry[] {
  const out: DispatcherEntry[] = [];
  const tree = parseKamcmd(text);
  // kamcmd wraps the answer in an anonymous `{ ... }`: its keys land at the root.
  for (const records of sub(tree, 'RECORDS')) {
    for (const set of sub(records, 'SET')) {
      const id = Number(val(set, 'ID'));
      for (const targets of sub(set, 'TARGETS')) {
        for (const dest of sub(targets, 'DEST')) {
          const flags = val(dest, 'FLAGS') ?? '';
          out.push({
            set: id,
            uri: val(dest, 'URI') ?? '',
            flags,
            state: STATES[flags[0] ?? ''] ?? 'active',
            probing: flags.includes('P'),
            priority: Number(val(dest, 'PRIORITY') ?? 0),
          });
        }
      }
    }
  }

  return out;
}

/** A define's value as the cfg needs it: numbers, addresses and names bare, anything else a quoted string. */
function defineValue(v: string | number): string {
  return typeof v === 'number' || /^[A-Za-z0-9_.:[\]-]+$/.test(v) ? String(v) : `"${v}"`;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) {
    return;
  }
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) {
    return;
  }
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) {
      killGroup(child, 'SIGKILL');
    }
  });
}

let setprivOk: boolean | undefined;

function hasSetpriv(): boolean {
  setprivOk ??= spawnSync('setpriv', ['--pdeathsig', 'TERM', '--', 'true'], { stdio: 'ignore' }).status === 0;

  return setprivOk;
}

function tail(s: string, lines: number): string {
  return s.trimEnd().split('\n').slice(-lines).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function runKamcmd(socket: string, args: string[], timeoutMs = 5000): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(sbin('kamcmd'), ['-s', socket, ...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: `${stdout}${stderr}` });
    });
  });
}

/** Starts kamailio with docker/kamailio/kamailio.cfg for these nodes; see the file comment. */
export async function startKamailio(opts: KamailioOptions): Promise<KamailioProcess> {
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ?? (await freePort(opts.address ?? '127.0.0.1'));
    try {
      return await launch(opts, port);
    } catch (err) {
      // Another process took the port between freePort() and kamailio's bind: try another.
      if (opts.port === undefined && attempt < 2 && err instanceof Error && /Address already in use|bind/i.test(err.message)) {
        continue;
      }
      throw err;
    }
  }
}

async function launch(opts: KamailioOptions, port: number): Promise<KamailioProcess> {
  installExitHook();
  const address = opts.address ?? '127.0.0.1';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-kamailio-'));
  const listFile = path.join(dir, 'dispatcher.list');
  fs.writeFileSync(listFile, dispatcherList(opts.nodes));
  const ctlPath = path.join(dir, 'ctl.sock');
  const ctl = `unix:${ctlPath}`;
  const defines: Record<string, string | number> = {
    SIP_ADDR: address,
    SIP_PORT: port,
    DISPATCHER_LIST: listFile,
    CTL_SOCKET: ctl,
    PING_INTERVAL_S: opts.pingIntervalS ?? 1,
    NODE_TIMEOUT_MS: opts.nodeTimeoutMs ?? 1500,
    FR_TIMER_MS: opts.frTimerMs ?? 1500,
    ...opts.defines,
  };
  const args = ['-f', kamailioCfgPath(), '-DD', '-E', '-m', '32', '-M', '4'];
  for (const [k, v] of Object.entries(defines)) {
    args.push('-A', `${k}=${defineValue(v)}`);
  }
  const bin = sbin('kamailio');
  const [cmd, cmdArgs] = hasSetpriv() ? ['setpriv', ['--pdeathsig', 'TERM', '--', bin, ...args]] : [bin, args];
  const child = spawn(cmd, cmdArgs, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  running.add(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 1_000_000) {
      stderr = stderr.slice(-500_000);
    }
  });
  let exit: { exitCode: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (err) => {
      stderr += `\ncannot start kamailio: ${err.message} (is the Debian package kamailio installed?)\n`;
    });
    child.once('close', (code, signal) => {
      running.delete(child);
      exit = { exitCode: code, signal };
      resolve(exit);
    });
  });
  const pid = child.pid ?? -1;
  const describe = (what: string) => `kamailio ${what} (pid ${pid}, port ${port}, dir ${dir})\n${bin} ${args.join(' ')}\nstderr (tail):\n${tail(stderr, 25)}`;

  const stop = async () => {
    if (!exit) {
      killGroup(child, 'SIGTERM');
      const hard = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(hard);
    }
    // workers left behind by a killed leader (they share its group)
    killGroup(child, 'SIGKILL');
    if (process.env.RINGBRIDGE_KAMAILIO_KEEP !== '1') {
      fs.rmSync(dir, { recursive: true, force: true });
    }

    return exit!;
  };

  // Ready: its UDP socket is bound and its TCP socket listens (kamailio binds them in the leader
  // before forking the workers), and kamcmd gets an answer over the control socket.
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  for (;;) {
    if (exit) {
      await stop();
      throw new Error(describe(`exited before it was ready (exit ${exit.exitCode ?? exit.signal})`));
    }
    const pids = pid > 0 ? [pid, ...childPids(pid)] : [];
    if (pids.length > 0 && isListening(pids, port, 'udp') && isListening(pids, port, 'tcp') && fs.existsSync(ctlPath)) {
      const r = await runKamcmd(ctl, ['dispatcher.list'], 2000);
      if (r.ok) {
        break;
      }
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(describe('was not ready in time'));
    }
    await sleep(50);
  }

  const rpc = async (command: string, ...rest: string[]) => {
    const r = await runKamcmd(ctl, [command, ...rest]);
    if (!r.ok) {
      throw new Error(`kamcmd ${command} ${rest.join(' ')} failed: ${r.out.trim()}\n${describe('log')}`);
    }

    return r.out;
  };
  const list = async () => parseDispatcherList(await rpc('dispatcher.list'));
  const entry = async (node: KamailioNode) => {
    const uri = nodeUri(node);

    return (await list()).find((e) => e.uri === uri);
  };

  return {
    sipTarget: `${address.includes(':') ? `[${address}]` : address}:${port}`,
    address,
    port,
    pid,
    dir,
    listFile,
    list,
    entry,
    async waitForState(node, state, timeoutMs = 10_000) {
      const started = Date.now();
      let last: DispatcherEntry | undefined;
      for (;;) {
        last = await entry(node);
        if (last?.state === state) {
          return Date.now() - started;
        }
        if (Date.now() - started > timeoutMs) {
          throw new Error(`${nodeUri(node)} did not become ${state} within ${timeoutMs} ms; last seen ${last ? `${last.flags} (${last.state})` : 'not in the list'}\n${describe('log')}`);
        }
        await sleep(100);
      }
    },
    rpc,
    log: () => stderr,
    stop,
  };
}

/** Pids of a process's children (kamailio's workers), from /proc. */
function childPids(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .flatMap((p) => [Number(p), ...childPids(Number(p))]);
  } catch {
    return [];
  }
}
