import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, defaultConfigDir, loadConfig } from '../../src/config/load.js';

function tmpConfigDir(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rb-config-'));
  fs.copyFileSync(path.join(defaultConfigDir(), 'default.yaml'), path.join(dir, 'default.yaml'));
  for (const [name, text] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), text);
  }

  return dir;
}

function problemsOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);

    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig()', () => {
  it('loads the embedded defaults with the documented ports', () => {
    const { config, files } = loadConfig({ env: {} });
    expect(files).toHaveLength(1);
    expect(config.sip.udp.port).toBe(5060);
    expect(config.sip.tcp.port).toBe(5060);
    expect(config.sip.tls.port).toBe(5061);
    expect(config.sip.control.port).toBe(9022);
    expect(config.http.port).toBe(8080);
    expect(config.sip.engine).toBe('embedded');
    expect(config.redis.url).toBe('redis://127.0.0.1:6379');
  });

  it('layers the test profile over the defaults', () => {
    const { config } = loadConfig({ env: { RINGBRIDGE_PROFILE: 'test' } });
    expect(config.http.port).toBe(0);
    expect(config.media.workers).toBe(1);
    // untouched keys keep their defaults
    expect(config.sip.timers.t1Ms).toBe(500);
  });

  it('validates the production example as a whole', () => {
    const { config } = loadConfig({ env: {}, file: path.join(defaultConfigDir(), 'production.example.yaml') });
    expect(config.redis.autoStart).toBe(false);
    expect(config.sip.tls.enabled).toBe(true);
  });

  it('lets environment variables override files, typed by the schema', () => {
    const { config } = loadConfig({
      env: {
        RINGBRIDGE_HTTP__PORT: '9090',
        RINGBRIDGE_REDIS__KEY_PREFIX: 'prod:',
        RINGBRIDGE_LOG__PRETTY: 'true',
        RINGBRIDGE_SIP__LISTEN_ADDRESSES: '10.0.0.1, ::1',
        RINGBRIDGE_SIP__CONTROL__SECRET: '12345',
        RINGBRIDGE_CACHE_DIR: '/not/a/config/key',
      },
    });
    expect(config.http.port).toBe(9090);
    expect(config.redis.keyPrefix).toBe('prod:');
    expect(config.log.pretty).toBe(true);
    expect(config.sip.listenAddresses).toEqual(['10.0.0.1', '::1']);
    // a string key keeps a numeric-looking value as text
    expect(config.sip.control.secret).toBe('12345');
  });

  it('rejects a wrong value naming the key, the value, its source and what was expected', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_HTTP__PORT: 'eighty' } }));
    expect(err.problems).toEqual([
      { key: 'http.port', value: 'eighty', source: 'environment variable RINGBRIDGE_HTTP__PORT', expected: 'a value of type number' },
    ]);
    expect(err.message).toContain('http.port = "eighty" (environment variable RINGBRIDGE_HTTP__PORT): expected a value of type number');
  });

  it('rejects out-of-range and enum values with the limits', () => {
    const dir = tmpConfigDir({ 'bad.yaml': 'http:\n  port: 70000\nlog:\n  level: loud\n' });
    const err = problemsOf(() => loadConfig({ configDir: dir, env: {}, profile: 'bad' }));
    expect(err.message).toContain('http.port = 70000 (config/bad.yaml): expected at most 65535');
    expect(err.message).toContain('log.level = "loud" (config/bad.yaml): expected one of "fatal", "error", "warn", "info", "debug", "trace", "silent"');
  });

  it('rejects a missing key', () => {
    const dir = tmpConfigDir({});
    const text = fs.readFileSync(path.join(dir, 'default.yaml'), 'utf8').replace(/^ {2}connectTimeoutMs: 2000\n/m, '');
    fs.writeFileSync(path.join(dir, 'default.yaml'), text);
    const err = problemsOf(() => loadConfig({ configDir: dir, env: {} }));
    expect(err.problems).toHaveLength(1);
    expect(err.message).toContain('redis.connectTimeoutMs is missing');
  });

  it('rejects an unknown key and lists the known ones', () => {
    const dir = tmpConfigDir({ 'typo.yaml': 'redis:\n  uri: redis://x\n' });
    const err = problemsOf(() => loadConfig({ configDir: dir, env: {}, profile: 'typo' }));
    expect(err.problems[0]?.key).toBe('redis.uri');
    expect(err.message).toContain('known keys here: url, keyPrefix, autoStart, connectTimeoutMs');
  });

  it('rejects an unknown environment key', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_HTTP__PROT: '1' } }));
    expect(err.problems[0]).toMatchObject({ key: 'http.prot', source: 'environment variable RINGBRIDGE_HTTP__PROT' });
  });

  it('takes sip.trustedProxies as IPs or CIDR blocks (default none) and rejects anything else', () => {
    expect(loadConfig({ env: {} }).config.sip.trustedProxies).toEqual([]);
    const { config } = loadConfig({ env: { RINGBRIDGE_SIP__TRUSTED_PROXIES: '10.0.0.10, 10.1.0.0/16, 2001:db8::/64' } });
    expect(config.sip.trustedProxies).toEqual(['10.0.0.10', '10.1.0.0/16', '2001:db8::/64']);
    for (const bad of ['10.0.0.0/33', '2001:db8::/129', '10', '10.0.0.256', 'kamailio.internal']) {
      const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_SIP__TRUSTED_PROXIES: bad } }));
      expect(err.problems.map((p) => p.key), bad).toEqual(['sip.trustedProxies.0']);
    }
  });

  it('rejects contradictory settings naming both keys', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_MEDIA__RTC_MIN_PORT: '5000', RINGBRIDGE_MEDIA__RTC_MAX_PORT: '4000' } }));
    expect(err.message).toContain('media.rtcMaxPort = 4000');
    expect(err.message).toContain('above media.rtcMinPort (5000)');
    const ext = problemsOf(() => loadConfig({ env: { RINGBRIDGE_SIP__ENGINE: 'external' } }));
    expect(ext.message).toContain('sip.control.secret');
  });

  it('takes a group queue with its defaults and refuses a fallback to an unknown group or a bad status, naming the key', () => {
    const groups = (queue: Record<string, unknown>) => ({ routing: { dids: [{ number: '*', group: 'a' }], groups: [{ id: 'a', members: ['x'], strategy: 'ring-all', queue }], defaultTrunk: '' } });
    const { config } = loadConfig({ env: {}, overrides: groups({}) });
    expect(config.routing.groups[0]!.queue).toEqual({ enabled: true, maxWaitS: 300, maxCallers: 50, music: '', fallback: { hangup: { status: 480 } } });
    const unknown = problemsOf(() => loadConfig({ env: {}, overrides: groups({ fallback: { group: 'nope' } }) }));
    expect(unknown.message).toContain('routing.groups.0.queue.fallback.group');
    const self = problemsOf(() => loadConfig({ env: {}, overrides: groups({ fallback: { group: 'a' } }) }));
    expect(self.message).toContain('routing.groups.0.queue.fallback.group');
    const status = problemsOf(() => loadConfig({ env: {}, overrides: groups({ fallback: { hangup: { status: 200 } } }) }));
    expect(status.message).toContain('routing.groups.0.queue.fallback');
    const wait = problemsOf(() => loadConfig({ env: {}, overrides: groups({ maxWaitS: 0 }) }));
    expect(wait.message).toContain('routing.groups.0.queue.maxWaitS');
  });

  it('refuses a trunk that requires SRTP with a plain outbound uri (SDES keys only over TLS)', () => {
    const trunk = (uri: string) => ({
      id: 't1',
      inbound: { allow: [], auth: { username: '', password: '', realm: 'r' } },
      outbound: { uri, proxy: '', auth: { username: '', password: '' }, callerId: '' },
      codecs: ['PCMA'],
      media: { latching: false, srtp: 'required' },
    });
    const err = problemsOf(() => loadConfig({ env: {}, overrides: { trunks: [trunk('sip:carrier.example.net')] } }));
    expect(err.message).toContain('trunks.0.outbound.uri');
    expect(err.message).toContain('media.srtp is "required"');
    expect(() => loadConfig({ env: {}, overrides: { trunks: [trunk('sip:carrier.example.net;transport=tls')] } })).not.toThrow();
    expect(() => loadConfig({ env: {}, overrides: { trunks: [trunk('sips:carrier.example.net')] } })).not.toThrow();
  });

  it('reports broken YAML with the file and line', () => {
    const dir = tmpConfigDir({ 'broken.yaml': 'http:\n  port: [1\n' });
    const err = problemsOf(() => loadConfig({ configDir: dir, env: {}, profile: 'broken' }));
    expect(err.message).toMatch(/config\/broken\.yaml line \d+/);
  });

  it('rejects an unknown profile listing the available ones', () => {
    const err = problemsOf(() => loadConfig({ env: {}, profile: 'staging' }));
    expect(err.message).toContain('"staging"');
    expect(err.message).toContain('test');
  });

  it('does not modify the overrides it is given', () => {
    const overrides = Object.freeze({ http: Object.freeze({ port: 1234 }) });
    const { config } = loadConfig({ env: {}, overrides });
    expect(config.http.port).toBe(1234);
    expect(overrides).toEqual({ http: { port: 1234 } });
  });

  it('suggests the right spelling for a mistyped environment key', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_REDIS__KEYPREFIX: 'x:' } }));
    expect(err.message).toContain('did you mean RINGBRIDGE_REDIS__KEY_PREFIX?');
  });

  it('refuses a variable that names a section instead of a key', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_HTTP: '9090' } }));
    expect(err.message).toContain('RINGBRIDGE_HTTP__<KEY>');
  });

  it('refuses listen addresses that are not IP literals', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_SIP__LISTEN_ADDRESSES: 'not-an-ip' } }));
    expect(err.message).toContain('sip.listenAddresses.0 = "not-an-ip"');
    expect(err.message).toContain('an IPv4 or IPv6 address');
  });

  it('refuses two listeners on one TCP port, naming both keys', () => {
    const err = problemsOf(() => loadConfig({ env: { RINGBRIDGE_SIP__TCP__PORT: '8080' } }));
    expect(err.message).toContain('sip.tcp.port = 8080');
    expect(err.message).toContain('a TCP port other than http.port (8080)');
  });

  it('says which option named a missing config file', () => {
    const err = problemsOf(() => loadConfig({ env: {}, file: '/nonexistent/ringbridge.yaml' }));
    expect(err.message).toContain('(--config /nonexistent/ringbridge.yaml): expected an existing file');
    const viaEnv = problemsOf(() => loadConfig({ env: { RINGBRIDGE_CONFIG: '/nonexistent/x.yaml' } }));
    expect(viaEnv.message).toContain('RINGBRIDGE_CONFIG /nonexistent/x.yaml');
  });

  it('names the file of an unknown top-level section', () => {
    const dir = tmpConfigDir({ 'caps.yaml': 'Http:\n  port: 1\n' });
    const err = problemsOf(() => loadConfig({ configDir: dir, env: {}, profile: 'caps' }));
    expect(err.message).toContain('Http = {"port":1} (config/caps.yaml)');
  });
});
