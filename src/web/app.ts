/**
 * The agent softphone page: plain TypeScript and DOM on the client SDK (src/client). Built by
 * src/web/build.mjs (esbuild) into dist/web and served by the gateway at / (src/http/static.ts).
 *
 * Sign in with a pasted JWT, presence, ringing calls (answer/decline), dialling, hold, mute, DTMF,
 * hang up, and a live call-quality readout from the call's RTCPeerConnection stats, and Web Push
 * wake-ups for a closed tab (wake.ts). The token is kept in memory only (never in the URL), unless
 * the agent turns wake-ups on: then it stays in localStorage until sign-out.
 */
import { RingbridgeClient, isRingbridgeError, type AgentStatus, type CallStats, type ClientCall, type ConnectionState, type Presence } from '../client/index.js';
import { browserDeviceId, closeCallNotifications, disableWakeUps, enableWakeUps, forgetSavedSession, loadSavedSession } from './wake.js';

/** How often the quality readout is refreshed, in ms. */
const QUALITY_INTERVAL_MS = 1000;

function el<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) {
    throw new Error(`softphone page: #${id} is missing`);
  }

  return found as T;
}

const ui = {
  connection: el('connection'),
  error: el('error'),
  signin: el('signin'),
  signinForm: el<HTMLFormElement>('signin-form'),
  gatewayUrl: el<HTMLInputElement>('gateway-url'),
  token: el<HTMLTextAreaElement>('token'),
  wake: el<HTMLInputElement>('wake'),
  wakeStatus: el('wake-status'),
  signinButton: el<HTMLButtonElement>('signin-button'),
  phone: el('phone'),
  agent: el('agent'),
  presence: el<HTMLSelectElement>('presence'),
  effective: el('effective'),
  signout: el<HTMLButtonElement>('signout'),
  incoming: el('incoming'),
  incomingFrom: el('incoming-from'),
  answer: el<HTMLButtonElement>('answer'),
  decline: el<HTMLButtonElement>('decline'),
  call: el('call'),
  callRemote: el('call-remote'),
  callState: el('call-state'),
  callTimer: el('call-timer'),
  callCodec: el('call-codec'),
  hold: el<HTMLButtonElement>('hold'),
  mute: el<HTMLButtonElement>('mute'),
  hangup: el<HTMLButtonElement>('hangup'),
  quality: el('quality'),
  qualityLabel: el('quality-label'),
  qReceived: el('q-received'),
  qLost: el('q-lost'),
  qJitter: el('q-jitter'),
  qRtt: el('q-rtt'),
  qSent: el('q-sent'),
  dtmfLog: el('dtmf-log'),
  dialForm: el<HTMLFormElement>('dial-form'),
  number: el<HTMLInputElement>('number'),
  pad: el('pad'),
  dial: el<HTMLButtonElement>('dial'),
  audio: el<HTMLAudioElement>('remote-audio'),
};

let client: RingbridgeClient | undefined;
/** Calls ringing here, oldest first; the first one is shown. */
const ringing = new Map<string, ClientCall>();
/** The call in progress here (answered or dialled). */
let current: ClientCall | undefined;
let tick: ReturnType<typeof setInterval> | undefined;
let lastStats: CallStats | undefined;
/** Counts sign-ins and sign-outs: a wake-up enable started for an earlier one must not finish. */
let generation = 0;
/** The wake-up enable in progress, awaited by sign-out. */
let enabling: Promise<void> | undefined;

// ---------------------------------------------------------------- errors

/** What an agent should read for each error code. */
const MESSAGES: Record<string, string> = {
  AUTH_FAILED: 'The token was refused: check that it is a valid agent token for this gateway.',
  TOKEN_EXPIRED: 'The token has expired: paste a fresh one.',
  UNAUTHENTICATED: 'Not signed in.',
  NOT_FOUND: 'That call is no longer there.',
  INVALID_STATE: 'The call cannot do that right now.',
  ALREADY_ANSWERED: 'Another agent answered this call first.',
  FORBIDDEN: 'You are not allowed to do that (dialling policy or device limit).',
  NO_ROUTE: 'No trunk can reach that number.',
  MEDIA_ERROR: 'The gateway could not set up the audio.',
  RATE_LIMITED: 'Too many requests: wait a moment.',
  UNAVAILABLE: 'The gateway cannot take this now (draining or degraded): try again shortly.',
  INTERNAL: 'The gateway failed unexpectedly.',
  TIMEOUT: 'The gateway did not answer in time.',
  CONNECTION_LOST: 'The connection to the gateway was lost.',
  CLOSED: 'Not connected to the gateway.',
  LOCAL_MEDIA: 'This browser could not set up audio (microphone refused or unavailable?).',
  PROTOCOL_ERROR: 'The gateway sent something this page cannot read.',
  BAD_REQUEST: 'The gateway refused the request as malformed.',
  UNSUPPORTED_VERSION: 'This page speaks a protocol version the gateway does not support.',
};

