/**
 * `npm run bench:sip -- [options]`: steps up the call rate through a SIP element between a sipp
 * UAC and a sipp UAS on loopback and reports completion, post-dial delay, CPU and memory per step.
 * `--help` lists the options. See load/sip-bench/README.md.
 */
import { parseArgs } from 'node:util';
import { runBenchCli, runIfMain } from '../runner/bench-cli.js';
import { parseDuration, runBench, type BenchOptions, type BenchReport } from './bench.js';

const HELP = `Usage: npm run bench:sip -- [options]
       node dist/load/sip-bench/run.js [options]

Measures a SIP element between a sipp UAC and a sipp UAS over UDP on 127.0.0.1: every call is
INVITE/180/200/ACK/BYE on both legs. The call rate goes up step by step; each step reports calls
attempted, completed and failed, completion (% of the calls planned for the step), post-dial delay
(INVITE sent to 180 received at the UAC, p50/p99), the element's CPU % and memory, and sipp's
own CPU. Prints a table, writes JSON to load/reports/sip-bench-<timestamp>.json, and names the
highest rate with at least --threshold % completed.

Options:
  --target kamailio|command  element under test (default kamailio)
                             kamailio: Debian's kamailio (installed with apt-get when missing;
                             needs root then) as a stateful, record-routing proxy configured by
                             load/sip-bench/kamailio-proxy.cfg
                             command: the command line given with --cmd
  --cmd "<command line>"     for --target command; run through /bin/sh from the project root.
                             Placeholders: {port} (SIP UDP port to listen on), {host} (127.0.0.1),
                             {uas} (host:port of the sipp UAS to relay calls to), {uas_port},
                             {uas_uri}; also in the environment as SIP_BENCH_PORT, SIP_BENCH_HOST,
                             SIP_BENCH_UAS, SIP_BENCH_UAS_URI. The harness waits until the command
                             (or a child of it) listens on {port}.
  --port N                   SIP port of the element (default: a free port)
  --rates LIST               call rates in calls/s, comma-separated
                             (default 100,200,300,350,500,700,1000)
  --duration T               length of each step: 20s, 500ms, 2m (default 20s)
  --hold-ms N                talk time between ACK and BYE in ms (default 0)
  --uac-shards N             sipp UAC processes that split each rate (default 1); sipp itself is
                             a bottleneck on small machines
  --drain T                  time allowed after a step's last call for open calls to finish;
                             calls still open then count as not completed (default 10s)
  --settle T                 pause between steps (default 2s)
  --threshold PCT            completion a step needs to count as sustained (default 99.9)
  --stop-below PCT           stop stepping up after a step below this completion (default 0:
                             never)
  --kamailio-workers N       kamailio UDP worker processes, -n (default 4)
  --kamailio-shm-mb N        kamailio shared memory, -m (default 1024). Finished transactions
                             stay there about 5 s, so high rates need a lot; when it runs out,
                             kamailio answers 500 and the step fails for that reason
  --max-open-calls N         sipp -l per UAC shard (default: rate x (hold + 35 s), never throttles)
  --trace-errors             keep sipp's UAC error logs in the step directories
  --pdd-source shortmsg|rtd  where post-dial delays come from (default shortmsg): sipp's
                             per-message log (-trace_shortmsg, microsecond time stamps, also gives
                             INVITE-to-200) or sipp's rtd measure (-trace_rtt, cheaper for sipp but
                             in 4 ms steps: sipp reads CLOCK_MONOTONIC_COARSE)
  --json FILE                write the JSON report here instead of load/reports/
  --work-dir DIR             keep the step directories (sipp statistics, rtt samples) here
                             (default: a new temporary directory)
  --quiet                    no progress lines, only the table
  --help                     this text

Example:
  npm run bench:sip -- --target kamailio --rates 100,200,350,500 --duration 20s --uac-shards 2
`;

