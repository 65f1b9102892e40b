/**
 * Fused ops for the MoE fast path (dispatch gather, weighted combine, expert activations).
 * The generic ops compose the same math, but at MoE sizes (tens of millions of elements per
 * step) their per-element closures, per-row subarray views and extra intermediates cost as much
 * as a third of the expert matmuls; these are single tight loops with one allocation each.
 */
import { Tensor, result, accumulateGrad, isGradEnabled } from '../tensor.js';
import { formatShape } from '../shape.js';
import { getBackend, type Backend } from '../backend.js';
import { acquireBuffer, releaseBuffer } from '../pool.js';

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
  // Math.round(x) (= floor(x + 0.5)) via an int32 truncation of a positive value: x > -145 here,
  // and the truncation stays in integer registers where Math.round costs a float round trip.
  const n = ((x + (POW2_BIAS + 0.5)) | 0) - POW2_BIAS;
  const f = x - n;
  const p = 1 + f * (P1 + f * (P2 + f * (P3 + f * (P4 + f * (P5 + f * (P6 + f * P7))))));
  return p * POW2[n + POW2_BIAS];
}

/** Stable sigmoid: exp of a non-positive argument only (one select rather than two code paths). */
function sigmoid(v: number): number {
  const e = expNeg(Math.abs(v));
  return (v >= 0 ? 1 : e) / (1 + e);
}

// The elementwise loops live in module-level functions, not in the ops' backward closures: every
// op call makes a fresh closure, and V8 (Node 20, --trace-opt) kept re-compiling those instances
// (OSR) while the loop ran unoptimised code, ~40-70 ns per element where the optimised loop takes
// ~1-3 ns. A named top-level function is optimised once and stays so across calls.

/**
 * SwiGLU forward over `rows` rows of width f: gate a[ao + r*stride + i], value b[bo + r*stride + i]
 * (stride f for separate arrays, 2f for w1|w3 side by side), sig and out dense [rows, f]; row r
 * scaled by wd[weightIdx[r]] for r < scaled (1 after, or when wd is null).
 */
function swigluRows(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  stride: number,
  sig: Float32Array,
  out: Float32Array,
  rows: number,
  f: number,
  wd: Float32Array | null,
  weightIdx: Int32Array | null,
  scaled: number,
): void {
  for (let r = 0; r < rows; r++) {
    const c = wd !== null && weightIdx !== null && r < scaled ? wd[weightIdx[r]] : 1;
    const o = r * f;
    const pa = ao + r * stride;
    const pb = bo + r * stride;
    for (let i = 0; i < f; i++) {
      const v = a[pa + i];
      const s = sigmoid(v);
      sig[o + i] = s;
      out[o + i] = c * v * s * b[pb + i];
    }
  }
}

/** swiglu's backward over [rows, f]: gate and value gradients (either may be null) and the row weights' (gw). */
function swigluRowsBackward(
  ad: Float32Array,
  bd: Float32Array,
  sig: Float32Array,
  g: Float32Array,
  ga: Float32Array | null,
  gb: Float32Array | null,
  rows: number,
  f: number,
  wd: Float32Array | null,
  weightIdx: Int32Array | null,
  gw: Float32Array | null,
): void {
  for (let r = 0; r < rows; r++) {
    const c = wd !== null && weightIdx !== null ? wd[weightIdx[r]] : 1;
    const base = r * f;
    let acc = 0;
    for (let i = base; i < base + f; i++) {
      const v = ad[i];
      const s = sig[i];
      const gi = g[i];
      const bi = bd[i];
      const vs = v * s;
      acc += gi * vs * bi;
      if (gb !== null) gb[i] = c * gi * vs;
      if (ga !== null) ga[i] = c * gi * bi * s * (1 + v * (1 - s));
    }
    if (gw !== null && weightIdx !== null) gw[weightIdx[r]] += acc;
  }
}

