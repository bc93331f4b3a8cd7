/**
 * The vendor adapters (Huawei, Honor, Xiaomi, OPPO, vivo, Meizu, Umeng; undici) through one
 * PushBridge against local servers that implement each vendor's contract as push-channels.md
 * describes it (test/helpers/push-servers/<vendor>.ts): auth, request shape, TTL and priority
 * settings of call wake-ups, dead-token answers, rate limits and outages.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { PushBridge } from '../../src/push/bridge.js';
import { type PushChannel, type PushMessage } from '../../src/push/provider.js';
import { memoryLogger, pushTestCerts } from '../helpers/push-servers/common.js';
import { FakeHonor } from '../helpers/push-servers/honor.js';
import { FakeHuawei } from '../helpers/push-servers/huawei.js';
import { FakeMeizu } from '../helpers/push-servers/meizu.js';
import { FakeOppo } from '../helpers/push-servers/oppo.js';
import { FakeUmeng, UMENG_FAKE_DEAD_CODE } from '../helpers/push-servers/umeng.js';
import { type VendorFake } from '../helpers/push-servers/vendor-base.js';
import { FakeVivo } from '../helpers/push-servers/vivo.js';
import { FakeXiaomi } from '../helpers/push-servers/xiaomi.js';

const TIMEOUT_MS = 300;

let huawei: FakeHuawei;
let honor: FakeHonor;
let xiaomi: FakeXiaomi;
let oppo: FakeOppo;
let vivo: FakeVivo;
let meizu: FakeMeizu;
let umeng: FakeUmeng;
let bridge: PushBridge;
let log: ReturnType<typeof memoryLogger>;
const dead: [PushChannel, string][] = [];
let fakes: VendorFake<unknown>[] = [];

const call = (callId = 'call-1', ttlSeconds = 30): PushMessage => ({ kind: 'call', callId, callerDisplay: '+86******21', ttlSeconds });
let n = 0;
const tok = (vendor: string) => `${vendor}-token-${++n}-${'a'.repeat(40)}`;

beforeAll(async () => {
  const certs = await pushTestCerts();
  [huawei, honor, xiaomi, oppo, vivo, meizu, umeng] = await Promise.all([
    FakeHuawei.start({ appId: '10086', clientSecret: 'hw-secret' }),
    FakeHonor.start({ appId: '20086', clientSecret: 'honor-secret' }),
    FakeXiaomi.start({ appSecret: 'mi-secret', packageName: 'com.acme.agent' }),
    FakeOppo.start({ appKey: 'oppo-key', masterSecret: 'oppo-master' }),
    FakeVivo.start({ appId: '30086', appKey: 'vivo-key', appSecret: 'vivo-secret' }),
    FakeMeizu.start({ appId: '40086', appSecret: 'meizu-secret' }),
    FakeUmeng.start({ appKey: 'umeng-key', masterSecret: 'umeng-master' }),
  ]);
  fakes = [huawei, honor, xiaomi, oppo, vivo, meizu, umeng] as VendorFake<unknown>[];
  log = memoryLogger();
  bridge = new PushBridge({
    config: {
      caFile: certs.caFile,
      timeoutMs: TIMEOUT_MS,
      maxAttempts: 2,
      backoffBaseMs: 10,
      backoffMaxMs: 50,
      huawei: { enabled: true, appId: '10086', clientSecret: 'hw-secret', authUrl: `${huawei.url}/oauth2/v3/token`, baseUrl: huawei.url, voipPermission: true },
      honor: { enabled: true, appId: '20086', clientSecret: 'honor-secret', authUrl: `${honor.url}/auth/token`, baseUrl: honor.url },
      xiaomi: { enabled: true, appSecret: 'mi-secret', packageName: 'com.acme.agent', baseUrl: xiaomi.url, channelId: 'calls' },
      oppo: { enabled: true, appKey: 'oppo-key', masterSecret: 'oppo-master', baseUrl: oppo.url, channelId: 'calls', notifyLevel: 16 },
      vivo: { enabled: true, appId: '30086', appKey: 'vivo-key', appSecret: 'vivo-secret', baseUrl: vivo.url },
      meizu: { enabled: true, appId: '40086', appSecret: 'meizu-secret', baseUrl: meizu.url },
      umeng: { enabled: true, appKey: 'umeng-key', masterSecret: 'umeng-master', baseUrl: umeng.url, miActivity: 'com.acme.agent.WakeActivity', deadTokenCodes: [UMENG_FAKE_DEAD_CODE] },
    },
    logger: log.logger,
    onDeadToken: (channel, token) => {
      dead.push([channel, token]);
    },
  });
});

afterAll(async () => {
  await bridge?.close();
  await Promise.all(fakes.map((f) => f.close()));
});

afterEach(() => {
  vi.useRealTimers();
  for (const f of fakes) {
    f.states.clear();
    // Every request of the test passed the fake's contract checks.
    const problems = f.problems.splice(0);
    expect(problems).toEqual([]);
  }
  dead.length = 0;
});

/** Sends a call wake-up to a token the fake says `state` for. */
async function sendWith(channel: PushChannel, fake: VendorFake<unknown>, state: Parameters<typeof fake.states.set>[1]) {
  const token = tok(channel);
  fake.states.set(token, state);

  return { token, result: await bridge.send({ channel, token }, call()) };
}

