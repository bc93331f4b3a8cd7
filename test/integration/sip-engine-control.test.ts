/**
 * The control port as drachtio-srf and a raw client see it: authentication, routing, ping,
 * several apps, apps that disconnect, and malformed frames.
 */
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, splitPayload } from '../../src/sip/engine/control/framing.js';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { runSipp, sipHeader, startSipp } from '../helpers/sipp.js';

let fx: EngineFixture;

beforeEach(async () => {
  fx = await startEngine();
});

afterEach(async () => {
  await fx.close();
});

/** A raw control-protocol client: sends payloads, collects decoded frames. */
async function rawClient(port: number): Promise<{ send(payload: string): void; frames: string[]; next(): Promise<string>; closed: Promise<void>; socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const frames: string[] = [];
  const waiters: ((f: string) => void)[] = [];
  const decoder = new FrameDecoder(1 << 20);
  socket.on('data', (d: Buffer) => {
    for (const f of decoder.push(d)) {
      const w = waiters.shift();
      if (w) {
        w(f);
      } else {
        frames.push(f);
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));

  return {
    socket,
    frames,
    closed,
    send: (payload) => socket.write(encodeFrame(payload)),
    next: () => {
      const f = frames.shift();

      return f !== undefined ? Promise.resolve(f) : new Promise((resolve) => waiters.push(resolve));
    },
  };
}

describe('control port', () => {
  it('refuses a wrong secret with NO and closes the connection', async () => {
    const c = await rawClient(fx.engine.control.port);
    c.send('m1|authenticate|wrong|');
    const { tokens } = splitPayload(await c.next());
    expect(tokens.slice(1)).toEqual(['response', 'm1', 'NO', 'incorrect secret']);
    await c.closed;
  });

  it('refuses anything before authenticate', async () => {
    const c = await rawClient(fx.engine.control.port);
    c.send('m1|route|invite');
    expect(splitPayload(await c.next()).tokens.slice(1, 4)).toEqual(['response', 'm1', 'NO']);
    await c.closed;
  });

  it('authenticates with host ports and a version srf pings, answers route, remove_route and ping', async () => {
    const c = await rawClient(fx.engine.control.port);
    c.send(`m1|authenticate|${fx.engine.control.secret}|tag1,tag2`);
    const auth = splitPayload(await c.next()).tokens;
    expect(auth.slice(1, 4)).toEqual(['response', 'm1', 'OK']);
    expect(auth[4]).toBe(`udp/${fx.target('udp')},tcp/${fx.target('tcp')}`);
    expect(auth[5]).toMatch(/^v0\.9\.10-ringbridge-\d+\.\d+\.\d+$/);
    expect(auth[6]).toBe(auth[4]);
    c.send('m2|route|invite');
    expect(splitPayload(await c.next()).tokens.slice(1)).toEqual(['response', 'm2', 'OK']);
    c.send('m3|ping');
    expect(splitPayload(await c.next()).tokens.slice(1)).toEqual(['response', 'm3', 'OK', 'pong']);
    c.send('m4|remove_route|invite');
    expect(splitPayload(await c.next()).tokens.slice(1)).toEqual(['response', 'm4', 'OK']);
    // every frame from the server has its own fresh id
    c.socket.destroy();
  });

  it('closes a connection that sends a malformed frame, and keeps serving others', async () => {
    const c = await rawClient(fx.engine.control.port);
    c.socket.write('12x#garbage');
    await c.closed;
    fx.srf.invite((_req, res) => res.send(486));
    const r = await runSipp({ scenario: 'uac-expect-486', target: fx.target() });
    expect(r.exitCode, r.describe()).toBe(0);
  });

  it('counts frame length in bytes, not characters (UTF-8 in the app response)', async () => {
    fx.srf.invite((_req, res) => res.send(486, { headers: { 'X-Reply': 'Grüße 👋 日本' } }));
    const r = await runSipp({ scenario: 'uac-expect-486', target: fx.target() });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(sipHeader(r.received(486)[0]!, 'X-Reply')).toBe('Grüße 👋 日本');
  });

  it('routes new INVITEs round-robin over the apps that registered for them', async () => {
    const second = await fx.connectApp();
    const hits: string[] = [];
    fx.srf.invite((_req, res) => {
      hits.push('a');
      res.send(486);
    });
    second.invite((_req, res) => {
      hits.push('b');
      res.send(486);
    });
    const r = await runSipp({ scenario: 'uac-expect-486', target: fx.target(), calls: 4, rate: 20 });
    expect(r.exitCode, r.describe()).toBe(0);
    expect(hits.sort()).toEqual(['a', 'a', 'b', 'b']);
  });

  it('answers 480 to the unanswered INVITE of an app that disconnects', async () => {
    fx.srf.invite(() => undefined); // never answers
    const caller = startSipp({ scenario: 'uac-expect-480', target: fx.target() });
    await caller.ready;
    await expect.poll(() => fx.engine.stats().sizes.incoming, { timeout: 5000 }).toBe(1);
    fx.srf.disconnect();
    const r = await caller.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received(480, 'INVITE')).toHaveLength(1);
  });

  it('ends the dialogs of an app that disconnects with BYE', async () => {
    fx.srf.invite((req, res) => void fx.srf.createUAS(req, res, { localSdp: sdp() }));
    const caller = startSipp({ scenario: 'uac-invite-wait-bye', target: fx.target() });
    await caller.ready;
    // wait until the call is up (the ACK arrived and the 2xx is no longer pending)
    await expect.poll(() => fx.engine.stats().counters.requestsIn.ACK ?? 0, { timeout: 5000 }).toBe(1);
    fx.srf.disconnect();
    const r = await caller.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(sipHeader(r.received('BYE')[0]!, 'Reason')).toBe('SIP ;cause=200 ;text="application disconnected"');
    expect(fx.engine.stats().sizes.dialogs).toBe(0);
  });
});
