#!/usr/bin/env node
// Builds mediasoup-worker offline from node_modules/mediasoup/worker against Debian 12's own
// libraries, caches it outside the checkout, and installs it where mediasoup looks for it.
//
// Why this exists: mediasoup's own install downloads a prebuilt worker from GitHub or builds
// one with pip-installed meson and wrap files fetched from GitHub and the meson wrapdb. None of
// those hosts is reachable from ringbridge's build machines (only the npm registry and Debian's
// archive are). mediasoup 3.12.16 is the newest release whose C/C++ dependencies match Debian 12's
// packages, so each wrap is replaced by a small meson project (worker-recipe/subprojects/) that
// finds the Debian library with pkg-config. See README "mediasoup worker".
//
// Plain Node (no npm dependencies): it must run before `npm ci` has finished or in a Docker stage.
//
// Environment:
//   MEDIASOUP_WORKER_BIN   use this binary; nothing is built (it must exist and be executable)
//   RINGBRIDGE_CACHE_DIR   cache root (default: $XDG_CACHE_HOME/ringbridge or ~/.cache/ringbridge)
//   RINGBRIDGE_NO_APT=1    never run apt-get; report missing packages instead
//
// Exit codes: 0 worker ready, 1 cannot build (the message says what is missing).

import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SetupError, aptInstall, hasCommand } from './apt.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const projectRoot = path.resolve(here, '..', '..');
const recipeDir = path.join(here, 'worker-recipe');

/** The only mediasoup version this recipe builds. */
export const MEDIASOUP_VERSION = '3.12.16';

/** meson arguments of the build; part of the cache key. */
const MESON_SETUP_ARGS = ['--buildtype', 'release', '-Db_ndebug=true', '--wrap-mode=nodownload'];

/**
 * Edits to mediasoup's worker/meson.build, as [search, replacement]; part of the cache key.
 * meson.build asks for meson >= 1.1.0; Debian 12 has 1.0.1 and no 1.1 feature is used.
 */
const MESON_BUILD_PATCHES = [["meson_version: '>= 1.1.0'", "meson_version: '>= 1.0.0'"]];

/**
 * What the build needs, as a command or a pkg-config module, with the Debian 12 package that
 * provides it and, where it matters, the version range that matches mediasoup 3.12.16's wraps.
 */
export const BUILD_REQUIREMENTS = [
  { kind: 'cmd', name: 'cc', deb: 'gcc' },
  { kind: 'cmd', name: 'c++', deb: 'g++' },
  { kind: 'cmd', name: 'meson', deb: 'meson' },
  { kind: 'cmd', name: 'ninja', deb: 'ninja-build' },
  { kind: 'cmd', name: 'pkg-config', deb: 'pkg-config' },
  { kind: 'pc', name: 'openssl', deb: 'libssl-dev', min: '3.0.0' },
  { kind: 'pc', name: 'libuv', deb: 'libuv1-dev', min: '1.44.0' },
  { kind: 'pc', name: 'libsrtp2', deb: 'libsrtp2-dev', min: '2.4.0', below: '3.0.0' },
  { kind: 'pc', name: 'usrsctp', deb: 'libusrsctp-dev' },
  { kind: 'pc', name: 'absl_flat_hash_map', deb: 'libabsl-dev' },
  { kind: 'pc', name: 'nlohmann_json', deb: 'nlohmann-json3-dev', min: '3.10.5' },
];

/** Shared libraries the built worker loads at run time, with their Debian 12 packages. */
export const RUNTIME_PACKAGES = {
  libssl: 'libssl3',
  libcrypto: 'libssl3',
  libuv: 'libuv1',
  libsrtp2: 'libsrtp2-1',
  libusrsctp: 'libusrsctp2',
  libabsl: 'libabsl20220623',
};

