/**
 * Which llama.cpp architecture computes exactly what a moe-ts model computes. One entry per
 * architecture; each lists the mismatches that rule it out for a config (an empty list means
 * llama.cpp's graph for it is the moe-ts forward pass, up to float rounding) and its own
 * hyperparameter keys. Semantics were read from llama.cpp's src/models/<arch>.cpp and the
 * generic hparams loader: key names and value types must match what llama.cpp's get_key checks.
 *
 * A new moe-ts model feature is one entry in MODEL_FIELDS (how it maps, or which field value
 * blocks export) plus, where an architecture supports it, a line in that architecture's entry.
 */
import type { ModelConfig } from '../../models/config.js';
import { nonDefaultFields } from '../../models/config.js';
import { gguf, type GGUFValue } from './format.js';
import { moeLayerConfig } from '../../models/transformer.js';

/** A llama.cpp architecture moe-ts knows (general.architecture). */
export type ArchName = 'llama' | 'bailingmoe' | 'qwen2moe' | 'qwen3moe' | 'olmoe' | 'deepseek2';
/** Every ArchName, in the order export tries them. */
export const ARCH_NAMES: readonly ArchName[] = ['llama', 'bailingmoe', 'qwen2moe', 'qwen3moe', 'olmoe', 'deepseek2'];

/** Routing as llama.cpp's build_moe_ffn sees it. */
export interface Routing {
  /** Renormalise the k chosen softmax probabilities to sum 1. */
  normalize: boolean;
}

/** The config fields the exporter understands; any other field must keep its default value. */
const KNOWN_FIELDS = new Set([
  'model_type',
  'vocab_size',
  'hidden_size',
  'num_hidden_layers',
  'num_attention_heads',
  'max_position_embeddings',
  'rope_theta',
  'rms_norm_eps',
  'tie_word_embeddings',
  'intermediate_size',
  'hidden_act',
  'num_local_experts',
  'num_experts_per_tok',
  'moe_intermediate_size',
  'decoder_sparse_step',
  'n_shared_experts',
  'shared_expert_intermediate_size',
  'expert_sizes',
  'router_type',
  'router_options',
  'norm_topk_prob',
  'dispatch',
  'num_key_value_heads',
  'head_dim',
  'qk_norm',
  'qkv_bias',
  'shared_expert_gate',
  'mlp_only_layers',
  'first_k_dense_replace',
  // multi-head latent attention: deepseek2 only (the other architectures rule it out)
  'kv_lora_rank',
  'q_lora_rank',
  'qk_nope_head_dim',
  'qk_rope_head_dim',
  'v_head_dim',
  'attention_type',
  // training-only: no effect on the forward pass in eval mode
  'initializer_range',
  'capacity_factor',
  'router_aux_loss_coef',
  'router_z_loss_coef',
  'router_entropy_coef',
  'router_importance_coef',
  'hidden_dropout',
  'aux_loss_normalization',
  'router_losses',
  'router_jitter_noise',
  'capacity_drop_order',
  'rope_scaling',
]);

/** Mismatches every architecture shares: things no llama.cpp MoE graph computes. */
export function commonMismatches(c: ModelConfig): string[] {
  const out: string[] = [];
  for (const [k, v] of nonDefaultFields(c, KNOWN_FIELDS)) out.push(`model field ${k} = ${JSON.stringify(v)} has no GGUF mapping yet`);
  if (c.hidden_act !== 'silu') out.push(`hidden_act "${c.hidden_act}": llama.cpp's MoE architectures use SwiGLU (silu) FFNs`);
  if (c.num_local_experts > 0) {
    if (c.router_type !== 'topk' && c.router_type !== 'group-limited') {
      out.push(`router "${c.router_type}": llama.cpp routes by softmax top-k token choice only (expert choice, hash, soft, threshold and dynamic-k routers have no llama.cpp graph)`);
    }
    const known = new Set(c.router_type === 'group-limited' ? ['variant', 'nGroup', 'topkGroup', 'normalize', 'routedScaling', 'biasUpdateRate'] : ['normalize', 'noisyGating']);
    for (const k of Object.keys(c.router_options)) if (!known.has(k)) out.push(`router option ${k} has no GGUF mapping`);
    if (c.dispatch === 'capacity') out.push("capacity dispatch drops tokens over an expert's capacity; llama.cpp never drops tokens");
    if (c.expert_sizes) out.push('heterogeneous expert widths (expert_sizes): llama.cpp stacks experts of one width');
  }
  return out;
}

