/**
 * Softmax top-k token choice, optionally with learned Gaussian noise on the logits.
 * Paper: Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer", 2017.
 *
 * Options:
 * - noisyGating (default false): logits = x W_r^T + eps * softplus(x W_noise^T), eps ~ N(0, 1)
 *   from ctx.rng, only when ctx.training. W_noise starts at zero as in the paper (noise std
 *   softplus(0) = ln 2 at init). The output then carries `noisyGating` stats (common.ts) so the
 *   'load' loss can use the paper's smooth load estimator.
 * - normalize (default true): renormalise the k chosen probabilities to sum to 1 (Mixtral);
 *   false keeps the raw softmax probabilities as weights.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { add, maskMul } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext } from '../types.js';
import { bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK, softplus, gaussianNoise, type RouterOutputWithNoise } from './common.js';

const options = {
  noisyGating: bool().default(false).describe('learned Gaussian noise on the logits in training (noise std softplus(x W_noise^T), W_noise starts at 0)'),
  normalize: bool().default(true).describe('renormalise the k chosen probabilities to sum to 1 (Mixtral); false keeps the raw softmax probabilities'),
};

export type TopKRouterConfig = ParsedRouterConfig<typeof options>;

export class TopKRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly normalize: boolean;
  readonly noisyGating: boolean;
  gate: Linear;
  /** W_noise [E, d] (only with noisyGating). */
  noise: Linear | null;

  constructor(cfg: TopKRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.normalize = cfg.normalize;
    this.noisyGating = cfg.noisyGating;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.noise = this.noisyGating ? routerGate(cfg.dModel, cfg.numExperts, rng, 0) : null;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutputWithNoise {
    checkRouterInput('topk', x, this.dModel);
    const clean = this.gate.forward(x);
    let logits = clean;
    let noisyGating: RouterOutputWithNoise['noisyGating'];
    if (this.noise && ctx.training) {
      const noiseStd = softplus(this.noise.forward(x));
      logits = add(clean, maskMul(noiseStd, gaussianNoise(noiseStd.size, ctx.rng)));
      noisyGating = { clean, noisy: logits, noiseStd, k: this.topK };
    }
    const { probs, routing } = softmaxTopK(logits, this.topK, this.normalize);
    const out: RouterOutputWithNoise = { logits, probs, routing, losses: {}, metrics: {} };
    if (noisyGating) out.noisyGating = noisyGating;
    return out;
  }
}

routerRegistry.register(
  defineRouter({
    name: 'topk',
    summary: 'softmax top-k token choice, optional noisy gating',
    paper: { authors: 'Shazeer et al.', title: 'Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer', year: 2017 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k', hfConfig: { norm_topk_prob: 'normalize' } },
    create: (cfg, rng) => new TopKRouter(cfg, rng),
  }),
);
