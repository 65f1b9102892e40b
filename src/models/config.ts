/**
 * Model and training configuration. Model field names follow Hugging Face's Mixtral /
 * Qwen2-MoE / DeepSeek configs where the concept exists, so import/export maps directly.
 * Validated with zod: unknown fields and invalid values fail with the field's path named.
 */
import { z, formatIssues, knownKeys, pathString, statement, ConfigError, oneLine, checkJsonDepth } from '../tensor/validate.js';
import { routerRegistry } from '../moe/routers/index.js';
import { lossRegistry } from '../moe/losses/index.js';
import { sparseDispatchNames } from '../moe/dispatch/index.js';
import { ffnRegistry } from './ffn/index.js';
import { familyRegistry, familyOptionIssues, DEFAULT_MODEL_TYPE } from './family.js';

export { ConfigError };

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const nonNeg = z.number().nonnegative();

export const ModelConfigSchema = z
  .object({
    /** The model family (host architecture) from familyRegistry: 'moe-ts' (the MoE transformer), 'mamba-moe', 'all-mlp', ... */
    model_type: z.string().default(DEFAULT_MODEL_TYPE),
    /** The family's own options (validated by its schema; src/models/family.ts). */
    family_options: z.record(z.string(), z.unknown()).optional(),
    vocab_size: posInt.default(256),
    // defaults: hidden 64, 2 layers, 8 experts of 128 (docs/results.md has the sweep; a run config
    // without a model section adds TRAIN_DEFAULT_MODEL's shared expert and top-1 routing)
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
    /**
     * An FFN kind from ffnRegistry (PEER 'peer', Multilinear MoE 'mumoe') that replaces the MoE FFN
     * on the layers num_local_experts / decoder_sparse_step make MoE layers; omitted: the MoE layer.
     */
    ffn_type: z.string().optional(),
    /** The FFN kind's own options (validated by its schema when the model is built). */
    ffn_options: z.record(z.string(), z.unknown()).optional(),
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
    /**
     * AutoMoE-style heterogeneous stacks: per-layer overrides of the MoE fields, keyed by layer
     * index ("0", "1", ...): expert count (0: a dense layer), experts per token, expert width or
     * widths. Layers not listed use the model-wide fields.
     */
    moe_layer_overrides: z
      .record(
        z.string(),
        z
          .object({
            num_local_experts: nonNegInt.optional(),
            num_experts_per_tok: posInt.optional(),
            moe_intermediate_size: posInt.optional(),
            expert_sizes: z.array(posInt).optional(),
          })
          .strict(),
      )
      .optional(),
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
     * MoEUT layer grouping ("MoEUT: Mixture-of-Experts Universal Transformers", Csordás et al. 2024): G distinct layers, repeated num_hidden_layers / G
     * times; layer i uses the parameters of layer i mod G (a universal transformer for G = 1).
     */
    layer_groups: posInt.optional(),
    /**
     * Where the block norms sit: 'pre' (pre-LN, every sublayer input normalised) or 'peri'
     * (MoEUT's peri-layernorm: only inputs of projections followed by a softmax or sigmoid, i.e.
     * queries, keys and routers, are normalised; values and experts read the raw residual stream).
     */
    norm_placement: z.enum(['pre', 'peri']).default('pre'),
    /**
     * Mixture-of-Depths (Raposo et al. 2024; src/models/depth.ts): on the chosen layers a router
     * sends the top `capacity` fraction of each sequence's tokens through the block, the rest skip
     * it through the residual. Absent: every token runs every block.
     */
    mixture_of_depths: z
      .object({
        /** Fraction of each sequence's tokens a routed block processes (p-MoD: the mean ratio its schedule shifts). */
        capacity: z.number().gt(0).max(1).default(0.125),
        /** Routed blocks are the layers i with (i + 1) % every == 0 (2: every other block, as the paper). */
        every: posInt.default(2),
        /** Routed layers by index (overrides every). */
        layers: z.array(nonNegInt).optional(),
        /** One capacity per layer (1: a full block); overrides capacity, every, layers and schedule. */
        capacities: z.array(z.number().gt(0).max(1)).optional(),
        /** 'constant', or p-MoD's progressive ratio decay: capacity + cos(pi l / (L - 1)) / 2 at layer l, floored at min_capacity; layers at or above max_capacity stay full. */
        schedule: z.enum(['constant', 'shifted-cosine']).default('constant'),
        min_capacity: z.number().gt(0).max(1).default(0.01),
        max_capacity: z.number().gt(0).max(1).default(1),
        /** 'linear': a scalar router per layer on the residual stream (MoD); 'gamma': one 2-way softmax router shared by all routed layers on the normalised input, its keep-probability scaling the FFN output (gamma-MoD). */
        router: z.enum(['linear', 'gamma']).default('linear'),
        /** How a linear router's logit r scales the block output: sigmoid(r), r itself ('none', the paper) or 1 + tanh_scale * tanh(r) (p-MoD TanhNorm). */
        weight: z.enum(['sigmoid', 'none', 'tanh']).default('sigmoid'),
        tanh_scale: z.number().positive().default(0.2),
        /** p-MoD STRing: skipped tokens are scaled by their router weight too. */
        symmetric: z.boolean().default(false),
        /** Causal inference rule: 'predictor' (a small MLP on the stop-gradient block input, trained to predict top-k membership) or 'router' (the router logit itself, trained with the same loss); a token is processed when the logit is > 0. */
        causal: z.enum(['predictor', 'router']).default('predictor'),
        /** Coefficient of the binary cross-entropy that teaches the causal rule top-k membership. */
        aux_loss_coef: nonNeg.default(0.01),
        /** Hidden width of the causal predictor MLP. */
        predictor_hidden: posInt.default(32),
        /** Selection out of training: 'causal' (the rule above; generation needs it) or 'topk' (the training rule, not causal). */
        inference: z.enum(['causal', 'topk']).default('causal'),
        /** What a skipped token skips: the whole 'block' (MoD) or only 'attention' (Router-Tuning's MindSkip; every token runs the FFN). */
        skip: z.enum(['block', 'attention']).default('block'),
        /** Router-Tuning: only the depth routers (and predictors) train; the rest of the model stays frozen. */
        router_tuning: z.boolean().default(false),
      })
      .strict()
      .optional(),
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
    // the default family is always known (a config parsed before any other family registers)
    const family = familyRegistry.find(c.model_type);
    if (!family && c.model_type !== DEFAULT_MODEL_TYPE) {
      ctx.addIssue({ code: 'custom', path: ['model_type'], message: `must be one of ${familyRegistry.names().join(', ')}` });
    }
    if (family) {
      for (const i of familyOptionIssues(family, c as ModelConfig)) ctx.addIssue(i as Parameters<typeof ctx.addIssue>[0]);
      const set = c as unknown as Record<string, unknown>;
      for (const f of family.unusedFields ?? []) {
        if (set[f] !== undefined && JSON.stringify(set[f]) !== JSON.stringify(modelFieldDefault(f))) {
          ctx.addIssue({ code: 'custom', path: [f], ...statement(`is not used by model_type "${c.model_type}"; remove it`) });
        }
      }
    }
    // attention fields only constrain families with attention
    if (family?.traits.attention === false) {
      // nothing: heads and RoPE widths are unused
    } else if (c.head_dim !== undefined) {
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
    if (c.ffn_type !== undefined) {
      if (!ffnRegistry.has(c.ffn_type)) ctx.addIssue({ code: 'custom', path: ['ffn_type'], message: `must be one of ${ffnRegistry.names().join(', ')}` });
      else if (c.num_local_experts === 0) ctx.addIssue({ code: 'custom', path: ['ffn_type'], message: 'replaces the MoE FFN layers, but num_local_experts is 0 (a dense model has none)' });
      if (c.conditional_moe_routing) ctx.addIssue({ code: 'custom', path: ['conditional_moe_routing'], message: `applies to MoE layers, not to ffn_type "${c.ffn_type}"` });
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
    for (const [key, o] of Object.entries(c.moe_layer_overrides ?? {})) {
      const i = Number(key);
      if (!/^\d+$/.test(key) || i >= c.num_hidden_layers) {
        ctx.addIssue({ code: 'custom', path: ['moe_layer_overrides', key], message: `must be a layer index in [0, ${c.num_hidden_layers})` });
        continue;
      }
      const l = layerConfig(c, i);
      if (l.num_local_experts > 0 && l.num_experts_per_tok > l.num_local_experts && routerRegistry.find(c.router_type)?.checkTopK !== false)
        ctx.addIssue({ code: 'custom', path: ['moe_layer_overrides', key, 'num_experts_per_tok'], message: `cannot exceed the layer's num_local_experts (${l.num_local_experts})` });
      if (o.expert_sizes && o.expert_sizes.length !== l.num_local_experts)
        ctx.addIssue({ code: 'custom', path: ['moe_layer_overrides', key, 'expert_sizes'], message: `needs one width per expert of the layer (${l.num_local_experts}), got ${o.expert_sizes.length}` });
    }
    if (c.layer_groups !== undefined && c.num_hidden_layers % c.layer_groups !== 0)
      ctx.addIssue({ code: 'custom', path: ['layer_groups'], message: `must divide num_hidden_layers (${c.num_hidden_layers}), got ${c.layer_groups}` });
    if (c.layer_groups !== undefined && c.mixture_of_depths)
      ctx.addIssue({ code: 'custom', path: ['layer_groups'], ...statement('cannot be combined with mixture_of_depths (depth routers are per layer)') });
    const mod = c.mixture_of_depths;
    if (mod?.capacities && mod.capacities.length !== c.num_hidden_layers)
      ctx.addIssue({ code: 'custom', path: ['mixture_of_depths', 'capacities'], message: `needs one entry per layer (${c.num_hidden_layers}), got ${mod.capacities.length}` });
    mod?.layers?.forEach((l, i) => {
      if (l >= c.num_hidden_layers) ctx.addIssue({ code: 'custom', path: ['mixture_of_depths', 'layers', i], message: `layer ${l} does not exist (num_hidden_layers ${c.num_hidden_layers})` });
    });
    if (mod && mod.min_capacity > mod.max_capacity)
      ctx.addIssue({ code: 'custom', path: ['mixture_of_depths', 'min_capacity'], message: `must be at most max_capacity (${mod.max_capacity}), got ${mod.min_capacity}` });
    if (c.expert_sizes && c.expert_sizes.length !== c.num_local_experts) {
      ctx.addIssue({ code: 'custom', path: ['expert_sizes'], message: `needs one width per expert (${c.num_local_experts}), got ${c.expert_sizes.length}` });
    }
  });

export type ModelConfig = z.output<typeof ModelConfigSchema>;

let fieldDefaults: Record<string, unknown> | undefined;
/** The schema default of a model-config field (undefined for optional ones), for "set but unused" checks. */
function modelFieldDefault(field: string): unknown {
  fieldDefaults ??= ModelConfigSchema.parse({}) as unknown as Record<string, unknown>;
  return fieldDefaults[field];
}

/** The fields of `c` outside `known` whose value differs from the schema default, as [field, value] (what an exporter or family must refuse). */
export function nonDefaultFields(c: ModelConfig, known: ReadonlySet<string>): [string, unknown][] {
  return Object.entries(c).filter(([k, v]) => !known.has(k) && JSON.stringify(v) !== JSON.stringify(modelFieldDefault(k)));
}

export const TrainConfigSchema = z
  .object({
    steps: posInt.default(400),
    batch_size: posInt.default(16),
    seq_len: posInt.default(128),
    // 1e-2: the MoE's best measured rate; dense has no better one over 3 seeds (4e-3 to 1e-2; docs/results.md)
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

/**
 * The model `moe-ts train` (and `npm run bench -- train`) uses when a run config has no model
 * section: the field defaults plus one always-on shared expert of width moe_intermediate_size
 * and top-1 routing with the raw softmax probability as the weight (DeepSeekMoE's shared expert,
 * Switch's top-1). Same active FFN width as top-2, so the same matched dense baseline; it beat
 * that baseline by more than 2 SE over 3 seeds on Shakespeare (3.5 SE) and on the mix (2.1 SE; docs/results.md).
 * Raw probabilities, because renormalising a single weight makes it 1 and leaves the router
 * without a gradient from the language-model loss.
 */
export const TRAIN_DEFAULT_MODEL = { n_shared_experts: 1, num_experts_per_tok: 1, norm_topk_prob: false } as const;

export const RunConfigSchema = z
  .object({
    // no model section: the `moe-ts train` default (TRAIN_DEFAULT_MODEL); a model section starts from the field defaults
    model: ModelConfigSchema.default(ModelConfigSchema.parse(TRAIN_DEFAULT_MODEL)),
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

/**
 * The config layer i's FFN is built from, the model-wide fields with the layer's
 * moe_layer_overrides applied (AutoMoE). A new expert count without widths drops the model-wide
 * expert_sizes (they were per expert of the old count).
 */
export function layerConfig<C extends Pick<ModelConfig, 'moe_layer_overrides' | 'num_local_experts' | 'expert_sizes'>>(c: C, i: number): C {
  const o = c.moe_layer_overrides?.[String(i)];
  if (!o) return c;
  const sizes = o.expert_sizes ?? (o.num_local_experts !== undefined && o.num_local_experts !== c.num_local_experts ? undefined : c.expert_sizes);
  return { ...c, ...o, expert_sizes: sizes };
}

/** Is layer i an MoE layer? */
export function isMoELayer(c: ModelConfig, i: number): boolean {
  return layerConfig(c, i).num_local_experts > 0 && (i + 1) % c.decoder_sparse_step === 0 && i >= c.first_k_dense_replace && !c.mlp_only_layers.includes(i);
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
  if (c.moe_layer_overrides && Object.keys(c.moe_layer_overrides).length > 0) {
    const widths = new Set<number>();
    for (let i = 0; i < c.num_hidden_layers; i++) {
      if (!isMoELayer(c, i)) continue;
      const l = layerConfig(c, i);
      const sizes = l.expert_sizes ?? new Array<number>(l.num_local_experts).fill(l.moe_intermediate_size);
      widths.add(Math.round((l.num_experts_per_tok * sizes.reduce((a, b) => a + b, 0)) / sizes.length));
    }
    if (widths.size > 1)
      throw new ConfigError(`matched dense baseline: moe_layer_overrides gives MoE layers of different active widths (${[...widths].join(', ')}); no single dense width matches them`);
    const uniform = { ...c, moe_layer_overrides: undefined };
    const first = [...Array(c.num_hidden_layers).keys()].find((i) => isMoELayer(c, i));
    if (first === undefined) return { ...uniform, num_local_experts: 0 };
    const dense = matchedDenseConfig({ ...uniform, ...layerConfig(c, first), moe_layer_overrides: undefined });
    const mixed = [...Array(c.num_hidden_layers).keys()].some((i) => !isMoELayer(c, i));
    if (mixed && dense.intermediate_size !== c.intermediate_size)
      throw new ConfigError(
        `matched dense baseline: moe_layer_overrides mixes dense FFNs of width ${c.intermediate_size} with MoE of active width ${dense.intermediate_size}; set intermediate_size to ${dense.intermediate_size} to compare`,
      );
    return dense;
  }
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
