import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { f16BitsToF32 } from '../../src/tensor/dtype.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer, HfTokenizer } from '../../src/data/tokenizer/index.js';
import { fileURLToPath } from 'node:url';
import {
  GGUFFile,
  GGUFError,
  serializeGGUF,
  writeGGUFSync,
  encodeTensor,
  decodeTensor,
  exportGGUF,
  fromGGUF,
  permuteRopeRows,
  isGGUFFile,
  tokenizerMetadata,
  gguf,
  ggufArray,
  type GGUFValue,
  type GGUFTensorInput,
} from '../../src/io/gguf/index.js';
import { tmpDir } from '../train/helpers.js';

const dir = tmpDir('gguf');
await initBackend('js');

function f32Tensor(name: string, ne: number[], seed: number, type = 'F32'): GGUFTensorInput & { values: Float32Array } {
  const n = ne.reduce((a, b) => a * b, 1);
  const values = new Rng(seed).fillNormal(new Float32Array(n));
  return { name, ne, type, data: encodeTensor(values, type as 'F32', ne[0]), values };
}

test('metadata of every GGUF value type and tensors of every supported ggml type round-trip', () => {
  const meta = new Map<string, GGUFValue>([
    ['general.architecture', gguf('string', 'llama')],
    ['general.alignment', gguf('u32', 64)],
    ['t.u8', gguf('u8', 255)],
    ['t.i8', gguf('i8', -128)],
    ['t.u16', gguf('u16', 65535)],
    ['t.i16', gguf('i16', -32768)],
    ['t.u32', gguf('u32', 0xffffffff)],
    ['t.i32', gguf('i32', -0x80000000)],
    ['t.f32', gguf('f32', 1.5)],
    ['t.bool', gguf('bool', true)],
    ['t.u64', gguf('u64', 0xffffffffffffffffn)],
    ['t.i64', gguf('i64', -0x8000000000000000n)],
    ['t.f64', gguf('f64', Math.PI)],
    ['t.string', gguf('string', 'café 日本 🙂')],
    ['t.strings', ggufArray('string', ['a', '', 'Ġb'])],
    ['t.i32s', ggufArray('i32', [1, -2, 3])],
    ['t.empty', ggufArray('string', [])],
    ['t.nested', { type: 'array', itemType: 'array', value: [ggufArray('u8', [1, 2]), ggufArray('f32', [0.25])] }],
  ]);
  const tensors = [f32Tensor('a', [64, 3], 1, 'F32'), f32Tensor('b', [32, 2, 2], 2, 'F16'), f32Tensor('c', [7], 3, 'BF16'), f32Tensor('d', [64, 2], 4, 'Q8_0'), f32Tensor('e', [32, 3], 5, 'Q4_0')];
  const file = path.join(dir, 'all.gguf');
  writeGGUFSync(file, meta, tensors);
  const f = GGUFFile.open(file);
  try {
    assert.equal(f.version, 3);
    assert.equal(f.alignment, 64);
    assert.equal(f.dataOffset % 64, 0);
    assert.deepEqual(
      [...f.metadata.entries()],
      [...meta.entries()].map(([k, v]) => [k, v.type === 'f32' ? { ...v, value: Math.fround(v.value as number) } : v]),
    );
    for (const t of tensors) {
      const info = f.tensor(t.name);
      assert.deepEqual(info.ne, t.ne);
      assert.equal(info.type.name, t.type);
      assert.equal(info.offset % 64, 0);
      assert.deepEqual(f.readRaw(t.name), t.data);
    }
    assert.deepEqual(f.readFloat32('a'), tensors[0].values);
  } finally {
    f.close();
  }
  assert.ok(isGGUFFile(file));
  assert.ok(!isGGUFFile(dir));
});

