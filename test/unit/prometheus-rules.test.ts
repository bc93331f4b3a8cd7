import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { projectRoot } from '../../src/util/paths.js';
import { ALLOWED_METRICS, promQLProblems, scanPromQL } from '../helpers/metric-names.js';

const dir = path.join(projectRoot(), 'docker', 'prometheus');
const rulesFile = path.join(dir, 'alerts.yml');

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules = (YAML.parse(fs.readFileSync(rulesFile, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

function promtool(...args: string[]) {
  // promtool resolves rule_files relative to the file that names them
  return spawnSync('promtool', args, { cwd: dir, encoding: 'utf8' });
}

describe('docker/prometheus/alerts.yml', () => {
  it('passes promtool check rules', () => {
    const r = promtool('check', 'rules', rulesFile);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it('passes its unit tests (alerts.test.yml: series that fire and series that do not)', () => {
    const r = promtool('test', 'rules', path.join(dir, 'alerts.test.yml'));
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });

  it('has the alerts of issue 7, each with a severity, a summary and a for duration', () => {
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining(['RingbridgeLowMosCallShare', 'RingbridgePushFailureRate', 'RingbridgePddP99High', 'RingbridgeNoAvailableAgents', 'RingbridgeMediaWorkerDown']),
    );
    for (const r of rules) {
      expect(['warning', 'critical'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.for, r.alert).toMatch(/^\d+m$/);
    }
  });

  it('is tested for every alert, firing and not firing', () => {
    const tests = (YAML.parse(fs.readFileSync(path.join(dir, 'alerts.test.yml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] }).tests.flatMap(
      (t) => t.alert_rule_test,
    );
    for (const r of rules) {
      const mine = tests.filter((t) => t.alertname === r.alert);
      expect(mine.some((t) => t.exp_alerts.length > 0), `${r.alert} fires in a test`).toBe(true);
      expect(mine.some((t) => t.exp_alerts.length === 0), `${r.alert} stays quiet in a test`).toBe(true);
    }
  });

  it('queries only the metric names and label values the gateway exports (and Prometheus\'s up)', () => {
    const allowed = new Set([...ALLOWED_METRICS, 'up']);
    for (const r of rules) {
      expect(scanPromQL(r.expr).metrics.length, r.alert).toBeGreaterThan(0);
      expect(promQLProblems(r.expr, allowed), r.alert).toEqual([]);
    }
    // the scanner itself notices a renamed metric and a wrong label value
    expect(promQLProblems('sum(rate(ringbridge_push_sent_total{result="failed"}[5m]))')).toEqual([expect.stringContaining('failed is not one of')]);
    expect(promQLProblems('sum by (leg) (rate(ringbridge_leg_mos_count{leg=~"trunk|agent"}[5m]))')).toEqual([]);
    expect(promQLProblems('histogram_quantile(0.99, sum by (le) (rate(ringbridge_call_pdd_bucket[5m])))')).toEqual(['unknown metric ringbridge_call_pdd_bucket']);
  });

  it('is loaded by prometheus.yml and mounted beside it by docker/compose.yaml', () => {
    const config = YAML.parse(fs.readFileSync(path.join(dir, 'prometheus.yml'), 'utf8')) as { rule_files?: string[] };
    expect(config.rule_files).toEqual(['alerts.yml']);
    const compose = YAML.parse(fs.readFileSync(path.join(dir, '..', 'compose.yaml'), 'utf8')) as { services: { prometheus: { volumes: string[] } } };
    expect(compose.services.prometheus.volumes).toEqual(
      expect.arrayContaining(['./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro', './prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro']),
    );
    const r = promtool('check', 'config', path.join(dir, 'prometheus.yml'));
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/1 rule files found/);
  });
});
