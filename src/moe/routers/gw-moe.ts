/**
 * GW-MoE: tokens whose routing is uncertain (near-uniform scores) are broadcast to every expert
 * during fine-tuning, so all experts learn the knowledge those tokens need; inference routes
 * top-k as usual, at no extra cost.
 * Paper: Wu et al., "GW-MoE: Resolving Uncertainty in MoE Router with Global Workspace Theory", 2024.
 *
 * - p = softmax(x W_r^T). A token is uncertain when its entropy H(p) > threshold * ln E.
 * - Training from step `startStep` on (the fine-tuning stage): uncertain tokens go to all E
 *   experts with weights p (which sum to 1); the others to the top-k of p (renormalised when
 *   `normalize`). Eval and earlier steps: plain top-k for every token.
 * - Metric: broadcastFraction (share of tokens broadcast).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { concat, reshape, takeAlongLast } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, num, nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK, gatherPairs } from './common.js';

const options = {
  threshold: num('a number in (0, 1]', (v) => v > 0 && v <= 1)
    .default(0.9)
    .describe('a token is uncertain when its routing entropy exceeds threshold * ln(numExperts)'),
  startStep: nonNegInt().default(0).describe('training step from which uncertain tokens are broadcast (the fine-tuning start)'),
  normalize: bool().default(true).describe('renormalise the top-k probabilities of certain tokens to sum to 1'),
};

export type GwMoERouterConfig = ParsedRouterConfig<typeof options>;

export class GwMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly threshold: number;
  readonly startStep: number;
  readonly normalize: boolean;
  gate: Linear;

  constructor(cfg: GwMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.threshold = cfg.threshold;
    this.startStep = cfg.startStep;
    this.normalize = cfg.normalize;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** Which tokens are uncertain (entropy above threshold * ln E) under probabilities p [T, E]. */
  uncertain(p: Float32Array, T: number): Uint8Array {
    const E = this.numExperts;
    const limit = this.threshold * Math.log(E);
    const out = new Uint8Array(T);
    for (let t = 0; t < T; t++) {
      let h = 0;
      for (let e = 0; e < E; e++) {
        const v = p[t * E + e];
        if (v > 0) h -= v * Math.log(v);
      }
      out[t] = h > limit ? 1 : 0;
    }
    return out;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('gw-moe', x, this.dModel);
    const E = this.numExperts;
    const k = this.topK;
    const logits = this.gate.forward(x);
    const top = softmaxTopK(logits, k, this.normalize);
    const probs = top.probs;
    if (!ctx.training || ctx.step < this.startStep) return { logits, probs, routing: top.routing, losses: {}, metrics: { broadcastFraction: 0 } };
    const wide = this.uncertain(probs.data, T);
    const keep: number[] = [];
    const bt: number[] = [];
    const be: number[] = [];
    let n = 0;
    for (let t = 0; t < T; t++) {
      if (wide[t]) {
        n++;
        for (let e = 0; e < E; e++) {
          bt.push(t);
          be.push(e);
        }
      } else for (let j = 0; j < k; j++) keep.push(t * k + j);
    }
    const ki = Int32Array.from(keep);
    const tokenIdx = new Int32Array(ki.length + bt.length);
    const expertIdx = new Int32Array(ki.length + bt.length);
    for (let i = 0; i < ki.length; i++) {
      tokenIdx[i] = top.routing.tokenIdx[ki[i]];
      expertIdx[i] = top.routing.expertIdx[ki[i]];
    }
    tokenIdx.set(bt, ki.length);
    expertIdx.set(be, ki.length);
    const parts: Tensor[] = [];
    if (ki.length) parts.push(reshape(takeAlongLast(reshape(top.routing.weights, [1, T * k]), ki, ki.length), [ki.length]));
    if (bt.length) parts.push(gatherPairs(probs, Int32Array.from(bt), Int32Array.from(be)));
    const weights = parts.length === 1 ? parts[0] : concat(parts, 0);
    return { logits, probs, routing: { kind: 'sparse', tokenIdx, expertIdx, weights }, losses: {}, metrics: { broadcastFraction: n / T } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'gw-moe',
    summary: 'top-k; in fine-tuning, tokens with near-uniform routing go to all experts',
    paper: { authors: 'Wu et al.', title: 'GW-MoE: Resolving Uncertainty in MoE Router with Global Workspace Theory', year: 2024 },
    options,
    // training broadcasts uncertain tokens to all E experts; inference is exactly top-k
    traits: { routing: 'sparse', expertsPerToken: 'variable', usageCaveat: 'in training uncertain tokens use every expert, so training-time usage overstates inference usage' },
    create: (cfg, rng) => new GwMoERouter(cfg, rng),
  }),
);
