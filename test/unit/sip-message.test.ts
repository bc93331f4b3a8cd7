/**
 * The SIP message layer (src/sip/engine/message.ts): parser, model and serialiser, URIs,
 * name-addr and Via. Valid/invalid cases follow RFC 3261, RFC 5118 (fixtures in
 * test/fixtures/rfc5118) and the ideas of RFC 4475's torture tests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  canonicalHeaderName,
  compactToFull,
  formatNameAddr,
  formatUri,
  formatVia,
  getTag,
  isValidHeaderName,
  parseMessage,
  parseNameAddr,
  parseUri,
  parseVia,
  SipMessage,
  SipParseError,
  type ParseOptions,
} from '../../src/sip/engine/message.js';
import { projectRoot } from '../../src/util/paths.js';

const FIXTURES = path.join(projectRoot(), 'test', 'fixtures', 'rfc5118');

/** CRLF-joined header lines, the blank line, then the body. */
function wire(lines: string[], body: string | Buffer = ''): Buffer {
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'utf8'), Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')]);
}

const INVITE = [
  'INVITE sip:bob@biloxi.example.com SIP/2.0',
  'Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds',
  'Max-Forwards: 70',
  'To: Bob <sip:bob@biloxi.example.com>',
  'From: Alice <sip:alice@atlanta.example.com>;tag=1928301774',
  'Call-ID: a84b4c76e66710@pc33.atlanta.example.com',
  'CSeq: 314159 INVITE',
  'Contact: <sip:alice@pc33.atlanta.example.com>',
  'Content-Length: 0',
];

const OK_200 = [
  'SIP/2.0 200 OK',
  'Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1',
  'To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf',
  'From: Alice <sip:alice@atlanta.example.com>;tag=1928301774',
  'Call-ID: a84b4c76e66710@pc33.atlanta.example.com',
  'CSeq: 314159 INVITE',
  'Contact: <sip:bob@192.0.2.4>',
  'Content-Length: 0',
];

/** The lines with the header `name` removed. */
function without(name: string, lines = INVITE): string[] {
  return lines.filter((l) => !l.toLowerCase().startsWith(name.toLowerCase() + ':'));
}

/** The lines with the header `name` replaced by `line` (or the start line when name is ''). */
function replacing(name: string, line: string, lines = INVITE): string[] {
  return name === '' ? [line, ...lines.slice(1)] : lines.map((l) => (l.toLowerCase().startsWith(name.toLowerCase() + ':') ? line : l));
}

/** The SipParseError parseMessage() throws for `data`. */
function parseError(data: Buffer, opts?: ParseOptions): SipParseError {
  try {
    parseMessage(data, opts);
  } catch (err) {
    if (err instanceof SipParseError) {
      return err;
    }
    throw err;
  }
  throw new Error('parseMessage() accepted the message');
}

interface FixtureRow {
  file: string;
  wire: string;
  section: string;
  verdict: string;
}

const fixtureRows: FixtureRow[] = fs
  .readFileSync(path.join(FIXTURES, 'index.tsv'), 'utf8')
  .trim()
  .split('\n')
  .slice(1)
  .map((line) => {
    const [file, wireVariant, section, , verdict] = line.split('\t');

    return { file: file!, wire: wireVariant!, section: section!, verdict: verdict! };
  });

function fixture(name: string): Buffer {
  return fs.readFileSync(path.join(FIXTURES, name));
}

/** The bytes after the first blank line (CRLF or LF form). */
function bodyOf(raw: Buffer): Buffer {
  const crlf = raw.indexOf('\r\n\r\n');
  if (crlf >= 0) {
    return raw.subarray(crlf + 4);
  }
  const lf = raw.indexOf('\n\n');

  return lf >= 0 ? raw.subarray(lf + 2) : Buffer.alloc(0);
}

/** Checks specific to each RFC 5118 message, run on both the wire and the raw LF variants. */
const FIXTURE_CHECKS: Record<string, (m: SipMessage) => void> = {
  'ipv6-good.sip': (m) => {
    expect(m.method).toBe('REGISTER');
    expect(parseUri(m.uri)).toMatchObject({ scheme: 'sip', host: '2001:db8::10' });
    expect(m.topVia).toMatchObject({ transport: 'UDP', host: '2001:db8::9:1', params: { branch: 'z9hG4bKas3-111' } });
    expect(parseUri(parseNameAddr(m.getHeader('contact')!)!.uri)!.host).toBe('2001:db8::1');
  },
  'port-ambiguous.sip': (m) => {
    const u = parseUri(m.uri)!;
    expect(u.host).toBe('2001:db8::10:5070');
    expect(u.port).toBeUndefined();
  },
  'port-unambiguous.sip': (m) => {
    expect(parseUri(m.uri)).toMatchObject({ host: '2001:db8::10', port: 5070 });
  },
  'via-received-param-with-delim.sip': (m) => {
    expect(m.method).toBe('BYE');
    expect(m.topVia!.params.received).toBe('2001:db8::9:255');
  },
  'via-received-param-no-delim.sip': (m) => {
    expect(m.method).toBe('OPTIONS');
    expect(m.topVia!.params.received).toBe('2001:db8::9:255');
  },
  'ipv6-in-sdp.sip': (m) => {
    expect(m.body.toString()).toContain('c=IN IP6 2001:db8::20');
  },
  'mult-ip-in-header.sip': (m) => {
    const vias = m.vias;
    expect(vias).toHaveLength(3);
    expect(vias[0]).toMatchObject({ host: '2001:db8::9:1', port: 6050 });
    expect(vias[1]).toMatchObject({ host: '192.0.2.1' });
    expect(vias[1]!.port).toBeUndefined();
    expect(vias[2]).toMatchObject({ transport: 'TCP', host: '2001:db8::9:255', params: { received: '192.0.2.200' } });
    expect(m.to!.params.tag).toBe('9817--94');
  },
  'mult-ip-in-sdp.sip': (m) => {
    expect(m.body.toString()).toContain('c=IN IP6 2001:db8::1');
  },
  'ipv4-mapped-ipv6.sip': (m) => {
    expect(m.vias.map((v) => [v.host, v.port])).toEqual([
      ['::ffff:192.0.2.10', 19823],
      ['::ffff:192.0.2.2', undefined],
    ]);
    expect(parseNameAddr(m.getHeader('contact')!)).toMatchObject({ displayName: 'T. desk phone', uri: 'sip:ted@[::ffff:192.0.2.2]' });
  },
  'ipv6-bug-abnf-3-colons.sip': (m) => {
    // RFC 5118 §4.10: tolerated and treated as the two-colon form.
    expect(parseUri(m.uri)!.host).toBe('2001:db8::192.0.2.1');
    expect(parseUri(m.to!.uri)!.host).toBe('2001:db8::192.0.2.1');
  },
  'ipv6-correct-abnf-2-colons.sip': (m) => {
    expect(parseUri(m.uri)!.host).toBe('2001:db8::192.0.2.1');
  },
};