/**
 * expertSwigluFFN's SwiGLU backward in place over h13 [rows, 2f] (gate half, value half): the gate
 * half becomes the gate gradient, the value half the value gradient; rows r < scaled are weighted
 * by wd[weightIdx[r]] and add their weight's gradient into gw (when given), later rows weigh 1.
 */
function swiglu13Backward(h13: Float32Array, sig: Float32Array, gact: Float32Array, rows: number, f: number, wd: Float32Array, weightIdx: Int32Array, scaled: number, gw: Float32Array | null): void {
  const f2 = 2 * f;
  for (let r = 0; r < rows; r++) {
    const routed = r < scaled;
    const c = routed ? wd[weightIdx[r]] : 1;
    const base = r * f;
    const b1 = r * f2 - base;
    const b3 = b1 + f;
    let acc = 0;
    for (let i = base; i < base + f; i++) {
      const v = h13[b1 + i];
      const s = sig[i];
      const gi = gact[i];
      const bi = h13[b3 + i];
      const vs = v * s;
      acc += gi * vs * bi;
      h13[b3 + i] = c * gi * vs;
      h13[b1 + i] = c * gi * bi * s * (1 + v * (1 - s));
    }
    if (gw !== null && routed) gw[weightIdx[r]] += acc;
  }
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
  swigluRows(ad, 0, bd, 0, f, sig, out, rows, f, wd, weightIdx, rows);
  const parents = weights ? [a, b, weights] : [a, b];
  return result(out, a.shape, parents, (g) => {
    const ga = a.requiresGrad ? new Float32Array(n) : null;
    const gb = b.requiresGrad ? new Float32Array(n) : null;
    const gw = weights && weights.requiresGrad ? new Float32Array(weights.size) : null;
    swigluRowsBackward(ad, bd, sig, g, ga, gb, rows, f, wd, weightIdx, gw);
    if (ga) accumulateGrad(a, ga, true);
    if (gb) accumulateGrad(b, gb, true);
    if (gw && weights) accumulateGrad(weights, gw, true);
  });
}

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

/** GELU forward over [rows, f] (row r scaled by wd[weightIdx[r]] when given); tanh kept in th. Top-level: see swigluRows. */
function geluRows(xd: Float32Array, th: Float32Array, out: Float32Array, rows: number, f: number, wd: Float32Array | null, weightIdx: Int32Array | null): void {
  for (let r = 0; r < rows; r++) {
    const c = wd !== null && weightIdx !== null ? wd[weightIdx[r]] : 1;
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
}

/** geluRows' backward: the input gradient (when gx is given) and the row weights' (gw). */
function geluRowsBackward(
  xd: Float32Array,
  th: Float32Array,
  g: Float32Array,
  gx: Float32Array | null,
  rows: number,
  f: number,
  wd: Float32Array | null,
  weightIdx: Int32Array | null,
  gw: Float32Array | null,
): void {
  for (let r = 0; r < rows; r++) {
    const c = wd !== null && weightIdx !== null ? wd[weightIdx[r]] : 1;
    const base = r * f;
    let acc = 0;
    for (let i = base; i < base + f; i++) {
      const v = xd[i];
      const t = th[i];
      acc += g[i] * 0.5 * v * (1 + t);
      if (gx !== null) gx[i] = c * g[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * v * v));
    }
    if (gw !== null && weightIdx !== null) gw[weightIdx[r]] += acc;
  }
}

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
  geluRows(xd, th, out, rows, f, wd, weightIdx);
  const parents = weights ? [x, weights] : [x];
  return result(out, x.shape, parents, (g) => {
    const gx = x.requiresGrad ? new Float32Array(n) : null;
    const gw = weights && weights.requiresGrad ? new Float32Array(weights.size) : null;
    geluRowsBackward(xd, th, g, gx, rows, f, wd, weightIdx, gw);
    if (gx) accumulateGrad(x, gx, true);
    if (gw && weights) accumulateGrad(weights, gw, true);
  });
}

