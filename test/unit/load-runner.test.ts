// The load runner's pure parts: scenario schedule, percentiles, SVG/HTML report, progress, CLI.
import { describe, expect, it } from 'vitest';
import { parseCli } from '../../load/runner/cli.js';
import { formatProgress, Progress } from '../../load/runner/progress.js';
import { answerRateSeries, renderHtml, type RunReport, type TargetResult } from '../../load/runner/report.js';
import { agentsFor, parseHistogram } from '../../load/runner/scenario.js';
import { peakRate, plannedCalls, rateAt, rateSteps, validateShape } from '../../load/runner/schedule.js';
import { fitLine, latency, parseDuration, percentile } from '../../load/runner/stats.js';
import { barChart, escapeXml, lineChart, niceScale } from '../../load/runner/svg.js';

describe('schedule', () => {
  it('steady offers the rate for the whole duration and nothing after', () => {
    const s = { kind: 'steady' as const, rate: 5, durationMs: 60_000 };
    expect(rateAt(s, 0)).toBe(5);
    expect(rateAt(s, 59_999)).toBe(5);
    expect(rateAt(s, 60_000)).toBe(0);
    expect(rateSteps(s)).toEqual([{ atMs: 0, rate: 5 }, { atMs: 60_000, rate: 0 }]);
    expect(plannedCalls(s)).toBe(300);
  });

  it('ramp rises linearly from rampFrom to rate, then holds; its steps add up to the integral', () => {
    const s = { kind: 'ramp' as const, rampFrom: 0, rate: 10, rampMs: 10_000, durationMs: 20_000 };
    expect(rateAt(s, 5_000)).toBeCloseTo(5);
    expect(rateAt(s, 15_000)).toBe(10);
    const steps = rateSteps(s);
    expect(steps[0]).toEqual({ atMs: 0, rate: 0.5 });
    expect(steps.find((x) => x.atMs === 9_000)?.rate).toBe(9.5);
    // 10 s of ramp (50 calls) + 10 s at 10/s (100 calls)
    expect(plannedCalls(s)).toBe(150);
  });

  it('burst adds bursts of burstRate every burstEvery, the first after one period', () => {
    const s = { kind: 'burst' as const, rate: 1, burstRate: 20, burstEveryMs: 10_000, burstLengthMs: 2_000, durationMs: 30_000 };
    expect(rateAt(s, 1_000)).toBe(1);
    expect(rateAt(s, 10_500)).toBe(20);
    expect(rateAt(s, 12_000)).toBe(1);
    expect(rateAt(s, 21_999)).toBe(20);
    expect(plannedCalls(s)).toBe(26 + 2 * 2 * 20);
    expect(peakRate(s)).toBe(20);
  });

  it('soak is steady at the rate', () => {
    expect(rateSteps({ kind: 'soak', rate: 2, durationMs: 3_600_000 })).toEqual([{ atMs: 0, rate: 2 }, { atMs: 3_600_000, rate: 0 }]);
  });

  it('validateShape rejects bad shapes naming the option', () => {
    expect(() => validateShape({ kind: 'steady', rate: 0, durationMs: 1000 })).toThrow(/--rate/);
    expect(() => validateShape({ kind: 'steady', rate: 1, durationMs: 0 })).toThrow(/--duration/);
    expect(() => validateShape({ kind: 'burst', rate: 1, durationMs: 10_000, burstEveryMs: 1000, burstLengthMs: 1000 })).toThrow(/--burst-length/);
    expect(() => validateShape({ kind: 'wave' as 'steady', rate: 1, durationMs: 1000 })).toThrow(/--scenario/);
    expect(validateShape({ kind: 'burst', rate: 0, burstRate: 10, durationMs: 60_000 })).toMatchObject({ rate: 0, burstRate: 10, burstEveryMs: 30_000, burstLengthMs: 5000 });
  });

  it('agentsFor sizes the pool from the peak rate, ring and talk time unless given', () => {
    expect(agentsFor({ shape: { kind: 'steady', rate: 2, durationMs: 60_000 }, ringMs: 2000, talkMs: 20_000, agents: 0 })).toBe(72);
    expect(agentsFor({ shape: { kind: 'steady', rate: 2, durationMs: 60_000 }, ringMs: 2000, talkMs: 20_000, agents: 7 })).toBe(7);
  });
});

