/** Shape arithmetic and broadcasting rules (NumPy semantics). */

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid shape ${formatShape(shape)}: dimensions must be non-negative integers`);
    n *= d;
  }
  return n;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Normalise a possibly negative axis; `op` names the caller in the error. */
export function normAxis(axis: number, ndim: number, op: string): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= ndim) throw new Error(`${op}: axis ${axis} out of range for a tensor of rank ${ndim}`);
  return a;
}

export function broadcastShapes(a: readonly number[], b: readonly number[], op: string): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Row-major strides of `inShape` aligned to `outShape`, 0 where the input is broadcast. */
export function broadcastStrides(inShape: readonly number[], outShape: readonly number[]): number[] {
  const n = outShape.length;
  const strides = new Array<number>(n).fill(0);
  let s = 1;
  for (let i = inShape.length - 1; i >= 0; i--) {
    const o = i + (n - inShape.length);
    strides[o] = inShape[i] === 1 ? 0 : s;
    s *= inShape[i];
  }
  return strides;
}

/** Flat input offset for every flat output index under broadcasting. */
export function broadcastIndex(inShape: readonly number[], outShape: readonly number[]): Int32Array {
  return stridedIndex(outShape, broadcastStrides(inShape, outShape));
}

/** Flat source offset for every flat index of `outShape`, walking the source with `strides`. */
export function stridedIndex(outShape: readonly number[], strides: readonly number[]): Int32Array {
  const total = shapeSize(outShape);
  const idx = new Int32Array(total);
  const n = outShape.length;
  const counter = new Array<number>(n).fill(0);
  let off = 0;
  for (let i = 0; i < total; i++) {
    idx[i] = off;
    for (let d = n - 1; d >= 0; d--) {
      counter[d]++;
      off += strides[d];
      if (counter[d] < outShape[d]) break;
      off -= strides[d] * counter[d];
      counter[d] = 0;
    }
  }
  return idx;
}

/** Split a shape around `axis` into (outer, len, inner) for axis-wise kernels. */
export function axisSplit(shape: readonly number[], axis: number): [number, number, number] {
  let outer = 1;
  let inner = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i];
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i];
  return [outer, shape[axis], inner];
}
