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
import { ringbridgeVersion } from '../../util/version.js';
import { SipEngine } from './engine.js';

const HELP = `ringbridge-sip-engine ${ringbridgeVersion()}: the embedded SIP engine as its own process

Usage: ringbridge-sip-engine [--config FILE] [--profile NAME] [--check-config] [--version] [--help]

It reads the gateway's configuration (the sip section). drachtio-srf apps, such as a gateway with
sip.engine = external, connect to sip.control.host:port with sip.control.secret. sip.control.host is
also the address the control port binds to (default 127.0.0.1: only local apps); set
RINGBRIDGE_SIP__CONTROL__HOST=0.0.0.0 to accept apps from other hosts.
`;

async function main(): Promise<number> {
  let values;
  try {
    values = parseArgs({ options: { config: { type: 'string' }, profile: { type: 'string' }, 'check-config': { type: 'boolean' }, version: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    process.stderr.write(`ringbridge-sip-engine: ${(err as Error).message}\n\n${HELP}`);

    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);

    return 0;
  }
  if (values.version) {
    process.stdout.write(`${ringbridgeVersion()}\n`);

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
    process.stderr.write(
      'ringbridge-sip-engine: invalid configuration:\n  - sip.control.secret is empty: expected a shared secret (e.g. RINGBRIDGE_SIP__CONTROL__SECRET=...), because apps in other processes must know it\n',
    );

    return 1;
  }
  if (values['check-config']) {
    process.stdout.write(`${JSON.stringify({ ...config.sip, control: { ...config.sip.control, secret: '[set]' } }, null, 2)}\n`);

    return 0;
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
