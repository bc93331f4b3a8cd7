/**
 * `npm run load -- [options]`: the ringbridge load runner. `--help` lists the options;
 * load/README.md explains the toolkit.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { projectRoot } from '../../src/util/paths.js';
import { describeMachine } from './machine.js';
import { type PresetName, runPreset } from './presets.js';
import { Progress } from './progress.js';
import { type RunReport, writeRunReport } from './report.js';
import { type InboundOptions, runInbound, type TargetName } from './scenario.js';
import { plannedCalls, type ScenarioKind, validateShape } from './schedule.js';
import { parseDuration } from './stats.js';

export const HELP = `Usage: npm run load -- [options]
       npm run load -- --preset sip|calls|wake [that benchmark's options]
       node dist/load/runner/cli.js [options]

Runs a call scenario against ringbridge and, side by side, against a peer bridge (Kamailio +
rtpengine from Debian), with live progress, and writes a JSON report and a self-contained HTML
page with plots (calls per second, concurrent calls, post-dial delay percentiles, answer rate,
MOS distribution, CPU, memory and open file descriptors over time, the gateway's Redis keys,
the scenario and the machine) to load/reports/.

ringbridge: a sipp trunk (UAC, G.711 A-law audio looping) calls the gateway (node dist/src/main.js
as its own process); simulated agents (many WebSocket sessions in a few processes; a share with
real WebRTC media through @roamhq/wrtc and the client SDK, the rest signaling only) answer after
the ring time, hold/resume or send DTMF in a share of the calls, and hang up after the talk time.
peer: the same sipp trunk and schedule through Kamailio + rtpengine (userspace) to a sipp callee
that answers after the ring time with audio and hangs up after the talk time.

Ctrl-C (or SIGTERM) stops placing calls, lets open calls end (10 s at most), stops every process
the run started and writes the report, marked interrupted. A second Ctrl-C exits at once.

Scenario:
  --scenario KIND          steady | ramp | burst | soak (default steady)
  --rate N                 calls/s: steady/soak rate, ramp target, burst base rate (default 2)
  --duration T             scenario length (default 60s; soak: 30m)
  --ramp-from N            ramp: start rate (default 0)
  --ramp T                 ramp: ramp length (default: the whole duration)
  --burst-rate N           burst: rate during a burst (default 5 × rate)
  --burst-every T          burst: period of the bursts (default 30s)
  --burst-length T         burst: length of a burst (default 5s)
  --ring T                 ring time: the callee answers after this (default 2s)
  --talk T                 talk time: the callee hangs up after this (default 20s)
  --hold-share F           share of calls (0..1) with hold and resume (default 0.1)
  --dtmf-share F           share of calls (0..1) with DTMF digits (default 0.1)
  --media-share F          share of agents (0..1) with WebRTC media (default 0.2; the rest signaling only)
  --outbound-share F       share of the rate (0..1) placed as outbound calls: idle agents dial, a sipp
                           UAS on the trunk answers after the ring time (ringbridge only; default 0)
  --agents N               agents (default: peak rate × (ring + talk + 2 s) × 1.5)
  --agents-per-process K   agents per agent process (default 50)
  --agents-nice N          nice value of the agent processes (default 10)
  --target LIST            ringbridge,peer (default ringbridge,peer; "ringbridge" alone skips the peer)
  --drain T                time open calls get to end after the scenario (default 30s)
  --workers N              mediasoup workers, 0 = one per core (default 0)
  --gateway-env K=V        extra RINGBRIDGE_* variable for the gateway (repeatable)
  --gateway-log-level L    the gateway's log level (default warn)
  --pcap FILE              audio the trunk loops (default /usr/share/sip-tester/g711a.pcap)

Presets (the earlier benchmarks; everything after the preset name goes to that benchmark):
  --preset sip             SIP element call rate (load/sip-bench): e.g. --target kamailio --rates 100,500
  --preset calls           concurrent calls with audio (load/calls-bench): e.g. --steps 25,50 --window 15s
  --preset wake            wake-path latency with a local APNs (load/wake-bench): e.g. --rate 100 --duration 30s

Output:
  --out DIR                where the JSON and HTML go (default load/reports/)
  --name NAME              base name of the two files (default load-<scenario>-<time>)
  --work-dir DIR           sipp files and logs (default a temporary directory, kept)
  --quiet                  no progress on stderr
  --help                   this text

Examples:
  npm run load -- --scenario steady --rate 5 --duration 60s --ring 2s --talk 20s
  npm run load -- --scenario burst --rate 2 --burst-rate 10 --burst-every 20s --burst-length 3s --duration 60s
  npm run load -- --scenario ramp --ramp-from 1 --rate 20 --duration 120s --target ringbridge
  npm run load -- --preset sip --target kamailio --rates 100,500,1000 --duration 15s
`;

/** The parsed command line. */
export interface Cli {
  help: boolean;
  preset?: { name: PresetName; argv: string[] };
  inbound?: InboundOptions;
  outDir?: string;
  name?: string;
  quiet: boolean;
}

