/**
 * The outbound dialling policy against toll fraud: which numbers an agent's `call.dial` may reach
 * (config `security.dialPolicy`). Pure; the per-agent dial rate is counted by the guard in Redis.
 *
 * Rules, in order: at most `maxDigits` digits; a denied prefix refuses; then, when allowed
 * prefixes or patterns are configured, the number must match one; numbers in international form
 * ("+" or "00") outside `homeCountryCode` need `international`. "00" counts as "+" for prefixes.
 */

/** The policy as configured. */
export interface DialPolicyConfig {
  allowedPrefixes: string[];
  allowedPatterns: string[];
  deniedPrefixes: string[];
  maxDigits: number;
  international: boolean;
  homeCountryCode: string;
}

/** Why a number was refused (bounded: also a metric label). */
export type DialRefusal = 'too_long' | 'denied_prefix' | 'not_allowed' | 'international';

/** The dialled number with a leading "00" written as "+" (the international prefix). */
export function normaliseDialled(n: string): string {
  return n.startsWith('00') ? `+${n.slice(2)}` : n;
}

/** A compiled dialling policy. */
export class DialPolicy {
  readonly #cfg: DialPolicyConfig;
  readonly #patterns: RegExp[];

  /** @throws {SyntaxError} when a pattern is not a regular expression (the config schema checks first) */
  constructor(cfg: DialPolicyConfig) {
    this.#cfg = cfg;
    this.#patterns = cfg.allowedPatterns.map((p) => new RegExp(`^(?:${p})$`));
  }

  /** Checks a number as the agent dialled it (digits, "*", "#", optional "+"); undefined: allowed. */
  check(dialled: string): DialRefusal | undefined {
    const n = normaliseDialled(dialled);
    const digits = n.replace(/[^0-9]/g, '').length;
    if (digits > this.#cfg.maxDigits) {
      return 'too_long';
    }
    const starts = (prefixes: string[]) => prefixes.some((p) => n.startsWith(normaliseDialled(p)) || dialled.startsWith(p));
    if (starts(this.#cfg.deniedPrefixes)) {
      return 'denied_prefix';
    }
    if ((this.#cfg.allowedPrefixes.length > 0 || this.#patterns.length > 0) && !starts(this.#cfg.allowedPrefixes) && !this.#patterns.some((r) => r.test(dialled) || r.test(n))) {
      return 'not_allowed';
    }
    if (!this.#cfg.international && n.startsWith('+') && (this.#cfg.homeCountryCode === '' || !n.startsWith(`+${this.#cfg.homeCountryCode}`))) {
      return 'international';
    }

    return undefined;
  }
}

/** The message an agent gets for a refusal (no number in it: it would end up in logs). */
export function dialRefusalMessage(r: DialRefusal): string {
  switch (r) {
    case 'too_long':
      return 'the number has more digits than the dialling policy allows';
    case 'denied_prefix':
      return 'numbers with this prefix may not be dialled (dialling policy)';
    case 'not_allowed':
      return 'the number is not among those the dialling policy allows';
    case 'international':
      return 'international numbers may not be dialled (dialling policy)';
  }
}
