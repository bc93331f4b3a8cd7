#!/usr/bin/env node
/**
 * ringbridge process entry: loads the configuration, starts the gateway, and stops it cleanly:
 * SIGTERM drains (new calls refused, calls in progress go on for up to shutdown.drainTimeoutMs),
 * SIGINT stops at once (calls hung up); both exit 0, as does a drain requested through the admin
 * API. A second signal, or a stop that outlasts its limit, exits at once with status 1.
 *
 * Usage: ringbridge [--config FILE] [--profile NAME] [--check-config] [--help] [--version]
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load.js';
import { Gateway } from './gateway.js';
import { createLogger } from './log/logger.js';
import { maskUrlPassword } from './log/redact.js';
import { ringbridgeVersion } from './util/version.js';

const HELP = `ringbridge ${ringbridgeVersion()}: SIP/WebRTC media gateway with a push bridge

Usage: ringbridge [options]

Options:
  --config FILE     YAML file layered over config/default.yaml (env RINGBRIDGE_CONFIG)
  --profile NAME    profile file config/NAME.yaml, e.g. "test" (env RINGBRIDGE_PROFILE)
  --check-config    validate the configuration, print it as JSON and exit
  --version         print the version and exit
  --help            print this help and exit

Any key can be set by environment: RINGBRIDGE_<SECTION>__<KEY>=value, e.g. RINGBRIDGE_HTTP__PORT=9090.
`;

/** JSON replacer for --check-config: secrets and passwords are not printed. */
function redactSecrets(key: string, value: unknown): unknown {
  if (typeof value === 'string' && value.includes('@')) {
    value = maskUrlPassword(value, '[set]'); // redis.url's password
  }
  return /secret|password|token|ha1/i.test(key) && typeof value === 'string' && value !== '' ? '[set]' : value;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string' },
        profile: { type: 'string' },
        'check-config': { type: 'boolean' },
        version: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`ringbridge: ${(err as Error).message}\n\n${HELP}`);

    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);

    return 0;
  }
  if (args.version) {
    process.stdout.write(`${ringbridgeVersion()}\n`);

    return 0;
  }

  let config;
  try {
    config = loadConfig({ file: args.config, profile: args.profile }).config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ringbridge: ${err.message}\n`);

      return 1;
    }
    throw err;
  }
  if (args['check-config']) {
    process.stdout.write(`${JSON.stringify(config, redactSecrets, 2)}\n`);

    return 0;
  }

  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty });
  // Signals are handled from the start: Ctrl-C during a slow start (an external SIP engine that
  // does not answer yet) stops cleanly instead of killing the process mid-way.
  let gateway: Gateway | undefined;
  let signalled = false;
  let finish: (code: number) => void = () => undefined;
  const done = new Promise<number>((resolve) => (finish = resolve));
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      logger.warn({ signal }, 'second signal: exiting now');
      if (!gateway) {
        process.exit(1);
      }
      finish(1);

      return;
    }
    signalled = true;
    // SIGTERM (an orchestrator, systemd, kill) drains: calls in progress may end by themselves.
    // SIGINT (Ctrl-C) stops now: its calls are hung up.
    const drain = signal === 'SIGTERM';
    logger.info({ signal }, drain ? 'draining, then stopping' : 'stopping');
    // A drain already running (admin API) keeps its own deadline, which may be later.
    const drainLeftMs = Math.max(config.shutdown.drainTimeoutMs, (gateway?.drainDeadline ?? 0) - Date.now());
    const limitMs = config.shutdown.timeoutMs + (drain ? drainLeftMs : 0);
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: limitMs }, 'shutdown took too long: exiting now');
      finish(1);
    }, limitMs);
    timer.unref();
    if (gateway) {
      (drain ? gateway.drain() : gateway.stop()).then(
        () => {
          clearTimeout(timer);
          finish(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          finish(1);
        },
      );
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    gateway = await Gateway.start(config, logger);
  } catch (err) {
    if (signalled) {
      return 0;
    }
    logger.fatal({ err }, 'ringbridge could not start');
    logger.flush();
    process.stderr.write(`ringbridge: could not start: ${(err as Error).message}\n`);

    return 1;
  }
  if (signalled) {
    // a signal arrived while starting: stop now
    signalled = false;
    onSignal('SIGINT');
  }
  // a drain requested through the admin API ends with the gateway stopped: exit 0 then
  void gateway.stopped.then(() => {
    if (!signalled) {
      finish(0);
    }
  });

  return done;
}

main().then(
  (code) => {
    // Let pino flush its asynchronous destination, then leave even if a handle lingers.
    setTimeout(() => process.exit(code), 50).unref();
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ringbridge: fatal: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
