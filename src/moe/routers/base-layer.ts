/**
 * BASE layer: training routes by a balanced linear assignment (every expert receives the same
 * number of tokens, maximising the total token-expert affinity), so no balancing loss is needed;
 * inference routes each token greedily to its best expert.
 * Paper: Lewis et al., "BASE Layers: Simplifying Training of Large, Sparse Models", 2021.
 *
 * Assignment (training): the affinities s = x W^T are balanced with `sinkhornIters` Sinkhorn
 * iterations (rows and columns of exp(s - max) normalised alternately, as in the Sinkhorn
 * variants the routing surveys compare), then tokens are assigned greedily in descending balanced
 * score subject to capacity ceil(T / E) per expert: an approximate linear assignment (the paper
 * uses an auction algorithm; this greedy solution is exact when the balanced scores separate).
 * Each token gets exactly one expert. Weight: sigmoid(s[t, e]) (BASE scales the expert output by
 * the sigmoid of the token-expert affinity). probs = softmax(s) for the losses and metrics.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, sigmoid } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  sinkhornIters: nonNegInt().default(8).describe('Sinkhorn balancing iterations before the greedy capacity assignment (training)'),
};

export type BaseLayerRouterConfig = ParsedRouterConfig<typeof options>;

/**
 * Balanced one-expert-per-token assignment of scores [T, E]: Sinkhorn-balance, then greedy by
 * descending balanced score with capacity ceil(T / E). Returns the expert of each token.
 */
export function balancedAssignment(scores: Float32Array, T: number, E: number, iters: number): Int32Array {
  const p = new Float64Array(T * E);
  let m = -Infinity;
  for (const v of scores) if (v > m) m = v;
  for (let i = 0; i < p.length; i++) p[i] = Math.exp(scores[i] - m);
  for (let it = 0; it < iters; it++) {
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let e = 0; e < E; e++) s += p[t * E + e];
      for (let e = 0; e < E; e++) p[t * E + e] /= s || 1;
    }
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let t = 0; t < T; t++) s += p[t * E + e];
      for (let t = 0; t < T; t++) p[t * E + e] *= T / E / (s || 1);
    }
  }
  const order = Array.from({ length: T * E }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  const cap = Math.ceil(T / E);
  const load = new Int32Array(E);
  const out = new Int32Array(T).fill(-1);
  let left = T;
  for (const i of order) {
    if (left === 0) break;
    const t = (i / E) | 0;
    const e = i % E;
    if (out[t] >= 0 || load[e] >= cap) continue;
    out[t] = e;
    load[e]++;
    left--;
  }
  return out;
}

export class BaseLayerRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly sinkhornIters: number;
  gate: Linear;

  constructor(cfg: BaseLayerRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.sinkhornIters = cfg.sinkhornIters;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('base-layer', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    let expertIdx: Int32Array;
    if (ctx.training) expertIdx = balancedAssignment(logits.data, T, E, this.sinkhornIters);
    else {
      expertIdx = new Int32Array(T);
      const s = logits.data;
      for (let t = 0; t < T; t++) for (let e = 1; e < E; e++) if (s[t * E + e] > s[t * E + expertIdx[t]]) expertIdx[t] = e;
    }
    const tokenIdx = Int32Array.from({ length: T }, (_, t) => t);
    const weights = gatherPairs(sigmoid(logits), tokenIdx, expertIdx);
    return { logits, probs, routing: { kind: 'sparse', tokenIdx, expertIdx, weights }, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'base-layer',
    summary: 'balanced linear assignment in training (equal tokens per expert), greedy top-1 at inference',
    paper: { authors: 'Lewis et al.', title: 'BASE Layers: Simplifying Training of Large, Sparse Models', year: 2021 },
    options,
    checkTopK: false,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'one',
      batchDependent: 'in training the balanced assignment shares each expert capacity among all tokens of the batch',
      inferenceDiffers: 'training assigns by balanced linear assignment over the batch; inference takes each token greedy top-1',
    },
    create: (cfg, rng) => new BaseLayerRouter(cfg, rng),
  }),
);
