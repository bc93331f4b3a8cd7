/**
 * Set-up shared by the call-centre e2e tests (test/e2e/callcentre-*.test.ts): the number a
 * transfer, consultation, REFER or queue fallback dials (a sipp UAS with a capture of what it
 * hears), and the test trunk `carrier` that calls in from loopback and dials out to it.
 */
import { captureTone, type ToneCapture } from './rtp-tone.js';
import { freePort, type SippProcess, startSipp } from './sipp.js';

/**
 * Starts the dialled number: sipp `trunk-uas-answer-rtp` answering with RTP, and a tshark capture
 * of its media port. Both are pushed onto the test's lists for its afterEach to stop.
 */
export async function startNumber(track: { sipps: SippProcess[]; captures: ToneCapture[] }): Promise<{ number: SippProcess; atNumber: ToneCapture }> {
  const media = await freePort();
  const atNumber = captureTone(media);
  track.captures.push(atNumber);
  await atNumber.ready;
  const number = startSipp({ scenario: 'trunk-uas-answer-rtp', extraArgs: ['-mp', String(media)], timeoutMs: 40_000 });
  track.sipps.push(number);
  await number.ready;

  return { number, atNumber };
}

/** The trunk `carrier`: inbound from 127.0.0.0/8 without digest, outbound to sipp at `port` (PCMA, PCMU). */
export function carrierTrunk(port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'carrier',
    inbound: { allow: ['127.0.0.0/8'], auth: { username: '', password: '', realm: 'ringbridge.test' } },
    outbound: { uri: `sip:127.0.0.1:${port}`, proxy: '', auth: { username: '', password: '' }, callerId: '' },
    codecs: ['PCMA', 'PCMU'],
    media: { latching: false },
    ...extra,
  };
}
