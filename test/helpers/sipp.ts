/**
 * sipp as the real SIP peer of the tests: run a scenario to completion (`runSipp`) or keep one
 * in the background until the test is done with it (`startSipp`), then assert on what went over
 * the wire through the message log.
 *
 * - Scenarios are the files in test/sipp/ (by name, `'uac-invite-bye'`), any XML file by path, or
 *   sipp's built-ins (`'uac'`, `'uas'`, ...). A scenario may declare in comments the `-key` values
 *   it uses with their defaults (`@key hold_ms 500 ...`) and command-line options it needs
 *   (`@arg udp -nr ...`); see test/sipp/README.md.
 * - Every run gets a temporary directory (its working directory) holding the message log, error
 *   log, call-debug log and statistics CSV. The directory is removed after a successful run and
 *   kept (and named in `describe()`) when the run failed or `RINGBRIDGE_SIPP_KEEP=1`.
 * - Ports: `freePort()` hands out ports that are free for both UDP and TCP, picked at random
 *   below the kernel's ephemeral range so that tests running in parallel processes do not collide.
 * - Readiness of a background sipp: sipp prints nothing when its stdout is not a terminal, and
 *   probing it with SIP traffic would start a call in a UAS scenario, so `ready` resolves once
 *   /proc shows that this very sipp process holds a socket bound to its port (UDP) or listening
 *   on it (TCP). From then on the kernel queues whatever arrives, so nothing sent afterwards is lost.
 * - sipp obeys any UDP datagram on its control port ('q' quits it); each run gets a control port
 *   of its own on 127.0.0.1 instead of the shared default range from 8888.
 * - No sipp outlives the test process: each one is started under `setpriv --pdeathsig TERM` (the
 *   kernel sends it SIGTERM when the test process dies, however it dies), gets sipp's own
 *   `-timeout`, is killed by the helper when it overruns, and is killed on process exit.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import fs from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isListening, portInUse } from '../../load/sip-bench/procfs.js';
import { projectRoot } from '../../src/util/paths.js';

/** SIP transport of a sipp run. */
export type SippTransport = 'udp' | 'tcp';

/** Options of one sipp process. */
export interface SippOptions {
  /**
   * A scenario of test/sipp/ by name (`'uac-invite-bye'`), a path to an XML file (absolute or
   * relative to the project root), or a sipp built-in (`'uac'`, `'uas'`, `'regexp'`, ...).
   */
  scenario: string;
  /** Where a UAC sends its requests, `'127.0.0.1:5060'` or `'[::1]:5060'`; omitted for a UAS. */
  target?: string;
  /** `'udp'` (default; sipp `-t u1`, one socket) or `'tcp'` (`-t t1`, one connection). */
  transport?: SippTransport;
  /** Calls to process before exiting (`-m`). Default 1. */
  calls?: number;
  /** Calls per rate period (`-r`). sipp's default is 10. */
  rate?: number;
  /** Rate period in milliseconds (`-rp`). sipp's default is 1000. */
  rateMs?: number;
  /** Local SIP port (`-p`). Default: a free port from `freePort()`. */
  localPort?: number;
  /** Local address (`-i`), also used for media. Default `127.0.0.1`; `'::1'` for IPv6. */
  localIp?: string;
  /** Scenario keywords (`-key name value`); they override the scenario's declared defaults. */
  keys?: Record<string, string>;
  /** User part of the Request-URI, `[service]` (`-s`). sipp's default is `service`. */
  service?: string;
  /**
   * Digest credentials: passed as `-au`/`-ap` (what `[authentication]` answers a challenge with)
   * and as the keys `auth_user`/`auth_pass` (what the UAS scenarios' `verifyauth` checks against).
   */
  auth?: { username: string; password: string };
  /** Deadline of the whole run in ms (sipp gets `-timeout` too). Default 30 000. */
  timeoutMs?: number;
  /** Further sipp arguments, appended last. */
  extraArgs?: string[];
  /** Keep the run's directory even when it succeeded. Default: `RINGBRIDGE_SIPP_KEEP=1`. */
  keepFiles?: boolean;
}

/** One SIP message from sipp's message log. */
export interface SippMessage {
  direction: 'sent' | 'received';
  /** Transport as logged by sipp (`UDP`, `TCP`). */
  transport: string;
  /** Time stamp as logged by sipp (`2026-11-29 13:34:12.734210`). */
  time: string;
  /** The message, lines separated by `\r\n` as on the wire. */
  text: string;
  /** `INVITE`, `BYE`, ... for requests; undefined for responses. */
  method?: string;
  /** Status code for responses; undefined for requests. */
  status?: number;
  /** Method of the CSeq header (for responses: the method they answer). */
  cseqMethod?: string;
}

