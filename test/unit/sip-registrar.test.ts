/**
 * The registrar's pure parts: digest authentication (RFC 7616 MD5 and SHA-256, nonce expiry and
 * replays), REGISTER Contact parsing (RFC 3261 §10.2.1, RFC 5626 instance/reg-id) and RFC 8599
 * push parameters (and Linphone's legacy form), and the sipDevices configuration checks.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { bindingId } from '../../src/sip/registrar/registrar.js';
import { parsePushParams, parseRegisterContacts, RegistrarError } from '../../src/sip/registrar/contact.js';
import { digestHa1, DigestAuthenticator, type DigestAlgorithm } from '../../src/sip/registrar/digest.js';
import { parseDigest } from '../../src/sip/trunks.js';
import { redactValue } from '../../src/log/redact.js';
import { testConfig } from '../helpers/env.js';

const REALM = 'ringbridge.test';

/** A client's Authorization value answering `challenge` (what a UA computes, written out here from RFC 7616 §3.4.1). */
function answer(challenge: string, o: { user: string; password: string; method?: string; uri?: string; nc?: number; qop?: boolean; realm?: string }): string {
  const c = parseDigest(challenge)!;
  const alg = (c.algorithm ?? 'MD5') as DigestAlgorithm;
  const h = (s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s).digest('hex');
  const realm = o.realm ?? c.realm!;
  const uri = o.uri ?? 'sip:ringbridge.test';
  const ha1 = h(`${o.user}:${realm}:${o.password}`);
  const ha2 = h(`${o.method ?? 'REGISTER'}:${uri}`);
  const nc = (o.nc ?? 1).toString(16).padStart(8, '0');
  const cnonce = 'c0ffee42';
  if (o.qop === false) {
    return `Digest username="${o.user}", realm="${realm}", nonce="${c.nonce}", uri="${uri}", algorithm=${alg}, response="${h(`${ha1}:${c.nonce}:${ha2}`)}"`;
  }

  return `Digest username="${o.user}", realm="${realm}", nonce="${c.nonce}", uri="${uri}", algorithm=${alg}, qop=auth, nc=${nc}, cnonce="${cnonce}", response="${h(`${ha1}:${c.nonce}:${nc}:${cnonce}:auth:${ha2}`)}"`;
}

function authenticator(opts: { now?: () => number; maxTrackedNonces?: number; algorithms?: DigestAlgorithm[] } = {}) {
  const users: Record<string, { ha1Md5: string; ha1Sha256: string }> = {
    alice: { ha1Md5: digestHa1('MD5', 'alice', REALM, 's3cret'), ha1Sha256: digestHa1('SHA-256', 'alice', REALM, 's3cret') },
    // bob has only a SHA-256 HA1: MD5 is refused for him
    bob: { ha1Md5: '', ha1Sha256: digestHa1('SHA-256', 'bob', REALM, 'hunter2') },
  };

  return new DigestAuthenticator({ realm: REALM, algorithms: opts.algorithms ?? ['SHA-256', 'MD5'], nonceTtlMs: 60_000, lookup: (u) => users[u], ...opts });
}

