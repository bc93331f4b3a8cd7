/**
 * Outbound calls from agents' SIP devices to a trunk (issue 12, item 4): an INVITE from a device,
 * authenticated by digest with the agent's credentials (the registrar's, as for REGISTER), goes
 * through the same checks as a WebRTC agent's call.dial (per-agent call cap, dialling policy,
 * per-agent dial rate, trunk choice and trunk cap) and becomes a UAC leg to the trunk, bridged in
 * one mediasoup router:
 *
 *   device ⇄ device RtpRelay ⇄ PlainTransport ─ device producer ──→ trunk PlainTransport ⇄ trunk RtpRelay ⇄ trunk
 *                                           ←─ consumer ─────── trunk producer ←
 *
 * The device's INVITE is answered (200 with our SDP) only once the trunk answered: until then it
 * gets 180 on the trunk's 180/183 (early media is not relayed). A CANCEL from the device cancels
 * the trunk's INVITE; a trunk's failure is passed to the device (a 401/407 of the trunk, our own
 * credentials failing, becomes 503); a BYE from either side hangs up the other. The call record,
 * CDR and metrics are those of an outbound call (direction outbound, the agent, the trunk).
 *
 * How a device's INVITE is told from a trunk's (call-manager.ts, #inbound): after the lockout and
 * per-source rate checks, an INVITE whose source matches no trunk's `inbound.allow` and whose From
 * host is the registrar's realm is a device's; anything else is a trunk's (allow-list or trunk
 * digest). So a trunk's own addresses can never reach this path, and this path always demands
 * the agent's digest (407), whatever the source.
 *
 * Decisions: the device must offer SDP in its INVITE (a late offer gets 488); an RTP/SAVP offer
 * (SDES) is answered with a key of ours when the INVITE came over TLS and the trunk's media.srtp
 * is not off, else 488; the trunk is offered the one codec
 * the device and trunk share (no transcoding). Refusals: dialling policy → 403, rate → 503 with
 * Retry-After, call caps → 486 (agent) / 503 (trunk), no outbound trunk → 503.
 */
import type Srf from 'drachtio-srf';
import { type Logger } from '../log/logger.js';
import { newMasterKey, SRTP_SUITE, toKeyParams } from '../media/rtp/srtp.js';
import { type EndReason } from '../signaling/protocol.js';
import { SignalingError } from '../signaling/server.js';
import { formatUri, parseUri } from '../sip/engine/message.js';
import { buildOffer, negotiateFromAnswer, SdpError } from '../sip/sdp.js';
import { parseDigest, type TrunkConfig, trunkUacOptions } from '../sip/trunks.js';
import { Call } from './call.js';
import { CallMedia, type CallMediaSettings } from './call-media.js';
import { DeviceMedia } from './device-media.js';

/** The registrar's digest check of a device's request (SipRegistrar.authenticate). */
export type DeviceAuthenticator = (method: string, req: Srf.SrfRequest) => Promise<{ ok: true; agentId: string } | { ok: false; status: number; reason: string; headers: Record<string, string> }>;

/** What the call manager lends the dialer: its checks, its call table and its call life cycle. */
export interface DeviceDialHost {
  srf: Srf;
  media: CallMediaSettings;
  logger: Logger;
  realm: string;
  dialTimeoutMs: number;
  authenticate: DeviceAuthenticator;
  /** call.dial's checks. @throws {SignalingError} */
  admit(agentId: string, to: string): Promise<TrunkConfig>;
  /** Counts the call against its trunk's cap; false when the trunk is full. */
  admitTrunkCall(call: Call): Promise<boolean>;
  /** The call exists: in the call table, the agent's presence, the call store (dialing). */
  started(call: Call): void;
  /** The trunk rings (first 18x). */
  ringing(call: Call): void;
  /** The trunk answered and the device got its 200: active, quality, recording, the trunk dialog watched. */
  answered(call: Call, trunkDialog: Srf.Dialog): void;
  /** Watches the trunk relay (RTP timeout, DTMF). */
  watchRelay(call: Call): void;
  finish(call: Call, reason: EndReason, by: 'local' | 'remote' | 'system', sipStatus?: number): void;
  /** The end reason of a failed outbound INVITE's status (call-manager's endReasonForStatus). */
  endReason(status: number): EndReason;
}

/** SIP status to the device for a refused dial. */
function refusalStatus(err: SignalingError): { status: number; headers: Record<string, string> } {
  switch (err.code) {
    case 'DIAL_POLICY':
      return { status: 403, headers: {} };
    case 'RATE_LIMITED':
      return { status: 503, headers: { 'Retry-After': String(Number(/(\d+) s\b/.exec(err.message)?.[1] ?? '60')) } };
    case 'CALL_LIMIT':
    case 'INVALID_STATE':
      return { status: 486, headers: {} };
    default:
      return { status: 503, headers: { 'Retry-After': '30' } };
  }
}

/** Outbound calls from SIP devices (see the module comment). */
export class DeviceDialer {
  readonly #h: DeviceDialHost;
  /** Agents whose device's dial is between authentication and the call's existence. */
  readonly #admitting = new Set<string>();

