/**
 * Ringing agents' registered SIP devices for an inbound call (issue 12, item 3), next to their
 * WebRTC sessions: one DeviceLeg (INVITE) per binding, each with its own DeviceMedia relay whose
 * offer carries the trunk leg's codec only. The first device to answer wins among the devices and
 * is handed to the call manager (which decides against WebRTC answers: first answer wins); the
 * other devices get a CANCEL with `Reason: SIP;cause=200;text="Call completed elsewhere"`. When
 * the call ends otherwise (caller gone, ring timeout, a WebRTC session answered) the ringing
 * devices are cancelled too (with that Reason when answered elsewhere).
 *
 * Decisions: a device is rung only for calls with an SDP offer (a late-offer call rings WebRTC
 * sessions only), in the trunk leg's codec (no transcoding); a device registered over TLS gets
 * SDES-SRTP (unless the trunk's media.srtp is off), the others plain RTP; an SRTP trunk call rings
 * only devices registered over TLS (never downgraded to plain RTP on the device leg). A device's 486/600/603 counts as that agent's decline once all its devices ended.
 */
import type Srf from 'drachtio-srf';
import { type Logger } from '../log/logger.js';
import { type WakeService } from '../push/wake.js';
import { type Device } from '../state/store.js';
import { type TrunkCodecName } from '../media/codecs.js';
import { type SipBinding } from '../sip/registrar/bindings.js';
import { type Call } from './call.js';
import { type CallMediaSettings } from './call-media.js';
import { DeviceLeg } from './device-leg.js';
import { DeviceMedia } from './device-media.js';

/** A device that answered: its dialog, its SDP answer and its media leg (not yet bridged). */
export interface DeviceAnswer {
  agentId: string;
  binding: SipBinding;
  dialog: Srf.Dialog;
  sdp: string;
  media: DeviceMedia;
}

/** What the call manager does with device outcomes. */
export interface DeviceRingHooks {
  /** The first device answer of the call; it must bridge or release (dialog.destroy(), media.close()) it. */
  answered(a: DeviceAnswer): void;
  /** Every device of the agent ended without an answer; `declined` when one refused (486, 600, 603). */
  gone(agentId: string, declined: boolean, busy: boolean): void;
}

/** The device legs of one call (Call.devices). */
export class CallDevices {
  readonly #legs: { agentId: string; leg: DeviceLeg; media: DeviceMedia; done: boolean; stepped?: boolean }[] = [];
  #claimed = false;
  #ended = false;
  /** The device that answered, once bridged: hung up (BYE) when the call ends. */
  #answered: { dialog: Srf.Dialog; media: DeviceMedia } | undefined;

  /** Registrations already rung in this call (binding id, Contact and flow). */
  readonly #rung = new Set<string>();

  /**
   * Whether this registration of a binding was rung in this call already: a refresh over the same
   * flow was; a device that registered again from a new connection or address (woken by push,
   * RFC 8599 §4.2) was not.
   */
  rang(b: SipBinding): boolean {
    return this.#rung.has(registrationKey(b));
  }

  /** How many device legs this call opened for an agent (rung, re-rung after a new registration). */
  legsOf(agentId: string): number {
    return this.#legs.filter((l) => l.agentId === agentId).length;
  }

  /** Whether the call rings (or rang) devices of this agent. */
  rings(agentId: string): boolean {
    return !this.#ended && !this.#claimed && this.#legs.some((l) => l.agentId === agentId && !l.stepped);
  }

  /** Whether a device leg of the call still rings. */
  get ringing(): boolean {
    return !this.#ended && this.#legs.some((l) => !l.done);
  }

  /** Whether a SIP device answered the call and holds its agent side now. */
  get answered(): boolean {
    return this.#answered !== undefined;
  }

  /** CANCELs the devices still ringing (saying so when the call was answered elsewhere). */
  cancel(answeredElsewhere: boolean): void {
    this.#claimed = true;
    for (const l of this.#legs) {
      l.leg.cancel(answeredElsewhere);
    }
  }

  /**
   * A longest-idle group moves to its next agent: the devices still ringing are CANCELled
   * (no Reason) without ending the call's device ringing, and their ends are not reported as the
   * agent gone (the step already moved on).
   */
  stepAway(): void {
    for (const l of this.#legs) {
      if (!l.done) {
        l.stepped = true;
        l.leg.cancel(false);
      }
    }
  }

  /** The call ended: ringing devices are cancelled, the answered one hung up (BYE), media closed. */
  end(): void {
    if (this.#ended) {
      return;
    }
    this.cancel(false);
    this.#ended = true;
    const a = this.#answered;
    this.#answered = undefined;
    if (a) {
      try {
        a.dialog.destroy();
      } catch {
        // already gone
      }
      a.media.close();
    }
  }

  /**
   * The answered device's call is bridged: `onHangup` runs when the device hangs up (BYE) first;
   * the call's end hangs it up otherwise.
   */
  keep(dialog: Srf.Dialog, media: DeviceMedia, onHangup: () => void): void {
    this.#answered = { dialog, media };
    media.serveReinvites(dialog);
    dialog.on('destroy', () => {
      if (this.#answered?.dialog === dialog) {
        this.#answered = undefined;
        media.close();
        onHangup();
      }
    });
  }

