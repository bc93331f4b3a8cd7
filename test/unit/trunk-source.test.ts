import { describe, expect, it } from 'vitest';
import { TrunkDirectory, type TrunkConfig, trunkSource } from '../../src/sip/trunks.js';

const kamailio = ['10.0.0.10', '2001:db8:ffff::/64'];

describe('trunkSource()', () => {
  it('takes the address in X-RB-Source when the packet comes from a trusted proxy (IPv4)', () => {
    expect(trunkSource('10.0.0.10', '198.51.100.7:5060;transport=udp', kamailio)).toEqual({ address: '198.51.100.7', viaProxy: true });
    expect(trunkSource('10.0.0.10', '198.51.100.7', kamailio)).toEqual({ address: '198.51.100.7', viaProxy: true });
    expect(trunkSource('10.0.0.10', ' 198.51.100.7:5080 ; transport=tcp ', kamailio)).toEqual({ address: '198.51.100.7', viaProxy: true });
  });

  it('matches the proxy by CIDR block and handles IPv6 on both sides', () => {
    expect(trunkSource('2001:db8:ffff::5', '[2001:db8::7]:5060;transport=udp', kamailio)).toEqual({ address: '2001:db8::7', viaProxy: true });
    expect(trunkSource('[2001:db8:ffff::5]', '[2001:DB8:0::7]', kamailio)).toEqual({ address: '2001:db8::7', viaProxy: true });
    // a bare IPv6 literal (no port) is accepted too
    expect(trunkSource('2001:db8:ffff::5', '2001:db8::7', kamailio)).toEqual({ address: '2001:db8::7', viaProxy: true });
    // an IPv6 proxy stamping an IPv4 trunk, and an IPv4-mapped packet source
    expect(trunkSource('2001:db8:ffff::5', '198.51.100.7:5060', kamailio)).toEqual({ address: '198.51.100.7', viaProxy: true });
    expect(trunkSource('::ffff:10.0.0.10', '[::ffff:198.51.100.7]:5060', kamailio)).toEqual({ address: '198.51.100.7', viaProxy: true });
  });

  it('ignores a spoofed header from a source that is no trusted proxy, and says so', () => {
    expect(trunkSource('203.0.113.66', '198.51.100.7:5060', kamailio)).toEqual({ address: '203.0.113.66', viaProxy: false, ignored: 'untrusted' });
    expect(trunkSource('2001:db8:1::66', '[2001:db8::7]', kamailio)).toEqual({ address: '2001:db8:1::66', viaProxy: false, ignored: 'untrusted' });
    // no proxies configured (the default): the header never counts
    expect(trunkSource('10.0.0.10', '198.51.100.7', [])).toEqual({ address: '10.0.0.10', viaProxy: false, ignored: 'untrusted' });
  });

  it('uses the packet source when there is no header and no proxy', () => {
    expect(trunkSource('203.0.113.66', undefined, kamailio)).toEqual({ address: '203.0.113.66', viaProxy: false });
    expect(trunkSource('203.0.113.66', '', [])).toEqual({ address: '203.0.113.66', viaProxy: false });
  });

  it('gives no address (not the proxy\'s) when a trusted proxy sends no header or a malformed one', () => {
    expect(trunkSource('10.0.0.10', undefined, kamailio)).toEqual({ address: '', viaProxy: true, ignored: 'missing' });
    expect(trunkSource('10.0.0.10', '  ', kamailio)).toEqual({ address: '', viaProxy: true, ignored: 'missing' });
    for (const bad of [
      'carrier.example.net',
      '198.51.100.7:0',
      '198.51.100.7:65536',
      '198.51.100.256',
      '198.51.100',
      '2001:db8::7:5060:',
      '[198.51.100.7]:5060',
      '[2001:db8::zz]:5060',
      '198.51.100.7, 203.0.113.66', // two headers folded into one value
      'sip:198.51.100.7:5060',
    ]) {
      expect(trunkSource('10.0.0.10', bad, kamailio), bad).toEqual({ address: '', viaProxy: true, ignored: 'malformed' });
    }
  });

  it('feeds TrunkDirectory.admit(): a trunk behind the proxy is admitted by its own address, the proxy\'s admits nobody', () => {
    const trunk = {
      id: 'carrier',
      inbound: { allow: ['198.51.100.0/24'], auth: { username: '', password: '', realm: '' } },
    } as unknown as TrunkConfig;
    const dir = new TrunkDirectory([trunk]);
    const admit = (src: string, header?: string) => dir.admit(trunkSource(src, header, kamailio).address, 'INVITE', undefined);
    expect(admit('10.0.0.10', '198.51.100.7:5060;transport=udp')).toMatchObject({ ok: true, via: 'address' });
    expect(admit('10.0.0.10', '203.0.113.66:5060;transport=udp')).toMatchObject({ ok: false, status: 403 });
    expect(admit('10.0.0.10')).toMatchObject({ ok: false, status: 403 });
    expect(admit('10.0.0.10', 'garbage')).toMatchObject({ ok: false, status: 403 });
    // straight from the trunk, no proxy: as before
    expect(admit('198.51.100.7')).toMatchObject({ ok: true, via: 'address' });
    // a direct caller that names a trunk address in the header gets nowhere
    expect(admit('203.0.113.66', '198.51.100.7')).toMatchObject({ ok: false, status: 403 });
  });
});
