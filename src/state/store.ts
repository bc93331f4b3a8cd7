/**
 * The gateway's shared state in Redis: agents (status, per-node presence, sessions, devices),
 * calls and call records, and the node registry. Several gateway nodes share one Redis (or a
 * Sentinel-managed primary, or a Redis Cluster).
 *
 * Key schema. Every key starts with `redis.keyPrefix` ({p} below). An entity's id sits in braces,
 * so that all keys of one entity share a Redis Cluster hash slot and one MULTI updates them
 * together; global indexes are touched by single-key commands only. Nothing here uses KEYS or
 * SCAN.
 *
 * | key | type | content | lifetime |
 * |---|---|---|---|
 * | {p}agent:{A} | hash | `status` (available, busy, away: the agent's own), `effective` (as last computed by a node), `updatedAt`, `firstSeenAt`, `lastCallEndedAt`, and one field `n:<nodeId>` per node serving the agent: JSON `{s: sessions, a: idle/ringing/on_call, t: ms}` | until erased; without devices, 30 days after the last change |
 * | {p}agent:{A}:sessions | hash | sessionId → JSON `{node, state: connected/suspended, since, deviceId?}` | with the sessions; a dead node's are reaped |
 * | {p}agent:{A}:devices | hash | deviceId → JSON {@link Device} (platform, push channel, token, app version, last seen) | until removed, erased, or the provider reports the token dead |
 * | {p}agent:{A}:sip | hash | SIP registrar bindings of the agent's native SIP devices: binding id (`<+sip.instance>#<reg-id>`, `<+sip.instance>`, or the Contact URI) → JSON {@link SipBinding} (Contact, flow: transport/address/port of the REGISTER, outbound, Path, Call-ID/CSeq, expires, expiresAt, node, User-Agent, push device id) | each binding until its expiresAt (readers skip later ones); the key's TTL is the latest expiry; removed by un-REGISTER and erase |
 * | {p}agent:{A}:wakes | hash | callId → JSON {@link WakeRecord} (node, sentAt, per-device wake state, outcome) | 5 minutes after the last write |
 * | {p}agent:{A}:records | sorted set | callId → end time (ms) of the agent's call records | trimmed to `calls.recordTtlS` |
 * | {p}token:{sha256(channel + token)} | string | `<agentId> <deviceId>` (dead-token reports name only the token); APNs alert tokens under channel `apns:alert` | with the device |
 * | {p}call:{C} | hash | direction, state, trunkId, from/to (masked unless `calls.maskNumbers` is false), agentId, node (SIP leg), agentNode, timestamps, endReason, sipStatus, codec, recordings/recordingDurationMs/recordingBytes (src/calls/recording.ts), cdrId | while live; `calls.recordTtlS` after the end |
 * | {p}node:{N} | hash | id, sipUri, httpUrl, mediaAddress, version, startedAt, draining, calls, sessions, heartbeatAt | expires `cluster.nodeTtlMs` after the last heartbeat |
 * | {p}node:{N}:calls | set | ids of the node's live calls | until the node (or the reaper) removes them |
 * | {p}node:{N}:agents | set | agents with a `n:<N>` field (sessions or activity on the node) | same |
 * | {p}nodes | sorted set | nodeId → last heartbeat (ms): the registry the reaper walks | a node leaves it on a clean stop or when reaped |
 * | {p}agents:idle | sorted set | agentId → end (ms) of the agent's last call (longest idle first) | erased with the agent |
 * | {p}cdr | stream | one entry per finished call (the call record) | entries older than `calls.recordTtlS` trimmed on each append |
 * | {p}trunk:{T}:calls | hash | callId → node holding the call's trunk leg: the trunk's live calls, for `trunks[].maxConcurrentCalls` | an entry leaves when its call ends, or when the reaper reaps its node |
 * | {p}rl:{S:I} | string | a fixed-window counter of scope S for id I (src/security/rate-limit.ts): `src:<address>` INVITEs per source, `trunk:<T>` INVITEs per trunk, `dial:<agent>` dials per agent, `fail-sip:<address>` / `fail-ws:<address>` failed authentications, `fail-reg:<source>` / `fail-reg-user:<sha256 of the username, 32 hex>` failed REGISTER digests of SIP devices | PX = the window |
 * | {p}lock:{K:A} | string | address A locked after failed authentications of kind K (`sip` or `ws`; `reg`: a SIP device source, IPv6 by /64; `reg-user`: a hashed digest username, src/sip/registrar/lockout.ts): the lock time (ms) | PX = `security.lockout.lockMs` (`sipDevices.lockout.lockMs` for `reg*`) |
 * | {p}queue:{G} | sorted set | callId → when the caller joined group G's queue (ms): the one order of the cluster, longest waiting first (src/calls/call-centre.ts) | an entry leaves when its call is answered, times out or ends, or its node is reaped; entries older than a day are dropped when read |
 * | {p}queue:{G}:nodes | hash | callId → node holding the queued call's trunk leg and media | with the entry above |
 * | {p}revoked:{J} | string | JWT id J revoked (ISO time of the revocation); revocations are also published on the channel {p}revocations | until the token's expiry, else `security.revocation.defaultTtlS` |
 *
 * Atomicity: one entity's keys change in one MULTI. A change that spans entities (a call record
 * and the agent's record index, a device and its token index, a node's index sets) is written in
 * an order that leaves at worst a dangling index entry, which its readers skip and clean up.
 */
import { createHash } from 'node:crypto';
import { type Cluster, type Redis } from 'ioredis';
import { type Logger } from '../log/logger.js';
import { DEVICE_CHANNELS, type DEVICE_PLATFORMS } from '../signaling/protocol.js';
import { type SipBinding } from '../sip/registrar/bindings.js';

/** A Redis client in any mode: standalone/Sentinel (Redis) or Cluster. */
export type StoreRedis = Redis | Cluster;

