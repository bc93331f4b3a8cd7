/**
 * A SIP device's media leg (src/calls/device-media.ts, issue 12 item 3, media part) bridged to a
 * trunk leg inside one call's router, with a real mediasoup worker and real UDP peers standing for
 * the trunk and the device: RTP both ways arrives, with the sender's payload bytes, in the payload
 * types each side negotiated; the device is offered the trunk leg's codec only.
 *
 *   npx vitest run --config .config/vitest.config.ts test/integration/device-media.test.ts
 */
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallMedia, type CallMediaSettings } from '../../src/calls/call-media.js';
import { DeviceMedia } from '../../src/calls/device-media.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { negotiateAnswer } from '../../src/sip/sdp.js';
import { quietLogger } from '../helpers/env.js';

let pool: MediaWorkerPool;
let settings: CallMediaSettings;

beforeAll(async () => {
  pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 45000, rtcMaxPort: 52999, logger: quietLogger() });
  settings = { pool, listenIp: '127.0.0.1', announcedAddress: '', relayBindAddress: '127.0.0.1', relayAnnouncedAddress: '', relayPortRange: { min: 53000, max: 56999 }, rtpTimeoutMs: 30_000, logger: quietLogger() };
}, 60_000);

afterAll(async () => {
  await pool?.close();
});

async function peer(): Promise<{ sock: dgram.Socket; port: number; got: Buffer[] }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const got: Buffer[] = [];
  sock.on('message', (m) => {
    if (m.length >= 12 && (m[1]! & 0x7f) < 72) {
      got.push(m); // RTP, not RTCP (RFC 5761 §4: RTCP types 72-76 in the second byte)
    }
  });

  return { sock, port: sock.address().port, got };
}

function rtp(pt: number, seq: number, ssrc: number, fill: number): Buffer {
  const b = Buffer.alloc(12 + 160, fill);
  b[0] = 0x80;
  b[1] = pt;
  b.writeUInt16BE(seq, 2);
  b.writeUInt32BE(seq * 160, 4);
  b.writeUInt32BE(ssrc, 8);

  return b;
}

/** An RTP packet's payload (after CSRCs and a header extension, RFC 3550 §5.3.1; mediasoup may add one). */
function payloadOf(p: Buffer): Buffer {
  let off = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) {
    off += 4 + 4 * p.readUInt16BE(off + 2);
  }

  return p.subarray(off);
}

const sdp = (port: number, pts: string, rtpmaps: string[]) => ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP ${pts}`, ...rtpmaps, 'a=sendrecv', ''].join('\r\n');

describe('DeviceMedia', () => {
  it('offers the trunk leg\'s codec only and bridges RTP both ways between the trunk and the device inside the call\'s router', async () => {
    const trunkPeer = await peer();
    const devicePeer = await peer();
    const trunk = await CallMedia.create(settings, { latching: false });
    let device: DeviceMedia | undefined;
    try {
      // the trunk offers PCMA and PCMU; PCMA is chosen
      const { plan } = negotiateAnswer(sdp(trunkPeer.port, '8 0 101', ['a=rtpmap:8 PCMA/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000']), {
        allowedCodecs: ['PCMA', 'PCMU'],
        localAddress: { ipv4: '127.0.0.1' },
        localPort: trunk.localRtp.port,
      });
      expect(plan.codec.name).toBe('PCMA');
      await trunk.applyPlan(plan);
      device = await DeviceMedia.create(settings, plan.codec.name);
      expect(device.offerSdp).toMatch(/m=audio \d+ RTP\/AVP 8 101\r\n/);
      expect(device.offerSdp).not.toContain('PCMU');
      const devicePort = Number(/m=audio (\d+)/.exec(device.offerSdp)![1]);
      // the device answers PCMA (and telephone-event as 96)
      await device.bridge(sdp(devicePeer.port, '8 96', ['a=rtpmap:8 PCMA/8000', 'a=rtpmap:96 telephone-event/8000']), trunk);
      for (let i = 0; i < 50; i++) {
        trunkPeer.sock.send(rtp(8, 1000 + i, 0x1111, 0x11), trunk.localRtp.port, '127.0.0.1');
        devicePeer.sock.send(rtp(8, 2000 + i, 0x2222, 0x22), devicePort, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 20));
      }
      await expect.poll(() => devicePeer.got.length, { timeout: 5000 }).toBeGreaterThanOrEqual(45);
      await expect.poll(() => trunkPeer.got.length, { timeout: 5000 }).toBeGreaterThanOrEqual(45);
      // each side hears the other: its payload, in PCMA's payload type
      expect(devicePeer.got.every((p) => (p[1]! & 0x7f) === 8 && payloadOf(p).length === 160 && payloadOf(p).every((x) => x === 0x11))).toBe(true);
      expect(trunkPeer.got.every((p) => (p[1]! & 0x7f) === 8 && payloadOf(p).length === 160 && payloadOf(p).every((x) => x === 0x22))).toBe(true);
      const s = await device.stats();
      expect(s.deviceIn).toBeGreaterThanOrEqual(45);
      expect(s.deviceOut).toBeGreaterThanOrEqual(45);
      expect((await trunk.stats()).trunkOut).toBeGreaterThanOrEqual(45);
    } finally {
      device?.close();
      trunk.close();
      trunkPeer.sock.close();
      devicePeer.sock.close();
    }
  });

  it('refuses an answer in another codec than the trunk leg\'s (no transcoding)', async () => {
    const trunk = await CallMedia.create(settings, { latching: false });
    const device = await DeviceMedia.create(settings, 'PCMU');
    try {
      const { plan } = negotiateAnswer(sdp(30000, '0', ['a=rtpmap:0 PCMU/8000']), { allowedCodecs: ['PCMU'], localAddress: { ipv4: '127.0.0.1' }, localPort: trunk.localRtp.port });
      await trunk.applyPlan(plan);
      await expect(device.bridge(sdp(30002, '8', ['a=rtpmap:8 PCMA/8000']), trunk)).rejects.toThrow();
    } finally {
      device.close();
      trunk.close();
    }
  });
});
