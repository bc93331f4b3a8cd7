/**
 * What a SIP peer hears, independently of the gateway: tshark on loopback records every RTP
 * packet sent to a port with its capture time, payload type and payload; the G.711 payloads are
 * decoded so a test can tell which agent's tone (the Node agents send a sine of a set frequency)
 * reached the peer in a time window, and how loud it was.
 */
import { spawn } from 'node:child_process';

/** One RTP packet seen by tshark. */
export interface HeardPacket {
  /** Capture time, ms since the epoch. */
  t: number;
  pt: number | undefined;
  payload: Buffer;
}

/** The audio heard in a time window. */
export interface HeardAudio {
  /** RTP packets of the payload type in the window. */
  packets: number;
  /** Tone frequency estimated from zero crossings, Hz (0 when silent). */
  hz: number;
  /** RMS of the decoded 16-bit samples (0 silence, ~9800 for the agents' 0.3 full-scale sine). */
  rms: number;
}

/** A running capture. */
export interface ToneCapture {
  ready: Promise<void>;
  readonly packets: readonly HeardPacket[];
  /** The G.711 audio (PCMA pt 8 or PCMU pt 0) sent to the port between two times (ms since the epoch). */
  heard(from: number, to: number, pt?: 0 | 8): HeardAudio;
  /**
   * heard(), once tshark has printed the packets up to `to` (it prints with some delay): waits
   * for a packet captured after `to`, at most 1.5 s.
   */
  heardUntil(from: number, to: number, pt?: 0 | 8): Promise<HeardAudio>;
  /** Ends the capture (after 300 ms for packets in flight). Idempotent. */
  stop(): Promise<void>;
}

/** ITU-T G.711 A-law → 16-bit linear. */
export function alawToLinear(a: number): number {
  a ^= 0x55;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) {
    t += 8;
  } else {
    t += 0x108;
    if (seg > 1) {
      t <<= seg - 1;
    }
  }

  return a & 0x80 ? t : -t;
}

/** ITU-T G.711 µ-law → 16-bit linear. */
export function ulawToLinear(u: number): number {
  u = ~u & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);

  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** Frequency (zero crossings) and RMS of 8 kHz samples. */
export function analyse(samples: number[]): { hz: number; rms: number } {
  if (samples.length === 0) {
    return { hz: 0, rms: 0 };
  }
  let sum = 0;
  let crossings = 0;
  for (let i = 0; i < samples.length; i++) {
    sum += samples[i]! * samples[i]!;
    if (i > 0 && samples[i - 1]! < 0 !== samples[i]! < 0) {
      crossings++;
    }
  }
  const rms = Math.sqrt(sum / samples.length);

  return { hz: rms < 100 ? 0 : crossings / 2 / (samples.length / 8000), rms };
}

/** Starts recording the RTP sent to `port` on loopback. */
export function captureTone(port: number): ToneCapture {
  const p = spawn('tshark', ['-i', 'lo', '-f', `udp and dst port ${port}`, '-l', '-n', '-d', `udp.port==${port},rtp`, '-T', 'fields', '-E', 'separator=,', '-e', 'frame.time_epoch', '-e', 'rtp.p_type', '-e', 'rtp.payload'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const packets: HeardPacket[] = [];
  let partial = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const [time, pt, payload] = line.trim().split(',');
      if (time) {
        packets.push({ t: Number(time) * 1000, pt: pt ? Number(pt) : undefined, payload: Buffer.from((payload ?? '').replace(/:/g, ''), 'hex') });
      }
    }
  });
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (/Capturing on/.test(err)) {
        resolve();
      }
    });
    p.once('exit', (code) => reject(new Error(`tshark exited (${code}): ${err}`)));
  });
  ready.catch(() => undefined);
  let stopped: Promise<void> | undefined;

  return {
    ready,
    packets,
    heard(from, to, pt = 8) {
      const win = packets.filter((x) => x.t > from && x.t < to && x.pt === pt);
      const decode = pt === 8 ? alawToLinear : ulawToLinear;
      const samples: number[] = [];
      for (const x of win) {
        for (const b of x.payload) {
          samples.push(decode(b));
        }
      }

      return { packets: win.length, ...analyse(samples) };
    },
    async heardUntil(from, to, pt = 8) {
      const deadline = Date.now() + 1500;
      while (!packets.some((x) => x.t >= to) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }

      return this.heard(from, to, pt);
    },
    stop() {
      stopped ??= (async () => {
        await new Promise((r) => setTimeout(r, 300));
        p.kill('SIGINT');
        await exited;
      })();

      return stopped;
    },
  };
}
