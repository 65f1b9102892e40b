/**
 * moe-ts model <-> GGUF: tensor naming, layouts and quantisation for export, and `fromGGUF` for
 * import. Layouts: a moe-ts Linear weight [out, in] is ggml ne {in, out} with the same bytes;
 * stacked expert weights w1/w3 [E, d, f] and w2 [E, f, d] are transposed per expert into ggml's
 * ffn_{gate,up}_exps {d, f, E} and ffn_down_exps {f, d, E}. For architectures with adjacent-pair
 * RoPE, q/k rows of each head are interleaved (row 2i+j <- row j*Dh/2+i), as llama.cpp's own
 * converter does for Hugging Face checkpoints; dot products q.k are unchanged.
 */
import { MoETransformerLM } from '../../models/transformer.js';
import { parseModelConfig, type ModelConfig } from '../../models/config.js';
import type { Tokenizer } from '../../data/tokenizer/index.js';
import type { StateDict } from '../../nn/module.js';
import { gguf, type GGUFValue, type GGMLWritableType } from './format.js';
import { encodeTensor, rowsFit } from './quant.js';
import { writeGGUFSync, type GGUFTensorInput } from './writer.js';
import { GGUFFile, GGUFError } from './reader.js';
import { ARCHS, chooseArch, sharedWidth, type ArchName, type ArchSpec } from './arch.js';
import { tokenizerMetadata, tokenizerFromGGUF } from './tokenizer.js';
import { ropeParams } from '../../models/rope.js';

/** Tensor type of an exported GGUF file's weights (norms, biases and routers stay f32). */
export type GGUFQuant = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
/** Every GGUFQuant, in the order the CLI lists them. */
export const GGUF_QUANTS: readonly GGUFQuant[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];
const QUANT_TYPE: Record<GGUFQuant, GGMLWritableType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };
/** general.file_type (llama_ftype). */
const FILE_TYPE: Record<GGUFQuant, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** Options of exportGGUF: quantisation, architecture (auto: the first that computes the model), name, strict quantisation. */
export interface GGUFExportOptions {
  quant?: GGUFQuant;
  arch?: ArchName | 'auto';
  /** general.name */
  name?: string;
  /** Fail instead of falling back to F16 when a tensor's rows are not a multiple of 32. */
  strictQuant?: boolean;
}

/** What exportGGUF wrote: file, architecture, quantisation, size, vocabulary and tensors kept as f16. */
export interface GGUFExportReport {
  path: string;
  arch: ArchName;
  quant: GGUFQuant;
  bytes: number;
  tensors: number;
  /** llama.cpp's vocabulary (the tokenizer's plus the EOS control token). */
  vocab: number;
  /** Tensors written as F16 because their rows do not fit the quantisation blocks. */
  fallbacks: { name: string; reason: string }[];
}

function transposeBlocks(src: Float32Array, blocks: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let b = 0; b < blocks; b++) {
    const o = b * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[o + c * rows + r] = src[o + r * cols + c];
  }
  return out;
}

