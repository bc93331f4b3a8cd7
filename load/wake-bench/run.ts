/**
 * `npm run bench:wake -- [options]`: the gateway's wake-path latency, trunk INVITE → wake push at
 * the provider. `--help` lists the options; load/wake-bench/README.md explains the design and figures.
 */
import { parseArgs } from 'node:util';
import { runBenchCli, runIfMain } from '../runner/bench-cli.js';
import { type Latency, parseDuration, runWakeBench, type WakeBenchOptions, type WakeBenchReport, type WakeFigures } from './bench.js';

const HELP = `Usage: npm run bench:wake -- [options]
       node dist/load/wake-bench/run.js [options]

Measures the gateway's own wake path: the time from a trunk INVITE to the wake (APNs VoIP) push
reaching the push provider, at a steady rate of calls to agents that have registered devices
but no session. Three processes besides this one: the gateway (node dist/src/main.js, test
profile plus overrides), a local HTTP/2 APNs (load/wake-bench/provider.ts) that checks the
provider JWT and time-stamps each push when its headers arrive, and sipp as the trunk
(-trace_shortmsg time-stamps each INVITE it sends). Each call goes to its own agent's DID; each
push is paired with its INVITE through the device token. Every call rings for --ring-timeout,
ends in 480 and sends each device a missed-call notice (unless --no-notices).
Headline: p50/p90/p99/max from the INVITE on the wire to the push request on the wire, both
stamped by the kernel on lo (dumpcap; tshark reads the pushes with the provider's TLS key log).
Also the processes' view (sipp's log stamp -> the provider's read), split at the push's own
sentAt, sipp's INVITE -> 100/180/480, CPU and the gateway's event-loop delay.
Table on stdout, JSON in load/reports/wake-bench-<timestamp>.json.

Options:
  --rate N                 wake-ups (calls) per second (default 100)
  --duration T             how long calls are placed (default 30s)
  --devices N              registered devices per agent = wake pushes per call (default 1)
  --provider-latency T     how long the provider takes to answer each push (default 0ms;
                           real APNs answers in tens of ms, which keeps more pushes in flight)
  --provider-failure-rate F  share of pushes (0..1) the provider answers 503 ServiceUnavailable
                           (default 0); they are counted under "refused"
  --agents N               agents, one DID each, called in turn (default: enough that an agent is
                           called again only after 10 s, at least 100; at most 2000)
  --ring-timeout T         the gateway's calls.ringTimeoutMs (default 1s)
  --warmup N               calls at 10/s before the measured run, not measured (default 20)
  --no-notices             devices without an alert token: no missed-call notice after each call
  --no-capture             no dumpcap/tshark: only the processes' own time stamps (sipp's log,
                           the provider's read), which a preempted sipp makes late
  --target-p99 T           the p99 the run is judged against (default 20ms, issue 6)
  --gateway-env K=V        extra RINGBRIDGE_* variable for the gateway (repeatable)
  --gateway-log-level L    the gateway's log level (default warn; warnings are counted)
  --json FILE              write the JSON report here instead of load/reports/
  --work-dir DIR           keep the run's files (sipp logs, gateway log, provider records) here
  --keep                   keep the temporary work directory
  --quiet                  no progress lines on stderr
  --help                   this text

Example:
  npm run bench:wake -- --rate 100 --duration 30s
`;

