/**
 * Cryptographically random bytes drawn from a pool refilled 4 KiB at a time, for the many small
 * identifiers of the SIP hot path (branch ids, tags): one system call per few hundred ids instead of
 * one per id. The bytes are as unpredictable as crypto.randomBytes'.
 */
import { randomFillSync } from 'node:crypto';

const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let offset = POOL_SIZE;

/**
 * `n` random bytes (a copy), n ≤ 256.
 * @throws {RangeError} when n is out of range
 */
export function randomPoolBytes(n: number): Buffer {
  if (n < 1 || n > 256) {
    throw new RangeError(`randomPoolBytes: n must be 1..256, got ${n}`);
  }
  if (offset + n > POOL_SIZE) {
    randomFillSync(pool);
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + n));
  offset += n;

  return out;
}
