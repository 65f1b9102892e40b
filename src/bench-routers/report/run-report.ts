/**
 * `moe-ts report RUN`: one self-contained HTML page for a single training run, read from the
 * run directory (log.jsonl, results.json, config.json or the latest checkpoint's state.json):
 * training and validation loss, learning rate, gradient norm, load balance, drops and experts
 * per token over steps. Same chart stack (ECharts SSR to inline SVG) and the same escaping
 * template as the router benchmark report.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lineChart, PALETTE, shortNumber, zoomRange, type LineSeries } from './charts.js';
import { domainLabel, figure, type Figure } from './html.js';
import { html, join, jsonScript, raw, type SafeHtml } from './template.js';
import { resolveCheckpointDir } from '../../io/checkpoint.js';
import { writeFileAtomicSync } from '../../io/atomic.js';

export interface RunStep {
  step: number;
  loss: number;
  ce?: number;
  aux?: Record<string, number>;
  lr?: number;
  gradNorm?: number;
  tokensPerSec?: number;
  loadCV?: number;
  maxOverMean?: number;
  droppedFraction?: number;
  routerEntropy?: number;
  expertsPerToken?: number;
}

export interface RunEval {
  step: number;
  loss: number;
  domains: { domain: string; loss: number; tokens?: number }[];
}

export interface RunData {
  dir: string;
  steps: RunStep[];
  evals: RunEval[];
  /** The run's config (config.json, else the latest checkpoint's), if found. */
  config: Record<string, unknown> | null;
  /** results.json of a finished run, if present. */
  results: Record<string, unknown> | null;
  /** Lines skipped as torn (only a final line cut by a crash is tolerated). */
  skippedLines: number;
}

/** Bound on log.jsonl: a training log is a few MB; anything far larger is not one. */
export const MAX_LOG_BYTES = 512 * 1024 * 1024;

function readJsonFile(file: string): Record<string, unknown> | null {
  if (!fs.existsSync(file)) return null;
  const st = fs.statSync(file);
  if (!st.isFile()) throw new Error(`${file}: not a regular file`);
  if (st.size > 64 * 1024 * 1024) throw new Error(`${file}: ${st.size} bytes, too large for a run's JSON file`);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${file}: expected a JSON object`);
  return v as Record<string, unknown>;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Parse log.jsonl: step and eval records; errors name the line and field. A torn last line is skipped. */
export function parseRunLog(text: string, file = 'log.jsonl'): { steps: RunStep[]; evals: RunEval[]; skippedLines: number } {
  const steps: RunStep[] = [];
  const evals: RunEval[] = [];
  let skippedLines = 0;
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file} line ${i + 1}`;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      // a crash can cut only the last line written
      if (lines.slice(i + 1).every((l) => !l.trim())) {
        skippedLines++;
        return;
      }
      throw new Error(`${where}: not valid JSON`);
    }
    if (typeof o !== 'object' || o === null) throw new Error(`${where}: expected a JSON object`);
    if (!Number.isInteger(o.step) || (o.step as number) < 0) throw new Error(`${where}: field step must be an integer >= 0`);
    if (o.type === 'step') {
      if (typeof o.loss !== 'number') throw new Error(`${where}: field loss must be a number`);
      const s: RunStep = { step: o.step as number, loss: o.loss };
      for (const k of ['ce', 'lr', 'gradNorm', 'tokensPerSec', 'loadCV', 'maxOverMean', 'droppedFraction', 'routerEntropy', 'expertsPerToken'] as const) {
        if (o[k] === undefined) continue;
        if (typeof o[k] !== 'number') throw new Error(`${where}: field ${k} must be a number`);
        s[k] = o[k] as number;
      }
      if (o.aux !== undefined) {
        if (typeof o.aux !== 'object' || o.aux === null || Array.isArray(o.aux)) throw new Error(`${where}: field aux must be an object of numbers`);
        const aux: Record<string, number> = {};
        for (const [k, v] of Object.entries(o.aux)) {
          if (typeof v !== 'number') throw new Error(`${where}: field aux.${k} must be a number`);
          aux[k] = v;
        }
        s.aux = aux;
      }
      steps.push(s);
    } else if (o.type === 'eval') {
      if (typeof o.loss !== 'number') throw new Error(`${where}: field loss must be a number`);
      const ds = o.domains ?? [];
      if (!Array.isArray(ds)) throw new Error(`${where}: field domains must be an array`);
      evals.push({
        step: o.step as number,
        loss: o.loss,
        domains: ds.map((d, j) => {
          const dd = d as Record<string, unknown>;
          if (typeof dd !== 'object' || dd === null || typeof dd.domain !== 'string' || typeof dd.loss !== 'number')
            throw new Error(`${where}: field domains[${j}] must be {domain: string, loss: number}`);
          return { domain: dd.domain, loss: dd.loss, ...(isNum(dd.tokens) ? { tokens: dd.tokens } : {}) };
        }),
      });
    }
    // other record types (future additions) are not charted
  });
  return { steps, evals, skippedLines };
}

