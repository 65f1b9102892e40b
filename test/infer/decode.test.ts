/** The fast decode path against the eager reference: same logits, same greedy text, quantised quality. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad, scale } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { generate } from '../../src/infer/index.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { argmax } from '../../src/infer/sampling.js';

function model(extra: Record<string, unknown> = {}, seed = 3): MoETransformerLM {
  const cfg = parseModelConfig({
    vocab_size: 256,
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 96,
    moe_intermediate_size: 64,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    max_position_embeddings: 64,
    initializer_range: 0.2,
    ...extra,
  });
  return new MoETransformerLM(cfg, seed).eval();
}

function eagerLogits(m: MoETransformerLM, ids: Int32Array, chunks: number[]): Float32Array[] {
  const cache = m.emptyCache();
  const out: Float32Array[] = [];
  let p = 0;
  noGrad(() => {
    for (const n of chunks) {
      const { logits } = m.forward(ids.subarray(p, p + n), 1, n, { ctx: { training: false, step: 0, rng: new Rng(0) }, cache });
      out.push(logits.data.slice((n - 1) * m.config.vocab_size, n * m.config.vocab_size));
      p += n;
    }
  });
  return out;
}

/** Feeds IDS to eng in CHUNKS and checks each chunk's last logits against the eager reference ref. */
function assertChunksMatch(eng: DecodeEngine, ref: Float32Array[], tol = 1e-4): void {
  let p = 0;
  CHUNKS.forEach((n, i) => {
    const got = eng.forward(IDS.subarray(p, p + n));
    p += n;
    assert.ok(maxDiff(got, ref[i]) < tol, `chunk ${i}: max diff ${maxDiff(got, ref[i])}`);
  });
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const IDS = Int32Array.from({ length: 20 }, (_, i) => (i * 37 + 11) % 256);
const CHUNKS = [7, 1, 1, 5, 1, 1, 1, 1, 1, 1];

for (const [name, extra] of [
  ['MoE top-k, tied head', {}],
  [
    'GQA, qk_norm head, biases, untied head, dense layer, shared experts',
    { num_key_value_heads: 2, qk_norm: 'head', qkv_bias: true, tie_word_embeddings: false, first_k_dense_replace: 1, n_shared_experts: 1 },
  ],
  [
    'qk_norm full, gelu, multipliers, rope scaling',
    { qk_norm: 'full', hidden_act: 'gelu', embedding_multiplier: 2, residual_multiplier: 0.7, logits_scaling: 1.5, attention_multiplier: 0.2, rope_scaling: { rope_type: 'linear', factor: 2 } },
  ],
  ['capacity dispatch (runs the layer module)', { dispatch: 'capacity' }],
  ['the default train model: top-1 of 4 plus one shared expert', { n_shared_experts: 1, num_experts_per_tok: 1, norm_topk_prob: false }],
  ['two shared experts, gelu', { n_shared_experts: 2, hidden_act: 'gelu' }],
] as const) {
  test(`DecodeEngine f32 gives the eager cached logits: ${name}`, () => {
    const m = model(extra as Record<string, unknown>);
    const ref = eagerLogits(m, IDS, CHUNKS);
    const eng = new DecodeEngine(m);
    assertChunksMatch(eng, ref);
    assert.equal(eng.length, IDS.length);
  });
}

test('generate: fast and eager give the same greedy text; prompt/decode rates are reported', () => {
  const m = model();
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 30, temperature: 0 } as const;
  const eager = generate(m, tok, 'ROMEO: hello', { ...opts, engine: 'eager' });
  const fast = generate(m, tok, 'ROMEO: hello', { ...opts, engine: 'fast' });
  assert.deepEqual(fast.ids, eager.ids);
  assert.equal(fast.engine, 'fast f32');
  assert.equal(eager.engine, 'eager');
  assert.ok(fast.promptTokensPerSec > 0 && fast.decodeTokensPerSec > 0);
  // a prebuilt engine is reused (cache reset between calls), and sliding re-prefills it
  const eng = new DecodeEngine(m);
  const a = generate(m, tok, 'ROMEO: hello', { ...opts, engine: eng });
  const b = generate(m, tok, 'ROMEO: hello', { ...opts, engine: eng });
  assert.deepEqual(a.ids, eager.ids);
  assert.deepEqual(b.ids, eager.ids);
  const long = { maxNewTokens: 90, temperature: 0, contextOverflow: 'slide' } as const;
  assert.deepEqual(generate(m, tok, 'ab', { ...long, engine: 'fast' }).ids, generate(m, tok, 'ab', { ...long, engine: 'eager' }).ids);
});

