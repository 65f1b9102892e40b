// issue 10: the train bench shows each dataset's unigram baseline and calls a comparison of runs
// that are not clearly below it an undertrained smoke run instead of a verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareDatasets, report } from '../../bench/suites/train.js';

function run(dataset: string, model: string, seed: number, valLoss: number): Record<string, unknown> {
  return { kind: 'run', dataset, model, seed, valLoss, tokens: 1000, tokensPerS: 1000, curve: [{ tokens: 1000, loss: valLoss }] };
}

/** MoE 0.1 below dense on every seed (dense mean = dense + 0.001): a clear 2-SE win by the numbers. */
function rows(moe: number, dense: number, baseline?: number): Record<string, unknown>[] {
  const r = [
    run('a', 'moe', 1, moe),
    run('a', 'dense', 1, dense),
    run('a', 'moe', 2, moe + 0.01),
    run('a', 'dense', 2, dense + 0.012),
    run('a', 'moe', 3, moe - 0.01),
    run('a', 'dense', 3, dense - 0.009),
  ];
  return baseline === undefined ? r : [...r, { kind: 'baseline', dataset: 'a', model: 'unigram', valLoss: baseline }];
}

test('train bench: runs not clearly below the unigram baseline are a smoke run, with no MoE-vs-dense verdict', () => {
  const smoke = compareDatasets(rows(3.2, 3.3, 3.34));
  assert.equal(smoke[0].beats2SE, true, 'the numbers alone say MoE wins');
  assert.equal(smoke[0].baseline, 3.34);
  assert.equal(smoke[0].undertrained, true, '3.2 is less than 10% below 3.34');
  const t = report(rows(3.2, 3.3, 3.34) as never);
  assert.equal(t[0].rows[0].beats, 'no conclusion: smoke run');
  const base = t.find((x) => /^Unigram baseline of the validation data/.test(x.title));
  assert.ok(base, 'a baseline table');
  assert.deepEqual(base.rows[0], { dataset: 'a', baseline: '3.3400', moe: '3.2000', dense: '3.3010', verdict: 'undertrained smoke run' });

  // dense at 3.0 is within 10% of 3.34 too: one undertrained side is enough
  assert.equal(compareDatasets(rows(1.8, 3.1, 3.34))[0].undertrained, true);
  const trained = report(rows(1.8, 1.9, 3.34) as never);
  assert.equal(trained[0].rows[0].beats, 'yes');
  assert.equal(trained.find((x) => /^Unigram baseline/.test(x.title))!.rows[0].verdict, 'trained');

  // rows without a baseline (older results): no label, no baseline table
  const old = compareDatasets(rows(3.2, 3.3));
  assert.equal(old[0].baseline, null);
  assert.equal(old[0].undertrained, false);
  assert.ok(!report(rows(3.2, 3.3) as never).some((x) => /^Unigram baseline/.test(x.title)));
});
