/**
 * SDES-SRTP for the trunk leg (RFC 3711 with keys from a=crypto, RFC 4568): the relay
 * (rtp-relay.ts) unprotects what the trunk sends before its own work on plain RTP/RTCP, and
 * protects what it sends to the trunk last.
 *
 * Session keys come from werift-rtp's key derivation (RFC 3711 §4.3, AES-CM PRF), and SRTCP is
 * werift-rtp's (its index travels in each packet). The SRTP transform itself is here, on Node's
 * crypto: werift-rtp guesses the rollover counter (ROC) from a ±100-packet neighbourhood of the
 * last sequence number, so a loss burst or a reordered packet across the 65535 → 0 wrap would
 * put it out of step for good. Here the packet index follows RFC 3711 §3.3.1 exactly (estimate v
 * from s_l and ROC, authenticate with it, then update s_l/ROC), the replay check of §3.3.2 (a
 * 64-packet window) runs on that same index, and the whole payload after the header, padding
 * included, is encrypted (§3.1). Any failure drops the packet; nothing throws.
 *
 * Only AES_CM_128_HMAC_SHA1_80 is offered or accepted here: the suite every SDES trunk and
 * endpoint offers (RFC 4568 §6.2.1); `_32` and AES-256 suites are not taken.
 */
import { createCipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { ProtectionProfileAes128CmHmacSha1_80, SrtcpSession, SrtpSession } from 'werift-rtp';

/** The one SDES crypto suite accepted (RFC 4568 §6.2.1). */
export const SRTP_SUITE = 'AES_CM_128_HMAC_SHA1_80';
const MASTER_KEY_BYTES = 16;
const MASTER_SALT_BYTES = 14;
const REPLAY_WINDOW = 64n;
/** AES_CM_128_HMAC_SHA1_80: 80-bit tag (RFC 3711 §4.2). */
const TAG_BYTES = 10;

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

/** Session keys of one direction of SRTP (RFC 3711 §4.3 labels 0, 1, 2). */
interface SrtpSessionKeys {
  encKey: Buffer;
  salt: Buffer;
  authKey: Buffer;
}

/** Per-SSRC index state of RFC 3711 §3.3.1: s_l (highest sequence number) and ROC. */
interface IndexState {
  roc: number;
  sl: number;
  window: ReplayWindow;
}

/**
 * RFC 3711 §3.3.1: the estimated ROC `v` of a packet with sequence number `seq`, given s_l and ROC.
 * Exported for tests.
 */
export function estimateRoc(state: { roc: number; sl: number }, seq: number): number {
  if (state.sl < 32768) {
    return seq - state.sl > 32768 ? state.roc - 1 : state.roc;
  }

  return state.sl - 32768 > seq ? state.roc + 1 : state.roc;
}

/**
 * Length of the part of an RTP packet SRTP leaves in clear (fixed header, CSRCs, extension), or -1.
 * Unlike rtpHeaderLength() it does not read the padding count, which SRTP encrypts.
 */
function clearHeaderLength(buf: Buffer): number {
  if (buf.length < 12 || buf[0]! >> 6 !== 2) {
    return -1;
  }
  let hl = 12 + (buf[0]! & 0x0f) * 4;
  if ((buf[0]! & 0x10) !== 0) {
    if (hl + 4 > buf.length) {
      return -1;
    }
    hl += 4 + buf.readUInt16BE(hl + 2) * 4;
  }

  return hl <= buf.length ? hl : -1;
}

/** RFC 3711 §3.3.1: updates s_l and ROC after packet (v, seq) authenticated. */
function advance(state: IndexState, v: number, seq: number): void {
  if (v === state.roc + 1) {
    state.roc = v;
    state.sl = seq;
  } else if (v === state.roc && seq > state.sl) {
    state.sl = seq;
  }
}

/** The AES-CM IV of RFC 3711 §4.1.1: (k_s · 2^16) XOR (SSRC · 2^64) XOR (i · 2^16). */
function counterIv(salt: Buffer, ssrc: number, roc: number, seq: number): Buffer {
  const iv = Buffer.alloc(16);
  salt.copy(iv, 0, 0, 14);
  iv.writeUInt32BE((iv.readUInt32BE(4) ^ ssrc) >>> 0, 4);
  iv.writeUInt32BE((iv.readUInt32BE(8) ^ roc) >>> 0, 8);
  iv.writeUInt16BE(iv.readUInt16BE(12) ^ seq, 12);

  return iv;
}

function authTag(keys: SrtpSessionKeys, authenticated: Buffer, roc: number): Buffer {
  const r = Buffer.alloc(4);
  r.writeUInt32BE(roc >>> 0);

  return createHmac('sha1', keys.authKey).update(authenticated).update(r).digest().subarray(0, TAG_BYTES);
}

function aesCm(keys: SrtpSessionKeys, iv: Buffer, data: Buffer): Buffer {
  return createCipheriv('aes-128-ctr', keys.encKey, iv).update(data);
}

/** SRTP and SRTCP state of one trunk leg. */
export class SrtpContext {
  readonly stats: SrtpStats = { rtpAuthFailures: 0, rtcpAuthFailures: 0, replays: 0 };
  readonly #tx: SrtpSessionKeys;
  readonly #rx: SrtpSessionKeys;
  readonly #srtcp: SrtcpSession;
  readonly #rxIndex = new Map<number, IndexState>();
  readonly #txIndex = new Map<number, IndexState>();
  readonly #rtcpWindows = new Map<number, ReplayWindow>();

  /** @param keys our master key and the remote's (from the accepted a=crypto lines) */
  constructor(keys: SrtpKeys) {
    const config = {
      keys: { localMasterKey: keys.local.key, localMasterSalt: keys.local.salt, remoteMasterKey: keys.remote.key, remoteMasterSalt: keys.remote.salt },
      profile: ProtectionProfileAes128CmHmacSha1_80,
    };
    // werift-rtp's key derivation (RFC 3711 §4.3) for both directions
    const derived = new SrtpSession(config);
    const pick = (c: { srtpSessionKey: Buffer; srtpSessionSalt: Buffer; srtpSessionAuthTag: Buffer }): SrtpSessionKeys => ({ encKey: c.srtpSessionKey, salt: c.srtpSessionSalt, authKey: c.srtpSessionAuthTag });
    this.#tx = pick(derived.localContext);
    this.#rx = pick(derived.remoteContext);
    this.#srtcp = new SrtcpSession(config);
  }

  /** The RTP packet inside an SRTP packet, or undefined (dropped: bad tag, replay, malformed). */
  unprotectRtp(packet: Buffer): Buffer | undefined {
    const end = packet.length - TAG_BYTES;
    const hl = end >= 12 ? clearHeaderLength(packet.subarray(0, end)) : -1;
    if (hl < 0) {
      this.stats.rtpAuthFailures++;

      return undefined;
    }
    const ssrc = packet.readUInt32BE(8);
    const seq = packet.readUInt16BE(2);
    const known = this.#rxIndex.get(ssrc);
    // a first packet of an SSRC: ROC 0 (SDES starts every stream at index = seq, §3.3.1)
    const state: IndexState = known ?? { roc: 0, sl: seq, window: new ReplayWindow() };
    const v = known ? estimateRoc(state, seq) : 0;
    if (v < 0) {
      this.stats.rtpAuthFailures++;

      return undefined;
    }
    const expected = authTag(this.#rx, packet.subarray(0, end), v);
    if (!timingSafeEqual(expected, packet.subarray(end))) {
      this.stats.rtpAuthFailures++;

      return undefined;
    }
    if (!state.window.accept(BigInt(v) * 65536n + BigInt(seq))) {
      this.stats.replays++;

      return undefined;
    }
    if (!known) {
      this.#rxIndex.set(ssrc, state);
    }
    advance(state, v, seq);
    const plain = Buffer.allocUnsafe(end);
    packet.copy(plain, 0, 0, hl);
    aesCm(this.#rx, counterIv(this.#rx.salt, ssrc, v, seq), packet.subarray(hl, end)).copy(plain, hl);

    return plain;
  }

  /** The SRTP packet of an RTP packet (header, CSRCs and extension in clear; the rest, padding included, encrypted). */
  protectRtp(packet: Buffer): Buffer {
    const hl = clearHeaderLength(packet);
    if (hl < 0) {
      throw new RangeError('not an RTP packet');
    }
    const ssrc = packet.readUInt32BE(8);
    const seq = packet.readUInt16BE(2);
    let state = this.#txIndex.get(ssrc);
    if (!state) {
      state = { roc: 0, sl: seq, window: new ReplayWindow() };
      this.#txIndex.set(ssrc, state);
    }
    const v = Math.max(0, estimateRoc(state, seq));
    advance(state, v, seq);
    const out = Buffer.allocUnsafe(packet.length + TAG_BYTES);
    packet.copy(out, 0, 0, hl);
    aesCm(this.#tx, counterIv(this.#tx.salt, ssrc, v, seq), packet.subarray(hl)).copy(out, hl);
    authTag(this.#tx, out.subarray(0, packet.length), v).copy(out, packet.length);

    return out;
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
