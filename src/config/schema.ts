/**
 * The configuration schema: every key ringbridge reads, its type and its limits.
 *
 * Values come from config/default.yaml (every key, with its default), then the profile file
 * (config/<profile>.yaml), then the file named by RINGBRIDGE_CONFIG, then environment variables
 * (see load.ts). The schema itself holds no defaults: a key missing from the merged result is an
 * error naming the key, and so is a key the schema does not know.
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { pushConfigSchema } from '../push/config.js';
import { cdrWebhookConfigSchema } from '../calls/cdr-webhook-config.js';
import { checkSipDevices, sipDevicesConfigSchema } from '../sip/registrar/config.js';

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

const httpTlsSchema = z.strictObject({
  /** Serve HTTPS and WSS on http.port instead of plain HTTP and WS. */
  enabled: z.boolean(),
  /** PEM certificate chain file; required when enabled. Reloaded when it changes. */
  certFile: z.string(),
  /** PEM private key file; required when enabled. Reloaded when it changes. */
  keyFile: z.string(),
});

const httpSchema = z.strictObject({
  /** Address of the HTTP and WebSocket listener (/health, /metrics, /ws). */
  host: hostOrIp,
  port: portOrZero,
  tls: httpTlsSchema,
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
  /** Addresses the SIP transports listen on (IPv4 and/or IPv6 literals). */
  listenAddresses: z.array(z.union([z.ipv4(), z.ipv6()], { error: 'an IPv4 or IPv6 address' })).min(1),
  /** Address put in Via/Contact/SDP when the listen address is a wildcard or behind NAT; empty: auto. */
  publicAddress: z.string(),
  /**
   * SIP proxies (IPs or CIDR blocks) whose `X-RB-Source` header names a trunk request's real
   * source: the Kamailio dispatcher (docker/kamailio). A trunk INVITE from one of them is admitted
   * by the address in that header instead of the proxy's (src/sip/trunks.ts trunkSource()).
   * Empty: the header is never believed.
   */
  trustedProxies: z.array(
    z.string().refine((s) => {
      const [addr = '', bits, ...rest] = s.split('/');
      if (rest.length > 0 || (bits !== undefined && !/^\d{1,3}$/.test(bits))) {
        return false;
      }
      const v4 = ipaddr.IPv4.isValidFourPartDecimal(addr);
      if (!v4 && !ipaddr.IPv6.isValid(addr)) {
        return false;
      }

      return bits === undefined || Number(bits) <= (v4 ? 32 : 128);
    }, 'an IPv4/IPv6 address or CIDR block, e.g. 10.0.0.10 or 10.0.0.0/24'),
  ),
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

const codecName = z.enum(['PCMU', 'PCMA', 'G722', 'opus']);
const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'an IP address or CIDR block, e.g. 203.0.113.0/24');

const trunkSchema = z.strictObject({
  /** Stable id (letters, digits, "-", "_"), used in logs, metrics labels and call records. */
  id: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, '1 to 32 letters, digits, "-" or "_"'),
  inbound: z.strictObject({
    /** Source addresses allowed to send calls (IP or CIDR). Empty: only digest auth admits. */
    allow: z.array(cidr),
    /** Digest credentials the trunk must present (RFC 3261 §22); empty username: none. */
    auth: z.strictObject({ username: z.string(), password: z.string(), realm: z.string() }),
  }),
  outbound: z.strictObject({
    /** Where calls to this trunk go: a SIP URI (host, port, transport); empty: no outbound calls. */
    uri: z.string(),
    /** Outbound proxy URI used as next hop (the Request-URI stays the trunk's); empty: none. */
    proxy: z.string(),
    /** Digest credentials for the trunk's challenges; empty username: none. */
    auth: z.strictObject({ username: z.string(), password: z.string() }),
    /** Number presented as caller (From user) on outbound calls; empty: the agent id. */
    callerId: z.string(),
  }),
  /** Codecs allowed on this trunk, in preference order for our offers. */
  codecs: z.array(codecName).min(1),
  media: z.strictObject({
    /** Learn the trunk's RTP address from its first packet (trunks behind NAT, RFC 4961). */
    latching: z.boolean(),
    /**
     * SDES-SRTP (RFC 4568, AES_CM_128_HMAC_SHA1_80), only on dialogs over SIP TLS: "optional"
     * (the default) answers RTP/SAVP with a=crypto when offered and plain RTP otherwise, and our
     * own offers are plain RTP; "required" refuses plain RTP offers and late offers (488) and
     * offers RTP/SAVP on outbound calls (outbound.uri must then be sips: or ;transport=tls);
     * "off" refuses RTP/SAVP offers (488).
     */
    srtp: z.enum(['off', 'optional', 'required']).optional(),
  }),
  /**
   * Most concurrent calls on this trunk, inbound and outbound, counted across the cluster in
   * Redis; more inbound INVITEs get 503, more agent dials CALL_LIMIT. 0 (the default, as a trunk
   * in a list takes no defaults from default.yaml): no cap.
   */
  maxConcurrentCalls: z.int().min(0).max(1_000_000).default(0),
  /** Record every answered call of this trunk (both directions, see `recording`). Default false. */
  recording: z.boolean().default(false),
  /**
   * A REFER from this trunk inside an established call (RFC 3515, src/calls/call-centre.ts):
   * "off" (the default) refuses it with 403; "any" accepts a Refer-To number under the agent's
   * dialling policy: 202, NOTIFY message/sipfrag progress, the agent's audio moved to the new party,
   * then the referring dialog ends. "internal" (Refer-To routed as one of our DIDs) is accepted in
   * the configuration but not built yet: such a REFER gets 501.
   */
  refer: z.enum(['off', 'internal', 'any']).default('off'),
});

