/**
 * `npm run bench:calls -- [options]`: how many concurrent bridged calls with audio the gateway
 * holds. `--help` lists the options; load/calls-bench/README.md explains the design and figures.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { runBenchCli, runIfMain } from '../runner/bench-cli.js';
import { type CallsBenchOptions, type CallsBenchReport, type Fit, parseDuration, runCallsBench } from './bench.js';

const HELP = `Usage: npm run bench:calls -- [options]
       node dist/load/calls-bench/run.js [options]

Starts the gateway (node dist/src/main.js, test profile plus overrides) as its own process, signs
in simulated agents with real WebRTC media (@roamhq/wrtc, the client SDK) in child processes, and
has a sipp trunk place calls with looping G.711 A-law audio. Steps of N concurrent calls: sipp
ramps up to N, the step measures for --window once every call is up, then the agents hang up.
Reports per step the calls up, packet loss and jitter each way, CPU of the gateway's node
process, its mediasoup workers, the agents, sipp and the machine, memory, and how CPU and
memory grow per call. Table on stdout, JSON in load/reports/calls-bench-<timestamp>.json; the
last line names the highest step held (all calls up, loss under --loss-threshold both ways).

Options:
  --steps LIST             concurrent calls per step (default 25,50,100,150,200,250,300)
  --window T               measured time per step once all calls are up (default 30s)
  --rate N                 call set-up rate during a step's ramp, calls/s (default 10)
  --settle T               wait between "all calls up" and the window (default 5s)
  --setup-grace T          time allowed beyond N/rate for the calls to come up (default 30s)
  --agents N               agents (default: the largest step)
  --agents-per-process K   agents per agent process (default 50); --agent-processes wins
  --agent-processes P      agent processes (default: agents / agents-per-process, rounded up)
  --agents-nice N          nice value of the agent processes, 0..19 (default 10): on a machine
                           that hosts both, the gateway and sipp get the CPU first and an
                           overloaded agent side shows as drops at the agents' own sockets
  --tone shared|per-agent  one tone source per agent process, shared by its calls (default), or
                           one per agent; every call encodes and sends its own stream either way
  --sample-rate 8000|48000 sample rate of the generated tone (default 8000: no resampling)
  --routing group|dids     one longest-idle group of all agents (default), or one DID per agent
  --workers N              mediasoup workers, 0 = one per core (default 0)
  --loss-threshold PCT     loss a step must stay under each way to count as held (default 1)
  --stop-loss PCT          stop stepping up after a step with more loss, or fewer than 90 % of
                           its calls up (default 5; 0 = never stop)
  --no-capture             no dumpcap on sipp's media port (then no agent -> trunk loss figure)
  --pcap FILE              audio the trunk loops (default /usr/share/sip-tester/g711a.pcap)
  --gateway-env K=V        extra RINGBRIDGE_* variable for the gateway (repeatable)
  --gateway-log-level L    the gateway's log level (default warn; warnings are counted)
  --rtc-ports A-B          mediasoup port range (default 40000-49999)
  --relay-ports A-B        trunk relay port range (default 34000-35999)
  --json FILE              write the JSON report here instead of load/reports/
  --work-dir DIR           keep step directories (sipp files, gateway log, captures) here
  --keep                   keep the work directory and the captures
  --quiet                  no progress lines on stderr
  --help                   this text

Example:
  npm run bench:calls -- --steps 25,50,100,150,200,250,300 --window 30s --rate 10
`;

/** Parses the command line; throws TypeError on a bad value. */
export function parseCli(argv: string[]): { help: boolean; options: CallsBenchOptions; jsonPath?: string } {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      steps: { type: 'string', default: '25,50,100,150,200,250,300' },
      window: { type: 'string', default: '30s' },
      rate: { type: 'string', default: '10' },
      settle: { type: 'string', default: '5s' },
      'setup-grace': { type: 'string', default: '30s' },
      agents: { type: 'string' },
      'agents-per-process': { type: 'string', default: '50' },
      'agent-processes': { type: 'string' },
      'agents-nice': { type: 'string', default: '10' },
      tone: { type: 'string', default: 'shared' },
      'sample-rate': { type: 'string', default: '8000' },
      routing: { type: 'string', default: 'group' },
      workers: { type: 'string', default: '0' },
      'loss-threshold': { type: 'string', default: '1' },
      'stop-loss': { type: 'string', default: '5' },
      'no-capture': { type: 'boolean', default: false },
      pcap: { type: 'string', default: '/usr/share/sip-tester/g711a.pcap' },
      'gateway-env': { type: 'string', multiple: true, default: [] },
      'gateway-log-level': { type: 'string', default: 'warn' },
      'rtc-ports': { type: 'string', default: '40000-49999' },
      'relay-ports': { type: 'string', default: '34000-35999' },
      json: { type: 'string' },
      'work-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
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
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) {
      throw new TypeError(`--${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
    }

    return n;
  };
  const range = (name: string, v: string): { min: number; max: number } => {
    const m = /^(\d+)-(\d+)$/.exec(v);
    if (!m || Number(m[1]) >= Number(m[2]) || Number(m[2]) > 65535 || Number(m[1]) < 1024) {
      throw new TypeError(`--${name} must be a port range like 40000-49999, got ${JSON.stringify(v)}`);
    }

    return { min: Number(m[1]), max: Number(m[2]) };
  };
  const steps = values.steps.split(',').map((s) => int('steps', s.trim(), 1));
  const agents = values.agents === undefined ? Math.max(...steps) : int('agents', values.agents, 1);
  const perProcess = int('agents-per-process', values['agents-per-process'], 1);
  if (values.tone !== 'shared' && values.tone !== 'per-agent') {
    throw new TypeError(`--tone must be shared or per-agent, got ${JSON.stringify(values.tone)}`);
  }
  if (values['sample-rate'] !== '8000' && values['sample-rate'] !== '48000') {
    throw new TypeError(`--sample-rate must be 8000 or 48000, got ${JSON.stringify(values['sample-rate'])}`);
  }
  if (values.routing !== 'group' && values.routing !== 'dids') {
    throw new TypeError(`--routing must be group or dids, got ${JSON.stringify(values.routing)}`);
  }
  const gatewayEnv: Record<string, string> = {};
  for (const kv of values['gateway-env']) {
    const m = /^(RINGBRIDGE_[A-Z0-9_]+)=(.*)$/s.exec(kv);
    if (!m) {
      throw new TypeError(`--gateway-env must be RINGBRIDGE_NAME=value, got ${JSON.stringify(kv)}`);
    }
    gatewayEnv[m[1]!] = m[2]!;
  }
  if (!fs.existsSync(values.pcap)) {
    throw new TypeError(`--pcap ${values.pcap}: no such file (Debian's sip-tester package ships g711a.pcap)`);
  }
  const options: CallsBenchOptions = {
    steps,
    windowMs: parseDuration(values.window),
    rate: num('rate', values.rate, 0.1),
    settleMs: parseDuration(values.settle),
    setupGraceMs: parseDuration(values['setup-grace']),
    agents,
    agentProcesses: values['agent-processes'] === undefined ? Math.ceil(agents / perProcess) : int('agent-processes', values['agent-processes'], 1),
    agentsNice: ((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 19) {
        throw new TypeError(`--agents-nice must be an integer 0..19, got ${JSON.stringify(v)}`);
      }

      return n;
    })(values['agents-nice']),
    tone: values.tone,
    sampleRate: values['sample-rate'] === '8000' ? 8000 : 48000,
    routing: values.routing,
    workers: int('workers', values.workers, 0),
    gatewayLogLevel: values['gateway-log-level'],
    rtcPorts: range('rtc-ports', values['rtc-ports']),
    relayPorts: range('relay-ports', values['relay-ports']),
    lossThreshold: num('loss-threshold', values['loss-threshold'], 0),
    stopLoss: num('stop-loss', values['stop-loss'], 0),
    capture: !values['no-capture'],
    pcap: values.pcap,
    gatewayEnv,
    workDir: values['work-dir'],
    keep: values.keep,
    log: values.quiet ? () => undefined : (msg) => console.error(`[calls-bench] ${msg}`),
  };

  return { help: values.help, options, jsonPath: values.json };
}

