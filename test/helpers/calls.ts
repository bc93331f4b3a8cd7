/**
 * Helpers for end-to-end call tests: a gateway in this process on the test profile, agent JWTs,
 * and an independent count of the RTP packets that reach a sipp trunk (tshark on loopback).
 */
import { spawn } from 'node:child_process';
import { SignJWT } from 'jose';
import { type ConfigTree } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { type NodeAgent, startNodeAgent } from './agent.js';
import { deletePrefix, quietLogger, testConfig } from './env.js';

/** The HS256 secret of config/test.yaml. */
export const TEST_JWT_SECRET = 'ringbridge-test-secret-0123456789abcdef';

/** A signed agent token (HS256, sub = agentId). */
export async function agentToken(agentId: string, opts: { expiresInS?: number; notBeforeS?: number; secret?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(agentId).setIssuedAt(now).setExpirationTime(now + (opts.expiresInS ?? 3600));
  if (opts.notBeforeS !== undefined) {
    jwt = jwt.setNotBefore(now + opts.notBeforeS);
  }

  return jwt.sign(Buffer.from(opts.secret ?? TEST_JWT_SECRET));
}

/** A running gateway plus what tests need to reach it. */
export interface CallFixture {
  gw: Gateway;
  /** ws:// URL of /ws. */
  wsUrl: string;
  /** host:port of the gateway's SIP UDP listener. */
  sipTarget: string;
  /** Connects a Node WebRTC agent (real media). */
  agent(agentId: string, opts?: { autoAnswer?: boolean; reconnect?: false; toneHz?: number }): Promise<NodeAgent>;
  close(): Promise<void>;
}

/** Starts a gateway on the test profile with overrides (routing, trunks...). */
export async function startCallGateway(overrides: ConfigTree = {}): Promise<CallFixture> {
  const gw = await Gateway.start(testConfig(overrides), quietLogger());
  const agents: NodeAgent[] = [];
  const udp = gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'udp')!;

  return {
    gw,
    wsUrl: `ws://127.0.0.1:${gw.httpAddress.port}/ws`,
    sipTarget: `127.0.0.1:${udp.port}`,
    async agent(agentId, opts = {}) {
      const a = await startNodeAgent({ url: `ws://127.0.0.1:${gw.httpAddress.port}/ws`, token: () => agentToken(agentId), autoAnswer: opts.autoAnswer ?? false, ...(opts.reconnect === false ? { reconnect: false } : {}), ...(opts.toneHz ? { toneHz: opts.toneHz } : {}) });
      agents.push(a);

      return a;
    },
    async close() {
      await Promise.all(agents.map((a) => a.close()));
      const redis = gw.redis?.client;
      if (redis) {
        await deletePrefix(redis, gw.config.redis.keyPrefix);
      }
      await gw.stop();
    },
  };
}

/** What captureUdp() saw. */
export interface UdpCapture {
  /** Packets to the port. */
  total: number;
  /** RTP packets by payload type (packets that decode as RTP v2). */
  byPayloadType: Map<number, number>;
  /** RFC 4733 event codes seen in packets of `eventPt` (when given), in order, deduplicated per event. */
  events: number[];
}

/**
 * Counts UDP packets sent to a port on loopback with tshark (an observer independent of the
 * gateway), decoding them as RTP. Call stop() to end the capture and get the counts.
 * @param eventPt payload type of telephone-event to decode digits from (RFC 4733)
 */
export function captureUdp(port: number, eventPt?: number): { ready: Promise<void>; stop(): Promise<UdpCapture> } {
  const p = spawn(
    'tshark',
    ['-i', 'lo', '-f', `udp and dst port ${port}`, '-l', '-n', '-d', `udp.port==${port},rtp`, '-T', 'fields', '-E', 'separator=,', '-e', 'rtp.p_type', '-e', 'rtp.timestamp', '-e', 'rtp.payload'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const result: UdpCapture = { total: 0, byPayloadType: new Map(), events: [] };
  const seenEvents = new Set<string>();
  let partial = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') {
        continue;
      }
      result.total++;
      const [pt, ts, payload] = line.split(',');
      const n = Number(pt);
      if (pt !== '' && Number.isFinite(n)) {
        result.byPayloadType.set(n, (result.byPayloadType.get(n) ?? 0) + 1);
        if (eventPt !== undefined && n === eventPt && payload) {
          const code = parseInt(payload.replace(/:/g, '').slice(0, 2), 16);
          const key = `${ts}/${code}`;
          if (!seenEvents.has(key)) {
            seenEvents.add(key);
            result.events.push(code);
          }
        }
      }
    }
  });
  const ready = new Promise<void>((resolve, reject) => {
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (/Capturing on/.test(err)) {
        resolve();
      }
    });
    p.once('exit', (code) => reject(new Error(`tshark exited (${code}): ${err}`)));
  });
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));

  return {
    ready,
    async stop() {
      // give the last packets a moment to be printed
      await new Promise((r) => setTimeout(r, 300));
      p.kill('SIGINT');
      await exited;

      return result;
    },
  };
}
