/**
 * The audio player (src/media/player.ts) against a real mediasoup worker: its producer is consumed
 * on a PlainTransport toward a Node UDP socket, and what arrives there is checked — payload type,
 * 20 ms spacing, sequence and timestamp continuity, the marker bit, pause/resume, looping, and the
 * decoded audio's tone (Goertzel) matching the source.
 */
import dgram from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type types as ms } from 'mediasoup';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AudioSourceError, defaultAudioSource, loadWavSource } from '../../src/media/audio-source.js';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { decodeG711, type G711Law } from '../../src/media/g711.js';
import { AudioPlayer, PlayerCodecError } from '../../src/media/player.js';
import { parseRtpHeader } from '../../src/media/rtp/rtp-packet.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { dominant, goertzel, rms, writeToneWav } from '../helpers/audio.js';
import { quietLogger } from '../helpers/env.js';

interface Received {
  at: number;
  pt: number;
  seq: number;
  ts: number;
  marker: boolean;
  payload: Buffer;
}

/** A consumer of `producer` on a PlainTransport sending to a Node socket; collects the RTP. */
async function listen(router: ms.Router, producer: ms.Producer, mimeType: string): Promise<{ packets: Received[]; close(): void }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const transport = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
  await transport.connect({ ip: '127.0.0.1', port: socket.address().port });
  const cap = router.rtpCapabilities.codecs!.find((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase())!;
  const consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: { codecs: [cap], headerExtensions: [] } });
  const packets: Received[] = [];
  socket.on('message', (msg) => {
    const h = parseRtpHeader(msg);
    if (h && h.payloadType < 64) {
      packets.push({ at: performance.now(), pt: h.payloadType, seq: h.sequenceNumber, ts: h.timestamp, marker: h.marker, payload: msg.subarray(h.payloadOffset, h.payloadOffset + h.payloadLength) });
    }
  });
  expect(consumer.paused).toBe(false);

  return {
    packets,
    close() {
      transport.close();
      socket.close();
    },
  };
}

