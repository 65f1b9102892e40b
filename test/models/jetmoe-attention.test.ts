// JetMoE's mixture of attention heads ('jetmoe-moa' attention kind): the block against a per-token
// float64 reference, finite-difference gradients, KV-cached decoding, registry and config errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, concat, reshape } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { parseModelConfig, type ModelConfig } from '../../src/models/config.js';
import { JetMoEAttention } from '../../src/models/attention/jetmoe.js';
import { attentionRegistry, buildAttention } from '../../src/models/attention/registry.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { countParameters } from '../../src/models/memory.js';
import type { SparseRouting } from '../../src/moe/types.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const ctx = { training: false, step: 0, rng: new Rng(0) };

function cfgOf(over: Record<string, unknown> = {}): ModelConfig {
  return parseModelConfig({
    vocab_size: 16,
    hidden_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 2,
    num_local_experts: 3,
    num_experts_per_tok: 2,
    moe_intermediate_size: 4,
    attention_type: 'jetmoe-moa',
    ...over,
  });
}

function block(seed: number, over: Record<string, unknown> = {}): JetMoEAttention {
  const a = buildAttention(cfgOf(over), new Rng(seed), 0) as JetMoEAttention;
  // away from routing ties, and a non-zero bias
  for (const [n, p] of a.namedParameters()) {
    if (n.includes('router')) for (let i = 0; i < p.size; i++) p.data[i] *= 20;
    if (n.endsWith('experts.bias')) for (let i = 0; i < p.size; i++) p.data[i] = 0.1 * (i + 1);
  }
  return a;
}

/**
 * Per token, plainly in float64: pick the top-k logits, softmax over them; slot j's query is
 * expert e_j's projection, its kv head g attends (causal, RoPE, 1/sqrt(Dh)) to the shared keys of
 * kv head g; y = sum_j gate_j * Wo[e_j] o_j + bias.
 */
function reference(a: JetMoEAttention, x: Float32Array, B: number, Tn: number): Float64Array {
  const p = new Map(a.namedParameters());
  const d = a.cfg.hidden_size;
  const E = a.numExperts;
  const k = a.topK;
  const KV = a.kvHeads;
  const Dh = a.headDim;
  const kvd = KV * Dh;
  const Wq = p.get('experts.input_linear.weight')!.data; // [E, kvd, d]
  const Wo = p.get('experts.output_linear.weight')!.data; // [E, d, kvd]
  const bias = p.get('experts.bias')!.data;
  const Wr = p.get('experts.router.gate.weight')!.data; // [E, d]
  const Wkv = p.get('kv_proj.weight')!.data; // [2 kvd, d]
  const theta = a.cfg.rope_theta;
  const rope = (v: Float64Array, pos: number): Float64Array => {
    const h = Dh / 2;
    const out = new Float64Array(Dh);
    for (let i = 0; i < h; i++) {
      const f = pos * Math.pow(theta, (-2 * i) / Dh);
      out[i] = v[i] * Math.cos(f) - v[i + h] * Math.sin(f);
      out[i + h] = v[i + h] * Math.cos(f) + v[i] * Math.sin(f);
    }
    return out;
  };
  const mv = (W: Float32Array, off: number, rows: number, xs: Float32Array, xo: number): Float64Array => {
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < d; c++) s += W[off + r * d + c] * xs[xo + c];
      out[r] = s;
    }
    return out;
  };
  const y = new Float64Array(B * Tn * d);
  for (let b = 0; b < B; b++) {
    const keys: Float64Array[][] = [];
    const vals: Float64Array[][] = [];
    for (let t = 0; t < Tn; t++) {
      const kv = mv(Wkv, 0, 2 * kvd, x, (b * Tn + t) * d);
      keys.push(Array.from({ length: KV }, (_, g) => rope(kv.slice(g * Dh, (g + 1) * Dh), t)));
      vals.push(Array.from({ length: KV }, (_, g) => kv.slice(kvd + g * Dh, kvd + (g + 1) * Dh)));
    }
    for (let t = 0; t < Tn; t++) {
      const xo = (b * Tn + t) * d;
      const logits = mv(Wr, 0, E, x, xo);
      const order = Array.from({ length: E }, (_, e) => e).sort((u, v) => logits[v] - logits[u]);
      const sel = order.slice(0, k);
      const mx = logits[sel[0]];
      const z = sel.reduce((s, e) => s + Math.exp(logits[e] - mx), 0);
      const out = y.subarray(xo, xo + d);
      for (let i = 0; i < d; i++) out[i] = bias[i];
      for (const e of sel) {
        const gate = Math.exp(logits[e] - mx) / z;
        const q = mv(Wq, e * kvd * d, kvd, x, xo);
        const o = new Float64Array(kvd);
        for (let g = 0; g < KV; g++) {
          const qg = rope(q.slice(g * Dh, (g + 1) * Dh), t);
          const s = Array.from({ length: t + 1 }, (_, u) => qg.reduce((acc, qv, i) => acc + qv * keys[u][g][i], 0) / Math.sqrt(Dh));
          const m = Math.max(...s);
          const w = s.map((v) => Math.exp(v - m));
          const sw = w.reduce((u, v) => u + v, 0);
          for (let u = 0; u <= t; u++) for (let i = 0; i < Dh; i++) o[g * Dh + i] += (w[u] / sw) * vals[u][g][i];
        }
        for (let r = 0; r < d; r++) {
          let s = 0;
          for (let c = 0; c < kvd; c++) s += Wo[e * d * kvd + r * kvd + c] * o[c];
          out[r] += gate * s;
        }
      }
    }
  }
  return y;
}

