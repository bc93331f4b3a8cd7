/**
 * The softphone page (src/web) end to end in headless Chromium (Debian's chromium, driven by
 * playwright-core, fake microphone), built and served by the gateway, with sipp as the trunk:
 * - a refused token reads as such;
 * - sipp calls in with G.711 audio, the page rings, Answer, the page's live quality readout
 *   (getStats) shows inbound packets, sipp receives the page's RTP, the page hangs up (BYE);
 * - the page declines a call (603 at sipp), then sipp hangs up a second, answered call (and
 *   wake-ups asked of a gateway without Web Push say so);
 * - DTMF from the dial pad reaches sipp as RFC 4733 events, mute, hold and resume re-INVITE sipp;
 * - a number dialled from the page reaches sipp as the trunk's UAS, with audio both ways;
 * - wake-ups: the page subscribes for Web Push and registers as a webpush device, the tab closes,
 *   sipp calls, the gateway sends a VAPID-signed, encrypted push to a local push service
 *   (test/helpers/push-servers/webpush.ts), the test hands that push to the page's service worker
 *   through the DevTools protocol (ServiceWorker.deliverPushMessage), the worker shows the call's
 *   notification, and the page opened at the notification's URL signs in by itself and answers.
 *   The browser vendor's push service (FCM for Chromium) cannot be reached from this machine, so
 *   the page's PushManager.subscribe() returns the local service's subscription instead, the way
 *   the other wake tests use a local APNs.
 * With SOFTPHONE_SCREENSHOT=<file.png> the answered call is also saved as a screenshot (README).
 * Skipped when /usr/bin/chromium is missing (apt-get install chromium).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createECDH } from 'node:crypto';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../src/util/paths.js';
import { agentToken, captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { pushTestCerts } from '../helpers/push-servers/common.js';
import { FakeWebPush } from '../helpers/push-servers/webpush.js';
import { freePort, type SippProcess, sipHeader, startSipp } from '../helpers/sipp.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
const SCREENSHOT = process.env.SOFTPHONE_SCREENSHOT;

let browser: Browser | undefined;
let fx: CallFixture | undefined;
let context: BrowserContext | undefined;
const sipps: SippProcess[] = [];
const pageErrors: string[] = [];

type Overrides = Parameters<typeof startCallGateway>[0];

const routeAll = (agentId: string, extra: Overrides = {}): Overrides => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' }, ...extra });

/** Gateway overrides: every DID to the agent, and a default trunk 'carrier' whose outbound uri is a sipp UAS on `port`. */
const withTrunk = (agentId: string, port: number): Overrides => ({
  routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: 'carrier' },
  trunks: [
    {
      id: 'carrier',
      inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
      outbound: { uri: `sip:127.0.0.1:${port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' },
      codecs: ['PCMA', 'PCMU'],
      media: { latching: false },
    },
  ],
});

/** Numbers shown in the quality readout's data attributes. */
async function readoutCount(p: Page, attr: 'packetsReceived' | 'packetsSent'): Promise<number> {
  return Number((await p.getByTestId('quality').getAttribute(`data-${attr === 'packetsReceived' ? 'packets-received' : 'packets-sent'}`)) ?? 0);
}

/** A sipp trunk that the test stops if it fails. */
function trunk(opts: Parameters<typeof startSipp>[0]): SippProcess {
  const sipp = startSipp(opts);
  sipps.push(sipp);

  return sipp;
}

/** Waits until the page's own getStats counts more than `min` packets each way. */
async function audioBothWays(p: Page, min = 50): Promise<void> {
  await expect.poll(() => readoutCount(p, 'packetsReceived'), { timeout: 10_000, interval: 500 }).toBeGreaterThan(min);
  await expect.poll(() => readoutCount(p, 'packetsSent'), { timeout: 10_000, interval: 500 }).toBeGreaterThan(min);
}

/** Clicks Answer on the ringing call and waits until it is active. */
async function answer(p: Page): Promise<void> {
  await p.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10_000 });
  await p.getByTestId('answer').click();
  await p.getByTestId('call').waitFor({ state: 'visible', timeout: 10_000 });
  await expect.poll(() => p.getByTestId('call-state').textContent(), { timeout: 10_000 }).toBe('active');
}

describe.skipIf(!haveChromium)('softphone page in headless Chromium', () => {
  beforeAll(async () => {
    const root = projectRoot();
    const built = spawnSync(process.execPath, [path.join(root, 'src', 'web', 'build.mjs')], { cwd: root, encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--use-fake-ui-for-media-stream',
        '--use-fake-device-for-media-stream',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);

  afterEach(async () => {
    // a sipp still running means its test failed: stop it (its result no longer matters)
    await Promise.all(sipps.splice(0).map((sipp) => sipp.stop().catch(() => undefined)));
    await context?.close();
    context = undefined;
    await fx?.close();
    fx = undefined;
  });

  afterAll(async () => {
    await browser?.close();
  });

  /** A new browser context with its page errors collected. */
  async function newPage(): Promise<Page> {
    context ??= await browser!.newContext();
    const p = await context.newPage();
    p.on('pageerror', (e) => pageErrors.push(e.message));
    p.on('console', (m) => {
      if (m.type() === 'error') {
        pageErrors.push(m.text());
      }
    });

    return p;
  }

  /** The page of the gateway `fx`, signed in as the agent (wake-ups per `wake`). */
  async function signIn(agentId: string, opts: { wake?: boolean } = {}): Promise<Page> {
    const p = await newPage();
    pageErrors.length = 0;
    const res = await p.goto(`http://127.0.0.1:${fx!.gw.httpAddress.port}/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'none'");
    await p.getByTestId('token').fill(await agentToken(agentId));
    if (opts.wake) {
      await p.getByTestId('wake').check();
    }
    await p.getByTestId('signin').click();
    await p.locator('[data-testid="connection"][data-state="connected"]').waitFor({ timeout: 10_000 });
    await expect.poll(() => p.getByTestId('effective').textContent()).toBe('available');

    return p;
  }

  it('shows a readable error for a refused token', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const page = await newPage();
    await page.goto(`http://127.0.0.1:${fx.gw.httpAddress.port}/`);
    await page.getByTestId('token').fill(await agentToken('agent-1', { secret: 'not-the-gateway-secret-0123456789abcdef' }));
    await page.getByTestId('signin').click();
    await page.getByTestId('error').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await page.getByTestId('error').textContent()).toMatch(/token was refused.*AUTH_FAILED/);
    expect(await page.getByTestId('signin').isVisible()).toBe(true);
  }, 30_000);

  it('rings for a sipp call, answers, shows inbound packets, sends RTP to sipp, and hangs up', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const p = await signIn('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const sipp = trunk({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });

    await p.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await p.getByTestId('incoming-from').textContent()).toMatch(/\d/);
    await answer(p);

    // the page's own getStats (the quality readout) counts the trunk's audio
    await audioBothWays(p);
    expect(await p.getByTestId('quality').getAttribute('data-level')).toMatch(/good|fair|poor/);
    expect(await p.getByTestId('q-jitter').textContent()).toMatch(/^\d+\.\d ms$/);
    // the round trip comes from the gateway's RTCP receiver reports (or the ICE pair's STUN checks)
    await expect.poll(() => p.getByTestId('q-rtt').textContent(), { timeout: 10_000, interval: 500 }).toMatch(/^\d+(\.\d)? ms$/);
    console.log(`[softphone] quality readout: ${(await p.getByTestId('quality').innerText()).replace(/\s+/g, ' ')}`);
    if (SCREENSHOT) {
      await p.setViewportSize({ width: 760, height: 900 });
      await p.screenshot({ path: SCREENSHOT, fullPage: true });
      console.log(`[softphone] screenshot saved to ${SCREENSHOT}`);
    }

    await p.getByTestId('hangup').click();
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 10_000 });
    const r = await sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('BYE')).toHaveLength(1);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP from the page at the sipp trunk').toBeGreaterThan(50);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('declines one call (603 at sipp), then sipp hangs up a second, answered call', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    // wake-ups asked for on a gateway without Web Push: said so, and the agent stays signed in
    const p = await signIn('agent-1', { wake: true });
    await expect.poll(() => p.getByTestId('wake-status').getAttribute('data-state'), { timeout: 10_000 }).toBe('error');
    expect(await p.getByTestId('wake-status').textContent()).toMatch(/wake-ups unavailable: this gateway does not send Web Push/);

    const declined = trunk({ scenario: 'trunk-in-expect-603', target: fx.sipTarget, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    await p.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10_000 });
    await p.getByTestId('decline').click();
    await p.getByTestId('incoming').waitFor({ state: 'hidden', timeout: 10_000 });
    const d = await declined.result;
    expect(d.exitCode, d.describe()).toBe(0);
    expect(d.received(603)).toHaveLength(1);
    await expect.poll(() => p.getByTestId('effective').textContent()).toBe('available');

    const second = trunk({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '2500' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    await answer(p);
    await expect.poll(() => readoutCount(p, 'packetsReceived'), { timeout: 10_000, interval: 500 }).toBeGreaterThan(20);
    // sipp's BYE ends the call on the page, which says who hung up
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 15_000 });
    expect(await p.getByTestId('error').textContent()).toMatch(/ended: the other party hung up/);
    const r = await second.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.sent('BYE')).toHaveLength(1);
    await expect.poll(() => p.getByTestId('effective').textContent()).toBe('available');
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('a caller who hangs up right after the answer leaves the page ready for the next call', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const p = await signIn('agent-1');
    const sipp = trunk({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '0' }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 30_000 });
    await p.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10_000 });
    await p.getByTestId('answer').click();
    const r = await sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 10_000 });
    await expect.poll(() => p.getByTestId('dial').isEnabled(), { timeout: 10_000 }).toBe(true);
    await expect.poll(() => p.getByTestId('effective').textContent(), { timeout: 10_000 }).toBe('available');
    expect(pageErrors).toEqual([]);
  }, 40_000);

  it('sends DTMF from the dial pad, mutes, holds and resumes (sipp sees the digits and both re-INVITEs)', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    const p = await signIn('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort, 101);
    await capture.ready;
    const sipp = trunk({ scenario: 'trunk-in-accept-reinvites', target: fx.sipTarget, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    await answer(p);
    await audioBothWays(p, 20);

    for (const digit of ['5', '#']) {
      await p.getByTestId(`pad-${digit}`).click();
      await p.waitForTimeout(400);
    }
    await expect.poll(() => p.getByTestId('dtmf-log').textContent()).toBe('→5 →# ');

    await p.getByTestId('mute').click();
    await expect.poll(() => p.getByTestId('mute').getAttribute('aria-pressed')).toBe('true');
    await p.getByTestId('mute').click();
    await expect.poll(() => p.getByTestId('mute').getAttribute('aria-pressed')).toBe('false');

    await p.getByTestId('hold').click();
    await expect.poll(() => p.getByTestId('call-state').textContent(), { timeout: 10_000 }).toBe('held');
    expect(await p.getByTestId('hold').textContent()).toBe('Resume');
    await p.getByTestId('hold').click();
    await expect.poll(() => p.getByTestId('call-state').textContent(), { timeout: 10_000 }).toBe('active');

    // the scenario hangs up a second after the resume
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 15_000 });
    const r = await sipp.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const reinvites = r.received('INVITE');
    expect(reinvites, r.describe()).toHaveLength(2);
    expect(reinvites[0]).toMatch(/^a=sendonly\r?$/m);
    expect(reinvites[1]).toMatch(/^a=sendrecv\r?$/m);
    const atSipp = await capture.stop();
    expect(atSipp.events, 'RFC 4733 events at sipp (5, then # = 11)').toEqual([5, 11]);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('dials a number from the page: sipp answers as the trunk UAS, audio both ways, the page hangs up', async () => {
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const uas = trunk({ scenario: 'trunk-uas-answer-rtp', extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    await uas.ready;
    fx = await startCallGateway(withTrunk('agent-1', uas.port));
    const p = await signIn('agent-1');

    for (const digit of '4930123456') {
      await p.getByTestId(`pad-${digit}`).click();
    }
    expect(await p.getByTestId('number').inputValue()).toBe('4930123456');
    await p.getByTestId('number').press('Home');
    await p.getByTestId('number').type('+');
    await p.getByTestId('dial').click();
    await p.getByTestId('call').waitFor({ state: 'visible', timeout: 10_000 });
    await expect.poll(() => p.getByTestId('call-state').textContent(), { timeout: 10_000 }).toBe('active');
    await audioBothWays(p);

    await p.getByTestId('hangup').click();
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 10_000 });
    const r = await uas.result;
    expect(r.exitCode, r.describe()).toBe(0);
    const invite = r.received('INVITE')[0]!;
    expect(invite.split('\r\n', 1)[0]).toMatch(/^INVITE sip:\+4930123456@/);
    expect(r.received('BYE')).toHaveLength(1);
    expect(sipHeader(r.received('BYE')[0]!, 'Call-ID')).toBe(sipHeader(invite, 'Call-ID'));
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP from the page at the sipp trunk').toBeGreaterThan(50);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('wakes a closed tab by Web Push: the service worker shows the call, the page it opens signs in and answers', async () => {
    const vapid = createECDH('prime256v1');
    vapid.generateKeys();
    const vapidPublicKey = vapid.getPublicKey().toString('base64url');
    const service = await FakeWebPush.start();
    try {
      const certs = await pushTestCerts();
      fx = await startCallGateway(
        routeAll('agent-1', {
          push: {
            caFile: certs.caFile,
            timeoutMs: 2000,
            webpush: { enabled: true, vapidSubject: 'mailto:ops@example.com', vapidPublicKey, vapidPrivateKey: vapid.getPrivateKey().toString('base64url') },
          },
        }),
      );
      const origin = `http://127.0.0.1:${fx.gw.httpAddress.port}`;
      // The local push service stands in for the browser vendor's (unreachable here): subscribe()
      // returns its subscription, made for the gateway's VAPID key as a browser's would be.
      const { id: subId, token: subscription } = service.subscribe(vapidPublicKey);
      context = await browser!.newContext();
      await context.grantPermissions(['notifications'], { origin });
      // (page scripts as strings: the tests are compiled without the DOM types)
      // Its state lives in localStorage, as the browser keeps a subscription across pages.
      await context.addInitScript(`{
        const sub = ${subscription};
        const b64 = ${JSON.stringify(vapidPublicKey)}.replace(/-/g, '+').replace(/_/g, '/');
        const key = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (ch) => ch.charCodeAt(0)).buffer;
        const fake = {
          endpoint: sub.endpoint, expirationTime: null, options: { userVisibleOnly: true, applicationServerKey: key }, toJSON: () => sub,
          unsubscribe: () => { localStorage.removeItem('test.subscribed'); localStorage.setItem('test.unsubscribed', '1'); return Promise.resolve(true); },
        };
        PushManager.prototype.subscribe = () => { localStorage.setItem('test.subscribed', '1'); return Promise.resolve(fake); };
        PushManager.prototype.getSubscription = () => Promise.resolve(localStorage.getItem('test.subscribed') ? fake : null);
      }`);

      // 1. sign in with wake-ups on: a webpush device with the subscription
      const first = await signIn('agent-1', { wake: true });
      await expect.poll(() => first.getByTestId('wake-status').getAttribute('data-state'), { timeout: 15_000 }).toBe('on');
      const devices = await fx.gw.store!.devices('agent-1');
      expect(devices).toHaveLength(1);
      expect(devices[0]).toMatchObject({ platform: 'web', channel: 'webpush', token: subscription });
      expect(devices[0]!.deviceId).toMatch(/^web-[0-9a-f-]{36}$/);

      // another page of the origin (for the DevTools session below) sees what the page kept:
      // localStorage reaches other tabs asynchronously
      // (not the page's own errors: the browser asks /health for a favicon, a 404)
      const other = await context.newPage();
      await other.goto(`${origin}/health`);
      await expect.poll(() => other.evaluate("localStorage.getItem('ringbridge.wake.session') !== null"), { timeout: 10_000 }).toBe(true);

      // 2. the tab closes: the session ends at once (close 1000), the agent is offline
      await first.close({ runBeforeUnload: true });
      await expect.poll(() => fx!.gw.signaling!.sessionsOf('agent-1').length, { timeout: 10_000 }).toBe(0);

      // 3. sipp calls: the gateway pushes to the browser's subscription
      const mediaPort = await freePort();
      const capture = captureUdp(mediaPort);
      await capture.ready;
      const sipp = trunk({ scenario: 'trunk-in-wait-bye', target: fx.sipTarget, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 60_000 });
      await expect.poll(() => service.accepted.length, { timeout: 10_000 }).toBe(1);
      const push = service.accepted[0]!;
      expect(push.id).toBe(subId);
      expect(push.urgency).toBe('high');
      expect(push.payload).toMatchObject({ type: 'incoming_call', title: 'Incoming call' });
      const callId = String(push.payload.callId);

      // 4. the browser hands the push to the page's service worker, which shows the call
      const cdp = await context.newCDPSession(other);
      const registrationId = new Promise<string>((resolve) => {
        cdp.on('ServiceWorker.workerRegistrationUpdated', (e: { registrations: { registrationId: string; scopeURL: string; isDeleted: boolean }[] }) => {
          const reg = e.registrations.find((r) => r.scopeURL === `${origin}/web/` && !r.isDeleted);
          if (reg) {
            resolve(reg.registrationId);
          }
        });
      });
      await cdp.send('ServiceWorker.enable');
      await cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId: await registrationId, data: JSON.stringify(push.payload) });
      type Shown = { title: string; body: string; tag: string; url?: string };
      const notifications = (): Promise<Shown[]> =>
        other.evaluate(`navigator.serviceWorker.getRegistration('/web/')
          .then((reg) => (reg ? reg.getNotifications() : []))
          .then((shown) => shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data && n.data.url })))`);
      await expect.poll(notifications, { timeout: 10_000, interval: 250 }).toHaveLength(1);
      const [shown] = await notifications();
      expect(shown).toMatchObject({ title: 'Incoming call', tag: `call:${callId}` });
      expect(shown!.url).toBe(`${origin}/?call=${encodeURIComponent(callId)}`);

      // 5. the notification's page signs in with the kept token and the waiting call rings there
      const woken = await newPage();
      await woken.goto(shown!.url!);
      await woken.locator('[data-testid="connection"][data-state="connected"]').waitFor({ timeout: 10_000 });
      expect(new URL(woken.url()).search).toBe('');
      // the woken page found the subscription it had (same key): no new one, none dropped
      expect(await woken.evaluate("[localStorage.getItem('test.subscribed'), localStorage.getItem('test.unsubscribed')]")).toEqual(['1', null]);
      await answer(woken);
      await audioBothWays(woken);
      expect(service.accepted, 'no second wake-up push while the page is connected').toHaveLength(1);

      // 6. sign out turns wake-ups off: the device is gone and nothing is kept in the browser
      await woken.getByTestId('hangup').click();
      await woken.getByTestId('call').waitFor({ state: 'hidden', timeout: 10_000 });
      const r = await sipp.result;
      expect(r.exitCode, r.describe()).toBe(0);
      expect((await capture.stop()).byPayloadType.get(8) ?? 0).toBeGreaterThan(50);
      await woken.getByTestId('signout').click();
      await woken.getByTestId('signin').waitFor({ state: 'visible', timeout: 10_000 });
      await expect.poll(() => fx!.gw.store!.devices('agent-1').then((d) => d.length), { timeout: 5000 }).toBe(0);
      expect(await woken.evaluate("[localStorage.getItem('ringbridge.wake.session'), localStorage.getItem('test.subscribed'), localStorage.getItem('test.unsubscribed')]")).toEqual([null, null, '1']);
      expect(pageErrors).toEqual([]);
    } finally {
      await service.close();
    }
  }, 90_000);
});
