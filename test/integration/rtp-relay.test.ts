/**
 * The trunk-leg RTP relay against a real mediasoup worker and real UDP sockets: node sockets play
 * the SIP trunk and the agent, a second PlainTransport consumes the trunk's Producer to observe
 * what mediasoup forwards.
 *
 * RB_RTP_RELAY_BENCH=1 also runs the per-packet cost measurement (100k packets each way).
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { type types as ms } from 'mediasoup';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { buildRtpPacket, parseRtpHeader, type RtpHeader, rtpHeaderLength } from '../../src/media/rtp/rtp-packet.js';
import { type RtcpRewrite, rewriteRtcp } from '../../src/media/rtp/rtcp-packet.js';
import { readTelephoneEvent, type TelephoneEvent } from '../../src/media/rtp/telephone-event.js';
import { type DtmfEvent, RtpRelay, RtpRelayError } from '../../src/media/rtp-relay.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import { captureLogger, quietLogger } from '../helpers/env.js';

const LO = '127.0.0.1';
const RELAY_PORTS = { min: 37000, max: 37999 };
const TE_PT = 101;
const PRODUCER_CODECS: ms.RtpCodecParameters[] = [
  { mimeType: 'audio/PCMU', payloadType: 0, clockRate: 8000 },
  { mimeType: 'audio/telephone-event', payloadType: TE_PT, clockRate: 8000 },
];

/** A UDP socket on loopback that keeps what it receives. */
interface Inbox {
  socket: dgram.Socket;
  port: number;
  packets: { data: Buffer; port: number }[];
  /** Parsed RTP headers (and the RFC 4733 payload when the PT is `eventPt`, default 101) of what came. */
  rtp(eventPt?: number): (RtpHeader & { event?: TelephoneEvent })[];
  send(data: Buffer, port: number): Promise<void>;
}

async function inbox(): Promise<Inbox> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, LO, resolve));
  const packets: Inbox['packets'] = [];
  socket.on('message', (data, rinfo) => packets.push({ data, port: rinfo.port }));
  cleanups.push(() => socket.close());

  return {
    socket,
    port: socket.address().port,
    packets,
    rtp: (eventPt = TE_PT) =>
      packets.map(({ data }) => {
        const h = parseRtpHeader(data)!;
        return h.payloadType === eventPt ? { ...h, event: readTelephoneEvent(data, h.payloadOffset)! } : h;
      }),
    send: (data, port) => new Promise<void>((resolve, reject) => socket.send(data, port, LO, (err) => (err ? reject(err) : resolve()))),
  };
}

/** A PCMU packet whose first payload byte is `index` (to check order). */
function pcmu(ssrc: number, seq: number, ts: number, index: number): Buffer {
  return buildRtpPacket({ payloadType: 0, sequenceNumber: seq, timestamp: ts, ssrc, payload: Buffer.alloc(160, index & 0xff) });
}

/** The UDP payloads of a classic pcap file of Ethernet/IPv4/UDP frames (what sipp ships). */
function pcapUdpPayloads(file: string): Buffer[] {
  const b = fs.readFileSync(file);
  const le = b.readUInt32LE(0) === 0xa1b2c3d4;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  expect(u32(20)).toBe(1); // LINKTYPE_ETHERNET
  const out: Buffer[] = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const frame = b.subarray(off + 16, off + 16 + u32(off + 8));
    off += 16 + frame.length;
    if (frame.readUInt16BE(12) !== 0x0800 || frame[14 + 9] !== 17) {
      continue;
    }
    const udp = frame.subarray(14 + (frame[14]! & 0x0f) * 4);
    out.push(Buffer.from(udp.subarray(8, udp.readUInt16BE(4))));
  }

  return out;
}

let cleanups: (() => unknown)[] = [];
let pool: MediaWorkerPool;
let router: ms.Router;

beforeAll(async () => {
  pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 38000, rtcMaxPort: 38999, logger: quietLogger() });
  router = await pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
});

afterAll(async () => {
  await pool.close();
});

afterEach(async () => {
  for (const fn of cleanups.reverse()) {
    await fn();
  }
  cleanups = [];
});

async function relayOf(opts: Partial<Parameters<typeof RtpRelay.create>[0]> = {}): Promise<RtpRelay> {
  const relay = await RtpRelay.create({ listenAddress: LO, portRange: RELAY_PORTS, rtpTimeoutMs: -1, logger: quietLogger(), ...opts });
  cleanups.push(() => relay.close());

  return relay;
}

/**
 * A call leg as the call layer builds it: relay, PlainTransport on loopback connected to it, the
 * trunk's Producer with the relay's SSRC, and an observer consuming that Producer into a socket.
 */
async function leg(opts: Partial<Parameters<typeof RtpRelay.create>[0]> = {}) {
  const relay = await relayOf(opts);
  const plain = await router.createPlainTransport({ listenIp: { ip: LO }, rtcpMux: false, comedia: false });
  cleanups.push(() => plain.close());
  await plain.connect(relay.mediasoupSide);
  relay.setMediasoupTarget({ port: plain.tuple.localPort, rtcpPort: plain.rtcpTuple!.localPort });
  const producer = await plain.produce({ kind: 'audio', rtpParameters: { codecs: PRODUCER_CODECS, encodings: [{ ssrc: relay.producerSsrc }] } });
  const sink = await inbox();
  const observer = await router.createPlainTransport({ listenIp: { ip: LO }, rtcpMux: true, comedia: false });
  cleanups.push(() => observer.close());
  await observer.connect({ ip: LO, port: sink.port });
  await observer.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities });
  const trunk = await inbox();
  const trunkRtcp = await inbox();
  await delay(20); // the loopback sockets connect to the PlainTransport

  return { relay, plain, producer, sink, trunk, trunkRtcp };
}

