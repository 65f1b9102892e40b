/**
 * Hugging Face architectures moe-ts reads and writes, one spec each: how a config.json maps onto
 * a moe-ts ModelConfig (and back), where the MoE block and its tensors live, and which moe-ts
 * models have exactly its semantics. The generic loader/saver (pretrained.ts) matches on nothing
 * else. Field and tensor mappings are documented in docs/huggingface.md.
 */
import { type ModelConfig, nonDefaultFields, headDimOf, kvHeadsOf } from '../../models/config.js';
import { attentionKindOf } from '../../models/attention/registry.js';

export type HfConfig = Record<string, unknown>;

/** A Hugging Face directory or model that cannot be read or written (one-line message naming the field, tensor or file). */
export class HfFormatError extends Error {}

/** One Hugging Face architecture: config mapping, tensor layout, and which moe-ts models match it exactly. */
export interface ArchSpec {
  modelType: string;
  architecture: string;
  /** Where the MoE block sits under model.layers.N. */
  moePrefix: string;
  /** Other MoE-block prefixes accepted on load (renames across transformers versions). */
  moePrefixAliases?: string[];
  /** Per-expert projection names: gate (SwiGLU gate), up (value), down. */
  expertNames: [string, string, string];
  /** Router weight module under the MoE block (default 'gate'). */
  routerName?: string;
  /**
   * The fused 3-D expert tensors under the MoE block: gate+up [E, 2f, d] (gate rows first) and
   * down [E, d, f] (default experts.gate_up_proj / experts.down_proj); `only`: the architecture
   * has no per-expert layout, so saves write these.
   */
  fused?: { gateUp: string; down: string; only?: boolean };
  /**
   * Architecture-specific expert tensors (instead of per-expert / fused SwiGLU matrices): fill the
   * moe-ts expert bank's parameters (by short name: w1, w3, w2, b1, ...) from the checkpoint, and back.
   */
  expertIO?: {
    load(
      io: { get(name: string, shape: readonly number[]): Float32Array; has(name: string): boolean; getMxfp4(name: string, shape: readonly number[]): Float32Array },
      base: string,
      p: Record<string, { data: Float32Array; shape: readonly number[] }>,
    ): void;
    save(put: (name: string, data: Float32Array, shape: number[]) => void, base: string, p: Record<string, { data: Float32Array; shape: readonly number[] }>): void;
  };
  /** The moe-ts router this architecture routes with (MoE architectures). */
  routerType?: string;
  /** Multi-head latent attention instead of (grouped-query) multi-head attention. */
  latentAttention?: boolean;
  /** HF module name of the (ungated) shared experts of the MoE layer, if the architecture has them. */
  sharedName?: string;
  /** Whether the checkpoint's RoPE rotates interleaved pairs (2i, 2i+1): rows are permuted on load and save. */
  ropeInterleaved?: (hf: HfConfig) => boolean;
  /** config.json as the common field mapping expects it (e.g. JetMoE's derived num_attention_heads), before anything is read. */
  normalize?(hf: HfConfig): HfConfig;
  /** The checkpoint name under model.layers.N. of a moe-ts layer parameter outside the MoE block (default: the same name). */
  rename?(rest: string): string;
  /** The model-config fields this architecture fixes, from the HF config (v4 or v5 field forms already normalised). */
  toModelConfig(hf: HfConfig, common: Record<string, unknown>): Record<string, unknown>;
  /** The HF config fields for a moe-ts model (only called once `reject` found nothing). */
  toHfConfig(c: ModelConfig): HfConfig;
  /** Why this moe-ts model does not match the architecture's semantics exactly; null when it does. */
  reject(c: ModelConfig): string | null;
}

const num = (hf: HfConfig, k: string): number | undefined => (typeof hf[k] === 'number' ? (hf[k] as number) : undefined);

function refuse(hf: HfConfig, field: string, ok: (v: unknown) => boolean, why: string): void {
  if (field in hf && !ok(hf[field])) throw new HfFormatError(`config.json field ${field} = ${JSON.stringify(hf[field])}: ${why}`);
}

/**
 * The model-config fields the architectures below map or rule on; any other field must keep its
 * default, so a feature added to moe-ts later is refused instead of exported without its meaning.
 */
