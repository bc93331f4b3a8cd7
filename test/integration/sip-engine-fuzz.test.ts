/**
 * Mutation fuzzing of the whole engine over real sockets: mutated SIP messages (requests,
 * responses, in-dialog requests, CANCELs, loose-routed requests) go to a running engine with an
 * srf app attached. The engine must not crash, must not log an internal failure, and must still
 * complete a clean call afterwards.
 *
 * Runs per transport: FUZZ_RUNS (default 1500). Long run:
 *   FUZZ_RUNS=100000 npx vitest run --config .config/vitest.config.ts test/integration/sip-engine-fuzz.test.ts
 */
import dgram from 'node:dgram';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EngineFixture, sdp, startEngine } from '../helpers/engine.js';
import { captureLogger } from '../helpers/env.js';
import { runSipp } from '../helpers/sipp.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);

function seeds(port: number): string[] {
  const base = (method: string, extra: string[] = [], toTag = '', body = '') =>
    [
      `${method} sip:svc@127.0.0.1:${port} SIP/2.0`,
      'Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfuzz;rport',
      'Max-Forwards: 70',
      'From: "Fuzz" <sip:fuzz@127.0.0.1>;tag=ft1',
      `To: <sip:svc@127.0.0.1>${toTag}`,
      'Call-ID: fuzz-call@127.0.0.1',
      `CSeq: 7 ${method}`,
      'Contact: <sip:fuzz@127.0.0.1:5999>',
      ...extra,
      body ? 'Content-Type: application/sdp' : '',
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ]
      .filter((l, i, a) => l !== '' || i >= a.length - 2)
      .join('\r\n');

  return [
    base('INVITE', ['Supported: 100rel, timer', 'Session-Expires: 1800'], '', sdp(5000)),
    base('OPTIONS'),
    base('REGISTER', ['Expires: 3600']),
    base('BYE', [], ';tag=abc'),
    base('INFO', [], ';tag=abc', 'Signal=1'),
    base('CANCEL'),
    base('ACK', [], ';tag=abc'),
    base('PRACK', ['RAck: 1 7 INVITE'], ';tag=abc'),
    base('UPDATE', [], ';tag=abc', sdp(5002)),
    base('BYE', [`Route: <sip:127.0.0.1:${port};lr>`, 'Route: <sip:127.0.0.1:9;lr>'], ';tag=xyz'),
    base('MESSAGE', [], '', 'hi'),
    base('SUBSCRIBE', ['Event: presence', 'Expires: 60']),
    'SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnone\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n',
    'SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnone\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nRSeq: 1\r\nContent-Length: 0\r\n\r\n',
  ];
}

let counter = 0;
/** A fresh branch and Call-ID per message, so that each one starts its own transaction. */
function unique(seed: string): string {
  counter++;

  return seed.replace(/z9hG4bK(fuzz|none)/g, `z9hG4bK$1${counter}`).replace(/fuzz-call@/g, `fuzz-call-${counter}@`);
}

/** Mutations that keep messages close enough to SIP to reach deep code paths. */
function mutation(): fc.Arbitrary<(s: string) => string> {
  const lineOp = fc.oneof(
    fc.constant((lines: string[], i: number) => lines.splice(i, 1)),
    fc.constant((lines: string[], i: number) => lines.splice(i, 0, lines[i] ?? '')),
    fc.record({ v: fc.string({ maxLength: 40 }) }).map(({ v }) => (lines: string[], i: number) => (lines[i] = `${(lines[i] ?? '').split(':')[0]}: ${v}`)),
    fc.constantFrom('Content-Length: 99999', 'Content-Length: -1', 'CSeq: 4294967296 INVITE', 'Max-Forwards: 0', 'To: <sip:x@y>;tag=', 'Via: SIP/2.0/TCP [::1]:0;branch=z9hG4bK', 'Route: <sip:127.0.0.1;lr>', 'Contact: *', 'Require: 100rel', 'l: 3', 'v: garbage', 'i: ', 'CSeq: 7 CANCEL', 'Expires: -5', 'RAck: x y z').map(
      (h) => (lines: string[], i: number) => lines.splice(i, 0, h),
    ),
  );
  const byteOp = fc.record({ pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }).map(({ pos, byte }) => (s: string) => {
    const b = Buffer.from(s);
    if (b.length > 0) {
      b[pos % b.length] = byte;
    }

    return b.toString('latin1');
  });

  return fc.oneof(
    fc.tuple(lineOp, fc.nat()).map(([op, i]) => (s: string) => {
      const [head = '', body = ''] = s.split('\r\n\r\n');
      const lines = head.split('\r\n');
      op(lines, 1 + (i % Math.max(1, lines.length - 1)));

      return `${lines.join('\r\n')}\r\n\r\n${body}`;
    }),
    byteOp,
    fc.nat().map((n) => (s: string) => s.slice(0, n % (s.length + 1))),
    fc.constantFrom((s: string) => s.replace(/\r\n/g, '\n'), (s: string) => s.replace(/^\w+/, 'FOO'), (s: string) => s.repeat(2), (s: string) => s.replace('SIP/2.0', 'SIP/3.0')),
  );
}