/** Read everything the report needs from a run directory. */
export function readRun(dir: string): RunData {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`report: ${dir} is not a run directory`);
  const logFile = path.join(dir, 'log.jsonl');
  if (!fs.existsSync(logFile)) throw new Error(`report: ${dir} has no log.jsonl (is it a training run directory made by moe-ts train?)`);
  const st = fs.statSync(logFile);
  if (!st.isFile()) throw new Error(`report: ${logFile} is not a regular file`);
  if (st.size > MAX_LOG_BYTES) throw new Error(`report: ${logFile} is ${st.size} bytes, more than the ${MAX_LOG_BYTES} a training log can plausibly be`);
  const log = parseRunLog(fs.readFileSync(logFile, 'utf8'), logFile);
  if (!log.steps.length && !log.evals.length) throw new Error(`report: ${logFile} holds no step or eval records`);
  let config = readJsonFile(path.join(dir, 'config.json'));
  if (!config && fs.existsSync(path.join(dir, 'latest.json'))) {
    try {
      const state = readJsonFile(path.join(resolveCheckpointDir(dir), 'state.json'));
      const c = state?.config;
      config = typeof c === 'object' && c !== null ? (c as Record<string, unknown>) : null;
    } catch {
      config = null; // the charts come from the log; a broken checkpoint only loses the config line
    }
  }
  return { dir, ...log, config, results: readJsonFile(path.join(dir, 'results.json')) };
}

/** At most `max` points: means over equal buckets of consecutive points (keeps the shape, bounds the SVG). */
export function downsample(points: [number, number][], max = 600): [number, number][] {
  if (points.length <= max) return points;
  const out: [number, number][] = [];
  const per = points.length / max;
  for (let b = 0; b < max; b++) {
    const from = Math.floor(b * per);
    const to = Math.max(from + 1, Math.floor((b + 1) * per));
    let sx = 0;
    let sy = 0;
    for (let i = from; i < to; i++) {
      sx += points[i][0];
      sy += points[i][1];
    }
    out.push([sx / (to - from), sy / (to - from)]);
  }
  return out;
}

const f = (x: unknown, d = 3): string => (isNum(x) ? x.toFixed(d) : '—');

