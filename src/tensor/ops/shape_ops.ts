/** Shape ops: reshape (a view), permute/transpose, concat, split, slice. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape, normAxis, shapeSize, axisSplit, stridedIndex } from '../shape.js';

/** Zero-copy reshape; one dimension may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const s = shape.slice();
  const neg = s.indexOf(-1);
  if (neg >= 0) {
    if (s.indexOf(-1, neg + 1) >= 0) throw new Error(`reshape: more than one -1 in ${formatShape(shape)}`);
    const rest = s.reduce((p, d, i) => (i === neg ? p : p * d), 1);
    if (rest === 0 || x.size % rest !== 0) throw new Error(`reshape: cannot reshape ${x.toString()} to ${formatShape(shape)}`);
    s[neg] = x.size / rest;
  }
  if (shapeSize(s) !== x.size) throw new Error(`reshape: cannot reshape ${x.toString()} (${x.size} elements) to ${formatShape(shape)}`);
  return result(x.data, s, [x], (g) => accumulateGrad(x, g));
}

/** General axis permutation (copies). */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const n = x.ndim;
  if (perm.length !== n || new Set(perm.map((p) => normAxis(p, n, 'permute'))).size !== n) {
    throw new Error(`permute: ${formatShape(perm)} is not a permutation of the ${n} axes of ${x.toString()}`);
  }
  const p = perm.map((a) => normAxis(a, n, 'permute'));
  const outShape = p.map((a) => x.shape[a]);
  const inStrides = new Array<number>(n);
  let st = 1;
  for (let i = n - 1; i >= 0; i--) {
    inStrides[i] = st;
    st *= x.shape[i];
  }
  const srcStrides = p.map((a) => inStrides[a]);
  const idx = stridedIndex(outShape, srcStrides);
  const out = new Float32Array(x.size);
  const d = x.data;
  for (let i = 0; i < idx.length; i++) out[i] = d[idx[i]];
  return result(out, outShape, [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let i = 0; i < idx.length; i++) gx[idx[i]] = g[i];
    accumulateGrad(x, gx, true);
  });
}

/** Swap two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  if (x.ndim < 2) throw new Error(`transpose: ${x.toString()} has fewer than 2 dims`);
  const p = x.shape.map((_, i) => i);
  const i = normAxis(a, x.ndim, 'transpose');
  const j = normAxis(b, x.ndim, 'transpose');
  [p[i], p[j]] = [p[j], p[i]];
  return permute(x, p);
}

export function concat(xs: Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0];
  const ax = normAxis(axis, first.ndim, 'concat');
  for (const t of xs) {
    if (t.ndim !== first.ndim || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new Error(`concat: shapes ${xs.map((q) => formatShape(q.shape)).join(', ')} differ outside axis ${axis}`);
    }
  }
  const outShape = first.shape.slice();
  outShape[ax] = xs.reduce((s, t) => s + t.shape[ax], 0);
  const [outer, , inner] = axisSplit(outShape, ax);
  const total = outShape[ax];
  const out = new Float32Array(shapeSize(outShape));
  let off = 0;
  const offs: number[] = [];
  for (const t of xs) {
    offs.push(off);
    const len = t.shape[ax] * inner;
    for (let o = 0; o < outer; o++) out.set(t.data.subarray(o * len, (o + 1) * len), o * total * inner + off * inner);
    off += t.shape[ax];
  }
  return result(out, outShape, xs, (g) => {
    xs.forEach((t, k) => {
      if (!t.requiresGrad) return;
      const len = t.shape[ax] * inner;
      const gt = new Float32Array(t.size);
      for (let o = 0; o < outer; o++) gt.set(g.subarray(o * total * inner + offs[k] * inner, o * total * inner + offs[k] * inner + len), o * len);
      accumulateGrad(t, gt, true);
    });
  });
}

/** x[..., start:end, ...] along `axis`. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const ax = normAxis(axis, x.ndim, 'slice');
  const dim = x.shape[ax];
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > dim || start > end) {
    throw new Error(`slice: range [${start}, ${end}) invalid for axis ${axis} of ${x.toString()}`);
  }
  const [outer, len, inner] = axisSplit(x.shape, ax);
  const outShape = x.shape.slice();
  outShape[ax] = end - start;
  const seg = (end - start) * inner;
  const out = new Float32Array(outer * seg);
  for (let o = 0; o < outer; o++) out.set(x.data.subarray(o * len * inner + start * inner, o * len * inner + end * inner), o * seg);
  return result(out, outShape, [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) gx.set(g.subarray(o * seg, (o + 1) * seg), o * len * inner + start * inner);
    accumulateGrad(x, gx, true);
  });
}

/** Split along `axis` into pieces of the given sizes. */
export function split(x: Tensor, sizes: readonly number[], axis = 0): Tensor[] {
  const ax = normAxis(axis, x.ndim, 'split');
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== x.shape[ax] || sizes.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new Error(`split: sizes [${sizes.join(', ')}] do not add up to axis ${axis} of ${x.toString()}`);
  }
  const outs: Tensor[] = [];
  let off = 0;
  for (const s of sizes) {
    outs.push(slice(x, ax, off, off + s));
    off += s;
  }
  return outs;
}
