/**
 * Fused ops for the MoE fast path (dispatch gather, weighted combine, expert activations).
 * The generic ops compose the same math, but at MoE sizes (tens of millions of elements per
 * step) their per-element closures, per-row subarray views and extra intermediates cost as much
 * as a third of the expert matmuls; these are single tight loops with one allocation each.
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';

function checkIndexRange(op: string, idx: Int32Array, limit: number): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i];
    if (!(v >= 0 && v < limit)) throw new Error(`${op}: index ${v} at position ${i} out of range [0, ${limit})`);
  }
}

function rowWidth(x: Tensor, op: string): number {
  if (x.ndim !== 2) throw new Error(`${op}: expected a 2-D [rows, width] tensor, got ${formatShape(x.shape)}`);
  return x.shape[1];
}

/** out[i] = x[idx[i]] for x [N, w] -> [idx.length, w]; the gradient scatter-adds back. */
export function gatherRows(x: Tensor, idx: Int32Array): Tensor {
  const w = rowWidth(x, 'gatherRows');
  const n = x.shape[0];
  checkIndexRange('gatherRows', idx, n);
  const m = idx.length;
  const xd = x.data;
  const out = new Float32Array(m * w);
  // a row is a contiguous run: TypedArray.set is a memcpy, several times faster than a js loop
  for (let i = 0; i < m; i++) {
    const s = idx[i] * w;
    out.set(xd.subarray(s, s + w), i * w);
  }
  return result(out, [m, w], [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let i = 0; i < m; i++) {
      const s = idx[i] * w;
      const o = i * w;
      for (let j = 0; j < w; j++) gx[s + j] += g[o + j];
    }
    accumulateGrad(x, gx, true);
  });
}

/**
 * Unweighted combine: out[rowIdx[i]] += y[i] into `rows` rows. The gradient is a row gather,
 * done with memcpy (used when the routing weights were already applied inside the experts).
 */
export function scatterRows(y: Tensor, rowIdx: Int32Array, rows: number): Tensor {
  const w = rowWidth(y, 'scatterRows');
  const m = y.shape[0];
  if (rowIdx.length !== m) throw new Error(`scatterRows: ${rowIdx.length} row indices for ${m} rows of y ${formatShape(y.shape)}`);
  if (!Number.isInteger(rows) || rows < 0) throw new Error(`scatterRows: rows must be a non-negative integer, got ${rows}`);
  checkIndexRange('scatterRows', rowIdx, rows);
  const yd = y.data;
  const out = new Float32Array(rows * w);
  for (let i = 0; i < m; i++) {
    const o = rowIdx[i] * w;
    const s = i * w;
    for (let j = 0; j < w; j++) out[o + j] += yd[s + j];
  }
  return result(out, [rows, w], [y], (g) => {
    const gy = new Float32Array(y.size);
    for (let i = 0; i < m; i++) {
      const o = rowIdx[i] * w;
      gy.set(g.subarray(o, o + w), i * w);
    }
    accumulateGrad(y, gy, true);
  });
}

/**
 * Weighted combine: out[rowIdx[i]] += weights[weightIdx[i]] * y[i] into `rows` rows, for
 * y [M, w] and a flat weights tensor (e.g. routing weights in assignment order while y is in
 * expert order). Differentiable in y and in weights; `weightIdx` defaults to the identity.
 */
