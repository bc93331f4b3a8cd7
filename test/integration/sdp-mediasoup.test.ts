/**
 * The SDP module's mediasoup parameters against a real worker: for plans negotiated from trunk
 * SDP, a router created with src/media/codecs.ts accepts a Producer on a PlainTransport with
 * toProducerRtpParameters(plan), and a Consumer with toRtpCapabilities(plan) whose payload types
 * consumerPayloadTypeMap() maps back to the trunk's.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type types as ms } from 'mediasoup';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import {
  buildOffer,
  consumerPayloadTypeMap,
  negotiateAnswer,
  negotiateFromAnswer,
  toProducerRtpParameters,
  toRtpCapabilities,
  type MediaPlan,
} from '../../src/sip/sdp.js';
import { projectRoot } from '../../src/util/paths.js';
import { quietLogger } from '../helpers/env.js';

const FIXTURES = path.join(projectRoot(), 'test', 'fixtures', 'sdp', 'trunk');
const LOCAL = { localAddress: { ipv4: '192.0.2.10', ipv6: '2001:db8::10' }, localPort: 40000 };

function answered(file: string, allowedCodecs: Array<'PCMU' | 'PCMA' | 'G722' | 'opus'>): MediaPlan {
  return negotiateAnswer(fs.readFileSync(path.join(FIXTURES, file), 'utf8'), { allowedCodecs, ...LOCAL }).plan;
}

/** Our opus offer (111, telephone-event 110/48000) answered with opus as 107 and telephone-event as 96. */
function renumbered(): MediaPlan {
  const offer = buildOffer({ codecs: ['opus', 'PCMU'], localAddress: '192.0.2.10', localPort: 40000 }).offerSdp;
  const answer = [
    'v=0',
    'o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.20',
    's=FreeSWITCH',
    'c=IN IP4 198.51.100.20',
    't=0 0',
    'm=audio 24600 RTP/AVP 107 96',
    'a=rtpmap:107 opus/48000/2',
    'a=fmtp:107 useinbandfec=1; minptime=10; maxplaybackrate=16000; sprop-stereo=0',
    'a=rtpmap:96 telephone-event/48000',
    'a=fmtp:96 0-16',
    '',
  ].join('\r\n');

  return negotiateFromAnswer(offer, answer);
}

const CASES: Array<[string, () => MediaPlan]> = [
  ['PCMU + telephone-event/8000 (Asterisk)', () => answered('asterisk-offer-pcmu-pcma-g722.sdp', ['PCMU'])],
  ['PCMA + telephone-event/8000 with an a=ssrc (Kamailio/rtpengine)', () => answered('kamailio-rtpengine-offer-pcma-g729-ssrc.sdp', ['PCMA'])],
  ['G722 + telephone-event/8000 (FreeSWITCH)', () => answered('freeswitch-offer-g722-opus-cn-rtcp.sdp', ['G722'])],
  ['opus 102 with fmtp + telephone-event/48000 100 (FreeSWITCH)', () => answered('freeswitch-offer-g722-opus-cn-rtcp.sdp', ['opus'])],
  ['opus 96 + telephone-event/48000 97 over IPv6 (FreeSWITCH)', () => answered('freeswitch-offer-opus-first-ipv6.sdp', ['opus'])],
  ['PCMU without telephone-event (RFC 2543 hold offer)', () => answered('cisco-rfc2543-hold.sdp', ['PCMU'])],
  ['opus renumbered by the answer (receive 111/110, send 107/96)', renumbered],
];

/** An RTP packet (RFC 3550 §5.1) with a payload of n bytes. */
function rtpPacket(payloadType: number, seq: number, ssrc: number, n: number): Buffer {
  const b = Buffer.alloc(12 + n, 0xd5);
  b[0] = 0x80;
  b[1] = payloadType & 0x7f;
  b.writeUInt16BE(seq, 2);
  b.writeUInt32BE(seq * 160, 4);
  b.writeUInt32BE(ssrc, 8);

  return b;
}

async function udpSocket(): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));

  return sock;
}

