/**
 * Web Push wake-ups for the softphone page: a closed tab is rung through the browser's push
 * service (RFC 8030) and the page's service worker (sw/service-worker.ts).
 *
 * Enabling them (the sign-in form's "ring this browser" box):
 * 1. the browser gets a stable device id (`web-<uuid>`, localStorage), sent in `auth` so that
 *    while the page is connected the call rings here and no push is sent;
 * 2. the service worker is registered (scope /web/) and, once active, subscribes with the
 *    gateway's VAPID public key (from the `auth` response, RFC 8292) with userVisibleOnly;
 * 3. the subscription's JSON is registered as a `webpush` device (`device.register`);
 * 4. the gateway URL and the token are kept in localStorage, so that the page opened from the
 *    notification signs in by itself and the waiting call rings. Signing out removes them,
 *    unregisters the device and unsubscribes.
 * Without the box nothing is stored: the token stays in memory only.
 */
import type { RingbridgeClient } from '../client/index.js';

const SESSION_KEY = 'ringbridge.wake.session';
const DEVICE_KEY = 'ringbridge.deviceId';
const WORKER_URL = '/web/sw.js';
const WORKER_SCOPE = '/web/';
/** How long the service worker may take to activate, in ms. */
const ACTIVATE_TIMEOUT_MS = 10_000;

/** What the page keeps to sign in again when a push opens it. */
export interface SavedSession {
  url: string;
  token: string;
}

/** The kept session, or undefined (none, or unreadable: then it is dropped). */
export function loadSavedSession(): SavedSession | undefined {
  const raw = localStorage.getItem(SESSION_KEY);
  if (raw === null) {
    return undefined;
  }
  try {
    const s = JSON.parse(raw) as Partial<SavedSession>;
    if (typeof s.url === 'string' && typeof s.token === 'string') {
      return { url: s.url, token: s.token };
    }
  } catch {
    // fall through
  }
  localStorage.removeItem(SESSION_KEY);

  return undefined;
}

/** Forgets the kept session (sign-out, refused token). */
export function forgetSavedSession(): void {
  localStorage.removeItem(SESSION_KEY);
}

/** This browser's device id (created once, kept in localStorage). */
export function browserDeviceId(): string {
  let id = localStorage.getItem(DEVICE_KEY);
  if (id === null || !/^[A-Za-z0-9._:-]{1,128}$/.test(id)) {
    id = `web-${crypto.randomUUID()}`;
    localStorage.setItem(DEVICE_KEY, id);
  }

  return id;
}

/** URL-safe base64 (no padding) to bytes. */
function base64UrlToBytes(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const out = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }

  return out;
}

function sameBytes(a: ArrayBuffer | null, b: Uint8Array): boolean {
  if (a === null || a.byteLength !== b.byteLength) {
    return false;
  }
  const x = new Uint8Array(a);

  return x.every((v, i) => v === b[i]);
}

/** Resolves once the registration has an active worker. */
async function activeWorker(reg: ServiceWorkerRegistration): Promise<void> {
  if (reg.active) {
    return;
  }
  const worker = reg.installing ?? reg.waiting;
  if (!worker) {
    throw new Error('the service worker did not install');
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the service worker did not activate in time')), ACTIVATE_TIMEOUT_MS);
    worker.addEventListener('statechange', () => {
      if (worker.state === 'activated') {
        clearTimeout(timer);
        resolve();
      } else if (worker.state === 'redundant') {
        clearTimeout(timer);
        reject(new Error('the service worker failed to install'));
      }
    });
  });
}

/**
 * Turns wake-ups on for the signed-in client (steps 2–4 above).
 * @param vapidPublicKey the gateway's key from the auth response, or undefined when it sends no Web Push
 * @param stillWanted checked before registering and before keeping the token: false once the agent
 *   signed out meanwhile (then nothing is registered or kept)
 * @throws {Error} with a sentence an agent can read: the gateway or the browser cannot do it,
 *   notifications are blocked, or the push service refused the subscription
 */
export async function enableWakeUps(client: RingbridgeClient, session: SavedSession, vapidPublicKey: string | undefined, stillWanted: () => boolean = () => true): Promise<void> {
  if (vapidPublicKey === undefined) {
    throw new Error('this gateway does not send Web Push');
  }
  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
    throw new Error('this browser cannot receive push messages here (it needs HTTPS or localhost)');
  }
  const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (permission !== 'granted') {
    throw new Error('notifications are blocked for this page');
  }
  const reg = await navigator.serviceWorker.register(WORKER_URL, { scope: WORKER_SCOPE });
  await activeWorker(reg);
  const key = base64UrlToBytes(vapidPublicKey);
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameBytes(sub.options.applicationServerKey, key)) {
    await sub.unsubscribe();
    sub = null;
  }
  try {
    sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  } catch (err) {
    throw new Error(`the browser's push service refused the subscription (${(err as Error).message})`, { cause: err });
  }
  if (!stillWanted()) {
    return; // signed out meanwhile: register nothing, keep nothing
  }
  await client.registerDevice({ deviceId: browserDeviceId(), platform: 'web', channel: 'webpush', token: JSON.stringify(sub) });
  if (!stillWanted()) {
    await disableWakeUps(client);

    return;
  }
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

/** Closes the notifications the service worker shows (a call rings in the page now). */
export async function closeCallNotifications(): Promise<void> {
  if (!('serviceWorker' in navigator)) {
    return;
  }
  const reg = await navigator.serviceWorker.getRegistration(WORKER_SCOPE).catch(() => undefined);
  for (const n of (await reg?.getNotifications().catch(() => [])) ?? []) {
    n.close();
  }
}

/**
 * Turns wake-ups off: forgets the session, unregisters the device (when still connected) and
 * unsubscribes. Never throws: each step is best effort.
 */
export async function disableWakeUps(client: RingbridgeClient | undefined): Promise<void> {
  forgetSavedSession();
  await client?.unregisterDevice(browserDeviceId()).catch(() => undefined);
  if ('serviceWorker' in navigator) {
    const reg = await navigator.serviceWorker.getRegistration(WORKER_SCOPE).catch(() => undefined);
    const sub = await reg?.pushManager.getSubscription().catch(() => null);
    await sub?.unsubscribe().catch(() => undefined);
  }
}