const routingSchema = z.strictObject({
  /**
   * Called number (Request-URI user) → target. Exact match first ("+" and no "+" are the same),
   * then the entry "*" as the default.
   */
  dids: z.array(
    z.union([
      /** record: record every answered call to this number (see `recording`); default false. */
      z.strictObject({ number: z.string().min(1), agent: z.string().min(1), record: z.boolean().optional() }),
      z.strictObject({ number: z.string().min(1), group: z.string().min(1), record: z.boolean().optional() }),
    ]),
  ),
  groups: z.array(
    z.strictObject({
      id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, '1 to 64 letters, digits, "-" or "_"'),
      /** Agent ids (the JWT agent claim). */
      members: z.array(z.string().min(1)).min(1),
      /** ring-all: every available member at once; longest-idle: one at a time, longest idle first. */
      strategy: z.enum(['ring-all', 'longest-idle']),
      /**
       * A queue (src/calls/call-centre.ts): a call to the group while no member is available is
       * answered and waits, hearing `music`, until a member is free (longest waiting first, one
       * order for the whole cluster in Redis); after `maxWaitS` the fallback takes it. Absent: such
       * a call gets 480 as before.
       */
      queue: z
        .strictObject({
          enabled: z.boolean().default(true),
          /** Longest wait in the queue, s; then the fallback. */
          maxWaitS: z.int().min(1).max(86_400).default(300),
          /**
           * Most callers waiting in this group's queue on one node (each holds a mediasoup router,
           * RTP relay ports and a player); a call to the full queue is refused as if the group had
           * no queue (480; a transfer to the group: UNAVAILABLE).
           */
          maxCallers: z.int().min(1).max(10_000).default(50),
          /**
           * Audio played to waiting callers, looped: a WAV file, PCM 16-bit mono 8000 Hz
           * (src/media/audio-source.ts); empty: the built-in chime. Only G.711 calls hear it (the
           * player encodes PCMU/PCMA); others wait in silence.
           */
          music: z.string().default(''),
          /**
           * After maxWaitS: hang up (BYE with an RFC 3326 Reason carrying this SIP status), ring an
           * agent or another group (without queueing again), or dial a number toward the trunk.
           */
          fallback: z
            .union([
              z.strictObject({ hangup: z.strictObject({ status: z.int().min(400).max(699) }) }),
              z.strictObject({ agent: z.string().min(1) }),
              z.strictObject({ group: z.string().min(1) }),
              z.strictObject({ number: z.string().regex(/^\+?[0-9*#]{2,32}$/, 'a dialable number') }),
            ])
            .default({ hangup: { status: 480 } }),
        })
        .optional(),
    }),
  ),
  /** Trunk for agents' outbound calls when call.dial names none; empty: the first trunk with an outbound uri. */
  defaultTrunk: z.string(),
});

const signalingSchema = z.strictObject({
  auth: z.strictObject({
    algorithms: z.array(z.enum(['HS256', 'RS256', 'ES256'])).min(1),
    /** HS256 shared secret (≥ 32 bytes); empty: HS256 tokens are refused. */
    hs256Secret: z.string(),
    /** PEM (SPKI) public keys for RS256/ES256 tokens. */
    publicKeyFiles: z.array(z.string()),
    /** Claim with the agent id. */
    agentClaim: z.string().min(1),
    /** Required issuer / audience; empty: not checked. */
    issuer: z.string(),
    audience: z.string(),
    /** Clock tolerance for exp/nbf, seconds. */
    clockToleranceS: z.int().min(0).max(300),
  }),
  /** How often clients must ping, ms; a session silent for twice this long is dropped. */
  heartbeatIntervalMs: durationMs,
  /** How long a dropped session may come back without losing its calls, ms. */
  resumeGraceMs: durationMs,
  /** How long a new connection has to authenticate, ms. */
  authTimeoutMs: durationMs,
  /** Requests per second allowed per session. */
  maxRequestsPerSecond: z.int().min(1).max(10_000),
});

const callsSchema = z.strictObject({
  /** How long an inbound call rings agents before the trunk gets 480, ms. */
  ringTimeoutMs: durationMs,
  /** With longest-idle: how long each agent rings before the next one, ms. */
  ringStepMs: durationMs,
  /** No RTP from the trunk for this long ends the call (reason rtp_timeout), ms. */
  rtpTimeoutMs: durationMs,
  /** Outbound INVITE without a final answer for this long is cancelled, ms. */
  dialTimeoutMs: durationMs,
  /**
   * Retention of call records in Redis (the call hash, the CDR stream entry, the agent's record
   * index), seconds.
   */
  recordTtlS: z.int().min(60).max(365 * 86400),
  /** Store caller and called numbers masked ("+49******56"); false stores them in full. */
  maskNumbers: z.boolean(),
  /** POST of every finished call's record to a webhook (src/calls/cdr-webhook.ts); url '' disables. */
  cdrWebhook: cdrWebhookConfigSchema,
});

const clusterSchema = z.strictObject({
  /**
   * Shared secret of the nodes (HMAC of node-to-node SIP requests), at least 32 characters.
   * Empty: this node hands no call to another node and accepts none from one.
   */
  secret: z.string(),
  /** Where other nodes send SIP for this node (sip:host:port); empty: the first SIP listen address and UDP port. */
  sipUri: z.string().regex(/^(sip:[^\s]+)?$/, 'a sip: URI such as sip:10.0.0.5:5060, or empty'),
  /** Heartbeat into the node registry, ms. */
  heartbeatIntervalMs: durationMs,
  /** A node without a heartbeat for this long is dead: its calls end, its agents are freed, ms. */
  nodeTtlMs: durationMs,
});

/** A dialling prefix: an optional "+" and digits. */
const dialPrefix = z.string().regex(/^\+?[0-9]{1,16}$/, 'a number prefix: optional "+" and 1 to 16 digits, e.g. "+1900"');

const securitySchema = z.strictObject({
  scanners: z.strictObject({
    /** Case-insensitive substrings of the User-Agent of SIP scanners. */
    userAgents: z.array(z.string().min(1).max(64)),
    /** drop: no response at all; 403: Forbidden. */
    action: z.enum(['drop', '403']),
  }),
  unknownSources: z.strictObject({
    /**
     * Out-of-dialog SIP requests from addresses that are neither a trunk's (inbound.allow) nor a
     * trusted proxy, nor a cluster hand-off: drop, 403, or allow (no check). Not applied while a
     * trunk admits by digest credentials (anyone may then authenticate).
     */
    action: z.enum(['drop', '403', 'allow']),
  }),
  rateLimits: z.strictObject({
    /** INVITEs per source address (the real one behind a trusted proxy) per window, all nodes together; 0: no limit. */
    perSource: z.strictObject({ requests: z.int().min(0).max(1_000_000), windowMs: durationMs }),
    /** INVITEs per trunk per window, all nodes together; 0: no limit. */
    perTrunk: z.strictObject({ invites: z.int().min(0).max(1_000_000), windowMs: durationMs }),
  }),
  lockout: z.strictObject({
    /** Failed digest authentications (SIP) or failed sign-ins (WebSocket) from one address within windowMs that lock it; 0: no lockout. */
    maxFailures: z.int().min(0).max(100_000),
    windowMs: durationMs,
    /** How long a locked address stays locked, ms. */
    lockMs: durationMs,
  }),
  agents: z.strictObject({
    /** Calls an agent may have at once, counted across the cluster. */
    maxConcurrentCalls: z.int().min(1).max(100),
  }),
  dialPolicy: z.strictObject({
    /** Numbers agents may dial must start with one of these (after "00" → "+"); empty: any. */
    allowedPrefixes: z.array(dialPrefix),
    /** Regular expressions (whole number) that also allow a number; empty: none. */
    allowedPatterns: z.array(
      z.string().refine((p) => {
        try {
          new RegExp(p);

          return true;
        } catch {
          return false;
        }
      }, 'a valid JavaScript regular expression'),
    ),
    /** Numbers starting with one of these are refused, whatever allows them (premium rate...). */
    deniedPrefixes: z.array(dialPrefix),
    /** Most digits in a dialled number (E.164: 15). */
    maxDigits: z.int().min(2).max(32),
    /** Whether numbers in international form ("+" or "00") outside homeCountryCode may be dialled. */
    international: z.boolean(),
    /** Country code of national calls, digits only (e.g. "49"); empty: every international number counts as international. */
    homeCountryCode: z.string().regex(/^([1-9][0-9]{0,2})?$/, 'a country code of 1 to 3 digits, or empty'),
    /** Dials per agent per minute, all nodes together; 0: no limit. */
    callsPerMinute: z.int().min(0).max(10_000),
  }),
  revocation: z.strictObject({
    /** How long a revoked token id stays revoked when the revocation names no expiry, s. */
    defaultTtlS: z.int().min(60).max(366 * 86400),
  }),
});

/** Call recording (src/calls/recording.ts): stereo WAV files, left the caller (trunk), right the agent. */
const recordingSchema = z.strictObject({
  /** Master switch: false records nothing, whatever the trunk, DID and on-demand settings say. */
  enabled: z.boolean(),
  /** Directory of the recording files (created at start; one <recordingId>.wav and .json per recording). */
  dir: z.string().min(1),
  /** Recordings older than this are deleted by the sweeper, seconds (60 s to 10 years). */
  retentionS: z.int().min(60).max(10 * 365 * 86400),
  /**
   * Longest recording, seconds (1 s to 36 h): a recording is stopped then even if the call goes
   * on, so a call that never ends cannot fill the disk (32 000 bytes/s; 36 h stays under the WAV
   * format's 4 GiB).
   */
  maxDurationS: z.int().min(1).max(36 * 3600),
  /**
   * A recording starts only while the file system of `dir` has at least this much free space,
   * MB (0: no check); below it the recording fails (reason disk), the call goes on.
   */
  minFreeMb: z.int().min(0).max(1_000_000_000),
  /** How often the sweeper looks for expired recordings, ms. */
  sweepIntervalMs: z.int().min(1000).max(24 * 3600_000),
  /** Agents may start and stop recording their calls with call.record. */
  onDemand: z.boolean(),
});

const adminSchema = z.strictObject({
  /**
   * Bearer token of the admin HTTP API (/admin/...: drain, nodes, personal-data export and
   * erase), at least 32 characters. Empty: the admin API is off (404).
   */
  token: z.string(),
});

const mediaSchema = z.strictObject({
  /** mediasoup workers; 0 means one per CPU core. */
  workers: z.int().min(0).max(256),
  /** mediasoup worker log level. */
  logLevel: z.enum(['debug', 'warn', 'error', 'none']),
  /** Address RTP and ICE sockets bind to (an IP literal). */
  listenIp: z.union([z.ipv4(), z.ipv6()], { error: 'an IPv4 or IPv6 address' }),
  /** Address announced in SDP and ICE candidates; empty: the listen address. */
  announcedAddress: z.string(),
  rtcMinPort: port,
  rtcMaxPort: port,
  /** UDP ports of the trunk-facing RTP relay (even RTP port, odd RTCP port). */
  relayMinPort: port,
  relayMaxPort: port,
});

/** "host:port" of a Redis node or sentinel: a name, an IPv4 address or a bracketed IPv6 address. */
const redisHostPort = z.string().refine((s) => {
  const m = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(s);

  return m !== null && Number(m[1]) >= 1 && Number(m[1]) <= 65535;
}, '"host:port" with a port from 1 to 65535, e.g. "10.0.0.5:26379" or "[2001:db8::5]:26379"');

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
  /**
   * standalone: one Redis server at redis.url.
   * sentinel: the primary of the group redis.sentinel.name, found through redis.sentinel.nodes.
   * cluster: a Redis Cluster reached through redis.cluster.nodes.
   * In sentinel and cluster modes redis.url supplies only the data nodes' credentials, database
   * (sentinel only) and TLS (rediss://); its host and port are not used, and autoStart is ignored.
   */
  mode: z.enum(['standalone', 'sentinel', 'cluster']),
  sentinel: z.strictObject({
    /** Sentinels, "host:port" each (three or more in production). */
    nodes: z.array(redisHostPort),
    /** Name of the monitored primary group ("sentinel monitor <name> ..."). */
    name: z.string().regex(/^[A-Za-z0-9._-]{0,64}$/, 'letters, digits, ".", "_" and "-", at most 64'),
    /** The sentinels' own password (their requirepass); empty: none. */
    password: z.string(),
    /** master: the primary (the gateway writes); replica: a replica, read-only, for tools. */
    role: z.enum(['master', 'replica']),
  }),
  cluster: z.strictObject({
    /** Startup nodes, "host:port" each; one reachable node is enough, the rest is discovered. */
    nodes: z.array(redisHostPort),
  }),
});

const metricsSchema = z.strictObject({
  /** Prefix of every metric name. */
  prefix: z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, 'a Prometheus metric name prefix'),
  /** Export prom-client's Node.js process metrics. */
  defaultMetrics: z.boolean(),
  /** How often each call's media stats are sampled for quality (loss, jitter, RTT, MOS), ms. */
  qualityIntervalMs: z.int().min(200).max(60_000),
  /** A call whose MOS (worst leg, mean over the call) is below this counts as low quality. */
  lowMosThreshold: z.number().min(1).max(4.5),
});

