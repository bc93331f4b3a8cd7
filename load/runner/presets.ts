/**
 * The three earlier benchmarks as runner presets (`--preset sip|calls|wake`): the runner parses
 * the preset's options with that benchmark's own parser, runs it, and puts its report into the
 * runner's JSON and HTML (summary rows and plots), next to the machine and the command.
 */
import { parseCli as parseCallsCli } from '../calls-bench/run.js';
import { runCallsBench } from '../calls-bench/bench.js';
import { parseCli as parseSipCli, formatTable as formatSipTable } from '../sip-bench/run.js';
import { runBench as runSipBench } from '../sip-bench/bench.js';
import { parseCli as parseWakeCli, formatReport as formatWakeReport } from '../wake-bench/run.js';
import { runWakeBench } from '../wake-bench/bench.js';
import { formatTable as formatCallsTable } from '../calls-bench/run.js';
import { barChart, lineChart } from './svg.js';

/** The names of the presets. */
export type PresetName = 'sip' | 'calls' | 'wake';

/** What a preset run gives the runner. */
export interface PresetResult {
  report: unknown;
  /** The benchmark's own text table. */
  text: string;
  summary: { label: string; value: string }[];
  charts: string[];
}

const v = (x: number | null | undefined, unit = ''): string => (x === null || x === undefined ? '–' : `${x}${unit}`);

/** Runs a preset with its benchmark's own options (`argv`); throws TypeError on a bad option. */
export async function runPreset(name: PresetName, argv: string[], command: string, log: (msg: string) => void): Promise<PresetResult> {
  switch (name) {
    case 'sip': {
      const p = parseSipCli(argv);
      const r = await runSipBench({ ...p.options, log: p.quiet ? () => undefined : log }, command);
      const rates = r.steps.map((s) => s.rate);

      return {
        report: r,
        text: formatSipTable(r),
        summary: [
          { label: 'target', value: r.target.description },
          { label: 'highest rate with ≥ threshold completed', value: r.ceiling ? `${r.ceiling.rate} calls/s (${r.ceiling.completionPct} %)` : 'none' },
          ...r.steps.map((s) => ({ label: `${s.rate} calls/s`, value: `${s.completionPct} % completed, PDD p50 ${v(s.pddMs.p50)} / p99 ${v(s.pddMs.p99)} ms, target CPU ${s.targetCpuPct} %, PSS ${s.targetPssMb} MB` })),
        ],
        charts: [
          lineChart(rates, [{ name: 'completed %', values: r.steps.map((s) => s.completionPct) }], { title: 'Completed calls by offered rate', xLabel: 'calls/s offered', yLabel: '%' }),
          lineChart(rates, [{ name: 'PDD p50', values: r.steps.map((s) => s.pddMs.p50) }, { name: 'PDD p99', values: r.steps.map((s) => s.pddMs.p99) }], { title: 'Post-dial delay by rate', xLabel: 'calls/s offered', yLabel: 'ms' }),
          lineChart(rates, [{ name: 'target', values: r.steps.map((s) => s.targetCpuPct) }, { name: 'sipp UAC', values: r.steps.map((s) => s.uacCpuPct) }, { name: 'sipp UAS', values: r.steps.map((s) => s.uasCpuPct) }], { title: 'CPU by rate', xLabel: 'calls/s offered', yLabel: '% of one core' }),
          lineChart(rates, [{ name: 'target PSS', values: r.steps.map((s) => s.targetPssMb) }], { title: 'Memory by rate', xLabel: 'calls/s offered', yLabel: 'MB' }),
        ],
      };
    }
    case 'calls': {
      const p = parseCallsCli(argv);
      const r = await runCallsBench({ ...p.options, log }, command);
      const n = r.steps.map((s) => s.calls);

      return {
        report: r,
        text: formatCallsTable(r),
        summary: [
          { label: 'highest step held end to end', value: r.ceiling ? `${r.ceiling.calls} calls` : 'none' },
          { label: 'highest step held by the gateway', value: r.gatewayCeiling ? `${r.gatewayCeiling.calls} calls` : 'none' },
          { label: 'gateway CPU per call (fit)', value: r.growth.gatewayCpuPct ? `${r.growth.gatewayCpuPct.slope} % of a core` : '–' },
          { label: 'gateway PSS per call (fit)', value: r.growth.gatewayPssMb ? `${r.growth.gatewayPssMb.slope} MiB` : '–' },
          ...(r.aborted ? [{ label: 'aborted', value: r.aborted }] : []),
        ],
        charts: [
          lineChart(n, [{ name: 'gateway', values: r.steps.map((s) => s.cpu.gateway) }, { name: 'agents', values: r.steps.map((s) => s.cpu.agents) }, { name: 'sipp', values: r.steps.map((s) => s.cpu.sipp) }, { name: 'others', values: r.steps.map((s) => s.cpu.others) }], { title: 'CPU by concurrent calls', xLabel: 'concurrent calls', yLabel: '% of one core' }),
          lineChart(n, [{ name: '→ agents', values: r.steps.map((s) => s.lossToAgentPct) }, { name: '→ trunk', values: r.steps.map((s) => s.lossToTrunkPct) }, { name: '→ agents at gateway', values: r.steps.map((s) => s.lossToAgentAtGatewayPct) }], { title: 'Packet loss by concurrent calls', xLabel: 'concurrent calls', yLabel: '%' }),
        ],
      };
    }
    case 'wake': {
      const p = parseWakeCli(argv);
      const r = await runWakeBench({ ...p.options, log }, command);
      const head = r.wire ?? r.app;

      return {
        report: r,
        text: formatWakeReport(r),
        summary: [
          { label: 'calls', value: `${r.calls.invites} at ${r.calls.achievedRate} calls/s` },
          { label: `wake latency (${r.target.source}) p50 / p90 / p99 / max`, value: `${v(head.wakePush.p50)} / ${v(head.wakePush.p90)} / ${v(head.wakePush.p99)} / ${v(head.wakePush.max)} ms` },
          { label: 'target p99', value: `${r.target.p99Ms} ms: ${r.target.met ? 'met' : 'not met'}` },
          { label: 'pushes', value: `${r.pushes.wake} wake, ${r.pushes.wakeAccepted} accepted, ${r.pushes.notices} notices` },
          { label: 'gateway CPU', value: `${r.cpu.gatewayMain} % (others on the machine ${r.cpu.others} %)` },
        ],
        charts: [
          barChart(
            ['p50', 'p90', 'p99', 'max'].map((q) => ({ label: q, values: [head.wakePush[q as 'p50'], r.sip.inviteTo180[q as 'p50']] })),
            ['INVITE → wake push', 'INVITE → 180'],
            { title: 'Wake path latency', xLabel: 'percentile', yLabel: 'ms' },
          ),
        ],
      };
    }
  }
}
