/**
 * Adaptive gating: a top-2 softmax router that sends a token to its second expert only when the
 * router is unsure, i.e. when the top-1 and top-2 probabilities differ by less than a threshold;
 * confident tokens compute one expert.
 * Paper: Li et al., "Adaptive Gating in Mixture-of-Experts based Language Models", 2023.
 *
 * Rule per token: p1 - p2 < threshold -> experts {e1, e2}, else {e1}. Weights: the chosen
 * probabilities, renormalised over the chosen set when `normalize` (so a top-1 token gets weight 1).
 * Curriculum: the paper reorders training data by the computation tokens take; here (an option,
 * our simplification, since data order is not a router's business) the threshold warms up
 * linearly from 1 (every token top-2, all experts learn) to `threshold` over `warmupSteps`
 * training steps. Eval always uses `threshold`.
 *
 * The set switch is discontinuous in the probabilities (as in the paper); the reported metric
 * top2Fraction is the share of tokens that took two experts. Dispatch priority: first picks rank
 * above every second pick.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, bool, nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';
import { normalizePerToken } from './variable-k.js';

const options = {
  threshold: num('a number in [0, 1]', (v) => v >= 0 && v <= 1)
    .default(0.1)
    .describe('a token takes its second expert when p1 - p2 is below this'),
  normalize: bool().default(true).describe('renormalise the chosen probabilities over the chosen set'),
  warmupSteps: nonNegInt().default(0).describe('curriculum: the threshold falls linearly from 1 (all top-2) to threshold over these training steps'),
};

export type AdaptiveGatingRouterConfig = ParsedRouterConfig<typeof options>;

export class AdaptiveGatingRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: AdaptiveGatingRouterConfig;
  gate: Linear;

  constructor(cfg: AdaptiveGatingRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** The threshold in force at a step (the curriculum in training, the final one in eval). */
  thresholdAt(ctx: Pick<RouterContext, 'training' | 'step'>): number {
    const { threshold, warmupSteps } = this.cfg;
    if (!ctx.training || warmupSteps === 0) return threshold;
    const r = Math.min(1, ctx.step / warmupSteps);
    return r >= 1 ? threshold : 1 + (threshold - 1) * r;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('adaptive-gating', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const thr = this.thresholdAt(ctx);
    const p = probs.data;
    const tok: number[] = [];
    const exp: number[] = [];
    const rank: number[] = [];
    let two = 0;
    for (let t = 0; t < T; t++) {
      let e1 = 0;
      for (let e = 1; e < E; e++) if (p[t * E + e] > p[t * E + e1]) e1 = e;
      let e2 = -1;
      for (let e = 0; e < E; e++) if (e !== e1 && (e2 < 0 || p[t * E + e] > p[t * E + e2])) e2 = e;
      tok.push(t);
      exp.push(e1);
      rank.push(0);
      if (e2 >= 0 && p[t * E + e1] - p[t * E + e2] < thr) {
        tok.push(t);
        exp.push(e2);
        rank.push(1);
        two++;
      }
    }
    const tokenIdx = Int32Array.from(tok);
    const expertIdx = Int32Array.from(exp);
    let weights = gatherPairs(probs, tokenIdx, expertIdx);
    if (this.cfg.normalize) weights = normalizePerToken(weights, tokenIdx, T);
    const priority = new Float32Array(weights.size);
    for (let i = 0; i < priority.length; i++) priority[i] = weights.data[i] - rank[i];
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights, priority },
      losses: {},
      metrics: { top2Fraction: T > 0 ? two / T : 0, threshold: thr, expertsPerToken: T > 0 ? tokenIdx.length / T : 0 },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'adaptive-gating',
    summary: 'top-1 for confident tokens, top-2 when p1 - p2 is below a threshold',
    paper: { authors: 'Li et al.', title: 'Adaptive Gating in Mixture-of-Experts based Language Models', year: 2023 },
    options,
    checkTopK: false,
    refine: (c, issue) => {
      if (c.numExperts < 2) issue('numExperts', 'must be at least 2 (top-1 or top-2 routing)');
    },
    traits: { routing: 'sparse', expertsPerToken: 'variable', inferenceDiffers: 'with warmupSteps > 0 training starts with a higher threshold (more top-2 tokens) than inference uses' },
    create: (cfg, rng) => new AdaptiveGatingRouter(cfg, rng),
  }),
);
