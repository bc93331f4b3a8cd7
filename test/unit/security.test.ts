/**
 * The pure parts of the defences (src/security): the SIP screen's scanner and unknown-source
 * decisions, the dialling policy, and the Retry-After arithmetic of the window counters.
 */
import { describe, expect, it } from 'vitest';
import { DialPolicy, type DialPolicyConfig, normaliseDialled } from '../../src/security/dial-policy.js';
import { retryAfterSeconds } from '../../src/security/rate-limit.js';
import { SipScreen, type SipScreenOptions } from '../../src/security/sip-screen.js';
import { loadConfig } from '../../src/config/load.js';
import { screenOptions } from '../../src/security/guard.js';

const screenDefaults: SipScreenOptions = {
  scannerUserAgents: ['friendly-scanner', 'sipvicious', 'VaxSIPUserAgent'],
  scannerAction: 'drop',
  unknownSourceAction: '403',
  knownSources: ['198.51.100.0/24', '2001:db8::7', '10.0.0.10'],
  digestTrunks: false,
};
const headers =
  (h: Record<string, string>) =>
  (name: string): string | undefined =>
    h[name];

describe('SipScreen', () => {
  it.each([
    ['friendly-scanner', true],
    ['Friendly-Scanner/1.0', true],
    ['sipvicious 0.3.4', true],
    ['vaxsipuseragent/3.1', true],
    ['ringbridge-sipp', false],
    ['Linphone/5.2 (belle-sip)', false],
    ['', false],
  ])('isScanner(%j) is %s (case-insensitive substring)', (ua, want) => {
    expect(new SipScreen(screenDefaults).isScanner(ua)).toBe(want);
  });

  it('refuses a scanner by User-Agent or Server with the scanner action, even from a trunk', () => {
    const s = new SipScreen(screenDefaults);
    expect(s.screen('198.51.100.5', headers({ 'user-agent': 'friendly-scanner' }))).toEqual({ pass: false, action: 'drop', reason: 'scanner' });
    expect(s.screen('198.51.100.5', headers({ server: 'sipvicious' }))).toEqual({ pass: false, action: 'drop', reason: 'scanner' });
    expect(new SipScreen({ ...screenDefaults, scannerAction: '403' }).screen('198.51.100.5', headers({ 'user-agent': 'friendly-scanner' }))).toMatchObject({ action: '403' });
  });

  it.each([
    ['198.51.100.200', true],
    ['::ffff:198.51.100.9', true],
    ['[2001:db8::7]', true],
    ['2001:db8::8', false],
    ['10.0.0.10', true],
    ['10.0.0.11', false],
    ['203.0.113.1', false],
    ['not an address', false],
  ])('isKnown(%j) is %s', (addr, want) => {
    expect(new SipScreen(screenDefaults).isKnown(addr)).toBe(want);
  });

  it('refuses unknown sources with their action, but not hand-offs, nor anyone while a trunk admits by digest, nor with allow', () => {
    expect(new SipScreen(screenDefaults).screen('203.0.113.1', headers({}))).toEqual({ pass: false, action: '403', reason: 'unknown_source' });
    expect(new SipScreen({ ...screenDefaults, unknownSourceAction: 'drop' }).screen('203.0.113.1', headers({}))).toMatchObject({ action: 'drop' });
    expect(new SipScreen(screenDefaults).screen('203.0.113.1', headers({ 'x-rb-auth': 'v1 ...' }))).toEqual({ pass: true });
    expect(new SipScreen({ ...screenDefaults, digestTrunks: true }).screen('203.0.113.1', headers({}))).toEqual({ pass: true });
    expect(new SipScreen({ ...screenDefaults, unknownSourceAction: 'allow' }).screen('203.0.113.1', headers({}))).toEqual({ pass: true });
    expect(new SipScreen(screenDefaults).screen('198.51.100.1', headers({ 'user-agent': 'ringbridge-sipp' }))).toEqual({ pass: true });
  });

  it('screenOptions() knows the trunks\' allow-lists and the trusted proxies, and sees digest trunks', () => {
    const { config } = loadConfig({ profile: 'test', env: {}, overrides: { sip: { trustedProxies: ['10.0.0.10'] } } });
    expect(screenOptions(config)).toMatchObject({ scannerAction: 'drop', unknownSourceAction: '403', knownSources: ['127.0.0.0/8', '::1/128', '10.0.0.10'], digestTrunks: false });
    expect(screenOptions(config).scannerUserAgents).toContain('friendly-scanner');
    // agents' SIP devices register from anywhere: with the registrar on, REGISTER (and only
    // REGISTER) passes from unknown sources; INVITE, OPTIONS, MESSAGE... keep the screen
    const withRegistrar = screenOptions({ ...config, sipDevices: { ...config.sipDevices, enabled: true } });
    expect(withRegistrar).toMatchObject({ digestTrunks: false, registrar: true });
    const screen = new SipScreen(withRegistrar);
    expect(screen.screen('203.0.113.1', headers({}), 'REGISTER')).toEqual({ pass: true });
    for (const method of ['INVITE', 'OPTIONS', 'MESSAGE', 'SUBSCRIBE', 'NOTIFY', 'REFER', 'INFO', 'PUBLISH', 'register', '']) {
      expect(screen.screen('203.0.113.1', headers({}), method), method).toEqual({ pass: false, action: '403', reason: 'unknown_source' });
    }
    // a known source still passes every method; a scanner's REGISTER is still a scanner's
    expect(screen.screen('127.0.0.1', headers({}), 'INVITE')).toEqual({ pass: true });
    expect(screen.screen('203.0.113.1', headers({ 'user-agent': 'friendly-scanner' }), 'REGISTER')).toMatchObject({ pass: false, reason: 'scanner' });
    // without the registrar a REGISTER from an unknown source is screened like the rest
    expect(new SipScreen(screenOptions(config)).screen('203.0.113.1', headers({}), 'REGISTER')).toMatchObject({ pass: false, reason: 'unknown_source' });
    // a device's INVITE (From at the registrar's realm) passes to be challenged (407); any other INVITE keeps the screen
    const realm = screenOptions({ ...config, sipDevices: { ...config.sipDevices, enabled: true, realm: 'gw.example.test' } });
    const devScreen = new SipScreen(realm);
    expect(devScreen.screen('203.0.113.1', headers({ from: '"Ivy" <sip:ivy@GW.example.test>;tag=1' }), 'INVITE')).toEqual({ pass: true });
    expect(devScreen.screen('203.0.113.1', headers({ from: '<sip:ivy@gw.example.test.evil.test>;tag=1' }), 'INVITE')).toMatchObject({ pass: false, reason: 'unknown_source' });
    expect(devScreen.screen('203.0.113.1', headers({ from: '<sip:100@203.0.113.9>;tag=1' }), 'INVITE')).toMatchObject({ pass: false, reason: 'unknown_source' });
    expect(devScreen.screen('203.0.113.1', headers({ from: '<sip:ivy@gw.example.test>;tag=1' }), 'OPTIONS')).toMatchObject({ pass: false, reason: 'unknown_source' });
    expect(new SipScreen({ ...realm, registrar: false }).screen('203.0.113.1', headers({ from: '<sip:ivy@gw.example.test>;tag=1' }), 'INVITE')).toMatchObject({ pass: false, reason: 'unknown_source' });
  });
});

