/**
 * Model and training configuration. Model field names follow Hugging Face's Mixtral /
 * Qwen2-MoE / DeepSeek configs where the concept exists, so import/export maps directly.
 * Validated with zod: unknown fields and invalid values fail with the field's path named.
 */
import { z, formatIssues, knownKeys, pathString, statement, ConfigError, oneLine, checkJsonDepth } from '../tensor/validate.js';
import { routerRegistry } from '../moe/routers/index.js';
import { lossRegistry } from '../moe/losses/index.js';
import { sparseDispatchNames } from '../moe/dispatch/index.js';

export { ConfigError };

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const nonNeg = z.number().nonnegative();

export const ModelConfigSchema = z
  .object({
    model_type: z.literal('moe-ts').default('moe-ts'),
    vocab_size: posInt.default(256),
    // defaults: the measured setup where the MoE leads its FLOP-matched dense baseline within a
    // few CPU minutes (one seed so far; docs/results.md has the sweep)
    hidden_size: posInt.default(64),
    num_hidden_layers: posInt.default(2),
    num_attention_heads: posInt.default(4),
    /** Grouped-query attention: key/value heads (default: num_attention_heads). */
    num_key_value_heads: posInt.optional(),
    /** Per-head width (default hidden_size / num_attention_heads; Qwen3-MoE sets it explicitly). */
    head_dim: posInt.optional(),
    /** Biases on q, k, v and o projections (Llama attention_bias). */
    attention_bias: z.boolean().default(false),
    /** Biases on q, k, v only (Qwen2). */
    qkv_bias: z.boolean().default(false),
    /** RMSNorm on queries and keys before RoPE: per head (Qwen3) or over the whole projection (OLMoE). */
    qk_norm: z.enum(['none', 'head', 'full']).default('none'),
    /**
     * Multi-head latent attention (DeepSeek-V2/V3), on when kv_lora_rank is set: keys and values
     * from a compressed latent of width kv_lora_rank, queries optionally through a q_lora_rank
     * bottleneck; per head qk_nope_head_dim + qk_rope_head_dim query/key dims (RoPE on the latter,
     * one shared rotary key) and v_head_dim value dims.
     */
    kv_lora_rank: posInt.optional(),
    q_lora_rank: posInt.optional(),
    qk_nope_head_dim: posInt.optional(),
    qk_rope_head_dim: posInt.optional(),
    v_head_dim: posInt.optional(),
    /** Sliding-window attention: keys within this many positions (every layer, unless layer_types says which). */
    sliding_window: posInt.optional(),
    /** Per layer 'full_attention' or 'sliding_attention' (GPT-OSS alternates them). */
    layer_types: z.array(z.enum(['full_attention', 'sliding_attention'])).optional(),
    /** A learned bias [hidden_size] added to every MoE layer's output (JetMoE's MoE bias). */
    moe_output_bias: z.boolean().default(false),
    /** Epsilon of the per-layer RMSNorms (default rms_norm_eps; JetMoE's blocks keep 1e-6 whatever rms_norm_eps says). */
    layer_norm_eps: z.number().positive().optional(),
    /** A learned per-head attention sink logit in every layer (GPT-OSS `self_attn.sinks`). */
    attention_sinks: z.boolean().default(false),
    /** An attention kind from attentionRegistry (default: 'mla' with kv_lora_rank, else 'standard'); e.g. 'moa', 'moh'. */
    attention_type: z.string().optional(),
    /** The attention kind's own options (validated by its schema when the model is built). */
    attention_options: z.record(z.string(), z.unknown()).optional(),
    /** Routed expert type (default: the one hidden_act selects) and its options, e.g. 'clamped-swiglu' { limit }. */
    expert_type: z.string().optional(),
    expert_options: z.record(z.string(), z.unknown()).default({}),
    /** GraniteMoE multipliers: embeddings times embedding_multiplier, each residual branch times residual_multiplier, logits divided by logits_scaling. */
    embedding_multiplier: z.number().positive().default(1),
    residual_multiplier: z.number().positive().default(1),
    logits_scaling: z.number().positive().default(1),
    /** Attention score scale (default head_dim^-0.5; GraniteMoE sets it). */
    attention_multiplier: z.number().positive().optional(),
    /** RoPE frequency scaling as in transformers (rope_type default, linear, llama3, yarn; see rope.ts). */
    rope_scaling: z.record(z.string(), z.unknown()).optional(),
    max_position_embeddings: posInt.default(256),
    rope_theta: z.number().positive().default(10000),
    rms_norm_eps: z.number().positive().default(1e-6),
    tie_word_embeddings: z.boolean().default(true),
    initializer_range: z.number().positive().default(0.02),
    /** Width of dense FFN layers (and of the dense baseline). */
    intermediate_size: posInt.default(256),
    hidden_act: z.enum(['silu', 'gelu']).default('silu'),
    /** 0 makes a dense model. */
    num_local_experts: nonNegInt.default(8),
    num_experts_per_tok: posInt.default(2),
    /** Width of each routed expert. */
    moe_intermediate_size: posInt.default(128),
    /** Every how many layers an MoE FFN replaces the dense one (1 = every layer, 2 = every other). */
    decoder_sparse_step: posInt.default(1),
    /** Layers with a dense FFN regardless of decoder_sparse_step (Qwen2-MoE mlp_only_layers). */
    mlp_only_layers: z.array(nonNegInt).default([]),
    /** The first k layers are dense (DeepSeek first_k_dense_replace). */
    first_k_dense_replace: nonNegInt.default(0),
    /** Shared experts scaled by sigmoid(x w_g) with w_g [1, d] (Qwen2-MoE shared_expert_gate). */
    shared_expert_gate: z.boolean().default(false),
    /**
     * Multiplicative input jitter U(1-eps, 1+eps) on the MoE layer's input in training, seen by
     * the router and the experts alike (Mixtral router_jitter_noise; Switch Transformer, Fedus et al. 2021).
     */
    router_jitter_noise: nonNeg.default(0),
    /**
     * Conditional MoE routing (CMR; Elbayad et al., "Fixing MoE Over-Fitting on Low-Resource
     * Languages in Multilingual Machine Translation", 2022): beside every MoE layer a dense FFN of
     * width intermediate_size and a gate g(x) = sigmoid(w x + b); the layer outputs
     * (1 - g) FFN(x) + g MoE(x). The budget loss coef * |mean g - budget| (mean over every MoE
     * layer's tokens) holds the MoE's share of the mix near budget; gate_dropout is dropout on g
     * in training (as fairseq's CMR gate). Absent: plain MoE layers.
     */
    conditional_moe_routing: z
      .object({
        budget: z.number().min(0).max(1).default(0.8),
        loss_coef: nonNeg.default(0.01),
        gate_dropout: z.number().min(0).lt(1).default(0),
      })
      .strict()
      .optional(),
    n_shared_experts: nonNegInt.default(0),
    shared_expert_intermediate_size: posInt.optional(),
    /** MH-MoE sub-tokens per token: each MoE layer routes hidden_size / moe_sub_tokens wide sub-tokens (Wu et al. 2024). */
    moe_sub_tokens: posInt.optional(),
    /** Heterogeneous expert widths (HMoE); overrides moe_intermediate_size per expert. */
    expert_sizes: z.array(posInt).optional(),
    /** A routerRegistry name. */
    router_type: z.string().default('topk'),
    /** Router-specific options (validated by the router's own schema when the model is built). */
    router_options: z.record(z.string(), z.unknown()).default({}),
    norm_topk_prob: z.boolean().default(true),
    /** A sparse dispatch from dispatchRegistry. Omitted: the router's own default (capacity-limited for switch, dropless otherwise). */
    dispatch: z.string().optional(),
    /** Expert capacity factor for capacity dispatch (default: the router's, else 1.25). */
    capacity_factor: z.number().positive().optional(),
    /** Hugging Face-style loss coefficients; each loss spec names the field that enables it (configField). */
    router_aux_loss_coef: nonNeg.default(0.01),
    /**
     * How the Switch balancing loss is normalised: 'per-layer-assignments' (moe-ts: one loss per
     * MoE layer, f_e over that layer's assignments) or 'all-layers-tokens' (Hugging Face: one loss
     * over all layers' router outputs, f_e over tokens; a factor of layers / k larger). Models read
     * from a Hugging Face config use the latter, so router_aux_loss_coef means what it meant there.
     */
    aux_loss_normalization: z.enum(['per-layer-assignments', 'all-layers-tokens']).default('per-layer-assignments'),
    /** Capacity dispatch: drop the lowest-weight overflow (V-MoE, default) or the latest tokens in sequence (Switch Transformers). */
    capacity_drop_order: z.enum(['weight', 'sequence']).optional(),
    router_z_loss_coef: nonNeg.default(0.001),
    router_entropy_coef: nonNeg.default(0),
    router_importance_coef: nonNeg.default(0),
    /** Any registered balancing loss by name -> coefficient; overrides the coefficient fields above for the same loss. */
    router_losses: z.record(z.string(), nonNeg).default({}),
    hidden_dropout: z.number().min(0).lt(1).default(0),
    /**
     * Parameter-efficient fine-tuning: LoRA experts on the targeted linear layers of a frozen base
     * (src/models/lora-experts.ts; only the adapters train). Absent: a plain model.
     */
    peft: z
      .object({
        type: z.literal('lora-experts'),
        experts: nonNegInt.default(4),
        top_k: posInt.optional(),
        rank: posInt.default(8),
        alpha: z.number().positive().default(16),
        shared: nonNegInt.default(0),
        experts_per_layer: z.array(nonNegInt).optional(),
        targets: z
          .array(z.enum(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']))
          .min(1)
          .default(['q_proj', 'v_proj', 'o_proj']),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.head_dim !== undefined) {
      if (c.head_dim % 2 !== 0) ctx.addIssue({ code: 'custom', path: ['head_dim'], message: `must be even for rotary embeddings, got ${c.head_dim}` });
    } else if (c.hidden_size % c.num_attention_heads !== 0) {
      ctx.addIssue({ code: 'custom', path: ['num_attention_heads'], message: `hidden_size ${c.hidden_size} must be divisible by num_attention_heads ${c.num_attention_heads}` });
    } else if ((c.hidden_size / c.num_attention_heads) % 2 !== 0) {
      ctx.addIssue({ code: 'custom', path: ['num_attention_heads'], message: 'head dimension (hidden_size / num_attention_heads) must be even for rotary embeddings' });
    }
    if (c.kv_lora_rank !== undefined) {
      for (const k of ['qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim'] as const) {
        if (c[k] === undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'is required with kv_lora_rank (multi-head latent attention)' });
      }
      if (c.qk_rope_head_dim !== undefined && c.qk_rope_head_dim % 2 !== 0) ctx.addIssue({ code: 'custom', path: ['qk_rope_head_dim'], message: 'must be even for rotary embeddings' });
      if (c.v_head_dim !== undefined && c.qk_nope_head_dim !== undefined && c.qk_rope_head_dim !== undefined && c.v_head_dim > c.qk_nope_head_dim + c.qk_rope_head_dim) {
        ctx.addIssue({ code: 'custom', path: ['v_head_dim'], message: 'must be at most qk_nope_head_dim + qk_rope_head_dim' });
      }
    }
    if (c.layer_types && c.layer_types.length !== c.num_hidden_layers)
      ctx.addIssue({ code: 'custom', path: ['layer_types'], message: `needs one entry per layer (${c.num_hidden_layers}), got ${c.layer_types.length}` });
    if (c.layer_types?.includes('sliding_attention') && c.sliding_window === undefined)
      ctx.addIssue({ code: 'custom', path: ['sliding_window'], message: 'is required when layer_types has sliding_attention layers' });
    if (c.num_key_value_heads !== undefined && c.num_attention_heads % c.num_key_value_heads !== 0) {
      ctx.addIssue({ code: 'custom', path: ['num_key_value_heads'], message: `num_attention_heads ${c.num_attention_heads} must be a multiple of num_key_value_heads ${c.num_key_value_heads}` });
    }
    c.mlp_only_layers.forEach((l, i) => {
      if (l >= c.num_hidden_layers) ctx.addIssue({ code: 'custom', path: ['mlp_only_layers', i], message: `layer ${l} does not exist (num_hidden_layers ${c.num_hidden_layers})` });
    });
    if (c.rope_scaling) {
      const t = c.rope_scaling.rope_type ?? c.rope_scaling.type ?? 'default';
      if (!['default', 'linear', 'llama3', 'yarn'].includes(t as string)) {
        ctx.addIssue({ code: 'custom', path: ['rope_scaling', 'rope_type'], message: `rope type ${JSON.stringify(t)} is not supported (supported: default, linear, llama3, yarn)` });
      }
    }
    // routers that check k themselves (null experts: k counts zero-compute experts too) may exceed it
    if (c.num_local_experts > 0 && c.num_experts_per_tok > c.num_local_experts && routerRegistry.find(c.router_type)?.checkTopK !== false) {
      ctx.addIssue({ code: 'custom', path: ['num_experts_per_tok'], message: `cannot exceed num_local_experts (${c.num_local_experts})` });
    }
    if (!routerRegistry.has(c.router_type)) ctx.addIssue({ code: 'custom', path: ['router_type'], message: `must be one of ${routerRegistry.names().join(', ')}` });
    if (c.dispatch !== undefined && !sparseDispatchNames().includes(c.dispatch)) ctx.addIssue({ code: 'custom', path: ['dispatch'], message: `must be one of ${sparseDispatchNames().join(', ')}` });
    for (const name of Object.keys(c.router_losses)) {
      if (!lossRegistry.has(name)) ctx.addIssue({ code: 'custom', path: ['router_losses', name], ...statement(`unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`) });
    }
    if (c.peft?.experts_per_layer && c.peft.experts_per_layer.length !== c.num_hidden_layers) {
      ctx.addIssue({ code: 'custom', path: ['peft', 'experts_per_layer'], message: `needs one entry per layer (${c.num_hidden_layers}), got ${c.peft.experts_per_layer.length}` });
    }
    if (c.peft && c.peft.experts === 0 && c.peft.shared === 0 && !c.peft.experts_per_layer?.some((n) => n > 0)) {
      ctx.addIssue({ code: 'custom', path: ['peft', 'experts'], message: 'must be positive (or peft.shared), else there is nothing to train' });
    }
    if (c.expert_sizes && c.expert_sizes.length !== c.num_local_experts) {
      ctx.addIssue({ code: 'custom', path: ['expert_sizes'], message: `needs one width per expert (${c.num_local_experts}), got ${c.expert_sizes.length}` });
    }
  });

export type ModelConfig = z.output<typeof ModelConfigSchema>;

export const TrainConfigSchema = z
  .object({
    steps: posInt.default(400),
    batch_size: posInt.default(16),
    seq_len: posInt.default(128),
    // 1e-2: the MoE's best measured rate (dense's is 6e-3; docs/results.md compares both)
    lr: z.number().positive().default(1e-2),
    min_lr: nonNeg.optional(),
    warmup_steps: nonNegInt.default(40),
    schedule: z.enum(['cosine', 'linear', 'constant']).default('cosine'),
    weight_decay: nonNeg.default(0.1),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.95),
    grad_clip: nonNeg.default(1.0),
    eval_interval: posInt.default(50),
    eval_batches: posInt.default(4),
    save_interval: posInt.default(100),
    log_interval: posInt.default(1),
    seed: nonNegInt.default(1234),
    val_fraction: z.number().gt(0).lt(1).default(0.1),
  })
  .strict();

export type TrainConfig = z.output<typeof TrainConfigSchema>;

export const DataConfigSchema = z
  .object({
    /** Named domains ('shakespeare', 'wikitext', 'linux') or file paths. */
    sources: z.array(z.string().min(1)).min(1).default(['shakespeare']),
    /** Sampling weight per source (default: equal). */
    weights: z.array(z.number().positive()).optional(),
    tokenizer: z
      .object({
        type: z.enum(['byte', 'bpe']).default('byte'),
        vocab_size: posInt.optional(),
        /** Load a saved tokenizer JSON instead of training one. */
        path: z.string().optional(),
      })
      .strict()
      .default({ type: 'byte' }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.weights && c.weights.length !== c.sources.length) {
      ctx.addIssue({ code: 'custom', path: ['weights'], message: `needs one weight per source (${c.sources.length})` });
    }
  });

export type DataConfig = z.output<typeof DataConfigSchema>;

export const RunConfigSchema = z
  .object({
    model: ModelConfigSchema.default(ModelConfigSchema.parse({})),
    training: TrainConfigSchema.default(TrainConfigSchema.parse({})),
    data: DataConfigSchema.default(DataConfigSchema.parse({})),
  })
  .strict();

export type RunConfig = z.output<typeof RunConfigSchema>;

/** Every problem in the house format (src/tensor/validate.ts), each naming the field path: `invalid <where>: model.hidden_size: must be > 0, got -3`. */
export function formatZodError(err: z.ZodError, where: string, input?: unknown, schema?: z.ZodType): string {
  return formatIssues(err.issues, input, {
    where: `invalid ${where}`,
    sep: ': ',
    label: (p) => (p.length ? pathString(p) : '(root)'),
    unknown: (p) => `${pathString(p)}: unknown field`,
    known: schema ? (p) => knownKeys(schema, p) : undefined,
  });
}

function parseWith<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  checkJsonDepth(value, where);
  const r = schema.safeParse(value);
  if (!r.success) throw new ConfigError(oneLine(formatZodError(r.error, where, value, schema), 3000));
  return r.data;
}