test('Q8_0 and Q4_0 blocks are laid out exactly as ggml defines them', () => {
  // Q8_0: d = max|x| / 127 = 1 here; q = roundf(x / d), half away from zero
  const x = new Float32Array(32);
  x.set([127, -2.5, 2.5, 0.49, -126.6, 3.5]);
  const q8 = encodeTensor(x, 'Q8_0', 32);
  assert.equal(q8.length, 34);
  assert.equal(f16BitsToF32(q8[0] | (q8[1] << 8)), 1);
  assert.deepEqual(Array.from(new Int8Array(q8.buffer, 2, 6)), [127, -3, 3, 0, -127, 4]);
  assert.deepEqual(Array.from(decodeTensor(q8, 'Q8_0', 32).subarray(0, 6)), [127, -3, 3, 0, -127, 4]);
  // Q4_0: d = (value of largest magnitude) / -8 = 1 here; q = min(15, trunc(x / d + 8.5)); byte j = q[j] | q[j + 16] << 4
  const y = new Float32Array(32);
  y.set([-8, 7.6, 0, -0.5, -0.6]);
  y[16] = 3;
  y[17] = -7.9;
  const q4 = encodeTensor(y, 'Q4_0', 32);
  assert.equal(q4.length, 18);
  assert.equal(f16BitsToF32(q4[0] | (q4[1] << 8)), 1);
  assert.deepEqual(Array.from(q4.subarray(2, 7)), [0 | (11 << 4), 15 | (0 << 4), 8 | (8 << 4), 8 | (8 << 4), 7 | (8 << 4)]);
  const back = decodeTensor(q4, 'Q4_0', 32);
  assert.deepEqual([back[0], back[1], back[2], back[3], back[4], back[16], back[17]], [-8, 7, 0, 0, -1, 3, -8]);
});

test('quantisation error stays within one step of each block', () => {
  const x = new Rng(3).fillNormal(new Float32Array(32 * 64));
  for (const [type, steps] of [
    ['Q8_0', 127],
    ['Q4_0', 8],
  ] as const) {
    const back = decodeTensor(encodeTensor(x, type, 256), type, x.length);
    for (let b = 0; b < x.length / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
      for (let j = 0; j < 32; j++) {
        const e = Math.abs(x[b * 32 + j] - back[b * 32 + j]);
        assert.ok(e <= (amax / steps) * 1.002, `${type} block ${b}: error ${e} > step ${amax / steps}`);
      }
    }
  }
  assert.throws(() => encodeTensor(new Float32Array(48), 'Q8_0', 48), /row length 48 is not a multiple of the block size 32/);
});

/** A small valid file plus the byte offsets of its fields, for corrupting them. */
function smallFile(): { bytes: Uint8Array; at: Record<string, number> } {
  const meta = new Map<string, GGUFValue>([['general.architecture', gguf('string', 'llama')]]);
  const bytes = serializeGGUF(meta, [f32Tensor('w', [32, 2], 1)]);
  const dv = new DataView(bytes.buffer);
  const keyLen = 8 + 'general.architecture'.length;
  const valAt = 24 + keyLen + 4; // value string length
  const tensorAt = valAt + 8 + 'llama'.length;
  const typeAt = tensorAt + 8 + 1 + 4 + 16;
  assert.equal(dv.getUint32(tensorAt + 9, true), 2, 'layout of the test file');
  return { bytes, at: { tensorCount: 8, kvCount: 16, valueLength: valAt, nDims: tensorAt + 9, type: typeAt, offset: typeAt + 4 } };
}

function openBytes(name: string, bytes: Uint8Array): GGUFFile {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return GGUFFile.open(file);
}