const shutdownSchema = z.strictObject({
  /** Longest time the final stop (after the drain) may take before the process exits anyway (ms). */
  timeoutMs: durationMs,
  /**
   * SIGTERM drains: new calls are refused (503) while the node's calls go on, for at most this
   * long; then the remaining calls are hung up and the process exits 0 (ms).
   */
  drainTimeoutMs: durationMs,
});

/** Cross-key checks of the redis section: what sentinel and cluster modes need. */
function checkRedis(redis: z.infer<typeof redisSchema>, ctx: z.RefinementCtx): void {
  const because = `because redis.mode is "${redis.mode}"`;
  let url: URL | undefined;
  try {
    url = new URL(redis.url);
  } catch {
    ctx.addIssue({ code: 'custom', path: ['redis', 'url'], message: 'a valid redis:// or rediss:// URL' });
  }
  const db = url && url.pathname.length > 1 ? url.pathname.slice(1) : '0';
  if (url && !/^\d{1,2}$/.test(db)) {
    ctx.addIssue({ code: 'custom', path: ['redis', 'url'], message: 'a URL whose path, if any, is a database number such as /0' });
  }
  if (redis.mode === 'sentinel') {
    if (redis.sentinel.nodes.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['redis', 'sentinel', 'nodes'], message: `at least one sentinel "host:port" ${because}` });
    }
    if (redis.sentinel.name === '') {
      ctx.addIssue({ code: 'custom', path: ['redis', 'sentinel', 'name'], message: `the name of the monitored primary group ${because}` });
    }
  }
  if (redis.mode === 'cluster') {
    if (redis.cluster.nodes.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['redis', 'cluster', 'nodes'], message: `at least one cluster node "host:port" ${because}` });
    }
    if (url && /^\d{1,2}$/.test(db) && Number(db) !== 0) {
      ctx.addIssue({ code: 'custom', path: ['redis', 'url'], message: `a URL without a database number other than 0 ${because} (Redis Cluster has only database 0)` });
    }
  }
}

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
    signaling: signalingSchema,
    calls: callsSchema,
    cluster: clusterSchema,
    admin: adminSchema,
    recording: recordingSchema,
    security: securitySchema,
    push: pushConfigSchema,
    trunks: z.array(trunkSchema),
    routing: routingSchema,
    sipDevices: sipDevicesConfigSchema,
  })
  .superRefine((cfg, ctx) => {
    if (cfg.media.rtcMinPort >= cfg.media.rtcMaxPort) {
      ctx.addIssue({
        code: 'custom',
        path: ['media', 'rtcMaxPort'],
        message: `a port above media.rtcMinPort (${cfg.media.rtcMinPort})`,
      });
    }
    // TCP listeners that would collide at start (port 0 means "pick one" and never collides).
    const tcpPorts: [string, number][] = [
      ['http.port', cfg.http.port],
      ...(cfg.sip.tcp.enabled ? [['sip.tcp.port', cfg.sip.tcp.port] as [string, number]] : []),
      ...(cfg.sip.tls.enabled ? [['sip.tls.port', cfg.sip.tls.port] as [string, number]] : []),
      ...(cfg.sip.engine === 'embedded' ? [['sip.control.port', cfg.sip.control.port] as [string, number]] : []),
    ];
    for (let i = 0; i < tcpPorts.length; i++) {
      for (let j = i + 1; j < tcpPorts.length; j++) {
        const [ka, pa] = tcpPorts[i]!;
        const [kb, pb] = tcpPorts[j]!;
        if (pa !== 0 && pa === pb) {
          ctx.addIssue({ code: 'custom', path: kb.split('.'), message: `a TCP port other than ${ka} (${pa})` });
        }
      }
    }
    if (cfg.media.relayMinPort >= cfg.media.relayMaxPort) {
      ctx.addIssue({ code: 'custom', path: ['media', 'relayMaxPort'], message: `a port above media.relayMinPort (${cfg.media.relayMinPort})` });
    }
    const trunkIds = new Set<string>();
    cfg.trunks.forEach((t, i) => {
      if (trunkIds.has(t.id)) {
        ctx.addIssue({ code: 'custom', path: ['trunks', i, 'id'], message: `a trunk id not used by another trunk` });
      }
      trunkIds.add(t.id);
    });
    const groupIds = new Set(cfg.routing.groups.map((g) => g.id));
    cfg.routing.dids.forEach((d, i) => {
      if ('group' in d && !groupIds.has(d.group)) {
        ctx.addIssue({ code: 'custom', path: ['routing', 'dids', i, 'group'], message: `one of the routing.groups ids (${[...groupIds].join(', ') || 'none defined'})` });
      }
    });
    cfg.routing.groups.forEach((g, i) => {
      const fb = g.queue?.fallback;
      if (fb && 'group' in fb && (!groupIds.has(fb.group) || fb.group === g.id)) {
        ctx.addIssue({ code: 'custom', path: ['routing', 'groups', i, 'queue', 'fallback', 'group'], message: `one of the other routing.groups ids (${[...groupIds].filter((id) => id !== g.id).join(', ') || 'none defined'})` });
      }
    });
    if (cfg.routing.defaultTrunk !== '' && !trunkIds.has(cfg.routing.defaultTrunk)) {
      ctx.addIssue({ code: 'custom', path: ['routing', 'defaultTrunk'], message: `one of the trunk ids (${[...trunkIds].join(', ') || 'none defined'})` });
    }
    checkRedis(cfg.redis, ctx);
    checkSipDevices(cfg.sipDevices, ctx);
    if (cfg.cluster.secret !== '' && cfg.cluster.secret.length < 32) {
      ctx.addIssue({ code: 'custom', path: ['cluster', 'secret'], message: 'at least 32 characters (or empty for a single node)' });
    }
    if (cfg.cluster.nodeTtlMs < 2 * cfg.cluster.heartbeatIntervalMs) {
      ctx.addIssue({ code: 'custom', path: ['cluster', 'nodeTtlMs'], message: `at least twice cluster.heartbeatIntervalMs (${cfg.cluster.heartbeatIntervalMs})` });
    }
    if (cfg.admin.token !== '' && cfg.admin.token.length < 32) {
      ctx.addIssue({ code: 'custom', path: ['admin', 'token'], message: 'at least 32 characters (or empty to turn the admin API off)' });
    }
    if (cfg.sip.engine === 'external' && cfg.sip.control.secret === '') {
      ctx.addIssue({
        code: 'custom',
        path: ['sip', 'control', 'secret'],
        message: 'a non-empty shared secret because sip.engine is "external"',
      });
    }
    cfg.trunks.forEach((t, i) => {
      if (t.media.srtp === 'required' && t.outbound.uri !== '' && !/^sips:/i.test(t.outbound.uri) && !/;transport=tls(?:[;>?]|$)/i.test(t.outbound.uri)) {
        ctx.addIssue({ code: 'custom', path: ['trunks', i, 'outbound', 'uri'], message: 'a sips: or ;transport=tls URI because media.srtp is "required" (SDES keys only over TLS)' });
      }
    });
    for (const [section, tlsCfg] of [
      ['sip', cfg.sip.tls],
      ['http', cfg.http.tls],
    ] as const) {
      if (tlsCfg.enabled) {
        for (const key of ['certFile', 'keyFile'] as const) {
          if (tlsCfg[key] === '') {
            ctx.addIssue({ code: 'custom', path: [section, 'tls', key], message: `a file path because ${section}.tls.enabled is true` });
          }
        }
      }
    }
  });

/** The validated configuration. */
export type Config = z.infer<typeof configSchema>;
