/**
 * The client SDK's media path for real: a mediasoup worker (the project's pool and router codecs)
 * behind a tiny scripted signaling server that follows PROTOCOL.md, a "trunk" that is a UDP
 * socket sending PCMU/PCMA RTP into a comedia PlainTransport, and the Node agent
 * (test/helpers/agent.ts: the SDK on @roamhq/wrtc with a generated tone) answering or dialing.
 *
 * The scripted server is not the gateway (that is being written elsewhere): it implements just
 * the requests a call needs, with the real mediasoup calls behind each.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { type types as ms } from 'mediasoup';
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';
import { ROUTER_MEDIA_CODECS } from '../../src/media/codecs.js';
import { MediaWorkerPool } from '../../src/media/worker-pool.js';
import type { CallCodec, CallInfo, MediaOffer, TransportInfo } from '../../src/signaling/protocol.js';
import { startNodeAgent, type NodeAgent } from '../helpers/agent.js';
import { quietLogger } from '../helpers/env.js';

const TOKEN = 'test-token-0123456789';

const CODECS = {
  PCMU: { codec: { mimeType: 'audio/PCMU', clockRate: 8000 }, payloadType: 0 },
  PCMA: { codec: { mimeType: 'audio/PCMA', clockRate: 8000 }, payloadType: 8 },
} as const;

/** The trunk side of a call: a UDP socket sending 20 ms RTP packets and counting what comes back. */
interface Trunk {
  socket: Socket;
  received: number;
  receivedPayloadTypes: Set<number>;
  timer: NodeJS.Timeout;
}

interface ServerCall {
  id: string;
  info: CallInfo;
  codecName: keyof typeof CODECS;
  router: ms.Router;
  send: ms.WebRtcTransport;
  recv: ms.WebRtcTransport;
  plain: ms.PlainTransport;
  trunkProducer: ms.Producer;
  trunk: Trunk;
  agentProducer?: ms.Producer;
  agentConsumer?: ms.Consumer;
  plainConsumer?: ms.Consumer;
  /** Outbound: call.media sent (the agent may produce). */
  mediaSent: boolean;
}

/** A scripted signaling server with real mediasoup behind it. */
class ScriptedGateway {
  readonly wss: WebSocketServer;
  readonly calls = new Map<string, ServerCall>();
  /** Every request type received, in order, with events sent interleaved as '>event'. */
  readonly log: string[] = [];
  readonly requests: { type: string; data: Record<string, unknown> }[] = [];
  socket: ServerSocket | undefined;
  #n = 0;

