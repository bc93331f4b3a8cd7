import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { projectRoot } from '../../src/util/paths.js';

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
    services: Record<string, { image?: string; build?: { context: string; dockerfile: string }; profiles?: string[]; command?: string[]; volumes?: string[] }>;
  };

  it('parses as YAML with the gateway, Redis, drachtio-server, Prometheus and Grafana', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['drachtio', 'grafana', 'prometheus', 'redis', 'ringbridge']);
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
