import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CallMetrics } from '../../src/metrics/call-metrics.js';

describe('call metrics (src/metrics/call-metrics.ts)', () => {
  it('pins the names, types and label sets: a rename is a conscious change', async () => {
    const registry = new Registry();
    const m = new CallMetrics(registry, 'ringbridge_');
    m.ringing('inbound', 0, 10);
    m.timed({ direction: 'inbound', endReason: 'hangup_local', offeredAt: 0, ringingAt: 10, answeredAt: 20, endedAt: 30 });
    m.ended({ direction: 'inbound', endReason: 'hangup_local' });
    m.bind({ activeCalls: () => ({ inbound: 0, outbound: 0 }), sessions: () => ({ connected: 0, suspended: 0 }), agents: () => ({}) });
    const shape = (await registry.getMetricsAsJSON()).map((m) => `${m.name} ${m.type} [${[...new Set(m.values.flatMap((v) => Object.keys(v.labels)))].filter((l) => l !== 'le').sort().join(',')}]`).sort();
    expect(shape).toEqual([
      'ringbridge_agents gauge [presence]',
      'ringbridge_call_answer_seconds histogram [direction]',
      'ringbridge_call_duration_seconds histogram [direction]',
      'ringbridge_call_pdd_seconds histogram [direction]',
      'ringbridge_calls_active gauge [direction]',
      'ringbridge_calls_finished_total counter [direction,end_reason]',
      'ringbridge_ws_sessions gauge [state]',
    ]);
  });

  it('observes the post-dial delay at ringing, answer and talk time at the end, and counts the end reason', async () => {
    const registry = new Registry();
    const m = new CallMetrics(registry, 'rb_');
    m.ringing('inbound', 1000, 1040);
    m.timed({ direction: 'inbound', endReason: 'hangup_remote', offeredAt: 1000, ringingAt: 1040, answeredAt: 4000, endedAt: 64_000 });
    m.ringing('outbound', 0, 300);
    m.timed({ direction: 'outbound', endReason: 'busy', offeredAt: 0, ringingAt: 300, endedAt: 2000 });
    m.ended({ direction: 'inbound', endReason: 'hangup_remote' });
    m.bind({ activeCalls: () => ({ inbound: 3, outbound: 1 }), sessions: () => ({ connected: 5, suspended: 1 }), agents: () => ({ available: 2, on_call: 3 }) });
    const text = await registry.metrics();
    expect(text).toContain('rb_calls_finished_total{direction="inbound",end_reason="hangup_remote"} 1');
    expect(text).toContain('rb_call_pdd_seconds_bucket{le="0.05",direction="inbound"} 1');
    expect(text).toContain('rb_call_pdd_seconds_bucket{le="0.025",direction="inbound"} 0');
    expect(text).toContain('rb_call_pdd_seconds_sum{direction="outbound"} 0.3');
    expect(text).toContain('rb_call_answer_seconds_sum{direction="inbound"} 3');
    expect(text).toContain('rb_call_duration_seconds_sum{direction="inbound"} 60');
    expect(text).not.toContain('rb_call_duration_seconds_count{direction="outbound"}'); // never answered
    expect(text).toContain('rb_calls_active{direction="inbound"} 3');
    expect(text).toContain('rb_ws_sessions{state="suspended"} 1');
    expect(text).toContain('rb_agents{presence="on_call"} 3');
    expect(text).toContain('rb_agents{presence="busy"} 0');
  });
});
