/**
 * sigma-MoE routing: non-competitive sigmoid scores, top-k per token, the chosen experts weighted
 * by their raw sigmoid scores (no renormalisation, so a token may use less than one unit of
 * expert output). Paper: Csordás et al., "Approximating Two-Layer Feedforward Networks for
 * Efficient Transformers", 2023; the FFN of MoEUT (Csordás et al., "MoEUT: Mixture-of-Experts
 * Universal Transformers", 2024), balanced there by the entropy of the mean selection
 * ('entropy-global' in router_losses).
 *
 * s = sigmoid(x W_r^T) [T, E]; experts = top-k of s; weights = s of the chosen experts. `probs`
 * (for the balancing losses and metrics) are softmax(x W_r^T), the distribution the paper's
 * entropy regulariser reads.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { sigmoid, softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {};

export type SigmaMoERouterConfig = ParsedRouterConfig<typeof options>;

/** Sigmoid top-k router with unnormalised weights (sigma-MoE). */
export class SigmaMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  gate: Linear;

  constructor(cfg: SigmaMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    checkRouterInput('sigma-moe', x, this.dModel);
    const logits = this.gate.forward(x);
    const { routing } = selectTopK(sigmoid(logits), this.topK);
    return { logits, probs: softmax(logits, -1), routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'sigma-moe',
    summary: 'sigmoid top-k, chosen experts weighted by their raw sigmoid scores (no renormalisation)',
    paper: { authors: 'Csordás et al.', title: 'Approximating Two-Layer Feedforward Networks for Efficient Transformers', year: 2023 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new SigmaMoERouter(cfg, rng),
  }),
);
