/**
 * The calls benchmark: how many concurrent bridged calls with audio the gateway holds.
 *
 *   sipp UAC (trunk, G.711 A-law looped) ──SIP/RTP──▶ gateway (node + mediasoup workers) ◀──WebSocket/WebRTC── agent processes
 *
 * Steps of N concurrent calls. Each step: a fresh sipp places N calls at `rate` calls/s (-m N
 * -l N), the gateway rings one available agent per call (longest-idle group, or one DID per
 * agent), the agent answers and media flows both ways; once all N are up and settled the step
 * measures for `window`: packet loss and jitter both ways, CPU of every process group, memory of
 * the gateway. Then the agents hang up (the gateway BYEs sipp) and the step waits until the
 * gateway holds no call and no router any more.
 *
 * Loss, trunk → agent: the agents' inbound-rtp counters (packetsLost, packetsReceived), deltas
 * over the window, per call. Agent → trunk: sequence-number gaps of every stream reaching sipp's
 * media port, from a dumpcap capture of the window (rtp-capture.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { projectRoot } from '../../src/util/paths.js';
import { fitLine, type Fit, latency, type Latency } from '../runner/stats.js';
import { lastStatsRow } from '../sip-bench/bench.js';
import { cpuMeter, memoryMb } from '../sip-bench/procfs.js';
import { type BenchProcess, pickFreePort, spawnBenchProcess, waitListening } from '../sip-bench/procs.js';
import { AgentPool, type PoolStatus } from './agent-pool.js';
import { type GatewayHealth, type GatewayUnderTest, metricValue, type RoutingMode, startGateway } from './gateway.js';
import { type CallSample, type ToneMode } from './ipc.js';
import { analyzeCapture, type Capture, type CaptureAnalysis, pcmaFromPcap, startCapture } from './rtp-capture.js';
import { dropsBetween, machineTicks, tcpListenerPid, udpDrops, udpLocalPorts, udpSnmp } from './sysinfo.js';

/** What to measure and how. */
export interface CallsBenchOptions {
  /** Concurrent calls of each step. */
  steps: number[];
  /** Measurement window of each step, ms. */
  windowMs: number;
  /** Call set-up rate while a step ramps up, calls/s. */
  rate: number;
  /** Pause between "all calls up" and the window, ms. */
  settleMs: number;
  /** Time allowed beyond N / rate for the calls of a step to come up, ms. */
  setupGraceMs: number;
  /** Agents (default: the largest step). */
  agents: number;
  /** Agent processes. */
  agentProcesses: number;
  /** Nice value of the agent processes (10: the gateway and sipp get the CPU first). */
  agentsNice: number;
  tone: ToneMode;
  sampleRate: 8000 | 48000;
  routing: RoutingMode;
  /** mediasoup workers (0: one per core). */
  workers: number;
  gatewayLogLevel: string;
  rtcPorts: { min: number; max: number };
  relayPorts: { min: number; max: number };
  /** Loss (%) a step must stay under, each way, to count as held. */
  lossThreshold: number;
  /** Stop stepping up after a step with more loss than this (%), or with fewer than 90 % of its calls up; 0: never stop. */
  stopLoss: number;
  /** Record the trunk side with dumpcap (false: no agent → trunk loss figure). */
  capture: boolean;
  /** The pcap whose A-law audio the trunk loops. */
  pcap: string;
  /** Further RINGBRIDGE_* variables for the gateway. */
  gatewayEnv: Record<string, string>;
  /** Where step directories go; default a temporary directory. */
  workDir?: string;
  /** Keep the step directories (captures, sipp files) after a successful run. */
  keep: boolean;
  log: (msg: string) => void;
}

/** CPU of each process group over a window, % of one core (200 = both cores of this machine). */
export interface CpuFigures {
  gatewayMain: number;
  mediasoupWorkers: number;
  /** gatewayMain + mediasoupWorkers. */
  gateway: number;
  agents: number;
  sipp: number;
  /** dumpcap. */
  capture: number;
  /** The shared Redis (not a child of the gateway; other users' load counts too). */
  redis: number;
  /** Everything on the machine, from /proc/stat. */
  machine: number;
  /** machine − the groups above: other work on the machine (other users' jobs skew every figure). */
  others: number;
}

/** Memory of a process group, MiB: largest during the window. */
export interface MemFigures {
  gatewayMainRssMb: number;
  gatewayMainPssMb: number;
  workersRssMb: number;
  workersPssMb: number;
  agentsRssMb: number;
  agentsPssMb: number;
}

/** Agent-side view of the trunk → agent audio and of what the agents sent, over the window. */
export interface AgentMedia {
  /** Calls with counters at both ends of the window. */
  calls: number;
  packetsReceived: number;
  /**
   * Packets the trunk's streams should have brought in the window: the time between the last
   * packet before the first reading and the last packet before the second, over 20 ms, plus the
   * time a stream was silent at the end beyond 1 s. sipp sends exactly 50 packets/s. Good to
   * about ±1 packet per call and reading (arrival jitter), so ±0.1 % over 30 s.
   */
  packetsExpected: number;
  /** expected − received, summed over calls (never below 0 per call). */
  packetsLost: number;
  /** lost / expected, %: trunk → agent loss end to end. */
  lossPct: number;
  callsOver1Pct: number;
  worstCallLossPct: number;
  /** libwebrtc's own packetsLost over the window (it counts small gaps only; see CallSample). */
  webrtcPacketsLost: number;
  /** Samples NetEq concealed, % of the samples it put out in the window (all calls together). */
  concealedPct: number;
  /**
   * Inbound jitter at the end of the window, ms, as libwebrtc reports it: whole milliseconds
   * (the stats carry jitter_ms / 1000), so loopback's sub-millisecond jitter reads 0. The
   * capture's figures (CaptureAnalysis) have the precision.
   */
  jitterMeanMs: number;
  jitterMaxMs: number;
  /** Packets per second per call, received and sent (50 for 20 ms packets). */
  rxPpsPerCall: number;
  txPpsPerCall: number;
  /** Calls whose peer connections were not both `connected` at the end. */
  notConnected: number;
  /** Calls that received nothing during the window. */
  silent: number;
}