const HF_KNOWN_FIELDS = new Set([
  'model_type',
  'vocab_size',
  'hidden_size',
  'num_hidden_layers',
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'attention_bias',
  'qkv_bias',
  'qk_norm',
  'kv_lora_rank',
  'q_lora_rank',
  'qk_nope_head_dim',
  'qk_rope_head_dim',
  'v_head_dim',
  'sliding_window',
  'layer_types',
  'moe_output_bias',
  'layer_norm_eps',
  'attention_sinks',
  'attention_type',
  'attention_options',
  'expert_type',
  'expert_options',
  'embedding_multiplier',
  'residual_multiplier',
  'logits_scaling',
  'attention_multiplier',
  'rope_scaling',
  'max_position_embeddings',
  'rope_theta',
  'rms_norm_eps',
  'tie_word_embeddings',
  'initializer_range',
  'intermediate_size',
  'hidden_act',
  'num_local_experts',
  'num_experts_per_tok',
  'moe_intermediate_size',
  'decoder_sparse_step',
  'mlp_only_layers',
  'first_k_dense_replace',
  'shared_expert_gate',
  'router_jitter_noise',
  'n_shared_experts',
  'shared_expert_intermediate_size',
  'expert_sizes',
  'router_type',
  'router_options',
  'norm_topk_prob',
  'dispatch',
  'capacity_factor',
  'router_aux_loss_coef',
  'aux_loss_normalization',
  'capacity_drop_order',
  'router_z_loss_coef',
  'router_entropy_coef',
  'router_importance_coef',
  'router_losses',
  'hidden_dropout',
]);

/** The first field this exporter does not map that differs from its default, or null. */
function unknownField(c: ModelConfig): string | null {
  const f = nonDefaultFields(c, HF_KNOWN_FIELDS).find(([, v]) => v !== undefined);
  return f ? `model field ${f[0]} = ${JSON.stringify(f[1]).slice(0, 80)} has no Hugging Face equivalent` : null;
}

/** Semantics every supported architecture shares; the first problem found, or null. */
function commonReject(c: ModelConfig): string | null {
  const unknown = unknownField(c);
  if (unknown) return unknown;
  if (c.hidden_act !== 'silu') return `hidden_act "${c.hidden_act}" (the supported Hugging Face architectures use SwiGLU, hidden_act silu)`;
  if (c.mixture_of_depths) return 'mixture_of_depths (token routing per layer) has no Hugging Face equivalent';
  if (c.layer_groups !== undefined) return 'layer_groups (layers shared in groups, MoEUT) has no Hugging Face equivalent';
  if (c.norm_placement !== 'pre') return 'norm_placement "peri" (peri-layernorm) has no Hugging Face equivalent';
  if (c.hidden_dropout !== 0) return null; // training-only; forward semantics match
  return null;
}

/** Multipliers only GraniteMoE has (everything else needs them at 1 / unset). */
function multipliers(c: ModelConfig): boolean {
  return c.embedding_multiplier !== 1 || c.residual_multiplier !== 1 || c.logits_scaling !== 1 || c.attention_multiplier !== undefined;
}

function moeReject(c: ModelConfig): string | null {
  if (!ARCHS.some((a) => a.routerType === c.router_type)) return `router_type "${c.router_type}" has no Hugging Face equivalent among ${ARCH_NAMES()} (they route by softmax top-k)`;
  if (c.router_options.noisyGating) return 'router option noisyGating (noisy top-k gating) has no Hugging Face equivalent';
  if (c.expert_sizes) return 'expert_sizes (heterogeneous experts) have no Hugging Face equivalent';
  if (c.dispatch === 'capacity') return 'dispatch "capacity" drops tokens; the Hugging Face architectures are dropless';
  return null;
}

function attnFields(c: ModelConfig): HfConfig {
  return {
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: kvHeadsOf(c),
    head_dim: headDimOf(c),
    rope_theta: c.rope_theta,
    ...(c.rope_scaling ? { rope_scaling: c.rope_scaling } : {}),
  };
}

function baseFields(c: ModelConfig): HfConfig {
  return {
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    num_hidden_layers: c.num_hidden_layers,
    max_position_embeddings: c.max_position_embeddings,
    rms_norm_eps: c.rms_norm_eps,
    tie_word_embeddings: c.tie_word_embeddings,
    initializer_range: c.initializer_range,
    hidden_act: 'silu',
    ...attnFields(c),
  };
}

const dense = (c: ModelConfig): boolean => c.num_local_experts === 0;
const allSparse = (c: ModelConfig): boolean => c.decoder_sparse_step === 1 && c.mlp_only_layers.length === 0 && c.first_k_dense_replace === 0;

