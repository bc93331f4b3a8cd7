/** Reading node-pushnotifications' result arrays into push results (through error-table.ts). */
import type PushNotifications from 'node-pushnotifications';
import { classifyPnFailure, type PnMethod } from './error-table.js';
import { PushProtocolError, type PushResult } from './provider.js';

/**
 * The result of a one-recipient node-pushnotifications send.
 * @throws PushProtocolError when the library reports no entry for `method` (wrong registration type)
 */
export function resultOfPnSend(method: PnMethod, results: PushNotifications.Result[]): PushResult {
  const entry = results.find((r) => r.method === method);
  const m = entry?.message[0];
  if (!entry || !m) {
    throw new PushProtocolError(`node-pushnotifications reported no ${method} result (methods: ${results.map((r) => r.method).join(', ') || 'none'})`);
  }
  if (entry.success > 0 && !m.error) {
    return m.messageId ? { status: 'delivered', providerMessageId: m.messageId } : { status: 'delivered' };
  }

  return classifyPnFailure(method, { errorMsg: m.errorMsg, error: m.error });
}
