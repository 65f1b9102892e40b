/**
 * MoEC (Mixture of Expert Clusters): top-k routing over experts grouped into clusters, with a
 * variance-based routing constraint that makes experts of a cluster receive similar probabilities
 * (and clusters differ), plus cluster-level expert dropout in training: dropped experts' tokens
 * fall to the next-best expert, which the constraint makes a cluster-mate, so sparse data spreads
 * within a cluster instead of over-fitting one expert.
 * Paper: Xie et al., "MoEC: Mixture of Expert Clusters", 2022.
 *
 * Clusters: runs of `clusterSize` adjacent experts (the last one smaller if needed). Router loss
 * 'cluster' (times varianceCoef) = mean over tokens of [mean over clusters of the variance of p
 * within the cluster] - [variance over clusters of the cluster-mean p]: low intra-cluster and high
 * inter-cluster variance. Expert dropout (training only): each (token, expert) is masked with
 * probability `expertDropout` (ctx.rng) before top-k; a token keeps at least k experts (else no
 * mask). Weights: the chosen probabilities (softmax over all experts) renormalised when `normalize`.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, scale } from '../../tensor/index.js';
import { result, accumulateGrad } from '../../tensor/tensor.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt, num, nonNegative, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  clusterSize: posInt().default(2).describe('experts per cluster (adjacent experts; the last cluster takes the remainder)'),
  varianceCoef: nonNegative().default(0.01).describe('coefficient of the cluster variance constraint (router loss "cluster")'),
  expertDropout: num('a number in [0, 1)', (v) => v >= 0 && v < 1)
    .default(0.1)
    .describe('training: probability of masking each (token, expert) before top-k (cluster-level expert dropout)'),
  normalize: bool().default(true).describe('renormalise the chosen probabilities'),
};

export type MoECRouterConfig = ParsedRouterConfig<typeof options>;

/**
 * The MoEC constraint on probs [T, E] with clusters of c adjacent experts (the last one smaller when
 * c does not divide E): mean over tokens of (mean intra-cluster variance - variance of the cluster
 * means). Differentiable: d/dp_e = 2 / (C n_c) ((p_e - m_c) - (m_c - M)) / T (the mean terms'
 * own derivatives cancel).
 */
export function clusterVarianceLoss(probs: Tensor, c: number): Tensor {
  const [T, E] = probs.shape;
  const C = Math.ceil(E / c);
  const p = probs.data;
  const m = new Float64Array(T * C);
  const M = new Float64Array(T);
  let total = 0;
  for (let t = 0; t < T; t++) {
    let intra = 0;
    for (let k = 0; k < C; k++) {
      const lo = k * c;
      const hi = Math.min(E, lo + c);
      let s = 0;
      for (let e = lo; e < hi; e++) s += p[t * E + e];
      const mc = (m[t * C + k] = s / (hi - lo));
      let v = 0;
      for (let e = lo; e < hi; e++) v += (p[t * E + e] - mc) ** 2;
      intra += v / (hi - lo);
      M[t] += mc / C;
    }
    let inter = 0;
    for (let k = 0; k < C; k++) inter += (m[t * C + k] - M[t]) ** 2;
    total += (intra - inter) / C;
  }
  return result(new Float32Array([T > 0 ? total / T : 0]), [], [probs], (g) => {
    const gp = new Float32Array(T * E);
    for (let t = 0; t < T; t++)
      for (let k = 0; k < C; k++) {
        const lo = k * c;
        const hi = Math.min(E, lo + c);
        const mc = m[t * C + k];
        for (let e = lo; e < hi; e++) gp[t * E + e] = (g[0] * 2 * (p[t * E + e] - mc - (mc - M[t]))) / (C * (hi - lo) * T);
      }
    accumulateGrad(probs, gp, true);
  });
}

export class MoECRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: MoECRouterConfig;
  gate: Linear;

  constructor(cfg: MoECRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('moec', x, this.dModel);
    const E = this.numExperts;
    const k = this.cfg.topK;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    let select: Float32Array | undefined;
    let dropped = 0;
    if (ctx.training && this.cfg.expertDropout > 0) {
      select = probs.data.slice();
      const u = ctx.rng.fillUniform(new Float32Array(T * E), 0, 1);
      for (let t = 0; t < T; t++) {
        let kept = 0;
        for (let e = 0; e < E; e++) if (u[t * E + e] >= this.cfg.expertDropout) kept++;
        if (kept < k) continue;
        for (let e = 0; e < E; e++)
          if (u[t * E + e] < this.cfg.expertDropout) {
            select[t * E + e] = -1;
            dropped++;
          }
      }
    }
    const sel = selectTopK(probs, k, { select, normalize: this.cfg.normalize });
    const losses: Record<string, Tensor> = {};
    if (this.cfg.varianceCoef > 0 && T > 0) losses.cluster = scale(clusterVarianceLoss(probs, this.cfg.clusterSize), this.cfg.varianceCoef);
    return { logits, probs, routing: sel.routing, losses, metrics: { droppedExperts: T > 0 ? dropped / (T * E) : 0 } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'moec',
    summary: 'top-k with a cluster variance constraint and cluster-level expert dropout',
    paper: { authors: 'Xie et al.', title: 'MoEC: Mixture of Expert Clusters', year: 2022 },
    options,
    refine: (c, issue) => {
      if (c.clusterSize > c.numExperts) issue('clusterSize', `must be an integer in [1, numExperts=${c.numExperts}]`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'k', inferenceDiffers: 'training masks random experts before top-k (expert dropout); inference does not' },
    create: (cfg, rng) => new MoECRouter(cfg, rng),
  }),
);
