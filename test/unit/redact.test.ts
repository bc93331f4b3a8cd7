import { describe, expect, it } from 'vitest';
import { maskUrlPassword, redactText, redactValue } from '../../src/log/redact.js';
import { captureLogger } from '../helpers/env.js';

const INVITE = [
  'INVITE sip:+4930123456@gw.example.com;user=phone SIP/2.0',
  'Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds',
  'From: "Alice Smith" <sip:+14155550100@trunk.example>;tag=1928301774',
  't: <tel:+49-30-123456>',
  'P-Asserted-Identity: Alice <sip:004915112345678@trunk.example>',
  'Contact: <sip:agent7@10.0.0.1:5060>',
  'Authorization: Digest username="bob", realm="x", nonce="abc", response="6629fae49393a05397450978507c4ef1"',
  'proxy-authorization: Digest username="bob", response="0102"',
  'Call-ID: a84b4c76e66710@pc33.example.com',
  '',
  '',
].join('\r\n');

describe('redactText()', () => {
  const out = redactText(INVITE);

  it('replaces telephone numbers in SIP and TEL URIs with a pseudonym', () => {
    expect(out).not.toContain('4930123456');
    expect(out).not.toContain('14155550100');
    expect(out).not.toContain('15112345678');
    expect(out).not.toMatch(/49-30-123456/);
    expect(out).toMatch(/^INVITE sip:<num:[0-9a-f]{8}>@gw\.example\.com;user=phone SIP\/2\.0/);
  });

  it('gives the same number the same pseudonym within the process', () => {
    expect(redactText('sip:+4930123456@a')).toBe(redactText('tel:+4930123456').replace('tel:', 'sip:') + '@a');
  });

  it('removes display names and credentials', () => {
    expect(out).not.toContain('Alice');
    expect(out).toContain('From: "[name]" <sip:');
    expect(out).not.toContain('6629fae4');
    expect(out).toContain('Authorization: [redacted]');
    expect(out).toContain('proxy-authorization: [redacted]');
  });

  it('keeps what ops need: methods, hosts, branches, Call-IDs, non-numeric users', () => {
    expect(out).toContain('branch=z9hG4bK776asdhds');
    expect(out).toContain('Call-ID: a84b4c76e66710@pc33.example.com');
    expect(out).toContain('<sip:agent7@10.0.0.1:5060>');
    expect(out).toContain('@trunk.example');
  });

  it('removes JWTs, inline secrets and bare E.164 numbers', () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudC03In0.8d3fT2pQ_signature';
    const s = redactText(`token ${jwt} for +4930123456; url?password=hunter2&x=1 pn-prid=abcdef1234`);
    expect(s).not.toContain(jwt);
    expect(s).not.toContain('hunter2');
    expect(s).not.toContain('4930123456');
    expect(s).not.toContain('abcdef1234');
    expect(s).toContain('[jwt]');
  });
});

describe('redactText() on URLs with credentials', () => {
  it('hides the password of scheme://user:password@ URLs and keeps the rest', () => {
    expect(redactText('connecting to rediss://app:s3cr%40t@redis-ha:6380/2 now')).toBe('connecting to rediss://app:[redacted]@redis-ha:6380/2 now');
    expect(redactText('redis://:hunter2@10.0.0.5')).toBe('redis://:[redacted]@10.0.0.5');
    expect(maskUrlPassword('redis://:p@ss@host/0', '[set]')).toBe('redis://:[set]@host/0');
    // no password, nothing to hide
    expect(redactText('redis://app@host:6379 and https://example.com/a@b')).toBe('redis://app@host:6379 and https://example.com/a@b');
  });
});

describe('redactValue()', () => {
  it('pseudonymises numbers in called/calling fields, national format included', () => {
    const v = redactValue({ called: '030555123', calling: '+4930555000' }) as Record<string, string>;
    expect(v.called).toMatch(/^<num:[0-9a-f]+>$/);
    expect(v.calling).toMatch(/^<num:[0-9a-f]+>$/);
  });

  it('hides the arguments of AUTH and HELLO commands attached to Redis errors', () => {
    const err = Object.assign(new Error('WRONGPASS invalid username-password pair'), { command: { name: 'auth', args: ['app', 'hunter2'] } });
    const hello = { command: { name: 'hello', args: ['3', 'AUTH', 'app', 'hunter2'] }, other: { name: 'hset', args: ['k', 'v'] } };
    expect(JSON.stringify(redactValue(err))).not.toContain('hunter2');
    expect(JSON.stringify(redactValue({ err: { cause: err } }))).not.toContain('hunter2');
    expect(redactValue(hello)).toEqual({ command: { name: 'hello', args: '[redacted]' }, other: { name: 'hset', args: ['k', 'v'] } });
  });

  it('redacts secret fields whatever their nesting', () => {
    const v = redactValue({ device: { pushToken: 'tok-123', platform: 'ios' }, headers: { Authorization: 'Bearer x' }, list: [{ token: 'a' }] }) as Record<string, never>;
    expect(v).toEqual({ device: { pushToken: '[redacted]', platform: 'ios' }, headers: { Authorization: '[redacted]' }, list: [{ token: '[redacted]' }] });
  });

  it('pseudonymises bare numbers in identity fields but keeps agent URIs readable', () => {
    const v = redactValue({ caller: '+49 30 123456', to: 'sip:agent-7@example.com', displayName: 'Bob' }) as Record<string, string>;
    expect(v.caller).toMatch(/^<num:[0-9a-f]{8}>$/);
    expect(v.to).toBe('sip:agent-7@example.com');
    expect(v.displayName).toMatch(/^<name:[0-9a-f]{8}>$/);
  });

  it('survives cycles, deep nesting and huge arrays', () => {
    const a: Record<string, unknown> = { n: 1 };
    a.self = a;
    let deep: Record<string, unknown> = {};
    const root = deep;
    for (let i = 0; i < 50; i++) {
      deep.next = {};
      deep = deep.next as Record<string, unknown>;
    }
    expect(() => redactValue({ a, root, big: new Array(10_000).fill('x') })).not.toThrow();
    expect((redactValue(a) as Record<string, unknown>).self).toBe('[circular]');
  });
});

describe('createLogger()', () => {
  it('writes JSON lines with personal data redacted in fields, messages and errors', () => {
    const { logger, lines, text } = captureLogger();
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudC03In0.c2lnbmF0dXJl';
    logger.info({ sip: INVITE, pushToken: 'fcm-token-42', jwt }, 'INVITE from +14155550100');
    logger.child({ component: 'push' }).warn({ device: { token: 'apns-token-77' } }, 'push failed');
    logger.error({ err: new Error(`bad JWT ${jwt}`) }, 'auth failed');
    const all = text();
    for (const secret of ['4930123456', '14155550100', 'fcm-token-42', 'apns-token-77', jwt, '6629fae4', 'Alice']) {
      expect(all).not.toContain(secret);
    }
    const [first, second, third] = lines();
    expect(first).toMatchObject({ level: 'info', pushToken: '[redacted]', jwt: '[redacted]' });
    expect(first?.msg).toMatch(/^INVITE from <num:[0-9a-f]{8}>$/);
    expect(second).toMatchObject({ component: 'push', device: { token: '[redacted]' } });
    expect(third?.err).toMatchObject({ type: 'Error', message: 'bad JWT [jwt]' });
  });
});
