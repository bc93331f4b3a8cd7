// Installing Debian packages that ringbridge needs at setup or at run time (mediasoup-worker's
// build and runtime libraries, redis-server for the embedded defaults). Plain Node, no npm
// dependencies, shared by the setup scripts and the gateway.

import { spawnSync } from 'node:child_process';

/** A setup step cannot go on; the message says what is missing and how to fix it. */
export class SetupError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'SetupError';
    this.code = 'RB_ERR_SETUP';
  }
}

/**
 * Whether a command is on PATH.
 * @param {string} name command name
 * @returns {boolean}
 */
export function hasCommand(name) {
  return spawnSync('/bin/sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0;
}

/** @returns {boolean} whether this process runs as root */
export function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Installs Debian packages with apt-get. Refuses, with a SetupError naming the packages and the
 * command to run, when RINGBRIDGE_NO_APT=1, when apt-get is missing or when not root.
 * @param {string[]} packages Debian package names
 * @param {string} purpose what they are for, used in messages ("building mediasoup-worker")
 * @param {(msg: string) => void} log progress output
 * @throws {SetupError}
 */
export function aptInstall(packages, purpose, log) {
  const list = [...new Set(packages)].sort();
  const manual = `apt-get install -y ${list.join(' ')}`;
  if (process.env.RINGBRIDGE_NO_APT === '1') {
    throw new SetupError(`${purpose}: missing Debian packages ${list.join(', ')}, and RINGBRIDGE_NO_APT=1 forbids installing them; as root run: ${manual}`);
  }
  if (!hasCommand('apt-get')) {
    throw new SetupError(`${purpose}: missing ${list.join(', ')} (Debian 12 package names), and apt-get is not available on this system; install the equivalents`);
  }
  if (!isRoot()) {
    throw new SetupError(`${purpose}: missing Debian packages ${list.join(', ')}, and this process is not root, so it cannot install them; as root run: ${manual}`);
  }
  log(`installing Debian packages for ${purpose}: ${list.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const args = ['install', '-y', '-q', '--no-install-recommends', ...list];
  let r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (r.status !== 0) {
    log('apt-get install failed; refreshing the package lists once and retrying');
    spawnSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'inherit', 'inherit'], env });
    r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
  }
  if (r.status !== 0) {
    throw new SetupError(`${purpose}: apt-get could not install ${list.join(', ')} (exit ${r.status}); check that Debian's archive is reachable`);
  }
}