/** What a finished sipp run left behind. */
export interface SippResult {
  /** sipp's exit status (0: every call succeeded; 1: some call failed; 97, 99, 255: see sipp -h), or null when killed by a signal. */
  exitCode: number | null;
  /** The signal that ended sipp, if one did. */
  signal: NodeJS.Signals | null;
  /** Whether the run hit its deadline (sipp's `-timeout` or the helper's kill). */
  timedOut: boolean;
  /** The command line that ran (without the `setpriv` prefix). */
  args: string[];
  /** The local SIP port sipp used. */
  port: number;
  /** The run's directory (removed after a successful run unless kept). */
  dir: string;
  stdout: string;
  stderr: string;
  /** The full message log (`-trace_msg`). */
  messages: string;
  /** The error log (`-trace_err`): unexpected messages, aborted calls, warnings. */
  errors: string;
  /** The call-debug log (`-trace_calldebug`): the messages of each aborted call. */
  callDebug: string;
  /** Last row of the statistics CSV (`-trace_stat`), by column name; undefined if none was written. */
  stats?: Record<string, string>;
  /** `SuccessfulCall(C)` of the statistics (0 without statistics). */
  successfulCalls: number;
  /** `FailedCall(C)` of the statistics (0 without statistics). */
  failedCalls: number;
  /** The parsed message log, in order. */
  log: SippMessage[];
  /** Compact flow, one line per message: `> INVITE`, `< 180 INVITE`, `> ACK`, ... */
  flow: string[];
  /**
   * Texts of the messages sipp sent of one kind: a method (`'BYE'`) or a status code (`200`,
   * `'487'`), optionally only those whose CSeq method is `cseqMethod` (`sent(200, 'BYE')`).
   */
  sent(kind: string | number, cseqMethod?: string): string[];
  /** Texts of the messages sipp received of one kind; see `sent`. */
  received(kind: string | number, cseqMethod?: string): string[];
  /** A multi-line diagnostic (command, exit, flow, error log and stderr tails) for assertion messages. */
  describe(): string;
}

/** A sipp running in the background. */
export interface SippProcess {
  /** The local SIP port it listens on. */
  port: number;
  /** Its pid. */
  pid: number;
  /** Resolves once it holds its SIP socket (see the file comment); rejects if it exits first. */
  ready: Promise<void>;
  /** Settles when it exits: resolves with the result, rejects with `SippTimeoutError` on its deadline. */
  result: Promise<SippResult>;
  /**
   * Ends it and returns its result: SIGTERM (sipp writes its statistics and logs, exit status 0
   * when no call failed), SIGKILL if still running 3 s later. With `graceMs`, first SIGUSR1 (take
   * no new calls, finish the current ones) and SIGTERM only after that long.
   */
  stop(graceMs?: number): Promise<SippResult>;
}

/** A sipp run that overran its deadline; `result` holds what it left behind. */
export class SippTimeoutError extends Error {
  /** The run's result (with `timedOut` set). */
  readonly result: SippResult;

  /** @param result what the run left behind */
  constructor(result: SippResult) {
    super(`sipp timed out\n${result.describe()}`);
    this.name = 'SippTimeoutError';
    this.result = result;
  }
}

/** sipp's built-in scenarios (`-sn`). */
export const SIPP_BUILTINS: ReadonlySet<string> = new Set([
  'uac', 'uas', 'regexp', 'branchc', 'branchs', '3pcc-C-A', '3pcc-C-B', '3pcc-A', '3pcc-B', 'uac_pcap',
]);

/** The directory of the scenario library. */
export function sippScenarioDir(): string {
  return path.join(projectRoot(), 'test', 'sipp');
}

/** Declarations a scenario file makes in its comments: key defaults and required options. */
export interface ScenarioDirectives {
  /** `@key name default description`: keywords the scenario uses, with their defaults. */
  keys: Record<string, string>;
  /** `@arg udp|tcp|any option...`: options the scenario needs on that transport. */
  args: { transport: SippTransport | 'any'; args: string[] }[];
}

