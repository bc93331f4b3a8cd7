/**
 * G.711 (src/media/g711.ts) against values of the ITU-T G.711 tables, and the streaming WAV
 * writer (src/media/wav.ts): header sizes fixed on close, interleaving, parse round trip.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alawToLinear, decodeG711, encodeG711, g711LawOf, linearToAlaw, linearToMulaw, mulawToLinear } from '../../src/media/g711.js';
import { parseWav, WAV_HEADER_BYTES, WavFormatError, wavHeader, WavWriter } from '../../src/media/wav.js';

describe('G.711', () => {
  it('encodes and decodes the reference points of the tables', () => {
    // silence
    expect(linearToMulaw(0)).toBe(0xff);
    expect(mulawToLinear(0xff)).toBe(0);
    expect(mulawToLinear(0x7f)).toBe(0);
    expect(linearToAlaw(0)).toBe(0xd5);
    expect(alawToLinear(0xd5)).toBe(8);
    expect(alawToLinear(0x55)).toBe(-8);
    // full scale
    expect(linearToMulaw(32767)).toBe(0x80);
    expect(linearToMulaw(-32768)).toBe(0x00);
    expect(mulawToLinear(0x80)).toBe(32124);
    expect(mulawToLinear(0x00)).toBe(-32124);
    expect(linearToAlaw(32767)).toBe(0xaa);
    expect(linearToAlaw(-32768)).toBe(0x2a);
    expect(alawToLinear(0xaa)).toBe(32256);
    expect(alawToLinear(0x2a)).toBe(-32256);
  });

  it('round-trips every codeword (decode then encode gives the codeword back, except µ-law negative zero)', () => {
    for (let c = 0; c < 256; c++) {
      expect(linearToAlaw(alawToLinear(c))).toBe(c);
      if (c !== 0x7f) {
        expect(linearToMulaw(mulawToLinear(c))).toBe(c);
      }
    }
  });

  it('keeps the quantisation error within the segment step over the whole range', () => {
    for (let s = -32768; s <= 32767; s += 7) {
      const u = mulawToLinear(linearToMulaw(s));
      const a = alawToLinear(linearToAlaw(s));
      // the steps double per segment: at most 1/16 of the magnitude plus the smallest step
      expect(Math.abs(u - s)).toBeLessThanOrEqual(Math.abs(s) / 16 + 16);
      expect(Math.abs(a - s)).toBeLessThanOrEqual(Math.abs(s) / 16 + 16);
    }
  });

  it('decodes buffers into an offset of the output and knows the laws by MIME type', () => {
    const pcm = Int16Array.from([0, 1000, -1000, 20000]);
    const out = new Int16Array(6);
    expect(decodeG711('PCMA', encodeG711('PCMA', pcm), out, 2)).toBe(4);
    expect(Array.from(out.subarray(2))).toEqual([8, 1008, -1008, 19968]);
    expect(decodeG711('PCMU', Buffer.from([0xff, 0xff, 0xff]), new Int16Array(2))).toBe(2);
    expect(g711LawOf('audio/pcmu')).toBe('PCMU');
    expect(g711LawOf('audio/PCMA')).toBe('PCMA');
    expect(g711LawOf('audio/opus')).toBeUndefined();
  });
});

describe('WavWriter', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'rb-wav-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('streams interleaved stereo frames and fixes the RIFF and data sizes on close', async () => {
    const file = path.join(dir, 'a.wav');
    const w = await WavWriter.create(file, 2, 8000);
    const header = parseWav(await readFile(file));
    expect(header.data.length).toBe(0);
    const frames = new Int16Array(2 * 8000);
    for (let i = 0; i < 8000; i++) {
      frames[2 * i] = i % 100;
      frames[2 * i + 1] = -(i % 50);
    }
    w.write(frames);
    frames.fill(0); // the writer copied them
    w.write(Int16Array.from([7, -7]));
    const r = await w.close();
    expect(await w.close()).toEqual(r);
    expect(r).toEqual({ dataBytes: 8001 * 4, fileBytes: WAV_HEADER_BYTES + 8001 * 4 });
    const buf = await readFile(file);
    expect(buf.length).toBe(r.fileBytes);
    expect(buf.readUInt32LE(4)).toBe(buf.length - 8);
    expect(buf.readUInt32LE(40)).toBe(8001 * 4);
    const wav = parseWav(buf);
    expect(wav).toMatchObject({ formatTag: 1, channels: 2, sampleRate: 8000, bitsPerSample: 16 });
    expect(buf.readUInt32LE(28)).toBe(8000 * 4); // byte rate
    expect(buf.readUInt16LE(32)).toBe(4); // block align
    expect(wav.data.readInt16LE(2 * (2 * 123))).toBe(23);
    expect(wav.data.readInt16LE(2 * (2 * 123 + 1))).toBe(-23);
    expect(wav.data.readInt16LE(wav.data.length - 4)).toBe(7);
    expect(wav.data.readInt16LE(wav.data.length - 2)).toBe(-7);
    w.write(Int16Array.from([1, 1])); // after close: ignored
    expect((await stat(file)).size).toBe(r.fileBytes);
  });

  it('keeps the header sizes current while it writes, so a process killed mid-recording leaves a file of the audio written', async () => {
    const file = path.join(dir, 'crash.wav');
    const w = await WavWriter.create(file, 2, 8000);
    const chunk = new Int16Array(2 * 800).fill(1000); // 100 ms
    for (let i = 0; i < 25; i++) {
      w.write(chunk);
    }
    // no close(): what a crash leaves once the writes reached the disk
    await w.flush();
    const buf = await readFile(file);
    expect(buf.length).toBe(WAV_HEADER_BYTES + 25 * 3200);
    expect(buf.readUInt32LE(40)).toBe(25 * 3200);
    expect(buf.readUInt32LE(4)).toBe(buf.length - 8);
    // while writing, the header lags the data by at most one second of audio
    for (let i = 0; i < 15; i++) {
      w.write(chunk);
    }
    await new Promise((r) => setTimeout(r, 200));
    const mid = await readFile(file);
    expect(mid.readUInt32LE(40)).toBeGreaterThanOrEqual(mid.length - WAV_HEADER_BYTES - 8000 * 4);
    expect(mid.readUInt32LE(40)).toBeLessThanOrEqual(mid.length - WAV_HEADER_BYTES);
    await w.close();
  });

  it('parses files with extra chunks and odd-sized chunks, and refuses what is not WAV', () => {
    const data = Buffer.from([1, 0, 2, 0]);
    const list = Buffer.concat([Buffer.from('LIST'), Buffer.from([3, 0, 0, 0]), Buffer.from('abc'), Buffer.from([0])]);
    const h = wavHeader(1, 8000, 16, data.length);
    const file = Buffer.concat([h.subarray(0, 36), list, h.subarray(36), data]);
    const wav = parseWav(file);
    expect(wav.channels).toBe(1);
    expect(Array.from(wav.data)).toEqual([1, 0, 2, 0]);
    expect(() => parseWav(Buffer.from('not a wav file at all'))).toThrow(WavFormatError);
    expect(() => parseWav(h.subarray(0, 12))).toThrow(/no fmt chunk/);
  });
});