/** Interleave each head's half-split rows into adjacent pairs (inverse: deinterleave). */
export function permuteRopeRows(w: Float32Array, rows: number, cols: number, headDim: number, inverse = false): Float32Array {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < rows / headDim; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const adjacent = h * headDim + 2 * i + j;
        const split = h * headDim + j * half + i;
        const [dst, src] = inverse ? [split, adjacent] : [adjacent, split];
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

function padRows(w: Float32Array, rows: number, cols: number, toRows: number): Float32Array {
  if (toRows === rows) return w;
  const out = new Float32Array(toRows * cols);
  out.set(w.subarray(0, rows * cols));
  return out;
}

const ROPE_SCALING_KEY = 'moe-ts.rope_scaling';

/** llama.cpp's rope_freqs factors (theta_i divided by factor_i) for linear/llama3 RoPE scaling; null without scaling. */
function ropeFreqFactors(c: ModelConfig, headDim: number): Float32Array | null {
  const rs = c.rope_scaling as Record<string, unknown> | undefined;
  if (!rs || (rs.rope_type ?? rs.type ?? 'default') === 'default') return null;
  const plain = ropeParams({ ...c, rope_scaling: undefined }, headDim).invFreq;
  const scaled = ropeParams(c, headDim).invFreq;
  return plain.map((f, i) => f / scaled[i]);
}

/** Write `model` with `tokenizer` as a GGUF file llama.cpp runs. */
export function exportGGUF(model: MoETransformerLM, tokenizer: Tokenizer, path: string, opts: GGUFExportOptions = {}): GGUFExportReport {
  const c = model.config;
  const quant = opts.quant ?? 'f32';
  if (!GGUF_QUANTS.includes(quant)) throw new Error(`gguf export: unknown quantisation "${quant}" (known: ${GGUF_QUANTS.join(', ')})`);
  if (c.ffn_type !== undefined) throw new Error(`gguf export: ffn_type "${c.ffn_type}" has no GGUF form`);
  if (c.moe_layer_overrides && Object.keys(c.moe_layer_overrides).length > 0) throw new Error('gguf export: per-layer MoE sizes (moe_layer_overrides) have no GGUF form');
  // llama.cpp runs every layer on every token with pre-norm blocks of their own
  if (c.mixture_of_depths || c.layer_groups !== undefined || c.norm_placement !== 'pre')
    throw new Error('gguf export: mixture_of_depths, layer_groups and norm_placement "peri" have no llama.cpp equivalent');
  const spec = chooseArch(c, opts.arch ?? 'auto');
  if (tokenizer.vocabSize > c.vocab_size) throw new Error(`gguf export: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${c.vocab_size}`);
  const tok = tokenizerMetadata(tokenizer);
  // llama.cpp's vocabulary is the tokenizer's + EOS; model rows beyond the tokenizer (padding) are not addressable there
  const Vg = tok.vocab;
  const V = tokenizer.vocabSize;
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const state = model.stateDict();
  const used = new Set<string>();
  const get = (name: string): { data: Float32Array; shape: readonly number[] } => {
    const t = state.get(name);
    if (!t) throw new Error(`gguf export: model has no tensor "${name}"`);
    used.add(name);
    return t;
  };
  const qtype = QUANT_TYPE[quant];
  const fallbacks: GGUFExportReport['fallbacks'] = [];
  const tensors: GGUFTensorInput[] = [];
  /** rowMajor: values in row-major order of shape = ne reversed. */
  const add = (name: string, ne: number[], values: Float32Array, kind: 'weight' | 'norm' | 'router' = 'weight'): void => {
    let type: GGMLWritableType = kind === 'weight' ? qtype : 'F32';
    if (!rowsFit(type, ne[0])) {
      const reason = `rows of ${ne[0]} are not a multiple of 32`;
      if (opts.strictQuant) throw new Error(`gguf export: tensor ${name}: ${quant} needs ${reason.replace('are not', 'to be')}`);
      fallbacks.push({ name, reason });
      type = 'F16';
    }
    tensors.push({ name, ne, type, data: encodeTensor(values, type, ne[0]) });
  };

  const emb = get('embed_tokens.weight').data;
  add('token_embd.weight', [d, Vg], padRows(emb, V, d, Vg));
  add('output_norm.weight', [d], get('norm.weight').data, 'norm');
  if (!c.tie_word_embeddings) add('output.weight', [d, Vg], padRows(get('lm_head.weight').data, V, d, Vg));
  else if (spec.outputRequired) add('output.weight', [d, Vg], padRows(emb, V, d, Vg));

  /** Multi-head latent attention as deepseek2's split form: q (or q_a/q_a_norm/q_b), kv_a_mqa, kv_a_norm, k_b, v_b, output. */
  const addMLA = (p: string, b: string): void => {
    const nope = c.qk_nope_head_dim!;
    const rope = c.qk_rope_head_dim!;
    const vd = c.v_head_dim!;
    const rank = c.kv_lora_rank!;
    const qk = nope + rope;
    // RoPE rows: moe-ts rotates (i, i + rope/2), llama.cpp's deepseek2 adjacent pairs; permute each head's rope block
    const ropeBlocks = (w: Float32Array, cols: number, rowsPer: number, first: number, blocks: number): Float32Array => {
      const out = w.slice();
      for (let h = 0; h < blocks; h++) {
        const o = (h * rowsPer + first) * cols;
        out.set(permuteRopeRows(w.subarray(o, o + rope * cols), rope, cols, rope), o);
      }
      return out;
    };
    const sa = `${p}self_attn.`;
    if (c.q_lora_rank) {
      const qa = get(`${sa}q_a_proj.weight`);
      add(`${b}attn_q_a.weight`, [d, c.q_lora_rank], qa.data);
      add(`${b}attn_q_a_norm.weight`, [c.q_lora_rank], get(`${sa}q_a_layernorm.weight`).data, 'norm');
      add(`${b}attn_q_b.weight`, [c.q_lora_rank, H * qk], ropeBlocks(get(`${sa}q_b_proj.weight`).data, c.q_lora_rank, qk, nope, H));
    } else add(`${b}attn_q.weight`, [d, H * qk], ropeBlocks(get(`${sa}q_proj.weight`).data, d, qk, nope, H));
    add(`${b}attn_kv_a_mqa.weight`, [d, rank + rope], ropeBlocks(get(`${sa}kv_a_proj_with_mqa.weight`).data, d, rank + rope, rank, 1));
    add(`${b}attn_kv_a_norm.weight`, [rank], get(`${sa}kv_a_layernorm.weight`).data, 'norm');
    // kv_b [H * (nope + v), rank]: per head, k_b {nope, rank} is the k rows transposed, v_b {rank, v} the v rows as they are
    const kvb = get(`${sa}kv_b_proj.weight`).data;
    const kb = new Float32Array(H * rank * nope);
    const vb = new Float32Array(H * vd * rank);
    for (let h = 0; h < H; h++) {
      const o = h * (nope + vd) * rank;
      for (let n = 0; n < nope; n++) for (let r = 0; r < rank; r++) kb[(h * rank + r) * nope + n] = kvb[o + n * rank + r];
      vb.set(kvb.subarray(o + nope * rank, o + (nope + vd) * rank), h * vd * rank);
    }
    add(`${b}attn_k_b.weight`, [nope, rank, H], kb);
    add(`${b}attn_v_b.weight`, [rank, vd, H], vb);
    add(`${b}attn_output.weight`, [H * vd, d], get(`${sa}o_proj.weight`).data);
  };

  let headDim = d / H;
  let headsKv = H;
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `layers.${i}.`;
    const b = `blk.${i}.`;
    add(`${b}attn_norm.weight`, [d], get(`${p}input_layernorm.weight`).data, 'norm');
    if (spec.name === 'deepseek2') addMLA(p, b);
    else {
      const q = get(`${p}self_attn.q_proj.weight`);
      const k = get(`${p}self_attn.k_proj.weight`);
      const v = get(`${p}self_attn.v_proj.weight`);
      const o = get(`${p}self_attn.o_proj.weight`);
      headDim = q.shape[0] / H;
      headsKv = k.shape[0] / headDim;
      const rope = (w: { data: Float32Array; shape: readonly number[] }): Float32Array => (spec.ropeAdjacent ? permuteRopeRows(w.data, w.shape[0], w.shape[1], headDim) : w.data);
      add(`${b}attn_q.weight`, [d, q.shape[0]], rope(q));
      add(`${b}attn_k.weight`, [d, k.shape[0]], rope(k));
      add(`${b}attn_v.weight`, [d, v.shape[0]], v.data);
      add(`${b}attn_output.weight`, [o.shape[1], d], o.data);
      if (spec.qkvBias) {
        // zeros when the model has none: the graph adds them either way
        for (const [n, rows] of [
          ['q', q.shape[0]],
          ['k', k.shape[0]],
          ['v', v.shape[0]],
        ] as const) {
          const bias = state.has(`${p}self_attn.${n}_proj.bias`) ? get(`${p}self_attn.${n}_proj.bias`).data : new Float32Array(rows);
          add(`${b}attn_${n}.bias`, [rows], bias, 'norm');
        }
      }
      if (spec.qkNorm !== 'none') {
        for (const n of ['q', 'k'] as const) {
          const w = get(`${p}self_attn.${n}_norm.weight`);
          add(`${b}attn_${n}_norm.weight`, [w.shape[0]], w.data, 'norm');
        }
      }
    }
    add(`${b}ffn_norm.weight`, [d], get(`${p}post_attention_layernorm.weight`).data, 'norm');
    const layer = model.layers[i];
    if (layer.block_sparse_moe) {
      const E = c.num_local_experts;
      const f = c.moe_intermediate_size;
      add(`${b}ffn_gate_inp.weight`, [d, E], get(`${p}block_sparse_moe.router.gate.weight`).data, 'router');
      if (state.has(`${p}block_sparse_moe.router.e_score_correction_bias`)) add(`${b}exp_probs_b.bias`, [E], get(`${p}block_sparse_moe.router.e_score_correction_bias`).data, 'norm');
      add(`${b}ffn_gate_exps.weight`, [d, f, E], transposeBlocks(get(`${p}block_sparse_moe.experts.w1`).data, E, d, f));
      add(`${b}ffn_up_exps.weight`, [d, f, E], transposeBlocks(get(`${p}block_sparse_moe.experts.w3`).data, E, d, f));
      add(`${b}ffn_down_exps.weight`, [f, d, E], transposeBlocks(get(`${p}block_sparse_moe.experts.w2`).data, E, f, d));
      if (spec.shared === 'ungated') {
        const sw = sharedWidth(c);
        if (sw > 0) {
          add(`${b}ffn_gate_shexp.weight`, [d, sw], transposeBlocks(get(`${p}block_sparse_moe.shared.w1`).data, 1, d, sw));
          add(`${b}ffn_up_shexp.weight`, [d, sw], transposeBlocks(get(`${p}block_sparse_moe.shared.w3`).data, 1, d, sw));
          add(`${b}ffn_down_shexp.weight`, [sw, d], transposeBlocks(get(`${p}block_sparse_moe.shared.w2`).data, 1, sw, d));
        } else {
          add(`${b}ffn_gate_shexp.weight`, [d, f], new Float32Array(d * f));
          add(`${b}ffn_up_shexp.weight`, [d, f], new Float32Array(d * f));
          add(`${b}ffn_down_shexp.weight`, [f, d], new Float32Array(d * f));
        }
      } else if (spec.shared === 'gated') {
        if (layer.shared_expert) {
          // DenseFFN weights are [out, in] Linear layouts: the bytes are ggml's {in, out}
          const g = get(`${p}shared_expert.gate_proj.weight`);
          const sw = g.shape[0];
          add(`${b}ffn_gate_inp_shexp.weight`, [d], get(`${p}shared_expert_gate.weight`).data, 'router');
          add(`${b}ffn_gate_shexp.weight`, [d, sw], g.data);
          add(`${b}ffn_up_shexp.weight`, [d, sw], get(`${p}shared_expert.up_proj.weight`).data);
          add(`${b}ffn_down_shexp.weight`, [sw, d], get(`${p}shared_expert.down_proj.weight`).data);
        } else {
          // no shared expert: an all-zero one (its output is exactly 0 whatever the gate says)
          add(`${b}ffn_gate_inp_shexp.weight`, [d], new Float32Array(d), 'router');
          add(`${b}ffn_gate_shexp.weight`, [d, f], new Float32Array(d * f));
          add(`${b}ffn_up_shexp.weight`, [d, f], new Float32Array(d * f));
          add(`${b}ffn_down_shexp.weight`, [f, d], new Float32Array(d * f));
        }
      }
    } else {
      const g = get(`${p}mlp.gate_proj.weight`);
      add(`${b}ffn_gate.weight`, [d, g.shape[0]], g.data);
      add(`${b}ffn_up.weight`, [d, g.shape[0]], get(`${p}mlp.up_proj.weight`).data);
      add(`${b}ffn_down.weight`, [g.shape[0], d], get(`${p}mlp.down_proj.weight`).data);
    }
  }
  const scaled = spec.name === 'llama' ? ropeFreqFactors(c, headDim) : null;
  if (scaled) add('rope_freqs.weight', [headDim / 2], scaled, 'norm');
  const unmapped = [...state.keys()].filter((n) => !used.has(n));
  if (unmapped.length) throw new Error(`gguf export: tensors with no ${spec.name} mapping: ${unmapped.join(', ')}`);

  const A = spec.name;
  const meta = new Map<string, GGUFValue>([
    ['general.architecture', gguf('string', A)],
    ['general.name', gguf('string', opts.name ?? 'moe-ts')],
    ['general.alignment', gguf('u32', 32)],
    ['general.file_type', gguf('u32', FILE_TYPE[quant])],
    ['general.quantization_version', gguf('u32', 2)],
    [`${A}.vocab_size`, gguf('u32', Vg)],
    [`${A}.context_length`, gguf('u32', c.max_position_embeddings)],
    [`${A}.embedding_length`, gguf('u32', d)],
    [`${A}.block_count`, gguf('u32', c.num_hidden_layers)],
    [`${A}.attention.head_count`, gguf('u32', H)],
    [`${A}.attention.head_count_kv`, gguf('u32', headsKv)],
    [`${A}.attention.key_length`, gguf('u32', headDim)],
    [`${A}.attention.value_length`, gguf('u32', headDim)],
    [`${A}.attention.layer_norm_rms_epsilon`, gguf('f32', c.rms_norm_eps)],
    [`${A}.rope.dimension_count`, gguf('u32', headDim)],
    [`${A}.rope.freq_base`, gguf('f32', c.rope_theta)],
  ]);
  for (const [k, v] of spec.hparams(c)) meta.set(`${A}.${k}`, v);
  // the scaling the factors came from, so import gets the config back (llama.cpp only reads the factors)
  if (scaled) meta.set(ROPE_SCALING_KEY, gguf('string', JSON.stringify(c.rope_scaling)));
  for (const [k, v] of tok.entries) meta.set(k, v);
  const bytes = writeGGUFSync(path, meta, tensors);
  return { path, arch: A, quant, bytes, tensors: tensors.length, vocab: Vg, fallbacks };
}

