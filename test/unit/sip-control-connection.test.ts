/**
 * AppConnection, the engine's side of one drachtio control connection, over a real socket pair:
 * it never emits a frame whose leader tokens would be shifted or cut by "|", CR or LF.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameDecoder, splitPayload } from '../../src/sip/engine/control/framing.js';
import { AppConnection } from '../../src/sip/engine/control/server.js';
import { captureLogger } from '../helpers/env.js';

const cleanup: (() => void)[] = [];

afterEach(() => {
  for (const f of cleanup.splice(0)) {
    f();
  }
});

/** An AppConnection on the server end of a loopback connection, and what the client end receives. */
async function pair(): Promise<{ conn: AppConnection; frames: string[]; lines: () => Record<string, unknown>[] }> {
  const { logger, lines } = captureLogger('debug');
  const accepted = new Promise<net.Socket>((resolve) => {
    const server = net.createServer((s) => resolve(s));
    server.listen(0, '127.0.0.1', () => {
      const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      const decoder = new FrameDecoder(1 << 20);
      client.on('data', (d: Buffer) => frames.push(...decoder.push(d)));
      cleanup.push(() => {
        client.destroy();
        server.close();
      });
    });
  });
  const frames: string[] = [];
  const socket = await accepted;
  cleanup.push(() => socket.destroy());

  return { conn: new AppConnection(socket, logger), frames, lines };
}

describe('AppConnection.send', () => {
  it('refuses a frame whose leader tokens hold "|", CR or LF, logs it, and keeps sending good frames', async () => {
    const { conn, frames, lines } = await pair();
    expect(conn.send(['sip', 'network', 'call-1;from-tag=a|b', ''], 'BYE sip:x SIP/2.0\r\n\r\n')).toBe(false);
    expect(conn.send(['sip', 'network', 'call-1;from-tag=a\r\nb', ''])).toBe(false);
    expect(conn.reply('m1', ['OK', 'x\ny'])).toBe(false);
    expect(conn.reply('m2', ['OK', 'pong'])).toBe(true);
    await expect.poll(() => frames.length).toBe(1);
    expect(splitPayload(frames[0]!).tokens.slice(1)).toEqual(['response', 'm2', 'OK', 'pong']);
    expect(lines().filter((l) => l.msg === 'refusing to send a control frame: a leader token holds "|", CR or LF')).toHaveLength(3);
  });
});