/** Reads the `@key` and `@arg` declarations from a scenario file's comments. */
export function scenarioDirectives(file: string): ScenarioDirectives {
  const text = fs.readFileSync(file, 'utf8');
  const keys: Record<string, string> = {};
  const args: ScenarioDirectives['args'] = [];
  // `@key name default  description`: the default is one word or a "quoted string".
  for (const m of text.matchAll(/^[ \t]*@key[ \t]+(\S+)[ \t]+(?:"([^"]*)"|(\S+))/gm)) {
    keys[m[1]!] = m[2] ?? m[3]!;
  }
  // `@arg transport options  description`: two or more spaces end the options.
  for (const m of text.matchAll(/^[ \t]*@arg[ \t]+(udp|tcp|any)[ \t]+(.+?)(?: {2,}.*)?$/gm)) {
    args.push({ transport: m[1] as SippTransport | 'any', args: m[2]!.trim().split(/\s+/) });
  }

  return { keys, args };
}

/** Resolves a scenario option to sipp arguments and, for files, the file's path. */
export function resolveScenario(scenario: string): { args: string[]; file?: string; name: string } {
  if (SIPP_BUILTINS.has(scenario)) {
    return { args: ['-sn', scenario], name: scenario };
  }
  const candidates = scenario.endsWith('.xml')
    ? [path.resolve(projectRoot(), scenario)]
    : [path.join(sippScenarioDir(), `${scenario}.xml`)];
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) {
    throw new TypeError(`unknown sipp scenario ${JSON.stringify(scenario)}: not a sipp built-in and no file ${candidates.join(', ')}`);
  }

  return { args: ['-sf', file], file, name: path.basename(file, '.xml') };
}

const handedOut = new Set<number>();

function canBind(kind: 'udp' | 'tcp', host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (kind === 'tcp') {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
    } else {
      const sock = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
      sock.once('error', () => {
        sock.close();
        resolve(false);
      });
      sock.bind({ port, address: host, exclusive: true }, () => sock.close(() => resolve(true)));
    }
  });
}

function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 12768);
}

/**
 * A port that is free on `host` for both UDP and TCP right now (checked by binding both). Picked
 * at random in 20000–32767, below Linux's ephemeral range, so the kernel never hands it to
 * another socket on its own; never the same twice in one process.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = randomPort();
    if (handedOut.has(port) || portInUse(port)) {
      continue;
    }
    if ((await canBind('udp', host, port)) && (await canBind('tcp', host, port))) {
      handedOut.add(port);

      return port;
    }
  }
  throw new Error(`no free UDP+TCP port found on ${host}`);
}

/**
 * Like `freePort()`, synchronously: a port in the same range that no UDP or TCP socket of this
 * network namespace uses, going by /proc/net (no bind attempt).
 */
export function freePortSync(): number {
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = randomPort();
    if (!handedOut.has(port) && !portInUse(port)) {
      handedOut.add(port);

      return port;
    }
  }
  throw new Error('no free UDP+TCP port found');
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) {
    return;
  }
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) {
      child.kill('SIGKILL');
    }
  });
}

let setprivChecked: boolean | undefined;

function hasSetpriv(): boolean {
  setprivChecked ??= spawnSync('setpriv', ['--pdeathsig', 'TERM', '--', 'true'], { stdio: 'ignore' }).status === 0;

  return setprivChecked;
}

