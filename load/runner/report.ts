/**
 * The runner's report: one JSON document and one self-contained HTML page with plots (inline
 * SVG from svg.ts, no script, no external link), both written to load/reports/ (git-ignored)
 * or where `--out` says.
 */
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../src/util/paths.js';
import { type Latency } from './stats.js';
import { barChart, escapeXml, lineChart, type Series } from './svg.js';

/** The machine the run was on, and how busy it was. */
export interface Machine {
  cpus: number;
  cpuModel: string;
  memGb: number;
  kernel: string;
  node: string;
  /** Versions of the peers the run drove (sipp, kamailio, rtpengine), where used. */
  tools: Record<string, string>;
  /** 1-minute load average before and after the run. */
  loadAvg: { start: number; end: number };
  /** Whether the load average before the run said other work was using the machine (> 0.5 per core). */
  busy: boolean;
}

/** Time series of one target, one point per sampling interval. */
export interface TargetSeries {
  /** Seconds since the scenario started. */
  t: number[];
  /** Offered rate the runner asked for at that time, calls/s. */
  offeredCps: number[];
  /** Calls attempted (INVITEs sent) per second over the interval. */
  cps: number[];
  /** Calls up at the sample (the trunk's view). */
  concurrent: number[];
  /**
   * Of the calls attempted in each interval, the share answered, % (null: none attempted); from
   * the trunk's trace after the run, so a call counts in the second it was attempted.
   */
  answerRatePct?: (number | null)[];
  /** Cumulative counts. */
  attempted: number[];
  answered: number[];
  failed: number[];
  /** CPU over the interval, % of one core, per process group (e.g. gateway, workers). */
  cpuPct: Record<string, number[]>;
  /** Resident memory at the sample, MiB, per process group. */
  rssMb: Record<string, number[]>;
  /** Open file descriptors at the sample, per process group (absent in older reports). */
  fds?: Record<string, number[]>;
  /** Redis keys under the gateway's key prefix at the sample (ringbridge only; null: not read). */
  redisKeys?: (number | null)[];
}

/** "first → last" of RSS and open fds of a process group, or null without samples. */
function flatness(rss: number[] | undefined, fds: number[] | undefined): string | null {
  if (!rss?.length || !fds?.length) {
    return null;
  }

  return `${rss[0]} → ${rss[rss.length - 1]} / ${fds[0]} → ${fds[fds.length - 1]}`;
}

/** A MOS histogram (cumulative Prometheus buckets turned into counts per bucket). */
export interface MosDistribution {
  /** Bucket upper bounds and the calls (legs) whose MOS fell in (previous bound, le]. */
  buckets: { le: number; count: number }[];
  count: number;
  mean: number | null;
}

/** What one target (ringbridge, or a peer bridge) did in the run. */
export interface TargetResult {
  name: string;
  description: string;
  totals: {
    attempted: number;
    answered: number;
    failed: number;
    /** Calls that ended normally (BYE/200). */
    completed: number;
    /** answered ÷ attempted, %. */
    answerRatePct: number | null;
    /** Most calls up at once. */
    peakConcurrent: number;
  };
  /** INVITE sent → first 180 (or the 200 when no 180 came), ms: post-dial delay (RFC 6076 §4.1). */
  pddMs: Latency;
  /** INVITE sent → 200 OK, ms (includes the configured ring time). */
  answerMs: Latency;
  mos: MosDistribution | null;
  /** Outbound calls (agents dialling a sipp UAS on the trunk), when the scenario had them. */
  outbound?: {
    dialed: number;
    answered: number;
    failed: number;
    /** Dials asked for while every agent was busy. */
    noIdleAgent: number;
    /** call.dial → first call.progress at the agent, ms. */
    pddMs: Latency;
    /** call.dial → call.answered at the agent, ms (includes the ring time). */
    answerMs: Latency;
    /** The trunk UAS's sipp counters. */
    trunk: { created: number; current: number; successful: number; failed: number; retransmissions: number } | null;
  };
  series: TargetSeries;
  /** Mean and highest CPU (% of a core, 1 s samples) and peak RSS (MiB) per process group over the run. */
  resources: Record<string, { cpuPctMean: number; cpuPctMax: number; rssMbMax: number }>;
  /** Further figures of this target (agents' counters, push provider counts, ...). */
  extra: Record<string, unknown>;
  notes: string[];
}

