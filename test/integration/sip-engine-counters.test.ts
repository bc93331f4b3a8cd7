/**
 * The engine's request/response counters (exported as ringbridge_sip_*_total): requests counted by
 * method, methods a peer invents counted as OTHER so that neither the table nor a metric's labels
 * grow without bound.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { type EngineFixture, startEngine } from '../helpers/engine.js';
import { RawSipPeer, sipRequest } from '../helpers/raw-sip.js';

let fx: EngineFixture | undefined;
let peer: RawSipPeer | undefined;

afterEach(async () => {
  peer?.close();
  await fx?.close();
  fx = undefined;
});

describe('SIP engine counters', () => {
  it('counts OPTIONS by name and 50 invented methods as OTHER, with their responses by status', async () => {
    fx = await startEngine();
    fx.srf.use('options', (_req, res) => res.send(200));
    peer = await RawSipPeer.udp({ address: '127.0.0.1', port: fx.port('udp') });
    const send = async (method: string): Promise<number> => {
      const callId = randomBytes(6).toString('hex');
      peer!.send(sipRequest({ method, uri: `sip:x@${fx!.target()}`, callId, fromTag: 'f1', cseq: 1, viaPort: peer!.port }));
      const r = await peer!.waitFor((m) => m.msg.callId === callId && !m.msg.isRequest && m.msg.status >= 200, 3000, `the final response to ${method}`);

      return r.msg.status;
    };
    expect(await send('OPTIONS')).toBe(200);
    for (let i = 0; i < 50; i++) {
      expect(await send(`X${i}FOO`)).toBeGreaterThanOrEqual(400);
    }
    const c = fx.engine.stats().counters;
    expect(c.requestsIn.OPTIONS).toBe(1);
    expect(c.requestsIn.OTHER).toBe(50);
    expect(Object.keys(c.requestsIn).sort()).toEqual(['OPTIONS', 'OTHER']);
    expect(c.responsesOut['200']).toBe(1);
    expect(Object.keys(c.responsesOut).every((k) => /^[1-6]\d\d$/.test(k))).toBe(true);
  });
});