/** An agent: a UDP socket producing PCMU (+ telephone-event) into mediasoup, consumed on the relay's PlainTransport. */
async function agentInto(plain: ms.PlainTransport, ssrc: number) {
  const t = await router.createPlainTransport({ listenIp: { ip: LO }, rtcpMux: true, comedia: true });
  cleanups.push(() => t.close());
  const producer = await t.produce({ kind: 'audio', rtpParameters: { codecs: PRODUCER_CODECS, encodings: [{ ssrc }] } });
  const codecs = router.rtpCapabilities.codecs!.filter((c) => c.mimeType === 'audio/PCMU' || (c.mimeType === 'audio/telephone-event' && c.clockRate === 8000));
  const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: { codecs, headerExtensions: [] } });
  const socket = await inbox();
  let seq = 3000;
  let ts = 70_000;
  const sendAudio = async (n = 1) => {
    for (let i = 0; i < n; i++) {
      await socket.send(pcmu(ssrc, seq++, (ts += 160), seq), t.tuple.localPort);
    }
  };

  return { transport: t, producer, consumer, sendAudio, socket, nextSeq: () => seq++, port: t.tuple.localPort };
}

describe('RtpRelay with mediasoup', () => {
  it('forwards a trunk stream that changes SSRC (and sequence/timestamp base) mid-call: all packets reach the consumer, in order', async () => {
    const { relay, producer, sink, trunk } = await leg();
    const restarts: unknown[] = [];
    relay.on('trunkrestart', (info) => restarts.push(info));
    relay.setRemote({ address: LO, port: trunk.port });
    const A = 0x0a0a0a0a;
    const B = 0x0b0b0b0b;
    for (let i = 0; i < 50; i++) {
      await trunk.send(pcmu(A, 1000 + i, 5000 + 160 * i, i), relay.publicSide.port);
      await delay(1);
    }
    for (let i = 0; i < 50; i++) {
      // after "hold": new SSRC, far-away sequence number and timestamp
      await trunk.send(pcmu(B, 40000 + i, 900_000 + 160 * i, 50 + i), relay.publicSide.port);
      await delay(1);
    }
    await expect.poll(() => sink.packets.length, { timeout: 5000 }).toBe(100);
    const got = sink.rtp();
    expect(got.map((h, i) => sink.packets[i]!.data[h.payloadOffset])).toEqual([...Array(100).keys()]);
    for (let i = 1; i < got.length; i++) {
      expect((got[i]!.sequenceNumber - got[i - 1]!.sequenceNumber) & 0xffff).toBe(1);
    }
    expect(new Set(got.map((h) => h.ssrc)).size).toBe(1);
    const [stats] = (await producer.getStats()) as { packetCount: number }[];
    expect(stats!.packetCount).toBe(100);
    expect(restarts).toEqual([
      { previous: undefined, ssrc: A, reason: 'ssrc' },
      { previous: A, ssrc: B, reason: 'ssrc' },
    ]);
    expect(relay.stats).toMatchObject({ trunkSsrc: B, trunkRestarts: 1, fromTrunk: { rtpPackets: 100, rtpBytes: 100 * 172 } });
  });

  it('forwards the agent to the trunk, follows setRemote() to a new port, drops while sendEnabled is false and closes the sequence gap', async () => {
    const { relay, plain, trunk } = await leg();
    const agent = await agentInto(plain, 0xa6e47);
    const moved = await inbox();
    relay.setRemote({ address: LO, port: trunk.port });
    await agent.sendAudio(10);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(10);
    expect(trunk.packets.every((p) => p.port === relay.publicSide.port)).toBe(true); // symmetric RTP: sent from the port we announce

    relay.setRemote({ address: LO, port: moved.port }); // re-INVITE moved the media
    await agent.sendAudio(10);
    await expect.poll(() => moved.packets.length, { timeout: 5000 }).toBe(10);
    expect(trunk.packets.length).toBe(10);

    relay.sendEnabled = false; // hold
    await agent.sendAudio(10);
    await delay(100);
    expect(moved.packets.length).toBe(10);
    expect(relay.stats.dropped.toTrunk.hold).toBe(10);

    relay.sendEnabled = true;
    await agent.sendAudio(5);
    await expect.poll(() => moved.packets.length, { timeout: 5000 }).toBe(15);
    const seqs = [...trunk.rtp(), ...moved.rtp()].map((h) => h.sequenceNumber);
    for (let i = 1; i < seqs.length; i++) {
      expect((seqs[i]! - seqs[i - 1]!) & 0xffff).toBe(1);
    }
    expect(relay.stats.toTrunk.rtpPackets).toBe(25);
  });

  it("maps the router's payload types to the trunk's with setPayloadTypeMap() (Opus: dynamic in the router, 96 in the trunk's SDP)", async () => {
    const { relay, plain, trunk } = await leg();
    const t = await router.createPlainTransport({ listenIp: { ip: LO }, rtcpMux: true, comedia: true });
    cleanups.push(() => t.close());
    const opus = { mimeType: 'audio/opus', clockRate: 48000, channels: 2 };
    const producer = await t.produce({ kind: 'audio', rtpParameters: { codecs: [{ ...opus, payloadType: 111 }], encodings: [{ ssrc: 0x0b05 }] } });
    const caps = router.rtpCapabilities.codecs!.filter((c) => c.mimeType === 'audio/opus');
    const consumer = await plain.consume({ producerId: producer.id, rtpCapabilities: { codecs: caps, headerExtensions: [] } });
    const routerPt = consumer.rtpParameters.codecs[0]!.payloadType;
    expect(routerPt).not.toBe(96);
    relay.setRemote({ address: LO, port: trunk.port });
    const agent = await inbox();
    // an Opus frame: TOC 0xfc (CELT fullband 20 ms, mono, one frame), then data
    const frame = (seq: number) => buildRtpPacket({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960, ssrc: 0x0b05, payload: Buffer.from([0xfc, 0xff, 0xfe]) });
    await agent.send(frame(1), t.tuple.localPort);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(1);
    relay.setPayloadTypeMap(new Map([[routerPt, 96]]));
    await agent.send(frame(2), t.tuple.localPort);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(2);
    relay.setPayloadTypeMap(new Map());
    await agent.send(frame(3), t.tuple.localPort);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(3);
    expect(trunk.rtp().map((h) => [h.payloadType, h.marker])).toEqual([
      [routerPt, false],
      [96, false],
      [routerPt, false],
    ]);
    expect(() => relay.setPayloadTypeMap(new Map([[128, 0]]))).toThrow(TypeError);
  });

  it("sendDtmf('19#') while the agent talks: RFC 4733 events in the agent's stream, same SSRC, sequence +1 throughout, 3 end packets each", async () => {
    const { relay, plain, trunk } = await leg();
    const agent = await agentInto(plain, 0xa6e49);
    const agentSsrc = agent.consumer.rtpParameters.encodings![0]!.ssrc!;
    relay.setRemote({ address: LO, port: trunk.port });
    relay.setTelephoneEventPt(TE_PT);
    let talking = true;
    const talk = (async () => {
      while (talking) {
        await agent.sendAudio();
        await delay(20);
      }
    })();
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBeGreaterThan(5);
    const played = await relay.sendDtmf('19#', { durationMs: 100, gapMs: 60 });
    await delay(200);
    talking = false;
    await talk;
    await delay(50);

    expect(played).toBe(true);
    const got = trunk.rtp();
    expect(new Set(got.map((h) => h.ssrc))).toEqual(new Set([agentSsrc]));
    for (let i = 1; i < got.length; i++) {
      expect((got[i]!.sequenceNumber - got[i - 1]!.sequenceNumber) & 0xffff, `packet ${i}`).toBe(1);
    }
    const events = got.flatMap((h, i) => (h.event ? [{ ...h, i }] : []));
    const byTs = new Map<number, typeof events>();
    for (const e of events) {
      byTs.set(e.timestamp, [...(byTs.get(e.timestamp) ?? []), e]);
    }
    expect([...byTs.values()].map((evs) => evs[0]!.event!.event)).toEqual([1, 9, 11]);
    for (const evs of byTs.values()) {
      // marker on the first packet only; 20 ms updates with growing duration, then the end packet 3 times
      expect(evs.map((e) => e.marker)).toEqual([true, false, false, false, false, false, false]);
      expect(evs.map((e) => e.event!.duration)).toEqual([160, 320, 480, 640, 800, 800, 800]);
      expect(evs.map((e) => e.event!.end)).toEqual([false, false, false, false, true, true, true]);
      expect(evs.every((e) => e.event!.volume === 10)).toBe(true);
      // contiguous: no agent audio in the middle of an event
      expect(evs[evs.length - 1]!.i - evs[0]!.i).toBe(evs.length - 1);
      // the event starts at the stream's media time: after the audio before it, before the audio after it
      const before = got[evs[0]!.i - 1]!;
      const after = got[evs[evs.length - 1]!.i + 1]!;
      expect(before.event).toBeUndefined();
      expect(((evs[0]!.timestamp - before.timestamp) | 0) / 8).toBeGreaterThanOrEqual(0);
      expect(((evs[0]!.timestamp - before.timestamp) | 0) / 8).toBeLessThan(60); // ms
      expect((after.timestamp - evs[0]!.timestamp) | 0).toBeGreaterThan(0);
    }
    expect(relay.stats.dtmfSent).toBe(3);
    expect(relay.stats.dropped.toTrunk.dtmf).toBeGreaterThan(0);
  });

  it('sendDtmf() with a muted agent starts its own stream: random SSRC, contiguous sequence, one timestamp per event', async () => {
    const { relay, trunk } = await leg();
    relay.setRemote({ address: LO, port: trunk.port });
    expect(await relay.sendDtmf('5*', { payloadType: 96, durationMs: 60, gapMs: 0, volume: 7 })).toBe(true);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(2 * 5);
    const got = trunk.rtp(96);
    expect(new Set(got.map((h) => h.ssrc)).size).toBe(1);
    expect(new Set(got.map((h) => h.payloadType))).toEqual(new Set([96]));
    for (let i = 1; i < got.length; i++) {
      expect((got[i]!.sequenceNumber - got[i - 1]!.sequenceNumber) & 0xffff).toBe(1);
    }
    expect(got.map((h) => h.event!.event)).toEqual([5, 5, 5, 5, 5, 10, 10, 10, 10, 10]);
    expect(got.map((h) => h.event!.duration)).toEqual([160, 320, 480, 480, 480, 160, 320, 480, 480, 480]);
    expect(new Set(got.slice(0, 5).map((h) => h.timestamp)).size).toBe(1);
    expect(got[5]!.timestamp - got[0]!.timestamp).toBeGreaterThanOrEqual(8 * 90); // about 100 ms later (5 packets 20 ms apart)
    expect(() => relay.sendDtmf('1x')).toThrow(TypeError);
    expect(() => relay.sendDtmf('1')).toThrow(/payloadType is required/);
    expect(() => relay.sendDtmf('1', { payloadType: 96, durationMs: 9000 })).toThrow(/durationMs/);
  });

  it("decodes the trunk's RFC 4733 events (sipp's captured dtmf_2833_*.pcap replayed): one 'dtmf' per key, and still forwards them", async () => {
    const { relay, trunk, sink, producer } = await leg();
    relay.setRemote({ address: LO, port: trunk.port });
    relay.setTelephoneEventPt(TE_PT);
    const keys: DtmfEvent[] = [];
    relay.on('dtmf', (e) => keys.push(e));
    for (let i = 0; i < 5; i++) {
      await trunk.send(pcmu(0x7e7e7e7e, 100 + i, 160 * i, i), relay.publicSide.port);
    }
    const files = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'pound', 'star'];
    let events = 0;
    for (const f of files) {
      for (const pkt of pcapUdpPayloads(`/usr/share/sip-tester/dtmf_2833_${f}.pcap`)) {
        await trunk.send(pkt, relay.publicSide.port);
        events++;
        await delay(1);
      }
    }
    await expect.poll(() => keys.length, { timeout: 5000 }).toBe(12);
    await delay(100);
    expect(keys).toEqual([...'0123456789#*'].map((digit) => ({ digit, durationMs: 280 })));
    expect(relay.stats.dtmfReceived).toBe(12);
    expect(events).toBe(120);
    expect(relay.stats.fromTrunk.rtpPackets).toBe(125);
    // the Producer took every packet, events included (with the SSRC change and the sequence jumps
    // between the captures rebased away) ...
    const packetCount = async () => ((await producer.getStats()) as { packetCount: number; packetsDiscarded: number }[])[0];
    await expect.poll(packetCount, { timeout: 5000 }).toMatchObject({ packetCount: 125, packetsDiscarded: 0 });
    // ... but mediasoup 3.12's Consumers forward media codecs only (Consumer.cpp fills
    // supportedCodecPayloadTypes from IsMediaCodec(); telephone-event is a "complementary" codec):
    // agents get the trunk's DTMF from the 'dtmf' event, through signalling
    expect(sink.packets.every((p) => (p.data[1]! & 0x7f) === 0)).toBe(true);
  });

  it("reports an event whose end packets were all lost when the next event starts, and a lone end packet once", async () => {
    const { relay, trunk } = await leg();
    relay.setRemote({ address: LO, port: trunk.port });
    relay.setTelephoneEventPt(TE_PT);
    const keys: DtmfEvent[] = [];
    relay.on('dtmf', (e) => keys.push(e));
    const ev = (seq: number, ts: number, event: number, end: boolean, duration: number) =>
      buildRtpPacket({ payloadType: TE_PT, sequenceNumber: seq, timestamp: ts, ssrc: 0x5e5e, marker: duration === 160, payload: Buffer.from([event, (end ? 0x80 : 0) | 10, duration >> 8, duration & 0xff]) });
    await trunk.send(pcmu(0x5e5e, 1, 0, 0), relay.publicSide.port);
    await trunk.send(ev(2, 160, 7, false, 160), relay.publicSide.port);
    await trunk.send(ev(3, 160, 7, false, 320), relay.publicSide.port); // its end packets never come
    await trunk.send(ev(4, 1600, 8, true, 400), relay.publicSide.port);
    await trunk.send(ev(5, 1600, 8, true, 400), relay.publicSide.port);
    await expect.poll(() => keys.length, { timeout: 5000 }).toBe(2);
    await delay(50);
    expect(keys).toEqual([
      { digit: '7', durationMs: 40 },
      { digit: '8', durationMs: 50 },
    ]);
  });

  it('latching: learns the first source, drops others, re-learns after setRemote()', async () => {
    const { relay, producer, trunk } = await leg({ latching: true });
    const intruder = await inbox();
    const latched: unknown[] = [];
    relay.on('latched', (info) => latched.push(info));
    expect(relay.remote).toBeUndefined();
    for (let i = 0; i < 5; i++) {
      await trunk.send(pcmu(0x1a1a, i, 160 * i, i), relay.publicSide.port);
    }
    await expect.poll(() => latched.length, { timeout: 5000 }).toBe(1);
    for (let i = 0; i < 5; i++) {
      await intruder.send(pcmu(0x1b1b, 500 + i, 160 * i, i), relay.publicSide.port);
    }
    await expect.poll(() => relay.stats.dropped.fromTrunk.unknownSource, { timeout: 5000 }).toBe(5);
    expect(latched).toEqual([{ address: LO, port: trunk.port, rtcp: false }]);
    expect(relay.remote).toMatchObject({ address: LO, port: trunk.port, rtcpPort: trunk.port + 1, latched: true });
    await expect.poll(async () => ((await producer.getStats()) as { packetCount: number }[])[0]?.packetCount, { timeout: 5000 }).toBe(5);

    // a re-INVITE: the SDP says "trunk", the media comes from "intruder" (NAT), which is now learned
    relay.setRemote({ address: LO, port: trunk.port });
    await intruder.send(pcmu(0x1b1b, 600, 0, 0), relay.publicSide.port);
    await expect.poll(() => relay.remote?.port, { timeout: 5000 }).toBe(intruder.port);
    await trunk.send(pcmu(0x1a1a, 9, 9 * 160, 9), relay.publicSide.port);
    await expect.poll(() => relay.stats.dropped.fromTrunk.unknownSource, { timeout: 5000 }).toBe(6);
  });

  it('without latching, drops packets from anything but the given remote', async () => {
    const { relay, trunk } = await leg();
    const other = await inbox();
    await trunk.send(pcmu(1, 1, 0, 0), relay.publicSide.port); // no remote yet
    await expect.poll(() => relay.stats.dropped.fromTrunk.unknownSource, { timeout: 5000 }).toBe(1);
    relay.setRemote({ address: LO, port: trunk.port });
    await other.send(pcmu(1, 2, 0, 0), relay.publicSide.port);
    await trunk.send(pcmu(1, 3, 0, 0), relay.publicSide.port);
    await trunk.send(Buffer.from('not rtp at all'), relay.publicSide.port);
    await expect.poll(() => relay.stats.fromTrunk.rtpPackets + relay.stats.dropped.fromTrunk.malformed, { timeout: 5000 }).toBe(2);
    expect(relay.stats.dropped.fromTrunk).toEqual({ malformed: 1, unknownSource: 2, noMediasoup: 0 });
  });

  it("emits 'inactivity' after rtpTimeoutMs without RTP, once per silence, and not while expectMedia is false", async () => {
    const relay = await relayOf({ rtpTimeoutMs: 200 });
    const trunk = await inbox();
    relay.setRemote({ address: LO, port: trunk.port });
    const idle: number[] = [];
    relay.on('inactivity', ({ idleMs }) => idle.push(idleMs));
    const t0 = Date.now();
    for (let i = 0; i < 15; i++) {
      await trunk.send(pcmu(1, i, 160 * i, i), relay.publicSide.port);
      await delay(20);
    }
    expect(idle).toEqual([]); // packets were flowing (the mediasoup side is not even set: still media)
    await expect.poll(() => idle.length, { timeout: 2000 }).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15 * 20 + 200);
    expect(idle[0]).toBeGreaterThanOrEqual(200);
    await delay(400);
    expect(idle.length).toBe(1);

    relay.expectMedia = false; // the trunk put us on hold (a=inactive)
    await trunk.send(pcmu(1, 20, 0, 0), relay.publicSide.port);
    await delay(600);
    expect(idle.length).toBe(1);
    relay.expectMedia = true;
    await expect.poll(() => idle.length, { timeout: 2000 }).toBe(2);
    expect(relay.stats.lastTrunkRtpAt).toBeGreaterThan(t0);
  });
});

