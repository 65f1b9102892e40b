/**
 * Layerwise recurrent router (RMoE): a GRU carries a routing state from each MoE layer to the
 * next, so a layer's routing sees how earlier layers routed the same token.
 * Paper: Qiu et al., "Layerwise Recurrent Router for Mixture-of-Experts", 2024.
 *
 * - u = x W_p^T (projection to the GRU width H); h = GRU(u, h_prev); logits = h W_r^T; softmax
 *   top-k as usual. GRU: z = sigmoid(W_z u + U_z h_prev + b_z), r = sigmoid(W_r u + U_r h_prev + b_r),
 *   n = tanh(W_n u + U_n (r * h_prev) + b_n), h = (1 - z) * n + z * h_prev.
 * - h_prev comes from ctx.state (the per-forward scratch the model shares across its layers,
 *   key 'rmoe'); the first layer, a layer run alone, or a state of another shape (a layer that
 *   saw other rows) starts from zeros. Gradients flow back through the state into earlier layers'
 *   routers. Each layer has its own GRU cell.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { add, mul, sigmoid, tanh, slice, addScalar, neg } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK } from './common.js';

const STATE_KEY = 'rmoe';

const options = {
  hidden: posInt().default(16).describe('GRU state width H carried between layers'),
  normalize: bool().default(true).describe('renormalise the k chosen probabilities to sum to 1'),
};

export type RMoERouterConfig = ParsedRouterConfig<typeof options>;

export class RMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly hidden: number;
  readonly normalize: boolean;
  /** W_p [H, d]. */
  proj: Linear;
  /** [W_z; W_r; W_n] [3H, H] with biases. */
  inputGates: Linear;
  /** [U_z; U_r] [2H, H]. */
  stateGates: Linear;
  /** U_n [H, H]. */
  stateCandidate: Linear;
  /** W_r [E, H]. */
  gate: Linear;

  constructor(cfg: RMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.hidden = cfg.hidden;
    this.normalize = cfg.normalize;
    const H = cfg.hidden;
    const std = 1 / Math.sqrt(H);
    this.proj = new Linear(cfg.dModel, H, rng, { bias: false, std: 1 / Math.sqrt(cfg.dModel) });
    this.inputGates = new Linear(H, 3 * H, rng, { std });
    this.stateGates = new Linear(H, 2 * H, rng, { bias: false, std });
    this.stateCandidate = new Linear(H, H, rng, { bias: false, std });
    this.gate = routerGate(H, cfg.numExperts, rng);
  }

  /** One GRU step: u [T, H], h [T, H] -> h' [T, H]. */
  cell(u: Tensor, h: Tensor): Tensor {
    const H = this.hidden;
    const gi = this.inputGates.forward(u);
    const gh = this.stateGates.forward(h);
    const z = sigmoid(add(slice(gi, 1, 0, H), slice(gh, 1, 0, H)));
    const r = sigmoid(add(slice(gi, 1, H, 2 * H), slice(gh, 1, H, 2 * H)));
    const n = tanh(add(slice(gi, 1, 2 * H, 3 * H), this.stateCandidate.forward(mul(r, h))));
    // (1 - z) * n + z * h
    return add(mul(addScalar(neg(z), 1), n), mul(z, h));
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('rmoe', x, this.dModel);
    const H = this.hidden;
    const prev = ctx.state?.get(STATE_KEY);
    const h0 = prev instanceof Tensor && prev.ndim === 2 && prev.shape[0] === T && prev.shape[1] === H ? prev : new Tensor(new Float32Array(T * H), [T, H]);
    const h = this.cell(this.proj.forward(x), h0);
    ctx.state?.set(STATE_KEY, h);
    const logits = this.gate.forward(h);
    const { probs, routing } = softmaxTopK(logits, this.topK, this.normalize);
    return { logits, probs, routing, losses: {}, metrics: { stateDelta: meanAbsDiff(h, h0) } };
  }
}

function meanAbsDiff(a: Tensor, b: Tensor): number {
  let s = 0;
  for (let i = 0; i < a.size; i++) s += Math.abs(a.data[i] - b.data[i]);
  return a.size ? s / a.size : 0;
}

routerRegistry.register(
  defineRouter({
    name: 'rmoe',
    summary: 'a GRU carries routing state from layer to layer; top-k on its output',
    paper: { authors: 'Qiu et al.', title: 'Layerwise Recurrent Router for Mixture-of-Experts', year: 2024 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new RMoERouter(cfg, rng),
  }),
);
