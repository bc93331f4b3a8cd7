/**
 * baresip as a real SIP user agent in tests: a peer that dials, answers and hangs up over UDP, TCP
 * and TLS (sipp on our machines has no TLS), sends and receives real RTP, and registers like a
 * SIP device.
 *
 * Built for Debian 12's baresip 1.0.0 (package baresip-core, which ships /usr/bin/baresip and
 * every module used here in /usr/lib/baresip/modules). Each `startBaresip()`:
 *
 * - writes a fresh config directory (`baresip -f <dir>`) with a `config` (see `baresipConfig` for
 *   every setting and why; baresip adds `uuid` and `contacts` itself), starts baresip, connects
 *   to its control port, then adds the accounts with `uanew` (see `accountLine`), so that their
 *   REGISTER_OK/REGISTER_FAIL events are heard: accounts from an `accounts` file register at
 *   start-up, before any control connection exists;
 * - runs headless: the audio source is the `ausine` module (a sine tone generated in software, so
 *   calls carry real RTP), and no audio player module is loaded at all, which baresip 1.0.0 takes
 *   as "no playback" (received RTP is still decoded and counted); no stdin UI;
 * - is driven through the `ctrl_tcp` module: JSON commands and events framed as netstrings
 *   (`<length>:<json>,`) on a TCP connection to 127.0.0.1. Commands are those of the `menu`
 *   module (`dial`, `accept`, `hangup`, `uafind`, `callstat`, ...); events are baresip's UA
 *   events (`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`, `CALL_RTPESTAB`, `REGISTER_OK`, ...);
 * - listens for SIP on one address with free ports: UDP and TCP on `sipPort()`, TLS (when
 *   certificates are given) on `sipPort() + 1` — baresip 1.0.0 always puts TLS on the SIP port
 *   plus one;
 * - never outlives the test process: it runs under `setpriv --pdeathsig KILL` (the kernel kills it
 *   when the test process dies, however it dies), with baresip's own `-t` deadline, is ended by
 *   `stop()` (see there) and killed on process exit.
 *
 * baresip 1.0.0 quirks the helper works around or documents:
 *
 * - It does not verify TLS peer certificates at all (libre 1.1.0 verifies server certificates for
 *   HTTP only; `sip_verify_server` arrived in baresip 1.1): with any CA, or none, a TLS call
 *   connects. It does present its `sip_certificate` as a client certificate when asked, and serves
 *   it (with the chain built from `sip_cafile`) as a server. Certificate checks therefore have to
 *   be made by the other side (the gateway, or a Node TLS endpoint in tests).
 * - An account whose AOR carries `;transport=` appends that parameter to every URI it dials, even
 *   one that has its own (`sip:b@h;transport=tls;transport=udp`; the first one wins). Accounts
 *   here get no transport parameter unless asked for, so dialled URIs say what they mean.
 * - An auto-answering account (`answermode=auto`) emits no `CALL_INCOMING` event, only
 *   `CALL_ESTABLISHED`.
 * - `dial`, `accept` and `hangup` answer "ok" even when there is nothing to do (no incoming call,
 *   an unusable URI): their outcome is in the events (`CALL_ESTABLISHED`, `CALL_CLOSED`).
 * - The Contact of an account is `<sip:<user>-0x<hex>@<address>:<port>>`, unique per UA, so a
 *   registrar sees `alice-0x55d1c2...` rather than `alice` as the Contact user.
 * - A closed TCP/TLS connection does not fail a request already sent on it: the transaction waits
 *   for its timer (INVITE: timer B, 32 s), e.g. when the far end refuses baresip's client
 *   certificate after the handshake.
 * - Call statistics come as `CALL_RTCP` events (every ~5 s, from RTCP) and as the table baresip
 *   prints when a call's audio stream ends (`rtp_stats yes`), which `audioStats` parses; calls
 *   shorter than the first RTCP report get its first three rows only (packets, bitrate, errors).
 * - Started without `tls`, it still dials TLS, but Via and Contact of those requests name its
 *   UDP/TCP port, where no TLS listens: the far end must answer and send in-dialog requests on the
 *   same connection. With `tls`, they name the TLS port.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** SIP transport. */
export type SipTransport = 'udp' | 'tcp' | 'tls';

/** Event types baresip 1.0.0 reports over ctrl_tcp (other strings may appear too). */
export type BaresipEventType =
  | 'CALL_INCOMING'
  | 'CALL_RINGING'
  | 'CALL_PROGRESS'
  | 'CALL_ESTABLISHED'
  | 'CALL_CLOSED'
  | 'CALL_RTPESTAB'
  | 'CALL_RTCP'
  | 'CALL_LOCAL_SDP'
  | 'CALL_REMOTE_SDP'
  | 'CALL_MENC'
  | 'CALL_DTMF_START'
  | 'CALL_DTMF_END'
  | 'TRANSFER'
  | 'TRANSFER_FAILED'
  | 'REGISTER_OK'
  | 'REGISTER_FAIL'
  | 'UNREGISTERING'
  | 'MWI_NOTIFY'
  | 'AUDIO_ERROR'
  | 'SHUTDOWN'
  | (string & {});