test('jetmoe-moa: output equals the per-token float64 reference (batch of 2, kv heads shared across the k slots)', () => {
  for (const [seed, over] of [
    [1, {}],
    [2, { num_attention_heads: 3, num_key_value_heads: 1, num_experts_per_tok: 3, num_local_experts: 4, head_dim: 4 }],
  ] as const) {
    const a = block(seed, over);
    const B = 2;
    const Tn = 5;
    const x = randn(new Rng(seed + 10), [B * Tn, a.cfg.hidden_size], false);
    const r = a.forward(x, B, Tn, undefined, ctx);
    assertClose(r.y.data, reference(a, x.data, B, Tn), 1e-5, 1e-4, `moa seed ${seed}`);
    assert.equal(r.router?.routing.kind, 'sparse');
  }
});

test('jetmoe-moa: gradients match finite differences (input, router, query/output experts, bias, kv_proj)', () => {
  const a = block(3);
  const x = randn(new Rng(4), [4, 8]);
  const fn = (xx: Tensor): Tensor => {
    const r = a.forward(xx, 1, 4, undefined, ctx);
    const routing = r.router!.routing;
    assert.equal(routing.kind, 'sparse');
    // the gate weights too: their gradient reaches the router directly, not only through y
    return concat([reshape(r.y, [r.y.size]), (routing as SparseRouting).weights], 0);
  };
  gradcheck('JetMoEAttention', fn, [x, ...a.parameters()], { eps: 1e-3, atol: 5e-3, rtol: 2e-2 });
});

test('jetmoe-moa: KV-cached decoding equals the full forward', () => {
  const a = block(5);
  const Tn = 6;
  const x = randn(new Rng(6), [Tn, 8], false);
  const full = a.forward(x, 1, Tn, undefined, ctx).y.data;
  let cache = { k: undefined as Tensor | undefined, v: undefined as Tensor | undefined, offset: 0 };
  const rows: number[] = [];
  for (const [s, e] of [
    [0, 3],
    [3, 4],
    [4, 6],
  ]) {
    const r = a.forward(new Tensor(x.data.slice(s * 8, e * 8), [e - s, 8]), 1, e - s, cache, ctx);
    rows.push(...r.y.data);
    cache = { k: r.k, v: r.v, offset: e };
  }
  assertClose(rows, full, 1e-6, 1e-5, 'cached vs full');
});

test('jetmoe-moa: registered with its paper; a model trains through it; bad configs are one-line errors naming the field', () => {
  const spec = attentionRegistry.spec('jetmoe-moa');
  assert.equal(spec.paper?.year, 2022);
  const cfg = cfgOf({ num_hidden_layers: 2, aux_loss_normalization: 'all-layers-tokens', moe_output_bias: true });
  const model = new MoETransformerLM(cfg, 1);
  // the pre-allocation memory estimate counts the attention experts (the spec's parameters())
  assert.equal(countParameters(cfg).params, model.numParameters());
  const ids = Int32Array.from([1, 2, 3, 4, 5, 6]);
  const res = model.forward(ids, 1, 6, { ctx: { ...ctx, training: true } });
  // the attention routers join the all-layers Switch loss: 2 MLP + 2 attention router outputs
  assert.ok(res.losses.switch.item() > 0);
  const oneLine = (re: RegExp) => (e: Error) => re.test(e.message) && !e.message.includes('\n');
  assert.throws(
    () => new MoETransformerLM(cfgOf({ num_attention_heads: 2, num_key_value_heads: 2 }), 1),
    oneLine(/attention_type "jetmoe-moa" needs num_attention_heads = num_key_value_heads \* topK \(2 \* 2 = 4\), got 2/),
  );
  assert.throws(() => new MoETransformerLM(cfgOf({ attention_type: 'nope' }), 1), oneLine(/attention_type must be one of .*jetmoe-moa.*, got "nope"/));
  assert.throws(() => new MoETransformerLM(cfgOf({ attention_options: { topk: 2 } }), 1), oneLine(/attention "jetmoe-moa".*topk/));
  assert.throws(() => new MoETransformerLM(cfgOf({ attention_options: { numExperts: 1 } }), 1), oneLine(/attention_options.topK must be at most numExperts \(1\), got 2/));
});
