/**
 * Configuration of the push bridge: `pushConfigSchema` (the `push` section), and
 * `resolvePushConfig()`, which applies the defaults written next to each key.
 *
 * Every key is optional and every channel is disabled until its block says `enabled: true`; an
 * enabled channel must name its credentials (the error names the missing key). Base URLs default to
 * the providers' production hosts (push-channels.md) and can point anywhere (regional hosts, a
 * proxy, the local test servers).
 */
import fs from 'node:fs';
import { z } from 'zod';
import { type PushChannel } from './provider.js';

const baseUrl = z.string().regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'an http(s) URL without query, e.g. https://push-api.cloud.huawei.com');
const timeoutMs = z.int().min(100).max(120_000);
const concurrency = z.int().min(1).max(10_000);
/** Seconds an auth token is used before it is fetched again (never beyond the provider's own expiry). */
const tokenRefreshS = z.int().min(60).max(24 * 3600);

/** Keys every channel block has. */
const channelCommon = {
  /** Turns the channel on; default false. */
  enabled: z.boolean().optional(),
  /** Per-attempt timeout, ms; default push.timeoutMs. */
  timeoutMs: timeoutMs.optional(),
  /** Most requests in flight to this provider; default push.concurrency. */
  concurrency: concurrency.optional(),
};

const apnsSchema = z.strictObject({
  ...channelCommon,
  /** Apple Developer Team ID (JWT `iss`). */
  teamId: z.string().optional(),
  /** 10-character Key ID of the .p8 signing key (JWT `kid`). */
  keyId: z.string().optional(),
  /** Path of the .p8 (PKCS#8 PEM, P-256) token signing key; or `key`. */
  keyFile: z.string().optional(),
  /** The .p8 key's PEM text (e.g. from a secret store); or `keyFile`. */
  key: z.string().optional(),
  /** The app's bundle id; VoIP pushes go to topic `<bundleId>.voip`, alerts to `<bundleId>`. */
  bundleId: z.string().optional(),
  /** Production (api.push.apple.com) or sandbox (api.sandbox.push.apple.com); default true. */
  production: z.boolean().optional(),
  /** Overrides the host chosen by `production`, e.g. https://localhost:8443 (port default 443). */
  baseUrl: baseUrl.optional(),
});

const fcmServiceAccount = z.object({
  project_id: z.string().min(1),
  client_email: z.string().min(1),
  private_key: z.string().min(1),
  token_uri: z.string().optional(),
});

const fcmSchema = z.strictObject({
  ...channelCommon,
  /** Path of the Firebase service-account JSON key; or `serviceAccount`. */
  serviceAccountFile: z.string().optional(),
  /** The service-account key itself (the JSON file's fields); or `serviceAccountFile`. */
  serviceAccount: fcmServiceAccount.optional(),
  /** Firebase project id; default the key's project_id. */
  projectId: z.string().optional(),
  /** OAuth token endpoint; default the key's token_uri, else https://oauth2.googleapis.com/token. */
  tokenUri: baseUrl.optional(),
  /**
   * FCM host; default https://fcm.googleapis.com. firebase-admin hard-codes that host, so any other
   * value redirects its HTTP/2 connections process-wide (see fcm-host-redirect.ts).
   */
  baseUrl: baseUrl.optional(),
});

const webpushSchema = z.strictObject({
  ...channelCommon,
  /** VAPID subject: a mailto: or https: contact URL. */
  vapidSubject: z.string().regex(/^(mailto:|https:)/, 'a mailto: or https: URL').optional(),
  /** VAPID public key, URL-safe base64 (uncompressed P-256 point). */
  vapidPublicKey: z.string().optional(),
  /** VAPID private key, URL-safe base64 (32 bytes). */
  vapidPrivateKey: z.string().optional(),
});

/** Codes a vendor answers for an invalid token, as strings; see the defaults in resolvePushConfig. */
const deadTokenCodes = z.array(z.string().regex(/^-?\d+$/, 'a numeric code')).optional();

