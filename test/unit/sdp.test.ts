/**
 * The SDP module (src/sip/sdp.ts): parsing, offer/answer with trunks (RFC 3264), re-offers, the
 * plan's mediasoup parameters, and fuzzing (fast-check) so that nothing but SdpError escapes.
 *
 * Fixtures in test/fixtures/sdp (see its README): trunk offers modelled on Asterisk, FreeSWITCH,
 * Kamailio + rtpengine, Twilio, Cisco and Polycom; the SDP bodies of RFC 5118 §4.6, §4.8, §4.9;
 * real WebRTC SDPs. Fuzz runs per property: FUZZ_RUNS (default 2000); FUZZ_SEED replays a seed.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  buildOffer,
  consumerPayloadTypeMap,
  fmtpParameters,
  MAX_SDP_LENGTH,
  mimeTypeOf,
  negotiateAnswer,
  negotiateFromAnswer,
  newSdpSessionIds,
  parseSdp,
  reanswer,
  reofferFormats,
  SdpError,
  toProducerRtpParameters,
  toRtpCapabilities,
  toRtpCodecParameters,
  type MediaPlan,
  type NegotiateAnswerOptions,
  type SdpSession,
} from '../../src/sip/sdp.js';
import { projectRoot } from '../../src/util/paths.js';

const FIXTURES = path.join(projectRoot(), 'test', 'fixtures', 'sdp');

function fixture(rel: string): string {
  return fs.readFileSync(path.join(FIXTURES, rel), 'utf8');
}

function fixtureNames(dir: string): string[] {
  return fs
    .readdirSync(path.join(FIXTURES, dir))
    .filter((f) => f.endsWith('.sdp'))
    .sort();
}

/** SDP lines joined with CRLF, ending with CRLF. */
function sdp(...lines: string[]): string {
  return lines.join('\r\n') + '\r\n';
}

/** The SdpError a call throws (fails the test when it throws nothing or something else). */
function sdpErrorOf(fn: () => unknown): SdpError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SdpError) {
      return err;
    }
    throw err;
  }
  throw new Error('expected an SdpError, got no error');
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) {
      deepFreeze(v);
    }
  }

  return o;
}

const SESSION = { id: '1234567890', version: 1 };
const LOCAL = { localAddress: '192.0.2.10', localPort: 40000, session: SESSION };
const ALL = ['PCMU', 'PCMA', 'G722', 'opus'] as const;

const ASTERISK = fixture('trunk/asterisk-offer-pcmu-pcma-g722.sdp');
const ASTERISK_HOLD = fixture('trunk/asterisk-reinvite-sendonly-hold.sdp');
const FREESWITCH = fixture('trunk/freeswitch-offer-g722-opus-cn-rtcp.sdp');
const FREESWITCH_V6 = fixture('trunk/freeswitch-offer-opus-first-ipv6.sdp');
const KAMAILIO = fixture('trunk/kamailio-rtpengine-offer-pcma-g729-ssrc.sdp');
const TWILIO = fixture('trunk/twilio-offer-pcmu.sdp');
const G729_ONLY = fixture('trunk/carrier-offer-g729-only.sdp');
const CISCO_HOLD = fixture('trunk/cisco-rfc2543-hold.sdp');
const POLYCOM = fixture('trunk/polycom-offer-audio-video-bfcp.sdp');
const RTPENGINE_MUX_LF = fixture('trunk/rtpengine-offer-rtcp-mux-lf-only.sdp');
const SAVP = fixture('trunk/sbc-offer-rtp-savp-only.sdp');
const RFC5118_IPV6 = fixture('rfc5118/rfc5118-4.6-ipv6-in-sdp.sdp');
const RFC5118_MULT = fixture('rfc5118/rfc5118-4.8-mult-ip-in-sdp.sdp');
const RFC5118_MAPPED = fixture('rfc5118/rfc5118-4.9-ipv4-mapped-ipv6.sdp');

/** An offer from a plain SIP phone: PCMU and telephone-event on RTP/AVP, with a direction. */
function phoneOffer(direction = 'sendrecv', extra: string[] = []): string {
  return sdp(
    'v=0',
    'o=- 100 100 IN IP4 198.51.100.7',
    's=-',
    'c=IN IP4 198.51.100.7',
    't=0 0',
    'm=audio 5004 RTP/AVP 0 101',
    'a=rtpmap:101 telephone-event/8000',
    'a=fmtp:101 0-16',
    `a=${direction}`,
    ...extra,
  );
}

// ------------------------------------------------------------------------------------------------

