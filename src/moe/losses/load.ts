/**
 * Load loss: CV^2 of a differentiable estimate of the number of tokens per expert.
 * Paper: Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer", 2017.
 *
 * With noisy gating stats (the 'topk' router with noisyGating, in training: RouterOutput field
 * `noisyGating` = {clean, noisy, noiseStd, k}) this is the paper's smooth estimator (appendix A):
 *   P(t, e) = Phi((clean[t,e] - kthExcluding(noisy[t], k, e)) / noiseStd[t,e]),  load_e = sum_t P(t, e),
 * the probability that expert e stays in token t's top k under a fresh draw of its own noise,
 * where kthExcluding is the k-th largest noisy logit among the other experts (the (k+1)-th largest
 * overall when e is in the top k, else the k-th). Gradients reach clean logits, noise std and the
 * threshold logits, as in the paper. Needs numExperts > k (else every expert is always chosen: 0).
 *
 * Without those stats (no noise, eval, other routers) the load is the "soft load"
 * load_e = sum over listed assignments (t, e) of probs[t, e] — the routed token count with each
 * token weighted by its probability, differentiable through probs. Soft routing: 0.
 * CV^2 = population variance / (mean^2 + 1e-10).
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import { reshape, scatterAdd } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { gatherPairs, type RouterOutputWithNoise, type NoisyGatingStats } from '../routers/common.js';
import { lossRegistry, zeroLoss, cvSquared, columnSums, checkShapes } from './registry.js';

/** Standard normal CDF via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7). */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + y) : 0.5 * (1 - y);
}

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** P(t, e) of the smooth load estimator [T, E], differentiable w.r.t. clean, noisy and noiseStd. */
export function smoothLoadProbs(s: NoisyGatingStats): Tensor {
  const { clean, noisy, noiseStd, k } = s;
  const [T, E] = clean.shape;
  if (noisy.shape[0] !== T || noisy.shape[1] !== E || noiseStd.shape[0] !== T || noiseStd.shape[1] !== E) {
    throw new Error(`loss "load": noisy-gating stats shapes differ: clean [${clean.shape.join(', ')}], noisy [${noisy.shape.join(', ')}], noiseStd [${noiseStd.shape.join(', ')}]`);
  }
  if (!(k >= 1 && k < E)) throw new Error(`loss "load": smooth load estimator needs 1 <= k < numExperts, got k=${k}, numExperts=${E}`);
  const cd = clean.data;
  const nd = noisy.data;
  const sd = noiseStd.data;
  const P = new Float32Array(T * E);
  const dz = new Float32Array(T * E); // phi(z) / std
  const z = new Float32Array(T * E);
  const thrPos = new Int32Array(T * E); // flat index of the threshold logit in noisy
  const order = new Int32Array(E);
  for (let t = 0; t < T; t++) {
    const o = t * E;
    // indices of the k+1 largest noisy logits of this row, descending (ties to the lower index)
    for (let e = 0; e < E; e++) order[e] = e;
    const row = Array.from(order).sort((a, b) => nd[o + b] - nd[o + a] || a - b);
    const inIdx = row[k]; // (k+1)-th largest
    const outIdx = row[k - 1]; // k-th largest
    const thrIn = nd[o + inIdx];
    const thrOut = nd[o + outIdx];
    for (let e = 0; e < E; e++) {
      const isIn = nd[o + e] > thrIn;
      const thr = isIn ? thrIn : thrOut;
      const std = sd[o + e];
      const zz = (cd[o + e] - thr) / std;
      P[o + e] = normalCdf(zz);
      z[o + e] = zz;
      dz[o + e] = (INV_SQRT_2PI * Math.exp(-0.5 * zz * zz)) / std;
      thrPos[o + e] = o + (isIn ? inIdx : outIdx);
    }
  }
  return result(P, [T, E], [clean, noisy, noiseStd], (g) => {
    const gc = new Float32Array(T * E);
    const gn = new Float32Array(T * E);
    const gs = new Float32Array(T * E);
    for (let i = 0; i < T * E; i++) {
      const d = g[i] * dz[i];
      gc[i] = d;
      gn[thrPos[i]] -= d;
      gs[i] = -d * z[i];
    }
    accumulateGrad(clean, gc, true);
    accumulateGrad(noisy, gn, true);
    accumulateGrad(noiseStd, gs, true);
  });
}

export const loadLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('load', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  const stats = (out as RouterOutputWithNoise).noisyGating;
  if (stats) {
    if (stats.k >= numExperts) return zeroLoss();
    return cvSquared(columnSums(smoothLoadProbs(stats)));
  }
  const r = out.routing;
  const A = r.expertIdx.length;
  if (A === 0) return zeroLoss();
  const w = gatherPairs(out.probs, r.tokenIdx, r.expertIdx);
  const load = reshape(scatterAdd(reshape(w, [A, 1]), r.expertIdx, numExperts), [numExperts]);
  return cvSquared(load);
};

lossRegistry.register({
  name: 'load',
  summary: 'CV^2 of the smooth (noisy gating) or probability-weighted expert load',
  paper: { authors: 'Shazeer et al.', title: 'Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer', year: 2017 },
  fn: loadLoss,
});
