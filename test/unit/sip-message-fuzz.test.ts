/**
 * Property-based fuzzing of the SIP message layer with fast-check.
 *
 * 1. Mutation fuzz: valid seed messages (the RFC 5118 fixtures and a few INVITE/REGISTER/200 OK
 *    texts) get random byte flips, insertions, deletions, duplications, truncations, line-end
 *    injections and line duplications/removals/moves; parseMessage() must either return a message whose toBuffer() parses again (to
 *    the same bytes), or throw SipParseError, never anything else.
 * 2. Generated well-formed messages (random header sets and order, display names with quotes and
 *    escapes, IPv6 hosts, compact and oddly cased names, whitespace around ':', folding, LF or
 *    CRLF) must parse, say what was generated, and round-trip: parse(toBuffer(parse(x))) equals
 *    parse(x) in method, URI, status, reason, header names and values, and body.
 *
 * Runs per property: FUZZ_RUNS (default 2000: about 3 s of test time on an idle 2-core machine,
 * 6 s when it is busy with the rest of the suite). The long run (5 to 8 minutes on 2 cores):
 *
 *   FUZZ_RUNS=200000 npx vitest run --config .config/vitest.config.ts test/unit/sip-message-fuzz.test.ts
 *
 * FUZZ_SEED=<n> replays the runs of a seed that fast-check reported. A counterexample found here
 * becomes a named regression test in sip-message.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatNameAddr,
  formatUri,
  getTag,
  parseMessage,
  type SipMessage,
  SipParseError,
  type SipUri,
} from '../../src/sip/engine/message.js';
import { projectRoot } from '../../src/util/paths.js';

const DEFAULT_RUNS = 2000;
const RUNS = Math.max(1, Number(process.env.FUZZ_RUNS ?? DEFAULT_RUNS) || DEFAULT_RUNS);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
/** Generous: about 20 ms per run and property on a slow machine, never below 30 s. */
const TIMEOUT_MS = Math.max(30_000, RUNS * 20);

const FIXTURES = path.join(projectRoot(), 'test', 'fixtures', 'rfc5118');

function crlf(lines: string[], body = ''): string {
  return lines.join('\r\n') + '\r\n\r\n' + body;
}

const SDP = 'v=0\r\no=alice 2890844526 2890844526 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n';

const TEXT_SEEDS = [
  crlf(
    [
      'INVITE sip:+4930123456@gw.example.com;user=phone SIP/2.0',
      'Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK776asdhds;rport',
      'v: SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK1;received=192.0.2.8, SIP/2.0/TLS p.example.com;branch=z9hG4bK2',
      'Max-Forwards: 70',
      'To: "Bob \\"B\\" Smith" <sip:bob@biloxi.example.com>',
      'f: Alice <sip:alice@atlanta.example.com>;tag=1928301774',
      'Call-ID: a84b4c76e66710@pc33.atlanta.example.com',
      'CSeq: 314159 INVITE',
      'Contact: <sip:alice@[2001:db8::1]:5060;transport=tcp>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"',
      'Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>',
      'Subject: J\u00fcrgen \u6771\u4eac',
      'Content-Type: application/sdp',
      `Content-Length: ${Buffer.byteLength(SDP)}`,
    ],
    SDP,
  ),
  crlf([
    'REGISTER sips:registrar.example.com SIP/2.0',
    'Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKnashds7',
    'Max-Forwards: 70',
    'To: Bob <sips:bob@example.com>',
    'From: Bob <sips:bob@example.com>;tag=a73kszlfl',
    'i: 1j9FpLxk3uxtm8tn@example.com',
    'CSeq: 1 REGISTER',
    'm: <sip:%62ob@192.0.2.4;ob>;expires=7200, *',
    'Supported: path, outbound, gruu',
    'l: 0',
  ]),
  crlf(
    [
      'SIP/2.0 200 OK \u0442\u0435\u0441\u0442',
      'Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bKnashds8;received=[2001:db8::9:255]',
      'To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf',
      'From: Alice <sip:alice@atlanta.example.com>;tag=1928301774',
      'Call-ID: a84b4c76e66710',
      'CSeq: 314159 INVITE',
      'Contact: <sip:bob@192.0.2.4>',
      'Record-Route: <sip:p1.example.com;lr>',
      'Content-Type: multipart/mixed;boundary=b1',
      'Content-Length: 40',
    ],
    '--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--',
  ),
  crlf([
    'OPTIONS sip:user@example.com SIP/2.0',
    'TO :',
    ' sip:user@example.com ;   tag    = 1918181833n',
    'from   : "J R \\\\\\""  <sip:j@example.com>',
    '  ;',
    '  tag = 98asjd8',
    'CaLl-Id',
    ' : wsinv.ndaksdj@192.0.2.1',
    'cseq: 0009',
    '  OPTIONS',
    'Via  : SIP  /   2.0',
    ' /UDP',
    '    192.0.2.2;branch=390skdjuw',
    's :',
    'Content-Length: 0',
  ]),
];