/** A finished call's record (numbers masked unless configured otherwise). */
export interface CallRecord {
  callId: string;
  direction: 'inbound' | 'outbound';
  trunkId: string;
  from: string;
  to: string;
  agentId: string;
  /** The node that held the call's SIP leg toward the trunk. */
  node: string;
  /** The node the agent's media ran on, when it was another one (cross-node hand-off). */
  agentNode?: string;
  /** ISO times of offer (INVITE in / dial), ringing, answer and end. */
  offeredAt: string;
  ringingAt?: string;
  answeredAt?: string;
  endedAt: string;
  endReason: string;
  sipStatus?: number;
  codec?: string;
  durationS: number;
  /** Call quality (src/calls/quality.ts): the worst leg's mean MOS, each leg's, and the worst loss (%), jitter and RTT (ms). */
  mos?: number;
  mosTrunkIn?: number;
  mosTrunkOut?: number;
  mosAgentIn?: number;
  mosAgentOut?: number;
  lossPctMax?: number;
  jitterMsMax?: number;
  rttMsMax?: number;
  /** The call's recordings (src/calls/recording.ts): ids (comma-separated; files `<recording.dir>/<id>.wav`), total audio length (ms) and file bytes. */
  recordings?: string;
  recordingDurationMs?: number;
  recordingBytes?: number;
}

/** Push channels a device may be woken through (push-channels.md). */
export const PUSH_CHANNELS = DEVICE_CHANNELS;
/** A push channel. */
export type PushChannel = (typeof PUSH_CHANNELS)[number];

/** An agent's device as stored. Times are ISO strings. */
export interface Device {
  deviceId: string;
  platform: (typeof DEVICE_PLATFORMS)[number];
  channel: PushChannel;
  /** The push token (Web Push: the subscription JSON); absent for channel `none`. */
  token?: string;
  /** APNs only: the app's ordinary (alert) token, for cancel and missed-call notices. */
  alertToken?: string;
  /** APNs topic / app id / package name the token belongs to, when the channel needs it. */
  topic?: string;
  appVersion?: string;
  addedAt: string;
  lastSeen: string;
}

/** What a node says about an agent it serves (field `n:<nodeId>` of the agent hash). */
export interface AgentNodeView {
  /** Sessions on that node (connected or resuming). */
  s: number;
  /** The agent's activity on that node. */
  a: 'idle' | 'ringing' | 'on_call';
  /** When it was written (ms). */
  t: number;
}

/** An agent's presence across the cluster, as read from Redis. */
export interface ClusterPresence {
  agentId: string;
  status: 'available' | 'busy' | 'away';
  effective: 'available' | 'busy' | 'away' | 'ringing' | 'on_call' | 'offline';
  /** Live nodes holding sessions of the agent. */
  nodes: string[];
}

/** A node in the registry. */
export interface NodeInfo {
  id: string;
  /** Where other nodes send SIP for this node (cross-node hand-off), e.g. sip:10.0.0.5:5060. */
  sipUri: string;
  httpUrl: string;
  mediaAddress: string;
  version: string;
  startedAt: string;
  draining: boolean;
  calls: number;
  sessions: number;
  /** Last heartbeat (ms since the epoch). */
  heartbeatAt: number;
}

/** Everything stored about one agent (the export of the privacy API). */
export interface AgentExport {
  agentId: string;
  exportedAt: string;
  profile: Record<string, string>;
  presence: Record<string, AgentNodeView>;
  sessions: Record<string, unknown>;
  devices: Device[];
  /** Registrar bindings of the agent's SIP devices (including expired ones not yet removed). */
  sipBindings: SipBinding[];
  idleSince?: string;
  callRecords: Record<string, string>[];
}

/** How long an agent's wake records stay after the last write (s). */
const WAKE_TTL_S = 300;

/** A call's wake-up of one agent (push), as stored: see WakeService. */
export interface WakeRecord {
  /** The node that sent the pushes (it holds the call). */
  node: string;
  /** When the pushes left (ms since the epoch). */
  sentAt: number;
  /** deviceId → sent | failed | connected | told (connected after the call stopped ringing, and told so). */
  devices: Record<string, 'sent' | 'failed' | 'connected' | 'told'>;
  /** Why the call stopped ringing for this agent, once it did. */
  outcome?: 'answered' | 'answered_elsewhere' | 'caller_cancelled' | 'ring_timeout' | 'declined';
}

/** Masks a telephone number for storage: "+4930123456" → "+49******56". */
export function maskNumber(n: string): string {
  if (n.length <= 5) {
    return '*'.repeat(n.length);
  }

  return `${n.slice(0, 3)}${'*'.repeat(n.length - 5)}${n.slice(-2)}`;
}

const AGENT_IDLE_TTL_S = 30 * 86400;

/** Options of the state store. */
export interface StateStoreOptions {
  redis: StoreRedis;
  keyPrefix: string;
  nodeId: string;
  logger: Logger;
  /** Retention of call records (s): call hashes, the CDR stream and the agents' record indexes. */
  recordTtlS: number;
  /** Store caller and called numbers masked (default true). */
  maskNumbers?: boolean;
  /** A node without a heartbeat for this long is dead (ms; default 6000). */
  nodeTtlMs?: number;
  /** Called with every call record as it is written (the CDR webhook); must not throw. */
  onRecord?: (record: CallRecord) => void;
  /** Ids of the configured trunks: the reaper frees a dead node's entries in their live-call hashes. */
  trunkIds?: string[];
  /** Ids of the groups with a queue: the reaper takes a dead node's callers out of their queues. */
  queueGroupIds?: string[];
}

/**
 * Claims a push token's index entry for an agent's device: KEYS[1] the token key, ARGV[1]
 * `<agentId> ` (with the space), ARGV[2] `<agentId> <deviceId>`. Free, or held by a device of the
 * same agent → set to ARGV[2], returns {1, previous value}; held by another agent → {0, holder}.
 */
const CLAIM_TOKEN = `
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1])) ~= ARGV[1] then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, cur}
`;

