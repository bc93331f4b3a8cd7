/**
 * The one table that turns node-pushnotifications' error strings into push results.
 *
 * node-pushnotifications 6.0.0 keeps little of what the providers answer (push-channels.md §9):
 * - APNs (`@parse/node-apn`): `errorMsg` is the APNs `reason` ("Unregistered", "BadDeviceToken")
 *   or one of node-apn's own messages (timeouts, "Error 500, stream ended unexpectedly"); the
 *   HTTP status and the 410 timestamp are dropped.
 * - FCM (`firebase-admin`): `errorMsg` is the server's `error.message` ("Requested entity was not
 *   found.") or firebase-admin's default text for the code when the server sent none; the
 *   `messaging/...` code is dropped.
 * - Web Push (`web-push`): `errorMsg` is always "Received unexpected response code", but the
 *   error object (WebPushError) keeps `statusCode` and `headers`, so rows match the status.
 *
 * Rows are tried in order; the first match wins. Anything unmatched is `rejected` with reason
 * `unclassified`: an unknown answer never deletes a token and is not retried.
 */
import { parseRetryAfter } from './http.js';
import { type PushResult } from './provider.js';

/** A node-pushnotifications method name (the `method` of its result entries). */
export type PnMethod = 'apn' | 'fcm' | 'webPush';

/** What to do with a push that failed with a given error. */
export type PnAction = 'dead-token' | 'retry-later' | 'rejected';

/** One row of the table. */
export interface PnErrorRow {
  method: PnMethod;
  /** Exact errorMsg (string), a pattern on errorMsg (RegExp), or the HTTP status (Web Push). */
  match: string | RegExp | number;
  action: PnAction;
  /** Reason put into the result (bounded set: safe as a metrics label). */
  reason: string;
}

const apnRejected = [
  // 400s that mean our request or configuration is wrong, not the token.
  'DeviceTokenNotForTopic', // VoIP token with a non-.voip topic or the reverse: a config bug
  'TopicDisallowed',
  'BadTopic',
  'MissingTopic',
  'BadCollapseId',
  'BadExpirationDate',
  'BadMessageId',
  'BadPriority',
  'MissingDeviceToken',
  'PayloadEmpty',
  'DuplicateHeaders',
  'InvalidPushType',
  'IdleTimeout',
  // 403s: our credentials.
  'BadCertificate',
  'BadCertificateEnvironment',
  'InvalidProviderToken',
  'MissingProviderToken',
  'Forbidden',
  // 404/405/413.
  'BadPath',
  'MethodNotAllowed',
  'PayloadTooLarge',
  // Listed as dead by one third-party review only (UNCONFIRMED): never delete on it.
  'ExpiredToken',
] as const;