test('quantised engines stay close to the float logits (q8_0 closer than q4_0)', () => {
  const m = model({}, 5);
  const ref = new DecodeEngine(m).forward(IDS);
  const rel = (fmt: 'q8_0' | 'q4_0'): number => {
    const e = new DecodeEngine(m, { quant: fmt });
    const got = e.forward(IDS);
    let num = 0;
    let den = 0;
    for (let i = 0; i < got.length; i++) {
      num += (got[i] - ref[i]) ** 2;
      den += ref[i] ** 2;
    }
    return Math.sqrt(num / den);
  };
  const r8 = rel('q8_0');
  const r4 = rel('q4_0');
  console.log(`relative logit error q8_0 ${r8.toFixed(4)} q4_0 ${r4.toFixed(4)}`);
  assert.ok(r8 < 0.1, `q8_0 relative logit error ${r8}`);
  assert.ok(r4 < 0.5 && r4 > r8, `q4_0 relative logit error ${r4} (q8_0 ${r8})`);
  const q8 = new DecodeEngine(m, { quant: 'q8_0' });
  const f32 = new DecodeEngine(m);
  assert.ok(q8.weightBytes < 0.4 * f32.weightBytes, `q8_0 holds ${q8.weightBytes} bytes vs f32 ${f32.weightBytes}`);
});

test('DecodeEngine errors: capacity, bad ids, unsupported models, bad quant', () => {
  const m = model();
  const e = new DecodeEngine(m, { capacity: 8 });
  assert.throws(() => e.forward(new Int32Array(9)), /9 tokens exceed the KV cache capacity 8/);
  assert.throws(() => e.forward(Int32Array.of(300)), /token id 300 at position 0 outside vocab_size 256/);
  assert.throws(() => new DecodeEngine(m, { quant: 'q3' as never }), /quant must be one of f32, q8_0, q4_0/);
  assert.throws(() => new DecodeEngine(m, { capacity: 65 }), /capacity must be an integer in \[1, 64\]/);
  const win = model({ sliding_window: 4 });
  assert.match(String(DecodeEngine.unsupported(win)), /sliding-window/);
  assert.throws(() => new DecodeEngine(win), /not supported by the fast path/);
  // auto falls back to eager for it
  assert.equal(generate(win, new ByteTokenizer(), 'a', { maxNewTokens: 2 }).engine, 'eager');
  assert.throws(() => generate(m, new ByteTokenizer(), 'a', { maxNewTokens: 2, engine: 'fast', traceRouting: true }), /traceRouting needs the eager engine/);
  assert.throws(() => generate(m, new ByteTokenizer(), 'a', { maxNewTokens: 2, engine: 'turbo' as never }), /engine must be/);
});

test('DecodeEngine on the wasm quant kernels gives the js kernels logits and the same greedy text', async () => {
  const { WasmQuantKernels } = await import('../../src/kernels/wasm/quant.js');
  const m = model();
  for (const quant of ['f32', 'q8_0', 'q4_0'] as const) {
    const js = new DecodeEngine(m, { quant }).forward(IDS);
    const wa = new DecodeEngine(m, { quant, kernels: new WasmQuantKernels() }).forward(IDS);
    assert.ok(maxDiff(js, wa) < 1e-3, `${quant}: ${maxDiff(js, wa)}`);
  }
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 20, temperature: 0 } as const;
  assert.deepEqual(generate(m, tok, 'hi', { ...opts, engine: 'fast', kernels: new WasmQuantKernels() }).ids, generate(m, tok, 'hi', { ...opts, engine: 'eager' }).ids);
});

test('selfCheck catches a model the fast path does not know of, and auto then stays eager', () => {
  const m = model();
  const eng = new DecodeEngine(m);
  assert.ok(eng.selfCheck() < 1e-5, `plain model: ${eng.selfCheck()}`);
  // a layer whose FFN does something the engine does not model (e.g. a future layer kind)
  const layer = m.layers[1];
  const orig = layer.ffn.bind(layer);
  layer.ffn = (n, ctx, j) => {
    const r = orig(n, ctx, j);
    return { ...r, y: scale(r.y, 3) };
  };
  assert.ok(eng.selfCheck() > 1e-3, `patched model: ${eng.selfCheck()}`);
  assert.equal(generate(m, new ByteTokenizer(), 'ab', { maxNewTokens: 3 }).engine, 'eager');
});

/** Qwen2-style: a sigmoid-gated shared expert and an MoE output bias (made non-zero so it counts). */
function gatedModel(): MoETransformerLM {
  const m = model({ n_shared_experts: 1, shared_expert_gate: true, shared_expert_intermediate_size: 96, moe_output_bias: true }, 5);
  const rng = new Rng(11);
  for (const l of m.layers) {
    l.moe_bias!.data.set(rng.fillUniform(new Float32Array(l.moe_bias!.data.length), -0.5, 0.5));
    // gates away from 0 so sigmoid(gate . x) varies by token
    const g = l.shared_expert_gate!.weight.data;
    for (let i = 0; i < g.length; i++) g[i] *= 5;
  }
  return m;
}

