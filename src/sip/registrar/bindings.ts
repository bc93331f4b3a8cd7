/**
 * Registrar bindings of agents' SIP devices in Redis: one hash per agent,
 * `{p}agent:{A}:sip` (binding id → JSON {@link SipBinding}), in the agent's hash slot next to its
 * WebRTC sessions and devices (key schema in src/state/store.ts).
 *
 * Expiry: every binding carries its own `expiresAt`; the hash's TTL is the latest of them, so the
 * key disappears with its last binding even when no node is left to remove it, and readers skip
 * (and delete) bindings past their time. The node that took a REGISTER also arms a timer that
 * removes the binding when it expires, so presence learns of it at once.
 *
 * Concurrency: one agent's changes are serialised within a node. Two REGISTERs of one agent at the
 * same moment on two nodes may race (last writer wins per binding id); devices refresh well before
 * expiry, so a lost update is repaired by the next refresh.
 */
import { type Logger } from '../../log/logger.js';
import { type StoreRedis } from '../../state/store.js';

/** Where a device's REGISTER came from: the flow requests to it must take (RFC 5626 §5.2). */
export interface SipFlow {
  transport: 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';
  address: string;
  port: number;
}

/** One registered contact of an agent's SIP device, as stored. Times in ms since the epoch. */
export interface SipBinding {
  /** The binding's identity: `<instance>#<reg-id>` (RFC 5626), `<instance>` (RFC 5627), else the Contact URI. */
  id: string;
  /** The Contact URI as registered. */
  contact: string;
  /** `+sip.instance` (with its `<>`), `reg-id`, `q`, when the device gave them. */
  instance?: string;
  regId?: number;
  q?: number;
  /** RFC 5626 outbound in use: requests to the device must go over `flow` (the registration's connection). */
  outbound: boolean;
  /** The source of the REGISTER that made or refreshed the binding. */
  flow: SipFlow;
  /** RFC 3327 Path of the REGISTER, when proxies in front added one (Route set toward the device). */
  path?: string[];
  /** Call-ID and CSeq of the REGISTER that last wrote the binding (RFC 3261 §10.3 step 7). */
  callId: string;
  cseq: number;
  /** Granted expiry (s) and when it ends (ms). */
  expires: number;
  expiresAt: number;
  /** The node that took the REGISTER. */
  node: string;
  /** User-Agent of the device (for support). */
  userAgent?: string;
  /** The push device registered from the Contact's pn-* parameters (RFC 8599), if any. */
  deviceId?: string;
  registeredAt: number;
  updatedAt: number;
}

/** A change computed from the current bindings: what to write and what to remove. */
export interface BindingChange {
  put: SipBinding[];
  remove: string[];
}

/** Bindings of agents' SIP devices in Redis. */
export class SipBindingStore {
  readonly #redis: StoreRedis;
  readonly #key: (agentId: string) => string;
  readonly #log: Logger;
  readonly #queues = new Map<string, Promise<unknown>>();

  /**
   * @param key the Redis key of an agent's bindings (StateStore.key('agent', A, 'sip'))
   */
  constructor(opts: { redis: StoreRedis; key: (agentId: string) => string; logger: Logger }) {
    this.#redis = opts.redis;
    this.#key = opts.key;
    this.#log = opts.logger;
  }

  /**
   * An agent's current (unexpired) bindings; expired ones found are deleted.
   * @throws when Redis is unavailable
   */
  async list(agentId: string, now = Date.now()): Promise<SipBinding[]> {
    const all = await this.#redis.hgetall(this.#key(agentId));
    const live: SipBinding[] = [];
    const dead: string[] = [];
    for (const [id, raw] of Object.entries(all)) {
      let b: SipBinding | undefined;
      try {
        b = JSON.parse(raw) as SipBinding;
      } catch {
        b = undefined;
      }
      if (!b || typeof b.expiresAt !== 'number' || b.expiresAt <= now) {
        dead.push(id);
      } else {
        live.push(b);
      }
    }
    if (dead.length > 0) {
      await this.#redis.hdel(this.#key(agentId), ...dead);
    }

    return live.sort((a, b) => a.registeredAt - b.registeredAt || a.id.localeCompare(b.id));
  }

  /**
   * Reads an agent's bindings, lets `decide` compute a change (it may throw to abort: nothing is
   * written), writes it in one MULTI and sets the key's TTL to the latest expiry. Changes of one
   * agent run one after another on this node. Resolves with the bindings after the change.
   * @throws what `decide` throws; when Redis is unavailable
   */
  update(agentId: string, decide: (current: SipBinding[], now: number) => BindingChange): Promise<SipBinding[]> {
    const prev = this.#queues.get(agentId) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(() => this.#update(agentId, decide));
    this.#queues.set(agentId, run);
    void run
      .catch(() => undefined)
      .finally(() => {
        if (this.#queues.get(agentId) === run) {
          this.#queues.delete(agentId);
        }
      });

    return run;
  }

  async #update(agentId: string, decide: (current: SipBinding[], now: number) => BindingChange): Promise<SipBinding[]> {
    const now = Date.now();
    const current = await this.list(agentId, now);
    const change = decide(current, now);
    const byId = new Map(current.map((b) => [b.id, b]));
    for (const id of change.remove) {
      byId.delete(id);
    }
    for (const b of change.put) {
      byId.set(b.id, b);
    }
    const after = [...byId.values()];
    const key = this.#key(agentId);
    const m = this.#redis.multi();
    if (change.remove.length > 0) {
      m.hdel(key, ...change.remove);
    }
    for (const b of change.put) {
      m.hset(key, b.id, JSON.stringify(b));
    }
    if (after.length === 0) {
      m.del(key);
    } else {
      m.pexpire(key, Math.max(1, Math.max(...after.map((b) => b.expiresAt)) - now + 1000));
    }
    const res = await m.exec();
    for (const entry of res ?? []) {
      if (entry[0]) {
        throw entry[0];
      }
    }
    this.#log.debug({ agent: agentId, bindings: after.length, put: change.put.length, removed: change.remove.length }, 'SIP bindings changed');

    return after.sort((a, b) => a.registeredAt - b.registeredAt || a.id.localeCompare(b.id));
  }
}
