/**
 * The softphone page's service worker: wakes a closed tab for a call.
 *
 * The gateway sends a Web Push (RFC 8030, VAPID per RFC 8292, aes128gcm per RFC 8291) to the
 * subscription the page registered as a `webpush` device; the browser's push service delivers it
 * here even when no tab of the page is open. The payload is JSON: the wake data of
 * src/push/provider.ts (`type` incoming_call | call_cancelled | missed_call, `callId`, `ttl` in s,
 * `sentAt` in ms, optional `caller`) plus `title` and `body`.
 *
 * - incoming_call: a notification tagged with the call id, kept until acted on; clicking it
 *   focuses an open tab of the page or opens `/?call=<id>`, where the page signs in with the token
 *   it kept for wake-ups and the waiting call rings.
 * - call_cancelled / missed_call: the call's notification is replaced by a short "ended" or
 *   "missed" one (browsers require every push to show something: userVisibleOnly).
 *
 * Built by src/web/build.mjs into dist/web/sw.js; registered by the page with scope /web/.
 */
/// <reference lib="webworker" />

declare const self: ServiceWorkerGlobalScope;

/** The fields of a push this worker reads. */
interface WakePayload {
  type?: string;
  callId?: string;
  caller?: string;
  title?: string;
  body?: string;
  ttl?: string;
}

/** The push's JSON, or an empty object when it is missing or unreadable. */
function readPayload(data: PushMessageData | null): WakePayload {
  if (!data) {
    return {};
  }
  try {
    const parsed: unknown = data.json();

    return typeof parsed === 'object' && parsed !== null ? parsed : {};
  } catch {
    return {};
  }
}

/** The page's URL for a call: the page rings the call there once it has signed in. */
function callUrl(callId: string | undefined): string {
  const url = new URL('/', self.location.origin);
  if (callId) {
    url.searchParams.set('call', callId);
  }

  return url.href;
}

async function onPush(p: WakePayload): Promise<void> {
  const tag = p.callId ? `call:${p.callId}` : 'call';
  if (p.type === 'call_cancelled' || p.type === 'missed_call') {
    for (const n of await self.registration.getNotifications({ tag })) {
      n.close();
    }
    await self.registration.showNotification(p.title ?? (p.type === 'missed_call' ? 'Missed call' : 'Call ended'), {
      body: p.body ?? p.caller ?? '',
      tag,
      data: { url: callUrl(undefined), type: p.type, callId: p.callId },
    });

    return;
  }
  await self.registration.showNotification(p.title ?? 'Incoming call', {
    body: p.body ?? p.caller ?? 'Unknown caller',
    tag,
    requireInteraction: true,
    data: { url: callUrl(p.callId), type: 'incoming_call', callId: p.callId },
  });
}

self.addEventListener('install', () => {
  void self.skipWaiting();
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener('push', (event) => {
  event.waitUntil(onPush(readPayload(event.data)));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = (event.notification.data ?? {}) as { url?: string };
  const url = data.url ?? callUrl(undefined);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).pathname === '/');
      if (open) {
        // the tab may have lost its session: it signs in again on this message (app.ts)
        open.postMessage({ type: 'ring', callId: (event.notification.data as { callId?: string } | null)?.callId });
        await open.focus();

        return;
      }
      await self.clients.openWindow(url);
    })(),
  );
});

export {};
