/**
 * Cartesian-product routing: the E = A x B experts are indexed by pairs (a, b) of two sub-expert
 * sets, and two small routers score the sets separately, so the routing distribution is the
 * product p(a, b) = p_A(a) p_B(b) and experts sharing a or b share what that router learned.
 * Paper: Su et al., "CartesianMoE: Boosting Knowledge Sharing among Experts via Cartesian Product Routing in Mixture-of-Experts", 2024.
 *
 * - p_A = softmax(x W_A^T) [T, A], p_B = softmax(x W_B^T) [T, B]; expert e = a * B + b.
 * - Each token goes to the top-k pairs of p_A(a) p_B(b); weights are those products
 *   (renormalised to sum to 1 when `normalize`).
 * - Only the routing is factorised: the paper also composes each expert from its two sub-experts
 *   (multiplicative parameter sharing), which belongs to an expert type, not to a router.
 * - Record: logits = log p_A(a) + log p_B(b) (so softmax(logits) = probs), probs = p(a, b).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, logSoftmax, mul, add, reshape } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  setA: posInt().optional().describe('size A of the first sub-expert set: must divide numExperts (B = numExperts / A; default: the divisor nearest sqrt(numExperts))'),
  normalize: bool().default(true).describe('renormalise the chosen pairs’ probabilities to sum to 1'),
};

export type CartesianRouterConfig = ParsedRouterConfig<typeof options>;

function nearestSqrtDivisor(E: number): number {
  let best = 1;
  for (let a = 1; a <= E; a++) if (E % a === 0 && Math.abs(a - Math.sqrt(E)) < Math.abs(best - Math.sqrt(E))) best = a;
  return best;
}

export class CartesianRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly setA: number;
  readonly setB: number;
  readonly normalize: boolean;
  gateA: Linear;
  gateB: Linear;

  constructor(cfg: CartesianRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.setA = cfg.setA ?? nearestSqrtDivisor(cfg.numExperts);
    this.setB = cfg.numExperts / this.setA;
    this.normalize = cfg.normalize;
    this.gateA = routerGate(cfg.dModel, this.setA, rng);
    this.gateB = routerGate(cfg.dModel, this.setB, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('cartesian', x, this.dModel);
    const [A, B] = [this.setA, this.setB];
    const la = this.gateA.forward(x);
    const lb = this.gateB.forward(x);
    const probs = reshape(mul(reshape(softmax(la, -1), [T, A, 1]), reshape(softmax(lb, -1), [T, 1, B])), [T, A * B]);
    const logits = reshape(add(reshape(logSoftmax(la, -1), [T, A, 1]), reshape(logSoftmax(lb, -1), [T, 1, B])), [T, A * B]);
    const { routing } = selectTopK(probs, this.topK, { normalize: this.normalize });
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'cartesian',
    summary: 'experts as pairs of two sub-expert sets, routed by the product of two small routers',
    paper: { authors: 'Su et al.', title: 'CartesianMoE: Boosting Knowledge Sharing among Experts via Cartesian Product Routing in Mixture-of-Experts', year: 2024 },
    options,
    refine: (c, issue) => {
      if (c.setA !== undefined && c.numExperts % c.setA !== 0) issue('setA', `must divide numExperts=${c.numExperts}`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new CartesianRouter(cfg, rng),
  }),
);
