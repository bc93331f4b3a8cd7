/**
 * A pool of mediasoup workers, one per core by default. A worker that dies is replaced; the
 * pool hands out the least-loaded live worker for each new call router.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as mediasoup from 'mediasoup';
import { type types as ms } from 'mediasoup';
import { type Logger } from '../log/logger.js';

/** Options of MediaWorkerPool.create(). */
export interface MediaWorkerPoolOptions {
  /** Number of workers; 0 means one per CPU core. */
  size: number;
  /** mediasoup worker log level. */
  logLevel: ms.WorkerLogLevel;
  /** First UDP port of the RTP/ICE range (inclusive). */
  rtcMinPort: number;
  /** Last UDP port of the RTP/ICE range (inclusive). */
  rtcMaxPort: number;
  logger: Logger;
  /** Delay before a dead worker is replaced, in ms (default 1000). */
  respawnDelayMs?: number;
}

/** Thrown when mediasoup-worker is missing or a worker cannot start. */
export class MediaWorkerError extends Error {
  override readonly name = 'MediaWorkerError';
  readonly code = 'RB_ERR_MEDIA_WORKER';
}

/** Path of the mediasoup-worker binary mediasoup will run (MEDIASOUP_WORKER_BIN or its default). */
export function mediasoupWorkerBin(): string {
  if (process.env.MEDIASOUP_WORKER_BIN) {
    return process.env.MEDIASOUP_WORKER_BIN;
  }
  const require = createRequire(import.meta.url);
  const pkgDir = path.dirname(require.resolve('mediasoup/package.json'));

  return path.join(pkgDir, 'worker', 'out', 'Release', 'mediasoup-worker');
}

interface Slot {
  index: number;
  worker: ms.Worker | undefined;
  routers: number;
  respawnTimer?: NodeJS.Timeout;
}

/** A live pool of mediasoup workers. Create it with MediaWorkerPool.create(). */
export class MediaWorkerPool {
  readonly #opts: Required<Omit<MediaWorkerPoolOptions, 'logger'>> & { logger: Logger };
  readonly #slots: Slot[] = [];
  #closed = false;
  #deaths = 0;

  private constructor(opts: MediaWorkerPoolOptions) {
    this.#opts = { respawnDelayMs: 1000, ...opts };
  }

  /**
   * Starts the workers.
   * @throws {MediaWorkerError} when the worker binary is missing or a worker fails to start
   */
  static async create(opts: MediaWorkerPoolOptions): Promise<MediaWorkerPool> {
    const bin = mediasoupWorkerBin();
    if (!fs.existsSync(bin)) {
      throw new MediaWorkerError(`mediasoup-worker not found at ${bin}; run "npm run setup" (builds it offline from Debian 12's libraries) or set MEDIASOUP_WORKER_BIN`);
    }
    const pool = new MediaWorkerPool(opts);
    const size = opts.size > 0 ? opts.size : Math.max(1, os.availableParallelism());
    try {
      for (let i = 0; i < size; i++) {
        const slot: Slot = { index: i, worker: undefined, routers: 0 };
        pool.#slots.push(slot);
        await pool.#spawn(slot);
      }
    } catch (err) {
      await pool.close();
      throw new MediaWorkerError(`cannot start mediasoup worker: ${(err as Error).message}`, { cause: err });
    }

    return pool;
  }

  async #spawn(slot: Slot): Promise<void> {
    const { logLevel, rtcMinPort, rtcMaxPort, logger } = this.#opts;
    const worker = await mediasoup.createWorker({ logLevel, rtcMinPort, rtcMaxPort, appData: { slot: slot.index } });
    if (this.#closed) {
      worker.close();

      return;
    }
    slot.worker = worker;
    slot.routers = 0;
    worker.observer.on('newrouter', (router: ms.Router) => {
      slot.routers++;
      router.observer.once('close', () => {
        slot.routers--;
      });
    });
    worker.on('died', (err: Error) => {
      this.#deaths++;
      slot.worker = undefined;
      logger.error({ err, slot: slot.index, workerPid: worker.pid }, 'mediasoup worker died; replacing it');
      this.#scheduleRespawn(slot);
    });
    logger.info({ slot: slot.index, workerPid: worker.pid }, 'mediasoup worker started');
  }

  #scheduleRespawn(slot: Slot): void {
    if (this.#closed) {
      return;
    }
    slot.respawnTimer = setTimeout(() => {
      slot.respawnTimer = undefined;
      this.#spawn(slot).catch((err: unknown) => {
        this.#opts.logger.error({ err, slot: slot.index }, 'cannot replace mediasoup worker; retrying');
        this.#scheduleRespawn(slot);
      });
    }, this.#opts.respawnDelayMs);
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Live workers. */
  get workers(): ms.Worker[] {
    return this.#slots.flatMap((s) => (s.worker && !s.worker.closed ? [s.worker] : []));
  }

  /** Workers that died since the pool started. */
  get deaths(): number {
    return this.#deaths;
  }

  /**
   * The live worker with the fewest routers.
   * @throws {MediaWorkerError} when no worker is alive or the pool is closed
   */
  leastLoaded(): ms.Worker {
    let best: Slot | undefined;
    for (const s of this.#slots) {
      if (s.worker && !s.worker.closed && (!best || s.routers < best.routers)) {
        best = s;
      }
    }
    if (this.#closed || !best?.worker) {
      throw new MediaWorkerError(this.#closed ? 'media worker pool is closed' : 'no mediasoup worker is alive');
    }

    return best.worker;
  }

  /** State for /health: up when every worker is alive, degraded when some are, down when none. */
  /**
   * Each worker slot's state, routers and resource usage (mediasoup getResourceUsage(): CPU time
   * in ms, peak RSS in KiB), for metrics. A dead slot reports alive false and no usage.
   */
  async usage(): Promise<{ slot: number; alive: boolean; routers: number; cpuMs?: number; maxRssKiB?: number }[]> {
    return Promise.all(
      this.#slots.map(async (s) => {
        const w = s.worker && !s.worker.closed ? s.worker : undefined;
        if (!w) {
          return { slot: s.index, alive: false, routers: 0 };
        }
        try {
          const u = await w.getResourceUsage();

          return { slot: s.index, alive: true, routers: s.routers, cpuMs: u.ru_utime + u.ru_stime, maxRssKiB: u.ru_maxrss };
        } catch {
          return { slot: s.index, alive: true, routers: s.routers };
        }
      }),
    );
  }

  health(): { state: 'up' | 'degraded' | 'down'; workers: number; alive: number; routers: number } {
    const alive = this.workers.length;
    const routers = this.#slots.reduce((n, s) => n + (s.worker ? s.routers : 0), 0);
    const state = alive === this.#slots.length && alive > 0 ? 'up' : alive > 0 ? 'degraded' : 'down';

    return { state, workers: this.#slots.length, alive, routers };
  }

  /** Closes every worker (and so every router and transport). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    const exits: Promise<void>[] = [];
    for (const s of this.#slots) {
      if (s.respawnTimer) {
        clearTimeout(s.respawnTimer);
      }
      const w = s.worker;
      s.worker = undefined;
      if (w && !w.closed) {
        exits.push(waitForExit(w.pid));
        w.close();
      }
    }
    await Promise.all(exits);
  }
}

/** Resolves when the process is gone (mediasoup 3.12 has no subprocess-close event), at most 2 s. */
async function waitForExit(pid: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