/** Effective renormalisation of the top-k router (router_options.normalize overrides norm_topk_prob). */
export function routingOf(c: ModelConfig): Routing {
  const n = c.router_options.normalize;
  return { normalize: typeof n === 'boolean' ? n : c.norm_topk_prob };
}

export function sharedWidth(c: ModelConfig): number {
  return c.n_shared_experts * (c.shared_expert_intermediate_size ?? c.moe_intermediate_size);
}

/** How a model maps to one llama.cpp architecture: layouts, mismatches that rule it out, hyperparameter keys. */
export interface ArchSpec {
  name: ArchName;
  /** llama.cpp rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM): q/k rows are permuted from moe-ts's half-split pairs. */
  ropeAdjacent: boolean;
  /** output.weight must be present even for tied embeddings. */
  outputRequired: boolean;
  /** Shared experts: how the arch stores them (null: it has none; 'gated': one shared FFN times sigmoid(x . ffn_gate_inp_shexp)). */
  shared: null | 'ungated' | 'gated';
  /** The q/k RMSNorm the graph applies: per head (attn_q_norm {head_dim}) or over the whole projection ({n_embd}). */
  qkNorm: 'none' | 'head' | 'full';
  /** q/k/v biases are part of the graph (written as zeros when the model has none). */
  qkvBias: boolean;
  /** Dense (expert-free) models allowed. */
  allowsDense: boolean;
  mismatches(c: ModelConfig): string[];
  /** Architecture-specific keys (without the "<arch>." prefix). */
  hparams(c: ModelConfig): [string, GGUFValue][];
}

/** What every architecture checks about attention and FFN placement; `arch` names it in the messages. */
function layoutMismatches(c: ModelConfig, spec: Pick<ArchSpec, 'name' | 'qkNorm' | 'qkvBias'>, o: { everyLayerMoE: boolean; headDimFree: boolean }): string[] {
  const out: string[] = [];
  const A = spec.name;
  if (A !== 'deepseek2') {
    if (c.attention_type !== undefined && c.attention_type !== 'standard') out.push(`attention_type "${c.attention_type}": ${A} computes standard attention`);
    if (c.kv_lora_rank !== undefined) out.push(`${A} has no multi-head latent attention (kv_lora_rank); deepseek2 does`);
    if (c.num_local_experts > 0 && c.router_type === 'group-limited') out.push(`router "group-limited": ${A} routes by plain top-k; deepseek2 has group-limited routing`);
  }
  if (c.qk_norm !== spec.qkNorm) {
    const what = { none: 'no q/k norm', head: 'a per-head q/k RMSNorm (attn_q_norm/attn_k_norm of head_dim)', full: 'a q/k RMSNorm over the whole projection (attn_q_norm/attn_k_norm of n_embd)' };
    out.push(`${A} applies ${what[spec.qkNorm]}; this model has ${what[c.qk_norm]} (qk_norm "${c.qk_norm}")`);
  }
  if (c.qkv_bias && !spec.qkvBias) out.push(`${A} has no q/k/v biases; this model has them (qkv_bias)`);
  if (c.attention_bias) out.push(`attention_bias: ${A}'s graph has no output-projection bias here`);
  const H = c.num_attention_heads;
  const hd = c.head_dim ?? c.hidden_size / H;
  if (!o.headDimFree && hd * H !== c.hidden_size) out.push(`${A} needs head_dim x heads = hidden_size; this model has ${hd} x ${H} != ${c.hidden_size}`);
  if (c.num_local_experts > 0 && o.everyLayerMoE) {
    if (c.decoder_sparse_step !== 1) out.push(`${A} needs every layer MoE; decoder_sparse_step is ${c.decoder_sparse_step}`);
    if (c.mlp_only_layers.length) out.push(`${A} needs every layer MoE; mlp_only_layers is ${JSON.stringify(c.mlp_only_layers)}`);
    if (c.first_k_dense_replace) out.push(`${A} needs every layer MoE; first_k_dense_replace is ${c.first_k_dense_replace}`);
  }
  const rs = c.rope_scaling as Record<string, unknown> | undefined;
  const rt = (rs?.rope_type ?? rs?.type ?? 'default') as string;
  // linear and llama3 scaling are per-frequency factors: llama's optional rope_freqs tensor; YaRN also rescales attention
  if (rs && rt !== 'default' && !(A === 'llama' && (rt === 'linear' || rt === 'llama3')) && !(A === 'deepseek2' && rt === 'yarn')) {
    out.push(`rope_scaling ${rt}: not written for ${A} yet (only llama's rope_freqs factors, for linear and llama3 scaling)`);
  }
  if (c.shared_expert_gate && c.n_shared_experts > 0 && spec.name !== 'qwen2moe') out.push(`${A} has no sigmoid-gated shared expert (shared_expert_gate)`);
  return out;
}

