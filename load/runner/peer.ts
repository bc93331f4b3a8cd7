/**
 * The peer bridge of the side-by-side report: Kamailio (stateful, record-routing proxy) with
 * rtpengine anchoring the media, both from Debian (kamailio, rtpengine-daemon; installed by
 * `node src/setup/bootstrap.mjs --test`). rtpengine runs in userspace (`--table=-1`: no kernel
 * forwarding module) in the foreground on loopback. Both run as children under
 * `setpriv --pdeathsig TERM` and are stopped with their process trees.
 */
import path from 'node:path';
import { projectRoot } from '../../src/util/paths.js';
import { type BenchProcess, pickFreePort, spawnBenchProcess, waitListening } from '../sip-bench/procs.js';
import { ensureKamailio, kamailioVersion } from '../sip-bench/targets.js';
import { hasCommand } from '../../src/setup/apt.mjs';
import { toolVersion } from './machine.js';

/** A running peer bridge. */
export interface PeerBridge {
  /** One line: what runs, with versions. */
  description: string;
  /** Kamailio's SIP port (UDP, 127.0.0.1). */
  sipPort: number;
  kamailio: BenchProcess;
  rtpengine: BenchProcess;
  stop(): Promise<void>;
}

/** Options of the peer bridge. */
export interface PeerOptions {
  /** Where Kamailio sends the calls (the sipp callee). */
  uas: { host: string; port: number };
  /** Kamailio UDP workers (default 4). */
  workers?: number;
  /** rtpengine's RTP port range (default 36000-37999, away from the gateway's ranges). */
  rtpPorts?: { min: number; max: number };
}

/**
 * Starts rtpengine and Kamailio and waits until both listen.
 * @throws Error when rtpengine is not installed (with the command that installs it) or a process does not come up
 */
export async function startPeerBridge(o: PeerOptions): Promise<PeerBridge> {
  ensureKamailio();
  if (!hasCommand('rtpengine')) {
    throw new Error('rtpengine is not installed: run `node src/setup/bootstrap.mjs --test` (Debian package rtpengine-daemon)');
  }
  const ngPort = pickFreePort();
  const ports = o.rtpPorts ?? { min: 36000, max: 37999 };
  const rtpengine = spawnBenchProcess('rtpengine', 'rtpengine', [
    '--config-file=none',
    '--foreground',
    '--log-stderr',
    '--table=-1',
    '--interface=127.0.0.1',
    `--listen-ng=127.0.0.1:${ngPort}`,
    `--port-min=${ports.min}`,
    `--port-max=${ports.max}`,
    '--log-level=4',
  ]);
  try {
    await waitListening(rtpengine, ngPort, 'udp', 15_000);
  } catch (err) {
    await rtpengine.stop(1000);
    throw err;
  }
  const sipPort = pickFreePort();
  const workers = o.workers ?? 4;
  const kamailio = spawnBenchProcess('kamailio', 'kamailio', [
    '-f', path.join(projectRoot(), 'load', 'runner', 'kamailio-rtpengine.cfg'),
    '-DD', '-E',
    '-l', `udp:127.0.0.1:${sipPort}`,
    '-n', String(workers),
    '-m', '512', '-M', '16',
    '-A', `UAS_URI="sip:${o.uas.host}:${o.uas.port}"`,
    '-A', `RTPENGINE_SOCK="udp:127.0.0.1:${ngPort}"`,
  ]);
  try {
    await waitListening(kamailio, sipPort, 'udp', 15_000);
  } catch (err) {
    await Promise.all([kamailio.stop(1000), rtpengine.stop(1000)]);
    throw err;
  }

  return {
    description: `${kamailioVersion() ?? 'kamailio'} (${workers} UDP workers, stateful proxy) + rtpengine ${toolVersion('rtpengine', ['--version'], /Version: \S+/)?.replace('Version: ', '') ?? ''} (userspace forwarding)`,
    sipPort,
    kamailio,
    rtpengine,
    async stop() {
      await Promise.all([kamailio.stop(5000), rtpengine.stop(5000)]);
    },
  };
}
