/**
 * Conditional MoE routing (CMR; Elbayad et al. 2022): (1 - g) FFN + g MoE beside every MoE layer,
 * the budget loss over all layers' gates, gate dropout in training only, and the exporters refusing
 * a model whose meaning they cannot write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../../src/tensor/random.js';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { parseModelConfig, matchedDenseConfig, ConfigError } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { countParameters } from '../../src/models/memory.js';
import { archForModel } from '../../src/io/hf/archs.js';
import { exportGGUF } from '../../src/io/gguf/index.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';

const cmrCfg = (cmr: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
  parseModelConfig({
    vocab_size: 32,
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    intermediate_size: 24,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    max_position_embeddings: 32,
    conditional_moe_routing: cmr,
    ...extra,
  });

const evalCtx = () => ({ training: false, step: 0, rng: new Rng(3) });

function randomInput(n: number, d: number, seed: number): Tensor {
  return new Tensor(new Rng(seed).fillNormal(new Float32Array(n * d), 1), [n, d]);
}

test('a CMR layer outputs (1 - g) FFN(x) + g MoE(x) with g = sigmoid(w x + b)', () => {
  const model = new MoETransformerLM(cmrCfg(), 1);
  model.eval();
  const layer = model.layers[0];
  assert.ok(layer.cmr_ffn && layer.cmr_gate && layer.block_sparse_moe);
  const x = randomInput(6, 16, 5);
  noGrad(() => {
    const ctx = { ...evalCtx(), tokenIds: new Int32Array(6), state: new Map() };
    const got = layer.ffn(x, ctx, 0).y.data;
    const moe = layer.block_sparse_moe!.forward(x, { ...evalCtx(), tokenIds: new Int32Array(6), state: new Map() }).y.data;
    const ffn = layer.cmr_ffn!.forward(x).data;
    const w = layer.cmr_gate!.weight.data;
    const b = layer.cmr_gate!.bias!.data[0];
    for (let t = 0; t < 6; t++) {
      let z = b;
      for (let i = 0; i < 16; i++) z += w[i] * x.data[t * 16 + i];
      const g = 1 / (1 + Math.exp(-z));
      for (let i = 0; i < 16; i++) {
        const want = (1 - g) * ffn[t * 16 + i] + g * moe[t * 16 + i];
        assert.ok(Math.abs(got[t * 16 + i] - want) < 1e-5, `token ${t} dim ${i}: ${got[t * 16 + i]} vs ${want}`);
      }
    }
  });
});

test('the gate decides between the branches: a large bias gives the MoE alone, a very negative one the dense FFN alone', () => {
  const model = new MoETransformerLM(cmrCfg(), 2);
  model.eval();
  const layer = model.layers[1];
  const x = randomInput(4, 16, 9);
  const ctx = () => ({ ...evalCtx(), tokenIds: new Int32Array(4), state: new Map() });
  noGrad(() => {
    layer.cmr_gate!.bias!.data[0] = 40;
    layer.cmr_gate!.weight.data.fill(0);
    assert.deepEqual(Array.from(layer.ffn(x, ctx(), 0).y.data), Array.from(layer.block_sparse_moe!.forward(x, ctx()).y.data));
    layer.cmr_gate!.bias!.data[0] = -40;
    const dense = layer.cmr_ffn!.forward(x).data;
    const got = layer.ffn(x, ctx(), 0).y.data;
    for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - dense[i]) < 1e-6);
  });
});

test('the budget loss is coef * |mean gate over all layers - budget|, and its gradient matches finite differences', () => {
  const cfg = cmrCfg({ budget: 0.9, loss_coef: 0.5 }, { router_aux_loss_coef: 0, router_z_loss_coef: 0 });
  const model = new MoETransformerLM(cfg, 4);
  model.eval();
  const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 32);
  const gates: number[] = [];
  // the gate means, recomputed from each layer's normalised input
  const res = model.forward(ids, 2, 6, { ctx: evalCtx() });
  for (const a of res.aux) gates.push(a.aux.metrics.extra.cmrGateMean);
  assert.equal(gates.length, 2);
  const mean = (gates[0] + gates[1]) / 2;
  assert.ok(Math.abs(res.losses.cmr_budget.item() - 0.5 * Math.abs(mean - 0.9)) < 1e-6);
  const { auxLosses } = lmLoss(res, ids);
  assert.ok(auxLosses.cmr_budget > 0);

  // d(total loss)/d(gate weights), analytic vs central differences in float64 of the float32 forward
  const gate = model.layers[0].cmr_gate!;
  const loss = () => lmLoss(model.forward(ids, 2, 6, { ctx: evalCtx() }), ids).loss;
  for (const p of model.parameters()) p.grad = null;
  loss().backward();
  const params = [gate.weight, gate.bias!];
  for (const p of params) {
    for (const j of [0, 3, p.size - 1].filter((v) => v < p.size)) {
      const analytic = p.grad![j];
      const v = p.data[j];
      const eps = 1e-2;
      p.data[j] = v + eps;
      const up = noGrad(() => loss().item());
      p.data[j] = v - eps;
      const down = noGrad(() => loss().item());
      p.data[j] = v;
      const numeric = (up - down) / (2 * eps);
      assert.ok(Math.abs(analytic - numeric) <= 2e-3 + 2e-2 * Math.abs(numeric), `param ${j}: analytic ${analytic} numeric ${numeric}`);
    }
  }
});

test('gate dropout acts in training only: evaluation is deterministic and training draws from the seeded rng', () => {
  const model = new MoETransformerLM(cmrCfg({ gate_dropout: 0.5 }), 6);
  const ids = Int32Array.from({ length: 8 }, (_, i) => i);
  model.eval();
  const a = noGrad(() => model.forward(ids, 1, 8, { ctx: evalCtx() }).logits.data.slice());
  const b = noGrad(() => model.forward(ids, 1, 8, { ctx: evalCtx() }).logits.data.slice());
  assert.deepEqual(a, b);
  model.train();
  const t1 = noGrad(() => model.forward(ids, 1, 8, { ctx: { training: true, step: 0, rng: new Rng(11) } }).logits.data.slice());
  const t2 = noGrad(() => model.forward(ids, 1, 8, { ctx: { training: true, step: 0, rng: new Rng(11) } }).logits.data.slice());
  const t3 = noGrad(() => model.forward(ids, 1, 8, { ctx: { training: true, step: 0, rng: new Rng(12) } }).logits.data.slice());
  assert.deepEqual(t1, t2);
  assert.notDeepEqual(t1, a);
  assert.notDeepEqual(t1, t3);
});

test('parameter counts and the FLOP-matched dense baseline include the dense branch', () => {
  const cfg = cmrCfg();
  const model = new MoETransformerLM(cfg, 0);
  assert.equal(countParameters(cfg).params, model.numParameters());
  const dense = matchedDenseConfig(cfg);
  assert.equal(dense.intermediate_size, 2 * 8 + 24);
  assert.equal(dense.conditional_moe_routing, undefined);
  assert.throws(
    () => matchedDenseConfig(cmrCfg({}, { first_k_dense_replace: 1 })),
    (e: Error) => e instanceof ConfigError && /conditional_moe_routing/.test(e.message),
  );
});

test('bad CMR options name the field', () => {
  assert.throws(() => cmrCfg({ budget: 1.5 }), /conditional_moe_routing\.budget/);
  assert.throws(() => cmrCfg({ gate_dropout: 1 }), /conditional_moe_routing\.gate_dropout/);
  assert.throws(() => cmrCfg({ bugdet: 0.5 }), /bugdet/);
});

test('exporters refuse what they cannot express: CMR and MH-MoE sub-tokens have no Hugging Face or GGUF form', () => {
  const model = new MoETransformerLM(cmrCfg(), 0);
  assert.throws(() => archForModel(model.config), /conditional_moe_routing .*no Hugging Face equivalent/);
  const sub = parseModelConfig({ hidden_size: 16, num_attention_heads: 2, num_local_experts: 4, moe_intermediate_size: 8, moe_sub_tokens: 2 });
  assert.throws(() => archForModel(sub), /moe_sub_tokens = 2 has no Hugging Face equivalent/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cmr-'));
  try {
    assert.throws(() => exportGGUF(model, new ByteTokenizer(), path.join(dir, 'm.gguf'), { quant: 'f32' }), /conditional_moe_routing/);
    assert.equal(fs.readdirSync(dir).length, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a CMR model trains: a few optimizer steps lower the loss', () => {
  const model = new MoETransformerLM(cmrCfg({ budget: 0.5, loss_coef: 0.1 }), 7);
  model.train();
  const ids = Int32Array.from({ length: 32 }, (_, i) => (i * 5 + 3) % 32);
  const inputs = ids.slice(0, 31);
  const targets = ids.slice(1, 32);
  const step = (s: number) => {
    for (const p of model.parameters()) p.grad = null;
    const { loss } = lmLoss(model.forward(inputs, 1, 31, { ctx: { training: true, step: s, rng: new Rng(s) } }), targets);
    loss.backward();
    for (const p of model.parameters()) if (p.grad) for (let i = 0; i < p.size; i++) p.data[i] -= 0.05 * p.grad[i];
    return loss.item();
  };
  const first = step(0);
  let last = first;
  for (let s = 1; s < 15; s++) last = step(s);
  assert.ok(last < first - 0.1, `loss ${first} -> ${last}`);
});
