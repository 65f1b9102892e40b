// The ranking is compute-matched by measurement (issue 10 "Compute", issue 15 "Benchmark and
// report"): which routers are ranked and which are listed apart comes from the measured experts
// per token (the compute-vs-dense column), with a stated tolerance, never from declared traits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyseRuns, classifyCompute, computeVsDense, COMPUTE_TOLERANCE } from '../../src/bench-routers/summary.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { results, run } from './fixtures.js';

/** The matched-compute ranking table and the "listed apart" table of a rendered report. */
function tables(page: string): { ranked: string; apart: string } {
  const start = page.indexOf('id="ranking"');
  const end = page.indexOf('id="routers"');
  const cut = page.indexOf('id="more-compute"', start);
  return cut >= 0 && cut < end ? { ranked: page.slice(start, cut), apart: page.slice(cut, end) } : { ranked: page.slice(start, end), apart: '' };
}

function routerRow(page: string, name: string): string {
  const section = page.slice(page.indexOf('id="routers"'), page.indexOf('id="curves"'));
  const i = section.indexOf(`<tr data-router="${name}">`);
  assert.ok(i >= 0, `${name} has a row in the routers table`);
  return section.slice(i, section.indexOf('</tr>', i));
}

test('routers that declare matched compute but measured 2x the experts per token are listed apart', () => {
  // the traits of these routers claim compute-matched by construction: k experts per token, FLOP-matched soft slots
  assert.equal(routerRegistry.spec('topk').traits.expertsPerToken, 'k');
  assert.equal(routerRegistry.spec('soft').traits.routing, 'soft');
  const runs = [
    run('dense', { kind: 'dense', losses: [3, 2.5] }),
    run('topk', { losses: [2.5, 2.0], ept: 4 }), // 2x k = 2
    run('soft', { losses: [2.5, 2.05], ept: 4 }), // 2x: too many slots for the batch
    run('aux-free', { losses: [2.6, 2.2], ept: 2 }),
  ];
  const a = analyseRuns(runs, { topK: 2 });
  const by = Object.fromEntries(a.routers.map((r) => [r.name, r]));
  assert.equal(by.topk.compute, 'more');
  assert.equal(by.soft.compute, 'more');
  assert.equal(by['aux-free'].compute, 'matched');
  assert.equal(by.topk.computeVsDense, 2);
  assert.equal(by.dense.computeVsDense, null);
  const text = a.recommendation.join(' ');
  assert.match(text, /Lowest validation loss at matched compute: \*\*aux-free\*\* \(2\.200/);
  assert.match(text, /Listed apart, not ranked with the others: topk \(4\.00 experts\/token, 2\.00× the dense baseline's FFN compute; loss 2\.000\) and soft \(4\.00 experts\/token, 2\.00×/);
  assert.match(text, /use \*\*aux-free\*\*/);

  const page = renderReport(results(runs));
  const { ranked, apart } = tables(page);
  assert.ok(ranked.includes('data-router="aux-free"') && ranked.includes('data-router="dense"'));
  for (const n of ['topk', 'soft']) {
    assert.ok(!ranked.includes(`data-router="${n}"`), `${n} is not in the matched-compute ranking`);
    assert.ok(apart.includes(`data-router="${n}"`), `${n} is listed apart`);
    // the traits only add a caveat saying the declaration and the measurement disagree
    assert.match(routerRow(page, n), /declares [^<]*, but measured 2\.00× the dense compute \(listed apart\)/);
  }
  assert.doesNotMatch(routerRow(page, 'aux-free'), /declares/);
});

test('a variable-k router that averages k experts per token is ranked with the others', () => {
  assert.equal(routerRegistry.spec('top-p').traits.expertsPerToken, 'variable');
  const r = run('top-p', { losses: [2.5, 2.0] });
  // 1 to 3 experts per token over training, mean exactly k = 2
  r.intervals = r.intervals.map((iv, i) => ({ ...iv, expertsPerToken: i % 2 === 0 ? 3 : 1 }));
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5] }), r, run('topk', { losses: [2.6, 2.2] })];
  const a = analyseRuns(runs, { topK: 2 });
  const tp = a.routers.find((x) => x.name === 'top-p')!;
  assert.equal(tp.meanExpertsPerToken, 2);
  assert.equal(tp.compute, 'matched');
  assert.match(a.recommendation.join(' '), /Lowest validation loss at matched compute: \*\*top-p\*\*/);
  const { ranked, apart } = tables(renderReport(results(runs)));
  assert.ok(ranked.includes('data-router="top-p"'));
  assert.equal(apart, '', 'nothing is listed apart');
});

