/**
 * Smoke test of the calls benchmark (load/calls-bench): the compiled CLI, run as
 * `npm run bench:calls` runs it, for one tiny step of 3 concurrent calls measured for 5 s. The
 * gateway runs as its own process, the agents are real WebRTC peers (@roamhq/wrtc + the client
 * SDK) in a child process, sipp is the trunk with looping G.711 audio, dumpcap records the trunk
 * side. Figures are only checked for sanity (everything up, little loss, CPU measured), never for
 * speed: speed is the benchmark's own report.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { type CallsBenchReport } from '../../load/calls-bench/bench.js';
import { hasCommand } from '../../src/setup/apt.mjs';
import { projectRoot } from '../../src/util/paths.js';

// sipp (sip-tester) and dumpcap (wireshark-common, with tshark) are test tools the test
// bootstrap installs (src/setup/bootstrap.mjs TEST_TOOLS). Without dumpcap the benchmark still
// runs, with --no-capture (no agent → trunk loss figure).
const runnable = hasCommand('sipp') && fs.existsSync('/usr/share/sip-tester/g711a.pcap');
const capture = hasCommand('dumpcap');
if (!runnable) {
  console.warn('[calls-bench-smoke] skipped: sipp or /usr/share/sip-tester/g711a.pcap is missing; as root run: apt-get install -y sip-tester');
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot(), 'dist', 'load', 'calls-bench', 'run.js'), ...args], {
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

describe.skipIf(!runnable)('calls-bench smoke (3 concurrent calls, 5 s window)', () => {
  it('brings every call up with audio both ways, reports sane figures, then leaves nothing behind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-calls-bench-smoke-'));
    const json = path.join(dir, 'report.json');
    const work = path.join(dir, 'work');
    const args = ['--steps', '3', '--window', '5s', '--settle', '2s', '--rate', '5', '--stop-loss', '0', '--json', json, '--work-dir', work, ...(capture ? [] : ['--no-capture'])];
    const r = await runCli(args);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/highest step held end to end|no step held end to end/);

    const report = JSON.parse(fs.readFileSync(json, 'utf8')) as CallsBenchReport;
    expect(report.tool).toBe('ringbridge calls-bench');
    expect(report.command).toContain('--steps 3');
    expect(report.host.sipp).toMatch(/^SIPp v3\./);
    expect(report.aborted).toBeNull();
    expect(report.steps).toHaveLength(1);
    const s = report.steps[0]!;
    const why = JSON.stringify({ notes: s.notes, established: s.established, sipp: s.sipp, agentMedia: s.agentMedia, trunkMedia: s.trunkMedia, warnings: report.gateway.warnings });

    // Every call up at the agents, the gateway and sipp, for the whole window; sipp saw them all succeed.
    expect(s.calls).toBe(3);
    expect(s.established, why).toEqual({ agents: 3, gateway: 3, routers: 3, sipp: 3 });
    expect(s.minLiveInWindow, why).toBe(3);
    expect(s.allEstablished, why).toBe(true);
    expect(s.sipp, why).toMatchObject({ attempted: 3, successful: 3, failed: 0, exit: 0 });
    expect(s.agentCounters.answered).toBe(3);
    expect(s.agentCounters.answerErrors).toBe(0);
    expect(s.setupMs.samples).toBe(3);

    // Audio trunk → agents: every call received 20 ms packets throughout, little loss (a loaded
    // 2-core machine may cost a packet or two; a broken path costs everything).
    expect(s.agentMedia.calls, why).toBe(3);
    expect(s.agentMedia.silent, why).toBe(0);
    expect(s.agentMedia.notConnected, why).toBe(0);
    expect(s.agentMedia.rxPpsPerCall, why).toBeGreaterThan(40);
    expect(s.agentMedia.rxPpsPerCall, why).toBeLessThan(60);
    expect(s.agentMedia.txPpsPerCall, why).toBeGreaterThan(40);
    expect(s.lossToAgentCountPct, why).toBeLessThan(5);
    expect(s.lossToAgentPct, why).toBeLessThan(5);
    if (capture) {
      // Agents → trunk, as sipp's media port saw it; and what the gateway sent each way.
      const t = s.trunkMedia!;
      expect(t, why).not.toBeNull();
      expect(t.fromTrunk.streams, why).toBe(3);
      expect(t.toAgents.streams, why).toBe(3);
      expect(t.toTrunk.streams, why).toBe(3);
      expect(t.fromAgents.streams, why).toBe(3);
      expect(t.toTrunk.ppsPerStream, why).toBeGreaterThan(40);
      expect(t.toTrunk.ppsPerStream, why).toBeLessThan(60);
      expect(s.lossToTrunkPct, why).toBeLessThan(5);
      expect(s.lossToAgentAtGatewayPct, why).toBeLessThan(5);
      expect(s.lossToTrunkAtGatewayPct, why).toBeLessThan(5);
      expect(t.toTrunk.jitterMeanMs).toBeGreaterThanOrEqual(0);
      expect(t.toTrunk.jitterMeanMs).toBeLessThan(100);
    }

    // CPU and memory were measured for every process group.
    expect(s.cpu.gatewayMain).toBeGreaterThan(0);
    expect(s.cpu.mediasoupWorkers).toBeGreaterThan(0);
    expect(s.cpu.agents).toBeGreaterThan(0);
    expect(s.cpu.machine).toBeGreaterThan(0);
    expect(s.cpu.machine).toBeLessThanOrEqual(100 * os.cpus().length + 5);
    expect(s.gatewayCpuPerCallPct).toBeGreaterThan(0);
    expect(s.mem.gatewayMainRssMb).toBeGreaterThan(20);
    expect(s.mem.gatewayMainRssMb).toBeLessThan(2048);
    expect(s.mem.workersRssMb).toBeGreaterThan(1);
    expect(s.mem.agentsRssMb).toBeGreaterThan(20);
    expect(report.baseline.mem.gatewayMainRssMb).toBeGreaterThan(20);

    // Hung up cleanly: the gateway let go of every call and router, the agents too.
    expect(s.afterTeardown.activeCalls, why).toBe(0);
    expect(s.afterTeardown.routers, why).toBe(0);
    expect(s.agentCounters.activeCalls).toBe(0);
    expect(s.agentCounters.ended).toBe(3);

    // Nothing left running: not the gateway, its workers, the agent processes, sipp or dumpcap;
    // and no Redis key under the run's prefix.
    const { gateway, workers, agents } = report.processes;
    expect(gateway).toBeGreaterThan(0);
    expect(workers.length).toBeGreaterThan(0);
    expect(agents.length).toBeGreaterThan(0);
    for (const pid of [gateway, ...workers, ...agents]) {
      expect(cmdline(pid), `pid ${pid}`).not.toMatch(/dist\/src\/main\.js|mediasoup-worker|agent-worker\.js/);
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
