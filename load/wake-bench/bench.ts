/**
 * The wake-path benchmark (issue 6, item 5): at a given rate of trunk calls to offline agents,
 * the time from the trunk's INVITE to the gateway's wake push reaching the provider.
 *
 * Three processes besides the runner, each with its own event loop:
 * - the gateway, `node dist/src/main.js` (../calls-bench/gateway.ts: test profile, free ports, its
 *   own Redis key prefix), with a YAML file (RINGBRIDGE_CONFIG) that enables APNs against the
 *   local provider, one DID per agent (`--routing dids`) and a short ring timeout;
 * - the provider, `provider.ts`: an HTTP/2 APNs that checks the provider JWT and time-stamps each
 *   push when its HEADERS frame arrives;
 * - sipp, the trunk (`wake-uac.xml`): one call per DID, taken in turn from an injection file, at
 *   `--rate` calls/s; `-trace_shortmsg` time-stamps every message it sends and receives.
 *
 * Every agent has `--devices` registered iOS devices (StateStore.putDevice, as `device.register`
 * stores them) with their own VoIP and alert tokens, and never connects: each call sends one wake
 * (VoIP) push per device, rings for `--ring-timeout`, ends in 480 and sends each device a
 * missed-call (alert) notice. A push is paired with its call through its device token: token →
 * agent → the latest INVITE that sipp sent to that agent's DID before the push arrived (an agent
 * is called again only after `agents / rate` seconds, far longer than any wake path).
 *
 * Both time stamps come from the machine's real-time clock in microseconds: sipp's gettimeofday
 * when it wrote the INVITE, the provider's calibrated clock when the push arrived. The difference
 * therefore contains the gateway's whole wake path plus two loopback hops (sipp → gateway UDP,
 * gateway → provider TLS/HTTP/2) and the provider's own wait to read the push (its event loop is
 * otherwise idle).
 */
import { generateKeyPairSync } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify as toYaml } from 'yaml';
import { createLogger } from '../../src/log/logger.js';
import { StateStore } from '../../src/state/store.js';
import { projectRoot } from '../../src/util/paths.js';
import { cleanRedis } from '../calls-bench/bench.js';
import { agentDid, type GatewayUnderTest, startGateway } from '../calls-bench/gateway.js';
import { machineTicks } from '../calls-bench/sysinfo.js';
import { latency, type Latency, parseDuration as parseDurationAs } from '../runner/stats.js';
import { parseShortmsgLine } from '../sip-bench/bench.js';
import { cpuMeter, memoryMb } from '../sip-bench/procfs.js';
import { type BenchProcess, pickFreePort, spawnBenchProcess } from '../sip-bench/procs.js';
import { type ProviderDump } from './provider.js';
import { readWireCapture, startWireCapture, type WireCapture } from './wire.js';

const TEAM = 'WAKEBENCH1';
const KID = 'WAKEKEY001';
const BUNDLE = 'com.ringbridge.wakebench';

/** Options of one run. */
export interface WakeBenchOptions {
  /** Calls (wake-ups of one agent) per second. */
  rate: number;
  /** How long sipp places calls, ms. */
  durationMs: number;
  /** Registered devices per agent (wake pushes per call). */
  devices: number;
  /** Agents (one DID each); an agent is called again after agents / rate seconds. */
  agents: number;
  /** How long the provider waits before it answers a push, ms. */
  providerLatencyMs: number;
  /** Share (0..1) of pushes the provider answers 503 ServiceUnavailable. */
  providerFailureRate: number;
  /** The gateway's calls.ringTimeoutMs: how long each call rings before its 480. */
  ringTimeoutMs: number;
  /** Calls placed (at 10/s) before the measured run and left out of the figures (TLS set-up, JIT). */
  warmupCalls: number;
  /** Devices get an alert token too, so each call also sends a missed-call notice per device. */
  notices: boolean;
  /** Capture lo with dumpcap and read the wire figures with tshark (needs both, and root or capture rights). */
  capture: boolean;
  /** The p99 to report against, ms (issue 6: 20). */
  targetP99Ms: number;
  gatewayLogLevel: string;
  /** Further RINGBRIDGE_* variables for the gateway. */
  gatewayEnv: Record<string, string>;
  /** Keep the work directory (sipp logs, gateway log, provider records). */
  keep: boolean;
  workDir?: string;
  log: (msg: string) => void;
}


