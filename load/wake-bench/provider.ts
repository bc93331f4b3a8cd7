/**
 * The wake benchmark's APNs: a local HTTP/2 server (TLS, token auth) that runs as its own process
 * (`node dist/load/wake-bench/provider.js ...`), so that neither the gateway nor the benchmark's
 * runner shares its event loop, and that time-stamps every push the moment its HEADERS frame
 * reaches Node (the `stream` event, before the body, the JWT check or the answer).
 *
 * It follows the APNs contract the gateway's adapter is tested against
 * (test/helpers/push-servers/apns.ts, push-channels.md §1), reduced to what a benchmark needs:
 * `POST /3/device/<hex token>`, `authorization: bearer <ES256 JWT>` with the team's key id and
 * issuer (each distinct JWT is verified once: node-apn reuses one for 55 min), `apns-topic`
 * ending `.voip` exactly when `apns-push-type` is `voip`, a JSON body; then 200 with an
 * `apns-id`, after `--latency-ms` (the provider's own answer time, which sets how many pushes the
 * gateway keeps in flight). Anything else gets APNs' 400/403/404 answer and is recorded as such.
 * `--failure-rate F` answers that share (0..1, at random) of otherwise valid pushes with APNs' 503
 * `ServiceUnavailable`, as a provider under trouble does.
 *
 * Clock: time stamps are CLOCK_REALTIME in microseconds, the clock sipp's -trace_shortmsg uses
 * (gettimeofday), taken as `performance.now()` (CLOCK_MONOTONIC, which NTP slews like the real-time
 * clock but never steps) plus an offset calibrated against `Date.now()` at start: the loop waits for
 * `Date.now()` to tick over, which pins the offset to a few microseconds. The same calibration at
 * the end gives the drift between the two clocks over the run (`clockDriftUs`), and the stamps are
 * corrected linearly between the two calibrations.
 *
 * Output: `listening <port>` on stdout once ready. On SIGTERM it writes every record as JSON to
 * `--out` and exits 0.
 *
 * `--keylog FILE` appends the TLS session secrets (NSS key-log format) for tshark to decrypt a capture.
 *
 * Usage: node provider.js --cert FILE --key FILE --team ID --kid ID --public-key FILE --out FILE [--latency-ms N] [--failure-rate F] [--keylog FILE]
 */