/** The whole report. */
export interface RunReport {
  tool: 'ringbridge load runner';
  version: string;
  startedAt: string;
  finishedAt: string;
  /** The command line that reproduces the run. */
  command: string;
  /** Ctrl-C or SIGTERM stopped the run early. */
  interrupted: boolean;
  /** The options the scenario ran with. */
  scenario: Record<string, unknown>;
  machine: Machine;
  targets: TargetResult[];
  /** A preset's own benchmark report (sip, calls, wake), when the run was a preset. */
  preset?: { name: string; report: unknown; summary: { label: string; value: string }[]; charts: string[] };
}

const r1 = (v: number): number => Math.round(v * 10) / 10;

/** A scenario value as text (objects as JSON). */
const text = (v: unknown): string => (typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v));

/**
 * Answer rate (%) per interval: of the calls attempted in the interval when the series has it
 * (answerRatePct), else answers over attempts in the interval from the cumulative counts.
 */
export function answerRateSeries(s: TargetSeries): (number | null)[] {
  if (s.answerRatePct) {
    return s.answerRatePct;
  }

  return s.t.map((_, i) => {
    const att = s.attempted[i]! - (i > 0 ? s.attempted[i - 1]! : 0);
    const ans = s.answered[i]! - (i > 0 ? s.answered[i - 1]! : 0);

    return att > 0 ? Math.min(100, r1((ans / att) * 100)) : null;
  });
}

function table(rows: (string | number | null)[][], head?: string[]): string {
  const cell = (v: string | number | null, tag: string): string => `<${tag}>${escapeXml(v === null ? '–' : String(v))}</${tag}>`;

  return `<table>${head ? `<tr>${head.map((h) => cell(h, 'th')).join('')}</tr>` : ''}${rows.map((r) => `<tr>${r.map((v, i) => cell(v, i === 0 && !head ? 'th' : 'td')).join('')}</tr>`).join('')}</table>`;
}

const ms = (v: number | null): string | null => (v === null ? null : v.toFixed(v < 10 ? 2 : 1));

