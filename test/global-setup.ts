/**
 * Runs once before all test files:
 *  - makes sure Redis answers at the test profile's URL (starts a local redis-server if not, and
 *    stops it afterwards), so that tests run against a real Redis on any machine;
 *  - compiles the sources into dist/, because the process tests start the gateway exactly as
 *    `npm start` does.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/log/logger.js';
import { connectRedis, type RedisHandle } from '../src/state/redis.js';
import { projectRoot } from '../src/util/paths.js';

let redis: RedisHandle | undefined;

export async function setup(): Promise<void> {
  const { config } = loadConfig({ profile: 'test', env: {} });
  redis = await connectRedis({ ...config.redis, autoStart: true, logger: createLogger({ level: 'warn' }) });
  if (redis.localServer) {
    console.log(`[global-setup] started a local redis-server for the tests (pid ${redis.localServer.pid})`);
  }
  const root = projectRoot();
  const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')], {
    cwd: root,
    encoding: 'utf8',
  });
  // Type errors are the typecheck step's business (npm test runs it first); tsc still emits
  // JavaScript, so the process tests can run. Only a missing entry point is fatal here.
  if (tsc.status !== 0) {
    console.warn(`[global-setup] tsc reported errors while compiling dist/ (see npm run typecheck):\n${(tsc.stdout + tsc.stderr).split('\n').slice(0, 10).join('\n')}`);
  }
  if (!fs.existsSync(path.join(root, 'dist', 'src', 'main.js'))) {
    throw new Error('compiling dist/ for the process tests produced no dist/src/main.js');
  }
}

export async function teardown(): Promise<void> {
  await redis?.close();
}
