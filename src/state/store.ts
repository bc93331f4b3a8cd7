/**
 * The gateway's shared state in Redis: agents' presence, sessions, calls and call records.
 *
 * Key schema (every key starts with redis.keyPrefix, written {p} below):
 *
 * | key | type | content | lifetime |
 * |---|---|---|---|
 * | {p}agent:{agentId} | hash | status (agent-set), effective, node, updatedAt, lastCallEndedAt | while the agent has sessions, then 7 days |
 * | {p}agent:{agentId}:sessions | set | session ids | with the sessions |
 * | {p}session:{sessionId} | hash | agentId, node, state, startedAt | expires after the resume grace period once suspended |
 * | {p}agents:idle | sorted set | agentId → epoch ms of the end of its last call (longest idle first) | kept |
 * | {p}call:{callId} | hash | direction, state, trunkId, from/to (masked), agentId, node, timestamps, endReason, sipStatus, codec | calls.recordTtlS after the end |
 * | {p}calls:active | set | ids of calls not ended | — |
 * | {p}cdr | stream | one entry per finished call (the call record) | trimmed to the newest 100 000 |
 *
 * Multi-key updates go through MULTI; nothing here scans keys.
 */
import { type Redis } from 'ioredis';
import { type Logger } from '../log/logger.js';

/** A finished call's record (numbers masked). */
export interface CallRecord {
  callId: string;
  direction: 'inbound' | 'outbound';
  trunkId: string;
  /** Masked numbers: first 3 and last 2 characters kept. */
  from: string;
  to: string;
  agentId: string;
  node: string;
  /** ISO times of offer (INVITE in / dial), ringing, answer and end. */
  offeredAt: string;
  ringingAt?: string;
  answeredAt?: string;
  endedAt: string;
  endReason: string;
  sipStatus?: number;
  codec?: string;
  durationS: number;
}

/** Masks a telephone number for storage: "+4930123456" → "+49******56". */
export function maskNumber(n: string): string {
  if (n.length <= 5) {
    return '*'.repeat(n.length);
  }

  return `${n.slice(0, 3)}${'*'.repeat(n.length - 5)}${n.slice(-2)}`;
}

/** Redis access for presence, sessions, calls and records. */
export class StateStore {
  readonly #redis: Redis;
  readonly #p: string;
  readonly #node: string;
  readonly #log: Logger;
  readonly #recordTtlS: number;

  constructor(opts: { redis: Redis; keyPrefix: string; nodeId: string; logger: Logger; recordTtlS: number }) {
    this.#redis = opts.redis;
    this.#p = opts.keyPrefix;
    this.#node = opts.nodeId;
    this.#log = opts.logger;
    this.#recordTtlS = opts.recordTtlS;
  }

  /** Key helper (exposed for tests and tools). */
  key(...parts: string[]): string {
    return this.#p + parts.join(':');
  }