const mixtral: ArchSpec = {
  modelType: 'mixtral',
  architecture: 'MixtralForCausalLM',
  moePrefix: 'block_sparse_moe',
  moePrefixAliases: ['mlp'],
  expertNames: ['w1', 'w3', 'w2'],
  routerType: 'topk',
  toModelConfig(hf) {
    refuse(hf, 'sliding_window', (v) => v === null || v === undefined || (typeof v === 'number' && v >= (num(hf, 'max_position_embeddings') ?? Infinity)), 'sliding-window attention is not supported');
    return {
      num_local_experts: num(hf, 'num_local_experts') ?? 8,
      num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 2,
      moe_intermediate_size: num(hf, 'intermediate_size') ?? 14336,
      intermediate_size: num(hf, 'intermediate_size') ?? 14336,
      norm_topk_prob: true,
      router_aux_loss_coef: num(hf, 'router_aux_loss_coef') ?? 0.001,
      router_jitter_noise: num(hf, 'router_jitter_noise') ?? 0,
    };
  },
  toHfConfig(c) {
    return {
      ...baseFields(c),
      intermediate_size: c.moe_intermediate_size,
      num_local_experts: c.num_local_experts,
      num_experts_per_tok: c.num_experts_per_tok,
      router_aux_loss_coef: c.router_aux_loss_coef,
      router_jitter_noise: c.router_jitter_noise,
      sliding_window: null,
      attention_dropout: 0,
    };
  },
  reject(c) {
    if (dense(c)) return 'a dense model (no experts)';
    if (!c.norm_topk_prob || c.router_options.normalize === false) return 'norm_topk_prob false (Mixtral always renormalises the top-k weights)';
    if (!allSparse(c)) return 'dense layers among MoE layers (Mixtral is MoE in every layer)';
    if (c.n_shared_experts > 0) return 'shared experts';
    if (c.qk_norm !== 'none' || c.attention_bias || c.qkv_bias) return 'q/k norms or attention biases';
    return null;
  },
};

/** Qwen2-MoE and Qwen3-MoE share the block layout (mlp.gate, mlp.experts.N.{gate,up,down}_proj). */
function qwenMoe(v: 2 | 3): ArchSpec {
  return {
    modelType: v === 2 ? 'qwen2_moe' : 'qwen3_moe',
    architecture: v === 2 ? 'Qwen2MoeForCausalLM' : 'Qwen3MoeForCausalLM',
    moePrefix: 'mlp',
    expertNames: ['gate_proj', 'up_proj', 'down_proj'],
    routerType: 'topk',
    toModelConfig(hf) {
      refuse(hf, 'use_sliding_window', (x) => x !== true, 'sliding-window attention is not supported');
      const shared = v === 2 ? (num(hf, 'shared_expert_intermediate_size') ?? 5632) : 0;
      return {
        num_local_experts: num(hf, 'num_experts') ?? 60,
        num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 4,
        moe_intermediate_size: num(hf, 'moe_intermediate_size') ?? 1408,
        intermediate_size: num(hf, 'intermediate_size') ?? 5632,
        decoder_sparse_step: num(hf, 'decoder_sparse_step') ?? 1,
        mlp_only_layers: Array.isArray(hf.mlp_only_layers) ? hf.mlp_only_layers : [],
        norm_topk_prob: hf.norm_topk_prob === true,
        router_aux_loss_coef: num(hf, 'router_aux_loss_coef') ?? 0.001,
        ...(v === 2
          ? { qkv_bias: true, n_shared_experts: shared > 0 ? 1 : 0, shared_expert_intermediate_size: shared > 0 ? shared : undefined, shared_expert_gate: shared > 0 }
          : { qk_norm: 'head', attention_bias: hf.attention_bias === true }),
      };
    },
    toHfConfig(c) {
      return {
        ...baseFields(c),
        intermediate_size: c.intermediate_size,
        moe_intermediate_size: c.moe_intermediate_size,
        num_experts: c.num_local_experts,
        num_experts_per_tok: c.num_experts_per_tok,
        norm_topk_prob: c.norm_topk_prob,
        decoder_sparse_step: c.decoder_sparse_step,
        mlp_only_layers: c.mlp_only_layers,
        router_aux_loss_coef: c.router_aux_loss_coef,
        use_sliding_window: false,
        attention_dropout: 0,
        ...(v === 2 ? { shared_expert_intermediate_size: c.shared_expert_intermediate_size ?? c.moe_intermediate_size } : { attention_bias: c.attention_bias }),
      };
    },
    reject(c) {
      if (dense(c)) return 'a dense model (no experts)';
      if (c.first_k_dense_replace > 0) return 'first_k_dense_replace (use mlp_only_layers for Qwen)';
      if (v === 2) {
        if (!(c.n_shared_experts === 1 && c.shared_expert_gate)) return 'Qwen2-MoE needs exactly one shared expert with shared_expert_gate';
        if (!c.qkv_bias || c.attention_bias || c.qk_norm !== 'none') return 'Qwen2-MoE has q/k/v biases (qkv_bias true) and no q/k norm';
      } else {
        if (c.n_shared_experts > 0) return 'shared experts';
        if (c.qk_norm !== 'head' || c.qkv_bias) return 'Qwen3-MoE has per-head q/k RMSNorm (qk_norm "head") and no qkv_bias';
      }
      return null;
    },
  };
}

