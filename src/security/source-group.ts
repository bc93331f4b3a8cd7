/**
 * The unit a per-source limit counts: an IPv4 address as is, an IPv6 address by its /64 prefix
 * (RFC 4291 §2.5.4: one subnet, usually one host or one customer, who can use any of its 2^64
 * addresses; counting each address alone would let one host rotate through them). IPv4-mapped
 * IPv6 addresses (`::ffff:192.0.2.1`, dual-stack sockets) count as the IPv4 address; an IPv6 zone
 * (`fe80::1%eth0`) is left out. Pure, never throws: a string that is no IP address is returned
 * trimmed and lower-cased (at most 64 characters), so that it still counts against something.
 */
import ipaddr from 'ipaddr.js';

/** The source group of an address (see the module comment): `192.0.2.1`, `2001:db8:1:2::/64`. */
export function sourceGroup(address: string): string {
  const bare = address.trim().replace(/^\[|\]$/g, '').split('%')[0]!;
  if (ipaddr.isValid(bare)) {
    try {
      const a = ipaddr.process(bare);
      if (a.kind() === 'ipv6') {
        return `${(a as ipaddr.IPv6).parts
          .slice(0, 4)
          .map((p) => p.toString(16))
          .join(':')}::/64`;
      }

      return a.toString();
    } catch {
      // fall through: counted by its text
    }
  }

  return bare.toLowerCase().slice(0, 64);
}