  /** Runs a write and logs (not throws) a failure: Redis trouble must not break a live call. */
  async #safe(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.#log.warn({ err, what }, 'redis write failed');
    }
  }

  /** Records a new or resumed session. */
  sessionStarted(sessionId: string, agentId: string): Promise<void> {
    return this.#safe('sessionStarted', () =>
      this.#redis
        .multi()
        .hset(this.key('session', sessionId), { agentId, node: this.#node, state: 'connected', startedAt: new Date().toISOString() })
        .persist(this.key('session', sessionId))
        .sadd(this.key('agent', agentId, 'sessions'), sessionId)
        .hset(this.key('agent', agentId), { node: this.#node, updatedAt: new Date().toISOString() })
        .persist(this.key('agent', agentId))
        .exec(),
    );
  }

  /** Marks a session suspended; it expires by itself after the grace period. */
  sessionSuspended(sessionId: string, graceMs: number): Promise<void> {
    return this.#safe('sessionSuspended', () =>
      this.#redis
        .multi()
        .hset(this.key('session', sessionId), 'state', 'suspended')
        .pexpire(this.key('session', sessionId), graceMs + 5000)
        .exec(),
    );
  }

  /** Removes an ended session. */
  sessionEnded(sessionId: string, agentId: string): Promise<void> {
    return this.#safe('sessionEnded', () =>
      this.#redis
        .multi()
        .del(this.key('session', sessionId))
        .srem(this.key('agent', agentId, 'sessions'), sessionId)
        .exec(),
    );
  }

  /** Stores an agent's presence (the chosen status and the effective one). */
  setPresence(agentId: string, status: string, effective: string): Promise<void> {
    return this.#safe('setPresence', () =>
      this.#redis
        .multi()
        .hset(this.key('agent', agentId), { status, effective, node: this.#node, updatedAt: new Date().toISOString() })
        .expire(this.key('agent', agentId), 7 * 86400)
        .exec(),
    );
  }

  /** The agent-set status stored for an agent, if any. */
  async getStatus(agentId: string): Promise<string | undefined> {
    try {
      return (await this.#redis.hget(this.key('agent', agentId), 'status')) ?? undefined;
    } catch (err) {
      this.#log.warn({ err }, 'redis read failed');

      return undefined;
    }
  }

  /** Notes that an agent's call ended now (longest-idle ordering). */
  agentBecameIdle(agentId: string, at = Date.now()): Promise<void> {
    return this.#safe('agentBecameIdle', () =>
      this.#redis
        .multi()
        .zadd(this.key('agents', 'idle'), at, agentId)
        .hset(this.key('agent', agentId), 'lastCallEndedAt', String(at))
        .exec(),
    );
  }

  /**
   * Orders agents longest idle first (never-called agents first, in the given order).
   * Falls back to the given order when Redis is unavailable.
   */
  async longestIdleFirst(agentIds: string[]): Promise<string[]> {
    if (agentIds.length <= 1) {
      return agentIds;
    }
    try {
      const scores = await this.#redis.zmscore(this.key('agents', 'idle'), ...agentIds);
      const ranked = agentIds.map((id, i) => ({ id, i, s: scores[i] === null || scores[i] === undefined ? -1 : Number(scores[i]) }));
      ranked.sort((a, b) => a.s - b.s || a.i - b.i);

      return ranked.map((r) => r.id);
    } catch (err) {
      this.#log.warn({ err }, 'redis read failed; ringing in configured order');

      return agentIds;
    }
  }

  /** Writes (creates or updates) a call's hash; fields with undefined values are skipped. */
  putCall(callId: string, fields: Record<string, string | number | undefined>, active = true): Promise<void> {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) {
        clean[k] = String(v);
      }
    }
    const m = this.#redis.multi().hset(this.key('call', callId), { ...clean, node: this.#node });
    if (active) {
      m.sadd(this.key('calls', 'active'), callId);
    }

    return this.#safe('putCall', () => m.exec());
  }

  /** Ends a call: final fields, TTL, removal from the active set, and the record appended to the stream. */
  endCall(record: CallRecord): Promise<void> {
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(record)) {
      if (v !== undefined) {
        fields[k] = String(v);
      }
    }

    return this.#safe('endCall', () =>
      this.#redis
        .multi()
        .hset(this.key('call', record.callId), { ...fields, state: 'ended' })
        .expire(this.key('call', record.callId), this.#recordTtlS)
        .srem(this.key('calls', 'active'), record.callId)
        .xadd(this.key('cdr'), 'MAXLEN', '~', '100000', '*', ...Object.entries(fields).flat())
        .exec(),
    );
  }

  /** The stored hash of a call (for tests and the admin API). */
  async getCall(callId: string): Promise<Record<string, string>> {
    return this.#redis.hgetall(this.key('call', callId));
  }

  /** The newest call records, newest first. */
  async recentRecords(count = 10): Promise<Record<string, string>[]> {
    const entries = await this.#redis.xrevrange(this.key('cdr'), '+', '-', 'COUNT', count);

    return entries.map(([, kv]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i + 1 < kv.length; i += 2) {
        o[kv[i]!] = kv[i + 1]!;
      }

      return o;
    });
  }
}
