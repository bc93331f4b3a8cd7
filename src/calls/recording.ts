/**
 * Call recording (config `recording`): decides which calls are recorded, runs a CallRecorder
 * (src/media/recorder.ts) on the call's router, tells the agent (`call.recording`), puts the
 * files in the call record and the CDR, deletes them after the retention, and lists, erases and
 * serves them for the admin API.
 *
 * Triggers, on the node that holds the call's media, from the answer on:
 * - `trunks[].recording: true`: every answered call of the trunk (inbound and outbound);
 * - `routing.dids[].record: true`: every answered inbound call to that number (exact match, else
 *   the `*` entry, as routing does);
 * - the agent's `call.record {on}` when `recording.onDemand` is true. An agent may stop only a
 *   recording it started: a rule's recording is not the agent's to stop (FORBIDDEN).
 * `recording.enabled: false` records nothing.
 *
 * Files: `<dir>/<recordingId>.wav` (stereo PCM 16-bit 8 kHz; left the caller/trunk, right the
 * agent) and `<recordingId>.json` (callId, agentIds, trigger, times, duration, bytes). The id is
 * the call id for the call's first recording, `<callId>-<n>` for later ones (on-demand restarts).
 * The sidecar is written at the start, so that erase and the sweeper find a recording even if the
 * process died during it; the WAV's sizes are then fixed only when it ends cleanly.
 *
 * Sources: the call's trunk producer (on CallMedia's PlainTransport) is the caller channel; a
 * producer on any WebRtcTransport of the router is the agent channel, the newest one winning (a
 * transfer re-bridges the call to another agent's producer). Transports with `appData.role`
 * (player, recorder) are not sources.
 *
 * Call record and CDR fields: `recordings` (ids, comma-separated), `recordingDurationMs` and
 * `recordingBytes` (sums over the call's recordings).
 *
 * Disk: a recording starts only while recording.dir's file system has recording.minFreeMb free.
 *
 * Length: a recording stops at `recording.maxDurationS` (the agent is told, reason `limit`); the
 * call goes on unrecorded.
 *
 * Retention: a sweeper deletes recordings whose files were last written more than
 * `recording.retentionS` ago, every `recording.sweepIntervalMs`.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type types as ms } from 'mediasoup';
import { Counter, Gauge, type Registry } from 'prom-client';
import { type Config } from '../config/schema.js';
import { type Logger } from '../log/logger.js';
import { g711LawOf } from '../media/g711.js';
import { CallRecorder, RecorderCodecError, type RecordingSummary } from '../media/recorder.js';
import { type EventData, type RecordingChangeReason } from '../signaling/protocol.js';
import { SignalingError } from '../signaling/server.js';
import { FAR_LEG_ROLE } from './call-media.js';
import { type Call } from './call.js';
import { normaliseNumber } from './routing.js';

/** Why a recording runs. */
export type RecordingTrigger = 'trunk' | 'did' | 'on_demand';

/** The sidecar of a recording (`<id>.json`). Times are ISO strings. */
export interface RecordingMeta {
  recordingId: string;
  callId: string;
  /** Every agent who was on the call while it recorded. */
  agentIds: string[];
  trigger: RecordingTrigger;
  startedAt: string;
  endedAt?: string;
  durationMs?: number;
  bytes?: number;
}

/** Fields a call record gets from its recordings. */
export interface RecordingRecordFields {
  recordings?: string;
  recordingDurationMs?: number;
  recordingBytes?: number;
}

/**
 * Most recordings one call may start on demand (call.record on after off): each is a file pair and
 * two transports, so an agent toggling recording cannot fill the disk with files. Later
 * `call.record {on: true}` requests get RATE_LIMITED.
 */
export const MAX_RECORDINGS_PER_CALL = 20;

/** A recording id: a call id, optionally with -<n>. Anything else is refused before touching the disk. */
export const RECORDING_ID = /^[A-Za-z0-9_.-]{1,128}$/;

interface Running {
  recorder: CallRecorder;
  meta: RecordingMeta;
  /** Stops it at recording.maxDurationS. */
  limit: NodeJS.Timeout;
}

interface CallState {
  call: Call;
  /** Recordings done, in order. */
  done: RecordingMeta[];
  current: Running | undefined;
  /** A rule wants the call recorded (and the late trunk producer may still be missing). */
  wanted: RecordingTrigger | undefined;
  count: number;
  unwatch: (() => void)[];
}

