/**
 * Outbound calls from agents' SIP devices (issue 12, item 4): a raw UDP device (its own RTP
 * socket) INVITEs a number with the agent's digest credentials (407 challenge, RFC 7616), the
 * gateway applies call.dial's policy and sends a UAC leg to sipp as the trunk (real PCMA from its
 * pcap, watched by tshark on its media port); refusals (no or wrong credentials, a replayed
 * response, a forbidden number, a locked source) never reach the trunk.
 *
 *   npx vitest run --config .config/vitest.config.ts test/e2e/sip-devices-outbound.test.ts
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHa1 } from '../../src/sip/registrar/digest.js';
import { parseDigest } from '../../src/sip/trunks.js';
import { captureUdp, type CallFixture, startCallGateway } from '../helpers/calls.js';
import { isFinal, isResponse, RawSipPeer, sipRequest, token } from '../helpers/raw-sip.js';
import { freePort, sipHeader, startSipp } from '../helpers/sipp.js';
import { type Baresip, baresipAvailable, startBaresip } from '../helpers/baresip.js';
import { createTestCerts, type TestCerts } from '../helpers/tls-certs.js';

const REALM = 'gw.ringbridge.test';
const AGENT = 'agent-dev-out';
const DIALLED = '+4930123456';

/** A device's INVITE with digest (answering the 407 itself), its ACKs, RTP and BYE. */
class CallingDevice {
  readonly callId = token('dev-call-');
  readonly fromTag = token();
  readonly got: Buffer[] = [];
  #sender: NodeJS.Timeout | undefined;
  /** The Request-URI and To: the number dialled at the registrar's domain. */
  readonly uri: string;
  private constructor(
    readonly peer: RawSipPeer,
    readonly rtp: dgram.Socket,
    dialled: string,
  ) {
    this.uri = `sip:${dialled}@${REALM}`;
    rtp.on('message', (m) => this.got.push(m));
  }

  /** A device on fresh SIP and RTP sockets calling `dialled` through the gateway at `gwPort`. */
  static async open(gwPort: number, dialled = DIALLED): Promise<CallingDevice> {
    const rtp = dgram.createSocket('udp4');
    await new Promise<void>((r) => rtp.bind(0, '127.0.0.1', r));

    return new CallingDevice(await RawSipPeer.udp({ port: gwPort }), rtp, dialled);
  }

