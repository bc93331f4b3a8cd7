/**
 * SRTP cost per packet on the trunk leg: protect (RTP → SRTP, what the relay does for each packet
 * toward an SRTP trunk) and unprotect (SRTP → RTP, each packet from it) of 20 ms PCMA packets
 * (172 bytes) with src/media/rtp/srtp.ts, on one core.
 *
 *   npm run bench:srtp -- [--packets N]   (default 200000)
 *
 * Prints one JSON line: µs per packet each way and the packets per second one core sustains,
 * with the load average (other jobs on the machine inflate the figures).
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { newMasterKey, SrtpContext } from '../../src/media/rtp/srtp.js';

const { values } = parseArgs({ options: { packets: { type: 'string', default: '200000' }, help: { type: 'boolean', default: false } } });
if (values.help) {
  process.stdout.write('Usage: npm run bench:srtp -- [--packets N]\nSRTP protect/unprotect cost per 20 ms PCMA packet (µs) on one core.\n');
  process.exit(0);
}
const n = Number(values.packets);
if (!Number.isInteger(n) || n < 1000) {
  process.stderr.write('--packets must be an integer of at least 1000\n');
  process.exit(2);
}
const ka = newMasterKey();
const kb = newMasterKey();
const sender = new SrtpContext({ local: ka, remote: kb });
const receiver = new SrtpContext({ local: kb, remote: ka });
const header = Buffer.alloc(12);
header[0] = 0x80;
header[1] = 8;
header.writeUInt32BE(0x11223344, 8);
const packet = Buffer.concat([header, Buffer.alloc(160, 0xd5)]);
const protectedPackets: Buffer[] = new Array<Buffer>(n);
const load = os.loadavg()[0]!;
let t0 = performance.now();
for (let i = 0; i < n; i++) {
  packet.writeUInt16BE(i & 0xffff, 2);
  packet.writeUInt32BE((i * 160) >>> 0, 4);
  protectedPackets[i] = sender.protectRtp(packet);
}
const protectUs = ((performance.now() - t0) * 1000) / n;
t0 = performance.now();
let ok = 0;
for (const p of protectedPackets) {
  if (receiver.unprotectRtp(p)) {
    ok++;
  }
}
const unprotectUs = ((performance.now() - t0) * 1000) / n;
if (ok !== n) {
  process.stderr.write(`only ${ok} of ${n} packets unprotected\n`);
  process.exit(1);
}
const r2 = (v: number): number => Math.round(v * 100) / 100;
process.stdout.write(
  `${JSON.stringify({ packets: n, protectUsPerPacket: r2(protectUs), unprotectUsPerPacket: r2(unprotectUs), packetsPerSecondOneCoreBothWays: Math.round(1e6 / (protectUs + unprotectUs)), loadAverage1m: r2(load) })}\n`,
);
