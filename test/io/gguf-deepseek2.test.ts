/**
 * deepseek2 GGUF export verified against llama.cpp itself (node-llama-cpp 3.21.1, prebuilt CPU binary): random-weight
 * DeepSeek-V2-like (softmax top-k, no groups, q_proj) and V3-like (sigmoid, groups, selection bias, q_lora, a leading dense
 * layer, routed scaling, shared experts) models give llama.cpp the same next-token distribution and greedy text, and the
 * file read back by moe-ts is the same model.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token, type ControlledEvaluateInputItem } from 'node-llama-cpp';
import { initBackend } from '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { exportGGUF, fromGGUF, type GGUFQuant } from '../../src/io/gguf/index.js';
import { Rng } from '../../src/tensor/random.js';
import { generate } from '../../src/infer/index.js';
import { tmpDir } from '../train/helpers.js';

let llama: Llama;
const dir = tmpDir('gguf-deepseek2');
const loaded: LlamaModel[] = [];

before(async () => {
  await initBackend('js');
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});

after(async () => {
  for (const m of loaded) await m.dispose();
  await llama?.dispose();
});

async function load(file: string): Promise<LlamaModel> {
  const m = await llama.loadModel({ modelPath: file });
  loaded.push(m);
  return m;
}

const kvF32 = { flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' } as const;

/** llama.cpp's next-token log-probabilities over the first V tokens (renormalised without its EOS token), after `ids`. */
async function llamaLogProbs(m: LlamaModel, ids: number[], V: number): Promise<Float64Array> {
  const ctx = await m.createContext({ contextSize: 64, threads: 1, ...kvF32 });
  try {
    const input: ControlledEvaluateInputItem[] = (ids as unknown as Token[]).map((t, i) => (i === ids.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
    const probs = (await ctx.getSequence().controlledEvaluate(input))[ids.length - 1]?.next?.probabilities;
    assert.ok(probs, 'llama.cpp returned no probabilities');
    let s = 0;
    for (let t = 0; t < V; t++) s += probs.get(t as unknown as Token) ?? 0;
    return Float64Array.from({ length: V }, (_, t) => Math.log((probs.get(t as unknown as Token) ?? 0) / s));
  } finally {
    await ctx.dispose();
  }
}

async function llamaGreedy(m: LlamaModel, ids: number[], n: number): Promise<number[]> {
  const ctx = await m.createContext({ contextSize: 128, threads: 1, ...kvF32 });
  try {
    const got: number[] = [];
    for await (const t of ctx.getSequence().evaluate(ids as unknown as Token[], { temperature: 0 })) {
      got.push(t as unknown as number);
      if (got.length === n) break;
    }
    return got;
  } finally {
    await ctx.dispose();
  }
}

function ourLogits(model: MoETransformerLM, ids: number[]): Float32Array {
  const V = model.config.vocab_size;
  const { logits } = noGrad(() => model.forward(Int32Array.from(ids), 1, ids.length, { ctx: { training: false, step: 0, rng: null as never } }));
  return logits.data.slice((ids.length - 1) * V, ids.length * V);
}

/** max |log p_ours - log p_llama| and max |logit|. */
function compare(ours: Float32Array, theirs: Float64Array): { diff: number; scale: number } {
  let m = -Infinity;
  for (const x of ours) m = Math.max(m, x);
  let s = 0;
  for (const x of ours) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  let diff = 0;
  let scale = 0;
  for (let t = 0; t < ours.length; t++) {
    scale = Math.max(scale, Math.abs(ours[t]));
    if (Number.isFinite(theirs[t])) diff = Math.max(diff, Math.abs(ours[t] - lse - theirs[t]));
  }
  return { diff, scale };
}

const MLA = { kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16 };

function randomModel(over: object, seed: number): MoETransformerLM {
  const cfg = parseModelConfig({
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_local_experts: 8,
    num_experts_per_tok: 2,
    moe_intermediate_size: 32,
    intermediate_size: 96,
    max_position_embeddings: 128,
    ...MLA,
    ...over,
  });
  const m = new MoETransformerLM(cfg, seed);
  // the default init gives near-uniform logits; scale up so the comparison has something to resolve
  for (const [n, t] of m.stateDict()) if (!n.includes('norm') && !n.includes('bias')) for (let i = 0; i < t.data.length; i++) t.data[i] *= 3;
  // norm gains start at 1 and the selection bias at 0: give them values so a dropped or misplaced one shows
  const rng = new Rng(seed + 1);
  for (const [n, t] of m.stateDict()) {
    if (n.includes('layernorm')) for (let i = 0; i < t.data.length; i++) t.data[i] += 0.3 * rng.normal();
    if (n.endsWith('e_score_correction_bias')) for (let i = 0; i < t.data.length; i++) t.data[i] = 0.2 * rng.normal();
  }
  m.eval();
  return m;
}

const PROMPT = 'ROMEO:\nWhat light through yonder window breaks?';

const fixtures: [string, object][] = [
  ['DeepSeek-V2-like (softmax top-k renormalised, no groups, q_proj, shared expert)', { router_type: 'topk', n_shared_experts: 1 }],
  [
    'DeepSeek-V2-like (group-limited v2 greedy, not renormalised, routed scaling)',
    { router_type: 'group-limited', router_options: { variant: 'v2', normalize: false, routedScaling: 1.5 }, n_shared_experts: 2 },
  ],
  [
    'DeepSeek-V3-like (sigmoid, 4 groups of 2, top-2 groups, selection bias, q_lora, leading dense layer, routed scaling)',
    {
      router_type: 'group-limited',
      router_options: { variant: 'v3', nGroup: 4, topkGroup: 2, routedScaling: 2.5 },
      q_lora_rank: 48,
      first_k_dense_replace: 1,
      num_hidden_layers: 3,
      n_shared_experts: 1,
    },
  ],
];

for (const [name, over] of fixtures) {
  test(`llama.cpp deepseek2: same f32 next-token distribution, re-import identical: ${name}`, async () => {
    const model = randomModel(over, 7);
    const tok = new ByteTokenizer();
    const file = path.join(dir, `${name.replace(/\W+/g, '_').slice(0, 40)}.gguf`);
    assert.equal(exportGGUF(model, tok, file, { quant: 'f32' }).arch, 'deepseek2');
    const ids = Array.from(tok.encode(PROMPT));
    const ours = ourLogits(model, ids);
    const { diff, scale } = compare(ours, await llamaLogProbs(await load(file), ids, 256));
    assert.ok(diff <= 1e-3 * scale, `max log-prob difference ${diff} > 1e-3 x max |logit| ${scale}`);
    const back = fromGGUF(file);
    assert.equal(back.arch, 'deepseek2');
    assert.deepEqual(ourLogits(back.model, ids), ours);
  });
}

for (const [name, over] of [fixtures[0], fixtures[2]]) {
  test(`llama.cpp deepseek2: greedy 32 tokens identical for f32 and f16: ${name.replace(/ \(.*/, '')}`, async () => {
    const tok = new ByteTokenizer();
    const ids = Array.from(tok.encode(PROMPT));
    for (const quant of ['f32', 'f16'] as GGUFQuant[]) {
      const file = path.join(dir, `greedy-${quant}-${name.slice(0, 16).replace(/\W+/g, '_')}.gguf`);
      const model = randomModel(over, 11);
      exportGGUF(model, tok, file, { quant });
      // moe-ts greedy on the model the file holds (f16-rounded weights for f16)
      const ref = fromGGUF(file).model;
      const ours = Array.from(generate(ref, tok, PROMPT, { maxNewTokens: 32, temperature: 0 }).ids);
      assert.deepEqual(await llamaGreedy(await load(file), ids, 32), ours, `${quant} greedy continuation`);
    }
  });
}
