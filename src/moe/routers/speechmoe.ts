/**
 * SpeechMoE / SpeechMoE2 router inputs: the router of every layer sees, besides the layer's hidden
 * state, the model's shared embedding of the token (the same input in all layers) and optionally a
 * global embedding of the sequence so far (SpeechMoE2's global domain embedding); routing is
 * top-k softmax on the concatenation.
 * Papers: You et al., "SpeechMoE: Scaling to Large Acoustic Models with Dynamic Routing Mixture of
 * Experts", 2021; "SpeechMoE2: Mixture-of-Experts Model with Improved Routing", 2022.
 *
 * logits = W [x ; e ; g], e = ctx.embeddings (the model's token embeddings; absent, e.g. a bare
 * layer: x itself), g = the causal running mean of e over the sequence (ctx.batchShape; without
 * it each row is its own sequence), included when `globalEmbedding`. SpeechMoE2 derives g from an
 * utterance-level domain embedding; the running mean is our causal, per-sequence form of it (the
 * whole-utterance mean would leak future tokens in a causal LM). Weights: top-k probs,
 * renormalised when `normalize`. Add the 'l1-sparsity' and 'mean-importance' losses for the
 * paper's balancing.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { concat } from '../../tensor/index.js';
import { result, accumulateGrad } from '../../tensor/tensor.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool } from '../../tensor/validate.js';
import { formatShape } from '../../tensor/shape.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, softmaxTopK } from './common.js';

const options = {
  globalEmbedding: bool().default(true).describe('also feed the causal running mean of the shared embedding over the sequence (SpeechMoE2)'),
  normalize: bool().default(true).describe('renormalise the chosen top-k probabilities'),
};

export type SpeechMoERouterConfig = ParsedRouterConfig<typeof options>;

/** Causal running mean over each sequence of rows e [T, d] (rows sequence-major), differentiable. */
export function causalMean(e: Tensor, batchShape?: { batch: number; seqLen: number }): Tensor {
  const [T, d] = e.shape;
  const L = batchShape && batchShape.batch * batchShape.seqLen === T ? batchShape.seqLen : 1;
  const out = new Float32Array(T * d);
  for (let s = 0; s < T; s += L) {
    const acc = new Float64Array(d);
    for (let p = 0; p < L; p++) {
      const r = (s + p) * d;
      for (let i = 0; i < d; i++) out[r + i] = (acc[i] += e.data[r + i]) / (p + 1);
    }
  }
  return result(out, [T, d], [e], (g) => {
    const ge = new Float32Array(T * d);
    for (let s = 0; s < T; s += L) {
      const acc = new Float64Array(d);
      for (let p = L - 1; p >= 0; p--) {
        const r = (s + p) * d;
        for (let i = 0; i < d; i++) ge[r + i] = acc[i] += g[r + i] / (p + 1);
      }
    }
    accumulateGrad(e, ge, true);
  });
}

export class SpeechMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: SpeechMoERouterConfig;
  /** W [E, 2d or 3d] over [x ; e ; g]. */
  gate: Linear;

  constructor(cfg: SpeechMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel * (cfg.globalEmbedding ? 3 : 2), cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('speechmoe', x, this.dModel);
    const e = ctx.embeddings ?? x;
    if (e.ndim !== 2 || e.shape[0] !== T || e.shape[1] !== this.dModel) {
      throw new Error(`router "speechmoe": ctx.embeddings must be [${T}, ${this.dModel}] like x, got ${formatShape(e.shape)}`);
    }
    const parts = [x, e];
    if (this.cfg.globalEmbedding) parts.push(causalMean(e, ctx.batchShape));
    const logits = this.gate.forward(concat(parts, 1));
    const { probs, routing } = softmaxTopK(logits, this.cfg.topK, this.cfg.normalize);
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'speechmoe',
    summary: 'top-k on the hidden state concatenated with the shared token embedding (and its causal sequence mean)',
    paper: { authors: 'You et al.', title: 'SpeechMoE2: Mixture-of-Experts Model with Improved Routing', year: 2022 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k', context: ['embeddings', 'batchShape'] },
    create: (cfg, rng) => new SpeechMoERouter(cfg, rng),
  }),
);
