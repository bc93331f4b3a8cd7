/**
 * Call recording end to end: sipp as the trunk playing real G.711 A-law speech
 * (/usr/share/sip-tester/g711a.pcap), the gateway in this process, and a Node WebRTC agent sending
 * a 440 Hz tone. The recording is read back from disk:
 * - its length matches the call's (answer to end) within a small tolerance;
 * - the left channel is the caller's audio: the pcap's own samples, found by normalised
 *   cross-correlation (the gateway does not transcode, so they come through nearly bit-exact);
 * - the right channel is the agent's tone (Goertzel) and does not carry the caller's speech;
 * - the call record and the CDR stream entry point at the file (id, duration, bytes);
 * - the admin API serves it, lists it in the agent's export, and erase deletes it;
 * - on demand (call.record) it starts and stops when the agent says; the sweeper deletes files
 *   past the retention.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MAX_RECORDINGS_PER_CALL } from '../../src/calls/recording.js';
import { alawToLinear } from '../../src/media/g711.js';
import { parseWav } from '../../src/media/wav.js';
import { dominant, rms } from '../helpers/audio.js';
import { type CallFixture, startCallGateway } from '../helpers/calls.js';
import { freePort, startSipp } from '../helpers/sipp.js';

const ADMIN_TOKEN = 'recording-test-admin-token-0123456789abcdef';
const PCAP = '/usr/share/sip-tester/g711a.pcap';

let fx: CallFixture | undefined;
let dir: string;
/** The caller's audio as sipp plays it: the pcap's PCMA payloads decoded, 8 kHz. */
let reference: Float64Array;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'rb-rec-e2e-'));
  const out = spawnSync('tshark', ['-r', PCAP, '-d', 'udp.port==0-65535,rtp', '-T', 'fields', '-e', 'rtp.payload'], { encoding: 'utf8' });
  const hex = out.stdout.replace(/[:\s]/g, '');
  reference = new Float64Array(hex.length / 2);
  for (let i = 0; i < reference.length; i++) {
    reference[i] = alawToLinear(parseInt(hex.slice(2 * i, 2 * i + 2), 16));
  }
  expect(reference.length).toBeGreaterThan(7 * 8000);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

function config(recDir: string, opts: { record?: boolean; onDemand?: boolean; retentionS?: number; maxDurationS?: number; minFreeMb?: number } = {}) {
  return {
    routing: { dids: [{ number: '*', agent: 'agent-rec', ...(opts.record ? { record: true } : {}) }], groups: [], defaultTrunk: '' },
    recording: { enabled: true, dir: recDir, retentionS: opts.retentionS ?? 86400, sweepIntervalMs: 1000, onDemand: opts.onDemand ?? false, ...(opts.maxDurationS ? { maxDurationS: opts.maxDurationS } : {}), ...(opts.minFreeMb ? { minFreeMb: opts.minFreeMb } : {}) },
    admin: { token: ADMIN_TOKEN },
  };
}

/** Left and right channels of a stereo 16-bit 8 kHz WAV. */
function stereo(buf: Buffer): { left: Float64Array; right: Float64Array } {
  const wav = parseWav(buf);
  expect(wav).toMatchObject({ formatTag: 1, channels: 2, sampleRate: 8000, bitsPerSample: 16 });
  const n = wav.data.length / 4;
  const left = new Float64Array(n);
  const right = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    left[i] = wav.data.readInt16LE(4 * i);
    right[i] = wav.data.readInt16LE(4 * i + 2);
  }

  return { left, right };
}

/** The best normalised cross-correlation of `needle` anywhere in `hay` (1 = identical up to gain). */
function bestCorrelation(hay: Float64Array, needle: Float64Array): { r: number; at: number } {
  let nn = 0;
  for (const x of needle) {
    nn += x * x;
  }
  let best = { r: 0, at: -1 };
  let hh = 0;
  for (let i = 0; i < needle.length && i < hay.length; i++) {
    hh += hay[i]! * hay[i]!;
  }
  for (let lag = 0; lag + needle.length <= hay.length; lag++) {
    if (lag > 0) {
      hh += hay[lag + needle.length - 1]! ** 2 - hay[lag - 1]! ** 2;
    }
    if (hh <= 0) {
      continue;
    }
    let dot = 0;
    for (let i = 0; i < needle.length; i++) {
      dot += needle[i]! * hay[lag + i]!;
    }
    const r = dot / Math.sqrt(nn * hh);
    if (r > best.r) {
      best = { r, at: lag };
    }
  }

  return best;
}

