/**
 * Agents' presence: the status an agent sets (available, busy, away), kept across reconnects in
 * Redis, and the effective presence the gateway derives (ringing, on_call, offline).
 */
import { type Logger } from '../log/logger.js';
import { type AgentStatus, type EffectivePresence } from '../signaling/protocol.js';
import { type StateStore } from '../state/store.js';

/** What presence needs to know about an agent from the rest of the gateway. */
export interface PresenceInputs {
  /** The agent's sessions on this node (connected or resuming). */
  sessions(agentId: string): number;
  /** The agent's call activity. */
  activity(agentId: string): 'on_call' | 'ringing' | undefined;
  /** Tells the agent's sessions about a change. */
  notify(agentId: string, status: AgentStatus, effective: EffectivePresence): void;
}

/** Presence of every agent this node serves. */
export class PresenceService {
  readonly #status = new Map<string, AgentStatus>();
  readonly #effective = new Map<string, EffectivePresence>();
  readonly #store: StateStore;
  readonly #inputs: PresenceInputs;
  readonly #log: Logger;

  constructor(opts: { store: StateStore; inputs: PresenceInputs; logger: Logger }) {
    this.#store = opts.store;
    this.#inputs = opts.inputs;
    this.#log = opts.logger;
  }

  /** Loads an agent's stored status when its first session starts (default: available). */
  async load(agentId: string): Promise<void> {
    if (this.#status.has(agentId)) {
      return;
    }
    await this.reload(agentId);
  }

  /**
   * Reads the agent's status from Redis again (it may have been set through another node); keeps
   * the known one when Redis has none or cannot be read.
   */
  async reload(agentId: string): Promise<void> {
    const stored = await this.#store.getStatus(agentId);
    if (stored === 'busy' || stored === 'away' || stored === 'available') {
      this.#status.set(agentId, stored);
    } else if (!this.#status.has(agentId)) {
      this.#status.set(agentId, 'available');
    }
  }

  /** The agent's own status. */
  status(agentId: string): AgentStatus {
    return this.#status.get(agentId) ?? 'available';
  }

  /** The effective presence. */
  effective(agentId: string): EffectivePresence {
    if (this.#inputs.sessions(agentId) === 0) {
      return 'offline';
    }

    return this.#inputs.activity(agentId) ?? this.status(agentId);
  }

  /** Whether the agent may be rung now: a session, status available, not ringing or on a call. */
  isAvailable(agentId: string): boolean {
    return this.effective(agentId) === 'available';
  }

  /** Sets the agent's own status. */
  set(agentId: string, status: AgentStatus): { status: AgentStatus; effective: EffectivePresence } {
    this.#status.set(agentId, status);
    this.refresh(agentId, true);

    return { status, effective: this.effective(agentId) };
  }

  /** Recomputes the effective presence; stores and announces it when it changed. */
  refresh(agentId: string, force = false): void {
    const eff = this.effective(agentId);
    if (!force && this.#effective.get(agentId) === eff) {
      return;
    }
    this.#effective.set(agentId, eff);
    const status = this.status(agentId);
    // this node's view of the agent, read by the other nodes (store.ts, clusterPresence)
    void this.#store.setPresence(agentId, status, eff, { s: this.#inputs.sessions(agentId), a: this.#inputs.activity(agentId) ?? 'idle' });
    this.#inputs.notify(agentId, status, eff);
    this.#log.debug({ agent: agentId, status, effective: eff }, 'presence changed');
    if (eff === 'offline') {
      this.#effective.delete(agentId);
    }
  }

  /** Writes every known agent's presence again (after Redis came back empty). */
  rewriteAll(): void {
    for (const agentId of [...this.#effective.keys()]) {
      this.refresh(agentId, true);
    }
  }

  /** Counts by effective presence (for metrics). */
  counts(): Record<EffectivePresence, number> {
    const out: Record<EffectivePresence, number> = { available: 0, busy: 0, away: 0, ringing: 0, on_call: 0, offline: 0 };
    for (const v of this.#effective.values()) {
      out[v]++;
    }

    return out;
  }
}