  #invite(cseq: number, branch: string, headers: string[]): string {
    const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${this.rtp.address().port} RTP/AVP 8 0 101`, 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=sendrecv', ''].join('\r\n');

    return sipRequest({ method: 'INVITE', uri: this.uri, viaPort: this.peer.port, viaParams: ';rport', branch, callId: this.callId, fromTag: this.fromTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: `<sip:ivy@127.0.0.1:${this.peer.port}>`, headers, body: sdp });
  }

  /** ACKs a non-2xx final response in its INVITE's transaction (RFC 3261 §17.1.1.3). */
  #ackFailure(res: { msg: { getHeader(n: string): string | undefined } }, cseq: number, branch: string): void {
    const toTag = /;\s*tag=([^;\s]+)/.exec(res.msg.getHeader('to') ?? '')?.[1];
    this.peer.send(sipRequest({ method: 'ACK', uri: this.uri, viaPort: this.peer.port, viaParams: ';rport', branch, callId: this.callId, fromTag: this.fromTag, toTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: null }));
  }

  /**
   * Sends the INVITE; on a 407 answers it with `password` (or replays `replay` as is) and resolves
   * with the final response to the last INVITE and the Proxy-Authorization it sent.
   */
  async call(o: { password?: string; user?: string; replay?: string; cseq?: number; digestUri?: string } = {}) {
    let cseq = o.cseq ?? 1;
    let branch = `z9hG4bK${token()}`;
    this.peer.send(this.#invite(cseq, branch, []));
    const final = (c: number) => this.peer.waitFor((m) => isFinal('INVITE', this.callId)(m) && m.msg.getHeader('cseq')?.startsWith(`${c} `) === true, 15_000, `final response to INVITE ${c}`);
    const first = await final(cseq);
    if (first.msg.status !== 407 || o.password === undefined) {
      if (first.msg.status >= 300) {
        this.#ackFailure(first, cseq, branch);
      }

      return { res: first, authorization: undefined };
    }
    this.#ackFailure(first, cseq, branch);
    const ch = parseDigest(first.msg.getHeaders('proxy-authenticate').find((c) => c.includes('algorithm=MD5')) ?? '')!;
    const h = (s: string) => createHash('md5').update(s).digest('hex');
    const user = o.user ?? 'ivy';
    const cnonce = token();
    const duri = o.digestUri ?? this.uri;
    const response = h(`${h(`${user}:${REALM}:${o.password}`)}:${ch.nonce}:00000001:${cnonce}:auth:${h(`INVITE:${duri}`)}`);
    const authorization = o.replay ?? `Digest username="${user}", realm="${REALM}", nonce="${ch.nonce}", uri="${duri}", algorithm=MD5, qop=auth, nc=00000001, cnonce="${cnonce}", response="${response}"`;
    cseq++;
    branch = `z9hG4bK${token()}`;
    this.peer.send(this.#invite(cseq, branch, [`Proxy-Authorization: ${authorization}`]));
    const second = await final(cseq);
    if (second.msg.status >= 300) {
      this.#ackFailure(second, cseq, branch);
    }

    return { res: second, authorization, cseq };
  }

  /** ACKs the 200 and sends PCMA to the answer's address every 20 ms. */
  answered(ok: { msg: { getHeader(n: string): string | undefined; body: Buffer } }, cseq: number): { toTag: string; target: string } {
    const toTag = /;\s*tag=([^;\s]+)/.exec(ok.msg.getHeader('to') ?? '')![1]!;
    const target = /<([^>]+)>/.exec(ok.msg.getHeader('contact') ?? '')![1]!;
    this.peer.send(sipRequest({ method: 'ACK', uri: target, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, toTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: null }));
    const port = Number(/m=audio (\d+)/.exec(ok.msg.body.toString())![1]);
    let seq = 0;
    this.#sender = setInterval(() => {
      const b = Buffer.alloc(172, 0x55);
      b[0] = 0x80;
      b[1] = 8;
      b.writeUInt16BE(seq++ & 0xffff, 2);
      b.writeUInt32BE((seq * 160) >>> 0, 4);
      b.writeUInt32BE(0x1dd1, 8);
      this.rtp.send(b, port, '127.0.0.1');
    }, 20);

    return { toTag, target };
  }

  /** Sends one RFC 4733 event (payload type 101, as offered) to the answer's port: 3 updates and 3 end packets. */
  dtmf(ok: { msg: { body: Buffer } }, event: number, ts: number): void {
    const port = Number(/m=audio (\d+)/.exec(ok.msg.body.toString())![1]);
    for (let i = 0; i < 6; i++) {
      const b = Buffer.alloc(16);
      b[0] = 0x80;
      b[1] = 101 | (i === 0 ? 0x80 : 0);
      b.writeUInt16BE(40_000 + event * 10 + i, 2);
      b.writeUInt32BE(ts, 4);
      b.writeUInt32BE(0x1dd1, 8);
      b[12] = event;
      b[13] = (i >= 3 ? 0x80 : 0) | 10; // E bit on the last three, volume 10
      b.writeUInt16BE(160 * (i + 1), 14);
      this.rtp.send(b, port, '127.0.0.1');
    }
  }

  /** Sends a re-INVITE in the dialog with this direction (RFC 3264 §8.4 hold: sendonly) and resolves with its final response, ACKed. */
  async reinvite(d: { toTag: string; target: string }, cseq: number, direction: 'sendonly' | 'sendrecv') {
    const sdp = ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${this.rtp.address().port} RTP/AVP 8 101`, 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', `a=${direction}`, ''].join('\r\n');
    this.peer.send(sipRequest({ method: 'INVITE', uri: d.target, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, toTag: d.toTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: `<sip:ivy@127.0.0.1:${this.peer.port}>`, body: sdp }));
    const res = await this.peer.waitFor((m) => isFinal('INVITE', this.callId)(m) && m.msg.getHeader('cseq')?.startsWith(`${cseq} `) === true, 5000, `final response to re-INVITE ${cseq}`);
    this.peer.send(sipRequest({ method: 'ACK', uri: d.target, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, toTag: d.toTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: null }));