/** A sentence for any error: the SDK's code mapped to words, the message as detail. */
export function describeError(err: unknown): string {
  if (isRingbridgeError(err)) {
    const words = MESSAGES[err.code] ?? 'The request failed.';

    return `${words} (${err.code}${err.request ? ` on ${err.request}` : ''}: ${err.message})`;
  }
  if (err instanceof TypeError) {
    return `Cannot sign in: ${err.message}`;
  }
  if (err instanceof Error) {
    return err.message;
  }

  return String(err);
}

function showError(err: unknown): void {
  ui.error.textContent = describeError(err);
  ui.error.hidden = false;
}

function showNotice(text: string): void {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

/** Runs an action from a click: buttons disabled meanwhile, errors shown. */
function act(buttons: HTMLButtonElement[], fn: () => Promise<unknown>): void {
  clearError();
  for (const b of buttons) {
    b.disabled = true;
  }
  fn()
    .catch(showError)
    .finally(() => {
      for (const b of buttons) {
        b.disabled = false;
      }
      render();
    });
}

// ---------------------------------------------------------------- rendering

const CONNECTION_WORDS: Record<ConnectionState, string> = {
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  disconnected: 'signed out',
};

function renderConnection(state: ConnectionState): void {
  ui.connection.dataset.state = state;
  ui.connection.textContent = CONNECTION_WORDS[state];
}

function renderPresence(p: Presence | undefined): void {
  if (!p) {
    return;
  }
  ui.presence.value = p.status;
  ui.effective.textContent = p.effective.replace('_', ' ');
}

function party(call: ClientCall): string {
  const r = call.remote;

  return r.name ? `${r.name} <${r.number}>` : r.number || 'unknown';
}

function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));

  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function render(): void {
  const signedIn = client !== undefined && !client.closed;
  ui.signin.hidden = signedIn;
  ui.phone.hidden = !signedIn;

  // a call answered in another tab of the agent, or ended, stops ringing here
  for (const [id, c] of ringing) {
    if (c.state !== 'ringing') {
      ringing.delete(id);
    }
  }
  const first = ringing.values().next().value;
  ui.incoming.hidden = first === undefined;
  if (first) {
    ui.incoming.dataset.callId = first.id;
    ui.incomingFrom.textContent = party(first);
  }
  // one call at a time: finish the current one before answering another
  ui.answer.disabled = current !== undefined;
  ui.answer.title = current ? 'Hang up the current call first' : '';

  ui.call.hidden = current === undefined;
  if (current) {
    ui.call.dataset.callId = current.id;
    ui.callRemote.textContent = party(current);
    ui.callState.textContent = current.state;
    ui.callCodec.textContent = current.codec ? current.codec.mimeType.replace('audio/', '') : '';
    const held = current.state === 'held';
    ui.hold.textContent = held ? 'Resume' : 'Hold';
    ui.hold.setAttribute('aria-pressed', String(held));
    ui.mute.textContent = current.muted ? 'Unmute' : 'Mute';
    ui.mute.setAttribute('aria-pressed', String(current.muted));
    const live = current.state === 'active' || current.state === 'held';
    ui.hold.disabled = !live;
    ui.mute.disabled = !live;
    ui.callTimer.textContent = current.answeredAt ? formatDuration(Date.now() - Date.parse(current.answeredAt)) : '0:00';
  }
  ui.dial.disabled = current !== undefined;
}

/** good / fair / poor from the last interval's loss, the jitter and the round trip. */
export function qualityLevel(lossPct: number, jitterMs: number, rttMs: number | undefined): 'good' | 'fair' | 'poor' {
  const rtt = rttMs ?? 0;
  if (lossPct > 5 || jitterMs > 60 || rtt > 400) {
    return 'poor';
  }
  if (lossPct > 1 || jitterMs > 30 || rtt > 200) {
    return 'fair';
  }

  return 'good';
}