const umengSchema = z.strictObject({
  ...channelCommon,
  /** Umeng app key (Android app). */
  appKey: z.string().optional(),
  /** App master secret (signs every request). */
  masterSecret: z.string().optional(),
  /** default https://msgapi.umeng.com */
  baseUrl: baseUrl.optional(),
  /** production_mode; default true. */
  productionMode: z.boolean().optional(),
  /** Activity the vendor channel opens for pass-through messages (mi_activity); empty: Umeng's own channel only. */
  miActivity: z.string().optional(),
  /** error_code values that mean "invalid device token"; default none (UNCONFIRMED in push-channels.md). */
  deadTokenCodes,
});

const huaweiSchema = z.strictObject({
  ...channelCommon,
  /** App ID (the {appId} of /v1/{appId}/messages:send). */
  appId: z.string().optional(),
  /** OAuth client id; default the app id. */
  clientId: z.string().optional(),
  /** OAuth client secret (App secret). */
  clientSecret: z.string().optional(),
  /** default https://oauth-login.cloud.huawei.com/oauth2/v3/token */
  authUrl: baseUrl.optional(),
  /** default https://push-api.cloud.huawei.com */
  baseUrl: baseUrl.optional(),
  /** Call wake-ups with android.urgency HIGH and category VOIP (needs Huawei's permission); default false. */
  voipPermission: z.boolean().optional(),
  /** Seconds an access token is used; default 3300 (Huawei's are valid 3600 s). */
  tokenRefreshS: tokenRefreshS.optional(),
});

const honorSchema = z.strictObject({
  ...channelCommon,
  /** App ID (the {appId} of /api/v1/{appId}/sendMessage). */
  appId: z.string().optional(),
  /** OAuth client id; default the app id. */
  clientId: z.string().optional(),
  clientSecret: z.string().optional(),
  /** default https://iam.developer.honor.com/auth/token */
  authUrl: baseUrl.optional(),
  /** default https://push-api.cloud.honor.com */
  baseUrl: baseUrl.optional(),
  /** Seconds an access token is used; default 3300. */
  tokenRefreshS: tokenRefreshS.optional(),
});

const xiaomiSchema = z.strictObject({
  ...channelCommon,
  /** AppSecret (sent as `Authorization: key=<AppSecret>`). */
  appSecret: z.string().optional(),
  /** The app's package name (restricted_package_name). */
  packageName: z.string().optional(),
  /** default https://api.xmpush.xiaomi.com (global: https://api.xmpush.global.xiaomi.com and regional hosts). */
  baseUrl: baseUrl.optional(),
  /** Private-message (私信) channel id registered in the console (extra.channel_id); empty: none. */
  channelId: z.string().optional(),
  /** Codes that mean "invalid regId"; default ["20301"] (UNCONFIRMED in push-channels.md). */
  deadTokenCodes,
});

const oppoSchema = z.strictObject({
  ...channelCommon,
  appKey: z.string().optional(),
  masterSecret: z.string().optional(),
  /** default https://api.push.oppomobile.com (overseas https://api-intl.push.oppomobile.com). */
  baseUrl: baseUrl.optional(),
  /** Private channel id registered in the OPPO console (notification.channel_id); empty: none. */
  channelId: z.string().optional(),
  /** Message category; default "IM". */
  category: z.string().optional(),
  /** notify_level for call wake-ups: 1, 2 or 16 (16 needs OPPO's approval); default 2. */
  notifyLevel: z.union([z.literal(1), z.literal(2), z.literal(16)]).optional(),
  /** Seconds an auth_token is used (valid 24 h); default 3600. */
  tokenRefreshS: tokenRefreshS.optional(),
  /** Codes that mean "invalid regId"; default ["10000"] (UNCONFIRMED in push-channels.md). */
  deadTokenCodes,
});

