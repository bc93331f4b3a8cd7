/** ringbridge's own version, read once from package.json. */
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot } from './paths.js';

let cached: string | undefined;

/** The version in package.json, e.g. "0.1.0". */
export function ringbridgeVersion(): string {
  cached ??= (JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string }).version;

  return cached;
}
