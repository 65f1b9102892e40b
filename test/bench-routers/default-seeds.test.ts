// The default seed count of bench-routers: as many seeds as an estimate of the run's time allows
// inside the 30-minute budget (docs/bench-routers.md, "Default seeds").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBenchConfig, planBenchmark, estimateSeedSeconds, defaultSeedCount, STEP_SECONDS, DEFAULT_BUDGET_SECONDS } from '../../src/bench-routers/run.js';

test('the estimate adds steps x seconds per step of every model, soft routing dearest; the default seeds fit the budget', () => {
  const { config, routerOptions } = buildBenchConfig({});
  const two = planBenchmark({ config, routers: ['topk', 'soft'], routerOptions });
  const steps = config.training.steps;
  assert.ok(Math.abs(estimateSeedSeconds(two) - steps * (STEP_SECONDS.dense + STEP_SECONDS.sparse + STEP_SECONDS.soft)) < 1e-6);
  assert.equal(defaultSeedCount(two), 3, 'a few routers: the most seeds');
  const all = planBenchmark({ config, routerOptions });
  const n = defaultSeedCount(all);
  assert.ok(n >= 1 && n <= 3);
  if (n > 1) assert.ok(n * estimateSeedSeconds(all) <= DEFAULT_BUDGET_SECONDS, 'the default seeds fit 30 minutes');
  assert.ok((n + 1) * estimateSeedSeconds(all) > DEFAULT_BUDGET_SECONDS || n === 3, 'one more seed would not fit');
  // half the steps, about half the estimate
  const half = buildBenchConfig({ steps: steps / 2 });
  assert.ok(Math.abs(estimateSeedSeconds(planBenchmark({ config: half.config, routers: ['topk', 'soft'], routerOptions })) - estimateSeedSeconds(two) / 2) < 1e-6);
});
