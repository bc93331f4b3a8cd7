/**
 * The HTTP listener: GET /health, GET /metrics, the admin API under /admin, the agent softphone
 * page (GET / and /web/*, from `webRoot`, see static.ts), and the WebSocket upgrade on /ws
 * (attached by the signaling server).
 * Plain node:http; the few routes do not justify a framework.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { type AddressInfo } from 'node:net';
import { type Logger } from '../log/logger.js';
import { loadTlsFiles, TlsFileWatcher, type TlsFilePaths } from '../net/tls-files.js';
import { WEB_SECURITY_HEADERS, isStaticPath, readStaticFile } from './static.js';

/** A route's answer. */
export interface HttpReply {
  status: number;
  contentType: string;
  body: string;
  /** Streams this file (of `fileBytes` bytes) as the body instead of `body` (admin recordings). */
  file?: { path: string; bytes: number; name: string };
}

/** A request to the admin API: method, path below /admin, query, headers and the body (JSON or empty). */
export interface AdminRequest {
  method: string;
  /** Path segments after /admin, decoded: "/admin/agents/a%401" → ["agents", "a@1"]. */
  segments: string[];
  query: URLSearchParams;
  authorization: string | undefined;
  body: unknown;
}

/** Route handlers of the HTTP listener. */
export interface HttpRoutes {
  /** GET /health: 200 when ready, 503 otherwise, JSON body naming each component's state. */
  health(): Promise<HttpReply> | HttpReply;
  /** GET /metrics: Prometheus text exposition. */
  metrics(): Promise<HttpReply> | HttpReply;
  /** Anything under /admin (any method); absent: 404. */
  admin?(req: AdminRequest): Promise<HttpReply> | HttpReply;
}

const MAX_ADMIN_BODY = 64 * 1024;

/** Reads a JSON body of at most 64 KiB; an empty body is undefined. */
function readJson(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_ADMIN_BODY) {
        reject(new HttpError(413, 'body_too_large'));
        req.destroy();

        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') {
        resolve(undefined);

        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new HttpError(400, 'invalid_json'));
      }
    });
    req.on('error', reject);
  });
}

/** An HTTP error with its status and a short error code for the JSON body. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  readonly status: number;

  constructor(status: number, code: string) {
    super(code);
    this.status = status;
  }
}

/**
 * The URL of a request target (RFC 9112 §3.2), or undefined when it does not parse: a target
 * such as `//[` makes `new URL()` throw, and one bad request must not reach an uncaught exception.
 */
export function requestUrl(target: string | undefined): URL | undefined {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    return undefined;
  }
}

/** Options of startHttpServer(). */
export interface HttpServerOptions {
  host: string;
  /** TCP port; 0 picks a free one (see address()). */
  port: number;
  routes: HttpRoutes;
  logger: Logger;
  /**
   * The softphone page's build directory (dist/web) served at / and /web/*; absent: those paths
   * are 404. Read per request, so a page built after the start is served.
   */
  webRoot?: string;
  /** Serve HTTPS (and WSS) with these PEM files, reloaded when they change (net/tls-files.ts). */
  tls?: TlsFilePaths;
  /** Poll interval of the certificate files, ms (default 2000). */
  tlsReloadIntervalMs?: number;
}

/** A listening HTTP server. */
export interface HttpServerHandle {
  server: http.Server | https.Server;
  /** Whether it serves HTTPS. */
  secure: boolean;
  /** The bound address and port. */
  address(): AddressInfo;
  /** Stops accepting connections and closes idle and active ones within graceMs. */
  close(graceMs?: number): Promise<void>;
}

function send(res: http.ServerResponse, reply: HttpReply, head: boolean): void {
  if (reply.file) {
    res.writeHead(reply.status, { 'content-type': reply.contentType, 'cache-control': 'no-store', 'content-length': reply.file.bytes, 'content-disposition': `attachment; filename="${reply.file.name}"` });
    if (head) {
      res.end();

      return;
    }
    // a file shorter than announced (deleted meanwhile) ends the connection early, which the client sees
    fs.createReadStream(reply.file.path, { end: reply.file.bytes - 1 })
      .on('error', () => res.destroy())
      .pipe(res);

    return;
  }
  res.writeHead(reply.status, { 'content-type': reply.contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(reply.body) });
  res.end(head ? undefined : reply.body);
}

