/**
 * The gateway under test as a separate process, exactly as `npm start` runs it
 * (`node dist/src/main.js`), on the test profile (loopback only, the loopback trunk, the test
 * HS256 secret) with environment overrides for the benchmark: free HTTP and SIP ports, its own
 * Redis key prefix, port ranges away from the tests' ones, long ring and RTP timeouts, and the
 * agents' routing.
 */
import http from 'node:http';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { projectRoot } from '../../src/util/paths.js';
import { type BenchProcess, pickFreePort, spawnBenchProcess, waitListening } from '../sip-bench/procs.js';
import { commOf } from './sysinfo.js';

/** How calls find agents. */
export type RoutingMode = 'group' | 'dids';

/** Options of the gateway process. */
export interface GatewayOptions {
  agentIds: string[];
  routing: RoutingMode;
  /** mediasoup workers; 0 = one per core. */
  workers: number;
  logLevel: string;
  rtcPorts: { min: number; max: number };
  relayPorts: { min: number; max: number };
  /** Further RINGBRIDGE_* variables (override the ones above). */
  extraEnv: Record<string, string>;
}

/** /health, reduced to what the benchmark follows. */
export interface GatewayHealth {
  status: string;
  routers: number;
  workersAlive: number;
  activeCalls: number;
  sessions: number;
  suspended: number;
}

/** A running gateway. */
export interface GatewayUnderTest {
  proc: BenchProcess;
  httpPort: number;
  sipPort: number;
  keyPrefix: string;
  /** The env overrides it runs with (for the report). */
  env: Record<string, string>;
  /** The HS256 secret of its configuration (the test profile's). */
  hs256Secret: string;
  /** ws:// URL of /ws. */
  wsUrl: string;
  /** Called number (Request-URI user) of each agent in `dids` mode, or the group's catch-all. */
  didOf(agentIndex: number): string;
  health(): Promise<GatewayHealth>;
  /** GET /metrics as text. */
  metrics(): Promise<string>;
  /** The node process (main thread, libuv and V8 threads). */
  mainPid(): number;
  /** The mediasoup worker processes. */
  workerPids(): number[];
  stop(): Promise<void>;
}

function get(port: number, pathname: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${pathname} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A value of a Prometheus text exposition (first sample of that name), or undefined. */
export function metricValue(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+|NaN)$`, 'm').exec(text);

  return m ? Number(m[1]) : undefined;
}

/** The did of agent i in `dids` mode. */
export const agentDid = (i: number): string => `+1555${String(1_000_000 + i)}`;

/** Starts the gateway and waits until /health says ok. */
export async function startGateway(o: GatewayOptions): Promise<GatewayUnderTest> {
  const { config } = loadConfig({ profile: 'test', env: {} });
  const hs256Secret = config.signaling.auth.hs256Secret;
  if (!hs256Secret) {
    throw new Error('config/test.yaml has no signaling.auth.hs256Secret; the agents cannot sign their tokens');
  }
  const httpPort = pickFreePort();
  const sipPort = pickFreePort();
  const keyPrefix = `rbbench:${process.pid}:`;
  const routing =
    o.routing === 'group'
      ? {
          RINGBRIDGE_ROUTING__GROUPS: JSON.stringify([{ id: 'bench', members: o.agentIds, strategy: 'longest-idle' }]),
          RINGBRIDGE_ROUTING__DIDS: JSON.stringify([{ number: '*', group: 'bench' }]),
        }
      : { RINGBRIDGE_ROUTING__GROUPS: '[]', RINGBRIDGE_ROUTING__DIDS: JSON.stringify(o.agentIds.map((a, i) => ({ number: agentDid(i), agent: a }))) };
  const env: Record<string, string> = {
    RINGBRIDGE_PROFILE: 'test',
    RINGBRIDGE_LOG__LEVEL: o.logLevel,
    RINGBRIDGE_HTTP__PORT: String(httpPort),
    RINGBRIDGE_SIP__UDP__PORT: String(sipPort),
    RINGBRIDGE_SIP__TCP__ENABLED: 'false',
    RINGBRIDGE_MEDIA__WORKERS: String(o.workers),
    RINGBRIDGE_MEDIA__RTC_MIN_PORT: String(o.rtcPorts.min),
    RINGBRIDGE_MEDIA__RTC_MAX_PORT: String(o.rtcPorts.max),
    RINGBRIDGE_MEDIA__RELAY_MIN_PORT: String(o.relayPorts.min),
    RINGBRIDGE_MEDIA__RELAY_MAX_PORT: String(o.relayPorts.max),
    RINGBRIDGE_REDIS__KEY_PREFIX: keyPrefix,
    RINGBRIDGE_CALLS__RING_TIMEOUT_MS: '120000',
    RINGBRIDGE_CALLS__RING_STEP_MS: '60000',
    RINGBRIDGE_CALLS__RTP_TIMEOUT_MS: '3600000',
    RINGBRIDGE_SIGNALING__HEARTBEAT_INTERVAL_MS: '15000',
    RINGBRIDGE_SIGNALING__RESUME_GRACE_MS: '60000',
    RINGBRIDGE_SHUTDOWN__TIMEOUT_MS: '20000',
    ...routing,
    ...o.extraEnv,
  };
  const proc = spawnBenchProcess('gateway', process.execPath, [path.join(projectRoot(), 'dist', 'src', 'main.js')], {
    cwd: projectRoot(),
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...(process.env.MEDIASOUP_WORKER_BIN ? { MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN } : {}), ...(process.env.RINGBRIDGE_CACHE_DIR ? { RINGBRIDGE_CACHE_DIR: process.env.RINGBRIDGE_CACHE_DIR } : {}), ...env },
  });
  await waitListening(proc, httpPort, 'tcp', 60_000);
  const gw: GatewayUnderTest = {
    proc,
    httpPort,
    sipPort,
    keyPrefix,
    env,
    hs256Secret,
    wsUrl: `ws://127.0.0.1:${httpPort}/ws`,
    didOf: (i) => (o.routing === 'dids' ? agentDid(i) : 'bench'),
    async health() {
      const r = await get(httpPort, '/health');
      const h = JSON.parse(r.body) as {
        status: string;
        components: { media?: { routers?: number; alive?: number }; calls?: { active?: number }; signaling?: { connected?: number; suspended?: number } };
      };

      return {
        status: h.status,
        routers: h.components.media?.routers ?? -1,
        workersAlive: h.components.media?.alive ?? -1,
        activeCalls: h.components.calls?.active ?? -1,
        sessions: h.components.signaling?.connected ?? -1,
        suspended: h.components.signaling?.suspended ?? -1,
      };
    },
    async metrics() {
      return (await get(httpPort, '/metrics')).body;
    },
    mainPid: () => proc.pid,
    workerPids: () => proc.tree().filter((p) => p !== proc.pid && commOf(p).startsWith('mediasoup-work')),
    async stop() {
      await proc.stop(25_000);
    },
  };
  const t0 = Date.now();
  for (;;) {
    try {
      const h = await gw.health();
      if (h.status === 'ok' && h.workersAlive > 0) {
        break;
      }
    } catch {
      // not yet
    }
    if (proc.hasExited() || Date.now() - t0 > 60_000) {
      const out = proc.output();
      await proc.stop(2000);
      throw new Error(`the gateway did not become healthy: ${(out.stderr + out.stdout).trim().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  return gw;
}
