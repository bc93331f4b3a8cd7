/**
 * Call quality per leg: the trunk side is sipp for the signalling and this test for the RTP (a
 * G.711 A-law stream from a UDP socket of its own), so that the test can lose and delay packets
 * the way a bad network does. A clean call and a degraded call (25 % loss, up to 60 ms of jitter)
 * must show the difference in /metrics and in their call records.
 */
import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, startSipp } from '../helpers/sipp.js';

let fx: CallFixture | undefined;

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

/** Sends `count` 20 ms PCMA packets to `to`, dropping `lossPct` % and delaying each by up to `jitterMs`. */
async function sendRtp(sock: dgram.Socket, to: { address: string; port: number }, count: number, lossPct: number, jitterMs: number): Promise<void> {
  const ssrc = 0x1234abcd;
  const payload = Buffer.alloc(160, 0xd5); // A-law silence
  // a fixed pseudo-random sequence: the same packets are lost on every run
  let seed = 42;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;

    return seed / 2 ** 31;
  };
  const t0 = Date.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const due = t0 + i * 20;
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
    if (rand() * 100 < lossPct) {
      continue;
    }
    const header = Buffer.alloc(12);
    header[0] = 0x80;
    header[1] = 8; // PCMA
    header.writeUInt16BE(i & 0xffff, 2);
    header.writeUInt32BE((i * 160) >>> 0, 4);
    header.writeUInt32BE(ssrc, 8);
    const packet = Buffer.concat([header, payload]);
    const delay = rand() * jitterMs;
    pending.push(new Promise((resolve) => setTimeout(() => sock.send(packet, to.port, to.address, () => resolve()), delay)));
  }
  await Promise.all(pending);
}

async function qualityCall(lossPct: number, jitterMs: number): Promise<Record<string, string>> {
  const agent = await fx!.agent('agent-q');
  const rtp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => rtp.bind(0, '127.0.0.1', resolve));
  const rtpPort = rtp.address().port;
  try {
    const trunk = startSipp({ scenario: 'trunk-in-external-rtp', target: fx!.sipTarget, keys: { rtp_port: String(rtpPort) }, extraArgs: ['-mp', String(await freePort())], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await agent.waitForEvent('answered', undefined, 5000);
    const media = fx!.gw.calls!.calls.find((c) => c.id === incoming.call.id)!.media!.localRtp;
    // 4 s of audio from the "trunk", sampled every second by the gateway (test profile)
    await sendRtp(rtp, media, 200, lossPct, jitterMs);
    await new Promise((r) => setTimeout(r, 1200));
    await agent.client.hangup(call.id);
    await agent.waitForEvent('ended', undefined, 5000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    for (let i = 0; i < 50; i++) {
      const rec = (await fx!.gw.store!.recentRecords(5)).find((x) => x.callId === incoming.call.id);
      if (rec) {
        return rec;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error('no call record');
  } finally {
    rtp.close();
    await agent.close();
  }
}

describe('call quality per leg', () => {
  it('shows the loss and jitter of a degraded trunk leg in its MOS, in /metrics and in the call record', async () => {
    fx = await startCallGateway({ routing: { dids: [{ number: '*', agent: 'agent-q' }], groups: [], defaultTrunk: '' } });
    const clean = await qualityCall(0, 0);
    const bad = await qualityCall(25, 60);

    // clean: no loss, MOS near the G.711 ceiling (4.41)
    expect(Number(clean.mosTrunkIn)).toBeGreaterThan(4.0);
    expect(Number(clean.lossPctMax)).toBe(0);
    // degraded: the trunk leg shows its loss and jitter, and a MOS under the 3.1 threshold
    expect(Number(bad.lossPctMax)).toBeGreaterThan(8);
    expect(Number(bad.jitterMsMax)).toBeGreaterThan(Number(clean.jitterMsMax));
    expect(Number(bad.jitterMsMax)).toBeGreaterThan(5);
    expect(Number(bad.mosTrunkIn)).toBeLessThan(Number(clean.mosTrunkIn) - 0.8);
    expect(Number(bad.mos)).toBeLessThan(3.1);
    expect(Number(bad.mos)).toBeLessThanOrEqual(Number(bad.mosTrunkIn));

    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_calls_low_mos_total 1'); // the degraded call only
    const count = Number(/ringbridge_leg_mos_count\{leg="trunk",direction="inbound"\} (\d+)/.exec(metrics)?.[1]);
    expect(count).toBeGreaterThanOrEqual(4); // about 4 samples a call
    // some trunk-inbound samples lost more than 5 % (only the degraded call's)
    const upTo5 = Number(/ringbridge_leg_packet_loss_ratio_bucket\{le="0\.05",leg="trunk",direction="inbound"\} (\d+)/.exec(metrics)?.[1]);
    expect(upTo5).toBeLessThan(count);
    expect(metrics).toMatch(/ringbridge_leg_mos_count\{leg="agent",direction="inbound"\} [1-9]/);
  }, 90_000);
});
