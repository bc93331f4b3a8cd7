#!/usr/bin/env node
/**
 * Benchmark target: ringbridge's embedded SIP engine with a drachtio-srf B2BUA in the same
 * process, as the gateway runs them. Every INVITE becomes srf.createB2BUA toward the UAS; BYE
 * on either leg ends the other.
 *
 * Usage: node dist/load/sip-bench/engine-b2bua.js --port 5080 [--uas 127.0.0.1:5090] [--address 127.0.0.1]
 *   --port     SIP UDP port of the engine
 *   --uas      where B legs go; default: the host:port of the incoming Request-URI
 *   --address  listen address (default 127.0.0.1)
 *   --thread   run the engine in a worker thread (sip.engineThread)
 * Prints "ready" on stdout once srf is connected. Stops on SIGTERM/SIGINT.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import Srf from 'drachtio-srf';
import { createLogger } from '../../src/log/logger.js';
import { SipEngine } from '../../src/sip/engine/engine.js';
import { SipEngineThread } from '../../src/sip/engine/thread.js';

const { values } = parseArgs({ options: { port: { type: 'string' }, uas: { type: 'string' }, address: { type: 'string' }, thread: { type: 'boolean' }, help: { type: 'boolean' } } });
if (values.help || !values.port) {
  process.stdout.write('Usage: engine-b2bua --port <sip udp port> [--uas host:port] [--address 127.0.0.1] [--thread]\n');
  process.exit(values.help ? 0 : 2);
}

const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
const secret = randomBytes(12).toString('hex');
const address = values.address ?? '127.0.0.1';
const engineOpts = {
  listenAddresses: [address],
  publicAddress: '',
  udp: { enabled: true, port: Number(values.port) },
  tcp: { enabled: false, port: 0 },
  tls: { enabled: false, port: 0, certFile: '', keyFile: '' },
  control: { host: '127.0.0.1', port: 0, secret },
  timers: { t1Ms: 500, t2Ms: 4000, t4Ms: 5000 },
};
// --thread: the engine in a worker thread, as the gateway runs it with sip.engineThread
const engine = values.thread
  ? await SipEngineThread.start({ ...engineOpts, log: { level: process.env.LOG_LEVEL ?? 'warn', pretty: false } })
  : await SipEngine.start({ ...engineOpts, logger });
const srf = new Srf();
await new Promise<void>((resolve, reject) => {
  srf.on('connect', (err: Error | null) => (err ? reject(err) : resolve()));
  srf.on('error', () => undefined);
  void Promise.resolve(srf.connect({ host: '127.0.0.1', port: engine.control.port, secret })).catch(() => undefined);
});

let failures = 0;
srf.invite((req, res) => {
  const user = /^sips?:([^@;]+)@/.exec(req.uri)?.[1] ?? 'service';
  const hostport = values.uas ?? /@([^;>]+)/.exec(req.uri)?.[1] ?? '127.0.0.1';
  srf
    .createB2BUA(req, res, `sip:${user}@${hostport}`, { localSdpB: req.body })
    .then(({ uas, uac }) => {
      uas.on('destroy', () => uac.destroy());
      uac.on('destroy', () => uas.destroy());
    })
    .catch(() => {
      failures++;
    });
});

if (process.env.BENCH_MEM_LOG_MS) {
  // memory and engine table sizes every N ms, on stderr, for leak and retention checks
  setInterval(() => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    void Promise.resolve(engine.stats()).then((stats) =>
      process.stderr.write(`${JSON.stringify({ rssMB: Math.round(m.rss / 1e6), heapMB: Math.round(m.heapUsed / 1e6), engine: stats })}\n`),
    );
  }, Number(process.env.BENCH_MEM_LOG_MS)).unref();
}
process.stdout.write('ready\n');
const stop = () => {
  void Promise.resolve(engine.stats()).then(async (stats) => {
    logger.info({ failures, stats }, 'engine-b2bua stopping');
    srf.disconnect();
    await engine.close();
    process.exit(0);
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
