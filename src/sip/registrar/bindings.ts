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
 * Concurrency: one agent's changes are serialised within a node, and every change is a
 * compare-and-set in Redis (one script on the agent's one key): it is written only if the hash
 * still holds exactly what the change was computed from, else it is computed again from the new
 * state (a few times, then the REGISTER fails with 500 and Retry-After). So a limit checked in the
 * change (the most bindings per agent) holds across nodes and concurrent REGISTERs.
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
  /** The address-of-record (`user@host` of the REGISTER's To, lower-cased). */
  aor?: string;
  /**
   * For TCP/TLS registrations: the token naming this binding's flow to the engine
   * (`X-RB-Binding-Flow`, src/sip/engine/core/registered-flows.ts): requests to the binding that
   * carry it go over the registration's connection.
   */
  flowToken?: string;
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
    const { live, dead } = parseAll(await this.#redis.hgetall(this.#key(agentId)), now);
    for (const [id, raw] of dead) {
      // only if unchanged: another node may have just written a fresh binding under this id
      await this.#redis.eval(HDEL_IF_SAME, 1, this.#key(agentId), id, raw);
    }

    return sortBindings(live);
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
    const key = this.#key(agentId);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const now = Date.now();
      const raw = await this.#redis.hgetall(key);
      const { live, dead } = parseAll(raw, now);
      const change = decide(sortBindings([...live]), now);
      const byId = new Map(live.map((b) => [b.id, b]));
      for (const id of change.remove) {
        byId.delete(id);
      }
      for (const b of change.put) {
        byId.set(b.id, b);
      }
      const after = [...byId.values()];
      const remove = [...new Set([...change.remove, ...dead.map(([id]) => id)])].filter((id) => id in raw && !change.put.some((b) => b.id === id));
      const ttlMs = after.length === 0 ? 0 : Math.max(1, Math.max(...after.map((b) => b.expiresAt)) - now + 1000);
      const expected = Object.entries(raw).flat();
      const args = [String(expected.length / 2), ...expected, String(ttlMs), String(remove.length), ...remove, ...change.put.flatMap((b) => [b.id, JSON.stringify(b)])];
      const ok = Number(await this.#redis.eval(CAS_UPDATE, 1, key, ...args)) === 1;
      if (ok) {
        this.#log.debug({ agent: agentId, bindings: after.length, put: change.put.length, removed: remove.length, attempt }, 'SIP bindings changed');

        return sortBindings(after);
      }
      // another node (or a list() clean-up) changed the bindings meanwhile: decide again
      await new Promise((r) => setTimeout(r, 5 + Math.floor(Math.random() * 20 * (attempt + 1))));
    }
    throw new Error(`SIP bindings of an agent changed concurrently ${MAX_ATTEMPTS} times in a row`);
  }
}

/** How often a change is computed again after a concurrent change. */
const MAX_ATTEMPTS = 8;

/**
 * Compare-and-set of an agent's bindings hash. KEYS[1] the hash; ARGV: n, then n (field, value)
 * pairs the hash must hold exactly (and nothing else), then the new TTL in ms (0: delete the key),
 * then r and r fields to delete, then (field, value) pairs to write. Returns 1 when written, 0
 * when the hash was not as expected (nothing written).
 */
const CAS_UPDATE = `
local n = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) ~= n then return 0 end
local i = 2
for _ = 1, n do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
local ttl = tonumber(ARGV[i])
local r = tonumber(ARGV[i + 1])
i = i + 2
for _ = 1, r do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if ttl == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
`;

/** Deletes a hash field if it still holds ARGV[2]. */
const HDEL_IF_SAME = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`;

/** Live bindings, and the raw entries that are expired or unreadable (id, raw value). */
function parseAll(all: Record<string, string>, now: number): { live: SipBinding[]; dead: [string, string][] } {
  const live: SipBinding[] = [];
  const dead: [string, string][] = [];
  for (const [id, raw] of Object.entries(all)) {
    let b: SipBinding | undefined;
    try {
      b = JSON.parse(raw) as SipBinding;
    } catch {
      b = undefined;
    }
    if (!b || typeof b.expiresAt !== 'number' || b.expiresAt <= now) {
      dead.push([id, raw]);
    } else {
      live.push(b);
    }
  }

  return { live, dead };
}

function sortBindings(bs: SipBinding[]): SipBinding[] {
  return bs.sort((a, b) => a.registeredAt - b.registeredAt || a.id.localeCompare(b.id));
}