function loadSeeds(): Buffer[] {
  const seeds = TEXT_SEEDS.map((t) => Buffer.from(t, 'utf8'));
  for (const dir of [FIXTURES, path.join(FIXTURES, 'wire')]) {
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.sip')).sort()) {
      seeds.push(fs.readFileSync(path.join(dir, f)));
    }
  }

  return seeds;
}

const SEEDS = loadSeeds();

/** Pieces worth inserting: delimiters of the SIP grammar and bytes that break UTF-8. */
const PIECES = [
  '\r\n', '\n', '\r', '\r\n ', '\r\n\t', '\r\n\r\n', ' ', '\t', ':', ';', ',', '"', '\\', '<', '>', '@', '[', ']', '=', '%', '%0', '?', '&',
  '/', '*', '::', ':::', 'SIP/2.0', 'sip:', 'tel:', '0', '-1', '4294967296', '99999999999999999999', 'Via: SIP/2.0/UDP h;branch=z9hG4bKx',
  'Content-Length: 5', 'l: 99', 'i: other', 'CSeq: 1 BYE', '\u00e9', '\u{1F600}', '\x00', '\x7f', '\xff', '\xc3',
].map((p) => (p === '\xff' || p === '\xc3' ? Buffer.from([p.charCodeAt(0)]) : Buffer.from(p, 'utf8')));

type MutationKind = 'flip' | 'set' | 'insert' | 'delete' | 'duplicate' | 'truncate' | 'random' | 'dupLine' | 'dropLine' | 'moveLine';

interface Mutation {
  kind: MutationKind;
  pos: number;
  len: number;
  at: number;
  bit: number;
  piece: number;
  bytes: Uint8Array;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom<MutationKind>('flip', 'set', 'insert', 'insert', 'delete', 'duplicate', 'truncate', 'random', 'dupLine', 'dropLine', 'moveLine'),
  pos: fc.nat(),
  len: fc.integer({ min: 1, max: 64 }),
  at: fc.nat(),
  bit: fc.nat(7),
  piece: fc.nat(PIECES.length - 1),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
});

/** [start, end) of each line (LF included) in b. */
function lineSpans(b: Buffer): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  let start = 0;
  for (let lf = b.indexOf(0x0a); lf >= 0; lf = b.indexOf(0x0a, start)) {
    spans.push([start, lf + 1]);
    start = lf + 1;
  }
  if (start < b.length) {
    spans.push([start, b.length]);
  }

  return spans;
}

/** Line-level edits: duplicate a line (a repeated header), drop one, or move one elsewhere. */
function mutateLines(b: Buffer, m: Mutation): Buffer {
  const spans = lineSpans(b);
  if (spans.length === 0) {
    return b;
  }
  const [s, e] = spans[m.pos % spans.length]!;
  const [to] = spans[m.at % spans.length]!;
  const line = Buffer.from(b.subarray(s, e));
  if (m.kind === 'dupLine') {
    return Buffer.concat([b.subarray(0, to), line, b.subarray(to)]);
  }
  const rest = Buffer.concat([b.subarray(0, s), b.subarray(e)]);
  if (m.kind === 'dropLine') {
    return rest;
  }
  const at = Math.min(to, rest.length);

  return Buffer.concat([rest.subarray(0, at), line, rest.subarray(at)]);
}

function mutate(seed: Buffer, mutations: Mutation[]): Buffer {
  let b: Buffer = Buffer.from(seed);
  for (const m of mutations) {
    const pos = m.pos % (b.length + 1);
    const at = m.at % (b.length + 1);
    switch (m.kind) {
      case 'flip':
        if (pos < b.length) {
          b[pos]! ^= 1 << m.bit;
        }
        break;
      case 'set':
        if (pos < b.length) {
          b[pos] = PIECES[m.piece]![0]!;
        }
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, pos), PIECES[m.piece]!, b.subarray(pos)]);
        break;
      case 'random':
        b = Buffer.concat([b.subarray(0, pos), m.bytes, b.subarray(pos)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + m.len)]);
        break;
      case 'duplicate': {
        const chunk = Buffer.from(b.subarray(pos, pos + m.len));
        b = Buffer.concat([b.subarray(0, at), chunk, b.subarray(at)]);
        break;
      }
      case 'truncate':
        b = b.subarray(0, pos);
        break;
      default:
        b = mutateLines(b, m);
    }
  }

  return b;
}