/** Wake latency of the measured calls, from one pair of time stamps. */
export interface WakeFigures {
  /** INVITE → wake push, every push, ms. */
  wakePush: Latency;
  /** Per call: its first push and its last push (differ from wakePush with --devices > 1). */
  firstPushOfCall: Latency;
  lastPushOfCall: Latency;
  /** Measured calls with fewer or more wake pushes than devices. */
  callsMissingPushes: number;
  callsWithExtraPushes: number;
  /** Wake pushes with no INVITE to their agent's DID at all. */
  unpaired: number;
  /** Pairs whose push is stamped before its INVITE. */
  negative: number;
}

/** Everything one run measured. */
export interface WakeBenchReport {
  tool: 'ringbridge wake-bench';
  startedAt: string;
  finishedAt: string;
  command: string;
  host: { cpus: number; cpuModel: string; memGb: number; kernel: string; node: string; sipp: string; loadAvg: { start: number; end: number } };
  options: Omit<WakeBenchOptions, 'log'>;
  gateway: { env: Record<string, string>; warnings: Record<string, number> };
  /** Pids of what the run started (all gone when it returns). */
  processes: { gateway: number; workers: number[]; provider: number; sipp: number[]; capture: number | null };
  /** The measured run's calls, as sipp saw them. */
  calls: {
    planned: number;
    /** Calls whose INVITE sipp sent. */
    invites: number;
    /** INVITE → 480 (the expected end). */
    ended480: number;
    /** Other final answers by status. */
    otherFinal: Record<string, number>;
    /** Calls with no final answer. */
    noFinal: number;
    /** INVITEs sent again (no 100 Trying within 500 ms). */
    inviteRetransmissions: number;
    /** INVITEs per second over the run, first to last. */
    achievedRate: number;
    sippExit: number | string;
  };
  /** The provider's view of the measured run's pushes. */
  pushes: {
    /** VoIP (wake) pushes the provider received. */
    wake: number;
    /** Of those, answered 200. */
    wakeAccepted: number;
    /** Alert pushes (missed-call or cancel notices). */
    notices: number;
    /** Non-200 answers by status and reason (JWT, headers, body). */
    refused: Record<string, number>;
    /** Distinct gateway call ids (collapse ids) over the accepted wake pushes; = calls when each call got its own. */
    distinctCallIds: number;
    /** Provider JWTs seen / failed; HTTP/2 connections the gateway opened. */
    jwts: number;
    jwtFailures: number;
    sessions: number;
  };
  /**
   * The headline: INVITE on the wire (lo, kernel stamp) → push request on the wire toward the
   * provider (lo, kernel stamp, decrypted). Null with --no-capture or when the capture could not be read.
   */
  wire: (WakeFigures & { capture: { captured: number | null; dropped: number | null }; invitesSeen: number; pushesSeen: number }) | null;
  /**
   * The processes' view: sipp's log stamp of the INVITE (gettimeofday right after its sendto
   * returned) → the provider reading the push's HEADERS frame. sipp stamps late when it is
   * preempted after its sendto, which shortens a delay (or makes it negative).
   */
  app: WakeFigures & {
    /**
     * The app view split at the push's own `sentAt` (the gateway's Date.now() when its APNs
     * adapter built the push): INVITE → push built, push built → read by the provider
     * (node-apn, HTTP/2, TLS, loopback, the provider's read). Date.now() counts whole ms, so the
     * first part reads on average 0.5 ms short and the second 0.5 ms long.
     */
    inviteToPushBuilt: Latency;
    pushBuiltToArrival: Latency;
  };
  /** sipp's view of the SIP side: INVITE sent → 100 Trying, → 180 Ringing, → 480 received. */
  sip: { inviteTo100: Latency; inviteTo180: Latency; inviteTo480: Latency };
  /** CPU over the measured run, % of one core (200 = two cores busy). */
  cpu: { gatewayMain: number; gatewayWorkers: number; provider: number; sipp: number; machine: number; /** machine − the run's processes (dumpcap, Redis and other users' jobs) */ others: number };
  mem: { gatewayMainRssMb: number };
  /** The gateway's event-loop delay over the measured run (prom-client), ms; null when /metrics had none. */
  eventLoop: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  /** Active calls at the gateway once sipp finished and the notices went out. */
  activeCallsAfter: number;
  /** Realtime vs monotonic clock drift at the provider over the run, µs (the pairing assumes ≈ 0). */
  clockDriftUs: number;
  /** The verdict, on the wire figures when there are any, else on the app figures. */
  target: { p99Ms: number; source: 'wire' | 'app'; met: boolean };
  notes: string[];
}


