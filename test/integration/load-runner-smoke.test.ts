/**
 * Smoke test of the load runner (load/runner): the compiled CLI, run as `npm run load` runs it.
 * One tiny steady scenario (2 calls/s for 4 s, 300 ms ring, 3 s talk) against ringbridge (the
 * gateway as its own process, simulated agents: half with real WebRTC media, half signaling only,
 * every call held, resumed and sent DTMF; a quarter of the rate dialled out by the agents to a
 * sipp UAS on the trunk) and against the peer bridge (Kamailio + rtpengine, sipp callee); then a
 * run interrupted with SIGINT. Figures are checked for sanity, never for speed.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type RunReport } from '../../load/runner/report.js';
import { hasCommand } from '../../src/setup/apt.mjs';
import { projectRoot } from '../../src/util/paths.js';

// sipp, kamailio and rtpengine are test tools the test bootstrap installs (src/setup/bootstrap.mjs TEST_TOOLS).
const runnable = hasCommand('sipp') && fs.existsSync('/usr/share/sip-tester/g711a.pcap');
const peer = hasCommand('kamailio') && hasCommand('rtpengine');
if (!runnable || !peer) {
  console.warn('[load-runner-smoke] skipped in part: sipp, kamailio or rtpengine is missing; run node src/setup/bootstrap.mjs --test as root');
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function startCli(args: string[]): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  const child = spawn(process.execPath, [path.join(projectRoot(), 'dist', 'load', 'runner', 'cli.js'), ...args], { cwd: projectRoot(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Run>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });

  return { child, done };
}

function processesMentioning(text: string): string[] {
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .flatMap((p) => {
      try {
        const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');

        return cmd.includes(text) ? [`${p}: ${cmd}`] : [];
      } catch {
        return [];
      }
    });
}

function readReport(dir: string): { report: RunReport; html: string } {
  return { report: JSON.parse(fs.readFileSync(path.join(dir, 'smoke.json'), 'utf8')) as RunReport, html: fs.readFileSync(path.join(dir, 'smoke.html'), 'utf8') };
}

describe.skipIf(!runnable || !peer)('load runner smoke', () => {
  it('runs a steady scenario on ringbridge and the peer bridge and reports sane figures side by side', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-load-smoke-'));
    const work = path.join(dir, 'work');
    const args = ['--scenario', 'steady', '--rate', '2', '--duration', '4s', '--ring', '300ms', '--talk', '3s', '--media-share', '0.5', '--hold-share', '1', '--dtmf-share', '1', '--outbound-share', '0.25', '--drain', '20s', '--gateway-env', 'RINGBRIDGE_METRICS__QUALITY_INTERVAL_MS=500', '--work-dir', work, '--out', dir, '--name', 'smoke'];
    const r = await startCli(args).done;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stderr).toMatch(/\[ringbridge\] \d+\/4 s {2}attempted \d+/);

    const { report, html } = readReport(dir);
    expect(report.tool).toBe('ringbridge load runner');
    expect(report.interrupted).toBe(false);
    expect(report.command).toContain('--rate 2');
    expect(report.scenario).toMatchObject({ scenario: 'steady', rate: 2, durationMs: 4000, plannedCalls: 8, ringMs: 300, talkMs: 3000 });
    expect(report.machine.tools.sipp).toMatch(/^SIPp v3\./);
    expect(report.machine.cpus).toBeGreaterThan(0);
    expect(report.targets.map((t) => t.name)).toEqual(['ringbridge', 'kamailio+rtpengine']);
    for (const t of report.targets) {
      const why = JSON.stringify({ name: t.name, totals: t.totals, notes: t.notes, extra: t.extra });
      // 8 calls offered in 4 s: ringbridge's trunk places 3/4 of them, the peer's all (sipp may
      // place one more or fewer at the edges); every one answered and ended
      expect(t.totals.attempted, why).toBeGreaterThanOrEqual(t.name === 'ringbridge' ? 4 : 6);
      expect(t.totals.attempted, why).toBeLessThanOrEqual(10);
      expect(t.totals.answered, why).toBe(t.totals.attempted);
      expect(t.totals.failed, why).toBe(0);
      expect(t.totals.completed, why).toBe(t.totals.attempted);
      expect(t.totals.answerRatePct).toBe(100);
      expect(t.totals.peakConcurrent).toBeGreaterThanOrEqual(1);
      // PDD from every call; the answer comes after the 300 ms ring time
      expect(t.pddMs.samples).toBe(t.totals.attempted);
      expect(t.pddMs.p50!).toBeGreaterThan(0);
      expect(t.pddMs.p99!).toBeLessThan(t.answerMs.p50!);
      expect(t.answerMs.p50!).toBeGreaterThanOrEqual(300);
      expect(t.answerMs.p99!).toBeLessThan(10_000);
      // one sample a second, while calling and ending calls
      expect(t.series.t.length).toBeGreaterThanOrEqual(4);
      expect(t.series.attempted[t.series.attempted.length - 1]).toBe(t.totals.attempted);
      expect(t.series.answered[t.series.answered.length - 1]).toBe(t.totals.answered);
      expect(Math.max(...t.series.cps)).toBeGreaterThan(0);
    }
    const [rb, kam] = report.targets;
    // the gateway and its agents were measured; every call was held, resumed and sent DTMF
    expect(rb!.resources.gateway!.rssMbMax).toBeGreaterThan(20);
    expect(rb!.series.cpuPct.gateway!.some((v) => v > 0)).toBe(true);
    // leak curves: the gateway's open descriptors, and its Redis keys every 5 s (calls and agents are in Redis)
    expect(rb!.series.fds!.gateway!.every((v) => v > 10)).toBe(true);
    expect(rb!.series.redisKeys!.filter((v) => v !== null).length).toBeGreaterThan(0);
    expect(Math.max(...rb!.series.redisKeys!.map((v) => v ?? 0))).toBeGreaterThan(5);
    expect(Object.keys(rb!.resources).sort()).toEqual(['agents', 'gateway', 'sipp', 'workers']);
    const agents = rb!.extra.agents as { answered: number; hungUp: number; holds: number; dtmf: number; mediaAgents: number; signalingAgents: number; errors: Record<string, number> };
    expect(agents.answered).toBe(rb!.totals.answered);
    // inbound and outbound calls alike: held, resumed, DTMF, hung up by the agent
    const taken = rb!.totals.answered + (rb!.outbound?.answered ?? 0);
    expect(agents.hungUp).toBe(taken);
    expect(agents.dtmf, JSON.stringify(agents)).toBe(taken);
    expect(agents.holds, JSON.stringify(agents)).toBe(2 * taken);
    expect(agents.mediaAgents).toBeGreaterThan(0);
    // outbound: 2 calls dialled (a quarter of 8), answered by the trunk UAS after the ring time
    const out = rb!.outbound!;
    expect(out.dialed, JSON.stringify(out)).toBe(2);
    expect(out.answered, JSON.stringify(out)).toBe(2);
    expect(out.failed).toBe(0);
    expect(out.pddMs.samples).toBe(2);
    expect(out.answerMs.p50!).toBeGreaterThanOrEqual(300);
    expect(out.trunk?.successful, JSON.stringify(out.trunk)).toBe(2);
    expect(agents.signalingAgents).toBeGreaterThan(0);
    // MOS of the legs, from the gateway's own histogram
    expect(rb!.mos?.count ?? 0, JSON.stringify(rb!.mos)).toBeGreaterThan(0);
    expect(rb!.mos!.mean!).toBeGreaterThan(1);
    expect(rb!.mos!.mean!).toBeLessThanOrEqual(4.5);
    // the peer's processes were measured
    expect(Object.keys(kam!.resources).sort()).toEqual(['kamailio', 'rtpengine', 'sipp']);
    expect(kam!.resources.rtpengine!.rssMbMax).toBeGreaterThan(1);

    // the page: every plot, both targets, no script or external link
    expect(html).toMatch(/^<!doctype html>/);
    expect(html.match(/<svg /g)?.length).toBe(9);
    expect(html).toContain('Open file descriptors');
    expect(html).toContain('Redis keys under the gateway key prefix');
    expect(html).not.toMatch(/<script|\s(?:src|href)=/);
    expect(html).toContain('kamailio+rtpengine');
    expect((html.match(/<path d="M/g) ?? []).length).toBeGreaterThanOrEqual(8);

    expect(processesMentioning(work)).toEqual([]);
  }, 180_000);

  it('stops on SIGINT, ends every process it started and writes the report marked interrupted', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-load-smoke-int-'));
    const work = path.join(dir, 'work');
    const run = startCli(['--rate', '2', '--duration', '5m', '--ring', '200ms', '--talk', '60s', '--drain', '2s', '--target', 'peer', '--work-dir', work, '--out', dir, '--name', 'smoke']);
    let out = '';
    run.child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const t0 = Date.now();
    while (!/attempted [1-9]/.test(out) && Date.now() - t0 < 60_000) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(out).toMatch(/attempted [1-9]/);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(130);
    const { report } = readReport(dir);
    expect(report.interrupted).toBe(true);
    expect(report.targets).toHaveLength(1);
    expect(report.targets[0]!.notes.join(' ')).toMatch(/interrupted at/);
    expect(report.targets[0]!.totals.attempted).toBeGreaterThan(0);
    expect(processesMentioning(work)).toEqual([]);
  }, 120_000);
});
