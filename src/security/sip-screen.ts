/**
 * The SIP engine's first screen of out-of-dialog requests, before any transaction exists: known
 * scanner user agents and requests from unknown sources are dropped (no response at all, so a
 * scanner learns nothing, not even that a SIP server listens) or answered 403, as configured.
 *
 * Plain data in, a verdict out: it runs inside the engine, which may be a worker thread, so it
 * cannot reach Redis or the call layer. Rate limits, lockouts and caps, which need the cluster's
 * shared counters, are checked later by the application (src/security/guard.ts).
 */
import ipaddr from 'ipaddr.js';

/** What the screen does with a request it refuses. */
export type ScreenAction = 'drop' | '403';

/** Options of the screen (config `security.scanners`, `security.unknownSources`, trunks, proxies). */
export interface SipScreenOptions {
  /** Case-insensitive substrings of User-Agent (or Server) headers of known scanners. */
  scannerUserAgents: string[];
  scannerAction: ScreenAction;
  /** What happens to a request from an unknown source; `allow` turns the check off. */
  unknownSourceAction: ScreenAction | 'allow';
  /** Sources that are known: trunks' allow-lists and trusted proxies (IPs or CIDR blocks). */
  knownSources: string[];
  /**
   * Whether a trunk admits by digest credentials: then any source may try to authenticate, and no
   * source is unknown (failures count towards the lockout instead).
   */
  digestTrunks: boolean;
  /**
   * Whether the registrar serves agents' SIP devices (`sipDevices.enabled`): then REGISTER, and
   * REGISTER alone, passes from any source (devices register from anywhere, with digest; failures
   * count towards the registrar's own lockout). Every other method keeps the screen.
   */
  registrar?: boolean;
  /**
   * The registrar's realm: with `registrar`, an INVITE whose From host is this realm (an agent's
   * SIP device calling out, src/calls/device-dial.ts) passes from any source too; the call layer
   * demands the agent's digest (407), counts failures toward the registrar's lockout and limits
   * the source's INVITE rate. Other INVITEs keep the screen.
   */
  registrarRealm?: string;
}

/** The screen's decision on one request: pass it on, or refuse it (and why). */
export type ScreenVerdict = { pass: true } | { pass: false; action: ScreenAction; reason: 'scanner' | 'unknown_source' };

/** Header the cluster's hand-off INVITEs carry (src/calls/handoff.ts); the call layer verifies its HMAC. */
const HANDOFF_HEADER = 'x-rb-auth';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** The scanner and unknown-source screen. */
export class SipScreen {
  readonly #agents: string[];
  readonly #opts: SipScreenOptions;
  readonly #ranges: Range[];

  /** @throws {Error} when a known source is not an IP address or CIDR block */
  constructor(opts: SipScreenOptions) {
    this.#opts = opts;
    this.#agents = opts.scannerUserAgents.map((a) => a.toLowerCase()).filter((a) => a !== '');
    this.#ranges = opts.knownSources.map((s) => {
      if (s.includes('/')) {
        return ipaddr.parseCIDR(s);
      }
      const a = ipaddr.parse(s);

      return [a, a.kind() === 'ipv4' ? 32 : 128];
    });
  }

  /** Whether a User-Agent value names a configured scanner (case-insensitive substring). */
  isScanner(userAgent: string | undefined): boolean {
    if (!userAgent) {
      return false;
    }
    const ua = userAgent.toLowerCase();

    return this.#agents.some((a) => ua.includes(a));
  }

  /** Whether a source address is a trunk's or a trusted proxy's. */
  isKnown(address: string): boolean {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.process(address.replace(/^\[|\]$/g, ''));
    } catch {
      return false;
    }

    return this.#ranges.some((r) => addr.kind() === r[0].kind() && addr.match(r));
  }

  /**
   * Screens an out-of-dialog request.
   * @param source the packet's source address
   * @param header a header of the request by lower-case name (undefined when absent)
   * @param method the request's method (upper-case); only REGISTER (and a device's INVITE, From
   *   host = the registrar's realm) is let through from unknown sources, and only when the registrar is on
   */
  screen(source: string, header: (name: string) => string | undefined, method = ''): ScreenVerdict {
    if (this.isScanner(header('user-agent')) || this.isScanner(header('server'))) {
      return { pass: false, action: this.#opts.scannerAction, reason: 'scanner' };
    }
    const action = this.#opts.unknownSourceAction;
    const registering = this.#opts.registrar === true && (method === 'REGISTER' || (method === 'INVITE' && this.#fromRealm(header('from'))));
    if (action !== 'allow' && !this.#opts.digestTrunks && !registering && header(HANDOFF_HEADER) === undefined && !this.isKnown(source)) {
      return { pass: false, action, reason: 'unknown_source' };
    }

    return { pass: true };
  }

  /** Whether a From value's host is the registrar's realm. */
  #fromRealm(from: string | undefined): boolean {
    const realm = this.#opts.registrarRealm?.toLowerCase();
    const host = /sips?:(?:[^@;>\s]*@)?([^;>:\s]+)/i.exec(from ?? '')?.[1]?.toLowerCase();

    return realm !== undefined && realm !== '' && host === realm;
  }
}
