import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromPretrained } from '../../src/io/hf/pretrained.js';
import { readSafetensorsSync } from '../../src/io/safetensors.js';
import { globalSwitchLoss } from '../../src/moe/losses/switch-global.js';
import { switchLoss } from '../../src/moe/losses/switch.js';
import { softmaxTopK } from '../../src/moe/routers/common.js';
import { capacityMask } from '../../src/moe/dispatch/index.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { tensor, type Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import type { SparseRouting } from '../../src/moe/types.js';
import { gradcheck } from '../helpers/gradcheck.js';

const FIX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'hf');

test('all-layers Switch loss equals transformers load_balancing_loss_func on the fixtures', () => {
  for (const name of ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'granitemoe', 'gpt_oss']) {
    const { model, config } = fromPretrained(path.join(FIX, name));
    assert.equal(config.aux_loss_normalization, 'all-layers-tokens');
    const ref = readSafetensorsSync(path.join(FIX, name, 'reference.safetensors')).tensors;
    const ids = Int32Array.from(ref.get('input_ids')!.data as BigInt64Array, Number);
    const res = model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
    for (const a of res.aux) assert.equal(a.aux.losses.switch, undefined, 'no per-layer switch loss');
    const got = res.losses.switch.item() / config.router_aux_loss_coef;
    const want = (ref.get('aux_loss')!.data as Float32Array)[0];
    assert.ok(Math.abs(got - want) < 1e-5 * Math.max(1, want), `${name}: ${got} vs ${want}`);
    const { auxLosses } = lmLoss(res, new Int32Array(ids.length));
    assert.ok(Math.abs(auxLosses.switch - res.losses.switch.item()) < 1e-7);
  }
});

test('all-layers Switch loss: uniform routing gives k, gradient matches finite differences, differs from per-layer by layers/k', () => {
  const E = 4;
  const k = 2;
  const L = 3;
  const Tn = 8;
  // uniform: every expert chosen equally often, probs all 1/E
  const uni = Array.from({ length: L }, () => {
    const expertIdx = Int32Array.from({ length: Tn * k }, (_, i) => i % E);
    const probs = tensor(new Float32Array(Tn * E).fill(1 / E), [Tn, E]);
    return {
      logits: probs,
      probs,
      routing: { kind: 'sparse', tokenIdx: new Int32Array(Tn * k), expertIdx, weights: tensor(new Float32Array(Tn * k), [Tn * k]) } as SparseRouting,
      losses: {},
      metrics: {},
    };
  });
  assert.ok(Math.abs(globalSwitchLoss(uni, E).item() - k) < 1e-6);
  const perLayer = uni.reduce((s, o) => s + switchLoss(o, { numExperts: E, tokens: Tn, topK: k }).item(), 0);
  assert.ok(Math.abs(perLayer - L) < 1e-6, 'per-layer moe-ts form sums to L: the two differ by L / k');
  const rng = new Rng(5);
  const logits = Array.from({ length: L }, () => tensor(rng.fillNormal(new Float32Array(Tn * E), 1), [Tn, E], true));
  const fn = (...ls: Tensor[]): Tensor =>
    globalSwitchLoss(
      ls.map((l) => {
        const { probs, routing } = softmaxTopK(l, k, true);
        return { logits: l, probs, routing, losses: {}, metrics: {} };
      }),
      E,
    );
  const rep = gradcheck('globalSwitchLoss', fn, logits);
  assert.ok(rep.worstRatio <= 1, JSON.stringify(rep).slice(0, 300));
});

test('capacity drop order: sequence keeps first choices, then earliest tokens; weight keeps the highest weights', () => {
  // T=4, k=2, E=2, capacity 3; token-major listing: assignment t*2+j is token t's j-th choice
  const tokenIdx = Int32Array.from([0, 0, 1, 1, 2, 2, 3, 3]);
  const expertIdx = Int32Array.from([1, 0, 0, 1, 0, 1, 0, 1]);
  const w = [0.6, 0.4, 0.9, 0.1, 0.55, 0.45, 0.8, 0.2];
  const routing: SparseRouting = { kind: 'sparse', tokenIdx, expertIdx, weights: tensor(w, [8]) };
  // expert 0: first choices tok1, tok2, tok3 fill it; tok0's second choice drops
  // expert 1: first choice tok0, then second choices tok1, tok2; tok3's drops
  assert.deepEqual(Array.from(capacityMask(routing, 2, 3, 'sequence')), [1, 0, 1, 1, 1, 1, 1, 0]);
  // by weight: expert 0 keeps 0.9, 0.8, 0.55 (drops tok0's 0.4); expert 1 keeps 0.6, 0.45, 0.2 (drops 0.1)
  assert.deepEqual(Array.from(capacityMask(routing, 2, 3, 'weight')), [1, 0, 1, 0, 1, 1, 1, 1]);
  assert.throws(() => capacityMask(routing, 2, 3, 'random' as never), /dropOrder must be one of weight, sequence/);
  const m = new MoETransformerLM(
    parseModelConfig({
      vocab_size: 16,
      hidden_size: 8,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: 4,
      moe_intermediate_size: 8,
      dispatch: 'capacity',
      capacity_factor: 0.5,
      capacity_drop_order: 'sequence',
    }),
    1,
  );
  const res = m.forward(Int32Array.from([1, 2, 3, 4, 5, 6]), 1, 6, { ctx: { training: true, step: 0, rng: new Rng(0) } });
  assert.ok(res.aux[0].aux.metrics.droppedFraction > 0);
});