async function refreshQuality(): Promise<void> {
  const call = current;
  if (!call || call.state === 'ringing' || call.state === 'ended') {
    return;
  }
  let stats: CallStats;
  try {
    stats = await call.getStats();
  } catch {
    return; // no media yet (dialling) or just ended
  }
  if (call !== current) {
    return;
  }
  const prev = lastStats;
  lastStats = stats;
  const received = stats.packetsReceived - (prev?.packetsReceived ?? 0);
  const lost = Math.max(0, stats.packetsLost - (prev?.packetsLost ?? 0));
  const lossPct = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
  const jitterMs = stats.jitter * 1000;
  const rttMs = stats.roundTripTime === undefined ? undefined : stats.roundTripTime * 1000;
  ui.qReceived.textContent = String(stats.packetsReceived);
  ui.qLost.textContent = String(stats.packetsLost);
  ui.qJitter.textContent = stats.packetsReceived > 0 ? `${jitterMs.toFixed(1)} ms` : '–';
  ui.qRtt.textContent = rttMs === undefined ? '–' : `${rttMs.toFixed(rttMs < 10 ? 1 : 0)} ms`;
  ui.qSent.textContent = String(stats.packetsSent);
  ui.quality.dataset.packetsReceived = String(stats.packetsReceived);
  ui.quality.dataset.packetsSent = String(stats.packetsSent);
  if (stats.packetsReceived === 0) {
    ui.quality.dataset.level = 'unknown';
    ui.qualityLabel.textContent = `quality: waiting for media (${stats.recvTransportState})`;

    return;
  }
  if (received === 0 && prev) {
    ui.quality.dataset.level = call.state === 'held' ? 'unknown' : 'poor';
    ui.qualityLabel.textContent = call.state === 'held' ? 'quality: on hold' : 'quality: no audio arriving';

    return;
  }
  const level = qualityLevel(lossPct, jitterMs, rttMs);
  ui.quality.dataset.level = level;
  ui.qualityLabel.textContent = `quality: ${level} (${lossPct.toFixed(1)} % loss)`;
}

function startTicking(): void {
  if (tick === undefined) {
    tick = setInterval(() => {
      render();
      void refreshQuality();
    }, QUALITY_INTERVAL_MS);
  }
}

function stopTicking(): void {
  if (tick !== undefined) {
    clearInterval(tick);
    tick = undefined;
  }
  lastStats = undefined;
  ui.quality.dataset.level = 'unknown';
  delete ui.quality.dataset.packetsReceived;
  delete ui.quality.dataset.packetsSent;
  ui.qualityLabel.textContent = 'quality: waiting for media';
  for (const d of [ui.qReceived, ui.qLost, ui.qSent]) {
    d.textContent = '0';
  }
  ui.qJitter.textContent = '–';
  ui.qRtt.textContent = '–';
  ui.dtmfLog.textContent = '';
}

function setCurrent(call: ClientCall | undefined): void {
  current = call;
  if (call) {
    startTicking();
  } else {
    stopTicking();
    ui.audio.srcObject = null;
  }
  render();
}

// ---------------------------------------------------------------- the client

const END_WORDS: Record<string, string> = {
  hangup_local: 'you hung up',
  hangup_remote: 'the other party hung up',
  busy: 'busy',
  not_found: 'number not found',
  unavailable: 'unavailable',
  declined: 'declined',
  timeout: 'no answer',
  rejected: 'rejected',
  rtp_timeout: 'audio stopped arriving',
  session_lost: 'connection lost',
  node_failure: 'gateway node failed',
  shutdown: 'gateway shut down',
  failed: 'call failed',
};