/** Mostly one or two edits (so that some messages stay valid), sometimes up to eight. */
const mutationsArb = fc.oneof(fc.array(mutationArb, { minLength: 1, maxLength: 2 }), fc.array(mutationArb, { minLength: 1, maxLength: 8 }));

function fcParams(): fc.Parameters<unknown> {
  return SEED === undefined ? { numRuns: RUNS } : { numRuns: RUNS, seed: SEED };
}

describe('parseMessage() under mutation fuzzing', () => {
  it(
    `parseMessage() returns a re-parseable message or throws SipParseError for ${RUNS} mutated messages`,
    () => {
      const stats = { accepted: 0, rejected: 0, partial: 0 };
      const t0 = performance.now();
      fc.assert(
        fc.property(fc.nat(SEEDS.length - 1), mutationsArb, (seedIndex, mutations) => {
          const data = mutate(SEEDS[seedIndex]!, mutations);
          for (const datagram of [false, true]) {
            let msg: SipMessage;
            try {
              msg = parseMessage(data, { datagram });
            } catch (err) {
              if (!(err instanceof SipParseError) || err.reason === 'Internal parser error') {
                throw err;
              }
              stats.rejected++;
              if (err.partial) {
                // The caller builds a 400 from it: its Via list must read and it must serialise.
                stats.partial++;
                expect(err.partial.isRequest).toBe(true);
                expect(err.partial.vias.length).toBeGreaterThan(0);
                err.partial.toBuffer();
              }
              continue;
            }
            stats.accepted++;
            const out = msg.toBuffer();
            const again = parseMessage(out, { datagram });
            expect(again.toBuffer().equals(out)).toBe(true);
          }
        }),
        fcParams(),
      );
      const seconds = (performance.now() - t0) / 1000;
      console.log(
        `[fuzz] mutation: ${RUNS} runs (x2 framings) in ${seconds.toFixed(2)} s = ${Math.round(RUNS / seconds)} runs/s; ` +
          `accepted ${stats.accepted}, rejected ${stats.rejected} (${stats.partial} with partial)`,
      );
      expect(stats.accepted).toBeGreaterThan(0);
      expect(stats.rejected).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});

// ---- generated well-formed messages ------------------------------------------------------------

const ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const chars = (s: string): fc.Arbitrary<string> => fc.constantFrom(...s.split(''));
const TOKEN_CHARS = ALNUM + "-.!%*_+`'~";
const token = (max = 12): fc.Arbitrary<string> => fc.string({ unit: chars(TOKEN_CHARS), minLength: 1, maxLength: max });
const escaped = fc.constantFrom('%20', '%3B', '%3F', '%40', '%61', '%00', '%25', '%E2%82%AC');
const userArb = fc.string({ unit: fc.oneof(chars(ALNUM + "-_.!~*'()&=+$,;?/"), escaped), minLength: 1, maxLength: 12 });
const passwordArb = fc.string({ unit: fc.oneof(chars(ALNUM + "-_.!~*'()&=+$,"), escaped), maxLength: 8 });
const paramChars = fc.oneof(chars(ALNUM + "-_.!~*'()[]/:&+$"), escaped);
const paramArb = fc.tuple(fc.string({ unit: paramChars, minLength: 1, maxLength: 8 }), fc.option(fc.string({ unit: paramChars, minLength: 1, maxLength: 8 })));
const hnvChars = fc.oneof(chars(ALNUM + "-_.!~*'()[]/?:+$"), escaped);
const hostArb = fc.oneof(fc.domain(), fc.ipV4(), fc.ipV6());

const sipUriArb: fc.Arbitrary<SipUri> = fc
  .record({
    scheme: fc.constantFrom('sip', 'sips'),
    user: fc.option(userArb, { nil: undefined }),
    password: fc.option(passwordArb, { nil: undefined }),
    host: hostArb,
    port: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
    params: fc.array(paramArb, { maxLength: 3 }),
    headers: fc.array(fc.tuple(fc.string({ unit: hnvChars, minLength: 1, maxLength: 6 }), fc.string({ unit: hnvChars, maxLength: 6 })), { maxLength: 2 }),
  })
  .map((r) => {
    const u: SipUri = { scheme: r.scheme, host: r.host, params: {}, headers: {} };
    if (r.user !== undefined) {
      u.user = r.user;
      if (r.password !== undefined) {
        u.password = r.password;
      }
    }
    if (r.port !== undefined) {
      u.port = r.port;
    }
    for (const [k, v] of r.params) {
      u.params[k] = v;
    }
    for (const [k, v] of r.headers) {
      u.headers[k] = v;
    }

    return u;
  });

const uriTextArb = fc.oneof(
  { weight: 6, arbitrary: sipUriArb.map(formatUri) },
  { weight: 1, arbitrary: fc.constantFrom('tel:+1-201-555-0123;ext=1234', 'tel:7042;phone-context=example.com', 'urn:service:sos', 'http://www.example.com/a?b=c') },
);

/** Display names that need quoting and escaping, and plain ones. */
const displayNameArb = fc.oneof(
  token(10),
  fc.array(token(6), { minLength: 1, maxLength: 3 }).map((w) => w.join(' ')),
  fc.string({
    unit: fc.oneof(chars('"\\,<>;:@ \t\x00\x07\x7f'), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 })),
    maxLength: 16,
  }).map((s) => s.replace(/[\r\n]/g, '')),
);

