/**
 * `moe-ts analyze RUN --out report.html`: the expert analysis (src/adapt/analyze.ts) as one
 * self-contained page of inline SVG charts (ECharts SSR, the run report's stack) plus the numbers
 * as a JSON file next to it.
 */
import * as path from 'node:path';
import { barChart, groupedBarChart, matrixChart, PALETTE } from './charts.js';
import { domainLabel, figure, type Figure } from './html.js';
import { html, join, jsonScript, raw } from './template.js';
import { CSS } from './run-report.js';
import { writeFileAtomicSync } from '../../io/atomic.js';
import type { ExpertAnalysis } from '../../adapt/analyze.js';

const f = (x: number, d = 3): string => (Number.isFinite(x) ? x.toFixed(d) : '—');

function extent(m: number[][]): { min: number; max: number } {
  const v = m.flat().filter(Number.isFinite);
  return { min: Math.min(0, ...v), max: Math.max(0, ...v) };
}

/** The analysis page (title: the model's name). */
export function renderAnalysisReport(a: ExpertAnalysis, opts: { title?: string; createdAt?: string } = {}): string {
  const E = a.numExperts;
  const experts = Array.from({ length: E }, (_, e) => `${e}`);
  const layerNames = a.layers.map((l) => `layer ${l}`);
  const sq = (n: number) => ({ width: Math.max(320, 90 + 34 * n), height: Math.max(200, 60 + 28 * n) });
  const figs: Figure[] = [];
  a.layers.forEach((l, li) => {
    if (!a.similarity[li]?.length) return;
    figs.push({
      id: `similarity-${l}`,
      title: `Expert weight similarity, layer ${l}`,
      caption: 'Cosine similarity of the experts’ flattened weights (1: identical, 0: orthogonal, −1: opposite).',
      svg: matrixChart({ rows: experts.map((e) => `expert ${e}`), cols: experts, values: a.similarity[li], min: -1, max: 1, size: sq(E), xName: 'expert' }),
    });
  });
  a.layers.forEach((l, li) => {
    const n = a.outputNorms[li];
    figs.push({
      id: `norms-${l}`,
      title: `Expert output norms, layer ${l}`,
      caption: `Mean L2 norm of each expert’s output on ${n.tokens} validation router inputs: on the tokens routed to it and on all of them.`,
      svg: groupedBarChart({
        categories: experts.map((e) => `expert ${e}`),
        series: [
          { name: 'routed tokens', values: n.routed.map((v) => (Number.isFinite(v) ? +v.toFixed(4) : 0)), color: PALETTE[0] },
          { name: 'all tokens', values: n.all.map((v) => +v.toFixed(4)), color: PALETTE[9] },
        ],
        yName: 'output norm',
        size: { width: 510, height: 280 },
      }),
    });
  });
  if (a.layers.length > 1) {
    figs.push(
      {
        id: 'agreement',
        title: 'Routing agreement across layers',
        caption: 'Normalised mutual information of the tokens’ top-1 experts in two MoE layers (1: one layer’s choice determines the other’s, 0: independent).',
        svg: matrixChart({ rows: layerNames, cols: layerNames, values: a.agreement, min: 0, max: 1, size: sq(a.layers.length), xName: 'layer' }),
      },
      {
        id: 'same-top1',
        title: 'Same top-1 expert index across layers',
        caption: 'Share of tokens whose top-1 expert has the same index in both layers (meaningful when experts correspond, e.g. upcycled ones).',
        svg: matrixChart({ rows: layerNames, cols: layerNames, values: a.sameTop1, min: 0, max: 1, size: sq(a.layers.length), xName: 'layer' }),
      },
    );
  }
  a.layers.forEach((l, li) => {
    figs.push({
      id: `usage-${l}`,
      title: `Expert usage per domain, layer ${l}`,
      caption: 'Share of each validation domain’s assignments that go to each expert (rows sum to 1).',
      svg: matrixChart({
        rows: a.domains,
        cols: experts,
        values: a.usage[li],
        min: 0,
        max: Math.max(...a.usage[li].flat(), 1 / E),
        size: { width: Math.max(360, 100 + 34 * E), height: 70 + 30 * a.domains.length },
        xName: 'expert',
      }),
    });
  });
  if (a.ablation) {
    const ex = extent(a.ablation);
    figs.push({
      id: 'ablation',
      title: 'Contribution to the loss (ablation)',
      caption: 'Validation loss with the expert forbidden (its logit masked before top-k, the next expert takes its place) minus the loss without; positive: the model needs it.',
      svg: matrixChart({
        rows: layerNames,
        cols: experts,
        values: a.ablation,
        min: -Math.max(-ex.min, ex.max, 1e-6),
        max: Math.max(-ex.min, ex.max, 1e-6),
        size: { width: Math.max(360, 100 + 40 * E), height: 70 + 30 * a.layers.length },
        xName: 'expert',
        decimals: 3,
      }),
    });
  }
  if (a.steer) {
    const kl = a.layers.map((l) => experts.map((_, e) => a.steer!.find((s) => s.layer === l && s.expert === e)?.kl ?? 0));
    figs.push({
      id: 'steer',
      title: 'Which experts change the output (steering)',
      caption: 'Mean KL divergence (nats) of the next-token distribution on the prompts when the expert is forbidden, from the unsteered model.',
      svg: matrixChart({
        rows: layerNames,
        cols: experts,
        values: kl,
        min: 0,
        max: Math.max(...kl.flat(), 1e-6),
        size: { width: Math.max(360, 100 + 40 * E), height: 70 + 30 * a.layers.length },
        xName: 'expert',
        decimals: 3,
      }),
    });
  }
  figs.push({
    id: 'domain-loss',
    title: 'Validation loss per domain',
    caption: 'Nats per token on the windows analysed.',
    svg: barChart({
      categories: a.domainLoss.map((d) => d.domain),
      values: a.domainLoss.map((d) => +d.loss.toFixed(4)),
      colors: a.domainLoss.map((_, i) => PALETTE[i % PALETTE.length]),
      yName: 'loss',
      size: { width: 510, height: 280 },
      decimals: 3,
    }),
  });
  const steerRows = (a.steer ?? []).slice(0, 12);
  const trace = a.traces.find((t) => t.tokens.length);
  const page = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${opts.title ?? 'moe-ts expert analysis'}</title>
<style>${raw(CSS)}</style>
</head>
<body>
<main>
<header>
  <p class="eyebrow">moe-ts · expert analysis</p>
  <h1>${opts.title ?? 'Expert analysis'}</h1>
  <p class="meta">${a.layers.length} MoE layers (${a.layers.join(', ')}) · ${E} experts · router ${a.router} · validation loss ${f(a.loss, 4)} on ${join(
    a.domainLoss.map((d) => html`${domainLabel(d.domain)} ${f(d.loss, 4)}`),
    ', ',
  )}${opts.createdAt ? ` · generated ${opts.createdAt}` : ''}</p>
  ${a.note ? html`<p class="note" id="note">${a.note}</p>` : ''}
</header>
<section class="card" id="charts">
  <h2>Experts</h2>
  <div class="grid2">${figs.map((x) => figure(x))}</div>
</section>
${
  steerRows.length
    ? html`<section class="card" id="steer-table"><h2>Experts that change the output most</h2><div class="table-wrap"><table class="steer"><thead><tr><th>Layer</th><th>Expert</th><th>KL (nats)</th><th>Top-1 changed</th></tr></thead><tbody>${join(
        steerRows.map((s) => html`<tr><td>${s.layer}</td><td>${s.expert}</td><td class="num">${f(s.kl, 4)}</td><td class="num">${f(100 * s.top1Changed, 1)}%</td></tr>`),
        '\n',
      )}</tbody></table></div></section>`
    : ''
}
${
  trace
    ? html`<section class="card" id="trace"><h2>Routing trace, ${domainLabel(trace.domain)}</h2><p class="note">The first ${trace.tokens.length} tokens of the first validation window; every domain’s trace is in the JSON file.</p><div class="table-wrap"><table class="trace"><thead><tr><th>#</th><th>Token</th>${join(
        a.layers.map((l) => html`<th>layer ${l}</th>`),
        '',
      )}</tr></thead><tbody>${join(
        trace.tokens.slice(0, 32).map(
          (t, i) =>
            html`<tr><td class="num">${i}</td><td><code>${JSON.stringify(t.text).slice(1, -1)}</code></td>${join(
              t.layers.map((x) => html`<td>${x.experts.map((e, j) => `${e} (${x.weights[j].toFixed(2)})`).join(' ')}</td>`),
              '',
            )}</tr>`,
        ),
        '\n',
      )}</tbody></table></div></section>`
    : ''
}
<footer>moe-ts · moe-ts analyze</footer>
</main>
${jsonScript('analysis-data', { ...a, traces: undefined })}
</body>
</html>
`;
  return page.value;
}

/** Write the page and `<name>.json` (every number, the traces included) atomically; returns both paths. */
export function writeAnalysisReport(a: ExpertAnalysis, out: string, opts: { title?: string } = {}): { html: string; json: string } {
  const json = path.join(path.dirname(out), `${path.basename(out).replace(/\.html?$/i, '')}.json`);
  writeFileAtomicSync(out, renderAnalysisReport(a, { ...opts, createdAt: new Date().toISOString() }));
  writeFileAtomicSync(json, JSON.stringify(a, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  return { html: out, json };
}
