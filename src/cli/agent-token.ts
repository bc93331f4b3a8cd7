/**
 * Mints an agent token (HS256 JWT) for a quick start, e.g. to sign in to the softphone page:
 *
 *   npm run agent-token -- <agentId> [--ttl 8h] [--config FILE] [--profile NAME]
 *
 * Reads the same configuration as the gateway (config/ files, RINGBRIDGE_* variables) and signs
 * with signaling.auth.hs256Secret, putting the agent id in signaling.auth.agentClaim and the
 * configured issuer/audience, with a random jti (revocable, POST /admin/revocations). Prints the
 * token on stdout and nothing else. In production, tokens come from the company's identity
 * service; this is for trials and tests.
 * Exit 2 with a message naming the key when hs256Secret is empty or HS256 is not accepted.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { ConfigError, loadConfig } from '../config/load.js';

const USAGE = `Usage: npm run agent-token -- <agentId> [--ttl 8h] [--config FILE] [--profile NAME]
Prints an HS256 agent token signed with signaling.auth.hs256Secret (set it first, e.g.
RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET=<32+ characters> for both the gateway and this command).
`;

/** "90s", "15m", "8h", "2d" or plain seconds → seconds; undefined when unreadable. */
function ttlSeconds(s: string): number | undefined {
  const m = /^(\d+)([smhd]?)$/.exec(s.trim());
  if (!m) {
    return undefined;
  }
  const n = Number(m[1]);

  return n * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as const)[m[2] as '' | 's' | 'm' | 'h' | 'd'];
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { ttl: { type: 'string', default: '8h' }, config: { type: 'string' }, profile: { type: 'string' }, help: { type: 'boolean', default: false } },
  });
  if (values.help || positionals.length !== 1) {
    process.stdout.write(USAGE);

    return values.help ? 0 : 2;
  }
  const agentId = positionals[0]!;
  const ttl = ttlSeconds(values.ttl);
  if (ttl === undefined || ttl < 60 || ttl > 30 * 86400) {
    process.stderr.write('--ttl must be between 60s and 30d (e.g. 15m, 8h, 2d)\n');

    return 2;
  }
  let auth;
  try {
    auth = loadConfig({ ...(values.config ? { file: values.config } : {}), ...(values.profile ? { profile: values.profile } : {}) }).config.signaling.auth;
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : String(err)}\n`);

    return 2;
  }
  if (auth.hs256Secret === '' || !auth.algorithms.includes('HS256')) {
    process.stderr.write('signaling.auth.hs256Secret is empty (or HS256 is not in signaling.auth.algorithms): set RINGBRIDGE_SIGNALING__AUTH__HS256_SECRET for the gateway and this command\n');

    return 2;
  }
  let jwt = new SignJWT({ [auth.agentClaim]: agentId }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime(`${ttl}s`).setJti(randomUUID());
  if (auth.issuer) {
    jwt = jwt.setIssuer(auth.issuer);
  }
  if (auth.audience) {
    jwt = jwt.setAudience(auth.audience);
  }
  process.stdout.write(`${await jwt.sign(new TextEncoder().encode(auth.hs256Secret))}\n`);

  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`agent-token: ${(err as Error).message}\n`);
    process.exitCode = 1;
  },
);
