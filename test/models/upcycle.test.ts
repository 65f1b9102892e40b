// Issue 17 item 1: building an MoE from dense models (sparse upcycling, FFN splitting, Branch-Train-MiX).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { upcycleDense, splitDense, mixDenseModels, clusterNeurons } from '../../src/models/upcycle.js';
import type { FFNExperts, SharedExperts } from '../../src/moe/experts/ffn.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad, tensor } from '../../src/tensor/index.js';

const base = { vocab_size: 64, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, intermediate_size: 24, num_local_experts: 0 };

function dense(over: object = {}, seed = 1): MoETransformerLM {
  return new MoETransformerLM(parseModelConfig({ ...base, ...over }), seed).eval();
}

function ids(n: number, seed: number, V = 64): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

function logits(m: MoETransformerLM, x: Int32Array, B = 2): Float32Array {
  return noGrad(() => m.forward(x, B, x.length / B, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('upcycle without noise: identical experts and renormalised top-k give the dense model outputs (swiglu and gelu)', () => {
  for (const act of ['silu', 'gelu'] as const) {
    const d = dense({ hidden_act: act });
    const x = ids(24, 3);
    for (const [E, k] of [
      [4, 2],
      [3, 1],
    ]) {
      const m = upcycleDense(d, { numExperts: E, topK: k, seed: 7 }).eval();
      assert.equal(m.config.num_local_experts, E);
      assert.equal(m.moeLayers().length, base.num_hidden_layers);
      const bank = m.moeLayers()[0].experts as FFNExperts;
      assert.equal(bank.activation, act === 'silu' ? 'swiglu' : 'gelu');
      const diff = maxDiff(logits(m, x), logits(d, x));
      assert.ok(diff < 1e-4, `${act} E=${E} k=${k}: max |logit diff| ${diff}`);
    }
  }
});

test('upcycle with noise: experts differ from each other and from the dense FFN, deterministically under a seed', () => {
  const d = dense();
  const a = upcycleDense(d, { numExperts: 4, noise: 0.1, seed: 5 });
  const b = upcycleDense(d, { numExperts: 4, noise: 0.1, seed: 5 });
  const c = upcycleDense(d, { numExperts: 4, noise: 0.1, seed: 6 });
  const wa = (a.moeLayers()[0].experts as FFNExperts).w1.data;
  assert.deepEqual(wa, (b.moeLayers()[0].experts as FFNExperts).w1.data);
  assert.ok(maxDiff(wa, (c.moeLayers()[0].experts as FFNExperts).w1.data) > 0);
  const per = wa.length / 4;
  assert.ok(maxDiff(wa.subarray(0, per), wa.subarray(per, 2 * per)) > 0, 'expert 0 and 1 differ');
  const x = ids(24, 4);
  assert.ok(maxDiff(logits(a, x), logits(d, x)) > 1e-5, 'noise changes the outputs');
});

test('upcycle rejects bad input with one line naming the field', () => {
  const d = dense();
  assert.throws(() => upcycleDense(d, { numExperts: 0 }), /upcycle: numExperts must be a positive integer, got 0/);
  assert.throws(() => upcycleDense(d, { numExperts: 2, topK: 3 }), /upcycle: topK must be an integer in \[1, numExperts=2\], got 3/);
  assert.throws(() => upcycleDense(d, { numExperts: 2, noise: -1 }), /noise must be a finite number >= 0/);
  const moe = new MoETransformerLM(parseModelConfig({ ...base, num_local_experts: 4, moe_intermediate_size: 8 }), 0);
  assert.throws(() => upcycleDense(moe, { numExperts: 2 }), /layer 0 is not a dense FFN layer/);
  assert.throws(() => splitDense(d, { numExperts: 5 }), /intermediate_size 24 must be divisible by numExperts \+ sharedExperts \(5\)/);
  assert.throws(() => splitDense(d, { numExperts: 4, method: 'clustered' }), /method clustered need calibration text/);
  assert.throws(() => splitDense(d, { numExperts: 4, method: 'clustered', calibration: [new Int32Array(40)] }), /calibration window of 40 tokens/);
  assert.throws(() => mixDenseModels([d]), /needs at least 2 dense models/);
  assert.throws(() => mixDenseModels([d, dense({ intermediate_size: 32 })]), /model 1 has a different config/);
});

/** The dense FFN of layer `li` on rows x, and shared + the sum of all routed experts of the split model on the same rows. */
function ffnVsExpertSum(d: MoETransformerLM, m: MoETransformerLM, li: number, x: Float32Array, rows: number): { dense: Float32Array; sum: Float64Array } {
  const D = base.hidden_size;
  const dy = noGrad(() => d.layers[li].mlp!.forward(tensor(x, [rows, D])).data);
  const layer = m.layers[li].block_sparse_moe!;
  const bank = layer.experts as FFNExperts;
  const sh = layer.shared as SharedExperts | null;
  const sum = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * D, (r + 1) * D);
    for (let e = 0; e < bank.numExperts; e++) bank.referenceForward(e, row).forEach((v, i) => (sum[r * D + i] += v));
    if (sh) sh.referenceForward(row).forEach((v, i) => (sum[r * D + i] += v));
  }
  return { dense: dy, sum };
}

test('FFN splitting partitions the neurons: shared + all routed experts compute exactly the dense FFN', () => {
  const d = dense();
  const calib = [ids(32, 8), ids(32, 9)];
  const x = new Rng(11).fillNormal(new Float32Array(5 * base.hidden_size));
  for (const o of [
    { numExperts: 4, method: 'random' as const },
    { numExperts: 3, sharedExperts: 1, method: 'clustered' as const, calibration: calib },
    { numExperts: 6, sharedExperts: 2, method: 'random' as const, calibration: calib },
  ]) {
    const { model, plan } = splitDense(d, { ...o, seed: 2 });
    const fe = base.intermediate_size / (o.numExperts + (o.sharedExperts ?? 0));
    assert.equal(model.config.moe_intermediate_size, fe);
    for (const [li, p] of plan.layers.entries()) {
      const all = [...p.experts.flat(), ...p.shared].sort((a, b) => a - b);
      assert.deepEqual(
        all,
        Array.from({ length: base.intermediate_size }, (_, i) => i),
        `layer ${li}: every neuron exactly once`,
      );
      const r = ffnVsExpertSum(d, model, li, x, 5);
      let m = 0;
      for (let i = 0; i < r.sum.length; i++) m = Math.max(m, Math.abs(r.sum[i] - r.dense[i]));
      assert.ok(m < 1e-5, `${JSON.stringify({ ...o, calibration: undefined })} layer ${li}: max diff ${m}`);
    }
  }
});

test('CMoE shared experts take the most active neurons; clustering groups neurons that fire together', () => {
  const d = dense({ intermediate_size: 32 });
  // neurons 0..7 get 8x larger input weights: on every token they are among the most active
  for (const l of d.layers) {
    const f = l.mlp!;
    for (const w of [f.gate_proj!.weight.data, f.up_proj.weight.data]) for (let i = 0; i < 8 * base.hidden_size; i++) w[i] *= 8;
  }
  const calib = [ids(32, 1), ids(32, 2), ids(32, 3)];
  const { plan } = splitDense(d, { numExperts: 3, sharedExperts: 1, method: 'clustered', calibration: calib, seed: 0 });
  for (const p of plan.layers) assert.deepEqual(p.shared, [0, 1, 2, 3, 4, 5, 6, 7]);

  // activation profiles: 4 groups of 6 neurons, each group a noisy copy of one profile
  const n = 40;
  const f = 24;
  const rng = new Rng(3);
  const proto = Array.from({ length: 4 }, () => rng.fillNormal(new Float32Array(n)));
  const a = new Float32Array(n * f);
  const truth = Array.from({ length: f }, () => 0);
  const order = Array.from({ length: f }, (_, i) => i).sort(() => rng.next() - 0.5);
  order.forEach((j, r) => {
    truth[j] = r % 4;
    for (let t = 0; t < n; t++) a[t * f + j] = proto[truth[j]][t] * 3 + 0.1 * rng.normal();
  });
  const groups = clusterNeurons(
    a,
    n,
    f,
    Array.from({ length: f }, (_, i) => i),
    4,
    new Rng(0),
  );
  assert.equal(groups.length, 4);
  for (const g of groups) {
    assert.equal(g.length, 6);
    assert.equal(new Set(g.map((j) => truth[j])).size, 1, `cluster ${g} mixes profiles`);
  }
});

test('Branch-Train-MiX: expert e is model e\u2019s FFN, other weights averaged; equal models give the dense outputs', () => {
  const ms = [dense({}, 1), dense({}, 2), dense({}, 3)];
  const moe = mixDenseModels(ms, { topK: 2, seed: 4 });
  const bank = moe.moeLayers()[1].experts as FFNExperts;
  const D = base.hidden_size;
  const f = base.intermediate_size;
  for (let e = 0; e < 3; e++) {
    const up = ms[e].layers[1].mlp!.up_proj.weight.data; // [f, d]
    for (let i = 0; i < D; i++) for (let j = 0; j < f; j++) assert.equal(bank.w3!.data[e * D * f + i * f + j], up[j * D + i]);
  }
  const qOf = (m: MoETransformerLM): Float32Array => m.stateDict().get('layers.0.self_attn.q_proj.weight')!.data;
  const q = qOf(moe);
  for (let i = 0; i < q.length; i++) assert.ok(Math.abs(q[i] - (qOf(ms[0])[i] + qOf(ms[1])[i] + qOf(ms[2])[i]) / 3) < 1e-6);
  const same = mixDenseModels([ms[0], dense({}, 1)], { topK: 1 }).eval();
  const x = ids(24, 5);
  assert.ok(maxDiff(logits(same, x), logits(ms[0], x)) < 1e-4);
});
