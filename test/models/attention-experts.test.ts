/**
 * Attention experts: the attention-kind registry, MoA (Zhang et al. 2022) and MoH (Jin et al.
 * 2024). Each: its defining property against an independent dense computation, finite-difference
 * gradients on tiny sizes, KV-cached decoding equal to the full forward, and a model that trains,
 * checkpoints and generates with the kind set in its config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { attentionRegistry, buildAttention, MixtureOfAttentionHeads, MixtureOfHeadAttention, SwitchHeadAttention, evalContext } from '../../src/models/attention/index.js';
import { repeatHeads } from '../../src/models/mla.js';
import { TrainSession } from '../../src/train/session.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const tiny = (extra: Record<string, unknown>): ModelConfig =>
  parseModelConfig({ hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 4, num_local_experts: 0, intermediate_size: 8, vocab_size: 16, ...extra });

test('attention kinds are registered with a paper, and the model config selects them by name with clear errors', () => {
  for (const k of ['standard', 'mla', 'moa', 'moh', 'switchhead']) assert.ok(attentionRegistry.has(k), k);
  for (const s of attentionRegistry.specs()) assert.ok(s.paper, s.name);
  assert.throws(() => buildAttention(tiny({ attention_type: 'nope' }), new Rng(0), 0), /attention_type must be one of .*moa.*standard.*got "nope"/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'moa', attention_options: { topK: 9, numExperts: 4 } }), new Rng(0), 0), /attention_options\.topK must be at most numExperts \(4\)/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'moa', attention_options: { topk: 2 } }), new Rng(0), 0), /unknown attention_options\.topk/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'moh', attention_options: { sharedHeads: 4 } }), new Rng(0), 0), /sharedHeads must leave at least one routed head/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'moh', qk_norm: 'head' }), new Rng(0), 0), /"moh" does not support qk_norm/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'moa', attention_options: { router: { type: 'soft' } } }), new Rng(0), 0), /must be a sparse router/);
  assert.throws(() => buildAttention(tiny({ attention_type: 'mla' }), new Rng(0), 0), /"mla" needs kv_lora_rank/);
});

/** MoA computed densely: every expert head on every token, then y_t = sum_e g_{t,e} y_e[t] with g from the routing record. */
function moaDense(m: MixtureOfAttentionHeads, x: Tensor, B: number, Tn: number): Float32Array {
  return noGrad(() => {
    const n = B * Tn;
    const E = m.numExperts;
    const dh = m.headDim;
    const d = x.shape[1];
    const routing = m.router.route(x, evalContext()).routing;
    assert.equal(routing.kind, 'sparse');
    if (routing.kind !== 'sparse') return new Float32Array();
    const gate = new Float64Array(n * E);
    for (let a = 0; a < routing.tokenIdx.length; a++) gate[routing.tokenIdx[a] * E + routing.expertIdx[a]] += routing.weights.data[a];
    const rope = { offset: 0, theta: m.cfg.rope_theta };
    const k = T.splitHeads(m.k_proj.forward(x), B, Tn, 1, rope);
    const v = T.splitHeads(m.v_proj.forward(x), B, Tn, 1);
    const y = new Float32Array(n * d);
    for (let e = 0; e < E; e++) {
      const wq = new Tensor(m.q_experts.data.slice(e * d * dh, (e + 1) * d * dh), [d, dh]);
      const wo = new Tensor(m.o_experts.data.slice(e * dh * d, (e + 1) * dh * d), [dh, d]);
      const q = T.splitHeads(T.matmul(x, wq), B, Tn, 1, rope);
      const ye = T.matmul(T.mergeHeads(T.causalAttention(q, k, v)), wo).data;
      for (let t = 0; t < n; t++) for (let j = 0; j < d; j++) y[t * d + j] += gate[t * E + e] * ye[t * d + j];
    }
    return y;
  });
}

