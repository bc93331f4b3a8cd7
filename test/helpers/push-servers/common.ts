/**
 * Shared parts of the local push-provider servers: one TLS server (HTTP/2 with HTTP/1.1 fallback,
 * so firebase-admin's and node-apn's HTTP/2 clients and undici's and web-push's HTTP/1.1 clients
 * all reach it) that reads each request in full, records it and hands it to the provider's
 * handler; a reply type; and a logger that keeps its lines in memory.
 */
import http2 from 'node:http2';
import fs from 'node:fs';
import { type AddressInfo, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../../src/log/logger.js';
import { createTestCerts, type TestCerts } from '../tls-certs.js';

/** A request as the server received it. */
export interface RecordedRequest {
  method: string;
  /** Path with query. */
  path: string;
  /** Header names lower-case; HTTP/2 pseudo-headers included. */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  /** The HTTP version the client used ('2.0' or '1.1'). */
  httpVersion: string;
}

/** What a handler answers. `hang: true` never answers (timeout tests). */
export interface Reply {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown;
  hang?: boolean;
}

/** A request handler of a fake provider. */
export type Handler = (req: RecordedRequest) => Reply | Promise<Reply>;

/** A running fake provider server. */
export interface FakeServer {
  /** https://localhost:<port> */
  url: string;
  /** Every request received, in order. */
  requests: RecordedRequest[];
  close(): Promise<void>;
}

let shared: Promise<TestCerts> | undefined;

/** One throwaway CA and server certificate for every push test server of this test file. */
export function pushTestCerts(): Promise<TestCerts> {
  shared ??= createTestCerts({ hosts: ['localhost', '127.0.0.1'] });

  return shared;
}

/** Starts a TLS server on a free loopback port that answers through `handler`. */
export async function startFakeServer(handler: Handler): Promise<FakeServer> {
  const certs = await pushTestCerts();
  const requests: RecordedRequest[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<Socket>();
  const server = http2.createSecureServer({ key: fs.readFileSync(certs.keyFile), cert: fs.readFileSync(certs.certFile), allowHTTP1: true });
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('secureConnection', (sock: Socket) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const rec: RecordedRequest = {
        method: req.method,
        path: req.url,
        headers: { ...req.headers },
        body,
        text: body.toString('utf8'),
        httpVersion: req.httpVersion,
      };
      requests.push(rec);
      Promise.resolve()
        .then(() => handler(rec))
        .then((reply) => {
          if (reply.hang) {
            return;
          }
          const text = reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
          res.writeHead(reply.status, { ...(reply.body !== undefined && typeof reply.body !== 'string' ? { 'content-type': 'application/json; charset=UTF-8' } : {}), ...reply.headers });
          res.end(text);
        })
        .catch((err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`fake server handler failed: ${(err as Error).message}`);
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `https://localhost:${port}`,
    requests,
    close: async () => {
      for (const s of sessions) {
        s.destroy();
      }
      for (const s of sockets) {
        s.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Header value as one string. */
export function header(req: RecordedRequest, name: string): string | undefined {
  const v = req.headers[name.toLowerCase()];

  return Array.isArray(v) ? v.join(', ') : v;
}

/** Form fields of a form-encoded request. */
export function formOf(req: RecordedRequest): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(req.text));
}

/** The bearer token of a request, or undefined. */
export function bearer(req: RecordedRequest): string | undefined {
  const m = /^bearer (.+)$/i.exec(header(req, 'authorization') ?? '');

  return m?.[1];
}

/** A logger whose JSON lines stay in memory. */
export function memoryLogger(level = 'debug'): { logger: Logger; text: () => string } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger({ level, destination: dest as unknown as NodeJS.WritableStream & { write(s: string): boolean } });

  return { logger, text: () => chunks.join('') };
}

/** Issued access tokens with their expiry (ms), shared by the OAuth-style fakes. */
export class IssuedTokens {
  readonly #tokens = new Map<string, number>();
  /** Token requests served. */
  requests = 0;

  /** Issues a new token valid `lifetimeS` seconds. */
  issue(prefix: string, lifetimeS: number): string {
    this.requests++;
    const token = `${prefix}${this.requests}.${Math.random().toString(36).slice(2)}`;
    this.#tokens.set(token, Date.now() + lifetimeS * 1000);

    return token;
  }

  /** 'ok', 'expired' or 'unknown'. */
  check(token: string | undefined): 'ok' | 'expired' | 'unknown' {
    const exp = token === undefined ? undefined : this.#tokens.get(token);
    if (exp === undefined) {
      return 'unknown';
    }

    return Date.now() < exp ? 'ok' : 'expired';
  }

  /** Makes every issued token expire now (a provider revoking them). */
  expireAll(): void {
    for (const k of this.#tokens.keys()) {
      this.#tokens.set(k, 0);
    }
  }
}
