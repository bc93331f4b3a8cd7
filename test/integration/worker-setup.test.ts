import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../../src/util/paths.js';

const script = path.join(projectRoot(), 'src', 'setup', 'mediasoup-worker.mjs');

function runSetup(env: Record<string, string>) {
  const r = spawnSync(process.execPath, [script], { env: { HOME: process.env.HOME!, PATH: process.env.PATH!, ...env }, encoding: 'utf8' });

  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('mediasoup-worker setup (src/setup/mediasoup-worker.mjs)', () => {
  it('reuses the cached worker keyed by mediasoup version and recipe hash', async () => {
    const { cacheRoot, recipeKey } = (await import(script)) as { cacheRoot: () => string; recipeKey: () => string };
    const key = recipeKey();
    expect(key).toMatch(/^3\.12\.16-[0-9a-f]{16}$/);
    const cached = path.join(cacheRoot(), 'mediasoup-worker', key, 'mediasoup-worker');
    expect(cached.startsWith(projectRoot())).toBe(false);
    const r = runSetup({});
    expect(r.status).toBe(0);
    expect(r.output).toContain(`reusing cached mediasoup-worker ${key}`);
    expect(fs.statSync(cached).size).toBeGreaterThan(1_000_000);
  });

  it('honours MEDIASOUP_WORKER_BIN and rejects one that is not executable', () => {
    const bad = runSetup({ MEDIASOUP_WORKER_BIN: '/nonexistent/mediasoup-worker' });
    expect(bad.status).toBe(1);
    expect(bad.output).toContain('MEDIASOUP_WORKER_BIN=/nonexistent/mediasoup-worker is not an executable file');
    const good = runSetup({ MEDIASOUP_WORKER_BIN: path.join(projectRoot(), 'node_modules', 'mediasoup', 'worker', 'out', 'Release', 'mediasoup-worker') });
    expect(good.status).toBe(0);
    expect(good.output).toContain('using MEDIASOUP_WORKER_BIN=');
  });

  it('stops with a message naming what is missing when it cannot build', () => {
    // An empty cache forces a build; a PATH without meson and ninja makes it impossible, and
    // RINGBRIDGE_NO_APT=1 forbids installing them.
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'rb-cache-'));
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'rb-path-'));
    for (const tool of ['pkg-config', 'cc', 'c++', 'ldd']) {
      const found = spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
      expect(found).not.toBe('');
      fs.symlinkSync(found, path.join(bin, tool));
    }
    try {
      const r = runSetup({ RINGBRIDGE_CACHE_DIR: cache, RINGBRIDGE_NO_APT: '1', PATH: bin });
      expect(r.status).toBe(1);
      expect(r.output).toContain('missing: command meson not found (Debian package meson)');
      expect(r.output).toContain('missing: command ninja not found (Debian package ninja-build)');
      expect(r.output).toContain('as root run: apt-get install -y meson ninja-build');
      expect(fs.readdirSync(path.join(cache, 'mediasoup-worker')).filter((f) => !f.endsWith('.lock'))).toEqual([]);
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
});
