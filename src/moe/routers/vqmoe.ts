/**
 * VQMoE: experts are addressed through a vector-quantised code of the input. Tokens are projected
 * to a low-dimensional space and matched against a learned codebook with one code per expert;
 * a token goes to the experts of its k nearest codes. The codebook trains with the VQ-VAE
 * codebook and commitment losses.
 * Paper: Do et al., "On the effectiveness of discrete representations in sparse mixture of experts", 2024.
 *
 * z = P x [T, dim]; dist[t, e] = ||z_t - c_e||^2; logits = -dist; probs = softmax(logits);
 * the k nearest codes are chosen, weights = their probs renormalised (so gradients reach P, the
 * codebook and x through the weights as well). Router loss (scaled by vqCoef): the quantisation
 * error mean ||z - c_{e*}||^2, e* the nearest code. The VQ-VAE splits it with stop-gradients into
 * a codebook term and a beta-weighted commitment term; we keep the one symmetric term (its gradient
 * is its true derivative, which the layer gradient check verifies; the split's is not).
 * Options: dim (default 16), vqCoef (default 0.01).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { linear, sum, square, sub, add, scale, neg, mean, reshape, indexSelect } from '../../tensor/index.js';
import { Module, param, type Parameter } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt, nonNegative } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, softmaxTopK } from './common.js';

const options = {
  dim: posInt().default(16).describe('width of the quantised code space'),
  vqCoef: nonNegative().default(0.01).describe('coefficient of the quantisation-error router loss'),
};

export type VQMoERouterConfig = ParsedRouterConfig<typeof options>;

export class VQMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: VQMoERouterConfig;
  proj: Linear;
  /** One code per expert [E, dim]. */
  codebook: Parameter;

  constructor(cfg: VQMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.proj = new Linear(cfg.dModel, cfg.dim, rng, { bias: false, std: 1 / Math.sqrt(cfg.dModel) });
    this.codebook = param([cfg.numExperts, cfg.dim], { normal: 1 }, rng);
  }

  /** Squared distances [T, E] between rows of z [T, r] and codes c [E, r] (differentiable). */
  private distances(z: Tensor, c: Tensor): Tensor {
    const zz = sum(square(z), -1, true);
    const cc = reshape(sum(square(c), -1), [1, c.shape[0]]);
    return add(sub(zz, scale(linear(z, c), 2)), cc);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('vqmoe', x, this.dModel);
    const z = this.proj.forward(x);
    const logits = neg(this.distances(z, this.codebook));
    const { probs, routing, indices } = softmaxTopK(logits, this.cfg.topK, true);
    const losses: Record<string, Tensor> = {};
    if (this.cfg.vqCoef > 0 && T > 0) {
      const k = this.cfg.topK;
      const nearest = Int32Array.from({ length: T }, (_, t) => indices[t * k]);
      const q = indexSelect(this.codebook, nearest);
      losses.vq = scale(mean(square(sub(z, q))), this.cfg.vqCoef);
    }
    return { logits, probs, routing, losses, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'vqmoe',
    summary: 'experts of the nearest codes of a vector-quantised input code',
    paper: { authors: 'Do et al.', title: 'On the effectiveness of discrete representations in sparse mixture of experts', year: 2024 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new VQMoERouter(cfg, rng),
  }),
);
