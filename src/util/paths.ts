/** Locations inside the ringbridge checkout or install, found from this file's own place. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/**
 * The project root: the nearest ancestor directory holding ringbridge's package.json. Works from
 * src/ (tests, tsx) and from dist/src/ (compiled).
 * @throws {Error} when no such directory exists (a broken install)
 */
export function projectRoot(): string {
  if (cached) {
    return cached;
  }
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      const name = (JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name;
      if (name === 'ringbridge') {
        cached = dir;

        return dir;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error('cannot find the ringbridge project root (package.json) above ' + fileURLToPath(import.meta.url));
    }
    dir = parent;
  }
}
