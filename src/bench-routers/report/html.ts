/**
 * The benchmark report: one self-contained HTML file (inline CSS, inline SVG charts, the raw
 * results as embedded JSON), readable offline and without running any script.
 */
import { DENSE_COLOR, PALETTE, barChart, groupedBarChart, heatmapChart, lineChart, shortNumber, type LineSeries } from './charts.js';
import { usageShares } from '../metrics.js';
import { batchDependenceReason, isSoftRouting, usageCaveat } from '../traits.js';
import { TIE_MARGIN } from '../summary.js';
import type { BenchResults, RouterAnalysis, RunRecord } from '../types.js';

const DOMAIN_KIND: Record<string, string> = { shakespeare: 'verse', wikitext: 'prose', linux: 'code' };

export function domainLabel(d: string): string {
  return DOMAIN_KIND[d] ? `${d} (${DOMAIN_KIND[d]})` : d;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Escape, then turn **x** into <strong>x</strong> (the recommendation's only markup). */
function richText(s: string): string {
  return escapeHtml(s).replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>');
}

const f = (x: number | null | undefined, d = 3): string => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
const pct = (x: number | null | undefined): string => (x === null || x === undefined ? '—' : `${(100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`);

interface Figure {
  id: string;
  title: string;
  caption: string;
  svg: string;
}

function figure(fig: Figure, cls = ''): string {
  return `<figure class="chart ${cls}" id="fig-${fig.id}" data-chart="${fig.id}">
<figcaption><span class="fig-title">${escapeHtml(fig.title)}</span>${fig.caption ? `<span class="fig-caption">${escapeHtml(fig.caption)}</span>` : ''}</figcaption>
<div class="svg-wrap">${fig.svg}</div>
</figure>`;
}

export function renderReport(results: BenchResults): string {
  const runs = results.runs;
  const a = results.analysis;
  const byName = new Map(a.routers.map((r) => [r.name, r]));
  const colors = new Map<string, string>();
  let ci = 0;
  for (const r of runs) colors.set(r.name, r.kind === 'dense' ? DENSE_COLOR : PALETTE[ci++ % PALETTE.length]);
  const done = runs.filter((r) => r.status === 'done' && r.final);
  const ranked = [...done].sort((x, y) => x.final!.loss - y.final!.loss);
  const moeDone = ranked.filter((r) => r.kind === 'moe');
  const model = results.config.model as Record<string, unknown>;
  const training = results.config.training as Record<string, unknown>;
  const wide = { width: 1040, height: 380 };
  const half = { width: 510, height: 320 };
  const figures: string[] = [];
  const seeds = results.seeds ?? [Number(training.seed)];
  const multi = seeds.length > 1;
  const meanOf = multi ? ` Mean over ${seeds.length} seeds (${seeds.join(', ')}).` : '';
  const seriesOf = (pick: (r: RunRecord) => [number, number][], filter: (r: RunRecord) => boolean = () => true): LineSeries[] =>
    done.filter(filter).map((r) => ({ name: r.name, points: pick(r), color: colors.get(r.name)!, dashed: r.kind === 'dense' }));

  // validation curves
  const lossFig: Figure = {
    id: 'val-loss',
    title: 'Validation loss during training',
    caption: `Token-weighted mean over domains; x = training tokens. Dashed: the FLOP-matched dense baseline.${meanOf}`,
    svg: lineChart({ series: seriesOf((r) => r.curve.map((c) => [c.tokens, c.loss])), xName: 'training tokens', yName: 'validation loss (nats/token)', size: wide }),
  };
  const isMoE = (r: RunRecord): boolean => r.kind === 'moe';
  const cvFig: Figure = {
    id: 'load-cv',
    title: 'Load imbalance (coefficient of variation)',
    caption: 'std / mean of tokens per expert, mean over MoE layers and each evaluation interval; 0 = perfectly even.',
    svg: lineChart({ series: seriesOf((r) => r.intervals.map((i) => [i.tokens, i.loadCV]), isMoE), xName: 'training tokens', yName: 'load CV', size: half }),
  };
  const dropFig: Figure = {
    id: 'dropped',
    title: 'Dropped assignments',
    caption: 'Fraction of token→expert assignments dropped by expert capacity (0 for dropless dispatch).',
    svg: lineChart({ series: seriesOf((r) => r.intervals.map((i) => [i.tokens, i.droppedFraction]), isMoE), xName: 'training tokens', yName: 'dropped fraction', size: half, yMin: 0, percent: true }),
  };
  const entFig: Figure = {
    id: 'entropy',
    title: 'Router entropy',
    caption: 'Mean per-token entropy of the routing distribution (nats); ln E is uniform, 0 is one-hot.',
    svg: lineChart({ series: seriesOf((r) => r.intervals.map((i) => [i.tokens, i.routerEntropy]), isMoE), xName: 'training tokens', yName: 'entropy (nats)', size: half }),
  };
  const eptFig: Figure = {
    id: 'experts-per-token',
    title: 'Experts per token',
    caption: `Average experts computing on a token (k = ${results.topK}); dynamic routers vary it, soft routing mixes every expert's slots.`,
    svg: lineChart({ series: seriesOf((r) => r.intervals.map((i) => [i.tokens, i.expertsPerToken]), isMoE), xName: 'training tokens', yName: 'experts / token', size: half, yMin: 0 }),
  };
  const tpsFig: Figure = {
    id: 'throughput',
    title: 'Training throughput',
    caption: 'Mean training tokens per second over all steps (forward + backward + optimizer).',
    svg: barChart({ categories: ranked.map((r) => r.name), values: ranked.map((r) => r.tokensPerSec), colors: ranked.map((r) => colors.get(r.name)!), yName: 'tokens / s', size: { width: wide.width, height: 320 } }),
  };
  const nLayers = Math.max(0, ...moeDone.map((r) => r.final!.moeLayers.length));
  const layerColors = ['#4e79a7', '#a0cbe8', '#f28e2b', '#ffbe7d', '#59a14f', '#8cd17d'];
  const specFig: Figure = {
    id: 'specialisation',
    title: 'Expert specialisation by domain',
    caption: 'Mutual information between expert choice and domain, divided by the domain entropy: 0 = all domains use experts alike, 1 = each expert serves a single domain.',
    svg: groupedBarChart({
      categories: moeDone.map((r) => r.name),
      series: Array.from({ length: nLayers }, (_, l) => ({
        name: `layer ${moeDone[0]?.final!.moeLayers[l] ?? l}`,
        values: moeDone.map((r) => byName.get(r.name)!.specialisation[l]?.normalized ?? 0),
        color: layerColors[l % layerColors.length],
      })),
      yName: 'MI / H(domain)',
      size: wide,
    }),
  };
  figures.push(figure(lossFig));

  // heatmaps: one per (router, MoE layer)
  const heatmaps: string[] = [];
  // one colour scale for every heatmap so routers compare at a glance; at least twice the uniform share so even usage reads as pale
  // (capped at 3x uniform: one collapsed router would otherwise wash out every other map)
  const E = Math.max(1, results.numExperts);
  const heatMax = Math.min(3 / E, Math.max(2 / E, ...moeDone.flatMap((r) => r.final!.expertUsage.flatMap((layer) => usageShares(layer).flat()))));
  for (const r of moeDone) {
    const an = byName.get(r.name)!;
    const cells = r.final!.expertUsage.map((layer, l) => {
      const shares = usageShares(layer);
      const rows = results.domains.map((d) => domainLabel(d));
      const fig: Figure = {
        id: `usage-${r.name}-L${r.final!.moeLayers[l]}`,
        title: `layer ${r.final!.moeLayers[l]} · specialisation ${f(an.specialisation[l]?.normalized, 2)}`,
        caption: '',
        svg: heatmapChart({ rows, cols: layer[0]?.map((_, e) => String(e)) ?? [], values: shares, max: heatMax, size: { width: 400, height: 58 + 30 * rows.length } }),
      };
      return figure(fig, 'small');
    });
    const caveat = usageCaveat(r.model.router_type);
    heatmaps.push(`<div class="heat-row"><div class="heat-name"><span class="swatch" style="background:${colors.get(r.name)}"></span><strong>${escapeHtml(r.name)}</strong><span class="muted">mean specialisation ${f(an.meanSpecialisation, 2)}</span>${caveat ? `<div class="note">${escapeHtml(caveat)}</div>` : ''}</div><div class="heat-cells">${cells.join('\n')}</div></div>`);
  }

  const cfgLine = [
    `hidden ${model.hidden_size}`,
    `${model.num_hidden_layers} layers`,
    `${model.num_attention_heads} heads`,
    `${model.num_local_experts} experts of width ${model.moe_intermediate_size}, k = ${model.num_experts_per_tok}`,
    ...runs.filter((r) => r.kind === 'dense').map((r) => `dense baseline FFN width ${r.model.intermediate_size}`),
  ].join(' · ');
  const tokens = runs[0]?.tokens ?? 0;
  const trainLine = [
    `${training.steps} steps × ${training.batch_size} × ${training.seq_len} tokens = ${shortNumber(tokens)} training tokens per model`,
    `lr ${training.lr}, ${training.schedule} schedule`,
    multi ? `seeds ${seeds.join(', ')} (every number is the mean over the ${seeds.length} seeds unless stated)` : `seed ${training.seed}`,
    `backend ${results.backend}`,
  ].join(' · ');

  const failed = runs.filter((r) => r.status !== 'done');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moe-ts router benchmark — ${escapeHtml(results.domains.join(' + '))}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<header>
  <p class="eyebrow">moe-ts · bench-routers</p>
  <h1>Router benchmark on ${escapeHtml(results.domains.map(domainLabel).join(', '))}</h1>
  <p class="meta">${escapeHtml(cfgLine)}</p>
  <p class="meta">${escapeHtml(trainLine)}</p>
  <p class="meta">${done.length} models (${moeDone.length} routers + ${done.length - moeDone.length ? 'dense baseline' : 'no dense baseline'}), same data mix, seed, token budget and active FLOPs per token · generated ${escapeHtml(results.createdAt)}</p>
</header>

<section class="card recommendation" id="recommendation">
  <h2>Which router should I use on this data?</h2>
  <p class="lead">${a.recommendation.filter((x) => x.startsWith('**Recommendation:**')).map(richText).join(' ')}</p>
  <ul class="findings">${a.recommendation.filter((x) => !x.startsWith('**Recommendation:**')).map((x) => `<li>${richText(x)}</li>`).join('')}</ul>
  ${failed.length ? `<p class="warn">Did not finish: ${failed.map((r) => `${escapeHtml(r.name)} (${escapeHtml(r.status)}${r.error ? `: ${escapeHtml(r.error)}` : ''})`).join('; ')}.</p>` : ''}
</section>

<section class="card" id="ranking">
  <h2>Ranking</h2>
  <p class="note">Sorted by final validation loss. <em>Tokens to dense loss</em>: training tokens the MoE needed to reach the dense baseline's final validation loss (linear interpolation on its validation curve), as a fraction of the dense budget — below 1× means the same quality for less training compute. Balance columns are means over the second half of training. ${
    multi
      ? `Sorted by the mean over ${seeds.length} seeds; val loss is mean ± sample standard deviation (n = finished seeds). Two models are tied when their ~95% intervals, mean ± 2·stderr (stderr = std / √n), overlap.`
      : `Losses within ${TIE_MARGIN} nats are within single-seed noise.`
  }</p>
  ${rankingTable(ranked, byName, colors)}
</section>

<section class="card" id="curves">
  <h2>Validation loss</h2>
  ${figures.join('\n')}
  <h3>Final validation loss per domain</h3>
  ${domainTable(ranked, results.domains, colors)}
</section>

<section class="card" id="balance">
  <h2>Load balance and routing over training</h2>
  <div class="grid2">
  ${figure(cvFig)}
  ${figure(dropFig)}
  ${figure(entFig)}
  ${figure(eptFig)}
  </div>
</section>

<section class="card" id="speed">
  <h2>Speed</h2>
  ${figure(tpsFig)}
</section>

<section class="card" id="specialisation-section">
  <h2>Expert specialisation</h2>
  ${moeDone.length ? figure(specFig) : '<p>No MoE run finished.</p>'}
  <h3>Expert usage per domain</h3>
  <p class="note">Each cell: percentage of a domain's validation-token assignments routed to that expert, per MoE layer (rows sum to 100; one colour scale for all maps, darkest at ${Math.round(300 / Math.max(1, results.numExperts))}% and above). A domain-specialised router shows rows concentrated on different experts; identical rows mean the router ignores the domain.</p>
  ${heatmaps.join('\n')}
</section>

<section class="card" id="method">
  <h2>Method</h2>
  <ul>
    <li>Every model is trained from the same initialisation seed on the same equal-weight mix of ${escapeHtml(results.domains.join(', '))}, with the same optimiser, schedule and token budget. Only the router changes; the dense baseline replaces each MoE FFN with one dense FFN as wide as the k experts a token uses, so active FLOPs per token match.</li>
    <li>Validation loss is the token-weighted mean cross-entropy over held-out windows of each domain. Routing metrics on the training curves are step means over each evaluation interval (means over MoE layers).</li>
    <li>Specialisation is I(expert; domain) / H(domain) on the validation sets, treating each routed assignment as one sample.</li>
    <li>Throughput is measured on the machine that ran the benchmark, one model after another; small differences are noise.</li>
    ${moeDone.filter((r) => batchDependenceReason(r.model.router_type)).map((r) => `<li><strong>${escapeHtml(r.name)}</strong>: ${escapeHtml(batchDependenceReason(r.model.router_type)!)}.</li>`).join('\n    ')}
  </ul>
</section>

<section class="card" id="raw">
  <h2>Raw data</h2>
  <p class="note">All numbers above, as JSON: <code>results.json</code> next to this file (the same object is embedded below, in <code>&lt;script id="raw-results" type="application/json"&gt;</code>).</p>
  <details><summary>Per-run details</summary>${rawTable(runs)}</details>
  ${multi ? `<h3>Final validation loss per seed</h3>${seedTable(ranked, byName, seeds, colors)}` : ''}
</section>
<footer>moe-ts · ${escapeHtml(results.format)} v${results.version}</footer>
</main>
<script id="raw-results" type="application/json">${JSON.stringify(results).replace(/</g, '\\u003c')}</script>
</body>
</html>
`;
  return html;
}

function swatch(color: string | undefined): string {
  return `<span class="swatch" style="background:${color}"></span>`;
}

function rankingTable(ranked: RunRecord[], byName: Map<string, RouterAnalysis>, colors: Map<string, string>): string {
  const rows = ranked.map((r) => {
    const an = byName.get(r.name)!;
    const notes: string[] = [];
    if (r.kind === 'dense') notes.push('reference');
    if (an.batchDependent) notes.push('batch-dependent: no exact KV-cached decoding');
    if (an.lateDroppedFraction && an.lateDroppedFraction > 0.01) notes.push('drops tokens');
    const k = Number(r.model.num_experts_per_tok);
    if (an.meanExpertsPerToken !== null && !isSoftRouting(r.model.router_type) && Math.abs(an.meanExpertsPerToken - k) / k > 0.1) notes.push(`${an.meanExpertsPerToken.toFixed(2)} experts/token vs k = ${k}: compute not matched`);
    let saving = '—';
    if (r.kind === 'moe' && an.saving) {
      saving = an.saving.ratio === null ? '<span class="muted">not reached</span>' : `${an.saving.ratio.toFixed(2)}× <span class="${an.saving.ratio < 1 ? 'good' : 'bad'}">(${an.saving.ratio < 1 ? '−' : '+'}${Math.abs(100 * (1 - an.saving.ratio)).toFixed(0)}%)</span>`;
    } else if (r.kind === 'dense') saving = '1.00×';
    const delta = r.kind === 'dense' ? '<span class="muted">reference</span>' : an.deltaVsDense === null ? '—' : `<span class="${an.deltaVsDense < 0 ? 'good' : 'bad'}">${an.deltaVsDense < 0 ? '−' : '+'}${Math.abs(an.deltaVsDense).toFixed(3)}</span>`;
    return `<tr class="${r.kind === 'dense' ? 'dense-row' : ''}">
<td class="num">${an.rank ?? '—'}</td>
<td>${swatch(colors.get(r.name))}<strong>${escapeHtml(r.name)}</strong><div class="desc">${escapeHtml(r.description)}</div></td>
<td class="num">${f(an.finalLoss)}${an.lossStd !== null ? ` <span class="pm">± ${f(an.lossStd)}</span> <span class="muted">n=${an.seeds}</span>` : ''}</td>
<td class="num">${delta}</td>
<td class="num">${saving}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanExpertsPerToken, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? f(an.lateLoadCV, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? pct(an.lateDroppedFraction) : '—'}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanRouterEntropy, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanSpecialisation, 2) : '—'}</td>
<td class="num">${Math.round(r.tokensPerSec).toLocaleString('en-US')}</td>
<td class="notes">${notes.map(escapeHtml).join('; ')}</td>
</tr>`;
  });
  return `<div class="table-wrap"><table class="ranking">
