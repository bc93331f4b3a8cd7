/**
 * The admin API under /admin, for operators and the privacy team. Every request carries
 * `Authorization: Bearer <admin.token>`; with no token configured the API is off (404).
 *
 *   GET    /admin/nodes                  live nodes of the cluster (registry entries)
 *   POST   /admin/drain  {deadlineMs?}   drain this node (as SIGTERM), 202
 *   GET    /admin/agents/{id}            export everything stored about an agent (GDPR Art. 15),
 *                                        with `recordings`: the call recordings the agent was on
 *   DELETE /admin/agents/{id}            erase it (GDPR Art. 17), recording files included; 409 while the agent is online
 *   GET    /admin/recordings/{id}        a finished recording's WAV file, by recording id or call id (its first recording); 404 when none
 *   POST   /admin/revocations {jti, expiresAt?}  revoke an agent JWT by id on every node: sign-ins
 *                                        with it get AUTH_REVOKED, live sessions holding it close;
 *                                        expiresAt (ISO time or epoch s, the token's exp) bounds how
 *                                        long the revocation is kept; 201
 *   GET    /admin/queues                 group queues (routing.groups[].queue): per group its
 *                                        callers longest waiting first, each {callId, position,
 *                                        waitS, node}; no phone numbers
 *   GET    /admin/queues/{group}         one group's queue (404 when the group has none)
 *
 * Errors are JSON `{error, message?}` with 400, 401, 404, 405, 409 or 503 (Redis unavailable).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { type Logger } from '../log/logger.js';
import { type NodeInfo, type StateStore } from '../state/store.js';
import { JTI, type RevocationList } from '../security/revocation.js';
import { RECORDING_ID, type RecordingService } from '../calls/recording.js';
import { type AdminRequest, HttpError, type HttpReply, json } from './server.js';

/** What the admin API needs from the gateway. */
export interface AdminDeps {
  /** admin.token; empty turns the API off. */
  token: string;
  store: StateStore;
  logger: Logger;
  /** Live nodes (fresh from Redis). */
  nodes(): Promise<NodeInfo[]>;
  /** Starts draining this node; returns when it will stop at the latest. */
  drain(deadlineMs: number | undefined): { deadline: string };
  /** Whether an agent is online anywhere in the cluster (sessions or a call). */
  agentOnline(agentId: string): Promise<boolean>;
  /**
   * The group queues (src/calls/call-centre.ts): every group with a queue, or the one named
   * (undefined: the group has no queue). Throws when Redis fails.
   */
  queues?(groupId?: string): Promise<{ group: string; maxWaitS: number; length: number; calls: { callId: string; position: number; waitS: number; node: string }[] }[] | undefined>;
  /** Revoked JWT ids (src/security); none: POST /admin/revocations is 404. */
  revocations?: Pick<RevocationList, 'revoke'>;
  /** Call recordings (src/calls/recording.ts); none: exports list none and /admin/recordings is 404. */
  recordings?: Pick<RecordingService, 'listForAgent' | 'eraseForAgent' | 'file'>;
}

