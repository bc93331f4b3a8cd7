/**
 * Metrics of the gateway's own machinery: mediasoup workers (alive or dead, routers, CPU time and
 * peak memory per worker slot, read when Prometheus scrapes) and Redis (command latency by command
 * and errors, measured around every command the client sends). Labels: worker slot numbers (as
 * many as media.workers) and Redis command names (the fixed set ringbridge issues).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { type MediaWorkerPool } from '../media/worker-pool.js';

/** Worker metrics from the pool, read at each scrape. */
export function registerWorkerMetrics(registry: Registry, prefix: string, pool: () => MediaWorkerPool | undefined): void {
  let last: ReturnType<MediaWorkerPool['usage']> | undefined;
  const usage = (): ReturnType<MediaWorkerPool['usage']> => {
    last ??= (pool()?.usage() ?? Promise.resolve([])).finally(() => setImmediate(() => (last = undefined)));

    return last;
  };
  const registers = [registry];
  new Gauge({
    name: `${prefix}mediasoup_workers`,
    help: 'mediasoup worker slots by state (alive, dead: died and not yet replaced).',
    labelNames: ['state'],
    registers,
    async collect() {
      const u = await usage();
      this.set({ state: 'alive' }, u.filter((x) => x.alive).length);
      this.set({ state: 'dead' }, u.filter((x) => !x.alive).length);
    },
  });
  new Counter({
    name: `${prefix}mediasoup_worker_deaths_total`,
    help: 'mediasoup workers that died (each is replaced within about a second; a rate shows a crash loop).',
    registers,
    collect() {
      this.reset();
      this.inc(pool()?.deaths ?? 0);
    },
  });
  new Gauge({
    name: `${prefix}mediasoup_worker_routers`,
    help: 'Routers (one per call with media) on each mediasoup worker slot.',
    labelNames: ['worker'],
    registers,
    async collect() {
      this.reset();
      for (const x of await usage()) {
        this.set({ worker: String(x.slot) }, x.routers);
      }
    },
  });
  new Counter({
    name: `${prefix}mediasoup_worker_cpu_seconds_total`,
    help: 'CPU time (user + system) of each mediasoup worker slot\'s current process.',
    labelNames: ['worker'],
    registers,
    async collect() {
      this.reset();
      for (const x of await usage()) {
        if (x.cpuMs !== undefined) {
          this.inc({ worker: String(x.slot) }, x.cpuMs / 1000);
        }
      }
    },
  });
  new Gauge({
    name: `${prefix}mediasoup_worker_max_rss_bytes`,
    help: 'Peak resident memory of each mediasoup worker slot\'s current process.',
    labelNames: ['worker'],
    registers,
    async collect() {
      this.reset();
      for (const x of await usage()) {
        if (x.maxRssKiB !== undefined) {
          this.set({ worker: String(x.slot) }, x.maxRssKiB * 1024);
        }
      }
    },
  });
}

/** What instrumentRedis needs of an ioredis client or cluster. */
export interface CommandSender {
  sendCommand(command: { name: string; promise: Promise<unknown> }, ...rest: unknown[]): unknown;
}

/**
 * Measures every Redis command the client sends: latency histogram and error counter by command
 * name. Wraps the client's sendCommand once; idempotent.
 */
export function instrumentRedis(registry: Registry, prefix: string, client: CommandSender): void {
  const marked = client as CommandSender & { __rbInstrumented?: true };
  if (marked.__rbInstrumented) {
    return;
  }
  marked.__rbInstrumented = true;
  const latency = new Histogram({
    name: `${prefix}redis_command_duration_seconds`,
    help: 'Redis commands from send to reply, by command.',
    labelNames: ['command'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const errors = new Counter({ name: `${prefix}redis_command_errors_total`, help: 'Redis commands that failed (error reply, connection lost, timeout), by command.', labelNames: ['command'], registers: [registry] });
  const original = client.sendCommand.bind(client);
  client.sendCommand = (command, ...rest) => {
    const started = performance.now();
    const name = /^[a-z]{1,20}$/i.test(command.name) ? command.name.toLowerCase() : 'other';
    command.promise.then(
      () => latency.observe({ command: name }, (performance.now() - started) / 1000),
      () => errors.inc({ command: name }),
    );

    return original(command, ...rest);
  };
}