test('malformed files give one-line errors naming the field and byte offset', () => {
  const { bytes, at } = smallFile();
  const patch = (fn: (dv: DataView, b: Uint8Array) => void): Uint8Array => {
    const b = bytes.slice();
    fn(new DataView(b.buffer), b);
    return b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['magic', patch((_, b) => b.set([0x47, 0x47, 0x4d, 0x4c])), /magic at byte 0: expected "GGUF", got "GGML"/],
    ['version', patch((dv) => dv.setUint32(4, 9, true)), /version at byte 4: unsupported GGUF version 9/],
    ['tensor count', patch((dv) => dv.setBigUint64(at.tensorCount, 1n << 40n, true)), /tensor_count at byte 8: 1099511627776 tensors cannot fit/],
    ['kv count', patch((dv) => dv.setBigUint64(at.kvCount, 1n << 40n, true)), /kv_count at byte 16: 1099511627776 metadata pairs cannot fit/],
    ['u64 count', patch((dv) => dv.setBigUint64(at.kvCount, 1n << 62n, true)), /kv_count at byte 16: value 4611686018427387904 is too large/],
    [
      'string length',
      patch((dv) => dv.setBigUint64(at.valueLength, 1n << 50n, true)),
      new RegExp(`metadata "general.architecture" at byte ${at.valueLength}: string length \\d+ runs past the end of the file`),
    ],
    ['unknown type', patch((dv) => dv.setUint32(at.type, 99, true)), new RegExp(`tensor "w" type at byte ${at.type}: unknown ggml type 99`)],
    ['n_dims', patch((dv) => dv.setUint32(at.nDims, 7, true)), new RegExp(`tensor "w" n_dims at byte ${at.nDims}: must be 1..4, got 7`)],
    ['offset alignment', patch((dv) => dv.setBigUint64(at.offset, 3n, true)), new RegExp(`tensor "w" offset at byte ${at.offset}: 3 is not a multiple of general.alignment 32`)],
    ['offset past end', patch((dv) => dv.setBigUint64(at.offset, 1n << 20n, true)), /tensor "w" \(info at byte \d+\): data \[\d+, \d+\) runs past the end of the file/],
    ['truncated data', bytes.slice(0, bytes.length - 10), /tensor "w" \(info at byte \d+\): data \[\d+, \d+\) runs past the end of the file at byte \d+ \(truncated\?\)/],
    ['truncated header', bytes.slice(0, 60), /metadata "general.architecture" length at byte 56: needs 8 bytes but the file ends at byte 60/],
    ['empty', new Uint8Array(0), /magic at byte 0: needs 4 bytes but the file ends at byte 0/],
  ];
  for (const [name, b, re] of cases) {
    assert.throws(
      () => openBytes(`bad-${name.replace(/\W/g, '_')}.gguf`, b),
      (e: Error) => {
        assert.ok(e instanceof GGUFError, `${name}: ${e.constructor.name}: ${e.message}`);
        assert.match(e.message, re, name);
        assert.ok(!e.message.includes('\n'), `${name}: one line`);
        return true;
      },
    );
  }
});

function model(over: object, seed = 3): MoETransformerLM {
  const m = new MoETransformerLM(
    parseModelConfig({
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 32,
      intermediate_size: 64,
      max_position_embeddings: 32,
      ...over,
    }),
    seed,
  );
  return m.eval();
}

function logits(m: MoETransformerLM, ids: Int32Array): Float32Array {
  return noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
}

test('export then fromGGUF gives the same model (f32 exactly; f16 and q8_0 within their rounding)', () => {
  const tok = new ByteTokenizer();
  const ids = tok.encode('round trip!');
  const variants: [string, object][] = [
    ['llama', {}],
    ['dense', { num_local_experts: 0 }],
    ['untied', { tie_word_embeddings: false }],
    ['bailingmoe shared', { n_shared_experts: 1, norm_topk_prob: false }],
    ['bailingmoe', { norm_topk_prob: false }],
    ['qwen2moe', { norm_topk_prob: false, qkv_bias: true, n_shared_experts: 1, shared_expert_gate: true, shared_expert_intermediate_size: 64, num_key_value_heads: 1 }],
    ['qwen3moe', { qk_norm: 'head', num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 }],
    ['olmoe', { qk_norm: 'full', norm_topk_prob: false }],
    ['llama3 rope', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }],
  ];
  for (const [name, over] of variants) {
    const m = model(over);
    // non-zero biases (they start at 0, which import reads as "no biases")
    for (const [n, t] of m.stateDict()) if (n.endsWith('.bias')) t.data.forEach((_, i) => (t.data[i] = 0.01 * (i + 1)));
    const file = path.join(dir, `rt-${name.replace(/\W/g, '_')}.gguf`);
    const rep = exportGGUF(m, tok, file, { quant: 'f32', arch: name.startsWith('q') || name.startsWith('o') ? (name as 'olmoe') : 'auto' });
    const g = fromGGUF(file);
    assert.equal(g.arch, rep.arch);
    assert.equal(rep.arch, name === 'dense' || name === 'untied' || name === 'llama3 rope' ? 'llama' : name.split(' ')[0]);
    for (const k of [
      'num_local_experts',
      'n_shared_experts',
      'norm_topk_prob',
      'tie_word_embeddings',
      'hidden_size',
      'rope_theta',
      'qk_norm',
      'qkv_bias',
      'shared_expert_gate',
      'shared_expert_intermediate_size',
      'num_key_value_heads',
      'head_dim',
      'rope_scaling',
    ] as const) {
      assert.deepEqual(g.config[k], m.config[k], `${name}: ${k}`);
    }
    for (const [n, t] of m.stateDict()) assert.deepEqual(g.model.stateDict().get(n)!.data, t.data, `${name}: ${n}`);
    assert.deepEqual(logits(g.model, ids), logits(m, ids));
  }
  const m = model({});
  // scaled so the logits spread out (the default init is near-uniform) and the tolerance means something
  for (const [n, t] of m.stateDict()) if (!n.includes('norm')) t.data.forEach((v, i) => (t.data[i] = 3 * v));
  const ref = logits(m, ids);
  for (const [quant, tol] of [
    ['f16', 2e-3],
    ['q8_0', 3e-2],
  ] as const) {
    const file = path.join(dir, `rt-${quant}.gguf`);
    exportGGUF(m, tok, file, { quant });
    const g = fromGGUF(file);
    const got = logits(g.model, ids);
    const scale = ref.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    const diff = ref.reduce((a, x, i) => Math.max(a, Math.abs(x - got[i])), 0);
    assert.ok(diff <= tol * scale, `${quant}: ${diff} > ${tol} x ${scale}`);
    // the stored blocks stay available (for quantised kernels)
    const t = quant === 'q8_0' ? 'Q8_0' : 'F16';
    assert.equal(g.types.get('blk.0.ffn_up_exps.weight'), t);
    assert.equal(g.types.get('blk.0.ffn_gate_inp.weight'), 'F32');
    assert.equal(g.rawTensor('blk.0.ffn_up_exps.weight').length, quant === 'q8_0' ? ((32 * 32 * 4) / 32) * 34 : 32 * 32 * 4 * 2);
  }
});

