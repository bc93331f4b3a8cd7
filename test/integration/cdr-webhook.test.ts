/**
 * CdrWebhook against a real HTTP server on loopback (node:http): what the receiver gets (JSON
 * body, headers, HMAC signature checked server-side), retries after 503, a dropped connection and a
 * timeout, Retry-After, giving up, no retry of a 400, the bounded queue and close()'s flush.
 * Backoffs are a few ms so the file runs in about two seconds.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { cdrWebhookConfigSchema, cdrWebhookOptions } from '../../src/calls/cdr-webhook-config.js';
import { CdrWebhook, type CdrWebhookOptions } from '../../src/calls/cdr-webhook.js';
import { type CallRecord } from '../../src/state/store.js';
import { memoryLogger } from '../helpers/push-servers/common.js';

const SECRET = 'cdr-test-secret-0123456789abcdef0123456789';
const URL_TOKEN = 'qs-token-5f2a9c';

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** What the server does with the n-th request (0-based): answer, drop the connection, or hang. */
type Behaviour = (n: number, req: http.IncomingMessage, res: http.ServerResponse) => void;

class Receiver {
  readonly received: Received[] = [];
  readonly #server: http.Server;
  behaviour: Behaviour = (_n, _req, res) => res.writeHead(204).end();

  private constructor(server: http.Server) {
    this.#server = server;
  }

