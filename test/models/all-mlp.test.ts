/**
 * Sparse all-MLP (model_type 'all-mlp', Yu et al. 2022): the causal token-mixing op against a
 * masked dense matrix product and finite differences, finite-difference gradients of the whole model, causality of the whole model, cached
 * generation equal to the full forward, and training with a checkpoint round trip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { buildModel } from '../../src/models/build.js';
import { SparseAllMLPLM } from '../../src/models/all-mlp.js';
import { lmLoss } from '../../src/models/transformer.js';
import { TrainSession } from '../../src/train/session.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { tokenExperts } from '../../src/moe/trace.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const TEXT = fs.readFileSync(path.join(import.meta.dirname, '../../../data/shakespeare.txt'), 'utf8').slice(0, 20000);
const evalCtx = { ctx: { training: false, step: 0, rng: new Rng(0) } };
const allMlp = (extra: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({
    model_type: 'all-mlp',
    hidden_size: 12,
    num_hidden_layers: 2,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    vocab_size: 32,
    max_position_embeddings: 16,
    family_options: { token_mixing_experts: 3 },
    ...extra,
  });

test('causalTokenMix equals chunk-wise lower-triangular matrix products, with finite-difference gradients', () => {
  const rng = new Rng(2);
  const [B, L, E, c, Tmax] = [2, 4, 3, 2, 6];
  const x = randn(rng, [B * L, E * c]);
  const w = randn(rng, [E, Tmax, Tmax]);
  const bias = randn(rng, [E, Tmax]);
  const y = T.causalTokenMix(x, w, bias, B, L).data;
  // reference: for each sequence and chunk, (tril(W_e)[:L, :L]) @ X_chunk + bias
  for (let b = 0; b < B; b++)
    for (let e = 0; e < E; e++)
      for (let t = 0; t < L; t++)
        for (let j = 0; j < c; j++) {
          let acc = bias.data[e * Tmax + t];
          for (let s = 0; s <= t; s++) acc += w.data[(e * Tmax + t) * Tmax + s] * x.data[(b * L + s) * E * c + e * c + j];
          assert.ok(Math.abs(y[(b * L + t) * E * c + e * c + j] - acc) < 1e-5);
        }
  assert.ok(gradcheck('causalTokenMix', (a, ww, bb) => T.causalTokenMix(a, ww, bb, B, L), [x, w, bias]).worstRatio <= 1);
  // the upper triangle is never read: its gradient is zero
  w.grad = null;
  T.sum(T.causalTokenMix(x, w, bias, B, L)).backward();
  for (let e = 0; e < E; e++) for (let t = 0; t < Tmax; t++) for (let s = t + 1; s < Tmax; s++) assert.equal(w.grad![(e * Tmax + t) * Tmax + s], 0);
  assert.throws(() => T.causalTokenMix(randn(rng, [2 * 7, 6]), w, bias, 2, 7), /sequence of 7 tokens exceeds the mixing matrices' 6 positions/);
  assert.throws(() => T.causalTokenMix(randn(rng, [8, 5]), w, bias, 2, 4), /channels divisible by 3/);
});

test('causalTokenMix from a position: the rows of the full mix, their finite-difference gradients; a bad start names it', () => {
  const rng = new Rng(4);
  const [B, L, E, c, Tmax, from] = [2, 5, 2, 3, 6, 3];
  const x = randn(rng, [B * L, E * c]);
  const w = randn(rng, [E, Tmax, Tmax]);
  const bias = randn(rng, [E, Tmax]);
  const full = noGrad(() => T.causalTokenMix(x, w, bias, B, L)).data;
  const part = noGrad(() => T.causalTokenMix(x, w, bias, B, L, from));
  assert.deepEqual(part.shape, [B * (L - from), E * c]);
  const rows = Int32Array.from({ length: B * (L - from) }, (_, r) => Math.floor(r / (L - from)) * L + from + (r % (L - from)));
  assertClose(part.data, T.indexSelect(new T.Tensor(full, [B * L, E * c]), rows).data, 1e-5, 1e-5, 'rows from..L-1');
  assert.ok(gradcheck('causalTokenMix from', (a, ww, bb) => T.causalTokenMix(a, ww, bb, B, L, from), [x, w, bias]).worstRatio <= 1);
  assert.throws(() => T.causalTokenMix(x, w, bias, B, L, L), /causalTokenMix: from must be an integer in \[0, seqLen = 5\), got 5/);
});

test('all-mlp: config rules, causality, and cached generation equal to the full forward', () => {
  assert.throws(() => allMlp({ family_options: { token_mixing_experts: 5 } }), /family_options\.token_mixing_experts: must divide hidden_size \(12\)/);
  assert.throws(() => allMlp({ max_position_embeddings: 8192 }), /mixing weights, more than 67108864; lower max_position_embeddings/);
  assert.throws(() => allMlp({ sliding_window: 4 }), /sliding_window: is not used by model_type "all-mlp"/);
  const model = buildModel(allMlp(), 1).eval();
  assert.ok(model instanceof SparseAllMLPLM);
  const B = 2;
  const L = 6;
  const V = 32;
  const ids = Int32Array.from({ length: B * L }, (_, i) => (i * 5 + 1) % V);
  noGrad(() => {
    const full = model.forward(ids, B, L, evalCtx).logits.data;
    const changed = ids.slice();
    changed[L - 1] = (changed[L - 1] + 1) % V;
    const other = model.forward(changed, B, L, evalCtx).logits.data;
    assert.deepEqual(other.subarray(0, (L - 1) * V), full.subarray(0, (L - 1) * V), 'earlier positions ignore a later token');
    assert.notDeepEqual(other.subarray((L - 1) * V, L * V), full.subarray((L - 1) * V, L * V));
    const cache = model.emptyCache();
    const first = Int32Array.from({ length: B * 2 }, (_, i) => ids[Math.floor(i / 2) * L + (i % 2)]);
    const pre = model.forward(first, B, 2, { ...evalCtx, cache }).logits.data;
    assertClose(pre.subarray(V, 2 * V), full.subarray(V, 2 * V), 1e-5, 1e-5, 'prefill');
    for (let t = 2; t < L; t++) {
      const res = model.forward(
        Int32Array.from({ length: B }, (_, b) => ids[b * L + t]),
        B,
        1,
        { ...evalCtx, cache },
      );
      const out = res.logits.data;
      for (let b = 0; b < B; b++) assertClose(out.subarray(b * V, (b + 1) * V), full.subarray((b * L + t) * V, (b * L + t + 1) * V), 1e-5, 1e-5, `position ${t}`);
      // routing records cover only the new tokens (the prefix is not re-routed)
      for (const a of res.aux) assert.equal(tokenExperts(a.aux, B, 2).length, B);
    }
    assert.equal(cache.length, L);
  });
});

test('all-mlp trains, checkpoints, reloads and generates the same text', () => {
  const cfg = parseRunConfig({
    model: { model_type: 'all-mlp', hidden_size: 16, num_hidden_layers: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, max_position_embeddings: 32 },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  const first = s.trainStep();
  assert.ok(Number.isFinite(first.aux.switch));
  let last = first.loss;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first.loss, `loss ${first.loss} -> ${last}`);
  const ck = checkpointFromBytes(s.checkpointBytes(), undefined, 'mlp.safetensors');
  assert.ok([...ck.model.keys()].includes('layers.1.token_mixing.weight'));
  const loaded = inferenceModelFromCheckpoint(ck, 'mlp.safetensors');
  const g = (m: typeof loaded.model) => generate(m, loaded.tokenizer, 'First', { maxNewTokens: 10, temperature: 0 }).text;
  assert.equal(g(loaded.model), g(s.model));
});

test('all-mlp: finite-difference gradients of the whole model (token mixing, its norms, the feature-mixing router and experts, the embedding)', () => {
  const m = buildModel(allMlp({ hidden_size: 6, max_position_embeddings: 6, moe_intermediate_size: 4, vocab_size: 8, family_options: { token_mixing_experts: 2 } }), 3) as SparseAllMLPLM;
  m.train();
  const ids = Int32Array.of(1, 5, 2, 7, 3, 0);
  const targets = Int32Array.of(5, 2, 7, 3, 0, 1);
  const [l0, l1] = m.layers;
  // a sharp router keeps the discrete top-k choices away from ties under the finite-difference steps
  for (const l of m.layers) l.block_sparse_moe!.router.parameters()[0].data.forEach((_, i, a) => (a[i] *= 20));
  const loss = () => lmLoss(m.forward(ids, 1, 6, { ctx: { training: true, step: 0, rng: new Rng(0) } }), targets).loss;
  const inputs = [
    l0.token_mixing.weight,
    l0.token_mixing.bias,
    l0.input_layernorm.weight,
    l1.token_mixing.weight,
    l1.block_sparse_moe!.router.parameters()[0],
    ...l1.block_sparse_moe!.experts.parameters(),
    m.embed_tokens.weight,
  ];
  const rep = gradcheck('all-mlp model', loss, inputs, { eps: 2e-3 });
  assert.ok(rep.checked > 100, `checked ${rep.checked} elements`);
});
