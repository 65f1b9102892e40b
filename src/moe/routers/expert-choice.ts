/**
 * Expert choice: each expert picks its top-c tokens by softmax score, so every expert gets
 * exactly c tokens (perfect balance) and a token gets a variable number of experts (possibly 0).
 * Paper: Zhou et al., "Mixture-of-Experts with Expert Choice Routing", 2022.
 *
 * Scores S = softmax(x W_r^T) over experts per token [T, E]; capacity c = round(capacityFactor *
 * T * k / E) clamped to [1, T] (k = cfg.topK, the average experts per token). Weights are the
 * scores S[t, e] of the chosen pairs (differentiable). Assignments are listed expert-major.
 * Ties between tokens go to the lower token index.
 *
 * Note: selection looks at every token of the call, so a token's routing depends on the others
 * in its batch; for causal decoding this leaks future tokens (as the paper acknowledges).
 *
 * Options: capacityFactor (default 1, > 0).
 * Metrics: `unroutedFraction` = fraction of tokens chosen by no expert.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { topkIndices } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { softmax } from '../../tensor/index.js';
import { positive } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  capacityFactor: positive('a positive number').default(1).describe('tokens per expert = round(capacityFactor * T * topK / E)'),
};

export type ExpertChoiceRouterConfig = ParsedRouterConfig<typeof options>;

export class ExpertChoiceRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly capacityFactor: number;
  gate: Linear;

  constructor(cfg: ExpertChoiceRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.capacityFactor = cfg.capacityFactor;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** Tokens each expert takes from a call of T tokens. */
  capacity(T: number): number {
    if (T === 0) return 0;
    return Math.min(T, Math.max(1, Math.round((this.capacityFactor * T * this.topK) / this.numExperts)));
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('expert-choice', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const c = this.capacity(T);
    // experts rank tokens: top-c along the token axis of the transposed scores
    const pt = new Float32Array(E * T);
    const pd = probs.data;
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) pt[e * T + t] = pd[t * E + e];
    const chosen = topkIndices(pt, E, T, c);
    const tokenIdx = chosen;
    const expertIdx = new Int32Array(E * c);
    for (let e = 0; e < E; e++) expertIdx.fill(e, e * c, e * c + c);
    const weights = gatherPairs(probs, tokenIdx, expertIdx);
    const hit = new Uint8Array(T);
    for (let i = 0; i < tokenIdx.length; i++) hit[tokenIdx[i]] = 1;
    let unrouted = 0;
    for (let t = 0; t < T; t++) unrouted += 1 - hit[t];
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights },
      losses: {},
      metrics: { unroutedFraction: T > 0 ? unrouted / T : 0, capacity: c },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'expert-choice',
    summary: 'each expert picks its top-c tokens',
    paper: { authors: 'Zhou et al.', title: 'Mixture-of-Experts with Expert Choice Routing', year: 2022 },
    options,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'variable',
      batchDependent: "each expert picks its top tokens among the whole batch, so a token's experts depend on the other tokens (and on future ones in causal LM training)",
      usageCaveat:
        'Validation batches come from one domain at a time and every expert takes the same number of tokens from each batch, so per-domain usage is uniform by construction: a specialisation of 0 here says nothing about the router.',
    },
    create: (cfg, rng) => new ExpertChoiceRouter(cfg, rng),
  }),
);
