/**
 * The call recorder (src/media/recorder.ts) against a real mediasoup worker. The two sources are
 * audio players (src/media/player.ts) producing known tones into the router, standing in for the
 * trunk's and the agent's producers; the file is read back and checked: stereo WAV, length equal
 * to the wall-clock time recorded, the caller's tone on the left and the agent's on the right
 * (Goertzel), a paused source as silence, a replaced agent source, and the router's close.
 */
import dgram from 'node:dgram';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type types as ms } from 'mediasoup';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type AudioSource, loadWavSource } from '../../src/media/audio-source.js';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { encodeG711 } from '../../src/media/g711.js';
import { AudioPlayer } from '../../src/media/player.js';
import { buildRtpPacket } from '../../src/media/rtp/rtp-packet.js';
import { CallRecorder, RecorderCodecError } from '../../src/media/recorder.js';
import { parseWav } from '../../src/media/wav.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { dominant, rms, writeToneWav } from '../helpers/audio.js';
import { quietLogger } from '../helpers/env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The two channels of a stereo 16-bit WAV. */
function channels(buf: Buffer): { left: Int16Array; right: Int16Array; sampleRate: number } {
  const wav = parseWav(buf);
  expect(wav).toMatchObject({ formatTag: 1, channels: 2, bitsPerSample: 16, sampleRate: 8000 });
  const frames = wav.data.length / 4;
  const left = new Int16Array(frames);
  const right = new Int16Array(frames);
  for (let i = 0; i < frames; i++) {
    left[i] = wav.data.readInt16LE(4 * i);
    right[i] = wav.data.readInt16LE(4 * i + 2);
  }

  return { left, right, sampleRate: wav.sampleRate };
}

/** Samples of a window [fromS, toS) in seconds. */
const win = (a: Int16Array, fromS: number, toS: number) => a.subarray(Math.round(fromS * 8000), Math.round(toS * 8000));
const TONES = [440, 660, 1000, 1500];