const u32 = (v: number): GGUFValue => gguf('u32', v);

/** The YaRN scaling deepseek2 writes: DeepSeek's form, mscale = mscale_all_dim (cos/sin unscaled, scores times mscale^2). */
function yarnOf(c: ModelConfig): Record<string, unknown> | null {
  const rs = c.rope_scaling as Record<string, unknown> | undefined;
  return rs && (rs.rope_type ?? rs.type) === 'yarn' ? rs : null;
}

function yarnMismatches(c: ModelConfig): string[] {
  const rs = yarnOf(c);
  if (!rs) return [];
  const out: string[] = [];
  if (typeof rs.mscale !== 'number' || rs.mscale !== rs.mscale_all_dim)
    out.push(`rope_scaling yarn: deepseek2 is written only with mscale = mscale_all_dim (this model: ${String(rs.mscale)}, ${String(rs.mscale_all_dim)})`);
  if (rs.attention_factor !== undefined && rs.attention_factor !== null) out.push('rope_scaling yarn: attention_factor has no deepseek2 mapping');
  if (rs.truncate === false) out.push('rope_scaling yarn: truncate false has no deepseek2 mapping');
  return out;
}

function yarnKeys(c: ModelConfig): [string, GGUFValue][] {
  const rs = yarnOf(c);
  if (!rs) return [];
  const num = (k: string, d: number): number => (typeof rs[k] === 'number' ? (rs[k] as number) : d);
  return [
    ['rope.scaling.type', gguf('string', 'yarn')],
    ['rope.scaling.factor', gguf('f32', num('factor', 1))],
    ['rope.scaling.original_context_length', u32(num('original_max_position_embeddings', c.max_position_embeddings))],
    // llama.cpp's converter writes 0.1 x mscale_all_dim (its loader divides by 0.1 again)
    ['rope.scaling.yarn_log_multiplier', gguf('f32', 0.1 * num('mscale_all_dim', 0))],
    ['rope.scaling.yarn_beta_fast', gguf('f32', num('beta_fast', 32))],
    ['rope.scaling.yarn_beta_slow', gguf('f32', num('beta_slow', 1))],
  ];
}

/** deepseek2 routing as llama.cpp's build_moe_ffn computes it. */
export interface DeepseekRouting {
  /** expert_gating_func sigmoid (2) rather than softmax (1). */
  sigmoid: boolean;
  /** A selection bias (exp_probs_b, the V3 e_score_correction_bias). */
  bias: boolean;
  normalize: boolean;
  scale: number;
  groups: number;
  groupsUsed: number;
}

