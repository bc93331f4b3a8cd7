/**
 * The node-pushnotifications error table (src/push/error-table.ts): each row's action, and the
 * rule that anything unknown is rejected, never a dead token.
 */
import { describe, expect, it } from 'vitest';
import { classifyPnFailure, findPnErrorRow, PN_ERROR_TABLE, type PnMethod } from '../../src/push/error-table.js';

/** An error as web-push throws it (WebPushError keeps the status and headers). */
function webPushError(statusCode: number, headers: Record<string, string> = {}): { errorMsg: string; error: Error } {
  return { errorMsg: 'Received unexpected response code', error: Object.assign(new Error('Received unexpected response code'), { statusCode, headers, body: '' }) };
}

describe('node-pushnotifications error table', () => {
  it.each<[PnMethod, string, string, string]>([
    // APNs reasons as node-pushnotifications reports them (errorMsg = reason)
    ['apn', 'Unregistered', 'dead-token', 'Unregistered'],
    ['apn', 'BadDeviceToken', 'rejected', 'BadDeviceToken'],
    ['apn', 'DeviceTokenNotForTopic', 'rejected', 'DeviceTokenNotForTopic'],
    ['apn', 'TopicDisallowed', 'rejected', 'TopicDisallowed'],
    ['apn', 'PayloadTooLarge', 'rejected', 'PayloadTooLarge'],
    ['apn', 'InvalidProviderToken', 'rejected', 'InvalidProviderToken'],
    ['apn', 'ExpiredToken', 'rejected', 'ExpiredToken'],
    ['apn', 'ExpiredProviderToken', 'retry-later', 'ExpiredProviderToken'],
    ['apn', 'TooManyRequests', 'retry-later', 'TooManyRequests'],
    ['apn', 'TooManyProviderTokenUpdates', 'retry-later', 'TooManyProviderTokenUpdates'],
    ['apn', 'Error 500, stream ended unexpectedly', 'retry-later', 'InternalServerError'],
    ['apn', 'ServiceUnavailable', 'retry-later', 'ServiceUnavailable'],
    ['apn', 'stream ended unexpectedly with status 503 and empty body', 'retry-later', 'http-status'],
    ['apn', 'stream ended unexpectedly with status 400 and empty body', 'rejected', 'http-status'],
    ['apn', 'apn write timeout', 'retry-later', 'timeout'],
    ['apn', 'apn write failed: connect ECONNREFUSED 127.0.0.1:1', 'retry-later', 'transport'],
    // FCM: Google's messages and firebase-admin's default texts
    ['fcm', 'Requested entity was not found.', 'dead-token', 'UNREGISTERED'],
    ['fcm', 'The provided registration token is not registered. A previously valid registration token can be unregistered', 'dead-token', 'UNREGISTERED'],
    ['fcm', 'The registration token is not a valid FCM registration token', 'dead-token', 'INVALID_ARGUMENT:token'],
    ['fcm', 'Invalid registration token provided. Make sure it matches the registration token the client app receives', 'dead-token', 'INVALID_ARGUMENT:token'],
    ['fcm', 'SenderId mismatch', 'dead-token', 'SENDER_ID_MISMATCH'],
    ['fcm', "Invalid value at 'message.android.ttl'", 'rejected', 'unclassified'],
    ['fcm', 'Quota exceeded for quota metric of service fcm.googleapis.com.', 'retry-later', 'QUOTA_EXCEEDED'],
    ['fcm', 'The service is currently unavailable.', 'retry-later', 'UNAVAILABLE'],
    ['fcm', 'Internal error encountered.', 'retry-later', 'INTERNAL'],
    ['fcm', 'timeout of 10000ms exceeded', 'retry-later', 'transport'],
    ['fcm', 'Auth error from APNS or Web Push Service', 'rejected', 'THIRD_PARTY_AUTH_ERROR'],
    ['fcm', 'something nobody documented', 'rejected', 'unclassified'],
  ])('%s "%s" → %s (%s)', (method, msg, status, reason) => {
    const r = classifyPnFailure(method, { errorMsg: msg, error: new Error(msg) });
    expect(r.status).toBe(status);
    expect('reason' in r ? r.reason : undefined).toBe(reason);
  });

  it.each<[number, string, string]>([
    [410, 'dead-token', 'Gone'],
    [404, 'dead-token', 'NotFound'],
    [413, 'rejected', 'PayloadTooLarge'],
    [403, 'rejected', 'VapidRejected'],
    [400, 'rejected', 'BadRequest'],
    [429, 'retry-later', 'TooManyRequests'],
    [503, 'retry-later', 'http-status'],
    [418, 'rejected', 'unclassified'],
  ])('webPush HTTP %i → %s (%s)', (status, action, reason) => {
    const r = classifyPnFailure('webPush', webPushError(status));
    expect(r.status).toBe(action);
    expect('reason' in r ? r.reason : undefined).toBe(reason);
  });

  it('reads Retry-After where the library keeps it (web-push headers)', () => {
    expect(classifyPnFailure('webPush', webPushError(429, { 'retry-after': '7' }))).toEqual({ status: 'retry-later', retryAfterMs: 7000, reason: 'TooManyRequests' });
  });

  it('matches strings exactly: a reason inside a longer text is not that reason', () => {
    expect(findPnErrorRow('apn', { errorMsg: 'NotUnregistered' })).toBeUndefined();
    expect(classifyPnFailure('apn', { errorMsg: 'Unregistered ' }).status).toBe('rejected');
  });

  it('has no dead-token row for a configuration or payload problem', () => {
    const dead = PN_ERROR_TABLE.filter((r) => r.action === 'dead-token').map((r) => r.reason);
    expect(new Set(dead)).toEqual(new Set(['Unregistered', 'UNREGISTERED', 'INVALID_ARGUMENT:token', 'SENDER_ID_MISMATCH', 'Gone', 'NotFound']));
  });
});