/** Parses the command line into benchmark options; throws TypeError on a bad value. */
export function parseCli(argv: string[]): { help: boolean; options: BenchOptions; jsonPath?: string; quiet: boolean } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      target: { type: 'string', default: 'kamailio' },
      cmd: { type: 'string' },
      port: { type: 'string' },
      rates: { type: 'string', default: '100,200,300,350,500,700,1000' },
      duration: { type: 'string', default: '20s' },
      'hold-ms': { type: 'string', default: '0' },
      'uac-shards': { type: 'string', default: '1' },
      drain: { type: 'string', default: '10s' },
      settle: { type: 'string', default: '2s' },
      threshold: { type: 'string', default: '99.9' },
      'stop-below': { type: 'string', default: '0' },
      'kamailio-workers': { type: 'string', default: '4' },
      'kamailio-shm-mb': { type: 'string', default: '1024' },
      'max-open-calls': { type: 'string' },
      'trace-errors': { type: 'boolean', default: false },
      'pdd-source': { type: 'string', default: 'shortmsg' },
      json: { type: 'string' },
      'work-dir': { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new TypeError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  const pct = (name: string, v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || n > 100) {
      throw new TypeError(`--${name} must be a percentage, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  if (values.target !== 'kamailio' && values.target !== 'command') {
    throw new TypeError(`--target must be kamailio or command, got ${JSON.stringify(values.target)}`);
  }
  if (values.target === 'command' && !values.cmd) {
    throw new TypeError('--target command needs --cmd "<command line>"');
  }
  const rates = values.rates.split(',').map((r) => {
    const n = Number(r.trim());
    if (!Number.isFinite(n) || n <= 0) {
      throw new TypeError(`--rates must be positive numbers separated by commas, got ${JSON.stringify(values.rates)}`);
    }

    return n;
  });
  if (values['pdd-source'] !== 'shortmsg' && values['pdd-source'] !== 'rtd') {
    throw new TypeError(`--pdd-source must be shortmsg or rtd, got ${JSON.stringify(values['pdd-source'])}`);
  }
  const quiet = values.quiet;
  const options: BenchOptions = {
    target: values.target,
    cmd: values.cmd,
    targetPort: values.port === undefined ? undefined : int('port', values.port, 1),
    rates,
    durationMs: parseDuration(values.duration),
    holdMs: int('hold-ms', values['hold-ms'], 0),
    uacShards: int('uac-shards', values['uac-shards'], 1),
    drainMs: parseDuration(values.drain),
    settleMs: parseDuration(values.settle),
    kamailioWorkers: int('kamailio-workers', values['kamailio-workers'], 1),
    kamailioShmMb: int('kamailio-shm-mb', values['kamailio-shm-mb'], 16),
    maxOpenCalls: values['max-open-calls'] === undefined ? undefined : int('max-open-calls', values['max-open-calls'], 1),
    threshold: pct('threshold', values.threshold),
    stopBelow: pct('stop-below', values['stop-below']),
    traceErrors: values['trace-errors'],
    pddSource: values['pdd-source'],
    workDir: values['work-dir'],
    log: quiet ? () => undefined : (msg) => console.error(`[sip-bench] ${msg}`),
  };

  return { help: values.help, options, jsonPath: values.json, quiet };
}

const fmt = (v: number | null): string => (v === null ? '-' : String(v));

/** The report as a plain-text table plus the ceiling line. */
export function formatTable(report: BenchReport): string {
  const head = ['rate', 'planned', 'attempted', 'completed', 'failed', 'unfinished', 'completed %', 'pdd p50 ms', 'pdd p99 ms', 'target CPU %', 'target RSS MB', 'target PSS MB', 'UAC CPU %', 'UAS CPU %', 'retrans'];
  const rows = report.steps.map((s) => [
    String(s.rate),
    String(s.planned),
    String(s.attempted),
    String(s.completed),
    String(s.failed),
    String(s.unfinished),
    s.completionPct.toFixed(2),
    fmt(s.pddMs.p50),
    fmt(s.pddMs.p99),
    s.targetCpuPct.toFixed(1),
    s.targetRssMb.toFixed(1),
    s.targetPssMb.toFixed(1),
    s.uacCpuPct.toFixed(1),
    s.uasCpuPct.toFixed(1),
    String(s.retransmissions),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  const out = [
    `target: ${report.target.description}`,
    `host: ${report.host.cpus} CPU (${report.host.cpuModel}), kernel ${report.host.kernel}, ${report.host.sipp}, load average ${report.host.loadAvg.start.toFixed(2)} before, ${report.host.loadAvg.end.toFixed(2)} after`,
    `run: ${report.options.uacShards} UAC shard(s), ${report.options.durationMs / 1000} s per step, hold ${report.options.holdMs} ms`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    'RSS: resident memory summed over the target\'s processes (shared memory counted in each); PSS: the same with shared pages split.',
    report.ceiling
      ? `highest rate with >= ${report.ceiling.threshold} % completed: ${report.ceiling.rate} cps (${report.ceiling.completionPct} %)`
      : `no step reached ${report.options.threshold} % completed`,
  ];

  return out.join('\n');
}

/** The CLI: parse, run, print, write (load/runner/bench-cli.ts). Returns the exit status. */
export function main(argv: string[]): Promise<number> {
  return runBenchCli({ name: 'sip-bench', npmScript: 'bench:sip', help: HELP, parse: parseCli, run: runBench, format: formatTable, stops: 'sipp and the target', reportLine: 'after', stack: false }, argv);
}

runIfMain(import.meta.url, main);