/** How a model's router maps to deepseek2's, or why it does not. */
export function deepseekRouting(c: ModelConfig): DeepseekRouting | string {
  if (c.router_type === 'topk') return { sigmoid: false, bias: false, normalize: routingOf(c).normalize, scale: 1, groups: 1, groupsUsed: 1 };
  // the options as the model's router sees them (router_options plus routed_scaling_factor), with the router's defaults
  const o = moeLayerConfig(c).router as Record<string, unknown>;
  const variant = (o.variant ?? 'v3') as string;
  const nGroup = (o.nGroup ?? 1) as number;
  const topkGroup = (o.topkGroup ?? 1) as number;
  const normalize = (o.normalize ?? true) as boolean;
  const routed = (o.routedScaling ?? 1) as number;
  const groups = { groups: nGroup, groupsUsed: nGroup > 1 ? topkGroup : 1 };
  if (nGroup > 1 && c.num_local_experts / nGroup < 2) return `deepseek2 scores a group by its two best experts; this model's groups have ${c.num_local_experts / nGroup} expert`;
  if (variant === 'v3') return { sigmoid: true, bias: true, normalize, scale: routed, ...groups };
  if (nGroup > 1) return 'group-limited v2 scores a group by its best softmax probability; llama.cpp by the sum of its two best (router_options.nGroup must be 1)';
  // v2 renormalises only with k > 1, and then ignores routedScaling
  const renorm = normalize && c.num_experts_per_tok > 1;
  return { sigmoid: false, bias: false, normalize: renorm, scale: renorm ? 1 : routed, ...groups };
}

/** The expert keys the Qwen/OLMoE/DeepSeek loaders read. */
const expertKeys = (c: ModelConfig): [string, GGUFValue][] => [
  ['feed_forward_length', u32(c.moe_intermediate_size)],
  ['expert_count', u32(c.num_local_experts)],
  ['expert_used_count', u32(c.num_experts_per_tok)],
  ['expert_feed_forward_length', u32(c.moe_intermediate_size)],
];

function needsExperts(c: ModelConfig, A: string): string[] {
  return c.num_local_experts === 0 ? [`${A} needs experts (num_local_experts is 0)`] : [];
}

