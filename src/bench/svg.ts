/**
 * Minimal hand-written SVG line plots: enough for the bench's outage per
 * upgrade and CDF, and for the scaling curves in docs/. Linear or log axes,
 * lines with markers or steps, a legend in a row above the plot. No dependency, no script, no CSS:
 * the files render the same on GitHub, in a browser and in an image viewer.
 */

export interface Series {
  name: string;
  color: string;
  /** [x, y], in the order they are drawn */
  points: Array<[number, number]>;
}

export interface Axis {
  label: string;
  log?: boolean;
  /** tick labels (default: the number) */
  format?: (v: number) => string;
  /** domain bounds; default from the data (log: whole decades) */
  min?: number;
  max?: number;
  /** explicit tick positions, e.g. the port counts measured */
  ticks?: number[];
}

export interface Plot {
  title: string;
  subtitle?: string;
  x: Axis;
  y: Axis;
  series: Series[];
  /** draw each series as a step function (a CDF) instead of straight segments */
  step?: boolean;
  /** circles on the points (default true unless step) */
  markers?: boolean;
  width?: number;
  height?: number;
}

/** Colours per mode, the same in every plot. */
export const COLORS: Record<string, string> = {
  handover: '#1b7837',
  restart: '#d95f02',
  'restart-cold': '#7570b3',
  'dpdk-restart': '#c51b7d',
};

const M = { left: 78, right: 24, top: 64, bottom: 58 };
const LEGEND_ROW = 18;

/** µs as a person reads them: 850 µs, 12.5 ms, 1.2 s. */
export function formatUs(us: number): string {
  if (us < 1000) return `${trim(us)} µs`;
  if (us < 1e6) return `${trim(us / 1000)} ms`;
  return `${trim(us / 1e6)} s`;
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)));
}

export function plot(p: Plot): string {
  const width = p.width ?? 760;
  const pw = width - M.left - M.right;
  // The legend: rows under the title, as many as the names need, clear of the data.
  const named = p.series.filter((x) => x.name !== '');
  const legend: Array<{ s: Series; x: number; row: number }> = [];
  let lx = 0;
  let row = 0;
  for (const s of named) {
    const w = 26 + s.name.length * 7 + 20;
    if (lx > 0 && lx + w > pw) {
      lx = 0;
      row++;
    }
    legend.push({ s, x: M.left + lx, row });
    lx += w;
  }
  const top = M.top + (named.length > 0 ? (row + 1) * LEGEND_ROW : 0);
  const height = (p.height ?? 420) + top - M.top - (named.length > 0 ? LEGEND_ROW : 0);
  const ph = height - top - M.bottom;
  const all = p.series.flatMap((s) => s.points);
  const xs = scale(p.x, all.map((q) => q[0]), 0, pw);
  const ys = scale(p.y, all.map((q) => q[1]), ph, 0);
  const X = (v: number): number => M.left + xs.map(v);
  const Y = (v: number): number => top + ys.map(v);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${M.left}" y="22" font-size="15" font-weight="bold">${esc(p.title)}</text>`,
  );
  if (p.subtitle) out.push(`<text x="${M.left}" y="40" fill="#555555">${esc(p.subtitle)}</text>`);

  // grid and tick labels
  for (const t of xs.ticks) {
    const x = f(X(t));
    out.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${top + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${top + ph + 16}" text-anchor="middle" fill="#333333">${esc((p.x.format ?? String)(t))}</text>`);
  }
  for (const t of ys.ticks) {
    const y = f(Y(t));
    out.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 6}" y="${f(Y(t) + 4)}" text-anchor="end" fill="#333333">${esc((p.y.format ?? String)(t))}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#888888"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${height - 14}" text-anchor="middle">${esc(p.x.label)}</text>`);
  out.push(`<text transform="translate(16 ${top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(p.y.label)}</text>`);

  // series
  const markers = p.markers ?? !p.step;
  for (const s of p.series) {
    if (s.points.length === 0) continue;
    const pts = s.points.map(([x, y]) => [X(x), Y(y)] as const);
    let d = `M${f(pts[0]![0])},${f(pts[0]![1])}`;
    for (let i = 1; i < pts.length; i++) {
      if (p.step) d += ` H${f(pts[i]![0])}`;
      d += ` L${f(pts[i]![0])},${f(pts[i]![1])}`;
    }
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`);
    if (markers) for (const [x, y] of pts) out.push(`<circle cx="${f(x)}" cy="${f(y)}" r="3" fill="${s.color}"/>`);
  }

  for (const { s, x, row: r } of legend) {
    const y = M.top - 18 + (r + 1) * LEGEND_ROW;
    out.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 20}" y2="${y - 4}" stroke="${s.color}" stroke-width="2.5"/>`);
    out.push(`<text x="${x + 26}" y="${y}">${esc(s.name)}</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

interface Scale {
  map(v: number): number;
  ticks: number[];
}

/** Map data values onto [from, to] pixels; log axes span whole decades. */
function scale(a: Axis, values: number[], from: number, to: number): Scale {
  if (a.log) {
    const pos = values.filter((v) => v > 0);
    const lo = a.min ?? 10 ** Math.floor(Math.log10(pos.length > 0 ? Math.min(...pos) : 1));
    let hi = a.max ?? 10 ** Math.ceil(Math.log10(pos.length > 0 ? Math.max(...pos) : 10));
    if (hi <= lo) hi = lo * 10;
    const l0 = Math.log10(lo);
    const l1 = Math.log10(hi);
    const decades = Math.round(l1 - l0);
    const every = Math.max(1, Math.ceil(decades / 8));
    const ticks = a.ticks ?? Array.from({ length: Math.floor(decades / every) + 1 }, (_, i) => 10 ** (Math.round(l0) + i * every));
    // Values at or below 0 (no gap measured) sit on the axis.
    return { map: (v) => from + ((Math.log10(Math.max(v, lo)) - l0) / (l1 - l0)) * (to - from), ticks };
  }
  let lo = a.min ?? Math.min(0, ...values);
  let hi = a.max ?? Math.max(...values, lo + 1);
  if (hi <= lo) hi = lo + 1;
  const step = niceStep((hi - lo) / 5);
  if (a.min === undefined) lo = Math.floor(lo / step) * step;
  if (a.max === undefined) hi = Math.ceil(hi / step) * step;
  const ticks = a.ticks ?? Array.from({ length: Math.round((hi - lo) / step) + 1 }, (_, i) => Number((lo + i * step).toPrecision(12)));
  return { map: (v) => from + ((v - lo) / (hi - lo)) * (to - from), ticks };
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function f(v: number): string {
  return v.toFixed(1);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
