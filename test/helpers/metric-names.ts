/**
 * The metric names and label values that docker/prometheus/alerts.yml and the Grafana dashboard
 * may use (issue 7), and a small PromQL scanner that lists what an expression uses. A query on a
 * name the gateway does not export shows an empty panel or an alert that never fires, silently;
 * these lists make such a mismatch a test failure.
 */

/** Counters and gauges, by their exported name. */
const PLAIN = [
  'ringbridge_calls_low_mos_total', // counter: calls whose MOS fell below the configured threshold
  'ringbridge_calls_finished_total', // counter {direction, end_reason}
  // gauge {direction}: not in the lead's list of issue 7; proposed for the dashboard's "calls
  // active" panel (the issue asks for calls active by direction).
  'ringbridge_calls_active',
  'ringbridge_push_sent_total', // counter {channel, kind, result} (src/push/wake.ts)
  'ringbridge_agents', // gauge {presence}
  'ringbridge_mediasoup_workers', // gauge {state}
  'ringbridge_mediasoup_worker_deaths_total', // counter (src/metrics/system-metrics.ts)
  'ringbridge_component_up', // gauge {component} (src/metrics/registry.ts)
] as const;

/** Histograms, by their base name (the series are _bucket, _sum and _count). */
const HISTOGRAMS = [
  'ringbridge_call_pdd_seconds',
  'ringbridge_push_to_connect_seconds', // src/push/wake.ts
  'ringbridge_leg_mos', // {leg, direction}
  'ringbridge_leg_jitter_seconds', // {leg, direction}
  'ringbridge_leg_packet_loss_ratio', // {leg, direction}
  'ringbridge_leg_rtt_seconds', // {leg, direction}
] as const;

/** Every series name a query may select. */
export const ALLOWED_METRICS: ReadonlySet<string> = new Set([...PLAIN, ...HISTOGRAMS.flatMap((h) => [`${h}_bucket`, `${h}_sum`, `${h}_count`])]);

/** Label values a matcher may name (labels not listed here take any value). */
export const ALLOWED_LABEL_VALUES: Readonly<Record<string, readonly string[]>> = {
  leg: ['trunk', 'agent'],
  direction: ['inbound', 'outbound'],
  presence: ['available', 'busy', 'away', 'ringing', 'on_call'],
  state: ['alive', 'dead'],
  result: ['delivered', 'retry_later', 'dead_token', 'rejected', 'breaker_open'],
  component: ['redis', 'media', 'sip', 'http'],
};

/** PromQL functions, aggregations and keywords (the ones an identifier scan would pick up). */
const PROMQL_WORDS = new Set([
  ...['sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group'],
  ...['rate', 'irate', 'increase', 'delta', 'idelta', 'deriv', 'resets', 'changes', 'histogram_quantile', 'histogram_fraction'],
  ...['abs', 'ceil', 'floor', 'round', 'clamp', 'clamp_min', 'clamp_max', 'vector', 'scalar', 'absent', 'absent_over_time', 'time', 'timestamp'],
  ...['sum_over_time', 'avg_over_time', 'max_over_time', 'min_over_time', 'count_over_time', 'last_over_time', 'label_replace', 'label_join', 'sort', 'sort_desc'],
  ...['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan'],
]);

/** A label matcher found in a query. */
export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
}

/** The series names and label matchers a PromQL expression (Grafana variables allowed) uses. */
export function scanPromQL(expr: string): { metrics: string[]; matchers: Matcher[] } {
  const matchers: Matcher[] = [];
  for (const sel of expr.matchAll(/\{([^}]*)\}/g)) {
    for (const m of sel[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      matchers.push({ label: m[1]!, op: m[2] as Matcher['op'], value: m[3]! });
    }
  }
  const rest = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, ' ') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // grouping labels
    .replace(/\$\{?[a-zA-Z_][a-zA-Z0-9_:]*\}?/g, ' ') // Grafana variables
    .replace(/\b\d+(\.\d+)?(e[+-]?\d+)?([smhdwy]|ms)?\b/gi, ' '); // numbers and durations
  const metrics = [...rest.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)].map((m) => m[0]).filter((w) => !PROMQL_WORDS.has(w.toLowerCase()));

  return { metrics: [...new Set(metrics)], matchers };
}

/** Problems with a query: names outside `allowed`, label values outside ALLOWED_LABEL_VALUES. */
export function promQLProblems(expr: string, allowed: ReadonlySet<string> = ALLOWED_METRICS): string[] {
  const { metrics, matchers } = scanPromQL(expr);
  const problems = metrics.filter((m) => !allowed.has(m)).map((m) => `unknown metric ${m}`);
  for (const { label, op, value } of matchers) {
    const values = ALLOWED_LABEL_VALUES[label];
    if (values === undefined || value.startsWith('$')) {
      continue;
    }
    const named = op === '=' || op === '!=' ? [value] : value.split('|');
    for (const v of named) {
      if (!values.includes(v)) {
        problems.push(`${label}${op}"${value}": ${v} is not one of ${values.join(', ')}`);
      }
    }
  }

  return problems;
}