/** One event from baresip's ctrl_tcp module. */
export interface BaresipEvent {
  type: BaresipEventType;
  /** `call`, `register`, `other`, ... */
  class?: string;
  /** The account the event belongs to (`sip:alice@127.0.0.1`). */
  accountaor?: string;
  /** `incoming` or `outgoing`, for call events. */
  direction?: string;
  /** The peer's URI, for call events. */
  peeruri?: string;
  /** baresip's call id (the SIP Call-ID): the same on both ends of a baresip ↔ baresip call. */
  id?: string;
  /**
   * Event detail: the reason for `CALL_CLOSED` (`Connection reset by peer`, `486 Busy Here`, ...),
   * the media for `CALL_RTPESTAB`/`CALL_RTCP` (`audio`), the status line for `REGISTER_OK`/`_FAIL`.
   */
  param?: string;
  /** RTCP statistics, on `CALL_RTCP`: packets sent/lost and jitter (µs) each way, round trip (µs). */
  rtcp_stats?: {
    tx: { sent: number; lost: number; jit: number };
    rx: { sent: number; lost: number; jit: number };
    rtt: number;
  };
  /** When the helper received it (`Date.now()`). */
  at: number;
  /** The event as baresip sent it. */
  raw: Record<string, unknown>;
}

/** What baresip answered to a command. */
export interface BaresipResponse {
  ok: boolean;
  /** The command's text output (may be empty). */
  data: string;
}

/** The RTP statistics table baresip prints when a call's audio stream ends. */
export interface AudioStats {
  tx: { packets: number; bitrateKbps?: number; errors?: number; reported?: number; lost?: number; jitterMs?: number };
  rx: { packets: number; bitrateKbps?: number; errors?: number; reported?: number; lost?: number; jitterMs?: number };
}

/** One SIP account (UA) of a baresip instance, added with `uanew <accountLine()>`. */
export interface BaresipAccount {
  /** User part of the AOR. */
  user: string;
  /** Host part of the AOR, with a port if needed (`127.0.0.1:5060`). Default: the listen address. */
  domain?: string;
  /**
   * `;transport=` in the AOR: the transport of its REGISTERs and of calls to URIs without one (see
   * the quirk in the file comment). Default: none (UDP for URIs without a transport).
   */
  transport?: SipTransport;
  displayName?: string;
  /** `manual` (default: ring until `accept()`), `early` (answer with early media) or `auto` (answer at once). */
  answerMode?: 'manual' | 'early' | 'auto';
  /** Registration interval in seconds; 0 (default) never registers. */
  regint?: number;
  /** Digest credentials (`auth_user`, `auth_pass`). */
  auth?: { user: string; password: string };
  /** Outbound proxy URI (`outbound="sip:127.0.0.1:5061;transport=tls"`): REGISTERs and calls go there. */
  outbound?: string;
  /** `outbound` turns on RFC 5626 SIP outbound (`sipnat=outbound`: reg-id, +sip.instance, keep-alives). */
  sipnat?: 'outbound';
  /** Media encryption (`mediaenc=`); the module (srtp.so, dtls_srtp.so) must be in `extraModules`. */
  mediaenc?: 'srtp' | 'srtp-mand' | 'srtp-mandf' | 'dtls_srtp';
  /** Codecs this account offers, in order (`audio_codecs=pcmu,pcma`). Default: every loaded codec. */
  audioCodecs?: string[];
  /** Further account parameters, written as `;key=value`. */
  params?: Record<string, string | number>;
}

/** Options of `startBaresip`. */
export interface BaresipOptions {
  /** A label for diagnostics. Default `baresip`. */
  name?: string;
  /** Accounts, in order; the first one is the one `dial()` uses unless told otherwise. Default: one `manual` account `baresip`. */
  accounts?: BaresipAccount[];
  /** Address to listen on and to put into SDP and Contact: `127.0.0.1` (default) or `::1`. */
  listenAddress?: string;
  /** SIP port for UDP and TCP (TLS is this plus one). Default: a free pair in 30000–32767. */
  sipPort?: number;
  /**
   * TLS material: `certFile` holds the certificate followed by its key (baresip wants both in one
   * file; `TestCerts.combinedFile`), `caFile` the CA certificates (`sip_cafile`). Without it
   * baresip still dials TLS as a client, but its own TLS listener has no certificate to serve.
   */
  tls?: { certFile: string; caFile?: string };
  /** Audio codec modules to load, in order of preference. Default `['g711']` (PCMU, PCMA). */
  codecs?: ('g711' | 'g722' | 'opus' | 'l16' | 'gsm')[];
  /** Frequency of the sine tone sent as audio, in Hz. Default 440. */
  toneHz?: number;
  /** RTP port range (RTCP takes RTP + 1). Default 10000–19999, clear of the SIP ports here and the gateway's media ports. */
  rtpPorts?: [number, number];
  /** Further modules to load (`srtp`, `dtls_srtp`, ...). */
  extraModules?: string[];
  /** Further `config` settings (`key value`); one whose key the helper sets replaces the helper's line. */
  extraConfig?: Record<string, string | number>;
  /** Print the SIP messages to stdout (`-s`), for `output()`. Default false. */
  sipTrace?: boolean;
  /**
   * baresip's debug output (`-v`). Default true: `describe()` shows it, and lines such as
   * `sipsess connect via TLS` (for `waitForOutput`) are debug lines.
   */
  verbose?: boolean;
  /** Hard deadline: baresip quits by itself after this many seconds (`-t`). Default 600. */
  maxLifetimeS?: number;
  /** How long to wait for the control channel at start. Default 10 000 ms. */
  startTimeoutMs?: number;
  /** Keep the config directory after `stop()`. Default: `RINGBRIDGE_BARESIP_KEEP=1`. */
  keepDir?: boolean;
}