const AGENT_ID = /^[A-Za-z0-9._@+-]{1,128}$/;

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Builds the admin request handler. */
export function adminHandler(deps: AdminDeps): (req: AdminRequest) => Promise<HttpReply> {
  const want = digest(deps.token);

  return async (req) => {
    if (deps.token === '') {
      return json(404, { error: 'not_found' });
    }
    const m = /^Bearer (.+)$/.exec(req.authorization ?? '');
    if (!m || !timingSafeEqual(digest(m[1]!.trim()), want)) {
      return json(401, { error: 'unauthorized', message: 'Authorization: Bearer <admin.token> required' });
    }
    const [what, id, ...rest] = req.segments;
    try {
      if (what === 'nodes' && id === undefined) {
        allow(req, 'GET');

        return json(200, { nodes: await deps.nodes() });
      }
      if (what === 'drain' && id === undefined) {
        allow(req, 'POST');
        const body = (req.body ?? {}) as { deadlineMs?: unknown };
        if (typeof body !== 'object' || body === null || Array.isArray(body) || (body.deadlineMs !== undefined && (!Number.isInteger(body.deadlineMs) || (body.deadlineMs as number) < 0 || (body.deadlineMs as number) > 86_400_000))) {
          return json(400, { error: 'bad_request', message: 'deadlineMs: an integer number of ms from 0 to 86400000' });
        }
        deps.logger.warn({ deadlineMs: body.deadlineMs }, 'drain requested through the admin API');

        return json(202, { draining: true, ...deps.drain(body.deadlineMs as number | undefined) });
      }
      if (what === 'revocations' && id === undefined && deps.revocations) {
        allow(req, 'POST');
        const body = req.body as { jti?: unknown; expiresAt?: unknown } | undefined;
        if (typeof body !== 'object' || body === null || Array.isArray(body) || typeof body.jti !== 'string' || !JTI.test(body.jti)) {
          return json(400, { error: 'bad_request', message: 'jti: the token id, 1 to 256 printable ASCII characters' });
        }
        const exp = parseExpiry(body.expiresAt);
        if (exp === null) {
          return json(400, { error: 'bad_request', message: 'expiresAt: an ISO 8601 time or epoch seconds (the token\'s exp), in the future' });
        }
        const { ttlS } = await deps.revocations.revoke(body.jti, exp);
        // the jti is no secret, but it identifies one token: logged as given
        deps.logger.warn({ jti: body.jti, ttlS }, 'agent token revoked through the admin API');

        return json(201, { revoked: true, jti: body.jti, expiresAt: new Date(Date.now() + ttlS * 1000).toISOString() });
      }
      if (what === 'queues' && rest.length === 0 && deps.queues) {
        allow(req, 'GET');
        if (id !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
          return json(400, { error: 'bad_request', message: 'group id: 1 to 64 letters, digits, "-" or "_"' });
        }
        const queues = await deps.queues(id);
        if (!queues) {
          return json(404, { error: 'not_found', message: `group ${id ?? ''} has no queue` });
        }

        return json(200, id === undefined ? { queues } : queues[0]);
      }
      if (what === 'agents' && id !== undefined && rest.length === 0) {
        if (!AGENT_ID.test(id)) {
          return json(400, { error: 'bad_request', message: 'agent id: 1 to 128 letters, digits, ".", "_", "@", "+", "-"' });
        }
        if (req.method === 'GET') {
          const data = await deps.store.exportAgent(id);
          const recordings = (await deps.recordings?.listForAgent(id)) ?? [];
          deps.logger.info({ agent: id }, 'personal data exported');

          return json(200, { ...data, recordings });
        }
        if (req.method === 'DELETE') {
          if (await deps.agentOnline(id)) {
            return json(409, { error: 'agent_online', message: 'the agent is signed in or on a call; sign it out first' });
          }
          const erased = { ...(await deps.store.eraseAgent(id)), recordings: (await deps.recordings?.eraseForAgent(id)) ?? 0 };
          deps.logger.warn({ agent: id, ...erased }, 'personal data erased');

          return json(200, { erased: true, ...erased });
        }
        throw new HttpError(405, 'method_not_allowed');
      }

      if (what === 'recordings' && id !== undefined && rest.length === 0 && deps.recordings) {
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          throw new HttpError(405, 'method_not_allowed');
        }
        if (!RECORDING_ID.test(id)) {
          return json(400, { error: 'bad_request', message: 'recording id: a call id or <callId>-<n>, 1 to 128 letters, digits, ".", "_", "-"' });
        }
        const file = await deps.recordings.file(id);
        if (!file) {
          return json(404, { error: 'not_found', message: 'no finished recording with this id' });
        }
        deps.logger.info({ recordingId: file.meta.recordingId, callId: file.meta.callId }, 'recording served');

        return { status: 200, contentType: 'audio/wav', body: '', file: { path: file.path, bytes: file.bytes, name: `${file.meta.recordingId}.wav` } };
      }

      return json(404, { error: 'not_found' });
    } catch (err) {
      if (err instanceof HttpError) {
        throw err;
      }
      // Redis errors: the data could not be read or erased now
      deps.logger.warn({ err }, 'admin request failed');

      return json(503, { error: 'unavailable', message: 'Redis is unavailable; try again' });
    }
  };
}

function allow(req: AdminRequest, method: string): void {
  if (req.method !== method) {
    throw new HttpError(405, 'method_not_allowed');
  }
}

/** expiresAt of a revocation: undefined when absent, null when unusable or not in the future. */
function parseExpiry(v: unknown): Date | undefined | null {
  if (v === undefined) {
    return undefined;
  }
  const ms = typeof v === 'number' && Number.isFinite(v) ? v * 1000 : typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v) ? Date.parse(v) : NaN;

  return Number.isFinite(ms) && ms > Date.now() ? new Date(ms) : null;
}
