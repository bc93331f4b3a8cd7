/**
 * The wake-up flow: waking an agent's sleeping devices for a ringing call, and telling them when
 * the call no longer needs them. The call layer decides whom to wake (agents with no session on
 * any node) and rings a device once it connects; this service sends the pushes and keeps each
 * device's wake state in Redis ({p}agent:{A}:wakes, see src/state/store.ts), so that whichever node
 * the device connects to knows what happened meanwhile.
 *
 * Per device: idle → sent (one wake push, collapse id = call id, TTL = the ring time left) →
 * connected (a session named the device) | failed (the provider refused; a dead token removes the
 * device) → and once the call stops ringing for the agent, a cancel (answered elsewhere) or missed
 * (nobody answered, the caller gave up) notice to the devices that were woken and did not connect.
 * A device that connects after that is told at once (`call.cancelled` with the outcome).
 *
 * A provider that keeps failing is bypassed by a circuit breaker: after `breakerFailures`
 * consecutive failures (timeouts, 5xx, 429 after the bridge's own retry) for at least three
 * different agents its channel is skipped for `breakerOpenMs`, then one push probes it again.
 * (A 429 is often about one token: one agent's throttled phones must not cut off every agent.)
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { type Logger } from '../log/logger.js';
import { type Device, type StateStore, type WakeRecord } from '../state/store.js';
import { type PushBridge } from './bridge.js';
import { type PushChannel, type PushKind, type PushResult } from './provider.js';

/** Why a call stopped ringing for an agent, as the wake record and the notices say. */
export type WakeOutcome = NonNullable<WakeRecord['outcome']>;

/** Options of WakeService. */
export interface WakeServiceOptions {
  store: StateStore;
  bridge: PushBridge;
  logger: Logger;
  /** Registry and name prefix for the push metrics. */
  metrics?: { registry: Registry; prefix: string };
  /** Consecutive failures that open a channel's breaker (default 5). */
  breakerFailures?: number;
  /** How long an open breaker skips its channel, ms (default 30000). */
  breakerOpenMs?: number;
}

/** What a wake-up needs to know about the call. */
export interface WakeCall {
  id: string;
  /** Caller as the device may show it, already masked. */
  callerDisplay: string;
  /** Ring time left, ms: the wake push's TTL (a push that arrives later is useless). */
  ringLeftMs: number;
}

interface Breaker {
  failures: number;
  /** Agents whose pushes make up the current run of failures. */
  agents: Set<string>;
  openUntil: number;
}

/** A channel's breaker opens only when failures span this many agents (one agent's throttled tokens must not cut everyone off). */
const BREAKER_MIN_AGENTS = 3;

/** Sends wake pushes and their follow-ups; never throws for a provider or Redis failure. */
export class WakeService {
  readonly #o: Required<Omit<WakeServiceOptions, 'metrics'>>;
  readonly #log: Logger;
  readonly #breakers = new Map<PushChannel, Breaker>();
  /** callId → agentId → devices this node pushed (for the follow-up notices). */
  readonly #woken = new Map<string, Map<string, Device[]>>();
  readonly #sent: Counter<'channel' | 'kind' | 'result'> | undefined;
  readonly #connect: Histogram | undefined;
  readonly #outcomes: Counter<'outcome'> | undefined;