/** Linear whitespace between elements; `mandatory` excludes the empty string. */
function lwsArb(eol: string, mandatory: boolean): fc.Arbitrary<string> {
  const options = [' ', '  ', '\t', `${eol} `, `${eol}\t`, ` ${eol}  `];

  return fc.constantFrom(...(mandatory ? options : ['', '', ...options]));
}

/** Joins chunks with whitespace from the given arbitrary. */
function joined(chunks: string[], sep: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.array(sep, { minLength: Math.max(0, chunks.length - 1), maxLength: Math.max(0, chunks.length - 1) }).map((seps) => chunks.reduce((acc, c, i) => (i === 0 ? c : acc + seps[i - 1]! + c), ''));
}

interface NameAddrGen {
  displayName: string | undefined;
  uri: string;
  tag: string | undefined;
  text: (eol: string) => fc.Arbitrary<string>;
}

const nameAddrArb: fc.Arbitrary<NameAddrGen> = fc
  .record({ displayName: fc.option(displayNameArb, { nil: undefined }), uri: uriTextArb, tag: fc.option(token(10), { nil: undefined }), extra: fc.array(fc.tuple(token(6), fc.option(token(6))), { maxLength: 2 }) })
  .map((r) => {
    const params = [...(r.tag !== undefined ? [`;tag=${r.tag}`] : []), ...r.extra.filter(([k]) => k.toLowerCase() !== 'tag').map(([k, v]) => (v === null ? `;${k}` : `;${k}=${v}`))];
    const head = formatNameAddr({ uri: r.uri, params: {}, ...(r.displayName !== undefined ? { displayName: r.displayName } : {}) });
    const lt = head.lastIndexOf('<');
    const dn = head.slice(0, lt).trimEnd();

    return {
      displayName: r.displayName === '' ? undefined : r.displayName,
      uri: r.uri,
      tag: r.tag,
      text: (eol: string) => joined([...(dn ? [dn] : []), head.slice(lt), ...params], lwsArb(eol, false)),
    };
  });

interface ViaGen {
  host: string;
  text: (eol: string) => fc.Arbitrary<string>;
}

const viaArb: fc.Arbitrary<ViaGen> = fc
  .record({
    transport: fc.constantFrom('UDP', 'TCP', 'TLS', 'WS', 'WSS', 'SCTP', 'udp', 'tls'),
    host: hostArb,
    port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    branch: token(16),
    received: fc.option(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV6().map((a) => `[${a}]`)), { nil: undefined }),
    rport: fc.option(fc.option(fc.integer({ min: 1, max: 65535 })), { nil: undefined }),
  })
  .map((r) => {
    const hostText = r.host.includes(':') ? `[${r.host}]` : r.host;
    const params = [`;branch=z9hG4bK${r.branch}`];
    if (r.received !== undefined) {
      params.push(`;received=${r.received}`);
    }
    if (r.rport !== undefined) {
      params.push(r.rport === null ? ';rport' : `;rport=${r.rport}`);
    }

    return {
      host: r.host,
      text: (eol: string) =>
        fc
          .tuple(lwsArb(eol, true), joined([hostText + (r.port !== undefined ? `:${r.port}` : ''), ...params], lwsArb(eol, false)))
          .map(([sp, rest]) => `SIP/2.0/${r.transport}${sp}${rest}`),
    };
  });