/** groupedMatmul into `out` (accumulating or not), also for backends that ignore the option. */
function groupedInto(be: Backend, a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB: boolean, out: Float32Array, accumulate: boolean): void {
  const r = be.groupedMatmul(a, w, sizes, k, n, transB, { out, accumulate });
  if (r === out) return;
  if (accumulate) for (let i = 0; i < out.length; i++) out[i] += r[i];
  else out.set(r);
}

/**
 * dst[rows[i]] += src[i] for rows of width w, into a zeroed dst. Walks dst row by row (the
 * sources of each row in increasing i, so the sums are the same as in source order): each dst
 * row stays in L1 while its sources add in, the first one is a memcpy, and rows nobody
 * writes are skipped, where a walk in source order would revisit random rows of dst.
 */
function scatterAddRows(dst: Float32Array, src: Float32Array, rows: Int32Array, w: number): void {
  const n = w === 0 ? 0 : dst.length / w;
  const start = new Int32Array(n + 1);
  for (let i = 0; i < rows.length; i++) start[rows[i] + 1]++;
  for (let t = 0; t < n; t++) start[t + 1] += start[t];
  const cursor = start.slice(0, n);
  const list = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) list[cursor[rows[i]]++] = i;
  for (let t = 0; t < n; t++) {
    const p0 = start[t];
    const p1 = start[t + 1];
    if (p0 === p1) continue;
    const o = t * w;
    const s0 = list[p0] * w;
    dst.set(src.subarray(s0, s0 + w), o);
    for (let p = p0 + 1; p < p1; p++) {
      const s = list[p] * w;
      for (let j = 0; j < w; j++) dst[o + j] += src[s + j];
    }
  }
}

/** dst[i] = src[rows[i]] for rows of width w (memcpy per row). */
function gatherInto(dst: Float32Array, src: Float32Array, rows: Int32Array, w: number): void {
  for (let i = 0; i < rows.length; i++) {
    const s = rows[i] * w;
    dst.set(src.subarray(s, s + w), i * w);
  }
}

/** dst row i = [a row i | b row i] for `rows` rows of width w each (dst rows of width 2w). */
function interleaveCols(dst: Float32Array, a: Float32Array, b: Float32Array, rows: number, w: number): void {
  for (let i = 0; i < rows; i++) {
    const o = 2 * i * w;
    dst.set(a.subarray(i * w, (i + 1) * w), o);
    dst.set(b.subarray(i * w, (i + 1) * w), o + w);
  }
}

/** The inverse of interleaveCols: the halves of each src row into a and b (either may be null). */
function splitCols(src: Float32Array, a: Float32Array | null, b: Float32Array | null, rows: number, w: number): void {
  for (let i = 0; i < rows; i++) {
    const o = 2 * i * w;
    if (a) a.set(src.subarray(o, o + w), i * w);
    if (b) b.set(src.subarray(o + w, o + 2 * w), i * w);
  }
}

/** Shared SwiGLU experts fused into expertSwigluFFN: w1, w3 [d, f] and w2 [f, d], the routed experts' width f. */
export interface FusedSharedSwiglu {
  w1: Tensor;
  w3: Tensor;
  w2: Tensor;
}

/**
 * The whole SwiGLU expert computation of a sorted dispatch as one op:
 *   xs = gatherRows(x, rows); a = scaledSwiglu(xs w1, xs w3, weights, weightIdx);
 *   y = scatterRows(groupedMatmul(a, w2), rows, N)
 * for x [N, d], w1 and w3 [E, d, f], w2 [E, f, d], rows grouped by expert (`sizes`).
 * Same math as that composition, but every [rows, d] and [rows, f] intermediate is op-internal,
 * so it comes from the buffer pool and goes back when the backward pass is done (at E=64 they
 * are 64 MB arrays whose fresh allocation cost more than the copies), the SwiGLU gradients
 * overwrite the saved pre-activations, and w1 and w3 run side by side as one product of width
 * 2f (forward, weight gradient and input gradient: 3 grouped GEMMs where there were 6).
 *
 * With `shared` (DeepSeekMoE-style shared experts of the same width f), the result also adds
 * swiglu(x sw1, x sw3) sw2 for every row of x: the shared FFN runs as one more group that every
 * token joins (weight 1), in the same gather/GEMM/scatter chain, instead of a second FFN with its
 * own products, activation and add. Per token the routed terms are summed first, then the shared.
 */
