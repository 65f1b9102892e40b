import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { fromPretrained, savePretrained, savePretrainedWithTokenizer, modelConfigFromHf } from '../../src/io/hf/pretrained.js';
import { ByteTokenizer } from '../../src/data/tokenizer/byte.js';
import { readSafetensorsSync } from '../../src/io/safetensors.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { Rng } from '../../src/tensor/random.js';

// dist/test/hf -> repo root
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DIR = path.join(ROOT, 'test', 'fixtures', 'hf', 'jetmoe');
const ctx = { training: false, step: 0, rng: new Rng(0) };

const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'hf-jetmoe-'));

function reference(): { ids: Int32Array; logits: Float32Array; greedy: number[]; aux: number } {
  const r = readSafetensorsSync(path.join(DIR, 'reference.safetensors')).tensors;
  return {
    ids: Int32Array.from(r.get('input_ids')!.data as BigInt64Array, Number),
    logits: r.get('logits')!.data as Float32Array,
    greedy: Array.from(r.get('greedy')!.data as BigInt64Array, Number),
    aux: (r.get('aux_loss')!.data as Float32Array)[0],
  };
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

const logitsOf = (m: MoETransformerLM, ids: Int32Array): Float32Array => m.forward(ids, 1, ids.length, { ctx }).logits.data;

/** Greedy decoding through the KV cache: the prompt, then one token per forward. */
function greedy(model: MoETransformerLM, prompt: number[], n: number): number[] {
  const V = model.config.vocab_size;
  const cache = model.emptyCache();
  const seq = prompt.slice();
  let logits = model.forward(Int32Array.from(seq), 1, seq.length, { ctx, cache }).logits.data;
  for (let s = 0; s < n; s++) {
    const row = logits.subarray(logits.length - V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    seq.push(best);
    if (s < n - 1) logits = model.forward(Int32Array.from([best]), 1, 1, { ctx, cache }).logits.data;
  }
  return seq;
}

test('jetmoe: all-position logits, greedy continuation (KV cache) and aux loss equal the PyTorch reference', () => {
  const { model, config } = fromPretrained(DIR);
  assert.equal(config.attention_type, 'jetmoe-moa');
  assert.equal(config.num_attention_heads, 4);
  assert.equal(config.head_dim, 4);
  const ref = reference();
  const err = maxRelErr(logitsOf(model, ref.ids), ref.logits);
  assert.ok(err < 1e-4, `max relative logit error ${err}`);
  assert.deepEqual(greedy(model, ref.greedy.slice(0, 4), ref.greedy.length - 4), ref.greedy);
  // one Switch loss over both routers of every layer (attention and MLP), as load_balancing_loss_func
  const res = model.forward(ref.ids, 1, ref.ids.length, { ctx });
  const sw = res.losses.switch.item() / config.router_aux_loss_coef;
  assert.ok(Math.abs(sw - ref.aux) < 1e-5 * Math.max(1, ref.aux), `aux loss ${sw} vs reference ${ref.aux}`);
  assert.ok(Number.isFinite(lmLoss(res, ref.ids).loss.item()));
});

test('jetmoe: save -> load -> save is byte-identical with the checkpoint tensor names, logits unchanged', () => {
  const { model } = fromPretrained(DIR);
  const d1 = tmp();
  const d2 = tmp();
  savePretrained(model, d1);
  const again = fromPretrained(d1);
  assert.equal(again.modelType, 'jetmoe');
  savePretrained(again.model, d2);
  for (const f of ['config.json', 'model.safetensors']) assert.deepEqual(fs.readFileSync(path.join(d1, f)), fs.readFileSync(path.join(d2, f)), f);
  // the same tensors, names and values as the transformers-layout fixture
  const a = readSafetensorsSync(path.join(DIR, 'model.safetensors')).tensors;
  const b = readSafetensorsSync(path.join(d1, 'model.safetensors')).tensors;
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [n, t] of a) assert.deepEqual(b.get(n)!.data, t.data, n);
  const hf = JSON.parse(fs.readFileSync(path.join(d1, 'config.json'), 'utf8'));
  assert.equal(hf.kv_channels, 4);
  assert.equal(hf.aux_loss_coef, 0.01);
  const ref = reference();
  assert.deepEqual(logitsOf(again.model, ref.ids), logitsOf(model, ref.ids));
});

test('jetmoe: a moe-ts MoA model exports as JetMoE and re-imports with identical logits; near misses are refused by name', () => {
  const base = {
    vocab_size: 32,
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 4,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    attention_type: 'jetmoe-moa',
    moe_output_bias: true,
    layer_norm_eps: 1e-6,
    aux_loss_normalization: 'all-layers-tokens',
  };
  const model = new MoETransformerLM(parseModelConfig(base), 3);
  model.eval();
  // non-zero biases so the export has to carry them
  for (const [n, p] of model.namedParameters()) if (n.endsWith('bias')) p.data.fill(0.25);
  const d = tmp();
  savePretrained(model, d);
  const back = fromPretrained(d);
  assert.equal(back.modelType, 'jetmoe');
  const ids = Int32Array.from([1, 5, 9, 2, 7, 3]);
  assert.deepEqual(logitsOf(back.model, ids), logitsOf(model, ids));
  const bad = (over: Record<string, unknown>, re: RegExp): void => {
    const m = new MoETransformerLM(parseModelConfig({ ...base, ...over }), 1);
    assert.throws(
      () => savePretrained(m, tmp()),
      (e: Error) => re.test(e.message) && !e.message.includes('\n'),
    );
  };
  bad({ moe_output_bias: false }, /jetmoe: JetMoE needs moe_output_bias and layer_norm_eps 1e-6/);
  bad({ attention_options: { numExperts: 6 } }, /jetmoe: JetMoE needs attention_type "jetmoe-moa" with as many attention experts/);
  // other attention kinds have no Hugging Face equivalent: refused, not exported as plain attention
  bad({ attention_type: 'moa', attention_options: { numExperts: 4, topK: 2 }, moe_output_bias: false, layer_norm_eps: undefined }, /attention_type "moa" has no Hugging Face equivalent/);
  // a plain Mixtral-like model with an MoE bias matches nothing
  bad({ attention_type: undefined, num_key_value_heads: undefined, head_dim: undefined }, /mixtral: has no attention experts/);
});

test('jetmoe: config.json errors name the field', () => {
  const hf = JSON.parse(fs.readFileSync(path.join(DIR, 'config.json'), 'utf8'));
  assert.throws(() => modelConfigFromHf({ ...hf, num_attention_heads: 6 }), /field num_attention_heads = 6: JetMoE has num_attention_heads = num_key_value_heads \* num_experts_per_tok = 4/);
  assert.throws(() => modelConfigFromHf({ ...hf, activation_function: 'gelu' }), /field activation_function = "gelu": not supported/);
  // num_attention_heads is derived when a config leaves it out
  const { num_attention_heads: _h, ...rest } = hf;
  assert.equal(modelConfigFromHf(rest).config.num_attention_heads, 4);
});

test('jetmoe: generate and train --model run on a JetMoE directory through the CLI', () => {
  const tok = new ByteTokenizer();
  const cfg = parseModelConfig({
    vocab_size: tok.vocabSize,
    hidden_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 4,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 8,
    attention_type: 'jetmoe-moa',
    moe_output_bias: true,
    layer_norm_eps: 1e-6,
    max_position_embeddings: 64,
  });
  const dir = path.join(tmp(), 'jet');
  savePretrainedWithTokenizer(new MoETransformerLM(cfg, 2), tok, dir);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).model_type, 'jetmoe');
  const cli = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  const g = run(['generate', '--model', dir, '--prompt', 'RO', '--max-tokens', '4', '--temperature', '0']);
  assert.equal(g.status, 0, g.stderr);
  assert.ok(g.stdout.startsWith('RO'), g.stdout);
  const out = path.join(tmp(), 'ft');
  const t = run(['train', '--model', dir, '--steps', '2', '--out', out, '--quiet']);
  assert.equal(t.status, 0, t.stderr);
  assert.ok(fs.existsSync(path.join(out, 'results.json')));
});