describe('parseMessage() on the RFC 5118 IPv6 torture messages', () => {
  it('has a row in index.tsv for each of the 12 messages', () => {
    expect(fixtureRows).toHaveLength(12);
    expect(Object.keys(FIXTURE_CHECKS).sort()).toEqual(fixtureRows.filter((r) => r.verdict !== 'invalid').map((r) => r.file).sort());
  });

  for (const row of fixtureRows) {
    if (row.verdict === 'invalid') {
      it(`parseMessage() rejects ${row.wire} (${row.section}) with 'Malformed Request-URI' and a partial request for the 400`, () => {
        for (const variant of [row.wire, row.file]) {
          const err = parseError(fixture(variant));
          expect(err.reason).toBe('Malformed Request-URI');
          expect(err.partial).toBeInstanceOf(SipMessage);
          expect(err.partial!.method).toBe('REGISTER');
          expect(err.partial!.uri).toBe('sip:2001:db8::10');
          expect(err.partial!.callId).toBe('SSG9559905523997077@hlau_4100');
          expect(err.partial!.topVia!.host).toBe('2001:db8::9:1');
        }
      });
      continue;
    }
    it(`parseMessage() accepts ${row.wire} (${row.section}, ${row.verdict}) as a stream message and as a datagram`, () => {
      const raw = fixture(row.wire);
      for (const datagram of [false, true]) {
        const m = parseMessage(raw, { datagram });
        FIXTURE_CHECKS[row.file]!(m);
        expect(m.body.equals(bodyOf(raw))).toBe(true);
        expect(m.body.length).toBe(m.contentLengthHeader);
      }
    });
    it(`parseMessage() accepts the raw LF form of ${row.file} (bare-LF tolerance)`, () => {
      const raw = fixture(row.file);
      expect(raw.includes('\r')).toBe(false);
      const m = parseMessage(raw);
      FIXTURE_CHECKS[row.file]!(m);
      expect(m.body.equals(bodyOf(raw))).toBe(true);
      // Re-serialised on the wire form, it parses again with the same headers.
      const again = parseMessage(m.toBuffer(), { datagram: true });
      expect(again.headers.filter((h) => h.name !== 'Content-Length')).toEqual(m.headers.filter((h) => h.name !== 'Content-Length'));
      expect(again.body.equals(m.body)).toBe(true);
    });
  }

  it("parseMessage() with datagram rejects a raw message whose Content-Length exceeds its LF body with 'Content-Length exceeds message size'", () => {
    // The archive's ipv6-in-sdp.sip declares 268 bytes for a 242-byte LF body.
    const err = parseError(fixture('ipv6-in-sdp.sip'), { datagram: true });
    expect(err.reason).toBe('Content-Length exceeds message size');
    expect(err.partial?.method).toBe('INVITE');
  });
});

