/**
 * Cosine (hypersphere) router: tokens are projected to a low dimension, L2-normalised, and scored
 * against L2-normalised expert embeddings; the cosine similarities are divided by a learned
 * temperature before the softmax top-k. Keeping scores on the sphere stops the router from
 * collapsing representations onto a few large-norm directions.
 * Paper: Chi et al., "On the Representation Collapse of Sparse Mixture of Experts", 2022 (also
 * compared in "Routers in Vision Mixture of Experts: An Empirical Study", 2024).
 *
 * logits[t, e] = cos(P x_t, w_e) / tau, tau = exp(logTemp) (a trained Parameter, initialised at
 * `temperature`); probs = softmax(logits); weights = the top-k probs (renormalised when
 * `normalize`). Options: dim (projection width, default 16, like X-MoE's low-dimensional routing
 * space), temperature (initial tau, default 0.07), normalize (default true).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { linear, div, exp, sqrt, sum, square, addScalar } from '../../tensor/index.js';
import { Module, param, type Parameter } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt, positive, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, softmaxTopK } from './common.js';

const options = {
  dim: posInt().default(16).describe('width of the low-dimensional routing space the tokens are projected to'),
  temperature: positive().default(0.07).describe('initial temperature tau (learned: the router trains log tau)'),
  normalize: bool().default(true).describe('renormalise the chosen top-k probabilities to sum to 1'),
};

export type CosineRouterConfig = ParsedRouterConfig<typeof options>;

/** Rows of x [R, n] scaled to unit L2 norm (differentiable; eps keeps a zero row finite). */
export function l2NormalizeRows(x: Tensor, eps = 1e-6): Tensor {
  return div(x, sqrt(addScalar(sum(square(x), -1, true), eps)));
}

export class CosineRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly normalize: boolean;
  /** P [dim, d]: the projection into the routing space. */
  proj: Linear;
  /** Expert embeddings [E, dim] (normalised at use). */
  experts: Parameter;
  /** log tau [1]. */
  logTemp: Parameter;

  constructor(cfg: CosineRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.normalize = cfg.normalize;
    this.proj = new Linear(cfg.dModel, cfg.dim, rng, { bias: false, std: 1 / Math.sqrt(cfg.dModel) });
    this.experts = param([cfg.numExperts, cfg.dim], { normal: 1 / Math.sqrt(cfg.dim) }, rng);
    this.logTemp = param([1], 'zeros');
    this.logTemp.data[0] = Math.log(cfg.temperature);
  }

  /** The current temperature tau. */
  temperature(): number {
    return Math.exp(this.logTemp.data[0]);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    checkRouterInput('cosine', x, this.dModel);
    const cos = linear(l2NormalizeRows(this.proj.forward(x)), l2NormalizeRows(this.experts));
    const logits = div(cos, exp(this.logTemp));
    const { probs, routing } = softmaxTopK(logits, this.topK, this.normalize);
    return { logits, probs, routing, losses: {}, metrics: { temperature: this.temperature() } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'cosine',
    summary: 'top-k on cosine similarity in a low-dimensional space, learned temperature',
    paper: { authors: 'Chi et al.', title: 'On the Representation Collapse of Sparse Mixture of Experts', year: 2022 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new CosineRouter(cfg, rng),
  }),
);