test('router jitter (Mixtral): training multiplies the MoE input, seen by router and experts alike; eval is untouched', () => {
  const c = parseModelConfig({ vocab_size: 16, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 4, moe_intermediate_size: 8, router_jitter_noise: 0.3 });
  const m = new MoETransformerLM(c, 2);
  const layer = m.layers[0];
  const n = tensor(new Rng(9).fillNormal(new Float32Array(5 * 8), 1), [5, 8]);
  const evalCtx = { training: false, step: 0, rng: new Rng(1) };
  assert.deepEqual(layer.ffn(n, evalCtx, 0.3).y.data, layer.block_sparse_moe!.forward(n, { ...evalCtx, rng: new Rng(1) }).y.data);
  const got = layer.ffn(n, { training: true, step: 0, rng: new Rng(3) }, 0.3).y.data;
  const noise = new Rng(3).fillUniform(new Float32Array(n.size), 0.7, 1.3);
  const want = layer.block_sparse_moe!.forward(T.maskMul(n, noise), { training: true, step: 0, rng: new Rng(99) }).y.data;
  assert.deepEqual(got, want);
  assert.notDeepEqual(got, layer.block_sparse_moe!.forward(n, { training: true, step: 0, rng: new Rng(3) }).y.data);
});

test('group-limited (DeepSeek-V3) router: bias selects but never weighs, groups limit the choice, routed scaling', async () => {
  const { GroupLimitedRouter } = await import('../../src/moe/routers/group-limited.js');
  const { routerRegistry } = await import('../../src/moe/routers/index.js');
  assert.ok(routerRegistry.has('group-limited'));
  const r = new GroupLimitedRouter(
    { type: 'group-limited', dModel: 2, numExperts: 4, topK: 2, variant: 'v3', nGroup: 2, topkGroup: 1, normalize: true, routedScaling: 2, biasUpdateRate: 0 },
    new Rng(0),
  );
  // logits = x W^T with W = identity-like rows, so sigmoid scores are easy to read
  r.gate.weight.data.set([1, 0, 0, 1, 0.5, 0, 0, 0.5]);
  const x = tensor([2, 1], [1, 2]);
  const s = [2, 1, 1, 0.5].map((v) => 1 / (1 + Math.exp(-v)));
  let out = r.route(x, { training: false, step: 0, rng: new Rng(0) });
  // group 0 = experts {0, 1} (sum 1.61) beats group 1 = {2, 3}: choose 0 and 1
  assert.deepEqual(Array.from((out.routing as SparseRouting).expertIdx), [0, 1]);
  const w = Array.from((out.routing as SparseRouting).weights.data);
  assert.ok(Math.abs(w[0] - (2 * s[0]) / (s[0] + s[1])) < 1e-6 && Math.abs(w[1] - (2 * s[1]) / (s[0] + s[1])) < 1e-6);
  // a bias on experts 2, 3 moves the selection to group 1; the weights stay the plain scores
  r.e_score_correction_bias!.data.set([0, 0, 1, 1]);
  out = r.route(x, { training: false, step: 0, rng: new Rng(0) });
  assert.deepEqual(Array.from((out.routing as SparseRouting).expertIdx), [2, 3]);
  const w2 = Array.from((out.routing as SparseRouting).weights.data);
  assert.ok(Math.abs(w2[0] - (2 * s[2]) / (s[2] + s[3])) < 1e-6, String(w2));
  assert.throws(() => routerRegistry.get('group-limited')({ type: 'group-limited', dModel: 2, numExperts: 4, topK: 2, nGroup: 3 }, new Rng(0)), /nGroup/);
});

test('windowed attention with sinks: no window and no sink equals causal attention; gradients match finite differences', () => {
  const rng = new Rng(21);
  const mk = (shape: number[]) => tensor(rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), 1), shape, true);
  const q = mk([1, 2, 5, 4]);
  const k = mk([1, 2, 5, 4]);
  const v = mk([1, 2, 5, 4]);
  const a = T.windowedAttention(q, k, v).data;
  const b = T.causalAttention(q, k, v).data;
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-5);
  const sinks = mk([2]);
  const rep = gradcheck('windowedAttention', (qq, kk, vv, ss) => T.windowedAttention(qq, kk, vv, { window: 2, sinks: ss }), [q, k, v, sinks]);
  assert.ok(rep.worstRatio <= 1, JSON.stringify(rep).slice(0, 300));
  // window 1: each query sees only itself (output = its own value when there is no sink)
  const w1 = T.windowedAttention(q, k, v, { window: 1 }).data;
  for (let i = 0; i < w1.length; i++) assert.ok(Math.abs(w1[i] - v.data[i]) < 1e-6);
});

test('clamped SwiGLU (GPT-OSS) activation: value and gradient', async () => {
  const { clampedSwiglu } = await import('../../src/moe/experts/clamped-swiglu.js');
  const g = tensor([-1, 0.5, 9, 2], [1, 4], true);
  const u = tensor([0.3, -8, 1, 7.5], [1, 4], true);
  const y = clampedSwiglu(g, u, 1.702, 7).data;
  const ref = (gg: number, uu: number) => {
    const gc = Math.min(gg, 7);
    const uc = Math.min(Math.max(uu, -7), 7);
    return ((uc + 1) * gc) / (1 + Math.exp(-1.702 * gc));
  };
  [-1, 0.5, 9, 2].forEach((gg, i) => assert.ok(Math.abs(y[i] - ref(gg, [0.3, -8, 1, 7.5][i])) < 1e-5));
  const rep = gradcheck('clampedSwiglu', (a, b) => clampedSwiglu(a, b, 1.702, 7), [tensor([-1, 0.5, 3, 2], [1, 4], true), tensor([0.3, -2, 1, 5], [1, 4], true)]);
  assert.ok(rep.worstRatio <= 1, JSON.stringify(rep).slice(0, 300));
});