/** Options of `waitForEvent`. */
export interface WaitOptions {
  /** Default 10 000 ms. */
  timeoutMs?: number;
  /** Only events of this call (`BaresipEvent.id`). */
  callId?: string;
  /** Only events of this account (`BaresipEvent.accountaor`). */
  accountAor?: string;
}

/** A running baresip. */
export interface Baresip {
  name: string;
  pid: number;
  /** Its config directory. */
  dir: string;
  /** The address it listens on (`127.0.0.1` or `::1`). */
  listenAddress: string;
  /** Its SIP port for a transport (UDP and TCP share one; TLS is one more). Throws for TLS without `tls`. */
  sipPort(transport?: SipTransport): number;
  /** Where to reach it directly: `sip:<user>@127.0.0.1:<port>;transport=<t>` (user: the first account's). */
  uri(transport?: SipTransport, user?: string): string;
  /** The AOR of its account `i` as baresip names it in events (`sip:alice@127.0.0.1`). */
  aor(i?: number): string;
  /** Every event so far, in order (a live array). */
  events: BaresipEvent[];
  /**
   * Starts a call (`dial`) from the account `from` (an AOR; default the first account); resolves
   * once baresip took the command, the outcome comes as events.
   */
  dial(uri: string, opts?: { from?: string }): Promise<void>;
  /** Answers the ringing incoming call (`accept`; baresip makes the called account the current one). */
  accept(): Promise<void>;
  /** Hangs up the current call of the current account (`hangup`). */
  hangup(): Promise<void>;
  /** Sends any command of the menu module (`callstat`, `uafind sip:...`, `reginfo`, ...). */
  command(cmd: string, params?: string, timeoutMs?: number): Promise<BaresipResponse>;
  /**
   * Resolves with the earliest event that matches and that no earlier `waitForEvent` call
   * returned — events that came before the call count, so there is no race between an action and
   * the wait for its outcome; a second wait for `CALL_ESTABLISHED` returns the second call's.
   * Rejects on timeout or when baresip exits.
   */
  waitForEvent(match: BaresipEventType | ((e: BaresipEvent) => boolean), opts?: number | WaitOptions): Promise<BaresipEvent>;
  /** Calls `listener` for each new event; returns the function that removes it. */
  onEvent(listener: (e: BaresipEvent) => void): () => void;
  /** Audio statistics tables printed so far, one per ended call's audio stream, in order. */
  audioStats(): AudioStats[];
  /** Resolves with the `n`-th (1-based) audio statistics table once baresip printed it. */
  waitForAudioStats(n: number, timeoutMs?: number): Promise<AudioStats>;
  /** stdout and stderr so far (the oldest part dropped beyond 4 MB). */
  output(): string;
  /** How many characters of output came so far: a mark for `waitForOutput`'s `since`. */
  outputMark(): number;
  /**
   * Resolves with the first output line matching `pattern` that came after `since` (an
   * `outputMark()`; default 0). Output comes on a pipe, events on the control connection, so a
   * line may arrive after the event it belongs to: wait for it rather than read `output()`.
   */
  waitForOutput(pattern: string | RegExp, opts?: { since?: number; timeoutMs?: number }): Promise<string>;
  /** A diagnostic for assertion messages: name, ports, directory, recent events and output. */
  describe(): string;
  /** Resolves with the exit code (or signal name) once it exited. */
  exited: Promise<number | string>;
  /**
   * Ends it: SIGTERM (baresip sends BYE for its calls and un-REGISTERs), a second SIGTERM after
   * `graceMs` (default 500) if it still runs (exits at once), SIGKILL 2 s later; then closes the
   * control connection and removes the directory. Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
}

const BARESIP_BIN = '/usr/bin/baresip';
const MODULE_PATH = '/usr/lib/baresip/modules';
/** Port range for SIP and control ports: below Linux's ephemeral range (32768+), in the test peers' range (config/test.yaml's port plan). */
const PORT_MIN = 30000;
const PORT_MAX = 32766;

/** Whether baresip and the modules this helper needs are installed. */
export function baresipAvailable(): boolean {
  return fs.existsSync(BARESIP_BIN) && ['ctrl_tcp', 'menu', 'ausine', 'g711', 'uuid'].every((m) => fs.existsSync(path.join(MODULE_PATH, `${m}.so`)));
}

function formatHost(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

function checkParam(what: string, value: string): string {
  if (/[;<>"\s,]/.test(value)) {
    throw new TypeError(`baresip account ${what} ${JSON.stringify(value)}: no ; < > " , or blanks allowed`);
  }

  return value;
}

/**
 * The account line of one account, as in an `accounts` file or after `uanew` (exported for
 * tests of the helper). Parameters after the AOR (baresip 1.0.0 `account.c`):
 * - `answermode`: manual / early / auto — what to do with an incoming INVITE;
 * - `regint`: REGISTER interval in seconds, 0 = never register (a plain peer);
 * - `auth_user` / `auth_pass`: digest credentials for 401/407 challenges;
 * - `outbound`: outbound proxy URI, quoted because it has its own parameters;
 * - `sipnat=outbound`: RFC 5626 (reg-id, +sip.instance from the `uuid` module, keep-alives);
 * - `mediaenc`, `audio_codecs`: media encryption and codec list of this account;
 * - `pubint=0`, `mwi=no`, `call_transfer` left default: no PUBLISH, no MWI SUBSCRIBE after REGISTER.
 */
export function accountLine(acc: BaresipAccount, listenAddress: string): string {
  const domain = acc.domain ?? formatHost(listenAddress);
  const uriParams = acc.transport ? `;transport=${acc.transport}` : '';
  const name = acc.displayName ? `"${acc.displayName.replace(/["\\]/g, '')}" ` : '';
  const p: string[] = [`answermode=${acc.answerMode ?? 'manual'}`, `regint=${acc.regint ?? 0}`, 'pubint=0', 'mwi=no'];
  if (acc.auth) {
    p.push(`auth_user=${checkParam('auth user', acc.auth.user)}`, `auth_pass=${checkParam('password', acc.auth.password)}`);
  }
  if (acc.outbound) {
    if (/["\s]/.test(acc.outbound)) {
      throw new TypeError(`baresip outbound URI ${JSON.stringify(acc.outbound)}: no quotes or blanks allowed`);
    }
    p.push(`outbound="${acc.outbound}"`);
  }
  if (acc.sipnat) {
    p.push(`sipnat=${acc.sipnat}`);
  }
  if (acc.mediaenc) {
    p.push(`mediaenc=${acc.mediaenc}`);
  }
  if (acc.audioCodecs) {
    p.push(`audio_codecs=${acc.audioCodecs.map((c) => checkParam('codec', c)).join(',')}`);
  }
  for (const [k, v] of Object.entries(acc.params ?? {})) {
    p.push(`${checkParam('parameter', k)}=${String(v)}`);
  }

  return `${name}<sip:${checkParam('user', acc.user)}@${domain}${uriParams}>;${p.join(';')}`;
}

/** The `config` file (exported for tests of the helper); every line says why it is there. */
export function baresipConfig(o: {
  listenAddress: string;
  sipPort: number;
  ctrlPort: number;
  tls?: { certFile: string; caFile?: string };
  codecs: string[];
  toneHz: number;
  rtpPorts: [number, number];
  extraModules: string[];
  extraConfig: Record<string, string | number>;
}): string {
  const lines = [
    '# Written by test/helpers/baresip.ts for baresip 1.0.0 (Debian 12). One instance per test peer.',
    'poll_method epoll',
    '# Loopback only: SIP on this address (UDP+TCP on the port, TLS on port+1), and the same address',
    '# in Contact and SDP (net_interface takes an address; "lo" is refused by baresip 1.0.0).',
    `sip_listen ${formatHost(o.listenAddress)}:${o.sipPort}`,
    `net_interface ${o.listenAddress}`,
    ...(o.tls
      ? [
          '# Our certificate and key in one PEM file (served as TLS server, presented as TLS client).',
          `sip_certificate ${o.tls.certFile}`,
          ...(o.tls.caFile ? ['# CAs added to the TLS context (chain building; baresip 1.0.0 does not verify peers).', `sip_cafile ${o.tls.caFile}`] : []),
        ]
      : []),
    '# No-answer timeout of outgoing calls (s) and concurrent calls per instance.',
    'call_local_timeout 120',
    'call_max_calls 8',
    '# Audio: a software sine tone as the source. ausine makes 48 kHz stereo only; baresip resamples it',
    '# to the codec. No player module is loaded, which baresip takes as "no playback".',
    `audio_source ausine,${o.toneHz}`,
    'ausrc_srate 48000',
    'ausrc_channels 2',
    'ausrc_format s16',
    'auplay_format s16',
    'auenc_format s16',
    'audec_format s16',
    'audio_buffer 20-160',
    'audio_level no',
    '# RTP/RTCP: ports clear of the SIP ports and of the gateway media range; RTCP on its own port;',
    '# rtp_stats: print the RTP statistics table when a call ends (what audioStats() reads).',
    `rtp_ports ${o.rtpPorts[0]}-${o.rtpPorts[1]}`,
    'rtp_tos 0',
    'rtcp_mux no',
    'jitter_buffer_delay 5-10',
    'rtp_stats yes',
    '# Menu module: no status line on stdout, no bells, no ringback tone (there is no player), no redial.',
    'statmode_default off',
    'menu_bell no',
    'ringback_disabled yes',
    'redial_attempts 0',
    '# Control channel: netstring-framed JSON commands and events on loopback.',
    `ctrl_tcp_listen 127.0.0.1:${o.ctrlPort}`,
    `module_path ${MODULE_PATH}`,
    '# Codecs (in order of preference) and the audio source. No UI module (stdio needs a terminal),',
    '# no audio driver, no STUN/TURN/ICE (loopback needs no NAT traversal).',
    ...o.codecs.map((c) => `module ${c}.so`),
    'module ausine.so',
    ...o.extraModules.map((m) => `module ${m.endsWith('.so') ? m : `${m}.so`}`),
    '# uuid: a stable +sip.instance for SIP outbound. No account.so: the helper adds the accounts with',
    '# uanew once it listens to events (baresip registers file accounts before anyone could hear it).',
    'module_tmp uuid.so',
    '# menu: the dial/accept/hangup/... commands; ctrl_tcp: the control channel.',
    'module_app menu.so',
    'module_app ctrl_tcp.so',
  ];
  // baresip reads the first line of a key: an extra setting replaces the line above, if any.
  const extra = new Map(Object.entries(o.extraConfig).map(([k, v]) => [k, `${k} ${String(v)}`]));
  const merged = lines.map((l) => {
    const line = extra.get(l.split(' ', 1)[0]!);
    if (line !== undefined) {
      extra.delete(l.split(' ', 1)[0]!);

      return line;
    }

    return l;
  });

  return [...merged, ...extra.values(), ''].join('\n');
}

// --- ports -------------------------------------------------------------------------------------

const handedOut = new Set<number>();

function canBind(kind: 'udp' | 'tcp', host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (kind === 'tcp') {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(true)));
    } else {
      const sock = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4' });
      sock.once('error', () => {
        sock.close();
        resolve(false);
      });
      sock.bind({ port, address: host, exclusive: true }, () => sock.close(() => resolve(true)));
    }
  });
}