/** One step's figures. */
export interface StepResult {
  /** Concurrent calls asked for. */
  calls: number;
  /** Calls up at the start of the window: the agents' live answered calls, the gateway's active calls and routers, sipp's open calls. */
  established: { agents: number; gateway: number; routers: number; sipp: number };
  /** Fewest calls live (gateway) during the window. */
  minLiveInWindow: number;
  /** All N up, and none lost during the window. */
  allEstablished: boolean;
  /** Ramp: first INVITE to all N up, s. */
  rampS: number;
  /** Call set-up at the agent: incoming → media flowing, ms. */
  setupMs: Latency;
  /** INVITE → 200 at sipp, ms (sipp's rtd, 1 ms steps... coarse). */
  sipp: { attempted: number; successful: number; failed: number; failures: Record<string, number>; retransmissions: number; exit: number | string };
  agentMedia: AgentMedia;
  /** The trunk side from the capture (null without capture). */
  trunkMedia: CaptureAnalysis | null;
  capturePackets: { captured: number | null; dropped: number | null } | null;
  /**
   * Loss, % each way. Trunk → agent: with the capture, the gateway's sequence gaps toward the
   * agents plus the agents' own socket drops (every place a packet can be lost on loopback);
   * without it, the agents' count (lossToAgentCountPct). Agent → trunk: sequence gaps at sipp.
   */
  lossToAgentPct: number;
  /** Trunk → agent loss from the agents' counts alone (received against expected; ±0.1 %). */
  lossToAgentCountPct: number;
  lossToTrunkPct: number | null;
  /**
   * Agent → trunk loss the gateway caused: lossToTrunkPct less the gaps already in what the
   * agents sent (agentSendGapPct), never below 0 (capture).
   */
  lossToTrunkAtGatewayPct: number | null;
  /** Sequence gaps in what the agents' libwebrtc sent toward mediasoup, % (capture): the simulator's share of lossToTrunkPct. */
  agentSendGapPct: number | null;
  /** Trunk → agent loss the gateway caused: sequence gaps of what mediasoup sent the agents (capture). */
  lossToAgentAtGatewayPct: number | null;
  /** Packets the kernel dropped at the agents' own sockets, % of the packets expected: the simulator's share of lossToAgentPct. */
  agentSocketDropPct: number;
  /** Held by the gateway alone: every call up, and the loss it caused under the threshold both ways (lossToAgentAtGatewayPct, lossToTrunkAtGatewayPct). */
  heldByGateway: boolean;
  /** Both under the threshold, and every call up. */
  held: boolean;
  cpu: CpuFigures;
  /** Gateway CPU (main + workers) per call, % of one core. */
  gatewayCpuPerCallPct: number;
  mem: MemFigures;
  /** Kernel drops on the sockets of the gateway's node process, its workers and the agents during the window (receive buffers full). */
  socketDrops: { gatewayMain: number; workers: number; agents: number };
  /**
   * System-wide UDP counters during the window: datagrams delivered, and receive-buffer drops
   * other than at sipp's media socket (sipp never reads it, so all it gets is dropped there).
   */
  udp: { inDatagrams: number; rcvbufErrorsNotSipp: number; sippMediaDrops: number };
  /** Gateway event-loop delay over the window (prom-client), ms. */
  gatewayLoopP99Ms: number | null;
  gatewayLoopMaxMs: number | null;
  /** Worst agent-process event-loop delay seen in the window, ms. */
  agentLoopP99Ms: number;
  agentLoopMaxMs: number;
  /** Agents' counters at the end of the step (cumulative over the run). */
  agentCounters: PoolStatus['counters'];
  /** After the hang-up: seconds until the gateway held no call and no router, and its memory then. */
  teardownS: number;
  afterTeardown: { routers: number; activeCalls: number; gatewayMainRssMb: number; workersRssMb: number };
  /** 1-minute load average when the window started and ended (other users' work shows here). */
  loadAvg: { start: number; end: number };
  /** Things that went wrong in this step, in words. */
  notes: string[];
  dir: string;
}


export { fitLine, parseDuration, type Fit } from '../runner/stats.js';

/** Everything one run measured. */
export interface CallsBenchReport {
  tool: 'ringbridge calls-bench';
  startedAt: string;
  finishedAt: string;
  command: string;
  host: { cpus: number; cpuModel: string; memGb: number; kernel: string; node: string; sipp: string; loadAvg: { start: number; end: number } };
  gateway: { env: Record<string, string>; warnings: Record<string, number> };
  /** Process ids of what the run started (all gone when it returns): the gateway's node process, its mediasoup workers, the agent processes. */
  processes: { gateway: number; workers: number[]; agents: number[] };
  options: Omit<CallsBenchOptions, 'log'>;
  /** Idle figures with every agent signed in and no call. */
  baseline: { cpu: CpuFigures; mem: MemFigures };
  steps: StepResult[];
  /** How CPU (% of a core) and memory (MiB) grow with calls: least squares over the baseline and the steps held (end to end or by the gateway). */
  growth: { gatewayCpuPct: Fit | null; workersCpuPct: Fit | null; gatewayMainCpuPct: Fit | null; agentsCpuPct: Fit | null; gatewayPssMb: Fit | null; gatewayMainRssMb: Fit | null; workersPssMb: Fit | null; agentsPssMb: Fit | null };
  /** Why the run stopped before its last step, when a step failed outright. */
  aborted: string | null;
  /** Highest step held end to end (all calls up, loss under the threshold both ways). */
  ceiling: { calls: number; lossToAgentPct: number; lossToTrunkPct: number | null } | null;
  /** Highest step the gateway held, counting only the loss it caused (the agents may have lost more). */
  gatewayCeiling: { calls: number; lossToAgentAtGatewayPct: number | null; lossToTrunkAtGatewayPct: number | null } | null;
}