/** A model read by fromGGUF, with its tokenizer, config, architecture and the stored tensor types and bytes. */
export interface GGUFModel {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  config: ModelConfig;
  arch: ArchName;
  path: string;
  /** Tensor name -> ggml type as stored (quantised blocks stay readable via rawTensor). */
  types: Map<string, string>;
  /** The stored bytes of a tensor (e.g. Q8_0 blocks for quantised kernels). */
  rawTensor(name: string): Uint8Array;
}

/** Options of fromGGUF. */
export interface GGUFImportOptions {
  /**
   * Leave the routed experts in the file (their shapes are still checked): the model gets
   * placeholder experts of width 1, so only a DecodeEngine with an ExpertSource (expert
   * offloading) computes it; `config` keeps the file's expert width.
   */
  skipExperts?: boolean;
}

/** The architectures fromGGUF reads. */
export const GGUF_IMPORT_ARCHS: readonly ArchName[] = ['llama', 'bailingmoe', 'qwen2moe', 'qwen3moe', 'olmoe', 'deepseek2'];

/**
 * Load a GGUF file of one of the architectures in GGUF_IMPORT_ARCHS as a moe-ts model in eval
 * mode; quantised tensors are dequantised to float32 (their stored blocks stay available through
 * rawTensor and types). Every hyperparameter and tensor shape is checked against what the
 * architecture's llama.cpp graph computes; anything moe-ts would compute differently is an error.
 */