/** A port P free right now on `host` for UDP and TCP, with P+1 free for TCP too (baresip's TLS port). */
async function freeSipPortPair(host: string): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN));
    if (handedOut.has(port) || handedOut.has(port + 1)) {
      continue;
    }
    if ((await canBind('udp', host, port)) && (await canBind('tcp', host, port)) && (await canBind('tcp', host, port + 1))) {
      handedOut.add(port);
      handedOut.add(port + 1);

      return port;
    }
  }
  throw new Error(`no free SIP port pair found on ${host}`);
}

async function freeTcpPort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN));
    if (!handedOut.has(port) && (await canBind('tcp', host, port))) {
      handedOut.add(port);

      return port;
    }
  }
  throw new Error(`no free TCP port found on ${host}`);
}

// --- processes ---------------------------------------------------------------------------------

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) {
    return;
  }
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) {
      child.kill('SIGKILL');
    }
  });
}

let setprivOk: boolean | undefined;

function hasSetpriv(): boolean {
  setprivOk ??= spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' }).status === 0;

  return setprivOk;
}

/** Splits a buffer of netstrings (`<len>:<payload>,`); returns the payloads and the unparsed rest. */
export function parseNetstrings(buf: Buffer): { messages: string[]; rest: Buffer } {
  const messages: string[] = [];
  let b = buf;
  for (;;) {
    const colon = b.indexOf(0x3a);
    if (colon < 0) {
      break;
    }
    const lenText = b.subarray(0, colon).toString('latin1');
    if (!/^\d+$/.test(lenText)) {
      throw new Error(`ctrl_tcp: bad netstring length ${JSON.stringify(lenText)}`);
    }
    const len = Number(lenText);
    if (b.length < colon + 1 + len + 1) {
      break;
    }
    if (b[colon + 1 + len] !== 0x2c) {
      throw new Error('ctrl_tcp: netstring not terminated by a comma');
    }
    messages.push(b.subarray(colon + 1, colon + 1 + len).toString('utf8'));
    b = b.subarray(colon + 2 + len);
  }

  return { messages, rest: b };
}

