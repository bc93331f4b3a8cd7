/**
 * The process's Prometheus registry (prom-client). Every metric of ringbridge is registered here,
 * with the configured name prefix; labels carry bounded sets only (never a call id, number or
 * agent id).
 */
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** Options of createMetrics(). */
export interface MetricsOptions {
  /** Prefix of every metric name, e.g. "ringbridge_". */
  prefix: string;
  /** Also export prom-client's Node.js process metrics. */
  defaultMetrics: boolean;
  /** Version string for the build_info metric. */
  version: string;
}

/** The registry and the gateway-wide metrics that exist from the start. */
export interface Metrics {
  registry: Registry;
  prefix: string;
  /** 1 when a component is up, 0 otherwise; label component: redis | media | sip | http. */
  componentUp: Gauge<'component'>;
}

/** Creates the registry. */
export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics) {
    collectDefaultMetrics({ register: registry, prefix: opts.prefix });
    // prom-client names three gauges with a "_total" suffix, which Prometheus reserves for
    // counters (promtool check metrics rejects them). The same numbers stay available, split by
    // type, as nodejs_active_handles, nodejs_active_requests and nodejs_active_resources.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      registry.removeSingleMetric(`${opts.prefix}${name}`);
    }
  }
  const buildInfo = new Gauge({
    name: `${opts.prefix}build_info`,
    help: 'Build information; always 1.',
    labelNames: ['version', 'node_version'],
    registers: [registry],
  });
  buildInfo.set({ version: opts.version, node_version: process.version }, 1);
  const componentUp = new Gauge({
    name: `${opts.prefix}component_up`,
    help: 'Whether a gateway component is up (1) or not (0).',
    labelNames: ['component'],
    registers: [registry],
  });

  return { registry, prefix: opts.prefix, componentUp };
}