test('MoA: the sparse grouped path equals the gate-weighted sum of every expert head computed densely', () => {
  const cfg = tiny({ attention_type: 'moa', attention_options: { numExperts: 6, topK: 2, headDim: 4 } });
  const m = buildAttention(cfg, new Rng(3), 0) as MixtureOfAttentionHeads;
  assert.ok(m instanceof MixtureOfAttentionHeads);
  const B = 2;
  const Tn = 5;
  const x = randn(new Rng(4), [B * Tn, 8], false);
  const fast = noGrad(() => m.forward(x, B, Tn).y.data);
  assertClose(fast, moaDense(m, x, B, Tn), 1e-5, 1e-4, 'MoA output');
  // k heads of E: a token's output changes when an unchosen head's projections change only through the router (not at all here)
  const routing = noGrad(() => m.router.route(x, evalContext()).routing);
  if (routing.kind !== 'sparse') throw new Error('sparse routing expected');
  const used = new Set(routing.expertIdx);
  const unused = [...Array(6).keys()].find((e) => !used.has(e));
  if (unused !== undefined) {
    const off = unused * 8 * 4;
    m.q_experts.data.fill(7, off, off + 32);
    assertClose(
      noGrad(() => m.forward(x, B, Tn).y.data),
      fast,
      0,
      0,
      'output after changing an unchosen head',
    );
  }
});

test('MoA: gradients of the expert projections, shared keys/values, router and input match finite differences', () => {
  const cfg = tiny({ attention_type: 'moa', attention_options: { numExperts: 4, topK: 2, headDim: 2 }, hidden_size: 4, num_attention_heads: 2 });
  const m = buildAttention(cfg, new Rng(5), 0) as MixtureOfAttentionHeads;
  for (const p of m.parameters()) p.data.forEach((_, i, a) => (a[i] *= 8)); // unit-scale weights so gradients are well above float32 noise
  const x = randn(new Rng(6), [6, 4]);
  const params = [m.q_experts, m.o_experts, m.k_proj.weight, m.v_proj.weight, ...m.router.parameters()];
  const r = gradcheck('moa', (xi) => m.forward(xi, 2, 3).y, [x, ...params]);
  assert.ok(r.checked > 60);
});

test('MoA: decoding one token at a time through the KV cache equals the full causal forward', () => {
  const cfg = tiny({ attention_type: 'moa', attention_options: { numExperts: 5, topK: 3 } });
  const m = buildAttention(cfg, new Rng(8), 0);
  const Tn = 6;
  const x = randn(new Rng(9), [Tn, 8], false);
  noGrad(() => {
    const full = m.forward(x, 1, Tn).y.data;
    let k: Tensor | undefined;
    let v: Tensor | undefined;
    for (let t = 0; t < Tn; t++) {
      const r = m.forward(T.slice(x, 0, t, t + 1), 1, 1, { k, v, offset: t });
      k = r.k;
      v = r.v;
      assertClose(r.y.data, full.subarray(t * 8, (t + 1) * 8), 1e-5, 1e-4, `position ${t}`);
    }
    assert.deepEqual(k!.shape, [1, 1, Tn, 2]); // one shared key head
  });
});

test('MoH: shared heads always on, exactly k routed heads per token, and y = sum_i g_i H_i W_o^i', () => {
  const cfg = tiny({ attention_type: 'moh', attention_options: { sharedHeads: 1, topK: 2 } });
  const m = buildAttention(cfg, new Rng(11), 0) as MixtureOfHeadAttention;
  assert.ok(m instanceof MixtureOfHeadAttention);
  const B = 2;
  const Tn = 4;
  const n = B * Tn;
  const x = randn(new Rng(12), [n, 8], false);
  noGrad(() => {
    const { gates } = m.gates(x);
    const mix = T.softmax(m.mix_router!.forward(x), -1).data;
    for (let t = 0; t < n; t++) {
      const g = gates.data.subarray(t * 4, t * 4 + 4);
      assert.ok(Math.abs(g[0] - mix[t * 2]) < 1e-6, `token ${t}: the one shared head carries weight a1`);
      assert.equal([...g.subarray(1)].filter((v) => v > 0).length, 2, `token ${t}: two routed heads`);
    }
    // independent form: per head i, run all heads and keep only head i's rows of o_proj
    const dh = 2;
    const H = 4;
    const q = T.splitHeads(m.q_proj.forward(x), B, Tn, H, { offset: 0, theta: cfg.rope_theta });
    const k = T.splitHeads(m.k_proj.forward(x), B, Tn, H, { offset: 0, theta: cfg.rope_theta });
    const v = T.splitHeads(m.v_proj.forward(x), B, Tn, H);
    const heads = T.mergeHeads(T.causalAttention(q, repeatHeads(k, H), repeatHeads(v, H))).data; // [n, H*dh]
    const W = m.o_proj.weight.data; // [d, H*dh]
    const want = new Float64Array(n * 8);
    for (let t = 0; t < n; t++)
      for (let i = 0; i < H; i++)
        for (let o = 0; o < 8; o++) {
          let s = 0;
          for (let c = 0; c < dh; c++) s += heads[t * H * dh + i * dh + c] * W[o * H * dh + i * dh + c];
          want[t * 8 + o] += gates.data[t * H + i] * s;
        }
    assertClose(m.forward(x, B, Tn).y.data, want, 1e-6, 1e-4, 'MoH output');
  });
});