/** Frames a string as a netstring. */
export function netstring(s: string): string {
  return `${Buffer.byteLength(s)}:${s},`;
}

/** Parses the audio statistics tables in baresip's output (exported for tests of the helper). */
export function parseAudioStats(output: string): AudioStats[] {
  const out: AudioStats[] = [];
  const re = /^audio\s+Transmit:\s+Receive:\s*$/gm;
  let m: RegExpExecArray | null;
  while ((m = re.exec(output)) !== null) {
    const rest = output.slice(m.index + m[0].length).split('\n').slice(1, 8);
    const row = (label: string): [number, number] | undefined => {
      const line = rest.find((l) => l.startsWith(`${label}:`));
      const v = line ? /^[^:]+:\s+(-?[\d.]+)\s+(-?[\d.]+)/.exec(line) : null;

      return v ? [Number(v[1]), Number(v[2])] : undefined;
    };
    const packets = row('packets');
    if (!packets) {
      continue;
    }
    const side = (i: 0 | 1) => ({
      packets: packets[i],
      bitrateKbps: row('avg. bitrate')?.[i],
      errors: row('errors')?.[i],
      reported: row('pkt.report')?.[i],
      lost: row('lost')?.[i],
      jitterMs: row('jitter')?.[i],
    });
    out.push({ tx: side(0), rx: side(1) });
  }

  return out;
}

class ExitedError extends Error {}