const BENCH_DIR = (): string => path.join(projectRoot(), 'load', 'calls-bench');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const r1 = (v: number): number => Math.round(v * 10) / 10;
const r2 = (v: number): number => Math.round(v * 100) / 100;
const r3 = (v: number): number => Math.round(v * 1000) / 1000;


/**
 * Trunk → agent loss from two readings of the agents' counters, calls present in both: packets
 * received against packets expected from the arrival time of the last packet at each reading
 * (20 ms packets), plus any silence at the end longer than 1 s. libwebrtc's own packetsLost
 * is kept for comparison only: it treats a burst of more than a few lost packets as a stream
 * restart and does not count it.
 */
export function agentMediaBetween(before: CallSample[], after: CallSample[], packetMs = 20): AgentMedia {
  const first = new Map(before.map((s) => [s.callId, s]));
  let calls = 0;
  let rx = 0;
  let expected = 0;
  let lost = 0;
  let webrtcLost = 0;
  let concealed = 0;
  let played = 0;
  let tx = 0;
  let over = 0;
  let worst = 0;
  let jSum = 0;
  let jMax = 0;
  let seconds = 0;
  let notConnected = 0;
  let silent = 0;
  for (const b of after) {
    const a = first.get(b.callId);
    if (!a) {
      continue;
    }
    calls++;
    const dRx = Math.max(0, b.packetsReceived - a.packetsReceived);
    const spanMs = Math.max(1, b.at - a.at);
    let exp: number;
    if (a.lastPacketAt > 0 && b.lastPacketAt >= a.lastPacketAt) {
      // a stream silent for over a second at the end counts as lost for that time; shorter gaps
      // are packets still queued in the agent's socket, not lost
      exp = Math.round((b.lastPacketAt - a.lastPacketAt) / packetMs) + Math.max(0, Math.floor((b.at - b.lastPacketAt - 1000) / packetMs));
    } else {
      exp = Math.round(spanMs / packetMs);
    }
    const l = Math.max(0, exp - dRx);
    rx += dRx;
    expected += exp;
    lost += l;
    webrtcLost += Math.max(0, b.packetsLost - a.packetsLost);
    concealed += Math.max(0, b.concealedSamples - a.concealedSamples);
    played += Math.max(0, b.totalSamplesReceived - a.totalSamplesReceived);
    tx += Math.max(0, b.packetsSent - a.packetsSent);
    seconds += spanMs / 1000;
    const pct = exp > 0 ? (l / exp) * 100 : 0;
    if (pct > 1) {
      over++;
    }
    worst = Math.max(worst, pct);
    const jMs = b.jitter * 1000;
    jSum += jMs;
    jMax = Math.max(jMax, jMs);
    if (b.sendState !== 'connected' || b.recvState !== 'connected') {
      notConnected++;
    }
    if (dRx === 0) {
      silent++;
    }
  }
  const meanS = calls > 0 ? seconds / calls : 1;

  return {
    calls,
    packetsReceived: rx,
    packetsExpected: expected,
    packetsLost: lost,
    lossPct: expected > 0 ? r3((lost / expected) * 100) : 0,
    callsOver1Pct: over,
    worstCallLossPct: r2(worst),
    webrtcPacketsLost: webrtcLost,
    concealedPct: played > 0 ? r2((concealed / played) * 100) : 0,
    jitterMeanMs: calls > 0 ? r2(jSum / calls) : 0,
    jitterMaxMs: r2(jMax),
    rxPpsPerCall: calls > 0 ? r1(rx / calls / meanS) : 0,
    txPpsPerCall: calls > 0 ? r1(tx / calls / meanS) : 0,
    notConnected,
    silent,
  };
}

function sippVersion(): string {
  const r = spawnSync('sipp', ['-v'], { encoding: 'utf8' });

  return /SIPp v\S+/.exec(r.stdout + r.stderr)?.[0] ?? 'unknown';
}

/** A port p with p..p+3 free (sipp binds the media port, +2 for video; RTCP would use +1). */
function pickMediaPort(): number {
  for (let i = 0; i < 50; i++) {
    const p = pickFreePort();
    if (p % 2 === 0 && p + 3 < 32768) {
      return p;
    }
  }

  return pickFreePort();
}

/** Process groups sampled for CPU and memory. */
interface Groups {
  gatewayMain: () => number[];
  workers: () => number[];
  agents: () => number[];
  sipp: () => number[];
  capture: () => number[];
  redis: () => number[];
}

