/** Elementwise ops with broadcasting, and unary activations, each with its gradient. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { broadcastShapes, broadcastIndex, sameShape, shapeSize, formatShape } from '../shape.js';

type Kind = 'add' | 'sub' | 'mul' | 'div';

/** Sum a broadcast gradient back down to the input's shape. */
export function reduceToShape(g: Float32Array, outShape: readonly number[], inShape: readonly number[]): Float32Array {
  if (sameShape(outShape, inShape)) return g;
  const n = shapeSize(inShape);
  const r = new Float32Array(n);
  if (n === 1) {
    let s = 0;
    for (let i = 0; i < g.length; i++) s += g[i];
    r[0] = s;
    return r;
  }
  if (isSuffix(inShape, outShape)) {
    for (let i = 0; i < g.length; i += n) for (let j = 0; j < n; j++) r[j] += g[i + j];
    return r;
  }
  const idx = broadcastIndex(inShape, outShape);
  for (let i = 0; i < g.length; i++) r[idx[i]] += g[i];
  return r;
}

/** True when `small` equals the trailing dims of `big` (a row-broadcast). */
function isSuffix(small: readonly number[], big: readonly number[]): boolean {
  let s = 0;
  while (s < small.length && small[s] === 1) s++;
  const rest = small.length - s;
  if (rest > big.length) return false;
  const off = big.length - rest;
  for (let j = 0; j < rest; j++) if (small[s + j] !== big[off + j]) return false;
  return true;
}

function apply(kind: Kind, x: number, y: number): number {
  switch (kind) {
    case 'add':
      return x + y;
    case 'sub':
      return x - y;
    case 'mul':
      return x * y;
    default:
      return x / y;
  }
}

function forward(kind: Kind, a: Tensor, b: Tensor, outShape: number[]): Float32Array {
  const ad = a.data;
  const bd = b.data;
  const n = shapeSize(outShape);
  const out = new Float32Array(n);
  if (ad.length === n && bd.length === n) {
    switch (kind) {
      case 'add':
        for (let i = 0; i < n; i++) out[i] = ad[i] + bd[i];
        break;
      case 'sub':
        for (let i = 0; i < n; i++) out[i] = ad[i] - bd[i];
        break;
      case 'mul':
        for (let i = 0; i < n; i++) out[i] = ad[i] * bd[i];
        break;
      default:
        for (let i = 0; i < n; i++) out[i] = ad[i] / bd[i];
    }
    return out;
  }
  if (ad.length === n && isSuffix(b.shape, outShape)) {
    const m = bd.length;
    if (m === 0) return out;
    for (let i = 0; i < n; i += m) for (let j = 0; j < m; j++) out[i + j] = apply(kind, ad[i + j], bd[j]);
    return out;
  }
  if (bd.length === 1 && ad.length === n) {
    const y = bd[0];
    for (let i = 0; i < n; i++) out[i] = apply(kind, ad[i], y);
    return out;
  }
  const ia = ad.length === n ? null : broadcastIndex(a.shape, outShape);
  const ib = bd.length === n ? null : broadcastIndex(b.shape, outShape);
  for (let i = 0; i < n; i++) out[i] = apply(kind, ad[ia ? ia[i] : i], bd[ib ? ib[i] : i]);
  return out;
}

/** b expanded to the output shape (needed by mul/div gradients). */
function expand(t: Tensor, outShape: readonly number[]): Float32Array {
  if (sameShape(t.shape, outShape)) return t.data;
  const n = shapeSize(outShape);
  const out = new Float32Array(n);
  if (t.size === 1) return out.fill(t.data[0]);
  const idx = broadcastIndex(t.shape, outShape);
  for (let i = 0; i < n; i++) out[i] = t.data[idx[i]];
  return out;
}

function binary(kind: Kind, a: Tensor, b: Tensor): Tensor {
  const outShape = broadcastShapes(a.shape, b.shape, kind);
  const data = forward(kind, a, b, outShape);
  return result(data, outShape, [a, b], (g) => {
    if (a.requiresGrad) {
      let ga: Float32Array;
      if (kind === 'add' || kind === 'sub') ga = g;
      else {
        const bx = expand(b, outShape);
        ga = new Float32Array(g.length);
        if (kind === 'mul') for (let i = 0; i < g.length; i++) ga[i] = g[i] * bx[i];
        else for (let i = 0; i < g.length; i++) ga[i] = g[i] / bx[i];
      }
      const r = reduceToShape(ga, outShape, a.shape);
      accumulateGrad(a, r, r !== g);
    }
    if (b.requiresGrad) {
      let gb: Float32Array;
      if (kind === 'add') gb = g;
      else if (kind === 'sub') {
        gb = new Float32Array(g.length);
        for (let i = 0; i < g.length; i++) gb[i] = -g[i];
      } else {
        const ax = expand(a, outShape);
        gb = new Float32Array(g.length);
        if (kind === 'mul') for (let i = 0; i < g.length; i++) gb[i] = g[i] * ax[i];
        else {
          const bx = expand(b, outShape);
          for (let i = 0; i < g.length; i++) gb[i] = (-g[i] * ax[i]) / (bx[i] * bx[i]);
        }
      }
      const r = reduceToShape(gb, outShape, b.shape);
      accumulateGrad(b, r, r !== g);
    }
  });
}

