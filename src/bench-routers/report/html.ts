/**
 * The benchmark report: one self-contained HTML file (inline CSS, inline SVG charts, the raw
 * results as embedded JSON), readable offline and without running any script. Every piece of
 * markup goes through the `html` template (template.ts), so values read from results are escaped
 * by construction.
 */
import { barChart, groupedBarChart, heatmapChart, lineChart, routerColor, shortNumber, zoomRange, type LineSeries } from './charts.js';
import { html, join, jsonScript, raw, richText, type SafeHtml } from './template.js';
import { usageShares } from '../metrics.js';
import { batchDependenceReason, usageCaveat } from '../traits.js';
import { COMPUTE_TOLERANCE } from '../summary.js';
import { routerRegistry } from '../../moe/routers/index.js';
import { DOMAINS } from '../../data/corpus.js';
import type { BenchResults, RouterAnalysis, RunRecord } from '../types.js';

export { escapeHtml } from './template.js';

export function domainLabel(d: string): string {
  const spec = Object.prototype.hasOwnProperty.call(DOMAINS, d) ? DOMAINS[d] : undefined;
  return spec ? `${d} (${spec.kind})` : d;
}

const f = (x: number | null | undefined, d = 3): string => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
const pct = (x: number | null | undefined): string => (x === null || x === undefined ? '—' : `${(100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`);

export interface Figure {
  id: string;
  title: string;
  caption: string;
  /** SVG rendered by ECharts (trusted markup; its text is escaped by ECharts). */
  svg: string;
}

export function figure(fig: Figure, cls = ''): SafeHtml {
  return html`<figure class="chart ${cls}" id="fig-${fig.id}" data-chart="${fig.id}">
<figcaption><span class="fig-title">${fig.title}</span>${fig.caption ? html`<span class="fig-caption">${fig.caption}</span>` : ''}</figcaption>
<div class="svg-wrap">${raw(fig.svg)}</div>
</figure>`;
}

/** A usage map is uniform when every share is within this fraction of 1/E (it is drawn as one line). */
export const UNIFORM_TOLERANCE = 0.2;

/** Whether every domain's usage shares are within UNIFORM_TOLERANCE of 1/E; returns the largest deviation. */
export function uniformUsage(shares: number[][]): { uniform: boolean; maxDeviation: number } {
  const E = shares[0]?.length ?? 0;
  if (!E) return { uniform: false, maxDeviation: 0 };
  const dev = Math.max(...shares.flat().map((v) => Math.abs(v - 1 / E)));
  return { uniform: dev <= UNIFORM_TOLERANCE / E, maxDeviation: dev };
}

/** Colours of a report's models: stable per router across reports (registry order). */
export function colorsOf(runs: readonly RunRecord[]): Map<string, string> {
  const order = routerRegistry.names();
  return new Map(runs.map((r) => [r.name, routerColor(r.name, order, r.kind === 'dense')]));
}