const vivoSchema = z.strictObject({
  ...channelCommon,
  appId: z.string().optional(),
  appKey: z.string().optional(),
  appSecret: z.string().optional(),
  /** default https://api-push.vivo.com.cn */
  baseUrl: baseUrl.optional(),
  /** Secondary category for classification 1 (system); default "IM". */
  category: z.string().optional(),
  /** pushMode 1: test devices only; default false. */
  testMode: z.boolean().optional(),
  /** Seconds an authToken is used (valid 1 day, vivo advises 1–2 h); default 3600. */
  tokenRefreshS: tokenRefreshS.optional(),
  /** `result` codes that mean "invalid regId"; default ["10302"] (UNCONFIRMED in push-channels.md). */
  deadTokenCodes,
});

const meizuSchema = z.strictObject({
  ...channelCommon,
  appId: z.string().optional(),
  /** Signs every request (md5 of the sorted parameters + appSecret). */
  appSecret: z.string().optional(),
  /** default https://server-api-push.meizu.com (overseas https://server-api-push.in.meizu.com). */
  baseUrl: baseUrl.optional(),
});

/** Credentials each enabled channel needs ([key, ...alternatives]). */
const REQUIRED: Record<PushChannel, string[][]> = {
  apns: [['teamId'], ['keyId'], ['keyFile', 'key'], ['bundleId']],
  fcm: [['serviceAccountFile', 'serviceAccount']],
  webpush: [['vapidSubject'], ['vapidPublicKey'], ['vapidPrivateKey']],
  umeng: [['appKey'], ['masterSecret']],
  huawei: [['appId'], ['clientSecret']],
  honor: [['appId'], ['clientSecret']],
  xiaomi: [['appSecret'], ['packageName']],
  oppo: [['appKey'], ['masterSecret']],
  vivo: [['appId'], ['appKey'], ['appSecret']],
  meizu: [['appId'], ['appSecret']],
};

/** The `push` section of the configuration. Every key optional; see resolvePushConfig for defaults. */
export const pushConfigSchema = z
  .strictObject({
    /** Per-attempt timeout of a provider request, ms; default 5000. */
    timeoutMs: timeoutMs.optional(),
    /** Requests in flight per provider; default 64. */
    concurrency: concurrency.optional(),
    /** Attempts per push when the provider says "retry later" (1 = no retry); default 2. */
    maxAttempts: z.int().min(1).max(5).optional(),
    /** First retry delay, ms, doubled per attempt (with jitter); default 250. */
    backoffBaseMs: z.int().min(0).max(60_000).optional(),
    /** Longest wait before a retry, ms; a longer Retry-After ends the attempts; default 2000. */
    backoffMaxMs: z.int().min(0).max(60_000).optional(),
    /**
     * PEM CA bundle that replaces the system's CAs for every provider connection (a
     * TLS-inspecting proxy, the local test servers); empty: the system's CAs.
     */
    caFile: z.string().optional(),
    apns: apnsSchema.optional(),
    fcm: fcmSchema.optional(),
    webpush: webpushSchema.optional(),
    umeng: umengSchema.optional(),
    huawei: huaweiSchema.optional(),
    honor: honorSchema.optional(),
    xiaomi: xiaomiSchema.optional(),
    oppo: oppoSchema.optional(),
    vivo: vivoSchema.optional(),
    meizu: meizuSchema.optional(),
  })
  .superRefine((cfg, ctx) => {
    for (const [channel, groups] of Object.entries(REQUIRED) as [PushChannel, string[][]][]) {
      const block = cfg[channel] as Record<string, unknown> | undefined;
      if (!block || block.enabled !== true) {
        continue;
      }
      for (const alternatives of groups) {
        if (!alternatives.some((k) => typeof block[k] === 'string' ? block[k] !== '' : block[k] !== undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: [channel, alternatives[0]!],
            message: `${alternatives.map((k) => `push.${channel}.${k}`).join(' or ')} because push.${channel}.enabled is true`,
          });
        }
      }
    }
  });

/** The `push` section as written. */
export type PushConfig = z.infer<typeof pushConfigSchema>;

/** Settings every adapter gets. */
export interface ChannelRuntime {
  timeoutMs: number;
  concurrency: number;
}

