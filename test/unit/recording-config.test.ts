/**
 * The recording configuration (config `recording`, trunks[].recording, routing.dids[].record):
 * defaults, and errors that name the key.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.js';

function error(overrides: Record<string, unknown>): ConfigError {
  try {
    loadConfig({ profile: 'test', env: {}, overrides });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);

    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('recording configuration', () => {
  it('has defaults: enabled, no on-demand, 30 days, hourly sweep; trunks and DIDs record nothing unless asked', () => {
    const { config } = loadConfig({ profile: 'test', env: {} });
    expect(config.recording).toEqual({ enabled: true, dir: './data/recordings', retentionS: 2592000, maxDurationS: 14400, minFreeMb: 1024, sweepIntervalMs: 3600000, onDemand: false });
    expect(config.trunks[0]!.recording).toBe(false);
    const { config: c2 } = loadConfig({ profile: 'test', env: {}, overrides: { routing: { dids: [{ number: '*', agent: 'a', record: true }], groups: [], defaultTrunk: '' } } });
    expect(c2.routing.dids[0]).toEqual({ number: '*', agent: 'a', record: true });
  });

  it('names the key of a bad value', () => {
    expect(error({ recording: { retentionS: 10 } }).problems.map((p) => p.key)).toEqual(['recording.retentionS']);
    expect(error({ recording: { dir: '' } }).problems.map((p) => p.key)).toEqual(['recording.dir']);
    expect(error({ recording: { maxDurationS: 0 } }).problems.map((p) => p.key)).toEqual(['recording.maxDurationS']);
    expect(error({ recording: { maxDurationS: 200_000 } }).problems.map((p) => p.key)).toEqual(['recording.maxDurationS']);
    expect(error({ recording: { onDemand: 'yes' } }).problems.map((p) => p.key)).toEqual(['recording.onDemand']);
    expect(error({ recording: { everything: true } }).message).toContain('recording.everything');
    const bad = error({ routing: { dids: [{ number: '*', agent: 'a', record: 'always' }], groups: [], defaultTrunk: '' } });
    expect(bad.message).toMatch(/routing\.dids\.0/);
  });

  it('takes RINGBRIDGE_RECORDING__* from the environment', () => {
    const { config } = loadConfig({ profile: 'test', env: { RINGBRIDGE_RECORDING__ON_DEMAND: 'true', RINGBRIDGE_RECORDING__RETENTION_S: '86400' } });
    expect(config.recording.onDemand).toBe(true);
    expect(config.recording.retentionS).toBe(86400);
  });
});
