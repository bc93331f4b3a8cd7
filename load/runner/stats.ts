/**
 * Shared figures of the load toolkit: durations on the command line, nearest-rank percentiles and
 * a least-squares line. Pure functions; every benchmark and the runner use these.
 */

/** Percentiles of a sample (nearest rank), in the sample's unit (ms for delays). */
export interface Latency {
  samples: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

/**
 * Parses `20s`, `500ms`, `2m`, `1h` or a bare number into ms. A bare number is in `bareUnit`
 * (seconds unless said otherwise). Throws TypeError on anything else.
 */
export function parseDuration(s: string, bareUnit: 'ms' | 's' = 's'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(s.trim());
  if (!m) {
    throw new TypeError(`invalid duration ${JSON.stringify(s)} (examples: 20s, 500ms, 2m, 1h)`);
  }
  const n = Number(m[1]);
  const unit = m[2] ?? bareUnit;
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000;

  return Math.round(n * factor);
}

/**
 * The nearest-rank percentile `q` (0 < q <= 1) of an ascending sorted sample, or null when it is
 * empty: the smallest value with at least q of the sample at or below it.
 */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) {
    return null;
  }

  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** p50, p90, p99, max and mean of a sample, rounded to `decimals` (default 3: µs for ms values). */
export function latency(values: readonly number[], decimals = 3): Latency {
  if (values.length === 0) {
    return { samples: 0, p50: null, p90: null, p99: null, max: null, mean: null };
  }
  const f = 10 ** decimals;
  const r = (v: number | null): number | null => (v === null ? null : Math.round(v * f) / f);
  const s = [...values].sort((a, b) => a - b);

  return {
    samples: s.length,
    p50: r(percentile(s, 0.5)),
    p90: r(percentile(s, 0.9)),
    p99: r(percentile(s, 0.99)),
    max: r(s[s.length - 1]!),
    mean: r(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

/** A least-squares line y = intercept + slope·x. */
export interface Fit {
  slope: number;
  intercept: number;
  /** Coefficient of determination. */
  r2: number;
}

/** Least-squares fit of y on x (rounded to 3 decimals), or null with fewer than two distinct x. */
export function fitLine(points: readonly { x: number; y: number }[]): Fit | null {
  const n = points.length;
  if (new Set(points.map((p) => p.x)).size < 2) {
    return null;
  }
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const p of points) {
    sxx += (p.x - mx) ** 2;
    sxy += (p.x - mx) * (p.y - my);
    syy += (p.y - my) ** 2;
  }
  const slope = sxy / sxx;
  const r3 = (v: number): number => Math.round(v * 1000) / 1000;

  return { slope: r3(slope), intercept: r3(my - slope * mx), r2: syy > 0 ? r3((sxy * sxy) / (sxx * syy)) : 1 };
}
