/**
 * The wire's view of the media: dumpcap records the RTP headers of every packet to and from
 * sipp's media port and from mediasoup's ports on loopback (pcap, 64-byte snapshots, no
 * dissection, so it costs little), and analyzeCapture() turns the file into per-stream packet
 * counts, sequence-number loss and RFC 3550 interarrival jitter for a time window.
 *
 * A capture on `lo` sees a packet when it is sent, before any receiving socket could drop it. So
 * gateway → trunk is what the gateway's relay emitted (sipp does not read its media socket; its
 * drops do not count), trunk → gateway is what sipp sent, and mediasoup → agents is what the
 * gateway emitted toward the agents: sequence gaps there are the gateway's loss (the relay and
 * mediasoup keep the trunk's gaps), while the agents' own socket drops show in /proc/net/udp.
 * Agents → mediasoup is what the agents emitted: gaps there are the agents' own (a starved
 * libwebrtc), so gateway → trunk gaps beyond them are the gateway's.
 */
import fs from 'node:fs';
import { type BenchProcess, spawnBenchProcess } from '../sip-bench/procs.js';

/** Loss and jitter of the streams of one direction within a window. */
export interface DirectionStats {
  /** RTP streams (source port, SSRC) seen in the window. */
  streams: number;
  /** Packets seen in the window. */
  packets: number;
  /** Packets expected from each stream's sequence numbers (highest − lowest + 1), summed. */
  expected: number;
  /** expected − packets, summed over streams (never below 0 per stream). */
  lost: number;
  /** lost / expected, %. */
  lossPct: number;
  /** Streams that lost more than 1 % of their packets. */
  streamsOver1Pct: number;
  /** Worst stream's loss, %. */
  worstStreamLossPct: number;
  /** Mean and largest RFC 3550 interarrival jitter at the end of the window, ms. */
  jitterMeanMs: number;
  jitterMaxMs: number;
  /** Packets per second per stream, mean (50 for 20 ms packets). */
  ppsPerStream: number;
}

/** What one capture saw in its window. */
export interface CaptureAnalysis {
  /** Gateway → sipp (the agents' audio after mediasoup and the relay). */
  toTrunk: DirectionStats;
  /** sipp → gateway (the trunk's audio as sipp sent it). */
  fromTrunk: DirectionStats;
  /**
   * mediasoup → agents (the trunk's audio as the gateway sent it on the agents' WebRTC
   * transports; SRTP leaves the RTP header readable). Loss here is the gateway's; what the agents'
   * own sockets dropped after it is not in it.
   */
  toAgents: DirectionStats;
  /**
   * agents → mediasoup (the agents' audio as their libwebrtc sent it, SRTP; one stream per
   * mediasoup port and SSRC). Gaps here are the agents' doing, not the gateway's.
   */
  fromAgents: DirectionStats;
  /** Window length, s. */
  windowS: number;
}

interface Stream {
  count: number;
  min: number;
  max: number;
  jitter: number;
  lastTransit: number;
  first: number;
  last: number;
}

/** A running dumpcap. */
export interface Capture {
  file: string;
  proc: BenchProcess;
  /** Stops dumpcap; resolves with its own counts (captured, dropped by the kernel or dumpcap). */
  stop(): Promise<{ captured: number | null; dropped: number | null }>;
}

/**
 * Starts dumpcap on `lo` for UDP to or from sipp's media `port` and to or from mediasoup's port
 * range (agents ⇄ mediasoup, relay ⇄ mediasoup); resolves once it captures.
 */
export function startCapture(port: number, rtcPorts: { min: number; max: number }, file: string, timeoutMs = 10_000): Promise<Capture> {
  return startDumpcap(`udp port ${port} or udp portrange ${rtcPorts.min}-${rtcPorts.max}`, ['-s', '64', '-B', '128', '-P'], file, timeoutMs);
}

/**
 * Starts dumpcap on `lo` with a capture filter and further options, writing `file`; resolves once
 * it captures (its own "Capturing on" line).
 * @throws {Error} when dumpcap exits or does not start capturing within `timeoutMs`
 */