/** The push section with every default applied, channels present only when enabled. */
export interface ResolvedPushConfig {
  timeoutMs: number;
  concurrency: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** PEM text of push.caFile, when set. */
  ca?: string;
  apns?: ChannelRuntime & { teamId: string; keyId: string; key: string; bundleId: string; production: boolean; host: string; port: number };
  fcm?: ChannelRuntime & { projectId: string; clientEmail: string; privateKey: string; tokenUri: string; baseUrl: string };
  webpush?: ChannelRuntime & { vapidSubject: string; vapidPublicKey: string; vapidPrivateKey: string };
  umeng?: ChannelRuntime & { appKey: string; masterSecret: string; baseUrl: string; productionMode: boolean; miActivity: string; deadTokenCodes: string[] };
  huawei?: ChannelRuntime & { appId: string; clientId: string; clientSecret: string; authUrl: string; baseUrl: string; voipPermission: boolean; tokenRefreshS: number };
  honor?: ChannelRuntime & { appId: string; clientId: string; clientSecret: string; authUrl: string; baseUrl: string; tokenRefreshS: number };
  xiaomi?: ChannelRuntime & { appSecret: string; packageName: string; baseUrl: string; channelId: string; deadTokenCodes: string[] };
  oppo?: ChannelRuntime & { appKey: string; masterSecret: string; baseUrl: string; channelId: string; category: string; notifyLevel: 1 | 2 | 16; tokenRefreshS: number; deadTokenCodes: string[] };
  vivo?: ChannelRuntime & { appId: string; appKey: string; appSecret: string; baseUrl: string; category: string; testMode: boolean; tokenRefreshS: number; deadTokenCodes: string[] };
  meizu?: ChannelRuntime & { appId: string; appSecret: string; baseUrl: string };
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

function readFile(key: string, file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${key}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Applies the defaults and reads the key files of the enabled channels.
 * @throws Error naming the key when a file cannot be read or a service-account file is not valid JSON
 */
export function resolvePushConfig(cfg: PushConfig = {}): ResolvedPushConfig {
  const timeout = cfg.timeoutMs ?? 5000;
  const conc = cfg.concurrency ?? 64;
  const rt = (c: { timeoutMs?: number | undefined; concurrency?: number | undefined }): ChannelRuntime => ({ timeoutMs: c.timeoutMs ?? timeout, concurrency: c.concurrency ?? conc });
  const on = <T extends { enabled?: boolean | undefined }>(c: T | undefined): c is T => c?.enabled === true;
  const out: ResolvedPushConfig = {
    timeoutMs: timeout,
    concurrency: conc,
    maxAttempts: cfg.maxAttempts ?? 2,
    backoffBaseMs: cfg.backoffBaseMs ?? 250,
    backoffMaxMs: cfg.backoffMaxMs ?? 2000,
  };
  if (cfg.caFile) {
    out.ca = readFile('push.caFile', cfg.caFile);
  }
  const a = cfg.apns;
  if (on(a)) {
    const production = a.production ?? true;
    const url = new URL(a.baseUrl ?? (production ? 'https://api.push.apple.com' : 'https://api.sandbox.push.apple.com'));
    out.apns = {
      ...rt(a),
      teamId: a.teamId!,
      keyId: a.keyId!,
      key: a.key || readFile('push.apns.keyFile', a.keyFile!),
      bundleId: a.bundleId!,
      production,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port ? Number(url.port) : 443,
    };
  }
  const f = cfg.fcm;
  if (on(f)) {
    let sa = f.serviceAccount;
    if (!sa) {
      const parsed = fcmServiceAccount.safeParse(safeJson(readFile('push.fcm.serviceAccountFile', f.serviceAccountFile!)));
      if (!parsed.success) {
        throw new Error(`push.fcm.serviceAccountFile: ${f.serviceAccountFile} is not a service-account key (project_id, client_email, private_key)`);
      }
      sa = parsed.data;
    }
    out.fcm = {
      ...rt(f),
      projectId: f.projectId ?? sa.project_id,
      clientEmail: sa.client_email,
      privateKey: sa.private_key,
      tokenUri: f.tokenUri ?? sa.token_uri ?? 'https://oauth2.googleapis.com/token',
      baseUrl: trimSlash(f.baseUrl ?? 'https://fcm.googleapis.com'),
    };
  }
  const w = cfg.webpush;
  if (on(w)) {
    out.webpush = { ...rt(w), vapidSubject: w.vapidSubject!, vapidPublicKey: w.vapidPublicKey!, vapidPrivateKey: w.vapidPrivateKey! };
  }
  const u = cfg.umeng;
  if (on(u)) {
    out.umeng = {
      ...rt(u),
      appKey: u.appKey!,
      masterSecret: u.masterSecret!,
      baseUrl: trimSlash(u.baseUrl ?? 'https://msgapi.umeng.com'),
      productionMode: u.productionMode ?? true,
      miActivity: u.miActivity ?? '',
      deadTokenCodes: u.deadTokenCodes ?? [],
    };
  }
  const h = cfg.huawei;
  if (on(h)) {
    out.huawei = {
      ...rt(h),
      appId: h.appId!,
      clientId: h.clientId || h.appId!,
      clientSecret: h.clientSecret!,
      authUrl: h.authUrl ?? 'https://oauth-login.cloud.huawei.com/oauth2/v3/token',
      baseUrl: trimSlash(h.baseUrl ?? 'https://push-api.cloud.huawei.com'),
      voipPermission: h.voipPermission ?? false,
      tokenRefreshS: h.tokenRefreshS ?? 3300,
    };
  }
  const ho = cfg.honor;
  if (on(ho)) {
    out.honor = {
      ...rt(ho),
      appId: ho.appId!,
      clientId: ho.clientId || ho.appId!,
      clientSecret: ho.clientSecret!,
      authUrl: ho.authUrl ?? 'https://iam.developer.honor.com/auth/token',
      baseUrl: trimSlash(ho.baseUrl ?? 'https://push-api.cloud.honor.com'),
      tokenRefreshS: ho.tokenRefreshS ?? 3300,
    };
  }
  const x = cfg.xiaomi;
  if (on(x)) {
    out.xiaomi = {
      ...rt(x),
      appSecret: x.appSecret!,
      packageName: x.packageName!,
      baseUrl: trimSlash(x.baseUrl ?? 'https://api.xmpush.xiaomi.com'),
      channelId: x.channelId ?? '',
      deadTokenCodes: x.deadTokenCodes ?? ['20301'],
    };
  }
  const o = cfg.oppo;
  if (on(o)) {
    out.oppo = {
      ...rt(o),
      appKey: o.appKey!,
      masterSecret: o.masterSecret!,
      baseUrl: trimSlash(o.baseUrl ?? 'https://api.push.oppomobile.com'),
      channelId: o.channelId ?? '',
      category: o.category ?? 'IM',
      notifyLevel: o.notifyLevel ?? 2,
      tokenRefreshS: o.tokenRefreshS ?? 3600,
      deadTokenCodes: o.deadTokenCodes ?? ['10000'],
    };
  }
  const v = cfg.vivo;
  if (on(v)) {
    out.vivo = {
      ...rt(v),
      appId: v.appId!,
      appKey: v.appKey!,
      appSecret: v.appSecret!,
      baseUrl: trimSlash(v.baseUrl ?? 'https://api-push.vivo.com.cn'),
      category: v.category ?? 'IM',
      testMode: v.testMode ?? false,
      tokenRefreshS: v.tokenRefreshS ?? 3600,
      deadTokenCodes: v.deadTokenCodes ?? ['10302'],
    };
  }
  const m = cfg.meizu;
  if (on(m)) {
    out.meizu = { ...rt(m), appId: m.appId!, appSecret: m.appSecret!, baseUrl: trimSlash(m.baseUrl ?? 'https://server-api-push.meizu.com') };
  }

  return out;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
