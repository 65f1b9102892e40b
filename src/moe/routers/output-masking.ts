/**
 * Expert output masking (EOM): top-k routing whose MoE output is dropped for a random fraction of
 * the tokens in training (those tokens pass through the residual only), a regulariser against
 * experts over-fitting low-resource data.
 * Paper: Elbayad et al., "Fixing MoE Over-Fitting on Low-Resource Languages in Multilingual Machine Translation", 2022.
 *
 * Training: each token is masked with probability `maskRate` (ctx.rng); a masked token's
 * assignments are not listed (it computes no expert). Eval: plain top-k. The paper's other remedy,
 * conditional MoE routing (a learned gate between a dense FFN and the MoE), needs a dense branch
 * beside the MoE layer and is not part of this router.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { indexSelect } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK } from './common.js';

const options = {
  maskRate: num('a number in [0, 1)', (v) => v >= 0 && v < 1)
    .default(0.1)
    .describe('training: fraction of tokens whose MoE output is dropped'),
  normalize: bool().default(true).describe('renormalise the chosen top-k probabilities'),
};

export type OutputMaskingRouterConfig = ParsedRouterConfig<typeof options>;

export class OutputMaskingRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: OutputMaskingRouterConfig;
  gate: Linear;

  constructor(cfg: OutputMaskingRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('output-masking', x, this.dModel);
    const k = this.cfg.topK;
    const logits = this.gate.forward(x);
    const { probs, routing } = softmaxTopK(logits, k, this.cfg.normalize);
    if (!ctx.training || this.cfg.maskRate === 0) return { logits, probs, routing, losses: {}, metrics: { maskedFraction: 0 } };
    const u = ctx.rng.fillUniform(new Float32Array(T), 0, 1);
    const keep: number[] = [];
    for (let a = 0; a < routing.tokenIdx.length; a++) if (u[routing.tokenIdx[a]] >= this.cfg.maskRate) keep.push(a);
    const idx = Int32Array.from(keep);
    let masked = 0;
    for (let t = 0; t < T; t++) if (u[t] < this.cfg.maskRate) masked++;
    return {
      logits,
      probs,
      routing: {
        kind: 'sparse',
        tokenIdx: routing.tokenIdx.filter((_, a) => u[routing.tokenIdx[a]] >= this.cfg.maskRate),
        expertIdx: routing.expertIdx.filter((_, a) => u[routing.tokenIdx[a]] >= this.cfg.maskRate),
        weights: indexSelect(routing.weights, idx),
      },
      losses: {},
      metrics: { maskedFraction: T > 0 ? masked / T : 0 },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'output-masking',
    summary: 'top-k with the MoE output of a random fraction of tokens dropped in training (EOM)',
    paper: { authors: 'Elbayad et al.', title: 'Fixing MoE Over-Fitting on Low-Resource Languages in Multilingual Machine Translation', year: 2022 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k', inferenceDiffers: 'training drops the MoE output of a random maskRate of the tokens; inference computes all' },
    create: (cfg, rng) => new OutputMaskingRouter(cfg, rng),
  }),
);
