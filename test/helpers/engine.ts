/**
 * An embedded SIP engine on loopback with a drachtio-srf app connected to it, for the engine's
 * integration tests. Everything is real: UDP/TCP sockets, the control port, srf from npm.
 */
import Srf from 'drachtio-srf';
import { type Logger } from '../../src/log/logger.js';
import { SipEngine, type SipEngineOptions } from '../../src/sip/engine/engine.js';
import { type SipProtocol } from '../../src/sip/engine/transport/types.js';
import { quietLogger } from './env.js';

/** A running engine plus connected srf apps. */
export interface EngineFixture {
  engine: SipEngine;
  /** The first connected app. */
  srf: Srf;
  /** `host:port` of the engine's listener for a transport (what sipp targets). */
  target(protocol?: SipProtocol): string;
  /** The engine's port for a transport. */
  port(protocol?: SipProtocol): number;
  /** Connects one more srf app (tags optional). */
  connectApp(tags?: string[]): Promise<Srf>;
  /** Disconnects the apps and stops the engine. */
  close(): Promise<void>;
}

/** Options of startEngine(). */
export interface EngineFixtureOptions {
  /** Timer bases (ms); tests of timeouts shrink T1. */
  timers?: Partial<SipEngineOptions['timers']>;
  listenAddresses?: string[];
  tls?: SipEngineOptions['tls'];
  limits?: SipEngineOptions['limits'];
  /** Control-port limits (authentication deadline, connections per source, wrong secrets). */
  control?: Pick<SipEngineOptions['control'], 'authTimeoutMs' | 'maxConnectionsPerSource' | 'maxAuthFailures'>;
  logger?: Logger;
  /** The scanner and unknown-source screen (off by default). */
  screen?: SipEngineOptions['screen'];
  /** RFC 5626 STUN keep-alives on the UDP port (off by default). */
  stunKeepAlives?: SipEngineOptions['stunKeepAlives'];
}

/** Connects an srf app to an engine's control port; resolves on its `connect` event. */
export async function connectSrf(engine: SipEngine, tags: string[] = []): Promise<Srf> {
  const srf = tags.length > 0 ? new Srf(tags) : new Srf();
  const c = engine.control;
  await new Promise<void>((resolve, reject) => {
    srf.on('connect', (err: Error | null) => (err ? reject(err) : resolve()));
    srf.on('error', () => undefined);
    void Promise.resolve(srf.connect({ host: c.host, port: c.port, secret: c.secret })).catch(() => undefined);
  });

  return srf;
}

/** Starts an engine on loopback (UDP and TCP on one free port) and connects one srf app. */
export async function startEngine(opts: EngineFixtureOptions = {}): Promise<EngineFixture> {
  const engine = await SipEngine.start({
    listenAddresses: opts.listenAddresses ?? ['127.0.0.1'],
    publicAddress: '',
    udp: { enabled: true, port: 0 },
    tcp: { enabled: true, port: 0 },
    tls: opts.tls ?? { enabled: false, port: 0, certFile: '', keyFile: '' },
    control: { host: '127.0.0.1', port: 0, secret: 'test-secret', ...opts.control },
    timers: { t1Ms: 500, t2Ms: 4000, t4Ms: 5000, ...opts.timers },
    limits: opts.limits,
    ...(opts.screen ? { screen: opts.screen } : {}),
    ...(opts.stunKeepAlives ? { stunKeepAlives: opts.stunKeepAlives } : {}),
    logger: opts.logger ?? quietLogger(),
  });
  const apps: Srf[] = [];
  const srf = await connectSrf(engine);
  apps.push(srf);
  const port = (protocol: SipProtocol = 'udp') => {
    const p = engine.listenPoints.find((l) => l.protocol === protocol);
    if (!p) {
      throw new Error(`engine has no ${protocol} listener`);
    }

    return p.port;
  };

  return {
    engine,
    srf,
    port,
    target: (protocol: SipProtocol = 'udp') => {
      const p = engine.listenPoints.find((l) => l.protocol === protocol)!;

      return `${p.address.includes(':') ? `[${p.address}]` : p.address}:${p.port}`;
    },
    async connectApp(tags?: string[]) {
      const s = await connectSrf(engine, tags);
      apps.push(s);

      return s;
    },
    async close() {
      for (const a of apps) {
        try {
          a.disconnect();
        } catch {
          // already gone
        }
      }
      await engine.close();
    },
  };
}

/** A minimal SDP offer/answer body (PCMU), for apps that must supply one. */
export function sdp(port = 40000, address = '127.0.0.1'): string {
  return ['v=0', `o=- 1 1 IN IP4 ${address}`, 's=-', `c=IN IP4 ${address}`, 't=0 0', `m=audio ${port} RTP/AVP 0 101`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=sendrecv', ''].join('\r\n');
}