function formatHost(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

/** The sipp command line for these options, port and run directory (exported for the tests of the helper). */
export function sippArgs(opts: SippOptions, port: number, dir: string): string[] {
  const scen = resolveScenario(opts.scenario);
  const transport = opts.transport ?? 'udp';
  const directives = scen.file ? scenarioDirectives(scen.file) : { keys: {}, args: [] };
  // Scenario defaults, then the credentials, then explicit keys.
  const keys: Record<string, string> = {
    ...directives.keys,
    ...(opts.auth ? { auth_user: opts.auth.username, auth_pass: opts.auth.password } : {}),
    ...opts.keys,
  };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const args = [...scen.args];
  if (opts.target) {
    args.push(opts.target);
  }
  args.push('-t', transport === 'tcp' ? 't1' : 'u1');
  args.push('-i', opts.localIp ?? '127.0.0.1', '-p', String(port));
  args.push('-m', String(opts.calls ?? 1));
  if (opts.rate !== undefined) {
    args.push('-r', String(opts.rate));
  }
  if (opts.rateMs !== undefined) {
    args.push('-rp', String(opts.rateMs));
  }
  for (const [k, v] of Object.entries(keys)) {
    args.push('-key', k, v);
  }
  if (opts.service !== undefined) {
    args.push('-s', opts.service);
  }
  if (opts.auth) {
    args.push('-au', opts.auth.username, '-ap', opts.auth.password);
  }
  args.push('-timeout', `${Math.max(1, Math.ceil(timeoutMs / 1000))}s`, '-timeout_error');
  args.push('-nostdin');
  // sipp obeys any UDP datagram on its control port ('q' quits, 'p' pauses, ...). By default that
  // is the first free one from 8888 on all addresses, where a stray packet of another test could
  // land; a port of our own on loopback keeps it out of reach.
  args.push('-ci', '127.0.0.1', '-cp', String(freePortSync()));
  args.push('-trace_msg', '-message_file', path.join(dir, 'messages.log'));
  args.push('-trace_err', '-error_file', path.join(dir, 'errors.log'));
  args.push('-trace_calldebug', '-calldebug_file', path.join(dir, 'calldebug.log'));
  args.push('-trace_stat', '-stf', path.join(dir, 'stats.csv'));
  for (const d of directives.args) {
    if (d.transport === 'any' || d.transport === transport) {
      args.push(...d.args);
    }
  }
  args.push(...(opts.extraArgs ?? []));

  return args;
}

/** Splits sipp's message log into messages. */
export function parseMessageLog(log: string): SippMessage[] {
  const out: SippMessage[] = [];
  const blocks = log.split(/^-{40,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$/m);
  // blocks: [preamble, time1, body1, time2, body2, ...]
  for (let i = 1; i + 1 < blocks.length; i += 2) {
    const time = blocks[i]!;
    const body = blocks[i + 1]!.replace(/\r\n/g, '\n');
    const head = /^\s*(\w+) (?:control )?message (sent|received)[^\n]*\n\n/.exec(body);
    if (!head) {
      continue; // a note, not a message
    }
    let text = body.slice(head[0].length);
    // sipp may append notes ("UDP message lost (recv).") after a message; cut at the first one.
    text = text.replace(/\n+(?:\w+ message (?:\(retrans\) )?lost|Ignoring |Discarded message)[\s\S]*$/, '');
    text = text.replace(/\n+$/, '');
    const msg = parseSipText(text);
    out.push({ direction: head[2] as 'sent' | 'received', transport: head[1]!, time, text: text.replace(/\n/g, '\r\n'), ...msg });
  }

  return out;
}

function parseSipText(text: string): Pick<SippMessage, 'method' | 'status' | 'cseqMethod'> {
  const first = text.split('\n', 1)[0] ?? '';
  const cseq = sipHeader(text, 'CSeq');
  const cseqMethod = cseq?.trim().split(/\s+/)[1];
  const status = /^SIP\/2\.0 (\d{3})/.exec(first);
  if (status) {
    return { status: Number(status[1]), cseqMethod };
  }
  const method = /^([A-Z]+) \S+ SIP\/2\.0/.exec(first);

  return { method: method?.[1], cseqMethod };
}

const COMPACT: Record<string, string> = {
  'call-id': 'i', contact: 'm', 'content-encoding': 'e', 'content-length': 'l', 'content-type': 'c',
  from: 'f', subject: 's', supported: 'k', to: 't', via: 'v', event: 'o', 'refer-to': 'r',
  'referred-by': 'b', 'allow-events': 'u', 'session-expires': 'x',
};

/**
 * All values of a header in a SIP message (one entry per header line, in order; compact forms
 * such as `v:` for Via are found too). Only the header section is searched.
 */
export function sipHeaders(message: string, name: string): string[] {
  const head = message.split(/\r?\n\r?\n/, 1)[0] ?? '';
  // Unfold continuation lines first.
  const lines = head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/).slice(1);
  const wanted = new Set([name.toLowerCase()]);
  const compact = COMPACT[name.toLowerCase()];
  if (compact) {
    wanted.add(compact);
  }
  const out: string[] = [];
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0 && wanted.has(line.slice(0, colon).trim().toLowerCase())) {
      out.push(line.slice(colon + 1).trim());
    }
  }

  return out;
}

/** The first value of a header in a SIP message, or undefined. */
export function sipHeader(message: string, name: string): string | undefined {
  return sipHeaders(message, name)[0];
}

/** The body of a SIP message (after the blank line). */
export function sipBody(message: string): string {
  const m = /\r?\n\r?\n/.exec(message);

  return m ? message.slice(m.index + m[0].length) : '';
}

function md5(s: string): string {
  return createHash('md5').update(s).digest('hex');
}

