/** Starting the compiled gateway (dist/src/main.js) as a real process, as `npm start` does. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../../src/util/paths.js';

/** A gateway process under test. */
export interface GatewayProcess {
  child: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: Record<string, unknown>[];
  /** stdout + stderr so far. */
  output: () => string;
  /** Resolves with the first log line matching `msg`. */
  waitForLog(msg: string | RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

/**
 * Spawns `node dist/src/main.js` (or another compiled entry, relative to the project root) with
 * the test profile and extra environment.
 */
export function startGatewayProcess(env: Record<string, string> = {}, args: string[] = [], entry = 'dist/src/main.js'): GatewayProcess {
  const root = projectRoot();
  const child = spawn(process.execPath, [path.join(root, entry), ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, RINGBRIDGE_PROFILE: 'test', RINGBRIDGE_LOG__LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let partial = '';
  const logs: Record<string, unknown>[] = [];
  const waiters: { re: RegExp; resolve: (l: Record<string, unknown>) => void }[] = [];
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        for (const w of [...waiters]) {
          if (w.re.test(String(rec.msg))) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(rec);
          }
        }
      } catch {
        // not JSON (pretty output or help text)
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));

  return {
    child,
    logs,
    output: () => out,
    exited,
    waitForLog(msg, timeoutMs = 15_000) {
      const re = typeof msg === 'string' ? new RegExp(`^${msg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) : msg;
      const found = logs.find((l) => re.test(String(l.msg)));
      if (found) {
        return Promise.resolve(found);
      }

      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no log line ${String(msg)} within ${timeoutMs} ms; output:\n${out}`)), timeoutMs);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
        void exited.then((code) => {
          clearTimeout(t);
          reject(new Error(`gateway exited (${code}) before logging ${String(msg)}; output:\n${out}`));
        });
      });
    },
  };
}
