import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type types as ms } from 'mediasoup';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { captureLogger, quietLogger } from '../helpers/env.js';

describe('mediasoup worker built offline', () => {
  let pool: MediaWorkerPool;

  beforeEach(async () => {
    pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 57000, rtcMaxPort: 57999, logger: quietLogger() });
  });

  afterEach(async () => {
    await pool.close();
  });

  it('creates a router with PCMU, PCMA, G722, Opus and telephone-event, a WebRtcTransport and a PlainTransport, and closes them cleanly', async () => {
    const worker = pool.leastLoaded();
    const router = await worker.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    const mimeTypes = router.rtpCapabilities.codecs!.map((c) => `${c.mimeType}/${c.clockRate}`);
    expect(mimeTypes).toEqual(
      expect.arrayContaining(['audio/opus/48000', 'audio/PCMU/8000', 'audio/PCMA/8000', 'audio/G722/8000', 'audio/telephone-event/8000', 'audio/telephone-event/48000']),
    );
    const pcmu = router.rtpCapabilities.codecs!.find((c) => c.mimeType === 'audio/PCMU');
    expect(pcmu?.preferredPayloadType).toBe(0);

    const webrtc = await router.createWebRtcTransport({ listenIps: [{ ip: '127.0.0.1' }], enableUdp: true });
    expect(webrtc.iceCandidates[0]).toMatchObject({ ip: '127.0.0.1', protocol: 'udp' });
    expect(webrtc.iceCandidates[0]!.port).toBeGreaterThanOrEqual(30000);
    expect(webrtc.dtlsParameters.fingerprints.length).toBeGreaterThan(0);

    const plain = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: false, comedia: true });
    expect(plain.tuple.localPort).toBeGreaterThanOrEqual(30000);
    expect(plain.rtcpTuple?.localPort).toBeGreaterThanOrEqual(30000);

    // a PCMU producer on the plain (trunk) side proves the codec list is usable end to end
    const producer = await plain.produce({
      kind: 'audio',
      rtpParameters: { codecs: [{ mimeType: 'audio/PCMU', payloadType: 0, clockRate: 8000 }], encodings: [{ ssrc: 1111 }] },
    });
    expect(producer.kind).toBe('audio');
    expect(pool.health()).toMatchObject({ state: 'up', alive: 1, routers: 1 });

    const closes: string[] = [];
    for (const [name, obj] of [
      ['producer', producer],
      ['webrtc', webrtc],
      ['plain', plain],
      ['router', router],
    ] as const) {
      (obj as { observer: ms.Producer['observer'] }).observer.once('close', () => closes.push(name));
    }
    router.close();
    expect(closes.sort()).toEqual(['plain', 'producer', 'router', 'webrtc']);
    expect(webrtc.closed && plain.closed && producer.closed).toBe(true);
    expect(pool.health().routers).toBe(0);
    expect((await worker.dump()) as { routerIds: string[] }).toMatchObject({ routerIds: [] });
  });

  it('close() stops the worker process and is idempotent', async () => {
    const worker = pool.leastLoaded();
    const pid = worker.pid;
    await pool.close();
    await pool.close();
    expect(worker.closed).toBe(true);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(() => pool.leastLoaded()).toThrow(/closed/);
  });

  it('replaces a worker that dies', async () => {
    const { logger, lines } = captureLogger('info');
    const replacing = await MediaWorkerPool.create({ size: 1, logLevel: 'none', rtcMinPort: 58000, rtcMaxPort: 58999, logger, respawnDelayMs: 50 });
    try {
      const first = replacing.leastLoaded();
      process.kill(first.pid, 'SIGKILL');
      await expect.poll(() => replacing.deaths, { timeout: 5000 }).toBe(1);
      await expect.poll(() => replacing.health().state, { timeout: 5000 }).toBe('up');
      expect(replacing.leastLoaded().pid).not.toBe(first.pid);
      expect(lines().find((l) => l.msg === 'mediasoup worker died; replacing it')).toMatchObject({ level: 'error', workerPid: first.pid });
    } finally {
      await replacing.close();
    }
  });
});