describe('parseSdp()', () => {
  it('parseSdp() reads an Asterisk offer: o=, c=, formats with a=rtpmap, a=fmtp, ptime, maxptime, direction', () => {
    const s = parseSdp(ASTERISK);
    expect(s.origin).toEqual({ username: '-', sessionId: '1828359457', sessionVersion: '1828359457', addressType: 'IP4', address: '203.0.113.10' });
    expect(s.name).toBe('Asterisk');
    expect(s.connection).toEqual({ addressType: 'IP4', address: '203.0.113.10', ipVersion: 4 });
    expect(s.media).toHaveLength(1);
    const m = s.media[0]!;
    expect(m).toMatchObject({ index: 0, type: 'audio', port: 10442, protocol: 'RTP/AVP', formats: ['0', '8', '9', '101'], direction: 'sendrecv', ptime: 20, maxptime: 150, rtcpMux: false });
    expect(m.rtp.map((f) => [f.payloadType, f.encodingName, f.clockRate, f.fmtp])).toEqual([
      [0, 'PCMU', 8000, undefined],
      [8, 'PCMA', 8000, undefined],
      [9, 'G722', 8000, undefined],
      [101, 'telephone-event', 8000, '0-16'],
    ]);
  });

  it('parseSdp() takes formats without a=rtpmap from the RFC 3551 static table and leaves unknown dynamic ones unnamed', () => {
    const s = parseSdp(sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 0 8 9 18 13 97'));
    expect(s.media[0]!.rtp.map((f) => [f.payloadType, f.encodingName, f.clockRate, f.static])).toEqual([
      [0, 'PCMU', 8000, true],
      [8, 'PCMA', 8000, true],
      [9, 'G722', 8000, true],
      [18, 'G729', 8000, true],
      [13, 'CN', 8000, true],
      [97, undefined, undefined, false],
    ]);
  });

  it('parseSdp() accepts LF-only line ends (RFC 4566 §5) and reads a=rtcp-mux and a=rtcp', () => {
    const m = parseSdp(RTPENGINE_MUX_LF).media[0]!;
    expect(m).toMatchObject({ port: 20040, rtcpMux: true, rtcp: { port: 20040 } });
  });

  it('parseSdp() reads a=rtcp with an address (RFC 3605), a=ssrc (RFC 5576) and a=crypto (RFC 4568)', () => {
    expect(parseSdp(FREESWITCH).media[0]!.rtcp).toEqual({ port: 24577, connection: { addressType: 'IP4', address: '198.51.100.20', ipVersion: 4 } });
    expect(parseSdp(KAMAILIO).media[0]!.ssrcs).toEqual([2864061201]);
    expect(parseSdp(SAVP).media[0]!.crypto).toEqual([
      { tag: 1, suite: 'AES_CM_128_HMAC_SHA1_80', keyParams: 'inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32' },
      { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32', keyParams: 'inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32' },
    ]);
  });

  it('parseSdp() applies the session-level direction to media without their own (RFC 3264 §5.1)', () => {
    const s = parseSdp(sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'a=sendonly', 'm=audio 5000 RTP/AVP 0', 'm=audio 5002 RTP/AVP 0', 'a=inactive'));
    expect(s.direction).toBe('sendonly');
    expect(s.media.map((m) => m.direction)).toEqual(['sendonly', 'inactive']);
  });

  it('parseSdp() reads the SDP of RFC 5118 §4.6: IN IP6 in o= and c= (never bracketed)', () => {
    const s = parseSdp(RFC5118_IPV6);
    expect(s.origin).toMatchObject({ sessionId: '971731711378798081', addressType: 'IP6', address: '2001:db8::20' });
    expect(s.connection).toEqual({ addressType: 'IP6', address: '2001:db8::20', ipVersion: 6 });
    expect(s.media.map((m) => [m.type, m.port, m.rtp[0]!.encodingName])).toEqual([
      ['audio', 6000, 'G726-32'],
      ['video', 6024, 'H263-1998'],
    ]);
  });

  it('parseSdp() reads the SDP of RFC 5118 §4.8: no session c=, IPv4 audio and IPv6 video per m= line, a host name in o=', () => {
    const s = parseSdp(RFC5118_MULT);
    expect(s.connection).toBeUndefined();
    expect(s.origin.address).toBe('host.example.com');
    expect(s.name).toBe('');
    expect(s.media.map((m) => m.connection)).toEqual([
      { addressType: 'IP4', address: '192.0.2.1', ipVersion: 4 },
      { addressType: 'IP6', address: '2001:db8::1', ipVersion: 6 },
    ]);
  });

  it('parseSdp() reads the SDP of RFC 5118 §4.9: an IPv4-mapped IPv6 c= address', () => {
    expect(parseSdp(RFC5118_MAPPED).connection).toEqual({ addressType: 'IP6', address: '::ffff:192.0.2.2', ipVersion: 6 });
  });

  it.each(fixtureNames('webrtc'))('parseSdp() reads the real WebRTC SDP %s: every m= line, its RTP formats', (name) => {
    const text = fixture(`webrtc/${name}`);
    const s = parseSdp(text);
    const mLines = text.split('\r\n').filter((l) => l.startsWith('m='));
    expect(s.media.map((m) => `m=${m.type} ${m.port} ${m.protocol} ${m.formats.join(' ')}`)).toEqual(mLines);
    for (const m of s.media.filter((x) => x.protocol.includes('RTP'))) {
      expect(m.rtp.length).toBe(m.formats.length);
      expect(m.rtp.every((f) => f.encodingName !== undefined)).toBe(true);
    }
  });

  it('parseSdp() reads the telephone-event of each clock in a Chrome offer (48000, 32000, 16000, 8000)', () => {
    const m = parseSdp(fixture('webrtc/w01-chrome-audio-offer-ipv6-host-tcp-candidates.sdp')).media[0]!;
    expect(m.rtp.filter((f) => f.encodingName === 'telephone-event').map((f) => f.clockRate)).toEqual([48000, 32000, 16000, 8000]);
  });

  it('parseSdp() ignores attributes it cannot read (RFC 4566 §5.13): a=rtpmap without clock, a=ptime:abc, a=rtcp:x', () => {
    const m = parseSdp(sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 96', 'a=rtpmap:96 opus', 'a=ptime:abc', 'a=rtcp:x', 'a=x-unknown:1')).media[0]!;
    expect(m.rtp[0]).toMatchObject({ payloadType: 96, encodingName: undefined });
    expect(m.ptime).toBeUndefined();
    expect(m.rtcp).toBeUndefined();
  });

  it('parseSdp() tolerates a missing s= and t= and blank lines', () => {
    const s = parseSdp('v=0\r\n\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 0\r\n\r\n');
    expect(s.media[0]!.port).toBe(5000);
  });

  it('parseSdp() accepts a host name in c= (RFC 4566 §5.7), classified as no IP literal', () => {
    expect(parseSdp(sdp('v=0', 'o=- 1 1 IN IP4 h', 's=-', 'c=IN IP4 media.example.com', 't=0 0', 'm=audio 5000 RTP/AVP 0')).connection).toEqual({
      addressType: 'IP4',
      address: 'media.example.com',
      ipVersion: undefined,
    });
  });

  const head = ['v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0'];
  it.each<[string, string, string]>([
    ['an empty body', '', 'empty SDP body'],
    ['blank lines only', '\r\n\r\n', 'empty SDP body'],
    ['text that is not SDP', 'hello world', 'not <type>=<value>'],
    ['JSON', '{"sdp":"v=0"}', 'not <type>=<value>'],
    ['o= before v=', sdp('o=- 1 1 IN IP4 192.0.2.1', 'v=0'), 'first line must be v=0'],
    ['v=1', sdp('v=1', 'o=- 1 1 IN IP4 192.0.2.1'), 'first line must be v=0'],
    ['a second v=', sdp(...head, 'v=0'), 'second v='],
    ['no o=', sdp('v=0', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 0'), 'no o= line'],
    ['two o=', sdp(...head, 'o=- 2 2 IN IP4 192.0.2.1'), 'more than one o='],
    ['an o= with a non-numeric id', sdp('v=0', 'o=- abc 1 IN IP4 192.0.2.1', 'c=IN IP4 192.0.2.1'), 'unreadable o= line'],
    ['an o= with a bad network type', sdp('v=0', 'o=- 1 1 ATM IP4 192.0.2.1', 'c=IN IP4 192.0.2.1'), 'unreadable o= line'],
    ['o= inside a media section', sdp('v=0', 'm=audio 5000 RTP/AVP 0', 'o=- 1 1 IN IP4 192.0.2.1'), 'inside a media section'],
    ['c= without an address', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 'c=IN IP4', 'm=audio 5000 RTP/AVP 0'), 'unreadable c= line at session level'],
    ['c= IN IP4 with an IPv6 address', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 'c=IN IP4 2001:db8::1', 'm=audio 5000 RTP/AVP 0'), 'unreadable c= line'],
    ['c= IN IP6 with an IPv4 address', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 'c=IN IP6 192.0.2.1', 'm=audio 5000 RTP/AVP 0'), 'unreadable c= line'],
    ['c= with 999.1.1.1', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 'c=IN IP4 999.1.1.1', 'm=audio 5000 RTP/AVP 0'), 'unreadable c= line'],
    ['a media c= that cannot be read', sdp(...head, 'm=audio 5000 RTP/AVP 0', 'c=IN IP9 x'), 'unreadable c= line in m= section 1'],
    ['an m= line without a port', sdp(...head, 'm=audio RTP/AVP 0'), 'unreadable m= line'],
    ['an m= port count (RFC 4566 §5.14)', sdp(...head, 'm=audio 49170/2 RTP/AVP 0'), 'port counts are not supported'],
    ['an m= port above 65535', sdp(...head, 'm=audio 70000 RTP/AVP 0'), 'unreadable m= line'],
    ['an RTP format that is not a number', sdp(...head, 'm=audio 5000 RTP/AVP 0 abc'), 'not an RTP payload type'],
    ['RTP payload type 128', sdp(...head, 'm=audio 5000 RTP/AVP 128'), 'not an RTP payload type'],
    ['an active m= line without any c= (RFC 4566 §5.7)', sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 't=0 0', 'm=audio 5000 RTP/AVP 0'), 'no c= line for m= line 1'],
    ['a NUL byte', sdp(...head, 'm=audio 5000 RTP/AVP 0', 'a=x\0y'), 'not <type>=<value>'],
    ['a line starting with a space', sdp(...head, ' m=audio 5000 RTP/AVP 0'), 'not <type>=<value>'],
    ['an upper-case type', sdp(...head, 'M=audio 5000 RTP/AVP 0'), 'not <type>=<value>'],
    ['a line over 4096 characters', sdp(...head, `a=x:${'y'.repeat(5000)}`), 'longer than 4096'],
    ['a body over 65535 characters', sdp(...head, ...Array<string>(20_000).fill('a=xyz')), 'longer than 65535'],
    ['65 m= lines', sdp(...head, ...Array<string>(65).fill('m=audio 0 RTP/AVP 0')), 'more than 64 m= lines'],
  ])('parseSdp() refuses %s with MALFORMED (400)', (_name, text, reason) => {
    const err = sdpErrorOf(() => parseSdp(text));
    expect(err).toMatchObject({ name: 'SdpError', code: 'MALFORMED', status: 400, warnCode: 399 });
    expect(err.reason).toContain(reason);
  });

  it('parseSdp() refuses a value that is not a string with MALFORMED, not a TypeError', () => {
    for (const v of [undefined, null, 42, Buffer.from('v=0'), {}]) {
      expect(sdpErrorOf(() => parseSdp(v as string)).reason).toBe('the SDP body is not text');
    }
  });

  it('parseSdp() takes a body of exactly MAX_SDP_LENGTH characters', () => {
    const base = sdp(...head, 'm=audio 5000 RTP/AVP 0');
    const pad = MAX_SDP_LENGTH - base.length - 2;
    const filler: string[] = [];
    for (let left = pad; left > 0; ) {
      const n = Math.min(left - 2, 4000);
      filler.push(`a=${'x'.repeat(Math.max(0, n - 2))}`);
      left -= Math.max(0, n - 2) + 4;
    }
    const text = base + filler.join('\r\n').slice(0, pad) + '\r\n';
    expect(text.length).toBeLessThanOrEqual(MAX_SDP_LENGTH);
    expect(() => parseSdp(text)).not.toThrow();
  });
});

describe('SdpError', () => {
  it('warning() is a Warning header value (RFC 3261 §20.43) with the reason as a quoted string', () => {
    const err = new SdpError('NO_COMMON_CODEC', 'no common codec: offered "G729"');
    expect(err.warning('gw.example.com')).toBe('305 gw.example.com "no common codec: offered \\"G729\\""');
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('SDP NO_COMMON_CODEC: no common codec: offered "G729"');
  });

  it('SdpError keeps the reason printable ASCII and at most 120 characters, so remote text cannot break a header', () => {
    const err = new SdpError('MALFORMED', `bad\r\nX-Injected: 1 ${'z'.repeat(200)}`);
    expect(err.reason).toMatch(/^[\x20-\x7e]{1,120}$/);
    expect(err.reason.startsWith('bad??X-Injected')).toBe(true);
    expect(err.reason.endsWith('...')).toBe(true);
  });

  it.each<[SdpError['code'], number, number]>([
    ['MALFORMED', 400, 399],
    ['NO_AUDIO', 488, 304],
    ['UNSUPPORTED_TRANSPORT', 488, 302],
    ['SRTP_REQUIRED', 488, 302],
    ['UNSUPPORTED_ADDRESS', 488, 301],
    ['NO_COMMON_CODEC', 488, 305],
    ['CODEC_CHANGE', 488, 305],
    ['BAD_ANSWER', 488, 399],
  ])('SdpError %s answers %i with Warning %i', (code, status, warnCode) => {
    expect(new SdpError(code, 'x')).toMatchObject({ code, status, warnCode });
  });
});

// ------------------------------------------------------------------------------------------------

