/**
 * Points firebase-admin's FCM HTTP/2 connections at another host (push.fcm.baseUrl).
 *
 * firebase-admin 13.8 hard-codes `https://fcm.googleapis.com` for `sendEach*` and opens its
 * sessions with `require('http2').connect(url, opts)`; it has no emulator switch for messaging
 * (push-channels.md §9, option (b)). When a different base URL is configured, this module wraps
 * `http2.connect` once per process so that sessions to exactly that origin go to the configured
 * one instead, with the configured CA bundle. It also rewrites the `:scheme` pseudo-header, which
 * firebase-admin sends as "https:" (with a colon) and which RFC 9113 peers such as Node's own
 * HTTP/2 server refuse. Every other `http2.connect` call passes through unchanged.
 *
 * Process-wide by nature: the last `installFcmHostRedirect` call wins.
 */
import http2 from 'node:http2';

const FCM_ORIGIN = 'https://fcm.googleapis.com';

interface Redirect {
  target: string;
  ca?: string;
}

let current: Redirect | undefined;
let original: typeof http2.connect | undefined;

function fixScheme(session: http2.ClientHttp2Session): http2.ClientHttp2Session {
  const request = session.request.bind(session);
  session.request = ((headers?: http2.OutgoingHttpHeaders, options?: http2.ClientSessionRequestOptions) => {
    const h = headers && headers[':scheme'] === 'https:' ? { ...headers, ':scheme': 'https' } : headers;

    return request(h, options);
  });

  return session;
}

/**
 * Sends firebase-admin's FCM sessions to `target` (an https origin) instead of
 * https://fcm.googleapis.com. A target equal to the default removes the redirect.
 */
export function installFcmHostRedirect(target: string, ca?: string): void {
  const origin = new URL(target).origin;
  if (origin === FCM_ORIGIN) {
    current = undefined;

    return;
  }
  current = { target: origin, ...(ca ? { ca } : {}) };
  if (original) {
    return;
  }
  const connect = http2.connect.bind(http2);
  original = http2.connect;
  const wrapped = (authority: string | URL, ...rest: unknown[]): http2.ClientHttp2Session => {
    const redirect = current;
    const asString = typeof authority === 'string' ? authority : authority.href;
    if (!redirect || new URL(asString).origin !== FCM_ORIGIN) {
      return (connect as (...a: unknown[]) => http2.ClientHttp2Session)(authority, ...rest);
    }
    const [opts, listener] = typeof rest[0] === 'function' ? [{}, rest[0]] : [(rest[0] ?? {}) as http2.SecureClientSessionOptions, rest[1]];
    const merged: http2.SecureClientSessionOptions = { ...opts, ...(redirect.ca ? { ca: redirect.ca } : {}) };
    const session = listener
      ? connect(redirect.target, merged, listener as (session: http2.ClientHttp2Session, socket: unknown) => void)
      : connect(redirect.target, merged);

    return fixScheme(session);
  };
  http2.connect = wrapped;
}

/** Removes the redirect and restores http2.connect (tests). */
export function uninstallFcmHostRedirect(): void {
  current = undefined;
  if (original) {
    http2.connect = original;
    original = undefined;
  }
}
