/**
 * Agent authentication: JWTs verified with jose (RFC 7519), signed with HS256 (shared secret),
 * RS256 or ES256 (public keys from PEM files). `exp` and `nbf` are enforced with a small clock
 * tolerance; issuer and audience when configured; the agent id comes from a configured claim.
 */
import fs from 'node:fs';
import { createSecretKey, type KeyObject } from 'node:crypto';
import { errors as joseErrors, importSPKI, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

/** A public key as jose imports it. */
type PublicKey = Awaited<ReturnType<typeof importSPKI>>;

/** JWT algorithms ringbridge accepts. */
export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256';

/** Options of JwtVerifier.create(). */
export interface JwtVerifierOptions {
  algorithms: JwtAlgorithm[];
  /** Secret for HS256 (at least 32 bytes). */
  hs256Secret: string;
  /** PEM (SPKI) public key files for RS256 and ES256. */
  publicKeyFiles: string[];
  /** Claim holding the agent id, e.g. "sub". */
  agentClaim: string;
  /** Required `iss`, empty: not checked. */
  issuer: string;
  /** Required `aud`, empty: not checked. */
  audience: string;
  /** Allowed clock difference for exp/nbf, seconds. */
  clockToleranceS: number;
}

/** Why a token was refused; `code` maps to the protocol's error codes. */
export class AuthError extends Error {
  override readonly name = 'AuthError';

  constructor(
    readonly code: 'AUTH_FAILED' | 'TOKEN_EXPIRED',
    message: string,
  ) {
    super(message);
  }
}

/** A verified agent identity. */
export interface AgentIdentity {
  agentId: string;
  /** JWT id (`jti`), for revocation. */
  jti?: string;
  /** Expiry, epoch seconds. */
  exp?: number;
  claims: JWTPayload;
}

/** Verifies agent JWTs. */
export class JwtVerifier {
  readonly #opts: JwtVerifierOptions;
  readonly #hsKey?: KeyObject;
  readonly #publicKeys: { alg: 'RS256' | 'ES256'; key: PublicKey }[];

  private constructor(opts: JwtVerifierOptions, hsKey: KeyObject | undefined, publicKeys: { alg: 'RS256' | 'ES256'; key: PublicKey }[]) {
    this.#opts = opts;
    this.#hsKey = hsKey;
    this.#publicKeys = publicKeys;
  }

  /**
   * Loads the keys.
   * @throws {Error} naming the file or setting when a key cannot be read or is unsuitable
   */
  static async create(opts: JwtVerifierOptions): Promise<JwtVerifier> {
    let hsKey: KeyObject | undefined;
    if (opts.algorithms.includes('HS256') && opts.hs256Secret !== '') {
      if (Buffer.byteLength(opts.hs256Secret) < 32) {
        throw new Error('signaling.auth.hs256Secret must be at least 32 bytes (RFC 7518 §3.2)');
      }
      hsKey = createSecretKey(Buffer.from(opts.hs256Secret));
    }
    const publicKeys: { alg: 'RS256' | 'ES256'; key: PublicKey }[] = [];
    for (const file of opts.publicKeyFiles) {
      let pem: string;
      try {
        pem = fs.readFileSync(file, 'utf8');
      } catch (err) {
        throw new Error(`signaling.auth.publicKeyFiles: cannot read ${file}: ${(err as Error).message}`, { cause: err });
      }
      let loaded = false;
      for (const alg of ['RS256', 'ES256'] as const) {
        if (!opts.algorithms.includes(alg)) {
          continue;
        }
        try {
          publicKeys.push({ alg, key: await importSPKI(pem, alg) });
          loaded = true;
          break;
        } catch {
          // not a key of this algorithm
        }
      }
      if (!loaded) {
        throw new Error(`signaling.auth.publicKeyFiles: ${file} is not an SPKI PEM public key for ${opts.algorithms.filter((a) => a !== 'HS256').join(' or ') || 'RS256/ES256 (none enabled)'}`);
      }
    }

    return new JwtVerifier(opts, hsKey, publicKeys);
  }

  /** Whether any key is configured (without one, no agent can sign in). */
  get hasKeys(): boolean {
    return this.#hsKey !== undefined || this.#publicKeys.length > 0;
  }

  /**
   * Verifies a token and extracts the agent.
   * @throws {AuthError} TOKEN_EXPIRED for exp/nbf, AUTH_FAILED for anything else
   */
  async verify(token: string): Promise<AgentIdentity> {
    const getKey: JWTVerifyGetKey = (header) => {
      if (header.alg === 'HS256' && this.#hsKey) {
        return this.#hsKey;
      }
      const candidates = this.#publicKeys.filter((k) => k.alg === header.alg);
      const first = candidates[0];
      if (!first) {
        throw new AuthError('AUTH_FAILED', `no key for algorithm ${header.alg ?? 'none'}`);
      }

      return first.key;
    };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        algorithms: this.#opts.algorithms,
        clockTolerance: this.#opts.clockToleranceS,
        ...(this.#opts.issuer ? { issuer: this.#opts.issuer } : {}),
        ...(this.#opts.audience ? { audience: this.#opts.audience } : {}),
      }));
    } catch (err) {
      if (err instanceof AuthError) {
        throw err;
      }
      if (err instanceof joseErrors.JWTExpired) {
        throw new AuthError('TOKEN_EXPIRED', 'token has expired');
      }
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf') {
        throw new AuthError('TOKEN_EXPIRED', 'token is not valid yet (nbf)');
      }
      throw new AuthError('AUTH_FAILED', `token refused: ${(err as Error).message}`);
    }
    const agentId = payload[this.#opts.agentClaim];
    if (typeof agentId !== 'string' || !/^[A-Za-z0-9._@+-]{1,128}$/.test(agentId)) {
      throw new AuthError('AUTH_FAILED', `token has no usable "${this.#opts.agentClaim}" claim (1-128 letters, digits, ._@+-)`);
    }

    return { agentId, jti: payload.jti, exp: payload.exp, claims: payload };
  }
}