/** GET / and /web/*: a file of the page, or 404; both with the page's security headers. */
function serveStatic(root: string, pathname: string, res: http.ServerResponse, head: boolean, logger: Logger): void {
  readStaticFile(root, pathname)
    .then((file) => {
      for (const [k, v] of Object.entries(WEB_SECURITY_HEADERS)) {
        res.setHeader(k, v);
      }
      if (!file) {
        send(res, json(404, { error: 'not_found' }), head);

        return;
      }
      res.writeHead(200, { 'content-type': file.contentType, 'cache-control': 'no-cache', 'content-length': file.body.length });
      res.end(head ? undefined : file.body);
    })
    .catch((err: unknown) => {
      logger.error({ err, path: pathname }, 'static file failed');
      if (!res.headersSent) {
        send(res, json(500, { error: 'internal_error' }), head);
      } else {
        res.destroy();
      }
    });
}

/** A JSON reply. */
export const json = (status: number, body: unknown): HttpReply => ({ status, contentType: 'application/json', body: JSON.stringify(body) });

/**
 * Starts the HTTP listener.
 * @throws {Error} when the address cannot be bound (EADDRINUSE, EACCES)
 */
export async function startHttpServer(opts: HttpServerOptions): Promise<HttpServerHandle> {
  const { routes, logger } = opts;
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const head = req.method === 'HEAD';
    const url = requestUrl(req.url);
    if (!url) {
      send(res, json(400, { error: 'bad_request', message: 'the request target is not a valid URL' }), head);

      return;
    }
    if ((url.pathname === '/admin' || url.pathname.startsWith('/admin/')) && routes.admin) {
      const admin = routes.admin.bind(routes);
      let segments: string[];
      try {
        segments = url.pathname.split('/').slice(2).filter(Boolean).map(decodeURIComponent);
      } catch {
        send(res, json(400, { error: 'bad_path' }), head);

        return;
      }
      readJson(req)
        .then((body) => admin({ method: req.method ?? 'GET', segments, query: url.searchParams, authorization: req.headers.authorization, body }))
        .then((reply) => send(res, reply, head))
        .catch((err: unknown) => {
          if (err instanceof HttpError) {
            send(res, json(err.status, { error: err.message }), head);

            return;
          }
          logger.error({ err, path: url.pathname }, 'admin handler failed');
          if (!res.headersSent) {
            send(res, json(500, { error: 'internal_error' }), head);
          } else {
            res.destroy();
          }
        });

      return;
    }
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      send(res, json(405, { error: 'method_not_allowed' }), false);

      return;
    }
    if (opts.webRoot !== undefined && isStaticPath(url.pathname)) {
      serveStatic(opts.webRoot, url.pathname, res, head, logger);

      return;
    }
    let handler: (() => Promise<HttpReply> | HttpReply) | undefined;
    if (url.pathname === '/health') {
      handler = () => routes.health();
    } else if (url.pathname === '/metrics') {
      handler = () => routes.metrics();
    }
    if (!handler) {
      send(res, json(404, { error: 'not_found' }), head);

      return;
    }
    Promise.resolve()
      .then(handler)
      .then((reply) => send(res, reply, head))
      .catch((err: unknown) => {
        logger.error({ err, path: url.pathname }, 'HTTP handler failed');
        if (!res.headersSent) {
          send(res, json(500, { error: 'internal_error' }), head);
        } else {
          res.destroy();
        }
      });
  };
  // TLS files are read before anything listens: a bad path or pair stops the start, naming the file
  const loaded = opts.tls ? loadTlsFiles(opts.tls) : undefined;
  const server = loaded ? https.createServer(loaded.options, onRequest) : http.createServer(onRequest);
  const watcher =
    opts.tls && server instanceof https.Server
      ? new TlsFileWatcher({
          paths: opts.tls,
          name: 'https',
          logger,
          ...(opts.tlsReloadIntervalMs === undefined ? {} : { intervalMs: opts.tlsReloadIntervalMs }),
          onReload: (next) => server.setSecureContext(next.options),
        })
      : undefined;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  return {
    server,
    secure: loaded !== undefined,
    address: () => server.address() as AddressInfo,
    close: (graceMs = 2000) =>
      new Promise<void>((resolve) => {
        watcher?.close();
        const t = setTimeout(() => server.closeAllConnections(), graceMs);
        server.close(() => {
          clearTimeout(t);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