test('MoH: gradients through heads and all three routers match finite differences', () => {
  const cfg = tiny({ attention_type: 'moh', attention_options: { sharedHeads: 1, topK: 1 }, hidden_size: 6, num_attention_heads: 3 });
  const m = buildAttention(cfg, new Rng(13), 0) as MixtureOfHeadAttention;
  for (const p of m.parameters()) p.data.forEach((_, i, a) => (a[i] *= 10));
  const x = randn(new Rng(14), [4, 6]);
  gradcheck('moh', (xi) => m.forward(xi, 1, 4).y, [x, m.q_proj.weight, m.v_proj.weight, m.o_proj.weight, m.head_router.weight, m.shared_router!.weight, m.mix_router!.weight]);
});

test('MoH: KV-cached decoding equals the full forward', () => {
  const m = buildAttention(tiny({ attention_type: 'moh', num_key_value_heads: 2, attention_options: { sharedHeads: 2, topK: 1 } }), new Rng(15), 0);
  const x = randn(new Rng(16), [5, 8], false);
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

const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);

for (const [kind, options] of [
  ['moa', { numExperts: 6, topK: 2 }],
  ['moh', { sharedHeads: 1, topK: 2 }],
  ['switchhead', { numExperts: 4, topK: 2 }],
] as const) {
  test(`a ${kind} model (with MoE FFNs) trains (loss falls, its head-balancing loss in the total), checkpoints and generates the same text after loading`, () => {
    const cfg = parseRunConfig({
      model: {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_local_experts: 4,
        num_experts_per_tok: 2,
        moe_intermediate_size: 16,
        attention_type: kind,
        attention_options: options,
      },
      training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
      data: { sources: ['shakespeare'] },
    });
    const s = new TrainSession(cfg, [TEXT]);
    const model = s.model as MoETransformerLM;
    const ids = Int32Array.from({ length: 32 }, (_, i) => TEXT.charCodeAt(i) % 256);
    const res = model.forward(ids, 2, 16, { ctx: { training: false, step: 0, rng: new Rng(0) } });
    const { auxLosses } = lmLoss(res, ids);
    const balance = kind === 'switchhead' ? 'attention.value.entropy-global' : 'attention.switch';
    assert.ok(Number.isFinite(auxLosses[balance]) && auxLosses[balance] !== 0, `attention.switch in the loss, got ${JSON.stringify(auxLosses)}`);
    const first = s.trainStep().loss;
    let last = first;
    for (let i = 0; i < 11; i++) last = s.trainStep().loss;
    assert.ok(last < first, `loss ${first} -> ${last}`);
    const ck = checkpointFromBytes(s.checkpointBytes(), undefined, `${kind}.safetensors`);
    assert.deepEqual(ck.state.config.model.attention_options, options);
    const loaded = inferenceModelFromCheckpoint(ck, `${kind}.safetensors`);
    const text = (m: typeof loaded) => generate(m.model, m.tokenizer, 'First', { maxNewTokens: 10, temperature: 0 }).text;
    assert.equal(text(loaded), text({ ...loaded, model: s.model }));
  });
}

/** Dense top-k gates [n, H, E] of sigmoid(x W): the chosen experts' scores, 0 elsewhere. */
function denseGates(scores: Float32Array, n: number, H: number, E: number, k: number): Float64Array {
  const g = new Float64Array(n * H * E);
  for (let r = 0; r < n * H; r++) {
    const row = Array.from(scores.subarray(r * E, r * E + E));
    const order = row.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0]);
    for (let i = 0; i < k; i++) g[r * E + order[i][1]] = order[i][0];
  }
  return g;
}