<thead><tr><th>#</th><th>Router</th><th>Val loss</th><th>Δ vs dense</th><th>Tokens to dense loss</th><th>Experts / token</th><th>Load CV</th><th>Dropped</th><th>Router entropy</th><th>Special&shy;isation</th><th>Tokens / s</th><th>Notes</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div>`;
}

function domainTable(ranked: RunRecord[], domains: string[], colors: Map<string, string>): string {
  const cols = [...domains.map((d) => (r: RunRecord) => r.final!.domains.find((x) => x.domain === d)?.loss ?? NaN), (r: RunRecord) => r.final!.loss];
  const best = cols.map((c) => Math.min(...ranked.map(c).filter(Number.isFinite)));
  const rows = ranked.map(
    (r) =>
      `<tr class="${r.kind === 'dense' ? 'dense-row' : ''}"><td>${swatch(colors.get(r.name))}${escapeHtml(r.name)}</td>${cols
        .map((c, i) => {
          const v = c(r);
          return `<td class="num${v === best[i] ? ' best' : ''}">${f(v)}</td>`;
        })
        .join('')}</tr>`,
  );
  return `<div class="table-wrap"><table class="domains">
<thead><tr><th>Model</th>${domains.map((d) => `<th>${escapeHtml(domainLabel(d))}</th>`).join('')}<th>all domains</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div>
<p class="note">Best per column highlighted. Cross-entropy in nats per token (byte tokens: divide by ln 2 for bits per byte).</p>`;
}

