/**
 * The machine a run is on: CPU, memory, kernel, Node, the peers' versions and the load average
 * (other work on a shared machine skews the figures, so the report says when it was busy).
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { type Machine } from './report.js';

/** First line matching `re` of `cmd args` (stdout and stderr), or undefined when it is not installed. */
export function toolVersion(cmd: string, args: string[], re: RegExp): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error) {
    return undefined;
  }

  return re.exec(`${r.stdout}\n${r.stderr}`)?.[0]?.trim();
}

/** Versions of the peers used by the runner that are installed. */
export function toolVersions(): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (name: string, v: string | undefined): void => {
    if (v) {
      out[name] = v;
    }
  };
  add('sipp', toolVersion('sipp', ['-v'], /SIPp v\S+/));
  add('kamailio', toolVersion('kamailio', ['-v'], /kamailio \S+/));
  add('rtpengine', toolVersion('rtpengine', ['--version'], /Version: \S+/));

  return out;
}

/** The machine now; call `finish()` at the end to record the load average then. */
export function describeMachine(): { machine: Machine; finish(): Machine } {
  const cpus = os.cpus();
  const start = os.loadavg()[0] ?? 0;
  const machine: Machine = {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memGb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    tools: toolVersions(),
    loadAvg: { start: Math.round(start * 100) / 100, end: Math.round(start * 100) / 100 },
    busy: start > 0.5 * cpus.length,
  };

  return {
    machine,
    finish() {
      machine.loadAvg.end = Math.round((os.loadavg()[0] ?? 0) * 100) / 100;

      return machine;
    },
  };
}