export function renderRunReport(run: RunData, opts: { title?: string; createdAt?: string } = {}): string {
  const cfg = run.config ?? {};
  const model = (cfg.model ?? {}) as Record<string, unknown>;
  const training = (cfg.training ?? {}) as Record<string, unknown>;
  const data = (cfg.data ?? {}) as Record<string, unknown>;
  const isMoE = Number(model.num_local_experts ?? 0) > 0 || run.steps.some((s) => (s.expertsPerToken ?? 0) > 0);
  const wide = { width: 1040, height: 360 };
  const half = { width: 510, height: 300 };
  const series = (name: string, pts: [number, number][], color: string, dashed = false): LineSeries => ({ name, points: downsample(pts.filter(([, y]) => Number.isFinite(y))), color, dashed });
  const stepSeries = (key: keyof RunStep, name: string, color: string): LineSeries =>
    series(
      name,
      run.steps.filter((s) => isNum(s[key])).map((s) => [s.step, s[key] as number]),
      color,
    );

  const train = stepSeries('loss', 'training loss', '#9aa1ab');
  const val = series(
    'validation loss',
    run.evals.map((e) => [e.step, e.loss]),
    '#222222',
    false,
  );
  const domains = [...new Set(run.evals.flatMap((e) => e.domains.map((d) => d.domain)))];
  const perDomain =
    domains.length > 1
      ? domains.map((d, i) =>
          series(
            `val ${d}`,
            run.evals.map((e) => [e.step, e.domains.find((x) => x.domain === d)?.loss ?? NaN]),
            PALETTE[i % PALETTE.length],
            true,
          ),
        )
      : [];
  const lossSeries = [train, val, ...perDomain];
  const zoom = zoomRange([train, val], 0.1);
  const figs: { fig: Figure; wide?: boolean }[] = [
    {
      wide: true,
      fig: {
        id: 'loss',
        title: 'Training and validation loss',
        caption: `Training loss per logged step (training objective incl. balancing losses; bucket means when there are many steps) and validation loss at each evaluation${perDomain.length ? ', overall (solid) and per domain (dashed)' : ''}. Nats/token; the y axis skips the first 10% of training.`,
        svg: lineChart({ series: lossSeries, xName: 'step', yName: 'loss (nats/token)', size: wide, ...(zoom ? { yMin: +zoom.min.toFixed(3), yMax: +zoom.max.toFixed(3) } : {}) }),
      },
    },
    {
      fig: {
        id: 'lr',
        title: 'Learning rate',
        caption: 'The schedule as applied at each step.',
        svg: lineChart({ series: [stepSeries('lr', 'lr', PALETTE[0])], xName: 'step', yName: 'learning rate', size: half, yMin: 0 }),
      },
    },
    {
      fig: {
        id: 'grad-norm',
        title: 'Gradient norm',
        caption: `Global L2 norm before clipping${training.grad_clip !== undefined ? ` (clipped at ${training.grad_clip})` : ''}.`,
        svg: lineChart({ series: [stepSeries('gradNorm', 'grad norm', PALETTE[1])], xName: 'step', yName: 'gradient norm', size: half, yMin: 0 }),
      },
    },
  ];
  if (isMoE) {
    figs.push(
      {
        fig: {
          id: 'load-balance',
          title: 'Load balance',
          caption: 'Coefficient of variation of tokens per expert (std / mean) and max / mean load, means over MoE layers; 0 and 1 are perfectly even.',
          svg: lineChart({ series: [stepSeries('loadCV', 'load CV', PALETTE[0]), stepSeries('maxOverMean', 'max / mean', PALETTE[2])], xName: 'step', yName: 'imbalance', size: half, yMin: 0 }),
        },
      },
      {
        fig: {
          id: 'dropped',
          title: 'Dropped assignments',
          caption: 'Fraction of token→expert assignments dropped by expert capacity (0 for dropless dispatch).',
          svg: lineChart({ series: [stepSeries('droppedFraction', 'dropped', PALETTE[3])], xName: 'step', yName: 'dropped fraction', size: half, yMin: 0, percent: true }),
        },
      },
      {
        fig: {
          id: 'experts-per-token',
          title: 'Experts per token',
          caption: `Average experts computing on a token${model.num_experts_per_tok !== undefined ? ` (k = ${model.num_experts_per_tok})` : ''}.`,
          svg: lineChart({ series: [stepSeries('expertsPerToken', 'experts / token', PALETTE[4])], xName: 'step', yName: 'experts / token', size: half, yMin: 0 }),
        },
      },
      {
        fig: {
          id: 'router-entropy',
          title: 'Router entropy',
          caption: 'Mean per-token entropy of the routing distribution (nats).',
          svg: lineChart({ series: [stepSeries('routerEntropy', 'entropy', PALETTE[6])], xName: 'step', yName: 'entropy (nats)', size: half, yMin: 0 }),
        },
      },
    );
    const auxNames = [...new Set(run.steps.flatMap((s) => Object.keys(s.aux ?? {})))];
    if (auxNames.length) {
      figs.push({
        fig: {
          id: 'aux-losses',
          title: 'Balancing and router losses',
          caption: 'Each auxiliary loss as added to the objective (already multiplied by its coefficient), summed over MoE layers.',
          svg: lineChart({
            series: auxNames.map((n, i) =>
              series(
                n,
                run.steps.filter((s) => isNum(s.aux?.[n])).map((s) => [s.step, s.aux![n]]),
                PALETTE[(i + 7) % PALETTE.length],
              ),
            ),
            xName: 'step',
            yName: 'loss',
            size: half,
          }),
        },
      });
    }
  }
  figs.push({
    fig: {
      id: 'throughput',
      title: 'Throughput',
      caption: 'Training tokens per second per step (forward + backward + optimizer).',
      svg: lineChart({ series: [stepSeries('tokensPerSec', 'tokens / s', PALETTE[5])], xName: 'step', yName: 'tokens / s', size: half, yMin: 0 }),
    },
  });

  const res = run.results ?? {};
  const final = (res.final ?? null) as {
    loss?: number;
    perplexity?: number;
    domains?: { domain: string; loss: number; perplexity: number; tokens: number }[];
    routing?: Record<string, number>;
  } | null;
  const lastEval = run.evals[run.evals.length - 1];
  const lastStep = run.steps[run.steps.length - 1];
  const finalDomains = final?.domains ?? lastEval?.domains.map((d) => ({ ...d, perplexity: Math.exp(d.loss), tokens: d.tokens ?? NaN })) ?? [];
  const cfgLine = run.config
    ? [
        `hidden ${model.hidden_size}`,
        `${model.num_hidden_layers} layers`,
        isMoE
          ? `${model.num_local_experts} experts (width ${model.moe_intermediate_size}), k = ${model.num_experts_per_tok}, router ${model.router_type}`
          : `dense FFN width ${model.intermediate_size}`,
        `${training.steps} steps × ${training.batch_size} × ${training.seq_len} tokens, lr ${training.lr}, seed ${training.seed}`,
        `data ${Array.isArray(data.sources) ? data.sources.join(' + ') : '—'}`,
      ].join(' · ')
    : 'config not found (no config.json and no readable checkpoint)';
  const status = final
    ? `finished: ${res.steps ?? lastStep?.step} steps`
    : `in progress or interrupted: last logged step ${lastStep?.step ?? lastEval?.step ?? 0}${training.steps !== undefined ? ` of ${training.steps}` : ''}`;
  const wideFigs = figs.filter((x) => x.wide).map((x) => figure(x.fig));
  const grid = figs.filter((x) => !x.wide).map((x) => figure(x.fig));
  const summary = {
    dir: run.dir,
    config: run.config,
    results: run.results,
    evals: run.evals,
    lastStep: lastStep ?? null,
    steps: run.steps.length,
  };
  const page = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${opts.title ?? `moe-ts run — ${path.basename(path.resolve(run.dir))}`}</title>
<style>${raw(CSS)}</style>
</head>
<body>
<main>
<header>
  <p class="eyebrow">moe-ts · training run</p>
  <h1>${path.basename(path.resolve(run.dir))}</h1>
  <p class="meta">${cfgLine}</p>
  <p class="meta" id="status">${status}${run.skippedLines ? ` · ${run.skippedLines} torn log line skipped` : ''}${opts.createdAt ? ` · generated ${opts.createdAt}` : ''}</p>
</header>
<section class="card" id="summary">
  <h2>Final evaluation</h2>
  <p class="lead">Validation loss <strong>${f(final?.loss ?? lastEval?.loss, 4)}</strong>${final?.perplexity !== undefined ? html` (perplexity ${f(final.perplexity, 2)})` : ''}${!final && lastEval ? html` <span class="muted">(last evaluation, step ${lastEval.step})</span>` : ''}${
    isNum(res.params) ? html` · ${shortNumber(res.params)} parameters${isNum(res.activeParams) ? html`, ${shortNumber(res.activeParams)} active per token` : ''}` : ''
  }${isNum(res.tokensPerSec) ? html` · ${Math.round(res.tokensPerSec).toLocaleString('en-US')} tokens/s` : ''}</p>
  ${domainsTable(finalDomains)}
  ${final?.routing ? html`<p class="note">Routing on the validation sets: load CV ${f(final.routing.loadCV)}, dropped ${f(100 * (final.routing.droppedFraction ?? NaN), 2)}%, router entropy ${f(final.routing.routerEntropy)} nats, experts/token ${f(final.routing.expertsPerToken, 2)}.</p>` : ''}
</section>
<section class="card" id="curves">
  <h2>Loss</h2>
  ${wideFigs}
</section>
<section class="card" id="dynamics">
  <h2>Optimisation${isMoE ? ' and routing' : ''} over steps</h2>
  ${isMoE ? '' : html`<p class="note">A dense model: no routing metrics.</p>`}
  <div class="grid2">${grid}</div>
</section>
<footer>moe-ts · moe-ts report</footer>
</main>
${jsonScript('run-data', summary)}
</body>
</html>
`;
  return page.value;
}

function domainsTable(ds: { domain: string; loss: number; perplexity: number; tokens: number }[]): SafeHtml | string {
  if (!ds.length) return '';
  return html`<div class="table-wrap"><table class="domains"><thead><tr><th>Domain</th><th>Loss</th><th>Perplexity</th><th>Tokens</th></tr></thead><tbody>${join(
    ds.map(
      (d) =>
        html`<tr><td>${domainLabel(d.domain)}</td><td class="num">${f(d.loss, 4)}</td><td class="num">${f(d.perplexity, 2)}</td><td class="num">${isNum(d.tokens) ? d.tokens.toLocaleString('en-US') : '—'}</td></tr>`,
    ),
    '\n',
  )}</tbody></table></div>`;
}

/** Write <run>/report.html (or `out`) atomically; returns the path. */
export function writeRunReport(dir: string, out?: string): { path: string; run: RunData } {
  const run = readRun(dir);
  const file = out ?? path.join(dir, 'report.html');
  writeFileAtomicSync(file, renderRunReport(run, { createdAt: new Date().toISOString() }));
  return { path: file, run };
}

/** The run report's stylesheet (the analysis report shares it). */
export const CSS = `
:root { --fg:#1d2330; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#2f5d9b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 20px 40px; }
header h1 { font-size: 26px; margin: 2px 0 8px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--accent); margin: 0; font-weight: 600; }
.meta { margin: 2px 0; color: var(--muted); font-size: 13.5px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin: 18px 0; }
h2 { font-size: 19px; margin: 0 0 10px; }
.lead { font-size: 16px; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.muted { color: var(--muted); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 420px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { font-weight: 600; color: #374151; background: #f9fafb; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure.chart { margin: 8px 0 14px; }
.fig-title { font-weight: 600; display: block; font-size: 14.5px; }
.fig-caption { color: var(--muted); font-size: 12.5px; display: block; }
.svg-wrap svg { max-width: 100%; height: auto; display: block; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 8px 18px; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
`;