test('SwitchHead: value and output mixtures equal the dense gate-weighted sums over every (head, expert) projection', () => {
  const cfg = tiny({ attention_type: 'switchhead', num_attention_heads: 2, attention_options: { numExperts: 3, topK: 2 } });
  const m = buildAttention(cfg, new Rng(21), 0) as SwitchHeadAttention;
  assert.ok(m instanceof SwitchHeadAttention);
  const B = 2;
  const Tn = 4;
  const n = B * Tn;
  const [H, E, dh, d] = [2, 3, 4, 8];
  const x = randn(new Rng(22), [n, d], false);
  noGrad(() => {
    const gv = denseGates(T.sigmoid(m.v_router.forward(x)).data, n, H, E, 2);
    const go = denseGates(T.sigmoid(m.o_router.forward(x)).data, n, H, E, 2);
    const V = m.v_experts.data;
    const O = m.o_experts.data;
    const v = new Float32Array(n * H * dh); // [n, H*dh]
    for (let t = 0; t < n; t++)
      for (let h = 0; h < H; h++)
        for (let e = 0; e < E; e++)
          for (let c = 0; c < dh; c++) {
            let s = 0;
            for (let i = 0; i < d; i++) s += x.data[t * d + i] * V[((h * E + e) * d + i) * dh + c];
            v[t * H * dh + h * dh + c] += gv[(t * H + h) * E + e] * s;
          }
    const rope = { offset: 0, theta: cfg.rope_theta };
    const q = T.splitHeads(m.q_proj.forward(x), B, Tn, H, rope);
    const k = T.splitHeads(m.k_proj.forward(x), B, Tn, H, rope);
    const att = T.mergeHeads(T.causalAttention(q, k, T.splitHeads(new Tensor(v, [n, H * dh]), B, Tn, H))).data;
    const want = new Float64Array(n * d);
    for (let t = 0; t < n; t++)
      for (let h = 0; h < H; h++)
        for (let e = 0; e < E; e++)
          for (let j = 0; j < d; j++) {
            let s = 0;
            for (let c = 0; c < dh; c++) s += att[t * H * dh + h * dh + c] * O[((h * E + e) * dh + c) * d + j];
            want[t * d + j] += go[(t * H + h) * E + e] * s;
          }
    assertClose(m.forward(x, B, Tn).y.data, want, 1e-6, 1e-4, 'SwitchHead output');
  });
});

test('SwitchHead: gradients of q/k, both expert banks, both routers and the input match finite differences', () => {
  const cfg = tiny({ attention_type: 'switchhead', hidden_size: 4, num_attention_heads: 2, attention_options: { numExperts: 3, topK: 1, headDim: 2 } });
  // a seed whose top-1 selections are not within eps of a tie (finite differences are undefined across a switch)
  const m = buildAttention(cfg, new Rng(30), 0) as SwitchHeadAttention;
  for (const p of m.parameters()) p.data.forEach((_, i, a) => (a[i] *= 10));
  const x = randn(new Rng(24), [5, 4]);
  gradcheck('switchhead', (xi) => m.forward(xi, 1, 5).y, [x, m.q_proj.weight, m.k_proj.weight, m.v_experts, m.o_experts, m.v_router.weight, m.o_router.weight]);
});

test('SwitchHead: KV-cached decoding equals the full forward', () => {
  const m = buildAttention(tiny({ attention_type: 'switchhead', num_attention_heads: 2, attention_options: { numExperts: 4, topK: 2 } }), new Rng(25), 0);
  const x = randn(new Rng(26), [5, 8], false);
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