/** Renders the report as one HTML page with inline SVG plots. */
export function renderHtml(r: RunReport): string {
  const parts: string[] = [];
  const title = `ringbridge load report: ${r.preset ? `preset ${r.preset.name}` : text(r.scenario.scenario)} ${r.startedAt}`;
  parts.push(`<h1>${escapeXml(title)}</h1>`);
  if (r.interrupted) {
    parts.push(`<p class="warn">Interrupted (Ctrl-C or SIGTERM): the figures cover the run up to the interruption.</p>`);
  }
  if (r.machine.busy) {
    parts.push(`<p class="warn">The machine was busy before the run (load average ${r.machine.loadAvg.start.toFixed(2)} on ${r.machine.cpus} CPUs): other work shares the CPU, so the figures are lower bounds.</p>`);
  }
  parts.push(`<p>Command: <code>${escapeXml(r.command)}</code></p>`);
  parts.push(`<p>Started ${escapeXml(r.startedAt)}, finished ${escapeXml(r.finishedAt)}; ${escapeXml(r.tool)} ${escapeXml(r.version)}.</p>`);
  parts.push('<h2>Scenario</h2>', table(Object.entries(r.scenario).map(([k, v]) => [k, text(v)])));
  parts.push(
    '<h2>Machine</h2>',
    table([
      ['CPU', `${r.machine.cpus} × ${r.machine.cpuModel}`],
      ['memory', `${r.machine.memGb} GiB`],
      ['kernel', r.machine.kernel],
      ['node', r.machine.node],
      ...Object.entries(r.machine.tools).map(([k, v]) => [k, v]),
      ['load average (1 min) before / after', `${r.machine.loadAvg.start.toFixed(2)} / ${r.machine.loadAvg.end.toFixed(2)}`],
    ]),
  );
  if (r.preset) {
    parts.push(`<h2>Preset ${escapeXml(r.preset.name)}</h2>`, table(r.preset.summary.map((s) => [s.label, s.value])), ...r.preset.charts);
  }
  if (r.targets.length > 0) {
    const names = r.targets.map((t) => t.name);
    parts.push('<h2>Summary</h2>');
    const row = (label: string, f: (t: TargetResult) => string | number | null): (string | number | null)[] => [label, ...r.targets.map(f)];
    parts.push(
      table(
        [
          row('what', (t) => t.description),
          row('attempted', (t) => t.totals.attempted),
          row('answered', (t) => t.totals.answered),
          row('failed', (t) => t.totals.failed),
          row('completed', (t) => t.totals.completed),
          row('answer rate %', (t) => t.totals.answerRatePct),
          row('peak concurrent', (t) => t.totals.peakConcurrent),
          row('PDD p50 / p90 / p99 ms', (t) => `${ms(t.pddMs.p50) ?? '–'} / ${ms(t.pddMs.p90) ?? '–'} / ${ms(t.pddMs.p99) ?? '–'}`),
          row('INVITE → 200 p50 / p99 ms', (t) => `${ms(t.answerMs.p50) ?? '–'} / ${ms(t.answerMs.p99) ?? '–'}`),
          row('outbound dialled / answered / failed', (t) => (t.outbound ? `${t.outbound.dialed} / ${t.outbound.answered} / ${t.outbound.failed}` : null)),
          row('outbound PDD p50 / p99 ms (at the agent)', (t) => (t.outbound ? `${ms(t.outbound.pddMs.p50) ?? '–'} / ${ms(t.outbound.pddMs.p99) ?? '–'}` : null)),
          row('MOS mean (legs)', (t) => (t.mos?.mean == null ? null : `${t.mos.mean.toFixed(2)} (${t.mos.count})`)),
          ...[...new Set(r.targets.flatMap((t) => Object.keys(t.resources)))].map((g) =>
            row(`${g}: CPU % mean / max, RSS MiB max`, (t) => (t.resources[g] ? `${t.resources[g].cpuPctMean} / ${t.resources[g].cpuPctMax}, ${t.resources[g].rssMbMax}` : null)),
          ),
          // leak check: the first sample against the last ones (flat means no leak)
          ...[...new Set(r.targets.flatMap((t) => Object.keys(t.series.fds ?? {})))].map((g) =>
            row(`${g}: RSS MiB / open fds, first → last`, (t) => flatness(t.series.rssMb[g], t.series.fds?.[g])),
          ),
          row('Redis keys, first → last (max)', (t) => {
            const k = (t.series.redisKeys ?? []).filter((v): v is number => v !== null);

            return k.length > 0 ? `${k[0]} → ${k[k.length - 1]} (${Math.max(...k)})` : null;
          }),
        ],
        ['', ...names],
      ),
    );
    for (const t of r.targets) {
      if (t.notes.length > 0) {
        parts.push(`<p><b>${escapeXml(t.name)}</b>: ${t.notes.map(escapeXml).join('; ')}</p>`);
      }
    }
    const longest = r.targets.reduce((a, t) => (t.series.t.length > a.length ? t.series.t : a), [] as number[]);
    const pad = (v: readonly (number | null)[]): (number | null)[] => longest.map((_, i) => v[i] ?? null);
    const per = (f: (t: TargetResult) => readonly (number | null)[], suffix = ''): Series[] => r.targets.map((t) => ({ name: `${t.name}${suffix}`, values: pad(f(t)) }));
    parts.push('<h2>Plots</h2>');
    parts.push(lineChart(longest, [{ name: 'offered', values: pad(r.targets[0]!.series.offeredCps) }, ...per((t) => t.series.cps)], { title: 'Calls per second (attempted)', xLabel: 's since start', yLabel: 'calls/s' }));
    parts.push(lineChart(longest, per((t) => t.series.concurrent), { title: 'Concurrent calls', xLabel: 's since start', yLabel: 'calls' }));
    parts.push(
      barChart(
        ['p50', 'p90', 'p99', 'max'].map((p) => ({ label: p, values: r.targets.map((t) => t.pddMs[p as 'p50']) })),
        names,
        { title: 'Post-dial delay percentiles (INVITE → 180)', xLabel: 'percentile', yLabel: 'ms' },
      ),
    );
    parts.push(lineChart(longest, per((t) => answerRateSeries(t.series)), { title: 'Answer rate (calls attempted each second)', xLabel: 's since start', yLabel: '% of attempts' }));
    const mosTargets = r.targets.filter((t) => t.mos && t.mos.count > 0);
    if (mosTargets.length > 0) {
      const bounds = mosTargets[0]!.mos!.buckets.map((b) => b.le);
      parts.push(
        barChart(
          bounds.map((le, i) => ({ label: i === 0 ? `≤${le}` : `≤${le}`, values: mosTargets.map((t) => t.mos!.buckets[i]?.count ?? null) })),
          mosTargets.map((t) => t.name),
          { title: 'MOS distribution (call legs, E-model)', xLabel: 'MOS bucket', yLabel: 'legs' },
        ),
      );
    } else {
      parts.push('<p>No MOS figures (no target reported call quality).</p>');
    }
    const cpu: Series[] = r.targets.flatMap((t) => Object.entries(t.series.cpuPct).map(([g, v]) => ({ name: `${t.name} ${g}`, values: pad(v) })));
    parts.push(lineChart(longest, cpu, { title: 'CPU', xLabel: 's since start', yLabel: '% of one core' }));
    const mem: Series[] = r.targets.flatMap((t) => Object.entries(t.series.rssMb).map(([g, v]) => ({ name: `${t.name} ${g}`, values: pad(v) })));
    parts.push(lineChart(longest, mem, { title: 'Memory (RSS)', xLabel: 's since start', yLabel: 'MiB' }));
    const fds: Series[] = r.targets.flatMap((t) => Object.entries(t.series.fds ?? {}).map(([g, v]) => ({ name: `${t.name} ${g}`, values: pad(v) })));
    if (fds.length > 0) {
      parts.push(lineChart(longest, fds, { title: 'Open file descriptors', xLabel: 's since start', yLabel: 'descriptors' }));
    }
    const keys: Series[] = r.targets.filter((t) => t.series.redisKeys).map((t) => ({ name: `${t.name} Redis keys`, values: pad(t.series.redisKeys!) }));
    if (keys.length > 0) {
      parts.push(lineChart(longest, keys, { title: 'Redis keys under the gateway key prefix', xLabel: 's since start', yLabel: 'keys' }));
    }
  }
  const css = 'body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}.warn{color:#a00}svg.chart{margin:8px;border:1px solid #eee}code{background:#f4f4f4;padding:2px}';

  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${escapeXml(title)}</title><style>${css}</style></head><body>${parts.join('\n')}</body></html>\n`;
}

/**
 * Writes `<base>.json` and `<base>.html` and returns both paths. `base` defaults to
 * load/reports/load-<scenario>-<time stamp>.
 */
export function writeRunReport(r: RunReport, outDir?: string, baseName?: string): { json: string; html: string } {
  const dir = outDir ?? path.join(projectRoot(), 'load', 'reports');
  const name = baseName ?? `load-${r.preset ? r.preset.name : text(r.scenario.scenario ?? 'run')}-${r.startedAt.replace(/[:.]/g, '-')}`;
  fs.mkdirSync(dir, { recursive: true });
  const json = path.join(dir, `${name}.json`);
  const html = path.join(dir, `${name}.html`);
  fs.writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  fs.writeFileSync(html, renderHtml(r));

  return { json, html };
}
