/**
 * Web Push adapter (RFC 8030 with VAPID, RFC 8292, and aes128gcm, RFC 8188), through
 * node-pushnotifications (web-push underneath).
 *
 * The device token is the browser's PushSubscription as JSON ({endpoint, keys: {p256dh, auth}}).
 * Each push carries `TTL` = the message TTL, `Urgency: high` (normal for missed calls) and
 * `Topic` = a hash of the collapse id (Topic allows at most 32 URL-safe base64 characters), and
 * an encrypted JSON body: the wake data plus `title` and `body` for the service worker's
 * notification.
 */
import { createHash } from 'node:crypto';
import https from 'node:https';
import PushNotifications from 'node-pushnotifications';
import { type ResolvedPushConfig } from './config.js';
import { resultOfPnSend } from './pn-result.js';
import { alertText, collapseIdOf, type PushDevice, type PushMessage, type PushProvider, type PushResult, wakeData } from './provider.js';

/** Settings of WebPushProvider (push.webpush resolved). */
export type WebPushSettings = NonNullable<ResolvedPushConfig['webpush']>;

interface Subscription {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** The subscription in a Web Push device token, or undefined when it is not one. */
export function parseSubscription(token: string): Subscription | undefined {
  let v: unknown;
  try {
    v = JSON.parse(token);
  } catch {
    return undefined;
  }
  const s = v as Partial<Subscription> | null;
  if (!s || typeof s.endpoint !== 'string' || !/^https:\/\//.test(s.endpoint) || typeof s.keys?.p256dh !== 'string' || typeof s.keys.auth !== 'string') {
    return undefined;
  }

  return { endpoint: s.endpoint, keys: { p256dh: s.keys.p256dh, auth: s.keys.auth } };
}

/** Web Push through node-pushnotifications. */
export class WebPushProvider implements PushProvider {
  readonly channel = 'webpush' as const;
  readonly #settings: WebPushSettings;
  readonly #pn: PushNotifications;
  readonly #agent: https.Agent;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: WebPushSettings, ca?: string) {
    this.#settings = settings;
    this.#agent = new https.Agent({ keepAlive: true, maxSockets: settings.concurrency, ...(ca ? { ca } : {}) });
    this.#pn = new PushNotifications({
      web: this.#webOptions(60, 'normal', undefined),
      apn: { token: null, cert: null, key: null },
    });
  }

  #webOptions(ttl: number, urgency: 'high' | 'normal', topic: string | undefined): Record<string, unknown> {
    return {
      vapidDetails: { subject: this.#settings.vapidSubject, publicKey: this.#settings.vapidPublicKey, privateKey: this.#settings.vapidPrivateKey },
      TTL: ttl,
      urgency,
      ...(topic ? { topic } : {}),
      timeout: this.#settings.timeoutMs,
      agent: this.#agent,
      contentEncoding: 'aes128gcm',
    };
  }

  /** Sends one encrypted push to the subscription's endpoint. */
  async send(device: PushDevice, message: PushMessage): Promise<PushResult> {
    const subscription = parseSubscription(device.token);
    if (!subscription) {
      return { status: 'rejected', reason: 'bad-subscription' };
    }
    const topic = createHash('sha256').update(collapseIdOf(message)).digest('base64url').slice(0, 32);
    // node-pushnotifications passes `settings.web` to web-push as the per-request options and
    // reads it synchronously inside send(); setting it just before the call gives this push its
    // own TTL, Urgency and Topic (test/integration/push-webpush.test.ts checks them on the wire).
    this.#pn.settings = { ...this.#pn.settings, web: this.#webOptions(message.ttlSeconds, message.kind === 'missed' ? 'normal' : 'high', topic) };
    const payload: PushNotifications.Data = { ...wakeData(message), ...alertText(message) };
    const results = await this.#pn.send([subscription], payload);

    return resultOfPnSend('webPush', results);
  }

  /** Closes idle connections. */
  close(): Promise<void> {
    this.#agent.destroy();
    this.#pn.apn.shutdown();

    return Promise.resolve();
  }
}