const policy = (p: Partial<DialPolicyConfig> = {}) => new DialPolicy({ allowedPrefixes: [], allowedPatterns: [], deniedPrefixes: [], maxDigits: 15, international: true, homeCountryCode: '', ...p });

describe('DialPolicy', () => {
  it('normalises a dialled "00" to "+"', () => {
    expect(normaliseDialled('004930123')).toBe('+4930123');
    expect(normaliseDialled('+4930123')).toBe('+4930123');
    expect(normaliseDialled('030123')).toBe('030123');
  });

  it.each([
    // [number, policy, refusal]
    ['+4930123456', {}, undefined],
    ['+4930123456789012', {}, 'too_long'],
    ['+19005551234', { deniedPrefixes: ['+1900'] }, 'denied_prefix'],
    ['0019005551234', { deniedPrefixes: ['+1900'] }, 'denied_prefix'],
    ['09001234567', { deniedPrefixes: ['0900'] }, 'denied_prefix'],
    ['+4930123456', { allowedPrefixes: ['+49'] }, undefined],
    ['+4420123456', { allowedPrefixes: ['+49'] }, 'not_allowed'],
    ['+4990012345', { allowedPrefixes: ['+49'], deniedPrefixes: ['+49900'] }, 'denied_prefix'],
    ['1234', { allowedPatterns: ['[1-9][0-9]{2,3}'] }, undefined],
    ['12345', { allowedPatterns: ['[1-9][0-9]{2,3}'] }, 'not_allowed'],
    ['+4420123456', { international: false, homeCountryCode: '49' }, 'international'],
    ['004420123456', { international: false, homeCountryCode: '49' }, 'international'],
    ['+4930123456', { international: false, homeCountryCode: '49' }, undefined],
    ['030123456', { international: false, homeCountryCode: '49' }, undefined],
    ['+4930123456', { international: false, homeCountryCode: '' }, 'international'],
  ] as [string, Partial<DialPolicyConfig>, string | undefined][])('check(%j) with %j → %s', (n, p, want) => {
    expect(policy(p).check(n)).toBe(want);
  });
});

describe('window counters', () => {
  it.each([
    [0, 1],
    [1, 1],
    [999, 1],
    [1000, 1],
    [1001, 2],
    [59_999, 60],
  ])('retryAfterSeconds(%i ms) = %i s (whole seconds, at least 1)', (ms, s) => {
    expect(retryAfterSeconds(ms)).toBe(s);
  });
});
