/**
 * Live progress of a run: one status line rewritten in place on a TTY, a plain line every
 * `plainEveryMs` otherwise (CI logs, pipes).
 */

/** What the progress line shows. */
export interface ProgressFigures {
  /** Which target (ringbridge, a peer bridge). */
  target: string;
  elapsedS: number;
  durationS: number;
  attempted: number;
  answered: number;
  failed: number;
  /** Attempts per second over the last interval. */
  cps: number;
  /** Offered rate now, calls/s. */
  offeredCps: number;
  concurrent: number;
  /** Outbound calls dialled and answered so far, when the scenario has them. */
  outbound?: { dialed: number; answered: number };
}

/** One progress line (no newline). */
export function formatProgress(f: ProgressFigures): string {
  return (
    `[${f.target}] ${f.elapsedS.toFixed(0)}/${f.durationS.toFixed(0)} s  ` +
    `attempted ${f.attempted}  answered ${f.answered}  failed ${f.failed}  ` +
    `rate ${f.cps.toFixed(1)}/s (offered ${f.offeredCps.toFixed(1)})  concurrent ${f.concurrent}` +
    (f.outbound ? `  outbound ${f.outbound.answered}/${f.outbound.dialed}` : '')
  );
}

/** Where progress goes. */
export interface ProgressSink {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Writes progress lines to a stream (stderr by default). */
export class Progress {
  readonly #out: ProgressSink;
  readonly #plainEveryMs: number;
  #lastPlain = -Infinity;
  #open = false;

  constructor(out: ProgressSink = process.stderr, plainEveryMs = 5000) {
    this.#out = out;
    this.#plainEveryMs = plainEveryMs;
  }

  /** Shows the figures: rewrites the line on a TTY, else prints a line at most every plainEveryMs. */
  update(f: ProgressFigures): void {
    const line = formatProgress(f);
    if (this.#out.isTTY) {
      this.#out.write(`\r\x1b[2K${line}`);
      this.#open = true;
    } else if (performance.now() - this.#lastPlain >= this.#plainEveryMs) {
      this.#lastPlain = performance.now();
      this.#out.write(`${line}\n`);
    }
  }

  /** A message on its own line (ends the status line first). */
  note(msg: string): void {
    this.end();
    this.#out.write(`${msg}\n`);
  }

  /** Ends the status line. */
  end(): void {
    if (this.#open) {
      this.#out.write('\n');
      this.#open = false;
    }
  }
}