const r3 = (v: number): number => Math.round(v * 1000) / 1000;
const r1 = (v: number): number => Math.round(v * 10) / 10;

export { latency, type Latency } from '../runner/stats.js';

/** Parses a duration: 30s, 500ms, 2m, or plain ms. */
export const parseDuration = (v: string): number => parseDurationAs(v, 'ms');

/** The VoIP (`f`) or alert (`a`) token of device `j` of agent `i`: 64 hex digits that encode both. */
export function deviceToken(kind: 'voip' | 'alert', i: number, j: number): string {
  return `${kind === 'voip' ? 'f' : 'a'}${'0'.repeat(51)}${i.toString(16).padStart(8, '0')}${j.toString(16).padStart(4, '0')}`;
}

/** Agent and device of a token made by deviceToken, or undefined. */
export function tokenOwner(token: string): { kind: 'voip' | 'alert'; agent: number; device: number } | undefined {
  const m = /^([fa])0{51}([0-9a-f]{8})([0-9a-f]{4})$/.exec(token);

  return m ? { kind: m[1] === 'f' ? 'voip' : 'alert', agent: parseInt(m[2]!, 16), device: parseInt(m[3]!, 16) } : undefined;
}

/** One call as sipp's -trace_shortmsg log tells it. */
export interface SippCall {
  callId: string;
  /** The called user of the Request-URI (the DID). */
  did: string;
  /** First INVITE sent, µs since the epoch. */
  inviteUs: number;
  inviteSends: number;
  t100?: number;
  t180?: number;
  /** First final answer: status and time. */
  final?: { status: number; tUs: number };
}

/**
 * Calls of a sipp `-trace_shortmsg` file. Lines: date, time, epoch seconds with µs, S|R, Call-ID,
 * CSeq, first line; tab-separated.
 */
export function parseShortmsg(file: string): Map<string, SippCall> {
  const calls = new Map<string, SippCall>();
  if (!fs.existsSync(file)) {
    return calls;
  }
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = parseShortmsgLine(line);
    if (!m) {
      continue;
    }
    const { us, callId, first } = m;
    if (m.dir === 'S' && first.startsWith('INVITE ')) {
      const call = calls.get(callId);
      if (call) {
        call.inviteSends++;
      } else {
        calls.set(callId, { callId, did: /^INVITE sips?:([^@;>]+)@/.exec(first)?.[1] ?? '', inviteUs: us, inviteSends: 1 });
      }
    } else if (m.dir === 'R' && m.cseq.endsWith(' INVITE')) {
      const call = calls.get(callId);
      const st = /^SIP\/2\.0 (\d{3})/.exec(first);
      if (!call || !st) {
        continue;
      }
      const status = Number(st[1]);
      if (status === 100) {
        call.t100 ??= us;
      } else if (status === 180) {
        call.t180 ??= us;
      } else if (status >= 200) {
        call.final ??= { status, tUs: us };
      }
    }
  }

  return calls;
}

/** A push paired with its call. */
export interface Paired<R, C> {
  rec: R;
  call: C;
  /** Push time − INVITE time, ms (negative when the INVITE's stamp is later than the push's). */
  delayMs: number;
}

