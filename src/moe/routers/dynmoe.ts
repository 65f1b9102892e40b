/**
 * DynMoE top-any gating: every expert has a trainable threshold; a token goes to every expert
 * whose gate score clears that expert's threshold (any number, 0..E), and experts are removed
 * (no tokens for a while) and added back (tokens that found no expert) during training.
 * Paper: Guo et al., "Dynamic Mixture of Experts: An Auto-Tuning Approach for Efficient Transformer Models", 2024.
 *
 * Scores: s[t, e] = sigmoid(cos(x_t, w_e)) against thresholds sigmoid(G_e) (G a Parameter).
 * Expert e is active for t when s > sigmoid(G_e) and e is in the active pool. Weights are the
 * margins m = s - sigmoid(G_e) of the active experts renormalised per token (our choice instead of
 * the paper's straight-through estimator: continuous in x, W and G, so the thresholds get true
 * gradients, and a weight reaches 0 exactly when its expert drops out). A token that clears no
 * threshold takes its best-margin active expert with weight 1 (the paper's fallback) and is
 * recorded as unrouted.
 *
 * Adding/removing experts, within the layer's fixed pool of numExperts slots (the expert bank has
 * a fixed size, so "adding" re-activates a free slot): afterStep(load) removes an active expert
 * with no tokens for `removeAfter` consecutive steps (never the last one); when tokens went
 * unrouted in a step and a slot is free, one slot is re-activated with its gate embedding set to
 * the mean of those tokens (as DynMoE initialises a new expert's gate) and its threshold reset to
 * 0. The pool mask is a StateBuffer, so it is checkpointed. Metrics: activeExperts, unroutedFraction.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { linear, sigmoid, sub, reshape } from '../../tensor/index.js';
import { Module, StateBuffer, param, type Parameter } from '../../nn/module.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, gatherPairs, normalizeRows } from './common.js';
import { l2NormalizeRows } from './cosine.js';
import { normalizePerToken } from './variable-k.js';

const options = {
  removeAfter: nonNegInt().default(50).describe('training steps without tokens after which an expert leaves the pool (0: never remove)'),
  addExperts: nonNegInt().default(1).describe('1: re-activate a free slot when tokens found no expert in a step; 0: never add'),
};

export type DynMoERouterConfig = ParsedRouterConfig<typeof options>;

export class DynMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: DynMoERouterConfig;
  /** Gate embeddings [E, d] (cosine scores). */
  gate: Parameter;
  /** Threshold logits G [E]. */
  threshold: Parameter;
  /** 1 = expert in the active pool. */
  active: StateBuffer;
  /** Consecutive training steps each expert had no tokens. */
  idle: StateBuffer;
  /** Sum and count of this step's unrouted training tokens (for adding an expert). */
  private unroutedSum: Float64Array;
  private unroutedCount = 0;

  constructor(cfg: DynMoERouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = param([E, cfg.dModel], { normal: 1 / Math.sqrt(cfg.dModel) }, rng);
    this.threshold = param([E], 'zeros');
    this.active = new StateBuffer(new Float32Array(E).fill(1), [E]);
    this.idle = new StateBuffer(new Float32Array(E), [E]);
    this.unroutedSum = new Float64Array(cfg.dModel);
  }

  /** Experts currently in the pool. */
  activeCount(): number {
    let n = 0;
    for (const v of this.active.data) n += v;
    return n;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('dynmoe', x, this.dModel);
    const E = this.numExperts;
    const d = this.dModel;
    const logits = linear(l2NormalizeRows(x), l2NormalizeRows(this.gate));
    const probs = sigmoid(logits);
    const margins = sub(probs, reshape(sigmoid(this.threshold), [1, E]));
    const m = margins.data;
    const act = this.active.data;
    const tok: number[] = [];
    const exp: number[] = [];
    let unrouted = 0;
    for (let t = 0; t < T; t++) {
      let best = -1;
      let any = false;
      for (let e = 0; e < E; e++) {
        if (!act[e]) continue;
        if (m[t * E + e] > 0) {
          tok.push(t);
          exp.push(e);
          any = true;
        }
        if (best < 0 || m[t * E + e] > m[t * E + best]) best = e;
      }
      if (!any && best >= 0) {
        tok.push(t);
        exp.push(best);
        unrouted++;
        if (ctx.training) {
          for (let i = 0; i < d; i++) this.unroutedSum[i] += x.data[t * d + i];
          this.unroutedCount++;
        }
      }
    }
    const tokenIdx = Int32Array.from(tok);
    const expertIdx = Int32Array.from(exp);
    // margins of the chosen experts; a fallback token's single weight normalises to 1
    const weights = normalizePerToken(gatherPairs(margins, tokenIdx, expertIdx), tokenIdx, T);
    return {
      logits,
      // the [T, E] distribution the balancing losses read: sigmoid affinities normalised per token
      probs: normalizeRows(probs),
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights },
      losses: {},
      metrics: { activeExperts: this.activeCount(), unroutedFraction: T > 0 ? unrouted / T : 0, expertsPerToken: T > 0 ? tokenIdx.length / T : 0 },
    };
  }

  afterStep(load: Float64Array): void {
    const E = this.numExperts;
    const act = this.active.data;
    const idle = this.idle.data;
    for (let e = 0; e < E; e++) idle[e] = act[e] && load[e] === 0 ? idle[e] + 1 : 0;
    if (this.cfg.removeAfter > 0) {
      for (let e = 0; e < E; e++) {
        if (act[e] && idle[e] >= this.cfg.removeAfter && this.activeCount() > 1) {
          act[e] = 0;
          idle[e] = 0;
        }
      }
    }
    if (this.cfg.addExperts > 0 && this.unroutedCount > 0) {
      const free = Array.from(act).findIndex((v) => v === 0);
      if (free >= 0) {
        act[free] = 1;
        const d = this.dModel;
        for (let i = 0; i < d; i++) this.gate.data[free * d + i] = this.unroutedSum[i] / this.unroutedCount;
        this.threshold.data[free] = 0;
      }
    }
    this.unroutedSum.fill(0);
    this.unroutedCount = 0;
  }
}

routerRegistry.register(
  defineRouter({
    name: 'dynmoe',
    summary: 'top-any gating with trainable per-expert thresholds; experts leave and rejoin the pool in training',
    paper: { authors: 'Guo et al.', title: 'Dynamic Mixture of Experts: An Auto-Tuning Approach for Efficient Transformer Models', year: 2024 },
    options,
    checkTopK: false,
    refine: (c, issue) => {
      if (c.addExperts > 1) issue('addExperts', 'must be 0 or 1');
    },
    traits: { routing: 'sparse', expertsPerToken: 'variable', inferenceDiffers: 'the expert pool changes during training (removal/addition); inference uses the pool as trained' },
    create: (cfg, rng) => new DynMoERouter(cfg, rng),
  }),
);
