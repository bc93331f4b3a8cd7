/**
 * FCM HTTP v1 adapter, through node-pushnotifications (firebase-admin underneath).
 *
 * node-pushnotifications builds a new Firebase app on every send, so a credential made from the
 * service-account key would fetch a new OAuth token per push. The adapter hands it one long-lived
 * `GoogleOAuthCredential` instead, which caches the access token until 5 min before it expires
 * (firebase-admin's own threshold) and fetches it with the service-account JWT assertion
 * (RS256; iss = client_email, scope firebase.messaging, aud = token_uri, exp = iat + 1 h).
 *
 * Every kind is a data-only message (`android.priority` high for call and cancel, normal for
 * missed; `android.ttl` = the TTL; `android.collapse_key` = the call id), so the app's
 * onMessageReceived runs even in the background and posts its own notification.
 */
import { importPKCS8, SignJWT } from 'jose';
import PushNotifications from 'node-pushnotifications';
import { type ResolvedPushConfig } from './config.js';
import { installFcmHostRedirect } from './fcm-host-redirect.js';
import { HttpClient, parseJson, TokenCache } from './http.js';
import { resultOfPnSend } from './pn-result.js';
import { collapseIdOf, PushAuthError, PushError, type PushDevice, type PushMessage, type PushProvider, type PushResult, PushTransportError, wakeData } from './provider.js';

/** Settings of FcmProvider (push.fcm resolved). */
export type FcmSettings = NonNullable<ResolvedPushConfig['fcm']>;

const SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';

/** firebase-admin's GoogleOAuthAccessToken. */
export interface GoogleOAuthAccessToken {
  access_token: string;
  /** Seconds from now. */
  expires_in: number;
}

/**
 * A firebase-admin Credential for a service account whose OAuth token is cached across Firebase
 * apps (see the file comment). Concurrent callers share one token request.
 */
export class GoogleOAuthCredential {
  readonly #cache: TokenCache;
  #lastError: PushError | undefined;

  constructor(
    private readonly account: { clientEmail: string; privateKey: string; tokenUri: string },
    private readonly http: HttpClient,
    private readonly timeoutMs: number,
  ) {
    this.#cache = new TokenCache(() => this.#fetch(), { refreshS: 3600, marginS: 300 });
  }

  /** Token requests made so far. */
  get tokenRequests(): number {
    return this.#cache.fetches;
  }

  /** The error of the last failed token request, cleared by the next success. */
  get lastError(): PushError | undefined {
    return this.#lastError;
  }

  /** firebase-admin's Credential.getAccessToken(). */
  async getAccessToken(): Promise<GoogleOAuthAccessToken> {
    const token = await this.#cache.get();

    return { access_token: token, expires_in: Math.max(1, Math.floor((this.#cache.expiresAt - Date.now()) / 1000)) };
  }

  async #fetch(): Promise<{ token: string; expiresInS?: number }> {
    try {
      const key = await importPKCS8(this.account.privateKey, 'RS256');
      const assertion = await new SignJWT({ scope: SCOPE })
        .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
        .setIssuer(this.account.clientEmail)
        .setAudience(this.account.tokenUri)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(key);
      const res = await this.http.send(this.account.tokenUri, {
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }).toString(),
        timeoutMs: this.timeoutMs,
      });
      const body = parseJson(res.text) as { access_token?: unknown; expires_in?: unknown; error?: unknown } | undefined;
      if (res.status !== 200 || typeof body?.access_token !== 'string') {
        const what = typeof body?.error === 'string' ? body.error : `HTTP ${res.status}`;
        throw new PushAuthError(`Google OAuth token request refused: ${what}`, res.status >= 500 || res.status === 429);
      }
      this.#lastError = undefined;

      return { token: body.access_token, ...(typeof body.expires_in === 'number' ? { expiresInS: body.expires_in } : {}) };
    } catch (err) {
      this.#lastError = err instanceof PushError ? err : new PushAuthError(`Google OAuth token request failed: ${(err as Error).message}`, false, { cause: err });
      throw this.#lastError;
    }
  }
}

/** FCM through node-pushnotifications with a cached OAuth credential. */
export class FcmProvider implements PushProvider {
  readonly channel = 'fcm' as const;
  readonly #pn: PushNotifications;
  readonly #http: HttpClient;
  /** The long-lived credential (exposed for tests and metrics). */
  readonly credential: GoogleOAuthCredential;
  #closed = false;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: FcmSettings, ca?: string) {
    this.#http = new HttpClient({ ...(ca ? { ca } : {}), connections: 4 });
    this.credential = new GoogleOAuthCredential(settings, this.#http, settings.timeoutMs);
    if (settings.baseUrl !== 'https://fcm.googleapis.com' || ca) {
      installFcmHostRedirect(settings.baseUrl, ca);
    }
    this.#pn = new PushNotifications({
      fcm: { appName: `ringbridge-fcm-${settings.projectId}`, credential: this.credential, projectId: settings.projectId },
      // The library builds an APNs provider whatever the settings; give it an inert one.
      apn: { token: null, cert: null, key: null },
    });
  }

  /** Sends a data-only high-priority message (normal for missed calls). */
  async send(device: PushDevice, message: PushMessage): Promise<PushResult> {
    const data: PushNotifications.Data = {
      custom: wakeData(message),
      priority: message.kind === 'missed' ? 'normal' : 'high',
      timeToLive: message.ttlSeconds,
      collapseKey: collapseIdOf(message),
      silent: true,
      providersExclude: ['apns'],
    };
    let results: PushNotifications.Result[];
    try {
      results = await this.#pn.send([{ id: device.token, type: 'fcm' }], data);
    } catch (err) {
      throw this.credential.lastError ?? new PushTransportError(`FCM send failed: ${(err as Error).message}`, { cause: err });
    }
    const result = resultOfPnSend('fcm', results);
    // An OAuth failure surfaces as a per-token error text; report the credential's own error.
    if (result.status === 'rejected' && result.reason === 'unclassified' && this.credential.lastError) {
      throw this.credential.lastError;
    }

    return result;
  }

  /** Closes the OAuth connections. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#pn.apn.shutdown();
      await this.#http.close();
    }
  }
}