describe('stats', () => {
  it('percentile is nearest-rank', () => {
    const s = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(s, 0.5)).toBe(50);
    expect(percentile(s, 0.99)).toBe(99);
    expect(percentile(s, 1)).toBe(100);
    expect(percentile([7], 0.99)).toBe(7);
    expect(percentile([], 0.5)).toBeNull();
  });

  it('latency summarises a sample in any order', () => {
    expect(latency([3, 1, 2, 4])).toEqual({ samples: 4, p50: 2, p90: 4, p99: 4, max: 4, mean: 2.5 });
    expect(latency([])).toEqual({ samples: 0, p50: null, p90: null, p99: null, max: null, mean: null });
  });

  it('parseDuration reads ms, s, m, h and bare numbers in the given unit', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('3')).toBe(3000);
    expect(parseDuration('3', 'ms')).toBe(3);
    expect(() => parseDuration('soon')).toThrow(TypeError);
  });

  it('fitLine fits a line, null with one distinct x', () => {
    expect(fitLine([{ x: 0, y: 1 }, { x: 1, y: 3 }, { x: 2, y: 5 }])).toEqual({ slope: 2, intercept: 1, r2: 1 });
    expect(fitLine([{ x: 1, y: 1 }, { x: 1, y: 2 }])).toBeNull();
  });
});

