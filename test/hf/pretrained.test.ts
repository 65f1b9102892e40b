import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromPretrained, savePretrained, hfTensors } from '../../src/io/hf/pretrained.js';
import { archForModel } from '../../src/io/hf/archs.js';
import { readSafetensorsSync, serializeSafetensors } from '../../src/io/safetensors.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { Rng } from '../../src/tensor/random.js';

// dist/test/hf -> repo root
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const FIX = path.join(ROOT, 'test', 'fixtures', 'hf');
const ARCHS = ['mixtral', 'mixtral-bf16', 'mixtral-fused', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'llama', 'qwen2', 'deepseek_v3', 'deepseek_v2', 'granitemoe', 'gpt_oss'];

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hf-'));
}

function reference(name: string): { ids: Int32Array; logits: Float32Array; greedy: number[] } {
  const r = readSafetensorsSync(path.join(FIX, name, 'reference.safetensors')).tensors;
  const ids = Int32Array.from(r.get('input_ids')!.data as BigInt64Array, Number);
  return { ids, logits: r.get('logits')!.data as Float32Array, greedy: Array.from(r.get('greedy')!.data as BigInt64Array, Number) };
}

const ctx = { training: false, step: 0, rng: new Rng(0) };

function logitsOf(model: MoETransformerLM, ids: Int32Array): Float32Array {
  return model.forward(ids, 1, ids.length, { ctx }).logits.data;
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let scale = 0;
  let err = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    err = Math.max(err, Math.abs(a[i] - b[i]));
  }
  return err / scale;
}

