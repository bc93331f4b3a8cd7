/**
 * Static files of the agent softphone page (src/web, built into dist/web by `npm run build:web`):
 * GET / is index.html, GET /web/<file> a file of the build. Only regular files inside the root,
 * only known extensions, never a dot-file; everything else is 404. Every reply carries a strict
 * Content-Security-Policy: scripts, styles and connections to this origin only (the page's
 * WebSocket goes to /ws here; WebRTC media is not governed by CSP).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

/** Content types by extension; a file with another extension is not served. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** The page's Content-Security-Policy. */
export const WEB_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "media-src 'self' blob: mediastream:",
  "manifest-src 'self'",
  "worker-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers of every static reply (and of its 404s). */
export const WEB_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': WEB_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'microphone=(self), camera=(), geolocation=()',
};

/** A file to send. */
export interface StaticFile {
  contentType: string;
  body: Buffer;
}

/** Whether the path is one the static site answers (GET / or anything under /web/). */
export function isStaticPath(pathname: string): boolean {
  return pathname === '/' || pathname === '/web' || pathname.startsWith('/web/');
}

/**
 * The file for a URL path, or undefined (then 404). `root` is the build directory (dist/web).
 * Refuses, without touching the file system, anything that is not a plain relative name:
 * `..`, `.`, empty segments, dot-files, backslashes, NUL, bad percent-encoding; then checks the
 * real path (symlinks resolved) still lies inside the root and is a regular file.
 */
export async function readStaticFile(root: string, pathname: string): Promise<StaticFile | undefined> {
  let rel: string;
  if (pathname === '/' || pathname === '/web' || pathname === '/web/') {
    rel = 'index.html';
  } else if (pathname.startsWith('/web/')) {
    rel = pathname.slice('/web/'.length);
  } else {
    return undefined;
  }
  let segments: string[];
  try {
    segments = rel.split('/').map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
  if (segments.some((s) => s === '' || s.startsWith('.') || /[\\/\0:]/.test(s))) {
    return undefined;
  }
  const contentType = CONTENT_TYPES[path.extname(segments[segments.length - 1] ?? '').toLowerCase()];
  if (!contentType) {
    return undefined;
  }
  try {
    const realRoot = await fs.realpath(root);
    const real = await fs.realpath(path.join(realRoot, ...segments));
    if (!real.startsWith(realRoot + path.sep)) {
      return undefined;
    }
    const st = await fs.stat(real);
    if (!st.isFile()) {
      return undefined;
    }

    return { contentType, body: await fs.readFile(real) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'ELOOP' || code === 'EACCES' || code === 'ENAMETOOLONG') {
      return undefined;
    }
    throw err;
  }
}