export function parseModelConfig(value: unknown, where = 'model config'): ModelConfig {
  return parseWith(ModelConfigSchema, value, where);
}

export function parseRunConfig(value: unknown, where = 'config'): RunConfig {
  return parseWith(RunConfigSchema, value, where);
}

/** Parse a JSON config file's text, naming the file on syntax errors. */
export function parseRunConfigText(text: string, path: string): RunConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config ${path} is not valid JSON: ${oneLine((e as Error).message)}`);
  }
  return parseRunConfig(v, `config ${path}`);
}

/** Is layer i an MoE layer? */
export function isMoELayer(c: ModelConfig, i: number): boolean {
  return c.num_local_experts > 0 && (i + 1) % c.decoder_sparse_step === 0 && i >= c.first_k_dense_replace && !c.mlp_only_layers.includes(i);
}

/** Per-head width. */
export function headDimOf(c: ModelConfig): number {
  return c.head_dim ?? c.hidden_size / c.num_attention_heads;
}

/** Key/value heads (num_key_value_heads, default num_attention_heads). */
export function kvHeadsOf(c: ModelConfig): number {
  return c.num_key_value_heads ?? c.num_attention_heads;
}

/**
 * The dense model with the same active compute per token: every MoE FFN becomes a dense FFN
 * whose width equals the widths a token actually uses (k routed experts + shared experts).
 */
export function matchedDenseConfig(c: ModelConfig): ModelConfig {
  if (c.num_local_experts === 0) return c;
  const sizes = c.expert_sizes ?? new Array<number>(c.num_local_experts).fill(c.moe_intermediate_size);
  const meanSize = sizes.reduce((a, b) => a + b, 0) / sizes.length;
  const shared = c.n_shared_experts * (c.shared_expert_intermediate_size ?? c.moe_intermediate_size);
  // CMR's dense branch runs on every token beside the experts
  const cmr = c.conditional_moe_routing ? c.intermediate_size : 0;
  const width = Math.round(c.num_experts_per_tok * meanSize + shared + cmr);
  const dense = { ...c, num_local_experts: 0, intermediate_size: width, decoder_sparse_step: 1, expert_sizes: undefined, conditional_moe_routing: undefined };
  if (c.decoder_sparse_step > 1 || c.first_k_dense_replace > 0 || c.mlp_only_layers.length > 0) {
    // mixed stacks keep their dense layers' width; only whole-model dense is expressible here when widths agree
    if (cmr)
      throw new ConfigError('matched dense baseline: conditional_moe_routing with dense layers (decoder_sparse_step, first_k_dense_replace or mlp_only_layers) has no single matched dense width');
    if (c.intermediate_size !== width) {
      throw new ConfigError(
        `matched dense baseline: decoder_sparse_step ${c.decoder_sparse_step} (or dense layers) mixes dense FFNs of width ${c.intermediate_size} with MoE of active width ${width}; set intermediate_size to ${width} to compare`,
      );
    }
  }
  return dense;
}
