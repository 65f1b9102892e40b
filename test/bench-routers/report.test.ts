import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import { results, run, standardRuns } from './fixtures.js';

test('analysis ranks by final loss and computes the saving against dense', () => {
  const a = analyseRuns(standardRuns(), { topK: 2 });
  assert.equal(a.reference, 'dense');
  assert.equal(a.denseFinalLoss, 2.2);
  const by = Object.fromEntries(a.routers.map((r) => [r.name, r]));
  assert.deepEqual(
    Object.values(by).map((r) => [r.name, r.rank]),
    [
      ['dense', 4],
      ['topk', 2],
      ['expert-choice', 1],
      ['switch', 5],
      ['top-p', 3],
    ],
  );
  // topk: 2.6 at 2000 tokens, 2.1 at 3000 -> 2.2 at 2800 of dense's 4000
  assert.ok(Math.abs(by.topk.saving!.tokens! - 2800) < 1e-9);
  assert.ok(Math.abs(by.topk.saving!.ratio! - 0.7) < 1e-12);
  assert.equal(by.switch.saving!.ratio, null);
  assert.equal(by.dense.saving, null);
  assert.ok(Math.abs(by.topk.deltaVsDense! - -0.3) < 1e-12);
  assert.equal(by['expert-choice'].batchDependent, true);
  assert.equal(by.topk.batchDependent, false);
  assert.ok(by.topk.meanSpecialisation! > 0.2, `specialised usage gives a clear score, got ${by.topk.meanSpecialisation}`);
  assert.equal(by['expert-choice'].meanSpecialisation, 0);
  // compute classes from the measured experts per token against k = 2
  assert.deepEqual(
    a.routers.map((r) => r.compute),
    ['matched', 'matched', 'matched', 'matched', 'less'],
  );
  // single seed: nothing is tested against seed noise
  assert.ok(a.routers.every((r) => r.kind === 'dense' || r.vsDense === 'unmeasured'));
  assert.equal(a.noise, null);
  assert.equal(a.smoke, false);
});