const olmoe: ArchSpec = {
  modelType: 'olmoe',
  architecture: 'OlmoeForCausalLM',
  moePrefix: 'mlp',
  expertNames: ['gate_proj', 'up_proj', 'down_proj'],
  routerType: 'topk',
  toModelConfig(hf) {
    refuse(hf, 'clip_qkv', (x) => x === null || x === undefined, 'clip_qkv is not supported');
    return {
      num_local_experts: num(hf, 'num_experts') ?? 64,
      num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 8,
      moe_intermediate_size: num(hf, 'intermediate_size') ?? 2048,
      intermediate_size: num(hf, 'intermediate_size') ?? 2048,
      norm_topk_prob: hf.norm_topk_prob === true,
      router_aux_loss_coef: num(hf, 'router_aux_loss_coef') ?? 0.01,
      qk_norm: 'full',
      attention_bias: hf.attention_bias === true,
    };
  },
  toHfConfig(c) {
    const { head_dim: _h, ...base } = baseFields(c);
    return {
      ...base,
      intermediate_size: c.moe_intermediate_size,
      num_experts: c.num_local_experts,
      num_experts_per_tok: c.num_experts_per_tok,
      norm_topk_prob: c.norm_topk_prob,
      router_aux_loss_coef: c.router_aux_loss_coef,
      attention_bias: c.attention_bias,
      clip_qkv: null,
      attention_dropout: 0,
    };
  },
  reject(c) {
    if (dense(c)) return 'a dense model (no experts)';
    if (!allSparse(c) || c.n_shared_experts > 0) return 'dense layers or shared experts (OLMoE has neither)';
    if (c.qk_norm !== 'full' || c.qkv_bias) return 'OLMoE has whole-projection q/k RMSNorm (qk_norm "full")';
    if (c.head_dim !== undefined && c.head_dim * c.num_attention_heads !== c.hidden_size) return 'OLMoE has head_dim = hidden_size / num_attention_heads';
    return null;
  },
};

function denseArch(kind: 'llama' | 'qwen2'): ArchSpec {
  return {
    modelType: kind,
    architecture: kind === 'llama' ? 'LlamaForCausalLM' : 'Qwen2ForCausalLM',
    moePrefix: 'mlp',
    expertNames: ['gate_proj', 'up_proj', 'down_proj'],
    toModelConfig(hf) {
      refuse(hf, 'mlp_bias', (x) => x !== true, 'MLP biases are not supported');
      refuse(hf, 'use_sliding_window', (x) => x !== true, 'sliding-window attention is not supported');
      return { num_local_experts: 0, intermediate_size: num(hf, 'intermediate_size') ?? 11008, ...(kind === 'qwen2' ? { qkv_bias: true } : { attention_bias: hf.attention_bias === true }) };
    },
    toHfConfig(c) {
      return {
        ...baseFields(c),
        intermediate_size: c.intermediate_size,
        attention_dropout: 0,
        ...(kind === 'llama' ? { attention_bias: c.attention_bias, mlp_bias: false } : { use_sliding_window: false }),
      };
    },
    reject(c) {
      if (!dense(c)) return 'an MoE model';
      if (c.qk_norm !== 'none') return 'q/k norms';
      if (kind === 'qwen2' ? !c.qkv_bias || c.attention_bias : c.qkv_bias) return kind === 'qwen2' ? 'Qwen2 has q/k/v biases only' : 'q/k/v-only biases (that is Qwen2)';
      return null;
    },
  };
}

const granitemoe: ArchSpec = {
  modelType: 'granitemoe',
  architecture: 'GraniteMoeForCausalLM',
  moePrefix: 'block_sparse_moe',
  expertNames: ['gate_proj', 'up_proj', 'down_proj'],
  routerName: 'router.layer',
  fused: { gateUp: 'input_linear.weight', down: 'output_linear.weight', only: true },
  routerType: 'topk',
  toModelConfig(hf) {
    return {
      num_local_experts: num(hf, 'num_local_experts') ?? 8,
      num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 2,
      moe_intermediate_size: num(hf, 'intermediate_size') ?? 1024,
      intermediate_size: num(hf, 'intermediate_size') ?? 1024,
      // softmax over the top-k logits = the top-k softmax probabilities renormalised
      norm_topk_prob: true,
      router_aux_loss_coef: num(hf, 'router_aux_loss_coef') ?? 0.001,
      attention_bias: hf.attention_bias === true,
      embedding_multiplier: num(hf, 'embedding_multiplier') ?? 1,
      residual_multiplier: num(hf, 'residual_multiplier') ?? 1,
      logits_scaling: num(hf, 'logits_scaling') ?? 1,
      attention_multiplier: num(hf, 'attention_multiplier') ?? 1,
      tie_word_embeddings: hf.tie_word_embeddings !== false,
    };
  },
  toHfConfig(c) {
    return {
      ...baseFields(c),
      intermediate_size: c.moe_intermediate_size,
      num_local_experts: c.num_local_experts,
      num_experts_per_tok: c.num_experts_per_tok,
      router_aux_loss_coef: c.router_aux_loss_coef,
      attention_bias: c.attention_bias,
      embedding_multiplier: c.embedding_multiplier,
      residual_multiplier: c.residual_multiplier,
      logits_scaling: c.logits_scaling,
      attention_multiplier: c.attention_multiplier ?? 1 / Math.sqrt(headDimOf(c)),
      attention_dropout: 0,
    };
  },
  reject(c) {
    if (dense(c)) return 'a dense model (no experts)';
    if (!c.norm_topk_prob || c.router_options.normalize === false) return 'norm_topk_prob false (GraniteMoE renormalises)';
    if (!allSparse(c) || c.n_shared_experts > 0 || c.qk_norm !== 'none' || c.qkv_bias) return 'dense layers, shared experts, q/k norms or q/k/v-only biases';
    return null;
  },
};

