import { test } from 'node:test';
import assert from 'node:assert/strict';
import { granularConfig, report, scalingChart, scalingJobs, summarise } from '../../bench/suites/scaling.js';
import { denseSuiteConfig, suiteConfig } from '../../bench/suites/train.js';
import { matchedDenseConfig } from '../../src/models/config.js';

test('granularity keeps the active width and total expert parameters fixed', () => {
  const base = suiteConfig(false, ['shakespeare'], 1);
  const active = base.model.num_experts_per_tok * base.model.moe_intermediate_size;
  for (const g of [1, 2, 4, 8]) {
    const m = granularConfig(base, g).model;
    assert.equal(m.num_local_experts, 8 * g);
    assert.equal(m.num_experts_per_tok, 2 * g);
    assert.equal(m.num_experts_per_tok * m.moe_intermediate_size, active, `active width at g=${g}`);
    assert.equal(m.num_local_experts * m.moe_intermediate_size, 4 * active, `total expert width at g=${g}`);
    assert.equal(matchedDenseConfig(m).intermediate_size, matchedDenseConfig(granularConfig(base, 1).model).intermediate_size);
  }
  assert.throws(() => granularConfig(base, 3), /does not split/);
});

test('summary, table and SVG plot from rows', () => {
  const rows = [
    { model: 'dense', granularity: '', seed: 1, valLoss: 2.0 },
    { model: 'dense', granularity: '', seed: 2, valLoss: 2.02 },
    ...[1, 2, 4].flatMap((g) => [1, 2].map((s) => ({ model: 'moe', granularity: g, seed: s, valLoss: 2.05 - 0.03 * Math.log2(g) + 0.01 * s }))),
  ];
  const { points, dense } = summarise(rows);
  assert.deepEqual(
    points.map((p) => p.granularity),
    [1, 2, 4],
  );
  assert.ok(Math.abs(points[2].loss.mean - (2.05 - 0.06 + 0.015)) < 1e-12);
  assert.ok(dense && Math.abs(dense.mean - 2.01) < 1e-12);
  const t = report(rows);
  assert.equal(t[0].rows.length, 4);
  const svg = scalingChart(rows);
  assert.match(svg, /^<svg[\s\S]*<\/svg>$/);
  assert.match(svg, /granularity/);
});

test('scaling jobs: dense first (the train bench baseline), then each granularity', () => {
  const base = suiteConfig(false, ['shakespeare'], 3);
  const jobs = scalingJobs(base, [1, 4]);
  assert.deepEqual(
    jobs.map(([label, g]) => [label, g]),
    [
      ['dense', 0],
      ['moe', 1],
      ['moe', 4],
    ],
  );
  assert.deepEqual(jobs[0][2], denseSuiteConfig(granularConfig(base, 1)));
  assert.deepEqual(jobs[0][2].training, base.training);
  assert.equal(jobs[0][2].model.num_local_experts, 0);
  assert.equal(jobs[0][2].model.intermediate_size, matchedDenseConfig(granularConfig(base, 1).model).intermediate_size);
  assert.equal(jobs[2][2].training.lr, base.training.lr);
  assert.equal(jobs[2][2].model.num_local_experts, 32);
});