describe('RtpRelay RTCP', () => {
  /** A relay whose "mediasoup" is a pair of raw sockets, to see exactly what it sends there. */
  async function rawLeg(opts: Partial<Parameters<typeof RtpRelay.create>[0]> = {}) {
    const relay = await relayOf(opts);
    const msRtp = await inbox();
    const msRtcp = await inbox();
    relay.setMediasoupTarget({ port: msRtp.port, rtcpPort: msRtcp.port });
    const trunk = await inbox();
    const trunkRtcp = await inbox();
    relay.setRemote({ address: LO, port: trunk.port, rtcpPort: trunkRtcp.port });
    await delay(20);

    return { relay, msRtp, msRtcp, trunk, trunkRtcp };
  }

  const A = 0xa1a1a1a1;
  // SR from the trunk: sender A, NTP, RTP ts 0x4000, counts; no report blocks; then SDES CNAME
  const srFromTrunk = () =>
    Buffer.from(`80c80006${'a1a1a1a1'}e8a1b2c3d4e5f607000040000000000a00000640` + `81ca0003a1a1a1a10102616200000000`, 'hex');

  it('rewrites the SR and SDES of the trunk to the producer SSRC (timestamp following the stream offset) and drops malformed RTCP', async () => {
    const { relay, msRtp, msRtcp, trunk, trunkRtcp } = await rawLeg();
    await trunk.send(pcmu(A, 10, 0x4000, 0), relay.publicSide.port);
    await expect.poll(() => msRtp.packets.length, { timeout: 5000 }).toBe(1);
    await trunkRtcp.send(srFromTrunk(), relay.publicSide.rtcpPort);
    await expect.poll(() => msRtcp.packets.length, { timeout: 5000 }).toBe(1);
    const got = msRtcp.packets[0]!.data;
    expect(got.readUInt32BE(4)).toBe(relay.producerSsrc);
    expect(got.readUInt32BE(16)).toBe(0x4000);
    expect(got.readUInt32BE(32)).toBe(relay.producerSsrc); // SDES chunk

    // the trunk changes SSRC: the SR's RTP timestamp moves with the rebased stream
    await delay(20);
    await trunk.send(pcmu(0xb2b2b2b2, 7000, 0x9000_0000, 1), relay.publicSide.port);
    await expect.poll(() => msRtp.packets.length, { timeout: 5000 }).toBe(2);
    const rebasedTs = parseRtpHeader(msRtp.packets[1]!.data)!.timestamp;
    const sr2 = srFromTrunk();
    sr2.writeUInt32BE(0xb2b2b2b2, 4);
    sr2.writeUInt32BE(0x9000_0000, 16);
    await trunkRtcp.send(sr2, relay.publicSide.rtcpPort);
    await expect.poll(() => msRtcp.packets.length, { timeout: 5000 }).toBe(2);
    expect(msRtcp.packets[1]!.data.readUInt32BE(4)).toBe(relay.producerSsrc);
    expect(msRtcp.packets[1]!.data.readUInt32BE(16)).toBe(rebasedTs);

    // truncated SR, bad version, garbage: dropped and counted
    await trunkRtcp.send(srFromTrunk().subarray(0, 20), relay.publicSide.rtcpPort);
    await trunkRtcp.send(Buffer.from('40c9000111111111', 'hex'), relay.publicSide.rtcpPort);
    await trunkRtcp.send(Buffer.from('hello'), relay.publicSide.rtcpPort);
    await expect.poll(() => relay.stats.dropped.fromTrunk.malformed, { timeout: 5000 }).toBe(3);
    await delay(50);
    expect(msRtcp.packets.length).toBe(2);
    expect(relay.stats.fromTrunk.rtcpPackets).toBe(2);
  });

  it('rewrites report blocks about the producer SSRC to the trunk SSRC toward the trunk, extended sequence number in its own space', async () => {
    const { relay, msRtcp, trunk, trunkRtcp } = await rawLeg();
    await trunk.send(pcmu(A, 10, 0, 0), relay.publicSide.port);
    await delay(20);
    await trunk.send(pcmu(0xb2b2b2b2, 50_000, 0, 0), relay.publicSide.port); // rebased to mediasoup seq 11
    await delay(20);
    // RR from "mediasoup": report block about the producer, ext. highest seq 11
    const rr = Buffer.alloc(32);
    rr.write('81c90007', 'hex');
    rr.writeUInt32BE(0x0f0f0f0f, 4);
    rr.writeUInt32BE(relay.producerSsrc, 8);
    rr.writeUInt32BE(11, 16);
    await msRtcp.send(rr, relay.mediasoupSide.rtcpPort);
    await expect.poll(() => trunkRtcp.packets.length, { timeout: 5000 }).toBe(1);
    const got = trunkRtcp.packets[0]!.data;
    expect(got.readUInt32BE(8)).toBe(0xb2b2b2b2);
    expect(got.readUInt32BE(16)).toBe(50_000);
    expect(trunkRtcp.packets[0]!.port).toBe(relay.publicSide.rtcpPort);
    await msRtcp.send(Buffer.from('81c9000700', 'hex'), relay.mediasoupSide.rtcpPort);
    await expect.poll(() => relay.stats.dropped.toTrunk.malformed, { timeout: 5000 }).toBe(1);
  });

  it('accepts RTCP multiplexed on the RTP port (RFC 5761) and then sends RTCP there', async () => {
    const { relay, msRtp, msRtcp, trunk, trunkRtcp } = await rawLeg();
    await trunk.send(pcmu(A, 10, 0x4000, 0), relay.publicSide.port);
    await trunk.send(srFromTrunk(), relay.publicSide.port);
    await expect.poll(() => msRtcp.packets.length, { timeout: 5000 }).toBe(1);
    expect(msRtp.packets.length).toBe(1);
    expect(relay.remote?.rtcpMux).toBe(true);
    const rr = Buffer.from('80c9000100000001', 'hex');
    await msRtcp.send(rr, relay.mediasoupSide.rtcpPort);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(1);
    expect(trunkRtcp.packets.length).toBe(0);
  });

  it("end to end: mediasoup's receiver report answers the trunk's SR (LSR = its NTP) about the trunk's own SSRC", { timeout: 20_000 }, async () => {
    const { relay, trunk, trunkRtcp } = await leg();
    relay.setRemote({ address: LO, port: trunk.port, rtcpPort: trunkRtcp.port });
    let seq = 0;
    let sr = 0;
    /** LSR of the report block of mediasoup's RR in a compound packet, with its SSRC; undefined if none. */
    const reportBlock = (m: Buffer): { ssrc: number; lsr: number } | undefined => {
      for (let off = 0; off + 4 <= m.length; off += (m.readUInt16BE(off + 2) + 1) * 4) {
        if (m[off + 1] === 201 && (m[off]! & 0x1f) > 0) {
          return { ssrc: m.readUInt32BE(off + 8), lsr: m.readUInt32BE(off + 8 + 16) };
        }
      }
      return undefined;
    };
    const reports: { ssrc: number; lsr: number }[] = [];
    trunkRtcp.socket.on('message', (m) => {
      const rb = reportBlock(m);
      if (rb && rb.lsr !== 0) {
        reports.push(rb);
      }
    });
    const deadline = Date.now() + 15_000;
    while (reports.length === 0 && Date.now() < deadline) {
      await trunk.send(pcmu(A, seq, seq * 160, seq), relay.publicSide.port);
      seq++;
      if (seq % 25 === 5) {
        const pkt = srFromTrunk();
        pkt.writeUInt32BE(0xe8a10000 + sr++, 8); // NTP seconds: the LSR tells which SR mediasoup saw
        await trunkRtcp.send(pkt, relay.publicSide.rtcpPort);
      }
      await delay(20);
    }
    expect(reports.length).toBeGreaterThan(0);
    // SSRC_1 is the trunk's SSRC, not the producer's; LSR is the middle 32 bits of one of our SRs' NTP time
    expect(reports[0]!.ssrc).toBe(A);
    const sent = [...Array(sr).keys()].map((k) => ((k << 16) | 0xd4e5) >>> 0);
    expect(sent).toContain(reports[0]!.lsr);
  });
});