/** The llama.cpp architectures by name. */
export const ARCHS: Record<ArchName, ArchSpec> = {
  // Mixtral-style: softmax top-k, renormalised (build_moe_ffn norm_w = true), every layer MoE (or none), no shared experts
  llama: {
    name: 'llama',
    ropeAdjacent: true,
    outputRequired: false,
    shared: null,
    qkNorm: 'none',
    qkvBias: false,
    allowsDense: true,
    mismatches(c) {
      const out = layoutMismatches(c, this, { everyLayerMoE: false, headDimFree: false });
      if (c.num_local_experts === 0) return out;
      if (!routingOf(c).normalize) out.push('llama renormalises the top-k weights; this model keeps raw softmax probabilities (norm_topk_prob false)');
      if (c.n_shared_experts > 0) out.push("llama's graph has no shared experts");
      if (c.decoder_sparse_step !== 1 || c.mlp_only_layers.length || c.first_k_dense_replace) {
        out.push(
          `llama needs every layer MoE or none; decoder_sparse_step is ${c.decoder_sparse_step}, mlp_only_layers ${JSON.stringify(c.mlp_only_layers)}, first_k_dense_replace ${c.first_k_dense_replace}`,
        );
      }
      return out;
    },
    hparams(c) {
      const moe = c.num_local_experts > 0;
      return [
        ['feed_forward_length', u32(moe ? c.moe_intermediate_size : c.intermediate_size)],
        ...(moe
          ? ([
              ['expert_count', u32(c.num_local_experts)],
              ['expert_used_count', u32(c.num_experts_per_tok)],
            ] as [string, GGUFValue][])
          : []),
      ];
    },
  },
  // Ling/BailingMoE: softmax top-k, renormalisation per expert_weights_norm, ungated shared experts (n_expert_shared x expert width), every layer MoE
  bailingmoe: {
    name: 'bailingmoe',
    ropeAdjacent: true,
    outputRequired: true,
    shared: 'ungated',
    qkNorm: 'none',
    qkvBias: false,
    allowsDense: false,
    mismatches(c) {
      const out = [...needsExperts(c, 'bailingmoe'), ...layoutMismatches(c, this, { everyLayerMoE: true, headDimFree: false })];
      const sw = sharedWidth(c);
      if (sw % c.moe_intermediate_size !== 0) out.push(`bailingmoe's shared experts are n x the expert width ${c.moe_intermediate_size}; this model's shared width is ${sw}`);
      return out;
    },
    hparams(c) {
      const sw = sharedWidth(c);
      return [
        ['feed_forward_length', u32(c.moe_intermediate_size)],
        ['expert_count', u32(c.num_local_experts)],
        ['expert_used_count', u32(c.num_experts_per_tok)],
        ['expert_feed_forward_length', u32(c.moe_intermediate_size)],
        // no shared experts: one all-zero shared expert (adds exactly 0), as the arch requires its tensors
        ['expert_shared_count', u32(Math.max(1, sw / c.moe_intermediate_size))],
        ['leading_dense_block_count', u32(0)],
        ['expert_weights_scale', gguf('f32', 1)],
        ['expert_weights_norm', gguf('bool', routingOf(c).normalize)],
      ];
    },
  },
  // Qwen2-MoE: softmax top-k not renormalised, q/k/v biases, one shared FFN times sigmoid(x . w) every layer (all-zero when the model has none), NeoX RoPE
  qwen2moe: {
    name: 'qwen2moe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: 'gated',
    qkNorm: 'none',
    qkvBias: true,
    allowsDense: false,
    mismatches(c) {
      const out = [...needsExperts(c, 'qwen2moe'), ...layoutMismatches(c, this, { everyLayerMoE: true, headDimFree: false })];
      if (routingOf(c).normalize) out.push('qwen2moe keeps the raw top-k softmax probabilities; this model renormalises them (norm_topk_prob true)');
      if (c.n_shared_experts > 0 && !c.shared_expert_gate)
        out.push("qwen2moe multiplies its shared expert by a sigmoid gate (ffn_gate_inp_shexp); this model's shared experts are ungated (shared_expert_gate false)");
      return out;
    },
    hparams: (c) => [...expertKeys(c), ['expert_shared_feed_forward_length', u32(c.n_shared_experts > 0 ? sharedWidth(c) : c.moe_intermediate_size)]],
  },
  // Qwen3-MoE: softmax top-k renormalised, per-head q/k RMSNorm before RoPE, free head_dim, no shared experts, NeoX RoPE
  qwen3moe: {
    name: 'qwen3moe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: null,
    qkNorm: 'head',
    qkvBias: false,
    allowsDense: false,
    mismatches(c) {
      const out = [...needsExperts(c, 'qwen3moe'), ...layoutMismatches(c, this, { everyLayerMoE: true, headDimFree: true })];
      if (!routingOf(c).normalize) out.push('qwen3moe renormalises the top-k weights; this model keeps raw softmax probabilities (norm_topk_prob false)');
      if (c.n_shared_experts > 0) out.push("qwen3moe's graph has no shared experts");
      return out;
    },
    hparams: expertKeys,
  },
  // OLMoE: softmax top-k not renormalised, q/k RMSNorm over the whole projection (no GQA), expert width in feed_forward_length, NeoX RoPE
  olmoe: {
    name: 'olmoe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: null,
    qkNorm: 'full',
    qkvBias: false,
    allowsDense: false,
    mismatches(c) {
      const out = [...needsExperts(c, 'olmoe'), ...layoutMismatches(c, this, { everyLayerMoE: true, headDimFree: false })];
      if (routingOf(c).normalize) out.push('olmoe keeps the raw top-k softmax probabilities; this model renormalises them (norm_topk_prob true)');
      if (c.n_shared_experts > 0) out.push("olmoe's graph has no shared experts");
      if ((c.num_key_value_heads ?? c.num_attention_heads) !== c.num_attention_heads) out.push('olmoe normalises k over n_embd: grouped-query attention (num_key_value_heads) does not fit');
      return out;
    },
    hparams: expertKeys,
  },
  // DeepSeek-V2/V3: multi-head latent attention (split attn_k_b/attn_v_b, MQA over the latent), adjacent-pair RoPE on the
  // qk_rope_head_dim part, leading dense layers, ungated shared experts, softmax or sigmoid (+ selection bias) top-k with
  // group-limited selection (a group's score: the sum of its two best), expert_weights_norm then expert_weights_scale
  deepseek2: {
    name: 'deepseek2',
    ropeAdjacent: true,
    outputRequired: true,
    shared: 'ungated',
    qkNorm: 'none',
    qkvBias: false,
    allowsDense: false,
    mismatches(c) {
      const A = 'deepseek2';
      const out = [...needsExperts(c, A), ...layoutMismatches(c, this, { everyLayerMoE: false, headDimFree: true })];
      if (c.kv_lora_rank === undefined) out.push(`${A} computes multi-head latent attention; this model has standard attention (kv_lora_rank unset)`);
      if (c.attention_type !== undefined && c.attention_type !== 'mla') out.push(`${A} computes multi-head latent attention; this model's attention_type is "${c.attention_type}"`);
      if (c.num_local_experts === 0) return out;
      if (c.decoder_sparse_step !== 1) out.push(`${A} needs every layer after the leading dense ones MoE; decoder_sparse_step is ${c.decoder_sparse_step}`);
      if (c.mlp_only_layers.length) out.push(`${A} needs every layer after the leading dense ones MoE; mlp_only_layers is ${JSON.stringify(c.mlp_only_layers)}`);
      if (c.first_k_dense_replace >= c.num_hidden_layers) out.push(`${A} needs at least one MoE layer; first_k_dense_replace is ${c.first_k_dense_replace}`);
      const sw = sharedWidth(c);
      if (sw % c.moe_intermediate_size !== 0) out.push(`${A}'s shared experts are n x the expert width ${c.moe_intermediate_size}; this model's shared width is ${sw}`);
      const r = deepseekRouting(c);
      if (typeof r === 'string') out.push(r);
      out.push(...yarnMismatches(c));
      return out;
    },
    hparams(c) {
      const r = deepseekRouting(c) as DeepseekRouting;
      const rank = c.kv_lora_rank!;
      const rope = c.qk_rope_head_dim!;
      const sw = sharedWidth(c);
      return [
        // MLA runs as MQA over the latent: one kv head of width rank + rope (keys) and rank (values); the per-head widths are the _mla keys
        ['attention.head_count_kv', u32(1)],
        ['attention.key_length', u32(rank + rope)],
        ['attention.value_length', u32(rank)],
        ['attention.key_length_mla', u32(c.qk_nope_head_dim! + rope)],
        ['attention.value_length_mla', u32(c.v_head_dim!)],
        // 0 selects the uncompressed attn_q path (the key is required unless llama.cpp thinks the model is a "lite" one)
        ['attention.q_lora_rank', u32(c.q_lora_rank ?? 0)],
        ['attention.kv_lora_rank', u32(rank)],
        ['rope.dimension_count', u32(rope)],
        ['feed_forward_length', u32(c.first_k_dense_replace > 0 ? c.intermediate_size : c.moe_intermediate_size)],
        ['leading_dense_block_count', u32(c.first_k_dense_replace)],
        ['expert_count', u32(c.num_local_experts)],
        ['expert_used_count', u32(c.num_experts_per_tok)],
        ['expert_feed_forward_length', u32(c.moe_intermediate_size)],
        // no shared experts: one all-zero shared expert (adds exactly 0), as the arch requires its tensors
        ['expert_shared_count', u32(Math.max(1, sw / c.moe_intermediate_size))],
        ['expert_weights_norm', gguf('bool', r.normalize)],
        ['expert_weights_scale', gguf('f32', r.scale)],
        ['expert_gating_func', u32(r.sigmoid ? 2 : 1)],
        ['expert_group_count', u32(r.groups)],
        ['expert_group_used_count', u32(r.groupsUsed)],
        ...yarnKeys(c),
      ];
    },
  },
};

/** The first architecture (in ARCH_NAMES order) with no mismatch, or an error listing why each was ruled out. */
export function chooseArch(c: ModelConfig, requested: ArchName | 'auto' = 'auto'): ArchSpec {
  const common = commonMismatches(c);
  if (common.length) throw new Error(`gguf export: no llama.cpp architecture computes this model: ${common.join('; ')}`);
  if (requested !== 'auto') {
    const spec = ARCHS[requested];
    if (!spec) throw new Error(`gguf export: unknown architecture "${requested}" (known: ${ARCH_NAMES.join(', ')})`);
    const m = spec.mismatches(c);
    if (m.length) throw new Error(`gguf export: architecture ${requested} does not compute this model: ${m.join('; ')}`);
    return spec;
  }
  const why: string[] = [];
  for (const name of ARCH_NAMES) {
    const m = ARCHS[name].mismatches(c);
    if (!m.length) return ARCHS[name];
    why.push(`${name}: ${m.join(', ')}`);
  }
  throw new Error(`gguf export: no llama.cpp architecture computes this model (${why.join('; ')})`);
}