  constructor(host: DeviceDialHost) {
    this.#h = host;
  }

  /** Whether an INVITE (from no trunk's address) is a device's: its From host is the registrar's realm. */
  claims(req: Srf.SrfRequest): boolean {
    const from = /sips?:(?:[^@;>\s]*@)?([^;>:\s]+)/i.exec(req.get('From') ?? '')?.[1];

    return from !== undefined && from.toLowerCase() === this.#h.realm.toLowerCase();
  }

  /** Handles a device's INVITE to the end of its call. Never throws (errors answer 500 and end the call). */
  async handle(req: Srf.SrfRequest, res: Srf.SrfResponse): Promise<void> {
    const log = this.#h.logger.child({ sipCallId: req.get('Call-ID') });
    const auth = await this.#h.authenticate('INVITE', req);
    if (!auth.ok) {
      log.info({ status: auth.status, source: req.source_address }, 'device INVITE refused (authentication)');
      res.send(auth.status, auth.reason, { headers: auth.headers });

      return;
    }
    const agentId = auth.agentId;
    // the digest must be for this Request-URI (RFC 7616 §3.4.6): a response captured for one
    // number must not dial another
    const digestUri = parseDigest(req.get('Proxy-Authorization') || req.get('Authorization') || '')?.uri;
    if (!digestUri || !sameUri(digestUri, req.uri)) {
      log.info({ agent: agentId }, 'device INVITE refused: digest uri is not the Request-URI');
      res.send(403, { headers: { Warning: '399 ringbridge "digest uri does not match the Request-URI"' } });

      return;
    }
    if (this.#admitting.has(agentId)) {
      // one dial of an agent's devices is admitted at a time: concurrent INVITEs cannot all pass the call cap
      res.send(486, { headers: { Warning: '399 ringbridge "another call of this agent is being set up"' } });

      return;
    }
    this.#admitting.add(agentId);
    try {
      await this.#place(req, res, agentId, log);
    } finally {
      this.#admitting.delete(agentId);
    }
  }

