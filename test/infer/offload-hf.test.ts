/** Expert offloading from Hugging Face safetensors shards: the in-memory engine's tokens and logits, per-expert and fused layouts, several shards, one-line errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { savePretrainedWithTokenizer, fromPretrainedWithTokenizer } from '../../src/io/hf/pretrained.js';
import { readSafetensorsSync, writeSafetensorsSync, SafetensorsReader, type TensorEntry } from '../../src/io/safetensors.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { openHfEngine } from '../../src/infer/offload.js';
import { argmax } from '../../src/infer/sampling.js';
import { jsQuantKernels, quantizeMatrix } from '../../src/kernels/quant.js';
import { bf16ToF32 } from '../../src/tensor/dtype.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-offload-hf-'));
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));

const E = 8;
const D = 64;
const F = 64;

function tiny(): MoETransformerLM {
  const c = parseModelConfig({
    vocab_size: 256,
    hidden_size: D,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    moe_intermediate_size: F,
    num_local_experts: E,
    num_experts_per_tok: 2,
    max_position_embeddings: 64,
    initializer_range: 0.2,
  });
  return new MoETransformerLM(c, 7).eval();
}

function save(name: string, opts: { dtype?: 'float32' | 'bfloat16'; maxShardBytes?: number } = {}): string {
  const dir = path.join(root, name);
  savePretrainedWithTokenizer(tiny(), new ByteTokenizer(), dir, opts);
  return dir;
}

function greedy(eng: DecodeEngine, steps: number): { ids: number[]; logits: Float32Array[] } {
  eng.reset();
  let l = eng.forward(Int32Array.from([72, 101, 108, 108, 111, 44, 32, 119]));
  const ids: number[] = [];
  const logits = [l];
  for (let i = 0; i < steps; i++) {
    const t = argmax(l.subarray(0, 256));
    ids.push(t);
    l = eng.forward(Int32Array.of(t));
    logits.push(l);
  }
  return { ids, logits };
}

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((x, i) => x.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i][j])))));
  return m;
}

/** The in-memory reference: the whole directory loaded, the same fast engine. */
function reference(dir: string, quant: 'f32' | 'q8_0'): { ids: number[]; logits: Float32Array[] } {
  const p = fromPretrainedWithTokenizer(dir);
  return greedy(new DecodeEngine(p.model, { quant }), 16);
}

/** A budget with room for 3 experts (plus top-2 staging slots with prefetch): most lookups read the shards. */
function smallBudget(dir: string, quant: 'f32' | 'q8_0', prefetch: boolean): number {
  const all = openHfEngine(dir, { quant });
  const resident = all.engine.weightBytes + all.engine.kvBytes;
  const { bytesPerExpert, storedBytesPerExpert } = all.experts;
  all.close();
  // staging holds experts as stored in the shards, the cache in its own format
  return resident + 3 * bytesPerExpert + (prefetch ? 2 * storedBytesPerExpert : 0) + 100;
}

for (const [dtype, quant] of [
  ['float32', 'f32'],
  ['float32', 'q8_0'],
  ['bfloat16', 'q8_0'],
] as const) {
  test(`safetensors ${dtype} experts offloaded at ${quant}: the in-memory engine's tokens and logits, cache within its bound`, () => {
    const dir = save(`m-${dtype}-${quant}`, { dtype });
    const want = reference(dir, quant);
    for (const prefetch of [true, false]) {
      const maxMemory = smallBudget(dir, quant, prefetch);
      const off = openHfEngine(dir, { quant, maxMemory, prefetch });
      const s0 = off.experts.getStats();
      assert.equal(s0.allResident, false);
      assert.equal(s0.cacheSlots, 3);
      assert.ok(s0.residentBytes + s0.stagingBytes + s0.cacheBytes <= maxMemory);
      assert.equal(off.config.moe_intermediate_size, F, 'config keeps the real expert width');
      const got = greedy(off.engine, 16);
      assert.deepEqual(got.ids, want.ids);
      // the same stored values converted the same way: equal up to summation order
      assert.ok(maxDiff(got.logits, want.logits) < 1e-4, `logits differ by ${maxDiff(got.logits, want.logits)}`);
      const s = off.experts.getStats();
      assert.ok(s.misses + s.prefetchHits > 16, `expected reads, got ${JSON.stringify(s)}`);
      if (prefetch) assert.ok(s.prefetchHits > 0, `prefetch never served: ${JSON.stringify(s)}`);
      else assert.equal(s.prefetchHits, 0);
      off.close();
    }
  });
}

test('an offloaded expert holds exactly the shard values, converted to the cache format', () => {
  const dir = save('bytes', { dtype: 'bfloat16' });
  const st = readSafetensorsSync(path.join(dir, 'model.safetensors'));
  const r = openHfEngine(dir, { quant: 'q8_0', kernels: jsQuantKernels, maxMemory: 1e9 });
  try {
    const names = { w1: 'w1', w3: 'w3', w2: 'w2' } as const;
    for (const role of Object.keys(names) as (keyof typeof names)[]) {
      const t = st.tensors.get(`model.layers.1.block_sparse_moe.experts.5.${role}.weight`)!;
      const vals = bf16ToF32(t.data as Uint16Array);
      const [rows, cols] = t.shape;
      const w = r.experts.get(1, 5)[role]!;
      assert.deepEqual(jsQuantKernels.bytesOf!(w), quantizeMatrix(vals, rows, cols, 'q8_0').data, `expert 5 ${role}`);
    }
  } finally {
    r.close();
  }
});

