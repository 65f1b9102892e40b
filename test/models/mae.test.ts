/**
 * MAE (A Mixture of h-1 Heads is Better than h Heads, 2020): the layer equals the gate-weighted sum
 * of its G experts, each expert equals standard attention with one head group's output columns
 * removed (rescaled by G/(G-1)), finite-difference gradients, KV-cached decoding, and the
 * block-coordinate schedule: gates fixed in expert blocks, everything else fixed in gate blocks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad, type Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { Attention, type MoETransformerLM } from '../../src/models/transformer.js';
import { buildAttention, MixtureOfHeadGroupsAttention } from '../../src/models/attention/index.js';
import { TrainSession } from '../../src/train/session.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const tiny = (extra: Record<string, unknown>): ModelConfig =>
  parseModelConfig({ hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 4, num_local_experts: 0, intermediate_size: 8, vocab_size: 16, attention_type: 'mae', ...extra });

for (const groups of [2, 4]) {
  test(`MAE (G=${groups}): the layer is the gate-weighted sum of its experts, each standard attention without one head group`, () => {
    const cfg = tiny({ attention_options: { groups } });
    const m = buildAttention(cfg, new Rng(1), 0) as MixtureOfHeadGroupsAttention;
    assert.ok(m instanceof MixtureOfHeadGroupsAttention);
    const [B, Tn, d, H] = [2, 3, 8, 4];
    const n = B * Tn;
    const x = randn(new Rng(2), [n, d], false);
    noGrad(() => {
      const y = m.forward(x, B, Tn).y.data;
      const g = m.gates(x).data;
      const mix = new Float64Array(n * d);
      // the standard attention with the same projections, group i's output columns zeroed
      const std = new Attention(parseModelConfig({ ...cfg, attention_type: 'standard' }), new Rng(3));
      for (const k of ['q_proj', 'k_proj', 'v_proj'] as const) std[k].weight.data.set(m[k].weight.data);
      const dh = m.headDim;
      const per = H / groups;
      for (let i = 0; i < groups; i++) {
        const wo = m.o_proj.weight.data.slice();
        // o_proj.weight [d, H*dh]: zero the columns of group i's heads, scale the rest by G/(G-1)
        for (let r = 0; r < d; r++) for (let c = 0; c < H * dh; c++) wo[r * H * dh + c] *= Math.floor(c / dh / per) === i ? 0 : groups / (groups - 1);
        std.o_proj.weight.data.set(wo);
        const fi = std.forward(x, B, Tn).y.data;
        assertClose(m.expert(x, B, Tn, i).data, fi, 1e-6, 1e-5, `expert ${i}`);
        for (let t = 0; t < n; t++) for (let c = 0; c < d; c++) mix[t * d + c] += g[t * groups + i] * fi[t * d + c];
      }
      assertClose(y, mix, 1e-6, 1e-5, 'mixture');
    });
  });
}

test('MAE: finite-difference gradients of the gate, every projection and the input', () => {
  const m = buildAttention(tiny({ hidden_size: 8, attention_options: { groups: 2 } }), new Rng(4), 0) as MixtureOfHeadGroupsAttention;
  const x = randn(new Rng(5), [4, 8]);
  const params = m.parameters();
  assert.ok(params.includes(m.gate.weight));
  gradcheck('mae', (xi: Tensor) => m.forward(xi, 1, 4).y, [x, ...params]);
});

test('MAE: KV-cached decoding equals the full forward', () => {
  const m = buildAttention(tiny({ num_key_value_heads: 2, attention_options: { groups: 2 } }), new Rng(6), 0);
  const x = randn(new Rng(7), [5, 8], false);
  noGrad(() => {
    const full = m.forward(x, 1, 5).y.data;
    let k: Tensor | undefined;
    let v: Tensor | undefined;
    for (let t = 0; t < 5; t++) {
      const r = m.forward(T.slice(x, 0, t, t + 1), 1, 1, { k, v, offset: t });
      k = r.k;
      v = r.v;
      assertClose(r.y.data, full.subarray(t * 8, (t + 1) * 8), 1e-5, 1e-4, `position ${t}`);
    }
  });
});

test('MAE config errors name the field', () => {
  assert.throws(() => buildAttention(tiny({ attention_options: { groups: 3 } }), new Rng(0), 0), /attention_options\.groups must divide num_attention_heads \(4\), got 3/);
  assert.throws(() => buildAttention(tiny({ attention_options: { groups: 1 } }), new Rng(0), 0), /attention_options\.groups must be at least 2/);
  assert.throws(() => buildAttention(tiny({ qk_norm: 'head' }), new Rng(0), 0), /"mae" does not support qk_norm/);
});

test('MAE block coordinate descent: expert blocks keep the gates fixed, gate blocks keep everything else fixed; the model trains', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const run = parseRunConfig({
    model: {
      hidden_size: 16,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_local_experts: 4,
      moe_intermediate_size: 16,
      attention_type: 'mae',
      attention_options: { groups: 2, alternateEvery: 2 },
    },
    training: { steps: 16, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(run, [TEXT]);
  const model = s.model as MoETransformerLM;
  const gates = new Set(model.layers.map((l) => (l.self_attn as MixtureOfHeadGroupsAttention).gate.weight));
  const snapshot = () => new Map(model.parameters().map((p) => [p, p.data.slice()]));
  const changed = (before: Map<unknown, Float32Array>) => model.parameters().filter((p) => p.data.some((v, i) => v !== before.get(p)![i]));
  const losses: number[] = [];
  for (let step = 0; step < 16; step++) {
    const before = snapshot();
    losses.push(s.trainStep().loss);
    const moved = changed(before);
    const expertBlock = Math.floor(step / 2) % 2 === 0;
    if (expertBlock) {
      assert.ok(
        moved.every((p) => !gates.has(p)),
        `step ${step}: gates fixed`,
      );
      assert.ok(moved.length >= model.parameters().length - gates.size - 2, `step ${step}: the rest trains (${moved.length} moved)`);
    } else assert.deepEqual(new Set(moved), gates, `step ${step}: only the gates move`);
  }
  assert.ok(losses[15] < losses[0], `loss ${losses[0]} -> ${losses[15]}`);
});
