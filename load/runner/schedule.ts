/**
 * Scenario shapes of the load runner: the offered call rate (calls per second) as a function of
 * time since the scenario started. Pure; the runner turns the shape into rate changes for the
 * sipp UAC (its control port's `cset rate`) once a second.
 *
 * - `steady`: `rate` from start to end.
 * - `ramp`: linear from `rampFrom` to `rate` over `rampMs` (default: the whole duration), then
 *   `rate` until the end.
 * - `burst`: `rate` as the base, and every `burstEveryMs` a burst of `burstRate` lasting
 *   `burstLengthMs` (the first burst starts after one period).
 * - `soak`: `rate` held for a long duration (default 30 min); the same schedule as `steady`,
 *   reported with the gateway's memory growth over time.
 */

/** The kinds of scenario. */
export type ScenarioKind = 'steady' | 'ramp' | 'burst' | 'soak';

/** A scenario's rate over time. Rates in calls/s, times in ms. */
export interface ScenarioShape {
  kind: ScenarioKind;
  durationMs: number;
  /** steady/soak: the rate; ramp: the rate reached; burst: the base rate. */
  rate: number;
  /** ramp: the starting rate (default 0). */
  rampFrom?: number;
  /** ramp: how long the ramp lasts (default: durationMs). */
  rampMs?: number;
  /** burst: the rate during a burst. */
  burstRate?: number;
  /** burst: time from the start of one burst to the next (and before the first). */
  burstEveryMs?: number;
  /** burst: length of a burst. */
  burstLengthMs?: number;
}

/**
 * Checks a shape; throws TypeError naming the option (`--rate`, `--burst-rate`, ...) that is
 * wrong. Returns the shape with defaults filled in (a copy).
 */
export function validateShape(shape: ScenarioShape): Required<ScenarioShape> {
  const s: Required<ScenarioShape> = {
    kind: shape.kind,
    durationMs: shape.durationMs,
    rate: shape.rate,
    rampFrom: shape.rampFrom ?? 0,
    rampMs: shape.rampMs ?? shape.durationMs,
    burstRate: shape.burstRate ?? shape.rate * 5,
    burstEveryMs: shape.burstEveryMs ?? 30_000,
    burstLengthMs: shape.burstLengthMs ?? 5_000,
  };
  const positive = (name: string, v: number, allowZero = false): void => {
    if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
      throw new TypeError(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${v}`);
    }
  };
  if (!['steady', 'ramp', 'burst', 'soak'].includes(s.kind)) {
    throw new TypeError(`--scenario must be steady, ramp, burst or soak, got ${JSON.stringify(s.kind)}`);
  }
  positive('duration', s.durationMs);
  positive('rate', s.rate, s.kind === 'burst');
  positive('ramp-from', s.rampFrom, true);
  positive('ramp', s.rampMs);
  positive('burst-rate', s.burstRate);
  positive('burst-every', s.burstEveryMs);
  positive('burst-length', s.burstLengthMs);
  if (s.kind === 'burst' && s.burstLengthMs >= s.burstEveryMs) {
    throw new TypeError(`--burst-length (${s.burstLengthMs} ms) must be shorter than --burst-every (${s.burstEveryMs} ms)`);
  }

  return s;
}

/** The offered rate (calls/s) at `tMs` after the start; 0 outside [0, durationMs). */
export function rateAt(shape: ScenarioShape, tMs: number): number {
  const s = validateShape(shape);
  if (tMs < 0 || tMs >= s.durationMs) {
    return 0;
  }
  switch (s.kind) {
    case 'steady':
    case 'soak':
      return s.rate;
    case 'ramp':
      return tMs >= s.rampMs ? s.rate : s.rampFrom + ((s.rate - s.rampFrom) * tMs) / s.rampMs;
    case 'burst': {
      const inPeriod = tMs % s.burstEveryMs;
      const period = Math.floor(tMs / s.burstEveryMs);

      return period >= 1 && inPeriod < s.burstLengthMs ? s.burstRate : s.rate;
    }
  }
}

/** One rate setting: from `atMs` on, offer `rate` calls/s. */
export interface RateStep {
  atMs: number;
  rate: number;
}

/**
 * The shape as piecewise-constant steps of `stepMs` (default 1 s): each step's rate is the mean
 * of the shape over the step (so a ramp's calls add up), rounded to 3 decimals, and a step is
 * listed only where the rate changes. The last entry is `{atMs: durationMs, rate: 0}`.
 */
export function rateSteps(shape: ScenarioShape, stepMs = 1000): RateStep[] {
  const s = validateShape(shape);
  const out: RateStep[] = [];
  for (let t = 0; t < s.durationMs; t += stepMs) {
    const end = Math.min(s.durationMs, t + stepMs);
    // mean over the step by the midpoint rule on 10 sub-steps (exact for steady, ramp and burst edges on step bounds)
    let sum = 0;
    const n = 10;
    for (let i = 0; i < n; i++) {
      sum += rateAt(s, t + ((i + 0.5) * (end - t)) / n);
    }
    const rate = Math.round((sum / n) * 1000) / 1000;
    if (out.length === 0 || out[out.length - 1]!.rate !== rate) {
      out.push({ atMs: t, rate });
    }
  }
  out.push({ atMs: s.durationMs, rate: 0 });

  return out;
}

/** Calls the shape offers in all: the integral of the steps' rates (what sipp is asked to place). */
export function plannedCalls(shape: ScenarioShape, stepMs = 1000): number {
  const steps = rateSteps(shape, stepMs);
  let calls = 0;
  for (let i = 0; i + 1 < steps.length; i++) {
    calls += (steps[i]!.rate * (steps[i + 1]!.atMs - steps[i]!.atMs)) / 1000;
  }

  return Math.round(calls);
}

/** The highest rate of the shape (what sizes the agents and sipp's call limit). */
export function peakRate(shape: ScenarioShape): number {
  const s = validateShape(shape);

  return s.kind === 'burst' ? Math.max(s.rate, s.burstRate) : s.kind === 'ramp' ? Math.max(s.rate, s.rampFrom) : s.rate;
}
