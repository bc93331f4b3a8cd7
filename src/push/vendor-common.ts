/** Helpers shared by the vendor adapters (Umeng, Huawei, Honor, Xiaomi, OPPO, vivo, Meizu). */
import { createHash } from 'node:crypto';
import { type HttpAnswer, type HttpClient, type IssuedToken, parseJson, parseRetryAfter } from './http.js';
import { PushAuthError, PushProtocolError, type PushResult } from './provider.js';

/** `retry-later` for HTTP 429 and 5xx answers, else undefined. */
export function httpRetryResult(res: HttpAnswer): PushResult | undefined {
  if (res.status === 429 || res.status >= 500) {
    return { status: 'retry-later', retryAfterMs: parseRetryAfter(res.headers['retry-after']) ?? 0, reason: `http-${res.status}` };
  }

  return undefined;
}

/**
 * The JSON object of an answer.
 * @throws PushProtocolError when the body is not a JSON object (after 429/5xx were ruled out)
 */
export function jsonBody(res: HttpAnswer, provider: string): Record<string, unknown> {
  const body = parseJson(res.text);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new PushProtocolError(`${provider} answered HTTP ${res.status} without a JSON object`);
  }

  return body as Record<string, unknown>;
}

/** Lower-case hex MD5 (vendor signatures). */
export function md5(s: string): string {
  return createHash('md5').update(s, 'utf8').digest('hex');
}

/** Lower-case hex SHA-256 (vendor signatures, dedupe ids). */
export function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** `s` cut to at most `n` characters (vendor title/content limits). */
export function cut(s: string, n: number): string {
  return [...s].slice(0, n).join('');
}

/** A string or number field as a string ('' when absent). */
export function codeOf(v: unknown): string {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : '';
}

/** Whether a comma-separated list or an array of strings holds `token`. */
export function listHas(list: unknown, token: string): boolean {
  if (typeof list === 'string') {
    return list.split(',').some((t) => t.trim() === token);
  }

  return Array.isArray(list) && list.some((t) => t === token);
}

/**
 * OAuth 2.0 client-credentials grant (RFC 6749 §4.4) as Huawei and Honor run it: a form POST of
 * grant_type, client_id and client_secret; the answer {access_token, expires_in, token_type}.
 * @throws PushAuthError when refused (retryable for 429/5xx) or the answer has no access_token
 */
export async function clientCredentialsToken(
  http: HttpClient,
  url: string,
  clientId: string,
  clientSecret: string,
  timeoutMs: number,
  provider: string,
): Promise<IssuedToken> {
  const res = await http.send(url, {
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }).toString(),
    timeoutMs,
  });
  const body = parseJson(res.text) as { access_token?: unknown; expires_in?: unknown; error?: unknown } | undefined;
  if (res.status !== 200 || typeof body?.access_token !== 'string' || body.access_token === '') {
    const what = typeof body?.error === 'string' ? body.error : `HTTP ${res.status}`;
    throw new PushAuthError(`${provider} token request refused: ${what}`, res.status === 429 || res.status >= 500);
  }

  return { token: body.access_token, ...(typeof body.expires_in === 'number' ? { expiresInS: body.expires_in } : {}) };
}
