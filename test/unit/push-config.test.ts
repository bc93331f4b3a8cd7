/** The push configuration section: everything optional and off, credentials required once enabled, defaults. */
import { describe, expect, it } from 'vitest';
import { pushConfigSchema, resolvePushConfig } from '../../src/push/config.js';

describe('pushConfigSchema', () => {
  it('accepts an empty section: every channel off', () => {
    const cfg = pushConfigSchema.parse({});
    const r = resolvePushConfig(cfg);
    expect(r).toEqual({ timeoutMs: 5000, concurrency: 64, maxAttempts: 2, backoffBaseMs: 250, backoffMaxMs: 2000 });
  });

  it('accepts a channel block that is not enabled without credentials', () => {
    expect(pushConfigSchema.safeParse({ huawei: { baseUrl: 'https://push-api.cloud.huawei.com' } }).success).toBe(true);
  });

  it('names every missing credential of an enabled channel', () => {
    const r = pushConfigSchema.safeParse({ apns: { enabled: true, teamId: 'T' }, vivo: { enabled: true, appId: '1' } });
    expect(r.success).toBe(false);
    const issues = r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(issues).toEqual(
      expect.arrayContaining([
        'apns.keyId: push.apns.keyId because push.apns.enabled is true',
        'apns.keyFile: push.apns.keyFile or push.apns.key because push.apns.enabled is true',
        'apns.bundleId: push.apns.bundleId because push.apns.enabled is true',
        'vivo.appKey: push.vivo.appKey because push.vivo.enabled is true',
        'vivo.appSecret: push.vivo.appSecret because push.vivo.enabled is true',
      ]),
    );
  });

  it('refuses unknown keys and bad values, naming them', () => {
    const r = pushConfigSchema.safeParse({ xiaomi: { enabled: true, appSecret: 's', packageName: 'p', baseUrl: 'ftp://x', regoin: 'eu' }, timeoutMs: 5 });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['xiaomi.baseUrl', 'xiaomi', 'timeoutMs']));
  });

  it('applies the documented defaults of an enabled vendor (production hosts, dead-token codes)', () => {
    const r = resolvePushConfig(pushConfigSchema.parse({ timeoutMs: 3000, oppo: { enabled: true, appKey: 'k', masterSecret: 's', concurrency: 8 } }));
    expect(r.oppo).toMatchObject({ baseUrl: 'https://api.push.oppomobile.com', timeoutMs: 3000, concurrency: 8, category: 'IM', notifyLevel: 2, tokenRefreshS: 3600, deadTokenCodes: ['10000'] });
    const u = resolvePushConfig(pushConfigSchema.parse({ umeng: { enabled: true, appKey: 'k', masterSecret: 's' } }));
    expect(u.umeng!.deadTokenCodes).toEqual([]);
  });
});