export function fromGGUF(path: string, opts: GGUFImportOptions = {}): GGUFModel {
  const f = GGUFFile.open(path);
  try {
    const where = `gguf ${path}`;
    const arch = f.getString('general.architecture') as ArchName;
    const spec: ArchSpec | undefined = ARCHS[arch];
    if (!spec || !GGUF_IMPORT_ARCHS.includes(arch)) throw new GGUFError(`${where}: general.architecture "${arch}" cannot be imported (supported: ${GGUF_IMPORT_ARCHS.join(', ')})`);
    const key = (k: string): string => `${arch}.${k}`;
    const tokenizer = tokenizerFromGGUF(f);
    if (arch === 'deepseek2') {
      const r = readDeepseek2(f, where, tokenizer);
      return finishImport(f, path, where, arch, tokenizer, r.config, r.state, r.used, false);
    }
    const d = f.getInt(key('embedding_length'));
    const L = f.getInt(key('block_count'));
    const H = f.getInt(key('attention.head_count'));
    const Hkv = f.getInt(key('attention.head_count_kv'), H);
    if (H <= 0 || Hkv <= 0 || H % Hkv !== 0) throw new GGUFError(`${where}: ${key('attention.head_count')} ${H} is not a multiple of head_count_kv ${Hkv}`);
    if (spec.name !== 'qwen3moe' && d % H !== 0) throw new GGUFError(`${where}: embedding_length ${d} is not divisible by head_count ${H}`);
    const headDim = f.getInt(key('attention.key_length'), Math.floor(d / H));
    const valueDim = f.getInt(key('attention.value_length'), headDim);
    if (valueDim !== headDim) throw new GGUFError(`${where}: ${key('attention.value_length')} ${valueDim} != key_length ${headDim} (moe-ts attention has one head width)`);
    if (spec.name !== 'qwen3moe' && headDim * H !== d) throw new GGUFError(`${where}: ${key('attention.key_length')} ${headDim} x ${H} heads != embedding_length ${d}`);
    if (headDim <= 0 || headDim % 2 !== 0) throw new GGUFError(`${where}: ${key('attention.key_length')} ${headDim} must be even and positive (rotary embeddings)`);
    const rot = f.getInt(key('rope.dimension_count'), headDim);
    if (rot !== headDim) throw new GGUFError(`${where}: ${key('rope.dimension_count')} ${rot} != head dim ${headDim} (partial rotary embeddings are not supported)`);
    const scaling = f.getString(key('rope.scaling.type'), 'none');
    if (scaling !== 'none' && !(scaling === 'linear' && f.getFloat(key('rope.scaling.factor'), 1) === 1)) throw new GGUFError(`${where}: ${key('rope.scaling.type')} "${scaling}" is not supported`);
    const qd = H * headDim;
    const kvd = Hkv * headDim;
    const E = f.getInt(key('expert_count'), 0);
    const K = f.getInt(key('expert_used_count'), 0);
    const ff = f.getInt(key('feed_forward_length'), 0);
    if (!spec.allowsDense && (E === 0 || K === 0)) throw new GGUFError(`${where}: ${key('expert_count')} ${E} / expert_used_count ${K}: ${arch} needs experts`);
    const emb = f.tensor('token_embd.weight');
    const Vg = emb.ne[1];
    const V = tokenizer.vocabSize;
    if (emb.ne[0] !== d || Vg < V) throw new GGUFError(`${where}: token_embd.weight is [${emb.ne.join(', ')}], expected [${d}, >= ${V}]`);
    // routing and expert width as each llama.cpp graph reads them
    let normalize = arch === 'llama' || arch === 'qwen3moe';
    let moeFF = arch === 'llama' || arch === 'olmoe' ? ff : f.getInt(key('expert_feed_forward_length'), K > 0 ? Math.floor(ff / K) : 0);
    if (arch === 'bailingmoe') {
      moeFF = f.getInt(key('expert_feed_forward_length'));
      normalize = f.getBool(key('expert_weights_norm'), false);
      if (f.getInt(key('leading_dense_block_count'), 0) !== 0) throw new GGUFError(`${where}: leading dense blocks are not supported`);
    }
    const scale = f.getFloat(key('expert_weights_scale'), 1);
    // 0 is llama.cpp's "unset" for the Qwen/OLMoE graphs (they scale only by a value other than 0 and 1); bailingmoe always scales
    if (scale !== 1 && !(scale === 0 && arch !== 'bailingmoe')) throw new GGUFError(`${where}: ${key('expert_weights_scale')} = ${scale}; moe-ts routing has no weight scale`);
    let nShared = 0;
    let sharedFF = 0;
    if (arch === 'bailingmoe') {
      const sc = f.getInt(key('expert_shared_count'));
      // the exporter's all-zero placeholder for "no shared experts"
      nShared = f.readFloat32('blk.0.ffn_down_shexp.weight').every((x) => x === 0) ? 0 : sc;
      sharedFF = sc * moeFF;
    } else if (arch === 'qwen2moe') {
      sharedFF = f.getInt(key('expert_shared_feed_forward_length'), ff);
      nShared = f.readFloat32('blk.0.ffn_down_shexp.weight').every((x) => x === 0) ? 0 : 1;
    }
    // q/k/v biases: all-zero ones (the exporter's placeholder for "none") add nothing
    const biasNames = [...f.tensors.keys()].filter((n) => /^blk\.\d+\.attn_[qkv]\.bias$/.test(n));
    if (biasNames.length && !spec.qkvBias) throw new GGUFError(`${where}: ${biasNames[0]}: ${arch} files from moe-ts have no attention biases`);
    const qkvBias = biasNames.some((n) => f.readFloat32(n).some((x) => x !== 0));
    const { emb: embRaw, out: outRaw, tie } = readEmbeddings(f);
    const cfgIn: Record<string, unknown> = {
      vocab_size: V,
      hidden_size: d,
      num_hidden_layers: L,
      num_attention_heads: H,
      max_position_embeddings: f.getInt(key('context_length')),
      rope_theta: f.getFloat(key('rope.freq_base'), 10000),
      rms_norm_eps: f.getFloat(key('attention.layer_norm_rms_epsilon')),
      tie_word_embeddings: tie,
      num_local_experts: E,
      norm_topk_prob: normalize,
      qk_norm: spec.qkNorm,
      qkv_bias: qkvBias,
    };
    if (f.tensors.has('rope_freqs.weight')) {
      if (arch !== 'llama' || !f.has(ROPE_SCALING_KEY)) throw new GGUFError(`${where}: rope_freqs.weight without ${ROPE_SCALING_KEY}: per-frequency RoPE factors map to no moe-ts rope_scaling`);
      try {
        cfgIn.rope_scaling = JSON.parse(f.getString(ROPE_SCALING_KEY)) as unknown;
      } catch (e) {
        throw new GGUFError(`${where}: ${ROPE_SCALING_KEY} is not valid JSON: ${(e as Error).message}`);
      }
    }
    if (Hkv !== H) cfgIn.num_key_value_heads = Hkv;
    if (headDim * H !== d) cfgIn.head_dim = headDim;
    if (E > 0) {
      Object.assign(cfgIn, { num_experts_per_tok: K, moe_intermediate_size: moeFF, n_shared_experts: nShared });
      if (nShared && arch === 'qwen2moe') Object.assign(cfgIn, { shared_expert_intermediate_size: sharedFF, shared_expert_gate: true });
    } else cfgIn.intermediate_size = ff;
    let config: ModelConfig;
    try {
      config = parseModelConfig(cfgIn, `${where} hyperparameters`);
    } catch (e) {
      throw new GGUFError((e as Error).message);
    }
    const state: StateDict = new Map();
    const used = new Set<string>();
    const check = (name: string, ne: number[]): void => {
      const t = f.tensor(name);
      if (t.ne.length !== ne.length || t.ne.some((x, i) => x !== ne[i])) throw new GGUFError(`${where}: tensor ${name} is [${t.ne.join(', ')}], expected [${ne.join(', ')}]`);
      used.add(name);
    };
    const read = (name: string, ne: number[]): Float32Array => {
      check(name, ne);
      return f.readFloat32(name);
    };
    if (cfgIn.rope_scaling !== undefined) {
      // the stored factors must be what the stored scaling gives, or llama.cpp and moe-ts would rotate differently
      let want: Float32Array | null;
      try {
        want = ropeFreqFactors(config, headDim);
      } catch (e) {
        throw new GGUFError(`${where}: ${ROPE_SCALING_KEY}: ${(e as Error).message}`);
      }
      const got = read('rope_freqs.weight', [headDim / 2]);
      if (!want || want.some((x, i) => Math.abs(x - got[i]) > 1e-6 * Math.abs(x))) throw new GGUFError(`${where}: rope_freqs.weight differs from the factors of ${ROPE_SCALING_KEY}`);
    }
    const put = (name: string, shape: number[], data: Float32Array): void => void state.set(name, { data, shape });
    used.add('token_embd.weight');
    put('embed_tokens.weight', [V, d], embRaw.slice(0, V * d));
    put('norm.weight', [d], read('output_norm.weight', [d]));
    if (outRaw) used.add('output.weight');
    if (!tie) put('lm_head.weight', [V, d], outRaw!.slice(0, V * d));
    const unrope = (w: Float32Array, rows: number): Float32Array => (spec.ropeAdjacent ? permuteRopeRows(w, rows, d, headDim, true) : w);
    for (let i = 0; i < L; i++) {
      const p = `layers.${i}.`;
      const b = `blk.${i}.`;
      put(`${p}input_layernorm.weight`, [d], read(`${b}attn_norm.weight`, [d]));
      put(`${p}self_attn.q_proj.weight`, [qd, d], unrope(read(`${b}attn_q.weight`, [d, qd]), qd));
      put(`${p}self_attn.k_proj.weight`, [kvd, d], unrope(read(`${b}attn_k.weight`, [d, kvd]), kvd));
      put(`${p}self_attn.v_proj.weight`, [kvd, d], read(`${b}attn_v.weight`, [d, kvd]));
      put(`${p}self_attn.o_proj.weight`, [d, qd], read(`${b}attn_output.weight`, [qd, d]));
      if (spec.qkvBias) {
        for (const [n, rows] of [
          ['q', qd],
          ['k', kvd],
          ['v', kvd],
        ] as const) {
          const bias = read(`${b}attn_${n}.bias`, [rows]);
          if (qkvBias) put(`${p}self_attn.${n}_proj.bias`, [rows], bias);
        }
      }
      if (spec.qkNorm !== 'none') {
        for (const [n, width] of [
          ['q', qd],
          ['k', kvd],
        ] as const) {
          const w = spec.qkNorm === 'head' ? headDim : width;
          put(`${p}self_attn.${n}_norm.weight`, [w], read(`${b}attn_${n}_norm.weight`, [w]));
        }
      }
      put(`${p}post_attention_layernorm.weight`, [d], read(`${b}ffn_norm.weight`, [d]));
      if (E > 0) {
        const fe = moeFF;
        put(`${p}block_sparse_moe.router.gate.weight`, [E, d], read(`${b}ffn_gate_inp.weight`, [d, E]));
        if (opts.skipExperts) {
          check(`${b}ffn_gate_exps.weight`, [d, fe, E]);
          check(`${b}ffn_up_exps.weight`, [d, fe, E]);
          check(`${b}ffn_down_exps.weight`, [fe, d, E]);
        } else {
          put(`${p}block_sparse_moe.experts.w1`, [E, d, fe], transposeBlocks(read(`${b}ffn_gate_exps.weight`, [d, fe, E]), E, fe, d));
          put(`${p}block_sparse_moe.experts.w3`, [E, d, fe], transposeBlocks(read(`${b}ffn_up_exps.weight`, [d, fe, E]), E, fe, d));
          put(`${p}block_sparse_moe.experts.w2`, [E, fe, d], transposeBlocks(read(`${b}ffn_down_exps.weight`, [fe, d, E]), E, d, fe));
        }
        if (spec.shared) {
          const sw = sharedFF;
          const gi = spec.shared === 'gated' ? read(`${b}ffn_gate_inp_shexp.weight`, [d]) : null;
          const g = read(`${b}ffn_gate_shexp.weight`, [d, sw]);
          const u = read(`${b}ffn_up_shexp.weight`, [d, sw]);
          const dn = read(`${b}ffn_down_shexp.weight`, [sw, d]);
          if (!nShared) {
            if (!dn.every((x) => x === 0)) throw new GGUFError(`${where}: ${b}ffn_down_shexp.weight is non-zero but blk.0's is zero (shared experts in some layers only are not supported)`);
          } else if (gi) {
            put(`${p}shared_expert_gate.weight`, [1, d], gi);
            put(`${p}shared_expert.gate_proj.weight`, [sw, d], g);
            put(`${p}shared_expert.up_proj.weight`, [sw, d], u);
            put(`${p}shared_expert.down_proj.weight`, [d, sw], dn);
          } else {
            put(`${p}block_sparse_moe.shared.w1`, [d, sw], transposeBlocks(g, 1, sw, d));
            put(`${p}block_sparse_moe.shared.w3`, [d, sw], transposeBlocks(u, 1, sw, d));
            put(`${p}block_sparse_moe.shared.w2`, [sw, d], transposeBlocks(dn, 1, d, sw));
          }
        }
      } else {
        put(`${p}mlp.gate_proj.weight`, [ff, d], read(`${b}ffn_gate.weight`, [d, ff]));
        put(`${p}mlp.up_proj.weight`, [ff, d], read(`${b}ffn_up.weight`, [d, ff]));
        put(`${p}mlp.down_proj.weight`, [d, ff], read(`${b}ffn_down.weight`, [ff, d]));
      }
    }
    return finishImport(f, path, where, arch, tokenizer, config, state, used, Boolean(opts.skipExperts) && E > 0);
  } finally {
    f.close();
  }
}

