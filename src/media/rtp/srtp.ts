/**
 * SDES-SRTP for the trunk leg (RFC 3711 with keys from a=crypto, RFC 4568): the relay
 * (rtp-relay.ts) unprotects what the trunk sends before its own work on plain RTP/RTCP, and
 * protects what it sends to the trunk last.
 *
 * The cipher is werift-rtp's SRTP/SRTCP (AES_CM_128_HMAC_SHA1_80, RFC 3711 §4.1.1 and §4.2.1,
 * packet index and ROC per §3.3.1). On top of it this adds the replay check of RFC 3711 §3.3.2
 * (a 64-packet window per SSRC for SRTP, per SRTCP index for SRTCP), which the library leaves to
 * its user, and turns any authentication failure into a dropped packet instead of an exception.
 *
 * Only AES_CM_128_HMAC_SHA1_80 is offered or accepted here: the suite every SDES trunk and
 * endpoint offers (RFC 4568 §6.2.1); `_32` and AES-256 suites are not taken.
 */
import { ProtectionProfileAes128CmHmacSha1_80, RtpPacket, SrtcpSession, SrtpSession } from 'werift-rtp';
import { randomBytes } from 'node:crypto';

/** The one SDES crypto suite accepted (RFC 4568 §6.2.1). */
export const SRTP_SUITE = 'AES_CM_128_HMAC_SHA1_80';
const MASTER_KEY_BYTES = 16;
const MASTER_SALT_BYTES = 14;
const REPLAY_WINDOW = 64n;

/** A master key and salt (30 bytes in SDES inline form). */
export interface SrtpMasterKey {
  key: Buffer;
  salt: Buffer;
}

/** Keys of one SRTP stream pair: ours (we protect with it) and the remote's (we unprotect with it). */
export interface SrtpKeys {
  local: SrtpMasterKey;
  remote: SrtpMasterKey;
}

/** A new random master key and salt (RFC 3711 §8.1: from a cryptographically secure source). */
export function newMasterKey(): SrtpMasterKey {
  const b = randomBytes(MASTER_KEY_BYTES + MASTER_SALT_BYTES);

  return { key: b.subarray(0, MASTER_KEY_BYTES), salt: b.subarray(MASTER_KEY_BYTES) };
}

/** The SDES key-params (`inline:<base64 key||salt>`, RFC 4568 §6.1) of a master key. */
export function toKeyParams(k: SrtpMasterKey): string {
  return `inline:${Buffer.concat([k.key, k.salt]).toString('base64')}`;
}

/**
 * The master key of SDES key-params, or undefined when they are not one inline key of 30 bytes
 * (a lifetime `|2^31` is accepted; an MKI, `|1:4`, is not, since our packets carry none).
 */
export function fromKeyParams(keyParams: string): SrtpMasterKey | undefined {
  const first = keyParams.split(';')[0]!;
  const m = /^inline:([A-Za-z0-9+/]+={0,2})(\|(2\^\d+|\d+))?$/.exec(first);
  if (!m) {
    return undefined;
  }
  const raw = Buffer.from(m[1]!, 'base64');
  if (raw.length !== MASTER_KEY_BYTES + MASTER_SALT_BYTES) {
    return undefined;
  }

  return { key: raw.subarray(0, MASTER_KEY_BYTES), salt: raw.subarray(MASTER_KEY_BYTES) };
}

/** RFC 3711 §3.3.2 sliding window over 48-bit (SRTP) or 31-bit (SRTCP) indexes. */
class ReplayWindow {
  #highest = -1n;
  #bits = 0n;

