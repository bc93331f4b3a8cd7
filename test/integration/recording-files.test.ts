/**
 * The recording service's file handling (src/calls/recording.ts) on a real directory: the
 * retention sweeper deletes only expired recordings it made (a sidecar naming itself and its
 * WAV), never other files that happen to end in .wav or .json, nor symbolic links.
 */
import { mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RecordingService } from '../../src/calls/recording.js';
import { wavHeader } from '../../src/media/wav.js';
import { quietLogger } from '../helpers/env.js';

const DAY = 86_400_000;

describe('RecordingService files', () => {
  let root: string;
  let dir: string;

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'rb-recfiles-'));
    dir = path.join(root, 'recordings');
    await mkdir(dir);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const service = () =>
    new RecordingService({
      config: { recording: { enabled: true, dir, retentionS: 86_400, maxDurationS: 14_400, minFreeMb: 0, sweepIntervalMs: 3_600_000, onDemand: true }, trunks: [], routing: { dids: [], groups: [], defaultTrunk: '' } },
      logger: quietLogger(),
    });

  /** Writes a file and makes it `ageMs` old. */
  async function old(file: string, body: string | Buffer, ageMs = 2 * DAY): Promise<void> {
    await writeFile(file, body);
    const t = new Date(Date.now() - ageMs);
    await utimes(file, t, t);
  }

  const sidecar = (id: string) => JSON.stringify({ recordingId: id, callId: id, agentIds: ['a1'], trigger: 'on_demand', startedAt: new Date(Date.now() - 2 * DAY).toISOString() });

  it('deletes an expired recording (WAV and sidecar) and a sidecar whose WAV is gone, but no file it did not make and no symbolic link', async () => {
    // ours: expired pair, expired sidecar without its WAV, a fresh pair
    await old(path.join(dir, 'call-1.wav'), wavHeader(2, 8000, 16, 0));
    await old(path.join(dir, 'call-1.json'), sidecar('call-1'));
    await old(path.join(dir, 'call-2.json'), sidecar('call-2'));
    await writeFile(path.join(dir, 'call-3.wav'), wavHeader(2, 8000, 16, 0));
    await writeFile(path.join(dir, 'call-3.json'), sidecar('call-3'));
    // not ours: old files that end in .wav/.json (a misconfigured recording.dir shared with other data)
    await old(path.join(dir, 'package.json'), '{"name":"x"}');
    await old(path.join(dir, 'hold-music.wav'), wavHeader(1, 8000, 16, 0));
    await old(path.join(dir, 'other.json'), JSON.stringify({ recordingId: 'call-9', callId: 'call-9', agentIds: [] }));
    // symbolic links (to an old file outside the directory) are not recordings either
    const outside = path.join(root, 'keep.wav');
    await old(outside, wavHeader(1, 8000, 16, 0));
    await symlink(outside, path.join(dir, 'link.wav'));
    await symlink(outside, path.join(dir, 'link.json'));

    const deleted = await service().sweep();

    expect(deleted).toBe(1);
    expect((await readdir(dir)).sort()).toEqual(['call-3.json', 'call-3.wav', 'hold-music.wav', 'link.json', 'link.wav', 'other.json', 'package.json']);
    expect(await readdir(root)).toContain('keep.wav');
  });

  it('serves a recording only when both files are regular files it wrote (not a symbolic link to another file)', async () => {
    const secret = path.join(root, 'secret.txt');
    await writeFile(secret, 'not a recording');
    await writeFile(path.join(dir, 'call-5.json'), sidecar('call-5'));
    await symlink(secret, path.join(dir, 'call-5.wav'));
    await writeFile(path.join(dir, 'call-6.json'), sidecar('call-6'));
    await writeFile(path.join(dir, 'call-6.wav'), wavHeader(2, 8000, 16, 0));
    await writeFile(path.join(dir, 'call-7.json'), sidecar('call-6'));
    await writeFile(path.join(dir, 'call-7.wav'), wavHeader(2, 8000, 16, 0));

    const svc = service();
    expect(await svc.file('call-5')).toBeUndefined();
    expect(await svc.file('call-6')).toMatchObject({ bytes: 44, meta: { recordingId: 'call-6' } });
    expect(await svc.file('call-7')).toBeUndefined();
  });
});
