/** Expert offloading: the same tokens and logits as in memory, a bounded cache, one-line errors, stored blocks used as they are. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { exportGGUF, fromGGUF, GGUFFile } from '../../src/io/gguf/index.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { openGGUFEngine, ggufWeightSource, offloadHitRate } from '../../src/infer/offload.js';
import { argmax } from '../../src/infer/sampling.js';
import { jsQuantKernels } from '../../src/kernels/quant.js';
import { ARCHS } from '../../src/io/gguf/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-offload-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function tinyConfig(extra: Record<string, unknown> = {}) {
  return parseModelConfig({
    vocab_size: 256,
    hidden_size: 64,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    moe_intermediate_size: 64,
    num_local_experts: 8,
    num_experts_per_tok: 2,
    max_position_embeddings: 64,
    initializer_range: 0.2,
    ...extra,
  });
}

function writeModel(name: string, quant: 'q8_0' | 'q4_0' | 'f32', extra: Record<string, unknown> = {}): { file: string; model: MoETransformerLM } {
  const model = new MoETransformerLM(tinyConfig(extra), 5).eval();
  const file = path.join(dir, name);
  exportGGUF(model, new ByteTokenizer(), file, { quant });
  return { file, model };
}

/** Greedy decode from `prompt`: the ids and every step's logits. */
function greedy(eng: DecodeEngine, prompt: Int32Array, steps: number, each?: () => void): { ids: number[]; logits: Float32Array[] } {
  eng.reset();
  let l = eng.forward(prompt);
  const ids: number[] = [];
  const logits: Float32Array[] = [l];
  for (let i = 0; i < steps; i++) {
    const t = argmax(l.subarray(0, 256));
    ids.push(t);
    l = eng.forward(Int32Array.of(t));
    logits.push(l);
    each?.();
  }
  return { ids, logits };
}

const prompt = Int32Array.from([72, 101, 108, 108, 111, 44, 32, 119]);

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  a.forEach((x, i) => x.forEach((v, j) => (m = Math.max(m, Math.abs(v - b[i][j])))));
  return m;
}

for (const quant of ['q8_0', 'q4_0'] as const) {
  test(`offloaded ${quant} experts: same greedy tokens and logits as in memory, cache within its byte bound`, () => {
    const { file } = writeModel(`m-${quant}.gguf`, quant);
    const ref = openGGUFEngine(file);
    const want = greedy(ref.engine, prompt, 20);
    assert.equal(ref.experts.getStats().allResident, true);
    const resident = ref.engine.weightBytes + ref.engine.kvBytes;
    const eb = ref.experts.bytesPerExpert;
    ref.close();
    for (const prefetch of [true, false]) {
      // room for 3 experts of 24 (plus 2 staging slots with prefetch): most lookups must go to the file
      const maxMemory = resident + (3 + (prefetch ? 2 : 0)) * eb + 100;
      const off = openGGUFEngine(file, { maxMemory, prefetch });
      const s0 = off.experts.getStats();
      assert.equal(s0.allResident, false);
      assert.equal(s0.cacheSlots, 3);
      assert.ok(s0.residentBytes + s0.stagingBytes + s0.cacheBytes <= maxMemory);
      const got = greedy(off.engine, prompt, 20, () => assert.ok(off.experts.cachedCount <= 3));
      assert.deepEqual(got.ids, want.ids);
      assert.ok(maxDiff(got.logits, want.logits) < 1e-5, `logits differ by ${maxDiff(got.logits, want.logits)}`);
      const s = off.experts.getStats();
      assert.ok(s.misses + s.prefetchHits > 20, `expected reads, got ${JSON.stringify(s)}`);
      assert.equal(s.lookups, s.hits + s.prefetchHits + s.misses);
      assert.ok(s.bytesRead >= (s.misses + s.prefetchHits) * eb);
      if (prefetch) assert.ok(s.prefetchIssued > 0 && s.prefetchHits > 0, `prefetch never served: ${JSON.stringify(s)}`);
      else assert.equal(s.prefetchHits, 0);
      assert.ok(offloadHitRate(s) < 1);
      off.close();
    }
  });
}

test('stored Q8_0/Q4_0 blocks reach the kernels byte for byte (experts and projections)', () => {
  for (const quant of ['q8_0', 'q4_0'] as const) {
    const { file } = writeModel(`bytes-${quant}.gguf`, quant);
    const r = openGGUFEngine(file, { kernels: jsQuantKernels });
    const f = GGUFFile.open(file);
    try {
      for (const [role, tensor] of [
        ['w1', 'ffn_gate_exps'],
        ['w3', 'ffn_up_exps'],
        ['w2', 'ffn_down_exps'],
      ] as const) {
        const raw = f.readRaw(`blk.1.${tensor}.weight`);
        const stride = raw.length / 8;
        const w = r.experts.get(1, 5)[role]!;
        assert.equal(w.format, quant);
        assert.deepEqual(jsQuantKernels.bytesOf!(w), raw.subarray(5 * stride, 6 * stride), `${tensor} expert 5`);
      }
      const src = ggufWeightSource(f, ARCHS[r.arch].ropeAdjacent, r.config);
      const v = src('layers.2.self_attn.v_proj.weight', 64, 64)!;
      assert.equal(v.format, quant);
      assert.deepEqual(v.data, f.readRaw('blk.2.attn_v.weight'));
    } finally {
      f.close();
      r.close();
    }
  }
});