/** CPU meters for every group plus the machine. */
function cpuMeters(g: Groups): { start(): void; sample(): void; stop(): CpuFigures } {
  const m = {
    gatewayMain: cpuMeter(g.gatewayMain),
    workers: cpuMeter(g.workers),
    agents: cpuMeter(g.agents),
    sipp: cpuMeter(g.sipp),
    capture: cpuMeter(g.capture),
    redis: cpuMeter(g.redis),
  };
  let m0 = { busy: 0, total: 0 };

  return {
    start() {
      Object.values(m).forEach((x) => x.start());
      m0 = machineTicks();
    },
    sample() {
      Object.values(m).forEach((x) => x.sample());
    },
    stop() {
      const m1 = machineTicks();
      const gm = m.gatewayMain.stop();
      const w = m.workers.stop();
      const a = m.agents.stop();
      const sp = m.sipp.stop();
      const c = m.capture.stop();
      const rd = m.redis.stop();
      const machine = m1.total > m0.total ? ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * os.cpus().length : 0;

      return {
        gatewayMain: r1(gm),
        mediasoupWorkers: r1(w),
        gateway: r1(gm + w),
        agents: r1(a),
        sipp: r1(sp),
        capture: r1(c),
        redis: r1(rd),
        machine: r1(machine),
        others: r1(Math.max(0, machine - gm - w - a - sp - c - rd)),
      };
    },
  };
}

function memSampler(g: Groups): { sample(): void; result(): MemFigures } {
  const max: MemFigures = { gatewayMainRssMb: 0, gatewayMainPssMb: 0, workersRssMb: 0, workersPssMb: 0, agentsRssMb: 0, agentsPssMb: 0 };

  return {
    sample() {
      const gm = memoryMb(g.gatewayMain());
      const w = memoryMb(g.workers());
      const a = memoryMb(g.agents());
      max.gatewayMainRssMb = Math.max(max.gatewayMainRssMb, gm.rssMb);
      max.gatewayMainPssMb = Math.max(max.gatewayMainPssMb, gm.pssMb);
      max.workersRssMb = Math.max(max.workersRssMb, w.rssMb);
      max.workersPssMb = Math.max(max.workersPssMb, w.pssMb);
      max.agentsRssMb = Math.max(max.agentsRssMb, a.rssMb);
      max.agentsPssMb = Math.max(max.agentsPssMb, a.pssMb);
    },
    result: () => ({
      gatewayMainRssMb: r1(max.gatewayMainRssMb),
      gatewayMainPssMb: r1(max.gatewayMainPssMb),
      workersRssMb: r1(max.workersRssMb),
      workersPssMb: r1(max.workersPssMb),
      agentsRssMb: r1(max.agentsRssMb),
      agentsPssMb: r1(max.agentsPssMb),
    }),
  };
}

/** The trunk scenario of a step: the template with the A-law file and the hold limit filled in. */
function writeScenario(dir: string, pcmaFile: string, maxHoldMs: number, dids: boolean): string {
  let xml = fs
    .readFileSync(path.join(BENCH_DIR(), 'trunk-uac.xml'), 'utf8')
    .replace(/@PCMA_FILE@/g, pcmaFile)
    .replace(/@MAX_HOLD_MS@/g, String(maxHoldMs));
  if (dids) {
    // one DID per agent, from the -inf file (line i → call i)
    xml = xml.replace(/\[service\]/g, '[field0]');
  }
  const file = path.join(dir, 'trunk-uac.xml');
  fs.writeFileSync(file, xml);

  return file;
}

interface RunState {
  o: CallsBenchOptions;
  gw: GatewayUnderTest;
  pool: AgentPool;
  pcmaFile: string;
  redisPid: number | undefined;
  didsFile: string | undefined;
}

/**
 * /health, tried three times: an overloaded gateway can take more than the 5 s timeout to
 * answer, which is a figure of the step (a note), not a reason to abandon it. Falls back to
 * `fallback` (the last reading) when it never answers.
 */
async function healthOr(gw: GatewayUnderTest, fallback: GatewayHealth, notes: string[], what: string): Promise<GatewayHealth> {
  let last: unknown;
  for (let i = 0; i < 3; i++) {
    try {
      return await gw.health();
    } catch (err) {
      last = err;
    }
  }
  notes.push(`the gateway's /health did not answer ${what} (${(last as Error).message})`);

  return fallback;
}

/** One step; whatever it started is stopped when it ends, also when it fails. */
async function runStep(st: RunState, n: number, dir: string): Promise<StepResult> {
  const started: BenchProcess[] = [];
  try {
    return await measureStep(st, n, dir, started);
  } finally {
    for (const p of started) {
      if (!p.hasExited()) {
        await p.stop(2000);
      }
    }
  }
}