describe('svg and html', () => {
  it('niceScale rounds the top up to a tick step', () => {
    expect(niceScale(87)).toEqual({ top: 100, step: 20 });
    expect(niceScale(0)).toEqual({ top: 1, step: 0.2 });
  });

  it('lineChart draws one path per series run, breaks at nulls, and escapes names', () => {
    const svg = lineChart([0, 1, 2, 3], [{ name: 'a<b', values: [1, 2, null, 4] }], { title: 'T&T', xLabel: 's', yLabel: 'n' });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain('a&lt;b');
    expect(svg).toContain('T&amp;T');
    expect(lineChart([], [], { title: 'x', xLabel: '', yLabel: '' })).toContain('no data');
  });

  it('barChart draws a bar per non-null value', () => {
    const svg = barChart([{ label: 'p50', values: [1, 2] }, { label: 'p99', values: [3, null] }], ['A', 'B'], { title: 't', xLabel: '', yLabel: '' });
    expect(svg.match(/<rect [^>]*><title>/g)).toHaveLength(3);
  });

  it('escapeXml escapes the five characters', () => {
    expect(escapeXml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });

  const target = (name: string): TargetResult => ({
    name,
    description: `${name} under test`,
    totals: { attempted: 4, answered: 3, failed: 1, completed: 3, answerRatePct: 75, peakConcurrent: 2 },
    pddMs: latency([1, 2, 3]),
    answerMs: latency([1001, 1002]),
    mos: { buckets: [{ le: 4, count: 1 }, { le: 4.4, count: 5 }, { le: 5, count: 0 }], count: 6, mean: 4.2 },
    series: { t: [1, 2], offeredCps: [2, 2], cps: [2, 2], concurrent: [1, 2], attempted: [2, 4], answered: [1, 3], failed: [0, 1], cpuPct: { gateway: [10, 12] }, rssMb: { gateway: [100, 101] } },
    resources: { gateway: { cpuPctMean: 11, cpuPctMax: 12, rssMbMax: 101 } },
    extra: {},
    notes: ['a <note>'],
  });

  it('renderHtml gives one offline page with every plot, the scenario and the machine', () => {
    const r: RunReport = {
      tool: 'ringbridge load runner',
      version: '0.1.0',
      startedAt: '2026-11-29T20:00:00.000Z',
      finishedAt: '2026-11-29T20:01:00.000Z',
      command: 'npm run load -- --rate 2',
      interrupted: true,
      scenario: { scenario: 'steady', rate: 2 },
      machine: { cpus: 2, cpuModel: 'cpu', memGb: 8, kernel: 'k', node: 'v20', tools: { sipp: 'SIPp v3.6.1' }, loadAvg: { start: 3, end: 2 }, busy: true },
      targets: [target('ringbridge'), target('kamailio+rtpengine')],
    };
    const html = renderHtml(r);
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).not.toMatch(/<script|\s(?:src|href)=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    expect(html.match(/<svg /g)?.length).toBe(7);
    for (const title of ['Calls per second', 'Concurrent calls', 'Post-dial delay', 'Answer rate', 'MOS distribution', 'CPU', 'Memory']) {
      expect(html).toContain(title);
    }
    expect(html).toContain('Interrupted');
    expect(html).toContain('machine was busy');
    expect(html).toContain('a &lt;note&gt;');
    expect(html).toContain('SIPp v3.6.1');
  });

  it('answerRateSeries gives the per-interval answer rate, by attempt second when known', () => {
    expect(answerRateSeries(target('x').series)).toEqual([50, 100]);
    expect(answerRateSeries({ ...target('x').series, answerRatePct: [100, null] })).toEqual([100, null]);
  });
});

describe('parseHistogram', () => {
  it('sums a histogram over its labels into per-bucket counts', () => {
    const text = [
      '# TYPE ringbridge_leg_mos histogram',
      'ringbridge_leg_mos_bucket{le="3",leg="trunk",direction="in"} 1',
      'ringbridge_leg_mos_bucket{le="4",leg="trunk",direction="in"} 3',
      'ringbridge_leg_mos_bucket{le="+Inf",leg="trunk",direction="in"} 4',
      'ringbridge_leg_mos_sum{leg="trunk",direction="in"} 16',
      'ringbridge_leg_mos_count{leg="trunk",direction="in"} 4',
      'ringbridge_leg_mos_bucket{leg="agent",direction="out",le="3"} 0',
      'ringbridge_leg_mos_bucket{leg="agent",direction="out",le="4"} 0',
      'ringbridge_leg_mos_bucket{leg="agent",direction="out",le="+Inf"} 2',
      'ringbridge_leg_mos_sum{leg="agent",direction="out"} 8.8',
      'ringbridge_leg_mos_count{leg="agent",direction="out"} 2',
    ].join('\n');
    expect(parseHistogram(text, 'ringbridge_leg_mos')).toEqual({ buckets: [{ le: 3, count: 1 }, { le: 4, count: 2 }, { le: 5, count: 3 }], count: 6, mean: 4.13 });
    expect(parseHistogram('', 'ringbridge_leg_mos')).toBeNull();
  });
});

describe('progress', () => {
  const f = { target: 'ringbridge', elapsedS: 12, durationS: 60, attempted: 24, answered: 20, failed: 1, cps: 2, offeredCps: 2, concurrent: 7 };

  it('formats the figures on one line', () => {
    expect(formatProgress(f)).toBe('[ringbridge] 12/60 s  attempted 24  answered 20  failed 1  rate 2.0/s (offered 2.0)  concurrent 7');
  });

  it('adds the outbound calls when the scenario has them', () => {
    expect(formatProgress({ ...f, outbound: { dialed: 5, answered: 4 } })).toMatch(/concurrent 7 {2}outbound 4\/5$/);
  });

  it('rewrites the line on a TTY and prints throttled plain lines otherwise', () => {
    const tty: string[] = [];
    const p1 = new Progress({ isTTY: true, write: (s: string) => tty.push(s) });
    p1.update(f);
    p1.update(f);
    p1.end();
    expect(tty.filter((s) => s.startsWith('\r'))).toHaveLength(2);
    expect(tty[tty.length - 1]).toBe('\n');
    const plain: string[] = [];
    const p2 = new Progress({ isTTY: false, write: (s: string) => plain.push(s) }, 60_000);
    p2.update(f);
    p2.update(f);
    expect(plain).toEqual([`${formatProgress(f)}\n`]);
  });
});

describe('cli', () => {
  it('parses a scenario with its shape and behaviour', () => {
    const c = parseCli(['--scenario', 'burst', '--rate', '1', '--burst-rate', '8', '--burst-every', '20s', '--burst-length', '2s', '--duration', '60s', '--ring', '500ms', '--talk', '5s', '--media-share', '0.5', '--target', 'ringbridge', '--work-dir', '/tmp/x']);
    expect(c.inbound?.shape).toEqual({ kind: 'burst', rate: 1, durationMs: 60_000, rampFrom: 0, rampMs: 60_000, burstRate: 8, burstEveryMs: 20_000, burstLengthMs: 2000 });
    expect(c.inbound).toMatchObject({ ringMs: 500, talkMs: 5000, mediaShare: 0.5, outboundShare: 0, targets: ['ringbridge'] });
    expect(parseCli(['--outbound-share', '0.25', '--work-dir', '/tmp/x']).inbound?.outboundShare).toBe(0.25);
  });

  it('gives soak a 30-minute default', () => {
    expect(parseCli(['--scenario', 'soak', '--work-dir', '/tmp/x']).inbound?.shape.durationMs).toBe(1_800_000);
  });

  it('rejects bad values naming the option', () => {
    expect(() => parseCli(['--hold-share', '2'])).toThrow(/--hold-share/);
    expect(() => parseCli(['--outbound-share', '-0.1'])).toThrow(/--outbound-share/);
    expect(() => parseCli(['--target', 'asterisk'])).toThrow(/--target/);
    expect(() => parseCli(['--gateway-env', 'FOO=1'])).toThrow(/--gateway-env/);
    expect(() => parseCli(['--preset', 'dial'])).toThrow(/--preset/);
    expect(() => parseCli(['--no-such-option'])).toThrow();
  });

  it('passes a preset its own options and keeps --out and --name for the runner', () => {
    expect(parseCli(['--preset', 'sip', '--target', 'kamailio', '--out', '/tmp/r', '--rates', '10'])).toMatchObject({ preset: { name: 'sip', argv: ['--target', 'kamailio', '--rates', '10'] }, outDir: '/tmp/r' });
  });
});