/** The shared checks: dead answers, 429/5xx/flow control, silence. */
function commonBehaviour(channel: PushChannel, fake: () => VendorFake<unknown>, sendPath: string, opts: { deadReasons: [string, string][]; retry: [string, string][] }) {
  it.each(opts.deadReasons)('maps the "%s" answer to dead-token (%s) and calls onDeadToken', async (state, reason) => {
    const { token, result } = await sendWith(channel, fake(), state as never);
    expect(result).toEqual({ status: 'dead-token', reason });
    expect(dead).toEqual([[channel, token]]);
  });

  it.each(opts.retry)('treats the "%s" answer as retry-later (%s), retried once', async (state, reason) => {
    const before = fake().count(sendPath);
    const { result } = await sendWith(channel, fake(), state as never);
    expect(result).toMatchObject({ status: 'retry-later', reason });
    expect(fake().count(sendPath) - before).toBe(2);
    expect(dead).toEqual([]);
  });

  it('gives up on a silent server after the timeout', async () => {
    const t0 = Date.now();
    const { result } = await sendWith(channel, fake(), 'hang');
    expect(result).toMatchObject({ status: 'retry-later', reason: 'timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * TIMEOUT_MS - 20);
    expect(Date.now() - t0).toBeLessThan(2 * TIMEOUT_MS + 3000);
  });
}

/** Token reuse and refresh before expiry, for the vendors with an auth token. */
function tokenRefresh(channel: PushChannel, fake: () => VendorFake<unknown>, refreshAfterMin: number) {
  it(`reuses its auth token and fetches a new one after ${refreshAfterMin} min, before the provider would refuse it`, async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 24 * 3600_000); // past any token an earlier test left cached
    const f = fake();
    const before = f.issued.requests;
    for (let i = 0; i < 3; i++) {
      expect((await bridge.send({ channel, token: tok(channel) }, call(`c${i}`))).status).toBe('delivered');
    }
    expect(f.issued.requests - before).toBe(1);
    vi.setSystemTime(Date.now() + (refreshAfterMin - 1) * 60_000);
    expect((await bridge.send({ channel, token: tok(channel) }, call('c3'))).status).toBe('delivered');
    expect(f.issued.requests - before).toBe(1);
    vi.setSystemTime(Date.now() + 2 * 60_000); // refreshAfterMin + 1: due here, still valid at the provider (60 min)
    expect((await bridge.send({ channel, token: tok(channel) }, call('c4'))).status).toBe('delivered');
    expect(f.issued.requests - before).toBe(2);
  });

  it('fetches a new auth token at once when the provider says the cached one expired, and the push goes through', async () => {
    const f = fake();
    expect((await bridge.send({ channel, token: tok(channel) }, call())).status).toBe('delivered');
    const before = f.issued.requests;
    f.issued.expireAll();
    expect((await bridge.send({ channel, token: tok(channel) }, call())).status).toBe('delivered');
    expect(f.issued.requests).toBe(before + 1);
  });
}