/** Thrown when the disk of recording.dir has less free space than recording.minFreeMb. */
class DiskFullError extends Error {}

/** Metrics of recording. */
class RecordingMetrics {
  readonly active: Gauge;
  readonly bytes: Counter;
  readonly failures: Counter<'reason'>;

  constructor(registry: Registry, prefix: string) {
    const registers = [registry];
    this.active = new Gauge({ name: `${prefix}recordings_active`, help: 'Call recordings in progress on this node.', registers });
    this.bytes = new Counter({ name: `${prefix}recording_bytes_total`, help: 'Bytes of audio written to recording files.', registers });
    this.failures = new Counter({ name: `${prefix}recording_failures_total`, help: 'Recordings that could not start or be written, by reason (codec: G.722/Opus; io: the file; disk: less free space than recording.minFreeMb; media: mediasoup).', labelNames: ['reason'], registers });
  }
}

/** Options of RecordingService. */
export interface RecordingServiceOptions {
  config: Pick<Config, 'recording' | 'trunks' | 'routing'>;
  logger: Logger;
  metrics?: { registry: Registry; prefix: string };
}

/** The recording feature of one node. */
export class RecordingService {
  readonly #cfg: Config['recording'];
  readonly #log: Logger;
  readonly #metrics: RecordingMetrics | undefined;
  readonly #trunkRule: Set<string>;
  readonly #didRule = new Map<string, boolean>();
  readonly #didFallback: boolean;
  readonly #calls = new Map<string, CallState>();
  #notify: ((agentId: string, data: EventData['call.recording']) => void) | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  #dirReady: Promise<void> | undefined;

  constructor(opts: RecordingServiceOptions) {
    this.#cfg = opts.config.recording;
    this.#log = opts.logger;
    this.#metrics = opts.metrics ? new RecordingMetrics(opts.metrics.registry, opts.metrics.prefix) : undefined;
    this.#trunkRule = new Set(opts.config.trunks.filter((t) => t.recording).map((t) => t.id));
    let fallback = false;
    for (const d of opts.config.routing.dids) {
      if (d.number === '*') {
        fallback ||= d.record === true;
      } else {
        this.#didRule.set(normaliseNumber(d.number), d.record === true);
      }
    }
    this.#didFallback = fallback;
  }

