// The HTTP listener serves the softphone page's build (GET / and /web/*) from a directory, with
// content types and a strict CSP, and nothing outside it: traversal, dot-files, symlinks out of
// the root and unknown extensions are 404.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { json, startHttpServer, type HttpServerHandle } from '../../src/http/server.js';
import { WEB_CSP } from '../../src/http/static.js';

let dir: string;
let root: string;
let server: HttpServerHandle;
let base: string;

/** Sends the request line as written (fetch and http.get normalise `..` away). */
function rawGet(target: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const { port } = server.address();
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    let data = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => (data += c));
    sock.on('end', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), head, body });
    });
    sock.on('error', reject);
  });
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rb-static-'));
  root = path.join(dir, 'web');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>softphone</title>');
  fs.writeFileSync(path.join(root, 'app.js'), 'console.log(1);');
  fs.writeFileSync(path.join(root, 'styles.css'), 'body{}');
  fs.writeFileSync(path.join(root, 'sub', 'x.svg'), '<svg/>');
  fs.writeFileSync(path.join(root, '.env'), 'SECRET=1');
  fs.writeFileSync(path.join(root, 'notes.sh'), 'echo');
  fs.writeFileSync(path.join(dir, 'secret.txt'), 'outside');
  fs.symlinkSync(path.join(dir, 'secret.txt'), path.join(root, 'link.txt'));
  server = await startHttpServer({
    host: '127.0.0.1',
    port: 0,
    logger: createLogger({ level: 'silent' }),
    webRoot: root,
    routes: { health: () => json(200, { ok: true }), metrics: () => ({ status: 200, contentType: 'text/plain', body: '' }) },
  });
  base = `http://127.0.0.1:${server.address().port}`;
});

afterAll(async () => {
  await server?.close(100);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('static softphone page', () => {
  it('serves index.html at / and files under /web/ with their content types and the CSP', async () => {
    const cases: [string, string, string][] = [
      ['/', 'text/html; charset=utf-8', '<!doctype html><title>softphone</title>'],
      ['/web/', 'text/html; charset=utf-8', '<!doctype html><title>softphone</title>'],
      ['/web/app.js', 'text/javascript; charset=utf-8', 'console.log(1);'],
      ['/web/styles.css', 'text/css; charset=utf-8', 'body{}'],
      ['/web/sub/x.svg', 'image/svg+xml', '<svg/>'],
    ];
    for (const [p, type, body] of cases) {
      const res = await fetch(base + p);
      expect(res.status, p).toBe(200);
      expect(res.headers.get('content-type'), p).toBe(type);
      expect(res.headers.get('content-security-policy'), p).toBe(WEB_CSP);
      expect(res.headers.get('x-content-type-options'), p).toBe('nosniff');
      expect(await res.text(), p).toBe(body);
    }
    expect(WEB_CSP).toContain("default-src 'none'");
    expect(WEB_CSP).toContain("script-src 'self'");
    expect(WEB_CSP).not.toContain('unsafe');
  });

  it('answers HEAD without a body', async () => {
    const res = await fetch(base + '/web/app.js', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('15');
    expect(await res.text()).toBe('');
  });

  it('refuses path traversal, encoded or not', async () => {
    for (const target of [
      '/web/../secret.txt',
      '/web/%2e%2e/secret.txt',
      '/web/%2E%2E%2Fsecret.txt',
      '/web/..%2fsecret.txt',
      '/web/..%5csecret.txt',
      '/web/sub/..%2f..%2fsecret.txt',
      '/web//etc/passwd',
      '/web/%00index.html',
      '/web/%zz',
      '/../../../../etc/passwd',
    ]) {
      const res = await rawGet(target);
      expect(res.status, target).toBe(404);
      expect(res.body, target).not.toContain('outside');
    }
  });

  it('refuses dot-files, unknown extensions, directories and symlinks out of the root', async () => {
    for (const p of ['/web/.env', '/web/notes.sh', '/web/sub', '/web/sub/', '/web/link.txt', '/web/missing.js', '/index.html', '/app.js']) {
      const res = await fetch(base + p);
      expect(res.status, p).toBe(404);
      expect(await res.text(), p).not.toMatch(/SECRET|outside|echo/);
    }
  });

  it('keeps the other routes and refuses other methods', async () => {
    expect((await fetch(base + '/health')).status).toBe(200);
    expect((await fetch(base + '/web/app.js', { method: 'POST' })).status).toBe(405);
  });

  it('answers 404 for / when no page is built', async () => {
    const bare = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      logger: createLogger({ level: 'silent' }),
      webRoot: path.join(dir, 'not-built'),
      routes: { health: () => json(200, {}), metrics: () => json(200, {}) },
    });
    try {
      const res = await fetch(`http://127.0.0.1:${bare.address().port}/`);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-security-policy')).toBe(WEB_CSP);
    } finally {
      await bare.close(100);
    }
  });
});
