/**
 * MaskMoE: a routing mask per vocabulary item. Infrequent tokens see exactly one expert (so the
 * few examples of a rare token all train the same expert); frequent tokens see several and are
 * routed top-k among them.
 * Paper: Su et al., "MaskMoE: Boosting Token-Level Learning via Routing Mask in Mixture-of-Experts", 2024.
 *
 * - Frequencies: training forwards count token ids (bucket = id mod `buckets`) until step
 *   `countSteps`; the first training forward at or after it fixes the mask: the top
 *   `frequentFraction` of the seen buckets by count are frequent, every other id infrequent.
 *   (The paper counts the corpus beforehand; counting the first steps' batches needs no hook.)
 * - Visible experts of an id: a seeded hash picks `frequentExperts` distinct experts for a
 *   frequent id, one for an infrequent id; fixed for the rest of training and inference.
 * - Routing: p = softmax of x W_r^T over the visible experts only; the token goes to its
 *   min(topK, visible) best visible experts with weights p (renormalised when `normalize`).
 *   Before the mask is fixed every expert is visible (plain top-k).
 * - Counts, mask and seed are StateBuffers (saved with checkpoints). Metric: maskFixed.
 */
import { Tensor } from '../../tensor/tensor.js';
import { fmix32, type Rng } from '../../tensor/random.js';
import { softmax, add } from '../../tensor/index.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { bool, num, posInt, nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs, normalizeRowsVariable } from './common.js';

const options = {
  countSteps: nonNegInt().default(10).describe('training steps whose token ids are counted before the mask is fixed'),
  frequentFraction: num('a number in [0, 1]', (v) => v >= 0 && v <= 1)
    .default(0.2)
    .describe('share of the seen token ids (most frequent first) that count as frequent'),
  frequentExperts: posInt().optional().describe('visible experts of a frequent token (default max(topK, ceil(numExperts / 2)); in [topK, numExperts])'),
  buckets: posInt().default(8192).describe('token-id buckets (id mod buckets) for the counts and the mask; at least the vocabulary size keeps ids apart'),
  normalize: bool().default(true).describe('renormalise the chosen probabilities to sum to 1'),
};

export type MaskMoERouterConfig = ParsedRouterConfig<typeof options>;

export class MaskMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly frequentExperts: number;
  readonly cfg: MaskMoERouterConfig;
  gate: Linear;
  /** Token-id counts per bucket [buckets]. */
  counts: StateBuffer;
  /** Per bucket: 1 frequent, 0 infrequent (meaningful once fixed) [buckets]. */
  frequent: StateBuffer;
  /** [fixed (0/1), hash seed]. */
  maskState: StateBuffer;

  constructor(cfg: MaskMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.cfg = cfg;
    this.frequentExperts = cfg.frequentExperts ?? Math.max(cfg.topK, Math.ceil(cfg.numExperts / 2));
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.counts = new StateBuffer(new Float32Array(cfg.buckets), [cfg.buckets]);
    this.frequent = new StateBuffer(new Float32Array(cfg.buckets), [cfg.buckets]);
    this.maskState = new StateBuffer(Float32Array.of(0, Math.floor(rng.next() * (1 << 24))), [2]);
  }

  get fixed(): boolean {
    return this.maskState.data[0] === 1;
  }

  /** Fix the mask from the counts so far (the top frequentFraction of the seen buckets are frequent). */
  fixMask(): void {
    const c = this.counts.data;
    const seen: number[] = [];
    for (let b = 0; b < c.length; b++) if (c[b] > 0) seen.push(b);
    seen.sort((a, b) => c[b] - c[a] || a - b);
    const n = Math.round(this.cfg.frequentFraction * seen.length);
    this.frequent.data.fill(0);
    for (let i = 0; i < n; i++) this.frequent.data[seen[i]] = 1;
    this.maskState.data[0] = 1;
  }

  /** The visible experts of a token-id bucket once the mask is fixed (distinct, seeded hash). */
  visible(bucket: number): number[] {
    const E = this.numExperts;
    const n = this.frequent.data[bucket] === 1 ? this.frequentExperts : 1;
    const out: number[] = [];
    let h = fmix32((bucket ^ Math.imul(this.maskState.data[1] | 0, 0x9e3779b1)) >>> 0);
    for (let tries = 0; out.length < n; tries++) {
      const e = tries < 64 ? h % E : (out[out.length - 1] + 1) % E;
      if (!out.includes(e)) out.push(e);
      h = fmix32((h + 0x6d2b79f5) >>> 0);
    }
    return out;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('maskmoe', x, this.dModel);
    const E = this.numExperts;
    if (!ctx.tokenIds || ctx.tokenIds.length !== T) {
      throw new Error(`router "maskmoe": needs ctx.tokenIds with one id per row (${T}), got ${ctx.tokenIds ? ctx.tokenIds.length : 'none'}`);
    }
    const rows = new Int32Array(T);
    for (let t = 0; t < T; t++) {
      const id = ctx.tokenIds[t];
      if (!(Number.isInteger(id) && id >= 0)) throw new Error(`router "maskmoe": ctx.tokenIds[${t}] must be a non-negative integer, got ${id}`);
      rows[t] = id % this.cfg.buckets;
    }
    if (ctx.training && !this.fixed) {
      if (ctx.step >= this.cfg.countSteps) this.fixMask();
      else for (let t = 0; t < T; t++) this.counts.data[rows[t]]++;
    }
    const logits = this.gate.forward(x);
    const mask = new Float32Array(T * E);
    const vis: number[][] = [];
    for (let t = 0; t < T; t++) {
      const v = this.fixed ? this.visible(rows[t]) : Array.from({ length: E }, (_, e) => e);
      vis.push(v);
      if (this.fixed) for (let e = 0; e < E; e++) if (!v.includes(e)) mask[t * E + e] = -1e30;
    }
    const probs = this.fixed ? softmax(add(logits, new Tensor(mask, [T, E])), -1) : softmax(logits, -1);
    const ti: number[] = [];
    const ei: number[] = [];
    const p = probs.data;
    for (let t = 0; t < T; t++) {
      // descending by probability, ties to the lower expert index
      const order = vis[t].slice().sort((a, b) => p[t * E + b] - p[t * E + a] || a - b);
      for (const e of order.slice(0, Math.min(this.topK, order.length))) {
        ti.push(t);
        ei.push(e);
      }
    }
    const tokenIdx = Int32Array.from(ti);
    const expertIdx = Int32Array.from(ei);
    let weights = gatherPairs(probs, tokenIdx, expertIdx);
    if (this.cfg.normalize) weights = normalizeRowsVariable(weights, tokenIdx, T);
    return { logits, probs, routing: { kind: 'sparse', tokenIdx, expertIdx, weights }, losses: {}, metrics: { maskFixed: this.fixed ? 1 : 0 } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'maskmoe',
    summary: 'per-token-id routing mask: rare tokens see one expert, frequent tokens several',
    paper: { authors: 'Su et al.', title: 'MaskMoE: Boosting Token-Level Learning via Routing Mask in Mixture-of-Experts', year: 2024 },
    options,
    refine: (c, issue) => {
      if (c.frequentExperts !== undefined && (c.frequentExperts < c.topK || c.frequentExperts > c.numExperts)) {
        issue('frequentExperts', `must be an integer in [topK=${c.topK}, numExperts=${c.numExperts}]`);
      }
    },
    // infrequent tokens use one expert once the mask is fixed
    traits: { routing: 'sparse', expertsPerToken: 'variable', needsTokenIds: true },
    create: (cfg, rng) => new MaskMoERouter(cfg, rng),
  }),
);