  /** Whether `index` is new; records it when it is. */
  accept(index: bigint): boolean {
    if (index > this.#highest) {
      const shift = this.#highest < 0n ? REPLAY_WINDOW : index - this.#highest;
      this.#bits = shift >= REPLAY_WINDOW ? 1n : ((this.#bits << shift) | 1n) & ((1n << REPLAY_WINDOW) - 1n);
      this.#highest = index;

      return true;
    }
    const back = this.#highest - index;
    if (back >= REPLAY_WINDOW || (this.#bits & (1n << back)) !== 0n) {
      return false;
    }
    this.#bits |= 1n << back;

    return true;
  }
}

/** Counters of an SrtpContext, for the relay's stats. */
export interface SrtpStats {
  /** SRTP packets dropped because their authentication tag did not verify (or they did not parse). */
  rtpAuthFailures: number;
  /** SRTCP packets dropped for the same reasons. */
  rtcpAuthFailures: number;
  /** Packets dropped as replays (RFC 3711 §3.3.2). */
  replays: number;
}

/** SRTP and SRTCP state of one trunk leg. */
export class SrtpContext {
  readonly stats: SrtpStats = { rtpAuthFailures: 0, rtcpAuthFailures: 0, replays: 0 };
  readonly #srtp: SrtpSession;
  readonly #srtcp: SrtcpSession;
  readonly #rtpWindows = new Map<number, { roc: bigint; lastSeq: number; window: ReplayWindow }>();
  readonly #rtcpWindows = new Map<number, ReplayWindow>();

  /** @param keys our master key and the remote's (from the accepted a=crypto lines) */
  constructor(keys: SrtpKeys) {
    const config = {
      keys: { localMasterKey: keys.local.key, localMasterSalt: keys.local.salt, remoteMasterKey: keys.remote.key, remoteMasterSalt: keys.remote.salt },
      profile: ProtectionProfileAes128CmHmacSha1_80,
    };
    this.#srtp = new SrtpSession(config);
    this.#srtcp = new SrtcpSession(config);
  }

  /** The RTP packet inside an SRTP packet, or undefined (dropped: bad tag, replay, malformed). */
  unprotectRtp(packet: Buffer): Buffer | undefined {
    let plain: Buffer;
    try {
      plain = this.#srtp.decrypt(packet);
    } catch {
      this.stats.rtpAuthFailures++;

      return undefined;
    }
    const ssrc = plain.readUInt32BE(8);
    const seq = plain.readUInt16BE(2);
    let s = this.#rtpWindows.get(ssrc);
    if (!s) {
      s = { roc: 0n, lastSeq: seq, window: new ReplayWindow() };
      this.#rtpWindows.set(ssrc, s);
    } else {
      // our own estimate of the packet index, as §3.3.1 (a wrap forward bumps the ROC)
      if (seq < s.lastSeq && s.lastSeq - seq > 0x8000) {
        s.roc++;
      }
    }
    const index = (s.roc << 16n) | BigInt(seq);
    if (!s.window.accept(index)) {
      this.stats.replays++;

      return undefined;
    }
    if (((seq - s.lastSeq) & 0xffff) < 0x8000) {
      s.lastSeq = seq;
    }

    return plain;
  }

  /** The SRTP packet of an RTP packet. */
  protectRtp(packet: Buffer): Buffer {
    const rtp = RtpPacket.deSerialize(packet);

    return this.#srtp.encrypt(rtp.payload, rtp.header);
  }

  /** The RTCP compound packet inside an SRTCP packet, or undefined (dropped). */
  unprotectRtcp(packet: Buffer): Buffer | undefined {
    if (packet.length < 8 + 4 + 10) {
      this.stats.rtcpAuthFailures++;

      return undefined;
    }
    let plain: Buffer;
    try {
      plain = this.#srtcp.decrypt(packet);
    } catch {
      // e.g. plain RTCP from a peer that sends its last BYE unprotected (seen from baresip 1.0)
      this.stats.rtcpAuthFailures++;

      return undefined;
    }
    // E flag and SRTCP index: the 4 bytes before the 10-byte tag (RFC 3711 §3.4)
    const index = BigInt(packet.readUInt32BE(packet.length - 14) & 0x7fffffff);
    const ssrc = packet.readUInt32BE(4);
    let w = this.#rtcpWindows.get(ssrc);
    if (!w) {
      w = new ReplayWindow();
      this.#rtcpWindows.set(ssrc, w);
    }
    if (!w.accept(index)) {
      this.stats.replays++;

      return undefined;
    }

    return plain;
  }

  /** The SRTCP packet of an RTCP compound packet. */
  protectRtcp(packet: Buffer): Buffer {
    return this.#srtcp.encrypt(packet);
  }
}
