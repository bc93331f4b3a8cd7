/**
 * The gateway's defences in one place (README "Security"): rate limits per source address, per
 * trunk and per agent's dials, the lockout after failed authentication, the dialling policy, JWT
 * revocation, and the metric `<prefix>security_rejections_total{reason}` that counts every
 * refusal. The SIP engine's own screen (scanners, unknown sources: sip-screen.ts) is configured
 * from here too (screenOptions) and its counts join the same metric.
 *
 * Counters are in Redis (keys in src/state/store.ts), shared by every node; limits fail open when
 * Redis does not answer.
 */
import { Counter, type Registry } from 'prom-client';
import { type Config } from '../config/schema.js';
import { type Logger } from '../log/logger.js';
import { type StoreRedis } from '../state/store.js';
import { DialPolicy } from './dial-policy.js';
import { Lockout } from './lockout.js';
import { type LimitVerdict, WindowCounter } from './rate-limit.js';
import { RevocationList } from './revocation.js';
import { type SipScreenOptions } from './sip-screen.js';

/** Why something was refused: the bounded label set of security_rejections_total. */
export const REJECTION_REASONS = [
  'scanner',
  'unknown_source',
  'source_rate',
  'trunk_rate',
  'sip_locked',
  'ws_locked',
  'register_locked',
  'trunk_cap',
  'agent_cap',
  'dial_policy',
  'dial_rate',
  'revoked',
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

/** The SIP engine's screen settings from the configuration (trunks' allow-lists and trusted proxies are known). */
export function screenOptions(config: Pick<Config, 'security' | 'trunks' | 'sip' | 'sipDevices'>): SipScreenOptions {
  return {
    scannerUserAgents: config.security.scanners.userAgents,
    scannerAction: config.security.scanners.action,
    unknownSourceAction: config.security.unknownSources.action,
    knownSources: [...config.trunks.flatMap((t) => t.inbound.allow), ...config.sip.trustedProxies],
    digestTrunks: config.trunks.some((t) => t.inbound.auth.username !== ''),
    // agents' SIP devices REGISTER (digest) from anywhere; every other method keeps the screen
    registrar: config.sipDevices.enabled,
    registrarRealm: config.sipDevices.realm,
  };
}

/** Options of SecurityGuard. */
export interface SecurityGuardOptions {
  config: Config['security'];
  redis: StoreRedis;
  keyPrefix: string;
  logger: Logger;
  /** Registry and name prefix of the rejections metric. */
  metrics?: { registry: Registry; prefix: string };
  /** The SIP engine's screen counts (`<reason>:<action>` → count), read when Prometheus scrapes. */
  engineScreened?: () => Promise<Record<string, number> | undefined>;
}

/** Rate limits, lockout, dialling policy, revocation and the rejections metric. */
export class SecurityGuard {
  readonly counter: WindowCounter;
  readonly lockout: Lockout;
  readonly revocations: RevocationList;
  readonly dialPolicy: DialPolicy;
  readonly #cfg: Config['security'];
  readonly #rejections: Counter<'reason'> | undefined;

  constructor(opts: SecurityGuardOptions) {
    this.#cfg = opts.config;
    const log = opts.logger;
    this.counter = new WindowCounter({ redis: opts.redis, keyPrefix: opts.keyPrefix, logger: log });
    this.lockout = new Lockout({ counter: this.counter, ...opts.config.lockout });
    this.revocations = new RevocationList({ counter: this.counter, defaultTtlS: opts.config.revocation.defaultTtlS, logger: log });
    this.dialPolicy = new DialPolicy(opts.config.dialPolicy);
    if (opts.metrics) {
      const seen: Record<string, number> = {};
      const engineScreened = opts.engineScreened;
      this.#rejections = new Counter({
        name: `${opts.metrics.prefix}security_rejections_total`,
        help: 'Requests, sign-ins and dials refused by the defences, by reason.',
        labelNames: ['reason'],
        registers: [opts.metrics.registry],
        async collect() {
          // the engine counts its own screen (it may run in a worker thread): add what is new
          const counts = engineScreened ? await engineScreened().catch(() => undefined) : undefined;
          for (const [key, n] of Object.entries(counts ?? {})) {
            const reason = key.split(':')[0]!;
            const delta = n - (seen[key] ?? 0);
            seen[key] = n;
            if (delta > 0 && (REJECTION_REASONS as readonly string[]).includes(reason)) {
              this.inc({ reason }, delta);
            }
          }
        },
      });
      for (const reason of REJECTION_REASONS) {
        this.#rejections.inc({ reason }, 0);
      }
    }
  }

  /** Counts a refusal. */
  rejected(reason: RejectionReason): void {
    this.#rejections?.inc({ reason });
  }

  /** INVITEs from one source address (`security.rateLimits.perSource`). */
  sourceLimit(address: string): Promise<LimitVerdict> {
    const l = this.#cfg.rateLimits.perSource;

    return this.counter.limit('src', address, l.requests, l.windowMs);
  }

  /** INVITEs to one trunk (`security.rateLimits.perTrunk`). */
  trunkLimit(trunkId: string): Promise<LimitVerdict> {
    const l = this.#cfg.rateLimits.perTrunk;

    return this.counter.limit('trunk', trunkId, l.invites, l.windowMs);
  }

  /** An agent's dials per minute (`security.dialPolicy.callsPerMinute`). */
  dialLimit(agentId: string): Promise<LimitVerdict> {
    return this.counter.limit('dial', agentId, this.#cfg.dialPolicy.callsPerMinute, 60_000);
  }

  /** Calls an agent may have at once. */
  get maxCallsPerAgent(): number {
    return this.#cfg.agents.maxConcurrentCalls;
  }

  /** Closes the revocation subscriber. */
  close(): Promise<void> {
    return this.revocations.close();
  }
}