  /** From call.dial's checks to the end of the call (the agent's admission is held until the call exists). */
  async #place(req: Srf.SrfRequest, res: Srf.SrfResponse, agentId: string, log: Logger): Promise<void> {
    let to: string;
    try {
      to = decodeURIComponent(parseUri(req.uri)?.user ?? '');
    } catch {
      to = '';
    }
    if (!to) {
      res.send(484); // Address Incomplete: no number in the Request-URI

      return;
    }
    let trunk: TrunkConfig;
    try {
      trunk = await this.#h.admit(agentId, to);
    } catch (err) {
      if (err instanceof SignalingError) {
        const r = refusalStatus(err);
        log.info({ agent: agentId, code: err.code, status: r.status }, 'device dial refused');
        res.send(r.status, { headers: { ...r.headers, Warning: `399 ringbridge "${err.code}"` } });

        return;
      }
      throw err;
    }
    if (typeof req.body !== 'string' || !req.body.includes('m=')) {
      res.send(488, { headers: { Warning: '399 ringbridge "an INVITE from a device must carry an SDP offer"' } });

      return;
    }
    let dev: Awaited<ReturnType<typeof DeviceMedia.answer>>;
    try {
      // SDES only when the INVITE came over TLS (keys travel in the SDP) and the trunk allows SRTP
      dev = await DeviceMedia.answer(this.#h.media, req.body, trunk.codecs, req.protocol === 'tls' && trunk.media.srtp !== 'off');
    } catch (err) {
      if (err instanceof SdpError) {
        log.info({ agent: agentId, reason: err.reason }, 'device INVITE refused: unusable SDP');
        res.send(err.status, { headers: { Warning: err.warning('ringbridge') } });

        return;
      }
      throw err;
    }
    const call = new Call({ direction: 'outbound', trunk, from: { number: trunk.outbound.callerId || agentId }, to: { number: to } });
    call.agentId = agentId;
    call.sipCallId = req.get('Call-ID') ?? '';
    if (!(await this.#h.admitTrunkCall(call))) {
      dev.media.close();
      res.send(503, { headers: { 'Retry-After': '30', Warning: '399 ringbridge "trunk at its most concurrent calls"' } });

      return;
    }
    let deviceDialog: Srf.Dialog | undefined;
    let deviceStatus = 500;
    call.devices = {
      ringing: false,
      // the device holds the agent side (transfers through a WebRTC session are refused)
      answered: true,
      cancel: () => undefined,
      end: () => {
        if (!res.finalResponseSent) {
          try {
            res.send(deviceStatus);
          } catch {
            // the device's transaction is gone
          }
        }
        const d = deviceDialog;
        deviceDialog = undefined;
        try {
          d?.destroy();
        } catch {
          // already gone
        }
        dev.media.close();
      },
    };
    this.#h.started(call);
    this.#admitting.delete(agentId); // the call now counts toward the agent's cap
    const clog = log.child({ callId: call.id, agent: agentId, trunk: trunk.id });
    req.on('cancel', () => {
      clog.info('the device cancelled its call');
      call.inviteReq?.cancel(() => undefined);
      deviceStatus = 487;
      this.#h.finish(call, 'cancelled', 'local', 487);
    });
    try {
      const media = await CallMedia.create(this.#h.media, { latching: trunk.media.latching });
      call.media = media;
      media.onClose(() => {
        if (call.live) {
          call.dialog?.destroy({ headers: { Reason: 'SIP;cause=500;text="media failure"' } });
          call.inviteReq?.cancel(() => undefined);
          this.#h.finish(call, 'media_error', 'system');
        }
      });
      this.#h.watchRelay(call);
      const crypto = trunk.media.srtp === 'required' ? { tag: 1, suite: SRTP_SUITE, keyParams: toKeyParams(newMasterKey()) } : undefined;
      call.signalingSecure = secureUri(trunk.outbound.uri);
      call.localSdp = buildOffer({ codecs: [dev.plan.codec.name], localAddress: media.localRtp.address, localPort: media.localRtp.port, direction: 'sendrecv', ...(crypto ? { crypto } : {}) }).offerSdp;
    } catch (err) {
      clog.warn({ err }, 'cannot set up media for a device call');
      this.#h.finish(call, 'media_error', 'system', 500);

      return;
    }
    if (!call.live) {
      return;
    }
    call.timer(this.#h.dialTimeoutMs, () => {
      if (call.state === 'dialing' || call.state === 'early') {
        clog.info('dial timeout; cancelling');
        call.inviteReq?.cancel(() => undefined);
        deviceStatus = 408;
        this.#h.finish(call, 'timeout', 'system', 408);
      }
    });
    const offerSdp = call.localSdp;
    const base = parseUri(trunk.outbound.uri)!;
    let dialog: Srf.Dialog;
    try {
      dialog = await this.#h.srf.createUAC(
        formatUri({ ...base, user: to }),
        trunkUacOptions(trunk, call.from.number, offerSdp),
        {
          cbRequest: ((_err: unknown, sent: Srf.SrfRequest) => {
            call.inviteReq = sent;
            if (!call.live) {
              sent.cancel(() => undefined);
            }
          }) as unknown as (r: Srf.SrfRequest) => void,
          cbProvisional: (prov: Srf.SrfResponse) => {
            if (!call.live || prov.status === 100 || call.state !== 'dialing') {
              return;
            }
            call.transition('early');
            call.times.ringingAt = new Date();
            this.#h.ringing(call);
            if (!res.finalResponseSent) {
              res.send(180);
            }
          },
        },
      );
    } catch (err) {
      if (!call.live) {
        return;
      }
      const status = (err as { status?: number }).status ?? 503;
      clog.info({ status }, 'the trunk refused a device call');
      deviceStatus = status === 401 || status === 407 || status < 400 || status > 699 ? 503 : status;
      this.#h.finish(call, this.#h.endReason(status), 'remote', status);

      return;
    }
    if (!call.live) {
      dialog.destroy();

      return;
    }
    call.dialog = dialog;
    call.inviteReq = undefined;
    try {
      await call.media.applyPlan(negotiateFromAnswer(offerSdp, dialog.remote.sdp));
      await dev.media.connect(dev.plan, call.media);
      if (!call.live) {
        throw new Error('the call ended while it was connected');
      }
      deviceDialog = await this.#h.srf.createUAS(req, res, { localSdp: dev.answerSdp });
    } catch (err) {
      if (call.live) {
        clog.warn({ err }, 'a device call answered by the trunk could not be connected');
        dialog.destroy({ headers: { Reason: 'SIP;cause=500;text="device leg failed"' } });
        this.#h.finish(call, 'media_error', 'system', 500);
      }

      return;
    }
    if (!call.live) {
      deviceDialog.destroy();

      return;
    }
    const mine = deviceDialog;
    dev.media.serveReinvites(mine);
    mine.on('destroy', () => {
      if (deviceDialog === mine && call.live) {
        deviceDialog = undefined;
        call.dialog?.destroy();
        this.#h.finish(call, 'hangup_local', 'local');
      }
    });
    for (const t of call.timers) {
      clearTimeout(t);
    }
    call.timers.clear();
    this.#h.answered(call, dialog);
    clog.info({ codec: dev.plan.codec.name }, 'device call answered by the trunk');
  }
}

/** Whether two SIP URIs name the same user at the same host (scheme, user, host, port; parameters aside). */
function sameUri(a: string, b: string): boolean {
  if (a === b) {
    return true;
  }
  const x = parseUri(a);
  const y = parseUri(b);

  return !!x && !!y && x.scheme === y.scheme && x.user === y.user && x.host.toLowerCase() === y.host.toLowerCase() && x.port === y.port;
}

/** Whether a trunk's outbound URI is reached over TLS (sips:, or ;transport=tls). */
function secureUri(uri: string): boolean {
  return /^sips:/i.test(uri) || /;transport=tls(?:[;>?]|$)/i.test(uri);
}
