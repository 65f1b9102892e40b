/**
 * Mixture of Tokens: continuous (dense-gradient, drop-free) MoE that mixes tokens across examples.
 * Tokens are split into groups of `groupSize`, taken from different sequences at the same position;
 * each expert processes one mixture per group (a softmax over the group's tokens of that expert's
 * logit), and each token receives every expert's output weighted by its own mixing weight.
 * Paper: Antoniak et al., "Mixture of Tokens: Continuous MoE through Cross-Example Aggregation", 2023.
 *
 * Causal caveat: grouping only across sequences at the same position never lets a token see a
 * future token of its own sequence, but its output depends on the other sequences of the batch;
 * in generation with one sequence each group holds one token, every mixing weight is 1 and all E
 * experts compute on every token (dense). The paper's remedy, transition tuning, is the
 * `transitionSteps` option: for the last transitionSteps training steps, and always in eval when
 * transitionSteps > 0, the layer switches to sparse token choice: each token its own group, sent
 * to its top-k experts with softmax weights over its expert logits (batch-independent, causal).
 * Cost caveat: routing is expressed as soft routing, so in that mode the soft dispatch still
 * evaluates the zero-weighted slots (the semantics of top-k, not its FLOPs).
 *
 * Groups: with ctx.batchShape {batch, seqLen} (rows sequence-major) the group of row b*seqLen + p is
 * (p, floor(b / groupSize)); without it every row is its own sequence, so groups are runs of
 * groupSize consecutive rows. Slots: one per (expert, group), slot e*G + g. The [T, E] logits are
 * the gate logits; probs their softmax over experts (what losses and metrics read).
 */
import type { Rng } from '../../tensor/random.js';
import { softmax, scale, takeAlongLast } from '../../tensor/index.js';
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt, positive, nonNegInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate } from './common.js';

const options = {
  groupSize: posInt().default(32).describe('tokens per group (from different sequences at one position) mixed by each expert'),
  temperature: positive().default(1).describe('softmax temperature of the mixing weights over a group'),
  transitionSteps: nonNegInt().default(0).describe('transition tuning: the last N training steps and eval route sparse top-k token choice (0: always mix)'),
};

export type MixtureOfTokensRouterConfig = ParsedRouterConfig<typeof options>;

/** Group index of every row and the number of groups (see the file comment). */
export function tokenGroups(T: number, groupSize: number, batchShape?: { batch: number; seqLen: number }): { group: Int32Array; groups: number } {
  const group = new Int32Array(T);
  if (batchShape && batchShape.batch * batchShape.seqLen === T) {
    const { batch, seqLen } = batchShape;
    const chunks = Math.ceil(batch / groupSize);
    for (let b = 0; b < batch; b++) for (let p = 0; p < seqLen; p++) group[b * seqLen + p] = p * chunks + Math.floor(b / groupSize);
    return { group, groups: seqLen * chunks };
  }
  for (let t = 0; t < T; t++) group[t] = Math.floor(t / groupSize);
  return { group, groups: Math.ceil(T / groupSize) };
}

/**
 * Per-group softmax over tokens of logits [T, E] (per expert column) scattered into the slot matrix
 * [T, E*G]: out[t, e*G + group[t]] = softmax over {u : group[u] = group[t]} of logits[u, e]. Differentiable.
 */
export function groupSoftmaxSlots(logits: Tensor, group: Int32Array, G: number): Tensor {
  const [T, E] = logits.shape;
  const l = logits.data;
  const w = new Float32Array(T * E);
  const mx = new Float64Array(G * E).fill(-Infinity);
  const z = new Float64Array(G * E);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) mx[group[t] * E + e] = Math.max(mx[group[t] * E + e], l[t * E + e]);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) z[group[t] * E + e] += w[t * E + e] = Math.exp(l[t * E + e] - mx[group[t] * E + e]);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) w[t * E + e] /= z[group[t] * E + e];
  const out = new Float32Array(T * E * G);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) out[t * E * G + e * G + group[t]] = w[t * E + e];
  return result(out, [T, E * G], [logits], (g) => {
    // softmax backward within each (group, expert): gl = w * (gw - sum_u w_u gw_u)
    const dot = new Float64Array(G * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) dot[group[t] * E + e] += w[t * E + e] * g[t * E * G + e * G + group[t]];
    const gl = new Float32Array(T * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) gl[t * E + e] = w[t * E + e] * (g[t * E * G + e * G + group[t]] - dot[group[t] * E + e]);
    accumulateGrad(logits, gl, true);
  });
}