describe('Huawei adapter', () => {
  it('delivers a call wake-up as a HIGH-urgency VOIP data message with the TTL', async () => {
    const token = tok('huawei');
    expect(await bridge.send({ channel: 'huawei', token }, call('call-h', 45))).toMatchObject({ status: 'delivered' });
    const a = huawei.accepted.at(-1)!;
    expect(a.token).toBe(token);
    expect(a.body.validate_only).toBe(false);
    expect(a.body.message.android).toEqual({ ttl: '45s', urgency: 'HIGH', category: 'VOIP' });
    expect(JSON.parse(a.body.message.data!)).toMatchObject({ type: 'incoming_call', callId: 'call-h', caller: '+86******21', ttl: '45' });
  });

  it('sends missed calls as a notification message', async () => {
    await bridge.send({ channel: 'huawei', token: tok('huawei') }, { kind: 'missed', callId: 'call-m', callerDisplay: '+86******21', ttlSeconds: 3600 });
    const a = huawei.accepted.at(-1)!;
    expect(a.body.message.data).toBeUndefined();
    expect(a.body.message.android.notification).toMatchObject({ title: 'Missed call', body: '+86******21', tag: 'call-m', click_action: { type: 3 } });
  });

  tokenRefresh('huawei', () => huawei, 55);
  commonBehaviour('huawei', () => huawei, '/v1/', {
    deadReasons: [
      ['dead', '80300007'],
      ['dead-alt', '80100000'],
    ],
    retry: [
      ['busy', 'http-503'],
      ['down', '81000001'],
    ],
  });
});

describe('Honor adapter', () => {
  it('delivers a call wake-up as a data message with the TTL, the bearer token and a timestamp header', async () => {
    const token = tok('honor');
    expect(await bridge.send({ channel: 'honor', token }, call('call-o', 40))).toMatchObject({ status: 'delivered' });
    const a = honor.accepted.at(-1)!;
    expect(a.body.android).toEqual({ ttl: '40s' });
    expect(JSON.parse(a.body.data!)).toMatchObject({ type: 'incoming_call', callId: 'call-o' });
    expect(Math.abs(Number(a.timestamp) - Date.now())).toBeLessThan(10_000);
  });

  it('rejects (does not delete) a token in failTokens', async () => {
    const { result } = await sendWith('honor', honor, 'fail');
    expect(result).toEqual({ status: 'rejected', reason: 'failTokens' });
    expect(dead).toEqual([]);
  });

  tokenRefresh('honor', () => honor, 55);
  commonBehaviour('honor', () => honor, '/api/', {
    deadReasons: [['dead', 'expireTokens']],
    retry: [
      ['busy', 'http-429'],
      ['down', 'http-503'],
    ],
  });
});

describe('Xiaomi adapter', () => {
  it('delivers a call wake-up as a private-channel notification: TTL in ms, notify_id from the call, online-only', async () => {
    const token = tok('xiaomi');
    expect(await bridge.send({ channel: 'xiaomi', token }, call('call-x', 30))).toMatchObject({ status: 'delivered' });
    const f = xiaomi.accepted.at(-1)!.form;
    expect(f).toMatchObject({ registration_id: token, restricted_package_name: 'com.acme.agent', pass_through: '0', time_to_live: '30000', 'extra.channel_id': 'calls', 'extra.only_send_once': '1', notify_type: '-1' });
    expect(JSON.parse(f.payload!)).toMatchObject({ type: 'incoming_call', callId: 'call-x' });
    await bridge.send({ channel: 'xiaomi', token }, { kind: 'cancel', callId: 'call-x', ttlSeconds: 30 });
    expect(xiaomi.accepted.at(-1)!.form.notify_id).toBe(f.notify_id); // the cancel replaces the call notice
    expect(xiaomi.accepted.at(-1)!.form['extra.only_send_once']).toBeUndefined();
  });

  commonBehaviour('xiaomi', () => xiaomi, '/v3/', {
    deadReasons: [
      ['dead', 'bad_regids'],
      ['dead-alt', '20301'],
    ],
    retry: [['busy', 'http-503']],
  });
});

