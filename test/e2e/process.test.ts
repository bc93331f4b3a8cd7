import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { WebSocket } from 'ws';
import { projectRoot } from '../../src/util/paths.js';
import { afterEach, describe, expect, it } from 'vitest';
import { freeTcpPort } from '../helpers/env.js';
import { runSipp } from '../helpers/sipp.js';
import { type GatewayProcess, startGatewayProcess } from '../helpers/process.js';

const running: GatewayProcess[] = [];

function start(env: Record<string, string> = {}, args: string[] = []): GatewayProcess {
  const p = startGatewayProcess({ RINGBRIDGE_REDIS__KEY_PREFIX: `rbtest:proc${process.pid}:`, ...env }, args);
  running.push(p);

  return p;
}

async function httpPortOf(p: GatewayProcess): Promise<number> {
  const started = await p.waitForLog('ringbridge gateway started');

  return (started.http as { port: number }).port;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

afterEach(() => {
  for (const p of running.splice(0)) {
    if (p.child.exitCode === null) {
      p.child.kill('SIGKILL');
    }
  }
});

describe('ringbridge process (dist/src/main.js)', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`serves /health and /metrics, then stops cleanly with exit 0 on ${signal}`, async () => {
      const p = start();
      const port = await httpPortOf(p);
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ok' });
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toContain('# TYPE ringbridge_build_info gauge');
      p.child.kill(signal);
      expect(await p.exited).toBe(0);
      expect(p.logs.map((l) => l.msg)).toContain('ringbridge gateway stopped');
      expect(await portAnswers(port)).toBe(false);
    });
  }

  it('refuses to start on a bad configuration value, naming the key, the value and what was expected', async () => {
    const p = start({ RINGBRIDGE_HTTP__PORT: 'eighty' });
    expect(await p.exited).toBe(1);
    expect(p.output()).toContain('http.port = "eighty" (environment variable RINGBRIDGE_HTTP__PORT): expected a value of type number');
  });

  it('starts a local redis-server when none answers on a loopback URL, and stops it on exit', async () => {
    const redisPort = await freeTcpPort();
    const p = start({ RINGBRIDGE_REDIS__URL: `redis://127.0.0.1:${redisPort}`, RINGBRIDGE_REDIS__AUTO_START: 'true' });
    const started = await p.waitForLog(/^started a local redis-server/);
    expect(started).toMatchObject({ port: redisPort, level: 'info' });
    const port = await httpPortOf(p);
    const body = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { components: { redis: unknown } };
    expect(body.components.redis).toMatchObject({ state: 'up', local: true });
    expect(await portAnswers(redisPort)).toBe(true);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(await portAnswers(redisPort)).toBe(false);
  });

  it('exits 1 with a clear message when Redis is unreachable and autoStart is off', async () => {
    const redisPort = await freeTcpPort();
    const p = start({ RINGBRIDGE_REDIS__URL: `redis://127.0.0.1:${redisPort}`, RINGBRIDGE_REDIS__AUTO_START: 'false' });
    expect(await p.exited).toBe(1);
    expect(p.output()).toContain(`redis at 127.0.0.1:${redisPort} does not answer`);
  });

  it('agent-token mints a token the gateway accepts, and says which key to set when there is no secret', async () => {
    const secret = 'a-trial-secret-of-at-least-32-characters!';
    const p = start({ RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET: secret });
    const port = await httpPortOf(p);
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, RINGBRIDGE_PROFILE: 'test', RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET: secret };
    const minted = spawnSync(process.execPath, ['dist/src/cli/agent-token.js', 'agent-7', '--ttl', '15m'], { cwd: projectRoot(), env, encoding: 'utf8' });
    expect(minted.status, minted.stderr).toBe(0);
    const token = minted.stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<{ ok: boolean; data?: { agentId: string } }>((resolve) => {
      ws.on('message', (m: Buffer) => {
        const f = JSON.parse(m.toString('utf8')) as { id?: string; ok: boolean; data?: { agentId: string } };
        if (f.id === 'a') {
          resolve(f);
        }
      });
    });
    ws.send(JSON.stringify({ v: 1, id: 'a', type: 'auth', data: { token } }));
    expect(await reply).toMatchObject({ ok: true, data: { agentId: 'agent-7' } });
    ws.close(1000);
    const none = spawnSync(process.execPath, ['dist/src/cli/agent-token.js', 'agent-7'], { cwd: projectRoot(), env: { PATH: process.env.PATH, HOME: process.env.HOME, RINGBRIDGE_PROFILE: 'test', RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET: '' }, encoding: 'utf8' });
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET');
  }, 60_000);

  it('prints help and version', async () => {
    const help = start({}, ['--help']);
    expect(await help.exited).toBe(0);
    expect(help.output()).toContain('Usage: ringbridge [options]');
    const bad = start({}, ['--bogus']);
    expect(await bad.exited).toBe(2);
    expect(bad.output()).toContain("Unknown option '--bogus'");
  });
});

describe('SIP engine as its own process', () => {
  it('serves a gateway configured with sip.engine = external (srf over the control port)', async () => {
    const controlPort = await freeTcpPort();
    const engine = startGatewayProcess(
      { RINGBRIDGE_SIP__CONTROL__PORT: String(controlPort), RINGBRIDGE_SIP__CONTROL__SECRET: 'e2e-secret' },
      [],
      'dist/src/sip/engine/cli.js',
    );
    running.push(engine);
    const ready = await engine.waitForLog('embedded SIP engine listening');
    const sipTarget = (ready.listeners as string[]).find((l) => l.startsWith('udp/'))!.slice(4);
    const gw = start({
      RINGBRIDGE_SIP__ENGINE: 'external',
      RINGBRIDGE_SIP__CONTROL__PORT: String(controlPort),
      RINGBRIDGE_SIP__CONTROL__SECRET: 'e2e-secret',
    });
    const port = await httpPortOf(gw);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { components: { sip: unknown } };
    expect(health.components.sip).toMatchObject({ state: 'up', mode: 'external', connected: true });
    // an OPTIONS to the engine process is answered by the gateway's srf app
    const r = await runSipp({ scenario: 'uac-options', target: sipTarget });
    expect(r.exitCode, r.describe()).toBe(0);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    engine.child.kill('SIGTERM');
    expect(await engine.exited).toBe(0);
  });

  it('runs the embedded engine in a worker thread with sip.engineThread', async () => {
    const gw = start({ RINGBRIDGE_SIP__ENGINE_THREAD: 'true' });
    const port = await httpPortOf(gw);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { components: { sip: { hostports: string } } };
    expect(health.components.sip).toMatchObject({ state: 'up', mode: 'embedded', connected: true });
    const sipTarget = health.components.sip.hostports.split(',').find((h) => h.startsWith('udp/'))!.slice(4);
    const r = await runSipp({ scenario: 'uac-options', target: sipTarget });
    expect(r.exitCode, r.describe()).toBe(0);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
  });

  it('refuses to run alone without a shared secret', async () => {
    const engine = startGatewayProcess({}, [], 'dist/src/sip/engine/cli.js');
    running.push(engine);
    expect(await engine.exited).toBe(1);
    expect(engine.output()).toContain('sip.control.secret is empty');
  });
});
