/**
 * Linux /proc readings for the SIP benchmark and the sipp test helper: which sockets a process
 * holds, whether it listens on a port, its process tree, and CPU and memory counters.
 *
 * Everything here reads /proc synchronously and cheaply; nothing needs root.
 */
import fs from 'node:fs';

/** Transport of a listening socket. */
export type SocketProto = 'udp' | 'tcp';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux we run on). */
export const CLOCK_TICKS = 100;

function readOr(path: string, fallback = ''): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/** Inode numbers of the sockets that the given processes hold open. */
export function socketInodes(pids: readonly number[]): Set<string> {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // the process is gone or not ours to read
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) {
          inodes.add(m[1]!);
        }
      } catch {
        // the descriptor closed meanwhile
      }
    }
  }

  return inodes;
}

/**
 * Whether one of the processes holds a socket bound to `port` (a UDP socket, or a TCP socket in
 * the LISTEN state), on any address, IPv4 or IPv6. Because the socket has to belong to one of
 * these processes, a port that another process grabbed never counts.
 */
export function isListening(pids: readonly number[], port: number, proto: SocketProto): boolean {
  const inodes = socketInodes(pids);
  if (inodes.size === 0) {
    return false;
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of proto === 'udp' ? ['udp', 'udp6'] : ['tcp', 'tcp6']) {
    const lines = readOr(`/proc/net/${table}`).split('\n').slice(1);
    for (const line of lines) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10) {
        continue;
      }
      const local = f[1]!;
      const state = f[3]!;
      const inode = f[9]!;
      if (!local.endsWith(`:${hexPort}`) || !inodes.has(inode)) {
        continue;
      }
      if (proto === 'udp' || state === '0A') {
        return true;
      }
    }
  }

  return false;
}

/** The process itself and all its descendants (found by scanning /proc for parent ids). */
export function processTree(rootPid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const stat = readOr(`/proc/${entry}/stat`);
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (Number.isFinite(ppid)) {
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    }
  }
  const out: number[] = [];
  const queue = [rootPid];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    if (!fs.existsSync(`/proc/${pid}`)) {
      continue;
    }
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }

  return out;
}

/** User + system CPU time of one process in clock ticks, or 0 when it is gone. */
export function cpuTicks(pid: number): number {
  const stat = readOr(`/proc/${pid}/stat`);
  if (stat === '') {
    return 0;
  }
  // Fields after the command name: state(3) ppid(4) ... utime(14) stime(15).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');

  return Number(f[11]) + Number(f[12]);
}

/** Memory of a set of processes in MiB: the sum of their RSS and of their PSS (shared pages split). */
export function memoryMb(pids: readonly number[]): { rssMb: number; pssMb: number } {
  let rssKb = 0;
  let pssKb = 0;
  for (const pid of pids) {
    const status = readOr(`/proc/${pid}/status`);
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    rssKb += rss ? Number(rss[1]) : 0;
    const rollup = readOr(`/proc/${pid}/smaps_rollup`);
    const pss = /^Pss:\s+(\d+) kB/m.exec(rollup);
    pssKb += pss ? Number(pss[1]) : rss ? Number(rss[1]) : 0;
  }

  return { rssMb: rssKb / 1024, pssMb: pssKb / 1024 };
}

/**
 * Samples the CPU use of a process tree between two calls: `start()` records the counters,
 * `stop()` returns the CPU used since as a percentage of one core (200 = two cores busy).
 * Processes that exit in between count up to their last sample, so call `sample()` now and then;
 * processes first seen after `start()` count from their birth.
 */
export function cpuMeter(pids: () => number[]): { start(): void; sample(): void; stop(): number } {
  let t0 = 0;
  let starting = false;
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  const sample = (): void => {
    for (const pid of pids()) {
      const ticks = cpuTicks(pid);
      if (ticks > 0) {
        if (!first.has(pid)) {
          // A process first seen after start() was born after it: all its time counts.
          first.set(pid, starting ? ticks : 0);
        }
        last.set(pid, ticks);
      }
    }
  };

  return {
    start() {
      first.clear();
      last.clear();
      t0 = performance.now();
      starting = true;
      sample();
      starting = false;
    },
    sample,
    stop() {
      sample();
      const seconds = (performance.now() - t0) / 1000;
      let ticks = 0;
      for (const [pid, end] of last) {
        ticks += end - (first.get(pid) ?? end);
      }

      return seconds > 0 ? (ticks / CLOCK_TICKS / seconds) * 100 : 0;
    },
  };
}

/**
 * Whether any socket in this network namespace uses `port` as its local port, for UDP or TCP,
 * IPv4 or IPv6, in any state (a synchronous look at /proc/net, no bind attempt).
 */
export function portInUse(port: number): boolean {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const table of ['udp', 'udp6', 'tcp', 'tcp6']) {
    for (const line of readOr(`/proc/net/${table}`).split('\n').slice(1)) {
      const local = line.trim().split(/\s+/)[1];
      if (local?.endsWith(hexPort)) {
        return true;
      }
    }
  }

  return false;
}
