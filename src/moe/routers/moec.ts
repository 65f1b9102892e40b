/**
 * MoEC (Mixture of Expert Clusters): top-k routing over experts grouped into clusters, with a
 * variance-based routing constraint that makes experts of a cluster receive similar probabilities
 * (and clusters differ), plus cluster-level expert dropout in training: dropped experts' tokens
 * fall to the next-best expert, which the constraint makes a cluster-mate, so sparse data spreads
 * within a cluster instead of over-fitting one expert.
 * Paper: Xie et al., "MoEC: Mixture of Expert Clusters", 2022.
 *
 * Clusters: runs of `clusterSize` adjacent experts (numExperts must be a multiple). Router loss
 * 'cluster' (times varianceCoef) = mean over tokens of [mean over clusters of the variance of p
 * within the cluster] - [variance over clusters of the cluster-mean p]: low intra-cluster and high
 * inter-cluster variance. Expert dropout (training only): each (token, expert) is masked with
 * probability `expertDropout` (ctx.rng) before top-k; a token keeps at least k experts (else no
 * mask). Weights: the chosen probabilities (softmax over all experts) renormalised when `normalize`.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, reshape, mean, sub, square, scale } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt, num, nonNegative, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  clusterSize: posInt().default(2).describe('experts per cluster (adjacent experts; numExperts must be a multiple)'),
  varianceCoef: nonNegative().default(0.01).describe('coefficient of the cluster variance constraint (router loss "cluster")'),
  expertDropout: num('a number in [0, 1)', (v) => v >= 0 && v < 1)
    .default(0.1)
    .describe('training: probability of masking each (token, expert) before top-k (cluster-level expert dropout)'),
  normalize: bool().default(true).describe('renormalise the chosen probabilities'),
};

export type MoECRouterConfig = ParsedRouterConfig<typeof options>;

/** The MoEC constraint on probs [T, E] with clusters of c adjacent experts (differentiable). */
export function clusterVarianceLoss(probs: Tensor, c: number): Tensor {
  const [T, E] = probs.shape;
  const p = reshape(probs, [T, E / c, c]);
  const cm = mean(p, -1, true);
  const intra = mean(square(sub(p, cm)));
  const cmeans = reshape(cm, [T, E / c]);
  const inter = mean(square(sub(cmeans, mean(cmeans, -1, true))));
  return sub(intra, inter);
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
      if (c.numExperts % c.clusterSize !== 0) issue('clusterSize', `must divide numExperts=${c.numExperts}`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'k', inferenceDiffers: 'training masks random experts before top-k (expert dropout); inference does not' },
    create: (cfg, rng) => new MoECRouter(cfg, rng),
  }),
);