function seedTable(ranked: RunRecord[], byName: Map<string, RouterAnalysis>, seeds: number[], colors: Map<string, string>): string {
  const rows = ranked.map((r) => {
    const an = byName.get(r.name)!;
    const cells = seeds.map((s) => {
      const v = r.perSeed?.find((x) => x.seed === s);
      return `<td class="num">${v ? (v.finalLoss === null ? escapeHtml(v.status) : f(v.finalLoss)) : '—'}</td>`;
    });
    const ci = an.lossStderr !== null && an.finalLoss !== null ? `${f(an.finalLoss - 2 * an.lossStderr)} – ${f(an.finalLoss + 2 * an.lossStderr)}` : '—';
    return `<tr class="${r.kind === 'dense' ? 'dense-row' : ''}"><td>${swatch(colors.get(r.name))}${escapeHtml(r.name)}</td>${cells.join('')}<td class="num">${f(an.finalLoss)}</td><td class="num">${f(an.lossStd)}</td><td class="num">${ci}</td></tr>`;
  });
  return `<div class="table-wrap"><table class="seeds">
<thead><tr><th>Model</th>${seeds.map((s) => `<th>seed ${s}</th>`).join('')}<th>mean</th><th>std</th><th>~95% interval (mean ± 2·stderr)</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div>`;
}

