/**
 * MoEUT (Csordás et al. 2024): layers shared in groups, SwitchHead attention with a sigma-MoE FFN,
 * and the peri-layernorm. Parameters are shared (count and identity), outputs equal an unshared
 * model with tied weights, peri-layernorm routes on the normalised stream while values and
 * experts read the raw one, gradients of a shared weight (summed over its depths) match finite
 * differences, and a MoEUT model trains from its config and generates after loading.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { buildAttention } from '../../src/models/attention/index.js';
import { buildRouter } from '../../src/moe/routers/index.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { TrainSession } from '../../src/train/session.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const moeut = (extra: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({
    hidden_size: 8,
    num_hidden_layers: 4,
    num_attention_heads: 2,
    vocab_size: 16,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    router_type: 'sigma-moe',
    router_losses: { 'entropy-global': 0.01 },
    router_aux_loss_coef: 0,
    router_z_loss_coef: 0,
    attention_type: 'switchhead',
    attention_options: { numExperts: 3, topK: 2 },
    layer_groups: 2,
    norm_placement: 'peri',
    ...extra,
  });
const ctx = { ctx: { training: false, step: 0, rng: new Rng(0) } };

test('sigma-moe router: top-k of the sigmoid scores, weighted by the raw scores (not renormalised)', () => {
  const r = buildRouter({ type: 'sigma-moe', dModel: 6, numExperts: 5, topK: 2 }, new Rng(1)).router;
  const x = randn(new Rng(2), [4, 6], false);
  const out = noGrad(() => r.route(x, { training: false, step: 0, rng: new Rng(0) }));
  assert.equal(out.routing.kind, 'sparse');
  if (out.routing.kind !== 'sparse') return;
  const s = Array.from(out.logits.data, (v) => 1 / (1 + Math.exp(-v)));
  for (let t = 0; t < 4; t++) {
    const row = s.slice(t * 5, t * 5 + 5);
    const best = row.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0]);
    const got = [0, 1].map((j) => [out.routing.kind === 'sparse' ? out.routing.expertIdx[t * 2 + j] : -1, out.routing.kind === 'sparse' ? out.routing.weights.data[t * 2 + j] : 0]);
    assert.deepEqual(
      got.map((g) => g[0]),
      best.slice(0, 2).map((b) => b[1]),
    );
    assertClose(
      got.map((g) => g[1]),
      best.slice(0, 2).map((b) => b[0]),
      1e-6,
      1e-6,
      `token ${t} weights`,
    );
    assert.ok(Math.abs(got[0][1] + got[1][1] - 1) > 1e-3, 'weights are not renormalised');
  }
});

test('layer groups: G distinct layers hold the parameters, depth i runs layer i mod G; outputs equal an unshared model with tied weights', () => {
  const shared = new MoETransformerLM(moeut(), 3);
  assert.equal(shared.layers.length, 2);
  assert.equal(shared.layerAt(0), shared.layerAt(2));
  assert.equal(shared.layerAt(1), shared.layerAt(3));
  assert.notEqual(shared.layerAt(0), shared.layerAt(1));
  const unshared = new MoETransformerLM(moeut({ layer_groups: undefined }), 4);
  assert.equal(unshared.layers.length, 4);
  const perLayer = unshared.layers[0].numParameters();
  assert.equal(shared.numParameters(), unshared.numParameters() - 2 * perLayer, 'two layers of parameters fewer');
  assert.ok(!shared.namedParameters().some(([n]) => n.startsWith('layers.2.') || n.startsWith('layers.3.')));
  // tie: unshared layer i gets shared layer i mod 2's tensors
  const st = shared.stateDict();
  const tied = new Map(
    [...unshared.stateDict()].map(([n, t]) => {
      const m = /^layers\.(\d+)\.(.*)$/.exec(n);
      const src = m ? st.get(`layers.${Number(m[1]) % 2}.${m[2]}`)! : st.get(n)!;
      return [n, { data: src.data.slice(), shape: t.shape }];
    }),
  );
  unshared.loadStateDict(tied);
  const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 5 + 2) % 16);
  noGrad(() => assertClose(shared.forward(ids, 2, 6, ctx).logits.data, unshared.forward(ids, 2, 6, ctx).logits.data, 1e-6, 1e-5, 'shared vs tied'));
  // and a KV-cached decode over the repeated layers equals the full forward
  noGrad(() => {
    const full = shared.forward(ids.subarray(0, 6), 1, 6, ctx).logits.data;
    const cache = shared.emptyCache();
    for (let t = 0; t < 6; t++) assertClose(shared.forward(ids.subarray(t, t + 1), 1, 1, { ...ctx, cache }).logits.data, full.subarray(t * 16, (t + 1) * 16), 1e-5, 1e-4, `position ${t}`);
    assert.equal(cache.k.length, 4, 'one cache entry per depth');
  });
  assert.throws(() => parseModelConfig({ num_hidden_layers: 4, layer_groups: 3 }), /layer_groups: must divide num_hidden_layers \(4\), got 3/);
  assert.match(DecodeEngine.unsupported(shared) ?? '', /use --engine eager/);
});

test('peri-layernorm: queries, keys and routers read the normalised rows, values the raw ones (output linear in the value input)', () => {
  const c = moeut();
  for (const kind of ['standard', 'switchhead']) {
    const a = buildAttention({ ...c, attention_type: kind, attention_options: kind === 'standard' ? {} : c.attention_options }, new Rng(5), 0);
    const x = randn(new Rng(6), [6, 8], false);
    noGrad(() => {
      const n = T.rmsNorm(x, T.tensor(new Float32Array(8).fill(1), [8]));
      const y1 = a.forward(n, 1, 6, undefined, undefined, x).y.data;
      const y2 = a.forward(n, 1, 6, undefined, undefined, T.scale(x, 3)).y.data;
      assertClose(
        y2,
        Array.from(y1, (v) => 3 * v),
        1e-5,
        1e-4,
        `${kind}: values scale, routing and scores do not`,
      );
      const pre = a.forward(n, 1, 6).y.data;
      assert.ok(
        pre.some((v, i) => Math.abs(v - y1[i]) > 1e-4),
        `${kind}: the value input matters`,
      );
    });
  }
  assert.throws(() => new MoETransformerLM(moeut({ attention_type: 'moa', attention_options: {} }), 0), /norm_placement "peri" needs an attention kind that reads a separate value input/);
});

test('a weight shared across depths gets the sum of its gradients (finite differences)', () => {
  const m = new MoETransformerLM(moeut({ vocab_size: 8 }), 7);
  m.train();
  const ids = Int32Array.of(1, 5, 2, 7, 3);
  const targets = Int32Array.of(5, 2, 7, 3, 0);
  const loss = () => lmLoss(m.forward(ids, 1, 5, { ctx: { training: true, step: 0, rng: new Rng(0) } }), targets).loss;
  const l0 = m.layers[0];
  const sh = l0.self_attn as unknown as { q_proj: { weight: T.Tensor }; v_experts: T.Tensor };
  gradcheck('moeut shared', loss, [sh.q_proj.weight, sh.v_experts, l0.input_layernorm.weight, l0.block_sparse_moe!.experts.parameters()[0]], { eps: 2e-3 });
});

const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);

test('a MoEUT model trains from a config (loss falls), checkpoints and generates the same text after loading', () => {
  const model = { ...moeut({ vocab_size: 256, hidden_size: 16, moe_intermediate_size: 16 }) } as Record<string, unknown>;
  const cfg = parseRunConfig({ model, training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 }, data: { sources: ['shakespeare'] } });
  const s = new TrainSession(cfg, [TEXT]);
  const first = s.trainStep();
  assert.ok(first.aux['entropy-global'] !== undefined && first.aux['attention.value.entropy-global'] !== undefined, JSON.stringify(first.aux));
  let last = first.loss;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first.loss, `loss ${first.loss} -> ${last}`);
  const ck = checkpointFromBytes(s.checkpointBytes(), undefined, 'moeut.safetensors');
  const loaded = inferenceModelFromCheckpoint(ck, 'moeut.safetensors');
  const text = (mm: typeof loaded) => generate(mm.model, mm.tokenizer, 'First', { maxNewTokens: 10, temperature: 0 }).text;
  assert.equal(text(loaded), text({ ...loaded, model: s.model as MoETransformerLM }));
});