/** The table (see the file comment). */
export const PN_ERROR_TABLE: readonly PnErrorRow[] = [
  // ---- APNs ------------------------------------------------------------------------------
  { method: 'apn', match: 'Unregistered', action: 'dead-token', reason: 'Unregistered' },
  // Dead only after ruling out a sandbox/production mismatch (push-channels.md §1): not deleted here.
  { method: 'apn', match: 'BadDeviceToken', action: 'rejected', reason: 'BadDeviceToken' },
  ...apnRejected.map((r): PnErrorRow => ({ method: 'apn', match: r, action: 'rejected', reason: r })),
  // node-apn has already regenerated the JWT; the next attempt carries the new one.
  { method: 'apn', match: 'ExpiredProviderToken', action: 'retry-later', reason: 'ExpiredProviderToken' },
  { method: 'apn', match: 'TooManyRequests', action: 'retry-later', reason: 'TooManyRequests' },
  { method: 'apn', match: 'TooManyProviderTokenUpdates', action: 'retry-later', reason: 'TooManyProviderTokenUpdates' },
  { method: 'apn', match: 'InternalServerError', action: 'retry-later', reason: 'InternalServerError' },
  { method: 'apn', match: 'Error 500, stream ended unexpectedly', action: 'retry-later', reason: 'InternalServerError' },
  { method: 'apn', match: 'ServiceUnavailable', action: 'retry-later', reason: 'ServiceUnavailable' },
  { method: 'apn', match: 'Shutdown', action: 'retry-later', reason: 'Shutdown' },
  { method: 'apn', match: /^stream ended unexpectedly with status (429|5\d\d) /, action: 'retry-later', reason: 'http-status' },
  { method: 'apn', match: /^stream ended unexpectedly with status /, action: 'rejected', reason: 'http-status' },
  { method: 'apn', match: 'apn write timeout', action: 'retry-later', reason: 'timeout' },
  { method: 'apn', match: 'apn write aborted', action: 'retry-later', reason: 'aborted' },
  { method: 'apn', match: /^apn write failed/, action: 'retry-later', reason: 'transport' },
  { method: 'apn', match: 'Timeout, aborted, or other unknown error', action: 'retry-later', reason: 'transport' },
  { method: 'apn', match: 'client session is either closed or destroyed', action: 'retry-later', reason: 'transport' },
  { method: 'apn', match: /^Request frame error/, action: 'retry-later', reason: 'transport' },
  // Connection failures (ECONNREFUSED, TLS) arrive as the socket error's message.
  { method: 'apn', match: /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|socket hang up|certificate|self[- ]signed/i, action: 'retry-later', reason: 'transport' },

  // ---- FCM HTTP v1 -------------------------------------------------------------------------
  // 404 NOT_FOUND / FcmError UNREGISTERED: Google's message, then firebase-admin's default text.
  { method: 'fcm', match: 'Requested entity was not found.', action: 'dead-token', reason: 'UNREGISTERED' },
  { method: 'fcm', match: /^The provided registration token is not registered\./, action: 'dead-token', reason: 'UNREGISTERED' },
  // 400 INVALID_ARGUMENT about the token itself (payload errors name another field and fall through).
  { method: 'fcm', match: /registration token is not a valid FCM registration token/i, action: 'dead-token', reason: 'INVALID_ARGUMENT:token' },
  { method: 'fcm', match: /^Invalid registration token provided\./, action: 'dead-token', reason: 'INVALID_ARGUMENT:token' },
  // 403 SENDER_ID_MISMATCH: the token belongs to another Firebase project (dead for this sender).
  { method: 'fcm', match: /^SenderId mismatch/i, action: 'dead-token', reason: 'SENDER_ID_MISMATCH' },
  { method: 'fcm', match: /^The credential used to authenticate this SDK does not have permission to send/, action: 'dead-token', reason: 'SENDER_ID_MISMATCH' },
  // 429 QUOTA_EXCEEDED / RESOURCE_EXHAUSTED.
  { method: 'fcm', match: /quota exceeded|resource exhausted|rate of messages|^Sending limit exceeded/i, action: 'retry-later', reason: 'QUOTA_EXCEEDED' },
  // 503 UNAVAILABLE, 500 INTERNAL.
  { method: 'fcm', match: /^The service is currently unavailable|^The FCM server could not process the request in time/i, action: 'retry-later', reason: 'UNAVAILABLE' },
  { method: 'fcm', match: /^Internal error encountered|^An internal error has occurred/i, action: 'retry-later', reason: 'INTERNAL' },
  { method: 'fcm', match: /Status code: (429|5\d\d)\.$/, action: 'retry-later', reason: 'http-status' },
  // Transport: HTTP/2 session errors, GOAWAY, firebase-admin's own timeout, OAuth fetch failures.
  { method: 'fcm', match: /^timeout of \d+ms exceeded|Session error while making requests|Error while making requests: GOAWAY|ECONNREFUSED|ECONNRESET|ETIMEDOUT/i, action: 'retry-later', reason: 'transport' },
  // 401 THIRD_PARTY_AUTH_ERROR: the APNs credentials stored in Firebase are wrong (iOS via FCM).
  { method: 'fcm', match: /^Auth error from APNS or Web Push Service|^A message targeted to an iOS device could not be sent/i, action: 'rejected', reason: 'THIRD_PARTY_AUTH_ERROR' },
  { method: 'fcm', match: /^An error occurred when trying to authenticate to the FCM servers/, action: 'rejected', reason: 'AUTHENTICATION_ERROR' },

  // ---- Web Push ---------------------------------------------------------------------------
  // RFC 8030 §7.3: 404 and 410 mean the subscription is gone.
  { method: 'webPush', match: 410, action: 'dead-token', reason: 'Gone' },
  { method: 'webPush', match: 404, action: 'dead-token', reason: 'NotFound' },
  { method: 'webPush', match: 413, action: 'rejected', reason: 'PayloadTooLarge' },
  { method: 'webPush', match: 400, action: 'rejected', reason: 'BadRequest' },
  { method: 'webPush', match: 401, action: 'rejected', reason: 'VapidRejected' },
  { method: 'webPush', match: 403, action: 'rejected', reason: 'VapidRejected' },
  { method: 'webPush', match: 429, action: 'retry-later', reason: 'TooManyRequests' },
  { method: 'webPush', match: 500, action: 'retry-later', reason: 'http-status' },
  { method: 'webPush', match: 502, action: 'retry-later', reason: 'http-status' },
  { method: 'webPush', match: 503, action: 'retry-later', reason: 'http-status' },
  { method: 'webPush', match: 504, action: 'retry-later', reason: 'http-status' },
  { method: 'webPush', match: /Socket timeout|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|socket hang up/i, action: 'retry-later', reason: 'transport' },
];

/** One failed entry of a node-pushnotifications result. */
export interface PnFailure {
  errorMsg?: unknown;
  error?: unknown;
}

/** Finds the row for a failure, or undefined. */
export function findPnErrorRow(method: PnMethod, failure: PnFailure): PnErrorRow | undefined {
  const msg = messageOf(failure);
  const status = method === 'webPush' ? statusOf(failure.error) : undefined;
  for (const row of PN_ERROR_TABLE) {
    if (row.method !== method) {
      continue;
    }
    if (typeof row.match === 'number' ? status === row.match : typeof row.match === 'string' ? msg === row.match : row.match.test(msg)) {
      return row;
    }
  }

  return undefined;
}

/**
 * Classifies one failed entry of a node-pushnotifications result through the table.
 * Retry-After is read where the library keeps it (Web Push); elsewhere the bridge's backoff applies.
 */
export function classifyPnFailure(method: PnMethod, failure: PnFailure): PushResult {
  const row = findPnErrorRow(method, failure);
  if (!row) {
    return { status: 'rejected', reason: 'unclassified' };
  }
  switch (row.action) {
    case 'dead-token': {
      return { status: 'dead-token', reason: row.reason };
    }
    case 'retry-later': {
      const headers = (failure.error as { headers?: Record<string, string | string[] | undefined> } | undefined)?.headers;
      const after = headers && typeof headers === 'object' ? parseRetryAfter(headers['retry-after']) : undefined;

      return { status: 'retry-later', retryAfterMs: after ?? 0, reason: row.reason };
    }
    default: {
      return { status: 'rejected', reason: row.reason };
    }
  }
}

function messageOf(f: PnFailure): string {
  if (typeof f.errorMsg === 'string') {
    return f.errorMsg;
  }
  if (f.error instanceof Error) {
    return f.error.message;
  }

  return typeof f.error === 'string' ? f.error : '';
}

function statusOf(error: unknown): number | undefined {
  const s = (error as { statusCode?: unknown } | undefined)?.statusCode;

  return typeof s === 'number' ? s : undefined;
}
