/**
 * The model-family registry and MoE-Mamba (model_type 'mamba-moe'): config validation through the
 * family's schema, recurrent generation token by token equal to the full-sequence forward,
 * causality, finite-difference gradients through a whole Mamba mixer, and a model that trains,
 * checkpoints, reloads and generates; features the family lacks fail with one line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import '../../src/kernels/index.js';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { buildModel } from '../../src/models/build.js';
import { familyRegistry, parseFamilyOptions, type LanguageModel } from '../../src/models/family.js';
import { MambaMoELM, MambaMixer, type MambaOptions } from '../../src/models/mamba.js';
import { MoETransformerLM, asTransformer } from '../../src/models/transformer.js';
import { TrainSession } from '../../src/train/session.js';
import { checkRunMemory, estimateMemory } from '../../src/models/memory.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const TEXT = fs.readFileSync(path.join(import.meta.dirname, '../../../data/shakespeare.txt'), 'utf8').slice(0, 20000);

const mamba = (extra: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({
    model_type: 'mamba-moe',
    hidden_size: 12,
    num_hidden_layers: 2,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    vocab_size: 32,
    family_options: { state_size: 4, expand: 2 },
    ...extra,
  });

const evalCtx = { ctx: { training: false, step: 0, rng: new Rng(0) } };

test('model families: registered with papers; model_type and family_options validated with one-line errors', () => {
  for (const n of ['moe-ts', 'mamba-moe']) assert.ok(familyRegistry.has(n), n);
  for (const s of familyRegistry.specs()) assert.ok(s.paper, s.name);
  // the default family is unchanged: no model_type means the transformer
  assert.ok(buildModel(parseModelConfig({ hidden_size: 8, num_hidden_layers: 1, num_local_experts: 0, intermediate_size: 8 }), 0) instanceof MoETransformerLM);
  assert.ok(buildModel(mamba(), 0) instanceof MambaMoELM);
  assert.throws(() => parseModelConfig({ model_type: 'rwkv' }), /model_type: must be one of moe-ts, mamba-moe.*got "rwkv"/);
  assert.throws(() => mamba({ family_options: { state_sise: 4 } }), /family_options\.state_sise: unknown field/);
  assert.throws(() => mamba({ family_options: { state_size: 0 } }), /family_options\.state_size: must be a positive integer, got 0/);
  assert.throws(() => mamba({ family_options: { time_step_min: 0.5, time_step_max: 0.1 } }), /family_options\.time_step_min: must be at most time_step_max \(0\.1\)/);
  assert.throws(() => mamba({ attention_type: 'moa' }), /attention_type: is not used by model_type "mamba-moe"; remove it/);
  assert.throws(() => mamba({ num_attention_heads: 3 }), /num_attention_heads: is not used by model_type "mamba-moe"/);
  // widths a transformer would refuse (odd head dimension) are fine without attention
  assert.equal(buildModel(mamba({ hidden_size: 10 }), 0).config.hidden_size, 10);
  assert.equal(parseFamilyOptions(mamba()).opts.conv_kernel, 4, 'defaults applied');
  // the scan's stored states (2 x tokens x d_inner x N per layer) count in the memory check
  const t = { batch_size: 64, seq_len: 128 };
  const m = estimateMemory(parseModelConfig({ model_type: 'mamba-moe', hidden_size: 64 }), t).trainingBytes;
  const tr = estimateMemory(parseModelConfig({ hidden_size: 64 }), t).trainingBytes;
  assert.ok(m - tr >= 4 * 2 * (64 * 128 * 128 * 16) * 2, `${m} vs ${tr}`);
  assert.throws(() => checkRunMemory(parseRunConfig({ model: { model_type: 'mamba-moe', hidden_size: 64 }, training: t }), m - 1), /training would need about .*but only/);
});

test('mamba-moe: token-by-token recurrent generation equals the full-sequence forward', () => {
  const model = buildModel(mamba(), 3).eval();
  const B = 2;
  const L = 7;
  const ids = Int32Array.from({ length: B * L }, (_, i) => (i * 7 + 3) % 32);
  noGrad(() => {
    const full = model.forward(ids, B, L, evalCtx).logits.data;
    const cache = model.emptyCache();
    const V = 32;
    for (let t = 0; t < L; t++) {
      const step = Int32Array.from({ length: B }, (_, b) => ids[b * L + t]);
      const out = model.forward(step, B, 1, { ...evalCtx, cache }).logits.data;
      for (let b = 0; b < B; b++) assertClose(out.subarray(b * V, (b + 1) * V), full.subarray((b * L + t) * V, (b * L + t + 1) * V), 1e-4, 1e-4, `position ${t} of sequence ${b}`);
    }
    assert.equal(cache.length, L);
    // a prefill of 4 then single steps gives the same last logits
    const c2 = model.emptyCache();
    const pre = Int32Array.from({ length: B * 4 }, (_, i) => ids[Math.floor(i / 4) * L + (i % 4)]);
    model.forward(pre, B, 4, { ...evalCtx, cache: c2 });
    for (let t = 4; t < L; t++) {
      const out = model.forward(
        Int32Array.from({ length: B }, (_, b) => ids[b * L + t]),
        B,
        1,
        { ...evalCtx, cache: c2 },
      ).logits.data;
      if (t === L - 1) assertClose(out.subarray(0, V), full.subarray((L - 1) * V, L * V), 1e-4, 1e-4, 'after prefill');
    }
    assert.throws(() => model.forward(Int32Array.of(1), 1, 1, { ...evalCtx, cache }), /the cache holds 2 sequences, got a batch of 1/);
  });
});

test('mamba-moe is causal: a later token never changes earlier logits', () => {
  const model = buildModel(mamba(), 4).eval();
  const ids = Int32Array.from({ length: 6 }, (_, i) => i + 1);
  const changed = ids.slice();
  changed[5] = 20;
  const a = noGrad(() => model.forward(ids, 1, 6, evalCtx).logits.data);
  const b = noGrad(() => model.forward(changed, 1, 6, evalCtx).logits.data);
  assert.deepEqual(a.subarray(0, 5 * 32), b.subarray(0, 5 * 32));
  assert.notDeepEqual(a.subarray(5 * 32), b.subarray(5 * 32));
});

test('MambaMixer: gradients through in_proj, conv, x_proj, dt_proj, the scan and the gate match finite differences', () => {
  const cfg = mamba({ hidden_size: 4 });
  const o = parseFamilyOptions(cfg).opts as MambaOptions;
  const mixer = new MambaMixer(cfg, { ...o, state_size: 2, time_step_rank: 2 }, new Rng(2));
  const x = randn(new Rng(5), [2 * 3, 4]);
  const params = mixer.parameters();
  const r = gradcheck('MambaMixer', (xi: Tensor) => mixer.forward(xi, 2, 3), [x], { eps: 1e-2 });
  assert.ok(r.worstRatio <= 1);
  // and for the parameters: one check over A_log and dt_proj.bias (the scan's own inputs)
  for (const p of [mixer.A_log, mixer.dt_proj.bias!, mixer.conv1d.weight]) {
    // gradcheck perturbs p.data in place, which the mixer reads
    const r2 = gradcheck('MambaMixer param', () => mixer.forward(x, 2, 3), [p], { eps: 1e-2 });
    assert.ok(r2.worstRatio <= 1);
  }
  assert.ok(params.length >= 9);
});

test('mamba-moe trains through TrainSession, checkpoints, reloads and generates; transformer-only features fail with one line', () => {
  const cfg = parseRunConfig({
    model: { model_type: 'mamba-moe', hidden_size: 16, num_hidden_layers: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, family_options: { state_size: 4 } },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  assert.ok(s.model instanceof MambaMoELM);
  const first = s.trainStep();
  assert.ok(first.loadCV >= 0 && Number.isFinite(first.aux.switch), `switch loss in the step, got ${JSON.stringify(first.aux)}`);
  let last = first.loss;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first.loss, `loss ${first.loss} -> ${last}`);
  const ev = s.evaluate(1);
  assert.deepEqual(ev.moeLayers, [0, 1]);
  const ck = checkpointFromBytes(s.checkpointBytes(), undefined, 'mamba.safetensors');
  assert.equal(ck.state.config.model.model_type, 'mamba-moe');
  assert.ok([...ck.model.keys()].includes('layers.0.mixer.A_log'));
  const loaded = inferenceModelFromCheckpoint(ck, 'mamba.safetensors');
  const text = (m: LanguageModel) => generate(m, loaded.tokenizer, 'First', { maxNewTokens: 12, temperature: 0 });
  const g = text(loaded.model);
  assert.equal(g.text, text(s.model).text);
  assert.equal(g.engine, 'eager');
  assert.equal(g.ids.length, 12);
  assert.throws(
    () => generate(loaded.model, loaded.tokenizer, 'First', { maxNewTokens: 2, engine: 'fast' }),
    /engine "fast".*model_type "mamba-moe" does not support the fast decode engine \(supported by: moe-ts/,
  );
  assert.throws(() => asTransformer(loaded.model, 'gguf', 'convert --to gguf'), /^Error: convert --to gguf: model_type "mamba-moe" does not support GGUF \(supported by: moe-ts/);
});
