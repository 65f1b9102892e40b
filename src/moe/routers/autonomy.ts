/**
 * Autonomy-of-Experts: no router. Each expert e owns a low-rank encoder W_down^e [r, d]; every
 * expert computes its internal activation x W_down^e^T, the experts are ranked by the norm of
 * that activation, and the top-k proceed.
 * Paper: Lv et al., "Autonomy-of-Experts Models", 2025.
 *
 * - score[t, e] = || W_down^e x_t || (L2); probs = softmax(score); the top-k experts by score are
 *   chosen, weights = their probs (renormalised when `normalize`), so the encoders learn from the
 *   experts' usefulness through the weights.
 * - Caveat: the paper factorises each expert's first projection so the chosen experts continue
 *   from that activation; here the encoders sit beside the experts (any expert type works), at
 *   E * r * d extra multiply-adds per token for the ranking.
 * - Record: logits = the norms, probs = softmax(norms).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { reshape, sum, square, sqrt, addScalar } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, softmaxTopK } from './common.js';

const options = {
  rank: posInt().optional().describe('rank r of each expert’s low-rank encoder (default min(8, dModel); at most dModel)'),
  normalize: bool().default(true).describe('renormalise the chosen experts’ probabilities to sum to 1'),
};

export type AutonomyRouterConfig = ParsedRouterConfig<typeof options>;

export class AutonomyRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly rank: number;
  readonly normalize: boolean;
  /** The experts' encoders stacked: [E * r, d] (rows e*r .. e*r + r - 1 belong to expert e). */
  down: Linear;

  constructor(cfg: AutonomyRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.rank = cfg.rank ?? Math.min(8, cfg.dModel);
    this.normalize = cfg.normalize;
    this.down = new Linear(cfg.dModel, cfg.numExperts * this.rank, rng, { bias: false, std: 1 / Math.sqrt(cfg.dModel) });
  }

  /** || W_down^e x_t || per token and expert [T, E] (differentiable). */
  norms(x: Tensor): Tensor {
    const T = x.shape[0];
    const h = reshape(this.down.forward(x), [T, this.numExperts, this.rank]);
    return sqrt(addScalar(sum(square(h), -1), 1e-12));
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    checkRouterInput('autonomy', x, this.dModel);
    const logits = this.norms(x);
    const { probs, routing } = softmaxTopK(logits, this.topK, this.normalize);
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'autonomy',
    summary: 'router-free: experts rank themselves by the norm of a low-rank internal activation',
    paper: { authors: 'Lv et al.', title: 'Autonomy-of-Experts Models', year: 2025 },
    options,
    refine: (c, issue) => {
      if (c.rank !== undefined && c.rank > c.dModel) issue('rank', `must be at most dModel=${c.dModel}`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new AutonomyRouter(cfg, rng),
  }),
);