describe('SDP plans in a real mediasoup router', () => {
  let pool: MediaWorkerPool;
  let router: ms.Router;

  beforeAll(async () => {
    pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 39000, rtcMaxPort: 39999, logger: quietLogger() });
    router = await pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  });

  afterAll(async () => {
    await pool?.close();
  });

  it.each(CASES)('a PlainTransport Producer and Consumer for %s are accepted, with the trunk payload types', async (_name, make) => {
    const plan = make();
    const fromTrunk = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: plan.remote.rtcpMux, comedia: true });
    const toTrunk = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: plan.remote.rtcpMux, comedia: true });
    try {
      const rtpParameters = toProducerRtpParameters(plan, { ssrc: plan.remote.ssrc ?? 1234 });
      const producer = await fromTrunk.produce({ kind: 'audio', rtpParameters });
      expect(producer.rtpParameters.codecs.map((c) => [c.mimeType, c.payloadType, c.clockRate])).toEqual([
        [plan.codec.mimeType, plan.codec.localPayloadType, plan.codec.clockRate],
        ...(plan.telephoneEvent ? [['audio/telephone-event', plan.telephoneEvent.localPayloadType, plan.telephoneEvent.clockRate]] : []),
      ]);

      const rtpCapabilities = toRtpCapabilities(plan);
      expect(router.canConsume({ producerId: producer.id, rtpCapabilities })).toBe(true);
      const consumer = await toTrunk.consume({ producerId: producer.id, rtpCapabilities });
      expect(consumer.rtpParameters.codecs.map((c) => c.mimeType.toLowerCase())).toEqual([plan.codec.mimeType.toLowerCase(), ...(plan.telephoneEvent ? ['audio/telephone-event'] : [])]);
      // mediasoup sends with the router's numbers; the relay rewrites them to the trunk's
      const map = consumerPayloadTypeMap(plan, consumer.rtpParameters);
      expect([...map.values()]).toEqual([plan.codec.payloadType, ...(plan.telephoneEvent ? [plan.telephoneEvent.payloadType] : [])]);
      expect(map.get(consumer.rtpParameters.codecs[0]!.payloadType)).toBe(plan.codec.payloadType);
    } finally {
      fromTrunk.close();
      toTrunk.close();
    }
  });

  it.each([CASES[0]!, CASES[6]!])('RTP from the trunk for %s reaches the trunk-side Consumer, whose payload types map to the trunk\'s', async (_name, make) => {
    const plan = make();
    const ssrc = 0x1234abcd;
    const fromTrunk = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: true });
    const toTrunk = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
    const trunk = await udpSocket();
    const receiver = await udpSocket();
    try {
      await toTrunk.connect({ ip: '127.0.0.1', port: receiver.address().port });
      const producer = await fromTrunk.produce({ kind: 'audio', rtpParameters: toProducerRtpParameters(plan, { ssrc }) });
      const consumer = await toTrunk.consume({ producerId: producer.id, rtpCapabilities: toRtpCapabilities(plan) });
      const map = consumerPayloadTypeMap(plan, consumer.rtpParameters);
      const got = new Promise<number>((resolve) => {
        receiver.on('message', (msg: Buffer) => {
          const pt = msg[1]! & 0x7f;
          if (msg.length > 12 && !(pt >= 72 && pt <= 76)) {
            resolve(pt);
          }
        });
      });
      let seq = 1;
      const sender = setInterval(() => {
        for (let i = 0; i < 5; i++) {
          trunk.send(rtpPacket(plan.codec.localPayloadType, seq++, ssrc, plan.codec.name === 'opus' ? 60 : 160), fromTrunk.tuple.localPort, '127.0.0.1');
        }
      }, 20);
      try {
        const routerPt = await Promise.race([got, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('no RTP reached the consumer')), 5000))]);
        expect(routerPt).toBe(consumer.rtpParameters.codecs[0]!.payloadType);
        expect(map.get(routerPt)).toBe(plan.codec.payloadType);
        const stats = await producer.getStats();
        expect(stats[0]?.packetCount).toBeGreaterThan(0);
      } finally {
        clearInterval(sender);
      }
    } finally {
      trunk.close();
      receiver.close();
      fromTrunk.close();
      toTrunk.close();
    }
  });
});