describe('DigestAuthenticator', () => {
  it('offers one challenge per algorithm, strongest first, each with its own nonce and qop="auth"', () => {
    const ch = authenticator().challenges();
    expect(ch).toHaveLength(2);
    const [sha, md5] = ch.map((c) => parseDigest(c)!);
    expect(sha).toMatchObject({ realm: REALM, algorithm: 'SHA-256', qop: 'auth' });
    expect(md5).toMatchObject({ realm: REALM, algorithm: 'MD5', qop: 'auth' });
    expect(sha!.nonce).not.toBe(md5!.nonce);
    expect(authenticator().challenges(true)[0]).toContain('stale=true');
  });

  for (const alg of ['SHA-256', 'MD5'] as const) {
    it(`accepts a correct ${alg} response with qop=auth and refuses a wrong password with 403`, () => {
      const auth = authenticator();
      const ch = auth.challenges().find((c) => c.includes(`algorithm=${alg}`))!;
      expect(auth.verify('REGISTER', answer(ch, { user: 'alice', password: 's3cret' }))).toEqual({ ok: true, username: 'alice', algorithm: alg });
      expect(auth.verify('REGISTER', answer(ch, { user: 'alice', password: 'wrong', nc: 2 }))).toMatchObject({ ok: false, status: 403 });
    });
  }

  it('refuses a replayed nonce count (401 stale) and accepts the next one', () => {
    const auth = authenticator();
    const ch = auth.challenges()[0]!;
    const first = answer(ch, { user: 'alice', password: 's3cret', nc: 1 });
    expect(auth.verify('REGISTER', first).ok).toBe(true);
    expect(auth.verify('REGISTER', first)).toMatchObject({ ok: false, status: 401, stale: true });
    expect(auth.verify('REGISTER', answer(ch, { user: 'alice', password: 's3cret', nc: 2 })).ok).toBe(true);
    expect(auth.verify('REGISTER', answer(ch, { user: 'alice', password: 's3cret', nc: 2 }))).toMatchObject({ ok: false, status: 401, stale: true });
  });

  it('accepts a response without qop (RFC 2069 style) only once per nonce', () => {
    const auth = authenticator();
    const ch = auth.challenges()[1]!;
    const a = answer(ch, { user: 'alice', password: 's3cret', qop: false });
    expect(auth.verify('REGISTER', a).ok).toBe(true);
    expect(auth.verify('REGISTER', a)).toMatchObject({ ok: false, status: 401, stale: true });
  });

  it('answers an expired nonce, and a forged or another node\'s nonce, with 401 stale=true (a fresh challenge, no user prompt)', () => {
    let now = 1_000_000;
    const auth = authenticator({ now: () => now });
    const ch = auth.challenges()[0]!;
    now += 60_001;
    expect(auth.verify('REGISTER', answer(ch, { user: 'alice', password: 's3cret' }))).toMatchObject({ ok: false, status: 401, stale: true });
    const forged = ch.replace(/nonce="([^"]+)"/, (_m, n: string) => `nonce="${n.slice(0, -1)}${n.endsWith('A') ? 'B' : 'A'}"`);
    expect(auth.verify('REGISTER', answer(forged, { user: 'alice', password: 's3cret' }))).toMatchObject({ ok: false, status: 401, stale: true, reason: 'a nonce this node did not issue' });
    const other = authenticator().challenges()[0]!;
    expect(auth.verify('REGISTER', answer(other, { user: 'alice', password: 's3cret' }))).toMatchObject({ ok: false, status: 401, stale: true, reason: 'a nonce this node did not issue' });
    // a wrong password on another node's nonce is not found out: it is challenged, not refused
    expect(auth.verify('REGISTER', answer(other, { user: 'alice', password: 'wrong' }))).toMatchObject({ ok: false, status: 401 });
  });

  it('refuses unknown users, other realms, algorithms the user has no HA1 for, and the wrong method', () => {
    const auth = authenticator();
    const [sha, md5] = auth.challenges();
    expect(auth.verify('REGISTER', answer(sha!, { user: 'mallory', password: 's3cret' }))).toMatchObject({ ok: false, status: 403 });
    expect(auth.verify('REGISTER', answer(sha!, { user: 'alice', password: 's3cret', realm: 'other.example' }))).toMatchObject({ ok: false, status: 401 });
    expect(auth.verify('REGISTER', answer(md5!, { user: 'bob', password: 'hunter2' }))).toMatchObject({ ok: false, status: 403 });
    expect(auth.verify('REGISTER', answer(sha!, { user: 'bob', password: 'hunter2' })).ok).toBe(true);
    const inviteAuth = authenticator();
    expect(inviteAuth.verify('REGISTER', answer(inviteAuth.challenges()[0]!, { user: 'alice', password: 's3cret', method: 'INVITE' }))).toMatchObject({ ok: false, status: 403 });
  });

  it('does not accept an algorithm it did not offer, and reports missing or malformed credentials', () => {
    const md5only = authenticator({ algorithms: ['MD5'] });
    const shaChallenge = authenticator().challenges()[0]!.replace(/nonce="[^"]+"/, `nonce="${parseDigest(md5only.challenges()[0]!)!.nonce}"`);
    expect(md5only.verify('REGISTER', answer(shaChallenge, { user: 'alice', password: 's3cret' }))).toMatchObject({ ok: false, status: 401 });
    expect(md5only.verify('REGISTER', undefined)).toMatchObject({ ok: false, status: 401, stale: false });
    expect(md5only.verify('REGISTER', 'Basic YWxpY2U6czNjcmV0')).toMatchObject({ ok: false, status: 400 });
    expect(md5only.verify('REGISTER', 'Digest username="alice"')).toMatchObject({ ok: false, status: 400 });
    const ch = md5only.challenges()[0]!;
    expect(md5only.verify('REGISTER', answer(ch, { user: 'alice', password: 's3cret' }).replace('nc=00000001', 'nc=1'))).toMatchObject({ ok: false, status: 400 });
  });

  it('treats nonces it had to forget (a full table) as stale rather than accepting replays', () => {
    let now = 5_000_000;
    const auth = authenticator({ now: () => now, maxTrackedNonces: 2 });
    const chs = [0, 1, 2].map(() => {
      now += 1;

      return auth.challenges()[0]!;
    });
    const answers = chs.map((c) => answer(c, { user: 'alice', password: 's3cret' }));
    for (const a of answers) {
      expect(auth.verify('REGISTER', a).ok).toBe(true);
    }
    // the first nonce was evicted: its replay is stale, not accepted
    expect(auth.verify('REGISTER', answers[0])).toMatchObject({ ok: false, status: 401, stale: true });
    expect(auth.verify('REGISTER', answers[2])).toMatchObject({ ok: false, status: 401, stale: true });
    // a fresh nonce still works
    now += 1;
    expect(auth.verify('REGISTER', answer(auth.challenges()[0]!, { user: 'alice', password: 's3cret' })).ok).toBe(true);
  });

  it('computes HA1 as H(username:realm:password)', () => {
    expect(digestHa1('MD5', 'alice', REALM, 's3cret')).toBe(createHash('md5').update(`alice:${REALM}:s3cret`).digest('hex'));
    expect(digestHa1('SHA-256', 'alice', REALM, 's3cret')).toHaveLength(64);
  });
});

