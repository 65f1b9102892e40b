/**
 * The report of a Time-MoE forecast run (`moe-ts train-forecast`): one self-contained HTML page
 * with the autoregressive forecast against the held-out truth and both baselines, the MAE by lead
 * time, the training and validation loss, and the MAE/MSE table. Same stack as the other reports:
 * ECharts SVG rendered here, markup only through the escaping `html` template.
 */
import * as path from 'node:path';
import { lineChart, PALETTE, DENSE_COLOR, type LineSeries } from './charts.js';
import { html, jsonScript, type SafeHtml } from './template.js';
import { figure } from './html.js';
import { writeFileAtomicSync } from '../../io/atomic.js';
import { readJsonFileSync, FILE_LIMITS } from '../../data/files.js';
import type { ForecastResults, ForecastError } from '../../train/forecast.js';

const COLORS = { truth: DENSE_COLOR, model: PALETTE[0], naive: PALETTE[1], seasonal: PALETTE[4] };

/** The rows of the MAE/MSE table: the model and each baseline at the evaluation horizon. */
export function forecastTable(r: ForecastResults): { method: string; mae: number; mse: number; maeVsNaive: number }[] {
  const e = r.final.eval;
  const rows: [string, ForecastError | null][] = [
    ['Time-MoE', e.model],
    ['naive (last value)', e.naive],
    [`seasonal naive (period ${e.period ?? '—'})`, e.seasonalNaive],
  ];
  return rows.filter((x): x is [string, ForecastError] => x[1] !== null).map(([method, x]) => ({ method, mae: x.mae, mse: x.mse, maeVsNaive: x.mae / e.naive.mae }));
}

/** The table as plain text (what the CLI prints). */
export function formatForecastTable(r: ForecastResults): string {
  const e = r.final.eval;
  const rows = forecastTable(r);
  const w = Math.max(...rows.map((x) => x.method.length), 6);
  const lines = [
    `rolling-origin forecasts over the validation span (${e.origins} origins, horizon ${e.horizon}, ${r.series.column} of ${r.series.name}):`,
    `${'method'.padEnd(w)}  ${'MAE'.padStart(8)}  ${'MSE'.padStart(9)}  MAE / naive`,
    ...rows.map((x) => `${x.method.padEnd(w)}  ${x.mae.toFixed(3).padStart(8)}  ${x.mse.toFixed(3).padStart(9)}  ${x.maeVsNaive.toFixed(3)}`),
  ];
  return lines.join('\n');
}

function seriesOf(name: string, ys: number[], x0: number, color: string, dashed = false): LineSeries {
  return { name, points: ys.map((y, i) => [x0 + i, y]), color, dashed };
}

