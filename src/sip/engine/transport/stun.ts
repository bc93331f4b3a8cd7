/**
 * STUN keep-alives on the SIP UDP port (RFC 5626 §4.4.2, §8.4): a SIP outbound device behind NAT
 * sends STUN Binding requests (RFC 5389) to the same port as its SIP and learns from the
 * XOR-MAPPED-ADDRESS of the answer whether its NAT binding (its flow) is still the same. Only the
 * Binding method is served, without authentication or FINGERPRINT checks, as RFC 5626 §8.4 asks of
 * a SIP server; anything else that looks like STUN is dropped.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

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
 * The Binding success response to a STUN Binding request from `remote` (XOR-MAPPED-ADDRESS,
 * RFC 5389 §15.2), or undefined when `data` is not a Binding request.
 */
export function stunBindingResponse(data: Buffer, remote: { address: string; port: number }): Buffer | undefined {
  if (!isStun(data) || data.readUInt16BE(0) !== BINDING_REQUEST) {
    return undefined;
  }
  const family = isIP(remote.address);
  if (family === 0) {
    return undefined;
  }
  const txn = data.subarray(8, 20);
  const addr = Buffer.from(ipaddr.parse(remote.address).toByteArray());
  const xorKey = Buffer.concat([Buffer.from([0x21, 0x12, 0xa4, 0x42]), txn]);
  const xAddr = Buffer.from(addr.map((b, i) => b ^ xorKey[i]!));
  const attr = Buffer.alloc(4 + 4 + addr.length);
  attr.writeUInt16BE(XOR_MAPPED_ADDRESS, 0);
  attr.writeUInt16BE(4 + addr.length, 2);
  attr.writeUInt8(0, 4);
  attr.writeUInt8(family === 4 ? 0x01 : 0x02, 5);
  attr.writeUInt16BE(remote.port ^ (MAGIC_COOKIE >>> 16), 6);
  xAddr.copy(attr, 8);
  const header = Buffer.alloc(20);
  header.writeUInt16BE(BINDING_SUCCESS, 0);
  header.writeUInt16BE(attr.length, 2);
  header.writeUInt32BE(MAGIC_COOKIE, 4);
  txn.copy(header, 8);

  return Buffer.concat([header, attr]);
}