export const add = (a: Tensor, b: Tensor): Tensor => binary('add', a, b);
export const sub = (a: Tensor, b: Tensor): Tensor => binary('sub', a, b);
export const mul = (a: Tensor, b: Tensor): Tensor => binary('mul', a, b);
export const div = (a: Tensor, b: Tensor): Tensor => binary('div', a, b);

/** x * s + c with constants s, c. */
export function affine(x: Tensor, s: number, c = 0): Tensor {
  const xd = x.data;
  const out = new Float32Array(xd.length);
  for (let i = 0; i < xd.length; i++) out[i] = xd[i] * s + c;
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * s;
    accumulateGrad(x, gx, true);
  });
}

export const scale = (x: Tensor, s: number): Tensor => affine(x, s, 0);
export const addScalar = (x: Tensor, c: number): Tensor => affine(x, 1, c);
export const neg = (x: Tensor): Tensor => affine(x, -1, 0);

/** A unary op from its value and derivative (the derivative may use the input x and output y). */
function unary(x: Tensor, f: (v: number) => number, df: (x: number, y: number) => number): Tensor {
  const xd = x.data;
  const out = new Float32Array(xd.length);
  for (let i = 0; i < xd.length; i++) out[i] = f(xd[i]);
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * df(xd[i], out[i]);
    accumulateGrad(x, gx, true);
  });
}

export const exp = (x: Tensor): Tensor => unary(x, Math.exp, (_x, y) => y);
export const log = (x: Tensor): Tensor => unary(x, Math.log, (v) => 1 / v);
export const sqrt = (x: Tensor): Tensor => unary(x, Math.sqrt, (_x, y) => 0.5 / y);
export const square = (x: Tensor): Tensor =>
  unary(
    x,
    (v) => v * v,
    (v) => 2 * v,
  );
export const abs = (x: Tensor): Tensor => unary(x, Math.abs, (v) => (v > 0 ? 1 : v < 0 ? -1 : 0));
export const tanh = (x: Tensor): Tensor => unary(x, Math.tanh, (_x, y) => 1 - y * y);
export const sigmoid = (x: Tensor): Tensor => unary(x, sigmoidScalar, (_x, y) => y * (1 - y));
export const relu = (x: Tensor): Tensor =>
  unary(
    x,
    (v) => (v > 0 ? v : 0),
    (v) => (v > 0 ? 1 : 0),
  );
export const silu = (x: Tensor): Tensor =>
  unary(
    x,
    (v) => v * sigmoidScalar(v),
    (v) => {
      const s = sigmoidScalar(v);
      return s * (1 + v * (1 - s));
    },
  );

export function sigmoidScalar(v: number): number {
  // split by sign so exp never overflows
  if (v >= 0) return 1 / (1 + Math.exp(-v));
  const e = Math.exp(v);
  return e / (1 + e);
}

const GELU_C = Math.sqrt(2 / Math.PI);
/** GELU, tanh approximation (as in GPT-2 and most MoE FFNs). */
export const gelu = (x: Tensor): Tensor =>
  unary(
    x,
    (v) => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v))),
    (v) => {
      const u = GELU_C * (v + 0.044715 * v * v * v);
      const t = Math.tanh(u);
      return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * v * v);
    },
  );

/** x^p for a constant p. */
export const pow = (x: Tensor, p: number): Tensor =>
  unary(
    x,
    (v) => Math.pow(v, p),
    (v) => p * Math.pow(v, p - 1),
  );

/** Multiply by a constant 0/1 (or any) mask of the same shape, outside the graph for the mask. */
export function maskMul(x: Tensor, mask: Float32Array): Tensor {
  if (mask.length !== x.size) throw new Error(`maskMul: mask has ${mask.length} elements, tensor ${formatShape(x.shape)} has ${x.size}`);
  const out = new Float32Array(x.size);
  for (let i = 0; i < out.length; i++) out[i] = x.data[i] * mask[i];
  return result(out, x.shape, [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) gx[i] = g[i] * mask[i];
    accumulateGrad(x, gx, true);
  });
}
