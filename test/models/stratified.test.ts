/**
 * Stratified MoE (2023): the layer equals a per-token float64 walk through the strata (route among
 * the current and later strata, skip or compute and move on), tokens take 1..S experts, gradients
 * match finite differences, and a model with strata of different widths trains from a config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad, type Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { StratifiedMoE } from '../../src/models/ffn/index.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { TrainSession } from '../../src/train/session.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';

const STRATA = [
  { experts: 3, dFF: 4 },
  { experts: 2, dFF: 8 },
  { experts: 2, dFF: 6 },
];

/** One token through the strata in float64: its output delta and its experts. */
function walk(m: StratifiedMoE, x: Float32Array, d: number): { y: Float64Array; experts: number[] } {
  const h = Float64Array.from(x);
  const experts: number[] = [];
  let s = 0;
  while (s < m.sizes.length) {
    const W = m.routers[s].weight.data;
    const Er = m.routers[s].outFeatures;
    const logits = Array.from({ length: Er }, (_, e) => {
      let v = 0;
      for (let i = 0; i < d; i++) v += W[e * d + i] * h[i];
      return v;
    });
    const mx = Math.max(...logits);
    const z = logits.reduce((a, v) => a + Math.exp(v - mx), 0);
    const best = logits.indexOf(mx);
    const e = m.base[s] + best;
    experts.push(e);
    const j = m.stratumOf(e);
    const ye = m.strata[j].referenceForward(e - m.base[j], h);
    const p = Math.exp(logits[best] - mx) / z;
    for (let i = 0; i < d; i++) h[i] += p * ye[i];
    s = j + 1;
  }
  return { y: h.map((v, i) => v - x[i]), experts };
}

test('Stratified MoE equals the per-token walk through the strata; tokens take 1..S experts', () => {
  const d = 6;
  const m = new StratifiedMoE(d, STRATA, 'swiglu', 0.01, new Rng(1));
  assert.deepEqual(m.base, [0, 3, 5]);
  assert.deepEqual(
    m.routers.map((r) => r.outFeatures),
    [7, 4, 2],
    'each router chooses among its stratum and every later one',
  );
  const Tn = 64;
  const x = randn(new Rng(2), [Tn, d], false);
  const r = noGrad(() => m.forward(x));
  const lengths = new Set<number>();
  for (let t = 0; t < Tn; t++) {
    const ref = walk(m, x.data.subarray(t * d, (t + 1) * d), d);
    assert.deepEqual(m.lastPaths[t].experts, ref.experts, `token ${t} path`);
    for (let i = 0; i < d; i++) assert.ok(Math.abs(r.y.data[t * d + i] - ref.y[i]) < 1e-5, `token ${t} y[${i}]`);
    const strata = ref.experts.map((e) => m.stratumOf(e));
    assert.ok(
      strata.every((s, i) => i === 0 || s > strata[i - 1]),
      'strata strictly increase along a path',
    );
    assert.equal(strata[strata.length - 1], 2, 'every path ends in the last stratum');
    lengths.add(ref.experts.length);
  }
  assert.ok(lengths.size >= 2, `dynamic capacity: paths of several lengths, got ${[...lengths]}`);
  const mean = [...m.lastPaths].reduce((a, p) => a + p.experts.length, 0) / Tn;
  assert.ok(Math.abs(r.metrics!.stratifiedExpertsPerToken - mean) < 1e-12);
  assert.ok(r.losses!['stratified.switch'].item() > 0);
});

test('Stratified MoE: finite-difference gradients of the routers, every stratum and the input', () => {
  const m = new StratifiedMoE(4, STRATA.slice(0, 2), 'swiglu', 0.01, new Rng(3));
  const x = randn(new Rng(4), [5, 4]);
  gradcheck('stratified', (xi: Tensor) => m.forward(xi).y, [x, ...m.parameters()], { eps: 1e-3, atol: 3e-3, rtol: 2e-2 });
});

test('a model with stratified FFNs of different widths trains from a config; errors name the field', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const strata = [
    { experts: 4, dFF: 8 },
    { experts: 2, dFF: 32 },
  ];
  const run = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_local_experts: 6, ffn_type: 'stratified', ffn_options: { strata } },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(run, [TEXT]);
  const model = s.model as MoETransformerLM;
  assert.ok(model.layers.every((l) => l.ffn_block instanceof StratifiedMoE));
  const ids = Int32Array.from({ length: 32 }, (_, i) => TEXT.charCodeAt(i) % 256);
  const { auxLosses } = lmLoss(model.forward(ids, 2, 16, { ctx: { training: false, step: 0, rng: new Rng(0) } }), ids);
  assert.ok(auxLosses['ffn.stratified.switch'] > 0, JSON.stringify(auxLosses));
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
  const base = { hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, num_local_experts: 4, ffn_type: 'stratified' };
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { strata: [] } }), 0), /ffn_options.strata must list at least one stratum/);
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { strata: [{ experts: 0, dFF: 4 }] } }), 0), /ffn_options.strata\[0\].experts must be a positive integer/);
});
