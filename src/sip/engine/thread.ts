/**
 * The embedded SIP engine in a worker thread of the gateway process. Parsing, transactions and
 * transports then run on their own core, beside the drachtio-srf application and the rest of the
 * gateway on the main thread; srf still reaches the engine through its control port over loopback,
 * exactly as it would reach drachtio-server.
 *
 * The thread runs worker.js (compiled); from TypeScript sources (tests under vitest) there is no
 * such file, so callers use the in-process SipEngine there.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { type SipEngineOptions } from './engine.js';
import { type ListenPoint } from './transport/types.js';
import { type TransportStats } from './transport/transport-layer.js';

/** Engine options that can cross into a worker (no logger object: the thread makes its own). */
export type SipEngineThreadOptions = Omit<SipEngineOptions, 'logger'> & {
  log: { level: string; pretty: boolean };
};

/** Messages from the worker. */
export type WorkerReply =
  | { type: 'ready'; control: { host: string; port: number; secret: string }; listenPoints: ListenPoint[] }
  | { type: 'error'; message: string; name: string }
  | { type: 'stats'; id: number; stats: unknown }
  | { type: 'closed' };

/** Thrown when the engine thread cannot start. */
export class SipEngineThreadError extends Error {
  override readonly name = 'SipEngineThreadError';
}

/** The compiled worker entry next to this module, if it exists (not when running from .ts). */
export function engineWorkerFile(): string | undefined {
  const url = new URL('./worker.js', import.meta.url);
  const file = fileURLToPath(url);

  return import.meta.url.endsWith('.js') && existsSync(file) ? file : undefined;
}

/** A running engine thread. Create it with SipEngineThread.start(). */
export class SipEngineThread {
  readonly #worker: Worker;
  readonly control: { host: string; port: number; secret: string };
  readonly listenPoints: readonly ListenPoint[];
  #nextId = 1;
  readonly #pending = new Map<number, (stats: unknown) => void>();
  #closed?: Promise<void>;

  private constructor(worker: Worker, ready: Extract<WorkerReply, { type: 'ready' }>) {
    this.#worker = worker;
    this.control = ready.control;
    this.listenPoints = ready.listenPoints;
    worker.on('message', (m: WorkerReply) => {
      if (m.type === 'stats') {
        this.#pending.get(m.id)?.(m.stats);
        this.#pending.delete(m.id);
      }
    });
  }

  /**
   * Starts the thread and waits until its engine listens.
   * @throws {SipEngineThreadError} when the worker file is missing or the engine cannot start
   */
  static async start(opts: SipEngineThreadOptions): Promise<SipEngineThread> {
    const file = engineWorkerFile();
    if (!file) {
      throw new SipEngineThreadError('the SIP engine thread needs the compiled worker.js (run from dist/)');
    }
    const worker = new Worker(file, { workerData: opts, name: 'sip-engine' });
    const ready = await new Promise<Extract<WorkerReply, { type: 'ready' }>>((resolve, reject) => {
      const onMessage = (m: WorkerReply) => {
        if (m.type === 'ready') {
          cleanup();
          resolve(m);
        } else if (m.type === 'error') {
          cleanup();
          reject(new SipEngineThreadError(`SIP engine thread failed to start: ${m.name}: ${m.message}`));
        }
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new SipEngineThreadError(`SIP engine thread exited with code ${code} while starting`));
      };
      const onError = (err: Error) => {
        cleanup();
        reject(new SipEngineThreadError(`SIP engine thread crashed while starting: ${err.message}`));
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
        worker.off('error', onError);
      };
      worker.on('message', onMessage);
      worker.once('exit', onExit);
      worker.once('error', onError);
    }).catch(async (err: unknown) => {
      await worker.terminate();
      throw err;
    });

    return new SipEngineThread(worker, ready);
  }

  /** Counters and table sizes of the engine, fetched from the thread. */
  async stats(): Promise<unknown> {
    const id = this.#nextId++;
    const p = new Promise<unknown>((resolve) => this.#pending.set(id, resolve));
    this.#worker.postMessage({ type: 'stats', id });

    return p;
  }

  /** Whether the thread is still running. */
  get alive(): boolean {
    return this.#closed === undefined && this.#worker.threadId > 0;
  }

  /** Stops the engine and the thread. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => void this.#worker.terminate().then(() => resolve()), 5000);
      this.#worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.#worker.postMessage({ type: 'close' });
    });

    return this.#closed;
  }
}

export type { TransportStats };