/** Parses the command line; throws TypeError on a bad value. */
export function parseCli(argv: string[]): { help: boolean; options: WakeBenchOptions; jsonPath?: string } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      rate: { type: 'string', default: '100' },
      duration: { type: 'string', default: '30s' },
      devices: { type: 'string', default: '1' },
      'provider-latency': { type: 'string', default: '0ms' },
      'provider-failure-rate': { type: 'string', default: '0' },
      agents: { type: 'string' },
      'ring-timeout': { type: 'string', default: '1s' },
      warmup: { type: 'string', default: '20' },
      'no-notices': { type: 'boolean', default: false },
      'no-capture': { type: 'boolean', default: false },
      'target-p99': { type: 'string', default: '20ms' },
      'gateway-env': { type: 'string', multiple: true, default: [] },
      'gateway-log-level': { type: 'string', default: 'warn' },
      json: { type: 'string' },
      'work-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  const int = (name: string, v: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new TypeError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  const share = (name: string, v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || n > 1) {
      throw new TypeError(`--${name} must be a number from 0 to 1, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  const dur = (name: string, v: string, min: number): number => {
    const n = parseDuration(v);
    if (n < min) {
      throw new TypeError(`--${name} must be at least ${min} ms, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  const rate = Number(values.rate);
  if (!Number.isFinite(rate) || rate <= 0 || rate > 2000) {
    throw new TypeError(`--rate must be a number of calls per second in (0, 2000], got ${JSON.stringify(values.rate)}`);
  }
  const ringTimeoutMs = dur('ring-timeout', values['ring-timeout'], 500);
  // An agent must not be called again while its previous call may still ring or send its
  // notices; the pairing also relies on that gap being far longer than any wake path.
  const minAgents = Math.ceil(rate * (ringTimeoutMs / 1000 + 2));
  const agents = values.agents === undefined ? Math.min(2000, Math.max(100, Math.ceil(rate * 10), minAgents)) : int('agents', values.agents, 1, 2000);
  if (agents < minAgents) {
    throw new TypeError(`--agents ${agents} is too few for --rate ${rate} and --ring-timeout ${ringTimeoutMs} ms: at least ${minAgents}, so that an agent's previous call has ended before it is called again`);
  }
  const gatewayEnv: Record<string, string> = {};
  for (const kv of values['gateway-env']) {
    const m = /^(RINGBRIDGE_[A-Z0-9_]+)=(.*)$/s.exec(kv);
    if (!m) {
      throw new TypeError(`--gateway-env must be RINGBRIDGE_NAME=value, got ${JSON.stringify(kv)}`);
    }
    gatewayEnv[m[1]!] = m[2]!;
  }
  const options: WakeBenchOptions = {
    rate,
    durationMs: dur('duration', values.duration, 100),
    devices: int('devices', values.devices, 1, 16),
    agents,
    providerLatencyMs: dur('provider-latency', values['provider-latency'], 0),
    providerFailureRate: share('provider-failure-rate', values['provider-failure-rate']),
    ringTimeoutMs,
    warmupCalls: int('warmup', values.warmup, 0, 10_000),
    notices: !values['no-notices'],
    capture: !values['no-capture'],
    targetP99Ms: dur('target-p99', values['target-p99'], 0),
    gatewayLogLevel: values['gateway-log-level'],
    gatewayEnv,
    keep: values.keep,
    workDir: values['work-dir'],
    log: values.quiet ? () => undefined : (msg) => console.error(`[wake-bench] ${msg}`),
  };

  return { help: values.help, options, jsonPath: values.json };
}

const ms = (v: number | null): string => (v === null ? '-' : v.toFixed(2));

