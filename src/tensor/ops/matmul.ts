/** Matrix products through the active kernel backend: (batched) matmul, linear, grouped matmul. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { getBackend } from '../backend.js';
import { formatShape } from '../shape.js';
import { reshape } from './shape_ops.js';

export interface MatmulOpts {
  /** b is stored transposed ([..., n, k]); avoids a copy for [out x in] weights. */
  transB?: boolean;
}

/**
 * a [..., m, k] x b [k, n] (shared b) or b [..., k, n] (same leading dims) -> [..., m, n].
 * With transB, b is [n, k] / [..., n, k].
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOpts = {}): Tensor {
  const transB = opts.transB ?? false;
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`matmul: operands need at least 2 dims, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  const m = a.shape[a.ndim - 2];
  const k = a.shape[a.ndim - 1];
  const kb = transB ? b.shape[b.ndim - 1] : b.shape[b.ndim - 2];
  const n = transB ? b.shape[b.ndim - 2] : b.shape[b.ndim - 1];
  if (k !== kb) {
    throw new Error(`matmul: inner dimensions differ: ${formatShape(a.shape)} x ${formatShape(b.shape)}${transB ? ' (b transposed)' : ''}`);
  }
  const lead = a.shape.slice(0, -2);
  const batch = lead.reduce((p, d) => p * d, 1);
  const broadcastB = b.ndim === 2;
  if (!broadcastB) {
    const bl = b.shape.slice(0, -2);
    if (bl.length !== lead.length || bl.some((d, i) => d !== lead[i])) {
      throw new Error(`matmul: batch dims differ: ${formatShape(a.shape)} x ${formatShape(b.shape)}`);
    }
  }
  const be = getBackend();
  const out = batch * m * n === 0 ? new Float32Array(0) : be.matmul(a.data, b.data, m, k, n, { transB, batch, broadcastB });
  return result(out, [...lead, m, n], [a, b], (g) => {
    if (a.requiresGrad && a.size > 0) {
      // dA = g x op(B)^T
      const ga = be.matmul(g, b.data, m, n, k, { transB: !transB, batch, broadcastB });
      accumulateGrad(a, ga, true);
    }
    if (b.requiresGrad && b.size > 0) {
      let gb: Float32Array;
      if (broadcastB) {
        // the shared weight sums over every batch: fold batch into the reduction dim
        gb = transB ? be.matmul(g, a.data, n, batch * m, k, { transA: true }) : be.matmul(a.data, g, k, batch * m, n, { transA: true });
      } else {
        gb = transB ? be.matmul(g, a.data, n, m, k, { transA: true, batch }) : be.matmul(a.data, g, k, m, n, { transA: true, batch });
      }
      accumulateGrad(b, gb, true);
    }
  });
}

/** x [..., in] x w[out, in]^T + bias[out] (PyTorch's weight layout, so checkpoints map 1:1). */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  if (w.ndim !== 2 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`linear: input ${formatShape(x.shape)} does not match weight ${formatShape(w.shape)} ([out, in])`);
  }
  const lead = x.shape.slice(0, -1);
  const rows = lead.reduce((p, d) => p * d, 1);
  const x2 = x.ndim === 2 ? x : reshape(x, [rows, w.shape[1]]);
  let y = matmul(x2, w, { transB: true });
  if (bias) y = addRowBias(y, bias);
  return x.ndim === 2 ? y : reshape(y, [...lead, w.shape[0]]);
}

function addRowBias(y: Tensor, bias: Tensor): Tensor {
  const n = bias.size;
  if (y.shape[y.ndim - 1] !== n) throw new Error(`linear: bias ${formatShape(bias.shape)} does not match output ${formatShape(y.shape)}`);
  const out = y.data;
  const o = new Float32Array(out.length);
  for (let i = 0; i < out.length; i += n) for (let j = 0; j < n; j++) o[i + j] = out[i + j] + bias.data[j];
  return result(o, y.shape, [y, bias], (g) => {
    accumulateGrad(y, g);
    if (bias.requiresGrad) {
      const gb = new Float32Array(n);
      for (let i = 0; i < g.length; i += n) for (let j = 0; j < n; j++) gb[j] += g[i + j];
      accumulateGrad(bias, gb, true);
    }
  });
}

/**
 * Grouped matmul, the MoE expert computation: x rows are grouped contiguously by expert
 * (group e has sizes[e] rows), y_e = x_e x w_e; w [E, k, n] (or [E, n, k] with transB).
 */
export function groupedMatmul(x: Tensor, w: Tensor, sizes: Int32Array, opts: MatmulOpts = {}): Tensor {
  const transB = opts.transB ?? false;
  if (x.ndim !== 2 || w.ndim !== 3) throw new Error(`groupedMatmul: expected x [rows, k] and w [E, k, n], got ${formatShape(x.shape)} and ${formatShape(w.shape)}`);
  const E = w.shape[0];
  const k = x.shape[1];
  const kw = transB ? w.shape[2] : w.shape[1];
  const n = transB ? w.shape[1] : w.shape[2];
  if (kw !== k) throw new Error(`groupedMatmul: x ${formatShape(x.shape)} does not match w ${formatShape(w.shape)}${transB ? ' (transposed)' : ''}`);
  if (sizes.length !== E) throw new Error(`groupedMatmul: ${sizes.length} group sizes for ${E} experts`);
  let rows = 0;
  for (let e = 0; e < E; e++) {
    if (sizes[e] < 0) throw new Error(`groupedMatmul: group ${e} has negative size ${sizes[e]}`);
    rows += sizes[e];
  }
  if (rows !== x.shape[0]) throw new Error(`groupedMatmul: group sizes add up to ${rows} rows but x has ${x.shape[0]}`);
  const be = getBackend();
  const out = be.groupedMatmul(x.data, w.data, sizes, k, n, transB);
  return result(out, [rows, n], [x, w], (g) => {
    if (x.requiresGrad) accumulateGrad(x, be.groupedMatmul(g, w.data, sizes, n, k, !transB), true);
    if (w.requiresGrad) {
      const gw = transB ? be.groupedMatmulTN(g, x.data, sizes, n, k) : be.groupedMatmulTN(x.data, g, sizes, k, n);
      accumulateGrad(w, gw, true);
    }
  });
}