export function renderReport(results: BenchResults): string {
  const runs = results.runs;
  const a = results.analysis;
  const byName = new Map(a.routers.map((r) => [r.name, r]));
  const colors = colorsOf(runs);
  const done = runs.filter((r) => r.status === 'done' && r.final);
  const ranked = [...done].sort((x, y) => x.final!.loss - y.final!.loss);
  const moeDone = ranked.filter((r) => r.kind === 'moe');
  // compute-matched (or less) routers are ranked; more compute than the tolerance allows, or none measured, is listed apart
  const isApart = (r: RunRecord): boolean => r.kind === 'moe' && (byName.get(r.name)?.compute === 'more' || byName.get(r.name)?.compute === 'unmeasured');
  const matched = ranked.filter((r) => !isApart(r));
  const apart = ranked.filter(isApart);
  const model = results.config.model as Record<string, unknown>;
  const training = results.config.training as Record<string, unknown>;
  const wide = { width: 1040, height: 380 };
  const half = { width: 510, height: 320 };
  const seeds = results.seeds ?? [Number(training.seed)];
  const multi = seeds.length > 1;
  const cov = `${Math.round((a.coverage ?? 0.95) * 100)}%`;
  const baseline = a.baseline ?? results.baseline ?? null;
  const meanOf = multi ? ` Mean over ${seeds.length} seeds (${seeds.join(', ')}); the band is ± one standard deviation over seeds.` : '';
  const seriesOf = (pick: (r: RunRecord) => [number, number][], filter: (r: RunRecord) => boolean = () => true): LineSeries[] =>
    done.filter(filter).map((r) => ({ name: r.name, points: pick(r), color: colors.get(r.name)!, dashed: r.kind === 'dense' }));

  // validation curves, zoomed to where the models differ, with seed bands
  const lossSeries: LineSeries[] = done.map((r) => ({
    name: r.name,
    points: r.curve.map((c) => [c.tokens, c.loss] as [number, number]),
    color: colors.get(r.name)!,
    dashed: r.kind === 'dense',
    ...(multi && r.curve.every((c) => c.lossStd !== undefined) ? { band: r.curve.map((c) => [c.tokens, c.loss - c.lossStd!, c.loss + c.lossStd!] as [number, number, number]) } : {}),
  }));
  const zoom = zoomRange(lossSeries, 0.25, baseline ? [baseline.loss] : []);
  const baselineShown = baseline !== null && zoom !== null && baseline.loss <= zoom.max;
  const lossFig: Figure = {
    id: 'val-loss',
    title: 'Validation loss during training',
    caption: `Token-weighted mean over domains; x = training tokens. Dashed: the FLOP-matched dense baseline. The y axis is zoomed to the last three quarters of training (the first evaluations are above it).${meanOf}${
      baseline ? (baselineShown ? ' Dotted: the unigram baseline of the data.' : ` The unigram baseline of the data, ${f(baseline.loss)}, is above the plotted range.`) : ''
    }`,
    svg: lineChart({
      series: lossSeries,
      xName: 'training tokens',
      yName: 'validation loss (nats/token)',
      size: wide,
      ...(zoom ? { yMin: +zoom.min.toFixed(3), yMax: +zoom.max.toFixed(3) } : {}),
      refLines: baselineShown ? [{ y: baseline!.loss, label: `unigram baseline ${f(baseline!.loss)}` }] : [],
    }),
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
    svg: barChart({
      categories: ranked.map((r) => r.name),
      values: ranked.map((r) => r.tokensPerSec),
      colors: ranked.map((r) => colors.get(r.name)!),
      yName: 'tokens / s',
      size: { width: wide.width, height: 320 },
    }),
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

  // heatmaps: one per (router, MoE layer); a uniform map is one line of text
  const heatmaps: SafeHtml[] = [];
  // one colour scale for every heatmap so routers compare at a glance; at least twice the uniform share so even usage reads as pale
  // (capped at 3x uniform: one collapsed router would otherwise wash out every other map)
  const E = Math.max(1, results.numExperts);
  const heatMax = Math.min(3 / E, Math.max(2 / E, ...moeDone.flatMap((r) => r.final!.expertUsage.flatMap((layer) => usageShares(layer).flat()))));
  for (const r of moeDone) {
    const an = byName.get(r.name)!;
    const cells = r.final!.expertUsage.map((layer, l) => {
      const shares = usageShares(layer);
      const L = r.final!.moeLayers[l];
      const u = uniformUsage(shares);
      if (u.uniform) {
        return html`<p class="uniform-line" data-uniform="${r.name}-L${L}">layer ${L}: uniform usage, every expert gets ${(100 / E).toFixed(1)}% ± ${(100 * u.maxDeviation).toFixed(1)}% of every domain's assignments (specialisation ${f(an.specialisation[l]?.normalized, 2)}).</p>`;
      }
      const rows = results.domains.map((d) => domainLabel(d));
      return figure(
        {
          id: `usage-${r.name}-L${L}`,
          title: `layer ${L} · specialisation ${f(an.specialisation[l]?.normalized, 2)}`,
          caption: '',
          svg: heatmapChart({ rows, cols: layer[0]?.map((_, e) => String(e)) ?? [], values: shares, max: heatMax, size: { width: 400, height: 58 + 30 * rows.length } }),
        },
        'small',
      );
    });
    const caveat = usageCaveat(r.model.router_type);
    heatmaps.push(
      html`<div class="heat-row"><div class="heat-name">${swatch(colors.get(r.name))}<strong>${r.name}</strong><span class="muted">mean specialisation ${f(an.meanSpecialisation, 2)}</span>${caveat ? html`<div class="note">${caveat}</div>` : ''}</div><div class="heat-cells">${cells}</div></div>`,
    );
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
  const isLead = (x: string): boolean => x.startsWith('**Recommendation:**') || x.startsWith('**No recommendation');
  const statsNote = multi
    ? `Val loss: mean ± sample standard deviation over n finished seeds; the interval is the ${cov} t-interval of the mean (mean ± t<sub>n−1</sub>·std/√n). "vs dense" and ties between routers use one rule: Welch's ${cov} interval of the difference of the two means; "below"/"above" when it excludes 0, "tied" when it contains it.${
        a.noise
          ? ` Measured seed noise: std ${f(a.noise.pooledStd)} pooled over ${a.noise.models} models, so differences below about ${f(a.noise.threshold)} are not resolvable with ${a.noise.n} seeds.`
          : ''
      }`
    : 'One seed: the seed-to-seed noise is not measured, so no difference below is tested against it ("one seed" in the vs-dense column). Rerun with --seeds 3 for intervals.';

  const page = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moe-ts router benchmark — ${results.domains.join(' + ')}</title>
<style>${raw(CSS)}</style>
</head>
<body>
<main>
<header>
  <p class="eyebrow">moe-ts · bench-routers</p>
  <h1>Router benchmark on ${results.domains.map(domainLabel).join(', ')}</h1>
  ${a.smoke ? html`<p class="badge smoke" id="smoke">Undertrained smoke run: no recommendation</p>` : ''}
  <p class="meta">${cfgLine}</p>
  <p class="meta">${trainLine}</p>
  <p class="meta">${done.length} models (${moeDone.length} routers + ${done.length - moeDone.length ? 'dense baseline' : 'no dense baseline'}), same data mix, seed, token budget and active FLOPs per token · generated ${results.createdAt}</p>
  ${
    baseline
      ? html`<p class="meta" id="baseline">Unigram baseline of the validation data (token frequencies only): <strong>${f(baseline.loss)}</strong> nats/token (${join(
          Object.entries(baseline.domains).map(([d, v]) => `${d} ${f(v)}`),
          ', ',
        )}). A model not clearly below it (by 10%) is labelled undertrained.</p>`
      : ''
  }
</header>

<section class="card recommendation" id="recommendation">
  <h2>Which router should I use on this data?</h2>
  <p class="lead">${join(a.recommendation.filter(isLead).map(richText), ' ')}</p>
  <ul class="findings">${a.recommendation.filter((x) => !isLead(x)).map((x) => html`<li>${richText(x)}</li>`)}</ul>
  ${
    failed.length
      ? html`<p class="warn">Did not finish: ${join(
          failed.map((r) => html`${r.name} (${r.status}${r.error ? html`: ${r.error}` : ''})`),
          '; ',
        )}.</p>`
      : ''
  }
</section>

<section class="card" id="ranking">
  <h2>Ranking at matched compute</h2>
  <p class="note">Sorted by final validation loss. Ranked here: routers whose measured FFN compute relative to the dense baseline (<em>compute vs dense</em>, from the experts per token they actually used) is at most ${Math.round((1 + COMPUTE_TOLERANCE) * 100)}%, whatever their traits declare. <em>Tokens to dense loss</em>: training tokens the MoE needed to reach the dense baseline's final validation loss (linear interpolation on its validation curve), as a fraction of the dense budget — below 1× means the same quality for less training compute. Balance columns are means over the second half of training. ${raw(statsNote)}</p>
  ${rankingTable(matched, byName, colors, multi)}
  ${
    apart.length
      ? html`<h3 id="more-compute">More active compute than k = ${results.topK} experts per token${apart.some((r) => byName.get(r.name)?.compute === 'unmeasured') ? ', or unmeasured' : ''} (not ranked with the above)</h3>
  <p class="note">These routers' measured FFN compute was more than ${Math.round((1 + COMPUTE_TOLERANCE) * 100)}% of the dense baseline's ((experts/token + shared) ÷ (k + shared), mean over training), or was not measured, so a lower loss here may have been bought with extra compute.</p>
  ${rankingTable(apart, byName, colors, multi, false)}`
      : ''
  }
</section>

<section class="card" id="routers">
  <h2>The routers compared</h2>
  <p class="note">Per router: its paper, what it changes, the experts per token it actually used (mean over training), its FFN compute relative to the dense baseline ((experts/token + shared experts) ÷ (k + shared experts): the dense FFN is as wide as k routed experts plus the shared ones; soft routing counts expert slot evaluations per token), and the caveats its registered traits declare.</p>
  ${routerTable(moeDone, byName, results.topK)}
</section>

<section class="card" id="curves">
  <h2>Validation loss</h2>
  ${figure(lossFig)}
  <h3>Final validation loss per domain</h3>
  ${domainTable(ranked, results.domains, colors, baseline?.domains)}
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
  ${moeDone.length ? figure(specFig) : html`<p>No MoE run finished.</p>`}
  <h3>Expert usage per domain</h3>
  <p class="note">Each cell: percentage of a domain's validation-token assignments routed to that expert, per MoE layer (rows sum to 100; one colour scale for all maps, darkest at ${Math.round(300 / E)}% and above). A domain-specialised router shows rows concentrated on different experts; identical rows mean the router ignores the domain. A layer whose every share is within ${Math.round(UNIFORM_TOLERANCE * 100)}% of 1/E is one line of text instead of a map.</p>
  ${heatmaps}
</section>

<section class="card" id="method">
  <h2>Method</h2>
  <ul>
    <li>Every model is trained from the same initialisation seed on the same equal-weight mix of ${results.domains.join(', ')}, with the same optimiser, schedule and token budget. Only the router changes; the dense baseline replaces each MoE FFN with one dense FFN as wide as the k experts a token uses, so active FLOPs per token match.</li>
    <li>Validation loss is the token-weighted mean cross-entropy over held-out windows of each domain's validation split. Routing metrics on the training curves are step means over each evaluation interval (means over MoE layers).</li>
    <li>The unigram baseline is the cross-entropy of the same validation windows under the training split's token frequencies (add-one smoothed).</li>
    <li>Specialisation is I(expert; domain) / H(domain) on the validation sets, treating each routed assignment as one sample.</li>
    <li>Throughput is measured on the machine that ran the benchmark, one model after another; small differences are noise.</li>
    ${moeDone.filter((r) => batchDependenceReason(r.model.router_type)).map((r) => html`<li><strong>${r.name}</strong>: ${batchDependenceReason(r.model.router_type)!}.</li>`)}
  </ul>
</section>

<section class="card" id="raw">
  <h2>Raw data</h2>
  <p class="note">All numbers above, as JSON: <code>results.json</code> next to this file (the same object is embedded below, in <code>&lt;script id="raw-results" type="application/json"&gt;</code>).</p>
  <details><summary>Per-run details</summary>${rawTable(runs)}</details>
  ${multi ? html`<h3>Final validation loss per seed</h3>${seedTable(ranked, byName, seeds, colors, cov)}` : ''}
</section>
<footer>moe-ts · ${results.format} v${results.version}</footer>
</main>
${jsonScript('raw-results', results)}
</body>
</html>
`;
  return page.value;
}

/** One row per MoE router: paper, summary, experts/token used, compute vs dense, trait caveats. */
function routerTable(runs: RunRecord[], byName: Map<string, RouterAnalysis>, topK: number): SafeHtml {
  const rows = runs.map((r) => {
    const spec = typeof r.model.router_type === 'string' ? routerRegistry.find(r.model.router_type) : undefined;
    const an = byName.get(r.name);
    const t = spec?.traits;
    const caveats = [t?.batchDependent ? `batch-dependent: ${t.batchDependent}` : '', t?.inferenceDiffers ? `inference differs from training: ${t.inferenceDiffers}` : '', t?.usageCaveat ?? ''].filter(
      (c) => c.length > 0,
    );
    const ept = an?.meanExpertsPerToken ?? null;
    // FFN compute vs the dense FFN (as wide as k routed + the shared experts), as the analysis measured it; soft routing's ept is slot evaluations per token
    const ratio = an?.computeVsDense ?? null;
    const rel = ratio === null ? '—' : `${ratio.toFixed(2)}×`;
    // the traits only add caveat text: a router declared matched by construction that measured otherwise says so
    const declared = t ? (t.routing === 'soft' ? 'FLOP-matched slots' : t.expertsPerToken === 'k' ? `k = ${topK} experts per token` : null) : null;
    if (declared && an && an.compute !== 'matched')
      caveats.push(`declares ${declared}, but measured ${rel} the dense compute (${an.compute === 'more' ? 'listed apart' : an.compute === 'less' ? 'ranked at a disadvantage' : 'unmeasured'})`);
    return html`<tr data-router="${r.name}">
<td><strong>${r.name}</strong></td>
<td>${spec?.paper ? html`${spec.paper.title} (${String(spec.paper.year)})` : '—'}</td>
<td>${spec?.summary ?? r.description}</td>
<td class="num">${f(ept, 2)}</td>
<td class="num">${rel}</td>
<td class="notes">${caveats.join('; ') || '—'}</td>
</tr>`;
  });
  return html`<div class="table-wrap"><table class="routers"><thead><tr><th>router</th><th>paper</th><th>what it changes</th><th>experts/token used</th><th>expert compute vs dense</th><th>caveats</th></tr></thead><tbody>${rows}</tbody></table></div>`;
}

export function swatch(color: string | undefined): SafeHtml {
  return html`<span class="swatch" style="background:${color ?? '#999'}"></span>`;
}

const VERDICT: Record<RouterAnalysis['vsDense'], { label: string; cls: string }> = {
  lower: { label: 'below', cls: 'good' },
  higher: { label: 'above', cls: 'bad' },
  tied: { label: 'tied', cls: 'muted' },
  unmeasured: { label: 'one seed', cls: 'muted' },
};

function rankingTable(ranked: RunRecord[], byName: Map<string, RouterAnalysis>, colors: Map<string, string>, multi: boolean, numbered = true): SafeHtml {
  const rows = ranked.map((r, i) => {
    const an = byName.get(r.name)!;
    const notes: string[] = [];
    if (r.kind === 'dense') notes.push('reference');
    if (an.undertrained) notes.push('undertrained: not clearly below the unigram baseline');
    if (an.batchDependent) notes.push('batch-dependent: no exact KV-cached decoding');
    if (an.lateDroppedFraction && an.lateDroppedFraction > 0.01) notes.push('drops tokens');
    if (an.compute === 'more') notes.push(`${f(an.meanExpertsPerToken, 2)} experts/token: more compute than k`);
    if (an.compute === 'less') notes.push(`${f(an.meanExpertsPerToken, 2)} experts/token: less compute than k`);
    if (an.compute === 'unmeasured' && r.kind === 'moe') notes.push('experts/token not measured: compute not shown to be matched');
    let saving: SafeHtml | string = '—';
    if (r.kind === 'moe' && an.saving) {
      saving =
        an.saving.ratio === null
          ? html`<span class="muted">not reached</span>`
          : html`${an.saving.ratio.toFixed(2)}× <span class="${an.saving.ratio < 1 ? 'good' : 'bad'}">(${an.saving.ratio < 1 ? '−' : '+'}${Math.abs(100 * (1 - an.saving.ratio)).toFixed(0)}%)</span>`;
    } else if (r.kind === 'dense') saving = '1.00×';
    const v = VERDICT[an.vsDense];
    const delta =
      r.kind === 'dense'
        ? html`<span class="muted">reference</span>`
        : an.deltaVsDense === null
          ? '—'
          : html`${an.deltaVsDense < 0 ? '−' : '+'}${Math.abs(an.deltaVsDense).toFixed(3)} <span class="verdict ${v.cls}" data-verdict="${an.vsDense}">${v.label}</span>${
              an.diffVsDense ? html`<div class="pm">[${f(an.diffVsDense.low)}, ${f(an.diffVsDense.high)}]</div>` : ''
            }`;
    return html`<tr class="${r.kind === 'dense' ? 'dense-row' : ''}${an.undertrained ? ' undertrained' : ''}" data-router="${r.name}">
<td class="num">${numbered ? i + 1 : '—'}</td>
<td>${swatch(colors.get(r.name))}<strong>${r.name}</strong><div class="desc">${r.description}</div></td>
<td class="num">${f(an.finalLoss)}${an.lossStd !== null ? html` <span class="pm">± ${f(an.lossStd)}</span> <span class="muted">n=${an.seeds}</span>` : ''}</td>
${multi ? html`<td class="num">${an.interval ? `${f(an.interval.low)} – ${f(an.interval.high)}` : '—'}</td>` : ''}
<td class="num">${delta}</td>
<td class="num">${saving}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanExpertsPerToken, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? (an.computeVsDense === null ? '—' : `${an.computeVsDense.toFixed(2)}×`) : '1.00×'}</td>
<td class="num">${r.kind === 'moe' ? f(an.lateLoadCV, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? pct(an.lateDroppedFraction) : '—'}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanRouterEntropy, 2) : '—'}</td>
<td class="num">${r.kind === 'moe' ? f(an.meanSpecialisation, 2) : '—'}</td>
<td class="num">${Math.round(r.tokensPerSec).toLocaleString('en-US')}</td>
<td class="notes">${notes.join('; ')}</td>
</tr>`;
  });
  return html`<div class="table-wrap"><table class="ranking">
<thead><tr><th>#</th><th>Router</th><th>Val loss</th>${multi ? html`<th>95% t-interval</th>` : ''}<th>Δ vs dense</th><th>Tokens to dense loss</th><th>Experts / token</th><th>Compute vs dense</th><th>Load CV</th><th>Dropped</th><th>Router entropy</th><th>Special&shy;isation</th><th>Tokens / s</th><th>Notes</th></tr></thead>
<tbody>${join(rows, '\n')}</tbody></table></div>`;
}

function domainTable(ranked: RunRecord[], domains: string[], colors: Map<string, string>, baseline?: Record<string, number>): SafeHtml {
  const cols = [...domains.map((d) => (r: RunRecord) => r.final!.domains.find((x) => x.domain === d)?.loss ?? NaN), (r: RunRecord) => r.final!.loss];
  const best = cols.map((c) => Math.min(...ranked.map(c).filter(Number.isFinite)));
  const rows = ranked.map(
    (r) =>
      html`<tr class="${r.kind === 'dense' ? 'dense-row' : ''}"><td>${swatch(colors.get(r.name))}${r.name}</td>${cols.map((c, i) => {
        const v = c(r);
        return html`<td class="num${v === best[i] ? ' best' : ''}">${f(v)}</td>`;
      })}</tr>`,
  );
  const base = baseline
    ? html`<tr class="baseline-row"><td><span class="muted">unigram baseline</span></td>${domains.map((d) => html`<td class="num muted">${f(baseline[d])}</td>`)}<td class="num muted"></td></tr>`
    : '';
  return html`<div class="table-wrap"><table class="domains">
<thead><tr><th>Model</th>${domains.map((d) => html`<th>${domainLabel(d)}</th>`)}<th>all domains</th></tr></thead>
<tbody>${join(rows, '\n')}${base}</tbody></table></div>
<p class="note">Best per column highlighted. Cross-entropy in nats per token (byte tokens: divide by ln 2 for bits per byte).</p>`;
}

function seedTable(ranked: RunRecord[], byName: Map<string, RouterAnalysis>, seeds: number[], colors: Map<string, string>, cov: string): SafeHtml {
  const rows = ranked.map((r) => {
    const an = byName.get(r.name)!;
    const cells = seeds.map((s) => {
      const v = r.perSeed?.find((x) => x.seed === s);
      return html`<td class="num">${v ? (v.finalLoss === null ? v.status : f(v.finalLoss)) : '—'}</td>`;
    });
    const ci = an.interval ? `${f(an.interval.low)} – ${f(an.interval.high)}` : '—';
    return html`<tr class="${r.kind === 'dense' ? 'dense-row' : ''}"><td>${swatch(colors.get(r.name))}${r.name}</td>${cells}<td class="num">${f(an.finalLoss)}</td><td class="num">${f(an.lossStd)}</td><td class="num">${ci}</td></tr>`;
  });
  return html`<div class="table-wrap"><table class="seeds">
<thead><tr><th>Model</th>${seeds.map((s) => html`<th>seed ${s}</th>`)}<th>mean</th><th>std</th><th>${cov} t-interval of the mean</th></tr></thead>
<tbody>${join(rows, '\n')}</tbody></table></div>`;
}

function rawTable(runs: RunRecord[]): SafeHtml {
  const rows = runs.map(
    (r) =>
      html`<tr><td>${r.name}</td><td>${r.status}</td><td class="num">${r.steps}</td><td class="num">${r.tokens.toLocaleString('en-US')}</td><td class="num">${r.params.toLocaleString('en-US')}</td><td class="num">${r.activeParams.toLocaleString('en-US')}</td><td class="num">${r.wallSeconds.toFixed(1)}</td><td><code>${String(r.model.router_type ?? '—')}</code></td></tr>`,
  );
  return html`<div class="table-wrap"><table><thead><tr><th>Run</th><th>Status</th><th>Steps</th><th>Tokens</th><th>Params</th><th>Active params</th><th>Wall s</th><th>router_type</th></tr></thead><tbody>${rows}</tbody></table></div>`;
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
.badge { display: inline-block; padding: 3px 10px; border-radius: 999px; font-size: 13px; font-weight: 600; margin: 4px 0; }
.badge.smoke { background: #fdecea; color: var(--bad); border: 1px solid #f5c2bd; }
.verdict { font-size: 11px; padding: 0 4px; border-radius: 3px; background: #f3f4f6; }
tr.undertrained td { color: #8a8f98; }
tr.baseline-row td { background: #fbfbfb; font-style: italic; }
.uniform-line { margin: 2px 0 6px; font-size: 13px; color: #374151; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
`;
