/**
 * Fused routing ops for the softmax top-k router and the losses and metrics that read it. The
 * eager composition (softmax, topkIndices, takeAlongLast, normalise; mean/mul/sum for the Switch
 * loss; logSumExp/square/mean for the z-loss) builds about a dozen autograd nodes with [T, E]
 * temporaries per layer and step; these are one pass forward and one pass backward each. The
 * composition stays the reference (test/moe/router-fused.test.ts checks values and gradients).
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';

/** What the fused softmax top-k computes in one pass over logits [T, E]. */
export interface FusedSoftmaxTopK {
  /** softmax(logits) [T, E], differentiable (one-pass softmax backward). */
  probs: Tensor;
  /** Combine weights [T * k], token-major, differentiable straight to the logits. */
  weights: Tensor;
  /** Chosen experts [T * k], descending by probability, ties to the lower index. */
  indices: Int32Array;
  /** Token row of each assignment [T * k]. */
  tokenIdx: Int32Array;
  /** Assignments per expert [E]. */
  counts: Int32Array;
}

/** Per-row log-sum-exp of a logits tensor and the probs computed from it, kept for the z-loss and metrics. */
export interface SoftmaxStats {
  logits: Tensor;
  probs: Tensor;
  /** logsumexp of each row [T]. */
  lse: Float32Array;
}

// keyed by both the logits and the probs tensor; weak, so the stats go with the step's graph
const stats = new WeakMap<Tensor, SoftmaxStats>();

/** The stats softmaxTopKFused recorded for this logits or probs tensor (undefined for any other tensor). */
export function softmaxStats(t: Tensor): SoftmaxStats | undefined {
  return stats.get(t);
}

// The backward loops are module-level functions rather than code inside the backward closures:
// each op call makes a fresh closure, and V8 (Node 20) kept re-optimising those instances while
// their loops ran unoptimised code; a named top-level function is optimised once (see moe_ops.ts).

/** Softmax backward per row of [T, E]: gz = p * (g - sum(g * p)). */
function softmaxRowsBackward(p: Float32Array, g: Float32Array, gz: Float32Array, T: number, E: number): void {
  for (let t = 0; t < T; t++) {
    const b = t * E;
    let dot = 0;
    for (let e = 0; e < E; e++) dot += g[b + e] * p[b + e];
    for (let e = 0; e < E; e++) gz[b + e] = p[b + e] * (g[b + e] - dot);
  }
}

/** The top-k combine weights' gradient into the logits' (gz zeroed, [T, E]). */
function topKWeightsBackward(p: Float32Array, w: Float32Array, indices: Int32Array, g: Float32Array, gz: Float32Array, T: number, E: number, k: number, normalize: boolean): void {
  for (let t = 0; t < T; t++) {
    const b = t * E;
    const o = t * k;
    let dot = 0;
    for (let j = 0; j < k; j++) dot += g[o + j] * w[o + j];
    if (normalize) {
      // w = softmax over the chosen logits: dz_j = w_j (g_j - sum g w), 0 elsewhere
      for (let j = 0; j < k; j++) gz[b + indices[o + j]] += w[o + j] * (g[o + j] - dot);
    } else {
      // w_j = p_{i_j}: dz = [e chosen] g_j p_e - p_e sum_j g_j w_j
      for (let e = 0; e < E; e++) gz[b + e] = -p[b + e] * dot;
      for (let j = 0; j < k; j++) gz[b + indices[o + j]] += g[o + j] * w[o + j];
    }
  }
}

/** gx[t, e] = c * f[e] for every row t of [T, E]. */
function fillRows(gx: Float32Array, f: Float32Array, c: number, T: number, E: number): void {
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) gx[t * E + e] = c * f[e];
}

/** The z-loss gradient 2 g lse_t / T * softmax(x[t]) per row, from the recorded probs p or from x (d) and lse. */
function lseSquaredBackward(gx: Float32Array, lse: Float32Array, p: Float32Array | null, d: Float32Array, g0: number, T: number, E: number): void {
  for (let t = 0; t < T; t++) {
    const c = (2 * g0 * lse[t]) / T;
    const b = t * E;
    if (p !== null) for (let e = 0; e < E; e++) gx[b + e] = c * p[b + e];
    else for (let e = 0; e < E; e++) gx[b + e] = c * Math.exp(d[b + e] - lse[t]);
  }
}

/**
 * Softmax over the last axis of logits [T, E], top-k selection on the probabilities (ties to the
 * lower index, NaN never wins, as topkIndices), the k weights (the probabilities, or renormalised
 * to sum to 1 per token when `normalize`) and the per-expert counts, in one pass.
 */
