import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { projectRoot } from '../../src/util/paths.js';
import { hasKamailio } from '../helpers/kamailio.js';

const root = projectRoot();
const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');

interface Stage {
  from: string;
  name: string;
  body: string;
}

function stages(): Stage[] {
  const parts = dockerfile.split(/^FROM /m).slice(1);

  return parts.map((p) => {
    const [first, ...rest] = p.split('\n');
    const [from, , name] = first!.trim().split(/\s+/);

    return { from: from!, name: name ?? '', body: rest.join('\n') };
  });
}

function aptPackages(body: string): string[] {
  const m = body.match(/apt-get install -y --no-install-recommends([^&]*)&&/);

  return (m?.[1] ?? '').replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean);
}

describe('docker/compose.yaml', () => {
  const compose = YAML.parse(fs.readFileSync(path.join(root, 'docker', 'compose.yaml'), 'utf8')) as {
    services: Record<
      string,
      {
        image?: string;
        build?: { context: string; dockerfile: string };
        profiles?: string[];
        command?: string[];
        volumes?: string[];
        network_mode?: string;
        stop_grace_period?: string;
        environment?: Record<string, string>;
        healthcheck?: { test: string[] };
      }
    >;
  };

  it('parses as YAML with the gateway (a second node and Kamailio in the cluster profile), Redis, drachtio-server, Prometheus and Grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['drachtio', 'grafana', 'kamailio', 'prometheus', 'redis', 'ringbridge', 'ringbridge-2']);
    expect(compose.services.drachtio?.image).toMatch(/^drachtio\/drachtio-server:/);
    expect(compose.services.redis?.image).toMatch(/^redis:/);
    expect(compose.services.prometheus?.image).toMatch(/^prom\/prometheus:/);
    expect(compose.services.grafana?.image).toMatch(/^grafana\/grafana:/);
  });

  it('builds the gateway from this repository and mounts files that exist', () => {
    const build = compose.services.ringbridge!.build!;
    expect(fs.existsSync(path.join(root, 'docker', build.context, build.dockerfile))).toBe(true);
    for (const svc of Object.values(compose.services)) {
      for (const v of svc.volumes ?? []) {
        const host = v.split(':')[0]!;
        expect(fs.existsSync(path.join(root, 'docker', host)), v).toBe(true);
      }
    }
  });

  it('builds Kamailio from docker/kamailio in the cluster profile, on the host network, with the cfg the tests run', () => {
    const kam = compose.services.kamailio!;
    expect(kam.profiles).toEqual(['cluster']);
    expect(kam.network_mode).toBe('host');
    const file = path.join(root, 'docker', kam.build!.context, kam.build!.dockerfile);
    expect(file).toBe(path.join(root, 'docker', 'kamailio', 'Dockerfile'));
    expect(fs.existsSync(file)).toBe(true);
    expect(Object.keys(kam.environment ?? {})).toEqual(expect.arrayContaining(['SIP_ADDR', 'SIP_PORT', 'NODES']));
  });

  it('runs the second node in the cluster profile on ports of its own, with the shared cluster secret', () => {
    const one = compose.services.ringbridge!;
    const two = compose.services['ringbridge-2']!;
    expect(two.profiles).toEqual(['cluster']);
    expect(two.image).toBe(one.image);
    expect(two.network_mode).toBe('host');
    const env = two.environment!;
    // every key is a real configuration key (RINGBRIDGE_<SECTION>__<KEY>, camelCase as SNAKE_CASE)
    const defaults = YAML.parse(fs.readFileSync(path.join(root, 'config', 'default.yaml'), 'utf8')) as Record<string, unknown>;
    const camel = (k: string) => k.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
    for (const name of [...Object.keys(env), ...Object.keys(one.environment!)]) {
      expect(name.startsWith('RINGBRIDGE_') && name.includes('__'), name).toBe(true);
      let node: unknown = defaults;
      for (const k of name.slice('RINGBRIDGE_'.length).split('__').map(camel)) {
        expect(node !== null && typeof node === 'object' && k in node, `${name}: ${k}`).toBe(true);
        node = (node as Record<string, unknown>)[k];
      }
    }
    // nothing it binds on the host network overlaps the first node's defaults or Kamailio's 5060
    const d = defaults as {
      http: { port: number };
      sip: { udp: { port: number }; tls: { port: number }; control: { port: number } };
      media: { rtcMinPort: number; rtcMaxPort: number; relayMinPort: number; relayMaxPort: number };
    };
    // a compose value, or the default of a `${VAR:-default}` one
    const value = (v: string | undefined) => Number((v ?? '').replace(/^\$\{[A-Z0-9_]+:-([^}]*)\}$/, '$1'));
    const num = (k: string) => value(env[k]);
    expect(num('RINGBRIDGE_HTTP__PORT')).not.toBe(d.http.port);
    expect(num('RINGBRIDGE_SIP__UDP__PORT')).toBe(num('RINGBRIDGE_SIP__TCP__PORT'));
    expect([d.sip.udp.port, d.sip.tls.port, value(compose.services.kamailio!.environment!.SIP_PORT)]).not.toContain(num('RINGBRIDGE_SIP__UDP__PORT'));
    expect(num('RINGBRIDGE_SIP__TLS__PORT')).not.toBe(d.sip.tls.port);
    expect(num('RINGBRIDGE_SIP__CONTROL__PORT')).not.toBe(d.sip.control.port);
    const disjoint = (lo: number, hi: number, lo2: number, hi2: number) => hi < lo2 || hi2 < lo;
    const ranges = [
      [num('RINGBRIDGE_MEDIA__RTC_MIN_PORT'), num('RINGBRIDGE_MEDIA__RTC_MAX_PORT')],
      [num('RINGBRIDGE_MEDIA__RELAY_MIN_PORT'), num('RINGBRIDGE_MEDIA__RELAY_MAX_PORT')],
    ] as const;
    for (const [lo, hi] of ranges) {
      expect(lo).toBeLessThan(hi);
      for (const [lo2, hi2] of [
        [d.media.rtcMinPort, d.media.rtcMaxPort],
        [d.media.relayMinPort, d.media.relayMaxPort],
      ] as const) {
        expect(disjoint(lo, hi, lo2, hi2), `${lo}-${hi} vs ${lo2}-${hi2}`).toBe(true);
      }
    }
    expect(disjoint(...ranges[0], ...ranges[1])).toBe(true);
    expect(env.RINGBRIDGE_NODE__ID).toBeTruthy();
    expect(env.RINGBRIDGE_CLUSTER__SECRET).toBe(one.environment!.RINGBRIDGE_CLUSTER__SECRET);
    // the image's HEALTHCHECK asks port 8080: this node's asks its own
    expect(two.healthcheck?.test.join(' ')).toContain(`127.0.0.1:${env.RINGBRIDGE_HTTP__PORT}/health`);
  });

  it('gives the gateways a stop grace period longer than the drain on SIGTERM (shutdown.drainTimeoutMs)', () => {
    const defaults = YAML.parse(fs.readFileSync(path.join(root, 'config', 'default.yaml'), 'utf8')) as { shutdown: { drainTimeoutMs: number; timeoutMs: number } };
    const ms = (d: string) => {
      const parts = [...d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
      expect(parts.map((p) => p[0]).join(''), `duration ${d}`).toBe(d);

      return parts.reduce((sum, [, n, unit]) => sum + Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h'], 0);
    };
    for (const name of ['ringbridge', 'ringbridge-2']) {
      const grace = compose.services[name]!.stop_grace_period;
      expect(grace, name).toBeDefined();
      expect(ms(grace!), name).toBeGreaterThan(defaults.shutdown.drainTimeoutMs + defaults.shutdown.timeoutMs);
    }
  });

  it('ships a Prometheus scrape config that promtool accepts', () => {
    const r = spawnSync('promtool', ['check', 'config', path.join(root, 'docker', 'prometheus', 'prometheus.yml')], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});

describe('Dockerfile', () => {
  const [build, runtime] = stages();

  it('is multi-stage on a Debian 12 Node 20 base', () => {
    expect(stages()).toHaveLength(2);
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-bookworm(-slim)?$/m);
    expect(build!.from).toBe('${NODE_IMAGE}');
    expect(runtime!.from).toBe('${NODE_IMAGE}');
  });

  it('builds the worker with the same recipe and packages as npm run setup', async () => {
    const { BUILD_REQUIREMENTS } = (await import(path.join(root, 'src', 'setup', 'mediasoup-worker.mjs'))) as { BUILD_REQUIREMENTS: { deb: string }[] };
    expect(aptPackages(build!.body).sort()).toEqual([...new Set(BUILD_REQUIREMENTS.map((r) => r.deb))].sort());
    expect(build!.body).toContain('node src/setup/mediasoup-worker.mjs');
  });

  it('keeps only runtime libraries and a non-root user in the final stage', async () => {
    const { RUNTIME_PACKAGES } = (await import(path.join(root, 'src', 'setup', 'mediasoup-worker.mjs'))) as { RUNTIME_PACKAGES: Record<string, string> };
    const pkgs = aptPackages(runtime!.body);
    expect(pkgs.sort()).toEqual([...new Set(Object.values(RUNTIME_PACKAGES))].sort());
    expect(pkgs.some((p) => p.endsWith('-dev') || p === 'g++' || p === 'meson')).toBe(false);
    const user = runtime!.body.match(/^USER (\S+)$/m)?.[1];
    expect(user).toBeDefined();
    expect(user).not.toBe('root');
    expect(runtime!.body).toMatch(/MEDIASOUP_WORKER_BIN=\/usr\/local\/bin\/mediasoup-worker/);
    expect(runtime!.body).toMatch(/^ENTRYPOINT \["node", "dist\/src\/main\.js"\]$/m);
  });
});

describe('docker/kamailio', () => {
  const dir = path.join(root, 'docker', 'kamailio');
  const kamDockerfile = fs.readFileSync(path.join(dir, 'Dockerfile'), 'utf8');
  const entrypoint = path.join(dir, 'entrypoint.sh');

  it('installs Debian 12\'s kamailio package, copies the cfg and runs the entrypoint unprivileged', () => {
    expect(kamDockerfile).toMatch(/^FROM debian:bookworm-slim$/m);
    expect(aptPackages(kamDockerfile)).toEqual(['kamailio']);
    expect(kamDockerfile).toMatch(/^COPY kamailio\.cfg \/etc\/ringbridge\/kamailio\.cfg$/m);
    expect(kamDockerfile).toMatch(/^COPY --chmod=0755 entrypoint\.sh \/usr\/local\/bin\/ringbridge-kamailio$/m);
    expect(kamDockerfile).toMatch(/^ENTRYPOINT \["\/usr\/local\/bin\/ringbridge-kamailio"\]$/m);
    const user = kamDockerfile.match(/^USER (\S+)$/m)?.[1];
    expect(user).toBeDefined();
    expect(user).not.toBe('root');
    for (const f of ['kamailio.cfg', 'entrypoint.sh', 'README.md']) {
      expect(fs.existsSync(path.join(dir, f)), f).toBe(true);
    }
  });

  it('has an entrypoint that is valid sh, runs kamailio in the foreground and refuses to start without NODES or SIP_ADDR', () => {
    const text = fs.readFileSync(entrypoint, 'utf8');
    expect(text.startsWith('#!/bin/sh\n')).toBe(true);
    expect(spawnSync('sh', ['-n', entrypoint]).status).toBe(0);
    expect(text).toMatch(/-DD -E/);
    expect(text).toContain('/etc/ringbridge/dispatcher.list');
    const env = { PATH: process.env.PATH, KAMAILIO_CFG: path.join(dir, 'kamailio.cfg'), DISPATCHER_LIST: '/nonexistent/dispatcher.list' };
    const noNodes = spawnSync('sh', [entrypoint, 'check'], { env: { ...env, SIP_ADDR: '127.0.0.1' }, encoding: 'utf8' });
    expect(noNodes.status).toBe(64);
    expect(noNodes.stderr).toContain('NODES is not set');
    const noAddr = spawnSync('sh', [entrypoint, 'check'], { env: { ...env, NODES: 'sip:10.0.0.11:5060' }, encoding: 'utf8' });
    expect(noAddr.status).toBe(64);
    expect(noAddr.stderr).toContain('SIP_ADDR is not set');
    const badNode = spawnSync('sh', [entrypoint, 'check'], { env: { ...env, SIP_ADDR: '127.0.0.1', NODES: '10.0.0.11:5060' }, encoding: 'utf8' });
    expect(badNode.status).toBe(64);
    expect(badNode.stderr).toContain('not a sip: URI');
  });

  it.skipIf(!hasKamailio())('writes the dispatcher list from NODES, and kamailio accepts the cfg with the defines from the environment', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-kamailio-entrypoint-'));
    try {
      const list = path.join(tmp, 'dispatcher.list');
      const r = spawnSync('sh', [entrypoint, 'check'], {
        env: {
          PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/local/sbin`,
          KAMAILIO_CFG: path.join(dir, 'kamailio.cfg'),
          DISPATCHER_LIST: list,
          NODES: 'sip:10.0.0.11:5060, sip:10.0.0.12:5060;transport=tcp',
          SIP_ADDR: '127.0.0.1',
          SIP_PORT: '5099',
          PING_INTERVAL_S: '5',
          NODE_TIMEOUT_MS: '1500',
          LOG_LEVEL: '-1',
          CTL_SOCKET: `unix:${path.join(tmp, 'ctl')}`,
        },
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout + r.stderr).toMatch(/udp: 127\.0\.0\.1 \[127\.0\.0\.1\]:5099/);
      const lines = fs
        .readFileSync(list, 'utf8')
        .split('\n')
        .filter((l) => l !== '' && !l.startsWith('#'));
      // the same format test/helpers/kamailio.ts writes: setid destination flags priority
      expect(lines).toEqual(['1 sip:10.0.0.11:5060 0 0', '1 sip:10.0.0.12:5060;transport=tcp 0 0']);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