const share = (name: string, v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) {
    throw new TypeError(`--${name} must be a number from 0 to 1, got ${JSON.stringify(v)}`);
  }

  return n;
};
const num = (name: string, v: string, min = 0): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) {
    throw new TypeError(`--${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  }

  return n;
};
const int = (name: string, v: string, min = 0): number => {
  const n = num(name, v, min);
  if (!Number.isInteger(n)) {
    throw new TypeError(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  }

  return n;
};

/** Parses the command line; throws TypeError naming the option on a bad value. */
export function parseCli(argv: string[]): Cli {
  const at = argv.indexOf('--preset');
  if (at >= 0) {
    const name = argv[at + 1];
    if (name !== 'sip' && name !== 'calls' && name !== 'wake') {
      throw new TypeError(`--preset must be sip, calls or wake, got ${JSON.stringify(name)}`);
    }
    const rest = [...argv.slice(0, at), ...argv.slice(at + 2)];
    const take = (flag: string): string | undefined => {
      const i = rest.indexOf(flag);
      if (i < 0) {
        return undefined;
      }
      const value = rest[i + 1];
      rest.splice(i, 2);

      return value;
    };
    const outDir = take('--out');
    const base = take('--name');

    return { help: rest.includes('--help'), preset: { name, argv: rest }, outDir, name: base, quiet: false };
  }
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      scenario: { type: 'string', default: 'steady' },
      rate: { type: 'string', default: '2' },
      duration: { type: 'string' },
      'ramp-from': { type: 'string', default: '0' },
      ramp: { type: 'string' },
      'burst-rate': { type: 'string' },
      'burst-every': { type: 'string', default: '30s' },
      'burst-length': { type: 'string', default: '5s' },
      ring: { type: 'string', default: '2s' },
      talk: { type: 'string', default: '20s' },
      'hold-share': { type: 'string', default: '0.1' },
      'dtmf-share': { type: 'string', default: '0.1' },
      'media-share': { type: 'string', default: '0.2' },
      'outbound-share': { type: 'string', default: '0' },
      agents: { type: 'string', default: '0' },
      'agents-per-process': { type: 'string', default: '50' },
      'agents-nice': { type: 'string', default: '10' },
      target: { type: 'string', default: 'ringbridge,peer' },
      drain: { type: 'string', default: '30s' },
      workers: { type: 'string', default: '0' },
      'gateway-env': { type: 'string', multiple: true, default: [] },
      'gateway-log-level': { type: 'string', default: 'warn' },
      pcap: { type: 'string', default: '/usr/share/sip-tester/g711a.pcap' },
      out: { type: 'string' },
      name: { type: 'string' },
      'work-dir': { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    return { help: true, quiet: values.quiet };
  }
  const kind = values.scenario as ScenarioKind;
  const rate = num('rate', values.rate);
  const shape = validateShape({
    kind,
    rate,
    durationMs: parseDuration(values.duration ?? (kind === 'soak' ? '30m' : '60s')),
    rampFrom: num('ramp-from', values['ramp-from']),
    ...(values.ramp ? { rampMs: parseDuration(values.ramp) } : {}),
    ...(values['burst-rate'] ? { burstRate: num('burst-rate', values['burst-rate']) } : {}),
    burstEveryMs: parseDuration(values['burst-every']),
    burstLengthMs: parseDuration(values['burst-length']),
  });
  const targets = values.target.split(',').map((t) => t.trim());
  for (const t of targets) {
    if (t !== 'ringbridge' && t !== 'peer') {
      throw new TypeError(`--target must list ringbridge and/or peer, got ${JSON.stringify(t)}`);
    }
  }
  const gatewayEnv: Record<string, string> = {};
  for (const kv of values['gateway-env']) {
    const m = /^(RINGBRIDGE_[A-Z0-9_]+)=(.*)$/s.exec(kv);
    if (!m) {
      throw new TypeError(`--gateway-env must be RINGBRIDGE_...=value, got ${JSON.stringify(kv)}`);
    }
    gatewayEnv[m[1]!] = m[2]!;
  }

  return {
    help: false,
    quiet: values.quiet,
    outDir: values.out,
    name: values.name,
    inbound: {
      shape,
      ringMs: parseDuration(values.ring),
      talkMs: parseDuration(values.talk),
      holdShare: share('hold-share', values['hold-share']),
      dtmfShare: share('dtmf-share', values['dtmf-share']),
      mediaShare: share('media-share', values['media-share']),
      outboundShare: share('outbound-share', values['outbound-share']),
      agents: int('agents', values.agents),
      agentsPerProcess: int('agents-per-process', values['agents-per-process'], 1),
      agentsNice: int('agents-nice', values['agents-nice']),
      workers: int('workers', values.workers),
      gatewayLogLevel: values['gateway-log-level'],
      gatewayEnv,
      pcap: values.pcap,
      drainMs: parseDuration(values.drain),
      workDir: values['work-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-load-')),
      targets: targets as TargetName[],
    },
  };
}

function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const quote = (a: string): string => (/[\s"'{}]/.test(a) ? JSON.stringify(a) : a);

/** The CLI: parse, run, report. Resolves with the exit status (0 ok, 1 failed, 2 bad usage, 130 interrupted). */
export async function main(argv: string[]): Promise<number> {
  let cli: Cli;
  try {
    cli = parseCli(argv);
  } catch (err) {
    console.error(`load: ${err instanceof Error ? err.message : String(err)}\n\n${HELP}`);

    return 2;
  }
  if (cli.help && !cli.preset) {
    console.log(HELP);

    return 0;
  }
  const command = ['npm run load --', ...argv.map(quote)].join(' ');
  const progress = new Progress(cli.quiet ? { write: () => true } : process.stderr);
  const log = (msg: string): void => progress.note(`load: ${msg}`);
  const abort = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      console.error(`load: second ${sig}, exiting now (children are killed on exit)`);
      process.exit(130);
    }
    log(`${sig}: stopping the calls, then writing the report (Ctrl-C again to exit at once)`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const m = describeMachine();
  const startedAt = new Date().toISOString();
  const report: RunReport = {
    tool: 'ringbridge load runner',
    version: packageVersion(),
    startedAt,
    finishedAt: startedAt,
    command,
    interrupted: false,
    scenario: {},
    machine: m.machine,
    targets: [],
  };
  let status = 0;
  try {
    if (cli.preset) {
      report.scenario = { preset: cli.preset.name, options: cli.preset.argv.join(' ') };
      if (cli.preset.argv.includes('--help')) {
        // the benchmark's own parser prints nothing; show its options through its help text
        const mod = (await import(`../${cli.preset.name}-bench/run.js`)) as { main(a: string[]): Promise<number> };

        return await mod.main(['--help']);
      }
      // a preset's benchmark cannot stop half-way: on Ctrl-C the runner writes what it has and exits
      abort.signal.addEventListener('abort', () => {
        report.interrupted = true;
        report.finishedAt = new Date().toISOString();
        report.machine = m.finish();
        const files = writeRunReport(report, cli.outDir, cli.name);
        console.error(`load: interrupted; report: ${files.html}`);
        process.exit(130);
      });
      const r = await runPreset(cli.preset.name, cli.preset.argv, command, log);
      console.log(r.text);
      report.preset = { name: cli.preset.name, report: r.report, summary: r.summary, charts: r.charts };
    } else {
      const o = cli.inbound!;
      const shape = validateShape(o.shape);
      report.scenario = {
        scenario: o.shape.kind,
        durationMs: shape.durationMs,
        rate: shape.rate,
        ...(shape.kind === 'ramp' ? { rampFrom: shape.rampFrom, rampMs: shape.rampMs } : {}),
        ...(shape.kind === 'burst' ? { burstRate: shape.burstRate, burstEveryMs: shape.burstEveryMs, burstLengthMs: shape.burstLengthMs } : {}),
        plannedCalls: plannedCalls(o.shape),
        ringMs: o.ringMs,
        talkMs: o.talkMs,
        holdShare: o.holdShare,
        dtmfShare: o.dtmfShare,
        mediaShare: o.mediaShare,
        outboundShare: o.outboundShare,
        agents: o.agents || 'auto',
        targets: o.targets.join(','),
        drainMs: o.drainMs,
        workDir: o.workDir,
      };
      const r = await runInbound(o, { progress, signal: abort.signal, log });
      report.targets = r.targets;
      report.interrupted = r.interrupted || abort.signal.aborted;
      for (const t of r.targets) {
        console.log(
          `${t.name}: attempted ${t.totals.attempted}, answered ${t.totals.answered} (${t.totals.answerRatePct ?? '–'} %), failed ${t.totals.failed}, ` +
            `PDD p50/p99 ${t.pddMs.p50 ?? '–'}/${t.pddMs.p99 ?? '–'} ms, peak concurrent ${t.totals.peakConcurrent}` +
            (t.mos?.mean != null ? `, MOS mean ${t.mos.mean}` : '') +
            (t.outbound ? `; outbound dialled ${t.outbound.dialed}, answered ${t.outbound.answered}, failed ${t.outbound.failed}, PDD p50/p99 ${t.outbound.pddMs.p50 ?? '–'}/${t.outbound.pddMs.p99 ?? '–'} ms` : '') +
            `; ${Object.entries(t.resources).map(([g, x]) => `${g} ${x.cpuPctMean} % CPU, ${x.rssMbMax} MiB`).join(', ')}`,
        );
      }
    }
  } catch (err) {
    console.error(`load: ${err instanceof Error ? err.message : String(err)}`);
    if (err instanceof TypeError) {
      return 2;
    }
    report.scenario.error = err instanceof Error ? err.message : String(err);
    status = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  report.finishedAt = new Date().toISOString();
  report.machine = m.finish();
  report.interrupted ||= abort.signal.aborted;
  const files = writeRunReport(report, cli.outDir, cli.name);
  console.log(`report: ${path.relative(process.cwd(), files.json) || files.json}\n        ${path.relative(process.cwd(), files.html) || files.html}`);

  return report.interrupted ? 130 : status;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main(process.argv.slice(2)).then((code) => process.exit(code));
}