  constructor(
    readonly pool: MediaWorkerPool,
    port: number,
  ) {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port });
    this.wss.on('connection', (ws) => {
      this.socket = ws;
      ws.on('message', (raw: Buffer) => {
        const frame = JSON.parse(raw.toString()) as { id: string; type: string; data: Record<string, unknown> };
        this.log.push(frame.type);
        this.requests.push({ type: frame.type, data: frame.data });
        this.#handle(frame.type, frame.data).then(
          (data) => ws.send(JSON.stringify({ v: 1, id: frame.id, type: 'response', ok: true, data })),
          (err: Error & { code?: string }) => ws.send(JSON.stringify({ v: 1, id: frame.id, type: 'response', ok: false, error: { code: err.code ?? 'INTERNAL', message: err.message } })),
        );
      });
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as { port: number }).port}/ws`;
  }

  event(type: string, data: unknown): void {
    this.log.push(`>${type}`);
    this.socket!.send(JSON.stringify({ v: 1, type, data }));
  }

  /** Rings the agent with a new inbound call whose trunk speaks `codecName`. */
  async ring(codecName: keyof typeof CODECS): Promise<ServerCall> {
    const info: CallInfo = {
      callId: `in-${++this.#n}`,
      direction: 'inbound',
      state: 'ringing',
      from: { number: '+15550100', name: 'Caller' },
      to: { number: '+15550199' },
      trunkId: 'loopback',
      startedAt: new Date().toISOString(),
    };
    const call = await this.#createCall(info, codecName);
    this.event('call.incoming', { ...info, ringTimeoutMs: 5000 });

    return call;
  }

  async #createCall(info: CallInfo, codecName: keyof typeof CODECS): Promise<ServerCall> {
    const router = await this.pool.leastLoaded().createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    const webrtc = () => router.createWebRtcTransport({ listenIps: [{ ip: '127.0.0.1' }], enableUdp: true, enableTcp: false });
    const [send, recv] = await Promise.all([webrtc(), webrtc()]);
    const plain = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: true });
    const { codec, payloadType } = CODECS[codecName];
    const ssrc = 1000 + this.#n;
    const trunkProducer = await plain.produce({ kind: 'audio', rtpParameters: { codecs: [{ ...codec, payloadType }], encodings: [{ ssrc }] } });
    const trunk = await startTrunk(plain.tuple.localPort, payloadType, ssrc);
    const call: ServerCall = { id: info.callId, info, codecName, router, send, recv, plain, trunkProducer, trunk, mediaSent: false };
    this.calls.set(info.callId, call);

    return call;
  }

  #offer(call: ServerCall, withCodec: boolean): MediaOffer {
    const t = (tr: ms.WebRtcTransport): TransportInfo => ({ id: tr.id, iceParameters: tr.iceParameters, iceCandidates: tr.iceCandidates, dtlsParameters: tr.dtlsParameters });
    const codec: CallCodec = CODECS[call.codecName].codec;

    return { routerRtpCapabilities: call.router.rtpCapabilities, sendTransport: t(call.send), recvTransport: t(call.recv), ...(withCodec ? { codec } : {}) };
  }

  /** Outbound: the trunk "answered with SDP": tell the agent its codec. */
  sendMedia(call: ServerCall): void {
    call.mediaSent = true;
    this.event('call.media', { callId: call.id, codec: CODECS[call.codecName].codec });
  }

  async #handle(type: string, data: Record<string, unknown>): Promise<unknown> {
    const call = typeof data.callId === 'string' ? this.calls.get(data.callId) : undefined;
    const need = (): ServerCall => {
      if (!call) {
        throw Object.assign(new Error('no such call'), { code: 'NOT_FOUND' });
      }

      return call;
    };
    switch (type) {
      case 'auth':
        return {
          sessionId: 'sess-1',
          resumeToken: 'resume-1',
          agentId: 'agent-1',
          resumed: false,
          heartbeatIntervalMs: 5000,
          resumeGraceMs: 5000,
          presence: { status: 'available', effective: 'available' },
          calls: [],
        };
      case 'ping':
        return { now: new Date().toISOString() };
      case 'call.answer':
        return { callId: need().id, media: this.#offer(need(), true) };
      case 'call.dial': {
        const info: CallInfo = {
          callId: `out-${++this.#n}`,
          direction: 'outbound',
          state: 'dialing',
          from: { number: '+15550199' },
          to: { number: String(data.to) },
          trunkId: 'loopback',
          startedAt: new Date().toISOString(),
        };
        const c = await this.#createCall(info, 'PCMA');

        return { callId: c.id, media: this.#offer(c, false) };
      }
      case 'media.connect': {
        const c = need();
        const transport = [c.send, c.recv].find((t) => t.id === data.transportId);
        if (!transport) {
          throw Object.assign(new Error('no such transport'), { code: 'MEDIA_ERROR' });
        }
        await transport.connect({ dtlsParameters: data.dtlsParameters as ms.DtlsParameters });

        return {};
      }
      case 'media.produce': {
        const c = need();
        if (data.transportId !== c.send.id) {
          throw Object.assign(new Error('produce on the send transport'), { code: 'MEDIA_ERROR' });
        }
        if (c.info.direction === 'outbound' && !c.mediaSent) {
          throw Object.assign(new Error('no codec yet'), { code: 'INVALID_STATE' });
        }
        const rtpParameters = data.rtpParameters as ms.RtpParameters;
        const wanted = CODECS[c.codecName].codec.mimeType.toLowerCase();
        if (rtpParameters.codecs[0]?.mimeType.toLowerCase() !== wanted) {
          throw Object.assign(new Error(`only ${wanted} is accepted, got ${rtpParameters.codecs[0]?.mimeType}`), { code: 'MEDIA_ERROR' });
        }
        c.agentProducer = await c.send.produce({ kind: 'audio', rtpParameters });
        c.plainConsumer = await c.plain.consume({ producerId: c.agentProducer.id, rtpCapabilities: c.router.rtpCapabilities });

        return { producerId: c.agentProducer.id };
      }
      case 'media.consume': {
        const c = need();
        const rtpCapabilities = data.rtpCapabilities as ms.RtpCapabilities;
        if (!c.router.canConsume({ producerId: c.trunkProducer.id, rtpCapabilities })) {
          throw Object.assign(new Error('cannot consume'), { code: 'MEDIA_ERROR' });
        }
        c.agentConsumer = await c.recv.consume({ producerId: c.trunkProducer.id, rtpCapabilities, paused: true });

        return { consumerId: c.agentConsumer.id, producerId: c.trunkProducer.id, kind: 'audio', rtpParameters: c.agentConsumer.rtpParameters };
      }
      case 'media.resume': {
        const c = need();
        const consumer = c.agentConsumer;
        if (!consumer || consumer.id !== data.consumerId) {
          throw Object.assign(new Error('no such consumer'), { code: 'NOT_FOUND' });
        }
        await consumer.resume();

        return {};
      }
      case 'call.mute': {
        const c = need();
        if (data.muted === true) {
          await c.agentProducer?.pause();
        } else {
          await c.agentProducer?.resume();
        }

        return { muted: data.muted };
      }
      case 'call.hangup': {
        const c = need();
        this.#endCall(c);
        setTimeout(() => this.event('call.ended', { callId: c.id, reason: 'hangup_local', by: 'local' }), 0);

        return {};
      }
      default:
        throw Object.assign(new Error(`not scripted: ${type}`), { code: 'BAD_REQUEST' });
    }
  }

  #endCall(c: ServerCall): void {
    clearInterval(c.trunk.timer);
    c.trunk.socket.close();
    c.router.close();
    this.calls.delete(c.id);
  }

  async close(): Promise<void> {
    for (const c of [...this.calls.values()]) {
      this.#endCall(c);
    }
    for (const ws of this.wss.clients) {
      ws.terminate();
    }
    await new Promise<void>((r) => this.wss.close(() => r()));
  }
}

