import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { projectRoot } from '../../src/util/paths.js';
import { ALLOWED_METRICS, promQLProblems, scanPromQL } from '../helpers/metric-names.js';

const provisioning = path.join(projectRoot(), 'docker', 'grafana', 'provisioning');
const dashboardFile = path.join(provisioning, 'dashboards', 'ringbridge', 'ringbridge.json');

interface Target {
  expr?: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
  gridPos: { x: number; y: number; w: number; h: number };
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; definition?: string }[] };
}

const dashboard = JSON.parse(fs.readFileSync(dashboardFile, 'utf8')) as Dashboard;
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));

describe('docker/grafana ringbridge dashboard', () => {
  it('is provisioned from the directory compose mounts', () => {
    const provider = YAML.parse(fs.readFileSync(path.join(provisioning, 'dashboards', 'ringbridge.yaml'), 'utf8')) as { providers: { type: string; options: { path: string } }[] };
    const container = provider.providers[0]!.options.path;
    // compose: ./grafana/provisioning:/etc/grafana/provisioning:ro
    expect(container.startsWith('/etc/grafana/provisioning/')).toBe(true);
    expect(path.dirname(dashboardFile)).toBe(path.join(provisioning, container.slice('/etc/grafana/provisioning/'.length)));
    expect(dashboard.uid).toMatch(/^[a-z0-9-]{1,40}$/);
  });

  it('has unique panel ids, query panels with a Prometheus data source from the variable, and no overlapping panels', () => {
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of queryPanels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      expect(new Set(p.targets!.map((t) => t.refId)).size, p.title).toBe(p.targets!.length);
    }
    const cells = new Set<string>();
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('queries only allowed metric names and label values, in every panel and variable', () => {
    expect(exprs.length).toBeGreaterThan(0);
    for (const { panel, expr } of exprs) {
      expect(scanPromQL(expr).metrics.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      expect(promQLProblems(expr), `${panel}: ${expr}`).toEqual([]);
    }
    for (const v of dashboard.templating.list.filter((t) => t.type === 'query')) {
      const m = /^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),/.exec(v.definition ?? '');
      expect(m, v.name).not.toBeNull();
      expect(ALLOWED_METRICS.has(m![1]!), v.name).toBe(true);
    }
  });

  it('has queries that parse as PromQL once the Grafana variables are filled in (promtool check rules)', () => {
    const fill = (e: string) => e.replace(/\$__(rate_interval|interval|range)/g, '5m').replace(/"\$\{?[a-z_]+\}?"/g, '".*"');
    const rules = { groups: [{ name: 'dashboard', rules: exprs.map(({ expr }, i) => ({ record: `dashboard:expr_${i}`, expr: fill(expr) })) }] };
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ringbridge-dashboard-'));
    try {
      const file = path.join(tmp, 'rules.yml');
      fs.writeFileSync(file, YAML.stringify(rules));
      const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('covers every allowed metric (calls, PDD, MOS, jitter, loss, RTT, push, agents, workers)', () => {
    const used = new Set(exprs.flatMap(({ expr }) => scanPromQL(expr).metrics).map((m) => m.replace(/_(bucket|sum|count)$/, '')));
    const bases = new Set([...ALLOWED_METRICS].map((m) => m.replace(/_(bucket|sum|count)$/, '')));
    expect([...bases].filter((b) => !used.has(b))).toEqual([]);
  });

  it('shows PDD and push-to-connect at p50 and p99', () => {
    for (const metric of ['ringbridge_call_pdd_seconds_bucket', 'ringbridge_push_to_connect_seconds_bucket']) {
      const qs = exprs.filter(({ expr }) => expr.includes(metric)).map(({ expr }) => expr);
      expect(qs.some((e) => e.startsWith('histogram_quantile(0.5,')), metric).toBe(true);
      expect(qs.some((e) => e.startsWith('histogram_quantile(0.99,')), metric).toBe(true);
    }
  });
});
