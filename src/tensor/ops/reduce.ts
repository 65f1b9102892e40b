/** Reductions over one axis or all elements, and softmax/log-softmax along an axis. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { axisSplit, normAxis } from '../shape.js';

function reducedShape(shape: readonly number[], axis: number, keepDims: boolean): number[] {
  const s = shape.slice();
  if (keepDims) s[axis] = 1;
  else s.splice(axis, 1);
  return s;
}

/** Sum over `axis` (all elements when omitted). */
export function sum(x: Tensor, axis?: number, keepDims = false): Tensor {
  if (axis === undefined) {
    let s = 0;
    const d = x.data;
    for (let i = 0; i < d.length; i++) s += d[i];
    return result(new Float32Array([s]), keepDims ? x.shape.map(() => 1) : [], [x], (g) => {
      accumulateGrad(x, new Float32Array(x.size).fill(g[0]), true);
    });
  }
  const ax = normAxis(axis, x.ndim, 'sum');
  const [outer, len, inner] = axisSplit(x.shape, ax);
  const out = new Float32Array(outer * inner);
  const d = x.data;
  for (let o = 0; o < outer; o++) {
    const base = o * len * inner;
    const ob = o * inner;
    for (let l = 0; l < len; l++) {
      const row = base + l * inner;
      for (let i = 0; i < inner; i++) out[ob + i] += d[row + i];
    }
  }
  return result(out, reducedShape(x.shape, ax, keepDims), [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let l = 0; l < len; l++) {
        const row = (o * len + l) * inner;
        for (let i = 0; i < inner; i++) gx[row + i] = g[o * inner + i];
      }
    }
    accumulateGrad(x, gx, true);
  });
}

export function mean(x: Tensor, axis?: number, keepDims = false): Tensor {
  const n = axis === undefined ? x.size : x.shape[normAxis(axis, x.ndim, 'mean')];
  const s = sum(x, axis, keepDims);
  return n === 0 ? s : scaleInPlaceResult(s, 1 / n);
}

// mean = sum * (1/n) as one graph node to avoid an extra allocation
function scaleInPlaceResult(s: Tensor, f: number): Tensor {
  const out = new Float32Array(s.size);
  for (let i = 0; i < out.length; i++) out[i] = s.data[i] * f;
  return result(out, s.shape, [s], (g) => {
    const gs = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) gs[i] = g[i] * f;
    accumulateGrad(s, gs, true);
  });
}

/** Max over `axis`; the gradient flows to the first maximal element. */
export function max(x: Tensor, axis?: number, keepDims = false): Tensor {
  if (axis === undefined && x.size === 0) throw new Error(`max: empty tensor ${x.toString()}`);
  const ax = axis === undefined ? -1 : normAxis(axis, x.ndim, 'max');
  const [outer, len, inner] = ax < 0 ? [1, x.size, 1] : axisSplit(x.shape, ax);
  if (len === 0) throw new Error(`max: axis ${axis} of ${x.toString()} is empty`);
  const out = new Float32Array(outer * inner);
  const arg = new Int32Array(outer * inner);
  const d = x.data;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity;
      let bi = 0;
      for (let l = 0; l < len; l++) {
        const v = d[(o * len + l) * inner + i];
        if (v > best || (l === 0 && !(v <= best))) {
          best = v;
          bi = l;
        }
      }
      out[o * inner + i] = best;
      arg[o * inner + i] = (o * len + bi) * inner + i;
    }
  }
  const shape = ax < 0 ? (keepDims ? x.shape.map(() => 1) : []) : reducedShape(x.shape, ax, keepDims);
  return result(out, shape, [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let j = 0; j < arg.length; j++) gx[arg[j]] += g[j];
    accumulateGrad(x, gx, true);
  });
}

/** Numerically stable softmax along `axis` (default last). */
export function softmax(x: Tensor, axis = -1): Tensor {
  const ax = normAxis(axis, x.ndim, 'softmax');
  const [outer, len, inner] = axisSplit(x.shape, ax);
  const out = softmaxRaw(x.data, outer, len, inner);
  return result(out, x.shape, [x], (g) => {
    // dx = y * (g - sum(g * y))
    const gx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let dot = 0;
        for (let l = 0; l < len; l++) {
          const p = (o * len + l) * inner + i;
          dot += g[p] * out[p];
        }
        for (let l = 0; l < len; l++) {
          const p = (o * len + l) * inner + i;
          gx[p] = out[p] * (g[p] - dot);
        }
      }
    }
    accumulateGrad(x, gx, true);
  });
}

/** Softmax of raw data laid out as [outer, len, inner] along the middle axis. */
export function softmaxRaw(d: Float32Array, outer: number, len: number, inner: number): Float32Array {
  const out = new Float32Array(d.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      let m = -Infinity;
      for (let l = 0; l < len; l++) m = Math.max(m, d[base + l * inner]);
      if (m === -Infinity) continue; // all masked: leave zeros rather than NaN
      let s = 0;
      for (let l = 0; l < len; l++) {
        const e = Math.exp(d[base + l * inner] - m);
        out[base + l * inner] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let l = 0; l < len; l++) out[base + l * inner] *= inv;
    }
  }
  return out;
}

/** log-sum-exp of raw data laid out as [outer, len, inner] along the middle axis -> [outer * inner]. */
function lseRaw(d: Float32Array, outer: number, len: number, inner: number): Float32Array {
  const out = new Float32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      let m = -Infinity;
      for (let l = 0; l < len; l++) m = Math.max(m, d[base + l * inner]);
      let s = 0;
      for (let l = 0; l < len; l++) s += Math.exp(d[base + l * inner] - m);
      out[o * inner + i] = m + Math.log(s);
    }
  }
  return out;
}

/** Numerically stable log-softmax along `axis` (default last). */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const ax = normAxis(axis, x.ndim, 'logSoftmax');
  const [outer, len, inner] = axisSplit(x.shape, ax);
  const d = x.data;
  const lse = lseRaw(d, outer, len, inner);
  const out = new Float32Array(x.size);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      const v = lse[o * inner + i];
      for (let l = 0; l < len; l++) out[base + l * inner] = d[base + l * inner] - v;
    }
  }
  return result(out, x.shape, [x], (g) => {
    // dx = g - softmax * sum(g)
    const gx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * len * inner + i;
        let gs = 0;
        for (let l = 0; l < len; l++) gs += g[base + l * inner];
        for (let l = 0; l < len; l++) {
          const p = base + l * inner;
          gx[p] = g[p] - Math.exp(out[p]) * gs;
        }
      }
    }
    accumulateGrad(x, gx, true);
  });
}

/** log(sum(exp(x))) along `axis`, stable (router z-loss uses it). */
export function logSumExp(x: Tensor, axis = -1, keepDims = false): Tensor {
  const ax = normAxis(axis, x.ndim, 'logSumExp');
  const [outer, len, inner] = axisSplit(x.shape, ax);
  const d = x.data;
  const out = lseRaw(d, outer, len, inner);
  return result(out, reducedShape(x.shape, ax, keepDims), [x], (g) => {
    const gx = new Float32Array(x.size);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * len * inner + i;
        const lse = out[o * inner + i];
        const gi = g[o * inner + i];
        for (let l = 0; l < len; l++) gx[base + l * inner] = gi * Math.exp(d[base + l * inner] - lse);
      }
    }
    accumulateGrad(x, gx, true);
  });
}