    return res;
  }

  bye(d: { toTag: string; target: string }, cseq: number): void {
    clearInterval(this.#sender);
    this.peer.send(sipRequest({ method: 'BYE', uri: d.target, viaPort: this.peer.port, callId: this.callId, fromTag: this.fromTag, toTag: d.toTag, cseq, fromUri: `sip:ivy@${REALM}`, toUri: this.uri, contact: null }));
  }

  close(): void {
    clearInterval(this.#sender);
    this.peer.close();
    this.rtp.close();
  }
}

describe('SIP devices call out through the trunk', () => {
  let fx: CallFixture;
  let trunkPort: number;

  beforeAll(async () => {
    trunkPort = await freePort();
    fx = await startCallGateway({
      routing: { dids: [], groups: [], defaultTrunk: 'carrier' },
      trunks: [
        {
          id: 'carrier',
          // the trunk's own addresses are elsewhere: 127.0.0.1 is a device's source here
          inbound: { allow: ['192.0.2.0/24'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
          outbound: { uri: `sip:127.0.0.1:${trunkPort}`, proxy: '', auth: { username: '', password: '' }, callerId: '+4930999000' },
          codecs: ['PCMA', 'PCMU'],
          media: { latching: false },
        },
      ],
      security: { unknownSources: { action: 'drop' }, dialPolicy: { deniedPrefixes: ['+900'] } },
      sipDevices: {
        enabled: true,
        realm: REALM,
        minExpiresS: 2,
        lockout: { maxFailuresPerSource: 3, maxFailuresPerUser: 0, windowMs: 60_000, lockMs: 60_000 },
        credentials: [{ agentId: AGENT, username: 'ivy', ha1Md5: digestHa1('MD5', 'ivy', REALM, 'ivy-pw'), ha1Sha256: digestHa1('SHA-256', 'ivy', REALM, 'ivy-pw') }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await fx?.close();
  });

  it('an unregistered device authenticates by digest, the trunk gets the number with one codec, audio and RFC 4733 digits flow, hold and resume, BYE reaches the trunk', async () => {
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort, 101);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-uas-answer-rtp', localPort: trunkPort, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    await trunk.ready;
    const dev = await CallingDevice.open(Number(fx.sipTarget.split(':')[1]));
    try {
      const { res: ok, cseq } = await dev.call({ password: 'ivy-pw' });
      expect(ok.msg.status).toBe(200);
      expect(dev.peer.all(isResponse(180, 'INVITE', dev.callId)).length).toBeGreaterThan(0);
      expect(ok.msg.body.toString()).toMatch(/^m=audio \d+ RTP\/AVP 8 101\r?$/m);
      const d = dev.answered(ok, cseq!);
      await new Promise((r) => setTimeout(r, 1500));
      // RFC 4733 digits from the device reach the trunk as telephone-event in its payload type
      dev.dtmf(ok, 5, 1_000_000);
      await new Promise((r) => setTimeout(r, 300));
      dev.dtmf(ok, 11, 2_000_000);
      await new Promise((r) => setTimeout(r, 500));
      // hold (RFC 3264 §8.4): the device's sendonly is answered recvonly, and the trunk's audio stops toward it
      const held = await dev.reinvite(d, cseq! + 1, 'sendonly');
      expect(held.msg.status).toBe(200);
      expect(held.msg.body.toString()).toMatch(/^a=recvonly\r?$/m);
      await new Promise((r) => setTimeout(r, 300));
      const atHold = dev.got.length;
      await new Promise((r) => setTimeout(r, 800));
      expect(dev.got.length - atHold, 'trunk audio toward a device that holds').toBe(0);
      // resume: sendrecv again, and the trunk's audio comes back
      const resumed = await dev.reinvite(d, cseq! + 2, 'sendrecv');
      expect(resumed.msg.status).toBe(200);
      expect(resumed.msg.body.toString()).toMatch(/^a=sendrecv\r?$/m);
      await new Promise((r) => setTimeout(r, 800));
      expect(dev.got.length - atHold, 'trunk audio after the resume').toBeGreaterThan(20);
      dev.bye(d, cseq! + 3);
      await dev.peer.waitFor(isResponse(200, 'BYE', dev.callId), 5000);
      const r = await trunk.result;
      expect(r.exitCode, r.describe()).toBe(0);
      const invite = r.received('INVITE')[0]!;
      expect(/sip:([^@]+)@/.exec(invite.split('\r\n', 1)[0]!)?.[1]).toBe(DIALLED);
      expect(sipHeader(invite, 'From')).toContain('+4930999000');
      expect(invite).toMatch(/^m=audio \d+ RTP\/AVP 8 101\r?$/m); // the device's codec only, no transcoding
      expect(r.received('BYE')).toHaveLength(1);
      const atSipp = await capture.stop();
      expect(atSipp.byPayloadType.get(8) ?? 0, 'PCMA from the device at the sipp trunk').toBeGreaterThan(50);
      expect(atSipp.events, 'the device\'s DTMF at the trunk').toEqual([5, 11]);
      const audio = dev.got.filter((b) => b.length > 12 && (b[1]! & 0x7f) === 8);
      expect(audio.length, 'PCMA from the trunk at the device').toBeGreaterThan(50);
      expect(new Set(audio.flatMap((b) => [...b.subarray(-160)])).size).toBeGreaterThan(16);
      const record = (await fx.gw.store!.recentRecords(1))[0]!;
      expect(record).toMatchObject({ direction: 'outbound', agentId: AGENT, trunkId: 'carrier', endReason: 'hangup_local', codec: 'PCMA' });
      expect(record.answeredAt).toBeTruthy();
    } finally {
      dev.close();
      await trunk.stop().catch(() => undefined);
    }
  }, 60_000);

  it('refuses toll fraud: no credentials, a replayed response, a forbidden number, a response for another number; none reaches a trunk', async () => {
    const port = Number(fx.sipTarget.split(':')[1]);
    // the trunk's address, watched: nothing may reach it
    const trunk = dgram.createSocket('udp4');
    const atTrunk: string[] = [];
    trunk.on('message', (m) => atTrunk.push(m.toString()));
    await new Promise<void>((r) => trunk.bind(trunkPort, '127.0.0.1', r));
    const dev = await CallingDevice.open(port);
    try {
      // without credentials: a 407 challenge, nothing more
      const challenged = await dev.call();
      expect(challenged.res.msg.status).toBe(407);
      expect(challenged.res.msg.getHeaders('proxy-authenticate').join('\n')).toMatch(/realm="gw\.ringbridge\.test"/);
      // a forbidden number (the dialling policy) is refused with the agent's own credentials
      const forbidden = await CallingDevice.open(port, '+9001234');
      try {
        const r = await forbidden.call({ password: 'ivy-pw' });
        expect(r.res.msg.status).toBe(403);
        expect(r.res.msg.getHeader('warning')).toContain('DIAL_POLICY');
        // the same response again (same nonce and nc): challenged as stale, never a call
        const replayed = await CallingDevice.open(port);
        try {
          const again = await replayed.call({ password: 'x', replay: r.authorization!, cseq: 10 });
          expect(again.res.msg.status).toBe(407);
          expect(again.res.msg.getHeaders('proxy-authenticate').join('\n')).toContain('stale=true');
        } finally {
          replayed.close();
        }
      } finally {
        forbidden.close();
      }
      // a valid response computed for another number (an allowed one) does not dial this one
      const swapped = await CallingDevice.open(port, '+4930555000');
      try {
        const r = await swapped.call({ password: 'ivy-pw', digestUri: `sip:${DIALLED}@${REALM}` });
        expect(r.res.msg.status).toBe(403);
        expect(r.res.msg.getHeader('warning')).toContain('digest uri');
      } finally {
        swapped.close();
      }
      await new Promise((r) => setTimeout(r, 500));
      expect(atTrunk).toEqual([]);
    } finally {
      dev.close();
      trunk.close();
    }
  }, 60_000);

  it('locks a source out after wrong passwords (the registrar\'s lockout): even right credentials get 403 then', async () => {
    const port = Number(fx.sipTarget.split(':')[1]);
    for (let i = 0; i < 3; i++) {
      const dev = await CallingDevice.open(port);
      try {
        expect((await dev.call({ password: 'guess' })).res.msg.status).toBe(403);
      } finally {
        dev.close();
      }
    }
    const dev = await CallingDevice.open(port);
    try {
      expect((await dev.call({ password: 'ivy-pw' })).res.msg.status).toBe(403);
    } finally {
      dev.close();
    }
    // a REGISTER from the same source is locked too: one lockout for devices
    const metrics = await (await fetch(`http://127.0.0.1:${fx.gw.httpAddress.port}/metrics`)).text();
    expect(metrics).toMatch(/^ringbridge_security_rejections_total\{reason="register_locked"\} [1-9]/m);
  }, 60_000);
});

/**
 * A device calling out over SIP TLS with SDES-SRTP (baresip, mediaenc=srtp-mand: it refuses plain
 * RTP): its RTP/SAVP offer is answered with a key of ours, the trunk leg is plain RTP to sipp, and
 * the audio crosses both ways (the trunk gets the device's audio only once the relay authenticated
 * and decrypted it; baresip counts what it authenticated).
 */
describe.skipIf(!baresipAvailable())('a SIP device calls out over TLS with SDES-SRTP', () => {
  let fx: CallFixture;
  let certs: TestCerts;
  let trunkPort: number;
  let phone: Baresip | undefined;

  beforeAll(async () => {
    certs = await createTestCerts();
    trunkPort = await freePort();
    fx = await startCallGateway({
      routing: { dids: [], groups: [], defaultTrunk: 'carrier' },
      sip: { tls: { enabled: true, port: 0, certFile: certs.certFile, keyFile: certs.keyFile, caFile: certs.caFile, verifyPeer: false } },
      trunks: [
        {
          id: 'carrier',
          inbound: { allow: ['192.0.2.0/24'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
          outbound: { uri: `sip:127.0.0.1:${trunkPort}`, proxy: '', auth: { username: '', password: '' }, callerId: '+4930999000' },
          codecs: ['PCMA'],
          media: { latching: false, srtp: 'optional' },
        },
      ],
      sipDevices: {
        enabled: true,
        realm: REALM,
        algorithms: ['MD5'],
        credentials: [{ agentId: AGENT, username: 'ivy', ha1Md5: digestHa1('MD5', 'ivy', REALM, 'ivy-pw'), ha1Sha256: '' }],
      },
    });
  }, 60_000);

  afterAll(async () => {
    await phone?.stop();
    await fx?.close();
  });

  it('answers the device\'s RTP/SAVP offer with our key, and audio crosses to the plain-RTP trunk both ways', async () => {
    const tlsPort = fx.gw.sip!.engine!.listenPoints.find((p) => p.protocol === 'tls')!.port;
    const mediaPort = await freePort();
    const capture = captureUdp(mediaPort);
    await capture.ready;
    const trunk = startSipp({ scenario: 'trunk-uas-answer-rtp', localPort: trunkPort, extraArgs: ['-mp', String(mediaPort)], timeoutMs: 30_000 });
    await trunk.ready;
    phone = await startBaresip({
      name: 'tls-caller',
      sipTrace: true,
      tls: { certFile: certs.combinedFile, caFile: certs.caFile },
      extraModules: ['srtp'],
      accounts: [{ user: 'ivy', domain: REALM, transport: 'tls', outbound: `sip:127.0.0.1:${tlsPort};transport=tls`, auth: { user: 'ivy', password: 'ivy-pw' }, mediaenc: 'srtp-mand', audioCodecs: ['pcma'] }],
    });
    await phone.dial(`sip:${DIALLED}@${REALM}`);
    await phone.waitForEvent('CALL_ESTABLISHED', 20_000);
    await new Promise((r) => setTimeout(r, 3000));
    await phone.hangup();
    await phone.waitForEvent('CALL_CLOSED', 10_000);
    const r = await trunk.result;
    expect(r.exitCode, r.describe()).toBe(0);
    expect(r.received('INVITE')[0]).toMatch(/^m=audio \d+ RTP\/AVP 8 101\r?$/m); // the trunk leg is plain RTP
    const atSipp = await capture.stop();
    expect(atSipp.byPayloadType.get(8) ?? 0, 'the device\'s audio, decrypted, at the sipp trunk').toBeGreaterThan(50);
    const stats = await phone.waitForAudioStats(1, 10_000);
    expect(stats.rx.packets, 'SRTP from the gateway that baresip authenticated and decoded').toBeGreaterThan(50);
    expect(phone.output()).toMatch(/SIP\/2\.0 200 OK[\s\S]*?m=audio \d+ RTP\/SAVP 8 101[\s\S]*?a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:/);
    const record = (await fx.gw.store!.recentRecords(1))[0]!;
    expect(record).toMatchObject({ direction: 'outbound', agentId: AGENT, endReason: 'hangup_local', codec: 'PCMA' });
  }, 90_000);
});