/** [T, E] values placed on the diagonal slots of [T, E*T]: out[t, e*T + t] = v[t, e] (differentiable). */
function diagonalSlots(v: Tensor): Tensor {
  const [T, E] = v.shape;
  const out = new Float32Array(T * E * T);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) out[t * E * T + e * T + t] = v.data[t * E + e];
  return result(out, [T, E * T], [v], (g) => {
    const gv = new Float32Array(T * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) gv[t * E + e] = g[t * E * T + e * T + t];
    accumulateGrad(v, gv, true);
  });
}

export class MixtureOfTokensRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly cfg: MixtureOfTokensRouterConfig;
  gate: Linear;

  constructor(cfg: MixtureOfTokensRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** Whether this context routes in the sparse transition mode. */
  sparseMode(ctx: Pick<RouterContext, 'training' | 'step' | 'totalSteps'>): boolean {
    const n = this.cfg.transitionSteps;
    if (n === 0) return false;
    if (!ctx.training) return true;
    return ctx.totalSteps !== undefined && ctx.step >= ctx.totalSteps - n;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('mixture-of-tokens', x, this.dModel);
    if (T === 0) throw new Error('router "mixture-of-tokens": needs at least one token (mixing normalises over a group)');
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    if (this.sparseMode(ctx)) {
      // token choice: slot e*T + t carries token t alone; its combine weight is the renormalised top-k prob
      const k = this.cfg.topK;
      const idx = new Int32Array(T * k);
      const p = probs.data;
      for (let t = 0; t < T; t++) {
        const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => p[t * E + b] - p[t * E + a] || a - b);
        for (let j = 0; j < k; j++) idx[t * k + j] = order[j];
      }
      const top = takeAlongLast(probs, idx, k);
      const dense = scatterTopK(top, idx, T, E, k);
      const dispatch = diagonalSlots(new Tensor(new Float32Array(T * E).fill(1), [T, E]));
      return { logits, probs, routing: { kind: 'soft', slotsPerExpert: T, dispatch, combine: diagonalSlots(dense) }, losses: {}, metrics: { sparseMode: 1 } };
    }
    const { group, groups } = tokenGroups(T, this.cfg.groupSize, ctx.batchShape);
    const w = groupSoftmaxSlots(this.cfg.temperature === 1 ? logits : scale(logits, 1 / this.cfg.temperature), group, groups);
    return { logits, probs, routing: { kind: 'soft', slotsPerExpert: groups, dispatch: w, combine: w }, losses: {}, metrics: { sparseMode: 0, groups } };
  }
}

/** Top-k values [T, k] at experts idx renormalised per token and scattered into [T, E] (differentiable). */
function scatterTopK(top: Tensor, idx: Int32Array, T: number, E: number, k: number): Tensor {
  const out = new Float32Array(T * E);
  const s = new Float64Array(T);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) s[t] += top.data[t * k + j];
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) out[t * E + idx[t * k + j]] = top.data[t * k + j] / s[t];
  return result(out, [T, E], [top], (g) => {
    const gt = new Float32Array(T * k);
    for (let t = 0; t < T; t++) {
      let dot = 0;
      for (let j = 0; j < k; j++) dot += g[t * E + idx[t * k + j]] * top.data[t * k + j];
      for (let j = 0; j < k; j++) gt[t * k + j] = (g[t * E + idx[t * k + j]] - dot / s[t]) / s[t];
    }
    accumulateGrad(top, gt, true);
  });
}

routerRegistry.register(
  defineRouter({
    name: 'mixture-of-tokens',
    summary: 'each expert processes softmax mixtures of tokens grouped across sequences; optional transition to sparse top-k',
    paper: { authors: 'Antoniak et al.', title: 'Mixture of Tokens: Continuous MoE through Cross-Example Aggregation', year: 2023 },
    options,
    traits: {
      routing: 'soft',
      expertsPerToken: 'slots',
      batchDependent: 'a token is mixed with the tokens at the same position of other sequences of its group (never with its own future); with transitionSteps > 0 eval routes sparse top-k per token',
      inferenceDiffers: 'with transitionSteps > 0 the last training steps and inference route sparse top-k token choice instead of mixing',
      context: ['batchShape'],
      // per group each expert computes one mixture: G = T / groupSize slots per expert; top-k computes T k / E rows per expert
      flopMatch: ({ topK, numExperts }) => {
        const groupSize = Math.max(1, Math.round(numExperts / topK));
        return { options: { groupSize }, note: `groupSize ${groupSize} = E / k: one mixture per expert per group, FLOP-matched` };
      },
    },
    create: (cfg, rng) => new MixtureOfTokensRouter(cfg, rng),
  }),
);