test('rows that are not a multiple of 32 fall back to f16, reported; strictQuant makes it an error', () => {
  const m = model({ hidden_size: 48, num_attention_heads: 2, moe_intermediate_size: 32 });
  const file = path.join(dir, 'fallback.gguf');
  const rep = exportGGUF(m, new ByteTokenizer(), file, { quant: 'q8_0' });
  assert.ok(rep.fallbacks.some((f) => f.name === 'blk.0.attn_q.weight' && /48 are not a multiple of 32/.test(f.reason)));
  assert.ok(!rep.fallbacks.some((f) => f.name === 'blk.0.ffn_down_exps.weight'), 'down_exps rows are 32 wide');
  const g = fromGGUF(file);
  assert.equal(g.types.get('blk.0.attn_q.weight'), 'F16');
  assert.equal(g.types.get('blk.0.ffn_down_exps.weight'), 'Q8_0');
  assert.throws(() => exportGGUF(m, new ByteTokenizer(), file, { quant: 'q8_0', strictQuant: true }), /tensor token_embd.weight: q8_0 needs rows of 48 to be a multiple of 32/);
});

test('q/k rows: the RoPE pair permutation is undone on import', () => {
  const w = new Rng(1).fillNormal(new Float32Array(16 * 3));
  const p = permuteRopeRows(w, 16, 3, 8);
  assert.deepEqual(Array.from(p.subarray(3, 6)), Array.from(w.subarray(4 * 3, 5 * 3)), 'adjacent row 1 <- half-split row 4 (head dim 8)');
  assert.deepEqual(permuteRopeRows(p, 16, 3, 8, true), w);
});

