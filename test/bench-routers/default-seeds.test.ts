// The default run of bench-routers: DEFAULT_SEEDS seeds and as many steps as an estimate of the
// run's time allows inside the 30-minute budget (docs/bench-routers.md, "Default seeds").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildBenchConfig, planBenchmark, estimateSeedSeconds, defaultSteps, STEP_SECONDS, DEFAULT_BUDGET_SECONDS, DEFAULT_SEEDS, DEFAULT_PRESET } from '../../src/bench-routers/run.js';

test('the estimate adds steps x seconds per step of every model by kind; the default steps fit the seeds in the budget', () => {
  const { config, routerOptions } = buildBenchConfig({});
  const some = planBenchmark({ config, routers: ['topk', 'soft', 'threshold'], routerOptions });
  const steps = config.training.steps;
  assert.ok(Math.abs(estimateSeedSeconds(some) - steps * (STEP_SECONDS.dense + STEP_SECONDS.sparse + STEP_SECONDS.soft + STEP_SECONDS.variable)) < 1e-6);
  assert.equal(defaultSteps(some), DEFAULT_PRESET.training.steps, 'a few routers: the full preset');
  const all = planBenchmark({ config, routerOptions });
  const s = defaultSteps(all);
  assert.ok(s >= 50 && s <= steps && s % 25 === 0);
  const perStep = estimateSeedSeconds(all) / steps;
  if (s > 50) assert.ok(DEFAULT_SEEDS * s * perStep <= DEFAULT_BUDGET_SECONDS, 'the default run fits 30 minutes');
  if (s < steps) assert.ok(DEFAULT_SEEDS * (s + 25) * perStep > DEFAULT_BUDGET_SECONDS, '25 more steps would not fit');
  // half the steps, half the estimate
  const half = buildBenchConfig({ steps: steps / 2 });
  assert.ok(
    Math.abs(estimateSeedSeconds(planBenchmark({ config: half.config, routers: ['topk', 'soft'], routerOptions })) * 2 - steps * (STEP_SECONDS.dense + STEP_SECONDS.sparse + STEP_SECONDS.soft)) < 1e-6,
  );
});

test('the default preset trains the `moe-ts train` default model (issue 10): same experts, k, shared expert and weights; every router builds with it', async () => {
  const { parseRunConfig, TRAIN_DEFAULT_MODEL } = await import('../../src/models/config.js');
  const bench = buildBenchConfig({}).config.model;
  const trainDefault = parseRunConfig({}).model;
  for (const k of [
    'hidden_size',
    'num_hidden_layers',
    'num_attention_heads',
    'num_local_experts',
    'num_experts_per_tok',
    'moe_intermediate_size',
    'n_shared_experts',
    'norm_topk_prob',
    'router_type',
  ] as const)
    assert.deepEqual(bench[k], trainDefault[k], k);
  for (const [k, v] of Object.entries(TRAIN_DEFAULT_MODEL)) assert.deepEqual(bench[k as keyof typeof bench], v, k);
  const plans = planBenchmark({ config: buildBenchConfig({}).config, routerOptions: {} });
  // the FLOP-matched dense baseline: k routed experts + the shared expert
  assert.equal(plans[0].config.model.intermediate_size, (bench.num_experts_per_tok + bench.n_shared_experts) * bench.moe_intermediate_size);
  assert.ok(plans.length > 30, 'every registered router plans (and builds) at k = 1');
});