test('shared experts run on the fast path (compiled, quantised): gated Qwen2 form and the default model', () => {
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 24, temperature: 0 } as const;
  for (const [name, m] of [
    ['gated + bias', gatedModel()],
    ['default train model', model({ n_shared_experts: 1, num_experts_per_tok: 1, norm_topk_prob: false }, 9)],
  ] as const) {
    const ref = eagerLogits(m, IDS, CHUNKS);
    const eng = new DecodeEngine(m);
    // the MoE layers are compiled here, not sent to the layer module
    assert.ok(eng.expertBytes > 0, `${name}: no compiled experts`);
    let p = 0;
    CHUNKS.forEach((n, i) => {
      const got = eng.forward(IDS.subarray(p, p + n));
      p += n;
      let scaleRef = 0;
      for (const v of ref[i]) scaleRef = Math.max(scaleRef, Math.abs(v));
      assert.ok(maxDiff(got, ref[i]) < 1e-4 * (1 + scaleRef), `${name} chunk ${i}: max diff ${maxDiff(got, ref[i])}`);
    });
    assert.ok(eng.selfCheck() < 1e-5, `${name}: selfCheck ${eng.selfCheck()}`);
    // q8_0 (shared experts quantised too: fewer bytes than f32) stays close
    const f32 = new DecodeEngine(m).forward(IDS);
    const q8e = new DecodeEngine(m, { quant: 'q8_0' });
    const q8 = q8e.forward(IDS);
    let num = 0;
    let den = 0;
    for (let i = 0; i < q8.length; i++) {
      num += (q8[i] - f32[i]) ** 2;
      den += f32[i] ** 2;
    }
    assert.ok(Math.sqrt(num / den) < 0.1, `${name}: q8_0 relative logit error ${Math.sqrt(num / den)}`);
    assert.ok(q8e.weightBytes < 0.4 * eng.weightBytes, `${name}: q8_0 ${q8e.weightBytes} bytes vs f32 ${eng.weightBytes}`);
    assert.deepEqual(generate(m, tok, 'ROMEO:', { ...opts, engine: 'fast' }).ids, generate(m, tok, 'ROMEO:', { ...opts, engine: 'eager' }).ids, name);
  }
});

test('prepared activations on the wasm kernels: a 24-token prompt (expert tiles of 4) gives the js engine logits at every position and the same greedy tokens', async () => {
  const { WasmQuantKernels } = await import('../../src/kernels/wasm/quant.js');
  const m = model();
  const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 37 + 11) % 256);
  for (const quant of ['q8_0', 'q4_0'] as const) {
    const js = new DecodeEngine(m, { quant });
    const wa = new DecodeEngine(m, { quant, kernels: new WasmQuantKernels() });
    const lj = js.forward(ids, true);
    const lw = wa.forward(ids, true);
    assert.ok(maxDiff(lj, lw) < 1e-3, `${quant} prompt: ${maxDiff(lj, lw)}`);
    // greedy decode from there: the same 12 tokens, each step's logits within tolerance
    let a = lj.subarray(lj.length - m.config.vocab_size);
    let b = lw.subarray(lw.length - m.config.vocab_size);
    for (let s = 0; s < 12; s++) {
      const ta = argmax(a);
      assert.equal(argmax(b), ta, `${quant} step ${s}`);
      a = js.forward(Int32Array.of(ta));
      b = wa.forward(Int32Array.of(ta));
      assert.ok(maxDiff(a, b) < 1e-3, `${quant} step ${s}: ${maxDiff(a, b)}`);
    }
  }
});

test('LoRA experts (peft) run on the fast path: routed top-k and shared adapters on attention and a dense FFN give the eager logits', () => {
  const peft = { type: 'lora-experts', experts: 3, top_k: 2, rank: 2, shared: 1, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] };
  const m = model({ first_k_dense_replace: 1, peft }, 6);
  const rng = new Rng(12);
  // B starts at zero (the base exactly): give every adapter an output so leaving one out shows
  let adapters = 0;
  for (const [n, p] of m.namedParameters())
    if (/lora_(shared_)?B$/.test(n)) {
      p.data.set(rng.fillNormal(new Float32Array(p.data.length), 0.3));
      adapters++;
    }
  assert.equal(adapters, 2 * 11, 'routed + shared on q, k, v, o of both layers and gate, up, down of the dense one');
  const ref = eagerLogits(m, IDS, CHUNKS);
  const base = new DecodeEngine(model({ first_k_dense_replace: 1 }, 6)).forward(IDS.subarray(0, CHUNKS[0]));
  assert.ok(maxDiff(base, ref[0]) > 1e-2, `the adapters change the logits: ${maxDiff(base, ref[0])}`);
  assertChunksMatch(new DecodeEngine(m), ref);
});
