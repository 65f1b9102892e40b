/**
 * Steering a model's experts at inference: per-layer force/forbid overrides on the MoE layers
 * (Mixture of Tunable Experts: Behavior Modification of DeepSeek-R1 at Inference Time, 2025) and
 * the self-contrast logits of SCMoE (Unchosen Experts Can Contribute Too: Unleashing MoE Models'
 * Power by Self-Contrast, 2024).
 */
import { ExpertOverride, type LayerExpertOverride, type RoutingOverride } from '../moe/override.js';
import type { MoETransformerLM } from '../models/transformer.js';

/** The decoder-layer indices that have an MoE layer. */
export function moeLayerIndices(model: MoETransformerLM): number[] {
  return model.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
}

/** Check layer and expert numbers of per-layer overrides against the model; errors name the field. */
export function checkExpertOverrides(model: MoETransformerLM, overrides: readonly LayerExpertOverride[], where = 'expert override'): void {
  const moe = moeLayerIndices(model);
  for (const o of overrides) {
    if (!Number.isInteger(o.layer) || !model.layers[o.layer]) throw new Error(`${where}: layer ${o.layer} must be a layer index in [0, ${model.layers.length})`);
    const m = model.layers[o.layer].block_sparse_moe;
    if (!m) throw new Error(`${where}: layer ${o.layer} has no MoE layer (MoE layers: ${moe.join(', ') || 'none'})`);
    for (const e of [...(o.force ?? []), ...(o.forbid ?? [])])
      if (!Number.isInteger(e) || e < 0 || e >= m.numExperts) throw new Error(`${where}: layer ${o.layer} expert ${e} must be in [0, ${m.numExperts})`);
    if ((o.force?.length ?? 0) > m.topK) throw new Error(`${where}: layer ${o.layer} forces ${o.force!.length} experts, more than its top-k ${m.topK}`);
  }
}

/**
 * Set the routing overrides of the given layers, leaving the others as they are, and return a function restoring
 * the previous ones. Each value is a RoutingOverride, or force/forbid options.
 */
export function setRoutingOverrides(model: MoETransformerLM, perLayer: ReadonlyMap<number, RoutingOverride | null>): () => void {
  const saved = model.layers.map((l) => l.block_sparse_moe?.routingOverride ?? null);
  for (const [i, o] of perLayer) {
    const m = model.layers[i]?.block_sparse_moe;
    if (!m) throw new Error(`setRoutingOverrides: layer ${i} has no MoE layer`);
    m.routingOverride = o;
  }
  return () =>
    model.layers.forEach((l, i) => {
      if (l.block_sparse_moe) l.block_sparse_moe.routingOverride = saved[i];
    });
}

/** Run fn with the given force/forbid overrides (plus, with `rank`, the weak rank-r routing in every MoE layer), restoring afterwards. */
export function withExpertOverrides<T>(model: MoETransformerLM, overrides: readonly LayerExpertOverride[], fn: () => T, rank?: number): T {
  checkExpertOverrides(model, overrides);
  const map = new Map<number, RoutingOverride | null>();
  for (const i of rank !== undefined ? moeLayerIndices(model) : []) map.set(i, new ExpertOverride({ rank }));
  for (const o of overrides) map.set(o.layer, new ExpertOverride({ force: o.force, forbid: o.forbid, rank }));
  const restore = setRoutingOverrides(model, map);
  try {
    return fn();
  } finally {
    restore();
  }
}

/** Self-contrast decoding settings. */
export interface ContrastOptions {
  /** Contrast strength β >= 0 (0: the strong model's logits). */
  beta: number;
  /** Adaptive plausibility threshold α in [0, 1): tokens below α · max p_strong are masked (0: none). Default 0.1, the paper's. */
  alpha?: number;
  /** Rank of the single expert the weak pass activates (1 = the best). Default: top-k's k, or 2 for top-1 models (the paper's rank-k routing). */
  weakRank?: number;
}

/**
 * SCMoE's next-token scores from the strong (top-k) and weak (rank-k) logits:
 * (1 + β) · strong − β · weak on the plausible tokens {x : p_strong(x) >= α · max p_strong},
 * -Infinity elsewhere. β = 0 and α = 0 return the strong logits unchanged.
 */
export function contrastLogits(strong: ArrayLike<number>, weak: ArrayLike<number>, beta: number, alpha = 0.1): Float32Array {
  if (strong.length !== weak.length) throw new Error(`contrastLogits: ${strong.length} strong logits but ${weak.length} weak ones`);
  if (!(Number.isFinite(beta) && beta >= 0)) throw new Error(`contrastLogits: beta must be a finite number >= 0, got ${beta}`);
  if (!(Number.isFinite(alpha) && alpha >= 0 && alpha < 1)) throw new Error(`contrastLogits: alpha must be in [0, 1), got ${alpha}`);
  let max = -Infinity;
  for (let i = 0; i < strong.length; i++) if (strong[i] > max) max = strong[i];
  // p(x) >= α · max p  <=>  logit(x) >= max logit + ln α
  const cut = alpha > 0 ? max + Math.log(alpha) : -Infinity;
  const out = new Float32Array(strong.length);
  for (let i = 0; i < strong.length; i++) out[i] = strong[i] >= cut ? (1 + beta) * strong[i] - beta * weak[i] : -Infinity;
  return out;
}

/** The weak pass's rank for a model (ContrastOptions.weakRank's default). */
export function defaultWeakRank(model: MoETransformerLM): number {
  const k = model.config.num_experts_per_tok;
  return k > 1 ? k : 2;
}
