/**
 * Throwaway TLS material for tests: a private CA, a server certificate for the loopback names
 * (127.0.0.1, ::1, localhost) and a client certificate, all signed by that CA and written as PEM
 * files into a fresh temporary directory.
 *
 * - Made with the `openssl` CLI (Debian's openssl package, always present): Node's crypto can make
 *   keys but not X.509 certificates, and a new npm dependency is not worth it for this.
 * - Keys are EC P-256 by default (fast to make; OpenSSL 3, Node and baresip's libre accept them);
 *   `keyType: 'rsa'` gives RSA 2048 for peers that want RSA.
 * - Each call makes a new CA, so two calls give two CAs that do not trust each other's
 *   certificates: the second one is the "wrong CA" of negative tests.
 * - Certificates are valid from the moment they are made for two days (the CA for three); the peers
 *   of a test run on this machine and share its clock.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Options of `createTestCerts`. */
export interface TestCertOptions {
  /** Subject alternative names of the server certificate: IPs and DNS names. Default 127.0.0.1, ::1, localhost. */
  hosts?: string[];
  /** Common name of the server certificate. Default `localhost`. */
  commonName?: string;
  /** Common name of the CA. Default `ringbridge test CA <random>`. */
  caName?: string;
  /** Key algorithm. Default `'ec'` (P-256). */
  keyType?: 'ec' | 'rsa';
  /** Directory to write into (created if missing). Default: a new directory under the OS temp dir. */
  dir?: string;
}

/** PEM files made by `createTestCerts`. */
export interface TestCerts {
  /** The directory holding every file. */
  dir: string;
  /** The CA certificate: what a peer needs to trust the other certificates. */
  caFile: string;
  /** The CA private key (to sign more certificates with `openssl x509 -req -CA ... -CAkey ...`). */
  caKeyFile: string;
  /** Server certificate (leaf only) for `hosts`; extended key usage serverAuth and clientAuth. */
  certFile: string;
  /** Private key of `certFile`. */
  keyFile: string;
  /** `certFile` followed by `keyFile` in one file: what baresip's `sip_certificate` wants. */
  combinedFile: string;
  /** Client certificate (CN `client`, clientAuth only). */
  clientCertFile: string;
  /** Private key of `clientCertFile`. */
  clientKeyFile: string;
  /** `clientCertFile` followed by `clientKeyFile`. */
  clientCombinedFile: string;
  /** The CA certificate's PEM text, for Node's `tls` options (`ca`). */
  caPem: string;
  /** Removes `dir` and everything in it. */
  cleanup(): void;
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string; code?: unknown };
    if (e.code === 'ENOENT') {
      throw new Error('openssl not found: the test certificates need the openssl command (Debian package openssl)', { cause: err });
    }
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

function keyArgs(keyType: 'ec' | 'rsa'): string[] {
  return keyType === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
}

/**
 * Makes a fresh CA and a server and a client certificate signed by it, as PEM files in a
 * temporary directory (see the file comment). Call `cleanup()` when done.
 */
export async function createTestCerts(opts: TestCertOptions = {}): Promise<TestCerts> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'rb-tls-'));
  fs.mkdirSync(dir, { recursive: true });
  const keyType = opts.keyType ?? 'ec';
  const hosts = opts.hosts ?? ['127.0.0.1', '::1', 'localhost'];
  const caName = opts.caName ?? `ringbridge test CA ${Math.random().toString(16).slice(2, 10)}`;
  const f = (name: string) => path.join(dir, name);

  // The CA: self-signed, allowed to sign certificates only.
  fs.writeFileSync(
    f('ca.cnf'),
    [
      '[req]',
      'distinguished_name = dn',
      'x509_extensions = v3_ca',
      'prompt = no',
      '[dn]',
      `CN = ${caName}`,
      '[v3_ca]',
      'basicConstraints = critical, CA:TRUE, pathlen:0',
      'keyUsage = critical, keyCertSign, cRLSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  await openssl(['req', '-x509', ...keyArgs(keyType), '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3', '-config', 'ca.cnf'], dir);

  const san = hosts.map((h) => (isIp(h) ? `IP:${h}` : `DNS:${h}`)).join(', ');
  const leaf = async (name: string, cn: string, eku: string, subjectAltName?: string): Promise<void> => {
    fs.writeFileSync(
      f(`${name}.ext`),
      [
        'basicConstraints = critical, CA:FALSE',
        `keyUsage = critical, digitalSignature${keyType === 'rsa' ? ', keyEncipherment' : ''}`,
        `extendedKeyUsage = ${eku}`,
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        ...(subjectAltName ? [`subjectAltName = ${subjectAltName}`] : []),
        '',
      ].join('\n'),
    );
    await openssl(['req', '-new', ...keyArgs(keyType), '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    await openssl(
      ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${randomSerial()}`, '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`],
      dir,
    );
    fs.writeFileSync(f(`${name}-combined.pem`), fs.readFileSync(f(`${name}.pem`), 'utf8') + fs.readFileSync(f(`${name}.key`), 'utf8'));
    fs.rmSync(f(`${name}.csr`));
  };
  await leaf('server', opts.commonName ?? 'localhost', 'serverAuth, clientAuth', san);
  await leaf('client', 'client', 'clientAuth');
  for (const file of fs.readdirSync(dir)) {
    if (file.endsWith('.key')) {
      fs.chmodSync(f(file), 0o600);
    }
  }

  return {
    dir,
    caFile: f('ca.pem'),
    caKeyFile: f('ca.key'),
    certFile: f('server.pem'),
    keyFile: f('server.key'),
    combinedFile: f('server-combined.pem'),
    clientCertFile: f('client.pem'),
    clientKeyFile: f('client.key'),
    clientCombinedFile: f('client-combined.pem'),
    caPem: fs.readFileSync(f('ca.pem'), 'utf8'),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

function randomSerial(): string {
  // 64 random bits with the top bit cleared: a positive serial number.
  const b = randomBytes(8);
  b[0] = b[0]! & 0x7f;

  return b.toString('hex');
}
