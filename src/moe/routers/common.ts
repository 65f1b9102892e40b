/**
 * Shared router building blocks, for every router file (token choice, expert choice, dynamic
 * routers). Everything here is either a small differentiable op built on the tensor layer or a
 * plain-array helper; nothing is router-specific.
 *
 * Conventions the helpers fix (other routers should follow them so losses/metrics agree):
 * - The router projection is a bias-free Linear named `gate` ([E, d], PyTorch layout, so
 *   `...router.gate.weight` maps 1:1 onto Hugging Face Mixtral/DeepSeek `gate.weight`).
 * - Token-choice assignments are listed token-major: assignment t*k + j is token t's j-th
 *   choice (descending score).
 * - Non-trainable router state (the aux-free bias, ReMoE's adaptive L1 coefficient) is an
 *   nn `StateBuffer` field (src/nn/module.ts), never a Parameter: optimizers update every
 *   Parameter, while Module.stateDict()/loadStateDict() save and restore buffers under the same
 *   dotted names (e.g. `layers.0.moe.router.bias`). Update buffer values in place (`buf.data[i] = ...`)
 *   so a loaded checkpoint keeps working. (An earlier `BufferOwner`/`buffers()` convention in this
 *   file is gone: use StateBuffer.)
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { formatShape } from '../../tensor/shape.js';
import { softmax, sum, div, scale, reshape, takeAlongLast, topkIndices, maskMul, scatterAdd, gatherRows, softmaxTopKFused } from '../../tensor/index.js';
import { Linear } from '../../nn/layers.js';
import type { SparseRouting, RouterOutput } from '../types.js';

// ---------------------------------------------------------------- input checks

/** x must be [T, dModel]; the error names the router. */
export function checkRouterInput(router: string, x: Tensor, dModel: number): number {
  if (x.ndim !== 2 || x.shape[1] !== dModel) {
    throw new Error(`router "${router}": input must be [tokens, ${dModel}], got ${formatShape(x.shape)}`);
  }
  return x.shape[0];
}

// ---------------------------------------------------------------- projection

/**
 * Default router init std: sqrt(0.1 / dModel), the reduced scale the Switch Transformer paper
 * (Fedus et al. 2021) found necessary for stable routing; near-uniform routing at step 0.
 */
export function routerInitStd(dModel: number): number {
  return Math.sqrt(0.1 / dModel);
}

/** The router projection W_r [E, d] without bias: logits = x W_r^T. */
export function routerGate(dModel: number, numExperts: number, rng: Rng, std = routerInitStd(dModel)): Linear {
  return new Linear(dModel, numExperts, rng, { bias: false, std });
}

// ---------------------------------------------------------------- small differentiable ops

/** softplus(x) = log(1 + e^x), overflow-safe; the derivative is sigmoid(x). */
export function softplus(x: Tensor): Tensor {
  const xd = x.data;
  const out = new Float32Array(xd.length);
  for (let i = 0; i < xd.length; i++) {
    const v = xd[i];
    out[i] = v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
  }
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) {
      const v = xd[i];
      const s = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
      gx[i] = g[i] * s;
    }
    accumulateGrad(x, gx, true);
  });
}

/** Rows of x [R, n] divided by their sums (differentiable), times an optional constant. */
export function normalizeRows(x: Tensor, factor = 1): Tensor {
  const y = div(x, sum(x, -1, true));
  return factor === 1 ? y : scale(y, factor);
}

/** Assignment weights [A] divided by the sum of their token's weights (tokens with a variable number of assignments). */
export function normalizeRowsVariable(weights: Tensor, tokenIdx: Int32Array, tokens: number): Tensor {
  const A = tokenIdx.length;
  if (weights.size !== A) throw new Error(`normalizeRowsVariable: ${weights.size} weights for ${A} assignments`);
  if (A === 0) return weights;
  const w = reshape(weights, [A, 1]);
  const sums = gatherRows(scatterAdd(w, tokenIdx, tokens), tokenIdx);
  return reshape(div(w, sums), [A]);
}

/**
 * Differentiable gather of the [T, E] entries (tokenIdx[i], expertIdx[i]) -> [A]. Used for
 * assignment weights whose pairs do not form a fixed k per row (expert choice, dynamic routers).
 */
export function gatherPairs(scores: Tensor, tokenIdx: Int32Array, expertIdx: Int32Array): Tensor {
  if (scores.ndim !== 2) throw new Error(`gatherPairs: scores must be [T, E], got ${formatShape(scores.shape)}`);
  if (tokenIdx.length !== expertIdx.length) throw new Error(`gatherPairs: ${tokenIdx.length} token indices but ${expertIdx.length} expert indices`);
  const [T, E] = scores.shape;
  const flat = new Int32Array(tokenIdx.length);
  for (let i = 0; i < flat.length; i++) {
    const t = tokenIdx[i];
    const e = expertIdx[i];
    if (t < 0 || t >= T || e < 0 || e >= E) throw new Error(`gatherPairs: pair ${i} (token ${t}, expert ${e}) outside [${T}, ${E}]`);
    flat[i] = t * E + e;
  }
  return reshape(takeAlongLast(reshape(scores, [1, T * E]), flat, flat.length), [flat.length]);
}

