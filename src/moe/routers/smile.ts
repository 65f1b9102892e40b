/**
 * SMILE bi-level routing: a first router picks one group of experts (in the paper a node, so
 * tokens cross the slow inter-node link once), a second router picks the top-k experts inside
 * that group.
 * Paper: He et al., "SMILE: Scaling Mixture-of-Experts with Efficient Bi-level Routing", 2022.
 *
 * - p(g) = softmax(x W_g^T) over G groups; p(e | g) = softmax of x W_e^T within each group of
 *   S = E / G consecutive experts; the routing distribution is p(e) = p(g) p(e | g) (sums to 1).
 * - Each token goes to its argmax group, then to the top-k experts of that group by p(e | g);
 *   weights are p(e) of the chosen experts (renormalised to sum to 1 when `normalize`).
 * - Record: logits = the expert-level logits x W_e^T, probs = p(e).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, mul, reshape } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  numGroups: posInt().optional().describe('groups (nodes) of experts: must divide numExperts with numExperts/numGroups >= topK (default: the divisor nearest sqrt(numExperts) that allows topK)'),
  normalize: bool().default(true).describe('renormalise the chosen experts’ probabilities to sum to 1'),
};

export type SmileRouterConfig = ParsedRouterConfig<typeof options>;

/** The divisor G of E nearest sqrt(E) with E / G >= k (1 always qualifies). */
export function defaultGroups(E: number, k: number): number {
  let best = 1;
  for (let g = 1; g <= E; g++) if (E % g === 0 && E / g >= k && Math.abs(g - Math.sqrt(E)) < Math.abs(best - Math.sqrt(E))) best = g;
  return best;
}

export class SmileRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly numGroups: number;
  readonly normalize: boolean;
  /** Group router W_g [G, d]. */
  groupGate: Linear;
  /** Expert router W_e [E, d] (softmax within each group). */
  gate: Linear;

  constructor(cfg: SmileRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.numGroups = cfg.numGroups ?? defaultGroups(cfg.numExperts, cfg.topK);
    this.normalize = cfg.normalize;
    this.groupGate = routerGate(cfg.dModel, this.numGroups, rng);
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('smile', x, this.dModel);
    const E = this.numExperts;
    const G = this.numGroups;
    const S = E / G;
    const pg = softmax(this.groupGate.forward(x), -1);
    const logits = this.gate.forward(x);
    const within = softmax(reshape(logits, [T, G, S]), -1);
    const probs = reshape(mul(within, reshape(pg, [T, G, 1])), [T, E]);
    // only the experts of the token's best group compete for its k slots
    const select = new Float32Array(T * E).fill(-Infinity);
    for (let t = 0; t < T; t++) {
      let g = 0;
      for (let j = 1; j < G; j++) if (pg.data[t * G + j] > pg.data[t * G + g]) g = j;
      for (let s = 0; s < S; s++) select[t * E + g * S + s] = within.data[t * E + g * S + s];
    }
    const { routing } = selectTopK(probs, this.topK, { select, normalize: this.normalize });
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'smile',
    summary: 'bi-level routing: top-1 group (node), then top-k experts inside it',
    paper: { authors: 'He et al.', title: 'SMILE: Scaling Mixture-of-Experts with Efficient Bi-level Routing', year: 2022 },
    options,
    refine: (c, issue) => {
      if (c.numGroups !== undefined && (c.numExperts % c.numGroups !== 0 || c.numExperts / c.numGroups < c.topK)) {
        issue('numGroups', `must divide numExperts=${c.numExperts} into groups of at least topK=${c.topK} experts`);
      }
    },
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new SmileRouter(cfg, rng),
  }),
);