function decodeAll(law: G711Law, packets: Received[]): Int16Array {
  const out = new Int16Array(packets.reduce((n, p) => n + p.payload.length, 0));
  let at = 0;
  for (const p of packets) {
    at += decodeG711(law, p.payload, out, at);
  }

  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('AudioPlayer', () => {
  let pool: MediaWorkerPool;
  let router: ms.Router;
  let dir: string;
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 59000, rtcMaxPort: 59499, logger: quietLogger() });
    dir = await mkdtemp(path.join(os.tmpdir(), 'rb-player-'));
  });

  afterAll(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    router = await pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  });

  afterEach(() => {
    for (const fn of closers.splice(0)) {
      fn();
    }
    router.close();
  });

  it('plays a WAV file as PCMA in 20 ms packets, drift-free, with continuous sequence and timestamps, looping, and the source tone', async () => {
    const file = path.join(dir, 'tone-1000.wav');
    await writeToneWav(file, { hz: 1000, seconds: 0.5 });
    const source = await loadWavSource(file, 'test.music');
    expect(source.samples.length).toBe(4000);
    expect(await loadWavSource(file)).toBe(source); // cached per path

    const player = await AudioPlayer.create({ router, codec: { mimeType: 'audio/PCMA', clockRate: 8000 }, source, logger: quietLogger() });
    closers.push(() => player.close());
    const rx = await listen(router, player.producer, 'audio/PCMA');
    closers.push(() => rx.close());
    await sleep(2200);
    const packets = rx.packets.slice();
    expect(packets.length).toBeGreaterThan(80);
    expect(new Set(packets.map((p) => p.pt))).toEqual(new Set([8]));
    for (let i = 1; i < packets.length; i++) {
      expect((packets[i]!.seq - packets[i - 1]!.seq) & 0xffff).toBe(1);
      expect((packets[i]!.ts - packets[i - 1]!.ts) >>> 0).toBe(160);
      expect(packets[i]!.payload.length).toBe(160);
    }
    // drift-free: over the whole run, arrival time tracks 20 ms per packet (the loaded test machine
    // jitters single packets, not the total)
    const span = packets.at(-1)!.at - packets[0]!.at;
    expect(span / (packets.length - 1)).toBeGreaterThan(19);
    expect(span / (packets.length - 1)).toBeLessThan(21);
    const gaps = packets.slice(1).map((p, i) => p.at - packets[i]!.at).sort((a, b) => a - b);
    expect(gaps[Math.floor(gaps.length / 2)]).toBeGreaterThan(10);
    expect(gaps[Math.floor(gaps.length / 2)]).toBeLessThan(30);
    // the source is 25 packets long: more than three loops went by, the audio is the 1 kHz tone
    const pcm = decodeAll('PCMA', packets);
    expect(dominant(pcm, [440, 660, 1000, 1500, 2000], 8000)).toBe(1000);
    expect(rms(pcm)).toBeGreaterThan(0.3 * 32767 * 0.6);
    expect(goertzel(pcm, 1000, 8000)).toBeGreaterThan(100 * goertzel(pcm, 1500, 8000));
    expect(player.packetsSent).toBeGreaterThanOrEqual(packets.length);
  });

  it('pauses and resumes: nothing is sent while paused, then the timestamp jumps by the pause and the marker bit is set', async () => {
    const player = await AudioPlayer.create({ router, codec: { mimeType: 'audio/PCMU', clockRate: 8000 }, source: defaultAudioSource(), logger: quietLogger() });
    closers.push(() => player.close());
    const rx = await listen(router, player.producer, 'audio/PCMU');
    closers.push(() => rx.close());
    await sleep(600);
    player.pause();
    expect(player.paused).toBe(true);
    await sleep(100); // packets in flight
    const before = rx.packets.length;
    await sleep(500);
    expect(rx.packets.length).toBe(before);
    player.resume();
    await sleep(400);
    const after = rx.packets.slice(before);
    expect(after.length).toBeGreaterThan(10);
    expect(new Set(rx.packets.map((p) => p.pt))).toEqual(new Set([0]));
    const last = rx.packets[before - 1]!;
    const first = after[0]!;
    expect((first.seq - last.seq) & 0xffff).toBe(1);
    const jump = (first.ts - last.ts) >>> 0;
    expect(jump).toBeGreaterThanOrEqual(8 * 550);
    expect(jump).toBeLessThan(8 * 1000);
    expect(first.marker).toBe(true);
    expect(after.slice(1).some((p) => p.marker)).toBe(false);
    // the default source starts with its 440 Hz note
    const pcm = decodeAll('PCMU', rx.packets.slice(0, 20));
    expect(dominant(pcm, [440, 660, 1000], 8000)).toBe(440);
    expect(rms(pcm)).toBeGreaterThan(1000);
  });

  it('close() is idempotent and closes the producer and transport; closing the router closes the player', async () => {
    const a = await AudioPlayer.create({ router, codec: { mimeType: 'audio/PCMU', clockRate: 8000 }, source: defaultAudioSource(), logger: quietLogger() });
    let closes = 0;
    a.onClose(() => closes++);
    a.close();
    a.close();
    expect(closes).toBe(1);
    expect(a.closed && a.producer.closed && a.transport.closed).toBe(true);
    a.resume(); // no-op after close
    expect(a.paused).toBe(true);

    const b = await AudioPlayer.create({ router, codec: { mimeType: 'audio/PCMA', clockRate: 8000 }, source: defaultAudioSource(), logger: quietLogger() });
    const closed = new Promise<void>((r) => b.onClose(r));
    router.close();
    await closed;
    expect(b.closed && b.producer.closed).toBe(true);
  });

  it('a non-looping source ends once, pausing the player', async () => {
    const file = path.join(dir, 'short.wav');
    await writeToneWav(file, { hz: 660, seconds: 0.1 });
    const player = await AudioPlayer.create({ router, codec: { mimeType: 'audio/PCMU', clockRate: 8000 }, source: await loadWavSource(file), logger: quietLogger(), loop: false });
    closers.push(() => player.close());
    const ended = new Promise<void>((r) => player.onEnd(r));
    await ended;
    expect(player.paused).toBe(true);
    expect(player.packetsSent).toBe(5);
  });

  it('refuses G722 and Opus with PlayerCodecError before creating anything, and files that are not 8 kHz mono 16-bit with an error naming the key', async () => {
    for (const codec of [
      { mimeType: 'audio/G722', clockRate: 8000 },
      { mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
    ]) {
      await expect(AudioPlayer.create({ router, codec, source: defaultAudioSource(), logger: quietLogger() })).rejects.toBeInstanceOf(PlayerCodecError);
    }
    expect(((await router.dump()) as { transportIds: string[] }).transportIds).toEqual([]);

    const wide = path.join(dir, 'tone-16k.wav');
    await writeToneWav(wide, { hz: 1000, seconds: 0.1, sampleRate: 16000 });
    const err = await loadWavSource(wide, 'queues.music').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AudioSourceError);
    expect((err as AudioSourceError).key).toBe('queues.music');
    expect((err as Error).message).toMatch(/^queues\.music: .*8000 Hz.*16000 Hz/);
    const stereo = path.join(dir, 'stereo.wav');
    await writeToneWav(stereo, { hz: 1000, seconds: 0.1, channels: 2 });
    await expect(loadWavSource(stereo, 'k')).rejects.toThrow(/2 channel/);
    await expect(loadWavSource(path.join(dir, 'missing.wav'), 'k2')).rejects.toThrow(/^k2: cannot read .*ENOENT/);
  });
});
