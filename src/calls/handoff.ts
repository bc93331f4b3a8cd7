/**
 * Cross-node hand-off of inbound calls: the headers of the SIP INVITE a node sends to another node
 * to ring agents connected there, and their authentication.
 *
 * Node A holds the trunk's call (the dispatcher sent the INVITE there). For agents whose sessions
 * are on node B it sends B an INVITE (a B2BUA leg) carrying the trunk's SDP offer unchanged and:
 *
 *   X-RB-Call:   the call id (one call record across the nodes)
 *   X-RB-Agents: the agents B is to ring, comma-separated
 *   X-RB-Trunk:  the trunk id (B applies its codec policy)
 *   X-RB-Origin: A's node id (B ends the call if A dies)
 *   X-RB-Ring:   how long B may ring, ms
 *   X-RB-Auth:   v1 <unix ms> <hex HMAC-SHA256 over the fields above, the SHA-256 of the SDP body
 *                and the time, with cluster.secret>
 *
 * A signature is accepted once (replays within its 30 s validity get 403) and only with the body
 * it was made for, so a captured hand-off cannot ring agents again or aim their media elsewhere.
 *
 * B rings those agents and, when one answers, answers A with its own SDP (its RTP relay's address)
 * and `X-RB-Agent: <agentId>`; A answers the trunk with that SDP, so the trunk's RTP flows to B,
 * where the agent's media is anchored. A stays in the signaling path (it owns the trunk's dialog)
 * but carries no media for the call.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** What a hand-off INVITE says. */
export interface HandoffInfo {
  callId: string;
  agents: string[];
  trunkId: string;
  origin: string;
  ringMs: number;
}

/** Thrown for a hand-off INVITE that is not authentic or not well formed (answered 403). */
export class HandoffError extends Error {
  override readonly name = 'HandoffError';
}

const MAX_SKEW_MS = 30_000;
const ID = /^[A-Za-z0-9._@:+-]{1,128}$/;

/** Signs and checks hand-off headers with the cluster's shared secret. */
export class Handoff {
  readonly #secret: string;

  /** @param secret cluster.secret (at least 32 characters) */
  constructor(secret: string) {
    this.#secret = secret;
  }

  /** MACs seen by verify() → when they stop being valid (ms): each is accepted once. */
  readonly #seen = new Map<string, number>();

  #mac(info: HandoffInfo, body: string, ts: number): string {
    const bodyHash = createHash('sha256').update(body.replace(/\r\n/g, '\n').trim()).digest('hex');

    return createHmac('sha256', this.#secret).update([info.callId, info.agents.join(','), info.trunkId, info.origin, String(info.ringMs), bodyHash, String(ts)].join('\n')).digest('hex');
  }

  /**
   * The X-RB-* headers of a hand-off INVITE.
   * @param body the INVITE's body (the trunk's SDP offer; '' for a late offer)
   */
  headers(info: HandoffInfo, body: string, now = Date.now()): Record<string, string> {
    return {
      'X-RB-Call': info.callId,
      'X-RB-Agents': info.agents.join(','),
      'X-RB-Trunk': info.trunkId,
      'X-RB-Origin': info.origin,
      'X-RB-Ring': String(info.ringMs),
      'X-RB-Auth': `v1 ${now} ${this.#mac(info, body, now)}`,
    };
  }

  /**
   * Checks a hand-off INVITE's headers.
   * @param get reads a header of the request ('' or undefined when absent)
   * @param body the request's body
   * @throws {HandoffError} when a header is missing or malformed, the time is off by more than 30 s,
   *   the HMAC does not match (another secret, or a body other than the signed one), or the same
   *   signature was accepted before (a replay)
   */
  verify(get: (name: string) => string | undefined, body: string, now = Date.now()): HandoffInfo {
    const h = (n: string): string => (get(n) ?? '').trim();
    const auth = /^v1 (\d{1,15}) ([0-9a-f]{64})$/.exec(h('X-RB-Auth'));
    if (!auth) {
      throw new HandoffError('malformed X-RB-Auth');
    }
    const ts = Number(auth[1]);
    if (Math.abs(now - ts) > MAX_SKEW_MS) {
      throw new HandoffError('X-RB-Auth is too old or from the future (clocks of the nodes apart?)');
    }
    const agents = h('X-RB-Agents').split(',').filter(Boolean);
    const ringMs = Number(h('X-RB-Ring'));
    const info: HandoffInfo = { callId: h('X-RB-Call'), agents, trunkId: h('X-RB-Trunk'), origin: h('X-RB-Origin'), ringMs };
    if (!ID.test(info.callId) || !ID.test(info.origin) || !/^[A-Za-z0-9._-]{0,64}$/.test(info.trunkId) || agents.length === 0 || agents.length > 100 || !agents.every((a) => ID.test(a)) || !Number.isInteger(ringMs) || ringMs < 1 || ringMs > 3_600_000) {
      throw new HandoffError('malformed X-RB-* headers');
    }
    const want = Buffer.from(this.#mac(info, body, ts), 'hex');
    if (!timingSafeEqual(want, Buffer.from(auth[2]!, 'hex'))) {
      throw new HandoffError('X-RB-Auth does not match (another cluster secret, or an altered body?)');
    }
    for (const [mac, until] of this.#seen) {
      if (until < now) {
        this.#seen.delete(mac);
      }
    }
    if (this.#seen.has(auth[2]!)) {
      throw new HandoffError('X-RB-Auth was used before (a replayed hand-off)');
    }
    this.#seen.set(auth[2]!, ts + MAX_SKEW_MS);

    return info;
  }
}
