/**
 * A hand-written SIP device for registrar tests: a UDP socket that sends REGISTERs with the
 * headers a test asks for and answers the registrar's digest challenge itself (RFC 7616 §3.4.1,
 * MD5 or SHA-256, qop=auth), where sipp and baresip cannot produce the exact sequence.
 */
import { createHash } from 'node:crypto';
import { type DigestAlgorithm } from '../../src/sip/registrar/digest.js';
import { parseDigest } from '../../src/sip/trunks.js';
import { isFinal, RawSipPeer, sipRequest, token } from './raw-sip.js';

/** A raw UDP or TCP device that registers with digest (computing the answer itself, RFC 7616 §3.4.1). */
export class RawDevice {
  readonly callId = token('reg-');
  readonly fromTag = token();
  cseq = 0;
  private constructor(
    readonly peer: RawSipPeer,
    readonly realm: string,
    readonly user: string,
    readonly password: string,
  ) {}

  /**
   * A device on a fresh UDP socket (or, with `transport: 'tcp'`, a fresh TCP connection) that
   * registers at the registrar's `port` as `user`.
   */
  static async open(port: number, realm: string, user: string, password: string, o: { transport?: 'udp' | 'tcp' } = {}): Promise<RawDevice> {
    return new RawDevice(o.transport === 'tcp' ? await RawSipPeer.tcpClient(port) : await RawSipPeer.udp({ port }), realm, user, password);
  }

  get contactUri(): string {
    return `sip:${this.user}@127.0.0.1:${this.peer.port}${this.peer.protocol === 'tcp' ? ';transport=tcp' : ''}`;
  }

  /** Sends a REGISTER (answering a 401 once) and resolves with the final response. */
  async register(o: { contact?: string | null; expires?: number; headers?: string[]; algorithm?: DigestAlgorithm; password?: string; toUser?: string; authUser?: string } = {}) {
    const send = (authorization?: string) => {
      this.cseq++;
      const text = sipRequest({
        method: 'REGISTER',
        uri: `sip:${this.realm}`,
        transport: this.peer.protocol === 'tcp' ? 'TCP' : 'UDP',
        viaPort: this.peer.port,
        viaParams: ';rport',
        callId: this.callId,
        fromTag: this.fromTag,
        cseq: this.cseq,
        fromUri: `sip:${this.user}@${this.realm}`,
        toUri: `sip:${o.toUser ?? this.user}@${this.realm}`,
        contact: o.contact === undefined ? `<${this.contactUri}>` : o.contact,
        headers: [...(o.expires !== undefined ? [`Expires: ${o.expires}`] : []), ...(o.headers ?? []), ...(authorization ? [`Authorization: ${authorization}`] : [])],
      });
      const cseq = this.cseq;
      this.peer.send(text);

      return this.peer.waitFor((m) => isFinal('REGISTER', this.callId)(m) && m.msg.getHeader('cseq')?.startsWith(`${cseq} `) === true, 10_000, `final response to REGISTER ${cseq}`);
    };
    const first = await send();
    if (first.msg.status !== 401) {
      return first;
    }
    const challenges = first.msg.getHeaders('www-authenticate');
    const alg = o.algorithm ?? 'MD5';
    const ch = parseDigest(challenges.find((c) => c.includes(`algorithm=${alg}`)) ?? '')!;
    const h = (s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s).digest('hex');
    const authUser = o.authUser ?? this.user;
    const ha1 = h(`${authUser}:${this.realm}:${o.password ?? this.password}`);
    const uri = `sip:${this.realm}`;
    const cnonce = token();
    const response = h(`${ha1}:${ch.nonce}:00000001:${cnonce}:auth:${h(`REGISTER:${uri}`)}`);

    return send(`Digest username="${authUser}", realm="${this.realm}", nonce="${ch.nonce}", uri="${uri}", algorithm=${alg}, qop=auth, nc=00000001, cnonce="${cnonce}", response="${response}"`);
  }

  close(): void {
    this.peer.close();
  }
}

