/**
 * Pure parts of the registrar's defences (issue 12 break-it review): STUN answers for any source
 * (zoned IPv6 included) and malformed STUN (fuzzed), the STUN rate limit, source grouping (IPv6 by
 * /64), the registered-flow table (a flow serves only requests naming its binding), and which
 * source the registrar's lockout counts.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sourceGroup } from '../../src/security/source-group.js';
import { bindingFlowToken, RegisteredFlows } from '../../src/sip/engine/core/registered-flows.js';
import { parseMessage } from '../../src/sip/engine/message.js';
import { isStun, StunResponder, stunBindingResponse } from '../../src/sip/engine/transport/stun.js';
import { type Flow } from '../../src/sip/engine/transport/types.js';
import { RegisterLockout } from '../../src/sip/registrar/lockout.js';
import { type WindowCounter } from '../../src/security/rate-limit.js';

const bindingRequest = (txn = randomBytes(12)) => Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), txn]);

/** The address and port in a Binding success response's XOR-MAPPED-ADDRESS. */
function mapped(res: Buffer): { family: number; port: number; bytes: number[] } {
  const family = res.readUInt8(25);
  const key = [0x21, 0x12, 0xa4, 0x42, ...res.subarray(8, 20)];
  const len = family === 1 ? 4 : 16;

  return { family, port: res.readUInt16BE(26) ^ 0x2112, bytes: [...res.subarray(28, 28 + len)].map((b, i) => b ^ key[i]!) };
}

