// Issue 17 item 2: LoRA experts on a frozen base (MoLoRA / PERFT routed + shared, MoLA per-layer counts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM, asTransformer } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { LoraExpertsLinear, adapterState } from '../../src/models/lora-experts.js';
import { saveAdapters, attachAdapters, mergeAdapters } from '../../src/adapt/peft.js';
import { saveModelRun } from '../../src/adapt/common.js';
import { Linear } from '../../src/nn/index.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad, tensor } from '../../src/tensor/index.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { train } from '../../src/train/trainer.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';
import { tmpDir } from '../train/helpers.js';

const base = {
  vocab_size: 256,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  max_position_embeddings: 32,
  intermediate_size: 32,
  num_local_experts: 4,
  num_experts_per_tok: 2,
  moe_intermediate_size: 16,
};

function logits(m: MoETransformerLM, ids: Int32Array): Float32Array {
  return noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
}
const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 37) % 256);

function randomizeAdapters(m: MoETransformerLM, seed: number): void {
  const r = new Rng(seed);
  for (const [, t] of adapterState(m)) r.fillNormal(t.data as Float32Array, 0.2);
}

test('fresh adapters compute the base exactly; per-layer counts (MoLA) and targets decide where they sit', () => {
  const plain = new MoETransformerLM(parseModelConfig(base), 3).eval();
  const peft = new MoETransformerLM(parseModelConfig({ ...base, peft: { type: 'lora-experts', experts: 2, rank: 4, experts_per_layer: [0, 3], shared: 0, targets: ['q_proj', 'o_proj'] } }), 3).eval();
  assert.deepEqual(logits(peft, ids), logits(plain, ids), 'same base init, B = 0: same logits');
  const a0 = peft.layers[0].self_attn as unknown as Record<string, Linear>;
  const a1 = peft.layers[1].self_attn as unknown as Record<string, LoraExpertsLinear>;
  assert.ok(!(a0.q_proj instanceof LoraExpertsLinear), 'layer 0 has 0 experts and no shared adapter: untouched');
  assert.equal(a1.q_proj.numExperts, 3);
  assert.ok(!(a1.v_proj instanceof LoraExpertsLinear), 'v_proj not targeted');
  const names = [...adapterState(peft).keys()];
  assert.deepEqual(names, [
    'layers.1.self_attn.q_proj.lora_A',
    'layers.1.self_attn.q_proj.lora_B',
    'layers.1.self_attn.q_proj.lora_router',
    'layers.1.self_attn.o_proj.lora_A',
    'layers.1.self_attn.o_proj.lora_B',
    'layers.1.self_attn.o_proj.lora_router',
  ]);
  assert.throws(() => parseModelConfig({ ...base, peft: { type: 'lora-experts', experts_per_layer: [1] } }), /peft\.experts_per_layer.*needs one entry per layer \(2\), got 1/);
  assert.throws(() => parseModelConfig({ ...base, peft: { type: 'lora-experts', targets: ['w9'] } }), /peft\.targets/);
  assert.throws(() => parseModelConfig({ ...base, peft: { type: 'lora-experts', experts: 0 } }), /peft\.experts.*nothing to train/);
});

test('LoRA-expert linear: gradients of input, adapters and router match finite differences (soft and top-k gates)', () => {
  for (const topK of [undefined, 2]) {
    const rng = new Rng(5);
    const lin = new LoraExpertsLinear(new Linear(6, 5, rng), { experts: 3, topK, rank: 2, alpha: 4, shared: 1 }, rng);
    for (const p of [lin.lora_B!, lin.lora_shared_B!]) rng.fillNormal(p.data, 0.5);
    const x = randn(rng, [4, 6]);
    gradcheck(
      `lora-experts topK=${topK}`,
      () => lin.forward(x),
      [x, lin.lora_A!, lin.lora_B!, lin.lora_router!, lin.lora_shared_A!, lin.lora_shared_B!],
      topK ? { eps: 1e-3, rtol: 2e-2, atol: 5e-3 } : {},
    );
    // top-k: exactly k experts per row have non-zero gates, summing to 1
    const g = noGrad(() => lin.gates(x).data);
    for (let t = 0; t < 4; t++) {
      const row = Array.from(g.subarray(t * 3, t * 3 + 3));
      assert.equal(row.filter((v) => v > 0).length, topK ?? 3);
      assert.ok(Math.abs(row.reduce((s, v) => s + v, 0) - 1) < 1e-6);
    }
  }
});

