import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway.js';
import { LocalRedisServer } from '../../src/state/redis.js';
import { deletePrefix, freeTcpPort, quietLogger, testConfig } from '../helpers/env.js';

describe('Gateway (in process)', () => {
  let gw: Gateway;
  let base: string;

  beforeAll(async () => {
    gw = await Gateway.start(testConfig(), quietLogger());
    base = `http://127.0.0.1:${gw.httpAddress.port}`;
  });

  afterAll(async () => {
    const redis = gw.redis?.client;
    if (redis) {
      await deletePrefix(redis, gw.config.redis.keyPrefix);
    }
    await gw.stop();
  });

  it('GET /health answers 200 with each component state', async () => {
    const res = await fetch(`${base}/health`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      status: 'ok',
      components: {
        http: { state: 'up' },
        redis: { state: 'up', status: 'ready' },
        media: { state: 'up', workers: 1, alive: 1 },
        sip: { state: 'up', mode: 'embedded', connected: true },
      },
    });
    expect(body.node).toMatch(/-\d+$/);
  });

  it('GET /metrics serves Prometheus text that promtool accepts', async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('ringbridge_process_cpu_user_seconds_total');
    expect(text).toMatch(/ringbridge_build_info\{version="\d+\.\d+\.\d+",node_version="v20\.[^"]+"\} 1/);
    expect(text).toContain('ringbridge_component_up{component="redis"} 1');
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.error).toBeUndefined();
    expect(`${check.stdout}${check.stderr}`).toBe('');
    expect(check.status).toBe(0);
  });

  it('exports exactly the pinned ringbridge metric families (a rename or a removal is a conscious change)', async () => {
    const text = await (await fetch(`${base}/metrics`)).text();
    const families = [...text.matchAll(/^# TYPE (ringbridge_\S+) (\S+)$/gm)]
      .map((m) => `${m[1]} ${m[2]}`)
      .filter((l) => !/^ringbridge_(nodejs_|process_)/.test(l))
      .sort();
    // push metrics (ringbridge_push_*, ringbridge_wake_*) appear once a push channel is enabled (test/e2e/wake.test.ts)
    expect(families).toEqual([
      'ringbridge_agents gauge',
      'ringbridge_build_info gauge',
      'ringbridge_call_answer_seconds histogram',
      'ringbridge_call_duration_seconds histogram',
      'ringbridge_call_pdd_seconds histogram',
      'ringbridge_calls_active gauge',
      'ringbridge_calls_finished_total counter',
      'ringbridge_calls_low_mos_total counter',
      'ringbridge_component_up gauge',
      'ringbridge_leg_jitter_seconds histogram',
      'ringbridge_leg_mos histogram',
      'ringbridge_leg_packet_loss_ratio histogram',
      'ringbridge_leg_rtt_seconds histogram',
      'ringbridge_mediasoup_worker_cpu_seconds_total counter',
      'ringbridge_mediasoup_worker_deaths_total counter',
      'ringbridge_mediasoup_worker_max_rss_bytes gauge',
      'ringbridge_mediasoup_worker_routers gauge',
      'ringbridge_mediasoup_workers gauge',
      'ringbridge_queue_calls gauge',
      'ringbridge_queue_calls_total counter',
      'ringbridge_queue_wait_seconds histogram',
      'ringbridge_recording_bytes_total counter',
      'ringbridge_recording_failures_total counter',
      'ringbridge_recordings_active gauge',
      'ringbridge_redis_command_duration_seconds histogram',
      'ringbridge_redis_command_errors_total counter',
      'ringbridge_security_rejections_total counter',
      'ringbridge_sip_requests_total counter',
      'ringbridge_sip_responses_total counter',
      'ringbridge_ws_sessions gauge',
    ]);
  });

  it('answers 404 for unknown paths and 405 for other methods', async () => {
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    const post = await fetch(`${base}/health`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('answers 400 to a request target that is not a URL (plain request and WebSocket upgrade) and keeps serving', async () => {
    const { port } = new URL(base);
    const raw = (request: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = net.connect(Number(port), '127.0.0.1', () => sock.write(request));
        let got = '';
        sock.on('data', (d: Buffer) => {
          got += d.toString('latin1');
        });
        sock.on('end', () => resolve(got));
        sock.on('error', reject);
        sock.setTimeout(5000, () => sock.destroy(new Error('no answer')));
      });
    expect(await raw('GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw('GET //[ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect((await fetch(`${base}/health`)).status).toBe(200);
  });

});

describe('Gateway health follows Redis', () => {
  it('reports Redis down (503) while it is unreachable and up again after it returns', async () => {
    const port = await freeTcpPort();
    const logger = quietLogger();
    let server = await LocalRedisServer.start('127.0.0.1', port, logger);
    const gw = await Gateway.start(testConfig({ redis: { url: `redis://127.0.0.1:${port}`, autoStart: false } }), logger);
    try {
      const url = `http://127.0.0.1:${gw.httpAddress.port}/health`;
      expect((await fetch(url)).status).toBe(200);
      await server.stop();
      await expect.poll(async () => (await fetch(url)).status, { timeout: 5000 }).toBe(503);
      const down = (await (await fetch(url)).json()) as { status: string; components: { redis: { state: string } } };
      expect(down).toMatchObject({ status: 'down', components: { redis: { state: 'down' } } });
      server = await LocalRedisServer.start('127.0.0.1', port, logger);
      await expect.poll(async () => (await fetch(url)).status, { timeout: 10_000 }).toBe(200);
    } finally {
      await gw.stop();
      await server.stop();
    }
  });
});
