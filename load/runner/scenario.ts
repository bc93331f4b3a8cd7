/**
 * The inbound-call scenario, run against ringbridge and (side by side) against the peer bridge:
 *
 *   ringbridge: sipp trunk UAC ──SIP/RTP──▶ gateway (node dist/src/main.js) ◀──WebSocket(+WebRTC)── simulated agents
 *   peer:       sipp trunk UAC ──SIP/RTP──▶ Kamailio + rtpengine ──SIP/RTP──▶ sipp callee UAS
 *
 * Same rate schedule (schedule.ts), ring time and talk time for both; the targets run one after
 * the other so that they do not share the CPU. Once a second the driver sets sipp's rate, reads
 * its counters, samples CPU and memory of the target's processes and updates the progress line.
 * At the end (or on abort) sipp stops placing calls, the open calls get `drainMs` to end, and
 * every process the target started is stopped. Figures per call (PDD, answer time, answered)
 * come from sipp's short-message trace, so both targets are measured by the same instrument.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify as toYaml } from 'yaml';
import { AgentPool } from '../calls-bench/agent-pool.js';
import { type GatewayUnderTest, startGateway } from '../calls-bench/gateway.js';
import { cleanRedis } from '../calls-bench/bench.js';
import { pcmaFromPcap } from '../calls-bench/rtp-capture.js';
import { parseShortmsgLine } from '../sip-bench/bench.js';
import { projectRoot } from '../../src/util/paths.js';
import { startPeerBridge } from './peer.js';
import { type Progress } from './progress.js';
import { type MosDistribution, type TargetResult, type TargetSeries } from './report.js';
import { ProcessSampler } from './sampler.js';
import { peakRate, rateSteps, type ScenarioShape } from './schedule.js';
import { pickMediaPort, readCounters, SippUac, startSippUas } from './sipp.js';
import { latency } from './stats.js';

/** Which systems the inbound scenario runs against. */
export type TargetName = 'ringbridge' | 'peer';

/** Options of the inbound scenario. */
export interface InboundOptions {
  shape: ScenarioShape;
  /** Ring time: INVITE reaching the callee → answer, ms. */
  ringMs: number;
  /** Talk time: answer → the callee hangs up, ms. */
  talkMs: number;
  /** Shares of calls (0..1) with a hold/resume, with DTMF (ringbridge agents). */
  holdShare: number;
  dtmfShare: number;
  /** Share of agents (0..1) with real WebRTC media; the rest are signaling only. */
  mediaShare: number;
  /**
   * Share of the offered rate (0..1) placed as outbound calls (ringbridge only): idle agents dial,
   * the gateway calls a sipp UAS on the trunk, which answers after the ring time.
   */
  outboundShare: number;
  /** Agents (0: enough for the peak rate × (ring + talk), with a margin). */
  agents: number;
  agentsPerProcess: number;
  agentsNice: number;
  /** mediasoup workers, 0 = one per core. */
  workers: number;
  gatewayLogLevel: string;
  /** Further RINGBRIDGE_* variables for the gateway. */
  gatewayEnv: Record<string, string>;
  /** Audio the trunk (and the peer's callee) loops. */
  pcap: string;
  /** Time the open calls get to end after the scenario, ms. */
  drainMs: number;
  /** Where sipp files and logs go. */
  workDir: string;
  targets: TargetName[];
}

/** What the scenario needs from the command line: progress, an abort signal (Ctrl-C), a log. */
export interface RunContext {
  progress: Progress;
  signal: AbortSignal;
  log: (msg: string) => void;
}

/** Agents needed for the shape: peak rate × (ring + talk + 2 s) × 1.5, at least 2. */
export function agentsFor(o: Pick<InboundOptions, 'shape' | 'ringMs' | 'talkMs' | 'agents'>): number {
  if (o.agents > 0) {
    return o.agents;
  }

  return Math.max(2, Math.ceil((peakRate(o.shape) * (o.ringMs + o.talkMs + 2000) * 1.5) / 1000));
}

/**
 * A Prometheus histogram from a text exposition, summed over its labels: per-bucket counts
 * (not cumulative), total and mean. Null when the histogram is absent.
 */
