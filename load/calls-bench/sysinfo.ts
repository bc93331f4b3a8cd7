/**
 * /proc readings the calls benchmark needs beyond load/sip-bench/procfs.ts: process names, the
 * per-socket UDP drop counters of a set of processes, whole-machine CPU, and the process that
 * listens on a TCP port (the shared Redis).
 */
import fs from 'node:fs';
import { socketInodes } from '../sip-bench/procfs.js';

function readOr(p: string, fallback = ''): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return fallback;
  }
}

/** The command name of a process (/proc/<pid>/comm, 15 characters at most), '' when gone. */
export function commOf(pid: number): string {
  return readOr(`/proc/${pid}/comm`).trim();
}

/**
 * Packets the kernel dropped on each UDP socket of these processes (receive buffer full), by
 * socket inode: the last column of /proc/net/udp and udp6.
 */
export function udpDrops(pids: readonly number[]): Map<string, number> {
  const inodes = socketInodes(pids);
  const out = new Map<string, number>();
  for (const table of ['udp', 'udp6']) {
    for (const line of readOr(`/proc/net/${table}`).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 13 && inodes.has(f[9]!)) {
        out.set(f[9]!, Number(f[12]));
      }
    }
  }

  return out;
}

/** Local ports of the UDP sockets these processes hold. */
export function udpLocalPorts(pids: readonly number[]): Set<number> {
  const inodes = socketInodes(pids);
  const out = new Set<number>();
  for (const table of ['udp', 'udp6']) {
    for (const line of readOr(`/proc/net/${table}`).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && inodes.has(f[9]!)) {
        out.add(parseInt(f[1]!.slice(f[1]!.lastIndexOf(':') + 1), 16));
      }
    }
  }

  return out;
}

/** Drops between two udpDrops() readings, over the sockets present in both. */
export function dropsBetween(a: Map<string, number>, b: Map<string, number>): number {
  let n = 0;
  for (const [inode, v] of b) {
    const before = a.get(inode);
    if (before !== undefined) {
      n += Math.max(0, v - before);
    }
  }

  return n;
}

/** Busy and total jiffies of the whole machine (/proc/stat "cpu" line). */
export function machineTicks(): { busy: number; total: number } {
  const line = readOr('/proc/stat').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);

  return { busy: total - idle, total };
}

/** The pid of the process holding a TCP socket listening on `port` (any address), or undefined. */
export function tcpListenerPid(port: number): number | undefined {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const wanted = new Set<string>();
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readOr(`/proc/net/${table}`).split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && f[1]!.endsWith(hexPort) && f[3] === '0A') {
        wanted.add(f[9]!);
      }
    }
  }
  if (wanted.size === 0) {
    return undefined;
  }
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const pid = Number(entry);
    for (const inode of socketInodes([pid])) {
      if (wanted.has(inode)) {
        return pid;
      }
    }
  }

  return undefined;
}

/** Udp: counters of /proc/net/snmp (system-wide): InDatagrams, RcvbufErrors, ... */
export function udpSnmp(): Record<string, number> {
  const lines = readOr('/proc/net/snmp')
    .split('\n')
    .filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) {
    return {};
  }
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  const out: Record<string, number> = {};
  names.forEach((n, i) => (out[n] = values[i] ?? 0));

  return out;
}