/** Greedy decoding with the KV cache: 4 prompt tokens, then one token per step. */
function greedy(model: MoETransformerLM, prompt: number[], n: number): number[] {
  const V = model.config.vocab_size;
  const cache = model.emptyCache();
  const seq = prompt.slice();
  let logits = model.forward(Int32Array.from(seq), 1, seq.length, { ctx, cache }).logits.data;
  for (let s = 0; s < n; s++) {
    const rows = logits.length / V;
    const row = logits.subarray((rows - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    seq.push(best);
    if (s < n - 1) logits = model.forward(Int32Array.from([best]), 1, 1, { ctx, cache }).logits.data;
  }
  return seq;
}

for (const name of ARCHS) {
  test(`${name}: all-position logits and greedy continuation equal the PyTorch reference`, () => {
    const { model } = fromPretrained(path.join(FIX, name));
    const ref = reference(name);
    const err = maxRelErr(logitsOf(model, ref.ids), ref.logits);
    assert.ok(err < 1e-4, `${name}: max relative logit error ${err}`);
    assert.deepEqual(greedy(model, ref.greedy.slice(0, 4), ref.greedy.length - 4), ref.greedy);
  });
}

test('fused and per-expert layouts load identical models', () => {
  const a = fromPretrained(path.join(FIX, 'mixtral')).model;
  const b = fromPretrained(path.join(FIX, 'mixtral-fused')).model;
  const pb = new Map(b.namedParameters());
  for (const [n, p] of a.namedParameters()) assert.deepEqual(p.data, pb.get(n)!.data, n);
});

test('save -> load -> save is byte-identical, logits unchanged, sharded writes with an index', () => {
  for (const name of ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'llama', 'qwen2', 'deepseek_v3', 'deepseek_v2', 'granitemoe', 'gpt_oss']) {
    const { model, modelType } = fromPretrained(path.join(FIX, name));
    const d1 = tmp();
    const d2 = tmp();
    savePretrained(model, d1, { overwrite: true });
    const again = fromPretrained(d1);
    assert.equal(again.modelType, modelType);
    savePretrained(again.model, d2, { overwrite: true });
    for (const f of ['config.json', 'model.safetensors']) assert.deepEqual(fs.readFileSync(path.join(d1, f)), fs.readFileSync(path.join(d2, f)), `${name} ${f}`);
    const ref = reference(name);
    assert.deepEqual(logitsOf(again.model, ref.ids), logitsOf(model, ref.ids));
  }
  const { model } = fromPretrained(path.join(FIX, 'qwen2_moe'));
  const d = tmp();
  const files = savePretrained(model, d, { maxShardBytes: 8000 });
  assert.ok(files.includes('model.safetensors.index.json') && files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length > 2, files.join(' '));
  const idx = JSON.parse(fs.readFileSync(path.join(d, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(Object.keys(idx.weight_map).length, hfTensors(model, archForModel(model.config)).size);
  assert.equal(readSafetensorsSync(path.join(d, files[0])).metadata.format, 'pt');
  const ref = reference('qwen2_moe');
  assert.deepEqual(logitsOf(fromPretrained(d).model, ref.ids), logitsOf(model, ref.ids));
  assert.throws(() => savePretrained(model, d), /already holds a model .*overwrite/);
  // bf16 export rounds once; reloading gives the bf16-rounded model
  const b = tmp();
  savePretrained(model, b, { dtype: 'bfloat16' });
  assert.equal(JSON.parse(fs.readFileSync(path.join(b, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
  const err = maxRelErr(logitsOf(fromPretrained(b).model, ref.ids), ref.logits);
  assert.ok(err > 0 && err < 0.05, `bf16 round trip error ${err}`);
});

test('a moe-ts model exports as the architecture it matches and re-imports with identical logits', () => {
  const ids = Int32Array.from([1, 5, 9, 2, 7, 3]);
  const cases: [Record<string, unknown>, string][] = [
    [{ vocab_size: 32, hidden_size: 16, num_hidden_layers: 2, num_local_experts: 4, moe_intermediate_size: 8 }, 'mixtral'],
    [{ vocab_size: 32, hidden_size: 16, num_hidden_layers: 2, num_local_experts: 0, intermediate_size: 24, tie_word_embeddings: false }, 'llama'],
    [{ vocab_size: 32, hidden_size: 16, num_hidden_layers: 2, num_local_experts: 4, moe_intermediate_size: 8, qk_norm: 'head', norm_topk_prob: false, num_key_value_heads: 2 }, 'qwen3_moe'],
    [
      {
        vocab_size: 32,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_local_experts: 4,
        moe_intermediate_size: 8,
        n_shared_experts: 1,
        first_k_dense_replace: 1,
        kv_lora_rank: 8,
        q_lora_rank: 6,
        qk_nope_head_dim: 4,
        qk_rope_head_dim: 4,
        v_head_dim: 4,
        router_type: 'group-limited',
        router_options: { nGroup: 2, topkGroup: 1, routedScaling: 1.5 },
      },
      'deepseek_v3',
    ],
  ];
  for (const [raw, type] of cases) {
    const model = new MoETransformerLM(parseModelConfig(raw), 7);
    model.eval();
    const d = tmp();
    savePretrained(model, d);
    const back = fromPretrained(d);
    assert.equal(back.modelType, type);
    assert.deepEqual(logitsOf(back.model, ids), logitsOf(model, ids), type);
  }
  const hash = new MoETransformerLM(parseModelConfig({ vocab_size: 32, hidden_size: 16, num_hidden_layers: 1, num_local_experts: 4, moe_intermediate_size: 8, router_type: 'hash' }), 1);
  assert.throws(() => savePretrained(hash, tmp()), /cannot export as a Hugging Face model: router_type "hash" has no Hugging Face equivalent/);
  const shared = new MoETransformerLM(parseModelConfig({ vocab_size: 32, hidden_size: 16, num_hidden_layers: 1, num_local_experts: 4, moe_intermediate_size: 8, n_shared_experts: 1 }), 1);
  assert.throws(() => savePretrained(shared, tmp()), /no architecture matches exactly/);
});

function copyFixture(name: string): string {
  const d = tmp();
  for (const f of fs.readdirSync(path.join(FIX, name))) fs.copyFileSync(path.join(FIX, name, f), path.join(d, f));
  return d;
}

test('bad input: one-line errors naming the field, tensor, shapes, file and offset', () => {
  const oneLine = (re: RegExp) => (e: Error) => re.test(e.message) && !e.message.includes('\n');
  const d = copyFixture('mixtral');
  const cfgFile = path.join(d, 'config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
  const withCfg = (patch: Record<string, unknown>) => fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, ...patch }));
  withCfg({ model_type: 'gpt9' });
  assert.throws(
    () => fromPretrained(d),
    oneLine(/model_type "gpt9" is not supported \(supported: mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v3, deepseek_v2, granitemoe, gpt_oss, jetmoe, llama, qwen2\)/),
  );
  withCfg({ rope_scaling: { rope_type: 'longrope', factor: 2 } });
  assert.throws(() => fromPretrained(d), oneLine(/rope type "longrope" is not supported/));
  withCfg({ hidden_size: 32 });
  assert.throws(() => fromPretrained(d), oneLine(/tensor "model.embed_tokens.weight" has shape \[48, 16\], expected \[48, 32\]/));
  fs.writeFileSync(cfgFile, '{"model_type": ');
  assert.throws(() => fromPretrained(d), oneLine(/config.json: not valid JSON/));
  withCfg({});
  // a missing tensor
  const st = readSafetensorsSync(path.join(d, 'model.safetensors'));
  st.tensors.delete('model.layers.1.block_sparse_moe.experts.2.w3.weight');
  fs.writeFileSync(path.join(d, 'model.safetensors'), serializeSafetensors(st.tensors, st.metadata));
  assert.throws(() => fromPretrained(d), oneLine(/missing tensor "model.layers.1.block_sparse_moe.experts.2.w3.weight" \(expected shape \[8, 16\]\)/));
  // an unsupported dtype, and a truncated shard
  const raw = fs.readFileSync(path.join(FIX, 'mixtral', 'model.safetensors'));
  const n = Number(raw.readBigUInt64LE(0));
  const header = raw
    .subarray(8, 8 + n)
    .toString('utf8')
    .replace('"dtype":"F32"', '"dtype":"C64"');
  fs.writeFileSync(path.join(d, 'model.safetensors'), Buffer.concat([raw.subarray(0, 8), Buffer.from(header), raw.subarray(8 + n)]));
  assert.throws(() => fromPretrained(d), oneLine(/unknown dtype "C64"/));
  fs.writeFileSync(path.join(d, 'model.safetensors'), raw.subarray(0, raw.length - 100));
  assert.throws(() => fromPretrained(d), oneLine(new RegExp(`${d.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/model.safetensors: .*file byte \\d+`)));
  // a tensor the architecture does not have
  const extra = readSafetensorsSync(path.join(FIX, 'mixtral', 'model.safetensors'));
  extra.tensors.set('model.layers.0.mystery.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) });
  fs.writeFileSync(path.join(d, 'model.safetensors'), serializeSafetensors(extra.tensors, extra.metadata));
  assert.throws(() => fromPretrained(d), oneLine(/1 unexpected tensor\(s\) for a mixtral model .*"model.layers.0.mystery.weight"/));
});
