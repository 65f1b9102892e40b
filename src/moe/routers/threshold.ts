/**
 * Threshold-based routing for many small experts: per token, experts are added in descending
 * softmax probability until the cumulative probability exceeds the threshold t; the first
 * (most probable) expert is always taken.
 * Paper: Yang et al., "XMoE: Sparse Models with Fine-grained and Adaptive Expert Selection", 2024.
 *
 * How it differs from 'top-p' (Huang et al. 2024). In our reading the two papers' selection rules
 * pick the same kind of set (a shortest descending prefix by cumulative probability, at least one
 * expert); they were proposed concurrently for different settings. This file implements XMoE's
 * variant as described there, and these are the differences from 'top-p':
 * - the stopping rule is "exceeds": the prefix stops at the first cumsum > t (top-p stops at
 *   cumsum >= p), so a t that an expert hits exactly still takes the next one;
 * - t is large (default 0.9) because XMoE splits each FFN into many small experts and wants most
 *   of the probability mass computed; top-p's p = 0.4 sits on a few large experts;
 * - the weights are the raw softmax probabilities of the chosen experts, with no renormalisation
 *   option (as we read XMoE: the unchosen tail's mass is simply not computed);
 * - no entropy (dynamic) loss of its own: balance comes from the layer's usual balancing losses;
 * - dispatch priority (our choice, for capacity-limited dispatch): a token's j-th pick ranks
 *   below every token's (j-1)-th pick, probability breaking ties within a rank, so under a tight
 *   capacity the tail experts of some tokens are dropped before any token's first expert.
 *
 * Options: threshold (default 0.9, in (0, 1]); maxK (default numExperts) caps experts per token.
 * Record: logits = x W_r^T, probs = softmax(logits) (once). Metrics: expertsPerToken,
 * maxExpertsPerToken.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';
import { cumulativeSelect, checkMaxK } from './top-p.js';

const options = {
  threshold: num('a number in (0, 1]', (v) => v > 0 && v <= 1)
    .default(0.9)
    .describe('experts are added until the cumulative probability exceeds it'),
  maxK: posInt('an integer in [1, numExperts]').optional().describe('cap on experts per token (default numExperts)'),
};

export type ThresholdRouterConfig = ParsedRouterConfig<typeof options>;

export class ThresholdRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly threshold: number;
  readonly maxK: number;
  gate: Linear;

  constructor(cfg: ThresholdRouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.threshold = cfg.threshold;
    this.maxK = cfg.maxK ?? E;
    this.gate = routerGate(cfg.dModel, E, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('threshold', x, this.dModel);
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const sel = cumulativeSelect(probs.data, T, this.numExperts, this.threshold, { strict: true, maxK: this.maxK });
    const weights = gatherPairs(probs, sel.tokenIdx, sel.expertIdx);
    const priority = new Float32Array(weights.size);
    for (let i = 0; i < priority.length; i++) priority[i] = weights.data[i] - sel.rank[i];
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx: sel.tokenIdx, expertIdx: sel.expertIdx, weights, priority },
      losses: {},
      metrics: { expertsPerToken: T > 0 ? sel.tokenIdx.length / T : 0, maxExpertsPerToken: sel.maxPerToken },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'threshold',
    summary: 'XMoE threshold routing over small experts',
    paper: { authors: 'Yang et al.', title: 'XMoE: Sparse Models with Fine-grained and Adaptive Expert Selection', year: 2024 },
    options,
    refine: checkMaxK,
    traits: { routing: 'sparse', expertsPerToken: 'variable' },
    create: (cfg, rng) => new ThresholdRouter(cfg, rng),
  }),
);