/** The report as plain text: the latency table, then the counts, CPU and the verdict line. */
export function formatReport(r: WakeBenchReport): string {
  const head = ['figure (ms)', 'samples', 'p50', 'p90', 'p99', 'max', 'mean'];
  const row = (name: string, l: Latency): string[] => [name, String(l.samples), ms(l.p50), ms(l.p90), ms(l.p99), ms(l.max), ms(l.mean)];
  const o = r.options;
  const perCall = (f: WakeFigures): string[][] => (o.devices > 1 ? [row('  per call, first push', f.firstPushOfCall), row('  per call, last push', f.lastPushOfCall)] : []);
  const rows = [
    ...(r.wire ? [row('wire: INVITE on lo -> push on lo', r.wire.wakePush), ...perCall(r.wire)] : []),
    row('app: sipp log -> provider read', r.app.wakePush),
    ...perCall(r.app),
    row('  sipp log -> push built (sentAt)', r.app.inviteToPushBuilt),
    row('  push built -> provider read', r.app.pushBuiltToArrival),
    row('sip: INVITE -> 100 Trying at sipp', r.sip.inviteTo100),
    row('sip: INVITE -> 180 Ringing at sipp', r.sip.inviteTo180),
    row('sip: INVITE -> 480 at sipp', r.sip.inviteTo480),
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const c = r.calls;
  const p = r.pushes;
  const other = Object.entries(c.otherFinal).map(([k, v]) => `${v} × ${k}`).join(', ');
  const refused = Object.entries(p.refused).map(([k, v]) => `${v} × ${k}`).join(', ');
  const warn = Object.entries(r.gateway.warnings).map(([k, v]) => `  ${v} × ${k}`);
  const pairing = (name: string, f: WakeFigures): string => `${name}: ${f.callsMissingPushes} calls short of pushes, ${f.callsWithExtraPushes} with extra, ${f.unpaired} pushes unpaired, ${f.negative} stamped before their INVITE`;
  const h = r.target.source === 'wire' && r.wire ? r.wire : r.app;

  return [
    `host: ${r.host.cpus} CPU (${r.host.cpuModel}), ${r.host.memGb} GiB, kernel ${r.host.kernel}, node ${r.host.node}, ${r.host.sipp}; load average ${r.host.loadAvg.start.toFixed(2)} before, ${r.host.loadAvg.end.toFixed(2)} after`,
    `run: ${o.rate} calls/s for ${o.durationMs / 1000} s, ${o.agents} agents × ${o.devices} device(s), provider answers after ${o.providerLatencyMs} ms, ring timeout ${o.ringTimeoutMs} ms, missed-call notices ${o.notices ? 'on' : 'off'}, ${o.warmupCalls} warm-up calls`,
    `command: ${r.command}`,
    '',
    line(head),
    line(widths.map((x) => '-'.repeat(x))),
    ...rows.map(line),
    '',
    `calls: ${c.invites} of ${c.planned} placed at ${c.achievedRate}/s; ${c.ended480} ended in 480${other ? `, other answers: ${other}` : ''}${c.noFinal ? `, ${c.noFinal} without a final answer` : ''}; ${c.inviteRetransmissions} INVITE retransmissions; sipp exit ${c.sippExit}`,
    `pushes at the provider: ${p.wakeAccepted} wake pushes accepted (${p.wake} received) for ${p.distinctCallIds} gateway calls; ${p.notices} notices${refused ? `; refused: ${refused}` : ''}; ${p.sessions} HTTP/2 connection(s), ${p.jwts} JWT(s)${p.jwtFailures ? ` (${p.jwtFailures} failed)` : ''}`,
    ...(r.wire ? [`${pairing('pairing (wire)', r.wire)}; capture: ${r.wire.invitesSeen} INVITEs, ${r.wire.pushesSeen} push requests, ${r.wire.capture.captured ?? '?'} packets, ${r.wire.capture.dropped ?? '?'} dropped`] : []),
    pairing('pairing (app)', r.app),
    `CPU % of one core: gateway node ${r.cpu.gatewayMain}, mediasoup workers ${r.cpu.gatewayWorkers}, provider ${r.cpu.provider}, sipp ${r.cpu.sipp}, machine ${r.cpu.machine}, others ${r.cpu.others} (Redis, dumpcap, other users' jobs); gateway RSS ${r.mem.gatewayMainRssMb} MiB`,
    `gateway event loop delay p50/p99/max ${ms(r.eventLoop.p50Ms)}/${ms(r.eventLoop.p99Ms)}/${ms(r.eventLoop.maxMs)} ms (prom-client, sampled every 10 ms, so an idle loop reads about 10)`,
    `active calls at the gateway afterwards: ${r.activeCallsAfter}; provider clock drift ${r.clockDriftUs} µs`,
    'wire: kernel stamps on lo: the INVITE as sipp hands it to lo, the push request as the gateway\'s TLS write hands it to lo (no process scheduling in either).',
    'app: sipp\'s gettimeofday after its sendto returned -> the provider process reading the HEADERS frame; adds both loopback hops, the provider\'s read and sipp\'s stamping delay.',
    ...(r.notes.length ? ['notes:', ...r.notes.map((n) => `  ${n}`)] : []),
    ...(warn.length ? ['gateway warnings and errors logged:', ...warn] : []),
    `wake path (${r.target.source}) p50 ${ms(h.wakePush.p50)} ms, p99 ${ms(h.wakePush.p99)} ms at ${o.rate}/s: target p99 < ${o.targetP99Ms} ms ${r.target.met ? 'met' : 'NOT met'}${h.callsMissingPushes ? ` (${h.callsMissingPushes} calls without all their pushes)` : ''}`,
  ].join('\n');
}

/** The CLI: parse, run, print, write (load/runner/bench-cli.ts). Returns the exit status. */
export function main(argv: string[]): Promise<number> {
  return runBenchCli({ name: 'wake-bench', npmScript: 'bench:wake', help: HELP, parse: parseCli, run: runWakeBench, format: formatReport, stops: 'the gateway, the provider and sipp', reportLine: 'before-last', stack: true }, argv);
}

runIfMain(import.meta.url, main);