/** Starts one attempt; rejects with ExitedError when baresip exits before its control port answers. */
async function startOnce(opts: BaresipOptions, accounts: BaresipAccount[]): Promise<Baresip> {
  const name = opts.name ?? 'baresip';
  const listenAddress = opts.listenAddress ?? '127.0.0.1';
  const sipPort = opts.sipPort ?? (await freeSipPortPair(listenAddress));
  const ctrlPort = await freeTcpPort('127.0.0.1');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `rb-baresip-${name.replace(/[^\w-]/g, '_')}-`));
  const keepDir = opts.keepDir ?? process.env.RINGBRIDGE_BARESIP_KEEP === '1';
  fs.writeFileSync(
    path.join(dir, 'config'),
    baresipConfig({
      listenAddress,
      sipPort,
      ctrlPort,
      tls: opts.tls,
      codecs: opts.codecs ?? ['g711'],
      toneHz: opts.toneHz ?? 440,
      rtpPorts: opts.rtpPorts ?? [10000, 19999],
      extraModules: opts.extraModules ?? [],
      extraConfig: opts.extraConfig ?? {},
    }),
  );
  // Empty contacts file: otherwise baresip writes its template with example entries.
  fs.writeFileSync(path.join(dir, 'contacts'), '');

  const args = ['-f', dir, '-t', String(opts.maxLifetimeS ?? 600)];
  if (opts.verbose ?? true) {
    args.push('-v');
  }
  if (opts.sipTrace) {
    args.push('-s');
  }
  // One address family only, the listen address's: no IPv6 sockets next to an IPv4 peer.
  if (listenAddress.includes(':')) {
    args.push('-6');
  } else {
    args.push('-4');
  }
  // stdbuf -oL: baresip writes with stdio, which buffers a pipe in 4 KiB blocks; line buffering
  // makes each line (and the statistics table at the end of a call) readable when it is written.
  const [cmd, cmdArgs] = hasSetpriv()
    ? ['setpriv', ['--pdeathsig', 'KILL', '--', 'stdbuf', '-oL', '-eL', BARESIP_BIN, ...args]]
    : ['stdbuf', ['-oL', '-eL', BARESIP_BIN, ...args]];
  installExitHook();
  const child = spawn(cmd, cmdArgs, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, HOME: dir, LANG: 'C' } });
  running.add(child);
  const logFile = fs.createWriteStream(path.join(dir, 'baresip.log'));
  let out = '';
  let outDropped = 0;
  const OUT_MAX = 4 * 1024 * 1024;
  const outputWaiters: (() => void)[] = [];
  // Audio statistics tables are picked out of the output as it arrives, so that dropping old
  // output never renumbers them. `scan` holds what may still be (the start of) a table.
  const stats: AudioStats[] = [];
  let scan = '';
  const scanStats = (final: boolean) => {
    for (;;) {
      const h = /^audio\s+Transmit:\s+Receive:[^\n]*\n/m.exec(scan);
      if (!h) {
        scan = final ? '' : scan.slice(-200);

        return;
      }
      const body = scan.slice(h.index + h[0].length);
      const lines = body.split('\n');
      // A table has up to six rows and ends at the jitter row, a blank line or any other line.
      let n = 0;
      while (n < lines.length - 1 && /^[a-z. ]+:\s+-?[\d.]+\s+-?[\d.]+/.test(lines[n]!) && !lines[n]!.startsWith('jitter:')) {
        n++;
      }
      const complete = n < lines.length - 1 || final;
      if (!complete) {
        scan = scan.slice(h.index);

        return;
      }
      const end = lines[n]?.startsWith('jitter:') ? n + 1 : n;
      stats.push(...parseAudioStats(scan.slice(h.index, h.index + h[0].length) + lines.slice(0, end).join('\n')));
      scan = lines.slice(end).join('\n');
    }
  };
  // A table ends with its jitter row, but short calls (no RTCP report yet) print only the first
  // three rows; such a table counts as complete once 150 ms pass without more output.
  let statsTimer: NodeJS.Timeout | undefined;
  const onOutput = (d: Buffer) => {
    const s = d.toString('utf8');
    logFile.write(s);
    scan += s;
    scanStats(false);
    clearTimeout(statsTimer);
    if (/Transmit:\s+Receive:/.test(scan)) {
      statsTimer = setTimeout(() => {
        scanStats(true);
        for (const w of outputWaiters.splice(0)) {
          w();
        }
      }, 150);
    }
    out += s;
    if (out.length > OUT_MAX) {
      // Keep the newest half; long-running instances (load tests) must not grow without bound.
      outDropped += out.length - OUT_MAX / 2;
      out = out.slice(out.length - OUT_MAX / 2);
    }
    for (const w of outputWaiters.splice(0)) {
      w();
    }
  };
  child.stdout.on('data', onOutput);
  child.stderr.on('data', onOutput);
  let exitInfo: number | string | undefined;
  const exited = new Promise<number | string>((resolve) => {
    child.once('close', (code, signal) => {
      running.delete(child);
      clearTimeout(statsTimer);
      scanStats(true);
      exitInfo = code ?? signal ?? -1;
      resolve(exitInfo);
    });
  });
  child.once('error', (err) => onOutput(Buffer.from(`spawn error: ${err.message}\n`)));

  const events: BaresipEvent[] = [];
  const consumed = new Set<BaresipEvent>();
  const listeners = new Set<(e: BaresipEvent) => void>();
  const pending = new Map<string, { resolve: (r: BaresipResponse) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let token = 0;

  const tail = (s: string, n: number) => s.split('\n').slice(-n).join('\n');
  const describe = () =>
    [
      `${name} (pid ${child.pid}, ${exitInfo === undefined ? 'running' : `exited ${exitInfo}`}) sip ${formatHost(listenAddress)}:${sipPort}${opts.tls ? ` tls :${sipPort + 1}` : ''} ctrl :${ctrlPort} dir ${dir}`,
      'events:',
      ...events.slice(-25).map((e) => `  ${e.type} ${e.direction ?? ''} ${e.peeruri ?? ''} ${e.param ?? ''}`.trimEnd()),
      `output${outDropped > 0 ? ` (first ${outDropped} chars dropped)` : ''}, last 60 lines:`,
      tail(out, 60),
    ].join('\n');

  // Connect to ctrl_tcp, retrying until it listens. baresip sets up its SIP transports before it
  // loads the app modules, so once the control port answers, SIP is listening too.
  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
  let sock: net.Socket | undefined;
  while (!sock) {
    if (exitInfo !== undefined) {
      logFile.end();
      const text = out;
      if (!keepDir) {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      throw new ExitedError(`${name}: baresip exited (${exitInfo}) before its control port answered:\n${tail(text, 40)}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      logFile.end();
      throw new Error(`${name}: baresip's control port did not answer within ${opts.startTimeoutMs ?? 10_000} ms\n${describe()}`);
    }
    sock = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.connect(ctrlPort, '127.0.0.1');
      s.once('connect', () => resolve(s));
      s.once('error', () => {
        s.destroy();
        setTimeout(() => resolve(undefined), 50);
      });
    });
  }
  const ctrl = sock;
  ctrl.setNoDelay(true);
  let buf: Buffer = Buffer.alloc(0);
  ctrl.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    let parsed: ReturnType<typeof parseNetstrings>;
    try {
      parsed = parseNetstrings(buf);
    } catch (err) {
      onOutput(Buffer.from(`[helper] ${(err as Error).message}\n`));
      buf = Buffer.alloc(0);

      return;
    }
    buf = parsed.rest;
    for (const text of parsed.messages) {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(text) as Record<string, unknown>;
      } catch {
        onOutput(Buffer.from(`[helper] ctrl_tcp sent no JSON: ${text}\n`));
        continue;
      }
      if (msg.response === true) {
        const p = pending.get(String(msg.token));
        if (p) {
          pending.delete(String(msg.token));
          clearTimeout(p.timer);
          p.resolve({ ok: msg.ok === true, data: typeof msg.data === 'string' ? msg.data : '' });
        }
      } else if (msg.event === true) {
        const e: BaresipEvent = { ...(msg as Omit<BaresipEvent, 'at' | 'raw' | 'type'>), type: String(msg.type), at: Date.now(), raw: msg };
        events.push(e);
        for (const l of [...listeners]) {
          l(e);
        }
      }
    }
  });
  ctrl.on('error', () => {
    // baresip went away; pending commands fail on close below.
  });
  ctrl.on('close', () => {
    for (const [t, p] of pending) {
      pending.delete(t);
      clearTimeout(p.timer);
      p.reject(new Error(`${name}: control connection closed before the answer\n${describe()}`));
    }
  });

  const command = (cmd: string, params = '', timeoutMs = 5_000): Promise<BaresipResponse> => {
    if (ctrl.destroyed || exitInfo !== undefined) {
      return Promise.reject(new Error(`${name}: baresip is not running (command ${cmd})\n${describe()}`));
    }
    const t = String(++token);

    return new Promise<BaresipResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(t);
        reject(new Error(`${name}: no answer to ${cmd} ${params} within ${timeoutMs} ms\n${describe()}`));
      }, timeoutMs);
      pending.set(t, { resolve, reject, timer });
      ctrl.write(netstring(JSON.stringify({ command: cmd, params, token: t })));
    });
  };
  const mustSucceed = async (cmd: string, params = ''): Promise<BaresipResponse> => {
    const r = await command(cmd, params);
    if (!r.ok) {
      throw new Error(`${name}: ${cmd} ${params} failed: ${r.data}\n${describe()}`);
    }

    return r;
  };

  const aor = (i = 0): string => {
    const acc = accounts[i];
    if (!acc) {
      throw new RangeError(`${name}: no account ${i}`);
    }

    return `sip:${acc.user}@${acc.domain ?? formatHost(listenAddress)}`;
  };
  const sipPortOf = (transport: SipTransport = 'udp'): number => {
    if (transport === 'tls' && !opts.tls) {
      throw new Error(`${name}: started without tls, so it serves no TLS`);
    }

    return transport === 'tls' ? sipPort + 1 : sipPort;
  };

  const waitForEvent = (match: BaresipEventType | ((e: BaresipEvent) => boolean), o?: number | WaitOptions): Promise<BaresipEvent> => {
    const wo: WaitOptions = typeof o === 'number' ? { timeoutMs: o } : (o ?? {});
    const timeoutMs = wo.timeoutMs ?? 10_000;
    const fits = (e: BaresipEvent) =>
      !consumed.has(e) &&
      (typeof match === 'string' ? e.type === match : match(e)) &&
      (wo.callId === undefined || e.id === wo.callId) &&
      (wo.accountAor === undefined || e.accountaor === wo.accountAor);
    const what = typeof match === 'string' ? match : 'a matching event';
    const found = events.find(fits);
    if (found) {
      consumed.add(found);

      return Promise.resolve(found);
    }

    return new Promise<BaresipEvent>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        listeners.delete(listener);
      };
      const listener = (e: BaresipEvent) => {
        if (fits(e)) {
          done();
          consumed.add(e);
          resolve(e);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${name}: no ${what} within ${timeoutMs} ms\n${describe()}`));
      }, timeoutMs);
      listeners.add(listener);
      void exited.then(() => {
        if (listeners.has(listener)) {
          done();
          reject(new Error(`${name}: baresip exited before ${what}\n${describe()}`));
        }
      });
    });
  };

  const waitForOutput = async (pattern: string | RegExp, o: { since?: number; timeoutMs?: number } = {}): Promise<string> => {
    const timeoutMs = o.timeoutMs ?? 5_000;
    const until = Date.now() + timeoutMs;
    const test = (line: string) => (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line));
    for (;;) {
      const from = Math.max(0, (o.since ?? 0) - outDropped);
      // Complete lines only: a line still being written could match a prefix of the pattern only.
      const text = out.slice(from);
      const found = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').find(test);
      if (found !== undefined) {
        return found;
      }
      if (exitInfo !== undefined || Date.now() > until) {
        throw new Error(`${name}: no output line matching ${String(pattern)} within ${timeoutMs} ms\n${describe()}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        outputWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };

  const waitForAudioStats = async (n: number, timeoutMs = 5_000): Promise<AudioStats> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const s = stats[n - 1];
      if (s) {
        return s;
      }
      if (exitInfo !== undefined || Date.now() > until) {
        throw new Error(`${name}: no audio statistics #${n} within ${timeoutMs} ms\n${describe()}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        outputWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };

  try {
    for (const acc of accounts) {
      await mustSucceed('uanew', accountLine(acc, listenAddress));
    }
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    ctrl.destroy();
    await new Promise<void>((resolve) => logFile.end(resolve));
    if (!keepDir) {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    throw err;
  }

  // First SIGTERM: baresip hangs up its calls and un-REGISTERs (ua_stop_all), then waits for every
  // SIP transaction to end, which takes up to 32 s (timers D, K, B). After `graceMs` a second
  // SIGTERM makes it exit at once (its signal handler exits on the second signal); SIGKILL 2 s later.
  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 500): Promise<void> => {
    stopping ??= (async () => {
      const timers: NodeJS.Timeout[] = [];
      if (exitInfo === undefined) {
        child.kill('SIGTERM');
        timers.push(setTimeout(() => child.kill('SIGTERM'), graceMs));
        timers.push(setTimeout(() => child.kill('SIGKILL'), graceMs + 2_000));
      }
      await exited;
      timers.forEach(clearTimeout);
      ctrl.destroy();
      await new Promise<void>((resolve) => logFile.end(resolve));
      if (!keepDir) {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    })();

    return stopping;
  };

  return {
    name,
    pid: child.pid ?? -1,
    dir,
    listenAddress,
    sipPort: sipPortOf,
    uri: (transport = 'udp', user = accounts[0]?.user ?? 'baresip') => `sip:${user}@${formatHost(listenAddress)}:${sipPortOf(transport)};transport=${transport}`,
    aor,
    events,
    dial: async (uri, o) => {
      // `uafind` makes an account the current one, which `dial` uses; with one account it is.
      const from = o?.from ?? (accounts.length > 1 ? aor(0) : undefined);
      if (from) {
        await mustSucceed('uafind', from);
      }
      await mustSucceed('dial', uri);
    },
    accept: async () => {
      await mustSucceed('accept');
    },
    hangup: async () => {
      await mustSucceed('hangup');
    },
    command,
    waitForEvent,
    onEvent: (l) => {
      listeners.add(l);

      return () => listeners.delete(l);
    },
    audioStats: () => [...stats],
    waitForAudioStats,
    output: () => out,
    outputMark: () => outDropped + out.length,
    waitForOutput,
    describe,
    exited,
    stop,
  };
}

/**
 * Starts a baresip with a fresh config directory and connects to its control port (see the file
 * comment). Retries with other ports when one was taken meanwhile. Call `stop()` when done.
 */
export async function startBaresip(opts: BaresipOptions = {}): Promise<Baresip> {
  if (!baresipAvailable()) {
    throw new Error(`baresip or one of its modules (ctrl_tcp, menu, ausine, g711, uuid) is missing under ${BARESIP_BIN} and ${MODULE_PATH}; as root run: apt-get install -y baresip-core (npm test installs it)`);
  }
  const accounts = opts.accounts ?? [{ user: 'baresip' }];
  if (accounts.length === 0) {
    throw new TypeError('startBaresip: at least one account is needed');
  }
  let lastErr: unknown;
  for (let attempt = 0; attempt < (opts.sipPort === undefined ? 3 : 1); attempt++) {
    try {
      return await startOnce(opts, accounts);
    } catch (err) {
      lastErr = err;
      // A port taken between the check and baresip's bind makes baresip exit at once; try others.
      if (!(err instanceof ExitedError) || !/in use|EADDRINUSE|transport failed|failed to listen/i.test(err.message)) {
        throw err;
      }
    }
  }
  throw lastErr;
}