describe('parseMessage() accepts tricky but valid messages (RFC 4475 §3.1.1)', () => {
  it('parseMessage() unfolds headers, tolerates whitespace around : / ; = , and reads compact names (a tortuous INVITE)', () => {
    const sdp = 'v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n';
    const m = parseMessage(
      wire(
        [
          'INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0',
          'TO :',
          ' sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n',
          'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
          '  ;',
          '  tag = 98asjd8',
          'MaX-fOrWaRdS: 0068',
          'CaLl-Id',
          ' : wsinv.ndaksdj@192.0.2.1',
          'Content-Length   : ' + Buffer.byteLength(sdp),
          'cseq: 0009',
          '  INVITE',
          'Via  : SIP  /   2.0',
          ' /UDP',
          '    192.0.2.2;branch=390skdjuw',
          's :',
          'NewFangledHeader:   newfangled value',
          ' continued newfangled value',
          'UnknownHeaderWithUnusualValue: ;;,,;;,;',
          'Content-Type: application/sdp',
          'Route:',
          ' <sip:services.example.com;lr;unknownwith=value;unknown-no-value>',
          'v:  SIP  / 2.0  / TCP     spindle.example.com   ;',
          '  branch  =   z9hG4bK9ikj8  ,',
          ' SIP  /    2.0   / UDP  192.168.255.111   ; branch=',
          ' z9hG4bK30239',
          'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
          '      newvalue ;',
          '  secondparam ; q = 0.33',
        ],
        sdp,
      ),
    );
    expect(m.to).toEqual({ uri: 'sip:vivekg@chair-dnrc.example.com', params: { tag: '1918181833n' } });
    expect(m.from).toEqual({ displayName: 'J Rosenberg \\"', uri: 'sip:jdrosen@example.com', params: { tag: '98asjd8' } });
    expect(m.callId).toBe('wsinv.ndaksdj@192.0.2.1');
    expect(m.headers.find((h) => h.value === 'wsinv.ndaksdj@192.0.2.1')!.name).toBe('CaLl-Id');
    expect(m.cseq).toEqual({ seq: 9, method: 'INVITE' });
    expect(m.getHeader('subject')).toBe('');
    expect(m.getHeader('newfangledheader')).toBe('newfangled value continued newfangled value');
    expect(m.getHeader('UnknownHeaderWithUnusualValue')).toBe(';;,,;;,;');
    expect(m.vias.map((v) => [v.protocol, v.transport, v.host, v.params.branch])).toEqual([
      ['SIP/2.0', 'UDP', '192.0.2.2', '390skdjuw'],
      ['SIP/2.0', 'TCP', 'spindle.example.com', 'z9hG4bK9ikj8'],
      ['SIP/2.0', 'UDP', '192.168.255.111', 'z9hG4bK30239'],
    ]);
    expect(parseNameAddr(m.getHeader('contact')!)).toEqual({
      displayName: 'Quoted string ""',
      uri: 'sip:jdrosen@example.com',
      params: { newparam: 'newvalue', secondparam: null, q: '0.33' },
    });
    expect(m.body.toString()).toBe(sdp);
  });

  it('parseMessage() accepts an unknown method made of every token character, with the odd URI, Call-ID and display names around it', () => {
    const method = "!interesting-Method0123456789_*+`.%~'";
    const uri = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
    const m = parseMessage(
      wire([
        `${method} ${uri} SIP/2.0`,
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>',
        'From: token1~` token2\'+_ token3*%!.- <sip:mundane@example.com>;fromParam\'\'~+*_!.-%="\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1\'+`*%!-.',
        'Call-ID: intmeth.word%ZK-!.*_+\'@word`~)(><:\\/"][?}{',
        `CSeq: 139122385 ${method}`,
        'Max-Forwards: 255',
        "extensionHeader-!.%*+_`'~: \uFEFF\u5927\u505C\u96FB",
        'Content-Length: 0',
      ]),
    );
    expect(m.method).toBe(method);
    expect(parseUri(m.uri)).toMatchObject({
      user: "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
      password: "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
      host: 'example.com',
    });
    expect(m.to!.displayName).toBe('BEL:\x07 NUL:\x00 DEL:\x7f');
    expect(m.from!.displayName).toBe("token1~` token2'+_ token3*%!.-");
    expect(m.from!.params).toEqual({ "fromparam''~+*_!.-%": '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"', tag: "_token~1'+`*%!-." });
    expect(m.callId).toBe('intmeth.word%ZK-!.*_+\'@word`~)(><:\\/"][?}{');
    expect(m.cseq).toEqual({ seq: 139122385, method });
    expect(m.getHeader("EXTENSIONHEADER-!.%*+_`'~")).toBe('\uFEFF\u5927\u505C\u96FB');
    expect(m.topVia!.params.branch).toBe("z9hG4bK-.!%66*_+`'~");
  });

  it('parseMessage() keeps percent-escapes in URIs as received (sip:sips%3Auser%40example.com@example.net, escaped param names)', () => {
    const m = parseMessage(
      wire(
        replacing('', 'INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0', [
          ...replacing('To', 'To: sip:%75se%72@example.com', INVITE).filter((l) => !l.startsWith('Contact')),
          'Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>',
        ]),
      ),
    );
    expect(m.uri).toBe('sip:sips%3Auser%40example.com@example.net');
    expect(parseUri(m.uri)).toMatchObject({ user: 'sips%3Auser%40example.com', host: 'example.net' });
    expect(parseUri(m.to!.uri)!.user).toBe('%75se%72');
    expect(parseUri(parseNameAddr(m.getHeader('m')!)!.uri)).toMatchObject({ user: 'cal%6Cer', params: { '%6c%72': null, 'n%61me': 'v%61lue%25%34%31' } });
  });

  it('parseMessage() accepts a Request-URI whose user part holds an escaped ; and ? and %00 (RFC 4475 §3.1.1.4, §3.1.1.9)', () => {
    const m = parseMessage(wire(replacing('', 'INVITE sip:user;par=u%40example.net@example.com SIP/2.0')));
    expect(parseUri(m.uri)).toMatchObject({ user: 'user;par=u%40example.net', host: 'example.com', params: {} });
    expect(parseUri('sip:a%3Bb%3Fc@example.com')).toMatchObject({ user: 'a%3Bb%3Fc', host: 'example.com' });
    expect(parseUri('sip:null-%00-null@example.com')!.user).toBe('null-%00-null');
  });

  it('parseMessage() accepts unknown URI schemes in the Request-URI, To, From and Contact', () => {
    const m = parseMessage(
      wire([
        'OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0',
        'Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-unkscm',
        'To: isbn:2983792873',
        'From: <http://www.example.com/caller>;tag=3234233',
        'Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34',
        'CSeq: 3923423 OPTIONS',
        'Contact: Joe Bob Briggs <urn:ipaddr:122.1.2.3>',
        'Max-Forwards: 70',
        'Content-Length: 0',
      ]),
    );
    expect(parseUri(m.uri)).toEqual({ scheme: 'nobodyknowsthisscheme', user: 'totallyopaquecontent', host: '', params: {}, headers: {} });
    expect(m.to!.uri).toBe('isbn:2983792873');
    expect(m.from).toEqual({ uri: 'http://www.example.com/caller', params: { tag: '3234233' } });
    expect(parseNameAddr(m.getHeader('contact')!)!.displayName).toBe('Joe Bob Briggs');
  });

  it('parseMessage() accepts a display name without space before < (RFC 4475 §3.1.1.6) and unknown headers', () => {
    const m = parseMessage(wire([...replacing('From', 'From: caller<sip:caller@example.com>;tag=323'), 'X-Unknown-Thing: a, "b, c"']));
    expect(m.from).toEqual({ displayName: 'caller', uri: 'sip:caller@example.com', params: { tag: '323' } });
    expect(m.getHeader('x-unknown-thing')).toBe('a, "b, c"');
  });

  it('parseMessage() accepts every transport token in Via and upper-cases it', () => {
    const m = parseMessage(
      wire(
        replacing(
          'Via',
          'Via: SIP/2.0/sctp t1.example.com;branch=z9hG4bKkdjuw, SIP/2.0/tls t2.example.com;branch=z9hG4bK1, SIP/2.0/UNKNOWN t3.example.com;branch=z9hG4bK2, SIP/2.0/wss t4.example.com:443;branch=z9hG4bK3, sip/2.0/ws t5.example.com;branch=z9hG4bK4',
        ),
      ),
    );
    expect(m.vias.map((v) => `${v.protocol}/${v.transport}`)).toEqual(['SIP/2.0/SCTP', 'SIP/2.0/TLS', 'SIP/2.0/UNKNOWN', 'SIP/2.0/WSS', 'SIP/2.0/WS']);
  });

  it('parseMessage() keeps a multipart body byte-exact, binary parts and CRLFs included', () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const body = Buffer.concat([
      Buffer.from('--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--unique-boundary-1\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: binary\r\n\r\n'),
      binary,
      Buffer.from('\r\n\r\n--unique-boundary-1--\r\n'),
    ]);
    const lines = [...replacing('Content-Length', `Content-Length: ${body.length}`), 'Content-Type: multipart/mixed;boundary=unique-boundary-1', 'MIME-Version: 1.0'];
    for (const datagram of [false, true]) {
      const m = parseMessage(wire(lines, body), { datagram });
      expect(m.body.equals(body)).toBe(true);
      expect(parseMessage(m.toBuffer()).body.equals(body)).toBe(true);
    }
  });

  it('parseMessage() decodes UTF-8 display names and reason phrases, and an empty reason phrase', () => {
    const reason = '= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435';
    const m = parseMessage(wire(replacing('', `SIP/2.0 200 ${reason}`, replacing('From', 'From: "J\u00fcrgen M\u00fcller \u6771\u4eac" <sip:j@example.com>;tag=1', OK_200))));
    expect(m.isRequest).toBe(false);
    expect(m.status).toBe(200);
    expect(m.reason).toBe(reason);
    expect(m.from!.displayName).toBe('J\u00fcrgen M\u00fcller \u6771\u4eac');
    expect(parseMessage(wire(replacing('', 'SIP/2.0 100 ', OK_200))).reason).toBe('');
    expect(parseMessage(wire(replacing('', 'SIP/2.0 100', OK_200))).reason).toBe('');
  });

  it('parseMessage() does not throw on invalid UTF-8 in headers and keeps the body bytes untouched', () => {
    const head = Buffer.from(INVITE.slice(0, -1).join('\r\n') + '\r\nSubject: caf', 'utf8');
    const body = Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0x00, 0x80]);
    const data = Buffer.concat([head, Buffer.from([0xe9, 0xff]), Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n`), body]);
    const m = parseMessage(data);
    expect(m.getHeader('subject')).toBe('caf\uFFFD\uFFFD');
    expect(m.body.equals(body)).toBe(true);
  });

  it('parseMessage() skips CRLFs before the start line and accepts bare LF line ends (RFC 3261 §7.5)', () => {
    const m = parseMessage(Buffer.from('\r\n\r\n\n' + INVITE.join('\n') + '\n\nhello'));
    expect(m.method).toBe('INVITE');
    expect(m.body.toString()).toBe('hello');
  });

  it('parseMessage() reads the compact form of every header it maps (RFC 3261 §7.3.3 and extensions)', () => {
    const compact = 'abcdefijklmorstuvxy'.split('');
    const m = parseMessage(
      wire([
        'REFER sip:bob@example.com SIP/2.0',
        ...compact.map((c) => {
          const values: Record<string, string> = {
            f: '<sip:alice@example.com>;tag=1',
            t: '<sip:bob@example.com>',
            v: 'SIP/2.0/UDP h.example.com;branch=z9hG4bKc',
            i: 'compact@example.com',
            l: '0',
          };

          return `${c}: ${values[c] ?? 'value-' + c}`;
        }),
        'CSeq: 1 REFER',
      ]),
    );
    for (const c of compact) {
      expect(m.getHeader(compactToFull(c))).toBe(m.getHeader(c));
      expect(m.hasHeader(compactToFull(c).toUpperCase())).toBe(true);
    }
    expect(m.getHeader('Refer-To')).toBe('value-r');
    expect(m.getHeader('Request-Disposition')).toBe('value-d');
    expect(m.callId).toBe('compact@example.com');
  });

  it('parseMessage() with datagram cuts the body to Content-Length and ignores trailing octets (RFC 4475 §3.1.1.8)', () => {
    const data = Buffer.concat([wire(INVITE), Buffer.from('INVITE sip:joe@example.com SIP/2.0\r\nt: <sip:joe@example.com>\r\n\r\n')]);
    expect(parseMessage(data, { datagram: true }).body.length).toBe(0);
    const withBody = wire(replacing('Content-Length', 'Content-Length: 3'), 'abcdef');
    expect(parseMessage(withBody, { datagram: true }).body.toString()).toBe('abc');
    // A stream message is framed elsewhere: everything after the blank line is the body.
    expect(parseMessage(withBody).body.toString()).toBe('abcdef');
    // No Content-Length in a datagram: the rest of the datagram (RFC 3261 §18.3).
    expect(parseMessage(wire(without('Content-Length'), 'xyz'), { datagram: true }).body.toString()).toBe('xyz');
  });

  it('parseMessage() accepts CSeq 2^31-1, repeated identical single headers and Max-Forwards 0', () => {
    const m = parseMessage(
      wire([...replacing('CSeq', 'CSeq: 2147483647 INVITE', replacing('Max-Forwards', 'Max-Forwards: 0')), 'Content-Length: 0', 'i: a84b4c76e66710@pc33.atlanta.example.com']),
    );
    expect(m.cseq!.seq).toBe(2 ** 31 - 1);
    expect(m.getHeaders('call-id')).toHaveLength(2);
  });
});

interface RejectCase {
  name: string;
  data: Buffer;
  reason: string;
  partial: boolean;
  opts?: ParseOptions;
}

const REJECTS: RejectCase[] = [
  { name: 'a request without Call-ID', data: wire(without('Call-ID')), reason: 'Missing Call-ID', partial: false },
  { name: 'a request without Via', data: wire(without('Via')), reason: 'Missing Via', partial: false },
  { name: 'a request without From', data: wire(without('From')), reason: 'Missing From', partial: false },
  { name: 'a request without To', data: wire(without('To')), reason: 'Missing To', partial: false },
  { name: 'a request without CSeq', data: wire(without('CSeq')), reason: 'Missing CSeq', partial: false },
  { name: 'a response without Via', data: wire(without('Via', OK_200)), reason: 'Missing Via', partial: false },
  { name: 'a Via with empty parameters and list elements (RFC 4475 §3.1.2.1)', data: wire(replacing('Via', 'Via: SIP/2.0/UDP 192.0.2.15;;,;,,')), reason: 'Bad Via', partial: false },
  { name: 'a Via with an unbracketed IPv6 sent-by', data: wire(replacing('Via', 'Via: SIP/2.0/UDP 2001:db8::1;branch=z9hG4bKx')), reason: 'Bad Via', partial: false },
  { name: 'a Via without sent-by', data: wire(replacing('Via', 'Via: SIP/2.0/UDP')), reason: 'Bad Via', partial: false },
  { name: 'a CSeq number beyond 2^64 (RFC 4475 §3.1.2.4)', data: wire(replacing('CSeq', 'CSeq: 36893488147419103232 INVITE')), reason: 'Bad CSeq', partial: true },
  { name: 'a CSeq number of 2^31', data: wire(replacing('CSeq', 'CSeq: 2147483648 INVITE')), reason: 'Bad CSeq', partial: true },
  { name: 'a CSeq without method', data: wire(replacing('CSeq', 'CSeq: 1')), reason: 'Bad CSeq', partial: true },
  { name: 'a CSeq without number', data: wire(replacing('CSeq', 'CSeq: INVITE')), reason: 'Bad CSeq', partial: true },
  { name: 'a negative CSeq', data: wire(replacing('CSeq', 'CSeq: -1 INVITE')), reason: 'Bad CSeq', partial: true },
  { name: 'a CSeq method other than the request method (RFC 4475 §3.1.2.17)', data: wire(replacing('CSeq', 'CSeq: 8 OPTIONS')), reason: 'CSeq method does not match', partial: true },
  { name: 'a CSeq method differing only in case', data: wire(replacing('CSeq', 'CSeq: 8 invite')), reason: 'CSeq method does not match', partial: true },
  { name: 'an ACK whose CSeq says INVITE', data: wire(replacing('', 'ACK sip:bob@biloxi.example.com SIP/2.0')), reason: 'CSeq method does not match', partial: true },
  { name: 'a negative Content-Length (RFC 4475 §3.1.2.3)', data: wire(replacing('Content-Length', 'Content-Length: -999')), reason: 'Bad Content-Length', partial: true },
  { name: 'a Content-Length of 2^64 (RFC 4475 §3.1.2.5)', data: wire(replacing('Content-Length', 'Content-Length: 18446744073709551616')), reason: 'Bad Content-Length', partial: true },
  { name: 'two different Content-Length values (RFC 4475 mcl01)', data: wire([...INVITE, 'l: 5'], '12345'), reason: 'Conflicting Content-Length', partial: true },
  { name: 'two different Call-IDs (RFC 4475 multi01)', data: wire([...INVITE, 'i: other@example.com']), reason: 'Conflicting Call-ID', partial: true },
  { name: 'two different CSeqs', data: wire([...INVITE, 'CSeq: 314160 INVITE']), reason: 'Conflicting CSeq', partial: true },
  { name: 'two different From headers', data: wire([...INVITE, 'f: <sip:mallory@example.com>;tag=2']), reason: 'Conflicting From', partial: true },
  { name: 'a Request-URI in <> (RFC 4475 §3.1.2.7)', data: wire(replacing('', 'INVITE <sip:bob@biloxi.example.com> SIP/2.0')), reason: 'Malformed Request-URI', partial: true },
  { name: 'whitespace inside the Request-URI (RFC 4475 §3.1.2.8)', data: wire(replacing('', 'INVITE sip:bob@biloxi.example.com; lr SIP/2.0')), reason: 'Malformed Request-URI', partial: true },
  { name: 'doubled spaces in the start line (RFC 4475 §3.1.2.9)', data: wire(replacing('', 'INVITE  sip:bob@biloxi.example.com  SIP/2.0')), reason: 'Malformed Request-URI', partial: true },
  { name: 'a Request-URI with an unbracketed IPv6 host (RFC 5118 §4.2)', data: wire(replacing('', 'INVITE sip:bob@2001:db8::10 SIP/2.0')), reason: 'Malformed Request-URI', partial: true },
  { name: 'a Request-URI with a port above 65535', data: wire(replacing('', 'INVITE sip:bob@example.com:65536 SIP/2.0')), reason: 'Malformed Request-URI', partial: true },
  { name: 'trailing whitespace after SIP/2.0 (RFC 4475 §3.1.2.10)', data: wire(replacing('', 'INVITE sip:bob@biloxi.example.com SIP/2.0  ')), reason: 'Malformed start line', partial: true },
  { name: 'a request line without URI', data: wire(replacing('', 'INVITE SIP/2.0')), reason: 'Malformed start line', partial: true },
  { name: 'a method that is not a token', data: wire(replacing('', 'INV@TE sip:bob@biloxi.example.com SIP/2.0')), reason: 'Malformed start line', partial: true },
  { name: 'a request with version SIP/7.0 (RFC 4475 §3.1.2.16)', data: wire(replacing('', 'INVITE sip:bob@biloxi.example.com SIP/7.0')), reason: 'Version Not Supported', partial: true },
  { name: 'a response with version SIP/3.0', data: wire(replacing('', 'SIP/3.0 200 OK', OK_200)), reason: 'Version Not Supported', partial: false },
  { name: 'a response with a 10-digit status (RFC 4475 §3.1.2.19)', data: wire(replacing('', 'SIP/2.0 4294967301 better not break the receiver', OK_200)), reason: 'Malformed start line', partial: false },
  { name: 'a response with status 099', data: wire(replacing('', 'SIP/2.0 099 Early', OK_200)), reason: 'Malformed start line', partial: false },
  { name: 'an unterminated quoted display name (RFC 4475 quotbal)', data: wire(replacing('To', 'To: "Mr. J. User <sip:j.user@example.com>')), reason: 'Bad To', partial: true },
  { name: 'an unquoted display name with a comma (RFC 4475 §3.1.2.15)', data: wire(replacing('From', 'From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43')), reason: 'Bad From', partial: true },
  { name: 'whitespace inside <> (RFC 4475 §3.1.2.14)', data: wire(replacing('To', 'To: "Watson, Thomas" < sip:t.watson@example.org >')), reason: 'Bad To', partial: true },
  // tags end up in drachtio dialog ids inside control-protocol leaders: tokens only (RFC 3261 §25.1 tag-param)
  { name: 'a quoted From tag holding "|"', data: wire(replacing('From', 'From: <sip:alice@atlanta.example.com>;tag="x|y"')), reason: 'Bad From', partial: true },
  { name: 'a quoted To tag holding a CR', data: wire(replacing('To', 'To: <sip:bob@biloxi.example.com>;tag="a\rb"')), reason: 'Bad To', partial: true },
  { name: 'a To tag that is not a token', data: wire(replacing('To', 'To: <sip:bob@biloxi.example.com>;tag=a:b')), reason: 'Bad To', partial: true },
  { name: 'a From tag without a value', data: wire(replacing('From', 'From: <sip:alice@atlanta.example.com>;tag')), reason: 'Bad From', partial: true },
  { name: 'a Max-Forwards of 300', data: wire(replacing('Max-Forwards', 'Max-Forwards: 300')), reason: 'Bad Max-Forwards', partial: true },
  { name: 'a Call-ID with a space', data: wire(replacing('Call-ID', 'Call-ID: a b')), reason: 'Bad Call-ID', partial: true },
  { name: 'an empty Call-ID', data: wire(replacing('Call-ID', 'Call-ID:')), reason: 'Bad Call-ID', partial: true },
  { name: 'a header line without colon', data: wire([...INVITE, 'NoColonHere']), reason: 'Malformed header line', partial: false },
  { name: 'a header name with a space', data: wire([...INVITE, 'Bad Name: x']), reason: 'Malformed header line', partial: false },
  { name: 'a continuation line right after the start line', data: wire(['INVITE sip:bob@biloxi.example.com SIP/2.0', ' folded: x', ...INVITE.slice(1)]), reason: 'Malformed header line', partial: false },
  { name: 'a message of CRLFs only', data: Buffer.from('\r\n\r\n\r\n'), reason: 'Empty message', partial: false },
  { name: 'an empty buffer', data: Buffer.alloc(0), reason: 'Empty message', partial: false },
  { name: 'a header section cut in the middle of a line', data: Buffer.from(INVITE.join('\r\n').slice(0, -3)), reason: 'Incomplete header section', partial: false },
  // the mandatory headers came within the limit: still answerable with 400
  { name: 'more header lines than maxHeaders', data: wire(INVITE), opts: { maxHeaders: 7 }, reason: 'Too many headers', partial: true },
  // CSeq is the 6th header: beyond a limit of 5 the request cannot be answered
  { name: 'more header lines than maxHeaders, mandatory ones beyond the limit', data: wire(INVITE), opts: { maxHeaders: 5 }, reason: 'Too many headers', partial: false },
  { name: 'a header section larger than maxHeaderBytes', data: wire(INVITE), opts: { maxHeaderBytes: 200 }, reason: 'Header section too large', partial: false },
  { name: 'a datagram whose Content-Length exceeds its body (RFC 4475 §3.1.2.2)', data: wire(replacing('Content-Length', 'Content-Length: 10'), '12345'), opts: { datagram: true }, reason: 'Content-Length exceeds message size', partial: true },
];

describe('parseMessage() rejects malformed messages (RFC 3261 §8.2.2, RFC 4475 §3.1.2)', () => {
  for (const c of REJECTS) {
    it(`parseMessage() rejects ${c.name} with '${c.reason}'${c.partial ? ' and a partial request' : ''}`, () => {
      const err = parseError(c.data, c.opts);
      expect(err.reason).toBe(c.reason);
      expect(err.partial !== undefined).toBe(c.partial);
      if (err.partial) {
        expect(err.partial.isRequest).toBe(true);
        expect(err.partial.hasHeader('call-id')).toBe(true);
        expect(err.partial.topVia).toBeDefined();
      }
    });
  }

  it('parseMessage() throws a SipParseError with name, code, reason and message', () => {
    const err = parseError(wire(without('Call-ID')));
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('SipParseError');
    expect(err.code).toBe('RB_ERR_SIP_PARSE');
    expect(err.message).toBe('SIP parse error: Missing Call-ID');
  });

  it('parseMessage() gives the partial request of a bad start line the method it could read', () => {
    const err = parseError(wire(replacing('', 'ACK sip:bob@biloxi.example.com SIP/3.0', replacing('CSeq', 'CSeq: 314159 ACK'))));
    expect(err.reason).toBe('Version Not Supported');
    expect(err.partial!.method).toBe('ACK');
    expect(err.partial!.uri).toBe('sip:bob@biloxi.example.com');
  });

  it('parseMessage() falls back to the default limits when given NaN or negative ones', () => {
    const many = wire([...INVITE, ...Array.from({ length: 300 }, (_, i) => `X-H${i}: ${i}`)]);
    expect(parseError(many, { maxHeaders: Number.NaN }).reason).toBe('Too many headers');
    expect(parseError(many, { maxHeaders: -1 }).reason).toBe('Too many headers');
    expect(parseMessage(wire(INVITE), { maxHeaderBytes: Number.NaN }).method).toBe('INVITE');
  });

  it('parseMessage() rejects input that is not a Buffer with SipParseError', () => {
    expect(() => parseMessage('INVITE' as unknown as Buffer)).toThrow(SipParseError);
    expect(parseMessage(new Uint8Array(wire(INVITE)) as Buffer).method).toBe('INVITE');
  });
});

describe('parseMessage() stays linear on pathological input', () => {
  // Catastrophe guards, not speed targets (those live in load/): a quadratic or backtracking
  // parser takes minutes on these inputs, a linear one milliseconds; the bounds sit far above
  // what a loaded 2-core CI machine needs, so only the catastrophe fails them.
  /** Runs fn and returns the elapsed milliseconds. */
  function timed(fn: () => void): number {
    const t0 = performance.now();
    fn();

    return performance.now() - t0;
  }

  it('parseMessage() rejects a 1 MB header line with "Header section too large" without reading it all', () => {
    const data = Buffer.concat([Buffer.from(INVITE.slice(0, 3).join('\r\n') + '\r\nX-Big: '), Buffer.alloc(1 << 20, 0x61), Buffer.from('\r\n\r\n')]);
    let err: SipParseError | undefined;
    const ms = timed(() => {
      err = parseError(data);
    });
    expect(err!.reason).toBe('Header section too large');
    expect(ms).toBeLessThan(2000);
  });

  it('parseMessage() rejects 100 000 commas in a Via quickly, and getHeaderValues() splits them in linear time', () => {
    const commas = ','.repeat(100_000);
    expect(parseError(wire(replacing('Via', `Via: SIP/2.0/UDP h${commas}`)), { maxHeaderBytes: 200_000 }).reason).toBe('Bad Via');
    const m = SipMessage.request('OPTIONS', 'sip:a@b', [['Supported', `a${commas}b`]]);
    let values: string[] = [];
    const ms = timed(() => {
      values = m.getHeaderValues('supported');
    });
    expect(values).toEqual(['a', 'b']);
    expect(ms).toBeLessThan(2000);
  });

  it('parseNameAddr(), parseVia() and parseUri() handle deep quoting, long runs and many entries quickly', () => {
    const ms = timed(() => {
      expect(parseNameAddr('"' + '\\"'.repeat(200_000) + '<sip:a@b>')).toBeUndefined();
      expect(parseNameAddr('"'.repeat(200_001) + ' <sip:a@b>')).toBeUndefined();
      expect(parseNameAddr('<'.repeat(200_000) + 'sip:a@b>')).toBeUndefined();
      expect(parseNameAddr('<sip:a@b>' + ';a'.repeat(100_000))!.params).toEqual({ a: null });
      expect(parseUri('sip:' + 'a'.repeat(500_000) + '-')).toBeUndefined();
      expect(parseUri('sip:a@' + '[' + ':'.repeat(500_000) + ']')).toBeUndefined();
      expect(parseVia(Array.from({ length: 20_000 }, (_, i) => `SIP/2.0/UDP h${i};branch=z9hG4bK${i}`).join(','))).toHaveLength(20_000);
    });
    expect(ms).toBeLessThan(15_000);
  });

  it('parseMessage() unfolds thousands of continuation lines of one header quickly', () => {
    const lines = [...INVITE.slice(0, -1), 'X-Folded: start', ...Array.from({ length: 3000 }, () => ' x'), 'Content-Length: 0'];
    let m: SipMessage | undefined;
    const ms = timed(() => {
      m = parseMessage(wire(lines));
    });
    expect(m!.getHeader('x-folded')).toBe('start' + ' x'.repeat(3000));
    expect(ms).toBeLessThan(2000);
  });
});

describe('SipMessage header access', () => {
  const m = (): SipMessage =>
    parseMessage(
      wire([
        'INVITE sip:bob@biloxi.example.com SIP/2.0',
        'v: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2;rport',
        'Via: SIP/2.0/UDP p3.example.com;branch=z9hG4bK3;received=192.0.2.7;rport=5062',
        'Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>',
        'Route: <sip:r1.example.com;lr>',
        'Route: <sip:r2.example.com;lr>,<sip:r3.example.com;lr>',
        'Contact: "Doe, John" <sip:j@example.com;x=a,b>;expires=60, "Q \\" ,<" <sip:q@example.com>',
        'f: "Alice" <sip:alice@atlanta.example.com>;tag=88sja8x',
        't: <sip:bob@biloxi.example.com>',
        'i: 3848276298220188511@atlanta.example.com',
        'CSeq: 2 INVITE',
        'k: timer, 100rel,,replaces',
        'Max-Forwards: 69',
        'l: 0',
      ]),
    );

  it('getHeader() is case-insensitive and treats compact and full names alike', () => {
    const msg = m();
    expect(msg.getHeader('CALL-ID')).toBe('3848276298220188511@atlanta.example.com');
    expect(msg.getHeader('I')).toBe('3848276298220188511@atlanta.example.com');
    expect(msg.getHeader('Via')).toContain('p1.example.com');
    expect(msg.getHeader('x-absent')).toBeUndefined();
    expect(msg.hasHeader('content-length')).toBe(true);
    expect(msg.hasHeader('Subject')).toBe(false);
  });

  it('getHeaders() returns every line in order, compact and full', () => {
    expect(m().getHeaders('via')).toHaveLength(2);
    expect(m().getHeaders('route')).toEqual(['<sip:r1.example.com;lr>', '<sip:r2.example.com;lr>,<sip:r3.example.com;lr>']);
  });

  it('getHeaderValues() splits on commas outside quotes and <> across lines, dropping empty elements', () => {
    const msg = m();
    expect(msg.getHeaderValues('Route')).toEqual(['<sip:r1.example.com;lr>', '<sip:r2.example.com;lr>', '<sip:r3.example.com;lr>']);
    expect(msg.getHeaderValues('contact')).toEqual(['"Doe, John" <sip:j@example.com;x=a,b>;expires=60', '"Q \\" ,<" <sip:q@example.com>']);
    expect(msg.getHeaderValues('Supported')).toEqual(['timer', '100rel', 'replaces']);
    expect(msg.getHeaderValues('v')).toHaveLength(3);
    expect(msg.getHeaderValues('Allow')).toEqual([]);
  });

  it('vias, topVia, callId, cseq, from, to and contentLengthHeader read the current header text', () => {
    const msg = m();
    expect(msg.vias.map((v) => [v.transport, v.host, v.port, v.params.rport])).toEqual([
      ['UDP', 'p1.example.com', undefined, undefined],
      ['TCP', '2001:db8::1', 5070, null],
      ['UDP', 'p3.example.com', undefined, '5062'],
    ]);
    expect(msg.topVia!.params.branch).toBe('z9hG4bK1');
    expect(msg.callId).toBe('3848276298220188511@atlanta.example.com');
    expect(msg.cseq).toEqual({ seq: 2, method: 'INVITE' });
    expect(getTag(msg.from)).toBe('88sja8x');
    expect(msg.from!.displayName).toBe('Alice');
    expect(getTag(msg.to)).toBeUndefined();
    expect(msg.contentLengthHeader).toBe(0);
    msg.setHeader('To', '<sip:bob@biloxi.example.com>;tag=314159');
    expect(getTag(msg.to)).toBe('314159');
    msg.removeHeader('Call-ID');
    expect(msg.callId).toBe('');
    msg.setHeader('CSeq', 'nonsense');
    expect(msg.cseq).toBeUndefined();
  });

  it('vias throws SipParseError on a malformed Via of a built message, topVia is undefined without Via', () => {
    const msg = SipMessage.request('OPTIONS', 'sip:a@example.com', [['Via', 'garbage']]);
    expect(() => msg.vias).toThrow(SipParseError);
    expect(SipMessage.request('OPTIONS', 'sip:a@example.com').topVia).toBeUndefined();
  });

  it('setHeader() with a full name replaces the compact and full lines by one line at the first position', () => {
    const msg = m();
    msg.headers.push({ name: 'Call-ID', value: 'dup@example.com' });
    const at = msg.headers.findIndex((h) => h.name === 'i');
    msg.setHeader('Call-ID', 'new@example.com');
    expect(msg.getHeaders('call-id')).toEqual(['new@example.com']);
    expect(msg.headers[at]).toEqual({ name: 'Call-ID', value: 'new@example.com' });
    msg.setHeader('Subject', 'appended');
    expect(msg.headers.at(-1)).toEqual({ name: 'Subject', value: 'appended' });
  });

  it('addHeader() puts first before the first line of the same name (compact too) or at the top, last after the last one or at the end', () => {
    const msg = m();
    msg.addHeader('Via', 'SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp', 'first');
    expect(msg.headers[0]).toEqual({ name: 'Via', value: 'SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp' });
    expect(msg.topVia!.host).toBe('proxy.example.com');
    msg.addHeader('Record-Route', '<sip:me.example.com;lr>', 'first');
    expect(msg.getHeaderValues('record-route')[0]).toBe('<sip:me.example.com;lr>');
    const fresh = SipMessage.request('INVITE', 'sip:a@example.com', [
      ['Call-ID', 'x'],
      ['Max-Forwards', '70'],
    ]);
    fresh.addHeader('Record-Route', '<sip:me.example.com;lr>', 'first');
    expect(fresh.headers[0]!.name).toBe('Record-Route');
    fresh.addHeader('v', 'SIP/2.0/UDP a.example.com', 'last');
    fresh.addHeader('Via', 'SIP/2.0/UDP b.example.com');
    fresh.addHeader('i', 'y');
    expect(fresh.headers.map((h) => h.name)).toEqual(['Record-Route', 'Call-ID', 'i', 'Max-Forwards', 'v', 'Via']);
  });

  it('removeHeader() removes full and compact lines and returns the count', () => {
    const msg = m();
    msg.headers.push({ name: 'Content-Length', value: '0' });
    expect(msg.removeHeader('content-length')).toBe(2);
    expect(msg.removeHeader('V')).toBe(2);
    expect(msg.removeHeader('x-none')).toBe(0);
    expect(msg.hasHeader('via')).toBe(false);
  });

  it('setHeader() and addHeader() throw TypeError for a name that is not a token', () => {
    const msg = m();
    expect(() => msg.setHeader('Bad Name', 'x')).toThrow(TypeError);
    expect(() => msg.addHeader('X:Y', 'x')).toThrow(TypeError);
    expect(() => msg.addHeader('', 'x')).toThrow(TypeError);
  });
});

describe('SipMessage building and serialising', () => {
  it('toBuffer() writes the start line, headers as stored, CRLFs and the body', () => {
    const msg = SipMessage.request(
      'OPTIONS',
      'sip:carol@chicago.example.com',
      [
        ['v', 'SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877'],
        ['max-forwards', '70'],
        ['t', '<sip:carol@chicago.example.com>'],
        ['From', 'Alice <sip:alice@atlanta.example.com>;tag=1928301774'],
        ['Call-ID', 'a84b4c76e66710'],
        ['CSeq', '63104 OPTIONS'],
      ],
      'hi',
    );
    expect(msg.toString()).toBe(
      'OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n' +
        'v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n' +
        'max-forwards: 70\r\n' +
        't: <sip:carol@chicago.example.com>\r\n' +
        'From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n' +
        'Call-ID: a84b4c76e66710\r\n' +
        'CSeq: 63104 OPTIONS\r\n' +
        'Content-Length: 2\r\n' +
        '\r\n' +
        'hi',
    );
    expect(SipMessage.response(100, '').toString()).toBe('SIP/2.0 100 \r\nContent-Length: 0\r\n\r\n');
  });

  it('toBuffer() writes the body length in bytes into the existing Content-Length (multi-byte UTF-8) and drops duplicates', () => {
    const body = 'h\u00e9llo \u20ac \u{1F600}';
    const msg = parseMessage(wire([...replacing('Content-Length', 'l: 999'), 'Content-Length: 999'], body));
    msg.body = Buffer.from(body, 'utf8');
    const out = msg.toString();
    expect(Buffer.byteLength(body)).toBe(15);
    expect(body.length).toBe(10);
    expect(out).toContain('\r\nl: 15\r\n');
    expect(out).not.toContain('Content-Length');
    const again = parseMessage(msg.toBuffer(), { datagram: true });
    expect(again.contentLengthHeader).toBe(15);
    expect(again.body.toString('utf8')).toBe(body);
  });

  it('toBuffer() turns CR/LF inside a stored value or reason into one space, so no header can be injected', () => {
    const msg = SipMessage.response(486, 'Busy', [['Subject', 'a\r\nVia: evil\r\n\r\nb']]);
    msg.reason = 'Busy\r\nX: y';
    const text = msg.toString();
    expect(text).toBe('SIP/2.0 486 Busy X: y\r\nSubject: a Via: evil b\r\nContent-Length: 0\r\n\r\n');
  });

  it('toBuffer() output re-parses to the same message (round trip of a parsed INVITE with folding and compact names)', () => {
    const original = parseMessage(wire([...INVITE.slice(0, 3), 'Subject: a', '  folded subject', 'k: 100rel', ...INVITE.slice(3)], 'v=0\r\n'));
    const again = parseMessage(original.toBuffer());
    expect(again.method).toBe(original.method);
    expect(again.uri).toBe(original.uri);
    expect(again.headers).toEqual(original.headers.map((h) => (h.name === 'Content-Length' ? { ...h, value: '5' } : h)));
    expect(again.body.equals(original.body)).toBe(true);
    expect(again.toString()).toBe(original.toString());
  });

  it('clone() copies headers and body deeply', () => {
    const a = parseMessage(wire(INVITE, 'body'));
    const b = a.clone();
    b.headers[0]!.value = 'changed';
    b.setHeader('Subject', 'x');
    b.body[0] = 0x42;
    b.method = 'BYE';
    expect(a.headers[0]!.value).not.toBe('changed');
    expect(a.hasHeader('subject')).toBe(false);
    expect(a.body.toString()).toBe('body');
    expect(a.method).toBe('INVITE');
    expect(b.isRequest).toBe(true);
  });

  it('SipMessage.request() and response() throw TypeError for a bad method, URI, status, reason or header name', () => {
    expect(() => SipMessage.request('IN VITE', 'sip:a@b')).toThrow(TypeError);
    expect(() => SipMessage.request('INVITE', 'sip:a @b')).toThrow(TypeError);
    expect(() => SipMessage.request('INVITE', '')).toThrow(TypeError);
    expect(() => SipMessage.response(99, 'x')).toThrow(TypeError);
    expect(() => SipMessage.response(700, 'x')).toThrow(TypeError);
    expect(() => SipMessage.response(200.5, 'x')).toThrow(TypeError);
    expect(() => SipMessage.response(200, 'O\nK')).toThrow(TypeError);
    expect(() => SipMessage.response(200, 'OK', [['Bad:Name', 'x']])).toThrow(TypeError);
    const r = SipMessage.response(180, 'Ringing', undefined, Buffer.from([1, 2]));
    expect([r.isRequest, r.status, r.reason, r.method, r.uri, r.body.length]).toEqual([false, 180, 'Ringing', '', '', 2]);
    const q = SipMessage.request('MESSAGE', 'sip:a@b', [], 'text');
    expect([q.isRequest, q.status, q.reason, q.body.toString()]).toEqual([true, 0, '', 'text']);
  });
});

describe('header names', () => {
  it.each([
    ['call-id', 'Call-ID'],
    ['CALL-ID', 'Call-ID'],
    ['cseq', 'CSeq'],
    ['www-authenticate', 'WWW-Authenticate'],
    ['p-asserted-identity', 'P-Asserted-Identity'],
    ['mime-version', 'MIME-Version'],
    ['rack', 'RAck'],
    ['rseq', 'RSeq'],
    ['sip-etag', 'SIP-ETag'],
    ['min-se', 'Min-SE'],
    ['max-forwards', 'Max-Forwards'],
    ['record-route', 'Record-Route'],
    ['i', 'Call-ID'],
    ['V', 'Via'],
    ['l', 'Content-Length'],
    ['foo-bar', 'Foo-Bar'],
    ['FOO-BAR', 'Foo-Bar'],
    ['foo', 'Foo'],
    ['x-custom-thing', 'x-custom-thing'],
    ['X-Custom-THING', 'X-Custom-THING'],
  ])('canonicalHeaderName(%j) returns %j', (input, out) => {
    expect(canonicalHeaderName(input)).toBe(out);
  });

  it.each([
    ['i', 'Call-ID'],
    ['m', 'Contact'],
    ['e', 'Content-Encoding'],
    ['l', 'Content-Length'],
    ['c', 'Content-Type'],
    ['f', 'From'],
    ['s', 'Subject'],
    ['k', 'Supported'],
    ['t', 'To'],
    ['v', 'Via'],
    ['o', 'Event'],
    ['r', 'Refer-To'],
    ['b', 'Referred-By'],
    ['u', 'Allow-Events'],
    ['x', 'Session-Expires'],
    ['y', 'Identity'],
    ['a', 'Accept-Contact'],
    ['j', 'Reject-Contact'],
    ['d', 'Request-Disposition'],
    ['I', 'Call-ID'],
    ['n', 'n'],
    ['Via', 'Via'],
  ])('compactToFull(%j) returns %j', (input, out) => {
    expect(compactToFull(input)).toBe(out);
  });

  it('isValidHeaderName() accepts RFC 3261 tokens only', () => {
    expect(isValidHeaderName("extensionHeader-!.%*+_`'~")).toBe(true);
    expect(isValidHeaderName('Call-ID')).toBe(true);
    for (const bad of ['', 'a b', 'a:b', 'a\u00e9', 'a\r', 'a;b', 'a"b']) {
      expect(isValidHeaderName(bad)).toBe(false);
    }
  });
});