function wire(c: RingbridgeClient): void {
  c.on('connectionstatechange', (state) => {
    renderConnection(state);
    if (state === 'disconnected') {
      ringing.clear();
      setCurrent(undefined);
    }
    render();
  });
  c.on('presence', renderPresence);
  c.on('incoming', ({ call }) => {
    ringing.set(call.id, call);
    render();
  });
  c.on('cancelled', ({ call, reason }) => {
    ringing.delete(call.id);
    showNotice(`Call from ${party(call)} stopped ringing: ${reason.replace(/_/g, ' ')}.`);
    render();
  });
  c.on('progress', () => render());
  c.on('answered', () => render());
  c.on('held', () => render());
  c.on('resumed', () => render());
  c.on('track', ({ call, track }) => {
    if (call === current) {
      ui.audio.srcObject = new MediaStream([track]);
      ui.audio.play().catch(() => showNotice('Click anywhere on the page to hear the call (the browser blocked autoplay).'));
    }
  });
  c.on('dtmf', ({ call, digit }) => {
    if (call === current) {
      ui.dtmfLog.textContent = `${ui.dtmfLog.textContent ?? ''}←${digit} `;
    }
  });
  c.on('ended', ({ call, reason, sipStatus }) => {
    ringing.delete(call.id);
    if (call === current) {
      setCurrent(undefined);
      if (reason !== 'hangup_local') {
        showNotice(`Call with ${party(call)} ended: ${END_WORDS[reason] ?? reason}${sipStatus ? ` (SIP ${sipStatus})` : ''}.`);
      }
    }
    render();
  });
  c.on('wakecancelled', ({ reason }) => {
    showNotice(`The call this browser was woken for is over: ${reason.replace(/_/g, ' ')}.`);
  });
  c.on('error', (err) => {
    showError(err);
    if (isRingbridgeError(err) && (err.code === 'AUTH_FAILED' || err.code === 'TOKEN_EXPIRED')) {
      // a kept token that no longer works must not keep waking this browser
      void disableWakeUps(undefined);
    }
  });
}

function renderWake(state: 'off' | 'pending' | 'on' | 'error', text: string): void {
  ui.wakeStatus.dataset.state = state;
  ui.wakeStatus.textContent = text;
}

/**
 * Signs in; with `wake`, this browser's device id goes with `auth` and wake-ups are turned on
 * after the session starts (a failure there is shown but leaves the agent signed in).
 */
async function signIn(url: string, token: string, wake: boolean): Promise<void> {
  const mine = ++generation;
  const c = new RingbridgeClient({ url, token, ...(wake ? { deviceId: browserDeviceId() } : {}) });
  wire(c);
  client = c;
  try {
    const session = await c.connect();
    if (wake) {
      renderWake('pending', 'turning wake-ups on…');
      enabling = enableWakeUps(c, { url, token }, session.webPush?.vapidPublicKey, () => mine === generation).then(
        () => {
          if (mine === generation) {
            renderWake('on', 'wake-ups on: this browser rings when the tab is closed');
          }
        },
        (err: unknown) => {
          if (mine === generation) {
            renderWake('error', `wake-ups unavailable: ${describeError(err)}`);
          }
        },
      );
      void closeCallNotifications();
    } else {
      renderWake('off', 'wake-ups off');
      if (loadSavedSession()) {
        // signed in without the box: an earlier kept session and its wake-ups go
        await disableWakeUps(c);
      }
    }
    ui.agent.textContent = session.agentId;
    renderPresence(c.presence);
    for (const call of c.calls) {
      if (call.state === 'ringing') {
        ringing.set(call.id, call);
      }
    }
    ui.token.value = '';
  } catch (err) {
    c.close();
    client = undefined;
    throw err;
  }
}

async function signOut(): Promise<void> {
  const c = client;
  if (!c) {
    return;
  }
  generation++;
  if (current) {
    await c.hangup(current.id).catch(() => undefined);
  }
  await enabling?.catch(() => undefined);
  enabling = undefined;
  // whatever the status line says: nothing kept, no device, no subscription after a sign-out
  await disableWakeUps(c);
  renderWake('off', 'wake-ups off');
  c.close();
  client = undefined;
  ringing.clear();
  setCurrent(undefined);
  renderConnection('disconnected');
}

function requireClient(): RingbridgeClient {
  if (!client) {
    throw new Error('Not signed in.');
  }

  return client;
}

// ---------------------------------------------------------------- controls

ui.gatewayUrl.value = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

ui.signinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = ui.token.value.trim();
  if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) {
    showNotice('That does not look like a JWT (three base64url parts separated by dots).');

    return;
  }
  act([ui.signinButton], () => signIn(ui.gatewayUrl.value.trim(), token, ui.wake.checked));
});

ui.signout.addEventListener('click', () => act([ui.signout], signOut));

ui.presence.addEventListener('change', () => {
  const status = ui.presence.value as AgentStatus;
  act([], async () => {
    try {
      renderPresence(await requireClient().setPresence(status));
    } catch (err) {
      renderPresence(client?.presence);
      throw err;
    }
  });
});