const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'SUBSCRIBE', 'NOTIFY', 'REFER', 'MESSAGE', 'INFO', 'PRACK', 'UPDATE', 'PUBLISH'];
const methodArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...METHODS) }, { weight: 1, arbitrary: token(12) });
const wordArb = fc.string({ unit: chars(TOKEN_CHARS + '()<>:\\"/[]?{}'), minLength: 1, maxLength: 20 });
const callIdArb = fc.tuple(wordArb, fc.option(wordArb, { nil: undefined })).map(([a, b]) => (b === undefined ? a : `${a}@${b}`));
const textArb = fc.string({ unit: fc.oneof(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }), chars(' \t,;"<>')), maxLength: 24 }).map((s) => s.replace(/[\r\n]/g, ''));

interface Generated {
  data: Buffer;
  isRequest: boolean;
  method: string;
  uri: string;
  status: number;
  callId: string;
  seq: number;
  cseqMethod: string;
  from: NameAddrGen;
  to: NameAddrGen;
  vias: ViaGen[];
  body: Buffer;
}

/** How a header name is written: full, lower, upper, random case or compact. */
function nameForms(full: string, compact?: string): fc.Arbitrary<string> {
  return fc.oneof(fc.constantFrom(full, full.toLowerCase(), full.toUpperCase(), ...(compact ? [compact, compact.toUpperCase()] : [])), fc.mixedCase(fc.constant(full)));
}

const messageArb: fc.Arbitrary<Generated> = fc
  .record({
    isRequest: fc.boolean(),
    method: methodArb,
    uri: uriTextArb,
    status: fc.integer({ min: 100, max: 699 }),
    reason: textArb,
    callId: callIdArb,
    seq: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    cseqMethod: methodArb,
    from: nameAddrArb,
    to: nameAddrArb,
    vias: fc.array(viaArb, { minLength: 1, maxLength: 4 }),
    viaLines: fc.integer({ min: 1, max: 4 }),
    maxForwards: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    contacts: fc.array(nameAddrArb, { maxLength: 2 }),
    supported: fc.array(token(8), { maxLength: 4 }),
    subject: fc.option(textArb, { nil: undefined }),
    unknown: fc.array(fc.tuple(token(10), textArb), { maxLength: 3 }),
    body: fc.oneof(fc.uint8Array({ maxLength: 48 }).map((a) => Buffer.from(a)), textArb.map((t) => Buffer.from(t, 'utf8'))),
    contentLength: fc.constantFrom('full', 'compact', 'absent'),
    eol: fc.constantFrom('\r\n', '\r\n', '\n'),
    leading: fc.constantFrom('', '', '\r\n', '\r\n\r\n'),
    order: fc.array(fc.nat(), { minLength: 16, maxLength: 16 }),
  })
  .chain((g) => {
    const eol = g.eol;
    const perVia = Math.ceil(g.vias.length / g.viaLines);
    const viaGroups: ViaGen[][] = [];
    for (let i = 0; i < g.vias.length; i += perVia) {
      viaGroups.push(g.vias.slice(i, i + perVia));
    }
    const listSep = fc.tuple(lwsArb(eol, false), lwsArb(eol, false)).map(([a, b]) => `${a},${b}`);
    const sep = fc.tuple(fc.constantFrom('', ' ', '\t', '  '), fc.constantFrom('', ' ', '\t', `${eol} `, `  `)).map(([a, b]) => `${a}:${b}`);
    const header = (name: fc.Arbitrary<string>, value: fc.Arbitrary<string>): fc.Arbitrary<string> => fc.tuple(name, sep, value).map(([n, s, v]) => n + s + v);
    const listOf = (parts: fc.Arbitrary<string>[]): fc.Arbitrary<string> =>
      fc.tuple(fc.tuple(...parts), fc.array(listSep, { minLength: parts.length, maxLength: parts.length })).map(([vs, seps]) => vs.reduce((acc, v, i) => (i === 0 ? v : acc + seps[i]! + v), ''));
    const cseqMethod = g.isRequest ? g.method : g.cseqMethod;
    const headers: fc.Arbitrary<string>[] = [
      ...viaGroups.map((group) => header(nameForms('Via', 'v'), listOf(group.map((v) => v.text(eol))))),
      header(nameForms('From', 'f'), g.from.text(eol)),
      header(nameForms('To', 't'), g.to.text(eol)),
      header(nameForms('Call-ID', 'i'), fc.constant(g.callId)),
      header(nameForms('CSeq'), joined([String(g.seq), cseqMethod], lwsArb(eol, true))),
    ];
    if (g.maxForwards !== undefined) {
      headers.push(header(nameForms('Max-Forwards'), fc.constant(String(g.maxForwards))));
    }
    if (g.contacts.length > 0) {
      headers.push(header(nameForms('Contact', 'm'), listOf(g.contacts.map((c) => c.text(eol)))));
    }
    if (g.supported.length > 0) {
      headers.push(header(nameForms('Supported', 'k'), fc.constant(g.supported.join(', '))));
    }
    if (g.subject !== undefined) {
      headers.push(header(nameForms('Subject', 's'), fc.constant(g.subject)));
    }
    for (const [name, value] of g.unknown) {
      headers.push(header(fc.constant(`X-${name}`), fc.constant(value)));
    }
    if (g.contentLength !== 'absent') {
      headers.push(header(fc.constant(g.contentLength === 'full' ? 'Content-Length' : 'l'), fc.constant(String(g.body.length))));
    }

    return fc.tuple(...headers).map((lines) => {
      // Shuffle deterministically from the generated order keys; Via lines keep their relative order.
      const keyed = lines.map((line, i) => ({ line, key: i < viaGroups.length ? -1 : g.order[i % g.order.length]!, i }));
      keyed.sort((a, b) => a.key - b.key || a.i - b.i);
      const start = g.isRequest ? `${g.method} ${g.uri} SIP/2.0` : `SIP/2.0 ${g.status} ${g.reason}`;
      const head = g.leading + [start, ...keyed.map((k) => k.line)].join(eol) + eol + eol;
      const gen: Generated = {
        data: Buffer.concat([Buffer.from(head, 'utf8'), g.body]),
        isRequest: g.isRequest,
        method: g.method,
        uri: g.uri,
        status: g.status,
        callId: g.callId,
        seq: g.seq,
        cseqMethod,
        from: g.from,
        to: g.to,
        vias: g.vias,
        body: g.body,
      };

      return gen;
    });
  });