const f1 = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : v.toFixed(1));
const f2 = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : v.toFixed(2));
const fitText = (f: Fit | null, unit: string): string => (f ? `${f.intercept} ${unit} + ${f.slope} ${unit}/call (r² ${f.r2})` : '-');

/** The report as a plain-text table, the growth lines and, last, the ceiling line. */
export function formatTable(r: CallsBenchReport): string {
  const head = [
    'calls', 'up', 'loss→agent %', '(gw %', 'agent socks %)', 'count %', 'loss→trunk %', '(gw %', 'agent send %)', 'conceal %', 'jit→agent ms', 'jit@agent ms', 'jit→trunk ms',
    'gw node CPU %', 'workers CPU %', 'gw CPU/call %', 'agents CPU %', 'sipp CPU %', 'dumpcap CPU %', 'machine CPU %', 'others CPU %',
    'gw node RSS MB', 'workers RSS MB', 'gw PSS MB', 'agents RSS MB', 'setup p50/p99 ms', 'held e2e/gw',
  ];
  const pct = (v: number | null): string => (v === null ? '-' : v.toFixed(3));
  const rows = r.steps.map((s) => [
    String(s.calls),
    String(Math.min(s.established.agents, s.established.gateway, s.minLiveInWindow)),
    pct(s.lossToAgentPct),
    pct(s.lossToAgentAtGatewayPct),
    pct(s.agentSocketDropPct),
    pct(s.lossToAgentCountPct),
    pct(s.lossToTrunkPct),
    pct(s.lossToTrunkAtGatewayPct),
    pct(s.agentSendGapPct),
    f2(s.agentMedia.concealedPct),
    f2(s.trunkMedia?.toAgents.jitterMeanMs),
    f1(s.agentMedia.jitterMeanMs),
    f2(s.trunkMedia?.toTrunk.jitterMeanMs),
    f1(s.cpu.gatewayMain),
    f1(s.cpu.mediasoupWorkers),
    f2(s.gatewayCpuPerCallPct),
    f1(s.cpu.agents),
    f1(s.cpu.sipp),
    f1(s.cpu.capture),
    f1(s.cpu.machine),
    f1(s.cpu.others),
    f1(s.mem.gatewayMainRssMb),
    f1(s.mem.workersRssMb),
    f1(s.mem.gatewayMainPssMb + s.mem.workersPssMb),
    f1(s.mem.agentsRssMb),
    `${s.setupMs.p50 ?? '-'}/${s.setupMs.p99 ?? '-'}`,
    `${s.held ? 'yes' : 'no'}/${s.heldByGateway ? 'yes' : 'no'}`,
  ]);
  const b = r.baseline;
  rows.unshift(['0 idle', '0', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-', f1(b.cpu.gatewayMain), f1(b.cpu.mediasoupWorkers), '-', f1(b.cpu.agents), '-', '-', f1(b.cpu.machine), f1(b.cpu.others), f1(b.mem.gatewayMainRssMb), f1(b.mem.workersRssMb), f1(b.mem.gatewayMainPssMb + b.mem.workersPssMb), f1(b.mem.agentsRssMb), '-', '-']);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  const o = r.options;
  const notes = r.steps.flatMap((s) => s.notes.map((n) => `  ${s.calls} calls: ${n}`));
  const warn = Object.entries(r.gateway.warnings).map(([k, v]) => `  ${v} × ${k}`);
  const g = r.growth;
  const out = [
    `host: ${r.host.cpus} CPU (${r.host.cpuModel}), ${r.host.memGb} GiB, kernel ${r.host.kernel}, node ${r.host.node}, ${r.host.sipp}; load average ${r.host.loadAvg.start.toFixed(2)} before, ${r.host.loadAvg.end.toFixed(2)} after`,
    `run: ${o.agents} agents in ${o.agentProcesses} processes (nice ${o.agentsNice}, tone ${o.tone}, ${o.sampleRate} Hz), routing ${o.routing}, ${o.workers || 'one per core'} mediasoup workers, ramp ${o.rate} calls/s, window ${o.windowMs / 1000} s, G.711 A-law 20 ms both ways`,
    `command: ${r.command}`,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    'CPU: % of one core over the window (200 = both cores); gw node = the gateway\'s node process (signalling, SIP, RTP relay), workers = its mediasoup workers.',
    'loss→agent: (gw %) sequence gaps in what mediasoup sent the agents (dumpcap) + (agent socks %) kernel drops at the agents\' own sockets; count %: the agents\' own',
    '  count, received against expected (±0.1 %, a cross-check). loss→trunk: sequence gaps of the streams reaching sipp (dumpcap) = (gw %) the gateway\'s share + (agent send %)',
    '  gaps already in what the agents\' libwebrtc sent to mediasoup (dumpcap). conceal: audio NetEq concealed at the agents, % of the audio it played.',
    'others: CPU of everything else on the machine (other users\' jobs). jit: RFC 3550 interarrival jitter, mean over streams: →agent and →trunk from the capture (as sent on lo), @agent as the agents\' libwebrtc reports it (whole ms). ',
    'held e2e: all calls up and loss→agent, loss→trunk < threshold; held gw: all calls up and both gw % < threshold.',
    `growth (least squares over idle + held steps): gateway CPU ${fitText(g.gatewayCpuPct, '%')}; node ${fitText(g.gatewayMainCpuPct, '%')}; workers ${fitText(g.workersCpuPct, '%')}; agents ${fitText(g.agentsCpuPct, '%')}`,
    `                                               gateway PSS ${fitText(g.gatewayPssMb, 'MiB')}; node RSS ${fitText(g.gatewayMainRssMb, 'MiB')}; workers PSS ${fitText(g.workersPssMb, 'MiB')}; agents PSS ${fitText(g.agentsPssMb, 'MiB')}`,
    ...(notes.length ? ['notes:', ...notes] : []),
    ...(warn.length ? ['gateway warnings and errors logged:', ...warn] : []),
    ...(r.aborted ? [`run aborted: ${r.aborted}`] : []),
    `highest step held by the gateway alone (all calls up, loss the gateway caused < ${o.lossThreshold} % both ways): ${
      r.gatewayCeiling ? `${r.gatewayCeiling.calls} concurrent calls (to agents ${r.gatewayCeiling.lossToAgentAtGatewayPct ?? '-'} %, to trunk ${r.gatewayCeiling.lossToTrunkAtGatewayPct ?? '-'} %)` : 'none'
    }`,
    r.ceiling
      ? `highest step held end to end (all calls up, loss < ${o.lossThreshold} % both ways): ${r.ceiling.calls} concurrent calls (loss to agents ${r.ceiling.lossToAgentPct} %, to trunk ${r.ceiling.lossToTrunkPct ?? '-'} %)`
      : `no step held end to end (all calls up, loss < ${o.lossThreshold} % both ways)`,
  ];

  return out.join('\n');
}

/** The CLI: parse, run, print, write (load/runner/bench-cli.ts). Returns the exit status. */
export function main(argv: string[]): Promise<number> {
  return runBenchCli({ name: 'calls-bench', npmScript: 'bench:calls', help: HELP, parse: parseCli, run: runCallsBench, format: formatTable, stops: 'the gateway, the agents and sipp', reportLine: 'before-last', stack: true }, argv);
}

runIfMain(import.meta.url, main);
