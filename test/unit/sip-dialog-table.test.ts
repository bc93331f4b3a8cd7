/**
 * The engine's dialog table: a dialog id or a (Call-ID, local tag) pair belongs to one dialog at a
 * time, so a second request can never take over a live dialog.
 */
import { describe, expect, it } from 'vitest';
import { Dialog, DialogTable } from '../../src/sip/engine/core/state.js';

function dialog(o: { role?: 'uas' | 'uac'; callId?: string; localTag?: string; remoteTag?: string } = {}): Dialog {
  return new Dialog({
    role: o.role ?? 'uas',
    kind: 'invite',
    callId: o.callId ?? 'c1@example.com',
    localTag: o.localTag ?? 'local1',
    remoteTag: o.remoteTag ?? 'remote1',
    localUri: '<sip:a@example.com>;tag=local1',
    remoteUri: '<sip:b@example.com>;tag=remote1',
    localContact: '<sip:127.0.0.1:5060>',
    remoteTarget: 'sip:b@127.0.0.1:5070',
    routeSet: [],
    localSeq: 1,
    owner: undefined,
  });
}

describe('DialogTable', () => {
  it('refuses a second dialog with the same drachtio id, keeping the first', () => {
    const t = new DialogTable();
    const first = dialog();
    expect(t.add(first)).toBe(true);
    const second = dialog({ localTag: 'other' }); // same Call-ID and remote (From) tag: same id
    expect(second.id).toBe(first.id);
    expect(t.add(second)).toBe(false);
    expect(t.get(first.id)).toBe(first);
    expect(t.byLocalTag('c1@example.com', 'other')).toBeUndefined();
    expect(t.size).toBe(1);
  });

  it('refuses a dialog whose Call-ID and local tag are taken, and accepts the same dialog twice', () => {
    const t = new DialogTable();
    const first = dialog();
    expect(t.add(first)).toBe(true);
    expect(t.add(first)).toBe(true);
    expect(t.add(dialog({ remoteTag: 'remote2' }))).toBe(false);
    expect(t.byLocalTag('c1@example.com', 'local1')).toBe(first);
    t.remove(first);
    expect(t.add(dialog({ remoteTag: 'remote2' }))).toBe(true);
  });
});