function withoutLength(m: SipMessage): Array<{ name: string; value: string }> {
  return m.headers.filter((h) => !/^(content-length|l)$/i.test(h.name));
}

describe('parseMessage() on generated well-formed messages', () => {
  it(
    `parseMessage() accepts ${RUNS} generated messages and parse(toBuffer(parse(x))) equals parse(x)`,
    () => {
      const t0 = performance.now();
      fc.assert(
        fc.property(messageArb, (g) => {
          let m1: SipMessage;
          try {
            m1 = parseMessage(g.data);
          } catch (err) {
            throw new Error(`rejected (${err instanceof SipParseError ? err.reason : String(err)}):\n${g.data.toString('utf8')}`, { cause: err });
          }
          expect(m1.isRequest).toBe(g.isRequest);
          if (g.isRequest) {
            expect(m1.method).toBe(g.method);
            expect(m1.uri).toBe(g.uri);
          } else {
            expect(m1.status).toBe(g.status);
          }
          expect(m1.callId).toBe(g.callId);
          expect(m1.cseq).toEqual({ seq: g.seq, method: g.cseqMethod });
          expect(m1.from?.displayName).toBe(g.from.displayName);
          expect(m1.from?.uri).toBe(g.from.uri);
          expect(getTag(m1.from)).toBe(g.from.tag);
          expect(m1.to?.displayName).toBe(g.to.displayName);
          expect(getTag(m1.to)).toBe(g.to.tag);
          expect(m1.vias.map((v) => v.host)).toEqual(g.vias.map((v) => v.host));
          expect(m1.body.equals(g.body)).toBe(true);

          const m2 = parseMessage(m1.toBuffer());
          expect([m2.isRequest, m2.method, m2.uri, m2.status, m2.reason]).toEqual([m1.isRequest, m1.method, m1.uri, m1.status, m1.reason]);
          expect(withoutLength(m2)).toEqual(withoutLength(m1));
          expect(m2.contentLengthHeader).toBe(m1.body.length);
          expect(m2.body.equals(m1.body)).toBe(true);
        }),
        fcParams(),
      );
      const seconds = (performance.now() - t0) / 1000;
      console.log(`[fuzz] generated: ${RUNS} runs in ${seconds.toFixed(2)} s = ${Math.round(RUNS / seconds)} runs/s`);
    },
    TIMEOUT_MS,
  );
});