describe('RtpRelay lifecycle', () => {
  it('binds an even RTP port with RTCP on the next one, retrying pairs that are taken', async () => {
    // four free ports p..p+3 (p even), then p+1 taken: the pair p/p+1 is unusable, so p+2/p+3 it is
    const bindable = (port: number) =>
      new Promise<boolean>((resolve) => {
        const probe = dgram.createSocket('udp4');
        probe.once('error', () => resolve(false));
        probe.bind(port, LO, () => probe.close(() => resolve(true)));
      });
    let p = 0;
    for (let base = 37000 + 4 * Math.floor(Math.random() * 250); p === 0; base = 37000 + ((base - 37000 + 4) % 1000)) {
      if ((await Promise.all([0, 1, 2, 3].map((i) => bindable(base + i)))).every(Boolean)) {
        p = base;
      }
    }
    const taken = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => taken.bind(p + 1, LO, resolve));
    cleanups.push(() => taken.close());
    const relay = await relayOf({ portRange: { min: p, max: p + 3 } });
    expect(relay.publicSide).toEqual({ address: LO, port: p + 2, rtcpPort: p + 3 });
    const err = await relayOf({ portRange: { min: p, max: p + 3 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RtpRelayError);
    expect((err as RtpRelayError).code).toBe('RB_ERR_RTP_RELAY_BIND');
  });

  it('setMediasoupTarget() can be called again, even at once: packets follow the last target, the loopback ports stay', async () => {
    const relay = await relayOf();
    const side = relay.mediasoupSide;
    const first = await inbox();
    const second = await inbox();
    const third = await inbox();
    const trunk = await inbox();
    relay.setRemote({ address: LO, port: trunk.port });
    relay.setMediasoupTarget({ port: first.port, rtcpPort: first.port });
    relay.setMediasoupTarget({ port: second.port, rtcpPort: second.port }); // while the first connect is in flight
    await delay(20);
    expect(relay.mediasoupTarget).toEqual({ ip: LO, port: second.port, rtcpPort: second.port });
    await trunk.send(pcmu(1, 1, 0, 0), relay.publicSide.port);
    await expect.poll(() => second.packets.length, { timeout: 5000 }).toBe(1);
    relay.setMediasoupTarget({ port: third.port, rtcpPort: third.port });
    await delay(20);
    await trunk.send(pcmu(1, 2, 160, 0), relay.publicSide.port);
    await expect.poll(() => third.packets.length, { timeout: 5000 }).toBe(1);
    expect([first.packets.length, second.packets.length]).toEqual([0, 1]);
    // only the target may send toward the trunk through the loopback sockets
    await first.send(pcmu(2, 1, 0, 0), relay.mediasoupSide.port);
    await third.send(pcmu(3, 1, 0, 0), relay.mediasoupSide.port);
    await expect.poll(() => trunk.packets.length, { timeout: 5000 }).toBe(1);
    await delay(50);
    expect(parseRtpHeader(trunk.packets[0]!.data)!.ssrc).toBe(3);
    expect(relay.mediasoupSide).toEqual(side);
    expect(third.packets[0]!.port).toBe(side.port);
  });

  it('create() rejects with TypeError naming a bad option', async () => {
    await expect(relayOf({ portRange: { min: 5000, max: 4000 } })).rejects.toThrow(/portRange.max/);
    await expect(relayOf({ producerSsrc: 0 })).rejects.toThrow(TypeError);
    await expect(relayOf({ listenAddress: 'localhost' })).rejects.toThrow(/listenAddress/);
  });

  it("close() is idempotent: sockets closed, timers stopped, pending sendDtmf() resolved false, 'close' emitted once", async () => {
    const relay = await relayOf({ rtpTimeoutMs: 50 });
    const trunk = await inbox();
    relay.setRemote({ address: LO, port: trunk.port });
    let closes = 0;
    let idle = 0;
    relay.on('close', () => closes++);
    relay.on('inactivity', () => idle++);
    const pending = relay.sendDtmf('123', { payloadType: 101 });
    const port = relay.publicSide.port;
    relay.close();
    relay.close();
    expect(closes).toBe(1);
    expect(relay.closed).toBe(true);
    expect(await pending).toBe(false);
    await delay(150);
    expect(idle).toBe(0);
    expect(trunk.packets.length).toBeLessThanOrEqual(1); // the first event packet went out at once
    expect(() => relay.setRemote({ address: LO, port: 4000 })).toThrow(expect.objectContaining({ code: 'RB_ERR_RTP_RELAY_CLOSED' }));
    // the ports are free again
    const again = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => again.bind(port, LO, resolve));
    again.close();
  });

  it('a throwing listener is logged and does not break packet handling', async () => {
    const { logger, lines } = captureLogger('warn');
    const { relay, trunk, sink } = await leg({ logger });
    relay.setRemote({ address: LO, port: trunk.port });
    relay.on('trunkrestart', () => {
      throw new Error('listener bug');
    });
    await trunk.send(pcmu(1, 1, 0, 1), relay.publicSide.port);
    await trunk.send(pcmu(2, 1, 0, 2), relay.publicSide.port);
    await expect.poll(() => sink.packets.length, { timeout: 5000 }).toBe(2);
    expect(lines().filter((l) => l.msg === 'RTP relay event listener threw')).toEqual([
      expect.objectContaining({ level: 'error', event: 'trunkrestart' }),
      expect.objectContaining({ level: 'error', event: 'trunkrestart' }),
    ]);
  });
});

