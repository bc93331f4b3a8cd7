import { describe, expect, it } from 'vitest';
import { Handoff, HandoffError } from '../../src/calls/handoff.js';

const SECRET = 'handoff-unit-secret-0123456789abcdef-01';
const INFO = { callId: 'c-1', agents: ['agent-1', 'agent-2'], trunkId: 'carrier', origin: 'node-a', ringMs: 20_000 };
const SDP = 'v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n';

function getter(h: Record<string, string>): (n: string) => string | undefined {
  return (n) => h[n];
}

describe('hand-off headers (src/calls/handoff.ts)', () => {
  it('verifies what another node with the same secret signed, once', () => {
    const now = Date.now();
    const h = new Handoff(SECRET).headers(INFO, SDP, now);
    const receiver = new Handoff(SECRET);
    expect(receiver.verify(getter(h), SDP, now + 100)).toEqual(INFO);
    // the same signature again: a replay, whatever the Call-ID of the new INVITE
    expect(() => receiver.verify(getter(h), SDP, now + 200)).toThrow(/used before/);
  });

  it('ignores line-ending differences of the body but refuses another body', () => {
    const now = Date.now();
    const h = new Handoff(SECRET).headers(INFO, SDP, now);
    expect(new Handoff(SECRET).verify(getter(h), SDP.replace(/\r\n/g, '\n'), now)).toEqual(INFO);
    expect(() => new Handoff(SECRET).verify(getter(h), SDP.replace('40000', '41234'), now)).toThrow(HandoffError);
  });

  it('refuses another secret, altered headers, stale or future times, and malformed values', () => {
    const now = Date.now();
    const h = new Handoff(SECRET).headers(INFO, SDP, now);
    expect(() => new Handoff(`${SECRET}x`).verify(getter(h), SDP, now)).toThrow(/does not match/);
    expect(() => new Handoff(SECRET).verify(getter({ ...h, 'X-RB-Agents': 'agent-1,agent-3' }), SDP, now)).toThrow(/does not match/);
    expect(() => new Handoff(SECRET).verify(getter(h), SDP, now + 31_000)).toThrow(/too old/);
    expect(() => new Handoff(SECRET).verify(getter(h), SDP, now - 31_000)).toThrow(/too old/);
    expect(() => new Handoff(SECRET).verify(getter({ ...h, 'X-RB-Auth': 'v1 1 zz' }), SDP, now)).toThrow(/malformed/);
    const bad = new Handoff(SECRET).headers({ ...INFO, agents: ['a b'] }, SDP, now);
    expect(() => new Handoff(SECRET).verify(getter(bad), SDP, now)).toThrow(/malformed/);
  });
});
