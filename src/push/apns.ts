/**
 * APNs adapter, through node-pushnotifications (@parse/node-apn underneath): one HTTP/2 session per
 * process and one ES256 provider token, which node-apn regenerates after 55 min and on 403
 * ExpiredProviderToken (push-channels.md §1, §9).
 *
 * - `call`: a PushKit VoIP push to the device's VoIP token: `apns-push-type: voip`, topic
 *   `<bundle>.voip`, `apns-priority: 10`, `apns-expiration` 0 for a TTL of 0 else now + TTL,
 *   `apns-collapse-id` = the call id, body `{aps: {}, type, callId, caller, ttl, sentAt}`.
 * - `cancel` / `missed`: an ordinary alert push to the device's remote-notification token
 *   (`alertToken`): `apns-push-type: alert`, topic `<bundle>`, priority 10 (cancel) or 5 (missed).
 *   A VoIP push must always report a call to CallKit, so these never go over the VoIP token.
 */
import { createHash } from 'node:crypto';
import PushNotifications from 'node-pushnotifications';
import { type ResolvedPushConfig } from './config.js';
import { resultOfPnSend } from './pn-result.js';
import { alertText, collapseIdOf, type PushDevice, type PushMessage, type PushProvider, type PushResult, wakeData } from './provider.js';

/** Settings of ApnsProvider (push.apns resolved). */
export type ApnsSettings = NonNullable<ResolvedPushConfig['apns']>;

/** apns-collapse-id must fit in 64 bytes: longer ids are replaced by a hash. */
function apnsCollapseId(id: string): string {
  return Buffer.byteLength(id) <= 64 ? id : createHash('sha256').update(id).digest('hex');
}

/** APNs through node-pushnotifications. */
export class ApnsProvider implements PushProvider {
  readonly channel = 'apns' as const;
  readonly #settings: ApnsSettings;
  readonly #pn: PushNotifications;
  #closed = false;

  /** @param ca PEM CA bundle replacing the system's CAs (push.caFile) */
  constructor(settings: ApnsSettings, ca?: string) {
    this.#settings = settings;
    this.#pn = new PushNotifications({
      apn: {
        token: { key: settings.key, keyId: settings.keyId, teamId: settings.teamId },
        production: settings.production,
        address: settings.host,
        port: settings.port,
        requestTimeout: settings.timeoutMs,
        // The bridge retries with backoff; node-apn's own retries are immediate (it reads
        // Retry-After with the wrong case), so they are off.
        connectionRetryLimit: 0,
        ...(ca ? { ca } : {}),
      },
    });
  }

  /** Sends a VoIP push (call) or an alert push (cancel, missed); see the file comment. */
  async send(device: PushDevice, message: PushMessage): Promise<PushResult> {
    const voip = message.kind === 'call';
    const token = voip ? device.token : device.alertToken;
    if (!token) {
      return { status: 'rejected', reason: 'no-alert-token' };
    }
    const bundle = (device.topic ?? this.#settings.bundleId).replace(/\.voip$/, '');
    const nowS = Math.floor(Date.now() / 1000);
    const data = wakeData(message);
    const common = {
      expiry: message.ttlSeconds === 0 ? 0 : nowS + message.ttlSeconds,
      collapseKey: apnsCollapseId(collapseIdOf(message)),
    };
    const pnData: PushNotifications.Data = voip
      ? { ...common, topic: `${bundle}.voip`, pushType: 'voip', priority: 'high', rawPayload: { aps: {}, ...data } }
      : {
          ...common,
          topic: bundle,
          pushType: 'alert',
          priority: message.kind === 'cancel' ? 'high' : 'normal',
          rawPayload: { aps: { alert: alertText(message), sound: 'default' }, ...data },
        };
    const results = await this.#pn.send([{ id: token, type: 'apn' }], pnData);

    return resultOfPnSend('apn', results);
  }

  /** Closes the HTTP/2 session. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#pn.apn.shutdown();
    }

    return Promise.resolve();
  }
}
