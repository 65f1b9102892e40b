/**
 * Top-p (dynamic) routing: per token, experts are taken in descending softmax probability until
 * their cumulative probability reaches p, so confident tokens use few experts and uncertain ones
 * more. Paper: Huang et al., "Harder Tasks Need More Experts: Dynamic Routing in MoE Models", 2024.
 *
 * Options:
 * - p (default 0.4): the cumulative probability to reach, in (0, 1]; the chosen set is the
 *   shortest descending prefix with cumsum >= p (at least one expert).
 * - maxK (default numExperts): cap on experts per token.
 * - normalize (default false): renormalise the chosen probabilities to sum to 1 per token
 *   (the paper keeps the raw probabilities).
 * - dynamicLossCoef (default 1e-4): coefficient of the paper's dynamic loss, the mean routing
 *   entropy -sum_e P_e log P_e, which keeps the router from flattening its distribution to buy
 *   more experts per token; 0 disables it. Returned as losses.dynamic, already scaled.
 *
 * Record: logits = x W_r^T, probs = softmax(logits) (the only softmax; the entropy is computed
 * as logsumexp(logits) - sum_e P_e z_e, which needs no second softmax and no log of a zero).
 * Assignments are token-major, each token's experts in descending probability.
 * Metrics: expertsPerToken (average), maxExpertsPerToken.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, logSumExp, sum, mul, sub, div, mean, scale, scatterAdd, indexSelect } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, posInt, nonNegative, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  p: num('a number in (0, 1]', (v) => v > 0 && v <= 1)
    .default(0.4)
    .describe('cumulative probability to reach: the shortest descending prefix with cumsum >= p'),
  maxK: posInt('an integer in [1, numExperts]').optional().describe('cap on experts per token (default numExperts)'),
  normalize: bool().default(false).describe('renormalise the chosen probabilities per token (the paper keeps them raw)'),
  dynamicLossCoef: nonNegative().default(1e-4).describe('coefficient of the dynamic (routing-entropy) loss; 0 disables it'),
};

export type TopPRouterConfig = ParsedRouterConfig<typeof options>;

export class TopPRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly p: number;
  readonly maxK: number;
  readonly normalize: boolean;
  readonly dynamicLossCoef: number;
  gate: Linear;

  constructor(cfg: TopPRouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.p = cfg.p;
    this.maxK = cfg.maxK ?? E;
    this.normalize = cfg.normalize;
    this.dynamicLossCoef = cfg.dynamicLossCoef;
    this.gate = routerGate(cfg.dModel, E, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('top-p', x, this.dModel);
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const sel = cumulativeSelect(probs.data, T, this.numExperts, this.p, { strict: false, maxK: this.maxK });
    let weights = gatherPairs(probs, sel.tokenIdx, sel.expertIdx);
    if (this.normalize) weights = normalizeRowsSegments(weights, sel.tokenIdx, T);
    const losses: Record<string, Tensor> = {};
    if (this.dynamicLossCoef > 0 && T > 0) {
      const entropy = sub(logSumExp(logits, -1), sum(mul(probs, logits), -1));
      losses.dynamic = scale(mean(entropy), this.dynamicLossCoef);
    }
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx: sel.tokenIdx, expertIdx: sel.expertIdx, weights },
      losses,
      metrics: { expertsPerToken: T > 0 ? sel.tokenIdx.length / T : 0, maxExpertsPerToken: sel.maxPerToken },
    };
  }
}

/** weights [A] divided by the sum of their token's weights (tokenIdx [A] in [0, T)); differentiable. */
export function normalizeRowsSegments(weights: Tensor, tokenIdx: Int32Array, T: number): Tensor {
  return div(weights, indexSelect(scatterAdd(weights, tokenIdx, T), tokenIdx));
}

export interface CumulativeSelection {
  tokenIdx: Int32Array;
  expertIdx: Int32Array;
  /** Rank of each assignment within its token (0 = most probable). */
  rank: Int32Array;
  maxPerToken: number;
}

/**
 * Per row of probs [T, E]: experts in descending probability (ties to the lower index) until the
 * running sum reaches `bound` (cumsum >= bound, or > bound when `strict`), at least one and at
 * most maxK. The running sum is float64 over the float32 probabilities.
 */
export function cumulativeSelect(probs: Float32Array, T: number, E: number, bound: number, opts: { strict: boolean; maxK: number }): CumulativeSelection {
  const tok: number[] = [];
  const exp: number[] = [];
  const rank: number[] = [];
  const order = new Array<number>(E);
  let maxPerToken = 0;
  for (let t = 0; t < T; t++) {
    const base = t * E;
    for (let e = 0; e < E; e++) order[e] = e;
    order.sort((a, b) => probs[base + b] - probs[base + a] || a - b);
    let cum = 0;
    let n = 0;
    while (n < opts.maxK) {
      const e = order[n];
      tok.push(t);
      exp.push(e);
      rank.push(n);
      n++;
      cum += probs[base + e];
      if (opts.strict ? cum > bound : cum >= bound) break;
    }
    if (n > maxPerToken) maxPerToken = n;
  }
  return { tokenIdx: Int32Array.from(tok), expertIdx: Int32Array.from(exp), rank: Int32Array.from(rank), maxPerToken };
}

/** maxK <= numExperts (shared with the threshold router). */
export function checkMaxK(c: { maxK?: number; numExperts: number }, issue: (field: string, message: string) => void): void {
  if (typeof c.maxK === 'number' && c.maxK > c.numExperts) issue('maxK', `must be an integer in [1, numExperts=${c.numExperts}]`);
}

routerRegistry.register(
  defineRouter({
    name: 'top-p',
    summary: 'top-p dynamic routing by cumulative probability',
    paper: { authors: 'Huang et al.', title: 'Harder Tasks Need More Experts: Dynamic Routing in MoE Models', year: 2024 },
    options,
    refine: checkMaxK,
    traits: { routing: 'sparse', expertsPerToken: 'variable' },
    create: (cfg, rng) => new TopPRouter(cfg, rng),
  }),
);