export function softmaxTopKFused(logits: Tensor, k: number, normalize: boolean): FusedSoftmaxTopK {
  if (logits.ndim !== 2) throw new Error(`softmaxTopKFused: logits must be [T, E], got ${formatShape(logits.shape)}`);
  const [T, E] = logits.shape;
  if (!Number.isInteger(k) || k < 0 || k > E) throw new Error(`softmaxTopKFused: k=${k} out of range [0, ${E}]`);
  const z = logits.data;
  const p = new Float32Array(T * E);
  const lse = new Float32Array(T);
  const A = T * k;
  const indices = new Int32Array(A);
  const tokenIdx = new Int32Array(A);
  const w = new Float32Array(A);
  const counts = new Int32Array(E);
  const bestV = new Float64Array(k);
  const bestI = new Int32Array(k);
  for (let t = 0; t < T; t++) {
    const b = t * E;
    let m = -Infinity;
    for (let e = 0; e < E; e++) if (z[b + e] > m) m = z[b + e];
    let filled = 0;
    if (m === -Infinity || m !== m) {
      // all -inf (or NaN): zeros like softmaxRaw; selection then falls to the lowest indices
      lse[t] = m === -Infinity ? -Infinity : NaN;
    } else {
      let s = 0;
      for (let e = 0; e < E; e++) {
        const v = Math.exp(z[b + e] - m);
        p[b + e] = v;
        s += v;
      }
      const inv = 1 / s;
      for (let e = 0; e < E; e++) p[b + e] *= inv;
      lse[t] = m + Math.log(s);
    }
    // insertion top-k over the float32 probabilities (the eager path selects on them too)
    for (let e = 0; e < E; e++) {
      let v: number = p[b + e];
      if (v !== v) v = -Infinity;
      if (filled === k && !(v > bestV[k - 1])) continue;
      let q = filled < k ? filled++ : k - 1;
      while (q > 0 && v > bestV[q - 1]) {
        bestV[q] = bestV[q - 1];
        bestI[q] = bestI[q - 1];
        q--;
      }
      bestV[q] = v;
      bestI[q] = e;
    }
    const o = t * k;
    let sw = 0;
    for (let j = 0; j < k; j++) {
      const e = bestI[j];
      indices[o + j] = e;
      tokenIdx[o + j] = t;
      counts[e]++;
      w[o + j] = p[b + e];
      sw += w[o + j];
    }
    if (normalize) {
      const inv = 1 / sw;
      for (let j = 0; j < k; j++) w[o + j] *= inv;
    }
  }
  const probs = result(p, [T, E], [logits], (g) => {
    const gz = new Float32Array(T * E);
    softmaxRowsBackward(p, g, gz, T, E);
    accumulateGrad(logits, gz, true);
  });
  const weights = result(w, [A], [logits], (g) => {
    const gz = new Float32Array(T * E);
    topKWeightsBackward(p, w, indices, g, gz, T, E, k, normalize);
    accumulateGrad(logits, gz, true);
  });
  const st: SoftmaxStats = { logits, probs, lse };
  stats.set(logits, st);
  stats.set(probs, st);
  return { probs, weights, indices, tokenIdx, counts };
}

/**
 * scale * sum_e f[e] * mean_t x[t, e] for x [T, E] and constant f [E] (the Switch loss's
 * E * sum f_e P_e) as one node; the gradient is scale * f[e] / T in every row.
 */
export function columnMeanDot(x: Tensor, f: Float32Array, scale = 1): Tensor {
  if (x.ndim !== 2) throw new Error(`columnMeanDot: x must be [T, E], got ${formatShape(x.shape)}`);
  const [T, E] = x.shape;
  if (f.length !== E) throw new Error(`columnMeanDot: ${f.length} column weights for x ${formatShape(x.shape)}`);
  const d = x.data;
  const col = new Float64Array(E);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) col[e] += d[t * E + e];
  let s = 0;
  if (T > 0) for (let e = 0; e < E; e++) s += (f[e] * col[e]) / T;
  return result(new Float32Array([s * scale]), [], [x], (g) => {
    const gx = new Float32Array(T * E);
    const c = T > 0 ? (g[0] * scale) / T : 0;
    fillRows(gx, f, c, T, E);
    accumulateGrad(x, gx, true);
  });
}

/**
 * mean_t logsumexp(x[t])^2 for x [T, E] (the router z-loss) as one node, reusing the row
 * log-sum-exp softmaxTopKFused recorded for x when there is one; the gradient is
 * 2 lse_t / T * softmax(x[t]).
 */
export function meanSquaredLogSumExp(x: Tensor): Tensor {
  if (x.ndim !== 2) throw new Error(`meanSquaredLogSumExp: x must be [T, E], got ${formatShape(x.shape)}`);
  const [T, E] = x.shape;
  const d = x.data;
  const cached = stats.get(x);
  const st = cached && cached.logits === x ? cached : undefined;
  let lse: Float32Array;
  if (st) lse = st.lse;
  else {
    lse = new Float32Array(T);
    for (let t = 0; t < T; t++) {
      let m = -Infinity;
      for (let e = 0; e < E; e++) if (d[t * E + e] > m) m = d[t * E + e];
      let s = 0;
      for (let e = 0; e < E; e++) s += Math.exp(d[t * E + e] - m);
      lse[t] = m + Math.log(s);
    }
  }
  let acc = 0;
  for (let t = 0; t < T; t++) acc += lse[t] * lse[t];
  return result(new Float32Array([T > 0 ? acc / T : 0]), [], [x], (g) => {
    const gx = new Float32Array(T * E);
    lseSquaredBackward(gx, lse, st ? st.probs.data : null, d, g[0], T, E);
    accumulateGrad(x, gx, true);
  });
}
