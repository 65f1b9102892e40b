/**
 * DSelect-k: continuously differentiable sparse selection. Each of k single-expert selectors
 * addresses an expert by its binary code through m = ceil(log2 E) smooth-step gates; a softmax
 * mixes the k selectors. The smooth step is exactly 0 or 1 outside [-gamma/2, gamma/2], so the
 * gate becomes exactly sparse during training while staying differentiable.
 * Paper: Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning", 2021.
 *
 * - Per-example gate: z = x W_z^T [T, k*m], alpha = x W_a^T [T, k].
 * - S(t) = 0 for t <= -gamma/2, 1 for t >= gamma/2, else -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2.
 * - Selector i puts r_i(c) = prod_j (bit_j(c) ? S(z_ij) : 1 - S(z_ij)) on code c (sums to 1 over
 *   the 2^m codes); code c addresses expert c mod E (for E not a power of two several codes share
 *   an expert, which keeps every r_i a distribution).
 * - Gate w = sum_i softmax(alpha)_i r_i [T, E] (sums to 1). Every expert with w > 0 computes
 *   (at most k once the smooth steps saturate; up to E early in training), with weight w.
 * - Loss `dselect-entropy` (coefficient `entropyCoef`): the mean entropy of the selectors, the
 *   paper's regulariser that speeds up convergence to binary codes.
 * - Record: probs = w, logits = log(w + 1e-9).
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, mul, sum, mean, matmul, reshape, concat, log, addScalar, takeAlongLast, scale, affine } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { positive, nonNegative } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  gamma: positive().default(1).describe('width of the smooth step’s non-constant band [-gamma/2, gamma/2]'),
  entropyCoef: nonNegative().default(1e-3).describe('coefficient of the selector-entropy regulariser (dselect-entropy)'),
};

export type DSelectKRouterConfig = ParsedRouterConfig<typeof options>;

/** The cubic smooth step S(t) with band gamma, elementwise; C1 everywhere. */
export function smoothStep(x: Tensor, gamma: number): Tensor {
  const xd = x.data;
  const out = new Float32Array(xd.length);
  const h = gamma / 2;
  const a = -2 / (gamma * gamma * gamma);
  const b = 3 / (2 * gamma);
  for (let i = 0; i < xd.length; i++) {
    const t = xd[i];
    out[i] = t <= -h ? 0 : t >= h ? 1 : a * t * t * t + b * t + 0.5;
  }
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) {
      const t = xd[i];
      gx[i] = t <= -h || t >= h ? 0 : g[i] * (3 * a * t * t + b);
    }
    accumulateGrad(x, gx, true);
  });
}

export class DSelectKRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly gamma: number;
  readonly entropyCoef: number;
  /** Bits per code m = ceil(log2 E) (at least 1). */
  readonly bits: number;
  /** W_z [k*m, d]: selector i's bit j is row i*m + j. */
  codeGate: Linear;
  /** W_a [k, d]: the selectors' mixing logits. */
  gate: Linear;

  constructor(cfg: DSelectKRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.gamma = cfg.gamma;
    this.entropyCoef = cfg.entropyCoef;
    this.bits = Math.max(1, Math.ceil(Math.log2(cfg.numExperts)));
    this.codeGate = routerGate(cfg.dModel, cfg.topK * this.bits, rng);
    this.gate = routerGate(cfg.dModel, cfg.topK, rng);
  }

  /** The dense gate w [T, E] and the selectors' code distributions r [T, k, 2^m] (both differentiable). */
  gates(x: Tensor): { w: Tensor; r: Tensor } {
    const T = x.shape[0];
    const k = this.topK;
    const m = this.bits;
    const C = 1 << m;
    const E = this.numExperts;
    const s = smoothStep(this.codeGate.forward(x), this.gamma); // [T, k*m]
    const both = concat([s, affine(s, -1, 1)], 1); // [T, 2km]: S then 1 - S
    // r_i(c) = prod_j both[bit_j(c) ? i*m+j : km + i*m+j]
    let r: Tensor | null = null;
    for (let j = 0; j < m; j++) {
      const idx = new Int32Array(T * k * C);
      for (let t = 0; t < T; t++) for (let i = 0; i < k; i++) for (let c = 0; c < C; c++) idx[(t * k + i) * C + c] = ((c >> j) & 1 ? 0 : k * m) + i * m + j;
      const f = takeAlongLast(both, idx, k * C); // [T, k*C]
      r = r ? mul(r, f) : f;
    }
    const codes = reshape(r!, [T * k, C]);
    let perExpert = codes;
    if (C !== E) {
      const fold = new Float32Array(C * E);
      for (let c = 0; c < C; c++) fold[c * E + (c % E)] = 1;
      perExpert = matmul(codes, new Tensor(fold, [C, E]));
    }
    const mix = reshape(softmax(this.gate.forward(x), -1), [T, k, 1]);
    const w = sum(mul(reshape(perExpert, [T, k, E]), mix), 1);
    return { w, r: reshape(codes, [T, k, C]) };
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('dselect-k', x, this.dModel);
    const E = this.numExperts;
    const { w, r } = this.gates(x);
    const ti: number[] = [];
    const ei: number[] = [];
    for (let t = 0; t < T; t++)
      for (let e = 0; e < E; e++)
        if (w.data[t * E + e] > 0) {
          ti.push(t);
          ei.push(e);
        }
    const weights = gatherPairs(w, Int32Array.from(ti), Int32Array.from(ei));
    const losses: Record<string, Tensor> = {};
    if (this.entropyCoef > 0) {
      // mean over tokens and selectors of -sum_c r log r (the 1e-9 keeps saturated codes finite)
      const ent = sum(mul(r, log(addScalar(r, 1e-9))), -1);
      losses['dselect-entropy'] = scale(mean(ent), -this.entropyCoef);
    }
    return {
      logits: log(addScalar(w, 1e-9)),
      probs: w,
      routing: { kind: 'sparse', tokenIdx: Int32Array.from(ti), expertIdx: Int32Array.from(ei), weights },
      losses,
      metrics: { activeExperts: ti.length / Math.max(1, T) },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'dselect-k',
    summary: 'differentiable k-sparse gate: binary-code selectors through smooth steps',
    paper: { authors: 'Hazimeh et al.', title: 'DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to Multi-Task Learning', year: 2021 },
    options,
    // up to E experts per token until the smooth steps saturate, then at most k
    traits: { routing: 'sparse', expertsPerToken: 'variable', usageCaveat: 'dense (up to every expert per token) early in training, at most k once the gates saturate' },
    create: (cfg, rng) => new DSelectKRouter(cfg, rng),
  }),
);
