/**
 * Switch routing: top-1 token choice, weight = the (unrenormalised) softmax probability.
 * Paper: Fedus, Zoph & Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", 2021.
 *
 * Options:
 * - capacityFactor (default 1.25, > 0): not used by the router itself; it is the router's
 *   `defaultDispatch`, so an MoE layer whose config names no dispatch limits each expert to
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
import { routerRegistry, numOption, checkKnownOptions, type RouterConfig } from './registry.js';
import { checkBaseConfig, checkRouterInput, routerGate, softmaxTopK, jitter } from './common.js';

export class SwitchRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  /** Expert capacity factor for the layer (see the file comment). */
  readonly capacityFactor: number;
  readonly jitterNoise: number;
  gate: Linear;

  get defaultDispatch(): { type: 'capacity'; capacityFactor: number } {
    return { type: 'capacity', capacityFactor: this.capacityFactor };
  }

  constructor(cfg: RouterConfig, rng: Rng) {
    super();
    checkBaseConfig(cfg);
    checkKnownOptions(cfg, ['capacityFactor', 'jitterNoise']);
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.capacityFactor = numOption(cfg, 'capacityFactor', 1.25, (v) => Number.isFinite(v) && v > 0, 'a positive number');
    this.jitterNoise = numOption(cfg, 'jitterNoise', 0, (v) => v >= 0 && v < 1, 'a number in [0, 1)');
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

routerRegistry.register('switch', (cfg, rng) => new SwitchRouter(cfg, rng), 'top-1 routing, weight = softmax probability (Fedus et al. 2021)');