test('the tolerance boundary: within ±10% of the dense compute inclusive is matched', () => {
  assert.equal(COMPUTE_TOLERANCE, 0.1);
  const cls = (ept: number, k = 2, shared = 0) => classifyCompute(computeVsDense(ept, k, shared));
  assert.equal(cls(2.2), 'matched'); // exactly 1.10x
  assert.equal(cls(2.21), 'more');
  assert.equal(cls(1.8), 'matched'); // exactly 0.90x
  assert.equal(cls(1.79), 'less');
  // on the boundary even where floating point rounds the ratio a hair outside it
  assert.ok(computeVsDense(7.1, 8, 1) < 0.9);
  assert.throws(() => computeVsDense(1, 0, 0), /^Error: computeVsDense: topK \+ shared experts must be > 0, got 0 \+ 0$/);
  assert.equal(cls(7.1, 8, 1), 'matched'); // (7.1 + 1) / 9 = 0.9
  assert.ok(computeVsDense(3.45, 3) > 1.15);
  assert.equal(classifyCompute(computeVsDense(3.45, 3), 0.15), 'matched'); // 3.45 / 3 = 1.15 with tolerance 0.15
  assert.equal(classifyCompute(computeVsDense(3.46, 3), 0.15), 'more');
  // with shared experts the ratio is (ept + shared) / (k + shared): 1 routed + 1 shared vs k = 1
  assert.equal(cls(1.2, 1, 1), 'matched'); // 2.2 / 2
  assert.equal(cls(1.25, 1, 1), 'more'); // 2.25 / 2
  assert.equal(cls(1.2, 1, 0), 'more'); // the same 1.2 experts without shared experts is 1.2x
  assert.equal(classifyCompute(null), 'unmeasured');
  assert.equal(classifyCompute(Number.NaN), 'unmeasured');
  assert.throws(() => computeVsDense(2, 0, 0), /computeVsDense: topK \+ shared experts must be > 0/);

  // the same boundary decides the report: 2.2 is ranked, 2.21 listed apart
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5] }), run('topk', { losses: [2.6, 2.1], ept: 2.2 }), run('threshold', { losses: [2.6, 2.0], ept: 2.21 })];
  const a = analyseRuns(runs, { topK: 2 });
  assert.deepEqual(
    a.routers.map((r) => r.compute),
    ['matched', 'matched', 'more'],
  );
  const { ranked, apart } = tables(renderReport(results(runs)));
  assert.ok(ranked.includes('data-router="topk"') && !apart.includes('data-router="topk"'));
  assert.ok(apart.includes('data-router="threshold"') && !ranked.includes('data-router="threshold"'));
  assert.match(apart, /<td class="num">2\.21<\/td>\s*<td class="num">1\.10×<\/td>/);
});

test('an MoE run with no experts-per-token measurement is listed apart as unmeasured', () => {
  const r = run('topk', { losses: [2.5, 2.0] });
  r.intervals = [];
  r.final = { ...r.final!, routing: { ...r.final!.routing, expertsPerToken: Number.NaN } };
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5] }), r, run('aux-free', { losses: [2.6, 2.2] })];
  const a = analyseRuns(runs, { topK: 2 });
  const t = a.routers.find((x) => x.name === 'topk')!;
  assert.equal(t.meanExpertsPerToken, null);
  assert.equal(t.compute, 'unmeasured');
  const text = a.recommendation.join(' ');
  assert.match(text, /topk recorded no experts-per-token measurement/);
  assert.match(text, /Lowest validation loss at matched compute: \*\*aux-free\*\*/);
  const { apart } = tables(renderReport(results(runs)));
  assert.ok(apart.includes('data-router="topk"'));
  assert.match(apart, /More active compute than k = 2 experts per token, or unmeasured/);
  assert.match(apart, /experts\/token not measured: compute not shown to be matched/);
});

test('without interval metrics the final evaluation measures experts per token', () => {
  const r = run('topk', { losses: [2.5, 2.0], ept: 4 });
  r.intervals = [];
  const a = analyseRuns([run('dense', { kind: 'dense', losses: [3, 2.5] }), r], { topK: 2 });
  const t = a.routers.find((x) => x.name === 'topk')!;
  assert.equal(t.meanExpertsPerToken, 4);
  assert.equal(t.compute, 'more');
});