/** GPT-OSS: gate_up_proj [E, d, 2f] with gate/up interleaved by column, biases, down_proj [E, f, d]; or MXFP4 blocks. */
const gptOssExperts: NonNullable<ArchSpec['expertIO']> = {
  load(io, base, p) {
    const [E, d, f] = p.w1.shape;
    const B = `${base}.experts.`;
    // MXFP4 blocks dequantise to [E, 2f, d] and [E, d, f], the transposes of the parameter layout
    const gu = io.has(`${B}gate_up_proj_blocks`) ? transpose12(io.getMxfp4(`${B}gate_up_proj`, [E, 2 * f, d]), E, 2 * f, d) : io.get(`${B}gate_up_proj`, [E, d, 2 * f]);
    const dn = io.has(`${B}down_proj_blocks`) ? transpose12(io.getMxfp4(`${B}down_proj`, [E, d, f]), E, d, f) : io.get(`${B}down_proj`, [E, f, d]);
    const gub = io.get(`${B}gate_up_proj_bias`, [E, 2 * f]);
    for (let e = 0; e < E; e++) {
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < f; j++) {
          p.w1.data[(e * d + i) * f + j] = gu[(e * d + i) * 2 * f + 2 * j];
          p.w3.data[(e * d + i) * f + j] = gu[(e * d + i) * 2 * f + 2 * j + 1];
        }
      }
      for (let j = 0; j < f; j++) {
        p.b1.data[e * f + j] = gub[e * 2 * f + 2 * j];
        p.b3.data[e * f + j] = gub[e * 2 * f + 2 * j + 1];
      }
    }
    p.w2.data.set(dn);
    p.b2.data.set(io.get(`${B}down_proj_bias`, [E, d]));
  },
  save(put, base, p) {
    const [E, d, f] = p.w1.shape;
    const gu = new Float32Array(E * d * 2 * f);
    const gub = new Float32Array(E * 2 * f);
    for (let e = 0; e < E; e++) {
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < f; j++) {
          gu[(e * d + i) * 2 * f + 2 * j] = p.w1.data[(e * d + i) * f + j];
          gu[(e * d + i) * 2 * f + 2 * j + 1] = p.w3.data[(e * d + i) * f + j];
        }
      }
      for (let j = 0; j < f; j++) {
        gub[e * 2 * f + 2 * j] = p.b1.data[e * f + j];
        gub[e * 2 * f + 2 * j + 1] = p.b3.data[e * f + j];
      }
    }
    const B = `${base}.experts.`;
    put(`${B}gate_up_proj`, gu, [E, d, 2 * f]);
    put(`${B}gate_up_proj_bias`, gub, [E, 2 * f]);
    put(`${B}down_proj`, p.w2.data.slice(), [E, f, d]);
    put(`${B}down_proj_bias`, p.b2.data.slice(), [E, d]);
  },
};

/** [E, a, b] -> [E, b, a]. */
function transpose12(x: Float32Array, E: number, a: number, b: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let e = 0; e < E; e++) for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out[(e * b + j) * a + i] = x[(e * a + i) * b + j];
  return out;
}