/** The embedding and output matrices; tied when the file has no output.weight or it equals the embedding. */
function readEmbeddings(f: GGUFFile): { emb: Float32Array; out: Float32Array | null; tie: boolean } {
  const out = f.tensors.has('output.weight') ? f.readFloat32('output.weight') : null;
  const emb = f.readFloat32('token_embd.weight');
  return { emb, out, tie: !out || (out.length === emb.length && out.every((x, i) => x === emb[i])) };
}

/** Build the model from an imported state dict: every tensor of the file must have been used. */
function finishImport(f: GGUFFile, path: string, where: string, arch: ArchName, tokenizer: Tokenizer, config: ModelConfig, state: StateDict, used: Set<string>, skeleton: boolean): GGUFModel {
  const extra = [...f.tensors.keys()].filter((n) => !used.has(n));
  if (extra.length) throw new GGUFError(`${where}: tensors moe-ts does not know how to use: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ` (+${extra.length - 5} more)` : ''}`);
  // skipped experts: width-1 placeholders keep the model small; the file's experts are read by an ExpertSource
  const model = new MoETransformerLM(skeleton ? { ...config, moe_intermediate_size: 1 } : config, 0);
  if (skeleton) for (const [k, v] of model.stateDict()) if (!state.has(k)) state.set(k, v);
  try {
    model.loadStateDict(state);
  } catch (e) {
    throw new GGUFError(`${where}: ${(e as Error).message}`);
  }
  model.eval();
  const types = new Map([...f.tensors.values()].map((t) => [t.name, t.type.name]));
  return {
    model,
    tokenizer,
    config,
    arch,
    path,
    types,
    rawTensor: (name) => {
      const g = GGUFFile.open(path);
      try {
        return g.readRaw(name);
      } finally {
        g.close();
      }
    },
  };
}