test('the recommendation is derived from the numbers, with the decoding and compute caveats', () => {
  const a = analyseRuns(standardRuns(), { topK: 2 });
  const text = a.recommendation.join(' ');
  // expert-choice has the lowest loss but is batch-dependent; topk is the best usable router
  assert.match(text, /Lowest validation loss at matched compute: \*\*expert-choice\*\* \(1\.850; 0\.350 below the FLOP-matched dense baseline's 2\.200 \(one seed: not tested against seed noise\)/);
  assert.match(text, /\*\*Recommendation:\*\* on this data, use \*\*topk\*\*/);
  assert.match(text, /lowest validation loss among routers usable for generation at matched compute \(expert-choice depends on the batch\)/);
  assert.match(text, /expert-choice routes each token using the other tokens of the batch/);
  assert.match(text, /switch \(8\.0%\) dropped token assignments/);
  assert.match(text, /top-p \(1\.40 experts\/token\) used less active compute than k = 2 experts per token/);
  assert.match(text, /Most even expert load: \*\*expert-choice\*\*/);
  assert.match(text, /Fastest: \*\*switch\*\*/);
  assert.match(text, /3 of 4 routers ended below the dense baseline's 2\.200 \(one seed: not tested against seed noise\)/);
  // one seed: no tie or separation is claimed, the recommendation is provisional
  assert.match(text, /With one seed the seed-to-seed noise is not measured/);
  assert.match(text, /Provisional: one seed/);
  assert.doesNotMatch(text, /statistically tied|~95%/);
});

test('a router that wins with more experts per token is not recommended', () => {
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5] }), run('threshold', { losses: [2.5, 2.0], ept: 7 }), run('aux-free', { losses: [2.6, 2.2] })];
  const text = analyseRuns(runs, { topK: 2 }).recommendation.join(' ');
  // threshold is listed apart, not ranked: aux-free is the best at matched compute
  assert.match(text, /Lowest validation loss at matched compute: \*\*aux-free\*\* \(2\.200/);
  assert.match(text, /Listed apart, not ranked with the others: threshold \(7\.00 experts\/token, 3\.50× the dense baseline's FFN compute; loss 2\.000\) used more active compute/);
  assert.match(text, /use \*\*aux-free\*\*: it had the lowest validation loss among routers usable for generation at matched compute \(threshold uses 7\.00 experts per token\)/);
  const r = results(runs.map((x) => ({ ...x, model: { ...x.model, num_experts_per_tok: 2 } })));
  const page = renderReport(r);
  assert.match(page, /<h3 id="more-compute">More active compute than k = 2 experts per token/);
  const matchedTable = page.slice(page.indexOf('class="ranking"'), page.indexOf('id="more-compute"'));
  assert.ok(!matchedTable.includes('data-router="threshold"'), 'threshold is not in the matched-compute ranking');
  assert.ok(page.slice(page.indexOf('id="more-compute"')).includes('data-router="threshold"'));
});

test('no router beating dense is said plainly', () => {
  const runs = [run('dense', { kind: 'dense', losses: [3, 2] }), run('topk', { losses: [3.5, 2.5] })];
  const text = analyseRuns(runs, { topK: 2 }).recommendation.join(' ');
  assert.match(text, /No router ended below the dense baseline within this budget/);
  assert.match(text, /use \*\*topk\*\*/);
});

test('the report has one SVG per chart, the tables and the raw JSON', () => {
  const r = results(standardRuns());
  const html = renderReport(r);
  const figures = html.match(/<figure class="chart/g) ?? [];
  const svgs = html.match(/<svg[\s>]/g) ?? [];
  // 7 charts + one usage heatmap per (MoE run, layer) that is not uniform: topk's 2 specialised layers;
  // the other 3 MoE runs use their 4 experts evenly (25% each), each collapsed into one line
  assert.equal(figures.length, 7 + 2);
  for (const id of ['expert-choice-L0', 'switch-L0', 'top-p-L0']) assert.ok(html.includes(`data-uniform="${id}"`), `uniform line ${id}`);
  assert.match(html, /layer 0: uniform usage, every expert gets 25\.0% ± 0\.0% of every domain's assignments/);
  assert.equal(svgs.length, figures.length);
  for (const id of ['val-loss', 'load-cv', 'dropped', 'entropy', 'experts-per-token', 'throughput', 'specialisation', 'usage-topk-L0', 'usage-topk-L1']) {
    assert.ok(html.includes(`data-chart="${id}"`), `chart ${id}`);
  }
  // every chart is drawn: each SVG has paths
  const blocks = html.split('<figure class="chart').slice(1);
  for (const b of blocks) assert.ok(/<path [^>]*d="M/.test(b), `a chart without drawn paths: ${b.slice(0, 80)}`);
  for (const t of ['class="ranking"', 'class="domains"', 'shakespeare (verse)', 'wikitext (prose)', 'linux (code)', 'Which router should I use on this data?', 'not reached', '0.70×']) {
    assert.ok(html.includes(t), t);
  }
  // table rows: 5 models in the ranking
  const ranking = html.slice(html.indexOf('class="ranking"'), html.indexOf('</table>', html.indexOf('class="ranking"')));
  assert.equal((ranking.match(/<tr/g) ?? []).length, 1 + 5);
  // self-contained: no external resources, no scripts to run
  assert.ok(!/<script(?! id="raw-results" type="application\/json")/.test(html), 'only the JSON data block is a <script>');
  assert.ok(!/(src|href)="https?:/.test(html), 'no external resources');
  // the embedded JSON round-trips and text is escaped
  const m = html.match(/<script id="raw-results" type="application\/json">([\s\S]*?)<\/script>/);
  assert.ok(m);
  assert.deepEqual(JSON.parse(m[1]), JSON.parse(JSON.stringify(r)));
  assert.ok(html.includes('topk &lt;router&gt; &amp; &quot;friends&quot;'));
  assert.ok(!html.includes('<router>'));
});