describe('engine under mutated input', () => {
  let fx: EngineFixture;
  const { logger, lines } = captureLogger('error');
  let answerMode: 'random' | 'reject' = 'random';

  beforeAll(async () => {
    fx = await startEngine({ logger, timers: { t1Ms: 50 } });
    fx.srf.invite((req, res) => {
      if (answerMode === 'reject' || Math.random() < 0.5) {
        res.send(486);
      } else {
        void fx.srf.createUAS(req, res, { localSdp: sdp() }).catch(() => undefined);
      }
    });
    fx.srf.use('options', (_req, res) => res.send(200));
    fx.srf.use('register', (_req, res) => res.send(401, { headers: { 'WWW-Authenticate': 'Digest realm="x", nonce="1"' } }));
    fx.srf.use('message', (_req, res) => res.send(202));
    fx.srf.use('subscribe', (_req, res) => res.send(489));
  });

  afterAll(async () => {
    await fx.close();
  });

  it(`survives ${RUNS} mutated datagrams`, async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    sock.on('message', () => undefined);
    const port = fx.port('udp');
    const pool = seeds(port);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: pool.length - 1 }), fc.array(mutation(), { minLength: 1, maxLength: 3 }), async (seed, muts) => {
        const text = muts.reduce((s, m) => m(s), unique(pool[seed]!));
        await new Promise<void>((resolve) => sock.send(Buffer.from(text, 'latin1'), port, '127.0.0.1', () => resolve()));
        // the engine shares this event loop: let it read the datagram before the next one, or the
        // socket buffer overflows and the run measures the kernel instead of the engine
        await new Promise((r) => setImmediate(r));
      }),
      { numRuns: RUNS },
    );
    sock.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(lines().filter((l) => l.level === 'error'), JSON.stringify(lines().slice(0, 3))).toEqual([]);
    // the mutations must not all die in the parser: a good share reaches the core and the app
    const stats = fx.engine.stats();
    const delivered = Object.values(stats.counters.requestsIn).reduce((a, b) => a + b, 0);
    if (process.env.FUZZ_VERBOSE) {
      console.log(JSON.stringify(stats));
    }
    expect(delivered).toBeGreaterThan(RUNS / 10);
    expect(stats.transport.rejected + stats.transport.dropped).toBeGreaterThan(RUNS / 20);
  }, 120_000);

  it(`survives ${RUNS} mutated messages on TCP connections`, async () => {
    const port = fx.port('tcp');
    const pool = seeds(port).map((s) => s.replace(/SIP\/2\.0\/UDP/g, 'SIP/2.0/TCP'));
    let sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => undefined);
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: pool.length - 1 }), fc.array(mutation(), { minLength: 1, maxLength: 3 }), async (seed, muts) => {
        if (sock.destroyed) {
          sock = net.connect(port, '127.0.0.1');
          sock.on('error', () => undefined);
          await new Promise((r) => sock.once('connect', r));
        }
        const text = muts.reduce((s, m) => m(s), unique(pool[seed]!));
        sock.write(Buffer.from(text, 'latin1'));
        await new Promise((r) => setImmediate(r));
      }),
      { numRuns: RUNS },
    );
    sock.destroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(lines().filter((l) => l.level === 'error'), JSON.stringify(lines().slice(0, 3))).toEqual([]);
  }, 120_000);

  it('still completes a clean call afterwards', async () => {
    answerMode = 'reject';
    const r = await runSipp({ scenario: 'uac-expect-486', target: fx.target('udp') });
    expect(r.exitCode, r.describe()).toBe(0);
  }, 60_000);
});
