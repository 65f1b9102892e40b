/** Indexing ops: the MoE dispatch/combine primitives (gather rows, scatter-add), top-k, embedding. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';
import { reshape } from './shape_ops.js';

function checkIndices(op: string, idx: Int32Array, limit: number): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i];
    if (v < 0 || v >= limit) throw new Error(`${op}: index ${v} at position ${i} out of range [0, ${limit})`);
  }
}

/** Rows of x (first axis) at `idx`: out[i] = x[idx[i]]; gradient scatter-adds back. */
export function indexSelect(x: Tensor, idx: Int32Array): Tensor {
  if (x.ndim < 1) throw new Error('indexSelect: scalar input');
  const rows = x.shape[0];
  checkIndices('indexSelect', idx, rows);
  const w = rows === 0 ? 0 : x.size / rows;
  const out = new Float32Array(idx.length * w);
  const d = x.data;
  for (let i = 0; i < idx.length; i++) out.set(d.subarray(idx[i] * w, idx[i] * w + w), i * w);
  return result(out, [idx.length, ...x.shape.slice(1)], [x], (g) => {
    const gx = new Float32Array(x.size);
    scatterAddInto(gx, g, idx, w);
    accumulateGrad(x, gx, true);
  });
}

/** gx[idx[i]] += g[i] for rows of width w (indexSelect's backward; module-level so V8 optimises it once, see moe_ops.ts). */
function scatterAddInto(gx: Float32Array, g: Float32Array, idx: Int32Array, w: number): void {
  for (let i = 0; i < idx.length; i++) {
    const s = idx[i] * w;
    const o = i * w;
    for (let j = 0; j < w; j++) gx[s + j] += g[o + j];
  }
}

/** out[idx[i]] += x[i] into `rows` rows; gradient gathers. Optional per-row weights w[i] (differentiable). */
export function scatterAdd(x: Tensor, idx: Int32Array, rows: number, weights?: Tensor): Tensor {
  if (x.ndim < 1 || x.shape[0] !== idx.length) {
    throw new Error(`scatterAdd: ${idx.length} indices for ${x.toString()} (first dim must match)`);
  }
  if (weights && weights.size !== idx.length) {
    throw new Error(`scatterAdd: weights ${weights.toString()} must have one value per row (${idx.length})`);
  }
  checkIndices('scatterAdd', idx, rows);
  const w = idx.length === 0 ? shapeTail(x.shape) : x.size / idx.length;
  const out = new Float32Array(rows * w);
  const d = x.data;
  const wd = weights?.data;
  for (let i = 0; i < idx.length; i++) {
    const o = idx[i] * w;
    const s = i * w;
    const c = wd ? wd[i] : 1;
    for (let j = 0; j < w; j++) out[o + j] += c * d[s + j];
  }
  const parents = weights ? [x, weights] : [x];
  return result(out, [rows, ...x.shape.slice(1)], parents, (g) => {
    if (x.requiresGrad) {
      const gx = new Float32Array(x.size);
      for (let i = 0; i < idx.length; i++) {
        const o = idx[i] * w;
        const s = i * w;
        const c = wd ? wd[i] : 1;
        for (let j = 0; j < w; j++) gx[s + j] = c * g[o + j];
      }
      accumulateGrad(x, gx, true);
    }
    if (weights && weights.requiresGrad) {
      const gw = new Float32Array(idx.length);
      for (let i = 0; i < idx.length; i++) {
        const o = idx[i] * w;
        const s = i * w;
        let acc = 0;
        for (let j = 0; j < w; j++) acc += g[o + j] * d[s + j];
        gw[i] = acc;
      }
      accumulateGrad(weights, gw, true);
    }
  });
}

function shapeTail(shape: readonly number[]): number {
  let n = 1;
  for (let i = 1; i < shape.length; i++) n *= shape[i];
  return n;
}

/** out[..., j] = x[..., idx[..., j]] along the last axis (idx has the shape of out). */
export function takeAlongLast(x: Tensor, idx: Int32Array, k: number): Tensor {
  if (x.ndim < 1) throw new Error('takeAlongLast: scalar input');
  const len = x.shape[x.ndim - 1];
  const rows = len === 0 ? 0 : x.size / len;
  if (idx.length !== rows * k) throw new Error(`takeAlongLast: ${idx.length} indices, expected ${rows} rows x ${k}`);
  checkIndices('takeAlongLast', idx, len);
  const out = new Float32Array(rows * k);
  const d = x.data;
  for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) out[r * k + j] = d[r * len + idx[r * k + j]];
  return result(out, [...x.shape.slice(0, -1), k], [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) gx[r * len + idx[r * k + j]] += g[r * k + j];
    accumulateGrad(x, gx, true);
  });
}

/** Indices of the k largest entries along the last axis (descending, ties to the lower index). */
export function topkIndices(data: Float32Array, rows: number, len: number, k: number): Int32Array {
  if (!Number.isInteger(k) || k < 0 || k > len) throw new Error(`topk: k=${k} out of range for a last axis of ${len}`);
  const out = new Int32Array(rows * k);
  const bestV = new Float64Array(k);
  const bestI = new Int32Array(k);
  for (let r = 0; r < rows; r++) {
    let filled = 0;
    const base = r * len;
    for (let l = 0; l < len; l++) {
      let v = data[base + l];
      if (v !== v) v = -Infinity; // NaN never wins
      if (filled === k && !(v > bestV[k - 1])) continue;
      let p = filled < k ? filled++ : k - 1;
      while (p > 0 && v > bestV[p - 1]) {
        bestV[p] = bestV[p - 1];
        bestI[p] = bestI[p - 1];
        p--;
      }
      bestV[p] = v;
      bestI[p] = l;
    }
    out.set(bestI.subarray(0, k), r * k);
  }
  return out;
}

/** Top-k along the last axis: values (differentiable) and indices. */
export function topk(x: Tensor, k: number): { values: Tensor; indices: Int32Array } {
  if (x.ndim < 1) throw new Error('topk: scalar input');
  const len = x.shape[x.ndim - 1];
  const rows = len === 0 ? 0 : x.size / len;
  const indices = topkIndices(x.data, rows, len, k);
  return { values: takeAlongLast(x, indices, k), indices };
}

/** Embedding lookup: weight [V x d], ids of any shape -> [...ids, d]. */
export function embedding(weight: Tensor, ids: Int32Array, idsShape: readonly number[] = [ids.length]): Tensor {
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be [vocab x dim], got ${weight.toString()}`);
  const out = indexSelect(weight, ids);
  const d = weight.shape[1];
  if (idsShape.reduce((a, b) => a * b, 1) !== ids.length) throw new Error(`embedding: ids shape ${formatShape(idsShape)} does not match ${ids.length} ids`);
  return idsShape.length === 1 ? out : reshape(out, [...idsShape, d]);
}