  static async start(): Promise<Receiver> {
    const server = http.createServer();
    const r = new Receiver(server);
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const n = r.received.length;
        r.received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
        r.behaviour(n, req, res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hooks/cdr?token=${URL_TOKEN}`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

function record(callId: string, over: Partial<CallRecord> = {}): CallRecord {
  return {
    callId,
    direction: 'inbound',
    trunkId: 'carrier-a',
    from: '+49******56',
    to: '+49******12',
    agentId: 'alice',
    node: 'gw-1',
    offeredAt: '2025-01-01T10:00:00.000Z',
    ringingAt: '2025-01-01T10:00:00.200Z',
    answeredAt: '2025-01-01T10:00:03.000Z',
    endedAt: '2025-01-01T10:01:03.000Z',
    endReason: 'hangup_agent',
    sipStatus: 200,
    codec: 'PCMU',
    durationS: 60,
    ...over,
  };
}

let receiver: Receiver | undefined;
let hook: CdrWebhook | undefined;
let log: ReturnType<typeof memoryLogger>;

async function setup(opts: Partial<CdrWebhookOptions> = {}): Promise<{ r: Receiver; w: CdrWebhook }> {
  receiver = await Receiver.start();
  log = memoryLogger();
  hook = new CdrWebhook({
    url: receiver.url,
    timeoutMs: 1000,
    maxAttempts: 4,
    backoffBaseMs: 5,
    backoffMaxMs: 50,
    hmacSecret: SECRET,
    logger: log.logger,
    maxQueue: 100,
    ...opts,
  });

  return { r: receiver, w: hook };
}

afterEach(async () => {
  await hook?.close(200);
  await receiver?.stop();
  // Nothing personal or secret ever reaches the log.
  const text = log.text();
  expect(text).not.toContain(SECRET);
  expect(text).not.toContain(URL_TOKEN);
  expect(text).not.toContain('+49');
  expect(text).not.toContain('Bearer');
  hook = undefined;
  receiver = undefined;
});

describe('CdrWebhook', () => {
  it('POSTs the record as JSON with the idempotency key, custom headers and a valid signature', async () => {
    const { r, w } = await setup({ headers: { Authorization: 'Bearer abc', 'Idempotency-Key': 'overridden?' } });
    const rec = record('call-1');
    w.post(rec);
    await w.drained();

    expect(r.received).toHaveLength(1);
    const got = r.received[0]!;
    expect(JSON.parse(got.body)).toEqual(rec);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['idempotency-key']).toBe('call-1');
    expect(got.headers.authorization).toBe('Bearer abc');
    const sig = got.headers['x-ringbridge-signature'];
    expect(sig).toMatch(/^sha256=[0-9a-f]{64}$/);
    const expected = createHmac('sha256', SECRET).update(got.body).digest();
    expect(timingSafeEqual(Buffer.from((sig as string).slice('sha256='.length), 'hex'), expected)).toBe(true);
    // A signature with another key must not match (the check above can fail).
    expect(createHmac('sha256', 'other').update(got.body).digest().equals(expected)).toBe(false);
    expect(w.stats).toMatchObject({ sent: 1, failed: 0, rejected: 0, dropped: 0, attempts: 1, queued: 0 });
  });

  it('sends no signature without a secret, and records in order', async () => {
    const { r, w } = await setup({ hmacSecret: '' });
    for (let i = 0; i < 5; i++) {
      w.post(record(`call-${i}`));
    }
    await w.drained();
    expect(r.received.map((x) => x.headers['idempotency-key'])).toEqual(['call-0', 'call-1', 'call-2', 'call-3', 'call-4']);
    expect(r.received.every((x) => x.headers['x-ringbridge-signature'] === undefined)).toBe(true);
  });

  it('retries after a 503 and after a dropped connection, then succeeds with the same body and key', async () => {
    const { r, w } = await setup();
    r.behaviour = (n, req, res) => {
      if (n === 0) {
        res.writeHead(503).end('busy');
      } else if (n === 1) {
        req.socket.destroy();
      } else {
        res.writeHead(200).end('ok');
      }
    };
    w.post(record('call-r'));
    await w.drained();

    expect(r.received).toHaveLength(3);
    expect(new Set(r.received.map((x) => x.body)).size).toBe(1);
    expect(r.received.map((x) => x.headers['idempotency-key'])).toEqual(['call-r', 'call-r', 'call-r']);
    expect(w.stats).toMatchObject({ sent: 1, failed: 0, attempts: 3 });
  });

  it('retries after a timeout', async () => {
    const { r, w } = await setup({ timeoutMs: 150 });
    r.behaviour = (n, _req, res) => {
      if (n > 0) {
        res.writeHead(204).end();
      } // the first request never gets an answer
    };
    w.post(record('call-t'));
    await w.drained();
    expect(r.received).toHaveLength(2);
    // the retry waited for the 150 ms timeout (not just the few-ms backoff); the server stamps the
    // first request when its handler runs, which on a loaded machine is later than the client sent
    // it, so the gap it sees can be shorter than the timeout by that delay
    expect(r.received[1]!.at - r.received[0]!.at).toBeGreaterThanOrEqual(100);
    expect(w.stats).toMatchObject({ sent: 1, attempts: 2 });
  });

  it('honours Retry-After (up to backoffMaxMs)', async () => {
    const { r, w } = await setup({ backoffBaseMs: 5, backoffMaxMs: 2000 });
    r.behaviour = (n, _req, res) => {
      if (n === 0) {
        res.writeHead(429, { 'retry-after': '1' }).end();
      } else {
        res.writeHead(204).end();
      }
    };
    w.post(record('call-ra'));
    await w.drained();
    expect(r.received).toHaveLength(2);
    const gap = r.received[1]!.at - r.received[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(950);
    expect(gap).toBeLessThan(1800);
  });

  it('gives up after maxAttempts, logging once', async () => {
    const { r, w } = await setup({ maxAttempts: 3 });
    r.behaviour = (_n, _req, res) => res.writeHead(500).end();
    w.post(record('call-g'));
    await w.drained();
    expect(r.received).toHaveLength(3);
    expect(w.stats).toMatchObject({ sent: 0, failed: 1, attempts: 3 });
    expect(log.text().match(/given up/g)).toHaveLength(1);
    expect(log.text()).toContain('call-g');
    // The next record is still delivered.
    r.behaviour = (_n, _req, res) => res.writeHead(204).end();
    w.post(record('call-after'));
    await w.drained();
    expect(r.received.at(-1)!.headers['idempotency-key']).toBe('call-after');
    expect(w.stats.sent).toBe(1);
  });

  it('does not retry a 400 (but does retry 408)', async () => {
    const { r, w } = await setup();
    r.behaviour = (n, _req, res) => res.writeHead(n === 0 ? 400 : n === 1 ? 408 : 204).end();
    w.post(record('call-400'));
    await w.drained();
    await new Promise((resolve) => setTimeout(resolve, 100)); // a wrongly scheduled retry would land here
    expect(r.received).toHaveLength(1);
    expect(w.stats).toMatchObject({ rejected: 1, sent: 0, attempts: 1 });
    expect(log.text()).toContain('not retried');

    w.post(record('call-408'));
    await w.drained();
    expect(r.received.map((x) => x.headers['idempotency-key'])).toEqual(['call-400', 'call-408', 'call-408']);
    expect(w.stats).toMatchObject({ rejected: 1, sent: 1 });
  });

  it('drops the oldest waiting record when the queue is full', async () => {
    const { r, w } = await setup({ maxQueue: 3 });
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    r.behaviour = (n, _req, res) => {
      if (n === 0) {
        void held.then(() => res.writeHead(204).end());
      } else {
        res.writeHead(204).end();
      }
    };
    w.post(record('q-1'));
    // Wait until q-1 is in flight (at the server), so it is no longer in the queue.
    while (r.received.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    for (const id of ['q-2', 'q-3', 'q-4', 'q-5', 'q-6']) {
      w.post(record(id));
    }
    expect(w.stats).toMatchObject({ queued: 3, dropped: 2 });
    release();
    await w.drained();
    expect(r.received.map((x) => x.headers['idempotency-key'])).toEqual(['q-1', 'q-4', 'q-5', 'q-6']);
    expect(w.stats).toMatchObject({ sent: 4, dropped: 2 });
    // One warning for the burst (rate-limited), naming the first record pushed out.
    expect(log.text().match(/queue full/g)).toHaveLength(1);
    expect(log.text()).toContain('q-2');
  });

  it('close() flushes what is queued, then drops later posts', async () => {
    const { r, w } = await setup();
    r.behaviour = (n, _req, res) => {
      // slow answers and one retry on the way
      setTimeout(() => res.writeHead(n === 2 ? 503 : 204).end(), 20);
    };
    for (let i = 0; i < 5; i++) {
      w.post(record(`f-${i}`));
    }
    const stats = await w.close(3000);
    expect(new Set(r.received.map((x) => x.headers['idempotency-key']))).toEqual(new Set(['f-0', 'f-1', 'f-2', 'f-3', 'f-4']));
    expect(stats).toMatchObject({ sent: 5, abandoned: 0, queued: 0 });
    w.post(record('late'));
    expect(w.stats.dropped).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(r.received.some((x) => x.headers['idempotency-key'] === 'late')).toBe(false);
  });

  it('close() stops at its deadline and counts what was left', async () => {
    const { r, w } = await setup({ timeoutMs: 10_000 });
    r.behaviour = () => undefined; // never answers
    w.post(record('d-1'));
    w.post(record('d-2'));
    const t0 = Date.now();
    const stats = await w.close(200);
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(1500);
    expect(r.received).toHaveLength(1);
    expect(stats).toMatchObject({ sent: 0, abandoned: 2, queued: 0 });
    expect(log.text()).toContain('shutdown deadline');
  });
});

describe('cdrWebhookConfigSchema', () => {
  const base = { url: 'https://billing.example.com/cdr', timeoutMs: 5000, maxAttempts: 8, backoffBaseMs: 1000, backoffMaxMs: 300_000, secret: '' };

  it('accepts a full section and empty url (off)', () => {
    expect(cdrWebhookConfigSchema.parse(base)).toEqual(base);
    const off = cdrWebhookConfigSchema.parse({ ...base, url: '' });
    expect(cdrWebhookOptions(off, memoryLogger().logger)).toBeUndefined();
    const on = cdrWebhookOptions(cdrWebhookConfigSchema.parse({ ...base, secret: SECRET }), memoryLogger().logger);
    expect(on).toMatchObject({ url: base.url, hmacSecret: SECRET, maxAttempts: 8 });
  });

  it('refuses bad values with the key in the path', () => {
    const bad = (over: Record<string, unknown>): string[] => {
      const r = cdrWebhookConfigSchema.safeParse({ ...base, ...over });

      return r.success ? [] : r.error.issues.map((i) => i.path.join('.'));
    };
    expect(bad({ url: 'ftp://x/y' })).toEqual(['url']);
    expect(bad({ secret: 'short' })).toEqual(['secret']);
    expect(bad({ maxAttempts: 0 })).toEqual(['maxAttempts']);
    expect(bad({ backoffMaxMs: 10 })).toEqual(['backoffMaxMs']);
    expect(bad({ extra: 1 })).toEqual(['']);
  });
});