/** The page's HTML. */
export function renderForecastReport(r: ForecastResults): string {
  const p = r.plot;
  const ctx0 = p.origin - p.context.length;
  const lines: LineSeries[] = [
    // the truth line runs through the context into the held-out span
    seriesOf('truth', [...p.context, ...p.truth], ctx0, COLORS.truth),
    seriesOf('Time-MoE', p.model, p.origin, COLORS.model),
    seriesOf('naive', p.naive, p.origin, COLORS.naive, true),
    ...(p.seasonalNaive ? [seriesOf('seasonal naive', p.seasonalNaive, p.origin, COLORS.seasonal, true)] : []),
  ];
  const all = lines.flatMap((s) => s.points.map(([, y]) => y));
  const pad = (Math.max(...all) - Math.min(...all)) * 0.05;
  const size = { width: 900, height: 360 };
  const date = (i: number): string => (p.dates ? ` (${p.dates[i - ctx0]})` : '');
  const plotFig = {
    id: 'forecast',
    title: `Forecast of ${p.truth.length} steps from step ${p.origin}${date(p.origin)} against the held-out truth`,
    caption: `autoregressive: ${p.rounds.length} rounds of heads ${p.rounds.join(' + ')}, each from the last ${r.seqLen} values (known and forecast); the truth before the origin is the context`,
    svg: lineChart({ series: lines, xName: 'time step', yName: r.series.column, size, yMin: Math.floor(Math.min(...all) - pad), yMax: Math.ceil(Math.max(...all) + pad), xMin: ctx0 }),
  };
  const e = r.final.eval;
  const lead = (name: string, x: ForecastError | null, color: string, dashed = false): LineSeries[] => (x ? [{ name, points: x.maeByStep.map((m, i) => [i + 1, m]), color, dashed }] : []);
  const leadFig = {
    id: 'lead',
    title: `MAE by lead time over ${e.origins} validation origins`,
    caption: 'lower is better; the naive forecast degrades with the lead, the seasonal one does not depend on it',
    svg: lineChart({
      series: [...lead('Time-MoE', e.model, COLORS.model), ...lead('naive', e.naive, COLORS.naive, true), ...lead('seasonal naive', e.seasonalNaive, COLORS.seasonal, true)],
      xName: 'lead (steps ahead)',
      yName: 'MAE',
      size: { width: 900, height: 300 },
    }),
  };
  const every = Math.max(1, Math.floor(r.trainCurve.length / 200));
  const lossFig = {
    id: 'loss',
    title: 'Huber loss (normalised units): training steps and validation',
    caption: 'validation: forecasts from the last step of contexts ending at validation origins, all heads',
    svg: lineChart({
      series: [
        { name: 'train (Huber)', points: r.trainCurve.filter((_, i) => i % every === 0).map((c) => [c.step, c.huber]), color: PALETTE[0] },
        { name: 'validation', points: r.history.map((h) => [h.step, h.valLoss]), color: PALETTE[2] },
      ],
      xName: 'step',
      yName: 'loss',
      size: { width: 900, height: 300 },
    }),
  };
  const rows = forecastTable(r);
  const s = r.series;
  const body: SafeHtml = html`<h1>Time-MoE forecast: ${s.column} of ${s.name}</h1>
<p class="meta">${r.paper}. ${s.length} values${s.firstDate ? html` from ${s.firstDate} to ${s.lastDate}` : ''}; trained on the first ${s.split}${s.splitDate ? html` (up to ${s.splitDate})` : ''}, validated on the last ${s.length - s.split}.
Context ${r.seqLen} steps, heads ${r.horizons.join(', ')}; ${r.steps} steps, ${r.params} parameters (${r.activeParams} active per step), ${Math.round(r.tokensPerSec)} time steps/s in training.</p>
<h2>MAE and MSE at horizon ${e.horizon}</h2>
<table><thead><tr><th>method</th><th>MAE</th><th>MSE</th><th>MAE / naive</th></tr></thead><tbody>
${rows.map((x) => html`<tr><td>${x.method}</td><td>${x.mae.toFixed(3)}</td><td>${x.mse.toFixed(3)}</td><td>${x.maeVsNaive.toFixed(3)}</td></tr>`)}
</tbody></table>
${figure(plotFig)}
${figure(leadFig)}
${figure(lossFig)}
${jsonScript('forecast-results', r)}`;
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Time-MoE forecast: ${s.name}</title>
<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222;padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}.meta{color:#555}figure{margin:1.5em 0}.fig-title{font-weight:600;display:block}.fig-caption{color:#666;font-size:0.9em}</style>
</head><body>
${body}
</body></html>
`.value;
}

/** Write <run>/report.html (or `out`) from <run>/results.json of a forecast run. */
export function writeForecastReport(runDir: string, out?: string): string {
  const file = path.join(runDir, 'results.json');
  const r = readJsonFileSync(file, { what: 'forecast results', maxBytes: FILE_LIMITS.checkpointJson, object: true }) as ForecastResults;
  if (r.kind !== 'forecast') throw new Error(`${file}: not the results of a forecast run (kind ${JSON.stringify(r.kind)})`);
  const target = out ?? path.join(runDir, 'report.html');
  writeFileAtomicSync(target, renderForecastReport(r));
  return target;
}