/**
 * Pairs pushes with calls: token → agent → that agent's DID → the INVITE to that DID nearest in
 * time to the push (an agent is called again only after agents / rate seconds, so the nearest is
 * its own call unless a push took half that long). Returns the pairs and the pushes left over.
 */
export function pairPushes<R extends { tUs: number; token: string }, C extends { did: string; inviteUs: number }>(records: R[], calls: C[], didOf: (agent: number) => string): { pairs: Paired<R, C>[]; unpaired: R[] } {
  const byDid = new Map<string, C[]>();
  for (const c of calls) {
    const list = byDid.get(c.did) ?? [];
    list.push(c);
    byDid.set(c.did, list);
  }
  const pairs: Paired<R, C>[] = [];
  const unpaired: R[] = [];
  for (const rec of records) {
    const owner = tokenOwner(rec.token);
    const list = owner ? byDid.get(didOf(owner.agent)) : undefined;
    let match: C | undefined;
    for (const c of list ?? []) {
      if (!match || Math.abs(c.inviteUs - rec.tUs) < Math.abs(match.inviteUs - rec.tUs)) {
        match = c;
      }
    }
    if (match) {
      pairs.push({ rec, call: match, delayMs: (rec.tUs - match.inviteUs) / 1000 });
    } else {
      unpaired.push(rec);
    }
  }

  return { pairs, unpaired };
}

/** Wake figures of the measured calls from their paired pushes. */
export function wakeFigures(pairs: Paired<{ tUs: number; token: string }, { callId: string }>[], measured: { callId: string }[], devices: number, unpaired: number): WakeFigures {
  const perCall = new Map<string, number[]>();
  for (const p of pairs) {
    perCall.set(p.call.callId, [...(perCall.get(p.call.callId) ?? []), p.delayMs]);
  }
  let missing = 0;
  let extra = 0;
  for (const c of measured) {
    const n = perCall.get(c.callId)?.length ?? 0;
    if (n < devices) {
      missing++;
    } else if (n > devices) {
      extra++;
    }
  }

  return {
    wakePush: latency(pairs.map((p) => p.delayMs)),
    firstPushOfCall: latency([...perCall.values()].map((d) => Math.min(...d))),
    lastPushOfCall: latency([...perCall.values()].map((d) => Math.max(...d))),
    callsMissingPushes: missing,
    callsWithExtraPushes: extra,
    unpaired,
    negative: pairs.filter((p) => p.delayMs < 0).length,
  };
}

function sippVersion(): string {
  const r = spawnSync('sipp', ['-v'], { encoding: 'utf8' });

  return /SIPp v\S+/.exec(r.stdout + r.stderr)?.[0] ?? 'unknown';
}

const BENCH_DIR = (): string => path.join(projectRoot(), 'load', 'wake-bench');

/** Resolves with the first stdout line matching `re` (its match), or rejects when the process exits first or after `timeoutMs`. */
function waitForLine(p: BenchProcess, re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = (): void => {
      const m = re.exec(p.output().stdout);
      if (m) {
        resolve(m);
      } else if (p.hasExited() || Date.now() - t0 > timeoutMs) {
        const out = p.output();
        reject(new Error(`${p.name} did not print ${re} (${p.hasExited() ? 'exited' : 'timed out'}): ${(out.stderr + out.stdout).trim().slice(-2000)}`));
      } else {
        setTimeout(tick, 20);
      }
    };
    tick();
  });
}

/** Counts the gateway's warn/error log lines by message, and copies its output to `file`. */
function watchGatewayLog(gw: GatewayUnderTest, file: string): Record<string, number> {
  const counts: Record<string, number> = {};
  let partial = '';
  const out = fs.createWriteStream(file, { flags: 'a' });
  gw.proc.child.stdout?.on('data', (d: Buffer) => {
    out.write(d);
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const rec = JSON.parse(line) as { level?: number; msg?: string };
        if (typeof rec.level === 'number' && rec.level >= 40) {
          const key = `${rec.level >= 50 ? 'error' : 'warn'}: ${String(rec.msg).slice(0, 120)}`;
          counts[key] = (counts[key] ?? 0) + 1;
        }
      } catch {
        // not JSON
      }
    }
  });
  gw.proc.child.stderr?.on('data', (d: Buffer) => out.write(d));
  void gw.proc.exited.then(() => out.end());

  return counts;
}

