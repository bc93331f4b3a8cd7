/**
 * Smoke test of the wake benchmark (load/wake-bench): the compiled CLI, run as `npm run bench:wake`
 * runs it, for 10 calls at 5/s. The gateway, the local APNs and sipp run as their own processes;
 * dumpcap and tshark read the wire when they are installed. Figures are only checked for sanity
 * (every call woke its agent's device once, the delays are positive and far below a second),
 * never for speed: speed is the benchmark's own report.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { type WakeBenchReport } from '../../load/wake-bench/bench.js';
import { hasCommand } from '../../src/setup/apt.mjs';
import { projectRoot } from '../../src/util/paths.js';

// sipp (sip-tester), dumpcap and tshark are test tools the test bootstrap installs.
const runnable = hasCommand('sipp') && hasCommand('openssl');
const capture = hasCommand('dumpcap') && hasCommand('tshark');
if (!runnable) {
  console.warn('[wake-bench-smoke] skipped: sipp or openssl is missing; as root run: apt-get install -y sip-tester');
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist', 'load', 'wake-bench', 'run.js'), ...args], { cwd: projectRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Command line of a process, '' when it is gone. */
function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function processesMentioning(text: string): string[] {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => [p, cmdline(Number(p))] as const)
    .filter(([, cmd]) => cmd.includes(text))
    .map(([pid, cmd]) => `${pid}: ${cmd}`);
}

describe.skipIf(!runnable)('wake-bench smoke (10 calls at 5/s)', () => {
  it('pairs every call with its wake push, reports sane delays, then leaves nothing behind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-wake-bench-smoke-'));
    const json = path.join(dir, 'report.json');
    const work = path.join(dir, 'work');
    const r = await runCli(['--rate', '5', '--duration', '2s', '--warmup', '3', '--json', json, '--work-dir', work, ...(capture ? [] : ['--no-capture'])]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/target p99 < 20\.?\d* ms (met|NOT met)/);

    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as WakeBenchReport;
    const why = JSON.stringify({ calls: report.calls, pushes: report.pushes, notes: report.notes, warnings: report.gateway.warnings });
    expect(report.tool).toBe('ringbridge wake-bench');
    expect(report.command).toContain('--rate 5');
    expect(report.host.sipp).toMatch(/^SIPp v3\./);

    // 10 calls, each rang for the ring timeout and ended in 480; one wake push and one missed-call notice each.
    expect(report.calls, why).toMatchObject({ planned: 10, invites: 10, ended480: 10, noFinal: 0, sippExit: 0 });
    expect(report.pushes, why).toMatchObject({ wake: 10, wakeAccepted: 10, notices: 10, distinctCallIds: 10, refused: {}, jwtFailures: 0, sessions: 1 });
    expect(report.activeCallsAfter).toBe(0);

    const sane = (l: { samples: number; p50: number | null; max: number | null }, samples = 10): void => {
      expect(l.samples, why).toBe(samples);
      expect(l.p50!, why).toBeGreaterThan(0);
      expect(l.max!, why).toBeLessThan(1000);
    };
    sane(report.app.wakePush);
    expect(report.app, why).toMatchObject({ callsMissingPushes: 0, callsWithExtraPushes: 0, unpaired: 0 });
    sane(report.sip.inviteTo180);
    expect(report.sip.inviteTo480.p50!).toBeGreaterThan(900); // the ring timeout (1 s)
    if (capture) {
      const w = report.wire!;
      expect(w, why).not.toBeNull();
      sane(w.wakePush);
      expect(w, why).toMatchObject({ callsMissingPushes: 0, callsWithExtraPushes: 0, unpaired: 0, negative: 0 });
      expect(w.invitesSeen).toBe(13); // warm-up included
      expect(w.pushesSeen).toBe(26); // a wake push and a notice per call
      expect(report.target.source).toBe('wire');
    }
    expect(report.cpu.gatewayMain).toBeGreaterThan(0);
    expect(report.mem.gatewayMainRssMb).toBeGreaterThan(20);

    // Nothing left running (gateway, its workers, the provider, sipp, dumpcap); no Redis key under the run's prefix.
    const { gateway, workers, provider, sipp } = report.processes;
    for (const pid of [gateway, ...workers, provider, ...sipp]) {
      expect(cmdline(pid), `pid ${pid}`).not.toMatch(/dist\/src\/main\.js|mediasoup-worker|provider\.js|sipp/);
    }
    expect(processesMentioning(work)).toEqual([]);
    const prefix = report.gateway.env.RINGBRIDGE_REDIS__KEY_PREFIX!;
    expect(prefix).toMatch(/^rbbench:/);
    const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      expect(await redis.keys(`${prefix}*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});
