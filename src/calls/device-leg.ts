/**
 * A call's leg to one registered SIP device of an agent (issue 12, item 3, signalling part): the
 * INVITE to the device's binding, its provisional and final responses, and the CANCEL when
 * another device or session answered first.
 *
 * Where the INVITE goes (RFC 5626 §5.3, RFC 3327): the Request-URI is the registered Contact;
 * - a TCP/TLS registration: over the registration's own connection, named to the engine by the
 *   binding's flow token (`X-RB-Binding-Flow`, src/sip/engine/core/registered-flows.ts), never
 *   because some Contact matches;
 * - a UDP registration: to the REGISTER's source address and port (the device's NAT binding),
 *   not to the (often private) address in its Contact;
 * - a binding registered through proxies (Path): to the first Path entry, with the Path as Route.
 *
 * Not yet here (README "SIP devices (registrar)", not done): the media of the leg (a
 * PlainTransport and RtpRelay in the call's router), the hooks in the call manager that ring the
 * agent's devices with its WebRTC sessions, and waking a sleeping device before its INVITE.
 */
import type Srf from 'drachtio-srf';
import { type Logger } from '../log/logger.js';
import { BINDING_FLOW_HEADER } from '../sip/engine/core/registered-flows.js';
import { type SipBinding } from '../sip/registrar/bindings.js';

/** RFC 3326 Reason of a CANCEL when the call was answered elsewhere (RFC 3261 §9.1 practice, Linphone shows it). */
export const ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"';

/** How a device leg ended. */
export type DeviceLegOutcome = { answered: true; dialog: Srf.Dialog; sdp: string } | { answered: false; status: number; cancelled: boolean };

/** Where and how a request to a binding is sent. */
export interface DeviceTarget {
  /** The Request-URI: the registered Contact. */
  uri: string;
  /** The next hop (srf's `proxy`), when it is not the Request-URI's host. */
  proxy?: string;
  headers: Record<string, string>;
}

/** The Request-URI, next hop and headers of a request to a binding (see the module comment). */
export function deviceTarget(b: SipBinding): DeviceTarget {
  if (b.path && b.path.length > 0) {
    const first = /^\s*<([^>]+)>/.exec(b.path[0]!)?.[1] ?? b.path[0]!.trim();

    return { uri: b.contact, proxy: first, headers: { Route: b.path.join(', ') } };
  }
  if ((b.flow.transport === 'tcp' || b.flow.transport === 'tls') && b.flowToken) {
    return { uri: b.contact, headers: { [BINDING_FLOW_HEADER]: b.flowToken } };
  }
  const host = b.flow.address.includes(':') ? `[${b.flow.address}]` : b.flow.address;

  return { uri: b.contact, proxy: `sip:${host}:${b.flow.port};transport=${b.flow.transport === 'tls' ? 'tls' : b.flow.transport === 'tcp' ? 'tcp' : 'udp'}`, headers: {} };
}

/** Options of DeviceLeg.start(). */
export interface DeviceLegOptions {
  srf: Srf;
  binding: SipBinding;
  /** The SDP offer for the device (its media leg's address). */
  offerSdp: string;
  /** From for the device: the caller's name-addr, without a tag. */
  from: string;
  /** Extra headers (e.g. Call-Info), none of From/To/Call-ID/CSeq/Contact. */
  headers?: Record<string, string>;
  logger: Logger;
}

/** One INVITE to one device binding. */
export class DeviceLeg {
  readonly binding: SipBinding;
  /** Resolves once the leg ends: answered (the device's dialog and SDP answer), failed or cancelled. Never rejects. */
  readonly done: Promise<DeviceLegOutcome>;
  #req: Srf.SrfRequest | undefined;
  #cancelled: string | undefined;
  #ended = false;
  readonly #log: Logger;
  readonly #onRinging: (() => void)[] = [];

  private constructor(binding: SipBinding, log: Logger, run: (leg: DeviceLeg) => Promise<DeviceLegOutcome>) {
    this.binding = binding;
    this.#log = log;
    this.done = run(this).then((o) => {
      this.#ended = true;

      return o;
    });
  }

  /** Sends the INVITE to the binding. */
  static start(opts: DeviceLegOptions): DeviceLeg {
    const target = deviceTarget(opts.binding);
    const log = opts.logger.child({ binding: opts.binding.deviceId ?? 'sip-binding', transport: opts.binding.flow.transport });

    return new DeviceLeg(opts.binding, log, async (leg) => {
      try {
        const dialog = (await opts.srf.createUAC(
          target.uri,
          { headers: { ...(opts.headers ?? {}), ...target.headers, From: opts.from }, localSdp: opts.offerSdp, ...(target.proxy ? { proxy: target.proxy } : {}) },
          {
            cbRequest: ((_err: unknown, sent: Srf.SrfRequest) => leg.#sent(sent)) as unknown as (req: Srf.SrfRequest) => void,
            cbProvisional: (res: Srf.SrfResponse) => {
              if (res.status === 180 || res.status === 183) {
                for (const fn of leg.#onRinging.splice(0)) {
                  fn();
                }
              }
            },
          },
        ));
        if (leg.#cancelled !== undefined) {
          // answered while our CANCEL crossed it (RFC 3261 §9.1): the device's call ends at once
          dialog.destroy();

          return { answered: false, status: 487, cancelled: true };
        }

        return { answered: true, dialog, sdp: dialog.remote?.sdp ?? '' };
      } catch (err) {
        const status = (err as { status?: number }).status ?? 500;
        log.debug({ status }, 'device leg ended without an answer');

        return { answered: false, status, cancelled: leg.#cancelled !== undefined };
      }
    });
  }

  /** Calls `fn` once the device rings (180/183). */
  onRinging(fn: () => void): void {
    this.#onRinging.push(fn);
  }

  /**
   * CANCELs the INVITE (RFC 3261 §9.1) unless it ended; with `answeredElsewhere` the CANCEL says so
   * (`Reason: SIP;cause=200;text="Call completed elsewhere"`, RFC 3326). Never throws.
   */
  cancel(answeredElsewhere: boolean): void {
    if (this.#ended || this.#cancelled !== undefined) {
      return;
    }
    this.#cancelled = answeredElsewhere ? ANSWERED_ELSEWHERE : '';
    if (this.#req) {
      this.#sendCancel(this.#req);
    }
  }

  #sent(req: Srf.SrfRequest): void {
    this.#req = req;
    if (this.#cancelled !== undefined) {
      this.#sendCancel(req);
    }
  }

  #sendCancel(req: Srf.SrfRequest): void {
    const opts = this.#cancelled ? { headers: { Reason: this.#cancelled } } : {};
    try {
      (req as unknown as { cancel(opts: object, cb: () => void): void }).cancel(opts, () => undefined);
    } catch (err) {
      this.#log.debug({ err }, 'cannot cancel a device leg');
    }
  }
}