// ---------------------------------------------------------------- selection

export interface TopKSelection {
  routing: SparseRouting;
  /** The chosen experts [T, k], descending by selection score. */
  indices: Int32Array;
}

/**
 * Token-choice top-k. Experts are selected by `select` (a [T, E] plain array: the scores
 * themselves, or scores + a non-gradient bias as in aux-free balancing); the weights are the
 * differentiable `gates` [T, E] values of the chosen experts, optionally renormalised to sum to 1
 * per token (Mixtral) and multiplied by `factor`. Ties go to the lower expert index.
 */
export function selectTopK(gates: Tensor, k: number, opts: { select?: Float32Array; normalize?: boolean; factor?: number } = {}): TopKSelection {
  if (gates.ndim !== 2) throw new Error(`selectTopK: gates must be [T, E], got ${formatShape(gates.shape)}`);
  const [T, E] = gates.shape;
  const select = opts.select ?? gates.data;
  if (select.length !== T * E) throw new Error(`selectTopK: selection scores have ${select.length} elements, gates ${formatShape(gates.shape)}`);
  const indices = topkIndices(select, T, E, k);
  let w = takeAlongLast(gates, indices, k);
  if (opts.normalize) w = normalizeRows(w);
  if (opts.factor !== undefined && opts.factor !== 1) w = scale(w, opts.factor);
  const tokenIdx = new Int32Array(T * k);
  for (let t = 0; t < T; t++) tokenIdx.fill(t, t * k, t * k + k);
  return { routing: { kind: 'sparse', tokenIdx, expertIdx: indices, weights: reshape(w, [T * k]) }, indices };
}

/**
 * Softmax top-k token choice from logits [T, E]: probs = softmax(logits) (computed once, here),
 * weights = probs of the k best experts, renormalised when `normalize`. One fused op
 * (softmaxTopKFused: one pass forward, one per output backward; it also records the row
 * log-sum-exp the z-loss and the entropy metric reuse); softmaxTopKReference is the eager composition.
 */
export function softmaxTopK(logits: Tensor, k: number, normalize: boolean): { probs: Tensor; routing: SparseRouting; indices: Int32Array } {
  if (logits.ndim !== 2) throw new Error(`softmaxTopK: logits must be [T, E], got ${formatShape(logits.shape)}`);
  const f = softmaxTopKFused(logits, k, normalize);
  return { probs: f.probs, routing: { kind: 'sparse', tokenIdx: f.tokenIdx, expertIdx: f.indices, weights: f.weights }, indices: f.indices };
}

/** The eager composition softmaxTopK fuses (softmax, top-k, gather, renormalise): the reference of its tests. */
export function softmaxTopKReference(logits: Tensor, k: number, normalize: boolean): { probs: Tensor; routing: SparseRouting; indices: Int32Array } {
  const probs = softmax(logits, -1);
  const sel = selectTopK(probs, k, { normalize });
  return { probs, routing: sel.routing, indices: sel.indices };
}

/** Expert counts of a sparse routing (all listed assignments, before capacity). */
export function expertCounts(routing: SparseRouting, numExperts: number): Float64Array {
  const c = new Float64Array(numExperts);
  for (let i = 0; i < routing.expertIdx.length; i++) c[routing.expertIdx[i]]++;
  return c;
}

// ---------------------------------------------------------------- noise

/** N(0, 1) noise of the given size from the context Rng (the caller scales it). */
export function gaussianNoise(n: number, rng: Rng): Float32Array {
  return rng.fillNormal(new Float32Array(n), 1);
}

/**
 * Multiplicative input jitter x * U(1 - eps, 1 + eps) (Switch Transformer's router jitter);
 * the gradient reaches x scaled by the same factors. Identity when eps == 0.
 */
export function jitter(x: Tensor, eps: number, rng: Rng): Tensor {
  if (eps === 0) return x;
  return maskMul(x, rng.fillUniform(new Float32Array(x.size), 1 - eps, 1 + eps));
}

// ---------------------------------------------------------------- noisy-gating statistics

/**
 * What noisy top-k gating (Shazeer et al. 2017) records so the 'load' loss can use the paper's
 * smooth load estimator. A router that adds Gaussian noise to its logits attaches this to its
 * RouterOutput as the optional field `noisyGating` (see RouterOutputWithNoise).
 */
export interface NoisyGatingStats {
  /** Logits before noise [T, E] (differentiable). */
  clean: Tensor;
  /** Logits after noise [T, E] (differentiable; equals RouterOutput.logits). */
  noisy: Tensor;
  /** Noise standard deviation per entry [T, E] (differentiable, > 0). */
  noiseStd: Tensor;
  /** Experts per token used for the selection. */
  k: number;
}

export type RouterOutputWithNoise = RouterOutput & { noisyGating?: NoisyGatingStats };
