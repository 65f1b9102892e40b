import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareDatasets, denseSuiteConfig, report, suiteConfig } from '../../bench/suites/train.js';
import { matchedDenseConfig, parseModelConfig, parseRunConfig, TRAIN_DEFAULT_MODEL } from '../../src/models/config.js';

function run(dataset: string, model: string, seed: number, valLoss: number, curve: [number, number][], tokensPerS = 1000): Record<string, unknown> {
  return { kind: 'run', dataset, model, seed, valLoss, tokens: 1000, tokensPerS, curve: curve.map(([tokens, loss]) => ({ tokens, loss })) };
}

test('compareDatasets: Welch difference, 2-SE verdict, paired difference and tokens-to-reach per seed', () => {
  const rows = [
    run(
      'a',
      'moe',
      1,
      1.9,
      [
        [500, 2.2],
        [1000, 1.9],
      ],
      900,
    ),
    run('a', 'dense', 1, 2.0, [
      [500, 2.3],
      [1000, 2.0],
    ]),
    run(
      'a',
      'moe',
      2,
      1.92,
      [
        [500, 2.3],
        [1000, 1.92],
      ],
      900,
    ),
    run('a', 'dense', 2, 2.01, [
      [500, 2.3],
      [1000, 2.01],
    ]),
    run(
      'a',
      'moe',
      3,
      1.91,
      [
        [500, 2.0],
        [1000, 1.91],
      ],
      900,
    ),
    run('a', 'dense', 3, 2.02, [
      [500, 2.3],
      [1000, 2.02],
    ]),
  ];
  const [c] = compareDatasets(rows);
  assert.equal(c.n, 3);
  assert.ok(Math.abs(c.moe.mean - 1.91) < 1e-12 && Math.abs(c.dense.mean - 2.01) < 1e-12);
  // sd 0.01 each: SE = sqrt(2 * 0.0001 / 3)
  assert.ok(Math.abs(c.diff.se - Math.sqrt(0.0002 / 3)) < 1e-12);
  assert.equal(c.beats2SE, true);
  assert.ok(Math.abs(c.paired.mean + 0.1) < 1e-12);
  // seed 1: 2.2 -> 1.9 crosses 2.0 at 2/3 of the way from 500 to 1000 tokens
  assert.ok(Math.abs((c.reachRatios[0] as number) - (500 + (0.2 / 0.3) * 500) / 1000) < 1e-12);
  // seed 3: already below 2.02 at the first evaluation
  assert.equal(c.reachRatios[2], 0.5);
  assert.ok(c.reach !== null && c.reach.n === 3);
  assert.ok(Math.abs(c.trainSpeedRatio - 0.9) < 1e-12);
});

test('compareDatasets: a MoE that never reaches dense has no reach interval, and a loss is no win', () => {
  const rows = [run('b', 'moe', 1, 2.1, [[1000, 2.1]]), run('b', 'dense', 1, 2.0, [[1000, 2.0]]), run('b', 'moe', 2, 2.0, [[1000, 2.0]]), run('b', 'dense', 2, 2.05, [[1000, 2.05]])];
  const [c] = compareDatasets(rows);
  assert.equal(c.reachRatios[0], null);
  assert.equal(c.reach, null);
  assert.equal(c.beats2SE, false);
  const t = report(rows as never);
  assert.match(String(t[1].rows[0].ratio), /not reached in 1 of 2 seeds/);
  // one seed only: nothing to compare
  assert.deepEqual(compareDatasets(rows.slice(0, 2)), []);
});

test('compareDatasets: the verdict uses the paired SE, so a shared seed effect does not hide a consistent lead', () => {
  // dense varies a lot between seeds, the MoE is 0.01 below it on every seed
  const dense = [2.0, 2.1, 2.2];
  const moe = [1.99, 2.091, 2.189];
  const rows = [1, 2, 3].flatMap((s, i) => [run('c', 'moe', s, moe[i], [[1000, moe[i]]]), run('c', 'dense', s, dense[i], [[1000, dense[i]]])]);
  const [c] = compareDatasets(rows);
  assert.equal(c.beats2SE, true);
  assert.equal(c.beats2SEWelch, false);
  assert.ok(c.paired.se < 0.001 && c.diff.se > 0.05);
  // and a MoE that is worse on one seed by as much as it is better on the others is no win when paired
  const mixed = [1, 2, 3].flatMap((s, i) => [run('d', 'moe', s, dense[i] + [-0.02, -0.02, 0.03][i], [[1000, 2]]), run('d', 'dense', s, dense[i], [[1000, 2]])]);
  assert.equal(compareDatasets(mixed)[0].beats2SE, false);
});

test('suite config: the train defaults, dense baseline matched in active width', () => {
  const c = suiteConfig(false, ['shakespeare'], 7);
  assert.equal(c.training.seed, 7);
  // the MoE side is TRAIN_DEFAULT_MODEL (shared expert + top-1, raw softmax weight)
  assert.deepEqual(c.model, parseModelConfig(TRAIN_DEFAULT_MODEL));
  assert.equal(c.model.n_shared_experts, 1);
  assert.equal(c.model.num_experts_per_tok, 1);
  assert.equal(c.model.norm_topk_prob, false);
  const d = matchedDenseConfig(c.model);
  assert.equal(
    d.intermediate_size,
    c.model.num_experts_per_tok * c.model.moe_intermediate_size + c.model.n_shared_experts * (c.model.shared_expert_intermediate_size ?? c.model.moe_intermediate_size),
  );
  assert.ok(suiteConfig(true, ['shakespeare'], 1).training.steps < c.training.steps);
});

test('suite config: dense baseline at the MoE lr unless given its own, otherwise the same run', () => {
  for (const quick of [false, true]) {
    const c = suiteConfig(quick, ['shakespeare', 'linux'], 1235);
    assert.equal(c.training.lr, parseRunConfig({}).training.lr);
    const d = denseSuiteConfig(c);
    assert.equal(d.training.lr, c.training.lr);
    assert.deepEqual(d.model, parseModelConfig(matchedDenseConfig(c.model)));
    assert.equal(d.model.num_local_experts, 0);
    // its own rate (an lr sweep): only the model and the lr differ; same seed, token budget, schedule and data
    const d6 = denseSuiteConfig(c, 0.006);
    assert.equal(d6.training.lr, 0.006);
    assert.deepEqual({ ...d6.training, lr: 0 }, { ...c.training, lr: 0 });
    assert.deepEqual(d6.data, c.data);
    assert.deepEqual(d6.model, d.model);
  }
  assert.throws(() => denseSuiteConfig(suiteConfig(false, ['shakespeare'], 1), -1), /lr/);
});