export function combineRows(y: Tensor, rowIdx: Int32Array, rows: number, weights: Tensor, weightIdx?: Int32Array): Tensor {
  const w = rowWidth(y, 'combineRows');
  const m = y.shape[0];
  if (rowIdx.length !== m) throw new Error(`combineRows: ${rowIdx.length} row indices for ${m} rows of y ${formatShape(y.shape)}`);
  if (!Number.isInteger(rows) || rows < 0) throw new Error(`combineRows: rows must be a non-negative integer, got ${rows}`);
  checkIndexRange('combineRows', rowIdx, rows);
  if (weightIdx) {
    if (weightIdx.length !== m) throw new Error(`combineRows: ${weightIdx.length} weight indices for ${m} rows of y`);
    checkIndexRange('combineRows (weightIdx)', weightIdx, weights.size);
  } else if (weights.size !== m) {
    throw new Error(`combineRows: weights ${formatShape(weights.shape)} must have one value per row of y (${m})`);
  }
  const yd = y.data;
  const wd = weights.data;
  const out = new Float32Array(rows * w);
  for (let i = 0; i < m; i++) {
    const c = wd[weightIdx ? weightIdx[i] : i];
    const o = rowIdx[i] * w;
    const s = i * w;
    for (let j = 0; j < w; j++) out[o + j] += c * yd[s + j];
  }
  return result(out, [rows, w], [y, weights], (g) => {
    const gy = y.requiresGrad ? new Float32Array(y.size) : null;
    const gw = weights.requiresGrad ? new Float32Array(weights.size) : null;
    // one pass over the rows of g for both gradients
    for (let i = 0; i < m; i++) {
      const wi = weightIdx ? weightIdx[i] : i;
      const c = wd[wi];
      const o = rowIdx[i] * w;
      const s = i * w;
      if (gy && gw) {
        let acc = 0;
        for (let j = 0; j < w; j++) {
          const gj = g[o + j];
          acc += gj * yd[s + j];
          gy[s + j] = c * gj;
        }
        gw[wi] += acc;
      } else if (gy) {
        for (let j = 0; j < w; j++) gy[s + j] = c * g[o + j];
      } else if (gw) {
        let acc = 0;
        for (let j = 0; j < w; j++) acc += g[o + j] * yd[s + j];
        gw[wi] += acc;
      }
    }
    if (gy) accumulateGrad(y, gy, true);
    if (gw) accumulateGrad(weights, gw, true);
  });
}

// exp(-u) for u >= 0 as 2^n * 2^f with a degree-7 polynomial for 2^f, f in [-1/2, 1/2]
// (relative error < 1e-8, far below float32 rounding); inlined by the JIT, unlike Math.exp.
const LOG2E = Math.LOG2E;
const P1 = Math.LN2;
const P2 = P1 ** 2 / 2;
const P3 = P1 ** 3 / 6;
const P4 = P1 ** 4 / 24;
const P5 = P1 ** 5 / 120;
const P6 = P1 ** 6 / 720;
const P7 = P1 ** 7 / 5040;
const POW2_BIAS = 160;
const POW2 = new Float64Array(POW2_BIAS + 1);
for (let i = 0; i <= POW2_BIAS; i++) POW2[i] = Math.pow(2, i - POW2_BIAS);

/** exp(-u) for u >= 0 (and NaN for NaN). */
export function expNeg(u: number): number {
  if (!(u < 100)) return u !== u ? NaN : 0;
  const x = -u * LOG2E;
  const n = Math.round(x);
  const f = x - n;
  const p = 1 + f * (P1 + f * (P2 + f * (P3 + f * (P4 + f * (P5 + f * (P6 + f * P7))))));
  return p * POW2[n + POW2_BIAS];
}

/** silu(a) * b elementwise (the SwiGLU gate, Shazeer 2020 "GLU Variants Improve Transformer"). */
export function swiglu(a: Tensor, b: Tensor): Tensor {
  return swigluImpl(a, b, null, null);
}

/**
 * Row-scaled SwiGLU: out[i, :] = weights[weightIdx[i]] * silu(a[i, :]) * b[i, :] for a, b [M, f].
 * Applying the MoE combine weights here (before the linear output projection, so the result is
 * the same) makes their gradient a by-product of this op's backward loop and leaves the combine
 * an unweighted scatter whose backward is a memcpy gather.
 */
export function scaledSwiglu(a: Tensor, b: Tensor, weights: Tensor, weightIdx: Int32Array): Tensor {
  const rows = a.ndim === 2 ? a.shape[0] : -1;
  if (rows < 0) throw new Error(`scaledSwiglu: expected 2-D [rows, f] inputs, got ${formatShape(a.shape)}`);
  if (weightIdx.length !== rows) throw new Error(`scaledSwiglu: ${weightIdx.length} weight indices for ${rows} rows`);
  checkIndexRange('scaledSwiglu (weightIdx)', weightIdx, weights.size);
  return swigluImpl(a, b, weights, weightIdx);
}

