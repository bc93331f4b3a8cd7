/**
 * What the engine core remembers: requests delivered to apps (server side), requests sent for
 * apps (client side), and dialogs (RFC 3261 §12) with their drachtio dialog ids.
 */
import { type SipMessage } from '../message.js';
import { type ClientTransaction, type ServerTransaction } from '../transaction/transaction-layer.js';
import { type Destination, type Flow } from '../transport/types.js';
import { type AppConnection } from '../control/server.js';

/** drachtio dialog id (wire protocol §3.3): Call-ID plus the From tag of the dialog-creating request. */
export function dialogIdOf(callId: string, fromTag: string): string {
  return `${callId};from-tag=${fromTag}`;
}

/** A reliable provisional response waiting for its PRACK (RFC 3262 §3). */
export interface ReliableProvisional {
  rseq: number;
  cseq: number;
  data: Buffer;
  timer?: NodeJS.Timeout;
  interval: number;
  deadline: number;
}

/** A request received from the network and delivered to an app (the app answers it). */
export interface IncomingRequest {
  /** drachtio transaction id. */
  id: string;
  req: SipMessage;
  flow: Flow;
  server: ServerTransaction;
  owner: AppConnection;
  method: string;
  /** Local To tag, fixed by the first response for INVITE/SUBSCRIBE. */
  toTag?: string;
  /** The dialog this request created or belongs to. */
  dialog?: Dialog;
  canceled: boolean;
  /** Last RSeq used for reliable provisionals on this INVITE. */
  rseq: number;
  /** Reliable provisional in flight, and the queue behind it. */
  reliable?: ReliableProvisional;
  reliableQueue: { res: SipMessage; resolve: (ok: boolean) => void }[];
  /** An UPDATE received while this INVITE is unanswered (wire protocol §6.8). */
  pendingUpdate?: { req: SipMessage; server: ServerTransaction; flow: Flow; guard?: NodeJS.Timeout };
  guard?: NodeJS.Timeout;
  /** True once a 1xx other than 100 was sent. */
  provisionalSent: boolean;
  /** The source address this unanswered initial INVITE counts against (per-source cap). */
  countedSource?: string;
}

/** A request sent by the engine for an app. */
export interface OutgoingRequest {
  id: string;
  req: SipMessage;
  client?: ClientTransaction;
  owner: AppConnection;
  method: string;
  dest: Destination;
  /** UAC dialog this INVITE/SUBSCRIBE created, or the dialog an in-dialog request was sent in. */
  dialog?: Dialog;
  /** Whether this request created the dialog (initial INVITE/SUBSCRIBE). */
  createsDialog: boolean;
  canceled: boolean;
  /** A CANCEL waiting for the first provisional (RFC 3261 §9.1). */
  cancelWaiting?: SipMessage;
  gotProvisional: boolean;
  finalStatus: number;
}

/** An early or confirmed dialog. */
export class Dialog {
  /** drachtio dialog id. */
  readonly id: string;
  readonly role: 'uas' | 'uac';
  readonly kind: 'invite' | 'subscribe';
  readonly callId: string;
  readonly localTag: string;
  remoteTag: string | undefined;
  /** Our From (UAC) or To (UAS) header value, with our tag. */
  localUri: string;
  /** The peer's header value, with its tag once known. */
  remoteUri: string;
  /** Our Contact header value (with <>). */
  localContact: string;
  /** Request-URI of in-dialog requests (the peer's Contact). */
  remoteTarget: string;
  /** Route set, in the order Route headers are written. */
  routeSet: string[];
  localSeq: number;
  remoteSeq: number | undefined;
  state: 'early' | 'confirmed' = 'early';
  owner: AppConnection | undefined;
  /** Flow of the dialog-creating transaction; in-dialog requests reuse its connection. */
  flow: Flow | undefined;
  /** Whether SIPS (TLS) is required for the dialog. */
  secure = false;
  /** drachtio transaction id of the (re-)INVITE that last created/refreshed the session. */
  inviteTxnId: string | undefined;
  /** UAS: the 2xx being retransmitted until its ACK (RFC 3261 §13.3.1.4). */
  pending2xx?: { cseq: number; data: Buffer; dest: Destination; timer?: NodeJS.Timeout; interval: number; deadline: NodeJS.Timeout; txnId: string };
  /** UAC: the ACK sent for the last 2xx, re-sent on 2xx retransmissions (RFC 3261 §13.2.2.4). */
  lastAck?: { cseq: number; data: Buffer; dest: Destination };
  /** UAC: outcome of the last INVITE sent in (or creating) this dialog, for the app's ACK. */
  lastInvite?: { txnId: string; cseq: number; status: number; canceled: boolean; acked: boolean };
  /** A re-INVITE the app sent that has no final response yet. */
  pendingReinvite?: OutgoingRequest;
  /** The remote target the dialog started with (UAC: the INVITE's Request-URI). */
  readonly initialRemoteTarget: string;
  /** The local CSeq the dialog started with (UAC: the dialog-creating INVITE's). */
  readonly initialSeq: number;
  /** UAC: ACKs sent to 2xx from other forks of our INVITE (RFC 3261 §13.2.2.4), by their To tag. */
  forks?: Map<string, { data: Buffer; dest: Destination }>;
  /** Whether a subscription dialog was terminated by a NOTIFY. */
  ended = false;

