/** MPOE experts (Gao et al. 2022): MPO-factored expert weights sharing a central core. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { expertRegistry, MPOExperts, mpoShape } from '../../src/moe/experts/index.js';
import { parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { randn } from '../helpers/gradcheck.js';

const bank = (extra: Record<string, unknown> = {}) => expertRegistry.get('mpo')({ numExperts: 3, dModel: 8, dFF: 12, ...extra }, new Rng(1)) as MPOExperts;

test('default MPO shapes are balanced with the largest factor in the central core', () => {
  assert.deepEqual(mpoShape(64), [4, 4, 4]);
  assert.deepEqual(mpoShape(12), [2, 3, 2]);
  assert.deepEqual(mpoShape(7), [1, 7, 1]);
  assert.throws(() => bank({ dShape: [2, 2, 3] }), /experts "mpo": dShape must multiply to dModel \(8\)/);
});

test('the central core is shared: it changes every expert; an auxiliary core changes only its own expert', () => {
  const b = bank();
  const x = randn(new Rng(2), [6, 8], false);
  const sizes = Int32Array.from([2, 2, 2]);
  const run = () => noGrad(() => Array.from(b.forwardGrouped(x, sizes).data));
  const per = (y: number[]) => [0, 1, 2].map((e) => y.slice(e * 16, e * 16 + 16));
  const base = per(run());
  b.w1_a.data.fill(0.5, 0, b.w1_a.size / 3); // expert 0's first auxiliary core
  const afterAux = per(run());
  assert.notDeepEqual(afterAux[0], base[0]);
  assert.deepEqual(afterAux[1], base[1]);
  assert.deepEqual(afterAux[2], base[2]);
  b.w1_c.data[0] += 1;
  const afterCentral = per(run());
  for (let e = 0; e < 3; e++) assert.notDeepEqual(afterCentral[e], afterAux[e], `expert ${e} reads the central core`);
  // dense weights from the cores match the float64 contraction
  const { w1 } = noGrad(() => b.materialize());
  const r = b.bondDim;
  let worst = 0;
  for (let i = 0; i < 8; i++)
    for (let j = 0; j < 12; j++)
      worst = Math.max(worst, Math.abs(w1.data[(2 * 8 + i) * 12 + j] - (b as unknown as { mats: { entry: (e: number, r: number, i: number, j: number) => number }[] }).mats[0].entry(2, r, i, j)));
  assert.ok(worst < 1e-6, `materialised vs contraction ${worst}`);
});

test('parameters: one central core per projection plus small per-expert cores, far fewer than dense experts at many experts', () => {
  const E = 32;
  const b = expertRegistry.get('mpo')({ numExperts: E, dModel: 64, dFF: 256, bondDim: 4 }, new Rng(3));
  const mpo = b.parameters().reduce((s, p) => s + p.size, 0);
  const dense = E * 3 * 64 * 256;
  // d = 4x4x4, f = 4x8x8 (mpoShape(256)); per projection central r^2*4*8, per expert r*(4*4 + 4*8)
  assert.deepEqual(mpoShape(256), [4, 8, 8]);
  assert.equal(mpo, 3 * (16 * 4 * 8 + E * 4 * 48));
  assert.ok(mpo * 20 < dense, `${mpo} vs ${dense}`);
});

test('a model with MPO experts trains from a config', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const cfg = parseRunConfig({
    model: {
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 16,
      expert_type: 'mpo',
      expert_options: { bondDim: 2 },
    },
    training: { steps: 10, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
});