/** A UDP "trunk" sending 20 ms RTP packets (160 bytes of G.711) to the PlainTransport and counting what comes back. */
async function startTrunk(port: number, payloadType: number, ssrc: number): Promise<Trunk> {
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const trunk: Trunk = { socket, received: 0, receivedPayloadTypes: new Set(), timer: undefined as unknown as NodeJS.Timeout };
  socket.on('message', (msg) => {
    if (msg.length >= 12 && msg[0]! >> 6 === 2) {
      const pt = msg[1]! & 0x7f;
      if (pt < 64 || pt > 95) {
        // RTP, not RTCP (RFC 5761 section 4)
        trunk.received++;
        trunk.receivedPayloadTypes.add(pt);
      }
    }
  });
  let seq = 0;
  let ts = 0;
  const payload = Buffer.alloc(160, payloadType === 0 ? 0xff : 0xd5); // G.711 silence
  trunk.timer = setInterval(() => {
    const header = Buffer.alloc(12);
    header[0] = 0x80;
    header[1] = payloadType;
    header.writeUInt16BE(seq++ & 0xffff, 2);
    header.writeUInt32BE(ts >>> 0, 4);
    header.writeUInt32BE(ssrc, 8);
    ts += 160;
    socket.send(Buffer.concat([header, payload]), port, '127.0.0.1');
  }, 20);

  return trunk;
}