describe('parseUri() and formatUri()', () => {
  it.each<[string, Record<string, unknown>]>([
    ['sip:alice@atlanta.example.com', { scheme: 'sip', user: 'alice', host: 'atlanta.example.com', params: {}, headers: {} }],
    ['sip:%61lice@example.com', { user: '%61lice', host: 'example.com' }],
    ['SIPS:alice:secretword@example.com:5061;transport=TCP;LR', { scheme: 'sips', user: 'alice', password: 'secretword', port: 5061, params: { transport: 'TCP', lr: null } }],
    ['sip:alice@192.0.2.4', { user: 'alice', host: '192.0.2.4' }],
    ['sip:[2001:db8::10]:5070;maddr=[2001:db8::1]', { host: '2001:db8::10', port: 5070, params: { maddr: '[2001:db8::1]' } }],
    ['sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com&Subject=x', { host: 'atlanta.example.com', params: { method: 'REGISTER' }, headers: { to: 'alice%40atlanta.example.com', Subject: 'x' } }],
    ['sip:+1-212-555-1212:1234@gateway.example.com;user=phone', { user: '+1-212-555-1212', password: '1234', params: { user: 'phone' } }],
    ['sip:host.example.com.', { host: 'host.example.com.' }],
    ['sip:a_b.example.com', { host: 'a_b.example.com' }],
    ['tel:+1-201-555-0123;ext=1234;phone-context=+1', { scheme: 'tel', user: '+1-201-555-0123', host: '', params: { ext: '1234', 'phone-context': '+1' } }],
    ['tel:7042;phone-context=example.com', { scheme: 'tel', user: '7042', params: { 'phone-context': 'example.com' } }],
    ['urn:service:sos', { scheme: 'urn', user: 'service:sos', host: '', params: {}, headers: {} }],
    ['soap.beep://192.0.2.103:3002', { scheme: 'soap.beep', user: '//192.0.2.103:3002', host: '' }],
  ])('parseUri(%j) returns its parts', (text, parts) => {
    const u = parseUri(text);
    expect(u).toMatchObject(parts);
    for (const key of ['user', 'password', 'port'] as const) {
      if (!(key in parts)) {
        expect(u![key], key).toBeUndefined();
      }
    }
  });

  it.each([
    'sip:2001:db8::10',
    'sip:user@2001:db8::10',
    'sip:[2001:db8::10',
    'sip:[2001:db8::zz]',
    'sip:[192.0.2.1]',
    'sip:user@',
    'sip:@example.com',
    'sip:',
    'sip:example.com:',
    'sip:example.com:65536',
    'sip:example.com:50x',
    'sip:-bad.example.com',
    'sip:a..b',
    'sip:us er@example.com',
    'sip:user@exa mple.com',
    'sip:%zzuser@example.com',
    'sip:user%4@example.com',
    'sip:example.com;;lr',
    'sip:example.com;=x',
    'sip:example.com?novalue',
    'sip:example.com?a=b&',
    'sip:a"b@example.com',
    'sip:<example.com>',
    'tel:',
    'tel:abc-xyz',
    'tel:+1;;x',
    '1sip:abc',
    ':abc',
    'nocolon',
    'urn:',
    'urn:a b',
    'urn:a<b>',
  ])('parseUri(%j) returns undefined', (text) => {
    expect(parseUri(text)).toBeUndefined();
  });

  it.each([
    'sip:alice@atlanta.example.com',
    'sips:alice:pw@example.com:5061;transport=tcp;lr',
    'sip:[2001:db8::10]:5070',
    'sip:[::ffff:192.0.2.2]',
    'sip:%61lice;x%3B=y@example.com;n%61me=v%61lue%25%34%31',
    'sip:a%3Bb%3Fc@example.com',
    'sip:example.com;method=REGISTER?to=a%40b&Subject=x',
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
    'tel:+1-201-555-0123;ext=1234',
    'urn:service:sos',
    'http://www.example.com/a?b=c#d',
  ])('formatUri(parseUri(%j)) gives the same text back', (text) => {
    expect(formatUri(parseUri(text)!)).toBe(text);
  });

  it('formatUri() brackets IPv6 hosts and writes the RFC 5118 §4.10 three-colon form with two colons', () => {
    expect(formatUri({ scheme: 'sip', host: '2001:db8::1', port: 5060, params: { lr: null }, headers: {} })).toBe('sip:[2001:db8::1]:5060;lr');
    expect(formatUri(parseUri('sip:user@[2001:db8:::192.0.2.1]')!)).toBe('sip:user@[2001:db8::192.0.2.1]');
  });

  it('parseUri() treats a parameter named __proto__ as a plain key', () => {
    const u = parseUri('sip:example.com;__proto__=x')!;
    expect(u.params['__proto__']).toBe('x');
    expect(Object.keys(u.params)).toEqual(['__proto__']);
  });
});

