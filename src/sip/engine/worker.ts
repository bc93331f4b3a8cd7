/**
 * Entry of the SIP engine worker thread (see thread.ts): starts a SipEngine from workerData,
 * reports `ready` with its control port, answers `stats`, and on `close` stops the engine and
 * lets the thread end.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../../log/logger.js';
import { SipEngine } from './engine.js';
import { type SipEngineThreadOptions, type WorkerReply } from './thread.js';

const port = parentPort;
if (!port) {
  throw new Error('worker.ts must run in a worker thread');
}
const opts = workerData as SipEngineThreadOptions;
const logger = createLogger({ level: opts.log.level, pretty: opts.log.pretty, base: { thread: 'sip-engine' } });
const post = (m: WorkerReply) => port.postMessage(m);

try {
  const engine = await SipEngine.start({ ...opts, logger });
  port.on('message', (m: { type: string; id?: number }) => {
    if (m.type === 'stats') {
      post({ type: 'stats', id: m.id ?? 0, stats: { ...engine.stats(), dialogs: engine.dialogSummary().counts } });
    } else if (m.type === 'close') {
      void engine.close().then(() => {
        logger.flush();
        post({ type: 'closed' });
        port.close();
      });
    }
  });
  post({ type: 'ready', control: engine.control, listenPoints: [...engine.listenPoints] });
} catch (err) {
  post({ type: 'error', name: (err as Error).name, message: (err as Error).message });
  logger.flush();
  port.close();
}
