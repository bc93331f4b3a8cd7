/**
 * Types for the parts of node-pushnotifications 6.0.0 the push bridge uses (the package ships
 * none). Shapes follow its lib/push-notifications.js, lib/sendAPN.js, lib/sendFCM.js and
 * lib/sendWeb.js; see push-channels.md §9.
 */
declare module 'node-pushnotifications' {
  namespace PushNotifications {
    /** A registration id with its method. Web Push takes the subscription object itself. */
    type RegistrationId = { id: string; type: 'apn' | 'fcm' | 'adm' | 'wns' | 'webPush' } | { endpoint: string; keys: { p256dh: string; auth: string } };

    /** One recipient's outcome. */
    interface ResultMessage {
      regId: unknown;
      originalRegId?: string;
      messageId?: string;
      error: Error | null;
      errorMsg?: string;
    }

    /** One method's outcome. */
    interface Result {
      method: 'apn' | 'fcm' | 'adm' | 'wns' | 'webPush' | 'unknown' | 'none';
      success: number;
      failure: number;
      message: ResultMessage[];
    }

    /** The push data (only the keys the bridge sets). */
    interface Data {
      topic?: string;
      pushType?: string;
      priority?: 'high' | 'normal';
      expiry?: number;
      timeToLive?: number;
      collapseKey?: string;
      custom?: Record<string, string>;
      rawPayload?: Record<string, unknown>;
      silent?: boolean;
      providersExclude?: string[];
      [key: string]: unknown;
    }

    /** Settings (merged shallowly over the library's defaults). */
    interface Settings {
      apn?: Record<string, unknown>;
      fcm?: Record<string, unknown>;
      web?: Record<string, unknown>;
      isAlwaysUseFCM?: boolean;
    }
  }

  class PushNotifications {
    constructor(settings: PushNotifications.Settings);
    settings: PushNotifications.Settings;
    apn: { shutdown(): void };
    setOptions(settings: PushNotifications.Settings): void;
    send(regIds: PushNotifications.RegistrationId[], data: PushNotifications.Data): Promise<PushNotifications.Result[]>;
  }

  export = PushNotifications;
}
