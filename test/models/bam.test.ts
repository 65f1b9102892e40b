// Issue 17 "BAM": attention upcycled into a soft mixture of attention experts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { upcycleDense, upcycleAttention } from '../../src/models/upcycle.js';
import { buildAttention, BAMAttention } from '../../src/models/attention/index.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { noGrad, type Tensor } from '../../src/tensor/index.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const dense = { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32, intermediate_size: 16, num_local_experts: 0 };
const ids = Int32Array.from({ length: 20 }, (_, i) => (i * 31 + 7) % 256);
const run = (m: MoETransformerLM) => noGrad(() => m.forward(ids, 2, 10, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

test('BAM upcycling with identical attention experts computes the dense model, whatever the router weights', () => {
  const d = new MoETransformerLM(parseModelConfig(dense), 1).eval();
  const ref = run(d);
  const bam = upcycleAttention(d, 3).eval();
  assert.equal(bam.config.attention_type, 'bam');
  assert.ok(bam.layers[0].self_attn instanceof BAMAttention);
  assert.ok(maxDiff(run(bam), ref) < 1e-5, `${maxDiff(run(bam), ref)}`);
  // a trained-looking router: the copies' weights still sum to 1
  for (const l of bam.layers) (l.self_attn as BAMAttention).router.weight.data.set(new Rng(3).fillNormal(new Float32Array(3 * 16), 1));
  assert.ok(maxDiff(run(bam), ref) < 1e-5);
  // BAM upcycles FFN and attention together
  const both = upcycleAttention(upcycleDense(d, { numExperts: 4, topK: 2 }), 2).eval();
  assert.ok(maxDiff(run(both), ref) < 1e-5);
  assert.ok(both.numParameters() > d.numParameters());
  assert.throws(() => upcycleAttention(d, 0), /experts must be a positive integer, got 0/);
  assert.throws(() => upcycleAttention(bam, 2), /must be standard multi-head attention, got attention_type "bam"/);
  assert.throws(() => upcycleAttention(d, 2, [d]), /one source model per attention expert: 2 experts, 1 models/);
});

test("BAM from several dense models: expert e is model e's attention; y = sum_e g_e Attn_e; KV-cached decoding equals the full forward; gradients", () => {
  const a = new MoETransformerLM(parseModelConfig(dense), 1);
  const b = new MoETransformerLM(parseModelConfig(dense), 2);
  const m = upcycleAttention(a, 2, [a, b]);
  const s = m.stateDict();
  assert.deepEqual(s.get('layers.1.self_attn.experts.1.q_proj.weight')!.data, b.stateDict().get('layers.1.self_attn.q_proj.weight')!.data);
  assert.deepEqual(s.get('layers.1.self_attn.experts.0.o_proj.weight')!.data, a.stateDict().get('layers.1.self_attn.o_proj.weight')!.data);
  const att = m.layers[0].self_attn as BAMAttention;
  att.router.weight.data.set(new Rng(5).fillNormal(new Float32Array(2 * 16), 1));
  const x = randn(new Rng(6), [6, 16], false);
  noGrad(() => {
    const y = att.forward(x, 1, 6).y.data;
    const g = T.softmax(att.router.forward(x), -1).data;
    const y0 = att.experts[0].forward(x, 1, 6).y.data;
    const y1 = att.experts[1].forward(x, 1, 6).y.data;
    const want = y.map((_, i) => g[Math.floor(i / 16) * 2] * y0[i] + g[Math.floor(i / 16) * 2 + 1] * y1[i]);
    assertClose(y, want, 1e-6, 1e-5, 'soft mixture');
    let k: Tensor | undefined;
    let v: Tensor | undefined;
    for (let t = 0; t < 6; t++) {
      const r = att.forward(T.slice(x, 0, t, t + 1), 1, 1, { k, v, offset: t });
      k = r.k;
      v = r.v;
      assertClose(r.y.data, y.subarray(t * 16, (t + 1) * 16), 1e-5, 1e-4, `position ${t}`);
    }
    assert.deepEqual(k!.shape, [1, 4, 6, 4]); // 2 experts x 2 key heads
  });
  const small = buildAttention(
    parseModelConfig({ ...dense, hidden_size: 8, num_attention_heads: 2, num_key_value_heads: 1, attention_type: 'bam', attention_options: { experts: 2 } }),
    new Rng(7),
    0,
  ) as BAMAttention;
  small.router.weight.data.set(new Rng(8).fillNormal(new Float32Array(16), 1));
  const r = gradcheck('bam', (xi) => small.forward(xi, 1, 3).y, [randn(new Rng(9), [3, 8]), small.router.weight, small.experts[1].q_proj.weight]);
  assert.ok(r.checked > 30);
});