test('offloaded engine matches an engine on the fully loaded model over the same blocks', () => {
  const { file } = writeModel('same.gguf', 'q8_0');
  const g = fromGGUF(file);
  const f = GGUFFile.open(file);
  const weights = ggufWeightSource(f, ARCHS[g.arch].ropeAdjacent, g.config);
  // the fully loaded model's experts are dequantised f32; q8_0 re-quantisation of them reproduces the blocks up to the f16 scale
  const full = new DecodeEngine(g.model, { quant: 'q8_0', weights });
  f.close();
  const a = greedy(full, prompt, 12);
  const r = openGGUFEngine(file, { maxMemory: 0.6 * fs.statSync(file).size + 200_000 });
  const b = greedy(r.engine, prompt, 12);
  r.close();
  assert.deepEqual(b.ids, a.ids);
  assert.ok(maxDiff(a.logits, b.logits) < 1e-3, `logits differ by ${maxDiff(a.logits, b.logits)}`);
});

test('a budget below one layer of top-k experts is a one-line error naming maxMemory and the split', () => {
  const { file } = writeModel('small.gguf', 'q8_0');
  const ref = openGGUFEngine(file);
  const resident = ref.engine.weightBytes + ref.engine.kvBytes;
  const eb = ref.experts.bytesPerExpert;
  ref.close();
  assert.throws(
    () => openGGUFEngine(file, { maxMemory: resident + 3 * eb }), // staging 2 + cache 1 < top-2
    (e: Error) => /^offload: maxMemory .* too small: resident weights and KV cache take .*top-2 experts need/.test(e.message) && !e.message.includes('\n'),
  );
  assert.throws(() => openGGUFEngine(file, { maxMemory: -1 }), /maxMemory must be a positive number/);
});

test('a truncated file is a one-line error naming the tensor and byte offset', () => {
  const { file } = writeModel('trunc.gguf', 'q8_0');
  const size = fs.statSync(file).size;
  const ref = openGGUFEngine(file);
  const budget = ref.engine.weightBytes + ref.engine.kvBytes + 6 * ref.experts.bytesPerExpert;
  ref.close();
  const cut = path.join(dir, 'cut.gguf');
  fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, size - 5000));
  assert.throws(
    () => openGGUFEngine(cut, { maxMemory: budget }),
    (e: Error) => /tensor "blk\.\d\.[a-z_]+\.weight".*runs past the end of the file at byte \d+/.test(e.message) && !e.message.includes('\n'),
  );
  // truncated after opening: the on-demand read names the expert's tensor and offset
  const late = path.join(dir, 'late.gguf');
  fs.copyFileSync(file, late);
  const r = openGGUFEngine(late, { maxMemory: budget, prefetch: false });
  fs.truncateSync(late, size - 20000);
  assert.throws(
    () => greedy(r.engine, prompt, 10),
    (e: Error) => /^offload .*late\.gguf: tensor "blk\.2\.ffn_(gate|up|down)_exps\.weight" expert \d+: \d+ bytes at byte \d+ run past the end of the file/.test(e.message) && !e.message.includes('\n'),
  );
  r.close();
});

test('skipThreshold drops 2nd..kth experts below it; capacityFactor drops only in prompt batches', () => {
  const { model } = writeModel('skip.gguf', 'f32', { norm_topk_prob: true });
  // top-2 with every 2nd expert skipped (a renormalised 2nd weight is at most 0.5) is top-1 with weight 1
  const top1 = new MoETransformerLM(tinyConfig({ norm_topk_prob: true, num_experts_per_tok: 1 }), 0).eval();
  top1.loadStateDict(model.stateDict());
  const skip = new DecodeEngine(model, { skipThreshold: 0.51 });
  const one = new DecodeEngine(top1);
  const a = greedy(skip, prompt, 8);
  const b = greedy(one, prompt, 8);
  assert.deepEqual(a.ids, b.ids);
  assert.ok(maxDiff(a.logits, b.logits) < 1e-5);
  assert.equal(skip.drops.skipped, skip.drops.assignments / 2);
  // a low threshold skips some but not all
  const some = new DecodeEngine(model, { skipThreshold: 0.45 });
  greedy(some, prompt, 8);
  assert.ok(some.drops.skipped > 0 && some.drops.skipped < some.drops.assignments / 2, JSON.stringify(some.drops));

  const cap = new DecodeEngine(model, { capacityFactor: 0.5 });
  cap.forward(prompt);
  const afterPrompt = cap.drops.capacityDropped;
  // 8 tokens x 2 over 8 experts at factor 0.5: at most 1 assignment per expert and layer
  assert.ok(afterPrompt >= 3 * (16 - 8), `dropped ${afterPrompt}`);
  cap.forward(Int32Array.of(65));
  assert.equal(cap.drops.capacityDropped, afterPrompt, 'a decode step dropped assignments');
  const wide = new DecodeEngine(model, { capacityFactor: 8 });
  const plain = new DecodeEngine(model);
  assert.ok(maxDiff([wide.forward(prompt, true)], [plain.forward(prompt, true)]) === 0);
  assert.equal(wide.drops.capacityDropped, 0);
  assert.throws(() => new DecodeEngine(model, { skipThreshold: 1 }), /skipThreshold must be in \[0, 1\)/);
  assert.throws(() => new DecodeEngine(model, { capacityFactor: -1 }), /capacityFactor must be 0/);
});

