/**
 * CompeteSMoE: competition routing. On scheduled training steps every expert computes on every
 * token, and each token goes to the k experts with the strongest neural response (output norm);
 * a router is trained to predict that outcome and routes on all other steps and at inference.
 * Paper: Pham et al., "CompeteSMoE -- Effective Training of Sparse Mixture of Experts via Competition", 2024.
 *
 * - Response a[t, e] = || expert_e(x_t) || (computed without gradient through ctx.experts, the
 *   layer's own bank); competition distribution q = softmax(a).
 * - A training forward competes with probability `competeProb` (a draw from ctx.rng): the top-k
 *   experts by response, weights q of those (renormalised when `normalize`, constants), and the
 *   loss `compete-predict` = predictCoef * mean_t KL(q_t || softmax(x W_r^T)_t) trains the router.
 * - Other training forwards and inference: softmax top-k of the router.
 * - A competition step costs every expert on every token once more (E / k times a top-k step's
 *   expert compute); the metric `competed` says whether this call competed.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { logSoftmax, mul, sum, scale, addScalar, noGrad, gatherRows, softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, num, nonNegative } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK, selectTopK } from './common.js';

const options = {
  competeProb: num('a number in [0, 1]', (v) => v >= 0 && v <= 1)
    .default(0.2)
    .describe('probability that a training forward routes by competition (the schedule)'),
  predictCoef: nonNegative().default(1).describe('coefficient of the loss training the router to predict the competition (compete-predict)'),
  normalize: bool().default(true).describe('renormalise the k chosen weights to sum to 1'),
};

export type CompeteSMoERouterConfig = ParsedRouterConfig<typeof options>;

export class CompeteSMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly competeProb: number;
  readonly predictCoef: number;
  readonly normalize: boolean;
  gate: Linear;

  constructor(cfg: CompeteSMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.competeProb = cfg.competeProb;
    this.predictCoef = cfg.predictCoef;
    this.normalize = cfg.normalize;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** Output norms of every expert on every token [T, E] (no gradient). */
  responses(x: Tensor, ctx: RouterContext): Float32Array {
    if (!ctx.experts) throw new Error('router "competesmoe": a competition step needs ctx.experts (MoELayer.forward passes its expert bank)');
    const [T, d] = x.shape;
    const E = this.numExperts;
    const rows = new Int32Array(T * E);
    for (let e = 0; e < E; e++) for (let t = 0; t < T; t++) rows[e * T + t] = t;
    const y = noGrad(() => ctx.experts!.forwardGrouped(gatherRows(x, rows), new Int32Array(E).fill(T)));
    const a = new Float32Array(T * E);
    for (let e = 0; e < E; e++)
      for (let t = 0; t < T; t++) {
        let s = 0;
        const o = (e * T + t) * d;
        for (let i = 0; i < d; i++) s += y.data[o + i] * y.data[o + i];
        a[t * E + e] = Math.sqrt(s);
      }
    return a;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('competesmoe', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const compete = ctx.training && this.competeProb > 0 && ctx.rng.next() < this.competeProb;
    if (!compete) {
      const { probs, routing } = softmaxTopK(logits, this.topK, this.normalize);
      return { logits, probs, routing, losses: {}, metrics: { competed: 0 } };
    }
    const q = noGrad(() => softmax(new Tensor(this.responses(x, ctx), [T, E]), -1));
    const { routing } = selectTopK(q, this.topK, { normalize: this.normalize });
    const logp = logSoftmax(logits, -1);
    let qlogq = 0;
    for (const v of q.data) if (v > 0) qlogq += v * Math.log(v);
    // KL(q || p) = sum q log q - sum q log p, mean over tokens
    const cross = sum(mul(logp, q));
    const losses: Record<string, Tensor> = {};
    if (this.predictCoef > 0) losses['compete-predict'] = scale(addScalar(cross, -qlogq), -this.predictCoef / T);
    return { logits, probs: softmax(logits, -1), routing, losses, metrics: { competed: 1 } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'competesmoe',
    summary: 'scheduled competition by expert output norm; a router learns to predict the winners',
    paper: { authors: 'Pham et al.', title: 'CompeteSMoE -- Effective Training of Sparse Mixture of Experts via Competition', year: 2024 },
    options,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'k',
      usageCaveat: 'competition steps compute every expert on every token to rank them (extra compute not in experts-per-token)',
    },
    create: (cfg, rng) => new CompeteSMoERouter(cfg, rng),
  }),
);