import { randomUUID } from 'node:crypto';
import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import { type AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { decodeProtectedHeader, jwtVerify } from 'jose';

/** One push as the provider saw it. */
export interface ProviderRecord {
  /** HEADERS frame received (the `stream` event), µs since the epoch (CLOCK_REALTIME). */
  tUs: number;
  /** Hex device token from the path ('' when the path was not /3/device/<hex>). */
  token: string;
  /** apns-push-type: voip (wake), alert (cancel, missed). */
  pushType: string;
  /** apns-collapse-id (the gateway's call id). */
  collapseId: string;
  /** callId and sentAt (gateway's Date.now() when its adapter built the push) from the body. */
  callId: string;
  sentAtMs: number | null;
  /** The status the provider answered. */
  status: number;
  /** APNs reason of a non-200 answer. */
  reason?: string;
}

/** What the provider writes to --out. */
export interface ProviderDump {
  records: ProviderRecord[];
  /** Distinct provider tokens (JWTs) seen, and how many failed verification. */
  jwts: number;
  jwtFailures: number;
  /** HTTP/2 sessions (connections) the gateway opened. */
  sessions: number;
  /** Realtime − (monotonic + start offset) at the end, µs: how far the two clocks drifted apart. */
  clockDriftUs: number;
  latencyMs: number;
}

/** Offset (µs) that turns performance.now() into CLOCK_REALTIME µs, pinned at a Date.now() tick. */
function calibrate(): number {
  const start = Date.now();
  let ms = start;
  let p = performance.now();
  // Spin (≤ 1 ms) until the millisecond ticks: Date.now() just became `ms` at about `p`.
  while (ms === start) {
    p = performance.now();
    ms = Date.now();
  }

  return ms * 1000 - p * 1000;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      cert: { type: 'string' },
      key: { type: 'string' },
      team: { type: 'string' },
      kid: { type: 'string' },
      'public-key': { type: 'string' },
      out: { type: 'string' },
      'latency-ms': { type: 'string', default: '0' },
      'failure-rate': { type: 'string', default: '0' },
      keylog: { type: 'string' },
    },
  });
  for (const k of ['cert', 'key', 'team', 'kid', 'public-key', 'out'] as const) {
    if (!values[k]) {
      console.error(`provider: --${k} is required`);
      process.exit(2);
    }
  }
  const latencyMs = Number(values['latency-ms']);
  const failureRate = Number(values['failure-rate']);
  if (!(failureRate >= 0 && failureRate <= 1)) {
    console.error(`provider: --failure-rate must be from 0 to 1, got ${values['failure-rate']}`);
    process.exit(2);
  }
  const teamId = values.team!;
  const keyId = values.kid!;
  const publicKey = createPublicKey(fs.readFileSync(values['public-key']!));
  const offsetUs = calibrate();
  const startPerfUs = performance.now() * 1000;
  const nowUs = (): number => performance.now() * 1000 + offsetUs;

  const records: ProviderRecord[] = [];
  const verified = new Map<string, Promise<boolean>>();
  let jwtFailures = 0;
  let sessionCount = 0;
  const sessions = new Set<http2.ServerHttp2Session>();

  const checkJwt = (jwt: string): Promise<boolean> => {
    let p = verified.get(jwt);
    if (!p) {
      p = (async () => {
        try {
          const h = decodeProtectedHeader(jwt);
          if (h.alg !== 'ES256' || h.kid !== keyId) {
            return false;
          }
          const { payload } = await jwtVerify(jwt, publicKey, { issuer: teamId, algorithms: ['ES256'] });

          return typeof payload.iat === 'number' && Date.now() / 1000 - payload.iat <= 3600;
        } catch {
          return false;
        }
      })();
      verified.set(jwt, p);
      void p.then((ok) => {
        if (!ok) {
          jwtFailures++;
        }
      });
    }

    return p;
  };

  const server = http2.createSecureServer({ key: fs.readFileSync(values.key!), cert: fs.readFileSync(values.cert!) });
  if (values.keylog) {
    // TLS secrets in NSS key-log format, so that tshark can read the pushes in a capture of lo
    const keylog = values.keylog;
    server.on('keylog', (line: Buffer) => fs.appendFileSync(keylog, line));
  }
  server.on('session', (s) => {
    sessionCount++;
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    const tUs = nowUs();
    const h = (name: string): string => {
      const v = headers[name];

      return Array.isArray(v) ? v.join(', ') : (v ?? '');
    };
    const rec: ProviderRecord = {
      tUs,
      token: /^\/3\/device\/([0-9a-fA-F]+)$/.exec(h(':path'))?.[1] ?? '',
      pushType: h('apns-push-type') || 'alert',
      collapseId: h('apns-collapse-id'),
      callId: '',
      sentAtMs: null,
      status: 0,
    };
    records.push(rec);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.on('end', () => {
      void (async () => {
        const answer = (status: number, reason?: string): void => {
          rec.status = status;
          if (reason) {
            rec.reason = reason;
          }
          const send = (): void => {
            if (stream.destroyed || stream.closed) {
              return;
            }
            stream.respond({ ':status': status, 'apns-id': randomUUID(), ...(reason ? { 'content-type': 'application/json' } : {}) });
            stream.end(reason ? JSON.stringify({ reason }) : undefined);
          };
          if (latencyMs > 0) {
            setTimeout(send, latencyMs);
          } else {
            send();
          }
        };
        if (!rec.token) {
          answer(404, 'BadPath');

          return;
        }
        if (h(':method') !== 'POST') {
          answer(405, 'MethodNotAllowed');

          return;
        }
        const auth = /^bearer (.+)$/.exec(h('authorization'));
        if (!auth || !(await checkJwt(auth[1]!))) {
          answer(403, 'InvalidProviderToken');

          return;
        }
        const topic = h('apns-topic');
        if (!topic) {
          answer(400, 'MissingTopic');

          return;
        }
        if ((rec.pushType === 'voip') !== topic.endsWith('.voip')) {
          answer(400, 'DeviceTokenNotForTopic');

          return;
        }
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          body = undefined;
        }
        if (!body || typeof body !== 'object') {
          answer(400, 'PayloadEmpty');

          return;
        }
        const b = body as Record<string, unknown>;
        rec.callId = typeof b.callId === 'string' ? b.callId : '';
        rec.sentAtMs = typeof b.sentAt === 'string' && /^\d+$/.test(b.sentAt) ? Number(b.sentAt) : null;
        if (failureRate > 0 && Math.random() < failureRate) {
          answer(503, 'ServiceUnavailable');

          return;
        }
        answer(200);
      })();
    });
  });

  let stopping = false;
  const stop = (): void => {
    if (stopping) {
      return;
    }
    stopping = true;
    // The offset at the end; stamps are corrected linearly between the two calibrations.
    const driftUs = calibrate() - offsetUs;
    const spanUs = performance.now() * 1000 - startPerfUs;
    for (const r of records) {
      r.tUs += spanUs > 0 ? (driftUs * (r.tUs - offsetUs - startPerfUs)) / spanUs : 0;
    }
    const dump: ProviderDump = { records, jwts: verified.size, jwtFailures, sessions: sessionCount, clockDriftUs: Math.round(driftUs), latencyMs };
    fs.writeFileSync(values.out!, JSON.stringify(dump));
    for (const s of sessions) {
      s.destroy();
    }
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening ${(server.address() as AddressInfo).port}`);
  });
}

main();
