/**
 * The command-line frame the three benchmarks (load/sip-bench, load/calls-bench,
 * load/wake-bench) share: parse (exit 2 with the help on a bad option), --help, the command line
 * that reproduces the run, Ctrl-C / SIGTERM (exit 130 at once: each bench's exit hooks and
 * pdeathsig end its processes), run, print the figures with the report's path, write the JSON
 * report to load/reports/ (or --json). Each bench supplies its parser, runner and formatter.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/util/paths.js';

/** One benchmark's parts for runBenchCli(). */
export interface BenchCli<O, R extends { startedAt: string }> {
  /** The program name in messages and the report file name (`wake-bench`). */
  name: string;
  /** The npm script that runs it (`bench:wake`), for the reproducing command line. */
  npmScript: string;
  help: string;
  /** @throws {Error} on a bad option (its message is shown above the help) */
  parse(argv: string[]): { help: boolean; options: O; jsonPath?: string };
  run(options: O, command: string): Promise<R>;
  format(report: R): string;
  /** What Ctrl-C stops, for its message (`the gateway, the agents and sipp`). */
  stops: string;
  /**
   * Where the `report: <file>` line goes: `before-last`, above the text's last line (its verdict,
   * which then stays last), or `after` the text, after a blank line.
   */
  reportLine: 'before-last' | 'after';
  /** Print an unexpected error's stack, not only its message. */
  stack: boolean;
}

/** Writes a bench's JSON report (load/reports/<name>-<start time>.json unless `jsonPath`); returns its path. */
export function writeBenchReport(name: string, report: { startedAt: string }, jsonPath?: string): string {
  const file = jsonPath ?? path.join(projectRoot(), 'load', 'reports', `${name}-${report.startedAt.replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  return file;
}

/** The CLI: parse, run, print, write. Returns the exit status (0, 1 on failure, 2 on bad options). */
export async function runBenchCli<O, R extends { startedAt: string }>(cli: BenchCli<O, R>, argv: string[]): Promise<number> {
  let parsed: ReturnType<BenchCli<O, R>['parse']>;
  try {
    parsed = cli.parse(argv);
  } catch (err) {
    console.error(`${cli.name}: ${err instanceof Error ? err.message : String(err)}\n\n${cli.help}`);

    return 2;
  }
  if (parsed.help) {
    console.log(cli.help);

    return 0;
  }
  const command = [`npm run ${cli.npmScript} --`, ...argv.map((a) => (/[\s"'{}]/.test(a) ? JSON.stringify(a) : a))].join(' ');
  const stop = (): void => {
    console.error(`${cli.name}: interrupted, stopping ${cli.stops}`);
    process.exit(130);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const report = await cli.run(parsed.options, command);
    const text = cli.format(report);
    if (cli.reportLine === 'after') {
      console.log(text);
    }
    const file = writeBenchReport(cli.name, report, parsed.jsonPath);
    const shown = path.relative(process.cwd(), file) || file;
    console.log(cli.reportLine === 'after' ? `\nreport: ${shown}` : text.replace(/\n([^\n]*)$/, `\nreport: ${shown}\n$1`));

    return 0;
  } catch (err) {
    console.error(`${cli.name}: ${err instanceof Error ? (cli.stack ? (err.stack ?? err.message) : err.message) : String(err)}`);

    return 1;
  }
}

/** Runs `main` with the process's arguments when `moduleUrl` (import.meta.url) is the program, and exits with its status. */
export function runIfMain(moduleUrl: string, main: (argv: string[]) => Promise<number>): void {
  if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(moduleUrl)) {
    void main(process.argv.slice(2)).then((code) => process.exit(code));
  }
}
