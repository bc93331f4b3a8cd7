#!/usr/bin/env node
/**
 * The embedded SIP engine as its own process, for deployments that run the SIP edge apart from
 * the gateway: the gateway (or any drachtio-srf app) then connects with sip.engine = external.
 *
 * Usage: ringbridge-sip-engine [--config FILE] [--profile NAME]
 * It reads the same configuration as the gateway (the sip section) and needs a non-empty
 * sip.control.secret, since other processes must know it.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../../config/load.js';
import { createLogger } from '../../log/logger.js';
import { SipEngine } from './engine.js';

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { config: { type: 'string' }, profile: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    process.stdout.write('Usage: ringbridge-sip-engine [--config FILE] [--profile NAME]\nRuns the SIP engine alone; drachtio-srf apps connect to sip.control.\n');

    return 0;
  }
  let config;
  try {
    config = loadConfig({ file: values.config, profile: values.profile }).config;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ringbridge-sip-engine: ${err.message}\n`);

      return 1;
    }
    throw err;
  }
  if (config.sip.control.secret === '') {
    process.stderr.write('ringbridge-sip-engine: invalid configuration:\n  - sip.control.secret is empty: expected a shared secret, because apps in other processes must know it\n');

    return 1;
  }
  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty, base: { component: 'sip-engine' } });
  const engine = await SipEngine.start({ ...config.sip, logger });
  const c = engine.control;
  logger.info({ control: `${c.host}:${c.port}` }, 'SIP engine ready for drachtio-srf apps');

  return new Promise((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'stopping SIP engine');
      void engine.close().then(() => resolve(0));
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

main().then(
  (code) => {
    setTimeout(() => process.exit(code), 50).unref();
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ringbridge-sip-engine: fatal: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
