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
  for (let i = 0; i < m; i++) {
    const s = idx[i] * w;
    const o = i * w;
    for (let j = 0; j < w; j++) out[o + j] = xd[s + j];
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
    if (y.requiresGrad) {
      const gy = new Float32Array(y.size);
      for (let i = 0; i < m; i++) {
        const c = wd[weightIdx ? weightIdx[i] : i];
        const o = rowIdx[i] * w;
        const s = i * w;
        for (let j = 0; j < w; j++) gy[s + j] = c * g[o + j];
      }
      accumulateGrad(y, gy, true);
    }
    if (weights.requiresGrad) {
      const gw = new Float32Array(weights.size);
      for (let i = 0; i < m; i++) {
        const o = rowIdx[i] * w;
        const s = i * w;
        let acc = 0;
        for (let j = 0; j < w; j++) acc += g[o + j] * yd[s + j];
        gw[weightIdx ? weightIdx[i] : i] += acc;
      }
      accumulateGrad(weights, gw, true);
    }
  });
}

/** silu(a) * b elementwise (the SwiGLU gate, Shazeer 2020 "GLU Variants Improve Transformer"). */
export function swiglu(a: Tensor, b: Tensor): Tensor {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`swiglu: gate ${formatShape(a.shape)} and value ${formatShape(b.shape)} must have the same shape`);
  }
  const n = a.size;
  const ad = a.data;
  const bd = b.data;
  const out = new Float32Array(n);
  // sigmoid(a) is kept for the backward pass so exp runs once per element per step
  const sig = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = ad[i];
    let s: number;
    if (v >= 0) s = 1 / (1 + Math.exp(-v));
    else {
      const e = Math.exp(v);
      s = e / (1 + e);
    }
    sig[i] = s;
    out[i] = v * s * bd[i];
  }
  return result(out, a.shape, [a, b], (g) => {
    const ga = a.requiresGrad ? new Float32Array(n) : null;
    const gb = b.requiresGrad ? new Float32Array(n) : null;
    if (ga && gb) {
      for (let i = 0; i < n; i++) {
        const v = ad[i];
        const s = sig[i];
        const gi = g[i];
        gb[i] = gi * v * s;
        ga[i] = gi * bd[i] * s * (1 + v * (1 - s));
      }
    } else if (ga) {
      for (let i = 0; i < n; i++) {
        const v = ad[i];
        const s = sig[i];
        ga[i] = g[i] * bd[i] * s * (1 + v * (1 - s));
      }
    } else if (gb) {
      for (let i = 0; i < n; i++) gb[i] = g[i] * ad[i] * sig[i];
    }
    if (ga) accumulateGrad(a, ga, true);
    if (gb) accumulateGrad(b, gb, true);
  });
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** GELU (tanh approximation), the same function as `gelu` in elementwise.ts, as one tight loop. */
export function geluFused(x: Tensor): Tensor {
  const n = x.size;
  const xd = x.data;
  const out = new Float32Array(n);
  // tanh is kept for the backward pass
  const th = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = xd[i];
    const t = Math.tanh(GELU_C * (v + GELU_A * v * v * v));
    th[i] = t;
    out[i] = 0.5 * v * (1 + t);
  }
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = xd[i];
      const t = th[i];
      gx[i] = g[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * v * v));
    }
    accumulateGrad(x, gx, true);
  });
}