export async function startDumpcap(filter: string, options: string[], file: string, timeoutMs = 10_000): Promise<Capture> {
  const proc = spawnBenchProcess('dumpcap', 'dumpcap', ['-i', 'lo', '-f', filter, ...options, '-q', '-w', file]);
  const t0 = Date.now();
  while (!/Capturing on/.test(proc.output().stderr)) {
    if (proc.hasExited()) {
      throw new Error(`dumpcap exited (${await proc.exited}): ${proc.output().stderr.trim()}`);
    }
    if (Date.now() - t0 > timeoutMs) {
      await proc.stop(1000);
      throw new Error(`dumpcap did not start capturing within ${timeoutMs} ms: ${proc.output().stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  return {
    file,
    proc,
    async stop() {
      proc.child.kill('SIGINT');
      const timer = setTimeout(() => void proc.stop(1000), 5000);
      await proc.exited;
      clearTimeout(timer);
      const err = proc.output().stderr;
      const captured = /Packets captured:\s*(\d+)/.exec(err);
      const dropped = /Packets received\/dropped on interface '[^']+':\s*\d+\/(\d+)/.exec(err);

      return { captured: captured ? Number(captured[1]) : null, dropped: dropped ? Number(dropped[1]) : null };
    },
  };
}

/** Byte offset of the IPv4 header in a record of this link type, or -1 when unsupported. */
function linkHeaderBytes(linktype: number): number {
  switch (linktype) {
    case 1:
      return 14; // Ethernet (lo)
    case 113:
      return 16; // Linux cooked
    case 276:
      return 20; // Linux cooked v2
    case 101:
    case 228:
      return 0; // raw IPv4
    default:
      return -1;
  }
}

/** Calls `fn` for every UDP/IPv4 datagram of a pcap file: time (µs since the epoch), ports, UDP payload start. */
export function forEachUdp(file: string, fn: (tsUs: number, srcPort: number, dstPort: number, data: Buffer, payloadAt: number, caplen: number) => void): void {
  const buf = fs.readFileSync(file);
  if (buf.length < 24) {
    return;
  }
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) {
    throw new Error(`${file} is not a pcap file (magic ${magic.toString(16)})`);
  }
  const nano = (le ? magic : buf.readUInt32BE(0)) === 0xa1b23c4d;
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const link = linkHeaderBytes(u32(20) & 0x0fffffff);
  if (link < 0) {
    throw new Error(`${file}: unsupported link type ${u32(20)}`);
  }
  let off = 24;
  while (off + 16 <= buf.length) {
    const sec = u32(off);
    const frac = u32(off + 4);
    const caplen = u32(off + 8);
    const rec = off + 16;
    off = rec + caplen;
    if (off > buf.length) {
      break;
    }
    const ip = rec + link;
    if (caplen < link + 28 || buf[ip]! >> 4 !== 4 || buf[ip + 9] !== 17) {
      continue;
    }
    const udp = ip + (buf[ip]! & 0x0f) * 4;
    if (udp + 8 > rec + caplen) {
      continue;
    }
    fn(sec * 1e6 + (nano ? Math.floor(frac / 1000) : frac), buf.readUInt16BE(udp), buf.readUInt16BE(udp + 2), buf, udp + 8, rec + caplen - (udp + 8));
  }
}

/**
 * Per-stream loss and jitter of the RTP to and from sipp's media `port`, and from the mediasoup
 * port range to the agents' sockets (`agentPorts`), whose capture time falls in [fromMs, toMs]
 * (ms since the epoch). `clockRate` converts arrival times to RTP units for the jitter (8000 for
 * G.711).
 */
export function analyzeCapture(file: string, o: { port: number; rtcPorts: { min: number; max: number }; agentPorts: ReadonlySet<number>; fromMs: number; toMs: number; clockRate?: number }): CaptureAnalysis {
  const { port, fromMs, toMs } = o;
  const clockRate = o.clockRate ?? 8000;
  const dirs = { toTrunk: new Map<string, Stream>(), fromTrunk: new Map<string, Stream>(), toAgents: new Map<string, Stream>(), fromAgents: new Map<string, Stream>() };
  const inRtc = (p: number): boolean => p >= o.rtcPorts.min && p <= o.rtcPorts.max;
  const fromUs = fromMs * 1000;
  const toUs = toMs * 1000;
  forEachUdp(file, (tsUs, src, dst, buf, at, len) => {
    if (tsUs < fromUs || tsUs > toUs || len < 12 || buf[at]! >> 6 !== 2) {
      return;
    }
    const pt = buf[at + 1]! & 0x7f;
    if ((pt >= 72 && pt <= 76) || pt === 127) {
      return; // RTCP on the RTP port; mediasoup's bandwidth probation packets (payload type 127, SSRC 1234)
    }
    const map =
      dst === port
        ? dirs.toTrunk
        : src === port
          ? dirs.fromTrunk
          : inRtc(src) && o.agentPorts.has(dst)
            ? dirs.toAgents
            : inRtc(dst) && o.agentPorts.has(src)
              ? dirs.fromAgents
              : undefined;
    if (!map) {
      return;
    }
    const seq = buf.readUInt16BE(at + 2);
    const ts = buf.readUInt32BE(at + 4);
    // one stream per SSRC and gateway-side port: the agent-side tuple may change (ICE picks
    // another candidate pair), the stream and its sequence numbers do not
    const key = `${map === dirs.fromTrunk || map === dirs.fromAgents ? dst : src}/${buf.readUInt32BE(at + 8)}`;
    const arrival = (tsUs / 1e6) * clockRate;
    let s = map.get(key);
    if (!s) {
      s = { count: 0, min: seq, max: seq, jitter: 0, lastTransit: arrival - ts, first: tsUs, last: tsUs };
      map.set(key, s);
    } else {
      // extend the 16-bit sequence number around the highest seen so far (RFC 3550 A.1)
      let d = seq - (s.max & 0xffff);
      if (d > 32767) {
        d -= 65536;
      } else if (d < -32768) {
        d += 65536;
      }
      const ext = s.max + d;
      s.max = Math.max(s.max, ext);
      s.min = Math.min(s.min, ext);
      const transit = arrival - ts;
      let dd = transit - s.lastTransit;
      // the RTP timestamp wraps at 2^32
      if (dd > 2 ** 31) {
        dd -= 2 ** 32;
      } else if (dd < -(2 ** 31)) {
        dd += 2 ** 32;
      }
      s.lastTransit = transit;
      s.jitter += (Math.abs(dd) - s.jitter) / 16;
      s.last = tsUs;
    }
    s.count++;
  });
  const summarize = (m: Map<string, Stream>): DirectionStats => {
    let packets = 0;
    let expected = 0;
    let lost = 0;
    let over = 0;
    let worst = 0;
    let jSum = 0;
    let jMax = 0;
    let rateSum = 0;
    let rated = 0;
    for (const s of m.values()) {
      const exp = s.max - s.min + 1;
      const l = Math.max(0, exp - s.count);
      packets += s.count;
      expected += exp;
      lost += l;
      const pct = exp > 0 ? (l / exp) * 100 : 0;
      if (pct > 1) {
        over++;
      }
      worst = Math.max(worst, pct);
      const jMs = (s.jitter / clockRate) * 1000;
      jSum += jMs;
      jMax = Math.max(jMax, jMs);
      if (s.last > s.first) {
        rateSum += (s.count - 1) / ((s.last - s.first) / 1e6);
        rated++;
      }
    }
    const r2 = (v: number): number => Math.round(v * 100) / 100;

    return {
      streams: m.size,
      packets,
      expected,
      lost,
      lossPct: expected > 0 ? Math.round((lost / expected) * 1e5) / 1e3 : 0,
      streamsOver1Pct: over,
      worstStreamLossPct: r2(worst),
      jitterMeanMs: m.size > 0 ? r2(jSum / m.size) : 0,
      jitterMaxMs: r2(jMax),
      ppsPerStream: rated > 0 ? r2(rateSum / rated) : 0,
    };
  };

  return { toTrunk: summarize(dirs.toTrunk), fromTrunk: summarize(dirs.fromTrunk), toAgents: summarize(dirs.toAgents), fromAgents: summarize(dirs.fromAgents), windowS: (toMs - fromMs) / 1000 };
}

/**
 * The G.711 A-law audio of a pcap (sipp's g711a.pcap: RTP payload type 8) as one raw byte
 * string, the input sipp's `rtp_stream` action loops.
 */
export function pcmaFromPcap(file: string): Buffer {
  const parts: Buffer[] = [];
  forEachUdp(file, (_ts, _src, _dst, buf, at, len) => {
    if (len <= 12 || buf[at]! >> 6 !== 2 || (buf[at + 1]! & 0x7f) !== 8) {
      return;
    }
    const cc = buf[at]! & 0x0f;
    const ext = (buf[at]! & 0x10) !== 0;
    let hl = 12 + cc * 4;
    if (ext && len >= hl + 4) {
      hl += 4 + buf.readUInt16BE(at + hl + 2) * 4;
    }
    const padding = (buf[at]! & 0x20) !== 0 ? buf[at + len - 1]! : 0;
    if (len - padding > hl) {
      parts.push(Buffer.from(buf.subarray(at + hl, at + len - padding)));
    }
  });

  return Buffer.concat(parts);
}