export function expertSwigluFFN(x: Tensor, rows: Int32Array, sizes: Int32Array, w1: Tensor, w3: Tensor, w2: Tensor, weights: Tensor, weightIdx: Int32Array, shared?: FusedSharedSwiglu): Tensor {
  const op = 'expertSwigluFFN';
  const d = rowWidth(x, op);
  const N = x.shape[0];
  if (w1.ndim !== 3 || w1.shape[1] !== d) throw new Error(`${op}: w1 ${formatShape(w1.shape)} must be [E, ${d}, f] for x ${formatShape(x.shape)}`);
  const [E, , f] = w1.shape;
  if (w3.ndim !== 3 || w3.shape[0] !== E || w3.shape[1] !== d || w3.shape[2] !== f) throw new Error(`${op}: w3 ${formatShape(w3.shape)} must match w1 ${formatShape(w1.shape)}`);
  if (w2.ndim !== 3 || w2.shape[0] !== E || w2.shape[1] !== f || w2.shape[2] !== d) throw new Error(`${op}: w2 ${formatShape(w2.shape)} must be [${E}, ${f}, ${d}]`);
  if (shared) {
    for (const [name, t, want] of [
      ['w1', shared.w1, [d, f]],
      ['w3', shared.w3, [d, f]],
      ['w2', shared.w2, [f, d]],
    ] as const) {
      if (t.ndim !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) throw new Error(`${op}: shared.${name} ${formatShape(t.shape)} must be ${formatShape(want)}`);
    }
  }
  if (sizes.length !== E) throw new Error(`${op}: ${sizes.length} group sizes for ${E} experts`);
  const A = rows.length;
  let total = 0;
  for (let e = 0; e < E; e++) {
    if (!(sizes[e] >= 0)) throw new Error(`${op}: group ${e} has negative size ${sizes[e]}`);
    total += sizes[e];
  }
  if (total !== A) throw new Error(`${op}: group sizes add up to ${total} rows but ${A} row indices were given`);
  if (weightIdx.length !== A) throw new Error(`${op}: ${weightIdx.length} weight indices for ${A} rows`);
  checkIndexRange(op, rows, N);
  checkIndexRange(`${op} (weightIdx)`, weightIdx, weights.size);

  const be = getBackend();
  const wd = weights.data;
  // the shared experts as group E: rows A..A+N-1 are x's rows in order, weight 1
  const G = shared ? E + 1 : E;
  const R = shared ? A + N : A;
  const gsizes = shared ? new Int32Array(G) : sizes;
  let grows = rows;
  if (shared) {
    gsizes.set(sizes);
    gsizes[E] = N;
    grows = new Int32Array(R);
    grows.set(rows);
    for (let t = 0; t < N; t++) grows[A + t] = t;
  }
  const xs = acquireBuffer(R * d);
  if (shared) {
    gatherInto(xs, x.data, rows, d);
    xs.set(x.data, A * d);
  } else gatherInto(xs, x.data, rows, d);
  // w1 and w3 side by side per expert ([G, d, 2f]): one grouped GEMM of width 2f instead of two
  // of width f (half the calls, and a wider N suits the GEMM kernel better at small f); the
  // copy is G*d*2f floats, small next to the R*d*2f multiply-adds it feeds
  const f2 = 2 * f;
  const w13 = acquireBuffer(G * d * f2);
  interleaveCols(w13, w1.data, w3.data, E * d, f);
  if (shared) interleaveCols(w13.subarray(E * d * f2), shared.w1.data, shared.w3.data, d, f);
  let w2all = w2.data;
  if (shared) {
    w2all = acquireBuffer(G * f * d);
    w2all.set(w2.data);
    w2all.set(shared.w2.data, E * f * d);
  }
  const h13 = acquireBuffer(R * f2);
  groupedInto(be, xs, w13, gsizes, d, f2, false, h13, false);
  // sigmoid(h1) is kept for the backward pass, as in scaledSwiglu
  const sig = acquireBuffer(R * f);
  const act = acquireBuffer(R * f);
  swigluRows(h13, 0, h13, f, f2, sig, act, R, f, wd, weightIdx, A);
  const ys = acquireBuffer(R * d);
  groupedInto(be, act, w2all, gsizes, f, d, false, ys, false);
  const out = new Float32Array(N * d);
  scatterAddRows(out, ys, grows, d);
  releaseBuffer(ys);
  const saved = shared ? [xs, w13, h13, sig, act, w2all] : [xs, w13, h13, sig, act];
  const parents = shared ? [x, w1, w3, w2, weights, shared.w1, shared.w3, shared.w2] : [x, w1, w3, w2, weights];
  if (!isGradEnabled() || !parents.some((p) => p.requiresGrad)) {
    for (const b of saved) releaseBuffer(b);
    return new Tensor(out, [N, d]);
  }
  return result(out, [N, d], parents, (g) => {
    // through w2: the gathered output gradient (unweighted scatter -> row gather)
    const gys = acquireBuffer(R * d);
    gatherInto(gys, g, rows, d);
    if (shared) gys.set(g, A * d);
    const gact = acquireBuffer(R * f);
    groupedInto(be, gys, w2all, gsizes, d, f, true, gact, false);
    if (w2.requiresGrad || (shared && shared.w2.requiresGrad)) {
      const gw2 = be.groupedMatmulTN(act, gys, gsizes, f, d);
      if (!shared) accumulateGrad(w2, gw2, true);
      else {
        accumulateGrad(w2, gw2.subarray(0, E * f * d));
        accumulateGrad(shared.w2, gw2.subarray(E * f * d));
      }
    }
    releaseBuffer(gys);
    // SwiGLU backward in place: the h1 half of each h13 row becomes the gate gradient, the h3 half the value gradient
    const gw = weights.requiresGrad ? new Float32Array(weights.size) : null;
    swiglu13Backward(h13, sig, gact, R, f, wd, weightIdx, A, gw);
    if (gw) accumulateGrad(weights, gw, true);
    const needW13 = w1.requiresGrad || w3.requiresGrad || (shared !== undefined && (shared.w1.requiresGrad || shared.w3.requiresGrad));
    if (needW13) {
      // [G, d, 2f] in one grouped product, split back into the weights' gradients
      const g13 = be.groupedMatmulTN(xs, h13, gsizes, d, f2);
      const g1 = w1.requiresGrad ? new Float32Array(E * d * f) : null;
      const g3 = w3.requiresGrad ? new Float32Array(E * d * f) : null;
      splitCols(g13, g1, g3, E * d, f);
      if (g1) accumulateGrad(w1, g1, true);
      if (g3) accumulateGrad(w3, g3, true);
      if (shared) {
        const s1 = shared.w1.requiresGrad ? new Float32Array(d * f) : null;
        const s3 = shared.w3.requiresGrad ? new Float32Array(d * f) : null;
        splitCols(g13.subarray(E * d * f2), s1, s3, d, f);
        if (s1) accumulateGrad(shared.w1, s1, true);
        if (s3) accumulateGrad(shared.w3, s3, true);
      }
    }
    if (x.requiresGrad) {
      // both input-gradient products in one: [R, 2f] x [d, 2f]^T per group
      const gxs = acquireBuffer(R * d);
      groupedInto(be, h13, w13, gsizes, f2, d, true, gxs, false);
      const gx = new Float32Array(N * d);
      scatterAddRows(gx, gxs, grows, d);
      releaseBuffer(gxs);
      accumulateGrad(x, gx, true);
    }
    releaseBuffer(gact);
    for (const b of saved) releaseBuffer(b);
  });
}