describe('parseRegisterContacts()', () => {
  it('parses several contacts (one header or several joined) with expires, q, +sip.instance and reg-id', () => {
    const r = parseRegisterContacts('"Al" <sip:alice@192.0.2.7:5062;transport=tcp;ob>;expires=600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1, <sip:alice@198.51.100.1>;q=0.5');
    expect(r.star).toBe(false);
    const contacts = r.star ? [] : r.contacts;
    expect(contacts).toHaveLength(2);
    expect(contacts[0]).toMatchObject({ uri: 'sip:alice@192.0.2.7:5062;transport=tcp;ob', expires: 600, instance: '<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>', regId: 1 });
    expect(contacts[0]!.uriParams).toHaveProperty('ob');
    expect(contacts[1]).toMatchObject({ uri: 'sip:alice@198.51.100.1', q: 0.5 });
    expect(contacts[1]!.expires).toBeUndefined();
  });

  it('reads "*" and an empty header (a query)', () => {
    expect(parseRegisterContacts('*')).toEqual({ star: true });
    expect(parseRegisterContacts(' * ')).toEqual({ star: true });
    expect(parseRegisterContacts(undefined)).toEqual({ star: false, contacts: [] });
  });

  it('refuses malformed contacts and parameters with 400', () => {
    for (const bad of ['*, <sip:a@b>', '<sip:a@b', 'tel:+4930123456', '<http://x.example>', '<sip:a@b>;expires=soon', '<sip:a@b>;expires', '<sip:a@b>;q=2', '<sip:a@b>;reg-id=0', '<sip:a@b>;+sip.instance=abc', '<sip:a@b>,']) {
      let err: unknown;
      try {
        parseRegisterContacts(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(RegistrarError);
      expect((err as RegistrarError).status, bad).toBe(400);
    }
  });

  it('identifies bindings by instance and reg-id, by instance, else by the Contact URI', () => {
    const r = parseRegisterContacts('<sip:a@192.0.2.7:5062;transport=TCP>;+sip.instance="<urn:uuid:1>";reg-id=2, <sip:a@192.0.2.7:5062;transport=TCP>, <sip:a@HOST.example>');
    const [a, b, c] = r.star ? [] : r.contacts;
    expect(bindingId(a!, true)).toBe('<urn:uuid:1>#2');
    expect(bindingId(a!, false)).toBe('<urn:uuid:1>');
    expect(bindingId(b!, false)).toBe('sip:a@192.0.2.7:5062;tcp');
    // host names compare case-insensitively (RFC 3261 §19.1.4)
    expect(bindingId(c!, false)).toBe('sip:a@host.example:;');
  });
});

describe('parsePushParams()', () => {
  const voip = 'a'.repeat(64);
  const remote = 'b'.repeat(64);
  const fcmToken = 'dGVzdC1mY20tdG9rZW4:APA91bH-xyz_123';
  const params = (uri: string) => {
    const r = parseRegisterContacts(`<${uri}>`);

    return r.star ? {} : r.contacts[0]!.uriParams;
  };

  it('reads RFC 8599 APNs parameters with Linphone\'s voip&remote tokens', () => {
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-provider=apns;pn-prid=${voip}:voip&${remote}:remote;pn-param=ABCDE12345.org.example.phone.voip&remote`))).toEqual({
      platform: 'ios',
      channel: 'apns',
      token: voip,
      alertToken: remote,
      topic: 'org.example.phone.voip',
      sandbox: false,
    });
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-provider=apns.dev;pn-prid=${voip};pn-param=ABCDE12345.org.example.phone.voip`))).toEqual({ platform: 'ios', channel: 'apns', token: voip, topic: 'org.example.phone.voip', sandbox: true });
    // remote (alert) notifications only: the topic is the bare bundle id
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-provider=apns;pn-prid=${remote}:remote;pn-param=ABCDE12345.org.example.phone.remote`))).toEqual({ platform: 'ios', channel: 'apns', token: remote, topic: 'org.example.phone', sandbox: false });
  });

  it('reads RFC 8599 FCM parameters (pn-param: the project)', () => {
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-provider=fcm;pn-prid=${fcmToken};pn-param=example-project`))).toEqual({ platform: 'android', channel: 'fcm', token: fcmToken, topic: 'example-project' });
  });

  it("reads Linphone's legacy pn-type / pn-tok / app-id form", () => {
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-type=apple;pn-tok=${voip};app-id=org.example.phone.voip.dev`))).toEqual({ platform: 'ios', channel: 'apns', token: voip, topic: 'org.example.phone.voip', sandbox: true });
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-type=firebase;pn-tok=${fcmToken};app-id=929724111839`))).toEqual({ platform: 'android', channel: 'fcm', token: fcmToken, topic: '929724111839' });
    expect(parsePushParams(params(`sip:alice@192.0.2.7;pn-type=google;pn-tok=${fcmToken}`))).toEqual({ platform: 'android', channel: 'fcm', token: fcmToken });
  });

  it('gives nothing without push parameters, 555 for providers it cannot serve, 400 for unusable values', () => {
    expect(parsePushParams(params('sip:alice@192.0.2.7;transport=tcp'))).toBeUndefined();
    const status = (uri: string) => {
      try {
        parsePushParams(params(uri));
      } catch (e) {
        return (e as RegistrarError).status;
      }

      return 0;
    };
    expect(status(`sip:alice@192.0.2.7;pn-provider=webpush;pn-prid=${voip}`)).toBe(555);
    expect(status(`sip:alice@192.0.2.7;pn-type=wp;pn-tok=${voip}`)).toBe(555);
    expect(status('sip:alice@192.0.2.7;pn-provider=apns')).toBe(400);
    expect(status('sip:alice@192.0.2.7;pn-provider=fcm;pn-prid=short')).toBe(400);
    expect(status(`sip:alice@192.0.2.7;pn-provider=apns;pn-prid=${voip};pn-param=nonsense`)).toBe(400);
    expect(status(`sip:alice@192.0.2.7;pn-provider=apns;pn-prid=${remote}:remote;pn-param=ABCDE12345.org.example.phone.voip`)).toBe(400);
    expect(status(`sip:alice@192.0.2.7;pn-provider=fcm;pn-prid=%zz${fcmToken}`)).toBe(400);
  });
});