describe('negotiateAnswer()', () => {
  it('negotiateAnswer() answers an Asterisk offer with PCMU, its first allowed codec, and telephone-event/8000', () => {
    const { answerSdp, plan, session } = negotiateAnswer(ASTERISK, { allowedCodecs: ['PCMU', 'PCMA'], ...LOCAL });
    expect(answerSdp).toBe(
      sdp(
        'v=0',
        'o=ringbridge 1234567890 1 IN IP4 192.0.2.10',
        's=ringbridge',
        'c=IN IP4 192.0.2.10',
        't=0 0',
        'm=audio 40000 RTP/AVP 0 101',
        'a=rtpmap:0 PCMU/8000',
        'a=rtpmap:101 telephone-event/8000',
        'a=fmtp:101 0-16',
        'a=ptime:20',
        'a=maxptime:150',
        'a=sendrecv',
      ),
    );
    expect(session).toEqual(SESSION);
    expect(plan).toEqual<MediaPlan>({
      mediaIndex: 0,
      transport: 'RTP/AVP',
      codec: { name: 'PCMU', mimeType: 'audio/PCMU', payloadType: 0, localPayloadType: 0, clockRate: 8000, channels: 1, parameters: {} },
      telephoneEvent: { payloadType: 101, localPayloadType: 101, clockRate: 8000, events: '0-16' },
      remote: { address: '203.0.113.10', port: 10442, rtcpAddress: '203.0.113.10', rtcpPort: 10443, rtcpMux: false },
      direction: 'sendrecv',
      localDirection: 'sendrecv',
      flow: { send: true, receive: true },
      hold: 'none',
      ptime: 20,
      maxptime: 150,
      connectionIPv6: false,
      remoteSession: { id: '1828359457', version: '1828359457' },
    });
    // the answer is SDP we can read back
    expect(parseSdp(answerSdp).media[0]!.rtp.map((f) => f.encodingName)).toEqual(['PCMU', 'telephone-event']);
  });

  it("negotiateAnswer() follows the offer's order, not allowedCodecs' order (RFC 3264 §6.1)", () => {
    expect(negotiateAnswer(ASTERISK, { allowedCodecs: ['G722', 'PCMA', 'PCMU'], ...LOCAL }).plan.codec.name).toBe('PCMU');
    expect(negotiateAnswer(FREESWITCH, { allowedCodecs: ['PCMU', 'opus', 'G722'], ...LOCAL }).plan.codec.name).toBe('G722');
  });

  it('negotiateAnswer() skips codecs the trunk may not use: PCMA when only PCMA is allowed', () => {
    const { answerSdp, plan } = negotiateAnswer(ASTERISK, { allowedCodecs: ['PCMA'], ...LOCAL });
    expect(plan.codec).toMatchObject({ name: 'PCMA', payloadType: 8 });
    expect(answerSdp).toContain('m=audio 40000 RTP/AVP 8 101\r\n');
  });

  it('negotiateAnswer() picks opus from FreeSWITCH under its dynamic payload type 102, telephone-event/48000 (100), and reads the fmtp', () => {
    const { answerSdp, plan } = negotiateAnswer(FREESWITCH, { allowedCodecs: ['opus', 'PCMU'], ...LOCAL });
    expect(plan.codec).toEqual({
      name: 'opus',
      mimeType: 'audio/opus',
      payloadType: 102,
      localPayloadType: 102,
      clockRate: 48000,
      channels: 2,
      fmtp: 'useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40',
      parameters: { useinbandfec: 1, maxaveragebitrate: 30000, maxplaybackrate: 48000, ptime: 20, minptime: 10, maxptime: 40 },
    });
    expect(plan.telephoneEvent).toEqual({ payloadType: 100, localPayloadType: 100, clockRate: 48000, events: '0-16' });
    expect(answerSdp).toContain(['m=audio 40000 RTP/AVP 102 100', 'a=rtpmap:102 opus/48000/2', 'a=rtpmap:100 telephone-event/48000', 'a=fmtp:102 useinbandfec=1', 'a=fmtp:100 0-16'].join('\r\n'));
  });

  it('negotiateAnswer() never answers CN or G729, only the chosen codec and its telephone-event', () => {
    const m = parseSdp(negotiateAnswer(FREESWITCH, { allowedCodecs: ['G722'], ...LOCAL }).answerSdp).media[0]!;
    expect(m.formats).toEqual(['9', '101']);
  });

  it('negotiateAnswer() takes the RTCP port from a=rtcp (RFC 3605) and port + 1 without it (RFC 3550 §11)', () => {
    expect(negotiateAnswer(FREESWITCH, { allowedCodecs: ALL, ...LOCAL }).plan.remote).toMatchObject({ port: 24576, rtcpPort: 24577, rtcpAddress: '198.51.100.20' });
    expect(negotiateAnswer(TWILIO, { allowedCodecs: ALL, ...LOCAL }).plan.remote).toMatchObject({ port: 13956, rtcpPort: 13957 });
  });

  it('negotiateAnswer() answers Kamailio/rtpengine: skips G729, takes PCMA, a=rtcp:30001, the a=ssrc, telephone-event events 0-15', () => {
    const { answerSdp, plan } = negotiateAnswer(KAMAILIO, { allowedCodecs: ['PCMU', 'PCMA'], ...LOCAL });
    expect(plan.codec.name).toBe('PCMA');
    expect(plan.remote).toEqual({ address: '192.0.2.50', port: 30000, rtcpAddress: '192.0.2.50', rtcpPort: 30001, rtcpMux: false, ssrc: 2864061201 });
    expect(plan.telephoneEvent?.events).toBe('0-15');
    expect(answerSdp).toContain('a=fmtp:101 0-16\r\n');
  });

  it('negotiateAnswer() keeps the offer\'s ptime and maxptime (Twilio) and uses options.ptime when given', () => {
    expect(negotiateAnswer(TWILIO, { allowedCodecs: ALL, ...LOCAL }).answerSdp).toContain('a=ptime:20\r\na=maxptime:150\r\n');
    const { answerSdp, plan } = negotiateAnswer(TWILIO, { allowedCodecs: ALL, ...LOCAL, ptime: 30 });
    expect(answerSdp).toContain('a=ptime:30\r\n');
    expect(plan.ptime).toBe(20);
    expect(negotiateAnswer(phoneOffer(), { allowedCodecs: ALL, ...LOCAL }).answerSdp).not.toContain('a=ptime');
  });

  it('negotiateAnswer() answers an IPv6 offer with c=IN IP6 and keeps opus 96 with telephone-event/48000 97', () => {
    const { answerSdp, plan } = negotiateAnswer(FREESWITCH_V6, { allowedCodecs: ALL, localAddress: { ipv4: '192.0.2.10', ipv6: '2001:db8::10' }, localPort: 40000, session: SESSION });
    expect(answerSdp).toContain('o=ringbridge 1234567890 1 IN IP6 2001:db8::10\r\ns=ringbridge\r\nc=IN IP6 2001:db8::10\r\n');
    expect(answerSdp).toContain('m=audio 40000 RTP/AVP 96 97\r\n');
    expect(plan).toMatchObject({ connectionIPv6: true, codec: { name: 'opus', payloadType: 96 }, telephoneEvent: { payloadType: 97, clockRate: 48000 }, remote: { address: '2001:db8:0:1::20' } });
  });

  it('negotiateAnswer() refuses an IPv6 offer with UNSUPPORTED_ADDRESS (488, Warning 301) when there is no IPv6 local address', () => {
    const err = sdpErrorOf(() => negotiateAnswer(FREESWITCH_V6, { allowedCodecs: ALL, ...LOCAL }));
    expect(err).toMatchObject({ code: 'UNSUPPORTED_ADDRESS', status: 488, warnCode: 301 });
    expect(err.reason).toContain('IPv6');
  });

  it('negotiateAnswer() refuses the RFC 5118 §4.6 and §4.9 offers (G726-32 only) with NO_COMMON_CODEC', () => {
    for (const offer of [RFC5118_IPV6, RFC5118_MAPPED]) {
      expect(sdpErrorOf(() => negotiateAnswer(offer, { allowedCodecs: ALL, localAddress: { ipv4: '192.0.2.10', ipv6: '2001:db8::10' }, localPort: 40000 })).code).toBe('NO_COMMON_CODEC');
    }
  });

  it('negotiateAnswer() answers the RFC 5118 §4.8 offer: PCMU on the IPv4 audio stream, the IPv6 video stream rejected with port 0', () => {
    const { answerSdp, plan } = negotiateAnswer(RFC5118_MULT, { allowedCodecs: ALL, ...LOCAL });
    expect(plan).toMatchObject({ mediaIndex: 0, codec: { name: 'PCMU' }, remote: { address: '192.0.2.1', port: 22334 }, connectionIPv6: false });
    expect(answerSdp).toContain('c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\nm=video 0 RTP/AVP 107\r\n');
  });

  it('negotiateAnswer() treats an IPv4-mapped IPv6 address as the IPv4 node it maps to (RFC 5118 §4.9)', () => {
    const offer = RFC5118_MAPPED.replace('m=audio 6000 RTP/AVP 2\r\na=rtpmap:2 G726-32/8000', 'm=audio 6000 RTP/AVP 0');
    const { answerSdp, plan } = negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL });
    expect(plan.remote.address).toBe('192.0.2.2');
    expect(plan.connectionIPv6).toBe(true);
    expect(answerSdp).toContain('c=IN IP4 192.0.2.10\r\n');
  });

  it('negotiateAnswer() refuses a host name or a multicast connection address with UNSUPPORTED_ADDRESS', () => {
    const host = phoneOffer().replace('c=IN IP4 198.51.100.7', 'c=IN IP4 media.example.com');
    expect(sdpErrorOf(() => negotiateAnswer(host, { allowedCodecs: ALL, ...LOCAL })).reason).toContain('host name');
    const multicast = phoneOffer().replace('c=IN IP4 198.51.100.7', 'c=IN IP4 224.2.1.1/127');
    expect(sdpErrorOf(() => negotiateAnswer(multicast, { allowedCodecs: ALL, ...LOCAL })).reason).toContain('multicast');
    const ttl = phoneOffer().replace('c=IN IP4 198.51.100.7', 'c=IN IP4 198.51.100.7/127');
    expect(sdpErrorOf(() => negotiateAnswer(ttl, { allowedCodecs: ALL, ...LOCAL })).reason).toContain('only a multicast address');
  });

  it('negotiateAnswer() refuses a G729-only carrier offer with NO_COMMON_CODEC (488, Warning 305) naming what was offered and allowed', () => {
    const err = sdpErrorOf(() => negotiateAnswer(G729_ONLY, { allowedCodecs: ['PCMU', 'PCMA'], ...LOCAL }));
    expect(err).toMatchObject({ code: 'NO_COMMON_CODEC', status: 488, warnCode: 305 });
    expect(err.reason).toBe('no common codec: offered G729/8000, telephone-event/8000; allowed PCMU, PCMA');
    expect(err.warning('203.0.113.1')).toBe('305 203.0.113.1 "no common codec: offered G729/8000, telephone-event/8000; allowed PCMU, PCMA"');
  });

  it('negotiateAnswer() answers a Polycom offer with audio, video, a second audio and BFCP: the first audio accepted, the rest rejected with port 0 (RFC 3264 §6)', () => {
    const { answerSdp, plan } = negotiateAnswer(POLYCOM, { allowedCodecs: ALL, ...LOCAL });
    expect(plan.mediaIndex).toBe(0);
    const answer = parseSdp(answerSdp);
    expect(answer.media.map((m) => `${m.type} ${m.port} ${m.protocol} ${m.formats.join(' ')}`)).toEqual([
      'audio 40000 RTP/AVP 9 101',
      'video 0 RTP/AVP 109 34',
      'audio 0 RTP/AVP 0',
      'application 0 TCP/BFCP *',
    ]);
    expect(answerSdp).not.toContain('H264');
  });

  it('negotiateAnswer() takes the first audio stream that has a common codec', () => {
    const offer = sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 18', 'm=audio 5002 RTP/AVP 8', 'a=mid:a2');
    const { answerSdp, plan } = negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL });
    expect(plan).toMatchObject({ mediaIndex: 1, mid: 'a2', codec: { name: 'PCMA' }, remote: { port: 5002 } });
    expect(answerSdp).toContain('m=audio 0 RTP/AVP 18\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=mid:a2\r\na=sendrecv\r\n');
  });

  it.each<[string, string, string, string]>([
    ['sendrecv', 'sendrecv', 'none', 'send and receive'],
    ['sendonly', 'recvonly', 'direction', 'receive only'],
    ['recvonly', 'sendonly', 'none', 'send only'],
    ['inactive', 'inactive', 'direction', 'neither'],
  ])('negotiateAnswer() answers a=%s with a=%s (RFC 3264 §6.1), hold %s, flow: %s', (offered, answered, hold, _flow) => {
    const { answerSdp, plan } = negotiateAnswer(phoneOffer(offered), { allowedCodecs: ALL, ...LOCAL });
    expect(answerSdp).toContain(`a=${answered}\r\n`);
    expect(plan).toMatchObject({ direction: offered, localDirection: answered, hold });
    expect(plan.flow).toEqual({ send: answered === 'sendrecv' || answered === 'sendonly', receive: answered === 'sendrecv' || answered === 'recvonly' });
  });

  it('negotiateAnswer() takes c=0.0.0.0 as a hold (RFC 3264 §8.4): sends nothing, answers recvonly, reports null-address', () => {
    const { answerSdp, plan } = negotiateAnswer(CISCO_HOLD, { allowedCodecs: ALL, ...LOCAL });
    expect(plan).toMatchObject({ hold: 'null-address', direction: 'sendonly', localDirection: 'recvonly', flow: { send: false, receive: true }, remote: { address: '0.0.0.0' } });
    expect(answerSdp).toContain('a=recvonly\r\n');
    const inactive = negotiateAnswer(CISCO_HOLD.replace('a=ptime:20', 'a=recvonly'), { allowedCodecs: ALL, ...LOCAL });
    expect(inactive.plan).toMatchObject({ hold: 'null-address', direction: 'inactive', localDirection: 'inactive' });
  });

  it('negotiateAnswer() limits the answer to localDirection while we hold the call', () => {
    expect(negotiateAnswer(phoneOffer(), { allowedCodecs: ALL, ...LOCAL, localDirection: 'sendonly' }).plan).toMatchObject({ localDirection: 'sendonly', flow: { send: true, receive: false } });
    expect(negotiateAnswer(phoneOffer('sendonly'), { allowedCodecs: ALL, ...LOCAL, localDirection: 'sendonly' }).plan.localDirection).toBe('inactive');
  });

  it('negotiateAnswer() accepts rtcp-mux when offered (RFC 5761 §5.1.1), or declines it with rtcpMux: false', () => {
    const mux = negotiateAnswer(RTPENGINE_MUX_LF, { allowedCodecs: ALL, ...LOCAL });
    expect(mux.answerSdp).toContain('a=rtcp-mux\r\n');
    expect(mux.plan.remote).toMatchObject({ rtcpMux: true, port: 20040, rtcpPort: 20040 });
    const noMux = negotiateAnswer(phoneOffer('sendrecv', ['a=rtcp-mux']), { allowedCodecs: ALL, ...LOCAL, rtcpMux: false });
    expect(noMux.answerSdp).not.toContain('rtcp-mux');
    expect(noMux.plan.remote).toMatchObject({ rtcpMux: false, rtcpPort: 5005 });
  });

  it('negotiateAnswer() writes a=rtcp when our RTCP port is not port + 1 (RFC 3605), and not with rtcp-mux', () => {
    expect(negotiateAnswer(phoneOffer(), { allowedCodecs: ALL, ...LOCAL, localRtcpPort: 40007 }).answerSdp).toContain('a=rtcp:40007\r\n');
    expect(negotiateAnswer(phoneOffer(), { allowedCodecs: ALL, ...LOCAL, localRtcpPort: 40001 }).answerSdp).not.toContain('a=rtcp');
    expect(negotiateAnswer(RTPENGINE_MUX_LF, { allowedCodecs: ALL, ...LOCAL, localRtcpPort: 40007 }).answerSdp).not.toContain('a=rtcp:');
  });

  it('negotiateAnswer() refuses an RTP port of 65535 without a=rtcp (no room for RTCP)', () => {
    expect(sdpErrorOf(() => negotiateAnswer(phoneOffer().replace('5004', '65535'), { allowedCodecs: ALL, ...LOCAL })).code).toBe('MALFORMED');
  });

  it('negotiateAnswer() accepts G.711 under a dynamic payload type and keeps that number', () => {
    const offer = phoneOffer().replace('RTP/AVP 0 101', 'RTP/AVP 96 101').replace('a=rtpmap:101', 'a=rtpmap:96 pcmu/8000\r\na=rtpmap:101');
    const { answerSdp, plan } = negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL });
    expect(plan.codec).toMatchObject({ name: 'PCMU', payloadType: 96 });
    expect(answerSdp).toContain('a=rtpmap:96 PCMU/8000\r\n');
  });

  it('negotiateAnswer() does not take opus at another clock or channel count (RFC 7587 §7), nor G722/16000', () => {
    const offer = phoneOffer().replace('RTP/AVP 0 101', 'RTP/AVP 96 97 98 8').replace('a=rtpmap:101 telephone-event/8000', 'a=rtpmap:96 opus/16000/2\r\na=rtpmap:97 opus/48000\r\na=rtpmap:98 G722/16000');
    expect(negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL }).plan.codec).toMatchObject({ name: 'PCMA', payloadType: 8 });
  });

  it('negotiateAnswer() skips RED and other formats it does not know (Chrome offer over RTP/AVP): opus 111 with telephone-event/48000 110', () => {
    const chrome = fixture('webrtc/w08-chrome-offer-non-trickled-red-opus-meta-docs.sdp').replace('UDP/TLS/RTP/SAVPF', 'RTP/AVP').replace('m=audio 9 ', 'm=audio 9000 ').replace(/c=IN IP4 0\.0\.0\.0/, 'c=IN IP4 192.0.2.30');
    const { plan } = negotiateAnswer(chrome, { allowedCodecs: ALL, ...LOCAL });
    expect(plan).toMatchObject({ mid: '0', codec: { name: 'opus', payloadType: 111, parameters: { minptime: 10, useinbandfec: 1 } }, telephoneEvent: { payloadType: 110, clockRate: 48000 }, remote: { rtcpMux: true } });
    const g711 = negotiateAnswer(chrome, { allowedCodecs: ['PCMU'], ...LOCAL }).plan;
    expect(g711).toMatchObject({ codec: { name: 'PCMU', payloadType: 0 }, telephoneEvent: { payloadType: 126, clockRate: 8000 } });
  });

  it('negotiateAnswer() answers without telephone-event when none is offered at the codec\'s clock', () => {
    const { answerSdp, plan } = negotiateAnswer(FREESWITCH_V6.replace(/a=rtpmap:97 telephone-event\/48000\r\n/, ''), {
      allowedCodecs: ['opus'],
      localAddress: { ipv6: '2001:db8::10' },
      localPort: 40000,
    });
    expect(plan.telephoneEvent).toBeUndefined();
    expect(answerSdp).toContain('m=audio 40000 RTP/AVP 96\r\n');
  });

  it.each<[string, string]>([
    ['video only (Chrome)', 'webrtc/w03-chrome-video-offer-rtx-red-ulpfec.sdp'],
    ['video only (Firefox)', 'webrtc/w04-firefox61-video-offer-vp8-vp9.sdp'],
    ['a data channel only', 'webrtc/w06-firefox58-datachannel-offer-sctpmap.sdp'],
  ])('negotiateAnswer() refuses %s with NO_AUDIO (488, Warning 304)', (_name, file) => {
    expect(sdpErrorOf(() => negotiateAnswer(fixture(file), { allowedCodecs: ALL, ...LOCAL }))).toMatchObject({ code: 'NO_AUDIO', status: 488, warnCode: 304 });
  });

  it('negotiateAnswer() refuses an offer whose audio streams are all disabled (port 0) with NO_AUDIO', () => {
    expect(sdpErrorOf(() => negotiateAnswer(phoneOffer().replace('m=audio 5004', 'm=audio 0'), { allowedCodecs: ALL, ...LOCAL })).reason).toContain('disabled');
  });

  it.each(['w01-chrome-audio-offer-ipv6-host-tcp-candidates.sdp', 'w02-firefox58-audio-offer-end-of-candidates-srflx.sdp', 'w05-safari-audio-video-data-offer.sdp', 'w09-react-native-libwebrtc-mobile-offer-no-candidates-renomination.sdp'])(
    'negotiateAnswer() refuses the WebRTC offer %s (UDP/TLS/RTP/SAVPF) with UNSUPPORTED_TRANSPORT (488, Warning 302)',
    (file) => {
      const err = sdpErrorOf(() => negotiateAnswer(fixture(`webrtc/${file}`), { allowedCodecs: ALL, ...LOCAL }));
      expect(err).toMatchObject({ code: 'UNSUPPORTED_TRANSPORT', warnCode: 302 });
      expect(err.reason).toContain('UDP/TLS/RTP/SAVPF');
    },
  );

  it('negotiateAnswer() refuses an RTP/SAVP-only offer with SRTP_REQUIRED unless srtp is given', () => {
    expect(sdpErrorOf(() => negotiateAnswer(SAVP, { allowedCodecs: ALL, ...LOCAL }))).toMatchObject({ code: 'SRTP_REQUIRED', status: 488, warnCode: 302 });
    expect(sdpErrorOf(() => negotiateAnswer(SAVP, { allowedCodecs: ALL, ...LOCAL, srtp: () => undefined })).reason).toContain('a=crypto');
  });

  it('negotiateAnswer() with srtp answers RTP/SAVP with our a=crypto for the offered tag and reports both keys (RFC 4568)', () => {
    const local = { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32', keyParams: 'inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32' };
    const seen: unknown[] = [];
    const { answerSdp, plan } = negotiateAnswer(SAVP, {
      allowedCodecs: ALL,
      ...LOCAL,
      srtp: (offered) => {
        seen.push(offered.map((c) => c.tag));

        return local;
      },
    });
    expect(seen).toEqual([[1, 2]]);
    expect(answerSdp).toContain('m=audio 40000 RTP/SAVP 0 101\r\n');
    expect(answerSdp).toContain(`a=crypto:2 AES_CM_128_HMAC_SHA1_32 ${local.keyParams}\r\n`);
    expect(plan).toMatchObject({ transport: 'RTP/SAVP', srtp: { local, remote: { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32' } } });
    expect(() => negotiateAnswer(SAVP, { allowedCodecs: ALL, ...LOCAL, srtp: () => ({ ...local, tag: 9 }) })).toThrow(TypeError);
  });

  it('negotiateAnswer() echoes a=mid on every stream (RFC 5888)', () => {
    const offer = sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 0', 'a=mid:1', 'm=video 5002 RTP/AVP 96', 'a=rtpmap:96 VP8/90000', 'a=mid:2');
    expect(parseSdp(negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL }).answerSdp).media.map((m) => m.mid)).toEqual(['1', '2']);
  });

  it('negotiateAnswer() picks fresh o= ids when no session is given', () => {
    const a = negotiateAnswer(ASTERISK, { allowedCodecs: ALL, localAddress: '192.0.2.10', localPort: 40000 });
    const o = parseSdp(a.answerSdp).origin;
    expect(o.sessionId).toBe(a.session.id);
    expect(o.sessionVersion).toBe(String(a.session.version));
    expect(Number.isSafeInteger(a.session.version)).toBe(true);
  });

  it('negotiateAnswer() leaves the parsed offer it is given alone', () => {
    const offer = deepFreeze(parseSdp(POLYCOM));
    const before = JSON.stringify(offer);
    expect(negotiateAnswer(offer, { allowedCodecs: ALL, ...LOCAL }).plan.codec.name).toBe('G722');
    expect(JSON.stringify(offer)).toBe(before);
  });

  it.each<[string, Partial<NegotiateAnswerOptions>, RegExp]>([
    ['an empty allowedCodecs', { allowedCodecs: [] }, /allowedCodecs/],
    ['an unknown codec', { allowedCodecs: ['G729' as 'PCMU'] }, /allowedCodecs/],
    ['localPort 0', { localPort: 0 }, /localPort/],
    ['localPort 70000', { localPort: 70000 }, /localPort/],
    ['a host name as localAddress', { localAddress: 'gw.example.com' }, /localAddress/],
    ['an IPv6 address as localAddress.ipv4', { localAddress: { ipv4: '2001:db8::1' } }, /ipv4/],
    ['an empty localAddress object', { localAddress: {} }, /localAddress/],
    ['both session and previous', { previous: ASTERISK }, /only one of session and previous/],
    ['a session id with letters', { session: { id: 'abc', version: 1 } }, /session.id/],
    ['a session version of -1', { session: { id: '1', version: -1 } }, /session.version/],
    ['ptime 0', { ptime: 0 }, /ptime/],
    ['localDirection "hold"', { localDirection: 'hold' as 'sendonly' }, /localDirection/],
  ])('negotiateAnswer() with %s throws TypeError', (_name, override, message) => {
    expect(() => negotiateAnswer(ASTERISK, { allowedCodecs: ALL, ...LOCAL, ...override } as NegotiateAnswerOptions)).toThrow(message);
    expect(() => negotiateAnswer(ASTERISK, { allowedCodecs: ALL, ...LOCAL, ...override } as NegotiateAnswerOptions)).toThrow(TypeError);
  });
});

// ------------------------------------------------------------------------------------------------

describe('buildOffer()', () => {
  it('buildOffer() offers the codecs in our order with static and dynamic payload types, opus 111 with useinbandfec=1, telephone-event 101/8000 and 110/48000', () => {
    const { offerSdp, session } = buildOffer({ codecs: ['opus', 'G722', 'PCMU', 'PCMA'], localAddress: '192.0.2.10', localPort: 40000, session: SESSION });
    expect(session).toEqual(SESSION);
    expect(offerSdp).toBe(
      sdp(
        'v=0',
        'o=ringbridge 1234567890 1 IN IP4 192.0.2.10',
        's=ringbridge',
        'c=IN IP4 192.0.2.10',
        't=0 0',
        'm=audio 40000 RTP/AVP 111 9 0 8 101 110',
        'a=rtpmap:111 opus/48000/2',
        'a=rtpmap:9 G722/8000',
        'a=rtpmap:0 PCMU/8000',
        'a=rtpmap:8 PCMA/8000',
        'a=rtpmap:101 telephone-event/8000',
        'a=rtpmap:110 telephone-event/48000',
        'a=fmtp:111 useinbandfec=1',
        'a=fmtp:101 0-16',
        'a=fmtp:110 0-16',
        'a=sendrecv',
      ),
    );
  });

  it('buildOffer() offers telephone-event only at the clocks in use, and none with telephoneEvent: false', () => {
    expect(buildOffer({ codecs: ['PCMA', 'PCMU'], ...LOCAL }).offerSdp).toContain('m=audio 40000 RTP/AVP 8 0 101\r\n');
    expect(buildOffer({ codecs: ['opus'], ...LOCAL }).offerSdp).toContain('m=audio 40000 RTP/AVP 111 110\r\n');
    expect(buildOffer({ codecs: ['PCMU'], telephoneEvent: false, ...LOCAL }).offerSdp).toContain('m=audio 40000 RTP/AVP 0\r\n');
  });

  it('buildOffer() writes ptime, maxptime, rtcp-mux, a=rtcp and direction when asked', () => {
    const text = buildOffer({ codecs: ['PCMU'], ...LOCAL, ptime: 20, maxptime: 40, direction: 'recvonly', localRtcpPort: 40011 }).offerSdp;
    expect(text).toContain('a=rtcp:40011\r\na=ptime:20\r\na=maxptime:40\r\na=recvonly\r\n');
    expect(buildOffer({ codecs: ['PCMU'], ...LOCAL, rtcpMux: true, localRtcpPort: 40011 }).offerSdp).toMatch(/a=rtcp-mux\r\n$/);
  });

  it('buildOffer() offers IPv6 media with c=IN IP6', () => {
    expect(buildOffer({ codecs: ['PCMU'], localAddress: '2001:db8::10', localPort: 40000, session: SESSION }).offerSdp).toContain('o=ringbridge 1234567890 1 IN IP6 2001:db8::10\r\ns=ringbridge\r\nc=IN IP6 2001:db8::10\r\n');
  });

  it('buildOffer() for a hold re-INVITE: a=sendonly, same o= username and id, version + 1 (RFC 3264 §8, §8.4)', () => {
    const first = buildOffer({ codecs: ['PCMU', 'PCMA'], ...LOCAL });
    const hold = buildOffer({ codecs: ['PCMU', 'PCMA'], localAddress: '192.0.2.10', localPort: 40000, direction: 'sendonly', previous: first.offerSdp });
    expect(hold.session).toEqual({ id: '1234567890', version: 2 });
    expect(hold.offerSdp).toContain('o=ringbridge 1234567890 2 IN IP4 192.0.2.10\r\n');
    expect(hold.offerSdp).toContain('a=sendonly\r\n');
    const resume = buildOffer({ codecs: ['PCMU', 'PCMA'], localAddress: '192.0.2.10', localPort: 40000, previous: hold.offerSdp });
    expect(resume.session.version).toBe(3);
    expect(resume.offerSdp).toContain('a=sendrecv\r\n');
  });

  it('buildOffer() keeps the version when the re-offer changes nothing (RFC 3264 §8)', () => {
    const first = buildOffer({ codecs: ['PCMU'], ...LOCAL });
    const again = buildOffer({ codecs: ['PCMU'], localAddress: '192.0.2.10', localPort: 40000, previous: first.offerSdp });
    expect(again).toEqual(first);
  });

  it('buildOffer() keeps the o= of the previous SDP even when the media address changes family', () => {
    const first = buildOffer({ codecs: ['PCMU'], ...LOCAL });
    const moved = buildOffer({ codecs: ['PCMU'], localAddress: '2001:db8::10', localPort: 41000, previous: first.offerSdp });
    expect(moved.offerSdp).toContain('o=ringbridge 1234567890 2 IN IP4 192.0.2.10\r\ns=ringbridge\r\nc=IN IP6 2001:db8::10\r\n');
  });

  it('buildOffer() re-offers after our answer with the rejected streams kept in place with port 0 (RFC 3264 §8.2)', () => {
    const { answerSdp, plan } = negotiateAnswer(POLYCOM, { allowedCodecs: ALL, ...LOCAL });
    const { offerSdp } = buildOffer({ ...reofferFormats(plan), localAddress: '192.0.2.10', localPort: 40000, direction: 'sendonly', previous: answerSdp });
    const o = parseSdp(offerSdp);
    expect(o.origin).toMatchObject({ sessionId: '1234567890', sessionVersion: '2' });
    expect(o.media.map((m) => `${m.type} ${m.port} ${m.protocol} ${m.formats.join(' ')} ${m.direction}`)).toEqual([
      'audio 40000 RTP/AVP 9 101 sendonly',
      'video 0 RTP/AVP 109 34 sendrecv',
      'audio 0 RTP/AVP 0 sendrecv',
      'application 0 TCP/BFCP * sendrecv',
    ]);
  });

  it('buildOffer() with reofferFormats(plan) keeps the payload types the call uses (RFC 3264 §8.3.2)', () => {
    const { answerSdp, plan } = negotiateAnswer(FREESWITCH_V6, { allowedCodecs: ALL, localAddress: { ipv6: '2001:db8::10' }, localPort: 40000 });
    expect(reofferFormats(plan)).toEqual({ codecs: [{ name: 'opus', payloadType: 96 }], telephoneEvent: [{ payloadType: 97, clockRate: 48000 }] });
    const { offerSdp } = buildOffer({ ...reofferFormats(plan), localAddress: '2001:db8::10', localPort: 40000, direction: 'sendonly', previous: answerSdp });
    expect(offerSdp).toContain('m=audio 40000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/48000\r\n');
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['no codecs', { codecs: [] }, /codecs must list/],
    ['an unknown codec', { codecs: ['G729'] }, /unknown codec "G729"/],
    ['a codec twice', { codecs: ['PCMU', 'PCMU'] }, /listed twice/],
    ['two codecs on one payload type', { codecs: [{ name: 'opus', payloadType: 0 }, 'PCMU'] }, /payload type 0 is given to both/],
    ['a codec on telephone-event\'s payload type', { codecs: [{ name: 'opus', payloadType: 101 }, 'PCMU'] }, /payload type 101/],
    ['payload type 72 (RTCP range)', { codecs: [{ name: 'opus', payloadType: 72 }] }, /72-76/],
    ['payload type 128', { codecs: [{ name: 'opus', payloadType: 128 }] }, /0-127/],
    ['telephone-event at 16000', { codecs: ['PCMU'], telephoneEvent: [{ payloadType: 102, clockRate: 16000 }] }, /clockRate/],
    ['a host name', { codecs: ['PCMU'], localAddress: 'gw.example.com' }, /localAddress/],
    ['maxptime 5000', { codecs: ['PCMU'], maxptime: 5000 }, /maxptime/],
    ['direction "hold"', { codecs: ['PCMU'], direction: 'hold' }, /direction/],
  ])('buildOffer() with %s throws TypeError', (_name, override, message) => {
    expect(() => buildOffer({ codecs: ['PCMU'], ...LOCAL, ...override })).toThrow(message);
  });

  it('newSdpSessionIds() gives a decimal id and a safe integer version', () => {
    const ids = newSdpSessionIds();
    expect(ids.id).toMatch(/^\d+$/);
    expect(Number.isSafeInteger(ids.version + 1)).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------------

describe('negotiateFromAnswer()', () => {
  const OFFER = buildOffer({ codecs: ['opus', 'PCMA', 'PCMU'], ...LOCAL }).offerSdp; // 111 8 0 101 110

  function answer(mLine: string, ...attrs: string[]): string {
    return sdp('v=0', 'o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.20', 's=FreeSWITCH', 'c=IN IP4 198.51.100.20', 't=0 0', mLine, ...attrs);
  }

  it("negotiateFromAnswer() takes an Asterisk-style answer: PCMA, the answer's address, telephone-event/8000", () => {
    const plan = negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 8 101', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-16', 'a=ptime:20', 'a=sendrecv'));
    expect(plan).toEqual<MediaPlan>({
      mediaIndex: 0,
      transport: 'RTP/AVP',
      codec: { name: 'PCMA', mimeType: 'audio/PCMA', payloadType: 8, localPayloadType: 8, clockRate: 8000, channels: 1, parameters: {} },
      telephoneEvent: { payloadType: 101, localPayloadType: 101, clockRate: 8000, events: '0-16' },
      remote: { address: '198.51.100.20', port: 10442, rtcpAddress: '198.51.100.20', rtcpPort: 10443, rtcpMux: false },
      direction: 'sendrecv',
      localDirection: 'sendrecv',
      flow: { send: true, receive: true },
      hold: 'none',
      ptime: 20,
      connectionIPv6: false,
      remoteSession: { id: '1700000000', version: '1700000001' },
    });
  });

  it("negotiateFromAnswer() accepts an answer that renumbers opus 111 → 107 and telephone-event 110 → 96: we send with the answer's numbers, receive with ours (RFC 3264 §6.1)", () => {
    const plan = negotiateFromAnswer(OFFER, answer('m=audio 24600 RTP/AVP 107 96', 'a=rtpmap:107 opus/48000/2', 'a=fmtp:107 useinbandfec=1; minptime=10', 'a=rtpmap:96 telephone-event/48000', 'a=fmtp:96 0-16'));
    expect(plan.codec).toMatchObject({ name: 'opus', payloadType: 107, localPayloadType: 111, parameters: { useinbandfec: 1, minptime: 10 } });
    expect(plan.telephoneEvent).toEqual({ payloadType: 96, localPayloadType: 110, clockRate: 48000, events: '0-16' });
    expect(toRtpCodecParameters(plan, 'receive').map((c) => c.payloadType)).toEqual([111, 110]);
    expect(toRtpCodecParameters(plan, 'send').map((c) => c.payloadType)).toEqual([107, 96]);
  });

  it("negotiateFromAnswer() uses the answer's first codec when it lists several (RFC 3264 §7), with telephone-event at its clock", () => {
    const plan = negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 0 8 111 110 101', 'a=rtpmap:111 opus/48000/2', 'a=rtpmap:110 telephone-event/48000', 'a=rtpmap:101 telephone-event/8000'));
    expect(plan.codec.name).toBe('PCMU');
    expect(plan.telephoneEvent).toMatchObject({ payloadType: 101, clockRate: 8000 });
  });

  it('negotiateFromAnswer() takes a dynamic payload type of our offer without a=rtpmap as ours', () => {
    expect(negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 111')).codec).toMatchObject({ name: 'opus', payloadType: 111, localPayloadType: 111 });
  });

  it('negotiateFromAnswer() refuses an answer with none of our codecs with NO_COMMON_CODEC', () => {
    const err = sdpErrorOf(() => negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 18 9', 'a=rtpmap:18 G729/8000')));
    expect(err.code).toBe('NO_COMMON_CODEC');
    expect(err.reason).toContain('answered G729/8000, G722/8000');
  });

  it('negotiateFromAnswer() refuses an answer that rejects the audio stream (port 0) with NO_COMMON_CODEC', () => {
    expect(sdpErrorOf(() => negotiateFromAnswer(OFFER, answer('m=audio 0 RTP/AVP 0'))).reason).toContain('port 0');
  });

  it.each<[string, string, string]>([
    ['more m= lines than the offer (RFC 3264 §6)', answer('m=audio 10442 RTP/AVP 0', 'm=video 0 RTP/AVP 96'), 'the answer has 2 m= lines, our offer 1'],
    ['video where our audio was', answer('m=video 10442 RTP/AVP 96', 'a=rtpmap:96 VP8/90000'), 'is video RTP/AVP'],
    ['another transport', answer('m=audio 10442 RTP/SAVP 0'), 'is audio RTP/SAVP'],
    ['our telephone-event number for opus', answer('m=audio 10442 RTP/AVP 101', 'a=rtpmap:101 opus/48000/2'), 'payload type 101 is telephone-event/8000 in our offer but opus/48000/2 in the answer'],
    ['our PCMA number (8) for PCMU', answer('m=audio 10442 RTP/AVP 8', 'a=rtpmap:8 PCMU/8000'), 'payload type 8 is PCMA/8000'],
  ])('negotiateFromAnswer() refuses an answer with %s with BAD_ANSWER', (_name, text, reason) => {
    const err = sdpErrorOf(() => negotiateFromAnswer(OFFER, text));
    expect(err.code).toBe('BAD_ANSWER');
    expect(err.reason).toContain(reason);
  });

  it('negotiateFromAnswer() narrows a sendrecv answer to our sendonly (hold) offer to recvonly (RFC 3264 §6.1)', () => {
    const hold = buildOffer({ codecs: ['PCMU'], ...LOCAL, direction: 'sendonly' }).offerSdp;
    const plan = negotiateFromAnswer(hold, answer('m=audio 10442 RTP/AVP 0', 'a=sendrecv'));
    expect(plan).toMatchObject({ direction: 'recvonly', localDirection: 'sendonly', flow: { send: true, receive: false }, hold: 'none' });
    expect(negotiateFromAnswer(hold, answer('m=audio 10442 RTP/AVP 0', 'a=inactive'))).toMatchObject({ direction: 'inactive', flow: { send: false, receive: false } });
  });

  it('negotiateFromAnswer() reads an answer with c=0.0.0.0 as hold (RFC 3264 §8.4)', () => {
    const plan = negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 0').replace('c=IN IP4 198.51.100.20', 'c=IN IP4 0.0.0.0'));
    expect(plan).toMatchObject({ hold: 'null-address', direction: 'sendonly', flow: { send: false, receive: true } });
  });

  it('negotiateFromAnswer() uses rtcp-mux only when both sides have it (RFC 5761)', () => {
    const muxOffer = buildOffer({ codecs: ['PCMU'], ...LOCAL, rtcpMux: true }).offerSdp;
    expect(negotiateFromAnswer(muxOffer, answer('m=audio 10442 RTP/AVP 0', 'a=rtcp-mux')).remote).toMatchObject({ rtcpMux: true, rtcpPort: 10442 });
    expect(negotiateFromAnswer(muxOffer, answer('m=audio 10442 RTP/AVP 0')).remote).toMatchObject({ rtcpMux: false, rtcpPort: 10443 });
    expect(negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 0', 'a=rtcp-mux')).remote.rtcpMux).toBe(false);
  });

  it('negotiateFromAnswer() pairs the a=crypto of an RTP/SAVP answer with ours by tag and suite (RFC 4568), or refuses it with SRTP_REQUIRED', () => {
    const ourSavp = SAVP; // as if we had offered it: RTP/SAVP with crypto tags 1 and 2
    const ok = answer('m=audio 10442 RTP/SAVP 0', 'a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32');
    expect(negotiateFromAnswer(ourSavp, ok)).toMatchObject({ transport: 'RTP/SAVP', srtp: { local: { tag: 2, suite: 'AES_CM_128_HMAC_SHA1_32' }, remote: { tag: 2 } } });
    expect(sdpErrorOf(() => negotiateFromAnswer(ourSavp, answer('m=audio 10442 RTP/SAVP 0'))).code).toBe('SRTP_REQUIRED');
    expect(sdpErrorOf(() => negotiateFromAnswer(ourSavp, ok.replace('a=crypto:2', 'a=crypto:7'))).code).toBe('SRTP_REQUIRED');
  });

  it('negotiateFromAnswer() takes an IPv6 answer', () => {
    const plan = negotiateFromAnswer(OFFER, answer('m=audio 10442 RTP/AVP 0').replace('c=IN IP4 198.51.100.20', 'c=IN IP6 2001:db8::99'));
    expect(plan).toMatchObject({ connectionIPv6: true, remote: { address: '2001:db8::99' } });
  });

  it('negotiateFromAnswer() checks the answer against the audio stream of a re-offer built on our earlier answer', () => {
    const { answerSdp, plan } = negotiateAnswer(POLYCOM, { allowedCodecs: ALL, ...LOCAL });
    const reoffer = buildOffer({ ...reofferFormats(plan), localAddress: '192.0.2.10', localPort: 40000, direction: 'sendonly', previous: answerSdp }).offerSdp;
    const reply = fixture('trunk/polycom-offer-audio-video-bfcp.sdp').replace('a=sendrecv', 'a=recvonly');
    expect(negotiateFromAnswer(reoffer, reply)).toMatchObject({ mediaIndex: 0, codec: { name: 'G722' }, direction: 'recvonly', flow: { send: true, receive: false } });
  });
});

// ------------------------------------------------------------------------------------------------

describe('reanswer()', () => {
  function call(offer = ASTERISK): { answerSdp: string; plan: MediaPlan } {
    return negotiateAnswer(offer, { allowedCodecs: ['PCMU', 'PCMA'], ...LOCAL });
  }

  function reoffer(text: string, version: number): string {
    return text.replace(/^o=- 1828359457 \d+/m, `o=- 1828359457 ${version}`);
  }

  it('reanswer() to an Asterisk hold (a=sendonly) answers recvonly with o= version + 1 and reports the direction change', () => {
    const first = call();
    const r = reanswer(first.plan, ASTERISK_HOLD, { previous: first.answerSdp });
    expect(r.answerSdp).toContain('o=ringbridge 1234567890 2 IN IP4 192.0.2.10\r\n');
    expect(r.answerSdp).toContain('m=audio 40000 RTP/AVP 0 101\r\n');
    expect(r.answerSdp).toContain('a=recvonly\r\n');
    expect(r.plan).toMatchObject({ hold: 'direction', direction: 'sendonly', flow: { send: false, receive: true }, codec: { name: 'PCMU', payloadType: 0 } });
    expect(r.changes).toEqual({ remoteAddress: false, direction: true, payloadType: false, telephoneEvent: false, sameRemoteVersion: false });
  });

  it('reanswer() to the resume after a hold answers sendrecv and reports the direction change', () => {
    const first = call();
    const held = reanswer(first.plan, ASTERISK_HOLD, { previous: first.answerSdp });
    const resumed = reanswer(held.plan, reoffer(ASTERISK, 1828359459), { previous: held.answerSdp });
    expect(resumed.answerSdp).toContain('o=ringbridge 1234567890 3 IN IP4 192.0.2.10\r\n');
    expect(resumed.plan).toMatchObject({ hold: 'none', direction: 'sendrecv', flow: { send: true, receive: true } });
    expect(resumed.changes.direction).toBe(true);
  });

  it('reanswer() to a session refresh with the same o= version answers the same SDP with the same version (RFC 3264 §8)', () => {
    const first = call();
    const r = reanswer(first.plan, ASTERISK, { previous: first.answerSdp });
    expect(r.answerSdp).toBe(first.answerSdp);
    expect(r.plan).toEqual(first.plan);
    expect(r.changes).toEqual({ remoteAddress: false, direction: false, payloadType: false, telephoneEvent: false, sameRemoteVersion: true });
  });

  it('reanswer() reports a new remote address and port (the relay must follow)', () => {
    const first = call();
    const moved = reoffer(ASTERISK, 1828359458).replace('c=IN IP4 203.0.113.10', 'c=IN IP4 203.0.113.11').replace('m=audio 10442', 'm=audio 10500');
    const r = reanswer(first.plan, moved, { previous: first.answerSdp });
    expect(r.plan.remote).toMatchObject({ address: '203.0.113.11', port: 10500, rtcpPort: 10501 });
    expect(r.changes).toMatchObject({ remoteAddress: true, direction: false });
    expect(r.answerSdp).toContain('m=audio 40000 RTP/AVP 0 101\r\n');
  });

  it("reanswer() keeps the call's codec when the re-offer still lists it, even after others", () => {
    const first = call();
    const r = reanswer(first.plan, reoffer(ASTERISK, 1828359458).replace('RTP/AVP 0 8 9 101', 'RTP/AVP 8 9 0 101'), { previous: first.answerSdp });
    expect(r.plan.codec.name).toBe('PCMU');
    expect(r.answerSdp).toContain('m=audio 40000 RTP/AVP 0 101\r\n');
  });

  it("reanswer() refuses a re-offer without the call's codec with CODEC_CHANGE (488, Warning 305)", () => {
    const first = call();
    const err = sdpErrorOf(() => reanswer(first.plan, reoffer(ASTERISK, 1828359458).replace('RTP/AVP 0 8 9 101', 'RTP/AVP 8 101'), { previous: first.answerSdp }));
    expect(err).toMatchObject({ code: 'CODEC_CHANGE', status: 488, warnCode: 305 });
    expect(err.reason).toContain("drops the call's codec PCMU/8000");
  });

  it('reanswer() accepts the codec under another payload type and reports it', () => {
    const first = call();
    const text = reoffer(ASTERISK, 1828359458).replace('RTP/AVP 0 8 9 101', 'RTP/AVP 96 101').replace('a=rtpmap:0 PCMU/8000', 'a=rtpmap:96 PCMU/8000');
    const r = reanswer(first.plan, text, { previous: first.answerSdp });
    expect(r.plan.codec).toMatchObject({ name: 'PCMU', payloadType: 96 });
    expect(r.changes).toMatchObject({ payloadType: true, telephoneEvent: false });
  });

  it('reanswer() reports telephone-event going away', () => {
    const first = call();
    const r = reanswer(first.plan, reoffer(ASTERISK, 1828359458).replace('RTP/AVP 0 8 9 101', 'RTP/AVP 0 8 9'), { previous: first.answerSdp });
    expect(r.plan.telephoneEvent).toBeUndefined();
    expect(r.changes.telephoneEvent).toBe(true);
  });

  it('reanswer() rejects a video stream added by the re-offer with port 0', () => {
    const first = call();
    const r = reanswer(first.plan, reoffer(ASTERISK, 1828359458) + 'm=video 10444 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n', { previous: first.answerSdp });
    expect(r.answerSdp).toMatch(/a=sendrecv\r\nm=video 0 RTP\/AVP 96\r\n$/);
  });

  it('reanswer() keeps our hold with localDirection: sendonly', () => {
    const first = call();
    const r = reanswer(first.plan, reoffer(ASTERISK, 1828359458), { previous: first.answerSdp, localDirection: 'sendonly' });
    expect(r.answerSdp).toContain('a=sendonly\r\n');
    expect(r.plan.flow).toEqual({ send: true, receive: false });
  });

  it("reanswer() refuses a re-offer that disables or drops the call's audio stream with NO_AUDIO", () => {
    const first = call();
    expect(sdpErrorOf(() => reanswer(first.plan, reoffer(ASTERISK, 1828359458).replace('m=audio 10442', 'm=audio 0'), { previous: first.answerSdp })).reason).toContain('disables');
    const second = negotiateAnswer(sdp('v=0', 'o=- 1 1 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', 'm=audio 5000 RTP/AVP 18', 'm=audio 5002 RTP/AVP 0'), { allowedCodecs: ALL, ...LOCAL });
    expect(sdpErrorOf(() => reanswer(second.plan, phoneOffer(), { previous: second.answerSdp })).reason).toContain('drops');
  });

  it('reanswer() refuses a re-offer that moves the stream from RTP/AVP to RTP/SAVP with UNSUPPORTED_TRANSPORT', () => {
    const first = call();
    expect(sdpErrorOf(() => reanswer(first.plan, reoffer(ASTERISK, 1828359458).replace('RTP/AVP', 'RTP/SAVP'), { previous: first.answerSdp })).code).toBe('UNSUPPORTED_TRANSPORT');
  });

  it('reanswer() takes our address and port from the previous SDP, or new ones when given', () => {
    const first = call();
    const r = reanswer(first.plan, reoffer(ASTERISK, 1828359458), { previous: first.answerSdp, localPort: 41000, localRtcpPort: 41009 });
    expect(r.answerSdp).toContain('m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:41009\r\n');
    expect(r.answerSdp).toContain('c=IN IP4 192.0.2.10\r\n');
  });

  it('reanswer() without previous throws TypeError', () => {
    const first = call();
    expect(() => reanswer(first.plan, ASTERISK, {} as { previous: string })).toThrow(TypeError);
  });
});

// ------------------------------------------------------------------------------------------------

describe('codec helpers and mediasoup parameters', () => {
  it.each<[Parameters<typeof mimeTypeOf>[0], string]>([
    ['PCMU', 'audio/PCMU'],
    ['PCMA', 'audio/PCMA'],
    ['G722', 'audio/G722'],
    ['opus', 'audio/opus'],
    ['telephone-event', 'audio/telephone-event'],
  ])('mimeTypeOf(%s) is %s', (name, mime) => {
    expect(mimeTypeOf(name)).toBe(mime);
  });

  it('mimeTypeOf() of an unknown name throws TypeError', () => {
    expect(() => mimeTypeOf('G729' as 'PCMU')).toThrow(TypeError);
    expect(() => mimeTypeOf('toString' as 'PCMU')).toThrow(TypeError);
  });

  it('fmtpParameters() reads key=value pairs, numbers as numbers, and ignores __proto__', () => {
    expect(fmtpParameters('useinbandfec=1; maxplaybackrate=16000;sprop-stereo=0;mode=20')).toEqual({ useinbandfec: 1, maxplaybackrate: 16000, 'sprop-stereo': 0, mode: 20 });
    expect(fmtpParameters('0-16')).toEqual({});
    expect(fmtpParameters('minptime=10 ; x=01; y= 2 ')).toEqual({ minptime: 10, x: '01', y: 2 });
    const odd = fmtpParameters('__proto__=1;constructor=x');
    expect(Object.getPrototypeOf(odd)).toBe(Object.prototype);
    expect(odd).toEqual({ constructor: 'x' });
  });

  it('toProducerRtpParameters() gives the codec and telephone-event with our payload types, the a=ssrc, RTCP without reduced size', () => {
    const { plan } = negotiateAnswer(KAMAILIO, { allowedCodecs: ALL, ...LOCAL });
    expect(toProducerRtpParameters(plan)).toEqual({
      codecs: [
        { mimeType: 'audio/PCMA', payloadType: 8, clockRate: 8000, channels: 1, parameters: {}, rtcpFeedback: [] },
        { mimeType: 'audio/telephone-event', payloadType: 101, clockRate: 8000, channels: 1, parameters: {}, rtcpFeedback: [] },
      ],
      headerExtensions: [],
      encodings: [{ ssrc: 2864061201 }],
      rtcp: { reducedSize: false, mux: false },
    });
    expect(toProducerRtpParameters(plan, { ssrc: 42, cname: 'trunk' })).toMatchObject({ encodings: [{ ssrc: 42 }], rtcp: { cname: 'trunk' } });
    expect(toProducerRtpParameters(negotiateAnswer(TWILIO, { allowedCodecs: ALL, ...LOCAL }).plan).encodings).toEqual([]);
  });

  it("toRtpCapabilities() gives the trunk's codec and telephone-event with its payload types as preferred ones", () => {
    const { plan } = negotiateAnswer(FREESWITCH, { allowedCodecs: ['opus'], ...LOCAL });
    expect(toRtpCapabilities(plan)).toEqual({
      codecs: [
        { kind: 'audio', mimeType: 'audio/opus', preferredPayloadType: 102, clockRate: 48000, channels: 2, parameters: plan.codec.parameters, rtcpFeedback: [] },
        { kind: 'audio', mimeType: 'audio/telephone-event', preferredPayloadType: 100, clockRate: 48000, channels: 1, parameters: {}, rtcpFeedback: [] },
      ],
      headerExtensions: [],
    });
  });

  it("consumerPayloadTypeMap() maps a Consumer's router payload types to the trunk's", () => {
    const { plan } = negotiateAnswer(FREESWITCH, { allowedCodecs: ['opus'], ...LOCAL });
    const consumer = {
      codecs: [
        { mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 },
        { mimeType: 'audio/telephone-event', payloadType: 102, clockRate: 48000 },
        { mimeType: 'audio/telephone-event', payloadType: 101, clockRate: 8000 },
      ],
    };
    expect([...consumerPayloadTypeMap(plan, consumer)]).toEqual([
      [100, 102],
      [102, 100],
    ]);
  });
});

// ------------------------------------------------------------------------------------------------
// Fuzzing: nothing but SdpError escapes, and what is produced can be read back
// ------------------------------------------------------------------------------------------------

const DEFAULT_RUNS = 2000;
const RUNS = Math.max(1, Number(process.env.FUZZ_RUNS ?? DEFAULT_RUNS) || DEFAULT_RUNS);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const FUZZ_TIMEOUT_MS = Math.max(30_000, RUNS * 20);
const fuzzParams = { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) };

const SEEDS: string[] = [
  ...fixtureNames('trunk').map((f) => fixture(`trunk/${f}`)),
  ...fixtureNames('rfc5118').map((f) => fixture(`rfc5118/${f}`)),
  ...fixtureNames('webrtc').map((f) => fixture(`webrtc/${f}`)),
];

/** Pieces of SDP grammar and values at the edges. */
const PIECES = [
  '\r\n', '\n', '\r', ' ', '  ', '=', ':', '/', ';', '*', '-', '0', '-1', '65535', '65536', '127', '128', '4294967296', '99999999999999999999', '1e3', 'NaN',
  'IP4', 'IP6', 'IN', '0.0.0.0', '::', '::ffff:192.0.2.1', '224.2.1.1/127', 'ff15::101/3', 'host.example.com', '2001:db8::1%eth0',
  'm=audio 0 RTP/AVP 0', 'm=audio 5000 RTP/AVP 96', 'm=video 5000 RTP/AVP 96', 'm=audio 5000 RTP/SAVP 0', 'c=IN IP4 0.0.0.0', 'c=IN IP6 ::',
  'a=rtpmap:96 opus/48000/2', 'a=rtpmap:0 opus/48000/2', 'a=rtpmap:101 telephone-event/48000', 'a=fmtp:96 __proto__=1;constructor=2', 'a=sendonly', 'a=inactive',
  'a=rtcp-mux', 'a=rtcp:65535 IN IP6 ::1', 'a=rtcp:0', 'a=ptime:0', 'a=ptime:1e400', 'a=maxptime:-1', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x', 'a=ssrc:4294967296 cname:x',
  'a=mid:__proto__', 'v=0', 'o=- 1 1 IN IP4 192.0.2.1', 'RTP/AVP', 'UDP/TLS/RTP/SAVPF', '\u0000', '\u00e9', '\u{1F600}', '\ufeff',
];

type MutationKind = 'set' | 'insert' | 'delete' | 'duplicate' | 'truncate' | 'random' | 'dupLine' | 'dropLine' | 'moveLine';

interface Mutation {
  kind: MutationKind;
  pos: number;
  len: number;
  at: number;
  piece: number;
  text: string;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom<MutationKind>('set', 'insert', 'insert', 'delete', 'duplicate', 'truncate', 'random', 'dupLine', 'dropLine', 'dropLine', 'moveLine'),
  pos: fc.nat(),
  len: fc.integer({ min: 1, max: 40 }),
  at: fc.nat(),
  piece: fc.nat(PIECES.length - 1),
  text: fc.string({ minLength: 1, maxLength: 6, unit: 'binary' }),
});

function mutate(seed: string, mutations: readonly Mutation[]): string {
  let s = seed;
  for (const m of mutations) {
    const pos = m.pos % (s.length + 1);
    const at = m.at % (s.length + 1);
    const lines = s.split('\n');
    const li = m.pos % lines.length;
    const lj = m.at % lines.length;
    switch (m.kind) {
      case 'set':
        s = s.slice(0, pos) + m.text[0]! + s.slice(pos + 1);
        break;
      case 'insert':
        s = s.slice(0, pos) + PIECES[m.piece]! + s.slice(pos);
        break;
      case 'delete':
        s = s.slice(0, pos) + s.slice(pos + m.len);
        break;
      case 'duplicate':
        s = s.slice(0, at) + s.slice(pos, pos + m.len) + s.slice(at);
        break;
      case 'truncate':
        s = s.slice(0, pos);
        break;
      case 'random':
        s = s.slice(0, pos) + m.text + s.slice(pos);
        break;
      case 'dupLine':
        lines.splice(lj, 0, lines[li]!);
        s = lines.join('\n');
        break;
      case 'dropLine':
        lines.splice(li, 1);
        s = lines.join('\n');
        break;
      case 'moveLine': {
        const [line] = lines.splice(li, 1);
        lines.splice(lj % (lines.length + 1), 0, line!);
        s = lines.join('\n');
        break;
      }
    }
  }

  return s;
}

const mutatedArb = fc.tuple(fc.nat(SEEDS.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 6 })).map(([i, ms]) => mutate(SEEDS[i]!, ms));

/** Runs fn and fails on anything thrown that is not an SdpError. */
function onlySdpError<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (err instanceof SdpError) {
      expect(err.reason).toMatch(/^[\x20-\x7e]{1,120}$/);

      return undefined;
    }
    throw err;
  }
}

describe('fuzzing (fast-check)', () => {
  it(
    'parseSdp() throws nothing but SdpError on mutated trunk, RFC 5118 and WebRTC SDPs',
    () => {
      fc.assert(
        fc.property(mutatedArb, (text) => {
          const s = onlySdpError(() => parseSdp(text));
          if (s) {
            for (const m of s.media) {
              expect(m.port >= 0 && m.port <= 65535).toBe(true);
              expect(m.port === 0 || m.connection !== undefined).toBe(true);
              expect(m.rtp.every((f) => f.payloadType >= 0 && f.payloadType <= 127)).toBe(true);
            }
          }
        }),
        fuzzParams,
      );
    },
    FUZZ_TIMEOUT_MS,
  );

  it(
    'parseSdp() throws nothing but SdpError on arbitrary text',
    () => {
      fc.assert(
        fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.array(fc.constantFrom(...PIECES), { maxLength: 40 }).map((p) => `v=0\r\n${p.join('')}`)), (text) => {
          onlySdpError(() => parseSdp(text));
        }),
        fuzzParams,
      );
    },
    FUZZ_TIMEOUT_MS,
  );

  it(
    'negotiateAnswer() throws nothing but SdpError on mutated offers, and its answer reads back with the offer\'s m= lines and one allowed codec',
    () => {
      fc.assert(
        fc.property(mutatedArb, fc.subarray([...ALL], { minLength: 1 }), (text, allowed) => {
          const r = onlySdpError(() => negotiateAnswer(text, { allowedCodecs: allowed, localAddress: { ipv4: '192.0.2.10', ipv6: '2001:db8::10' }, localPort: 40000, session: SESSION }));
          if (r) {
            const offer = parseSdp(text);
            const answer = parseSdp(r.answerSdp);
            expect(answer.media.length).toBe(offer.media.length);
            expect(answer.media.filter((m) => m.port !== 0)).toHaveLength(1);
            expect(allowed).toContain(r.plan.codec.name);
            expect(JSON.parse(JSON.stringify(r.plan))).toEqual(r.plan);
          }
        }),
        fuzzParams,
      );
    },
    FUZZ_TIMEOUT_MS,
  );

  it(
    'negotiateFromAnswer() and reanswer() throw nothing but SdpError on mutated answers and re-offers',
    () => {
      const ours = buildOffer({ codecs: ['opus', 'PCMA', 'PCMU', 'G722'], ...LOCAL }).offerSdp;
      const first = negotiateAnswer(ASTERISK, { allowedCodecs: ALL, ...LOCAL });
      fc.assert(
        fc.property(mutatedArb, (text) => {
          const plan = onlySdpError(() => negotiateFromAnswer(ours, text));
          if (plan) {
            expect(['PCMU', 'PCMA', 'G722', 'opus']).toContain(plan.codec.name);
          }
          const r = onlySdpError(() => reanswer(first.plan, text, { previous: first.answerSdp }));
          if (r) {
            expect(r.plan.codec.name).toBe(first.plan.codec.name);
            expect(() => parseSdp(r.answerSdp)).not.toThrow();
          }
        }),
        fuzzParams,
      );
    },
    FUZZ_TIMEOUT_MS,
  );
});

/** Type-level check: a parsed session is accepted wherever text is. */
export type _SessionAccepted = Parameters<typeof negotiateFromAnswer>[1] extends string | SdpSession ? true : never;