describe('parseNameAddr(), formatNameAddr() and getTag()', () => {
  it.each<[string, Record<string, unknown>]>([
    ['"Bob" <sip:b@x.example.com>;tag=1', { displayName: 'Bob', uri: 'sip:b@x.example.com', params: { tag: '1' } }],
    ['Bob Smith <sip:b@x.example.com>', { displayName: 'Bob Smith', uri: 'sip:b@x.example.com', params: {} }],
    ['<sip:b@x.example.com;transport=tcp>;EXPIRES=60;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"', { uri: 'sip:b@x.example.com;transport=tcp', params: { expires: '60', '+sip.instance': '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"' } }],
    ['sip:b@x.example.com;tag=1', { uri: 'sip:b@x.example.com', params: { tag: '1' } }],
    ['  sip:b@x.example.com  ;  tag = 1 ', { uri: 'sip:b@x.example.com', params: { tag: '1' } }],
    ['*', { uri: '*', params: {} }],
    ['"" <sip:b@x.example.com>', { displayName: '', uri: 'sip:b@x.example.com' }],
    ['"a \\"quoted\\" \\\\ name" <sip:b@x.example.com>', { displayName: 'a "quoted" \\ name' }],
    ['"Doe, John" <tel:+1-201-555-0123>', { displayName: 'Doe, John', uri: 'tel:+1-201-555-0123' }],
    ['J\u00fcrgen <sip:j@example.com>', { displayName: 'J\u00fcrgen' }],
    ['bob@example.com (mobile) <sip:bob@example.com>', { displayName: 'bob@example.com (mobile)', uri: 'sip:bob@example.com' }],
    ['<sip:b@x.example.com>;lr;received=[2001:db8::1]', { params: { lr: null, received: '[2001:db8::1]' } }],
  ])('parseNameAddr(%j) returns its parts', (text, parts) => {
    expect(parseNameAddr(text)).toMatchObject(parts);
  });

  it.each([
    '',
    '"unterminated <sip:b@x.example.com>',
    '"Bob" sip:b@x.example.com',
    'Bell, Alexander <sip:a@example.com>',
    '< sip:b@x.example.com >',
    '<sip:b@x.example.com',
    '<>',
    '<sip:2001:db8::1>',
    '<sip:b@x.example.com>;',
    '<sip:b@x.example.com>;;tag=1',
    '<sip:b@x.example.com>;tag=',
    '<sip:b@x.example.com>;tag="open',
    '<sip:b@x.example.com> garbage',
    '<sip:a@example.com>, <sip:b@example.com>',
    'sip:b@x.example.com?subject=x',
    'sip:a@example.com, sip:b@example.com',
    'not a uri',
  ])('parseNameAddr(%j) returns undefined', (text) => {
    expect(parseNameAddr(text)).toBeUndefined();
  });

  it('formatNameAddr() always uses <>, quotes display names when needed and round-trips parseNameAddr()', () => {
    expect(formatNameAddr({ uri: 'sip:b@example.com', params: { tag: '1' } })).toBe('<sip:b@example.com>;tag=1');
    expect(formatNameAddr({ displayName: 'Bob Smith', uri: 'sip:b@example.com', params: {} })).toBe('Bob Smith <sip:b@example.com>');
    expect(formatNameAddr({ displayName: 'Doe, John', uri: 'sip:b@example.com', params: { lr: null } })).toBe('"Doe, John" <sip:b@example.com>;lr');
    expect(formatNameAddr({ displayName: 'say "hi" \\o/', uri: 'sip:b@example.com', params: {} })).toBe('"say \\"hi\\" \\\\o/" <sip:b@example.com>');
    expect(formatNameAddr({ displayName: 'a\r\nb\x07', uri: 'sip:b@example.com', params: {} })).toBe('"a  b\\\x07" <sip:b@example.com>');
    expect(formatNameAddr({ uri: '*', params: {} })).toBe('*');
    for (const dn of ['J\u00fcrgen', ' padded ', 'two  spaces', 'tab\there', '<angle>', '', 'x;y=z', 'multi "quote" \\ back']) {
      const n = { displayName: dn, uri: 'sip:b@example.com', params: { tag: 'abc' } };
      expect(parseNameAddr(formatNameAddr(n))).toEqual(dn === '' ? { uri: n.uri, params: n.params } : n);
    }
  });

  it('getTag() returns the tag parameter, or undefined when absent, a flag or no value is given', () => {
    expect(getTag(parseNameAddr('<sip:a@example.com>;tag=xyz'))).toBe('xyz');
    expect(getTag(parseNameAddr('<sip:a@example.com>;tag'))).toBeUndefined();
    expect(getTag(parseNameAddr('<sip:a@example.com>'))).toBeUndefined();
    expect(getTag(undefined)).toBeUndefined();
  });
});