  /** The directory of the files (absolute). */
  get dir(): string {
    return path.resolve(this.#cfg.dir);
  }

  /** Sets how agents are told of changes (the call manager's event sender). */
  bind(notify: (agentId: string, data: EventData['call.recording']) => void): void {
    this.#notify = notify;
  }

  /** Starts the retention sweeper (and runs it once now). */
  startSweeper(): void {
    if (this.#sweeper) {
      return;
    }
    // one warning per failure streak, not one per interval (a wrong recording.dir stays wrong)
    let failing = false;
    const run = (): void => {
      this.sweep().then(
        () => {
          if (failing) {
            failing = false;
            this.#log.info({ dir: this.dir }, 'recording sweep works again');
          }
        },
        (err: unknown) => {
          if (!failing) {
            failing = true;
            this.#log.warn({ err, dir: this.dir }, 'recording sweep failed: check recording.dir (warned once until it works)');
          }
        },
      );
    };
    this.#sweeper = setInterval(run, this.#cfg.sweepIntervalMs);
    this.#sweeper.unref();
    run();
  }

  /** Stops the sweeper and every running recording (their files are completed). */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    await Promise.all([...this.#calls.values()].filter((s) => s.current).map((s) => this.#stop(s, 'ended')));
  }

  /** Hook: the call was answered and its media is on this node. Starts a rule's recording. */
  answered(call: Call): void {
    if (!this.#cfg.enabled || !call.media || this.#calls.has(call.id)) {
      return;
    }
    const trigger = this.#trunkRule.has(call.trunk.id) ? 'trunk' : call.direction === 'inbound' && (this.#didRule.get(normaliseNumber(call.to.number)) ?? this.#didFallback) ? 'did' : undefined;
    if (!trigger) {
      return;
    }
    const s = this.#state(call);
    s.wanted = trigger;
    void this.#start(s, trigger);
  }

  /**
   * Hook: another agent took an answered call (a blind transfer, a queued caller). A running
   * recording is announced to that agent (`call.recording`); a call with none yet (a queued caller,
   * answered by the queue) starts its rule's recording now.
   */
  agentJoined(call: Call): void {
    const s = this.#calls.get(call.id);
    if (!s) {
      this.answered(call);

      return;
    }
    if (s.current) {
      this.#tell(s, true, s.current.meta.recordingId, s.current.meta.trigger === 'on_demand' ? 'on_demand' : 'rule');
    }
  }

  /**
   * Hook: `call.record {on}` from the call's agent.
   * @throws {SignalingError} FORBIDDEN (off by configuration, or stopping a rule's recording),
   *   INVALID_STATE (no media here yet), MEDIA_ERROR (codec not recordable, file not writable),
 *   RATE_LIMITED (the call had {@link MAX_RECORDINGS_PER_CALL} recordings already)
   */
  async request(call: Call, on: boolean): Promise<{ recording: boolean; recordingId?: string }> {
    if (!this.#cfg.enabled || !this.#cfg.onDemand) {
      throw new SignalingError('FORBIDDEN', 'on-demand recording is off (recording.enabled / recording.onDemand)');
    }
    if (!call.media || call.media.closed || !call.times.answeredAt) {
      throw new SignalingError('INVALID_STATE', `call ${call.id} is not answered`);
    }
    const s = this.#state(call);
    if (on) {
      if (!s.current) {
        if (s.count >= MAX_RECORDINGS_PER_CALL) {
          throw new SignalingError('RATE_LIMITED', `a call may be recorded at most ${MAX_RECORDINGS_PER_CALL} times`);
        }
        const err = await this.#start(s, 'on_demand');
        if (err) {
          throw new SignalingError('MEDIA_ERROR', err);
        }
      }

      return { recording: s.current !== undefined, ...(s.current ? { recordingId: s.current.meta.recordingId } : {}) };
    }
    if (s.current) {
      if (s.current.meta.trigger !== 'on_demand') {
        throw new SignalingError('FORBIDDEN', `the call is recorded by a ${s.current.meta.trigger} rule; the agent cannot stop it`);
      }
      await this.#stop(s, 'on_demand');
    }

    return { recording: false };
  }

  /**
   * Hook: the call ended (its record is being written). Stops a running recording and returns
   * the record's fields; forgets the call.
   */
  ended(call: Call): RecordingRecordFields {
    const s = this.#calls.get(call.id);
    if (!s) {
      return {};
    }
    if (s.current) {
      void this.#stop(s, 'ended');
    }
    this.#forget(s);
    if (s.done.length === 0) {
      return {};
    }

    return {
      recordings: s.done.map((m) => m.recordingId).join(','),
      recordingDurationMs: s.done.reduce((n, m) => n + (m.durationMs ?? 0), 0),
      recordingBytes: s.done.reduce((n, m) => n + (m.bytes ?? 0), 0),
    };
  }

  /** Whether a call is being recorded now (tests, calls.list). */
  recording(callId: string): string | undefined {
    return this.#calls.get(callId)?.current?.meta.recordingId;
  }

  #state(call: Call): CallState {
    let s = this.#calls.get(call.id);
    if (!s) {
      s = { call, done: [], current: undefined, wanted: undefined, count: 0, unwatch: [] };
      this.#calls.set(call.id, s);
      const state = s;
      call.media?.onClose(() => {
        // the router is gone (its recorder stopped with it): forget the call unless its record still comes
        setTimeout(() => this.#forget(state), 30_000).unref();
      });
    }

    return s;
  }

  #forget(s: CallState): void {
    if (this.#calls.get(s.call.id) === s) {
      this.#calls.delete(s.call.id);
    }
    for (const fn of s.unwatch.splice(0)) {
      fn();
    }
  }

  /** Starts a recording; returns an error message when it cannot. */
  async #start(s: CallState, trigger: RecordingTrigger, trunkProducer?: ms.Producer): Promise<string | undefined> {
    // the file starts now, however long the file and transports take to set up
    const askedAt = performance.now();
    const media = s.call.media;
    if (!media || media.closed) {
      return 'the call has no media';
    }
    const codec = media.codec;
    if (!codec) {
      // late offer: the codec comes with the trunk's answer (the trunk producer); start then
      // (it fires inside plain.produce(), before CallMedia.trunkProducer is set: hand it over)
      const onProducer = (p: ms.Producer): void => {
        media.plain.observer.off('newproducer', onProducer);
        if (s.wanted && !s.current && this.#calls.get(s.call.id) === s) {
          void this.#start(s, s.wanted, p);
        }
      };
      media.plain.observer.on('newproducer', onProducer);
      s.unwatch.push(() => media.plain.observer.off('newproducer', onProducer));

      return 'the call has no codec yet';
    }
    if (!g711LawOf(codec.mimeType)) {
      // decided before any file exists: G.722 and Opus are not recorded (see the module doc)
      this.#metrics?.failures.inc({ reason: 'codec' });
      this.#log.info({ callId: s.call.id, codec: codec.mimeType }, 'call not recorded: the recorder decodes PCMU and PCMA only');
      this.#tell(s, false, undefined, 'failed');

      return `the recorder decodes PCMU and PCMA only, not ${codec.mimeType}`;
    }
    const recordingId = s.count === 0 ? s.call.id : `${s.call.id}-${s.count + 1}`;
    s.count++;
    if (!RECORDING_ID.test(recordingId)) {
      return 'unusable call id for a file name';
    }
    const file = path.join(this.dir, `${recordingId}.wav`);
    const meta: RecordingMeta = { recordingId, callId: s.call.id, agentIds: s.call.agentId ? [s.call.agentId] : [], trigger, startedAt: new Date().toISOString() };
    let recorder: CallRecorder;
    try {
      this.#dirReady ??= mkdir(this.dir, { recursive: true, mode: 0o750 }).then(() => undefined);
      await this.#dirReady;
      // the free-space check alongside the sidecar write
      // (a refused start removes the sidecar below)
      await Promise.all([this.#checkFreeSpace(), this.#writeMeta(meta)]);
      recorder = await CallRecorder.create({ router: media.router, codec, path: file, logger: this.#log, onWrite: (n) => this.#metrics?.bytes.inc(n), startAt: askedAt });
    } catch (err) {
      this.#dirReady = undefined;
      const reason = err instanceof RecorderCodecError ? 'codec' : err instanceof DiskFullError ? 'disk' : 'io';
      this.#metrics?.failures.inc({ reason });
      if (reason === 'codec') {
        this.#log.info({ callId: s.call.id, codec: codec.mimeType }, 'call not recorded: codec not recordable');
      } else if (reason === 'disk') {
        this.#log.warn({ callId: s.call.id, dir: this.dir, minFreeMb: this.#cfg.minFreeMb }, 'call not recorded: the disk of recording.dir is below recording.minFreeMb free');
      } else {
        this.#log.warn({ err, callId: s.call.id, recordingId, dir: this.dir }, 'cannot start recording: check recording.dir');
      }
      await rm(this.#metaPath(recordingId), { force: true }).catch(() => undefined);
      this.#tell(s, false, undefined, 'failed');

      return err instanceof RecorderCodecError || err instanceof DiskFullError ? err.message : 'the recording file cannot be created';
    }
    if (media.closed || this.#calls.get(s.call.id) !== s || s.current) {
      // the call ended (or another start won) meanwhile
      await recorder.close().catch(() => undefined);
      await rm(file, { force: true });
      await rm(this.#metaPath(recordingId), { force: true });

      return 'the call ended';
    }
    const running: Running = {
      recorder,
      meta,
      limit: setTimeout(() => {
        if (s.current === running) {
          this.#log.info({ callId: s.call.id, recordingId, maxDurationS: this.#cfg.maxDurationS }, 'recording stopped at recording.maxDurationS');
          void this.#stop(s, 'limit');
        }
      }, this.#cfg.maxDurationS * 1000),
    };
    running.limit.unref();
    s.current = running;
    this.#metrics?.active.inc();
    recorder.onStop(() => {
      // stop(), or the router closed under it (the call's end)
      if (s.current === running) {
        this.#finishRunning(s, running);
      }
    });
    try {
      await recorder.setSource('caller', trunkProducer ?? media.trunkProducer);
      await recorder.setSource('agent', media.agentProducer);
      this.#watchSources(s, running, media.router, media.plain);
    } catch (err) {
      this.#metrics?.failures.inc({ reason: 'media' });
      this.#log.warn({ err, callId: s.call.id, recordingId }, 'cannot consume the call audio for recording');
    }
    this.#log.info({ callId: s.call.id, recordingId, trigger }, 'recording started');
    this.#tell(s, true, recordingId, trigger === 'on_demand' ? 'on_demand' : 'rule');

    return undefined;
  }

  /**
   * Follows producers appearing on the router: the trunk's on CallMedia's PlainTransport, the
   * agent side's on WebRtcTransports and on far-leg PlainTransports (a SIP device, the number of
   * a blind transfer).
   */
  #watchSources(s: CallState, running: Running, router: ms.Router, plain: ms.PlainTransport): void {
    const set = (channel: 'caller' | 'agent', p: ms.Producer): void => {
      if (s.current !== running) {
        return;
      }
      if (channel === 'agent' && s.call.agentId && !running.meta.agentIds.includes(s.call.agentId)) {
        running.meta.agentIds.push(s.call.agentId);
      }
      running.recorder.setSource(channel, p).catch((err: unknown) => {
        this.#metrics?.failures.inc({ reason: 'media' });
        this.#log.warn({ err, callId: s.call.id, channel }, 'cannot record a new source');
      });
    };
    const onPlain = (p: ms.Producer): void => set('caller', p);
    plain.observer.on('newproducer', onPlain);
    const watched = new Map<ms.Transport, (p: ms.Producer) => void>();
    const watch = (t: ms.Transport): void => {
      const role = (t.appData as { role?: unknown }).role;
      const farLeg = role === FAR_LEG_ROLE && t !== plain;
      if (!farLeg && (t === plain || role !== undefined || !('iceParameters' in t))) {
        return;
      }
      const fn = (p: ms.Producer): void => set('agent', p);
      t.observer.on('newproducer', fn);
      watched.set(t, fn);
    };
    router.observer.on('newtransport', watch);
    // transports made before the recording (the answering agent's)
    const media = s.call.media;
    for (const t of [media?.sendTransport, media?.recvTransport]) {
      if (t) {
        watch(t);
      }
    }
    s.unwatch.push(() => {
      plain.observer.off('newproducer', onPlain);
      router.observer.off('newtransport', watch);
      for (const [t, fn] of watched) {
        t.observer.off('newproducer', fn);
      }
    });
  }

  async #stop(s: CallState, reason: RecordingChangeReason): Promise<void> {
    const running = s.current;
    if (!running) {
      return;
    }
    running.recorder.stop(); // runs #finishRunning through onStop
    if (reason !== 'ended') {
      this.#tell(s, false, running.meta.recordingId, reason);
    }
    await running.recorder.closed.catch(() => undefined);
  }

  #finishRunning(s: CallState, running: Running): void {
    s.current = undefined;
    clearTimeout(running.limit);
    this.#metrics?.active.dec();
    const summary: RecordingSummary = running.recorder.stop();
    const meta = running.meta;
    meta.endedAt = new Date().toISOString();
    meta.durationMs = summary.durationMs;
    meta.bytes = summary.bytes;
    s.done.push(meta);
    for (const fn of s.unwatch.splice(0)) {
      fn();
    }
    running.recorder.closed
      .then(() => this.#writeMeta(meta))
      .then(() => this.#log.info({ callId: s.call.id, recordingId: meta.recordingId, durationMs: meta.durationMs, bytes: meta.bytes }, 'recording finished'))
      .catch((err: unknown) => {
        this.#metrics?.failures.inc({ reason: 'io' });
        this.#log.warn({ err, callId: s.call.id, recordingId: meta.recordingId }, 'recording file could not be completed');
      });
  }

  #tell(s: CallState, recording: boolean, recordingId: string | undefined, reason: RecordingChangeReason): void {
    const agentId = s.call.agentId;
    if (agentId && s.call.live) {
      this.#notify?.(agentId, { callId: s.call.id, recording, ...(recordingId ? { recordingId } : {}), reason });
    }
  }

  async #checkFreeSpace(): Promise<void> {
    if (this.#cfg.minFreeMb > 0) {
      const fs = await statfs(this.dir);
      if (fs.bavail * fs.bsize < this.#cfg.minFreeMb * 1024 * 1024) {
        throw new DiskFullError(`less than recording.minFreeMb (${this.#cfg.minFreeMb} MB) free in recording.dir`);
      }
    }
  }

  #metaPath(recordingId: string): string {
    return path.join(this.dir, `${recordingId}.json`);
  }

  async #writeMeta(meta: RecordingMeta): Promise<void> {
    // a symbolic link at the name is not followed (ELOOP)
    await writeFile(this.#metaPath(meta.recordingId), JSON.stringify(meta), { mode: 0o640, flag: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW });
  }

  /**
   * The sidecar `<dir>/<name>` if it is one of ours: a regular file (not a symbolic link) named
   * `<recordingId>.json` whose content names that same id; undefined for anything else.
   */
  async #ownMeta(name: string): Promise<{ meta: RecordingMeta; mtimeMs: number } | undefined> {
    const m = /^(.+)\.json$/.exec(name);
    const id = m?.[1];
    if (!id || !RECORDING_ID.test(id) || id.startsWith('.')) {
      return undefined;
    }
    try {
      const file = path.join(this.dir, name);
      const st = await lstat(file);
      if (!st.isFile()) {
        return undefined;
      }
      const meta = JSON.parse(await readFile(file, 'utf8')) as RecordingMeta;

      return meta !== null && typeof meta === 'object' && meta.recordingId === id ? { meta, mtimeMs: st.mtimeMs } : undefined;
    } catch {
      // gone, being written at this moment, or damaged
      return undefined;
    }
  }

  async #names(): Promise<string[]> {
    try {
      return await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return [];
      }
      throw err;
    }
  }

