/**
 * Configuration of the call-record webhook (cdr-webhook.ts): `cdrWebhookConfigSchema`, meant as
 * the `calls.cdrWebhook` section of the configuration schema, and `cdrWebhookOptions()`, which
 * turns a parsed section into CdrWebhook options (or undefined when the webhook is off).
 *
 * Like the rest of src/config/schema.ts the schema holds no defaults: config/default.yaml writes
 * every key.
 */
import { z } from 'zod';
import { type Logger } from '../log/logger.js';
import { type CdrWebhookOptions } from './cdr-webhook.js';

/** Records waiting in memory for the webhook at most (CdrWebhookOptions.maxQueue). */
export const CDR_WEBHOOK_MAX_QUEUE = 10_000;

const ms = (max: number): z.ZodInt => z.int().min(1).max(max);

/** The `calls.cdrWebhook` section. */
export const cdrWebhookConfigSchema = z
  .strictObject({
    /**
     * http(s) URL every finished call's record is POSTed to (JSON, see cdr-webhook.ts); a query
     * string is allowed (it is never logged). Empty: no webhook.
     */
    url: z.string().regex(/^(https?:\/\/[^\s/?#]+([/?][^\s#]*)?)?$/, 'an http(s) URL, e.g. https://billing.example.com/cdr, or empty'),
    /** Per-attempt timeout (request sent to answer read), ms. */
    timeoutMs: z.int().min(100).max(120_000),
    /** Attempts per record, the first included; then the record is given up (logged, counted). */
    maxAttempts: z.int().min(1).max(100),
    /** Wait before the second attempt, ms; doubled per attempt, with jitter. */
    backoffBaseMs: ms(3600_000),
    /** Longest wait between attempts, ms; also caps a Retry-After the receiver sends. */
    backoffMaxMs: ms(3600_000),
    /**
     * Key of the X-Ringbridge-Signature header (sha256=<hex HMAC-SHA256 of the body>), at least
     * 32 characters (better set RINGBRIDGE_CALLS__CDR_WEBHOOK__SECRET). Empty: requests are not signed.
     */
    secret: z.string().refine((s) => s === '' || s.length >= 32, 'at least 32 characters, or empty for unsigned requests'),
  })
  .superRefine((c, ctx) => {
    if (c.backoffMaxMs < c.backoffBaseMs) {
      ctx.addIssue({ code: 'custom', path: ['backoffMaxMs'], message: `at least backoffBaseMs (${c.backoffBaseMs})` });
    }
  });

/** The parsed `calls.cdrWebhook` section. */
export type CdrWebhookConfig = z.infer<typeof cdrWebhookConfigSchema>;

/** CdrWebhook options from the configuration section; undefined when `url` is empty (webhook off). */
export function cdrWebhookOptions(cfg: CdrWebhookConfig, logger: Logger): CdrWebhookOptions | undefined {
  if (cfg.url === '') {
    return undefined;
  }

  return {
    url: cfg.url,
    timeoutMs: cfg.timeoutMs,
    maxAttempts: cfg.maxAttempts,
    backoffBaseMs: cfg.backoffBaseMs,
    backoffMaxMs: cfg.backoffMaxMs,
    ...(cfg.secret ? { hmacSecret: cfg.secret } : {}),
    logger,
    maxQueue: CDR_WEBHOOK_MAX_QUEUE,
  };
}