describe('parseVia() and formatVia()', () => {
  it('parseVia() reads IPv6 sent-by, received with and without brackets (RFC 5118 §4.5) and rport (RFC 3581)', () => {
    const [a, b, c] = parseVia(
      'SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bK1;received=[2001:db8::9:255];rport, SIP/2.0/TCP 192.0.2.1 : 5070 ;branch=z9hG4bK2;received=2001:db8::9:255;rport=5071, SIP/2.0/WSS h.example.com;maddr=[2001:db8::1];ttl=16;branch="quoted"',
    );
    expect(a).toEqual({ protocol: 'SIP/2.0', transport: 'UDP', host: '2001:db8::9:1', port: 5060, params: { branch: 'z9hG4bK1', received: '2001:db8::9:255', rport: null } });
    expect(b).toEqual({ protocol: 'SIP/2.0', transport: 'TCP', host: '192.0.2.1', port: 5070, params: { branch: 'z9hG4bK2', received: '2001:db8::9:255', rport: '5071' } });
    expect(c).toMatchObject({ transport: 'WSS', host: 'h.example.com', params: { maddr: '2001:db8::1', ttl: '16', branch: '"quoted"' } });
  });

  it.each([
    '',
    'SIP/2.0/UDP',
    'SIP/2.0 h.example.com',
    'SIP/2.0/UDPh.example.com',
    'SIP/2.0/UDP 2001:db8::1',
    'SIP/2.0/UDP [2001:db8::1',
    'SIP/2.0/UDP h.example.com:99999',
    'SIP/2.0/UDP h.example.com;;branch=x',
    'SIP/2.0/UDP h.example.com;branch=x,',
    'SIP/2.0/UDP h.example.com;rport=abc',
    'SIP/2.0/UDP h.example.com;received=[nonsense]',
    'SIP/2.0/UDP h.example.com garbage',
    'SIP/2.0/UDP h.example.com,,SIP/2.0/UDP i.example.com',
  ])('parseVia(%j) throws SipParseError "Bad Via"', (value) => {
    expect(() => parseVia(value)).toThrow(expect.objectContaining({ name: 'SipParseError', reason: 'Bad Via' }));
  });

  it('formatVia() brackets IPv6 hosts and maddr, writes received bare and round-trips parseVia()', () => {
    const v = parseVia('SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKabc;received=[2001:db8::2];rport=5060;maddr=[2001:db8::3]')[0]!;
    expect(formatVia(v)).toBe('SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKabc;received=2001:db8::2;rport=5060;maddr=[2001:db8::3]');
    expect(parseVia(formatVia(v))).toEqual([v]);
    expect(formatVia({ protocol: 'SIP/2.0', transport: 'TLS', host: 'h.example.com', params: { branch: 'z9hG4bK1', rport: null } })).toBe('SIP/2.0/TLS h.example.com;branch=z9hG4bK1;rport');
  });
});