/** The parameters of a `Digest ...` credentials or challenge value. */
export function digestParams(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  const rest = value.replace(/^\s*Digest\s+/i, '');
  for (const m of rest.matchAll(/([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))/g)) {
    out[m[1]!.toLowerCase()] = m[2] ?? m[3] ?? '';
  }

  return out;
}

/**
 * Checks the digest credentials of a request (its `Authorization` or `Proxy-Authorization`
 * header) against a username and password, per RFC 2617 with MD5 and qop `auth` or none.
 * Returns the parsed parameters and whether the response matches. Needed because sipp 3.6.1's
 * `verifyauth` reads only the `Authorization` header, so it cannot check the answer to a 407.
 */
export function verifyDigest(request: string, creds: { username: string; password: string }): { ok: boolean; params: Record<string, string> } {
  const value = sipHeader(request, 'Proxy-Authorization') ?? sipHeader(request, 'Authorization');
  if (!value || !/^\s*Digest\s/i.test(value)) {
    return { ok: false, params: {} };
  }
  const p = digestParams(value);
  const method = /^([A-Z]+) /.exec(request)?.[1] ?? '';
  const ha1 = md5(`${creds.username}:${p.realm ?? ''}:${creds.password}`);
  const ha2 = md5(`${method}:${p.uri ?? ''}`);
  const expected = p.qop
    ? md5(`${ha1}:${p.nonce ?? ''}:${p.nc ?? ''}:${p.cnonce ?? ''}:${p.qop}:${ha2}`)
    : md5(`${ha1}:${p.nonce ?? ''}:${ha2}`);

  return { ok: p.username === creds.username && expected === p.response, params: p };
}