describe('OPPO adapter', () => {
  it('delivers a call wake-up as a notification with category, notify_level, channel and offline TTL', async () => {
    const token = tok('oppo');
    expect(await bridge.send({ channel: 'oppo', token }, call('call-p', 30))).toMatchObject({ status: 'delivered' });
    const m = oppo.accepted.at(-1)!.message;
    expect(m).toMatchObject({ target_type: 2, target_value: token });
    expect(m.notification).toMatchObject({ category: 'IM', notify_level: 16, channel_id: 'calls', off_line: true, off_line_ttl: 30, title: 'Incoming call' });
    expect(JSON.parse(m.notification.action_parameters as string)).toMatchObject({ callId: 'call-p' });
  });

  tokenRefresh('oppo', () => oppo, 60);
  commonBehaviour('oppo', () => oppo, '/server/v1/message', {
    deadReasons: [['dead', '10000']],
    retry: [
      ['busy', '-2'],
      ['down', 'http-503'],
    ],
  });
});

describe('vivo adapter', () => {
  it('delivers a call wake-up as a system-class IM notification; TTL raised to vivo\'s 60 s minimum', async () => {
    const token = tok('vivo');
    expect(await bridge.send({ channel: 'vivo', token }, call('call-v', 30))).toMatchObject({ status: 'delivered' });
    const b = vivo.accepted.at(-1)!.body;
    expect(b).toMatchObject({ regId: token, classification: 1, category: 'IM', notifyType: 4, timeToLive: 60, pushMode: 0, skipType: 1 });
    expect(b.clientCustomMap).toMatchObject({ type: 'incoming_call', callId: 'call-v' });
  });

  it('does not delete a token answered with invalidUser status 4 (not a test user)', async () => {
    const { result } = await sendWith('vivo', vivo, 'dead-alt');
    expect(result.status).toBe('delivered');
    expect(dead).toEqual([]);
  });

  tokenRefresh('vivo', () => vivo, 60);
  commonBehaviour('vivo', () => vivo, '/message/send', {
    deadReasons: [['dead', 'invalidUser-2']],
    retry: [
      ['busy', '10072'],
      ['down', 'http-503'],
    ],
  });
});

describe('Meizu adapter', () => {
  it('delivers a signed notification with the 1-hour minimum validity and a notify key', async () => {
    const token = tok('meizu');
    expect(await bridge.send({ channel: 'meizu', token }, call('call-z', 30))).toMatchObject({ status: 'delivered' });
    const m = meizu.accepted.at(-1)!.messageJson;
    expect(m.pushTimeInfo).toEqual({ offLine: 1, validTime: 1 });
    expect(m.noticeBarInfo).toMatchObject({ title: 'Incoming call', content: '+86******21' });
    expect(m.advanceInfo!.notifyKey).toMatch(/^[0-9a-f]{8}$/);
    expect(m.clickTypeInfo!.parameters).toMatchObject({ callId: 'call-z' });
  });

  it('rejects (does not delete) a token the answer lists under another code', async () => {
    const { result } = await sendWith('meizu', meizu, 'fail');
    expect(result).toEqual({ status: 'rejected', reason: '520' });
  });

  commonBehaviour('meizu', () => meizu, '/garcia/', {
    deadReasons: [
      ['dead', '110002'],
      ['dead-alt', '110003'],
    ],
    retry: [
      ['busy', '110010'],
      ['down', 'http-503'],
    ],
  });
});

describe('Umeng adapter', () => {
  it('delivers a signed pass-through message for a call, through the vendor channels (mipush)', async () => {
    const token = tok('umeng');
    expect(await bridge.send({ channel: 'umeng', token }, call('call-u', 30))).toMatchObject({ status: 'delivered' });
    const b = umeng.accepted.at(-1)!.body;
    expect(b).toMatchObject({ appkey: 'umeng-key', type: 'unicast', device_tokens: token, production_mode: 'true', mipush: true, mi_activity: 'com.acme.agent.WakeActivity' });
    expect(b.payload).toMatchObject({ display_type: 'message', body: { custom: { type: 'incoming_call', callId: 'call-u' } } });
    expect(b.policy.out_biz_no).toMatch(/^[0-9a-f]{32}$/);
  });

  commonBehaviour('umeng', () => umeng, '/api/send', {
    deadReasons: [['dead', UMENG_FAKE_DEAD_CODE]],
    retry: [['busy', 'http-503']],
  });
});

describe('logs', () => {
  it('never contain a token', () => {
    expect(log.text()).not.toMatch(/-token-\d+-a{40}/);
  });
});
