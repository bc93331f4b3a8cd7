/**
 * RingbridgeClient: an agent's connection to the gateway (signaling, calls and their WebRTC media).
 * See README.md next to this file for usage in browsers and in Node.
 */
import { Device } from 'mediasoup-client';
import type { types as msc } from 'mediasoup-client';
import type {
  AgentStatus,
  CallCodec,
  CallInfo,
  CancelReason,
  DeviceInfo,
  EffectivePresence,
  EndReason,
  EventData,
  RecordingChangeReason,
  MediaOffer,
  RequestData,
  RequestType,
  ResponseData,
} from '../signaling/protocol.js';
import { ClientCall, newCallRecord, type CallEnding, type CallRecord } from './call.js';
import { TypedEmitter } from './emitter.js';
import { RingbridgeError } from './errors.js';
import { CallMedia } from './media.js';
import { Signaling, type AuthResult, type TokenSource } from './signaling.js';
import type { AudioTrack, ConnectionState, HandlerName, ReconnectPolicy, WebRtcImplementation, WebSocketConstructorLike } from './types.js';

/** Options of `new RingbridgeClient()`. */
export interface RingbridgeClientOptions {
  /** The gateway's WebSocket endpoint, `ws://` or `wss://…/ws`. */
  url: string;
  /** The agent's JWT, or a function returning a fresh one; called on connect and on every resume. */
  token: TokenSource;
  /**
   * Id of the device this client runs on (1–128 of A-Z a-z 0-9 . _ : -), as registered with
   * `registerDevice()`: while this client is connected the gateway rings it here and sends that
   * device no wake-up push.
   */
  deviceId?: string;
  /** WebSocket constructor (default `globalThis.WebSocket`; in Node pass `WebSocket` from 'ws'). */
  WebSocket?: WebSocketConstructorLike;
  /**
   * WebRTC classes where the platform has none (Node: `@roamhq/wrtc`'s default export). They are
   * installed on `globalThis`, where mediasoup-client looks for them. Default: the platform's.
   */
  webrtc?: WebRtcImplementation;
  /** mediasoup-client handler (Node with @roamhq/wrtc: 'Chrome111'). Default: detected from the browser. */
  handlerName?: HandlerName;
  /**
   * Returns the audio track to send on a call; called once per call before `call.answer` or
   * `call.dial` is sent, and the SDK stops the track when the call ends. Default:
   * `navigator.mediaDevices.getUserMedia({ audio: true })`.
   */
  getAudioTrack?: () => Promise<AudioTrack>;
  /** How long a request waits for its response, in ms (default 10000); also the socket open timeout. */
  requestTimeoutMs?: number;
  /** Reconnect policy after a dropped socket, or `false` never to reconnect (default: see ReconnectPolicy). */
  reconnect?: false | ReconnectPolicy;
}

/** The session the gateway gave this client (the `auth` response). */
export type SessionInfo = AuthResult;

/** Presence as the gateway reports it. */
export interface Presence {
  status: AgentStatus;
  effective: EffectivePresence;
}

/** Events of RingbridgeClient: name → listener arguments. */
export type RingbridgeClientEvents = {
  /** A call rings this agent (also for calls already ringing when the session starts). */
  incoming: [{ call: ClientCall; ringTimeoutMs: number | undefined }];
  /** A ringing call was taken away; `ended` follows. */
  cancelled: [{ call: ClientCall; reason: CancelReason }];
  /**
   * A call this device was woken for by push (its id came in the push) stopped ringing before the
   * device connected: answered on another device, or missed. End the app's incoming-call UI
   * (CallKit, ConnectionService) for that id.
   */
  wakecancelled: [{ callId: string; reason: CancelReason }];
  /** An outbound call got 180/183. */
  progress: [{ call: ClientCall; status: number; earlyMedia: boolean }];
  /** The trunk side got its 200 OK. */
  answered: [{ call: ClientCall }];
  /** The call was put on hold, by this agent ('local') or the trunk ('remote'). */
  held: [{ call: ClientCall; by: 'local' | 'remote' }];
  /** The call was taken off hold. */
  resumed: [{ call: ClientCall; by: 'local' | 'remote' }];
  /** The trunk sent a DTMF digit. */
  dtmf: [{ call: ClientCall; digit: string; durationMs: number }];
  /** Recording of the call started or stopped (`call.recording`). */
  recording: [{ call: ClientCall; recording: boolean; recordingId: string | undefined; reason: RecordingChangeReason }];
  /** The trunk's audio is available as a track (play it). */
  track: [{ call: ClientCall; track: AudioTrack }];
  /**
   * An attended transfer's consultation (consult()): answered (this agent now hears the consulted
   * party), failed or ended (back with the caller), completed (`ended` with `transferred` follows).
   */
  consult: [{ call: ClientCall; consultCallId: string; state: EventData['call.consult']['state']; sipStatus: number | undefined }];
  /** The call is over. Fires exactly once per call, whatever ended it. */
  ended: [{ call: ClientCall; reason: EndReason; by: CallEnding['by']; sipStatus: number | undefined }];
  /** The agent's presence changed. */
  presence: [Presence];
  /** The signaling connection's state changed. */
  connectionstatechange: [ConnectionState];
  /** Something failed outside of a request the application awaits (media of a call, a bad frame, a listener). */
  error: [RingbridgeError];
};