function parseStats(csv: string): Record<string, string> | undefined {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  if (lines.length < 2) {
    return undefined;
  }
  const names = lines[0]!.split(';');
  const values = lines[lines.length - 1]!.split(';');
  const out: Record<string, string> = {};
  names.forEach((n, i) => {
    if (n !== '') {
      out[n] = values[i] ?? '';
    }
  });

  return out;
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function matchKind(m: SippMessage, kind: string | number, cseqMethod?: string): boolean {
  const k = String(kind).toUpperCase();
  const hit = /^\d{3}$/.test(k) ? m.status === Number(k) : m.method === k;

  return hit && (cseqMethod === undefined || m.cseqMethod === cseqMethod.toUpperCase());
}

function tail(s: string, lines: number): string {
  const all = s.trimEnd().split('\n');

  return all.slice(-lines).join('\n');
}

function buildResult(base: {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  args: string[];
  port: number;
  dir: string;
  stdout: string;
  stderr: string;
}): SippResult {
  const messages = readText(path.join(base.dir, 'messages.log'));
  const errors = readText(path.join(base.dir, 'errors.log'));
  const callDebug = readText(path.join(base.dir, 'calldebug.log'));
  const stats = parseStats(readText(path.join(base.dir, 'stats.csv')));
  const log = parseMessageLog(messages);
  const flow = log.map((m) => {
    const arrow = m.direction === 'sent' ? '>' : '<';

    return m.status !== undefined ? `${arrow} ${m.status} ${m.cseqMethod ?? ''}`.trimEnd() : `${arrow} ${m.method ?? '?'}`;
  });
  const timedOut = base.timedOut || /timed out after/.test(base.stderr);
  const result: SippResult = {
    ...base,
    timedOut,
    messages,
    errors,
    callDebug,
    stats,
    successfulCalls: Number(stats?.['SuccessfulCall(C)'] ?? 0),
    failedCalls: Number(stats?.['FailedCall(C)'] ?? 0),
    log,
    flow,
    sent: (kind, cseqMethod) => log.filter((m) => m.direction === 'sent' && matchKind(m, kind, cseqMethod)).map((m) => m.text),
    received: (kind, cseqMethod) => log.filter((m) => m.direction === 'received' && matchKind(m, kind, cseqMethod)).map((m) => m.text),
    describe: () =>
      [
        `sipp ${base.args.join(' ')}`,
        `exit ${base.exitCode ?? base.signal}${timedOut ? ' (timed out)' : ''}; calls ok ${result.successfulCalls}, failed ${result.failedCalls}; files in ${base.dir}`,
        `flow: ${flow.join(' | ') || '(no messages)'}`,
        errors.trim() ? `error log (tail):\n${tail(errors, 15)}` : '',
        base.stderr.trim() ? `stderr (tail):\n${tail(base.stderr, 10)}` : '',
      ]
        .filter((l) => l !== '')
        .join('\n'),
  };

  return result;
}

interface Launched {
  child: ChildProcess;
  port: number;
  args: string[];
  dir: string;
  /** Settles with the result when sipp exits (rejects with SippTimeoutError on the deadline). */
  done: Promise<SippResult>;
}

function launch(opts: SippOptions, port: number): Launched {
  installExitHook();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ringbridge-sipp-${resolveScenario(opts.scenario).name}-`));
  const args = sippArgs(opts, port, dir);
  const [cmd, cmdArgs] = hasSetpriv() ? ['setpriv', ['--pdeathsig', 'TERM', '--', 'sipp', ...args]] : ['sipp', args];
  const child = spawn(cmd, cmdArgs, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let killed = false;
  // sipp stops itself at -timeout; this is the backstop if it does not.
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  }, timeoutMs + 3000);
  const keep = opts.keepFiles ?? process.env.RINGBRIDGE_SIPP_KEEP === '1';
  const done = new Promise<SippResult>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      running.delete(child);
      reject(new Error(`cannot start sipp (${err.message}); is the Debian package sip-tester installed?`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      const result = buildResult({ exitCode: code, signal, timedOut: killed, args: ['sipp', ...args], port, dir, stdout, stderr });
      const ok = result.exitCode === 0 && !result.timedOut;
      if (ok && !keep) {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      if (result.timedOut) {
        reject(new SippTimeoutError(result));
      } else {
        resolve(result);
      }
    });
  });
  done.catch(() => undefined); // callers get the rejection through their own handlers

  return { child, port, args, dir, done };
}

function isBindFailure(r: SippResult): boolean {
  return r.exitCode !== 0 && /Unable to bind|Address already in use/i.test(r.stderr);
}

/**
 * Runs one sipp to completion and returns its result, whatever its exit status; rejects with a
 * `SippTimeoutError` when it overruns `timeoutMs`. When the port was chosen by the helper and
 * turns out to be taken, it retries on another port (twice at most).
 */
export async function runSipp(opts: SippOptions): Promise<SippResult> {
  for (let attempt = 0; ; attempt++) {
    const port = opts.localPort ?? (await freePort(opts.localIp ?? '127.0.0.1'));
    const result = await launch(opts, port).done;
    if (opts.localPort === undefined && attempt < 2 && isBindFailure(result)) {
      continue;
    }

    return result;
  }
}

/**
 * Starts a sipp in the background (typically a UAS that the system under test calls). Await
 * `ready` before making it receive anything; end it with `stop()`, or await `result` when it
 * stops by itself (after `calls` calls). Without `localPort` it takes `freePortSync()`.
 */
export function startSipp(opts: SippOptions): SippProcess {
  return startOn(opts, opts.localPort ?? freePortSync());
}

function startOn(opts: SippOptions, port: number): SippProcess {
  const l = launch(opts, port);
  const proto: SippTransport = opts.transport ?? 'udp';
  const pid = l.child.pid ?? -1;
  let exited = false;
  void l.done.then(
    () => (exited = true),
    () => (exited = true),
  );
  const ready = new Promise<void>((resolve, reject) => {
    const started = Date.now();
    const poll = (): void => {
      if (exited) {
        void l.done.then(
          (r) => reject(new Error(`sipp exited before it was ready\n${r.describe()}`)),
          (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
        );

        return;
      }
      if (pid > 0 && isListening([pid], port, proto)) {
        resolve();

        return;
      }
      if (Date.now() - started > 10_000) {
        reject(new Error(`sipp did not bind ${proto} port ${port} within 10 s (pid ${pid})`));

        return;
      }
      setTimeout(poll, 20);
    };
    poll();
  });
  ready.catch(() => undefined);

  return {
    port,
    pid,
    ready,
    result: l.done,
    async stop(graceMs = 0) {
      if (!exited) {
        if (graceMs > 0) {
          l.child.kill('SIGUSR1');
          await Promise.race([l.done.catch(() => undefined), new Promise((r) => setTimeout(r, graceMs))]);
        }
        if (!exited) {
          l.child.kill('SIGTERM');
          const hard = setTimeout(() => l.child.kill('SIGKILL'), 3000);
          await l.done.catch(() => undefined);
          clearTimeout(hard);
        }
      }

      return l.done;
    },
  };
}

/** `host:port` of a local sipp or SUT port, bracketing IPv6 addresses. */
export function hostPort(ip: string, port: number): string {
  return `${formatHost(ip)}:${port}`;
}

/** A short random token, for Call-IDs, tags and names in tests. */
export function token(): string {
  return randomBytes(4).toString('hex');
}