async function measureStep(st: RunState, n: number, dir: string, started: BenchProcess[]): Promise<StepResult> {
  const { o, gw, pool } = st;
  fs.mkdirSync(dir, { recursive: true });
  const notes: string[] = [];
  const rampBudgetMs = (n / o.rate) * 1000 + o.setupGraceMs;
  const maxHoldMs = rampBudgetMs + o.settleMs + o.windowMs + 120_000;
  const scenario = writeScenario(dir, st.pcmaFile, Math.round(maxHoldMs), st.didsFile !== undefined);
  const mediaPort = pickMediaPort();
  const statsFile = path.join(dir, 'sipp-stats.csv');
  const args = [
    '-sf', scenario,
    `127.0.0.1:${gw.sipPort}`,
    '-t', 'u1', '-i', '127.0.0.1', '-p', String(pickFreePort()),
    '-mi', '127.0.0.1', '-mp', String(mediaPort),
    '-r', String(o.rate), '-m', String(n), '-l', String(n),
    '-nostdin',
    '-ci', '127.0.0.1', '-cp', String(pickFreePort()),
    '-trace_stat', '-stf', statsFile, '-fd', '1',
    '-trace_err', '-error_file', path.join(dir, 'sipp-errors.log'),
    '-buff_size', String(4 * 1024 * 1024),
    '-timeout', `${Math.ceil((maxHoldMs + 120_000) / 1000)}s`,
  ];
  if (st.didsFile) {
    args.push('-inf', st.didsFile);
  } else {
    args.push('-s', gw.didOf(0));
  }
  const before = pool.status().counters;
  pool.takeSetupTimes();
  const t0 = performance.now();
  const sipp = spawnBenchProcess('sipp trunk', 'sipp', args, { cwd: dir });
  started.push(sipp);
  await waitListening(sipp, mediaPort, 'udp', 15_000);
  // ramp: until every call is up at the agents, or the budget is spent
  let agentsUp: number;
  for (;;) {
    agentsUp = pool.status().counters.activeCalls;
    if (agentsUp >= n) {
      break;
    }
    if (performance.now() - t0 > rampBudgetMs) {
      notes.push(`only ${agentsUp} of ${n} calls up after ${r1(rampBudgetMs / 1000)} s`);
      break;
    }
    if (sipp.hasExited()) {
      notes.push(`sipp exited (${await sipp.exited}) during the ramp with ${agentsUp} calls up`);
      break;
    }
    if (pool.status().exited > 0) {
      notes.push(`an agent process exited during the ramp with ${agentsUp} calls up`);
      break;
    }
    await sleep(250);
  }
  const rampS = r1((performance.now() - t0) / 1000);
  o.log(`  ${agentsUp}/${n} calls up after ${rampS} s; settling ${o.settleMs / 1000} s`);
  await sleep(o.settleMs);

  // ---- window
  let capture: Capture | undefined;
  const capFile = path.join(dir, 'trunk-rtp.pcap');
  if (o.capture) {
    capture = await startCapture(mediaPort, o.rtcPorts, capFile);
    started.push(capture.proc);
  }
  const agentPorts = udpLocalPorts(pool.pids());
  const groups: Groups = {
    gatewayMain: () => (gw.proc.hasExited() ? [] : [gw.mainPid()]),
    workers: () => gw.workerPids(),
    agents: () => pool.pids(),
    sipp: () => (sipp.hasExited() ? [] : [sipp.pid]),
    capture: () => (capture && !capture.proc.hasExited() ? [capture.proc.pid] : []),
    redis: () => (st.redisPid ? [st.redisPid] : []),
  };
  const unknown: GatewayHealth = { status: 'unknown', routers: -1, workersAlive: -1, activeCalls: -1, sessions: -1, suspended: -1 };
  const health0 = await healthOr(gw, unknown, notes, 'at the start of the window');
  const sippRow0 = lastStatsRow(statsFile);
  const established = { agents: pool.status().counters.activeCalls, gateway: health0.activeCalls, routers: health0.routers, sipp: Number(sippRow0?.['CurrentCall'] ?? 0) };
  const s0 = await pool.stats();
  if (s0.unanswered > 0) {
    notes.push(`${s0.unanswered} agent processes did not report their counters at the start of the window (starved)`);
  }
  await gw.metrics().catch(() => notes.push("the gateway's /metrics did not answer at the start of the window")); // resets prom-client's event-loop histogram: the next scrape covers the window
  const cpu = cpuMeters(groups);
  const mem = memSampler(groups);
  const drops0 = { main: udpDrops(groups.gatewayMain()), workers: udpDrops(groups.workers()), agents: udpDrops(groups.agents()), sipp: udpDrops(groups.sipp()) };
  const snmp0 = udpSnmp();
  cpu.start();
  mem.sample();
  const winFrom = Date.now();
  const loadStart = os.loadavg()[0] ?? 0;
  let minLive = health0.activeCalls;
  let agentLoopP99 = 0;
  let agentLoopMax = 0;
  const sampler = setInterval(() => {
    cpu.sample();
    mem.sample();
    const ps = pool.status();
    agentLoopP99 = Math.max(agentLoopP99, ps.loopDelayP99Ms);
    agentLoopMax = Math.max(agentLoopMax, ps.loopDelayMaxMs);
    gw.health().then(
      (h) => (minLive = Math.min(minLive, h.activeCalls)),
      () => undefined,
    );
  }, 1000);
  await sleep(o.windowMs);
  clearInterval(sampler);
  const winTo = Date.now();
  const loadEnd = os.loadavg()[0] ?? 0;
  const cpuFig = cpu.stop();
  mem.sample();
  const snmp1 = udpSnmp();
  const drops1 = { main: udpDrops(groups.gatewayMain()), workers: udpDrops(groups.workers()), agents: udpDrops(groups.agents()), sipp: udpDrops(groups.sipp()) };
  const metrics = await gw.metrics().catch(() => '');
  const health1 = await healthOr(gw, health0, notes, 'at the end of the window');
  minLive = Math.min(minLive, health1.activeCalls);
  const s1 = await pool.stats();
  if (s1.unanswered > 0) {
    notes.push(`${s1.unanswered} agent processes did not report their counters at the end of the window (starved)`);
  }
  await sleep(300);
  const capCounts = capture ? await capture.stop() : null;

  // ---- teardown: the agents hang up, the gateway BYEs sipp, sipp ends its N calls and exits
  const tTeardown = performance.now();
  const hung = await pool.hangupAll();
  if (hung.failed > 0 || hung.unanswered > 0) {
    notes.push(`${hung.failed} hangups failed${hung.unanswered ? `, ${hung.unanswered} agent processes did not answer` : ''}`);
  }
  const sippExit = await Promise.race([sipp.exited, sleep(60_000).then(() => 'timeout' as const)]);
  if (sippExit === 'timeout') {
    notes.push('sipp had calls open 60 s after the hang-up; stopped');
    await sipp.stop(3000);
  }
  let after = await healthOr(gw, health1, notes, 'after the hang-up');
  while ((after.routers > 0 || after.activeCalls > 0) && performance.now() - tTeardown < 60_000) {
    await sleep(250);
    after = await healthOr(gw, after, notes, 'during the teardown');
  }
  const teardownS = r1((performance.now() - tTeardown) / 1000);
  if (after.routers > 0 || after.activeCalls > 0) {
    notes.push(`after the hang-up the gateway still holds ${after.activeCalls} calls and ${after.routers} routers`);
  }
  // let the agents' 'ended' events arrive before the next step counts live calls
  const waitAgents = performance.now();
  while (pool.status().counters.activeCalls > 0 && performance.now() - waitAgents < 15_000) {
    await sleep(250);
  }
  if (pool.status().counters.activeCalls > 0) {
    notes.push(`the agents still count ${pool.status().counters.activeCalls} live calls after the hang-up`);
  }
  const memAfterMain = memoryMb(groups.gatewayMain());
  const memAfterWorkers = memoryMb(groups.workers());

  // ---- figures
  const row = lastStatsRow(statsFile);
  const failures: Record<string, number> = {};
  for (const [k, v] of Object.entries(row ?? {})) {
    if (/^Failed.+\(C\)$/.test(k) && k !== 'FailedCall(C)' && Number(v) > 0) {
      failures[k.replace(/\(C\)$/, '')] = Number(v);
    }
  }
  const agentMedia = agentMediaBetween(s0.calls, s1.calls);
  if (o.keep) {
    fs.writeFileSync(path.join(dir, 'agent-samples.json'), JSON.stringify({ before: s0, after: s1 }));
  }
  let trunkMedia: CaptureAnalysis | null = null;
  if (capture) {
    trunkMedia = analyzeCapture(capFile, { port: mediaPort, rtcPorts: o.rtcPorts, agentPorts, fromMs: winFrom, toMs: winTo });
    if (!o.keep) {
      fs.rmSync(capFile, { force: true });
    }
  }
  const lossToTrunkPct = trunkMedia ? trunkMedia.toTrunk.lossPct : null;
  const lossToAgentAtGatewayPct = trunkMedia ? trunkMedia.toAgents.lossPct : null;
  const agentSendGapPct = trunkMedia ? trunkMedia.fromAgents.lossPct : null;
  const lossToTrunkAtGatewayPct = trunkMedia ? r3(Math.max(0, trunkMedia.toTrunk.lossPct - trunkMedia.fromAgents.lossPct)) : null;
  const agentDrops = dropsBetween(drops0.agents, drops1.agents);
  const agentSocketDropPct = agentMedia.packetsExpected > 0 ? r3((agentDrops / agentMedia.packetsExpected) * 100) : 0;
  const lossToAgentPct = lossToAgentAtGatewayPct === null ? agentMedia.lossPct : r3(lossToAgentAtGatewayPct + agentSocketDropPct);
  const allEstablished = established.agents >= n && established.gateway >= n && minLive >= n && agentMedia.calls >= n;
  const held = allEstablished && lossToAgentPct < o.lossThreshold && (lossToTrunkPct === null || lossToTrunkPct < o.lossThreshold) && agentMedia.silent === 0;
  // the gateway can only be judged on streams that exist: every call's stream in the capture both ways
  const allStreams = trunkMedia !== null && trunkMedia.toAgents.streams >= n && trunkMedia.toTrunk.streams >= n;
  const heldByGateway = allEstablished && allStreams && lossToAgentAtGatewayPct !== null && lossToAgentAtGatewayPct < o.lossThreshold && lossToTrunkAtGatewayPct !== null && lossToTrunkAtGatewayPct < o.lossThreshold;
  if (trunkMedia && trunkMedia.toAgents.streams < n) {
    notes.push(`only ${trunkMedia.toAgents.streams} gateway → agent streams in the capture (of ${n})`);
  }
  if (agentMedia.txPpsPerCall > 0 && agentMedia.txPpsPerCall < 49) {
    notes.push(`the agents sent ${agentMedia.txPpsPerCall} packets/s per call instead of 50 (starved)`);
  }
  if (agentMedia.silent > 0) {
    notes.push(`${agentMedia.silent} calls received no audio during the window`);
  }
  if (agentMedia.notConnected > 0) {
    notes.push(`${agentMedia.notConnected} calls had a transport not connected at the end`);
  }
  if (trunkMedia && trunkMedia.toTrunk.streams < n) {
    notes.push(`only ${trunkMedia.toTrunk.streams} agent streams reached sipp (of ${n})`);
  }
  if (capCounts?.dropped) {
    notes.push(`dumpcap dropped ${capCounts.dropped} packets: the agent → trunk loss is overstated`);
  }
  const after2 = pool.status();
  const loopLag = (which: 'p99' | 'max'): number | null => {
    const s = metricValue(metrics, `ringbridge_nodejs_eventloop_lag_${which}_seconds`);

    return s === undefined || Number.isNaN(s) ? null : r1(s * 1000);
  };

  return {
    calls: n,
    established,
    minLiveInWindow: minLive,
    allEstablished,
    rampS,
    setupMs: latency(pool.takeSetupTimes()),
    sipp: {
      attempted: Number(row?.['OutgoingCall(C)'] ?? 0),
      successful: Number(row?.['SuccessfulCall(C)'] ?? 0),
      failed: Number(row?.['FailedCall(C)'] ?? 0),
      failures,
      retransmissions: Number(row?.['Retransmissions(C)'] ?? 0),
      exit: sippExit === 'timeout' ? 'timeout' : sippExit,
    },
    agentMedia,
    trunkMedia,
    capturePackets: capCounts,
    lossToAgentPct,
    lossToAgentCountPct: agentMedia.lossPct,
    lossToTrunkPct,
    lossToTrunkAtGatewayPct,
    agentSendGapPct,
    lossToAgentAtGatewayPct,
    agentSocketDropPct,
    held,
    heldByGateway,
    cpu: cpuFig,
    gatewayCpuPerCallPct: n > 0 ? r3(cpuFig.gateway / n) : 0,
    mem: mem.result(),
    socketDrops: { gatewayMain: dropsBetween(drops0.main, drops1.main), workers: dropsBetween(drops0.workers, drops1.workers), agents: agentDrops },
    udp: {
      inDatagrams: (snmp1.InDatagrams ?? 0) - (snmp0.InDatagrams ?? 0),
      rcvbufErrorsNotSipp: Math.max(0, (snmp1.RcvbufErrors ?? 0) - (snmp0.RcvbufErrors ?? 0) - dropsBetween(drops0.sipp, drops1.sipp)),
      sippMediaDrops: dropsBetween(drops0.sipp, drops1.sipp),
    },
    gatewayLoopP99Ms: loopLag('p99'),
    gatewayLoopMaxMs: loopLag('max'),
    agentLoopP99Ms: r1(agentLoopP99),
    agentLoopMaxMs: r1(agentLoopMax),
    agentCounters: after2.counters,
    teardownS,
    loadAvg: { start: r2(loadStart), end: r2(loadEnd) },
    afterTeardown: { routers: after.routers, activeCalls: after.activeCalls, gatewayMainRssMb: r1(memAfterMain.rssMb), workersRssMb: r1(memAfterWorkers.rssMb) },
    notes: [...notes, ...pool.takeExitNotes(), ...(before.answerErrors !== after2.counters.answerErrors ? [`${after2.counters.answerErrors - before.answerErrors} answers failed: ${JSON.stringify(after2.counters.answerErrorCodes)}`] : [])],
    dir,
  };
}

