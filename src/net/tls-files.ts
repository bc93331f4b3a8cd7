/**
 * TLS certificates from PEM files, reloaded when the files change.
 *
 * A listener (HTTPS/WSS, SIP over TLS) is built from `loadTlsFiles()`; a `TlsFileWatcher` then
 * polls the files (stat every `intervalMs`, so a certbot-style symlink swap or an atomic rename is
 * seen like an in-place write) and, when one changed, reads them all again, checks that they make
 * a usable context (key matches certificate) and hands the new options to the listener
 * (`tls.Server.setSecureContext`): new connections get the new certificate, open ones keep theirs.
 * A half-written or mismatched pair (cert replaced, key not yet) is refused with a warning and
 * tried again on the next change, so a rotation never takes the listener down.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import { type Logger } from '../log/logger.js';

/** Paths of a listener's PEM files. */
export interface TlsFilePaths {
  /** Certificate chain, PEM. */
  certFile: string;
  /** Private key, PEM. */
  keyFile: string;
  /** CA bundle for verifying peers, PEM; empty or absent: the system's CAs. */
  caFile?: string;
}

/** What was read: context options, and the leaf certificate's facts for logs and metrics. */
export interface LoadedTls {
  options: tls.SecureContextOptions;
  /** SHA-256 fingerprint of the leaf certificate (colon-separated hex). */
  fingerprint256: string;
  /** Expiry of the leaf certificate, ms since the epoch. */
  validToMs: number;
}

/**
 * Reads the files and checks they form a usable TLS context.
 * @throws {Error} naming the file that cannot be read, or saying the key does not fit the certificate
 */
export function loadTlsFiles(paths: TlsFilePaths): LoadedTls {
  const read = (file: string, what: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  const cert = read(paths.certFile, 'certificate');
  const key = read(paths.keyFile, 'private key');
  const options: tls.SecureContextOptions = { cert, key, ...(paths.caFile ? { ca: read(paths.caFile, 'CA bundle') } : {}) };
  try {
    tls.createSecureContext(options);
  } catch (err) {
    throw new Error(`the TLS key ${paths.keyFile} and certificate ${paths.certFile} do not make a usable pair: ${(err as Error).message}`, { cause: err });
  }
  const leaf = new X509Certificate(cert);

  return { options, fingerprint256: leaf.fingerprint256, validToMs: Date.parse(leaf.validTo) };
}

/** Options of TlsFileWatcher. */
export interface TlsFileWatcherOptions {
  paths: TlsFilePaths;
  /** What the listener is, for logs (e.g. "https", "sip-tls"). */
  name: string;
  /** Called with the new files once they load; errors it throws are logged. */
  onReload: (loaded: LoadedTls) => void;
  logger: Logger;
  /** Poll interval, ms (default 2000). */
  intervalMs?: number;
}

/** Watches a listener's PEM files and reloads them on change (see the file comment). */
export class TlsFileWatcher {
  readonly #opts: TlsFileWatcherOptions;
  readonly #files: string[];
  readonly #listener: (curr: fs.Stats, prev: fs.Stats) => void;
  #closed = false;

  /** Starts watching at once. */
  constructor(opts: TlsFileWatcherOptions) {
    this.#opts = opts;
    this.#files = [opts.paths.certFile, opts.paths.keyFile, ...(opts.paths.caFile ? [opts.paths.caFile] : [])];
    this.#listener = (curr, prev) => {
      if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino || curr.size !== prev.size) {
        this.#reload();
      }
    };
    for (const f of this.#files) {
      fs.watchFile(f, { interval: opts.intervalMs ?? 2000, persistent: false }, this.#listener);
    }
  }

  #reload(): void {
    if (this.#closed) {
      return;
    }
    const log = this.#opts.logger;
    let loaded: LoadedTls;
    try {
      loaded = loadTlsFiles(this.#opts.paths);
    } catch (err) {
      log.warn({ listener: this.#opts.name, err: (err as Error).message }, 'TLS files changed but do not load; keeping the current certificate');

      return;
    }
    try {
      this.#opts.onReload(loaded);
      log.info({ listener: this.#opts.name, fingerprint256: loaded.fingerprint256, validTo: new Date(loaded.validToMs).toISOString() }, 'TLS certificate reloaded');
    } catch (err) {
      log.error({ listener: this.#opts.name, err }, 'TLS certificate reload failed');
    }
  }

  /** Stops watching. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const f of this.#files) {
      fs.unwatchFile(f, this.#listener);
    }
  }
}