describe('STUN Binding answers (RFC 5389, RFC 5626 §4.4.2)', () => {
  it('answers IPv4, IPv6, IPv4-mapped and zoned IPv6 sources without throwing; the zone is not on the wire', () => {
    const req = bindingRequest();
    expect(mapped(stunBindingResponse(req, { address: '192.0.2.7', port: 5062 })!)).toEqual({ family: 1, port: 5062, bytes: [192, 0, 2, 7] });
    expect(mapped(stunBindingResponse(req, { address: '::ffff:192.0.2.8', port: 1 })!)).toEqual({ family: 1, port: 1, bytes: [192, 0, 2, 8] });
    const v6 = mapped(stunBindingResponse(req, { address: '2001:db8::1', port: 40000 })!);
    expect(v6.family).toBe(2);
    expect(v6.bytes).toEqual([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    for (const zoned of ['fe80::1%eth0', 'fe80::1%25', 'fe80::1%', '[fe80::1%lo]', 'fe80::1%eth0%eth1']) {
      const r = stunBindingResponse(req, { address: zoned, port: 5060 });
      expect(r, zoned).toBeDefined();
      expect(mapped(r!).bytes.slice(0, 2), zoned).toEqual([0xfe, 0x80]);
    }
    for (const bad of ['', 'localhost', '999.1.1.1', '%eth0', '::1::2', 'fe80::1%eth0\r\nX']) {
      expect(() => stunBindingResponse(req, { address: bad, port: 5060 }), bad).not.toThrow();
    }
    expect(stunBindingResponse(req, { address: 'localhost', port: 5060 })).toBeUndefined();
    expect(stunBindingResponse(req, { address: '192.0.2.1', port: 70000 })).toBeUndefined();
    expect(stunBindingResponse(req, { address: '192.0.2.1', port: Number.NaN })).toBeUndefined();
  });

  it('never throws on fuzzed datagrams, and answers only well-formed Binding requests', () => {
    const sources = ['192.0.2.1', 'fe80::1%eth0', '::', 'garbage', '2001:db8::2'];
    let answered = 0;
    for (let i = 0; i < 5000; i++) {
      const len = i % 7 === 0 ? 20 + 4 * (i % 16) : Math.floor(Math.random() * 80);
      const b = i % 2 === 0 ? Buffer.concat([bindingRequest(), randomBytes(Math.max(0, len - 20))]) : randomBytes(len);
      if (i % 4 === 0) {
        b[Math.floor(Math.random() * Math.max(1, b.length))] = Math.floor(Math.random() * 256);
      }
      if (i % 3 === 0 && b.length >= 4) {
        b.writeUInt16BE((b.length - 20) & 0xffff, 2);
      }
      let r: Buffer | undefined;
      expect(() => {
        isStun(b);
        r = stunBindingResponse(b, { address: sources[i % sources.length]!, port: i % 65536 });
      }).not.toThrow();
      if (r) {
        answered++;
        expect(isStun(b) && b.readUInt16BE(0) === 0x0001).toBe(true);
        expect(r.subarray(8, 20).equals(b.subarray(8, 20))).toBe(true);
      }
    }
    expect(answered).toBeGreaterThan(0);
    // other STUN methods and classes are not answered
    const indication = bindingRequest();
    indication.writeUInt16BE(0x0011, 0);
    expect(stunBindingResponse(indication, { address: '192.0.2.1', port: 1 })).toBeUndefined();
  });

  it('rate-limits answers per source (IPv6 by /64) and in total, per one-second window', () => {
    let now = 1_000_000;
    const r = new StunResponder({ perSourcePerSecond: 3, totalPerSecond: 5, now: () => now });
    const ask = (address: string) => r.answer(bindingRequest(), { address, port: 5060 }) !== undefined;
    expect([1, 2, 3, 4].map(() => ask('192.0.2.1'))).toEqual([true, true, true, false]);
    // other addresses of the same /64 share the count; another /64 does not
    expect(ask('2001:db8:0:1::1')).toBe(true);
    expect(ask('2001:db8:0:1::2')).toBe(true);
    // the total (5) is reached
    expect(ask('2001:db8:0:2::1')).toBe(false);
    expect(r.dropped).toBe(2);
    now += 1000;
    expect(ask('192.0.2.1')).toBe(true);
    expect(ask('fe80::1%eth0')).toBe(true);
  });
});

describe('sourceGroup()', () => {
  it('groups IPv6 by /64, maps IPv4-mapped to IPv4, drops zones, and never throws', () => {
    expect(sourceGroup('192.0.2.1')).toBe('192.0.2.1');
    expect(sourceGroup('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(sourceGroup('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceGroup('[2001:db8:1:2::9]')).toBe('2001:db8:1:2::/64');
    expect(sourceGroup('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(sourceGroup('not an address')).toBe('not an address');
    expect(sourceGroup('x'.repeat(500))).toHaveLength(64);
  });
});

describe('RegisteredFlows: a flow serves only requests naming its binding (finding a)', () => {
  const flow = (id: string): Flow => ({ protocol: 'tcp', local: { address: '127.0.0.1', port: 5060 }, remote: { address: '203.0.113.9', port: 40000 }, connectionId: id });
  const register = (aor: string, contacts: string[]) =>
    parseMessage(Buffer.from([`REGISTER sip:example.com SIP/2.0`, 'Via: SIP/2.0/TCP 203.0.113.9:40000;branch=z9hG4bKx', `From: <sip:${aor}>;tag=1`, `To: <sip:${aor}>`, 'Call-ID: c1', 'CSeq: 1 REGISTER', ...contacts.map((c) => `Contact: ${c}`), 'Content-Length: 0', '', ''].join('\r\n')));
  const ok = (contacts: string[]) => parseMessage(Buffer.from(['SIP/2.0 200 OK', 'Via: SIP/2.0/TCP 203.0.113.9:40000;branch=z9hG4bKx', 'From: <sip:a@example.com>;tag=1', 'To: <sip:a@example.com>;tag=2', 'Call-ID: c1', 'CSeq: 1 REGISTER', ...contacts.map((c) => `Contact: ${c}`), 'Content-Length: 0', '', ''].join('\r\n')));

  it('uses a flow only with the token of that agent\'s binding and its exact Contact URI as Request-URI', () => {
    const open = new Set(['conn-1', 'conn-2']);
    const t = new RegisteredFlows((id) => open.has(id));
    const contact = 'sip:+15550001@carrier.example:5060;ob';
    const inst = '<urn:uuid:00000000-0000-4000-8000-000000000001>';
    t.remember(register('mallory@example.com', [`<${contact}>;+sip.instance="${inst}";reg-id=1`]), ok([`<${contact}>;expires=600;+sip.instance="${inst}";reg-id=1`]), flow('conn-1'));
    const tok = bindingFlowToken({ aor: 'mallory@example.com', instance: inst, regId: 1, contact });
    expect(t.flowFor(tok, contact)?.connectionId).toBe('conn-1');
    // the carrier's URI without the token: routed as usual
    expect(t.flowFor(undefined, 'sip:+15550001@carrier.example:5060')).toBeUndefined();
    expect(t.flowFor(undefined, contact)).toBeUndefined();
    // the token with another Request-URI; another agent's, instance's or reg-id's token
    expect(t.flowFor(tok, 'sip:+15550001@carrier.example:5060')).toBeUndefined();
    expect(t.flowFor(bindingFlowToken({ aor: 'alice@example.com', instance: inst, regId: 1, contact }), contact)).toBeUndefined();
    expect(t.flowFor(bindingFlowToken({ aor: 'mallory@example.com', instance: inst, regId: 2, contact }), contact)).toBeUndefined();
    expect(t.flowFor(bindingFlowToken({ aor: 'mallory@example.com', contact }), contact)).toBeUndefined();
    // the connection closes: gone
    open.delete('conn-1');
    expect(t.flowFor(tok, contact)).toBeUndefined();
    expect(t.size).toBe(0);
  });

  it('forgets a binding\'s flow when a 2xx for its address-of-record no longer lists it, or it expires', () => {
    const t = new RegisteredFlows(() => true);
    const a = 'sip:alice@203.0.113.9:40000;transport=tcp';
    const b = 'sip:alice@203.0.113.9:40001;transport=tcp';
    const now = 1_000_000;
    t.remember(register('alice@example.com', [`<${a}>`]), ok([`<${a}>;expires=600`]), { ...flow('c1'), remote: { address: '203.0.113.9', port: 40000 } }, now);
    t.remember(register('alice@example.com', [`<${b}>`]), ok([`<${a}>;expires=590`, `<${b}>;expires=600`]), { ...flow('c2'), remote: { address: '203.0.113.9', port: 40001 } }, now);
    const ta = bindingFlowToken({ aor: 'alice@example.com', contact: a });
    const tb = bindingFlowToken({ aor: 'alice@example.com', contact: b });
    expect(t.flowFor(ta, a, now)?.connectionId).toBe('c1');
    expect(t.flowFor(tb, b, now)?.connectionId).toBe('c2');
    // b un-registers: the 2xx lists only a
    t.remember(register('alice@example.com', [`<${b}>;expires=0`]), ok([`<${a}>;expires=580`]), flow('c2'), now);
    expect(t.flowFor(tb, b, now)).toBeUndefined();
    expect(t.flowFor(ta, a, now)?.connectionId).toBe('c1');
    // another AOR's 2xx changes nothing of alice's
    t.remember(register('bob@example.com', []), ok([]), flow('c3'), now);
    expect(t.flowFor(ta, a, now)?.connectionId).toBe('c1');
    // expiry
    expect(t.flowFor(ta, a, now + 601_000)).toBeUndefined();
  });

  it('remembers no flow for a Contact naming another host without outbound hints, or not granted', () => {
    const t = new RegisteredFlows(() => true);
    const other = 'sip:bob@198.51.100.1:5060;transport=tcp';
    t.remember(register('bob@example.com', [`<${other}>`]), ok([`<${other}>;expires=600`]), flow('c1'));
    t.remember(register('bob@example.com', ['<sip:bob@198.51.100.2;ob>']), ok([]), flow('c1'));
    expect(t.size).toBe(0);
  });
});

describe('RegisterLockout.source(): what a failed REGISTER counts against', () => {
  const counter = { prefix: 'p:', redis: undefined } as unknown as WindowCounter;
  const lockout = new RegisterLockout({
    counter,
    config: { maxFailuresPerSource: 3, maxFailuresPerUser: 5, windowMs: 60_000, lockMs: 60_000 },
    trunkSources: ['198.51.100.0/24', '2001:db8:77::/48'],
    trustedProxies: ['10.0.0.10'],
  });

  it('is the packet source, IPv6 grouped by /64; a trunk address counts never (\'\')', () => {
    expect(lockout.source('203.0.113.5', undefined)).toBe('203.0.113.5');
    expect(lockout.source('2001:db8:1:2::5', undefined)).toBe('2001:db8:1:2::/64');
    expect(lockout.source('198.51.100.7', undefined)).toBe('');
    expect(lockout.source('2001:db8:77:1::1', undefined)).toBe('');
    // a header from a source that is no trusted proxy is ignored
    expect(lockout.source('203.0.113.5', '198.51.100.7:5060')).toBe('203.0.113.5');
  });

  it('behind the trusted proxy: the X-RB-Source address; a missing or malformed one counts against the proxy', () => {
    expect(lockout.source('10.0.0.10', '203.0.113.9:5060;transport=udp')).toBe('203.0.113.9');
    expect(lockout.source('10.0.0.10', '[2001:db8:5:6::1]:5060')).toBe('2001:db8:5:6::/64');
    expect(lockout.source('10.0.0.10', '198.51.100.7:5060')).toBe('');
    for (const bad of [undefined, '', 'garbage', '1.2.3.4, 5.6.7.8', '[zz::1]:5060', '300.1.1.1']) {
      expect(lockout.source('10.0.0.10', bad), String(bad)).toBe('10.0.0.10');
    }
  });
});
