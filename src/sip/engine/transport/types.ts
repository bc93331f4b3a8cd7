/**
 * Shared shapes of the SIP transport layer (RFC 3261 §18).
 */

/** A SIP transport protocol, lower case as in the drachtio wire protocol's meta fields. */
export type SipProtocol = 'udp' | 'tcp' | 'tls';

/** Whether a protocol is reliable (no retransmissions at the transaction layer). */
export function isReliable(p: SipProtocol): boolean {
  return p !== 'udp';
}

/** An address and port; IPv6 addresses without brackets. */
export interface HostPort {
  address: string;
  port: number;
}

/** One listening socket of the engine. */
export interface ListenPoint {
  protocol: SipProtocol;
  /** Bound address ("0.0.0.0", "::", or a specific one). */
  address: string;
  port: number;
  /** Address written into Via, Contact and Record-Route for this listener. */
  advertisedAddress: string;
  /** Port written into Via, Contact and Record-Route (the bound port). */
  advertisedPort: number;
  family: 4 | 6;
}

/**
 * The path a message took or should take: protocol, both ends, and for TCP/TLS the connection.
 * RFC 3261 §18.2.2 sends responses back over the connection the request came on; RFC 5626 calls
 * this a flow.
 */
export interface Flow {
  protocol: SipProtocol;
  local: HostPort;
  remote: HostPort;
  /** Stream connection id for TCP/TLS; undefined for UDP. */
  connectionId?: string;
}

/** Where to send a message. */
export interface Destination {
  protocol: SipProtocol;
  /** IP address or host name (resolved with the system resolver, /etc/hosts included). */
  host: string;
  port: number;
  /** Prefer this flow (its connection for TCP/TLS) when it is still open. */
  flow?: Flow;
}

/** Formats an address for a URI or Via: IPv6 in brackets. */
export function formatHost(address: string): string {
  return address.includes(':') && !address.startsWith('[') ? `[${address}]` : address;
}

/** The meta "protocol" value for a Via transport token (WS/WSS reported as tcp, per the reference). */
export function protocolFromViaTransport(t: string): SipProtocol | undefined {
  switch (t.toUpperCase()) {
    case 'UDP':
      return 'udp';
    case 'TCP':
    case 'WS':
      return 'tcp';
    case 'TLS':
    case 'WSS':
      return 'tls';
    default:
      return undefined;
  }
}