test('several shards and the fused 3-D expert layout offload to the same tokens', () => {
  const dir = save('sharded', { maxShardBytes: 150_000 });
  const shards = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  assert.ok(shards.length >= 3, `expected several shards, got ${shards.join(', ')}`);
  const want = reference(dir, 'f32');
  const a = openHfEngine(dir, { maxMemory: smallBudget(dir, 'f32', true) });
  assert.deepEqual(greedy(a.engine, 16).ids, want.ids);
  a.close();

  // rewrite the per-expert tensors as transformers' fused gate_up_proj [E, 2f, d] / down_proj [E, d, f]
  const fused = path.join(root, 'fused');
  fs.mkdirSync(fused);
  for (const f of fs.readdirSync(dir).filter((f) => !f.endsWith('.safetensors') && !f.endsWith('.index.json'))) fs.copyFileSync(path.join(dir, f), path.join(fused, f));
  const all = new Map<string, TensorEntry>();
  for (const s of shards) for (const [k, v] of readSafetensorsSync(path.join(dir, s)).tensors) all.set(k, v);
  const out = new Map<string, TensorEntry>();
  for (const [k, v] of all) if (!/\.experts\.\d+\./.test(k)) out.set(k, v);
  for (let l = 0; l < 3; l++) {
    const b = `model.layers.${l}.block_sparse_moe.experts`;
    const gu = new Float32Array(E * 2 * F * D);
    const dn = new Float32Array(E * D * F);
    for (let e = 0; e < E; e++) {
      gu.set(all.get(`${b}.${e}.w1.weight`)!.data as Float32Array, e * 2 * F * D);
      gu.set(all.get(`${b}.${e}.w3.weight`)!.data as Float32Array, e * 2 * F * D + F * D);
      dn.set(all.get(`${b}.${e}.w2.weight`)!.data as Float32Array, e * D * F);
    }
    out.set(`${b}.gate_up_proj`, { dtype: 'float32', shape: [E, 2 * F, D], data: gu });
    out.set(`${b}.down_proj`, { dtype: 'float32', shape: [E, D, F], data: dn });
  }
  writeSafetensorsSync(path.join(fused, 'model.safetensors'), out);
  const b = openHfEngine(fused, { maxMemory: smallBudget(fused, 'f32', true) });
  assert.deepEqual(greedy(b.engine, 16).ids, want.ids);
  b.close();
});

test('a shard cut short under an open engine is a one-line error naming the tensor, expert and byte offset', () => {
  const dir = save('trunc');
  const file = path.join(dir, 'model.safetensors');
  const r = openHfEngine(dir, { maxMemory: smallBudget(dir, 'f32', false), prefetch: false });
  // cut the file inside the expert tensor stored last: the engine reads it only when routed to it
  const h = new SafetensorsReader(file);
  const last = [...h.entries].filter(([n]) => /\.experts\.\d+\./.test(n)).sort((a, b) => b[1].begin - a[1].begin)[0];
  h.close();
  fs.truncateSync(file, last[1].begin + 10);
  assert.throws(
    () => {
      for (let i = 0; i < 8; i++) greedy(r.engine, 16);
    },
    (e: Error) =>
      /^offload .*model\.safetensors: tensor "model\.layers\.\d\.block_sparse_moe\.experts\.\*\.w[123]\.weight" expert \d+: \d+ bytes at byte \d+ run past the end of the file/.test(e.message) &&
      !e.message.includes('\n'),
  );
  r.close();
});

test('a layer whose experts are stored in different dtypes is refused with a one-line error naming both tensors', () => {
  const dir = save('mixed');
  const file = path.join(dir, 'model.safetensors');
  const st = readSafetensorsSync(file);
  const name = 'model.layers.0.block_sparse_moe.experts.3.w1.weight';
  const t = st.tensors.get(name)!;
  st.tensors.set(name, { dtype: 'float16', shape: t.shape, data: new Uint16Array((t.data as Float32Array).length) });
  writeSafetensorsSync(file, st.tensors);
  assert.throws(
    () => openHfEngine(dir, { maxMemory: 1e9 }),
    (e: Error) => e.message.includes(`${name} is F16 but model.layers.0.block_sparse_moe.experts.0.w1.weight is F32`) && !e.message.includes('\n'),
  );
});

test('generate --model <hf dir> --max-memory through the CLI: the same greedy text as in memory; tq_e refused in one line', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  const dir = save('cli');
  const gen = (extra: string[]) =>
    spawnSync(process.execPath, [cli, 'generate', '--model', dir, '--prompt', 'Hello, w', '--max-tokens', '12', '--temperature', '0', '--json', ...extra], { encoding: 'utf8', timeout: 120_000 });
  const mem = gen([]);
  assert.equal(mem.status, 0, mem.stderr);
  const off = gen(['--max-memory', String(smallBudget(dir, 'f32', true))]);
  assert.equal(off.status, 0, off.stderr);
  assert.equal(JSON.parse(off.stdout).ids.length, 12);
  assert.deepEqual(JSON.parse(off.stdout).ids, JSON.parse(mem.stdout).ids);
  assert.equal(JSON.parse(off.stdout).text, JSON.parse(mem.stdout).text);
  const bad = gen(['--max-memory', '1GB', '--quant', 'tq_e']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr.trim(), /^[^\n]*--quant tq_e is not supported with --max-memory[^\n]*$/);
});