const gptOss: ArchSpec = {
  modelType: 'gpt_oss',
  architecture: 'GptOssForCausalLM',
  moePrefix: 'mlp',
  expertNames: ['gate_proj', 'up_proj', 'down_proj'],
  routerName: 'router',
  routerType: 'biased-topk',
  expertIO: gptOssExperts,
  toModelConfig(hf) {
    const lt = hf.layer_types;
    return {
      num_local_experts: num(hf, 'num_local_experts') ?? 32,
      num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? num(hf, 'experts_per_token') ?? 4,
      moe_intermediate_size: num(hf, 'intermediate_size') ?? 2880,
      intermediate_size: num(hf, 'intermediate_size') ?? 2880,
      router_aux_loss_coef: num(hf, 'router_aux_loss_coef') ?? 0.9,
      attention_bias: hf.attention_bias !== false,
      attention_sinks: true,
      sliding_window: num(hf, 'sliding_window'),
      layer_types: Array.isArray(lt) ? lt : undefined,
      expert_type: 'clamped-swiglu',
      expert_options: { limit: num(hf, 'swiglu_limit') ?? 7, alpha: 1.702 },
    };
  },
  toHfConfig(c) {
    const o = c.expert_options as { limit?: number };
    return {
      ...baseFields(c),
      intermediate_size: c.moe_intermediate_size,
      num_local_experts: c.num_local_experts,
      num_experts_per_tok: c.num_experts_per_tok,
      router_aux_loss_coef: c.router_aux_loss_coef,
      attention_bias: c.attention_bias,
      sliding_window: c.sliding_window ?? null,
      layer_types: c.layer_types ?? Array.from({ length: c.num_hidden_layers }, () => (c.sliding_window !== undefined ? 'sliding_attention' : 'full_attention')),
      swiglu_limit: o.limit ?? 7,
      attention_dropout: 0,
    };
  },
  reject(c) {
    if (dense(c)) return 'a dense model (no experts)';
    if (!c.attention_sinks || !c.attention_bias) return 'GPT-OSS has attention sinks and q/k/v/o biases';
    if (c.expert_type !== 'clamped-swiglu' || ((c.expert_options as { alpha?: number }).alpha ?? 1.702) !== 1.702) return 'GPT-OSS experts are clamped-swiglu with alpha 1.702';
    if (!allSparse(c) || c.n_shared_experts > 0 || c.qk_norm !== 'none') return 'dense layers, shared experts or q/k norms';
    return null;
  },
};

const mlaFields = (hf: HfConfig): Record<string, unknown> => ({
  kv_lora_rank: num(hf, 'kv_lora_rank') ?? 512,
  q_lora_rank: num(hf, 'q_lora_rank'),
  qk_nope_head_dim: num(hf, 'qk_nope_head_dim') ?? 128,
  qk_rope_head_dim: num(hf, 'qk_rope_head_dim') ?? 64,
  v_head_dim: num(hf, 'v_head_dim') ?? 128,
  attention_bias: hf.attention_bias === true,
  // MLA has no separate key/value head count or head_dim of its own
  num_key_value_heads: undefined,
  head_dim: undefined,
});

/** DeepSeek-V2 and V3: MLA, shared experts, first_k_dense_replace dense layers, group-limited routing. */
function deepseek(v: 2 | 3): ArchSpec {
  return {
    modelType: v === 3 ? 'deepseek_v3' : 'deepseek_v2',
    architecture: v === 3 ? 'DeepseekV3ForCausalLM' : 'DeepseekV2ForCausalLM',
    moePrefix: 'mlp',
    expertNames: ['gate_proj', 'up_proj', 'down_proj'],
    sharedName: 'shared_experts',
    routerType: 'group-limited',
    latentAttention: true,
    ropeInterleaved: (hf) => v === 2 || hf.rope_interleave !== false,
    toModelConfig(hf) {
      refuse(hf, 'moe_layer_freq', (x) => x === undefined || x === null || x === 1, 'only 1 (an MoE layer after every first_k_dense_replace layer) is supported');
      if (v === 3) refuse(hf, 'scoring_func', (x) => x === undefined || x === 'sigmoid', 'DeepSeek-V3 routing is sigmoid');
      if (v === 2) {
        refuse(hf, 'scoring_func', (x) => x === undefined || x === 'softmax', 'DeepSeek-V2 routing is softmax');
        refuse(hf, 'topk_method', (x) => x === undefined || x === 'greedy' || x === 'group_limited_greedy', 'supported: greedy, group_limited_greedy');
      }
      const grouped = v === 3 || hf.topk_method === 'group_limited_greedy';
      return {
        num_local_experts: num(hf, 'n_routed_experts') ?? 256,
        num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 8,
        moe_intermediate_size: num(hf, 'moe_intermediate_size') ?? 2048,
        intermediate_size: num(hf, 'intermediate_size') ?? 18432,
        n_shared_experts: num(hf, 'n_shared_experts') ?? 1,
        first_k_dense_replace: num(hf, 'first_k_dense_replace') ?? 0,
        router_type: 'group-limited',
        router_options: {
          variant: v === 3 ? 'v3' : 'v2',
          nGroup: grouped ? (num(hf, 'n_group') ?? 1) : 1,
          topkGroup: grouped ? (num(hf, 'topk_group') ?? 1) : 1,
          normalize: v === 3 ? hf.norm_topk_prob !== false : hf.norm_topk_prob === true,
          routedScaling: num(hf, 'routed_scaling_factor') ?? 1,
        },
        norm_topk_prob: v === 3 ? hf.norm_topk_prob !== false : hf.norm_topk_prob === true,
        // DeepSeek's released forward passes add no balancing loss (V3 balances by the bias)
        router_aux_loss_coef: 0,
        ...mlaFields(hf),
      };
    },
    toHfConfig(c) {
      const o = c.router_options as { nGroup?: number; topkGroup?: number; normalize?: boolean; routedScaling?: number };
      const { head_dim: _h, num_key_value_heads: _kv, ...base } = baseFields(c);
      return {
        ...base,
        num_key_value_heads: c.num_attention_heads,
        intermediate_size: c.intermediate_size,
        moe_intermediate_size: c.moe_intermediate_size,
        n_routed_experts: c.num_local_experts,
        n_shared_experts: c.n_shared_experts,
        num_experts_per_tok: c.num_experts_per_tok,
        first_k_dense_replace: c.first_k_dense_replace,
        moe_layer_freq: 1,
        n_group: o.nGroup ?? 1,
        topk_group: o.topkGroup ?? 1,
        norm_topk_prob: o.normalize ?? true,
        routed_scaling_factor: o.routedScaling ?? 1,
        kv_lora_rank: c.kv_lora_rank,
        q_lora_rank: c.q_lora_rank ?? null,
        qk_nope_head_dim: c.qk_nope_head_dim,
        qk_rope_head_dim: c.qk_rope_head_dim,
        v_head_dim: c.v_head_dim,
        attention_bias: c.attention_bias,
        attention_dropout: 0,
        ...(v === 3 ? { rope_interleave: true, scoring_func: 'sigmoid', topk_method: 'noaux_tc' } : { scoring_func: 'softmax', topk_method: (o.nGroup ?? 1) > 1 ? 'group_limited_greedy' : 'greedy' }),
      };
    },
    reject(c) {
      if (dense(c)) return 'a dense model (no experts)';
      if (c.kv_lora_rank === undefined) return 'DeepSeek needs multi-head latent attention (kv_lora_rank)';
      const o = c.router_options as { variant?: string; biasUpdateRate?: number };
      if (c.router_type !== 'group-limited' || (o.variant ?? 'v3') !== (v === 3 ? 'v3' : 'v2')) return `DeepSeek-V${v} routes with router_type "group-limited" variant v${v}`;
      if (c.decoder_sparse_step !== 1 || c.mlp_only_layers.length > 0) return 'dense layers other than the first first_k_dense_replace';
      if (c.shared_expert_gate || c.qk_norm !== 'none' || c.qkv_bias) return 'gated shared experts, q/k norms or q/k/v-only biases';
      return null;
    },
  };
}