test('synth writes streamed real-shape GGUF files that load with experts offloaded, seeded', async () => {
  const { writeSynthGGUF, randomBlocks } = await import('../../src/io/gguf/synth.js');
  const tiny = {
    olmoe: { hidden_size: 64, num_attention_heads: 4, num_local_experts: 8, moe_intermediate_size: 64 },
    qwen3: { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, num_local_experts: 16, moe_intermediate_size: 96 },
  };
  for (const [shape, override, arch] of [
    ['olmoe-1b-7b', tiny.olmoe, 'olmoe'],
    ['qwen3-30b-a3b', tiny.qwen3, 'qwen3moe'],
  ] as const) {
    const file = path.join(dir, `${shape}.gguf`);
    const r = writeSynthGGUF(shape, file, { layers: 2, quant: 'q4_0', seed: 3, context: 64, override: { ...override, num_experts_per_tok: 2 } });
    assert.equal(r.bytes, fs.statSync(file).size);
    const f = GGUFFile.open(file);
    assert.equal(f.getString('general.architecture'), arch);
    const gate = f.tensor('blk.1.ffn_gate_exps.weight');
    assert.deepEqual(gate.ne, [64, override.moe_intermediate_size, override.num_local_experts]);
    assert.equal(gate.type.name, 'Q4_0');
    // expert bytes are the seeded random blocks, the same on every write
    const raw = f.readRaw('blk.1.ffn_gate_exps.weight');
    f.close();
    const again = path.join(dir, `${shape}-2.gguf`);
    writeSynthGGUF(shape, again, { layers: 2, quant: 'q4_0', seed: 3, context: 64, override: { ...override, num_experts_per_tok: 2 } });
    assert.deepEqual(fs.readFileSync(again), fs.readFileSync(file));
    const e = openGGUFEngine(file, { maxMemory: 1e9 });
    assert.equal(e.config.moe_intermediate_size, override.moe_intermediate_size);
    assert.equal(e.arch, arch);
    const l = e.engine.forward(prompt);
    assert.ok(l.every(Number.isFinite));
    e.close();
    assert.ok(raw.length > 0);
  }
  // q8_0 blocks never hold -128 (outside ggml's quantiser range)
  const b = randomBlocks('q8_0', 64, 64, 0.1, 1);
  for (let i = 0; i < b.length; i += 34) for (let j = 2; j < 34; j++) assert.notEqual(b[i + j], 128);
  assert.throws(() => writeSynthGGUF('gpt-5', path.join(dir, 'x.gguf')), /unknown shape "gpt-5" \(known: olmoe-1b-7b, qwen3-30b-a3b\)/);
  assert.throws(() => writeSynthGGUF('olmoe-1b-7b', path.join(dir, 'x.gguf'), { layers: 17 }), /layers must be an integer in \[1, 16\]/);
});

test('routingLoss: the baseline equals quantizedLoss f32; skipping and dropping change the loss and report their shares', async () => {
  const { routingLoss, quantizedLoss } = await import('../../src/infer/quality.js');
  const model = new MoETransformerLM(tinyConfig({ norm_topk_prob: true }), 9).eval();
  const tok = new ByteTokenizer();
  const text = 'First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. '.repeat(3);
  const r = routingLoss(model, tok, text, { settings: [{}, { skipThreshold: 0.51 }, { capacityFactor: 0.5 }], window: 32 });
  const q = quantizedLoss(model, tok, text, { quants: ['f32'], window: 32 });
  assert.ok(Math.abs(r[0].loss - q[0].loss) < 1e-9);
  assert.equal(r[0].skippedShare, 0);
  assert.equal(r[0].droppedShare, 0);
  assert.ok(Math.abs(r[1].skippedShare - 0.5) < 1e-9, `skipped ${r[1].skippedShare}`);
  assert.ok(r[2].droppedShare > 0.3, `dropped ${r[2].droppedShare}`);
  assert.notEqual(r[1].loss, r[0].loss);
  assert.notEqual(r[2].loss, r[0].loss);
});
