/**
 * Null experts: the router scores E real experts plus m null experts (zero output, zero compute)
 * and takes the top-k over all E + m; a token that gives some of its k slots to null experts
 * computes fewer real experts, so the number of real experts per token adapts.
 * Paper: Zeng et al., "AdaMoE: Token-Adaptive Routing with Null Experts for Mixture-of-Experts Language Models", 2024.
 *
 * Options: numNull (default numExperts) null experts, >= 0; topK (config) is the k over all
 * E + numNull experts (AdaMoE raises k when it adds nulls), at most E + numNull.
 *
 * Decisions:
 * - Weights: softmax over all E + m logits, top-k, renormalised over the k chosen slots including
 *   the null ones (as AdaMoE): a token that puts mass on nulls gets real-expert weights summing to
 *   less than 1, the null share standing in for the zero output. Only real-expert assignments are
 *   listed (null slots cost nothing and must not reach dispatch); they remain token-major with
 *   each token's experts in descending probability.
 * - logits / probs are exposed for the real experts only, [T, E]: the real columns of the logits
 *   and of the softmax over all E + m (not renormalised, so a row sums to 1 - its null mass).
 *   Every consumer of the record indexes experts in [0, E) (routing.expertIdx, the layer's loads,
 *   the balancing losses, which check probs/logits are [T, numExperts]), so [T, E] keeps their
 *   shapes and meaning: the
 *   balancing loss evens the load over the real experts, with P_e the true probability of real
 *   expert e. Nulls are identical, so nothing needs balancing among them; the share of null
 *   slots is reported as the nullFraction metric. The z-loss then sees only the real logits.
 * - Metrics: nullFraction = null slots / (T k); realExpertsPerToken = listed assignments / T.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, slice, topk, reshape, indexSelect } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, normalizeRows } from './common.js';

const options = {
  numNull: nonNegInt().optional().describe('zero-compute null experts added to the top-k candidates (default numExperts)'),
};

export type NullExpertsRouterConfig = ParsedRouterConfig<typeof options>;

export class NullExpertsRouter extends Module implements Router {
  readonly numExperts: number;
  readonly numNull: number;
  readonly dModel: number;
  readonly topK: number;
  /** W_r [E + numNull, d]: rows E.. score the null experts. */
  gate: Linear;

  constructor(cfg: NullExpertsRouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.numNull = cfg.numNull ?? E;
    const total = E + this.numNull;
    this.topK = cfg.topK;
    this.gate = routerGate(cfg.dModel, total, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('null-experts', x, this.dModel);
    const E = this.numExperts;
    const k = this.topK;
    const allLogits = this.gate.forward(x);
    const allProbs = softmax(allLogits, -1);
    const top = topk(allProbs, k);
    const slotWeights = reshape(normalizeRows(top.values), [T * k]);

    let real = 0;
    for (let i = 0; i < top.indices.length; i++) if (top.indices[i] < E) real++;
    const keep = new Int32Array(real);
    const tokenIdx = new Int32Array(real);
    const expertIdx = new Int32Array(real);
    for (let i = 0, a = 0; i < top.indices.length; i++) {
      if (top.indices[i] < E) {
        keep[a] = i;
        tokenIdx[a] = Math.floor(i / k);
        expertIdx[a] = top.indices[i];
        a++;
      }
    }
    const weights = indexSelect(slotWeights, keep);
    const slots = T * k;
    return {
      logits: slice(allLogits, 1, 0, E),
      probs: slice(allProbs, 1, 0, E),
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights },
      losses: {},
      metrics: { nullFraction: slots > 0 ? (slots - real) / slots : 0, realExpertsPerToken: T > 0 ? real / T : 0 },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'null-experts',
    summary: 'top-k over real plus zero-compute null experts',
    paper: { authors: 'Zeng et al.', title: 'AdaMoE: Token-Adaptive Routing with Null Experts for Mixture-of-Experts Language Models', year: 2024 },
    options,
    // topK counts null experts too: it is checked against numExperts + numNull, not numExperts
    checkTopK: false,
    refine: (c, issue) => {
      const total = c.numExperts + (c.numNull ?? c.numExperts);
      if (!(Number.isInteger(c.topK) && c.topK >= 1 && c.topK <= total)) issue('topK', `must be an integer in [1, numExperts + numNull = ${total}]`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'variable' },
    create: (cfg, rng) => new NullExpertsRouter(cfg, rng),
  }),
);
