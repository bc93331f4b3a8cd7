/**
 * Smoke test of the SIP benchmark (load/sip-bench): the compiled CLI, run as `npm run bench:sip`
 * runs it, against Debian's kamailio for one short step at 20 calls/s.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type BenchReport } from '../../load/sip-bench/bench.js';
import { hasCommand, isRoot } from '../../src/setup/apt.mjs';
import { projectRoot } from '../../src/util/paths.js';

// The test bootstrap installs kamailio (TEST_TOOLS); without it the harness installs it itself
// as root. Only a non-root run without kamailio, or RINGBRIDGE_NO_APT=1, cannot run this.
const canInstall = isRoot() && process.env.RINGBRIDGE_NO_APT !== '1';
const runnable = hasCommand('kamailio') || canInstall;
if (!runnable) {
  console.warn('[sip-bench-smoke] skipped: kamailio is not installed and this run cannot install it (not root, or RINGBRIDGE_NO_APT=1); as root run: apt-get install -y kamailio');
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist', 'load', 'sip-bench', 'run.js'), ...args], {
      cwd: projectRoot(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function processesMentioning(text: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(text)) {
        out.push(`${pid}: ${cmd}`);
      }
    } catch {
      // gone
    }
  }

  return out;
}

describe.skipIf(!runnable)('sip-bench smoke (kamailio, 20 cps for 3 s)', () => {
  it('completes at least 99 % of the calls and reports sane figures, then leaves no process behind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-sip-bench-smoke-'));
    const json = path.join(dir, 'report.json');
    const r = await runCli(['--target', 'kamailio', '--rates', '20', '--duration', '3s', '--json', json, '--work-dir', path.join(dir, 'work')]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/completed %/);
    expect(r.stdout).toMatch(/highest rate with >= 99\.9 % completed: 20 cps|no step reached 99\.9 % completed/);

    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as BenchReport;
    expect(report.target.kind).toBe('kamailio');
    expect(report.target.description).toMatch(/^kamailio 5\.6\./);
    expect(report.host.sipp).toMatch(/^SIPp v3\./);
    expect(report.steps).toHaveLength(1);
    const step = report.steps[0]!;
    expect(step.rate).toBe(20);
    expect(step.planned).toBe(60);
    expect(step.attempted).toBe(60);
    expect(step.completionPct).toBeGreaterThanOrEqual(99);
    expect(step.completed + step.failed + step.unfinished).toBe(step.attempted);
    expect(step.uacExit).toEqual([0]);
    // Post-dial delay on loopback: measured for every call, well under 100 ms.
    expect(step.pddMs.samples).toBeGreaterThanOrEqual(step.completed);
    expect(step.pddMs.p50).toBeGreaterThan(0);
    expect(step.pddMs.p50).toBeLessThan(100);
    expect(step.pddMs.p99).toBeGreaterThanOrEqual(step.pddMs.p50!);
    expect(step.answerMs?.p50).toBeGreaterThanOrEqual(step.pddMs.p50!);
    // kamailio did some work, sipp too; kamailio's processes hold tens of MiB, not gigabytes.
    expect(step.targetCpuPct).toBeGreaterThan(0);
    expect(step.targetCpuPct).toBeLessThan(100);
    expect(step.targetRssMb).toBeGreaterThan(5);
    expect(step.targetRssMb).toBeLessThan(2048);
    expect(step.uacCpuPct).toBeGreaterThan(0);
    expect(step.uasCpuPct).toBeGreaterThan(0);
    expect(step.wallS).toBeLessThan(15);
    if (step.completionPct >= 99.9) {
      expect(report.ceiling).toEqual({ rate: 20, completionPct: step.completionPct, threshold: 99.9 });
    }
    expect(report.command).toContain('--rates 20');

    // Nothing left running: no kamailio on the target port, no sipp writing into the work directory.
    expect(processesMentioning(`udp:127.0.0.1:${report.target.port}`)).toEqual([]);
    expect(processesMentioning(path.join(dir, 'work'))).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
