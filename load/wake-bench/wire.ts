/**
 * The wire's view of the wake path: dumpcap records, on `lo`, the trunk's SIP to the gateway's UDP
 * port and the gateway's TLS connection to the provider; tshark then reads the INVITEs (kernel time
 * stamp, Call-ID, Request-URI user) and, with the provider's TLS key log, the HTTP/2 HEADERS frames
 * the gateway sent (kernel time stamp, `:path` = `/3/device/<token>`).
 *
 * A capture on `lo` time-stamps a packet as its sender hands it to the loopback device, in the
 * sender's system call. So an INVITE's stamp is the moment it reaches the gateway's host (before
 * the gateway's socket holds it), and a push's stamp is the moment the gateway's TLS write puts it
 * on the wire toward the provider: exactly the span issue 6 asks for, with no process's scheduling
 * in either stamp (sipp's own log stamps a message after its sendto returns, so a preempted sipp
 * logs it late).
 */
import { spawn } from 'node:child_process';
import { type Capture, startDumpcap } from '../calls-bench/rtp-capture.js';

/** A running dumpcap. */
export type WireCapture = Capture;

/** Starts dumpcap on `lo` for the gateway's SIP UDP port and the provider's TCP port; resolves once it captures. */
export function startWireCapture(sipPort: number, providerPort: number, file: string, timeoutMs = 10_000): Promise<WireCapture> {
  return startDumpcap(`udp port ${sipPort} or tcp port ${providerPort}`, ['-B', '64'], file, timeoutMs);
}

/** An INVITE on the wire. */
export interface WireInvite {
  callId: string;
  did: string;
  /** Kernel time stamp of its first transmission, µs since the epoch. */
  tUs: number;
}

/** A push request (HTTP/2 HEADERS frame, client → provider) on the wire. */
export interface WirePush {
  /** The device token of the path (the benchmark's tokens say whether it is a VoIP or an alert token). */
  token: string;
  tUs: number;
}

/** Epoch seconds with up to 9 decimals → µs. */
function epochUs(s: string): number {
  const [sec, frac = '0'] = s.split('.');

  return Number(sec) * 1e6 + Number(frac.padEnd(6, '0').slice(0, 6));
}

function tshark(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('tshark', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) {
        resolve(Buffer.concat(out).toString('utf8'));
      } else {
        reject(new Error(`tshark exited ${code}: ${err.trim().slice(-1000)}`));
      }
    });
  });
}

/**
 * Reads a capture: the first transmission of every INVITE to the gateway, and every push request
 * the gateway sent the provider (TCP retransmissions left out) (decrypted with the key log; several HEADERS frames in one packet
 * each get that packet's stamp).
 */
export async function readWireCapture(file: string, keylog: string, providerPort: number): Promise<{ invites: WireInvite[]; pushes: WirePush[] }> {
  const sip = await tshark(['-r', file, '-n', '-Y', 'sip.Method == "INVITE" && !sip.Status-Code', '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=f', '-e', 'frame.time_epoch', '-e', 'sip.Call-ID', '-e', 'sip.r-uri.user']);
  const invites = new Map<string, WireInvite>();
  for (const line of sip.split('\n')) {
    const [t, callId, did] = line.split('\t');
    if (!t || !callId || invites.has(callId)) {
      continue;
    }
    invites.set(callId, { callId, did: did ?? '', tUs: epochUs(t) });
  }
  const h2 = await tshark([
    '-r', file, '-n',
    '-o', `tls.keylog_file:${keylog}`,
    '-d', `tcp.port==${providerPort},tls`,
    // a TCP retransmission repeats the HEADERS frame: the push left once, at its first transmission
    '-Y', `tcp.dstport == ${providerPort} && http2.headers.path && !tcp.analysis.retransmission && !tcp.analysis.fast_retransmission`,
    '-T', 'fields', '-E', 'separator=/t', '-E', 'aggregator=,', '-E', 'occurrence=a',
    '-e', 'frame.time_epoch', '-e', 'http2.headers.path',
  ]);
  const pushes: WirePush[] = [];
  for (const line of h2.split('\n')) {
    const [t, paths] = line.split('\t');
    if (!t || !paths) {
      continue;
    }
    for (const p of paths.split(',')) {
      const token = /^\/3\/device\/([0-9a-fA-F]+)$/.exec(p)?.[1];
      if (token) {
        pushes.push({ token, tUs: epochUs(t) });
      }
    }
  }

  return { invites: [...invites.values()], pushes };
}
