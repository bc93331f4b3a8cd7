/**
 * Cost of call recording and of the audio player: N simulated calls, each a mediasoup router
 * with two audio players (src/media/player.ts, PCMA, standing in for the trunk's and the agent's
 * producers), first without and then with a recorder (src/media/recorder.ts) per call writing a
 * stereo WAV into a temporary directory.
 *
 *   npm run bench:media-rec -- [--calls N] [--seconds S]   (default 20 calls, 10 s per phase)
 *
 * Prints one JSON line: the gateway process's CPU (ms of CPU per second of wall time) for the
 * players alone and the extra for the recorders, per call; the mediasoup worker's CPU the same
 * way; the heap and RSS growth with the recorders; the bytes written; and the load average
 * (other jobs on the machine inflate the figures).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type types as ms } from 'mediasoup';
import { defaultAudioSource } from '../../src/media/audio-source.js';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { AudioPlayer } from '../../src/media/player.js';
import { CallRecorder } from '../../src/media/recorder.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { createLogger } from '../../src/log/logger.js';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '20' }, seconds: { type: 'string', default: '10' }, help: { type: 'boolean', default: false } } });
if (values.help) {
  process.stdout.write('Usage: npm run bench:media-rec -- [--calls N] [--seconds S]\nCPU and memory of the audio player and of call recording per call.\n');
  process.exit(0);
}
const calls = Number(values.calls);
const seconds = Number(values.seconds);
if (!Number.isInteger(calls) || calls < 1 || calls > 500 || !Number.isFinite(seconds) || seconds < 2 || seconds > 600) {
  process.stderr.write('--calls must be 1..500 and --seconds 2..600\n');
  process.exit(2);
}
const logger = createLogger({ level: 'warn' });
const CODEC = { mimeType: 'audio/PCMA', clockRate: 8000 };

/** CPU of this process and of the worker over `s` seconds, ms per second of wall time. */
async function measure(worker: ms.Worker, s: number): Promise<{ processCpuMsPerS: number; workerCpuMsPerS: number }> {
  const u0 = process.cpuUsage();
  const w0 = await worker.getResourceUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, s * 1000));
  const u1 = process.cpuUsage(u0);
  const w1 = await worker.getResourceUsage();
  const wall = (performance.now() - t0) / 1000;

  return { processCpuMsPerS: (u1.user + u1.system) / 1000 / wall, workerCpuMsPerS: (w1.ru_utime + w1.ru_stime - w0.ru_utime - w0.ru_stime) / wall };
}

const pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 40000, rtcMaxPort: 44999, logger });
const dir = await mkdtemp(path.join(os.tmpdir(), 'rb-media-rec-bench-'));
try {
  const worker = pool.leastLoaded();
  const load = os.loadavg()[0]!;
  const routers: ms.Router[] = [];
  const players: AudioPlayer[][] = [];
  for (let i = 0; i < calls; i++) {
    const router = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    routers.push(router);
    players.push([await AudioPlayer.create({ router, codec: CODEC, source: defaultAudioSource(), logger }), await AudioPlayer.create({ router, codec: CODEC, source: defaultAudioSource(), logger })]);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const base = await measure(worker, seconds);
  global.gc?.();
  const mem0 = process.memoryUsage();
  let bytes = 0;
  const recorders: CallRecorder[] = [];
  for (let i = 0; i < calls; i++) {
    const rec = await CallRecorder.create({ router: routers[i]!, codec: CODEC, path: path.join(dir, `call-${i}.wav`), logger, onWrite: (n) => (bytes += n) });
    await rec.setSource('caller', players[i]![0]!.producer);
    await rec.setSource('agent', players[i]![1]!.producer);
    recorders.push(rec);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const withRec = await measure(worker, seconds);
  const mem1 = process.memoryUsage();
  const summaries = await Promise.all(recorders.map((r) => r.close()));
  const sent = players.flat().reduce((n, p) => n + p.packetsSent, 0);
  for (const r of routers) {
    r.close();
  }
  const r2 = (v: number): number => Math.round(v * 100) / 100;
  process.stdout.write(
    `${JSON.stringify({
      calls,
      secondsPerPhase: seconds,
      playersOnly: { processCpuMsPerSPerCall: r2(base.processCpuMsPerS / calls), workerCpuMsPerSPerCall: r2(base.workerCpuMsPerS / calls) },
      recordingExtra: {
        processCpuMsPerSPerCall: r2((withRec.processCpuMsPerS - base.processCpuMsPerS) / calls),
        workerCpuMsPerSPerCall: r2((withRec.workerCpuMsPerS - base.workerCpuMsPerS) / calls),
        heapKiBPerCall: Math.round((mem1.heapUsed - mem0.heapUsed) / 1024 / calls),
        rssKiBPerCall: Math.round((mem1.rss - mem0.rss) / 1024 / calls),
      },
      bytesWritten: bytes,
      recordedMsPerCall: Math.round(summaries.reduce((n, s) => n + s.durationMs, 0) / calls),
      packetsSentByPlayers: sent,
      loadAverage1m: r2(load),
    })}\n`,
  );
} finally {
  await pool.close();
  await rm(dir, { recursive: true, force: true });
}