function rawTable(runs: RunRecord[]): string {
  const rows = runs.map(
    (r) =>
      `<tr><td>${escapeHtml(r.name)}</td><td>${escapeHtml(r.status)}</td><td class="num">${r.steps}</td><td class="num">${r.tokens.toLocaleString('en-US')}</td><td class="num">${r.params.toLocaleString('en-US')}</td><td class="num">${r.activeParams.toLocaleString('en-US')}</td><td class="num">${r.wallSeconds.toFixed(1)}</td><td><code>${escapeHtml(String(r.model.router_type ?? '—'))}</code></td></tr>`,
  );
  return `<div class="table-wrap"><table><thead><tr><th>Run</th><th>Status</th><th>Steps</th><th>Tokens</th><th>Params</th><th>Active params</th><th>Wall s</th><th>router_type</th></tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

const CSS = `
:root { --fg:#1d2330; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#2f5d9b; --good:#1a7f37; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 20px 40px; }
header h1 { font-size: 26px; margin: 2px 0 8px; letter-spacing: -0.01em; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--accent); margin: 0; font-weight: 600; }
.meta { margin: 2px 0; color: var(--muted); font-size: 13.5px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin: 18px 0; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 15.5px; margin: 18px 0 8px; }
.recommendation { border-left: 4px solid var(--accent); }
.recommendation p { margin: 6px 0; font-size: 15px; }
.recommendation ul.findings { margin: 8px 0 0; padding-left: 20px; }
.recommendation ul.findings li { margin: 3px 0; }
.recommendation p.lead { font-size: 16.5px; background: #eef3fa; padding: 10px 14px; border-radius: 6px; }
.warn { color: var(--bad); }
.note { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.muted { color: var(--muted); }
.pm { color: #374151; font-size: 12px; }
.good { color: var(--good); }
.bad { color: var(--bad); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; color: #374151; background: #f9fafb; font-size: 12px; line-height: 1.3; vertical-align: bottom; }
table.ranking th { max-width: 90px; }
table.ranking td { padding: 6px 6px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.ranking td:nth-child(n+3):not(.notes), table.domains td:nth-child(n+2) { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; background: #e9f6ec; }
tr.dense-row td { background: #f8f8f8; }
.desc { color: var(--muted); font-size: 11.5px; min-width: 170px; max-width: 230px; line-height: 1.35; }
.notes { color: var(--muted); font-size: 11.5px; min-width: 120px; max-width: 170px; line-height: 1.35; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: baseline; }
figure.chart { margin: 8px 0 14px; }
figcaption { display: block; margin-bottom: 4px; }
.fig-title { font-weight: 600; display: block; font-size: 14.5px; }
.fig-caption { color: var(--muted); font-size: 12.5px; display: block; }
.svg-wrap svg { max-width: 100%; height: auto; display: block; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 8px 18px; }
.heat-row { border-top: 1px solid var(--line); padding: 10px 0 4px; }
.heat-name { margin-bottom: 4px; }
.heat-name .muted { margin-left: 10px; font-size: 13px; }
.heat-cells { display: flex; flex-wrap: wrap; gap: 6px 18px; }
figure.small { margin: 0; }
figure.small .fig-title { font-size: 12.5px; font-weight: 500; color: #374151; }
code { font-size: 12.5px; background: #f3f4f6; padding: 1px 4px; border-radius: 4px; }
details summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
`;
