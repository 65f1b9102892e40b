/**
 * Helpers for routers whose tokens take a variable number of experts (adaptive gating, DA-MoE,
 * DynMoE): per-token renormalisation of token-major assignment weights. Registers nothing.
 */
import { type Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import { reshape } from '../../tensor/index.js';
import { gatherPairs, normalizeRows } from './common.js';

/**
 * Weights [A] of token-major assignments (each token's assignments contiguous) divided by their
 * per-token sums, differentiably: built as a [T, maxPerToken] zero-padded matrix row-normalised.
 */
export function normalizePerToken(weights: Tensor, tokenIdx: Int32Array, T: number): Tensor {
  if (weights.size === 0) return weights;
  // scatter into [T, m] rows (pad with 0), normalise rows, gather back
  const count = new Int32Array(T);
  for (let a = 0; a < tokenIdx.length; a++) count[tokenIdx[a]]++;
  let m = 1;
  for (let t = 0; t < T; t++) if (count[t] > m) m = count[t];
  const slot = new Int32Array(tokenIdx.length);
  const seen = new Int32Array(T);
  for (let a = 0; a < tokenIdx.length; a++) slot[a] = tokenIdx[a] * m + seen[tokenIdx[a]]++;
  const padded = scatterPad(weights, slot, T * m);
  // rows with no assignment sum to 0: add 1 there so the division stays finite (their entries are 0)
  const fix = new Float32Array(T * m);
  for (let t = 0; t < T; t++) if (count[t] === 0) fix[t * m] = 1;
  const rows = normalizeRows(addConst(reshape(padded, [T, m]), fix));
  return gatherPairs(
    rows,
    tokenIdx,
    Int32Array.from(slot, (s) => s % m),
  );
}

/** [A] -> [n] with out[slot[a]] = w[a], zeros elsewhere (differentiable). */
function scatterPad(w: Tensor, slot: Int32Array, n: number): Tensor {
  const out = new Float32Array(n);
  for (let a = 0; a < slot.length; a++) out[slot[a]] = w.data[a];
  return result(out, [n], [w], (g) => {
    const gw = new Float32Array(slot.length);
    for (let a = 0; a < slot.length; a++) gw[a] = g[slot[a]];
    accumulateGrad(w, gw, true);
  });
}

/** x + c for a constant array c (no gradient to c). */
function addConst(x: Tensor, c: Float32Array): Tensor {
  const out = new Float32Array(x.size);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] + c[i];
  return result(out, x.shape, [x], (g) => accumulateGrad(x, g, false));
}
