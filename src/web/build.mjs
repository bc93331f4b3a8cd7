// Builds the agent softphone page into dist/web: app.ts (with the client SDK and mediasoup-client)
// bundled by esbuild into one ES module, the service worker (sw/service-worker.ts) into sw.js, plus index.html and styles.css copied as they are.
// Usage: node src/web/build.mjs [--dev]   (--dev: no minification)
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const out = path.join(root, 'dist', 'web');
const dev = process.argv.includes('--dev');

await fs.rm(out, { recursive: true, force: true });
await fs.mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [path.join(here, 'app.ts')],
  outfile: path.join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome111', 'firefox115', 'safari16'],
  minify: !dev,
  sourcemap: 'linked',
  legalComments: 'linked',
  define: { 'process.env.NODE_ENV': dev ? '"development"' : '"production"' },
  logLevel: 'warning',
  metafile: true,
});
// the service worker (Web Push wake-ups), a classic script as browsers load it by default
const worker = await build({
  entryPoints: [path.join(here, 'sw', 'service-worker.ts')],
  outfile: path.join(out, 'sw.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome111', 'firefox115', 'safari16'],
  minify: !dev,
  sourcemap: 'linked',
  logLevel: 'warning',
  metafile: true,
});
for (const file of ['index.html', 'styles.css']) {
  await fs.copyFile(path.join(here, file), path.join(out, file));
}
const bytes = [...Object.values(result.metafile.outputs), ...Object.values(worker.metafile.outputs)].reduce((n, o) => n + o.bytes, 0);
process.stdout.write(`softphone page built into ${path.relative(root, out)} (${Math.round(bytes / 1024)} KiB)\n`);
