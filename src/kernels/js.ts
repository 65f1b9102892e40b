/** The plain TypeScript reference backend: the oracle every other backend is tested against. */
import type { Backend, GroupedMatmulOptions, MatmulOptions } from '../tensor/backend.js';

function checkLen(name: string, arr: Float32Array, need: number): void {
  if (arr.length < need) {
    throw new Error(`${name}: array has ${arr.length} elements, needs at least ${need}`);
  }
}

export function refMatmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts: MatmulOptions = {}): Float32Array {
  const batch = opts.batch ?? 1;
  const { transA = false, transB = false, broadcastB = false, accumulate = false } = opts;
  checkLen('matmul A', a, batch * m * k);
  checkLen('matmul B', b, (broadcastB ? 1 : batch) * k * n);
  const c = opts.out ?? new Float32Array(batch * m * n);
  checkLen('matmul out', c, batch * m * n);
  const row = new Float64Array(n);
  for (let bi = 0; bi < batch; bi++) {
    const ao = bi * m * k;
    const bo = broadcastB ? 0 : bi * k * n;
    const co = bi * m * n;
    if (transB && !transA) {
      // the same float64 sums in the same order as the loop below, taken as one contiguous dot
      // product per output (B's rows are read in order instead of n strided streams)
      for (let i = 0; i < m; i++) {
        const aRow = ao + i * k;
        const cRow = co + i * n;
        for (let j = 0; j < n; j++) {
          const bRow = bo + j * k;
          let s = 0;
          for (let p = 0; p < k; p++) {
            const av = a[aRow + p];
            if (av === 0) continue;
            s += av * b[bRow + p];
          }
          if (accumulate) c[cRow + j] += s;
          else c[cRow + j] = s;
        }
      }
      continue;
    }
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let p = 0; p < k; p++) {
        const av = transA ? a[ao + p * m + i] : a[ao + i * k + p];
        if (av === 0) continue;
        if (transB) {
          for (let j = 0; j < n; j++) row[j] += av * b[bo + j * k + p];
        } else {
          const bRow = bo + p * n;
          for (let j = 0; j < n; j++) row[j] += av * b[bRow + j];
        }
      }
      const cRow = co + i * n;
      if (accumulate) for (let j = 0; j < n; j++) c[cRow + j] += row[j];
      else for (let j = 0; j < n; j++) c[cRow + j] = row[j];
    }
  }
  return c;
}

export function groupOffsets(sizes: Int32Array): Int32Array {
  const off = new Int32Array(sizes.length + 1);
  for (let e = 0; e < sizes.length; e++) {
    if (sizes[e] < 0) throw new Error(`groupedMatmul: group ${e} has negative size ${sizes[e]}`);
    off[e + 1] = off[e] + sizes[e];
  }
  return off;
}

export function refGroupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB = false, opts: GroupedMatmulOptions = {}): Float32Array {
  const off = groupOffsets(sizes);
  const rows = off[sizes.length];
  checkLen('groupedMatmul A', a, rows * k);
  checkLen('groupedMatmul W', w, sizes.length * k * n);
  const c = opts.out ?? new Float32Array(rows * n);
  checkLen('groupedMatmul out', c, rows * n);
  const accumulate = (opts.accumulate ?? false) && opts.out !== undefined;
  for (let e = 0; e < sizes.length; e++) {
    if (sizes[e] === 0) continue;
    refMatmul(a.subarray(off[e] * k, off[e + 1] * k), w.subarray(e * k * n, (e + 1) * k * n), sizes[e], k, n, {
      transB,
      out: c.subarray(off[e] * n, off[e + 1] * n),
      accumulate,
    });
  }
  return c;
}

export function refGroupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array {
  const off = groupOffsets(sizes);
  const rows = off[sizes.length];
  checkLen('groupedMatmulTN A', a, rows * k);
  checkLen('groupedMatmulTN G', g, rows * n);
  const out = new Float32Array(sizes.length * k * n);
  for (let e = 0; e < sizes.length; e++) {
    if (sizes[e] === 0) continue;
    refMatmul(a.subarray(off[e] * k, off[e + 1] * k), g.subarray(off[e] * n, off[e + 1] * n), k, sizes[e], n, {
      transA: true,
      out: out.subarray(e * k * n, (e + 1) * k * n),
    });
  }
  return out;
}

export class JsBackend implements Backend {
  readonly name = 'js' as const;
  readonly threads = 1;
  matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts?: MatmulOptions): Float32Array {
    return refMatmul(a, b, m, k, n, opts);
  }
  groupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB?: boolean, opts?: GroupedMatmulOptions): Float32Array {
    return refGroupedMatmul(a, w, sizes, k, n, transB, opts);
  }
  groupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array {
    return refGroupedMatmulTN(a, g, sizes, k, n);
  }
  dispose(): void {}
}