ui.answer.addEventListener('click', () => {
  const callId = ui.incoming.dataset.callId;
  if (!callId) {
    return;
  }
  act([ui.answer, ui.decline], async () => {
    try {
      const call = await requireClient().answer(callId);
      if (call.state === 'ended') {
        return; // the caller hung up meanwhile; 'ended' told the agent
      }
      setCurrent(call);
      // the track may have come before answer() resolved
      if (call.remoteTrack) {
        ui.audio.srcObject = new MediaStream([call.remoteTrack]);
        void ui.audio.play().catch(() => undefined);
      }
    } finally {
      ringing.delete(callId);
    }
  });
});

ui.decline.addEventListener('click', () => {
  const callId = ui.incoming.dataset.callId;
  if (!callId) {
    return;
  }
  act([ui.answer, ui.decline], async () => {
    try {
      await requireClient().decline(callId, 'decline');
    } finally {
      ringing.delete(callId);
    }
  });
});

ui.hangup.addEventListener('click', () => {
  const call = current;
  if (call) {
    act([ui.hangup], () => requireClient().hangup(call.id));
  }
});

ui.hold.addEventListener('click', () => {
  const call = current;
  if (call) {
    const c = requireClient();
    act([ui.hold], () => (call.state === 'held' ? c.resume(call.id) : c.hold(call.id)));
  }
});

ui.mute.addEventListener('click', () => {
  const call = current;
  if (call) {
    act([ui.mute], () => requireClient().mute(call.id, !call.muted));
  }
});

for (const key of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#']) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = key;
  b.dataset.digit = key;
  b.dataset.testid = `pad-${key}`;
  b.addEventListener('click', () => {
    const call = current;
    if (call && (call.state === 'active' || call.state === 'early')) {
      ui.dtmfLog.textContent = `${ui.dtmfLog.textContent ?? ''}→${key} `;
      act([], () => requireClient().sendDtmf(call.id, key));
    } else {
      ui.number.value += key;
    }
  });
  ui.pad.append(b);
}

ui.dialForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const to = ui.number.value.replace(/[\s().-]/g, '');
  if (!/^\+?[0-9*#]{1,32}$/.test(to)) {
    showNotice('Enter a number to dial: digits, optionally a leading +.');

    return;
  }
  act([ui.dial], async () => {
    const call = await requireClient().dial(to);
    if (call.state === 'ended') {
      showNotice(`The call to ${to} ended before it started.`);

      return;
    }
    setCurrent(call);
  });
});

// A closing tab signs off at once (WebSocket close 1000), so the gateway wakes this browser by
// push for the next call instead of holding the session for its resume grace period.
window.addEventListener('pagehide', () => {
  client?.close();
});

// Opened by a wake-up notification (or reloaded) with wake-ups on: sign in with the kept token;
// the waiting call is in the auth response and rings at once.
const saved = loadSavedSession();
if (saved) {
  ui.gatewayUrl.value = saved.url;
  ui.wake.checked = true;
  act([ui.signinButton], async () => {
    try {
      await signIn(saved.url, saved.token, true);
    } catch (err) {
      if (isRingbridgeError(err) && (err.code === 'AUTH_FAILED' || err.code === 'TOKEN_EXPIRED')) {
        // the kept token is no good: forget it and stop the pushes it would keep bringing
        forgetSavedSession();
        await disableWakeUps(undefined);
      }
      throw err;
    }
  });
}

// The service worker tells an open tab about a call it was clicked for (notificationclick): a tab
// that lost its session signs in again with the kept token.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (ev: MessageEvent) => {
    const data = ev.data as { type?: string } | null;
    const kept = loadSavedSession();
    if (data?.type === 'ring' && kept && (client === undefined || client.closed)) {
      act([ui.signinButton], () => signIn(kept.url, kept.token, true));
    }
  });
}
// Back from the back/forward cache after pagehide closed the client: sign in again if kept.
window.addEventListener('pageshow', (ev) => {
  const kept = loadSavedSession();
  if (ev.persisted && kept && (client === undefined || client.closed)) {
    act([ui.signinButton], () => signIn(kept.url, kept.token, true));
  }
});
if (new URLSearchParams(location.search).has('call')) {
  history.replaceState(null, '', '/');
}

render();