/** Fields only JetMoE has (every other architecture needs them unset). */
function jetmoeOnly(c: ModelConfig): boolean {
  return attentionKindOf(c) === 'jetmoe-moa' || c.moe_output_bias || c.layer_norm_eps !== undefined;
}

/**
 * JetMoE: mixture-of-attention-heads attention (attention_type 'jetmoe-moa', src/models/attention/jetmoe.ts) with a
 * shared kv_proj, and a GraniteMoE-style fused MoE MLP with an output bias; both routers softmax
 * over the top-k logits. Its blocks' RMSNorms keep eps 1e-6 (only the final norm reads rms_norm_eps).
 */
const jetmoe: ArchSpec = {
  modelType: 'jetmoe',
  architecture: 'JetMoeForCausalLM',
  moePrefix: 'mlp',
  expertNames: ['gate_proj', 'up_proj', 'down_proj'],
  routerName: 'router.layer',
  fused: { gateUp: 'input_linear.weight', down: 'output_linear.weight', only: true },
  routerType: 'topk',
  normalize(hf) {
    const kv = num(hf, 'num_key_value_heads') ?? 16;
    const k = num(hf, 'num_experts_per_tok') ?? 2;
    refuse(hf, 'num_attention_heads', (x) => x === undefined || x === null || x === kv * k, `JetMoE has num_attention_heads = num_key_value_heads * num_experts_per_tok = ${kv * k}`);
    refuse(hf, 'activation_function', (x) => x === undefined || x === 'silu', 'not supported (supported: silu)');
    return { ...hf, num_attention_heads: kv * k, num_key_value_heads: kv };
  },
  rename(rest) {
    if (rest === 'moe_bias') return 'mlp.bias';
    if (rest.startsWith('self_attn.')) return 'self_attention.' + rest.slice('self_attn.'.length).replace('experts.router.gate.', 'experts.router.layer.');
    return rest;
  },
  toModelConfig(hf) {
    return {
      num_local_experts: num(hf, 'num_local_experts') ?? 8,
      num_experts_per_tok: num(hf, 'num_experts_per_tok') ?? 2,
      moe_intermediate_size: num(hf, 'intermediate_size') ?? 5632,
      intermediate_size: num(hf, 'intermediate_size') ?? 5632,
      head_dim: num(hf, 'kv_channels') ?? 128,
      norm_topk_prob: true,
      router_aux_loss_coef: num(hf, 'aux_loss_coef') ?? 0.01,
      attention_type: 'jetmoe-moa',
      moe_output_bias: true,
      layer_norm_eps: 1e-6,
      tie_word_embeddings: hf.tie_word_embeddings !== false,
      initializer_range: num(hf, 'initializer_range') ?? 0.01,
    };
  },
  toHfConfig(c) {
    const { head_dim: _h, hidden_act: _a, ...base } = baseFields(c);
    return {
      ...base,
      kv_channels: headDimOf(c),
      intermediate_size: c.moe_intermediate_size,
      num_local_experts: c.num_local_experts,
      num_experts_per_tok: c.num_experts_per_tok,
      aux_loss_coef: c.router_aux_loss_coef,
      activation_function: 'silu',
      attention_dropout: 0,
    };
  },
  reject(c) {
    if (dense(c)) return 'a dense model (no experts)';
    const o = (c.attention_options ?? {}) as { numExperts?: number; topK?: number };
    if (c.attention_type !== 'jetmoe-moa' || (o.numExperts ?? c.num_local_experts) !== c.num_local_experts || (o.topK ?? c.num_experts_per_tok) !== c.num_experts_per_tok)
      return 'JetMoE needs attention_type "jetmoe-moa" with as many attention experts and experts per token as the MoE MLP';
    if (!c.moe_output_bias || c.layer_norm_eps !== 1e-6) return 'JetMoE needs moe_output_bias and layer_norm_eps 1e-6';
    if (!c.norm_topk_prob || c.router_options.normalize === false) return 'norm_topk_prob false (JetMoE renormalises)';
    if (!allSparse(c) || c.n_shared_experts > 0 || c.qk_norm !== 'none' || c.qkv_bias || c.attention_bias) return 'dense layers, shared experts, q/k norms or attention biases';
    return null;
  },
};

