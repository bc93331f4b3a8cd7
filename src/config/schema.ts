/**
 * The configuration schema: every key ringbridge reads, its type and its limits.
 *
 * Values come from config/default.yaml (every key, with its default), then the profile file
 * (config/<profile>.yaml), then the file named by RINGBRIDGE_CONFIG, then environment variables
 * (see load.ts). The schema itself holds no defaults: a key missing from the merged result is an
 * error naming the key, and so is a key the schema does not know.
 */
import { z } from 'zod';

const port = z.int().min(1).max(65535);
/** A port, or 0 for "pick a free one" (tests). */
const portOrZero = z.int().min(0).max(65535);
const durationMs = z.int().min(1).max(24 * 3600_000);
const hostOrIp = z.string().min(1);

const logSchema = z.strictObject({
  /** pino level. */
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Human-readable output through pino-pretty instead of JSON lines. */
  pretty: z.boolean(),
});

const nodeSchema = z.strictObject({
  /** Node id in the cluster; empty means "<hostname>-<http port>". */
  id: z.string().regex(/^[A-Za-z0-9._-]{0,64}$/, 'letters, digits, ".", "_" and "-", at most 64'),
});

const httpSchema = z.strictObject({
  /** Address of the HTTP and WebSocket listener (/health, /metrics, /ws). */
  host: hostOrIp,
  port: portOrZero,
});

const sipTransportSchema = z.strictObject({
  enabled: z.boolean(),
  port: portOrZero,
});

const sipTlsSchema = z.strictObject({
  enabled: z.boolean(),
  port: portOrZero,
  /** PEM certificate chain file; required when enabled. */
  certFile: z.string(),
  /** PEM private key file; required when enabled. */
  keyFile: z.string(),
  /** PEM CA bundle for verifying peers (trunks); empty: the system's CAs. */
  caFile: z.string(),
  /** Verify the peer's certificate on outgoing TLS connections. */
  verifyPeer: z.boolean(),
});

const sipLimitsSchema = z.strictObject({
  /** Largest SIP message accepted, bytes. */
  maxMessageBytes: z.int().min(1024).max(1024 * 1024),
  /** Most header lines in one message. */
  maxHeaders: z.int().min(16).max(4096),
  /** Most concurrent TCP/TLS connections. */
  maxConnections: z.int().min(1).max(1_000_000),
  /** TCP/TLS connections idle this long are closed, ms. */
  idleTimeoutMs: durationMs,
});

const sipSchema = z.strictObject({
  /**
   * embedded: the TypeScript SIP engine runs inside the gateway process.
   * external: drachtio-srf connects to a drachtio-server (or a separately run engine) at
   * sip.control.host:port.
   */
  engine: z.enum(['embedded', 'external']),
  /**
   * With the embedded engine: run it in a worker thread of the gateway process (its own core for
   * parsing, transactions and transports), else on the main thread.
   */
  engineThread: z.boolean(),
  /** Addresses the SIP transports listen on (IPv4 and/or IPv6). */
  listenAddresses: z.array(hostOrIp).min(1),
  /** Address put in Via/Contact/SDP when the listen address is a wildcard or behind NAT; empty: auto. */
  publicAddress: z.string(),
  udp: sipTransportSchema,
  tcp: sipTransportSchema,
  tls: sipTlsSchema,
  control: z.strictObject({
    /** Control-port address the engine listens on (embedded) or srf connects to (external). */
    host: hostOrIp,
    port: portOrZero,
    /**
     * Shared secret of the drachtio control protocol. Empty with the embedded engine: a random
     * secret per process (the control port then only serves the gateway itself). Required with an
     * external engine.
     */
    secret: z.string(),
  }),
  limits: sipLimitsSchema,
  timers: z.strictObject({
    /** RFC 3261 T1, round-trip estimate (default 500 ms). */
    t1Ms: durationMs,
    /** RFC 3261 T2, maximum retransmit interval for non-INVITE requests and INVITE responses. */
    t2Ms: durationMs,
    /** RFC 3261 T4, maximum time a message remains in the network. */
    t4Ms: durationMs,
  }),
});

const mediaSchema = z.strictObject({
  /** mediasoup workers; 0 means one per CPU core. */
  workers: z.int().min(0).max(256),
  /** mediasoup worker log level. */
  logLevel: z.enum(['debug', 'warn', 'error', 'none']),
  /** Address RTP and ICE sockets bind to. */
  listenIp: hostOrIp,
  /** Address announced in SDP and ICE candidates; empty: the listen address. */
  announcedAddress: z.string(),
  rtcMinPort: port,
  rtcMaxPort: port,
});

const redisSchema = z.strictObject({
  /** redis:// or rediss:// URL. */
  url: z.string().regex(/^rediss?:\/\/[^\s]+$/, 'a redis:// or rediss:// URL'),
  /** Prefix of every key ringbridge writes (cluster name). */
  keyPrefix: z.string().regex(/^[A-Za-z0-9:._-]{1,64}$/, '1 to 64 letters, digits, ":", ".", "_" or "-"'),
  /**
   * When the URL points at loopback and nothing answers there, start a local redis-server
   * (installing Debian's redis-server when missing). Meant for the embedded defaults.
   */
  autoStart: z.boolean(),
  /** Connect timeout in ms. */
  connectTimeoutMs: durationMs,
});

const metricsSchema = z.strictObject({
  /** Prefix of every metric name. */
  prefix: z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, 'a Prometheus metric name prefix'),
  /** Export prom-client's Node.js process metrics. */
  defaultMetrics: z.boolean(),
});

const shutdownSchema = z.strictObject({
  /** Longest time a SIGTERM/SIGINT shutdown may take before the process exits anyway (ms). */
  timeoutMs: durationMs,
});

/** The whole configuration. */
export const configSchema = z
  .strictObject({
    node: nodeSchema,
    log: logSchema,
    http: httpSchema,
    sip: sipSchema,
    media: mediaSchema,
    redis: redisSchema,
    metrics: metricsSchema,
    shutdown: shutdownSchema,
  })
  .superRefine((cfg, ctx) => {
    if (cfg.media.rtcMinPort >= cfg.media.rtcMaxPort) {
      ctx.addIssue({
        code: 'custom',
        path: ['media', 'rtcMaxPort'],
        message: `a port above media.rtcMinPort (${cfg.media.rtcMinPort})`,
      });
    }
    if (cfg.sip.engine === 'external' && cfg.sip.control.secret === '') {
      ctx.addIssue({
        code: 'custom',
        path: ['sip', 'control', 'secret'],
        message: 'a non-empty shared secret because sip.engine is "external"',
      });
    }
    if (cfg.sip.tls.enabled) {
      for (const key of ['certFile', 'keyFile'] as const) {
        if (cfg.sip.tls[key] === '') {
          ctx.addIssue({
            code: 'custom',
            path: ['sip', 'tls', key],
            message: 'a file path because sip.tls.enabled is true',
          });
        }
      }
    }
  });

/** The validated configuration. */
export type Config = z.infer<typeof configSchema>;