/**
 * deepseek2 hyperparameters and tensors as a moe-ts MLA model: the split attn_k_b/attn_v_b form moe-ts writes, or the
 * legacy attn_kv_b one (no key_length_mla); the router as what build_moe_ffn computes (topk, group-limited v2 or v3).
 */
function readDeepseek2(f: GGUFFile, where: string, tokenizer: Tokenizer): { config: ModelConfig; state: StateDict; used: Set<string> } {
  const key = (k: string): string => `deepseek2.${k}`;
  const d = f.getInt(key('embedding_length'));
  const L = f.getInt(key('block_count'));
  const H = f.getInt(key('attention.head_count'));
  const rank = f.getInt(key('attention.kv_lora_rank'));
  const qLora = f.getInt(key('attention.q_lora_rank'), 0);
  const rope = f.getInt(key('rope.dimension_count'));
  const split = f.has(key('attention.key_length_mla'));
  const qk = split ? f.getInt(key('attention.key_length_mla')) : f.getInt(key('attention.key_length'));
  const vd = split ? f.getInt(key('attention.value_length_mla')) : f.getInt(key('attention.value_length'));
  const nope = qk - rope;
  if (rope <= 0 || rope % 2 !== 0 || nope <= 0) throw new GGUFError(`${where}: ${key('rope.dimension_count')} ${rope} must be even, positive and below the key length ${qk}`);
  if (vd > qk) throw new GGUFError(`${where}: value length ${vd} > key length ${qk} (moe-ts MLA needs v_head_dim <= qk_nope_head_dim + qk_rope_head_dim)`);
  const scaling = f.getString(key('rope.scaling.type'), 'none');
  let ropeScaling: Record<string, unknown> | undefined;
  if (scaling === 'yarn') {
    // what the exporter writes: DeepSeek's YaRN with mscale = mscale_all_dim = yarn_log_multiplier / 0.1
    const m = Math.round(f.getFloat(key('rope.scaling.yarn_log_multiplier'), 0) * 1e6) / 1e5;
    ropeScaling = {
      type: 'yarn',
      factor: f.getFloat(key('rope.scaling.factor')),
      original_max_position_embeddings: f.getInt(key('rope.scaling.original_context_length')),
      beta_fast: f.getFloat(key('rope.scaling.yarn_beta_fast'), 32),
      beta_slow: f.getFloat(key('rope.scaling.yarn_beta_slow'), 1),
      mscale: m,
      mscale_all_dim: m,
    };
    for (const k of ['attn_factor', 'yarn_ext_factor', 'yarn_attn_factor']) if (f.has(key(`rope.scaling.${k}`))) throw new GGUFError(`${where}: ${key(`rope.scaling.${k}`)} is not supported`);
  } else if (scaling !== 'none') throw new GGUFError(`${where}: ${key('rope.scaling.type')} "${scaling}" is not supported for deepseek2 (only yarn)`);
  if (f.getFloat(key('attention.temperature_scale'), 0) !== 0) throw new GGUFError(`${where}: ${key('attention.temperature_scale')}: attention temperature tuning is not supported`);
  const E = f.getInt(key('expert_count'), 0);
  const K = f.getInt(key('expert_used_count'), 0);
  if (E === 0 || K === 0) throw new GGUFError(`${where}: ${key('expert_count')} ${E} / expert_used_count ${K}: deepseek2 needs experts`);
  const lead = f.getInt(key('leading_dense_block_count'), 0);
  if (lead >= L) throw new GGUFError(`${where}: ${key('leading_dense_block_count')} ${lead}: no MoE layer left of ${L}`);
  const moeFF = f.getInt(key('expert_feed_forward_length'));
  const ff = f.getInt(key('feed_forward_length'), moeFF);
  const sc = f.getInt(key('expert_shared_count'));
  const sw = sc * moeFF;
  // the exporter's all-zero placeholder for "no shared experts"
  const nShared = sc > 0 && !f.readFloat32(`blk.${lead}.ffn_down_shexp.weight`).every((x) => x === 0) ? sc : 0;
  const gating = f.getInt(key('expert_gating_func'), 1);
  const norm = f.getBool(key('expert_weights_norm'), false);
  const rawScale = f.getFloat(key('expert_weights_scale'), 0);
  const scale = rawScale === 0 ? 1 : rawScale; // 0: unset, llama.cpp does not scale
  const groups = f.getInt(key('expert_group_count'), 0);
  const groupsUsed = f.getInt(key('expert_group_used_count'), 0);
  const grouped = groups > 1;
  if (grouped && (E % groups !== 0 || E / groups < 2 || groupsUsed < 1 || groupsUsed > groups)) {
    throw new GGUFError(`${where}: ${key('expert_group_count')} ${groups} / expert_group_used_count ${groupsUsed} do not fit ${E} experts`);
  }
  const hasBias = f.tensors.has(`blk.${lead}.exp_probs_b.bias`);
  const cfgRouter: Record<string, unknown> = {};
  if (gating === 2) {
    Object.assign(cfgRouter, {
      router_type: 'group-limited',
      router_options: { variant: 'v3', normalize: norm, routedScaling: scale, ...(grouped ? { nGroup: groups, topkGroup: groupsUsed } : {}) },
    });
  } else if (gating === 1) {
    if (grouped) throw new GGUFError(`${where}: ${key('expert_group_count')} ${groups} with softmax gating: llama.cpp scores groups by their two best, no moe-ts router does`);
    if (hasBias) throw new GGUFError(`${where}: blk.${lead}.exp_probs_b.bias with softmax gating: no moe-ts router adds a selection bias to softmax scores`);
    if (scale === 1) Object.assign(cfgRouter, { router_type: 'topk', norm_topk_prob: norm });
    else if (!norm) Object.assign(cfgRouter, { router_type: 'group-limited', router_options: { variant: 'v2', normalize: false, routedScaling: scale } });
    else throw new GGUFError(`${where}: ${key('expert_weights_scale')} ${scale} with expert_weights_norm and softmax gating: no moe-ts router scales renormalised softmax weights`);
  } else throw new GGUFError(`${where}: ${key('expert_gating_func')} ${gating} is not supported (1 softmax, 2 sigmoid)`);
  const emb = f.tensor('token_embd.weight');
  const V = tokenizer.vocabSize;
  if (emb.ne[0] !== d || emb.ne[1] < V) throw new GGUFError(`${where}: token_embd.weight is [${emb.ne.join(', ')}], expected [${d}, >= ${V}]`);
  const { emb: embRaw, out: outRaw, tie } = readEmbeddings(f);
  const cfgIn: Record<string, unknown> = {
    vocab_size: V,
    hidden_size: d,
    num_hidden_layers: L,
    num_attention_heads: H,
    max_position_embeddings: f.getInt(key('context_length')),
    rope_theta: f.getFloat(key('rope.freq_base'), 10000),
    rms_norm_eps: f.getFloat(key('attention.layer_norm_rms_epsilon')),
    tie_word_embeddings: tie,
    kv_lora_rank: rank,
    ...(qLora > 0 ? { q_lora_rank: qLora } : {}),
    qk_nope_head_dim: nope,
    qk_rope_head_dim: rope,
    v_head_dim: vd,
    num_local_experts: E,
    num_experts_per_tok: K,
    moe_intermediate_size: moeFF,
    intermediate_size: lead > 0 ? ff : moeFF,
    first_k_dense_replace: lead,
    n_shared_experts: nShared,
    ...cfgRouter,
    ...(ropeScaling ? { rope_scaling: ropeScaling } : {}),
  };
  let config: ModelConfig;
  try {
    config = parseModelConfig(cfgIn, `${where} hyperparameters`);
  } catch (e) {
    throw new GGUFError((e as Error).message);
  }
  const state: StateDict = new Map();
  const used = new Set<string>(['token_embd.weight']);
  const read = (name: string, ne: number[]): Float32Array => {
    const t = f.tensor(name);
    if (t.ne.length !== ne.length || t.ne.some((x, i) => x !== ne[i])) throw new GGUFError(`${where}: tensor ${name} is [${t.ne.join(', ')}], expected [${ne.join(', ')}]`);
    used.add(name);
    return f.readFloat32(name);
  };
  const put = (name: string, shape: number[], data: Float32Array): void => void state.set(name, { data, shape });
  // llama.cpp's adjacent RoPE pairs back to moe-ts's (i, i + rope/2) in each rope block
  const unrope = (w: Float32Array, cols: number, rowsPer: number, first: number, blocks: number): Float32Array => {
    const out = w.slice();
    for (let h = 0; h < blocks; h++) {
      const o = (h * rowsPer + first) * cols;
      out.set(permuteRopeRows(w.subarray(o, o + rope * cols), rope, cols, rope, true), o);
    }
    return out;
  };
  put('embed_tokens.weight', [V, d], embRaw.slice(0, V * d));
  put('norm.weight', [d], read('output_norm.weight', [d]));
  if (outRaw) used.add('output.weight');
  if (!tie) put('lm_head.weight', [V, d], outRaw!.slice(0, V * d));
  for (let i = 0; i < L; i++) {
    const p = `layers.${i}.`;
    const sa = `${p}self_attn.`;
    const b = `blk.${i}.`;
    put(`${p}input_layernorm.weight`, [d], read(`${b}attn_norm.weight`, [d]));
    if (qLora > 0) {
      put(`${sa}q_a_proj.weight`, [qLora, d], read(`${b}attn_q_a.weight`, [d, qLora]));
      put(`${sa}q_a_layernorm.weight`, [qLora], read(`${b}attn_q_a_norm.weight`, [qLora]));
      put(`${sa}q_b_proj.weight`, [H * qk, qLora], unrope(read(`${b}attn_q_b.weight`, [qLora, H * qk]), qLora, qk, nope, H));
    } else put(`${sa}q_proj.weight`, [H * qk, d], unrope(read(`${b}attn_q.weight`, [d, H * qk]), d, qk, nope, H));
    put(`${sa}kv_a_proj_with_mqa.weight`, [rank + rope, d], unrope(read(`${b}attn_kv_a_mqa.weight`, [d, rank + rope]), d, rank + rope, rank, 1));
    put(`${sa}kv_a_layernorm.weight`, [rank], read(`${b}attn_kv_a_norm.weight`, [rank]));
    let kvb: Float32Array;
    if (split) {
      const kb = read(`${b}attn_k_b.weight`, [nope, rank, H]);
      const vb = read(`${b}attn_v_b.weight`, [rank, vd, H]);
      kvb = new Float32Array(H * (nope + vd) * rank);
      for (let h = 0; h < H; h++) {
        const o = h * (nope + vd) * rank;
        for (let n = 0; n < nope; n++) for (let r = 0; r < rank; r++) kvb[o + n * rank + r] = kb[(h * rank + r) * nope + n];
        kvb.set(vb.subarray(h * vd * rank, (h + 1) * vd * rank), o + nope * rank);
      }
    } else kvb = read(`${b}attn_kv_b.weight`, [rank, H * (nope + vd)]);
    put(`${sa}kv_b_proj.weight`, [H * (nope + vd), rank], kvb);
    put(`${sa}o_proj.weight`, [d, H * vd], read(`${b}attn_output.weight`, [H * vd, d]));
    put(`${p}post_attention_layernorm.weight`, [d], read(`${b}ffn_norm.weight`, [d]));
    if (i < lead) {
      put(`${p}mlp.gate_proj.weight`, [ff, d], read(`${b}ffn_gate.weight`, [d, ff]));
      put(`${p}mlp.up_proj.weight`, [ff, d], read(`${b}ffn_up.weight`, [d, ff]));
      put(`${p}mlp.down_proj.weight`, [d, ff], read(`${b}ffn_down.weight`, [ff, d]));
      continue;
    }
    const m = `${p}block_sparse_moe.`;
    put(`${m}router.gate.weight`, [E, d], read(`${b}ffn_gate_inp.weight`, [d, E]));
    if (f.tensors.has(`${b}exp_probs_b.bias`)) put(`${m}router.e_score_correction_bias`, [E], read(`${b}exp_probs_b.bias`, [E]));
    put(`${m}experts.w1`, [E, d, moeFF], transposeBlocks(read(`${b}ffn_gate_exps.weight`, [d, moeFF, E]), E, moeFF, d));
    put(`${m}experts.w3`, [E, d, moeFF], transposeBlocks(read(`${b}ffn_up_exps.weight`, [d, moeFF, E]), E, moeFF, d));
    put(`${m}experts.w2`, [E, moeFF, d], transposeBlocks(read(`${b}ffn_down_exps.weight`, [moeFF, d, E]), E, d, moeFF));
    if (sw > 0) {
      const g = read(`${b}ffn_gate_shexp.weight`, [d, sw]);
      const u = read(`${b}ffn_up_shexp.weight`, [d, sw]);
      const dn = read(`${b}ffn_down_shexp.weight`, [sw, d]);
      if (!nShared) {
        if (!dn.every((x) => x === 0)) throw new GGUFError(`${where}: ${b}ffn_down_shexp.weight is non-zero but blk.${lead}'s is zero (shared experts in some layers only are not supported)`);
      } else {
        put(`${m}shared.w1`, [d, sw], transposeBlocks(g, 1, sw, d));
        put(`${m}shared.w3`, [d, sw], transposeBlocks(u, 1, sw, d));
        put(`${m}shared.w2`, [sw, d], transposeBlocks(dn, 1, d, sw));
      }
    }
  }
  return { config, state, used };
}
