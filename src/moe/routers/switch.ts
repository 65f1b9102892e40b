/**
 * Switch routing: top-1 token choice, weight = the (unrenormalised) softmax probability.
 * Paper: Fedus, Zoph & Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", 2021.
 *
 * Options:
 * - capacityFactor (default 1.25, > 0): not used by the router itself; it is the router's
 *   default dispatch (`traits.defaultDispatch`), so an MoE layer whose config names no dispatch limits each expert to
 *   ceil(capacityFactor * T / E) assignments per call and drops the overflow by `priority`
 *   (the weights). An explicit layer dispatch (e.g. dropless) overrides it.
 * - jitterNoise (default 0 = off; the paper's setting was 1e-2): in training, the router input
 *   is multiplied by U(1 - eps, 1 + eps) noise from ctx.rng before the projection (only the
 *   router sees the jittered input; the experts get the clean x).
 *
 * cfg.topK is ignored apart from validation: Switch routes each token to exactly one expert.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, positive } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK, jitter } from './common.js';

const options = {
  capacityFactor: positive('a positive number').default(1.25).describe('expert capacity factor of its default capacity-limited dispatch'),
  jitterNoise: num('a number in [0, 1)', (v) => v >= 0 && v < 1)
    .default(0)
    .describe('multiplicative router-input jitter U(1 - eps, 1 + eps) in training (the paper used 1e-2)'),
};

export type SwitchRouterConfig = ParsedRouterConfig<typeof options>;

export class SwitchRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  /** Expert capacity factor for the layer (see the file comment). */
  readonly capacityFactor: number;
  readonly jitterNoise: number;
  gate: Linear;

  constructor(cfg: SwitchRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.capacityFactor = cfg.capacityFactor;
    this.jitterNoise = cfg.jitterNoise;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    checkRouterInput('switch', x, this.dModel);
    const xr = ctx.training && this.jitterNoise > 0 ? jitter(x, this.jitterNoise, ctx.rng) : x;
    const logits = this.gate.forward(xr);
    const { probs, routing } = softmaxTopK(logits, 1, false);
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'switch',
    summary: 'top-1 routing, weight = softmax probability',
    paper: { authors: 'Fedus et al.', title: 'Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity', year: 2021 },
    options,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'one',
      hfConfig: { capacity_factor: 'capacityFactor' },
      defaultDispatch: (c) => ({ type: 'capacity', capacityFactor: c.capacityFactor }),
    },
    create: (cfg, rng) => new SwitchRouter(cfg, rng),
  }),
);