test('a model no llama.cpp architecture computes is refused with the mismatch named', () => {
  const tok = new ByteTokenizer();
  const file = path.join(dir, 'refused.gguf');
  const cases: [object, string | undefined, RegExp][] = [
    [{ router_type: 'expert-choice' }, undefined, /router "expert-choice": llama\.cpp routes by softmax top-k token choice only/],
    [{ router_type: 'hash' }, undefined, /router "hash"/],
    [{ router_type: 'soft' }, undefined, /router "soft"/],
    [{ decoder_sparse_step: 2, intermediate_size: 64 }, undefined, /llama: llama needs every layer MoE or none; decoder_sparse_step is 2.*bailingmoe: bailingmoe needs every layer MoE/],
    [{ norm_topk_prob: false }, 'llama', /architecture llama does not compute this model: llama renormalises the top-k weights/],
    [{ n_shared_experts: 1, norm_topk_prob: false }, 'qwen2moe', /qwen2moe multiplies its shared expert by a sigmoid gate \(ffn_gate_inp_shexp\); this model's shared experts are ungated/],
    [{}, 'qwen2moe', /qwen2moe keeps the raw top-k softmax probabilities; this model renormalises them/],
    [{}, 'qwen3moe', /qwen3moe applies a per-head q\/k RMSNorm .*; this model has no q\/k norm \(qk_norm "none"\)/],
    [{ qk_norm: 'head', norm_topk_prob: false }, 'qwen3moe', /qwen3moe renormalises the top-k weights/],
    [{ qk_norm: 'head' }, 'olmoe', /olmoe applies a q\/k RMSNorm over the whole projection .*qk_norm "head"/],
    [{ qk_norm: 'full', norm_topk_prob: false, num_key_value_heads: 1 }, 'olmoe', /olmoe normalises k over n_embd: grouped-query attention/],
    [{ qk_norm: 'head', first_k_dense_replace: 1 }, 'qwen3moe', /qwen3moe needs every layer MoE; first_k_dense_replace is 1/],
    [{ qk_norm: 'head', mlp_only_layers: [1] }, undefined, /qwen3moe: qwen3moe needs every layer MoE; mlp_only_layers is \[1\]/],
    [{ qkv_bias: true }, 'llama', /llama has no q\/k\/v biases; this model has them/],
    [{ num_local_experts: 0 }, 'qwen3moe', /qwen3moe needs experts/],
    [{ qk_norm: 'head', rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'qwen3moe', /rope_scaling yarn: not written for qwen3moe yet/],
    [{}, 'deepseek2', /deepseek2 export is not implemented yet: it needs multi-head latent attention/],
    [{ hidden_act: 'gelu' }, undefined, /hidden_act "gelu"/],
    [{ dispatch: 'capacity' }, undefined, /capacity dispatch drops tokens/],
    [{ expert_sizes: [32, 32, 64, 64] }, undefined, /heterogeneous expert widths/],
  ];
  for (const [over, arch, re] of cases) {
    assert.throws(
      () => exportGGUF(model(over), tok, file, { arch: arch as 'llama' }),
      (e: Error) => {
        assert.match(e.message, re);
        assert.ok(!e.message.includes('\n'));
        return true;
      },
    );
  }
  assert.ok(!fs.existsSync(file), 'nothing written');
});

test('Hugging Face tokenizers: byte-level BPE keeps its ids and round-trips; SentencePiece-style ones are refused by name', () => {
  const fix = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/tokenizers');
  const load = (n: string): HfTokenizer =>
    new HfTokenizer({ tokenizer: JSON.parse(fs.readFileSync(path.join(fix, n, 'tokenizer.json'), 'utf8')), config: JSON.parse(fs.readFileSync(path.join(fix, n, 'tokenizer_config.json'), 'utf8')) });
  const hf = load('bytelevel-chatml');
  const meta = new Map(tokenizerMetadata(hf).entries);
  assert.equal(meta.get('tokenizer.ggml.pre')!.value, 'qwen2');
  const tokens = meta.get('tokenizer.ggml.tokens')!.value as string[];
  assert.equal(tokens.length, hf.vocabSize);
  const eos = meta.get('tokenizer.ggml.eos_token_id')!.value as number;
  assert.equal(tokens[eos], '<|im_end|>');
  assert.equal((meta.get('tokenizer.ggml.token_type')!.value as number[])[eos], 3, 'special added tokens are control tokens');
  const file = path.join(dir, 'hf-tok.gguf');
  const m = model({ vocab_size: hf.vocabSize });
  exportGGUF(m, hf, file);
  const g = fromGGUF(file);
  assert.deepEqual(g.tokenizer.toJSON(), hf.toJSON());
  assert.deepEqual(Array.from(g.tokenizer.encode('hello <|im_end|> world')), Array.from(hf.encode('hello <|im_end|> world')));
  assert.throws(() => exportGGUF(model({ vocab_size: 277 }), load('spm-metaspace'), file), /gguf export: Hugging Face tokenizer model "BPE" with byte_fallback has no llama\.cpp mapping here/);
});
