/**
 * The softphone page (src/web) end to end in headless Chromium (Debian's chromium, driven by
 * playwright-core, fake microphone): the page is built and served by the gateway, signs in with a
 * token, sipp calls in as the trunk with G.711 audio, the page rings, the test clicks Answer,
 * the page's live quality readout (getStats) shows inbound packets, sipp receives the page's RTP,
 * and the page hangs up (sipp gets the BYE).
 * Skipped when /usr/bin/chromium is missing (apt-get install chromium).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../../src/util/paths.js';
import { agentToken, captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, startSipp } from '../helpers/sipp.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);

let browser: Browser | undefined;
let fx: CallFixture | undefined;
let page: Page | undefined;
const pageErrors: string[] = [];

const routeAll = (agentId: string) => ({ routing: { dids: [{ number: '*', agent: agentId }], groups: [], defaultTrunk: '' } });

/** Numbers shown in the quality readout's data attributes. */
async function readoutCount(p: Page, attr: 'packetsReceived' | 'packetsSent'): Promise<number> {
  return Number((await p.getByTestId('quality').getAttribute(`data-${attr === 'packetsReceived' ? 'packets-received' : 'packets-sent'}`)) ?? 0);
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
    await page?.close();
    page = undefined;
    await fx?.close();
    fx = undefined;
  });

  afterAll(async () => {
    await browser?.close();
  });

  async function signedInPage(agentId: string): Promise<Page> {
    fx = await startCallGateway(routeAll(agentId));
    const context = await browser!.newContext();
    const p = await context.newPage();
    pageErrors.length = 0;
    p.on('pageerror', (e) => pageErrors.push(e.message));
    p.on('console', (m) => {
      if (m.type() === 'error') {
        pageErrors.push(m.text());
      }
    });
    const res = await p.goto(`http://127.0.0.1:${fx.gw.httpAddress.port}/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("default-src 'none'");
    await p.getByTestId('token').fill(await agentToken(agentId));
    await p.getByTestId('signin').click();
    await p.locator('[data-testid="connection"][data-state="connected"]').waitFor({ timeout: 10_000 });
    await expect.poll(() => p.getByTestId('effective').textContent()).toBe('available');
    page = p;

    return p;
  }

  it('shows a readable error for a refused token', async () => {
    fx = await startCallGateway(routeAll('agent-1'));
    page = await browser!.newPage();
    await page.goto(`http://127.0.0.1:${fx.gw.httpAddress.port}/`);
    await page.getByTestId('token').fill(await agentToken('agent-1', { secret: 'not-the-gateway-secret-0123456789abcdef' }));
    await page.getByTestId('signin').click();
    await page.getByTestId('error').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await page.getByTestId('error').textContent()).toMatch(/token was refused.*AUTH_FAILED/);
    expect(await page.getByTestId('signin').isVisible()).toBe(true);
  }, 30_000);

  it('rings for a sipp call, answers, shows inbound packets, sends RTP to sipp, and hangs up', async () => {
    const p = await signedInPage('agent-1');
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-in-wait-bye', target: fx!.sipTarget, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });

    await p.getByTestId('incoming').waitFor({ state: 'visible', timeout: 10_000 });
    expect(await p.getByTestId('incoming-from').textContent()).toMatch(/\d/);
    await p.getByTestId('answer').click();
    await p.getByTestId('call').waitFor({ state: 'visible', timeout: 10_000 });
    await expect.poll(() => p.getByTestId('call-state').textContent(), { timeout: 10_000 }).toBe('active');

    // the page's own getStats (the quality readout) counts the trunk's audio
    await expect.poll(() => readoutCount(p, 'packetsReceived'), { timeout: 10_000, interval: 500 }).toBeGreaterThan(50);
    await expect.poll(() => readoutCount(p, 'packetsSent'), { timeout: 10_000, interval: 500 }).toBeGreaterThan(50);
    expect(await p.getByTestId('quality').getAttribute('data-level')).toMatch(/good|fair|poor/);
    expect(await p.getByTestId('q-jitter').textContent()).toMatch(/^\d+\.\d ms$/);
    // the round trip comes from the gateway's RTCP receiver reports (or the ICE pair's STUN checks)
    await expect.poll(() => p.getByTestId('q-rtt').textContent(), { timeout: 10_000, interval: 500 }).toMatch(/^\d+(\.\d)? ms$/);
    console.log(`[softphone] quality readout: ${(await p.getByTestId('quality').innerText()).replace(/\s+/g, ' ')}`);

    await p.getByTestId('hangup').click();
    await p.getByTestId('call').waitFor({ state: 'hidden', timeout: 10_000 });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('BYE')).toHaveLength(1);
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA RTP from the page at the sipp trunk').toBeGreaterThan(50);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