  constructor(init: {
    role: 'uas' | 'uac';
    kind: 'invite' | 'subscribe';
    callId: string;
    localTag: string;
    remoteTag?: string;
    localUri: string;
    remoteUri: string;
    localContact: string;
    remoteTarget: string;
    routeSet: string[];
    localSeq: number;
    remoteSeq?: number;
    owner: AppConnection | undefined;
    flow?: Flow;
  }) {
    this.role = init.role;
    this.kind = init.kind;
    this.callId = init.callId;
    this.localTag = init.localTag;
    this.remoteTag = init.remoteTag;
    this.localUri = init.localUri;
    this.remoteUri = init.remoteUri;
    this.localContact = init.localContact;
    this.remoteTarget = init.remoteTarget;
    this.initialRemoteTarget = init.remoteTarget;
    this.initialSeq = init.localSeq;
    this.routeSet = init.routeSet;
    this.localSeq = init.localSeq;
    this.remoteSeq = init.remoteSeq;
    this.owner = init.owner;
    this.flow = init.flow;
    // UAS: the peer's From tag created the dialog; UAC: ours did.
    this.id = dialogIdOf(init.callId, init.role === 'uas' ? (init.remoteTag ?? '') : init.localTag);
  }
}

/** Dialogs by drachtio id and by (Call-ID, local tag) for matching incoming requests. */
export class DialogTable {
  readonly #byId = new Map<string, Dialog>();
  readonly #byLocal = new Map<string, Dialog>();
  readonly #byCallId = new Map<string, Set<Dialog>>();

  get size(): number {
    return this.#byId.size;
  }

  /**
   * Adds a dialog unless its drachtio id or its (Call-ID, local tag) is already taken by another
   * one: a second request must never take over a live dialog.
   * @returns whether it was added
   */
  add(d: Dialog): boolean {
    const local = `${d.callId}|${d.localTag}`;
    const a = this.#byId.get(d.id);
    const b = this.#byLocal.get(local);
    if ((a && a !== d) || (b && b !== d)) {
      return false;
    }
    this.#byId.set(d.id, d);
    this.#byLocal.set(local, d);
    let set = this.#byCallId.get(d.callId);
    if (!set) {
      set = new Set();
      this.#byCallId.set(d.callId, set);
    }
    set.add(d);

    return true;
  }

  remove(d: Dialog): void {
    if (this.#byId.get(d.id) === d) {
      this.#byId.delete(d.id);
    }
    const k = `${d.callId}|${d.localTag}`;
    if (this.#byLocal.get(k) === d) {
      this.#byLocal.delete(k);
    }
    const set = this.#byCallId.get(d.callId);
    set?.delete(d);
    if (set?.size === 0) {
      this.#byCallId.delete(d.callId);
    }
    if (d.pending2xx) {
      clearTimeout(d.pending2xx.timer);
      clearTimeout(d.pending2xx.deadline);
      d.pending2xx = undefined;
    }
  }

  get(id: string): Dialog | undefined {
    return this.#byId.get(id);
  }

  /** The dialog an incoming in-dialog request belongs to: Call-ID + its To tag (our local tag). */
  byLocalTag(callId: string, localTag: string): Dialog | undefined {
    return this.#byLocal.get(`${callId}|${localTag}`);
  }

  /** Dialogs sharing a Call-ID. */
  byCallId(callId: string): Dialog[] {
    return [...(this.#byCallId.get(callId) ?? [])];
  }

  all(): Dialog[] {
    return [...this.#byId.values()];
  }
}