/** prom-client's event-loop delay gauges (reset at each scrape), ms. */
function eventLoopOf(metrics: string): WakeBenchReport['eventLoop'] {
  const v = (name: string): number | null => {
    const m = new RegExp(`^\\w*nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(metrics);

    return m ? r3(Number(m[1]) * 1000) : null;
  };

  return { p50Ms: v('p50'), p99Ms: v('p99'), maxMs: v('max') };
}

/** Registers `devices` iOS devices for each agent, as `device.register` stores them. */
async function registerDevices(prefix: string, o: WakeBenchOptions, agentIds: string[]): Promise<void> {
  const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 2 });
  try {
    const store = new StateStore({ redis, keyPrefix: prefix, nodeId: 'wake-bench', logger: createLogger({ level: 'warn' }), recordTtlS: 3600 });
    for (let from = 0; from < agentIds.length; from += 100) {
      await Promise.all(
        agentIds.slice(from, from + 100).flatMap((agentId, k) =>
          Array.from({ length: o.devices }, (_, j) =>
            store.putDevice(agentId, {
              deviceId: `phone-${j}`,
              platform: 'ios',
              channel: 'apns',
              token: deviceToken('voip', from + k, j),
              ...(o.notices ? { alertToken: deviceToken('alert', from + k, j) } : {}),
              appVersion: '1.0.0',
            }),
          ),
        ),
      );
    }
  } finally {
    redis.disconnect();
  }
}

/** Runs sipp for `calls` calls at `rate`; resolves with its exit status. */
function runSipp(dir: string, name: string, target: string, rate: number, calls: number, ringTimeoutMs: number, injection: string): { proc: BenchProcess; shortmsg: string } {
  const shortmsg = path.join(dir, `${name}-short.log`);
  const limit = Math.max(50, Math.ceil(rate * (ringTimeoutMs / 1000 + 5)));
  const args = [
    '-sf', path.join(BENCH_DIR(), 'wake-uac.xml'),
    target,
    '-inf', injection,
    '-t', 'u1', '-i', '127.0.0.1', '-p', String(pickFreePort()),
    '-r', String(rate), '-rp', '1000', '-m', String(calls), '-l', String(limit),
    '-buff_size', String(8 * 1024 * 1024),
    '-nostdin',
    '-ci', '127.0.0.1', '-cp', String(pickFreePort()),
    '-trace_shortmsg', '-shortmessage_file', shortmsg,
    '-trace_err', '-error_file', path.join(dir, `${name}-errors.log`),
    '-timeout', `${Math.ceil(calls / rate + ringTimeoutMs / 1000 + 30)}s`,
  ];

  return { proc: spawnBenchProcess(`sipp ${name}`, 'sipp', args, { cwd: dir }), shortmsg };
}

/** Runs the benchmark; always stops what it started. */
export async function runWakeBench(o: WakeBenchOptions, command: string): Promise<WakeBenchReport> {
  const startedAt = new Date().toISOString();
  const loadStart = os.loadavg()[0] ?? 0;
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-wake-bench-'));
  fs.mkdirSync(workDir, { recursive: true });
  const notes: string[] = [];
  const agentIds = Array.from({ length: o.agents }, (_, i) => `wb-${String(i).padStart(5, '0')}`);
  let provider: BenchProcess | undefined;
  let gw: GatewayUnderTest | undefined;
  const sipps: BenchProcess[] = [];
  let capture: WireCapture | undefined;
  try {
    // TLS for the provider (its own self-signed certificate, the gateway's push.caFile) and the team's ES256 key.
    const certFile = path.join(workDir, 'provider-cert.pem');
    const keyFile = path.join(workDir, 'provider-key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    const team = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const publicKeyFile = path.join(workDir, 'apns-team-public.pem');
    fs.writeFileSync(publicKeyFile, team.publicKey.export({ format: 'pem', type: 'spki' }));
    const providerOut = path.join(workDir, 'provider-records.json');
    const keylogFile = path.join(workDir, 'provider-tls-keys.log');

    provider = spawnBenchProcess('provider', process.execPath, [path.join(projectRoot(), 'dist', 'load', 'wake-bench', 'provider.js'), '--cert', certFile, '--key', keyFile, '--team', TEAM, '--kid', KID, '--public-key', publicKeyFile, '--out', providerOut, '--latency-ms', String(o.providerLatencyMs), '--failure-rate', String(o.providerFailureRate), ...(o.capture ? ['--keylog', keylogFile] : [])], { cwd: workDir });
    const providerPort = Number((await waitForLine(provider, /listening (\d+)/, 15_000))[1]);
    o.log(`provider (APNs) listening on https://localhost:${providerPort}, answer latency ${o.providerLatencyMs} ms, failure rate ${o.providerFailureRate}`);

    const configFile = path.join(workDir, 'gateway.yaml');
    fs.writeFileSync(
      configFile,
      toYaml({
        push: {
          caFile: certFile,
          apns: { enabled: true, teamId: TEAM, keyId: KID, key: team.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), bundleId: BUNDLE, baseUrl: `https://localhost:${providerPort}` },
        },
      }),
    );
    gw = await startGateway({
      agentIds,
      routing: 'dids',
      workers: 1,
      logLevel: o.gatewayLogLevel,
      rtcPorts: { min: 50000, max: 50999 },
      relayPorts: { min: 36000, max: 36999 },
      extraEnv: {
        RINGBRIDGE_CONFIG: configFile,
        RINGBRIDGE_CALLS__RING_TIMEOUT_MS: String(o.ringTimeoutMs),
        RINGBRIDGE_CALLS__RING_STEP_MS: String(o.ringTimeoutMs),
        ...o.gatewayEnv,
      },
    });
    const warnings = watchGatewayLog(gw, path.join(workDir, 'gateway.log'));
    const prefix = gw.env.RINGBRIDGE_REDIS__KEY_PREFIX!;
    const workers = gw.workerPids();
    o.log(`gateway pid ${gw.mainPid()} (SIP udp ${gw.sipPort}, http ${gw.httpPort}, Redis prefix ${prefix}), ring timeout ${o.ringTimeoutMs} ms`);
    await registerDevices(prefix, o, agentIds);
    o.log(`registered ${o.devices} device(s) for each of ${o.agents} agents`);

    const injection = path.join(workDir, 'dids.csv');
    fs.writeFileSync(injection, `SEQUENTIAL\n${agentIds.map((_, i) => `${agentDid(i)};`).join('\n')}\n`);
    const target = `127.0.0.1:${gw.sipPort}`;
    if (o.capture) {
      // before the warm-up: the gateway opens its provider connection with the first push, and
      // tshark needs that TLS handshake to decrypt the pushes
      capture = await startWireCapture(gw.sipPort, providerPort, path.join(workDir, 'wire.pcapng'));
      o.log('capturing the gateway\'s SIP port and the provider connection on lo (dumpcap)');
    }

    if (o.warmupCalls > 0) {
      o.log(`warm-up: ${o.warmupCalls} calls at 10/s (TLS and HTTP/2 set-up, JIT), not measured`);
      const w = runSipp(workDir, 'warmup', target, 10, o.warmupCalls, o.ringTimeoutMs, injection);
      sipps.push(w.proc);
      await w.proc.exited;
      await new Promise((r) => setTimeout(r, 500));
    }

    const planned = Math.max(1, Math.round((o.rate * o.durationMs) / 1000));
    o.log(`measured run: ${planned} calls at ${o.rate}/s, ${o.devices} wake push(es) per call`);
    await gw.metrics(); // resets prom-client's event-loop gauges
    const gwCpu = cpuMeter(() => [gw!.mainPid()]);
    const wCpu = cpuMeter(() => gw!.workerPids());
    const pCpu = cpuMeter(() => provider!.tree());
    const sipp = runSipp(workDir, 'run', target, o.rate, planned, o.ringTimeoutMs, injection);
    sipps.push(sipp.proc);
    const sCpu = cpuMeter(() => sipp.proc.tree());
    const m0 = machineTicks();
    for (const m of [gwCpu, wCpu, pCpu, sCpu]) {
      m.start();
    }
    let rssMax = 0;
    const sampler = setInterval(() => {
      for (const m of [gwCpu, wCpu, pCpu, sCpu]) {
        m.sample();
      }
      rssMax = Math.max(rssMax, memoryMb([gw!.mainPid()]).rssMb);
    }, 1000);
    const sippExit = await sipp.proc.exited;
    clearInterval(sampler);
    const cpu = { gatewayMain: r1(gwCpu.stop()), gatewayWorkers: r1(wCpu.stop()), provider: r1(pCpu.stop()), sipp: r1(sCpu.stop()), machine: 0, others: 0 };
    const m1 = machineTicks();
    cpu.machine = r1(((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * 100 * os.cpus().length);
    cpu.others = r1(Math.max(0, cpu.machine - cpu.gatewayMain - cpu.gatewayWorkers - cpu.provider - cpu.sipp));
    rssMax = Math.max(rssMax, memoryMb([gw.mainPid()]).rssMb);
    const eventLoop = eventLoopOf(await gw.metrics());
    if (sippExit !== 0) {
      const err = path.join(workDir, 'run-errors.log');
      const tail = fs.existsSync(err) ? fs.readFileSync(err, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
      notes.push(`sipp exited ${sippExit}${tail ? `: ${tail.slice(0, 400)}` : ''}`);
    }
    // the missed-call notices leave when each call's ring time ends; let the last ones arrive
    await new Promise((r) => setTimeout(r, 1000));
    const health = await gw.health();

    // Provider records: stop it (it writes them on SIGTERM); then the capture.
    await provider.stop(5000);
    const captureStats = capture ? await capture.stop() : null;
    const dump = JSON.parse(fs.readFileSync(providerOut, 'utf8')) as ProviderDump;

    const measured = [...parseShortmsg(sipp.shortmsg).values()];
    const warm = [...parseShortmsg(path.join(workDir, 'warmup-short.log')).values()];
    const measuredIds = new Set(measured.map((c) => c.callId));
    const firstMeasured = Math.min(...measured.map((c) => c.inviteUs));
    const voip = dump.records.filter((r) => r.pushType === 'voip' && r.status === 200);
    const app = pairPushes(voip, [...warm, ...measured], agentDid);
    const appPairs = app.pairs.filter((p) => measuredIds.has(p.call.callId));
    const built = appPairs.filter((p) => p.rec.sentAtMs !== null);
    const refused: Record<string, number> = {};
    for (const r of dump.records.filter((x) => x.status !== 200 && x.tUs >= firstMeasured)) {
      const k = `${r.status} ${r.reason ?? ''}`.trim();
      refused[k] = (refused[k] ?? 0) + 1;
    }

    let wire: WakeBenchReport['wire'] = null;
    if (capture && captureStats) {
      try {
        const w = await readWireCapture(capture.file, keylogFile, providerPort);
        const wInvites = w.invites.map((i) => ({ callId: i.callId, did: i.did, inviteUs: i.tUs }));
        const wVoip = w.pushes.filter((x) => tokenOwner(x.token)?.kind === 'voip');
        const pw = pairPushes(wVoip, wInvites, agentDid);
        wire = { ...wakeFigures(pw.pairs.filter((p) => measuredIds.has(p.call.callId)), measured, o.devices, pw.unpaired.length), capture: captureStats, invitesSeen: w.invites.length, pushesSeen: w.pushes.length };
        if (wire.wakePush.samples === 0) {
          notes.push(`the capture shows no push (${w.pushes.length} requests decrypted): TLS not decrypted? The wire figures are empty`);
        }
      } catch (err) {
        notes.push(`could not read the capture: ${(err as Error).message.slice(0, 300)}`);
      }
    }
    const finals: Record<string, number> = {};
    for (const c of measured) {
      if (c.final && c.final.status !== 480) {
        finals[String(c.final.status)] = (finals[String(c.final.status)] ?? 0) + 1;
      }
    }
    const inviteTimes = measured.map((c) => c.inviteUs).sort((a, b) => a - b);
    const span = inviteTimes.length > 1 ? (inviteTimes[inviteTimes.length - 1]! - inviteTimes[0]!) / 1e6 : 0;
    const appFigures = wakeFigures(appPairs, measured, o.devices, app.unpaired.length);
    if (Math.abs(dump.clockDriftUs) > 500) {
      notes.push(`the provider's real-time and monotonic clocks drifted ${dump.clockDriftUs} µs apart during the run (a clock step?): the app figures may be off by that much`);
    }
    const headline = wire && wire.wakePush.samples > 0 ? wire : appFigures;
    const report: WakeBenchReport = {
      tool: 'ringbridge wake-bench',
      startedAt,
      finishedAt: new Date().toISOString(),
      command,
      host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? 'unknown', memGb: r1(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version, sipp: sippVersion(), loadAvg: { start: loadStart, end: os.loadavg()[0] ?? 0 } },
      options: { ...Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'log')), workDir } as Omit<WakeBenchOptions, 'log'>,
      gateway: { env: { ...gw.env }, warnings },
      processes: { gateway: gw.mainPid(), workers, provider: provider.pid, sipp: sipps.map((p) => p.pid), capture: capture?.proc.pid ?? null },
      calls: {
        planned,
        invites: measured.length,
        ended480: measured.filter((c) => c.final?.status === 480).length,
        otherFinal: finals,
        noFinal: measured.filter((c) => !c.final).length,
        inviteRetransmissions: measured.reduce((a, c) => a + c.inviteSends - 1, 0),
        achievedRate: span > 0 ? r1((measured.length - 1) / span) : 0,
        sippExit,
      },
      pushes: {
        wake: dump.records.filter((r) => r.pushType === 'voip' && r.tUs >= firstMeasured).length,
        wakeAccepted: appPairs.length,
        notices: dump.records.filter((r) => r.pushType !== 'voip' && r.tUs >= firstMeasured).length,
        refused,
        distinctCallIds: new Set(appPairs.map((p) => p.rec.collapseId)).size,
        jwts: dump.jwts,
        jwtFailures: dump.jwtFailures,
        sessions: dump.sessions,
      },
      wire,
      app: {
        ...appFigures,
        inviteToPushBuilt: latency(built.map((p) => p.rec.sentAtMs! - p.call.inviteUs / 1000)),
        pushBuiltToArrival: latency(built.map((p) => p.rec.tUs / 1000 - p.rec.sentAtMs!)),
      },
      sip: {
        inviteTo100: latency(measured.flatMap((c) => (c.t100 === undefined ? [] : [(c.t100 - c.inviteUs) / 1000]))),
        inviteTo180: latency(measured.flatMap((c) => (c.t180 === undefined ? [] : [(c.t180 - c.inviteUs) / 1000]))),
        inviteTo480: latency(measured.flatMap((c) => (c.final?.status === 480 ? [(c.final.tUs - c.inviteUs) / 1000] : []))),
      },
      cpu,
      mem: { gatewayMainRssMb: r1(rssMax) },
      eventLoop,
      activeCallsAfter: health.activeCalls,
      clockDriftUs: dump.clockDriftUs,
      target: { p99Ms: o.targetP99Ms, source: headline === wire ? 'wire' : 'app', met: headline.wakePush.p99 !== null && headline.wakePush.p99 < o.targetP99Ms && headline.callsMissingPushes === 0 },
      notes,
    };

    return report;
  } finally {
    for (const p of sipps) {
      await p.stop(2000);
    }
    await capture?.proc.stop(2000);
    await provider?.stop(2000);
    if (gw) {
      const prefix = gw.env.RINGBRIDGE_REDIS__KEY_PREFIX!;
      await gw.stop();
      await cleanRedis(prefix, o.log);
    }
    if (!o.keep && !o.workDir) {
      fs.rmSync(workDir, { recursive: true, force: true });
    }
  }
}
