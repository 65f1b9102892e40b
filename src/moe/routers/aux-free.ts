/**
 * Auxiliary-loss-free load balancing: sigmoid affinities, top-k selection on affinity + a
 * per-expert bias that is nudged toward balance after each step, outside the gradient.
 * Paper: Wang et al., "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", 2024
 * (the routing of DeepSeek-V3, 2024).
 *
 * s = sigmoid(x W_r^T) [T, E]; experts = top-k of (s + b) per token; weights = s of the chosen
 * experts divided by their sum, times routedScaling. The bias only decides *which* experts
 * compute, never the weights. `probs` (for losses/metrics) are the affinities normalised over
 * all experts, s / sum_e s.
 *
 * The bias b [E] is an nn StateBuffer named `bias` (e.g. `layers.3.moe.router.bias` in a model's
 * stateDict()), so checkpoints save and restore it while optimizers never update it.
 * afterStep(load) applies b_e += u * sign(mean(load) - load_e) with u = biasUpdateRate.
 *
 * Options: biasUpdateRate (default 1e-3, >= 0), routedScaling (default 1, > 0).
 * Metrics: biasMin, biasMax.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { sigmoid } from '../../tensor/index.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { nonNegative, positive } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK, normalizeRows } from './common.js';

const options = {
  biasUpdateRate: nonNegative('a non-negative number').default(1e-3).describe('u in b_e += u * sign(mean load - load_e) after each step'),
  routedScaling: positive('a positive number').default(1).describe('multiplier on the normalised weights of the chosen experts'),
};

export type AuxFreeRouterConfig = ParsedRouterConfig<typeof options>;

export class AuxFreeRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly biasUpdateRate: number;
  readonly routedScaling: number;
  gate: Linear;
  /** Selection bias b [E] (non-trainable state; updated in place by afterStep). */
  bias: StateBuffer;

  constructor(cfg: AuxFreeRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.biasUpdateRate = cfg.biasUpdateRate;
    this.routedScaling = cfg.routedScaling;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.bias = new StateBuffer(new Float32Array(cfg.numExperts), [cfg.numExperts]);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('aux-free', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const s = sigmoid(logits);
    const b = this.bias.data;
    const select = new Float32Array(T * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) select[t * E + e] = s.data[t * E + e] + b[e];
    const { routing } = selectTopK(s, this.topK, { select, normalize: true, factor: this.routedScaling });
    const probs = normalizeRows(s);
    let lo = Infinity;
    let hi = -Infinity;
    for (let e = 0; e < E; e++) {
      lo = Math.min(lo, b[e]);
      hi = Math.max(hi, b[e]);
    }
    return { logits, probs, routing, losses: {}, metrics: { biasMin: lo, biasMax: hi } };
  }

  afterStep(load: Float64Array): void {
    const E = this.numExperts;
    if (load.length !== E) throw new Error(`router "aux-free": afterStep load has ${load.length} entries, expected numExperts=${E}`);
    let mean = 0;
    for (let e = 0; e < E; e++) {
      if (!Number.isFinite(load[e]) || load[e] < 0) throw new Error(`router "aux-free": afterStep load[${e}] = ${load[e]} is not a non-negative number`);
      mean += load[e];
    }
    mean /= E;
    const u = this.biasUpdateRate;
    const b = this.bias.data;
    for (let e = 0; e < E; e++) b[e] += u * Math.sign(mean - load[e]);
  }
}

routerRegistry.register(
  defineRouter({
    name: 'aux-free',
    summary: 'sigmoid top-k with a load-driven selection bias, no aux loss',
    paper: { authors: 'Wang et al.', title: 'Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts', year: 2024 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k', hfConfig: { routed_scaling_factor: 'routedScaling' } },
    create: (cfg, rng) => new AuxFreeRouter(cfg, rng),
  }),
);
