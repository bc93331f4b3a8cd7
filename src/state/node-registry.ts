/**
 * The node registry: each gateway node heartbeats its entry into Redis ({p}node:{N}, which
 * expires `cluster.nodeTtlMs` after the last beat, and the {p}nodes index), keeps the set of live
 * nodes, and reaps dead ones: a node whose heartbeat stopped has its calls ended in Redis
 * (`node_failure`) and its agents' presence and sessions removed, by whichever live node gets the
 * reaping lock first. A restarting node first clears what its previous run left (`node_restart`).
 *
 * Bounds: a node that dies is ignored by the others' presence reads after `nodeTtlMs`, and is
 * reaped within `nodeTtlMs + heartbeatIntervalMs`.
 */
import { EventEmitter } from 'node:events';
import { type Logger } from '../log/logger.js';
import { type NodeInfo, type StateStore } from './store.js';

/** Events of the node registry. */
export interface NodeRegistryEvents {
  /** After every successful refresh of the live set. */
  refresh: [live: ReadonlyMap<string, NodeInfo>];
  /** A node that was live is no longer. */
  nodeDown: [nodeId: string];
  /** This node reaped a dead node (or its own previous run). */
  reaped: [info: { node: string; calls: number; agents: string[] }];
  /**
   * This node's registry entry was gone at a beat after the first: another node reaped it as dead
   * (it stalled longer than the node TTL) or Redis lost its data. Write the node's state again.
   */
  lost: [];
}

/** Options of the node registry. */
export interface NodeRegistryOptions {
  store: StateStore;
  logger: Logger;
  heartbeatIntervalMs: number;
  /** What this node advertises on each beat (its counts change). */
  info(): Omit<NodeInfo, 'id' | 'heartbeatAt'>;
}

/** This node's entry in the registry, and its view of the others. */
export class NodeRegistry extends EventEmitter<NodeRegistryEvents> {
  readonly #o: NodeRegistryOptions;
  #live = new Map<string, NodeInfo>();
  /** When each node was last seen live (ms since the epoch). */
  readonly #lastSeen = new Map<string, number>();
  #beaten = false;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #redisDownLogged = false;
  #stopped = false;

  constructor(opts: NodeRegistryOptions) {
    super();
    this.#o = opts;
  }

  /** This node's id. */
  get self(): string {
    return this.#o.store.nodeId;
  }

  /** Live nodes as of the last refresh (this one included once it has beaten). */
  get live(): ReadonlyMap<string, NodeInfo> {
    return this.#live;
  }

  /** Whether a node was live at the last refresh. */
  isLive(nodeId: string): boolean {
    return this.#live.has(nodeId);
  }

  /**
   * How long a node has been missing from the live set, ms (0 while live). A peer is given up only
   * after this exceeds the node TTL: a Redis restart empties the registry for a beat or two, and
   * nobody must be declared dead for that.
   */
  silentForMs(nodeId: string): number {
    if (this.#live.has(nodeId)) {
      return 0;
    }
    const seen = this.#lastSeen.get(nodeId);

    return seen === undefined ? Number.POSITIVE_INFINITY : Date.now() - seen;
  }

  /**
   * Clears what this node's previous run left in Redis, beats once and starts the loop.
   * A Redis failure here is logged, not thrown: the loop retries.
   */
  async start(): Promise<void> {
    try {
      const r = await this.#o.store.reapNode(this.self, 'node_restart');
      if (r && (r.calls > 0 || r.agents.length > 0)) {
        this.#o.logger.warn({ calls: r.calls, agents: r.agents.length }, 'cleared what the previous run of this node left in Redis');
        this.emit('reaped', { node: this.self, ...r });
      }
    } catch (err) {
      this.#o.logger.warn({ err }, 'cannot reconcile this node with Redis yet');
    }
    await this.tick();
    this.#timer = setInterval(() => void this.tick(), this.#o.heartbeatIntervalMs);
    this.#timer.unref();
  }

  /**
   * Reads the live nodes from Redis now and adds those that started since the last beat (a call
   * must not miss an agent on a node that came up a moment ago). Nodes that went silent are
   * still dropped only by the beat, which reports them. Throws when Redis fails.
   */
  async refreshLive(): Promise<ReadonlyMap<string, NodeInfo>> {
    const nodes = await this.#o.store.liveNodes();
    const next = new Map(this.#live);
    const now = Date.now();
    for (const n of nodes) {
      next.set(n.id, n);
      this.#lastSeen.set(n.id, now);
    }
    this.#live = next;

    return next;
  }

  /** One beat: heartbeat, refresh the live set, reap dead nodes. Runs one at a time. */
  tick(): Promise<void> {
    this.#running ??= this.#tick().finally(() => (this.#running = undefined));

    return this.#running;
  }

  async #tick(): Promise<void> {
    if (this.#stopped) {
      return;
    }
    const { store, logger } = this.#o;
    let nodes: NodeInfo[];
    let dead: string[];
    try {
      const continuing = await store.heartbeat(this.#o.info());
      if (!continuing && this.#beaten) {
        logger.warn('this node\'s registry entry was gone (reaped after a stall, or Redis lost its data): writing its state again');
        this.emit('lost');
      }
      this.#beaten = true;
      nodes = await store.liveNodes();
      dead = await store.deadNodes();
    } catch (err) {
      // With Redis away nobody is declared dead: the live set stays as it was.
      if (!this.#redisDownLogged) {
        logger.warn({ err }, 'node registry: Redis unavailable; keeping the last known live nodes');
        this.#redisDownLogged = true;
      }

      return;
    }
    const recovering = this.#redisDownLogged;
    this.#redisDownLogged = false;
    const next = new Map(nodes.map((n) => [n.id, n]));
    const before = this.#live;
    const now = Date.now();
    if (recovering) {
      // Redis was away (maybe restarted empty): silence during the outage proves nothing. The
      // nodes live before get a fresh node TTL to beat again before anyone gives them up.
      for (const [id, info] of before) {
        if (!next.has(id)) {
          next.set(id, info);
        }
        this.#lastSeen.set(id, now);
      }
    }
    this.#live = next;
    for (const id of next.keys()) {
      this.#lastSeen.set(id, now);
    }
    for (const id of before.keys()) {
      if (!next.has(id) && id !== this.self) {
        logger.warn({ node: id }, 'node down: no heartbeat within the node TTL');
        this.emit('nodeDown', id);
      }
    }
    this.emit('refresh', next);
    for (const node of dead) {
      if (node === this.self) {
        continue; // our own entry is older than the TTL only if this process stalled; the next beat renews it
      }
      try {
        const r = await store.reapNode(node, 'node_failure');
        if (r) {
          logger.warn({ node, calls: r.calls, agents: r.agents.length }, 'reaped a dead node: its calls ended, its agents freed');
          this.emit('reaped', { node, ...r });
        }
      } catch (err) {
        logger.warn({ err, node }, 'cannot reap a dead node now');
      }
    }
  }

  /** Stops the loop; with `unregister` the node leaves the registry (clean stop). */
  async stop(unregister: boolean): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running;
    if (unregister) {
      await this.#o.store.unregister();
    }
  }
}