function log(msg) {
  process.stderr.write(`[setup:mediasoup-worker] ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.error && r.error.code === 'ENOENT') {
    return { ok: false, missing: true, stdout: '', stderr: String(r.error.message) };
  }

  return { ok: r.status === 0, missing: false, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function compareVersions(a, b) {
  const pa = a.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) {
      return d;
    }
  }

  return 0;
}

/** @returns {{req: object, why: string}[]} requirements that are not met */
function missingBuildRequirements() {
  const missing = [];
  const havePkgConfig = hasCommand('pkg-config');
  for (const req of BUILD_REQUIREMENTS) {
    if (req.kind === 'cmd') {
      if (!hasCommand(req.name)) {
        missing.push({ req, why: `command ${req.name} not found` });
      }
      continue;
    }
    if (!havePkgConfig) {
      missing.push({ req, why: `cannot look up ${req.name} without pkg-config` });
      continue;
    }
    const v = run('pkg-config', ['--modversion', req.name]);
    if (!v.ok) {
      missing.push({ req, why: `pkg-config module ${req.name} not found` });
      continue;
    }
    const version = v.stdout.trim();
    if (req.min && compareVersions(version, req.min) < 0) {
      missing.push({ req, why: `${req.name} ${version} is older than ${req.min}` });
    } else if (req.below && compareVersions(version, req.below) >= 0) {
      missing.push({ req, why: `${req.name} ${version} is not below ${req.below} (mediasoup ${MEDIASOUP_VERSION} needs the 2.x API)` });
    }
  }
  if (hasCommand('meson')) {
    const mv = run('meson', ['--version']).stdout.trim();
    if (mv && compareVersions(mv, '1.0.0') < 0) {
      missing.push({ req: { deb: 'meson', name: 'meson' }, why: `meson ${mv} is older than 1.0.0` });
    }
  }

  return missing;
}

function sha256OfTree(dir, hash) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      hash.update(`dir:${entry.name}\n`);
      sha256OfTree(p, hash);
    } else {
      hash.update(`file:${entry.name}\n`);
      hash.update(fs.readFileSync(p));
    }
  }
}

function osIdentity() {
  try {
    const text = fs.readFileSync('/etc/os-release', 'utf8');
    const get = (k) => (text.match(new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm')) ?? [])[1] ?? '';

    return `${get('ID')}-${get('VERSION_ID')}`;
  } catch {
    return 'unknown-os';
  }
}

/**
 * The cache key: mediasoup version plus a hash of the recipe (the subproject stand-ins, the meson
 * arguments and the meson.build edits), the OS release and the CPU architecture. Edits to the rest
 * of this script (messages, checks) do not force a rebuild.
 */
export function recipeKey() {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ MESON_SETUP_ARGS, MESON_BUILD_PATCHES }));
  sha256OfTree(recipeDir, hash);
  hash.update(`${osIdentity()} ${process.arch}`);

  return `${MEDIASOUP_VERSION}-${hash.digest('hex').slice(0, 16)}`;
}

/** The cache root, outside the checkout. */
export function cacheRoot() {
  if (process.env.RINGBRIDGE_CACHE_DIR) {
    return path.resolve(process.env.RINGBRIDGE_CACHE_DIR);
  }
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');

  return path.join(xdg, 'ringbridge');
}

/** Where mediasoup 3.12.16 looks for the worker when MEDIASOUP_WORKER_BIN is not set. */
export function defaultWorkerPath(root = projectRoot) {
  return path.join(root, 'node_modules', 'mediasoup', 'worker', 'out', 'Release', 'mediasoup-worker');
}

function installedMediasoupVersion() {
  const pj = path.join(projectRoot, 'node_modules', 'mediasoup', 'package.json');
  if (!fs.existsSync(pj)) {
    throw new SetupError(`node_modules/mediasoup is missing; run npm ci first (or npm start / npm test, which do)`);
  }

  return JSON.parse(fs.readFileSync(pj, 'utf8')).version;
}

function isExecutable(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);

    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Lists shared libraries the binary cannot load, mapped to Debian runtime packages. */
function missingRuntimeLibraries(bin) {
  const r = run('ldd', [bin]);
  if (r.missing) {
    return [];
  }
  const missing = [];
  for (const line of r.stdout.split('\n')) {
    const m = line.match(/^\s*(\S+)\s+=>\s+not found/);
    if (m) {
      const lib = m[1];
      const pkgKey = Object.keys(RUNTIME_PACKAGES).find((k) => lib.startsWith(k));
      missing.push({ lib, deb: pkgKey ? RUNTIME_PACKAGES[pkgKey] : undefined });
    }
  }

  return missing;
}

function ensureRuntimeLibraries(bin) {
  const missing = missingRuntimeLibraries(bin);
  if (missing.length === 0) {
    return;
  }
  const unknown = missing.filter((m) => !m.deb).map((m) => m.lib);
  if (unknown.length > 0) {
    throw new SetupError(`mediasoup-worker at ${bin} cannot load ${unknown.join(', ')}; rebuild it (delete ${path.dirname(bin)}) or set MEDIASOUP_WORKER_BIN`);
  }
  aptInstall(missing.map((m) => m.deb), 'running mediasoup-worker', log);
  const still = missingRuntimeLibraries(bin);
  if (still.length > 0) {
    throw new SetupError(`mediasoup-worker at ${bin} still cannot load ${still.map((m) => m.lib).join(', ')}`);
  }
}

function acquireLock(lockDir) {
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    try {
      fs.mkdirSync(lockDir);
      fs.writeFileSync(path.join(lockDir, 'pid'), String(process.pid));

      return () => fs.rmSync(lockDir, { recursive: true, force: true });
    } catch (err) {
      if (err.code !== 'EEXIST') {
        throw err;
      }
      let holder = NaN;
      try {
        holder = parseInt(fs.readFileSync(path.join(lockDir, 'pid'), 'utf8'), 10);
      } catch {
        // the holder may not have written its pid yet
      }
      let alive = false;
      if (Number.isInteger(holder)) {
        try {
          process.kill(holder, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (Number.isInteger(holder) && !alive) {
        log(`removing stale build lock of pid ${holder}`);
        fs.rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new SetupError(`timed out waiting for another mediasoup-worker build (lock ${lockDir})`);
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000);
    }
  }
}

function build(cachedBin) {
  const missing = missingBuildRequirements();
  if (missing.length > 0) {
    for (const m of missing) {
      log(`missing: ${m.why} (Debian package ${m.req.deb})`);
    }
    aptInstall(missing.map((m) => m.req.deb), `building mediasoup-worker ${MEDIASOUP_VERSION}`, log);
    const still = missingBuildRequirements();
    if (still.length > 0) {
      throw new SetupError(`cannot build mediasoup-worker ${MEDIASOUP_VERSION}: ${still.map((m) => m.why).join('; ')}`);
    }
  }

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-worker-build-'));
  const src = path.join(projectRoot, 'node_modules', 'mediasoup', 'worker');
  const dst = path.join(workDir, 'worker');
  try {
    log(`building in ${dst} (about 4–5 minutes on 2 cores)`);
    fs.cpSync(src, dst, { recursive: true, filter: (p) => !p.includes(`${path.sep}out${path.sep}`) && !p.endsWith(`${path.sep}out`) });
    fs.cpSync(path.join(recipeDir, 'subprojects'), path.join(dst, 'subprojects'), { recursive: true });

    const mesonBuild = path.join(dst, 'meson.build');
    let text = fs.readFileSync(mesonBuild, 'utf8');
    for (const [search, replacement] of MESON_BUILD_PATCHES) {
      if (!text.includes(search)) {
        throw new SetupError(`node_modules/mediasoup/worker/meson.build does not look like mediasoup ${MEDIASOUP_VERSION}'s (${search} not found)`);
      }
      text = text.replace(search, replacement);
    }
    fs.writeFileSync(mesonBuild, text);

    const builddir = path.join(dst, 'out', 'ringbridge');
    const setup = spawnSync('meson', ['setup', ...MESON_SETUP_ARGS, builddir], {
      cwd: dst,
      stdio: 'inherit',
    });
    if (setup.status !== 0) {
      throw new SetupError(`meson setup failed (exit ${setup.status}); see the output above`);
    }
    const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
    const ninja = spawnSync('ninja', ['-C', builddir, '-j', jobs, 'mediasoup-worker'], { cwd: dst, stdio: 'inherit' });
    if (ninja.status !== 0) {
      throw new SetupError(`ninja failed to build mediasoup-worker (exit ${ninja.status}); see the output above`);
    }
    const built = path.join(builddir, 'mediasoup-worker');
    fs.mkdirSync(path.dirname(cachedBin), { recursive: true });
    const tmp = `${cachedBin}.tmp-${process.pid}`;
    fs.copyFileSync(built, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.renameSync(tmp, cachedBin);
    log(`cached ${cachedBin}`);
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

function installIntoNodeModules(bin) {
  const target = defaultWorkerPath();
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${process.pid}`;
  fs.copyFileSync(bin, tmp);
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, target);
}

export { SetupError };

/**
 * Makes sure a mediasoup-worker for mediasoup 3.12.16 is available.
 * @returns {{bin: string, source: 'env'|'cache'|'built'}} where the worker is and how it came
 * @throws {SetupError} when the worker cannot be built or found; the message says what is missing
 */
export function ensureWorker() {
  if (process.env.MEDIASOUP_WORKER_BIN) {
    const bin = path.resolve(process.env.MEDIASOUP_WORKER_BIN);
    if (!isExecutable(bin)) {
      throw new SetupError(`MEDIASOUP_WORKER_BIN=${process.env.MEDIASOUP_WORKER_BIN} is not an executable file`);
    }
    ensureRuntimeLibraries(bin);
    log(`using MEDIASOUP_WORKER_BIN=${bin}`);

    return { bin, source: 'env' };
  }

  const version = installedMediasoupVersion();
  if (version !== MEDIASOUP_VERSION) {
    throw new SetupError(`node_modules has mediasoup ${version}, but this recipe builds ${MEDIASOUP_VERSION} only (newer releases need libraries Debian 12 lacks); keep package.json pinned to ${MEDIASOUP_VERSION}`);
  }

  const key = recipeKey();
  const dir = path.join(cacheRoot(), 'mediasoup-worker', key);
  const cachedBin = path.join(dir, 'mediasoup-worker');
  let source = 'cache';
  if (!isExecutable(cachedBin)) {
    fs.mkdirSync(path.join(cacheRoot(), 'mediasoup-worker'), { recursive: true });
    const release = acquireLock(`${dir}.lock`);
    try {
      if (!isExecutable(cachedBin)) {
        build(cachedBin);
        source = 'built';
      }
    } finally {
      release();
    }
  }
  ensureRuntimeLibraries(cachedBin);
  installIntoNodeModules(cachedBin);
  log(`${source === 'built' ? 'built' : 'reusing cached'} mediasoup-worker ${key} (${cachedBin})`);

  return { bin: cachedBin, source };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    ensureWorker();
  } catch (err) {
    if (err instanceof SetupError) {
      log(`error: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}