test('merge: shared adapters fold into the base weights exactly; routed experts refuse to merge', () => {
  const cfg = parseModelConfig({ ...base, peft: { type: 'lora-experts', experts: 0, shared: 2, rank: 3, targets: ['q_proj', 'v_proj', 'o_proj', 'k_proj'] } });
  const m = new MoETransformerLM(cfg, 1).eval();
  randomizeAdapters(m, 9);
  const merged = mergeAdapters(m).eval();
  assert.equal(merged.config.peft, undefined);
  assert.equal(adapterState(merged).size, 0);
  const a = logits(m, ids);
  const b = logits(merged, ids);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
  assert.ok(diff < 1e-4, `merged vs unmerged max diff ${diff}`);
  const routed = new MoETransformerLM(parseModelConfig({ ...base, peft: { type: 'lora-experts', experts: 2 } }), 1);
  assert.throws(() => mergeAdapters(routed), /merge: layer 0 q_proj has routed LoRA experts, whose per-token router weights cannot fold/);
});

test('train --peft path: the base stays bit-identical, adapters train, and saved adapters reattach to the base', async () => {
  const dir = tmpDir('peft');
  try {
    const cfg = parseRunConfig({ model: base, training: { steps: 3, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 3, eval_batches: 1, save_interval: 3, lr: 1e-2 } });
    const baseModel = new MoETransformerLM(cfg.model, 2);
    const baseRun = path.join(dir, 'base');
    saveModelRun(baseRun, baseModel, new ByteTokenizer(), cfg);
    const peftModel = { ...cfg.model, peft: { type: 'lora-experts', experts: 2, top_k: 1, rank: 2, shared: 1, targets: ['q_proj', 'v_proj'] } };
    const res = await train({ config: parseRunConfig({ ...cfg, model: peftModel }), outDir: path.join(dir, 'ft'), init: { model: baseModel, tokenizer: new ByteTokenizer() } });
    const trained = asTransformer(res.model, 'adapt', 'test');
    const before = baseModel.stateDict();
    for (const [n, t] of trained.stateDict()) {
      if (n.includes('.lora_')) continue;
      assert.deepEqual(t.data, before.get(n)!.data, `base tensor ${n} unchanged`);
    }
    const B = trained.stateDict().get('layers.0.self_attn.q_proj.lora_B')!.data;
    assert.ok(
      B.some((v) => v !== 0),
      'adapters moved from their zero init',
    );
    const file = path.join(dir, 'adapters.safetensors');
    assert.equal(saveAdapters(trained, file), 2 * 2 * 5);
    assert.ok(
      fs.statSync(file).size < 0.2 * fs.statSync(path.join(baseRun, 'checkpoints', fs.readdirSync(path.join(baseRun, 'checkpoints'))[0], 'model.safetensors')).size,
      'adapter file much smaller than the base',
    );
    const re = attachAdapters(baseModel, file).eval();
    trained.eval();
    assert.deepEqual(logits(re, ids), logits(trained, ids), 'base + adapter file == the trained model');
    assert.throws(() => attachAdapters(re, file), /already has adapters/);
    assert.throws(() => attachAdapters(new MoETransformerLM(parseModelConfig({ ...base, hidden_size: 32 }), 0), file), /has shape/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('trained (non-zero) LoRA experts change the output of the base linear', () => {
  const rng = new Rng(1);
  const lin = new LoraExpertsLinear(new Linear(4, 4, rng), { experts: 2, rank: 2, alpha: 2, shared: 0 }, rng);
  const x = tensor(rng.fillNormal(new Float32Array(8)), [2, 4]);
  const y0 = noGrad(() => lin.forward(x).data.slice());
  rng.fillNormal(lin.lora_B!.data, 1);
  const y1 = noGrad(() => lin.forward(x).data);
  assert.ok(y0.some((v, i) => Math.abs(v - y1[i]) > 1e-3));
});
