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
import { ModelConfigSchema } from '../../models/config.js';
import { gguf, type GGUFValue } from './format.js';

export type ArchName = 'llama' | 'bailingmoe' | 'qwen2moe' | 'qwen3moe' | 'olmoe' | 'deepseek2';
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
  // training-only: no effect on the forward pass in eval mode
  'initializer_range',
  'capacity_factor',
  'router_aux_loss_coef',
  'router_z_loss_coef',
  'router_entropy_coef',
  'router_importance_coef',
  'hidden_dropout',
]);

let defaults: Record<string, unknown> | null = null;

/** Mismatches every architecture shares: things no llama.cpp MoE graph computes. */
export function commonMismatches(c: ModelConfig): string[] {
  const out: string[] = [];
  defaults ??= ModelConfigSchema.parse({}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(c)) {
    if (!KNOWN_FIELDS.has(k) && JSON.stringify(v) !== JSON.stringify(defaults[k])) out.push(`model field ${k} = ${JSON.stringify(v)} has no GGUF mapping yet`);
  }
  if (c.hidden_act !== 'silu') out.push(`hidden_act "${c.hidden_act}": llama.cpp's MoE architectures use SwiGLU (silu) FFNs`);
  if (c.num_local_experts > 0) {
    if (c.router_type !== 'topk') {
      out.push(`router "${c.router_type}": llama.cpp routes by softmax top-k token choice only (expert choice, hash, soft, threshold and dynamic-k routers have no llama.cpp graph)`);
    }
    const known = new Set(['normalize', 'noisyGating']);
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

export interface ArchSpec {
  name: ArchName;
  /** llama.cpp rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM): q/k rows are permuted from moe-ts's half-split pairs. */
  ropeAdjacent: boolean;
  /** output.weight must be present even for tied embeddings. */
  outputRequired: boolean;
  /** Shared experts: how the arch stores them (null: it has none). */
  shared: null | 'ungated';
  /** Dense (expert-free) models allowed. */
  allowsDense: boolean;
  mismatches(c: ModelConfig): string[];
  /** Architecture-specific keys (without the "<arch>." prefix). */
  hparams(c: ModelConfig): [string, GGUFValue][];
}

const u32 = (v: number): GGUFValue => gguf('u32', v);

const notYet = (what: string) => (): string[] => [what];

export const ARCHS: Record<ArchName, ArchSpec> = {
  // Mixtral-style: softmax top-k, renormalised (build_moe_ffn norm_w = true), every layer MoE (or none), no shared experts
  llama: {
    name: 'llama',
    ropeAdjacent: true,
    outputRequired: false,
    shared: null,
    allowsDense: true,
    mismatches(c) {
      const out: string[] = [];
      if (c.num_local_experts === 0) return out;
      if (!routingOf(c).normalize) out.push('llama renormalises the top-k weights; this model keeps raw softmax probabilities (norm_topk_prob false)');
      if (c.n_shared_experts > 0) out.push("llama's graph has no shared experts");
      if (c.decoder_sparse_step !== 1) out.push(`llama needs every layer MoE or none; decoder_sparse_step is ${c.decoder_sparse_step}`);
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
    allowsDense: false,
    mismatches(c) {
      const out: string[] = [];
      if (c.num_local_experts === 0) out.push('bailingmoe needs experts');
      if (c.decoder_sparse_step !== 1) out.push(`bailingmoe needs every layer MoE; decoder_sparse_step is ${c.decoder_sparse_step}`);
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
  qwen2moe: {
    name: 'qwen2moe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: null,
    allowsDense: false,
    mismatches: notYet('qwen2moe multiplies its shared expert by a sigmoid gate (ffn_gate_inp_shexp); moe-ts shared experts are ungated'),
    hparams: () => [],
  },
  qwen3moe: {
    name: 'qwen3moe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: null,
    allowsDense: false,
    mismatches: notYet('qwen3moe applies per-head RMSNorm to q and k (attn_q_norm/attn_k_norm); this model has no q/k norms'),
    hparams: () => [],
  },
  olmoe: {
    name: 'olmoe',
    ropeAdjacent: false,
    outputRequired: true,
    shared: null,
    allowsDense: false,
    mismatches: notYet('olmoe applies RMSNorm to q and k (attn_q_norm/attn_k_norm); this model has no q/k norms'),
    hparams: () => [],
  },
  deepseek2: {
    name: 'deepseek2',
    ropeAdjacent: true,
    outputRequired: true,
    shared: null,
    allowsDense: false,
    mismatches: notYet('deepseek2 uses multi-head latent attention (compressed KV, a rotary key shared across heads); moe-ts attention is standard multi-head'),
    hparams: () => [],
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