/** The call record of `callId` once it is written (records are written asynchronously). */
async function recordOf(callId: string): Promise<Record<string, string>> {
  let rec: Record<string, string> | undefined;
  await expect
    .poll(
      async () => {
        rec = (await fx!.gw.store!.recentRecords(5)).find((r) => r.callId === callId);

        return rec !== undefined;
      },
      { timeout: 5000, interval: 100 },
    )
    .toBe(true);

  return rec!;
}

const admin = (path_: string, method = 'GET') => fetch(`http://127.0.0.1:${fx!.gw.httpAddress.port}/admin${path_}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });

describe('call recording', () => {
  it('records a DID-rule call into one stereo WAV: length of the call, caller (pcap speech) left, agent (440 Hz) right; the record, CDR and admin API point at it; erase deletes it', async () => {
    const recDir = path.join(dir, 'did');
    fx = await startCallGateway(config(recDir, { record: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '7500' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    const started = await agent.waitForEvent('recording', undefined, 5000);
    expect(started).toMatchObject({ recording: true, recordingId: call.id, reason: 'rule' });
    const ended = await agent.waitForEvent('ended', undefined, 30_000);
    expect(ended).toMatchObject({ reason: 'hangup_remote' });
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);

    // the call record and the CDR stream entry point at the file
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ callId: call.id, agentId: 'agent-rec', codec: 'PCMA', recordings: call.id });
    const hash = await fx.gw.store!.getCall(call.id);
    expect(hash.recordings).toBe(call.id);
    const file = path.join(recDir, `${call.id}.wav`);
    // the file is completed (sizes in the header) just after the end
    await expect.poll(async () => parseWav(await readFile(file)).data.length, { timeout: 3000 }).toBe(Number(record.recordingBytes) - 44);
    const buf = await readFile(file);
    expect(buf.length).toBe(Number(record.recordingBytes));
    const { left, right } = stereo(buf);
    const fileMs = (left.length * 1000) / 8000;
    expect(Number(record.recordingDurationMs)).toBe(Math.round(fileMs));
    // length of the call: answer to end (the record's times), within 300 ms
    const callMs = Date.parse(record.endedAt!) - Date.parse(record.answeredAt!);
    expect(Math.abs(fileMs - callMs), `file ${fileMs} ms, call ${callMs} ms`).toBeLessThan(300);
    expect(fileMs).toBeGreaterThan(7000);

    // left = the caller: 1 s of the pcap's speech (from 1.5 s in) is found in it nearly unchanged
    const speech = reference.subarray(12_000, 20_000);
    const inLeft = bestCorrelation(left, speech);
    expect(inLeft.r, 'caller speech in the left channel').toBeGreaterThan(0.95);
    const inRight = bestCorrelation(right, speech);
    expect(inRight.r, 'caller speech in the right channel').toBeLessThan(0.3);
    // right = the agent's 440 Hz tone, steadily, from shortly after the answer to the end
    const mid = right.subarray(2 * 8000, right.length - 8000);
    expect(dominant(mid, [300, 440, 600, 800, 1000, 1500], 8000)).toBe(440);
    expect(rms(mid)).toBeGreaterThan(2000);
    expect(rms(left.subarray(2 * 8000, left.length - 8000))).toBeGreaterThan(500);

    // metrics
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_recordings_active 0');
    expect(Number(/ringbridge_recording_bytes_total ([\d.e+]+)/.exec(metrics)?.[1])).toBe(Number(record.recordingBytes) - 44);

    // admin: served by call id, listed in the agent's export
    const served = await admin(`/recordings/${call.id}`);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toBe('audio/wav');
    expect(Buffer.from(await served.arrayBuffer()).equals(buf)).toBe(true);
    expect((await admin('/recordings/..%2Fetc')).status).toBe(400);
    expect((await admin('/recordings/no-such-call')).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/admin/recordings/${call.id}`)).status).toBe(401);
    const exported = (await (await admin('/agents/agent-rec')).json()) as { recordings: { recordingId: string; callId: string; durationMs: number; bytes: number }[] };
    expect(exported.recordings).toEqual([expect.objectContaining({ recordingId: call.id, callId: call.id, trigger: 'did', durationMs: Number(record.recordingDurationMs), bytes: Number(record.recordingBytes) })]);

    // erase (the agent signs out first) deletes the file and its sidecar
    await agent.close();
    await expect.poll(async () => (await admin('/agents/agent-rec', 'DELETE')).status, { timeout: 10_000, interval: 500 }).toBe(200);
    expect(existsSync(file)).toBe(false);
    expect(existsSync(path.join(recDir, `${call.id}.json`))).toBe(false);
    expect((await admin(`/recordings/${call.id}`)).status).toBe(404);
  }, 90_000);

  it('records on demand between call.record on and off; the sweeper deletes files past the retention', async () => {
    const recDir = path.join(dir, 'on-demand');
    fx = await startCallGateway(config(recDir, { onDemand: true, retentionS: 3600 }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '6000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await new Promise((r) => setTimeout(r, 1500));
    expect(agent.events.some((e) => e.name === 'recording')).toBe(false);
    const t0 = Date.now();
    expect(await agent.client.record(call.id, true)).toEqual({ recording: true, recordingId: call.id });
    expect(await agent.waitForEvent('recording', undefined, 2000)).toMatchObject({ recording: true, recordingId: call.id, reason: 'on_demand' });
    // asking again changes nothing
    expect(await agent.client.record(call.id, true)).toEqual({ recording: true, recordingId: call.id });
    await new Promise((r) => setTimeout(r, 2500));
    expect(await agent.client.record(call.id, false)).toEqual({ recording: false });
    const onMs = Date.now() - t0;
    expect(await agent.waitForEvent('recording', undefined, 2000)).toMatchObject({ recording: false, recordingId: call.id, reason: 'on_demand' });
    await agent.waitForEvent('ended', undefined, 30_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);

    const record = await recordOf(call.id);
    expect(record).toMatchObject({ callId: call.id, recordings: call.id });
    const file = path.join(recDir, `${call.id}.wav`);
    await expect.poll(async () => (await stat(file)).size, { timeout: 3000 }).toBe(Number(record.recordingBytes));
    const { left, right } = stereo(await readFile(file));
    const fileMs = (left.length * 1000) / 8000;
    // from the 'on' request to the 'off' response: the file is that long (the requests' round trips apart)
    expect(Math.abs(fileMs - onMs), `file ${fileMs} ms, on for ${onMs} ms`).toBeLessThan(250);
    expect(dominant(right.subarray(4000, right.length - 2000), [300, 440, 600, 800, 1000], 8000)).toBe(440);
    expect(rms(left)).toBeGreaterThan(500);

    // the sweeper (every second here) deletes the recording once it is older than the retention
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(file, old, old);
    await utimes(path.join(recDir, `${call.id}.json`), old, old);
    await expect.poll(() => existsSync(file), { timeout: 5000, interval: 250 }).toBe(false);
    expect(existsSync(path.join(recDir, `${call.id}.json`))).toBe(false);
  }, 90_000);

  it('refuses call.record when on-demand recording is off (FORBIDDEN), and records nothing without a rule', async () => {
    const recDir = path.join(dir, 'off');
    fx = await startCallGateway(config(recDir, { onDemand: false }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '2000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    await expect(agent.client.record(call.id, true)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await agent.waitForEvent('ended', undefined, 30_000);
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.recordings).toBeUndefined();
    expect(existsSync(recDir)).toBe(false);
  }, 60_000);

  it('records an outbound call of a trunk with recording: true (trunk rule): the called trunk left, the agent right', async () => {
    const recDir = path.join(dir, 'trunk');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-uas-answer-rtp', extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    await trunk.ready;
    fx = await startCallGateway({
      ...config(recDir),
      routing: { dids: [{ number: '*', agent: 'agent-rec' }], groups: [], defaultTrunk: 'carrier' },
      trunks: [
        {
          id: 'carrier',
          inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
          outbound: { uri: `sip:127.0.0.1:${trunk.port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' },
          codecs: ['PCMA'],
          media: { latching: false },
          recording: true,
        },
      ],
    });
    const agent = await fx.agent('agent-rec');
    const call = await agent.client.dial('+4930123456');
    await agent.waitForEvent('answered', undefined, 10_000);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: true, recordingId: call.id, reason: 'rule' });
    // the agent cannot stop a rule's recording (on-demand is off here anyway: FORBIDDEN either way)
    await expect(agent.client.record(call.id, false)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await new Promise((r) => setTimeout(r, 6000));
    await agent.client.hangup(call.id);
    await agent.waitForEvent('ended', undefined, 5000);
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ direction: 'outbound', recordings: call.id });
    const file = path.join(recDir, `${call.id}.wav`);
    await expect.poll(async () => (await stat(file)).size, { timeout: 3000 }).toBe(Number(record.recordingBytes));
    const { left, right } = stereo(await readFile(file));
    const callMs = Date.parse(record.endedAt!) - Date.parse(record.answeredAt!);
    expect(Math.abs((left.length * 1000) / 8000 - callMs)).toBeLessThan(300);
    expect(bestCorrelation(left, reference.subarray(12_000, 20_000)).r, 'trunk speech in the left channel').toBeGreaterThan(0.95);
    expect(dominant(right.subarray(8000, right.length - 4000), [300, 440, 600, 800, 1000], 8000)).toBe(440);
  }, 90_000);

  it('does not record a G.722 call (codec not recordable): the agent is told, the failure is counted, the call goes on', async () => {
    const recDir = path.join(dir, 'g722');
    fx = await startCallGateway(config(recDir, { record: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-codec', target: fx.sipTarget, keys: { codec_pt: '9', codec_rtpmap: 'G722/8000', hold_ms: '2500' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: false, reason: 'failed' });
    expect(await agent.waitForEvent('ended', undefined, 15_000)).toMatchObject({ reason: 'hangup_remote' });
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.codec).toBe('G722');
    expect(record.recordings).toBeUndefined();
    expect(existsSync(path.join(recDir, `${call.id}.wav`))).toBe(false);
    expect(existsSync(path.join(recDir, `${call.id}.json`))).toBe(false);
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_recording_failures_total{reason="codec"} 1');
  }, 60_000);

  it('records a late-offer call (the codec comes with the ACK): the recording starts then, with the caller on the left', async () => {
    const recDir = path.join(dir, 'late');
    fx = await startCallGateway(config(recDir, { record: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-late-offer', target: fx.sipTarget, keys: { hold_ms: '6000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: true, recordingId: call.id, reason: 'rule' });
    await agent.waitForEvent('ended', undefined, 30_000);
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record).toMatchObject({ codec: 'PCMA', recordings: call.id });
    const file = path.join(recDir, `${call.id}.wav`);
    await expect.poll(async () => (await stat(file)).size, { timeout: 3000 }).toBe(Number(record.recordingBytes));
    const { left, right } = stereo(await readFile(file));
    const callMs = Date.parse(record.endedAt!) - Date.parse(record.answeredAt!);
    expect(Math.abs((left.length * 1000) / 8000 - callMs)).toBeLessThan(300);
    expect(bestCorrelation(left, reference.subarray(12_000, 20_000)).r, 'caller speech in the left channel').toBeGreaterThan(0.95);
    expect(dominant(right.subarray(2 * 8000, right.length - 8000), [300, 440, 600, 800, 1000], 8000)).toBe(440);
  }, 90_000);

  it('a recording directory that cannot be created fails the recording, not the call: the agent is told and the failure counted', async () => {
    const blocker = path.join(dir, 'not-a-dir');
    await writeFile(blocker, 'a file where the directory should be');
    fx = await startCallGateway(config(path.join(blocker, 'recordings'), { record: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '4000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: false, reason: 'failed' });
    // the call goes on with audio both ways
    await new Promise((r) => setTimeout(r, 1500));
    const counts = await agent.packetCounts(call.id);
    expect(counts.received).toBeGreaterThan(30);
    expect(counts.sent).toBeGreaterThan(30);
    expect(await agent.waitForEvent('ended', undefined, 15_000)).toMatchObject({ reason: 'hangup_remote' });
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.recordings).toBeUndefined();
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_recording_failures_total{reason="io"} 1');
    expect(metrics).toContain('ringbridge_recordings_active 0');
  }, 60_000);

  it('an agent toggling call.record cannot make files without bound: past MAX_RECORDINGS_PER_CALL starts the call gets RATE_LIMITED', async () => {
    const recDir = path.join(dir, 'flood');
    fx = await startCallGateway(config(recDir, { onDemand: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '8000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    const results: string[] = [];
    for (let i = 0; i < MAX_RECORDINGS_PER_CALL + 5; i++) {
      try {
        await agent.client.record(call.id, true);
        results.push('on');
      } catch (err) {
        results.push((err as { code: string }).code);
      }
      await agent.client.record(call.id, false);
    }
    expect(results.filter((r) => r === 'on')).toHaveLength(MAX_RECORDINGS_PER_CALL);
    expect(results.slice(MAX_RECORDINGS_PER_CALL)).toEqual(Array(5).fill('RATE_LIMITED'));
    await agent.waitForEvent('ended', undefined, 30_000);
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.recordings!.split(',')).toHaveLength(MAX_RECORDINGS_PER_CALL);
    const names = await readdir(recDir);
    expect(names.filter((n) => n.endsWith('.wav'))).toHaveLength(MAX_RECORDINGS_PER_CALL);
    expect(names.filter((n) => n.endsWith('.json'))).toHaveLength(MAX_RECORDINGS_PER_CALL);
  }, 90_000);

  it('stops a recording at recording.maxDurationS (a call that never ends cannot fill the disk): the agent is told (reason limit), the call goes on', async () => {
    const recDir = path.join(dir, 'limit');
    fx = await startCallGateway(config(recDir, { record: true, maxDurationS: 2 }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '5000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 40_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: true, reason: 'rule' });
    expect(await agent.waitForEvent('recording', (e) => !e.recording, 4000)).toMatchObject({ recording: false, recordingId: call.id, reason: 'limit' });
    expect(agent.events.some((e) => e.name === 'ended')).toBe(false);
    const ended = await agent.waitForEvent('ended', undefined, 30_000);
    expect(ended).toMatchObject({ reason: 'hangup_remote' });
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.recordings).toBe(call.id);
    expect(Math.abs(Number(record.recordingDurationMs) - 2000)).toBeLessThan(150);
    const file = path.join(recDir, `${call.id}.wav`);
    await expect.poll(async () => (await stat(file)).size, { timeout: 3000 }).toBe(Number(record.recordingBytes));
  }, 60_000);

  it('does not start a recording when the disk of recording.dir has less free space than recording.minFreeMb: the agent is told, the failure counted (disk), no file made, the call goes on', async () => {
    const recDir = path.join(dir, 'full');
    // more free space than any test machine has: the disk counts as full
    fx = await startCallGateway(config(recDir, { record: true, minFreeMb: 1_000_000_000 }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '3000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    expect(await agent.waitForEvent('recording', undefined, 5000)).toMatchObject({ recording: false, reason: 'failed' });
    expect(await agent.waitForEvent('ended', undefined, 15_000)).toMatchObject({ reason: 'hangup_remote' });
    expect((await trunk.result).exitCode).toBe(0);
    const record = await recordOf(call.id);
    expect(record.recordings).toBeUndefined();
    expect(await readdir(recDir).catch(() => [])).toEqual([]);
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toContain('ringbridge_recording_failures_total{reason="disk"} 1');
  }, 60_000);

  it('does not follow a symbolic link planted at a recording file name: the file it points to stays untouched, the start fails, a later start works', async () => {
    const recDir = path.join(dir, 'planted');
    fx = await startCallGateway(config(recDir, { onDemand: true }));
    const agent = await fx.agent('agent-rec');
    const mediaPort = await freePort();
    const trunk = startSipp({ scenario: 'trunk-call-rtp', target: fx.sipTarget, keys: { hold_ms: '4000' }, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    const incoming = await agent.waitForEvent('incoming', undefined, 10_000);
    const call = await agent.client.answer(incoming.call.id);
    const victim = path.join(dir, 'victim.txt');
    await writeFile(victim, 'precious');
    await mkdir(recDir, { recursive: true });
    await symlink(victim, path.join(recDir, `${call.id}.wav`));
    await expect(agent.client.record(call.id, true)).rejects.toMatchObject({ code: 'MEDIA_ERROR' });
    expect(await readFile(victim, 'utf8')).toBe('precious');
    expect(await agent.client.record(call.id, true)).toEqual({ recording: true, recordingId: `${call.id}-2` });
    await agent.waitForEvent('ended', undefined, 15_000);
    expect((await trunk.result).exitCode).toBe(0);
    expect(await readFile(victim, 'utf8')).toBe('precious');
    const record = await recordOf(call.id);
    expect(record.recordings).toBe(`${call.id}-2`);
  }, 60_000);
});