  add(agentId: string, leg: DeviceLeg, media: DeviceMedia, hooks: DeviceRingHooks): void {
    const entry: { agentId: string; leg: DeviceLeg; media: DeviceMedia; done: boolean; stepped?: boolean } = { agentId, leg, media, done: false };
    // the same binding registered again over a new flow (a woken device): the fork to its stale
    // flow is cancelled, the new one rings (RFC 8599 §4.2 practice, as Flexisip does)
    for (const stale of this.#legs) {
      if (!stale.done && stale.agentId === agentId && stale.leg.binding.id === leg.binding.id) {
        stale.leg.cancel(false);
      }
    }
    this.#legs.push(entry);
    this.#rung.add(registrationKey(leg.binding));
    if (this.#ended || this.#claimed) {
      leg.cancel(this.#claimed && !this.#ended);
    }
    void leg.done.then((out) => {
      entry.done = true;
      if (out.answered) {
        if (this.#claimed || this.#ended) {
          out.dialog.destroy();
          media.close();

          return;
        }
        this.#claimed = true;
        for (const other of this.#legs) {
          if (other !== entry) {
            other.leg.cancel(true);
          }
        }
        hooks.answered({ agentId, binding: leg.binding, dialog: out.dialog, sdp: out.sdp, media });

        return;
      }
      media.close();
      if (entry.stepped) {
        return;
      }
      const mine = this.#legs.filter((l) => l.agentId === agentId);
      if (!this.#claimed && !this.#ended && mine.every((l) => l.done)) {
        const refused = out.status === 486 || out.status === 600 || out.status === 603;
        hooks.gone(agentId, refused, out.status === 486 || out.status === 600);
      }
    });
  }
}

/** One registration of a binding: a device that re-registered over a new flow (woken by push) is another; a refresh is not. */
function registrationKey(b: SipBinding): string {
  return [b.id, b.contact, b.flow.transport, b.flow.address, b.flow.port, b.flowToken ?? ''].join('\n');
}

/**
 * The push devices of an agent's bindings that carry RFC 8599 push parameters (the registrar made
 * one per such binding, SipBinding.deviceId): a device is pushed AND its binding is INVITEd, as
 * Flexisip does, since a suspended iOS/Android app keeps its registration while its socket is
 * dead (RFC 8599 §4.2). None on a Redis error (the INVITEs still go).
 */
export async function sipDevicePushes(wake: Pick<WakeService, 'wakeableDevices'>, agentId: string, bindings: SipBinding[]): Promise<Device[]> {
  const ids = new Set(bindings.map((b) => b.deviceId).filter((d): d is string => d !== undefined));
  if (ids.size === 0) {
    return [];
  }
  try {
    return (await wake.wakeableDevices(agentId)).filter((d) => ids.has(d.deviceId));
  } catch {
    return [];
  }
}

/** Most device legs (INVITEs) one call opens for one agent, re-rings after new registrations included. */
export const MAX_LEGS_PER_AGENT = 16;

/** Options of DeviceRinger. */
export interface DeviceRingerOptions {
  srf: Srf;
  /** An agent's current bindings (the registrar's). @throws when Redis is unavailable */
  bindings: (agentId: string) => Promise<SipBinding[]>;
  media: CallMediaSettings;
  logger: Logger;
}

/** Rings agents' SIP devices. */
export class DeviceRinger {
  readonly #opts: DeviceRingerOptions;

  constructor(opts: DeviceRingerOptions) {
    this.#opts = opts;
  }

  /** An agent's bindings that can be rung now; none on a Redis error (logged). */
  async ringable(agentId: string): Promise<SipBinding[]> {
    try {
      return await this.#opts.bindings(agentId);
    } catch (err) {
      this.#opts.logger.warn({ err, agent: agentId }, 'cannot read the agent\'s SIP bindings; not ringing its devices');

      return [];
    }
  }

  /**
   * INVITEs each binding with an offer in the trunk leg's codec. Resolves once the INVITEs are on
   * their way (a binding whose media cannot be set up is skipped, logged).
   * @param codec the codec the trunk leg will use (from its offer)
   */
  async ring(call: Call, agentId: string, bindings: SipBinding[], codec: TrunkCodecName, hooks: DeviceRingHooks): Promise<void> {
    let devices = call.devices as CallDevices | undefined;
    if (!devices) {
      devices = new CallDevices();
      call.devices = devices;
    }
    const from = (call.inviteReq?.get('From') ?? '').replace(/;\s*tag=[^;>\s]*/i, '');
    for (const binding of bindings) {
      if (devices.legsOf(agentId) >= MAX_LEGS_PER_AGENT) {
        // a device re-registering from new flows again and again during one call rings it a bounded number of times
        this.#opts.logger.warn({ callId: call.id, agent: agentId }, 'too many device legs for one agent in one call; not ringing more');

        return;
      }
      // SDES-SRTP toward a device registered over TLS (keys travel in the SDP: only over TLS,
      // RFC 4568 §8.3), unless the call's trunk has SRTP off; an SRTP trunk call rings such devices only
      const srtp = binding.flow.transport === 'tls' && call.trunk.media.srtp !== 'off';
      if (call.srtp && !srtp) {
        continue;
      }
      let media: DeviceMedia;
      try {
        media = await DeviceMedia.create(this.#opts.media, codec, srtp);
      } catch (err) {
        this.#opts.logger.warn({ err, callId: call.id, agent: agentId }, 'cannot set up a SIP device\'s media; not ringing it');
        continue;
      }
      if (!call.live || call.state !== 'ringing') {
        media.close();

        return;
      }
      const leg = DeviceLeg.start({ srf: this.#opts.srf, binding, offerSdp: media.offerSdp, from: from || '<sip:anonymous@anonymous.invalid>', logger: this.#opts.logger.child({ callId: call.id, agent: agentId }) });
      devices.add(agentId, leg, media, hooks);
    }
  }
}