describe('CallRecorder', () => {
  let pool: MediaWorkerPool;
  let router: ms.Router;
  let dir: string;
  const tone: Record<number, AudioSource> = {};
  const CODEC = { mimeType: 'audio/PCMA', clockRate: 8000 };

  beforeAll(async () => {
    pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 59500, rtcMaxPort: 59999, logger: quietLogger() });
    dir = await mkdtemp(path.join(os.tmpdir(), 'rb-recorder-'));
    for (const hz of [440, 660, 1000]) {
      const file = path.join(dir, `tone-${hz}.wav`);
      await writeToneWav(file, { hz, seconds: 1 });
      tone[hz] = await loadWavSource(file);
    }
  });

  afterAll(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    router = await pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  });

  afterEach(() => {
    router.close();
  });

  const play = (hz: number) => AudioPlayer.create({ router, codec: CODEC, source: tone[hz]!, logger: quietLogger() });

  it('writes both directions into one stereo file as long as the recording, caller left and agent right; a paused source is silence', async () => {
    const caller = await play(1000);
    const agent = await play(440);
    const file = path.join(dir, 'both.wav');
    const t0 = performance.now();
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    await rec.setSource('caller', caller.producer);
    await rec.setSource('agent', agent.producer);
    await sleep(1500);
    agent.pause();
    const pausedAt = (performance.now() - t0) / 1000;
    await sleep(1000);
    agent.resume();
    const resumedAt = (performance.now() - t0) / 1000;
    await sleep(1500);
    const summary = rec.stop();
    const elapsed = performance.now() - t0;
    expect(rec.stop()).toBe(summary);
    await rec.closed;

    const buf = await readFile(file);
    expect(buf.length).toBe(summary.bytes);
    const { left, right } = channels(buf);
    // the file's length is the recording's wall-clock time (create() → stop())
    expect(summary.durationMs).toBe(Math.round((left.length * 1000) / 8000));
    expect(Math.abs(summary.durationMs - elapsed)).toBeLessThan(60);
    expect(rec.packets.caller).toBeGreaterThan(150);
    expect(rec.packets.agent).toBeGreaterThan(100);

    // left: the caller's 1 kHz throughout; right: the agent's 440 Hz, except while paused
    for (const [from, to] of [
      [0.3, 1.3],
      [pausedAt + 0.2, resumedAt - 0.2],
      [resumedAt + 0.3, summary.durationMs / 1000 - 0.1],
    ] as const) {
      expect(dominant(win(left, from, to), TONES, 8000)).toBe(1000);
      expect(rms(win(left, from, to))).toBeGreaterThan(4000);
    }
    expect(dominant(win(right, 0.3, 1.3), TONES, 8000)).toBe(440);
    expect(rms(win(right, 0.3, 1.3))).toBeGreaterThan(4000);
    expect(rms(win(right, pausedAt + 0.15, resumedAt - 0.15))).toBe(0);
    expect(dominant(win(right, resumedAt + 0.3, summary.durationMs / 1000 - 0.1), TONES, 8000)).toBe(440);
    expect(rms(win(right, resumedAt + 0.3, summary.durationMs / 1000 - 0.1))).toBeGreaterThan(4000);
    caller.close();
    agent.close();
  });

  it('switches the agent channel to another producer (a transfer) and keeps the timeline', async () => {
    const caller = await play(1000);
    const first = await play(440);
    const file = path.join(dir, 'switch.wav');
    const t0 = performance.now();
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    await rec.setSource('caller', caller.producer);
    await rec.setSource('agent', first.producer);
    await sleep(1200);
    const second = await play(660);
    await rec.setSource('agent', second.producer);
    const switchedAt = (performance.now() - t0) / 1000;
    first.close();
    await sleep(1200);
    const summary = await rec.close();
    const { left, right } = channels(await readFile(file));
    expect(Math.abs(summary.durationMs - (performance.now() - t0))).toBeLessThan(100);
    expect(dominant(win(right, 0.3, switchedAt - 0.2), TONES, 8000)).toBe(440);
    expect(dominant(win(right, switchedAt + 0.3, summary.durationMs / 1000 - 0.1), TONES, 8000)).toBe(660);
    expect(rms(win(right, switchedAt + 0.3, summary.durationMs / 1000 - 0.1))).toBeGreaterThan(4000);
    expect(dominant(win(left, 0.3, summary.durationMs / 1000 - 0.1), TONES, 8000)).toBe(1000);
    caller.close();
    second.close();
  });

  it('stops when the router closes, with a complete file; a source-less channel is silence', async () => {
    const caller = await play(1000);
    const file = path.join(dir, 'router-close.wav');
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    await rec.setSource('caller', caller.producer);
    const stopped = new Promise<number>((r) => rec.onStop((s) => r(s.durationMs)));
    await sleep(800);
    router.close();
    const durationMs = await stopped;
    expect(rec.stopped).toBe(true);
    const summary = await rec.closed;
    expect(summary.durationMs).toBe(durationMs);
    expect(durationMs).toBeGreaterThan(700);
    const { left, right } = channels(await readFile(file));
    expect(left.length).toBe((summary.bytes - 44) / 4);
    expect(Math.abs((left.length * 1000) / 8000 - durationMs)).toBeLessThanOrEqual(0.5);
    expect(dominant(win(left, 0.2, 0.7), TONES, 8000)).toBe(1000);
    expect(rms(right)).toBe(0);
  });

  it('takes setSource() calls for one channel in order: concurrent switches leave one transport and the last source', async () => {
    const a = await play(440);
    const b = await play(660);
    const c = await play(1000);
    const file = path.join(dir, 'concurrent.wav');
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    const transportsBefore = ((await router.dump()) as { transportIds: string[] }).transportIds.length;
    await Promise.all([rec.setSource('agent', a.producer), rec.setSource('agent', b.producer), rec.setSource('agent', c.producer)]);
    const transportsAfter = ((await router.dump()) as { transportIds: string[] }).transportIds.length;
    expect(transportsAfter - transportsBefore).toBe(1);
    await sleep(1200);
    const summary = await rec.close();
    const { right } = channels(await readFile(file));
    expect(dominant(win(right, 0.4, summary.durationMs / 1000 - 0.1), TONES, 8000)).toBe(1000);
    // close() removed the recorder's transport: the three players' remain
    expect(transportsBefore).toBe(3);
    expect(((await router.dump()) as { transportIds: string[] }).transportIds.length).toBe(3);
    a.close();
    b.close();
    c.close();
  });

  it('refuses G722 and Opus with RecorderCodecError', async () => {
    for (const codec of [
      { mimeType: 'audio/G722', clockRate: 8000 },
      { mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
    ]) {
      await expect(CallRecorder.create({ router, codec, path: path.join(dir, 'x.wav'), logger: quietLogger() })).rejects.toBeInstanceOf(RecorderCodecError);
    }
  });

  it('places RTP by timestamp: a gap in the stream is silence where it was, and timestamp jumps forward or back (stream restarts) do not stretch or overlap the file', async () => {
    // a trunk-like producer fed with hand-made RTP from a Node socket
    const transport = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: true });
    const ssrc = 0x1234abcd;
    const producer = await transport.produce({ kind: 'audio', rtpParameters: { codecs: [{ mimeType: 'audio/PCMA', payloadType: 8, clockRate: 8000 }], encodings: [{ ssrc }] } });
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
    const file = path.join(dir, 'jumps.wav');
    const t0 = performance.now();
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    await rec.setSource('caller', producer);
    // tones with whole periods in 20 ms, so that repeating one packet's payload keeps them pure
    const payloads: Record<number, Buffer> = {};
    for (const hz of [450, 650, 1000]) {
      payloads[hz] = encodeG711('PCMA', Int16Array.from({ length: 160 }, (_, i) => Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * hz * i) / 8000))));
    }
    const PURE = [450, 650, 1000, 1500];
    let seq = 100;
    let ts = 5000;
    const startAt = performance.now() + 100;
    let k = 0;
    /** Sends `n` 20 ms packets of a tone, paced on the clock (packet k at startAt + 20k ms). */
    const send = async (hz: number, n: number) => {
      for (let i = 0; i < n; i++, k++) {
        const due = startAt + 20 * k;
        await sleep(Math.max(0, due - performance.now()));
        socket.send(buildRtpPacket({ payloadType: 8, sequenceNumber: seq++ & 0xffff, timestamp: ts >>> 0, ssrc, payload: payloads[hz] }), transport.tuple.localPort, '127.0.0.1');
        ts += 160;
      }
    };
    const at = (ms: number) => (startAt + ms - t0) / 1000; // file time (s) of a send-schedule time (ms)
    await send(1000, 50); // 0 – 1000 ms
    // 500 ms without packets, timestamps advancing (loss, hold, silence suppression)
    ts += 4000;
    k += 25;
    await send(1000, 50); // 1500 – 2500 ms
    ts += 80_000; // the stream jumps 10 s ahead (a restart): placed on the wall clock again
    await send(650, 50); // 2500 – 3500 ms
    ts -= 200_000; // and back (timestamps that did not advance over a hold): placed again after a few late packets
    await send(450, 50); // 3500 – 4500 ms
    await sleep(400);
    const summary = await rec.close();
    const elapsed = performance.now() - t0;
    socket.close();
    const { left } = channels(await readFile(file));
    // the file is as long as the wall clock ran: no 10 s stretch
    expect(Math.abs(summary.durationMs - elapsed)).toBeLessThan(60);
    expect(dominant(win(left, at(100), at(900)), PURE, 8000)).toBe(1000);
    expect(rms(win(left, at(100), at(900)))).toBeGreaterThan(4000);
    // the gap is silence at its place (allowing 60 ms of delivery jitter at each edge)
    expect(rms(win(left, at(1060), at(1440)))).toBe(0);
    expect(dominant(win(left, at(1600), at(2400)), PURE, 8000)).toBe(1000);
    expect(rms(win(left, at(1600), at(2400)))).toBeGreaterThan(4000);
    // after the jump ahead: the 650 Hz part where it was sent, not 10 s later
    expect(dominant(win(left, at(2600), at(3400)), PURE, 8000)).toBe(650);
    expect(rms(win(left, at(2600), at(3400)))).toBeGreaterThan(4000);
    // after the jump back: at most the first few packets lost, then the 450 Hz part in place
    expect(dominant(win(left, at(3700), at(4400)), PURE, 8000)).toBe(450);
    expect(rms(win(left, at(3700), at(4400)))).toBeGreaterThan(4000);
    expect(rms(win(left, at(4600), summary.durationMs / 1000))).toBe(0);
  });

  it('records only what its own transports send: RTP sent to a recorder socket by another local process is dropped', async () => {
    const caller = await play(1000);
    const agent = await AudioPlayer.create({ router, codec: CODEC, source: tone[440]!, logger: quietLogger(), paused: true });
    const recorderTransports: ms.PlainTransport[] = [];
    router.observer.on('newtransport', (t) => {
      if ((t.appData as { role?: string }).role === 'recorder') {
        recorderTransports.push(t as ms.PlainTransport);
      }
    });
    const file = path.join(dir, 'inject.wav');
    const rec = await CallRecorder.create({ router, codec: CODEC, path: file, logger: quietLogger() });
    await rec.setSource('caller', caller.producer);
    await rec.setSource('agent', agent.producer); // paused: the right channel should stay silent
    expect(recorderTransports).toHaveLength(2);
    // the recorder's sockets are where its transports send (their remote tuple)
    const target = recorderTransports[1]!.tuple.remotePort!;
    const attacker = dgram.createSocket('udp4');
    await new Promise<void>((r) => attacker.bind(0, '127.0.0.1', r));
    const pt = router.rtpCapabilities.codecs!.find((c) => c.mimeType === 'audio/PCMA')!.preferredPayloadType!;
    const payload = encodeG711('PCMA', Int16Array.from({ length: 160 }, (_, i) => Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * 1500 * i) / 8000))));
    for (let i = 0; i < 75; i++) {
      attacker.send(buildRtpPacket({ payloadType: pt, sequenceNumber: i, timestamp: i * 160, ssrc: 0xbad, payload }), target, '127.0.0.1');
      await sleep(20);
    }
    await sleep(400);
    await rec.close();
    attacker.close();
    const { left, right } = channels(await readFile(file));
    expect(rec.packets.agent).toBe(0);
    expect(rms(right)).toBe(0);
    expect(dominant(win(left, 0.5, 1.5), TONES, 8000)).toBe(1000);
    caller.close();
    agent.close();
  });

  it('lets go of the router when stopped: recordings started and stopped on one router leave no listener on it', async () => {
    const before = router.observer.listenerCount('close');
    for (let i = 0; i < 5; i++) {
      const rec = await CallRecorder.create({ router, codec: CODEC, path: path.join(dir, `listeners-${i}.wav`), logger: quietLogger() });
      await rec.close();
    }
    expect(router.observer.listenerCount('close')).toBe(before);
  });
});
