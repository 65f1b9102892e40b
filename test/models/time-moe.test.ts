/**
 * Time-MoE (Shi et al. 2024): the Huber loss and its gradient against finite differences, the
 * whole forecaster's gradient on a tiny size, causality (future values never change earlier
 * forecasts), the multi-resolution head schedule, autoregressive forecasting equal to its own
 * rounds run by hand, and the baselines' definitions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { TimeMoE, huberLoss, huberValue, timeMoELoss, headSchedule, forecast, windowStats, parseForecastConfig, timeMoEModelConfig } from '../../src/models/time-moe.js';
import { baselineForecasts, parseForecastRunConfig, WindowSampler } from '../../src/train/forecast.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const tinyModel = (extra: Record<string, unknown> = {}, horizons = [1, 4]): TimeMoE =>
  new TimeMoE(
    timeMoEModelConfig({ hidden_size: 8, num_hidden_layers: 2, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8, max_position_embeddings: 32, ...extra }),
    horizons,
    3,
  );

const ctx = { training: false, step: 0, rng: new Rng(0) };

test('Huber loss: quadratic within delta, linear beyond, gradient equal to finite differences on both sides', () => {
  const delta = 1.5;
  // residuals 0.5 (quadratic) and 4 (linear): 0.5 * 0.25 and 1.5 * (4 - 0.75)
  assert.ok(Math.abs(huberValue([0.5, 4], [0, 0], delta) - (0.125 + 1.5 * 3.25) / 2) < 1e-12);
  assert.equal(huberValue([-4], [0], delta), 1.5 * 3.25, 'symmetric in the residual');
  const rng = new Rng(7);
  // residuals spread over (-5, 5): both regimes, none within FD step of the kink in curvature
  const pred = randn(rng, [6, 5], true, 2.5);
  const target = rng.fillNormal(new Float32Array(30), 0.5);
  for (let i = 0; i < 30; i++) {
    const a = Math.abs(pred.data[i] - target[i]);
    if (Math.abs(a - delta) < 0.05) pred.data[i] += 0.2;
  }
  const r = gradcheck('huberLoss', (p) => huberLoss(p, target, delta), [pred]);
  assert.equal(r.checked, 30);
  let linear = 0;
  for (let i = 0; i < 30; i++) if (Math.abs(pred.data[i] - target[i]) > delta) linear++;
  assert.ok(linear > 3 && linear < 27, `both regimes exercised (${linear} of 30 linear)`);
  assert.throws(() => huberLoss(pred, new Float32Array(3), delta), /huberLoss: 30 predictions for 3 targets/);
  assert.throws(() => huberValue([1], [1], 0), /delta must be > 0/);
});

test('Time-MoE gradient through embedding, decoder blocks and heads equals finite differences (tiny dense and MoE backbones)', () => {
  for (const extra of [{ num_local_experts: 0, intermediate_size: 8 }, {}]) {
    const model = tinyModel(extra);
    model.train();
    const B = 2;
    const L = 5;
    const rng = new Rng(11);
    const x = rng.fillNormal(new Float32Array(B * L));
    const targets = model.horizons.map((p) => rng.fillNormal(new Float32Array(B * L * p)));
    const fn = (): Tensor => timeMoELoss(model.forward(x, B, L, { training: true, step: 0, rng: new Rng(1) }), targets, 2).loss;
    const inputs = [model.embed_up.weight, model.heads[1].weight, model.layers[0].self_attn.namedParameters()[0][1]];
    gradcheck(`time-moe ${extra.num_local_experts === 0 ? 'dense' : 'moe'}`, fn, inputs, { eps: 3e-3, rtol: 3e-2, atol: 3e-3 });
  }
});

test('Time-MoE is causal: changing values after step t leaves every forecast at steps <= t unchanged', () => {
  const model = tinyModel();
  const B = 2;
  const L = 12;
  const x = new Rng(5).fillNormal(new Float32Array(B * L));
  const base = noGrad(() => model.forward(x, B, L, ctx));
  const t = 6;
  const y = x.slice();
  for (let b = 0; b < B; b++) for (let i = t + 1; i < L; i++) y[b * L + i] += 3 * Math.sin(i + b);
  const moved = noGrad(() => model.forward(y, B, L, ctx));
  model.horizons.forEach((p, j) => {
    for (let b = 0; b < B; b++) {
      const past = (o: Tensor) => o.data.subarray(b * L * p, (b * L + t + 1) * p);
      const future = (o: Tensor) => o.data.subarray((b * L + t + 1) * p, (b + 1) * L * p);
      assertClose(past(moved.outputs[j]), past(base.outputs[j]), 1e-6, 1e-6, `head ${p}, sequence ${b}, steps <= ${t}`);
      const changed = future(moved.outputs[j]).some((v, i) => Math.abs(v - future(base.outputs[j])[i]) > 1e-4);
      assert.ok(changed, `head ${p}: later steps do see the change`);
    }
  });
});

test('head schedule: greedily the longest head that fits, the shortest (truncated) when none does', () => {
  assert.deepEqual(headSchedule([1, 8, 32], 96), [2, 2, 2]);
  assert.deepEqual(headSchedule([1, 8, 32], 41), [2, 1, 0]);
  assert.deepEqual(headSchedule([1, 8, 32], 7), [0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(headSchedule([8, 32], 3), [0]);
  assert.throws(() => headSchedule([1], 0), /horizon must be a positive integer, got 0/);
});

test('autoregressive forecast = its rounds by hand: each round renormalises the last L values (known and forecast)', () => {
  const model = tinyModel({}, [1, 4]);
  const L = 10;
  const series = Array.from({ length: L }, (_, i) => 20 + 3 * Math.sin(i / 2) + i * 0.1);
  const [f] = forecast(model, [series], 6);
  assert.equal(f.length, 6);
  // by hand: head 4 then head 1 twice
  const w = [...series];
  const round = (j: number): number[] => {
    const s = windowStats(w, w.length - L, L);
    const x = Float32Array.from(w.slice(-L), (v) => (v - s.mean) / s.std);
    const out = noGrad(() => model.forward(x, 1, L, ctx)).outputs[j];
    const p = model.horizons[j];
    return Array.from(out.data.subarray((L - 1) * p, L * p), (v) => v * s.std + s.mean);
  };
  for (const j of [1, 0, 0]) w.push(...round(j));
  assertClose(f, w.slice(L), 1e-4, 1e-5, 'forecast vs rounds by hand');
  // denormalised: a shifted and scaled context gives the shifted and scaled forecast
  const [g] = forecast(model, [series.map((v) => 2 * v + 100)], 6);
  assertClose(
    g,
    Array.from(f, (v) => 2 * v + 100),
    1e-3,
    1e-4,
    'scale-free',
  );
  assert.throws(
    () =>
      forecast(
        model,
        [
          [1, 2, 3],
          [1, 2],
        ],
        2,
      ),
    /contexts must all have one positive length/,
  );
});

test('training windows: targets are the next p values of each step, normalised by the input window', () => {
  const values = Float64Array.from({ length: 50 }, (_, i) => i * i * 0.1);
  const s = new WindowSampler(values, 40, 6, [1, 3], new Rng(2));
  const { inputs, targets } = s.batch(3);
  for (let b = 0; b < 3; b++) {
    // recover the window start from the input (values are increasing, so stats invert uniquely)
    const x = Array.from(inputs.subarray(b * 6, b * 6 + 6));
    const start = [...Array(40 - 6 - 3 + 1).keys()].find((st) => {
      const w = windowStats(values, st, 6);
      return Math.abs((values[st] - w.mean) / w.std - x[0]) < 1e-5 && Math.abs((values[st + 5] - w.mean) / w.std - x[5]) < 1e-5;
    });
    assert.ok(start !== undefined, 'window found in the training part');
    const w = windowStats(values, start!, 6);
    for (let t = 0; t < 6; t++) for (let i = 0; i < 3; i++) assert.ok(Math.abs(targets[1][(b * 6 + t) * 3 + i] - (values[start! + t + 1 + i] - w.mean) / w.std) < 1e-4);
    assert.ok(start! + 6 + 3 <= 40, 'targets stay inside the training part');
  }
  assert.throws(() => new WindowSampler(values, 8, 6, [1, 3], new Rng(0)), /training part has 8 values, need at least seq_len \+ the longest horizon = 9/);
});

test('baselines: naive repeats the last value, seasonal-naive the last season', () => {
  const v = Float64Array.from({ length: 30 }, (_, i) => (i % 7) * 10 + i);
  const { naive, seasonal } = baselineForecasts(v, 20, 9, 7);
  assert.deepEqual(Array.from(naive), new Array(9).fill(v[19]));
  // lead h uses the value 7 * ceil((h + 1) / 7) steps back: 13..19, then 13..14 again
  assert.deepEqual(
    Array.from(seasonal!),
    [13, 14, 15, 16, 17, 18, 19, 13, 14].map((i) => v[i]),
  );
  assert.equal(baselineForecasts(v, 5, 3, 7).seasonal, null, 'less than one season of history');
});

test('forecast config: horizons must increase, unknown fields and sections are named, context fits the positions', () => {
  assert.deepEqual(parseForecastConfig({}).horizons, [1, 8, 32]);
  assert.throws(() => parseForecastConfig({ horizons: [8, 8] }), /horizons\[1\]: must increase strictly \(longer than 8\), got 8/);
  assert.throws(() => parseForecastConfig({ horizons: [] }), /horizons/);
  assert.throws(() => parseForecastConfig({ horizon: [1] }), /unknown field|horizon/);
  assert.throws(() => parseForecastRunConfig({ modle: {} }), /unknown section "modle"/);
  assert.throws(() => parseForecastRunConfig({ training: { seq_len: 300 } }), /training\.seq_len.*at most model\.max_position_embeddings \(128\)/);
  assert.throws(() => parseForecastRunConfig({ model: { hidden_size: -1 } }), /model.*hidden_size/);
  assert.throws(() => parseForecastRunConfig({ model: { conditional_moe_routing: {} } }), /conditional_moe_routing is not supported by the Time-MoE forecaster/);
  const c = parseForecastRunConfig({});
  assert.equal(c.model.n_shared_experts, 1, 'Time-MoE keeps a shared expert');
  assert.equal(c.model.shared_expert_gate, true);
  assert.equal(c.model.router_aux_loss_coef, 0.02, "the paper's balancing weight");
  assert.equal(c.data.series, 'seattle-weather');
});