/** What a cancel reason means as an end reason. */
const CANCEL_TO_END: Record<CancelReason, EndReason> = {
  answered_elsewhere: 'answered_elsewhere',
  caller_cancelled: 'cancelled',
  ring_timeout: 'no_answer',
  declined: 'declined',
  session_lost: 'session_lost',
  node_failure: 'node_failure',
};

/**
 * An agent's client: connects to the gateway, rings, answers and dials calls, and carries their
 * audio over mediasoup-client. Every request returns a Promise that rejects with a
 * `RingbridgeError` (its `code` is the protocol's ErrorCode, or TIMEOUT, CONNECTION_LOST, CLOSED,
 * LOCAL_MEDIA). Events are typed (`RingbridgeClientEvents`).
 *
 * @example
 * const client = new RingbridgeClient({ url: 'wss://gw.example/ws', token: () => fetchJwt() });
 * client.on('incoming', ({ call }) => void client.answer(call.id));
 * client.on('track', ({ track }) => { audioElement.srcObject = new MediaStream([track]); });
 * await client.connect();
 */
export class RingbridgeClient extends TypedEmitter<RingbridgeClientEvents> {
  readonly #signaling: Signaling;
  readonly #handlerName: HandlerName | undefined;
  readonly #getAudioTrack: () => Promise<AudioTrack>;
  readonly #calls = new Map<string, { rec: CallRecord; call: ClientCall }>();
  /** Loaded devices by router RTP capabilities (JSON). */
  readonly #devices = new Map<string, Promise<Device>>();
  #presence: Presence | undefined;
  #closed = false;