describe.runIf(process.env.RB_RTP_RELAY_BENCH)('RtpRelay per-packet cost', () => {
  const N = 100_000;

  /** Sends n packets from `from` to `port`, in bursts, and waits until `to` received them (or loss). */
  async function blast(from: Inbox, port: number, to: Inbox, make: (i: number) => Buffer): Promise<{ cpuUs: number; wallMs: number; received: number }> {
    to.packets.length = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      from.socket.send(make(i), port, LO);
      if (i % 32 === 31) {
        await new Promise((r) => setImmediate(r));
      }
    }
    let last = -1;
    while (to.packets.length !== last) {
      last = to.packets.length;
      await delay(50);
    }
    const cpu = process.cpuUsage(cpu0);

    return { cpuUs: cpu.user + cpu.system, wallMs: performance.now() - t0 - 50, received: to.packets.length };
  }

  it('measures µs of CPU per relayed packet (relay path minus direct path)', { timeout: 120_000 }, async () => {
    const relay = await relayOf();
    const msRtp = await inbox();
    const msRtcp = await inbox();
    relay.setMediasoupTarget({ port: msRtp.port, rtcpPort: msRtcp.port });
    const trunk = await inbox();
    relay.setRemote({ address: LO, port: trunk.port });
    await delay(20);
    const pkts = Array.from({ length: 1024 }, (_, i) => pcmu(0x1234, i, i * 160, i));
    const make = (i: number) => Buffer.from(pkts[i % 1024]!); // a fresh datagram each time, as the kernel gives
    const rows: Record<string, unknown>[] = [];
    for (let round = 0; round < 2; round++) {
      const direct = await blast(trunk, msRtp.port, msRtp, make);
      const viaIn = await blast(trunk, relay.publicSide.port, msRtp, make);
      const directOut = await blast(msRtp, trunk.port, trunk, make);
      const viaOut = await blast(msRtp, relay.mediasoupSide.port, trunk, make);
      rows.push(
        { round, path: 'trunk→mediasoup', directUsPerPkt: direct.cpuUs / N, relayedUsPerPkt: viaIn.cpuUs / N, relayCostUs: (viaIn.cpuUs - direct.cpuUs) / N, received: viaIn.received, wallMs: Math.round(viaIn.wallMs) },
        { round, path: 'mediasoup→trunk', directUsPerPkt: directOut.cpuUs / N, relayedUsPerPkt: viaOut.cpuUs / N, relayCostUs: (viaOut.cpuUs - directOut.cpuUs) / N, received: viaOut.received, wallMs: Math.round(viaOut.wallMs) },
      );
    }
    // the relay's own per-packet work without the sockets: header check and in-place rewrite of an
    // RTP packet, SSRC rewrite of an SR + SDES compound
    const rtpPkt = pcmu(0x1234, 1, 160, 1);
    const rtcpPkt = Buffer.from('80c80006a1a1a1a1e8a1b2c3d4e5f607000040000000000a0000064081ca0003a1a1a1a10102616200000000', 'hex');
    const rw: RtcpRewrite = { senderFrom: 0xa1a1a1a1, senderTo: 0xa1a1a1a1, srTimestampDelta: 1, sourceFrom: -1, sourceTo: 0, extSeqDelta: 0 };
    const loop = (fn: (i: number) => void) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < N; i++) {
        fn(i);
      }
      return Number(process.hrtime.bigint() - t0) / 1000 / N;
    };
    let sink = 0;
    for (let round = 0; round < 2; round++) {
      const rtpUs = loop((i) => {
        const hl = rtpHeaderLength(rtpPkt);
        const seq = rtpPkt.readUInt16BE(2);
        const ts = rtpPkt.readUInt32BE(4);
        rtpPkt.writeUInt32BE(0x5678, 8);
        rtpPkt.writeUInt16BE((seq + i) & 0xffff, 2);
        rtpPkt.writeUInt32BE((ts + 160) >>> 0, 4);
        sink += hl;
      });
      const rtcpUs = loop(() => {
        sink += rewriteRtcp(rtcpPkt, rw);
      });
      rows.push({ round, path: 'processing only (no sockets)', rtpUsPerPkt: rtpUs, rtcpUsPerPkt: rtcpUs });
    }
    console.table(rows);
    expect(sink).toBeGreaterThan(0);
    expect(relay.stats.fromTrunk.rtpPackets).toBeGreaterThan(N);
  });
});