  constructor(opts: WakeServiceOptions) {
    this.#o = { breakerFailures: 5, breakerOpenMs: 30_000, ...opts };
    this.#log = opts.logger;
    if (opts.metrics) {
      const { registry, prefix } = opts.metrics;
      this.#sent = new Counter({
        name: `${prefix}push_sent_total`,
        help: 'Pushes by channel, kind (call, cancel, missed) and result (delivered, retry_later, dead_token, rejected, breaker_open).',
        labelNames: ['channel', 'kind', 'result'],
        registers: [registry],
      });
      this.#connect = new Histogram({
        name: `${prefix}push_to_connect_seconds`,
        help: 'From the wake push leaving to the woken device connecting and authenticating.',
        buckets: [0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34],
        registers: [registry],
      });
      this.#outcomes = new Counter({
        name: `${prefix}wake_outcomes_total`,
        help: 'Woken agents by what became of the call: answered (by a woken device), answered_elsewhere, caller_cancelled, ring_timeout, declined.',
        labelNames: ['outcome'],
        registers: [registry],
      });
    }
  }

  /**
   * The devices of an agent that a push can wake (a token, a configured channel).
   * @throws when Redis is unavailable
   */
  async wakeableDevices(agentId: string): Promise<Device[]> {
    return (await this.#o.store.devices(agentId)).filter((d) => d.channel !== 'none' && d.token && this.#o.bridge.provider(d.channel) !== undefined);
  }

  /**
   * Sends one wake push to each of the given devices of an agent and records them. Resolves with
   * the number of pushes a provider accepted.
   */
  async wake(call: WakeCall, agentId: string, devices: Device[]): Promise<number> {
    let perCall = this.#woken.get(call.id);
    if (!perCall) {
      perCall = new Map();
      this.#woken.set(call.id, perCall);
    }
    if (perCall.has(agentId)) {
      return 0; // one wake per agent and call: no duplicate pushes
    }
    perCall.set(agentId, devices);
    // The record and the pushes go out together: the wake path waits for no Redis round trip.
    const recorded = this.#o.store.putWake(agentId, call.id, { node: this.#o.store.nodeId, sentAt: Date.now(), devices: Object.fromEntries(devices.map((d) => [d.deviceId, 'sent' as const])) });
    const ttlSeconds = Math.max(1, Math.ceil(call.ringLeftMs / 1000));
    const results = await Promise.all(
      devices.map(async (d) => {
        const r = await this.#push(d, { kind: 'call', callId: call.id, callerDisplay: call.callerDisplay, ttlSeconds, collapseId: call.id }, agentId);
        if (r.status !== 'delivered') {
          await recorded;
          await this.#o.store.putWake(agentId, call.id, { devices: { [d.deviceId]: 'failed' } });
        }

        return r;
      }),
    );
    await recorded;
    const delivered = results.filter((r) => r.status === 'delivered').length;
    this.#log.info({ callId: call.id, agent: agentId, devices: devices.length, delivered }, 'wake pushes sent');

    return delivered;
  }

  /** The agents this node woke for the call (until it settles). */
  wokenAgents(callId: string): string[] {
    return [...(this.#woken.get(callId)?.keys() ?? [])];
  }

  /** Whether this node woke anyone for the call. */
  woke(callId: string): boolean {
    return this.#woken.has(callId);
  }

  /**
   * The call stopped ringing for these agents: records the outcome and sends the woken devices
   * that did not connect a cancel (answered) or missed (nobody answered) notice. Idempotent.
   * @param outcomes agentId → outcome (the answering agent's is 'answered')
   */
  async settle(callId: string, outcomes: Map<string, WakeOutcome>, callerDisplay: string): Promise<void> {
    const perCall = this.#woken.get(callId);
    if (!perCall) {
      return;
    }
    this.#woken.delete(callId);
    await Promise.all(
      [...perCall].map(async ([agentId, devices]) => {
        const outcome = outcomes.get(agentId) ?? 'answered_elsewhere';
        this.#outcomes?.inc({ outcome });
        await this.#o.store.putWake(agentId, callId, { outcome });
        let connected = new Set<string>();
        try {
          connected = await this.#o.store.connectedDevices(agentId);
        } catch {
          // Redis away: notify every woken device
        }
        const kind: PushKind = outcome === 'answered' || outcome === 'answered_elsewhere' ? 'cancel' : 'missed';
        await Promise.all(devices.filter((d) => !connected.has(d.deviceId)).map((d) => this.#push(d, { kind, callId, callerDisplay, ttlSeconds: 3600, collapseId: callId }, agentId)));
      }),
    );
  }

  /**
   * A session of an agent became ready, maybe on a woken device: records the connection (and its
   * push-to-connect time) and returns the calls this device was woken for that no longer ring
   * for it, with why, so that the caller tells the device at once.
   */
  async sessionReady(agentId: string, deviceId: string | undefined): Promise<{ callId: string; outcome: WakeOutcome }[]> {
    let wakes: Map<string, WakeRecord>;
    try {
      wakes = await this.#o.store.wakes(agentId);
    } catch {
      return [];
    }
    const settled: { callId: string; outcome: WakeOutcome }[] = [];
    for (const [callId, w] of wakes) {
      if (deviceId && w.devices[deviceId] === 'sent') {
        this.#connect?.observe((Date.now() - w.sentAt) / 1000);
        await this.#o.store.putWake(agentId, callId, { devices: { [deviceId]: 'connected' } });
      }
      // told once, and only a device that was woken for the call (a browser without a device id
      // was not, and learns nothing from a call it never heard of)
      if (w.outcome && w.outcome !== 'answered' && deviceId && w.devices[deviceId] !== undefined && w.devices[deviceId] !== 'told') {
        settled.push({ callId, outcome: w.outcome });
        await this.#o.store.putWake(agentId, callId, { devices: { [deviceId]: 'told' } });
      }
    }

    return settled;
  }

  async #push(d: Device, message: Parameters<PushBridge['send']>[1], agentId: string): Promise<PushResult> {
    if (d.channel === 'none' || !d.token) {
      return { status: 'rejected', reason: 'the device has no push channel' };
    }
    const channel: PushChannel = d.channel;
    const b = this.#breakers.get(channel) ?? { failures: 0, agents: new Set<string>(), openUntil: 0 };
    this.#breakers.set(channel, b);
    if (b.openUntil > Date.now()) {
      this.#sent?.inc({ channel: d.channel, kind: message.kind, result: 'breaker_open' });

      return { status: 'rejected', reason: `circuit breaker open for ${d.channel}` };
    }
    const r = await this.#o.bridge.send({ channel, token: d.token, ...(d.alertToken ? { alertToken: d.alertToken } : {}), ...(d.topic ? { topic: d.topic } : {}) }, message);
    this.#sent?.inc({ channel: d.channel, kind: message.kind, result: r.status.replace('-', '_') });
    if (r.status === 'retry-later') {
      b.failures++;
      b.agents.add(agentId);
      if (b.failures >= this.#o.breakerFailures && b.agents.size >= Math.min(BREAKER_MIN_AGENTS, this.#o.breakerFailures)) {
        b.openUntil = Date.now() + this.#o.breakerOpenMs;
        b.failures = 0;
        b.agents.clear();
        this.#log.warn({ channel: d.channel, openMs: this.#o.breakerOpenMs }, 'push channel keeps failing: circuit breaker open');
      }
    } else {
      b.failures = 0;
      b.agents.clear();
    }

    return r;
  }
}