  /**
   * Validates the options; does not connect (call `connect()`).
   * @throws {TypeError} when an option is missing or wrong
   */
  constructor(options: RingbridgeClientOptions) {
    super((err, event) => {
      if (event === 'error') {
        queueMicrotask(() => {
          throw err;
        });
      } else {
        this.emit('error', new RingbridgeError('LISTENER_ERROR', `a '${String(event)}' listener threw: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
      }
    });
    const opts = validateOptions(options);
    if (opts.webrtc) {
      installWebRtc(opts.webrtc);
    }
    this.#handlerName = opts.handlerName;
    this.#getAudioTrack = opts.getAudioTrack ?? defaultGetAudioTrack;
    this.#signaling = new Signaling({
      url: opts.url,
      token: opts.token,
      deviceId: opts.deviceId,
      WebSocket: opts.WebSocket,
      requestTimeoutMs: opts.requestTimeoutMs,
      reconnect: opts.reconnect,
      onEvent: (type, data) => this.#onEvent(type, data),
      onStateChange: (state) => this.emit('connectionstatechange', state),
      onAuthenticated: (auth, reconnect) => this.#onAuthenticated(auth, reconnect),
      onSessionLost: (err) => this.#onSessionLost(err),
      onError: (err) => this.emit('error', err),
    });
  }

  /** The signaling connection's state. */
  get connectionState(): ConnectionState {
    return this.#signaling.state;
  }

  /** The current session (sessionId, agentId, heartbeat and resume settings), when connected. */
  get session(): SessionInfo | undefined {
    return this.#signaling.auth;
  }

  /** The agent's presence as last reported by the gateway. */
  get presence(): Presence | undefined {
    return this.#presence;
  }

  /** The calls this client knows that have not ended. */
  get calls(): ClientCall[] {
    return [...this.#calls.values()].map((c) => c.call);
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Connects and authenticates (`auth {token}`); ringing calls listed by the gateway are
   * announced with 'incoming' before it resolves.
   * @throws {RingbridgeError} AUTH_FAILED, TOKEN_EXPIRED, TIMEOUT, CONNECTION_LOST; CLOSED after close(); INVALID_STATE when already connected
   */
  async connect(): Promise<SessionInfo> {
    if (this.#closed) {
      throw new RingbridgeError('CLOSED', 'the client is closed');
    }

    return this.#signaling.connect();
  }

  /**
   * Closes the connection and every call's media. Calls are not hung up: the gateway keeps them
   * for its resume grace period, then ends them (`session_lost`); hang up first to end them now.
   * Each known call gets 'ended' (reason `session_lost`, by `local`). Idempotent.
   */
  close(): void {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    for (const { rec } of [...this.#calls.values()]) {
      this.#endCall(rec, { reason: 'session_lost', by: 'local' });
    }
    this.#signaling.close();
    this.#devices.clear();
  }

  /** Sets the agent's own presence (`presence.set`); resolves with the gateway's view. */
  async setPresence(status: AgentStatus): Promise<Presence> {
    const res = await this.#request('presence.set', { status });
    this.#presence = { status: res.status, effective: res.effective };

    return this.#presence;
  }

  /**
   * Registers (or updates) one of the agent's devices with its push token (`device.register`),
   * so that the gateway can wake it for a call; an agent may have several. The token never
   * comes back from the gateway.
   * @throws {RingbridgeError} BAD_REQUEST on an invalid field, UNAVAILABLE when the gateway cannot store it now
   */
  async registerDevice(device: RequestData<'device.register'>): Promise<DeviceInfo> {
    return (await this.#request('device.register', device)).device;
  }

  /** Removes one of the agent's devices (`device.unregister`); resolves false when it was unknown. */
  async unregisterDevice(deviceId: string): Promise<boolean> {
    return (await this.#request('device.unregister', { deviceId })).removed;
  }

  /** The agent's registered devices (`device.list`), without their tokens. */
  async listDevices(): Promise<DeviceInfo[]> {
    return (await this.#request('device.list', {})).devices;
  }

  /** The agent's calls as the gateway lists them (`calls.list`). */
  async listCalls(): Promise<CallInfo[]> {
    return (await this.#request('calls.list', {})).calls;
  }

  /** A call this client knows, by id (undefined once it has ended). */
  call(callId: string): ClientCall | undefined {
    return this.#calls.get(callId)?.call;
  }

  /**
   * Answers a ringing call and sets up its media: gets the audio track, `call.answer`, loads the
   * device, creates the transports, produces with the call's codec, consumes and resumes the
   * trunk's audio. Resolves once audio flows both ways (the 'track' event has fired), or with
   * the ended call when it ended meanwhile. When the media cannot be set up the call is hung up
   * (ended with `media_error`) and the promise rejects.
   * @throws {RingbridgeError} ALREADY_ANSWERED, NOT_FOUND, INVALID_STATE, LOCAL_MEDIA, MEDIA_ERROR, TIMEOUT, ...
   */
  async answer(callId: string): Promise<ClientCall> {
    const known = this.#calls.get(callId);
    const { rec, call } = known ?? this.#register(newCallRecord({ callId, direction: 'inbound' }));
    const forget = (): void => {
      // a call we only made up for this answer() is not kept when the answer fails
      if (!known && this.#calls.get(callId)?.rec === rec) {
        this.#calls.delete(callId);
      }
    };
    let track: AudioTrack;
    let offer: MediaOffer;
    try {
      track = await this.#audioTrack(callId);
    } catch (err) {
      forget();
      throw err;
    }
    try {
      offer = (await this.#request('call.answer', { callId }, callId)).media;
    } catch (err) {
      track.stop();
      forget();
      throw err;
    }
    if (!offer.codec && !rec.codec) {
      // a late offer (the trunk's INVITE had no SDP): the codec comes with `call.media` once the
      // trunk's ACK answers the gateway's offer; produce and consume then, as an outbound call does
      rec.pendingTrack = track;
      try {
        await this.#createMedia(rec, offer);
      } catch (err) {
        if (rec.ending) {
          return call;
        }
        this.#request('call.hangup', { callId }, callId).catch(() => undefined);
        this.#endCall(rec, { reason: 'media_error', by: 'local' });
        throw withCall(err, callId, 'LOCAL_MEDIA');
      }
      this.#startOutboundMedia(rec);

      return call;
    }
    try {
      rec.codec = offer.codec ?? rec.codec;
      const media = await this.#createMedia(rec, offer);
      await media.produce(track, rec.codec!, rec.muted || rec.heldLocally);
      rec.mediaStarted = true;
      const remote = await media.consume();
      this.emit('track', { call, track: remote });
    } catch (err) {
      track.stop();
      if (rec.ending) {
        return call; // it ended meanwhile ('ended' said so); nothing failed here
      }
      this.#request('call.hangup', { callId }, callId).catch(() => undefined);
      this.#endCall(rec, { reason: 'media_error', by: 'local' });
      throw withCall(err, callId, 'LOCAL_MEDIA');
    }

    return call;
  }

  /**
   * Declines a ringing call (`call.decline`); the call ends here with reason `declined`.
   * @throws {RingbridgeError} NOT_FOUND, INVALID_STATE, ...
   */
  async decline(callId: string, reason?: 'busy' | 'decline'): Promise<void> {
    await this.#request('call.decline', reason ? { callId, reason } : { callId }, callId);
    const entry = this.#calls.get(callId);
    if (entry) {
      this.#endCall(entry.rec, { reason: 'declined', by: 'local' });
    }
  }

  /**
   * Dials a number through a trunk (`call.dial`). Resolves once the call exists and its transports
   * are created (or with the ended call when it ended meanwhile); the audio starts when the
   * gateway sends `call.media` (watch 'progress', 'track', 'answered' and 'ended'). Media
   * failures after that are reported with 'error' and end the call (`media_error`).
   * @throws {RingbridgeError} FORBIDDEN, NO_ROUTE, BAD_REQUEST, LOCAL_MEDIA, TIMEOUT, ...
   */
  async dial(to: string, options: { trunkId?: string } = {}): Promise<ClientCall> {
    const track = await this.#audioTrack(undefined);
    let entry: { rec: CallRecord; call: ClientCall } | undefined;
    let offer: MediaOffer;
    try {
      const data: RequestData<'call.dial'> = options.trunkId ? { to, trunkId: options.trunkId } : { to };
      // register the call synchronously with the response, before any event about it is handled
      offer = (
        await this.#request('call.dial', data, undefined, (res) => {
          entry = this.#register(newCallRecord({ callId: res.callId, direction: 'outbound', state: 'dialing', to: { number: to }, trunkId: options.trunkId }));
          entry.rec.pendingTrack = track;
          if (res.media.codec) {
            entry.rec.codec = res.media.codec;
          }
        })
      ).media;
    } catch (err) {
      track.stop();
      throw err;
    }
    const { rec, call } = entry!;
    try {
      await this.#createMedia(rec, offer);
    } catch (err) {
      if (rec.ending) {
        return call; // it ended meanwhile (busy, ...): 'ended' said so
      }
      this.#request('call.hangup', { callId: rec.callId }, rec.callId).catch(() => undefined);
      this.#endCall(rec, { reason: 'media_error', by: 'local' });
      throw withCall(err, rec.callId, 'LOCAL_MEDIA');
    }
    this.#startOutboundMedia(rec);

    return call;
  }

  /**
   * Hangs up (`call.hangup`: BYE, or CANCEL before the answer); the call ends here with
   * `hangup_local` unless the gateway's `call.ended` came first.
   */
  async hangup(callId: string): Promise<void> {
    await this.#request('call.hangup', { callId }, callId);
    const entry = this.#calls.get(callId);
    if (entry) {
      this.#endCall(entry.rec, { reason: 'hangup_local', by: 'local' });
    }
  }

  /** Puts the call on hold (`call.hold`) and pauses the local producer. */
  async hold(callId: string): Promise<void> {
    await this.#request('call.hold', { callId }, callId);
    const rec = this.#calls.get(callId)?.rec;
    if (rec) {
      rec.heldLocally = true;
      this.#applySending(rec);
    }
  }

  /**
   * Blind transfer (`call.transfer`): the caller is offered to another agent or a group; this
   * agent's media leaves at once and the call ends here with reason `transferred` (the gateway's
   * `call.ended` event).
   * @throws {RingbridgeError} NOT_FOUND, INVALID_STATE, UNAVAILABLE (nobody can take it now; the
   *   call stays), NO_ROUTE, ...
   */
  async transfer(callId: string, to: { agent: string } | { group: string } | { number: string }): Promise<void> {
    await this.#request('call.transfer', { callId, to }, callId);
  }

  /**
   * Attended transfer, step 1 (`call.consult`): the caller hears hold audio while this agent calls
   * a number; the 'consult' event reports its progress. Returns the consultation's id.
   * @throws {RingbridgeError} INVALID_STATE, DIAL_POLICY, RATE_LIMITED, NO_ROUTE, CALL_LIMIT, ...
   */
  async consult(callId: string, to: { number: string }): Promise<string> {
    return (await this.#request('call.consult', { callId, to }, callId)).consultCallId;
  }

  /** Attended transfer, step 2: the caller and the consulted party talk; this call ends here (`transferred`). */
  async completeTransfer(callId: string, consultCallId: string): Promise<void> {
    await this.#request('call.transfer', { callId, consultCallId }, callId);
  }

  /** Cancels a consultation (hangs it up): this agent and the caller hear each other again. */
  async cancelConsult(consultCallId: string): Promise<void> {
    await this.#request('call.hangup', { callId: consultCallId });
  }

  /** Takes the call off hold (`call.resume`) and resumes the local producer unless muted. */
  async resume(callId: string): Promise<void> {
    await this.#request('call.resume', { callId }, callId);
    const rec = this.#calls.get(callId)?.rec;
    if (rec) {
      rec.heldLocally = false;
      this.#applySending(rec);
    }
  }

  /**
   * Mutes or unmutes: pauses/resumes the local producer at once, then tells the gateway
   * (`call.mute`); if the gateway refuses, the local state is restored and the promise rejects.
   */
  async mute(callId: string, muted: boolean): Promise<void> {
    const rec = this.#calls.get(callId)?.rec;
    const before = rec?.muted;
    if (rec) {
      rec.muted = muted;
      this.#applySending(rec);
    }
    try {
      await this.#request('call.mute', { callId, muted }, callId);
    } catch (err) {
      if (rec && before !== undefined) {
        rec.muted = before;
        this.#applySending(rec);
      }
      throw err;
    }
  }

  /** Sends DTMF digits (0-9, *, #, A-D) to the trunk as RFC 4733 events (`call.dtmf`). */
  async sendDtmf(callId: string, digits: string, options: { durationMs?: number } = {}): Promise<void> {
    await this.#request('call.dtmf', options.durationMs === undefined ? { callId, digits } : { callId, digits, durationMs: options.durationMs }, callId);
  }

  /**
   * Starts (`on: true`) or stops recording the call (`call.record`; the gateway's
   * recording.onDemand must allow it). Resolves with whether it is recording now.
   * @throws {RingbridgeError} FORBIDDEN, INVALID_STATE, MEDIA_ERROR (see PROTOCOL.md)
   */
  async record(callId: string, on: boolean): Promise<{ recording: boolean; recordingId?: string }> {
    return this.#request('call.record', { callId, on }, callId);
  }

  // ----------------------------------------------------------------------------------------------
  // Session
  // ----------------------------------------------------------------------------------------------

  #onAuthenticated(auth: AuthResult, reconnect: boolean): void {
    this.#presence = auth.presence;
    if (reconnect && auth.resumed) {
      // Calls go on. Events queued while away follow this response; a calls.list sent now is
      // answered after them, so any call it no longer lists ended without us hearing of it.
      const known = [...this.#calls.keys()];
      this.#signaling.request('calls.list', {}).then(
        ({ calls }) => {
          const listed = new Set(calls.map((c) => c.callId));
          for (const id of known) {
            const entry = this.#calls.get(id);
            if (entry && !listed.has(id)) {
              this.#endCall(entry.rec, { reason: 'session_lost', by: 'system' });
            }
          }
        },
        () => undefined,
      );

      return;
    }
    if (reconnect) {
      // a new session: the old one's calls are gone
      for (const { rec } of [...this.#calls.values()]) {
        this.#endCall(rec, { reason: 'session_lost', by: 'system' });
      }
    }
    for (const info of auth.calls) {
      if (info.state === 'ended' || this.#calls.has(info.callId)) {
        continue;
      }
      const { call } = this.#register(newCallRecord(info));
      if (info.direction === 'inbound' && info.state === 'ringing') {
        this.emit('incoming', { call, ringTimeoutMs: undefined });
      }
    }
  }

  #onSessionLost(err: RingbridgeError): void {
    for (const { rec } of [...this.#calls.values()]) {
      this.#endCall(rec, { reason: 'session_lost', by: 'system' });
    }
    this.emit('error', err);
  }

  // ----------------------------------------------------------------------------------------------
  // Events
  // ----------------------------------------------------------------------------------------------

  #onEvent(type: string, data: unknown): void {
    switch (type) {
      case 'call.incoming': {
        const d = data as EventData['call.incoming'];
        if (this.#calls.has(d.callId)) {
          return;
        }
        const { rec, call } = this.#register(newCallRecord({ ...d, direction: 'inbound', state: 'ringing' }));
        rec.ringTimeoutMs = d.ringTimeoutMs;
        this.emit('incoming', { call, ringTimeoutMs: d.ringTimeoutMs });

        return;
      }
      case 'call.cancelled': {
        const d = data as EventData['call.cancelled'];
        const entry = this.#live(d.callId);
        if (entry) {
          this.emit('cancelled', { call: entry.call, reason: d.reason });
          this.#endCall(entry.rec, { reason: CANCEL_TO_END[d.reason] ?? 'cancelled', by: d.reason === 'caller_cancelled' ? 'remote' : 'system' });
        } else if (!this.#calls.has(d.callId)) {
          this.emit('wakecancelled', { callId: d.callId, reason: d.reason });
        }

        return;
      }
      case 'call.progress': {
        const d = data as EventData['call.progress'];
        const entry = this.#live(d.callId);
        if (entry) {
          if (entry.rec.state === 'dialing') {
            entry.rec.state = 'early';
          }
          this.emit('progress', { call: entry.call, status: d.status, earlyMedia: d.earlyMedia });
        }

        return;
      }
      case 'call.media': {
        const d = data as EventData['call.media'];
        const entry = this.#live(d.callId);
        if (entry) {
          entry.rec.codec = d.codec;
          this.#startOutboundMedia(entry.rec);
        }

        return;
      }
      case 'call.answered': {
        const d = data as EventData['call.answered'];
        const entry = this.#live(d.callId);
        if (entry) {
          entry.rec.state = 'active';
          entry.rec.answeredAt ??= new Date().toISOString();
          if (entry.rec.consumeOnAnswer) {
            entry.rec.consumeOnAnswer = false;
            void this.#consume(entry.rec, false);
          }
          this.emit('answered', { call: entry.call });
        }

        return;
      }
      case 'call.held':
      case 'call.resumed': {
        const d = data as EventData['call.held'];
        const entry = this.#live(d.callId);
        if (entry) {
          entry.rec.state = type === 'call.held' ? 'held' : 'active';
          this.emit(type === 'call.held' ? 'held' : 'resumed', { call: entry.call, by: d.by });
        }

        return;
      }
      case 'call.reconsume': {
        const d = data as EventData['call.reconsume'];
        const entry = this.#live(d.callId);
        const media = entry?.rec.media;
        if (entry && media && !media.closed) {
          media.reconsume().then(
            (track) => {
              if (!entry.rec.ending) {
                this.emit('track', { call: entry.call, track });
              }
            },
            (err: unknown) => this.#mediaFailed(entry.rec, err),
          );
        }

        return;
      }
      case 'call.consult': {
        const d = data as EventData['call.consult'];
        const entry = this.#live(d.callId);
        if (entry) {
          this.emit('consult', { call: entry.call, consultCallId: d.consultCallId, state: d.state, sipStatus: d.sipStatus });
        }

        return;
      }
      case 'call.dtmf': {
        const d = data as EventData['call.dtmf'];
        const entry = this.#live(d.callId);
        if (entry) {
          this.emit('dtmf', { call: entry.call, digit: d.digit, durationMs: d.durationMs });
        }

        return;
      }
      case 'call.recording': {
        const d = data as EventData['call.recording'];
        const entry = this.#live(d.callId);
        if (entry) {
          this.emit('recording', { call: entry.call, recording: d.recording, recordingId: d.recordingId, reason: d.reason });
        }

        return;
      }
      case 'call.ended': {
        const d = data as EventData['call.ended'];
        const entry = this.#live(d.callId);
        if (entry) {
          this.#endCall(entry.rec, { reason: d.reason, by: d.by, sipStatus: d.sipStatus });
        }

        return;
      }
      case 'presence.changed': {
        const d = data as EventData['presence.changed'];
        this.#presence = { status: d.status, effective: d.effective };
        this.emit('presence', this.#presence);

        return;
      }
      default:
        // an event of a newer protocol revision: ignore it
        return;
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Calls and media
  // ----------------------------------------------------------------------------------------------

  #register(rec: CallRecord): { rec: CallRecord; call: ClientCall } {
    const entry = { rec, call: new ClientCall(rec) };
    this.#calls.set(rec.callId, entry);

    return entry;
  }

  #live(callId: string): { rec: CallRecord; call: ClientCall } | undefined {
    const entry = this.#calls.get(callId);

    return entry && !entry.rec.ending ? entry : undefined;
  }

  /** Ends a call here: closes its media, forgets it, emits 'ended'. Once per call. */
  #endCall(rec: CallRecord, how: Omit<CallEnding, 'endedAt'>): void {
    if (rec.ending) {
      return;
    }
    rec.ending = { ...how, endedAt: new Date() };
    rec.state = 'ended';
    rec.media?.close();
    rec.pendingTrack?.stop();
    rec.pendingTrack = undefined;
    const entry = this.#calls.get(rec.callId);
    if (entry?.rec === rec) {
      this.#calls.delete(rec.callId);
    }
    this.emit('ended', { call: entry?.call ?? new ClientCall(rec), reason: how.reason, by: how.by, sipStatus: how.sipStatus });
  }

  async #createMedia(rec: CallRecord, offer: MediaOffer): Promise<CallMedia> {
    const device = await this.#device(offer.routerRtpCapabilities);
    if (rec.ending) {
      throw new RingbridgeError('INVALID_STATE', `call ${rec.callId} ended during its media set-up`, { callId: rec.callId });
    }
    const media = CallMedia.create({
      callId: rec.callId,
      device,
      offer,
      request: (type, data) => this.#request(type, data, rec.callId),
      onTransportState: (direction, state) => {
        if (state === 'failed' && !rec.ending) {
          this.emit('error', new RingbridgeError('LOCAL_MEDIA', `the ${direction} transport of call ${rec.callId} failed (ICE/DTLS)`, { callId: rec.callId }));
        }
      },
    });
    rec.media = media;

    return media;
  }

  /** Outbound or late-offer inbound: once both the transports and the codec (`call.media`) are there, produce and consume. */
  #startOutboundMedia(rec: CallRecord): void {
    const { media, codec, pendingTrack } = rec;
    if (rec.mediaStarted || rec.ending || !media || !codec || !pendingTrack) {
      return;
    }
    rec.mediaStarted = true;
    rec.pendingTrack = undefined;
    void this.#produceOutbound(rec, media, pendingTrack, codec);
  }

  async #produceOutbound(rec: CallRecord, media: CallMedia, track: AudioTrack, codec: CallCodec): Promise<void> {
    try {
      await media.produce(track, codec, rec.muted || rec.heldLocally);
    } catch (err) {
      track.stop();
      this.#mediaFailed(rec, err);

      return;
    }
    await this.#consume(rec, rec.state !== 'active');
  }

  /** Consumes the trunk's audio; with `retryOnAnswer`, a refusal before the answer waits for call.answered. */
  async #consume(rec: CallRecord, retryOnAnswer: boolean): Promise<void> {
    const media = rec.media;
    if (!media || media.closed || media.consuming || rec.ending) {
      return;
    }
    try {
      const track = await media.consume();
      const entry = this.#calls.get(rec.callId);
      if (entry?.rec === rec && !rec.ending) {
        this.emit('track', { call: entry.call, track });
      }
    } catch (err) {
      const code = (err as RingbridgeError).code;
      if (retryOnAnswer && (code === 'INVALID_STATE' || code === 'NOT_FOUND') && !rec.ending && rec.state !== 'active') {
        rec.consumeOnAnswer = true;

        return;
      }
      this.#mediaFailed(rec, err);
    }
  }

  /** A call's media failed after its request resolved: report, hang up, end. */
  #mediaFailed(rec: CallRecord, err: unknown): void {
    if (rec.ending) {
      return;
    }
    this.emit('error', withCall(err, rec.callId, 'LOCAL_MEDIA'));
    this.#request('call.hangup', { callId: rec.callId }, rec.callId).catch(() => undefined);
    this.#endCall(rec, { reason: 'media_error', by: 'local' });
  }

  #applySending(rec: CallRecord): void {
    rec.media?.setSending(!rec.muted && !rec.heldLocally);
  }

  /** A loaded Device for these router capabilities (one per distinct capability set). */
  #device(routerRtpCapabilities: unknown): Promise<Device> {
    const key = JSON.stringify(routerRtpCapabilities);
    let device = this.#devices.get(key);
    if (!device) {
      device = (async () => {
        const d = this.#handlerName ? new Device({ handlerName: this.#handlerName }) : await Device.factory();
        await d.load({ routerRtpCapabilities: routerRtpCapabilities as msc.RtpCapabilities });
        if (!d.canProduce('audio')) {
          throw new Error('this device cannot send audio with the router codecs');
        }

        return d;
      })().catch((err: unknown) => {
        this.#devices.delete(key);
        throw new RingbridgeError('LOCAL_MEDIA', `cannot load the mediasoup device: ${(err as Error).message}`, { cause: err });
      });
      this.#devices.set(key, device);
    }

    return device;
  }

  async #audioTrack(callId: string | undefined): Promise<AudioTrack> {
    try {
      return await this.#getAudioTrack();
    } catch (err) {
      throw new RingbridgeError('LOCAL_MEDIA', `no audio track: ${(err as Error)?.message ?? String(err)}`, { callId, cause: err });
    }
  }

  /** A request, its errors tagged with the call id. */
  async #request<T extends RequestType>(type: T, data: RequestData<T>, callId?: string, onSuccess?: (res: ResponseData[T]) => void): Promise<ResponseData[T]> {
    if (this.#closed) {
      throw new RingbridgeError('CLOSED', `cannot send ${type}: the client is closed`, { callId, request: type });
    }
    try {
      return await this.#signaling.request(type, data, { onSuccess });
    } catch (err) {
      throw callId ? withCall(err, callId, 'INTERNAL') : err;
    }
  }
}

/** err as a RingbridgeError that names the call. */
function withCall(err: unknown, callId: string, fallback: RingbridgeError['code']): RingbridgeError {
  if (err instanceof RingbridgeError) {
    return err.callId === callId ? err : new RingbridgeError(err.code, err.message, { callId, request: err.request, cause: err.cause });
  }

  return new RingbridgeError(fallback, (err as Error)?.message ?? String(err), { callId, cause: err });
}

interface ValidOptions {
  url: string;
  token: TokenSource;
  deviceId: string | undefined;
  WebSocket: WebSocketConstructorLike;
  webrtc: WebRtcImplementation | undefined;
  handlerName: HandlerName | undefined;
  getAudioTrack: (() => Promise<AudioTrack>) | undefined;
  requestTimeoutMs: number;
  reconnect: false | ReconnectPolicy;
}

function validateOptions(o: RingbridgeClientOptions): ValidOptions {
  if (typeof o !== 'object' || o === null) {
    throw new TypeError('options must be an object');
  }
  if (typeof o.url !== 'string' || !/^wss?:\/\//i.test(o.url)) {
    throw new TypeError('options.url must be a ws:// or wss:// URL');
  }
  if (typeof o.token !== 'function' && (typeof o.token !== 'string' || o.token === '')) {
    throw new TypeError('options.token must be a non-empty string or a function returning one');
  }
  if (o.deviceId !== undefined && (typeof o.deviceId !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(o.deviceId))) {
    throw new TypeError('if given, options.deviceId must be 1 to 128 of A-Z a-z 0-9 . _ : -');
  }
  const WebSocketImpl = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket;
  if (typeof WebSocketImpl !== 'function') {
    throw new TypeError("options.WebSocket is required where globalThis.WebSocket is missing (in Node pass WebSocket from 'ws')");
  }
  const requestTimeoutMs = o.requestTimeoutMs ?? 10_000;
  if (!Number.isFinite(requestTimeoutMs) || requestTimeoutMs <= 0) {
    throw new TypeError('if given, options.requestTimeoutMs must be a positive number');
  }
  if (o.getAudioTrack !== undefined && typeof o.getAudioTrack !== 'function') {
    throw new TypeError('if given, options.getAudioTrack must be a function');
  }
  const reconnect = o.reconnect ?? {};
  if (reconnect !== false) {
    for (const key of ['initialDelayMs', 'maxDelayMs', 'factor', 'jitter', 'maxTimeMs'] as const) {
      const v = reconnect[key];
      if (v !== undefined && (!Number.isFinite(v) || v < 0)) {
        throw new TypeError(`if given, options.reconnect.${key} must be a number >= 0`);
      }
    }
  }
  if (o.webrtc !== undefined) {
    for (const key of ['RTCPeerConnection', 'RTCSessionDescription', 'RTCIceCandidate', 'MediaStream'] as const) {
      if (typeof o.webrtc[key] !== 'function') {
        throw new TypeError(`options.webrtc.${key} must be a class`);
      }
    }
  }

  return {
    url: o.url,
    token: o.token,
    deviceId: o.deviceId,
    WebSocket: WebSocketImpl,
    webrtc: o.webrtc,
    handlerName: o.handlerName,
    getAudioTrack: o.getAudioTrack,
    requestTimeoutMs,
    reconnect,
  };
}

/** Puts the WebRTC classes where mediasoup-client's handlers look for them. */
function installWebRtc(impl: WebRtcImplementation): void {
  const g = globalThis as Record<string, unknown>;
  for (const key of ['RTCPeerConnection', 'RTCSessionDescription', 'RTCIceCandidate', 'MediaStream', 'MediaStreamTrack'] as const) {
    if (impl[key] !== undefined && g[key] !== impl[key]) {
      g[key] = impl[key];
    }
  }
}

/** The browser's microphone. */
async function defaultGetAudioTrack(): Promise<AudioTrack> {
  type Md = { getUserMedia?: (c: { audio: boolean }) => Promise<{ getAudioTracks(): AudioTrack[] }> };
  const md = (globalThis as { navigator?: { mediaDevices?: Md } }).navigator?.mediaDevices;
  if (!md?.getUserMedia) {
    throw new Error('no getAudioTrack option and no navigator.mediaDevices.getUserMedia');
  }
  const stream = await md.getUserMedia({ audio: true });
  const track = stream.getAudioTracks()[0];
  if (!track) {
    throw new Error('getUserMedia gave no audio track');
  }

  return track;
}