/** Gives a claimed token index entry back: KEYS[1] the token key, still ARGV[1] → ARGV[2] (or deleted when ''). */
const RELEASE_TOKEN = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
end
return 1
`;

/** Adds a call to a trunk's live calls if the trunk has fewer than ARGV[3]; 1 when added (or already there). */
const ADMIT_TRUNK_CALL = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** Call records kept in memory while Redis is away, at most (then the oldest go). */
const MAX_PENDING_ENDS = 10_000;

/** Redis access for agents, devices, sessions, calls, records and nodes. */
export class StateStore {
  readonly #redis: StoreRedis;
  readonly #p: string;
  readonly #node: string;
  readonly #log: Logger;
  readonly #recordTtlS: number;
  readonly #mask: boolean;
  readonly #nodeTtlMs: number;
  readonly #onRecord: ((record: CallRecord) => void) | undefined;
  /** Ends whose Redis writes failed (Redis away): written again once Redis is back, oldest first. */
  readonly #pendingEnds: { record: CallRecord; node: string }[] = [];
  #replaying = false;
  #replayTimer: NodeJS.Timeout | undefined;
  readonly #trunkIds: string[];
  readonly #queueGroupIds: string[];

  constructor(opts: StateStoreOptions) {
    this.#trunkIds = opts.trunkIds ?? [];
    this.#queueGroupIds = opts.queueGroupIds ?? [];
    this.#redis = opts.redis;
    this.#p = opts.keyPrefix;
    this.#node = opts.nodeId;
    this.#log = opts.logger;
    this.#recordTtlS = opts.recordTtlS;
    this.#mask = opts.maskNumbers ?? true;
    this.#nodeTtlMs = opts.nodeTtlMs ?? 6000;
    this.#onRecord = opts.onRecord;
    // a call that ended while Redis was away gets its record written when Redis is back (else it
    // would stay "active" in Redis and a reaper could end it again with another record)
    const redis = this.#redis as unknown as { on(event: 'ready', fn: () => void): void };
    redis.on('ready', () => void this.#replayEnds());
  }

  /** Ends waiting for Redis (see #pendingEnds); for health and tests. */
  get pendingEnds(): number {
    return this.#pendingEnds.length;
  }

  /** Tries the pending ends again in 5 s (a Redis that stalled comes back without a new 'ready'). */
  #scheduleReplay(): void {
    if (this.#replayTimer === undefined) {
      this.#replayTimer = setTimeout(() => {
        this.#replayTimer = undefined;
        void this.#replayEnds();
      }, 5000);
      this.#replayTimer.unref();
    }
  }

  async #replayEnds(): Promise<void> {
    if (this.#replaying) {
      return;
    }
    this.#replaying = true;
    try {
      while (this.#pendingEnds.length > 0) {
        const next = this.#pendingEnds[0]!;
        try {
          await this.#writeEnd(next.record, next.node);
        } catch (err) {
          this.#log.warn({ err, pending: this.#pendingEnds.length }, 'call records still cannot be written; will try again');
          this.#scheduleReplay();

          return;
        }
        this.#pendingEnds.shift();
      }
      this.#log.info('call records of calls that ended while Redis was away are written');
    } finally {
      this.#replaying = false;
    }
  }

  /** This node's id. */
  get nodeId(): string {
    return this.#node;
  }

  /**
   * A key: `key('agent', 'a1')` → `{p}agent:{a1}`, `key('agent', 'a1', 'devices')` →
   * `{p}agent:{a1}:devices`, `key('nodes')` → `{p}nodes`. Exposed for tests and tools.
   */
  key(type: string, id?: string, ...sub: string[]): string {
    if (id === undefined) {
      return this.#p + type;
    }

    return `${this.#p}${type}:{${id}}${sub.length ? `:${sub.join(':')}` : ''}`;
  }

  /** A number as stored: masked unless configured otherwise. */
  storedNumber(n: string): string {
    return this.#mask ? maskNumber(n) : n;
  }

  /** Runs a write and logs (not throws) a failure: Redis trouble must not break a live call. */
  async #safe(what: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      const r = await fn();
      // MULTI/pipeline results carry per-command errors instead of throwing
      if (Array.isArray(r)) {
        for (const entry of r as unknown[]) {
          if (Array.isArray(entry) && entry[0] instanceof Error) {
            throw entry[0];
          }
        }
      }
    } catch (err) {
      this.#log.warn({ err, what }, 'redis write failed');
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Agents: status, per-node presence, sessions
  // ----------------------------------------------------------------------------------------------

  /**
   * Stores an agent's own status, the effective presence this node computed, and this node's view
   * of the agent (sessions, activity). A view with no sessions and no activity is removed.
   */
  setPresence(agentId: string, status: string, effective: string, view?: Omit<AgentNodeView, 't'>): Promise<void> {
    const now = new Date();
    const m = this.#redis.multi().hset(this.key('agent', agentId), { status, effective, updatedAt: now.toISOString() }).hsetnx(this.key('agent', agentId), 'firstSeenAt', now.toISOString());
    if (view && (view.s > 0 || view.a !== 'idle')) {
      m.hset(this.key('agent', agentId), `n:${this.#node}`, JSON.stringify({ ...view, t: now.getTime() }));
    } else if (view) {
      m.hdel(this.key('agent', agentId), `n:${this.#node}`);
    }

    return this.#safe('setPresence', async () => {
      const r = await m.exec();
      await this.#refreshAgentTtl(agentId);
      if (view && (view.s > 0 || view.a !== 'idle')) {
        await this.#redis.sadd(this.key('node', this.#node, 'agents'), agentId);
      } else if (view) {
        await this.#redis.srem(this.key('node', this.#node, 'agents'), agentId);
      }

      return r;
    });
  }

  /** An agent's hash keeps no TTL while it has devices; otherwise it expires after 30 days. */
  async #refreshAgentTtl(agentId: string): Promise<void> {
    const devices = await this.#redis.hlen(this.key('agent', agentId, 'devices'));
    if (devices > 0) {
      await this.#redis.persist(this.key('agent', agentId));
    } else {
      await this.#redis.expire(this.key('agent', agentId), AGENT_IDLE_TTL_S);
    }
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

  /**
   * An agent's hash as stored (status, per-node views, ...).
   * @throws when Redis is unavailable
   */
  async agentHash(agentId: string): Promise<Record<string, string>> {
    return this.#redis.hgetall(this.key('agent', agentId));
  }

  /**
   * Agents' presence across the cluster: the stored status, and the views of live nodes only (a
   * dead node's view is ignored before the reaper removes it).
   * @param live ids of live nodes (see liveNodes())
   * @throws when Redis is unavailable
   */
  async clusterPresence(agentIds: string[], live: ReadonlySet<string>): Promise<ClusterPresence[]> {
    if (agentIds.length === 0) {
      return [];
    }
    const p = this.#redis.pipeline();
    for (const a of agentIds) {
      p.hgetall(this.key('agent', a));
    }
    const res = (await p.exec()) ?? [];

    return agentIds.map((agentId, i) => {
      const [err, h] = res[i] ?? [null, {}];
      if (err) {
        throw err;
      }

      return presenceOf(agentId, (h ?? {}) as Record<string, string>, live);
    });
  }

  /** Records a session of an agent on this node (new or resumed; connected or suspended). */
  putSession(agentId: string, sessionId: string, state: 'connected' | 'suspended', since: number, deviceId?: string): Promise<void> {
    return this.#safe('putSession', () => this.#redis.hset(this.key('agent', agentId, 'sessions'), sessionId, JSON.stringify({ node: this.#node, state, since, ...(deviceId ? { deviceId } : {}) })));
  }

  /** Removes an ended session. */
  removeSession(agentId: string, sessionId: string): Promise<void> {
    return this.#safe('removeSession', () => this.#redis.hdel(this.key('agent', agentId, 'sessions'), sessionId));
  }

  /** Notes that an agent's call ended now (longest-idle ordering). */
  agentBecameIdle(agentId: string, at = Date.now()): Promise<void> {
    return this.#safe('agentBecameIdle', async () => {
      await this.#redis.hset(this.key('agent', agentId), 'lastCallEndedAt', String(at));
      await this.#redis.zadd(this.#idleKey(), at, agentId);
    });
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
      const scores = await this.#redis.zmscore(this.#idleKey(), ...agentIds);
      const ranked = agentIds.map((id, i) => ({ id, i, s: scores[i] === null || scores[i] === undefined ? -1 : Number(scores[i]) }));
      ranked.sort((a, b) => a.s - b.s || a.i - b.i);

      return ranked.map((r) => r.id);
    } catch (err) {
      this.#log.warn({ err }, 'redis read failed; ringing in configured order');

      return agentIds;
    }
  }

  #idleKey(): string {
    return `${this.#p}agents:idle`;
  }

  // ----------------------------------------------------------------------------------------------
  // Devices
  // ----------------------------------------------------------------------------------------------

  #tokenKey(channel: string, token: string): string {
    return this.key('token', createHash('sha256').update(`${channel}\n${token}`).digest('hex'));
  }

  /**
   * Adds or updates a device of an agent. A token already registered to another device (of this
   * or another agent: the phone changed hands, the app was reinstalled) moves to this one.
   * @throws when Redis is unavailable (the caller reports the failure to the agent)
   */
  async putDevice(agentId: string, device: Omit<Device, 'addedAt' | 'lastSeen'> & Partial<Pick<Device, 'addedAt' | 'lastSeen'>>): Promise<Device> {
    const now = new Date().toISOString();
    const devicesKey = this.key('agent', agentId, 'devices');
    const previousRaw = await this.#redis.hget(devicesKey, device.deviceId);
    const previous = previousRaw ? (JSON.parse(previousRaw) as Device) : undefined;
    const stored: Device = { ...device, addedAt: previous?.addedAt ?? device.addedAt ?? now, lastSeen: device.lastSeen ?? now };
    if (device.token) {
      const tokenKey = this.#tokenKey(device.channel, device.token);
      const owner = await this.#redis.get(tokenKey);
      if (owner && owner !== `${agentId} ${device.deviceId}`) {
        const [otherAgent, otherDevice] = owner.split(' ');
        if (otherAgent && otherDevice) {
          // the token moved (the phone changed hands): the old device goes, with its alert token
          const otherRaw = await this.#redis.hget(this.key('agent', otherAgent, 'devices'), otherDevice);
          if (otherRaw) {
            await this.#dropTokenIndexes(otherAgent, JSON.parse(otherRaw) as Device);
          }
          await this.#redis.hdel(this.key('agent', otherAgent, 'devices'), otherDevice);
          await this.#refreshAgentTtl(otherAgent);
        }
      }
    }
    if (previous?.token && (previous.token !== device.token || previous.channel !== device.channel)) {
      await this.#delTokenIfOwned(previous.channel, previous.token, agentId, device.deviceId);
    }
    if (previous?.alertToken && previous.alertToken !== device.alertToken) {
      await this.#delTokenIfOwned(`${previous.channel}:alert`, previous.alertToken, agentId, device.deviceId);
    }
    await this.#redis.multi().hset(devicesKey, device.deviceId, JSON.stringify(stored)).persist(this.key('agent', agentId)).hsetnx(this.key('agent', agentId), 'firstSeenAt', now).exec();
    if (device.token) {
      await this.#redis.set(this.#tokenKey(device.channel, device.token), `${agentId} ${device.deviceId}`);
    }
    if (device.alertToken) {
      await this.#redis.set(this.#tokenKey(`${device.channel}:alert`, device.alertToken), `${agentId} ${device.deviceId}`);
    }

    return stored;
  }

  /**
   * Adds or updates a device of an agent, unless its push token (or APNs alert token) is registered
   * to another agent: then nothing is written and `{ ok: false }` comes back. For devices whose
   * registration is not a signed-in app (SIP REGISTER with RFC 8599 parameters): a token never
   * moves silently from one agent to another that way. Within the agent it moves as putDevice()
   * moves it (the agent's other device that had it goes).
   *
   * Atomic per token: each token index entry is claimed with a compare-and-set script on its one
   * key (free or this agent's → ours), so two agents registering one token at once cannot both
   * win; when the second token cannot be claimed the first claim is given back.
   * @throws when Redis is unavailable
   */
  async putDeviceIfTokensFree(agentId: string, device: Omit<Device, 'addedAt' | 'lastSeen'> & Partial<Pick<Device, 'addedAt' | 'lastSeen'>>): Promise<{ ok: true; device: Device } | { ok: false; taken: 'token' | 'alertToken' }> {
    const owner = `${agentId} ${device.deviceId}`;
    const claims: { key: string; previous: string | null }[] = [];
    const wanted: ['token' | 'alertToken', string][] = [];
    if (device.token) {
      wanted.push(['token', this.#tokenKey(device.channel, device.token)]);
    }
    if (device.alertToken) {
      wanted.push(['alertToken', this.#tokenKey(`${device.channel}:alert`, device.alertToken)]);
    }
    for (const [what, key] of wanted) {
      const r = (await this.#redis.eval(CLAIM_TOKEN, 1, key, `${agentId} `, owner)) as [number, string | null];
      if (Number(r[0]) !== 1) {
        for (const c of claims) {
          await this.#redis.eval(RELEASE_TOKEN, 1, c.key, owner, c.previous ?? '');
        }

        return { ok: false, taken: what };
      }
      claims.push({ key, previous: r[1] ?? null });
    }
    // the agent's other device that held the token (same agent: a reinstall) gives it up
    for (const c of claims) {
      if (c.previous && c.previous !== owner) {
        const otherDevice = c.previous.slice(agentId.length + 1);
        const otherRaw = await this.#redis.hget(this.key('agent', agentId, 'devices'), otherDevice);
        if (otherRaw) {
          const other = JSON.parse(otherRaw) as Device;
          await this.#dropTokenIndexes(agentId, other);
          await this.#redis.hdel(this.key('agent', agentId, 'devices'), otherDevice);
        }
      }
    }

    return { ok: true, device: await this.putDevice(agentId, device) };
  }

  /** Removes a device's token index entries (its token and, for APNs, its alert token) that still point at it. */
  async #dropTokenIndexes(agentId: string, d: Device): Promise<void> {
    if (d.token) {
      await this.#delTokenIfOwned(d.channel, d.token, agentId, d.deviceId);
    }
    if (d.alertToken) {
      await this.#delTokenIfOwned(`${d.channel}:alert`, d.alertToken, agentId, d.deviceId);
    }
  }

  async #delTokenIfOwned(channel: string, token: string, agentId: string, deviceId: string): Promise<void> {
    const key = this.#tokenKey(channel, token);
    if ((await this.#redis.get(key)) === `${agentId} ${deviceId}`) {
      await this.#redis.del(key);
    }
  }

  /**
   * Removes a device; true when it existed.
   * @throws when Redis is unavailable
   */
  async removeDevice(agentId: string, deviceId: string): Promise<boolean> {
    const devicesKey = this.key('agent', agentId, 'devices');
    const raw = await this.#redis.hget(devicesKey, deviceId);
    if (!raw) {
      return false;
    }
    await this.#dropTokenIndexes(agentId, JSON.parse(raw) as Device);
    await this.#redis.hdel(devicesKey, deviceId);
    await this.#refreshAgentTtl(agentId);

    return true;
  }

  /**
   * An agent's devices.
   * @throws when Redis is unavailable
   */
  async devices(agentId: string): Promise<Device[]> {
    const all = await this.#redis.hgetall(this.key('agent', agentId, 'devices'));

    return Object.values(all).map((raw) => JSON.parse(raw) as Device);
  }

  /** Updates a device's last-seen time (a session from it started). */
  touchDevice(agentId: string, deviceId: string): Promise<void> {
    return this.#safe('touchDevice', async () => {
      const key = this.key('agent', agentId, 'devices');
      const raw = await this.#redis.hget(key, deviceId);
      if (raw) {
        await this.#redis.hset(key, deviceId, JSON.stringify({ ...(JSON.parse(raw) as Device), lastSeen: new Date().toISOString() }));
      }
    });
  }

  /**
   * A push provider reported a token dead (APNs 410 Unregistered, FCM UNREGISTERED, ...): the
   * device holding it is removed. Returns the owner, or undefined when the token is unknown.
   * @throws when Redis is unavailable
   */
  async removeDeadToken(channel: PushChannel, token: string): Promise<{ agentId: string; deviceId: string } | undefined> {
    const key = this.#tokenKey(channel, token);
    const owner = await this.#redis.get(key);
    if (!owner) {
      return this.#removeDeadAlertToken(channel, token);
    }
    const [agentId, deviceId] = owner.split(' ') as [string, string];
    const raw = await this.#redis.hget(this.key('agent', agentId, 'devices'), deviceId);
    const d = raw ? (JSON.parse(raw) as Device) : undefined;
    if (d && d.channel === channel && d.token === token) {
      await this.#redis.hdel(this.key('agent', agentId, 'devices'), deviceId);
      await this.#refreshAgentTtl(agentId);
    }
    await this.#redis.del(key);

    return { agentId, deviceId };
  }

  /** An APNs alert token reported dead: the device stays (its VoIP token still wakes it), without it. */
  async #removeDeadAlertToken(channel: PushChannel, token: string): Promise<{ agentId: string; deviceId: string } | undefined> {
    const key = this.#tokenKey(`${channel}:alert`, token);
    const owner = await this.#redis.get(key);
    if (!owner) {
      return undefined;
    }
    const [agentId, deviceId] = owner.split(' ') as [string, string];
    const devicesKey = this.key('agent', agentId, 'devices');
    const raw = await this.#redis.hget(devicesKey, deviceId);
    const d = raw ? (JSON.parse(raw) as Device) : undefined;
    if (d && d.alertToken === token) {
      const { alertToken: _gone, ...rest } = d;
      await this.#redis.hset(devicesKey, deviceId, JSON.stringify(rest));
    }
    await this.#redis.del(key);

    return { agentId, deviceId };
  }

  // ----------------------------------------------------------------------------------------------
  // Wake-ups (push): one record per call an agent was woken for
  // ----------------------------------------------------------------------------------------------

  /**
   * Writes (merges) the wake record of a call for an agent: which node woke it, when, each device's
   * wake state, and the outcome once the call stopped ringing. The agent's wakes hash expires
   * WAKE_TTL_S after its last write.
   */
  putWake(agentId: string, callId: string, update: Partial<WakeRecord>): Promise<void> {
    return this.#safe('putWake', async () => {
      const key = this.key('agent', agentId, 'wakes');
      const raw = await this.#redis.hget(key, callId);
      const prev = raw ? (JSON.parse(raw) as WakeRecord) : { node: this.#node, sentAt: Date.now(), devices: {} };
      const next: WakeRecord = { ...prev, ...update, devices: { ...prev.devices, ...update.devices } };
      await this.#redis.multi().hset(key, callId, JSON.stringify(next)).expire(key, WAKE_TTL_S).exec();
    });
  }

  /**
   * An agent's wake records by call id (recent ones only).
   * @throws when Redis is unavailable
   */
  async wakes(agentId: string): Promise<Map<string, WakeRecord>> {
    const all = await this.#redis.hgetall(this.key('agent', agentId, 'wakes'));

    return new Map(Object.entries(all).map(([callId, raw]) => [callId, JSON.parse(raw) as WakeRecord]));
  }

  /**
   * The devices of an agent that have a live session (any node), from the sessions hash.
   * @throws when Redis is unavailable
   */
  async connectedDevices(agentId: string): Promise<Set<string>> {
    const all = await this.#redis.hgetall(this.key('agent', agentId, 'sessions'));
    const out = new Set<string>();
    for (const raw of Object.values(all)) {
      const s = JSON.parse(raw) as { deviceId?: string };
      if (s.deviceId) {
        out.add(s.deviceId);
      }
    }

    return out;
  }

  // ----------------------------------------------------------------------------------------------
  // Calls and records
  // ----------------------------------------------------------------------------------------------

  /**
   * Writes (creates or updates) a live call's hash and lists it under this node; undefined fields
   * are skipped. The creating node names itself in `node` (SIP leg) or `agentNode`.
   */
  putCall(callId: string, fields: Record<string, string | number | undefined>): Promise<void> {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) {
        clean[k] = String(v);
      }
    }

    return this.#safe('putCall', async () => {
      await this.#redis.hset(this.key('call', callId), clean);
      await this.#redis.sadd(this.key('node', this.#node, 'calls'), callId);
    });
  }

  /** Forgets a live call of this node without a record (a cross-node leg that another node records). */
  dropCall(callId: string): Promise<void> {
    return this.#safe('dropCall', () => this.#redis.srem(this.key('node', this.#node, 'calls'), callId));
  }

  /**
   * Ends a call: its final fields and retention TTL, the record appended to the CDR stream (trimmed
   * to the retention), the agent's record index, and its removal from the node's live calls.
   */
  endCall(record: CallRecord, node = this.#node): Promise<void> {
    return this.#safe('endCall', () => this.#endCall(record, node));
  }

  async #endCall(record: CallRecord, node: string): Promise<void> {
    // first: the webhook gets the record even when the Redis write then fails
    try {
      this.#onRecord?.(record);
    } catch (err) {
      this.#log.warn({ err }, 'call record hook failed');
    }
    try {
      await this.#writeEnd(record, node);
    } catch (err) {
      if (this.#pendingEnds.length >= MAX_PENDING_ENDS) {
        this.#pendingEnds.shift();
        this.#log.error({ max: MAX_PENDING_ENDS }, 'too many call records waiting for Redis; the oldest is dropped');
      }
      this.#pendingEnds.push({ record, node });
      this.#scheduleReplay();
      throw err;
    }
  }

  /** The Redis part of endCall(); throws on a Redis failure. */
  async #writeEnd(record: CallRecord, node: string): Promise<void> {
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(record)) {
      if (v !== undefined) {
        fields[k] = String(v);
      }
    }
    const endedMs = Date.parse(record.endedAt) || Date.now();
    const minId = Math.max(0, Date.now() - this.#recordTtlS * 1000);
    // Exact MINID (not "~"): a record past its retention must not outlive it by a macro node.
    const cdrId = await this.#redis.xadd(this.key('cdr'), 'MINID', String(minId), '*', ...Object.entries(fields).flat());
    await this.#redis
      .multi()
      .hset(this.key('call', record.callId), { ...fields, state: 'ended', ...(cdrId ? { cdrId } : {}) })
      .expire(this.key('call', record.callId), this.#recordTtlS)
      .exec();
    if (record.agentId) {
      await this.#redis
        .multi()
        .zadd(this.key('agent', record.agentId, 'records'), endedMs, record.callId)
        .zremrangebyscore(this.key('agent', record.agentId, 'records'), '-inf', `(${minId}`)
        .expire(this.key('agent', record.agentId, 'records'), this.#recordTtlS)
        .exec();
    }
    await this.#redis.srem(this.key('node', node, 'calls'), record.callId);
  }

  // ----------------------------------------------------------------------------------------------
  // Trunks: live calls for the concurrent-call cap
  // ----------------------------------------------------------------------------------------------

  /**
   * Counts a call among a trunk's live calls unless the trunk already has `max` (cluster-wide, one
   * Lua script, so two nodes cannot both take the last slot). Resolves false when the trunk is
   * full; true when admitted, and when Redis is unavailable (the caps fail open, warned).
   */
  async admitTrunkCall(trunkId: string, callId: string, max: number): Promise<boolean> {
    try {
      return Number(await this.#redis.eval(ADMIT_TRUNK_CALL, 1, this.key('trunk', trunkId, 'calls'), callId, this.#node, String(max))) === 1;
    } catch (err) {
      this.#log.warn({ err, trunk: trunkId }, 'cannot count the trunk\'s calls in Redis: the call is admitted');

      return true;
    }
  }

  /** Removes a call from its trunk's live calls (idempotent). */
  releaseTrunkCall(trunkId: string, callId: string): Promise<void> {
    return this.#safe('releaseTrunkCall', () => this.#redis.hdel(this.key('trunk', trunkId, 'calls'), callId));
  }

  /** Number of a trunk's live calls across the cluster (as counted for its cap). */
  async trunkCallCount(trunkId: string): Promise<number> {
    return this.#redis.hlen(this.key('trunk', trunkId, 'calls'));
  }

  /** The stored hash of a call (for tests and the admin API). */
  async getCall(callId: string): Promise<Record<string, string>> {
    return this.#redis.hgetall(this.key('call', callId));
  }

  /** The newest call records, newest first. */
  async recentRecords(count = 10): Promise<Record<string, string>[]> {
    const entries = await this.#redis.xrevrange(this.key('cdr'), '+', '-', 'COUNT', count);

    return entries.map(([, kv]) => pairsToObject(kv));
  }

  /** Ids of this node's (or another node's) live calls as stored. */
  async nodeCalls(node = this.#node): Promise<string[]> {
    return this.#redis.smembers(this.key('node', node, 'calls'));
  }

  // ----------------------------------------------------------------------------------------------
  // Nodes
  // ----------------------------------------------------------------------------------------------

  /**
   * Writes this node's registry entry and heartbeat (its hash expires after the node TTL).
   * Resolves whether the entry was there before the beat: false on the first beat, and when the
   * node was reaped as dead meanwhile or Redis lost its data (then the node writes its state again).
   * @throws when Redis is unavailable
   */
  async heartbeat(info: Omit<NodeInfo, 'heartbeatAt' | 'id'>): Promise<boolean> {
    const now = Date.now();
    const fields: Record<string, string> = { id: this.#node, heartbeatAt: String(now) };
    for (const [k, v] of Object.entries(info)) {
      fields[k] = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
    }
    const key = this.key('node', this.#node);
    const r = await this.#redis.multi().exists(key).hset(key, fields).pexpire(key, this.#nodeTtlMs).exec();
    const err = r?.find(([e]) => e)?.[0];
    if (err) {
      throw err;
    }
    await this.#redis.zadd(this.key('nodes'), now, this.#node);

    return r?.[0]?.[1] === 1;
  }

  /**
   * Live nodes: those whose heartbeat is younger than the node TTL.
   * @throws when Redis is unavailable
   */
  async liveNodes(): Promise<NodeInfo[]> {
    const ids = await this.#redis.zrangebyscore(this.key('nodes'), Date.now() - this.#nodeTtlMs, '+inf');
    if (ids.length === 0) {
      return [];
    }
    const p = this.#redis.pipeline();
    for (const id of ids) {
      p.hgetall(this.key('node', id));
    }
    const res = (await p.exec()) ?? [];
    const out: NodeInfo[] = [];
    for (const [err, h] of res) {
      const r = (err ? {} : h) as Record<string, string>;
      if (!r.id) {
        continue; // expired between the two reads
      }
      out.push({
        id: r.id,
        sipUri: r.sipUri ?? '',
        httpUrl: r.httpUrl ?? '',
        mediaAddress: r.mediaAddress ?? '',
        version: r.version ?? '',
        startedAt: r.startedAt ?? '',
        draining: r.draining === '1',
        calls: Number(r.calls ?? 0),
        sessions: Number(r.sessions ?? 0),
        heartbeatAt: Number(r.heartbeatAt ?? 0),
      });
    }

    return out;
  }

  /**
   * Nodes in the registry whose heartbeat is older than the node TTL.
   * @throws when Redis is unavailable
   */
  async deadNodes(): Promise<string[]> {
    return this.#redis.zrangebyscore(this.key('nodes'), '-inf', `(${Date.now() - this.#nodeTtlMs}`);
  }

  /**
   * Clears what a node held: its live calls are ended in Redis (record with `endReason`), its views
   * and sessions are removed from its agents, its callers leave the groups' queues, and it leaves
   * the registry. Used by the reaper for a
   * dead node and by a restarting node for its previous run. Only one caller reaps a node at a time
   * (a lock); returns false when another holds it.
   * @throws when Redis is unavailable
   */
  async reapNode(node: string, endReason: string): Promise<{ calls: number; agents: string[] } | false> {
    const lock = this.key('node', node, 'reaping');
    if ((await this.#redis.set(lock, this.#node, 'PX', 30_000, 'NX')) !== 'OK') {
      return false;
    }
    try {
      const callIds = await this.#redis.smembers(this.key('node', node, 'calls'));
      let ended = 0;
      for (const callId of callIds) {
        const h = await this.#redis.hgetall(this.key('call', callId));
        if (h.state && h.state !== 'ended') {
          const endedAt = new Date().toISOString();
          const answeredMs = h.answeredAt ? Date.parse(h.answeredAt) : NaN;
          await this.#endCall(
            {
              callId,
              direction: h.direction === 'outbound' ? 'outbound' : 'inbound',
              trunkId: h.trunkId ?? '',
              from: h.from ?? '',
              to: h.to ?? '',
              agentId: h.agentId ?? '',
              node: h.node ?? node,
              ...(h.agentNode ? { agentNode: h.agentNode } : {}),
              offeredAt: h.offeredAt ?? endedAt,
              ...(h.ringingAt ? { ringingAt: h.ringingAt } : {}),
              ...(h.answeredAt ? { answeredAt: h.answeredAt } : {}),
              endedAt,
              endReason,
              ...(h.codec ? { codec: h.codec } : {}),
              durationS: Number.isFinite(answeredMs) ? Math.max(0, Math.round((Date.now() - answeredMs) / 1000)) : 0,
            },
            node,
          );
          ended++;
        }
      }
      await this.#redis.del(this.key('node', node, 'calls'));
      // the node's entries in the trunks' live calls (also calls it admitted but had not stored yet)
      for (const trunkId of this.#trunkIds) {
        const held = await this.#redis.hgetall(this.key('trunk', trunkId, 'calls'));
        const gone = Object.entries(held)
          .filter(([, n]) => n === node)
          .map(([id]) => id);
        if (gone.length > 0) {
          await this.#redis.hdel(this.key('trunk', trunkId, 'calls'), ...gone);
        }
      }
      // the node's waiting callers in the groups' queues (else they stay listed for a day)
      for (const groupId of this.#queueGroupIds) {
        const held = await this.#redis.hgetall(this.key('queue', groupId, 'nodes'));
        const gone = Object.entries(held)
          .filter(([, n]) => n === node)
          .map(([id]) => id);
        if (gone.length > 0) {
          await this.#redis.multi().zrem(this.key('queue', groupId), ...gone).hdel(this.key('queue', groupId, 'nodes'), ...gone).exec();
        }
      }
      const agents = await this.#redis.smembers(this.key('node', node, 'agents'));
      for (const agentId of agents) {
        await this.#redis.hdel(this.key('agent', agentId), `n:${node}`);
        const sessions = await this.#redis.hgetall(this.key('agent', agentId, 'sessions'));
        const gone = Object.entries(sessions)
          .filter(([, raw]) => (JSON.parse(raw) as { node?: string }).node === node)
          .map(([id]) => id);
        if (gone.length > 0) {
          await this.#redis.hdel(this.key('agent', agentId, 'sessions'), ...gone);
        }
      }
      await this.#redis.del(this.key('node', node, 'agents'), this.key('node', node));
      await this.#redis.zrem(this.key('nodes'), node);

      return { calls: ended, agents };
    } finally {
      await this.#redis.del(lock);
    }
  }

  /** Removes this node from the registry (clean stop, after its calls ended). */
  unregister(): Promise<void> {
    return this.#safe('unregister', async () => {
      await this.#redis.del(this.key('node', this.#node), this.key('node', this.#node, 'calls'), this.key('node', this.#node, 'agents'));
      await this.#redis.zrem(this.key('nodes'), this.#node);
    });
  }

  // ----------------------------------------------------------------------------------------------
  // Personal data: export and erase (GDPR Art. 15 and 17)
  // ----------------------------------------------------------------------------------------------

  /**
   * Everything stored about an agent: profile and status, per-node presence, sessions, devices with
   * their tokens, longest-idle time, and call records still within the retention.
   * @throws when Redis is unavailable
   */
  async exportAgent(agentId: string): Promise<AgentExport> {
    const [profileAll, sessions, devices, sipBindings, idle, recordIds] = await Promise.all([
      this.#redis.hgetall(this.key('agent', agentId)),
      this.#redis.hgetall(this.key('agent', agentId, 'sessions')),
      this.devices(agentId),
      this.#redis.hgetall(this.key('agent', agentId, 'sip')),
      this.#redis.zscore(this.#idleKey(), agentId),
      this.#redis.zrange(this.key('agent', agentId, 'records'), 0, -1),
    ]);
    const profile: Record<string, string> = {};
    const presence: Record<string, AgentNodeView> = {};
    for (const [k, v] of Object.entries(profileAll)) {
      if (k.startsWith('n:')) {
        presence[k.slice(2)] = JSON.parse(v) as AgentNodeView;
      } else {
        profile[k] = v;
      }
    }
    const callRecords: Record<string, string>[] = [];
    for (const callId of recordIds) {
      const h = await this.#redis.hgetall(this.key('call', callId));
      if (h.callId) {
        callRecords.push(h);
      }
    }

    return {
      agentId,
      exportedAt: new Date().toISOString(),
      profile,
      presence,
      sessions: Object.fromEntries(Object.entries(sessions).map(([k, v]) => [k, JSON.parse(v) as unknown])),
      devices,
      sipBindings: Object.values(sipBindings).map((v) => JSON.parse(v) as SipBinding),
      ...(idle !== null ? { idleSince: new Date(Number(idle)).toISOString() } : {}),
      callRecords,
    };
  }

  /**
   * Erases everything stored about an agent: its keys, its token index entries, its place in the
   * idle index, and its call records (call hashes and CDR stream entries). Returns the counts.
   * @throws when Redis is unavailable
   */
  async eraseAgent(agentId: string): Promise<{ devices: number; callRecords: number }> {
    const devices = await this.devices(agentId);
    for (const d of devices) {
      await this.#dropTokenIndexes(agentId, d);
    }
    const recordIds = await this.#redis.zrange(this.key('agent', agentId, 'records'), 0, -1);
    let callRecords = 0;
    for (const callId of recordIds) {
      const h = await this.#redis.hgetall(this.key('call', callId));
      if (h.agentId !== undefined && h.agentId !== agentId) {
        continue; // not this agent's (a reused id); leave it
      }
      if (h.cdrId) {
        await this.#redis.xdel(this.key('cdr'), h.cdrId);
      }
      await this.#redis.del(this.key('call', callId));
      callRecords++;
    }
    await this.#redis.del(this.key('agent', agentId), this.key('agent', agentId, 'sessions'), this.key('agent', agentId, 'devices'), this.key('agent', agentId, 'records'), this.key('agent', agentId, 'wakes'), this.key('agent', agentId, 'sip'));
    await this.#redis.zrem(this.#idleKey(), agentId);
    // CDR entries whose call hash already expired are not in the index: walk the stream (an admin
    // request, rare; the stream holds only calls.recordTtlS of records), and trim what is past
    // retention while at it.
    await this.#redis.xtrim(this.key('cdr'), 'MINID', String(Date.now() - this.#recordTtlS * 1000));
    for (let start = '-'; ; ) {
      const batch = await this.#redis.xrange(this.key('cdr'), start, '+', 'COUNT', 1000);
      const mine = batch.filter(([, kv]) => pairsToObject(kv).agentId === agentId).map(([id]) => id);
      if (mine.length > 0) {
        await this.#redis.xdel(this.key('cdr'), ...mine);
        callRecords += mine.length;
      }
      if (batch.length < 1000) {
        break;
      }
      start = `(${batch[batch.length - 1]![0]}`;
    }
    for (const node of await this.#redis.zrange(this.key('nodes'), 0, -1)) {
      await this.#redis.srem(this.key('node', node, 'agents'), agentId);
    }

    return { devices: devices.length, callRecords };
  }

  // ----------------------------------------------------------------------------------------------
  // Group queues (src/calls/call-centre.ts)
  // ----------------------------------------------------------------------------------------------

  /**
   * Puts a call in a group's queue, scored by when it joined (ms since the epoch); the call's node
   * is this one. A Redis failure is logged, not thrown (the call waits on this node regardless).
   */
  queueAdd(groupId: string, callId: string, since: number): Promise<void> {
    return this.#safe('queueAdd', () => this.#redis.multi().zadd(this.key('queue', groupId), since, callId).hset(this.key('queue', groupId, 'nodes'), callId, this.#node).exec());
  }

  /** Takes a call out of a group's queue (answered, timed out, gone). Failures are logged. */
  queueRemove(groupId: string, callId: string): Promise<void> {
    return this.#safe('queueRemove', () => this.#redis.multi().zrem(this.key('queue', groupId), callId).hdel(this.key('queue', groupId, 'nodes'), callId).exec());
  }

  /**
   * A group's queue, longest waiting first: each call's id, when it joined (ms since the epoch)
   * and the node holding it. Entries older than a day (a node died with them) are dropped.
   * @throws when Redis fails
   */
  async queueEntries(groupId: string, now = Date.now()): Promise<{ callId: string; since: number; node: string }[]> {
    const key = this.key('queue', groupId);
    const stale = now - 86_400_000;
    const [flat, nodes] = await Promise.all([this.#redis.zrange(key, 0, -1, 'WITHSCORES'), this.#redis.hgetall(this.key('queue', groupId, 'nodes'))]);
    const out: { callId: string; since: number; node: string }[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const callId = flat[i]!;
      const since = Number(flat[i + 1]);
      if (since < stale) {
        void this.queueRemove(groupId, callId);
        continue;
      }
      out.push({ callId, since, node: nodes[callId] ?? '' });
    }

    return out;
  }
}

/** Cluster presence from an agent hash and the live nodes. */
export function presenceOf(agentId: string, h: Record<string, string>, live: ReadonlySet<string>): ClusterPresence {
  const status = h.status === 'busy' || h.status === 'away' ? h.status : 'available';
  const nodes: string[] = [];
  let ringing = false;
  let onCall = false;
  for (const [k, v] of Object.entries(h)) {
    if (!k.startsWith('n:') || !live.has(k.slice(2))) {
      continue;
    }
    let view: AgentNodeView;
    try {
      view = JSON.parse(v) as AgentNodeView;
    } catch {
      continue;
    }
    if (view.s > 0) {
      nodes.push(k.slice(2));
    }
    onCall ||= view.a === 'on_call';
    ringing ||= view.a === 'ringing';
  }
  const effective = nodes.length === 0 && !onCall ? 'offline' : onCall ? 'on_call' : ringing ? 'ringing' : status;

  return { agentId, status, effective, nodes: nodes.sort() };
}

function pairsToObject(kv: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < kv.length; i += 2) {
    o[kv[i]!] = kv[i + 1]!;
  }

  return o;
}
