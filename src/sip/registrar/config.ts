/**
 * Configuration of the SIP registrar for agents' native SIP devices (`sipDevices`, issue 12).
 *
 * Credentials are stored as digest HA1 values, never as passwords: HA1 = H(username ":" realm ":"
 * password) with H = MD5 (`ha1Md5`) or SHA-256 (`ha1Sha256`), RFC 7616 §3.4.2. An HA1 is what a
 * digest registrar needs to check a response; it is password-equivalent for this realm only (a
 * leaked HA1 lets one register here, not learn the password or log in elsewhere). A slow KDF
 * (scrypt, argon2) cannot be used with digest: the server must compute H(HA1:nonce:...) for every
 * request, which needs HA1 itself.
 */
import { z } from 'zod';

const hex = (len: number, what: string) =>
  z
    .string()
    .regex(new RegExp(`^([0-9a-fA-F]{${len}})?$`), `${what}: ${len} hex digits (or empty)`)
    .transform((s) => s.toLowerCase());

/** One agent's SIP device credentials. */
export const sipDeviceCredentialSchema = z.strictObject({
  /** The agent these credentials register devices for (the id in the agents' JWTs). */
  agentId: z.string().regex(/^[A-Za-z0-9._@+-]{1,128}$/, '1 to 128 letters, digits, ".", "_", "@", "+" or "-"'),
  /** Digest username; also the user part of the address-of-record in To. */
  username: z.string().regex(/^[A-Za-z0-9._~!$&'()*+=-]{1,64}$/, '1 to 64 characters allowed in a SIP user part, without escapes'),
  /** MD5(username:realm:password), hex; empty or left out: MD5 is not accepted for this user. */
  ha1Md5: hex(32, 'an MD5 HA1').default(''),
  /** SHA-256(username:realm:password), hex; empty or left out: SHA-256 is not accepted for this user. */
  ha1Sha256: hex(64, 'a SHA-256 HA1').default(''),
});

/** The `sipDevices` section. */
export const sipDevicesConfigSchema = z.strictObject({
  /** Whether REGISTER is served (false: the engine answers REGISTER 501/480; no bindings). */
  enabled: z.boolean(),
  /** Digest realm (RFC 3261 §22.1); the HA1 values are computed with it. */
  realm: z.string().regex(/^[^"\\\s]*$/, 'no quotes, backslashes or blanks'),
  /** Digest algorithms offered, strongest first (RFC 7616 §3.7: one challenge per algorithm). */
  algorithms: z.array(z.enum(['SHA-256', 'MD5'])).min(1),
  /** How long a nonce is accepted after it was issued (s); an older one gets 401 stale=true. */
  nonceTtlS: z.int().min(5).max(3600),
  /** Shortest registration accepted (s): a shorter non-zero expires gets 423 with Min-Expires. */
  minExpiresS: z.int().min(1).max(86400),
  /** Longest registration granted (s): longer requests are shortened to it. */
  maxExpiresS: z.int().min(1).max(7 * 86400),
  /** Expiry when the REGISTER names none (s). */
  defaultExpiresS: z.int().min(1).max(7 * 86400),
  /** RFC 5626 §4.4.1 Flow-Timer for outbound flows (s): keep-alive interval the device should keep. */
  flowTimerS: z.int().min(10).max(3600),
  /** Most bindings (devices) one agent may hold; the REGISTER that would exceed it gets 403. */
  maxBindingsPerAgent: z.int().min(1).max(100),
  /** Agents' device credentials. */
  credentials: z.array(sipDeviceCredentialSchema),
  /**
   * Lockout after failed digest responses (src/sip/registrar/lockout.ts), apart from the trunks'
   * `security.lockout`: per source (IPv6 by /64; trunks' addresses never) and per username.
   */
  lockout: z.strictObject({
    /** Failures from one source within windowMs that lock it; 0: off. */
    maxFailuresPerSource: z.int().min(0).max(100_000),
    /** Failures for one username (any source) within windowMs that lock it; 0: off. */
    maxFailuresPerUser: z.int().min(0).max(100_000),
    /** The counting window, ms. */
    windowMs: z.int().min(1000).max(86_400_000),
    /** How long a locked source or username stays locked, ms. */
    lockMs: z.int().min(1000).max(86_400_000),
  }),
  /**
   * Most push devices (RFC 8599 Contact parameters) one agent's SIP registrations keep; a new one
   * past it evicts the agent's SIP push device seen longest ago. WebRTC app devices do not count.
   */
  maxPushDevicesPerAgent: z.int().min(1).max(100),
});

/** The validated `sipDevices` section. */
export type SipDevicesConfig = z.infer<typeof sipDevicesConfigSchema>;

/** Cross-key checks of the sipDevices section (the issues name the key). */
export function checkSipDevices(cfg: SipDevicesConfig, ctx: z.RefinementCtx): void {
  if (cfg.enabled && cfg.realm === '') {
    ctx.addIssue({ code: 'custom', path: ['sipDevices', 'realm'], message: 'a digest realm because sipDevices.enabled is true' });
  }
  if (cfg.minExpiresS > cfg.maxExpiresS) {
    ctx.addIssue({ code: 'custom', path: ['sipDevices', 'maxExpiresS'], message: `at least sipDevices.minExpiresS (${cfg.minExpiresS})` });
  }
  if (cfg.defaultExpiresS < cfg.minExpiresS || cfg.defaultExpiresS > cfg.maxExpiresS) {
    ctx.addIssue({ code: 'custom', path: ['sipDevices', 'defaultExpiresS'], message: `between sipDevices.minExpiresS (${cfg.minExpiresS}) and sipDevices.maxExpiresS (${cfg.maxExpiresS})` });
  }
  const users = new Set<string>();
  cfg.credentials.forEach((c, i) => {
    if (users.has(c.username.toLowerCase())) {
      ctx.addIssue({ code: 'custom', path: ['sipDevices', 'credentials', i, 'username'], message: 'a username not used by another credential' });
    }
    users.add(c.username.toLowerCase());
    if (c.ha1Md5 === '' && c.ha1Sha256 === '') {
      ctx.addIssue({ code: 'custom', path: ['sipDevices', 'credentials', i, 'ha1Sha256'], message: 'an HA1 (ha1Sha256 and/or ha1Md5)' });
    }
    for (const [alg, key] of [
      ['MD5', 'ha1Md5'],
      ['SHA-256', 'ha1Sha256'],
    ] as const) {
      if (c[key] !== '' && !cfg.algorithms.includes(alg)) {
        ctx.addIssue({ code: 'custom', path: ['sipDevices', 'credentials', i, key], message: `empty, or ${alg} listed in sipDevices.algorithms` });
      }
    }
  });
}