describe('sipDevices configuration', () => {
  const cred = { agentId: 'agent-1', username: 'alice', ha1Md5: digestHa1('MD5', 'alice', REALM, 'x'), ha1Sha256: '' };

  it('accepts HA1 credentials and lower-cases them', () => {
    const cfg = testConfig({ sipDevices: { enabled: true, realm: REALM, credentials: [{ ...cred, ha1Md5: cred.ha1Md5.toUpperCase() }] } });
    expect(cfg.sipDevices.credentials[0]!.ha1Md5).toBe(cred.ha1Md5);
  });

  it('names the key of a missing realm, a bad HA1, a duplicate username and inconsistent expiries', () => {
    expect(() => testConfig({ sipDevices: { enabled: true, realm: '' } })).toThrow(/sipDevices\.realm/);
    expect(() => testConfig({ sipDevices: { realm: REALM, credentials: [{ ...cred, ha1Md5: 'abc' }] } })).toThrow(/sipDevices\.credentials\.0\.ha1Md5/);
    expect(() => testConfig({ sipDevices: { realm: REALM, credentials: [{ ...cred, ha1Md5: '' }] } })).toThrow(/sipDevices\.credentials\.0\.ha1Sha256/);
    expect(() => testConfig({ sipDevices: { realm: REALM, credentials: [cred, { ...cred, agentId: 'agent-2', username: 'ALICE' }] } })).toThrow(/sipDevices\.credentials\.1\.username/);
    expect(() => testConfig({ sipDevices: { realm: REALM, algorithms: ['SHA-256'], credentials: [cred] } })).toThrow(/sipDevices\.credentials\.0\.ha1Md5/);
    expect(() => testConfig({ sipDevices: { minExpiresS: 600, defaultExpiresS: 300 } })).toThrow(/sipDevices\.defaultExpiresS/);
    expect(() => testConfig({ sipDevices: { credentials: [{ ...cred, password: 'plain' }] } })).toThrow(/password/);
  });
});

describe('HA1 values stay out of logs and config output', () => {
  it('redacts ha1Md5 and ha1Sha256 fields in log records, and shows them as [set] in a config error', () => {
    const ha1 = digestHa1('SHA-256', 'alice', REALM, 's3cret');
    expect(JSON.stringify(redactValue({ sipDevices: { realm: REALM, credentials: [{ username: 'alice', ha1Sha256: ha1 }] }, ha1Md5: ha1.slice(0, 32) }))).not.toContain(ha1.slice(0, 32));
    expect(JSON.stringify(redactValue({ cred: { ha1Sha256: ha1 } }))).not.toContain(ha1);
    let message = '';
    try {
      testConfig({ sipDevices: { realm: REALM, credentials: [{ agentId: 'a', username: 'alice', ha1Md5: 'not-hex-but-secret', ha1Sha256: '' }] } });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/sipDevices\.credentials\.0\.ha1Md5 = \[set\]/);
    expect(message).not.toContain('not-hex-but-secret');
  });
});