/** Deletes every Redis key under `prefix` (a bench gateway's presence, call state, records), logging how many. */
export async function cleanRedis(prefix: string, log: (m: string) => void): Promise<void> {
  const { Redis } = await import('ioredis');
  const r = new Redis('redis://127.0.0.1:6379', { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000 });
  try {
    await r.connect();
    let cursor = '0';
    let n = 0;
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) {
        n += await r.unlink(...keys);
      }
    } while (cursor !== '0');
    log(`deleted ${n} Redis keys under ${prefix}`);
  } catch (err) {
    log(`could not delete the Redis keys under ${prefix}: ${(err as Error).message}`);
  } finally {
    r.disconnect();
  }
}

/** Counts the gateway's log records at warn and above by message, and appends them all to a file. */
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
        const rec = JSON.parse(line) as { level?: number | string; msg?: string };
        const level = typeof rec.level === 'number' ? rec.level : 0;
        if (level >= 40) {
          const key = `${level >= 50 ? 'error' : 'warn'}: ${String(rec.msg).slice(0, 120)}`;
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

/** Runs the benchmark: gateway, agents, then the steps; always stops everything. */
export async function runCallsBench(o: CallsBenchOptions, command: string): Promise<CallsBenchReport> {
  const startedAt = new Date().toISOString();
  const loadStart = os.loadavg()[0] ?? 0;
  const workDir = o.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-calls-bench-'));
  fs.mkdirSync(workDir, { recursive: true });
  const pcmaFile = path.join(workDir, 'g711a.pcma');
  const pcma = pcmaFromPcap(o.pcap);
  if (pcma.length < 1600) {
    throw new Error(`${o.pcap} holds no usable PCMA audio (payload type 8)`);
  }
  fs.writeFileSync(pcmaFile, pcma);
  const agentIds = Array.from({ length: o.agents }, (_, i) => `bench-agent-${String(i + 1).padStart(4, '0')}`);
  let didsFile: string | undefined;
  if (o.routing === 'dids') {
    didsFile = path.join(workDir, 'dids.csv');
    const { agentDid } = await import('./gateway.js');
    fs.writeFileSync(didsFile, `SEQUENTIAL\n${agentIds.map((_, i) => `${agentDid(i)};`).join('\n')}\n`);
  }
  let gw: GatewayUnderTest | undefined;
  let pool: AgentPool | undefined;
  const steps: StepResult[] = [];
  let warnings: Record<string, number> | undefined;
  let baseline: CallsBenchReport['baseline'] | undefined;
  let aborted: string | null = null;
  const processes: CallsBenchReport['processes'] = { gateway: -1, workers: [], agents: [] };
  try {
    gw = await startGateway({ agentIds, routing: o.routing, workers: o.workers, logLevel: o.gatewayLogLevel, rtcPorts: o.rtcPorts, relayPorts: o.relayPorts, extraEnv: o.gatewayEnv });
    warnings = watchGatewayLog(gw, path.join(workDir, 'gateway.log'));
    processes.gateway = gw.mainPid();
    processes.workers = gw.workerPids();
    o.log(`gateway pid ${gw.mainPid()} (workers ${gw.workerPids().join(', ')}), http ${gw.httpPort}, sip udp ${gw.sipPort}; files in ${workDir}`);
    const tAgents = performance.now();
    pool = await AgentPool.start({ url: gw.wsUrl, secret: gw.hs256Secret, agentIds, processes: o.agentProcesses, nice: o.agentsNice, tone: o.tone, sampleRate: o.sampleRate, log: o.log });
    processes.agents = pool.pids();
    const h = await gw.health();
    o.log(`${o.agents} agents in ${pool.size} processes signed in after ${r1((performance.now() - tAgents) / 1000)} s (gateway sessions: ${h.sessions})`);
    const redisPid = tcpListenerPid(6379);
    // idle baseline: agents signed in, no call
    const idleGroups: Groups = {
      gatewayMain: () => [gw!.mainPid()],
      workers: () => gw!.workerPids(),
      agents: () => pool!.pids(),
      sipp: () => [],
      capture: () => [],
      redis: () => (redisPid ? [redisPid] : []),
    };
    const cpu = cpuMeters(idleGroups);
    const mem = memSampler(idleGroups);
    await sleep(2000);
    cpu.start();
    for (let i = 0; i < 5; i++) {
      await sleep(1000);
      cpu.sample();
      mem.sample();
    }
    baseline = { cpu: cpu.stop(), mem: mem.result() };
    o.log(`idle: gateway ${baseline.cpu.gateway} % CPU, agents ${baseline.cpu.agents} %, gateway PSS ${r1(baseline.mem.gatewayMainPssMb + baseline.mem.workersPssMb)} MiB`);
    const st: RunState = { o, gw, pool, pcmaFile, redisPid, didsFile };
    for (const n of o.steps) {
      if (n > o.agents) {
        o.log(`step ${n}: more calls than agents (${o.agents}); skipped`);
        continue;
      }
      o.log(`step ${n} calls: ramp at ${o.rate} calls/s, then ${o.windowMs / 1000} s measured ...`);
      let step: StepResult;
      try {
        step = await runStep(st, n, path.join(workDir, `step-${String(steps.length + 1).padStart(2, '0')}-${n}calls`));
      } catch (err) {
        // a step that cannot finish ends the run, but the steps before it are still reported
        aborted = `the ${n}-call step failed: ${(err as Error).message}`;
        o.log(`  ${aborted}`);
        break;
      }
      steps.push(step);
      o.log(
        `  ${step.established.agents}/${n} up; loss to agents ${step.lossToAgentPct} % (gateway ${step.lossToAgentAtGatewayPct ?? '-'} %, agents' sockets ${step.agentSocketDropPct} %), to trunk ${step.lossToTrunkPct ?? '-'} % (gateway ${step.lossToTrunkAtGatewayPct ?? '-'} %, agents' sending ${step.agentSendGapPct ?? '-'} %); CPU gateway ${step.cpu.gatewayMain} % + workers ${step.cpu.mediasoupWorkers} %, agents ${step.cpu.agents} %, machine ${step.cpu.machine} %${step.notes.length ? `; ${step.notes.join('; ')}` : ''}`,
      );
      if (pool.status().exited > 0) {
        aborted = `${pool.status().exited} agent processes exited during the ${n}-call step (see its notes); the agents left cannot carry further steps`;
        o.log(`  ${aborted}`);
        break;
      }
      if (gw.proc.hasExited()) {
        throw new Error(`the gateway exited during the ${n}-call step (${await gw.proc.exited}):\n${gw.proc.output().stderr.slice(-2000)}`);
      }
      const bad = step.established.agents < 0.9 * n || step.lossToAgentPct > o.stopLoss || (step.lossToTrunkPct ?? 0) > o.stopLoss;
      if (o.stopLoss > 0 && bad) {
        o.log(`  step ${n} is past saturation (loss over ${o.stopLoss} % or fewer than 90 % of the calls up): not stepping further`);
        break;
      }
    }
  } finally {
    await pool?.stop();
    if (gw) {
      await gw.stop();
      await cleanRedis(gw.keyPrefix, o.log);
    }
  }
  const held = steps.filter((s) => s.held || s.heldByGateway);
  const ok = steps.filter((s) => s.held).sort((a, b) => b.calls - a.calls)[0];
  const okGw = steps.filter((s) => s.heldByGateway).sort((a, b) => b.calls - a.calls)[0];
  const fit = (f: (s: StepResult) => number, base: number): Fit | null => fitLine([{ x: 0, y: base }, ...held.map((s) => ({ x: s.calls, y: f(s) }))]);
  const b = baseline;
  const { log: _log, ...options } = o;
  if (!o.keep && o.workDir === undefined && steps.every((s) => s.notes.length === 0)) {
    fs.rmSync(workDir, { recursive: true, force: true });
  }

  return {
    tool: 'ringbridge calls-bench',
    startedAt,
    finishedAt: new Date().toISOString(),
    command,
    host: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memGb: r1(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      node: process.version,
      sipp: sippVersion(),
      loadAvg: { start: loadStart, end: os.loadavg()[0] ?? 0 },
    },
    gateway: { env: gw?.env ?? {}, warnings: warnings ?? {} },
    processes,
    options: { ...options, workDir },
    baseline: b,
    steps,
    growth: {
      gatewayCpuPct: fit((s) => s.cpu.gateway, b.cpu.gateway),
      gatewayMainCpuPct: fit((s) => s.cpu.gatewayMain, b.cpu.gatewayMain),
      workersCpuPct: fit((s) => s.cpu.mediasoupWorkers, b.cpu.mediasoupWorkers),
      agentsCpuPct: fit((s) => s.cpu.agents, b.cpu.agents),
      gatewayPssMb: fit((s) => s.mem.gatewayMainPssMb + s.mem.workersPssMb, b.mem.gatewayMainPssMb + b.mem.workersPssMb),
      gatewayMainRssMb: fit((s) => s.mem.gatewayMainRssMb, b.mem.gatewayMainRssMb),
      workersPssMb: fit((s) => s.mem.workersPssMb, b.mem.workersPssMb),
      agentsPssMb: fit((s) => s.mem.agentsPssMb, b.mem.agentsPssMb),
    },
    aborted,
    ceiling: ok ? { calls: ok.calls, lossToAgentPct: ok.lossToAgentPct, lossToTrunkPct: ok.lossToTrunkPct } : null,
    gatewayCeiling: okGw ? { calls: okGw.calls, lossToAgentAtGatewayPct: okGw.lossToAgentAtGatewayPct, lossToTrunkAtGatewayPct: okGw.lossToTrunkAtGatewayPct } : null,
  };
}
