#!/usr/bin/env node
// First step of `npm start` and `npm test` on any machine, fresh or not:
//   1. checks the Node.js version;
//   2. runs `npm ci` when node_modules is missing or does not match package-lock.json;
//   3. makes sure mediasoup-worker is built (or reused from the cache), see mediasoup-worker.mjs;
//   4. with --test, installs the Debian tools the tests drive (real peers, promtool, redis-server);
//   5. with --build, compiles the TypeScript sources into dist/ (incremental).
// Plain Node with no npm dependencies, because it runs before they are installed.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SetupError, aptInstall, hasCommand } from './apt.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const projectRoot = path.resolve(here, '..', '..');
const wantBuild = process.argv.includes('--build');
const wantTestTools = process.argv.includes('--test');

/** Commands the test suite runs, with the Debian 12 packages that provide them. */
export const TEST_TOOLS = [
  { cmd: 'redis-server', deb: 'redis-server', why: 'a local Redis when none answers on 127.0.0.1:6379' },
  { cmd: 'promtool', deb: 'prometheus', why: 'checking /metrics output and alert rules' },
  { cmd: 'sipp', deb: 'sip-tester', why: 'the real SIP peer of the SIP tests' },
  { cmd: 'kamailio', deb: 'kamailio', why: 'the SIP proxy that the SIP benchmark measures against (load/sip-bench, its smoke test)' },
  { cmd: 'rtpengine', deb: 'rtpengine-daemon', why: 'the media relay of the peer bridge (Kamailio + rtpengine) that load/runner compares ringbridge with' },
  { cmd: 'baresip', deb: 'baresip-core', why: 'a real SIP user agent over UDP/TCP/TLS with RTP (test/helpers/baresip.ts)' },
  { cmd: 'openssl', deb: 'openssl', why: 'throwaway test certificates (test/helpers/tls-certs.ts)' },
  { cmd: 'tshark', deb: 'tshark', why: 'counting the RTP that reaches sipp trunks in call tests (test/helpers/calls.ts)' },
  { cmd: 'chromium', deb: 'chromium', why: 'the softphone page end to end in headless Chromium (test/e2e/softphone.test.ts, /usr/bin/chromium)' },
];

function log(msg) {
  process.stderr.write(`[setup] ${msg}\n`);
}

function fail(msg) {
  log(`error: ${msg}`);
  process.exit(1);
}

function checkNode() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    fail(`Node.js ${process.versions.node} is too old; ringbridge needs Node.js 20.19 or newer`);
  }
}

/**
 * Whether node_modules holds what package-lock.json asks for. npm keeps its own record of the
 * installed tree in node_modules/.package-lock.json; every non-optional locked package must be
 * there at the same version.
 */
function dependenciesUpToDate() {
  const lockPath = path.join(projectRoot, 'package-lock.json');
  const hiddenPath = path.join(projectRoot, 'node_modules', '.package-lock.json');
  if (!fs.existsSync(hiddenPath)) {
    return false;
  }
  const lock = JSON.parse(fs.readFileSync(lockPath, 'utf8'));
  const hidden = JSON.parse(fs.readFileSync(hiddenPath, 'utf8'));
  for (const [key, entry] of Object.entries(lock.packages ?? {})) {
    if (key === '' || entry.optional || entry.link) {
      continue;
    }
    const installed = hidden.packages?.[key];
    if (!installed || installed.version !== entry.version) {
      return false;
    }
  }

  return true;
}

function installDependencies() {
  if (dependenciesUpToDate()) {
    return;
  }
  log('installing npm dependencies (npm ci)');
  const npm = process.env.npm_execpath
    ? [process.execPath, [process.env.npm_execpath]]
    : ['npm', []];
  const r = spawnSync(npm[0], [...npm[1], 'ci', '--no-audit', '--no-fund'], {
    cwd: projectRoot,
    stdio: 'inherit',
    // mediasoup's postinstall is denied in package.json (allowScripts); this variable makes it
    // skip its GitHub download as well, should an npm without allowScripts support run it.
    env: { ...process.env, MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN || 'built-by-ringbridge-setup' },
  });
  if (r.status !== 0) {
    fail(`npm ci failed (exit ${r.status}); the npm registry must be reachable`);
  }
}

async function ensureWorker() {
  const { ensureWorker: ensure } = await import('./mediasoup-worker.mjs');
  try {
    ensure();
  } catch (err) {
    if (err && err.name === 'SetupError') {
      fail(err.message);
    }
    throw err;
  }
}

function ensureTestTools() {
  const missing = TEST_TOOLS.filter((t) => !hasCommand(t.cmd));
  if (missing.length === 0) {
    return;
  }
  for (const t of missing) {
    log(`missing test tool ${t.cmd} (Debian package ${t.deb}): ${t.why}`);
  }
  try {
    aptInstall(missing.map((t) => t.deb), 'running the tests', log);
  } catch (err) {
    if (err instanceof SetupError) {
      fail(err.message);
    }
    throw err;
  }
}

function buildTypeScript() {
  log('compiling TypeScript into dist/');
  const tsc = path.join(projectRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(projectRoot, 'tsconfig.json')], {
    cwd: projectRoot,
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    fail(`TypeScript compilation failed (exit ${r.status})`);
  }
  log('building the softphone page into dist/web');
  const web = spawnSync(process.execPath, [path.join(projectRoot, 'src', 'web', 'build.mjs')], { cwd: projectRoot, stdio: 'inherit' });
  if (web.status !== 0) {
    fail(`the softphone page build failed (exit ${web.status})`);
  }
}

checkNode();
installDependencies();
await ensureWorker();
if (wantTestTools) {
  ensureTestTools();
}
if (wantBuild) {
  buildTypeScript();
}
