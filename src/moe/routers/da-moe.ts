/**
 * DA-MoE: the number of experts a token gets follows its importance, measured by the attention it
 * receives in the preceding attention layer: important tokens compute more experts, unimportant
 * ones fewer, with the same mean (topK) over a sequence.
 * Paper: Aghdam et al., "DA-MoE: Towards Dynamic Expert Allocation for Mixture-of-Experts Models", 2024.
 *
 * Importance: ctx.tokenImportance (the model supplies it for routers whose traits list it: the mean
 * causal attention weight each token receives, over heads and later queries). Absent (a bare
 * layer): every token is equally important and gets topK experts.
 * k_t = clamp(round(topK * imp_t / mean_seq(imp)), minK, maxK), the mean over the token's sequence
 * (ctx.batchShape; without it the whole call). Then token choice top-k_t on softmax probabilities,
 * renormalised over the chosen experts. Dispatch priority: a token's j-th pick ranks below every
 * token's (j-1)-th pick.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';
import { normalizePerToken } from './variable-k.js';

const options = {
  minK: posInt().default(1).describe('fewest experts a token gets'),
  maxK: posInt('an integer in [minK, numExperts]').optional().describe('most experts a token gets (default numExperts)'),
};

export type DAMoERouterConfig = ParsedRouterConfig<typeof options>;

/** Experts per token from importance (see the file comment). */
export function allocateExperts(imp: Float32Array | undefined, T: number, topK: number, minK: number, maxK: number, batchShape?: { batch: number; seqLen: number }): Int32Array {
  const k = new Int32Array(T).fill(Math.min(maxK, Math.max(minK, topK)));
  if (!imp) return k;
  if (imp.length !== T) throw new Error(`router "da-moe": ctx.tokenImportance has ${imp.length} values for ${T} tokens`);
  const L = batchShape && batchShape.batch * batchShape.seqLen === T ? batchShape.seqLen : T;
  for (let s = 0; s < T; s += L) {
    let m = 0;
    for (let t = s; t < s + L; t++) m += imp[t];
    m /= L;
    for (let t = s; t < s + L; t++) {
      if (!(Number.isFinite(imp[t]) && imp[t] >= 0)) throw new Error(`router "da-moe": ctx.tokenImportance[${t}] must be a finite non-negative number, got ${imp[t]}`);
      const r = m > 0 ? imp[t] / m : 1;
      k[t] = Math.min(maxK, Math.max(minK, Math.round(topK * r)));
    }
  }
  return k;
}

export class DAMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly minK: number;
  readonly maxK: number;
  gate: Linear;

  constructor(cfg: DAMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.minK = cfg.minK;
    this.maxK = cfg.maxK ?? cfg.numExperts;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('da-moe', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const ks = allocateExperts(ctx.tokenImportance, T, this.topK, this.minK, this.maxK, ctx.batchShape);
    const p = probs.data;
    const tok: number[] = [];
    const exp: number[] = [];
    const rank: number[] = [];
    for (let t = 0; t < T; t++) {
      const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => p[t * E + b] - p[t * E + a] || a - b);
      for (let j = 0; j < ks[t]; j++) {
        tok.push(t);
        exp.push(order[j]);
        rank.push(j);
      }
    }
    const tokenIdx = Int32Array.from(tok);
    const expertIdx = Int32Array.from(exp);
    const weights = normalizePerToken(gatherPairs(probs, tokenIdx, expertIdx), tokenIdx, T);
    const priority = Float32Array.from(rank, (r, i) => weights.data[i] - r);
    let maxPer = 0;
    for (const v of ks) maxPer = Math.max(maxPer, v);
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights, priority },
      losses: {},
      metrics: { expertsPerToken: T > 0 ? tokenIdx.length / T : 0, maxExpertsPerToken: maxPer },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'da-moe',
    summary: 'experts per token proportional to the attention the token receives',
    paper: { authors: 'Aghdam et al.', title: 'DA-MoE: Towards Dynamic Expert Allocation for Mixture-of-Experts Models', year: 2024 },
    options,
    refine: (c, issue) => {
      const maxK = c.maxK ?? c.numExperts;
      if (c.minK > c.numExperts) issue('minK', `must be an integer in [1, numExperts=${c.numExperts}]`);
      if (maxK < c.minK || maxK > c.numExperts) issue('maxK', `must be an integer in [minK=${c.minK}, numExperts=${c.numExperts}]`);
    },
    traits: {
      routing: 'sparse',
      expertsPerToken: 'variable',
      context: ['tokenImportance', 'batchShape'],
      batchDependent: "a token's expert count is its attention importance relative to the mean of its whole sequence, later tokens included",
      inferenceDiffers: 'in KV-cached decoding a new token has received attention only from itself, so its importance (and expert count) differs from training',
    },
    create: (cfg, rng) => new DAMoERouter(cfg, rng),
  }),
);