async function producerPackets(producer: ms.Producer): Promise<number> {
  const stats = (await producer.getStats()) as { packetCount?: number }[];

  return stats.reduce((n, s) => n + (s.packetCount ?? 0), 0);
}

describe('client SDK media path (real mediasoup worker, Node agent on @roamhq/wrtc)', () => {
  let pool: MediaWorkerPool;
  let gw: ScriptedGateway;
  let agent: NodeAgent | undefined;

  beforeAll(async () => {
    pool = await MediaWorkerPool.create({ size: 1, logLevel: 'warn', rtcMinPort: 34000, rtcMaxPort: 34999, logger: quietLogger() });
  });

  afterAll(async () => {
    await pool.close();
  });

  afterEach(async () => {
    await agent?.close();
    agent = undefined;
    await gw.close();
  });

  it('answer(): produces the trunk codec, consumes the trunk audio, RTP flows both ways, hangup closes the transports', async () => {
    gw = new ScriptedGateway(pool, 0);
    await new Promise((r) => gw.wss.once('listening', r));
    agent = await startNodeAgent({ url: gw.url, token: TOKEN, sampleRate: 8000 });
    const serverCall = await gw.ring('PCMU');
    const { call } = await agent.waitForEvent('incoming');
    expect(call).toMatchObject({ id: serverCall.id, direction: 'inbound', state: 'ringing', ringTimeoutMs: 5000 });
    expect(call.remote).toEqual({ number: '+15550100', name: 'Caller' });

    const answeredAt = Date.now();
    await agent.client.answer(call.id);
    const { track } = await agent.waitForEvent('track', (e) => e.call.id === call.id);
    expect(track.kind).toBe('audio');
    expect(call.remoteTrack).toBe(track);
    expect(call.codec).toEqual({ mimeType: 'audio/PCMU', clockRate: 8000 });

    // the protocol's order: answer, then connect+produce on the send transport, then consume, connect the recv transport, resume
    expect(gw.log.filter((t) => !t.startsWith('>') && t !== 'ping')).toEqual(['auth', 'call.answer', 'media.connect', 'media.produce', 'media.consume', 'media.connect', 'media.resume']);
    const produce = gw.requests.find((r) => r.type === 'media.produce')!;
    expect((produce.data.rtpParameters as ms.RtpParameters).codecs.map((c) => c.mimeType)).toEqual(['audio/PCMU']);

    // the trunk's RTP (50 packets/s) reaches the agent: > 100 packets within ~3 s of answer()
    await expect.poll(async () => (await agent!.packetCounts(call.id)).received, { timeout: 3500 - (Date.now() - answeredAt), interval: 100 }).toBeGreaterThan(100);
    console.log(`[client-sdk] >100 packets received by the agent ${Date.now() - answeredAt} ms after answer()`);

    // the agent's RTP reaches mediasoup and goes out of the PlainTransport to the trunk
    expect((await agent.packetCounts(call.id)).sent).toBeGreaterThan(0);
    await expect.poll(() => producerPackets(serverCall.agentProducer!), { timeout: 3000 }).toBeGreaterThan(20);
    await expect.poll(() => serverCall.trunk.received, { timeout: 3000 }).toBeGreaterThan(20);
    expect([...serverCall.trunk.receivedPayloadTypes]).toEqual([serverCall.plainConsumer!.rtpParameters.codecs[0]!.payloadType]);
    expect(serverCall.plainConsumer!.rtpParameters.codecs[0]!.mimeType).toBe('audio/PCMU');

    const stats = await call.getStats();
    expect(stats).toMatchObject({ sendTransportState: 'connected', recvTransportState: 'connected' });

    // mute disables the local track (the producer is paused) and tells the gateway, which stops
    // forwarding the agent's audio to the trunk; unmute undoes both
    expect(call.localTrack?.enabled).toBe(true);
    await agent.client.mute(call.id, true);
    expect(call.muted).toBe(true);
    expect(call.localTrack?.enabled).toBe(false);
    expect(serverCall.agentProducer!.paused).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    const mutedFrom = serverCall.trunk.received;
    await new Promise((r) => setTimeout(r, 400));
    expect(serverCall.trunk.received - mutedFrom).toBeLessThan(3);
    await agent.client.mute(call.id, false);
    expect(call.localTrack?.enabled).toBe(true);
    await expect.poll(() => serverCall.trunk.received - mutedFrom, { timeout: 3000 }).toBeGreaterThan(10);

    await agent.client.hangup(call.id);
    const ended = await agent.waitForEvent('ended', (e) => e.call.id === call.id);
    expect(ended).toMatchObject({ reason: 'hangup_local', by: 'local' });
    expect(call.state).toBe('ended');
    expect(agent.client.call(call.id)).toBeUndefined();
    await expect(call.getStats()).rejects.toMatchObject({ code: 'INVALID_STATE' });
    expect(track.readyState).toBe('ended');
  });

  it('dial(): waits for call.media before producing, then forces that codec (PCMA) and consumes', async () => {
    gw = new ScriptedGateway(pool, 0);
    await new Promise((r) => gw.wss.once('listening', r));
    agent = await startNodeAgent({ url: gw.url, token: TOKEN, sampleRate: 48000 });

    const call = await agent.client.dial('+15550123');
    expect(call).toMatchObject({ direction: 'outbound', state: 'dialing', codec: undefined });
    expect(call.remote).toEqual({ number: '+15550123' });
    const serverCall = gw.calls.get(call.id)!;
    await new Promise((r) => setTimeout(r, 300));
    expect(gw.log).not.toContain('media.produce');

    gw.event('call.progress', { callId: call.id, status: 183, earlyMedia: true });
    gw.sendMedia(serverCall);
    const progress = await agent.waitForEvent('progress');
    expect(progress).toMatchObject({ status: 183, earlyMedia: true });
    expect(call.state).toBe('early');
    await agent.waitForEvent('track', (e) => e.call.id === call.id);
    expect(call.codec).toEqual({ mimeType: 'audio/PCMA', clockRate: 8000 });
    const sent = gw.log.filter((t) => t !== 'ping' && t !== '>call.progress');
    expect(sent.slice(sent.indexOf('call.dial'))).toEqual(['call.dial', '>call.media', 'media.connect', 'media.produce', 'media.consume', 'media.connect', 'media.resume']);
    const produce = gw.requests.find((r) => r.type === 'media.produce')!;
    expect((produce.data.rtpParameters as ms.RtpParameters).codecs.map((c) => c.mimeType)).toEqual(['audio/PCMA']);

    gw.event('call.answered', { callId: call.id });
    await agent.waitForEvent('answered');
    expect(call.state).toBe('active');

    await expect.poll(async () => (await agent!.packetCounts(call.id)).received, { timeout: 5000, interval: 100 }).toBeGreaterThan(100);
    await expect.poll(() => producerPackets(serverCall.agentProducer!), { timeout: 3000 }).toBeGreaterThan(20);
    await expect.poll(() => serverCall.trunk.received, { timeout: 3000 }).toBeGreaterThan(20);
    expect(serverCall.plainConsumer!.rtpParameters.codecs[0]!.mimeType).toBe('audio/PCMA');

    // the trunk hangs up
    gw.event('call.ended', { callId: call.id, reason: 'hangup_remote', by: 'remote' });
    const ended = await agent.waitForEvent('ended');
    expect(ended).toMatchObject({ reason: 'hangup_remote', by: 'remote', sipStatus: undefined });
    expect(agent.events.filter((e) => e.name === 'ended')).toHaveLength(1);
    expect(agent.events.filter((e) => e.name === 'error')).toEqual([]);
  });
});
