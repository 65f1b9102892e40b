/**
 * Multilinear MoE (2024): the factorised CP and Tucker computations equal the explicit gate-weighted
 * sum over materialised expert matrices, finite-difference gradients of every factor, the gate and
 * the input, and a model with μMoE FFNs trains from a config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad, type Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { MuMoEFFN, MuMoELinear } from '../../src/models/ffn/index.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { TrainSession } from '../../src/train/session.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';

/** W [E, in, out] from the factors by definition (CP or Tucker), in float64. */
function materialize(l: MuMoELinear): Float64Array {
  const { numExperts: E, inFeatures: I, outFeatures: O, rank: R } = l;
  const A = l.expert_factor.data;
  const B = l.in_factor.data;
  const C = l.out_factor.data;
  const W = new Float64Array(E * I * O);
  const re = l.core ? l.expertRank : R;
  for (let e = 0; e < E; e++)
    for (let i = 0; i < I; i++)
      for (let o = 0; o < O; o++) {
        let s = 0;
        if (!l.core) for (let r = 0; r < R; r++) s += A[e * R + r] * B[i * R + r] * C[o * R + r];
        else for (let p = 0; p < re; p++) for (let q = 0; q < R; q++) for (let u = 0; u < R; u++) s += l.core.data[(p * R + q) * R + u] * A[e * re + p] * B[i * R + q] * C[o * R + u];
        W[(e * I + i) * O + o] = s;
      }
  return W;
}

/** y = sum_e a_e W_e^T x per row, with every expert's matrix formed explicitly. */
function explicitMixture(l: MuMoELinear, x: Float32Array, a: Float32Array, rows: number): Float64Array {
  const W = materialize(l);
  const { numExperts: E, inFeatures: I, outFeatures: O } = l;
  const y = new Float64Array(rows * O);
  for (let t = 0; t < rows; t++) for (let e = 0; e < E; e++) for (let i = 0; i < I; i++) for (let o = 0; o < O; o++) y[t * O + o] += a[t * E + e] * x[t * I + i] * W[(e * I + i) * O + o];
  return y;
}

for (const form of ['cp', 'tucker'] as const) {
  test(`μMoE ${form}: the factorised layer equals the gate-weighted sum over materialised experts`, () => {
    const E = 7;
    const l = new MuMoELinear(E, 5, 4, form, 3, 2, new Rng(1));
    const rows = 6;
    const x = randn(new Rng(2), [rows, 5], false);
    const a = noGrad(() => T.softmax(randn(new Rng(3), [rows, E], false), -1));
    const y = noGrad(() => l.forward(x, a));
    const ref = explicitMixture(l, x.data, a.data, rows);
    for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i] - ref[i]) < 1e-5 * (1 + Math.abs(ref[i])), `y[${i}] ${y.data[i]} vs ${ref[i]}`);
    // one-hot gates pick out a single expert's matrix
    const onehot = new Float32Array(rows * E);
    for (let t = 0; t < rows; t++) onehot[t * E + (t % E)] = 1;
    const y1 = noGrad(() => l.forward(x, new T.Tensor(onehot, [rows, E])));
    const ref1 = explicitMixture(l, x.data, onehot, rows);
    for (let i = 0; i < y1.size; i++) assert.ok(Math.abs(y1.data[i] - ref1[i]) < 1e-5 * (1 + Math.abs(ref1[i])));
  });

  test(`μMoE ${form} MLP: finite-difference gradients of the gate, every factor and the input`, () => {
    const ffn = new MuMoEFFN(4, 5, 6, form, 3, 2, new Rng(4));
    const x = randn(new Rng(5), [3, 4]);
    const params = ffn.parameters();
    assert.equal(params.length, form === 'cp' ? 7 : 9, 'gate + 3 (CP) or 4 (Tucker) factors per layer');
    // the module's own parameters are inputs: gradcheck perturbs them in place and reads their .grad
    const report = gradcheck(`mumoe-${form}`, (xi: Tensor) => ffn.forward(xi).y, [x, ...params]);
    assert.ok(report.checked > 0);
  });
}

test('μMoE: thousands of experts cost like a few (parameters and FLOPs grow by E x rank only)', () => {
  const few = new MuMoELinear(4, 64, 256, 'cp', 64, 0, new Rng(7));
  const many = new MuMoELinear(4096, 64, 256, 'cp', 64, 0, new Rng(7));
  assert.equal(many.numParameters() - few.numParameters(), (4096 - 4) * 64);
  assert.equal(many.flopsPerToken() - few.flopsPerToken(), (4096 - 4) * 64);
  // versus 4096 materialised [64, 256] experts: 67M parameters
  assert.ok(many.numParameters() < (4096 * 64 * 256) / 100);
});

test('a model with μMoE FFNs trains from a config; bad options name the field', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const run = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_local_experts: 64, ffn_type: 'mumoe', ffn_options: { form: 'tucker', rank: 8, dFF: 32 } },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(run, [TEXT]);
  const model = s.model as MoETransformerLM;
  assert.ok(model.layers.every((l) => l.ffn_block instanceof MuMoEFFN && (l.ffn_block as MuMoEFFN).numExperts === 64));
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
  const base = { hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, num_local_experts: 4, ffn_type: 'mumoe' };
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { form: 'svd' } }), 0), /ffn_options.form must be one of cp, tucker/);
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { expertRank: 2 } }), 0), /ffn_options.expertRank applies to form "tucker" only/);
});