function swigluImpl(a: Tensor, b: Tensor, weights: Tensor | null, weightIdx: Int32Array | null): Tensor {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`swiglu: gate ${formatShape(a.shape)} and value ${formatShape(b.shape)} must have the same shape`);
  }
  const n = a.size;
  const ad = a.data;
  const bd = b.data;
  const out = new Float32Array(n);
  // sigmoid(a) is kept for the backward pass so exp runs once per element per step
  const sig = new Float32Array(n);
  const f = weightIdx ? (weightIdx.length === 0 ? 0 : n / weightIdx.length) : n;
  const rows = weightIdx ? weightIdx.length : 1;
  const wd = weights ? weights.data : null;
  for (let r = 0; r < rows; r++) {
    const c = wd && weightIdx ? wd[weightIdx[r]] : 1;
    const base = r * f;
    for (let i = base; i < base + f; i++) {
      const v = ad[i];
      let s: number;
      if (v >= 0) s = 1 / (1 + expNeg(v));
      else {
        const e = expNeg(-v);
        s = e / (1 + e);
      }
      sig[i] = s;
      out[i] = c * v * s * bd[i];
    }
  }
  const parents = weights ? [a, b, weights] : [a, b];
  return result(out, a.shape, parents, (g) => {
    const ga = a.requiresGrad ? new Float32Array(n) : null;
    const gb = b.requiresGrad ? new Float32Array(n) : null;
    const gw = weights && weights.requiresGrad ? new Float32Array(weights.size) : null;
    for (let r = 0; r < rows; r++) {
      const c = wd && weightIdx ? wd[weightIdx[r]] : 1;
      const base = r * f;
      let acc = 0;
      for (let i = base; i < base + f; i++) {
        const v = ad[i];
        const s = sig[i];
        const gi = g[i];
        const bi = bd[i];
        const vs = v * s;
        acc += gi * vs * bi;
        if (gb) gb[i] = c * gi * vs;
        if (ga) ga[i] = c * gi * bi * s * (1 + v * (1 - s));
      }
      if (gw && weightIdx) gw[weightIdx[r]] += acc;
    }
    if (ga) accumulateGrad(a, ga, true);
    if (gb) accumulateGrad(b, gb, true);
    if (gw && weights) accumulateGrad(weights, gw, true);
  });
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** GELU (tanh approximation), the same function as `gelu` in elementwise.ts, as one tight loop. */
export function geluFused(x: Tensor): Tensor {
  return geluImpl(x, null, null);
}

/** Row-scaled GELU: out[i, :] = weights[weightIdx[i]] * gelu(x[i, :]) (see scaledSwiglu). */
export function scaledGelu(x: Tensor, weights: Tensor, weightIdx: Int32Array): Tensor {
  const rows = x.ndim === 2 ? x.shape[0] : -1;
  if (rows < 0) throw new Error(`scaledGelu: expected a 2-D [rows, f] input, got ${formatShape(x.shape)}`);
  if (weightIdx.length !== rows) throw new Error(`scaledGelu: ${weightIdx.length} weight indices for ${rows} rows`);
  checkIndexRange('scaledGelu (weightIdx)', weightIdx, weights.size);
  return geluImpl(x, weights, weightIdx);
}

function geluImpl(x: Tensor, weights: Tensor | null, weightIdx: Int32Array | null): Tensor {
  const n = x.size;
  const xd = x.data;
  const out = new Float32Array(n);
  // tanh is kept for the backward pass
  const th = new Float32Array(n);
  const f = weightIdx ? (weightIdx.length === 0 ? 0 : n / weightIdx.length) : n;
  const rows = weightIdx ? weightIdx.length : 1;
  const wd = weights ? weights.data : null;
  for (let r = 0; r < rows; r++) {
    const c = wd && weightIdx ? wd[weightIdx[r]] : 1;
    const base = r * f;
    for (let i = base; i < base + f; i++) {
      const v = xd[i];
      // tanh(z) = sign(z) (1 - e) / (1 + e) with e = exp(-2|z|)
      const z = GELU_C * (v + GELU_A * v * v * v);
      const e = expNeg(2 * (z >= 0 ? z : -z));
      const t = z >= 0 ? (1 - e) / (1 + e) : (e - 1) / (1 + e);
      th[i] = t;
      out[i] = c * 0.5 * v * (1 + t);
    }
  }
  const parents = weights ? [x, weights] : [x];
  return result(out, x.shape, parents, (g) => {
    const gx = x.requiresGrad ? new Float32Array(n) : null;
    const gw = weights && weights.requiresGrad ? new Float32Array(weights.size) : null;
    for (let r = 0; r < rows; r++) {
      const c = wd && weightIdx ? wd[weightIdx[r]] : 1;
      const base = r * f;
      let acc = 0;
      for (let i = base; i < base + f; i++) {
        const v = xd[i];
        const t = th[i];
        acc += g[i] * 0.5 * v * (1 + t);
        if (gx) gx[i] = c * g[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * v * v));
      }
      if (gw && weightIdx) gw[weightIdx[r]] += acc;
    }
    if (gx) accumulateGrad(x, gx, true);
    if (gw && weights) accumulateGrad(weights, gw, true);
  });
}