  /** Every recording's sidecar in the directory (unreadable and foreign ones are skipped). */
  async #allMeta(): Promise<RecordingMeta[]> {
    const out: RecordingMeta[] = [];
    for (const n of await this.#names()) {
      const own = await this.#ownMeta(n);
      if (own) {
        out.push(own.meta);
      }
    }

    return out;
  }

  /**
   * Deletes recordings (WAV and sidecar) last written more than recording.retentionS ago; returns
   * how many. Only recordings it made are touched: a sidecar `<id>.json` naming `<id>` (a regular
   * file) and its `<id>.wav` (a regular file, or gone); other files ending in .wav or .json and
   * symbolic links stay. Running ones are kept.
   */
  async sweep(now = Date.now()): Promise<number> {
    const names = await this.#names();
    const running = new Set([...this.#calls.values()].flatMap((s) => (s.current ? [s.current.meta.recordingId] : [])));
    const limit = now - this.#cfg.retentionS * 1000;
    let deleted = 0;
    for (const n of names) {
      const own = await this.#ownMeta(n);
      if (!own || running.has(own.meta.recordingId)) {
        continue;
      }
      const wav = path.join(this.dir, `${own.meta.recordingId}.wav`);
      try {
        const st = await lstat(wav).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            return undefined;
          }
          throw err;
        });
        if (st && !st.isFile()) {
          continue; // not a file we wrote
        }
        if (Math.max(own.mtimeMs, st?.mtimeMs ?? 0) >= limit) {
          continue;
        }
        if (st) {
          await rm(wav, { force: true });
          deleted++;
        }
        await rm(this.#metaPath(own.meta.recordingId), { force: true });
      } catch {
        // gone meanwhile
      }
    }
    if (deleted > 0) {
      this.#log.info({ deleted, retentionS: this.#cfg.retentionS }, 'expired recordings deleted');
    }

    return deleted;
  }

  /** The recordings an agent was on (admin export), oldest first. */
  async listForAgent(agentId: string): Promise<RecordingMeta[]> {
    return (await this.#allMeta()).filter((m) => Array.isArray(m.agentIds) && m.agentIds.includes(agentId)).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  /** Deletes the recordings an agent was on (admin erase); returns how many. */
  async eraseForAgent(agentId: string): Promise<number> {
    const mine = await this.listForAgent(agentId);
    for (const m of mine) {
      if (!RECORDING_ID.test(m.recordingId)) {
        continue;
      }
      await rm(path.join(this.dir, `${m.recordingId}.wav`), { force: true });
      await rm(this.#metaPath(m.recordingId), { force: true });
    }

    return mine.length;
  }

  /** A finished recording's file by recording id or call id (its first recording), for serving; undefined when there is none. */
  async file(id: string): Promise<{ path: string; bytes: number; meta: RecordingMeta } | undefined> {
    if (!RECORDING_ID.test(id) || id.startsWith('.')) {
      return undefined;
    }
    const running = [...this.#calls.values()].some((s) => s.current?.meta.recordingId === id);
    if (running) {
      return undefined;
    }
    const own = await this.#ownMeta(`${id}.json`);
    if (!own) {
      return undefined;
    }
    try {
      const file = path.join(this.dir, `${id}.wav`);
      const st = await lstat(file);

      // a symbolic link is not a recording this service wrote
      return st.isFile() ? { path: file, bytes: st.size, meta: own.meta } : undefined;
    } catch {
      return undefined;
    }
  }
}
