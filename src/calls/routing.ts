/**
 * DID routing: which agent or group an inbound call to a number rings (config `routing`).
 */
import { type Config } from '../config/schema.js';
import { type SipBinding } from '../sip/registrar/bindings.js';
import { type Device } from '../state/store.js';

/** One agent to ring: here (a local session) and/or on other nodes (hand-off legs). */
export interface RingTarget {
  agentId: string;
  local: boolean;
  nodes: string[];
  /** Devices to wake by push (the agent has no session anywhere). */
  wake?: Device[];
  /** The agent's registered SIP devices to ring (device-ringer.ts). */
  devices?: SipBinding[];
}

/** Where a call to a number goes. */
export type RouteTarget = { kind: 'agent'; agentId: string } | { kind: 'group'; groupId: string; members: string[]; strategy: 'ring-all' | 'longest-idle' };

/** Normalises a dialled number for matching: no visual separators, "+" optional. */
export function normaliseNumber(n: string): string {
  return n.replace(/[\s().-]/g, '').replace(/^\+/, '');
}

/** Resolves called numbers to targets. */
export class Router {
  readonly #exact = new Map<string, RouteTarget>();
  readonly #fallback: RouteTarget | undefined;

  constructor(routing: Config['routing']) {
    const groups = new Map(routing.groups.map((g) => [g.id, g]));
    let fallback: RouteTarget | undefined;
    for (const d of routing.dids) {
      let target: RouteTarget;
      if ('agent' in d) {
        target = { kind: 'agent', agentId: d.agent };
      } else {
        const g = groups.get(d.group)!;
        target = { kind: 'group', groupId: g.id, members: g.members, strategy: g.strategy };
      }
      if (d.number === '*') {
        fallback ??= target;
      } else {
        this.#exact.set(normaliseNumber(d.number), target);
      }
    }
    this.#fallback = fallback;
  }

  /** The target for a called number, or undefined when no route matches. */
  resolve(calledNumber: string): RouteTarget | undefined {
    return this.#exact.get(normaliseNumber(calledNumber)) ?? this.#fallback;
  }
}