export function parseHistogram(text: string, name: string): MosDistribution | null {
  const cumulative = new Map<number, number>();
  let count = 0;
  let sum = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}_bucket{`)) {
      const m = /[{,]le="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
      if (m && m[1] !== '+Inf') {
        cumulative.set(Number(m[1]), (cumulative.get(Number(m[1])) ?? 0) + Number(m[2]));
        seen = true;
      }
    } else if (line.startsWith(`${name}_count`)) {
      count += Number(line.split(/\s+/)[1]) || 0;
      seen = true;
    } else if (line.startsWith(`${name}_sum`)) {
      sum += Number(line.split(/\s+/)[1]) || 0;
    }
  }
  if (!seen) {
    return null;
  }
  const bounds = [...cumulative.keys()].sort((a, b) => a - b);
  let prev = 0;
  const buckets = bounds.map((le) => {
    const c = cumulative.get(le)!;
    const b = { le, count: c - prev };
    prev = c;

    return b;
  });
  buckets.push({ le: 5, count: count - prev });

  return { buckets, count, mean: count > 0 ? Math.round((sum / count) * 100) / 100 : null };
}

/** Counts answered calls (a 200 to the INVITE) in a growing sipp short-message trace, reading only what is new. */
class AnswerCounter {
  readonly #file: string;
  #offset = 0;
  #rest = '';
  readonly #answered = new Set<string>();

  constructor(file: string) {
    this.#file = file;
  }

  read(): number {
    let fd: number;
    try {
      fd = fs.openSync(this.#file, 'r');
    } catch {
      return this.#answered.size;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size > this.#offset) {
        const buf = Buffer.alloc(size - this.#offset);
        fs.readSync(fd, buf, 0, buf.length, this.#offset);
        this.#offset = size;
        const lines = (this.#rest + buf.toString('utf8')).split('\n');
        this.#rest = lines.pop() ?? '';
        for (const l of lines) {
          const m = parseShortmsgLine(l);
          if (m?.dir === 'R' && m.cseq.endsWith(' INVITE') && m.first.startsWith('SIP/2.0 200')) {
            this.#answered.add(m.callId);
          }
        }
      }
    } finally {
      fs.closeSync(fd);
    }

    return this.#answered.size;
  }
}

/** Waits `ms`, or less when the signal aborts. */
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

function emptySeries(): TargetSeries {
  return { t: [], offeredCps: [], cps: [], concurrent: [], attempted: [], answered: [], failed: [], cpuPct: {}, rssMb: {} };
}

interface Drive {
  name: string;
  uac: SippUac;
  sampler: ProcessSampler;
  /** Counts the gateway's Redis keys (ringbridge only), sampled every 5 s. */
  redisKeys?: () => Promise<number>;
  /** Outbound calls: the share of the offered rate, and how to start n of them. */
  outbound?: { share: number; dial(n: number): Promise<number>; counts(): { dialed: number; answered: number; open: number } };
  notes: string[];
}

/** Runs the schedule on one target; returns the series and whether it was interrupted. */
async function drive(d: Drive, o: InboundOptions, ctx: RunContext): Promise<{ series: TargetSeries; interrupted: boolean; t0Us: number }> {
  const steps = rateSteps(o.shape);
  const series = emptySeries();
  const answers = new AnswerCounter(d.uac.shortFile);
  const t0 = performance.now();
  const t0Us = Date.now() * 1000;
  d.sampler.start();
  let lastAttempted = 0;
  let tick = 0;
  let draining = false;
  let drainStart = 0;
  let interrupted = false;
  let owed = 0;
  const outShare = d.outbound?.share ?? 0;
  /** Outbound calls due over the coming second at `rate` (the fractions carry over). */
  const dialFor = (rate: number): void => {
    if (d.outbound && outShare > 0) {
      owed += rate * outShare;
      const n = Math.floor(owed + 1e-9);
      owed -= n;
      d.outbound.dial(n).catch((err: unknown) => d.notes.push(`dial failed: ${(err as Error).message}`));
    }
  };
  dialFor(steps[0]?.rate ?? 0);
  for (;;) {
    tick++;
    await sleep(Math.max(0, t0 + tick * 1000 - performance.now()), ctx.signal);
    const elapsedMs = performance.now() - t0;
    if (ctx.signal.aborted && !interrupted) {
      interrupted = true;
      d.notes.push(`interrupted at ${(elapsedMs / 1000).toFixed(1)} s`);
    }
    let offered = 0;
    if (!draining && (elapsedMs >= o.shape.durationMs || interrupted)) {
      draining = true;
      drainStart = performance.now();
      await d.uac.setRate(0);
    }
    if (!draining) {
      offered = [...steps].reverse().find((s) => s.atMs <= elapsedMs)?.rate ?? 0;
      await d.uac.setRate(Math.round(offered * (1 - outShare) * 1000) / 1000);
      dialFor(offered);
    }
    const c = d.uac.counters();
    const res = d.sampler.sample();
    const attempted = c?.created ?? 0;
    const concurrent = c?.current ?? 0;
    series.t.push(Math.round(elapsedMs / 100) / 10);
    series.offeredCps.push(offered);
    series.cps.push(attempted - lastAttempted);
    lastAttempted = attempted;
    series.concurrent.push(concurrent);
    series.attempted.push(attempted);
    series.answered.push(answers.read());
    series.failed.push(c?.failed ?? 0);
    for (const [g, v] of Object.entries(res.cpuPct)) {
      (series.cpuPct[g] ??= []).push(v);
    }
    for (const [g, v] of Object.entries(res.rssMb)) {
      (series.rssMb[g] ??= []).push(v);
    }
    for (const [g, v] of Object.entries(res.fds)) {
      ((series.fds ??= {})[g] ??= []).push(v);
    }
    if (d.redisKeys) {
      // a SCAN of the prefix: cheap, but every 5 s is enough for a curve
      // read every 5 s; the seconds between repeat the last reading, so the curve is continuous
      const keys = series.redisKeys ?? (series.redisKeys = []);
      keys.push(tick % 5 === 1 || keys.length === 0 ? await d.redisKeys().catch(() => null) : (keys[keys.length - 1] ?? null));
    }
    ctx.progress.update({
      target: draining ? `${d.name}, ending calls` : d.name,
      elapsedS: elapsedMs / 1000,
      durationS: o.shape.durationMs / 1000,
      attempted,
      answered: series.answered[series.answered.length - 1]!,
      failed: c?.failed ?? 0,
      cps: series.cps[series.cps.length - 1]!,
      offeredCps: offered,
      concurrent,
      ...(d.outbound ? { outbound: d.outbound.counts() } : {}),
    });
    if (d.uac.proc.hasExited()) {
      if (!draining) {
        d.notes.push(`sipp exited early (${String(await d.uac.proc.exited)}): ${d.uac.proc.output().stderr.trim().slice(-500)}`);
      }
      break;
    }
    if (draining) {
      const bound = interrupted ? Math.min(o.drainMs, 10_000) : o.drainMs;
      const open = (c?.current ?? 0) + (d.outbound?.counts().open ?? 0);
      if ((c !== undefined && open === 0 && performance.now() - drainStart > 1500) || performance.now() - drainStart > bound) {
        if (open > 0) {
          d.notes.push(`${open} calls still open ${Math.round(bound / 1000)} s after the end; stopped`);
        }
        break;
      }
    }
  }
  ctx.progress.end();
  await d.uac.finish(5000);

  return { series, interrupted, t0Us };
}

/** Post-run figures of a target from its sipp UAC's trace and counters; `t0Us`: the scenario's start, µs since the epoch. */
function figures(name: string, description: string, uac: SippUac, series: TargetSeries, notes: string[], t0Us: number): TargetResult {
  const calls = [...uac.calls().values()];
  const answered = calls.filter((c) => c.final?.status === 200);
  const perSecond = series.t.map(() => ({ attempted: 0, answered: 0 }));
  for (const c of calls) {
    const i = Math.min(perSecond.length - 1, Math.max(0, Math.floor((c.inviteUs - t0Us) / 1e6)));
    if (perSecond[i]) {
      perSecond[i].attempted++;
      perSecond[i].answered += c.final?.status === 200 ? 1 : 0;
    }
  }
  series.answerRatePct = perSecond.map((p) => (p.attempted > 0 ? Math.round((p.answered / p.attempted) * 1000) / 10 : null));
  const pdd = calls.flatMap((c) => {
    const first = c.t180 ?? (c.final && c.final.status < 300 ? c.final.tUs : undefined);

    return first === undefined ? [] : [(first - c.inviteUs) / 1000];
  });
  const c = uac.counters();
  const resources: TargetResult['resources'] = {};
  for (const g of Object.keys(series.cpuPct)) {
    const cpu = series.cpuPct[g]!;
    resources[g] = {
      cpuPctMean: cpu.length > 0 ? Math.round((cpu.reduce((a, b) => a + b, 0) / cpu.length) * 10) / 10 : 0,
      cpuPctMax: Math.max(0, ...cpu),
      rssMbMax: Math.max(0, ...(series.rssMb[g] ?? [])),
    };
  }
  const failures: Record<string, number> = {};
  for (const call of calls) {
    if (call.final && call.final.status >= 300) {
      failures[String(call.final.status)] = (failures[String(call.final.status)] ?? 0) + 1;
    }
  }

  return {
    name,
    description,
    totals: {
      attempted: calls.length,
      answered: answered.length,
      failed: c?.failed ?? 0,
      completed: c?.successful ?? 0,
      answerRatePct: calls.length > 0 ? Math.round((answered.length / calls.length) * 1000) / 10 : null,
      peakConcurrent: Math.max(0, ...series.concurrent),
    },
    pddMs: latency(pdd),
    answerMs: latency(answered.map((x) => (x.final!.tUs - x.inviteUs) / 1000)),
    mos: null,
    series,
    resources,
    extra: { finalStatuses: failures, retransmissions: c?.retransmissions ?? 0 },
    notes,
  };
}

/** Writes a copy of load/runner/<template> into `dir` with each @KEY@ replaced; returns its path. */
export function writeScenario(template: string, dir: string, values: Record<string, string>): string {
  let xml = fs.readFileSync(path.join(projectRoot(), 'load', 'runner', template), 'utf8');
  for (const [k, v] of Object.entries(values)) {
    xml = xml.split(`@${k}@`).join(v);
  }
  const file = path.join(dir, template);
  fs.writeFileSync(file, xml);

  return file;
}

function sippLimit(o: InboundOptions): number {
  return Math.ceil((peakRate(o.shape) * (o.ringMs + o.talkMs + 10_000) * 1.5) / 1000) + 10;
}

function sippTimeoutMs(o: InboundOptions): number {
  return o.shape.durationMs + o.drainMs + o.ringMs + o.talkMs + 120_000;
}

/** The ringbridge side: gateway, agents, sipp trunk. */
async function runRingbridge(o: InboundOptions, ctx: RunContext, pcmaFile: string): Promise<{ result: TargetResult; interrupted: boolean }> {
  const dir = path.join(o.workDir, 'ringbridge');
  fs.mkdirSync(dir, { recursive: true });
  const nAgents = agentsFor(o);
  const agentIds = Array.from({ length: nAgents }, (_, i) => `load-agent-${i}`);
  const notes: string[] = [];
  let gw: GatewayUnderTest | undefined;
  let pool: AgentPool | undefined;
  let uac: SippUac | undefined;
  let uas: Awaited<ReturnType<typeof startSippUas>> | undefined;
  try {
    const trunkEnv: Record<string, string> = {};
    if (o.outboundShare > 0) {
      const uasScenario = writeScenario('trunk-uas.xml', dir, { PCMA_FILE: pcmaFile, RING_MS: String(o.ringMs) });
      uas = await startSippUas({ name: 'sipp trunk UAS', scenarioFile: uasScenario, dir, mediaPort: pickMediaPort(), timeoutMs: sippTimeoutMs(o) });
      // a whole list cannot come from the environment: the trunk goes in a configuration file
      const file = path.join(dir, 'gateway-trunks.yaml');
      const trunks = [
        {
          id: 'loopback',
          inbound: { allow: ['127.0.0.0/8', '::1/128'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
          outbound: { uri: `sip:127.0.0.1:${uas.port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' },
          codecs: ['PCMA', 'PCMU', 'G722', 'opus'],
          media: { latching: false },
        },
      ];
      fs.writeFileSync(file, toYaml({ trunks }));
      trunkEnv.RINGBRIDGE_CONFIG = file;
    }
    ctx.log(`ringbridge: starting the gateway and ${nAgents} agents (${Math.round(o.mediaShare * 100)} % with WebRTC media)`);
    gw = await startGateway({
      agentIds,
      routing: 'group',
      workers: o.workers,
      logLevel: o.gatewayLogLevel,
      rtcPorts: { min: 40000, max: 49999 },
      relayPorts: { min: 34000, max: 35999 },
      extraEnv: { RINGBRIDGE_METRICS__QUALITY_INTERVAL_MS: '2000', ...trunkEnv, ...o.gatewayEnv },
    });
    const g = gw;
    pool = await AgentPool.start({
      url: g.wsUrl,
      secret: g.hs256Secret,
      agentIds,
      processes: Math.ceil(nAgents / o.agentsPerProcess),
      nice: o.agentsNice,
      tone: 'shared',
      sampleRate: 8000,
      behaviour: { answerDelayMs: o.ringMs, talkMs: o.talkMs, holdShare: o.holdShare, dtmfShare: o.dtmfShare, mediaShare: o.mediaShare },
      log: ctx.log,
    });
    const p = pool;
    const maxHoldMs = o.ringMs + o.talkMs + 60_000;
    const scenario = writeScenario('trunk-uac.xml', dir, { PCMA_FILE: pcmaFile, MAX_HOLD_MS: String(maxHoldMs) });
    const first = Math.round(rateSteps(o.shape)[0]!.rate * (1 - o.outboundShare) * 1000) / 1000;
    uac = await SippUac.start({
      name: 'sipp trunk UAC',
      scenarioFile: scenario,
      remote: `127.0.0.1:${g.sipPort}`,
      service: g.didOf(0),
      initialRate: first,
      limit: sippLimit(o),
      dir,
      mediaPort: pickMediaPort(),
      timeoutMs: sippTimeoutMs(o),
    });
    const u = uac;
    const sampler = new ProcessSampler({
      gateway: () => [g.mainPid()],
      workers: () => g.workerPids(),
      agents: () => p.pids(),
      sipp: () => [...u.proc.tree(), ...(uas?.proc.tree() ?? [])],
    });
    const outbound = o.outboundShare > 0
      ? {
          share: o.outboundShare,
          dial: (n: number) => p.dial(n, '+4930999000'),
          counts: () => {
            const s = p.status().counters;

            return { dialed: s.dialed, answered: s.dialAnswered, open: s.activeCalls };
          },
        }
      : undefined;
    // the gateway's Redis (the test profile's, 127.0.0.1:6379): its keys over time show leaks
    const redis = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
    await redis.connect().catch(() => notes.push('Redis keys not sampled: no Redis at 127.0.0.1:6379'));
    const redisKeys = async (): Promise<number> => {
      let n = 0;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${g.keyPrefix}*`, 'COUNT', 1000);
        cursor = next;
        n += keys.length;
      } while (cursor !== '0');

      return n;
    };
    const driven = await drive({ name: 'ringbridge', uac: u, sampler, notes, ...(redis.status === 'ready' ? { redisKeys } : {}), ...(outbound ? { outbound } : {}) }, o, ctx).finally(() => redis.disconnect());
    const { series, interrupted, t0Us } = driven;
    const metrics = await g.metrics().catch(() => '');
    fs.writeFileSync(path.join(dir, 'gateway-metrics.txt'), metrics);
    const status = p.status();
    notes.push(...p.takeExitNotes());
    const result = figures('ringbridge', `ringbridge gateway (node dist/src/main.js, ${g.workerPids().length} mediasoup workers) with ${nAgents} simulated agents`, u, series, notes, t0Us);
    result.mos = parseHistogram(metrics, 'ringbridge_leg_mos');
    result.extra = { ...result.extra, agents: status.counters, agentLoopDelayMaxMs: status.loopDelayMaxMs, gatewayEnv: g.env };
    if (o.outboundShare > 0) {
      const times = p.takeDialTimes();
      const c = status.counters;
      result.outbound = {
        dialed: c.dialed,
        answered: c.dialAnswered,
        failed: c.dialFailed,
        noIdleAgent: c.dialNoIdle,
        pddMs: latency(times.pddMs),
        answerMs: latency(times.answerMs),
        trunk: uas ? readCounters(uas.statsFile) ?? null : null,
      };
    }

    return { result, interrupted };
  } finally {
    await uac?.finish(1000).catch(() => undefined);
    await pool?.stop().catch(() => undefined);
    await gw?.stop().catch(() => undefined);
    await uas?.proc.stop(3000).catch(() => undefined);
    if (gw) {
      // the gateway's keys go with it (the shared Redis keeps nothing of a run)
      await cleanRedis(gw.keyPrefix, (m) => notes.push(m));
    }
  }
}

/** The peer side: sipp callee, rtpengine, Kamailio, sipp trunk. */
async function runPeer(o: InboundOptions, ctx: RunContext, pcmaFile: string): Promise<{ result: TargetResult; interrupted: boolean }> {
  const dir = path.join(o.workDir, 'peer');
  fs.mkdirSync(dir, { recursive: true });
  const notes: string[] = [];
  const stops: (() => Promise<unknown>)[] = [];
  try {
    ctx.log('peer: starting the sipp callee, rtpengine and Kamailio');
    const uasScenario = writeScenario('peer-uas.xml', dir, { PCMA_FILE: pcmaFile, RING_MS: String(o.ringMs), TALK_MS: String(Math.max(1, o.talkMs)) });
    const uas = await startSippUas({ name: 'sipp callee UAS', scenarioFile: uasScenario, dir, mediaPort: pickMediaPort(), timeoutMs: sippTimeoutMs(o) });
    stops.push(() => uas.proc.stop(3000));
    const peer = await startPeerBridge({ uas: { host: '127.0.0.1', port: uas.port } });
    stops.unshift(() => peer.stop());
    const maxHoldMs = o.ringMs + o.talkMs + 60_000;
    const scenario = writeScenario('trunk-uac.xml', dir, { PCMA_FILE: pcmaFile, MAX_HOLD_MS: String(maxHoldMs) });
    const uac = await SippUac.start({
      name: 'sipp trunk UAC',
      scenarioFile: scenario,
      remote: `127.0.0.1:${peer.sipPort}`,
      service: 'callee',
      initialRate: rateSteps(o.shape)[0]!.rate,
      limit: sippLimit(o),
      dir,
      mediaPort: pickMediaPort(),
      timeoutMs: sippTimeoutMs(o),
    });
    stops.unshift(() => uac.finish(1000));
    const sampler = new ProcessSampler({
      kamailio: () => peer.kamailio.tree(),
      rtpengine: () => peer.rtpengine.tree(),
      sipp: () => [...uac.proc.tree(), ...uas.proc.tree()],
    });
    const { series, interrupted, t0Us } = await drive({ name: 'kamailio+rtpengine', uac, sampler, notes }, o, ctx);
    const result = figures('kamailio+rtpengine', peer.description, uac, series, notes, t0Us);
    notes.push('no MOS: neither Kamailio nor rtpengine (without its kernel module and Homer) reports per-call quality here');

    return { result, interrupted };
  } finally {
    for (const stop of stops) {
      await stop().catch(() => undefined);
    }
  }
}

/** Runs the inbound scenario on each target in turn; stops early when the signal aborts. */
export async function runInbound(o: InboundOptions, ctx: RunContext): Promise<{ targets: TargetResult[]; interrupted: boolean }> {
  fs.mkdirSync(o.workDir, { recursive: true });
  const pcmaFile = path.join(o.workDir, 'trunk-audio.pcma');
  fs.writeFileSync(pcmaFile, pcmaFromPcap(o.pcap));
  const targets: TargetResult[] = [];
  let interrupted = false;
  for (const t of o.targets) {
    if (ctx.signal.aborted) {
      interrupted = true;
      break;
    }
    const r = t === 'ringbridge' ? await runRingbridge(o, ctx, pcmaFile) : await runPeer(o, ctx, pcmaFile);
    targets.push(r.result);
    interrupted ||= r.interrupted;
  }

  return { targets, interrupted };
}