/** The supported Hugging Face architectures, in the order savePretrained tries them. */
export const ARCHS: readonly ArchSpec[] = [mixtral, qwenMoe(2), qwenMoe(3), olmoe, deepseek(3), deepseek(2), granitemoe, gptOss, jetmoe, denseArch('llama'), denseArch('qwen2')];

function ARCH_NAMES(): string {
  return ARCHS.map((a) => a.modelType).join(', ');
}

export function archFor(modelType: unknown): ArchSpec {
  const a = ARCHS.find((x) => x.modelType === modelType);
  if (!a) throw new HfFormatError(`config.json field model_type ${JSON.stringify(modelType)} is not supported (supported: ${ARCH_NAMES()})`);
  return a;
}

/** The architecture a moe-ts model exports as, or an error naming what has no equivalent. */
export function archForModel(c: ModelConfig): ArchSpec {
  const kind = attentionKindOf(c);
  if (!['standard', 'mla', 'jetmoe-moa'].includes(kind))
    throw new HfFormatError(`cannot export as a Hugging Face model: attention_type "${kind}" has no Hugging Face equivalent (supported: standard, mla, jetmoe-moa)`);
  if (c.ffn_type !== undefined) throw new HfFormatError(`cannot export as a Hugging Face model: ffn_type "${c.ffn_type}" has no Hugging Face equivalent`);
  if (c.moe_layer_overrides && Object.keys(c.moe_layer_overrides).length > 0)
    throw new HfFormatError('cannot export as a Hugging Face model: per-layer MoE sizes (moe_layer_overrides) have no Hugging Face equivalent');
  const common = commonReject(c);
  if (common) throw new HfFormatError(`cannot export as a Hugging Face model: ${common}`);
  if (!dense(c)) {
    const m = moeReject(c);
    if (m) throw new HfFormatError(`cannot export as a Hugging Face model: ${m}`);
  }
  const reasons: string[] = [];
  for (const a of ARCHS) {
    if ((c.kv_lora_rank !== undefined) !== Boolean(a.latentAttention)) {
      reasons.push(`${a.modelType}: ${a.latentAttention ? 'needs' : 'has no'} multi-head latent attention`);
      continue;
    }
    if (!dense(c) && a.routerType !== undefined && c.router_type !== a.routerType) {
      reasons.push(`${a.modelType}: routes with router_type "${a.routerType}"`);
      continue;
    }
    if ((c.attention_sinks || c.sliding_window !== undefined || c.expert_type !== undefined) && a !== gptOss) {
      reasons.push(`${a.modelType}: has no attention sinks, sliding windows or ${c.expert_type ?? 'non-SwiGLU'} experts`);
      continue;
    }
    if (jetmoeOnly(c) !== (a === jetmoe)) {
      reasons.push(`${a.modelType}: ${a === jetmoe ? 'needs' : 'has no'} attention experts (attention_type "jetmoe-moa"), MoE output bias and block RMSNorm eps (layer_norm_eps)`);
      continue;
    }
    if (multipliers(c) && a !== granitemoe) {
      reasons.push(`${a.modelType}: has no embedding/residual/attention/logits multipliers`);
      continue;
    }
    const r = a.reject(c);
    if (r === null) return a;
    reasons.push(`${a.modelType}: ${r}`);
  }
  throw new HfFormatError(`cannot export as a Hugging Face model: no architecture matches exactly (${reasons.join('; ')})`);
}
