/**
 * Self-contained SVG charts for the HTML report: a line chart of time series and a bar chart.
 * No dependency and no script: the report opens offline in any browser. Every text that comes
 * from data is XML-escaped.
 */

/** One line of a line chart: y values at the chart's x values (null: no point). */
export interface Series {
  name: string;
  values: readonly (number | null)[];
}

/** Options of a chart. */
export interface ChartOptions {
  title: string;
  /** Label of the x axis (e.g. "s since start"). */
  xLabel: string;
  /** Label of the y axis (e.g. "calls/s"). */
  yLabel: string;
  width?: number;
  height?: number;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

/** Escapes text for XML/HTML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A "nice" upper bound and tick step for an axis from 0 to `max`. */
export function niceScale(max: number, ticks = 5): { top: number; step: number } {
  if (!(max > 0) || !Number.isFinite(max)) {
    return { top: 1, step: 0.2 };
  }
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;

  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

const fmt = (v: number): string => (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : String(Math.round(v * 100) / 100));

function frame(o: ChartOptions, w: number, h: number, pad: { l: number; r: number; t: number; b: number }, yTop: number, yStep: number): string[] {
  const out: string[] = [];
  out.push(`<text x="${w / 2}" y="16" text-anchor="middle" font-weight="bold">${escapeXml(o.title)}</text>`);
  for (let v = 0; v <= yTop + 1e-9; v += yStep) {
    const y = pad.t + (h - pad.t - pad.b) * (1 - v / yTop);
    out.push(`<line x1="${pad.l}" x2="${w - pad.r}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${pad.l - 4}" y="${(y + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  out.push(`<text x="${w / 2}" y="${h - 4}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  out.push(`<text transform="translate(12 ${(h / 2).toFixed(0)}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);

  return out;
}

/** The frame shared by both charts: size, padding, the finite y values and the opening tag. */
function shell(o: ChartOptions, values: readonly (number | null)[]): { w: number; h: number; pad: { l: number; r: number; t: number; b: number }; ys: number[]; open: string; empty: string } {
  const w = o.width ?? 640;
  const h = o.height ?? 280;
  const open = `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="11" role="img" aria-label="${escapeXml(o.title)}">`;

  return {
    w,
    h,
    pad: { l: 56, r: 12, t: 28, b: 52 },
    ys: values.filter((v): v is number => v !== null && Number.isFinite(v)),
    open,
    empty: `${open}<text x="${w / 2}" y="16" text-anchor="middle" font-weight="bold">${escapeXml(o.title)}</text><text x="${w / 2}" y="${h / 2}" text-anchor="middle">no data</text></svg>`,
  };
}

/**
 * A line chart of one or more series over shared x values, as an `<svg>` element. Returns an
 * svg with "no data" when there is nothing to draw.
 */
export function lineChart(x: readonly number[], series: readonly Series[], o: ChartOptions): string {
  const { w, h, pad, ys, open, empty } = shell(o, series.flatMap((s) => s.values));
  if (x.length === 0 || ys.length === 0) {
    return empty;
  }
  const { top, step } = niceScale(Math.max(...ys));
  const x0 = Math.min(...x);
  const x1 = Math.max(...x);
  const sx = (v: number): number => pad.l + ((w - pad.l - pad.r) * (x1 === x0 ? 0.5 : (v - x0) / (x1 - x0)));
  const sy = (v: number): number => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  const out = frame(o, w, h, pad, top, step);
  const xs = niceScale(x1 - x0, 6);
  for (let v = 0; v <= x1 - x0 + 1e-9; v += xs.step) {
    out.push(`<text x="${sx(x0 + v).toFixed(1)}" y="${h - pad.b + 14}" text-anchor="middle">${fmt(x0 + v)}</text>`);
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const segments: string[] = [];
    let d = '';
    s.values.forEach((v, j) => {
      if (v === null || !Number.isFinite(v) || x[j] === undefined) {
        if (d) {
          segments.push(d);
        }
        d = '';

        return;
      }
      d += `${d ? 'L' : 'M'}${sx(x[j]).toFixed(1)},${sy(v).toFixed(1)}`;
    });
    if (d) {
      segments.push(d);
    }
    for (const seg of segments) {
      out.push(`<path d="${seg}" fill="none" stroke="${color}" stroke-width="1.5"/>`);
    }
    out.push(`<rect x="${pad.l + 4 + i * 130}" y="${h - 22}" width="10" height="10" fill="${color}"/><text x="${pad.l + 18 + i * 130}" y="${h - 13}">${escapeXml(s.name)}</text>`);
  });

  return `${open}${out.join('')}</svg>`;
}

/** One group of bars: a label and one value per series (null: no bar). */
export interface BarGroup {
  label: string;
  values: readonly (number | null)[];
}

/** A grouped bar chart (one colour per series name), as an `<svg>` element. */
export function barChart(groups: readonly BarGroup[], seriesNames: readonly string[], o: ChartOptions): string {
  const { w, h, pad, ys, open, empty } = shell(o, groups.flatMap((g) => g.values));
  if (groups.length === 0 || ys.length === 0) {
    return empty;
  }
  const { top, step } = niceScale(Math.max(...ys));
  const out = frame(o, w, h, pad, top, step);
  const gw = (w - pad.l - pad.r) / groups.length;
  const bw = (gw * 0.8) / Math.max(1, seriesNames.length);
  const sy = (v: number): number => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  groups.forEach((g, gi) => {
    const gx = pad.l + gi * gw + gw * 0.1;
    g.values.forEach((v, si) => {
      if (v === null || !Number.isFinite(v)) {
        return;
      }
      const y = sy(v);
      out.push(`<rect x="${(gx + si * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${(h - pad.b - y).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${escapeXml(`${seriesNames[si] ?? ''} ${g.label}: ${fmt(v)}`)}</title></rect>`);
    });
    out.push(`<text x="${(gx + gw * 0.4).toFixed(1)}" y="${h - pad.b + 14}" text-anchor="middle">${escapeXml(g.label)}</text>`);
  });
  seriesNames.forEach((name, i) => {
    out.push(`<rect x="${pad.l + 4 + i * 160}" y="${h - 22}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${pad.l + 18 + i * 160}" y="${h - 13}">${escapeXml(name)}</text>`);
  });

  return `${open}${out.join('')}</svg>`;
}
