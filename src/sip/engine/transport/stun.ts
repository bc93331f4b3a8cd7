/**
 * STUN keep-alives on the SIP UDP port (RFC 5626 §4.4.2, §8.4): a SIP outbound device behind NAT
 * sends STUN Binding requests (RFC 5389) to the same port as its SIP and learns from the
 * XOR-MAPPED-ADDRESS of the answer whether its NAT binding (its flow) is still the same. Only the
 * Binding method is served, without authentication or FINGERPRINT checks, as RFC 5626 §8.4 asks of
 * a SIP server; anything else that looks like STUN is dropped.
 *
 * The answer goes to the datagram's source, which UDP cannot verify: {@link StunResponder} answers
 * only when the engine serves SIP devices (`sipDevices.enabled`) and at a bounded rate (per source
 * address and in total), so that the SIP port is no reflector. Nothing here throws on any input.
 */
import ipaddr from 'ipaddr.js';
import { sourceGroup } from '../../../security/source-group.js';

const MAGIC_COOKIE = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const XOR_MAPPED_ADDRESS = 0x0020;

/**
 * Whether a datagram is a STUN message (RFC 5389 §6: the two top bits zero, the magic cookie, a
 * length that matches and is a multiple of 4). SIP text never starts with a byte below 0x40.
 */
export function isStun(data: Buffer): boolean {
  return data.length >= 20 && (data[0]! & 0xc0) === 0 && data.readUInt32BE(4) === MAGIC_COOKIE && data.readUInt16BE(2) === data.length - 20 && data.readUInt16BE(2) % 4 === 0;
}

/**
 * The 4 or 16 bytes of an address as a STUN XOR-MAPPED-ADDRESS carries it, or undefined when it is
 * not an IP address. An IPv6 zone (`fe80::1%eth0`) is not part of the address on the wire (RFC 4007
 * §6) and is left out; an IPv4-mapped IPv6 source (`::ffff:192.0.2.1`, a dual-stack socket) is
 * answered as the IPv4 address it is.
 */
function addressBytes(address: string): { family: 1 | 2; bytes: Buffer } | undefined {
  const bare = address.replace(/^\[|\]$/g, '').split('%')[0]!;
  if (!ipaddr.isValid(bare)) {
    return undefined;
  }
  try {
    const a = ipaddr.process(bare);

    return { family: a.kind() === 'ipv4' ? 1 : 2, bytes: Buffer.from(a.toByteArray()) };
  } catch {
    return undefined;
  }
}

/**
 * The Binding success response to a STUN Binding request from `remote` (XOR-MAPPED-ADDRESS,
 * RFC 5389 §15.2), or undefined when `data` is not a Binding request or `remote` no IP address
 * (port 0 to 65535). Never throws.
 */
export function stunBindingResponse(data: Buffer, remote: { address: string; port: number }): Buffer | undefined {
  if (!isStun(data) || data.readUInt16BE(0) !== BINDING_REQUEST) {
    return undefined;
  }
  const addr = addressBytes(remote.address);
  if (!addr || !Number.isInteger(remote.port) || remote.port < 0 || remote.port > 65535) {
    return undefined;
  }
  const txn = data.subarray(8, 20);
  const xorKey = Buffer.concat([Buffer.from([0x21, 0x12, 0xa4, 0x42]), txn]);
  const xAddr = Buffer.from(addr.bytes.map((b, i) => b ^ xorKey[i]!));
  const attr = Buffer.alloc(4 + 4 + addr.bytes.length);
  attr.writeUInt16BE(XOR_MAPPED_ADDRESS, 0);
  attr.writeUInt16BE(4 + addr.bytes.length, 2);
  attr.writeUInt8(0, 4);
  attr.writeUInt8(addr.family, 5);
  attr.writeUInt16BE(remote.port ^ (MAGIC_COOKIE >>> 16), 6);
  xAddr.copy(attr, 8);
  const header = Buffer.alloc(20);
  header.writeUInt16BE(BINDING_SUCCESS, 0);
  header.writeUInt16BE(attr.length, 2);
  header.writeUInt32BE(MAGIC_COOKIE, 4);
  txn.copy(header, 8);

  return Buffer.concat([header, attr]);
}

/** Options of StunResponder (rates in answers per second). */
export interface StunResponderOptions {
  /** Answers per source address per second (default 5; a device sends one every 20 s or more). */
  perSourcePerSecond?: number;
  /** Answers per second in total (default 2000). */
  totalPerSecond?: number;
  /** Most source addresses tracked at once (default 10 000; the oldest second's entries go first). */
  maxSources?: number;
  /** The clock (ms; tests). */
  now?: () => number;
}

/**
 * Answers STUN Binding requests at a bounded rate: at most `perSourcePerSecond` per source address
 * (IPv6 sources grouped by /64, one host's addresses) and `totalPerSecond` in all, counted in
 * one-second windows; requests over either limit are dropped unanswered.
 */
export class StunResponder {
  readonly #perSource: number;
  readonly #total: number;
  readonly #max: number;
  readonly #now: () => number;
  #window = -1;
  #count = 0;
  readonly #bySource = new Map<string, number>();
  /** Requests dropped over a rate limit (for tests and logs). */
  dropped = 0;

  constructor(opts: StunResponderOptions = {}) {
    this.#perSource = opts.perSourcePerSecond ?? 5;
    this.#total = opts.totalPerSecond ?? 2000;
    this.#max = opts.maxSources ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** The answer to send back to `remote`, or undefined (not a Binding request, or over a limit). Never throws. */
  answer(data: Buffer, remote: { address: string; port: number }): Buffer | undefined {
    const res = stunBindingResponse(data, remote);
    if (!res) {
      return undefined;
    }
    const w = Math.floor(this.#now() / 1000);
    if (w !== this.#window) {
      this.#window = w;
      this.#count = 0;
      this.#bySource.clear();
    }
    const key = sourceGroup(remote.address);
    const n = this.#bySource.get(key) ?? 0;
    if (this.#count >= this.#total || n >= this.#perSource || (n === 0 && this.#bySource.size >= this.#max)) {
      this.dropped++;

      return undefined;
    }
    this.#bySource.set(key, n + 1);
    this.#count++;

    return res;
  }
}
