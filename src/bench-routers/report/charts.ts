/**
 * Static SVG charts rendered server-side with ECharts' SSR mode, so the report is one
 * self-contained HTML file with no scripts to run: every chart is plain inline SVG.
 */
import * as echarts from 'echarts';

export const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";

/** Colour-blind-friendly categorical palette (Tableau 10 plus two); dense is drawn in near-black. */
export const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac', '#17becf', '#8c564b'];
export const DENSE_COLOR = '#222222';

export interface Size {
  width: number;
  height: number;
}

function render(option: Record<string, unknown>, size: Size): string {
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width: size.width, height: size.height });
  try {
    chart.setOption({ animation: false, textStyle: { fontFamily: FONT }, ...option });
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

/** 12345 -> "12k", 1.5e6 -> "1.5M". */
export function shortNumber(x: number): string {
  const a = Math.abs(x);
  if (a >= 1e6) return `${+(x / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${+(x / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  return `${+x.toFixed(3)}`;
}

const axisName = { color: '#555', fontSize: 12 };
const splitLine = { lineStyle: { color: '#eceff3' } };

/** FNV-1a, for a colour that depends on nothing but the name. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * A router's colour, the same in every report: its position in `order` (the registry's router
 * names, which is stable) picks the palette entry; names outside it get one by hash.
 */
export function routerColor(name: string, order: readonly string[], dense = false): string {
  if (dense) return DENSE_COLOR;
  const i = order.indexOf(name);
  return PALETTE[(i >= 0 ? i : hash(name)) % PALETTE.length];
}

export interface LineSeries {
  name: string;
  points: [number, number][];
  color: string;
  dashed?: boolean;
  /** Error band: [x, low, high] per point, drawn as a translucent polygon behind the line. */
  band?: [number, number, number][];
}

/**
 * The y range that matters for loss curves: from just below the lowest value to the highest
 * value any curve has after its first `skip` fraction of points (the initial drop from ln V would
 * otherwise squash every difference at the end into a few pixels).
 */
export function zoomRange(series: readonly { points: [number, number][] }[], skip = 0.25, extra: number[] = []): { min: number; max: number } | null {
  const late: number[] = [];
  const all: number[] = [];
  for (const s of series) {
    const from = Math.min(s.points.length - 1, Math.floor(s.points.length * skip));
    s.points.forEach(([, y], i) => {
      if (!Number.isFinite(y)) return;
      all.push(y);
      if (i >= from) late.push(y);
    });
  }
  if (!late.length) return null;
  let lo = Math.min(...all);
  let hi = Math.max(...late);
  // a reference line close to the curves is worth showing; a far one would undo the zoom
  for (const e of extra) {
    if (Number.isFinite(e) && e <= hi + 0.25 * (hi - lo)) {
      lo = Math.min(lo, e);
      hi = Math.max(hi, e);
    }
  }
  const pad = Math.max((hi - lo) * 0.06, 1e-3);
  // round outwards to a readable step so the axis ends on a labelled value
  const step = 10 ** Math.floor(Math.log10(hi - lo + 2 * pad)) / 10;
  return { min: Math.floor((lo - pad) / step) * step, max: Math.ceil((hi + pad) / step) * step };
}

export function lineChart(o: {
  series: LineSeries[];
  xName: string;
  yName: string;
  size: Size;
  yMin?: number;
  yMax?: number;
  percent?: boolean;
  /** Horizontal reference lines (e.g. the unigram baseline). */
  refLines?: { y: number; label: string }[];
  logY?: boolean;
}): string {
  const bands = o.series.filter((s) => s.band && s.band.length > 1);
  return render(
    {
      grid: { left: 64, right: 150, top: 24, bottom: 52 },
      legend: { type: 'plain', orient: 'vertical', right: 4, top: 20, itemWidth: 18, itemHeight: 10, textStyle: { fontSize: 12, color: '#333' }, data: o.series.map((s) => s.name) },
      xAxis: {
        type: 'value',
        name: o.xName,
        nameLocation: 'middle',
        nameGap: 30,
        nameTextStyle: axisName,
        axisLabel: { formatter: (v: number) => shortNumber(v), color: '#555' },
        splitLine,
        // training starts at 0 tokens; the first evaluation comes later
        min: 0,
      },
      yAxis: {
        type: 'value',
        name: o.yName,
        nameLocation: 'middle',
        nameGap: 46,
        nameTextStyle: axisName,
        scale: true,
        ...(o.logY ? { type: 'log', logBase: 10 } : {}),
        min: o.yMin,
        max: o.yMax,
        axisLabel: { formatter: o.percent ? (v: number) => `${+(v * 100).toFixed(1)}%` : (v: number) => `${+v.toFixed(3)}`, color: '#555' },
        splitLine,
      },
      series: [
        ...bands.map((s) => ({
          type: 'custom',
          // its own name, so the legend (which lists the lines) takes each line's colour
          name: `${s.name} ± std`,
          silent: true,
          z: 1,
          data: s.band!.map(([x, lo, hi]) => [x, lo, hi]),
          // one polygon through the upper edge and back along the lower edge, drawn once
          renderItem: (params: { dataIndex: number }, api: { coord: (p: [number, number]) => [number, number] }) => {
            if (params.dataIndex !== 0) return null;
            const up = s.band!.map(([x, , hi]) => api.coord([x, hi]));
            const down = s.band!.map(([x, lo]) => api.coord([x, lo])).reverse();
            return { type: 'polygon', shape: { points: [...up, ...down] }, style: { fill: s.color, opacity: 0.16 } };
          },
          encode: { x: 0, y: [1, 2] },
          clip: true,
        })),
        ...o.series.map((s, i) => ({
          type: 'line',
          name: s.name,
          data: s.points,
          z: 3,
          showSymbol: s.points.length <= 2,
          symbolSize: 5,
          color: s.color,
          lineStyle: { width: s.dashed ? 2.5 : 1.8, type: s.dashed ? 'dashed' : 'solid', color: s.color },
          ...(i === 0 && o.refLines?.length
            ? {
                markLine: {
                  silent: true,
                  symbol: 'none',
                  lineStyle: { color: '#9aa1ab', type: 'dotted', width: 1.5 },
                  label: { position: 'insideStartTop', color: '#6b7280', fontSize: 11, formatter: (p: { name: string }) => p.name },
                  data: o.refLines.map((r) => ({ yAxis: r.y, name: r.label })),
                },
              }
            : {}),
        })),
      ],
    },
    o.size,
  );
}

export function barChart(o: { categories: string[]; values: number[]; colors: string[]; yName: string; size: Size; decimals?: number }): string {
  return render(
    {
      grid: { left: 64, right: 24, top: 28, bottom: 64 },
      xAxis: { type: 'category', data: o.categories, axisLabel: { interval: 0, rotate: o.categories.length > 6 ? 30 : 0, color: '#333' }, axisTick: { alignWithLabel: true } },
      yAxis: { type: 'value', name: o.yName, nameLocation: 'middle', nameGap: 46, nameTextStyle: axisName, axisLabel: { formatter: (v: number) => shortNumber(v), color: '#555' }, splitLine },
      series: [
        {
          type: 'bar',
          barMaxWidth: 36,
          data: o.values.map((v, i) => ({ value: v, itemStyle: { color: o.colors[i] } })),
          label: { show: true, position: 'top', fontSize: 11, color: '#333', formatter: (p: { value: number }) => (o.decimals === undefined ? shortNumber(p.value) : p.value.toFixed(o.decimals)) },
        },
      ],
    },
    o.size,
  );
}

/** Grouped bars: one group per category, one bar per series (e.g. routers x layers). */
export function groupedBarChart(o: { categories: string[]; series: { name: string; values: number[]; color: string }[]; yName: string; size: Size; yMax?: number }): string {
  return render(
    {
      grid: { left: 64, right: 24, top: 40, bottom: 64 },
      legend: { top: 4, textStyle: { fontSize: 12, color: '#333' } },
      xAxis: { type: 'category', data: o.categories, axisLabel: { interval: 0, rotate: o.categories.length > 6 ? 30 : 0, color: '#333' }, axisTick: { alignWithLabel: true } },
      yAxis: { type: 'value', name: o.yName, nameLocation: 'middle', nameGap: 46, nameTextStyle: axisName, max: o.yMax, axisLabel: { color: '#555' }, splitLine },
      series: o.series.map((s) => ({ type: 'bar', name: s.name, data: s.values, color: s.color, barMaxWidth: 22 })),
    },
    o.size,
  );
}

/** Heatmap of values[row][col] in [0, max], with the value printed in each cell. */
export function heatmapChart(o: { rows: string[]; cols: string[]; values: number[][]; max: number; size: Size; title?: string }): string {
  const data: { value: [number, number, number]; label: { color: string } }[] = [];
  // dark cells get white numbers so every label stays readable
  o.values.forEach((row, r) => row.forEach((v, c) => data.push({ value: [c, r, v], label: { color: v > 0.55 * o.max ? '#fff' : '#1a1a1a' } })));
  return render(
    {
      title: o.title ? { text: o.title, left: 'center', top: 2, textStyle: { fontSize: 13, fontWeight: 600, color: '#222' } } : undefined,
      grid: { left: 124, right: 12, top: o.title ? 26 : 8, bottom: 40 },
      xAxis: {
        type: 'category',
        data: o.cols,
        name: 'expert',
        nameLocation: 'middle',
        nameGap: 24,
        nameTextStyle: { color: '#555', fontSize: 11 },
        splitArea: { show: false },
        axisTick: { show: false },
        axisLabel: { color: '#555', fontSize: 10 },
      },
      yAxis: { type: 'category', data: o.rows, inverse: true, axisTick: { show: false }, axisLabel: { color: '#333', fontSize: 11 } },
      visualMap: { show: false, min: 0, max: o.max, inRange: { color: ['#f7fbff', '#c6dbef', '#6baed6', '#2171b5', '#08306b'] } },
      series: [
        {
          type: 'heatmap',
          data,
          itemStyle: { borderColor: '#fff', borderWidth: 1 },
          label: { show: o.cols.length <= 16, fontSize: 9, formatter: (p: { value: [number, number, number] }) => `${Math.round(p.value[2] * 100)}` },
        },
      ],
    },
    o.size,
  );
}

/**
 * Heatmap of any matrix values[row][col] on [min, max] (a diverging scale when min < 0), with
 * each value printed to `decimals` places and named axes: similarity, agreement and ablation maps.
 */
export function matrixChart(o: { rows: string[]; cols: string[]; values: number[][]; min: number; max: number; size: Size; xName: string; decimals?: number }): string {
  const data: { value: [number, number, number]; label: { color: string } }[] = [];
  const hi = o.max > o.min ? o.max : o.min + 1;
  // white numbers on the dark ends of the scale (both ends when diverging)
  const dark = (v: number) => (o.min < 0 ? Math.abs(v - (o.min + hi) / 2) > 0.3 * (hi - o.min) : v - o.min > 0.55 * (hi - o.min));
  o.values.forEach((row, r) =>
    row.forEach((v, c) => {
      const x = Number.isFinite(v) ? v : 0;
      data.push({ value: [c, r, x], label: { color: dark(x) ? '#fff' : '#1a1a1a' } });
    }),
  );
  const colors = o.min < 0 ? ['#b2182b', '#ef8a62', '#fddbc7', '#f7f7f7', '#d1e5f0', '#67a9cf', '#2166ac'] : ['#f7fbff', '#c6dbef', '#6baed6', '#2171b5', '#08306b'];
  const dec = o.decimals ?? 2;
  return render(
    {
      grid: { left: 96, right: 12, top: 8, bottom: 40 },
      xAxis: {
        type: 'category',
        data: o.cols,
        name: o.xName,
        nameLocation: 'middle',
        nameGap: 24,
        nameTextStyle: { color: '#555', fontSize: 11 },
        axisTick: { show: false },
        axisLabel: { color: '#555', fontSize: 10 },
      },
      yAxis: { type: 'category', data: o.rows, inverse: true, axisTick: { show: false }, axisLabel: { color: '#333', fontSize: 11 } },
      visualMap: { show: false, min: o.min, max: hi, inRange: { color: colors } },
      series: [
        {
          type: 'heatmap',
          data,
          itemStyle: { borderColor: '#fff', borderWidth: 1 },
          label: { show: o.cols.length <= 16, fontSize: 9, formatter: (p: { value: [number, number, number] }) => p.value[2].toFixed(dec) },
        },
      ],
    },
    o.size,
  );
}
