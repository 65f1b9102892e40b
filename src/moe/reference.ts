/**
 * A naive reference MoE, written as plainly as possible to be the oracle of the fast path:
 * loop over tokens, loop over that token's assignments, and compute the expert FFN densely in
 * float64 from the same weights. No sorting, no grouping, no autograd. Slow on purpose.
 */
import type { Tensor } from '../tensor/tensor.js';
import { sigmoidScalar } from '../tensor/index.js';
import type { ExpertBank, RouterOutput, SoftRouting, SparseRouting } from './types.js';
import { FFNExperts, HeterogeneousExperts, SharedExperts, type Activation } from './experts/ffn.js';
import type { MoELayer } from './layer.js';

const GELU_C = Math.sqrt(2 / Math.PI);

function act(kind: Activation, gate: number, value: number): number {
  if (kind === 'swiglu') return gate * sigmoidScalar(gate) * value;
  return 0.5 * gate * (1 + Math.tanh(GELU_C * (gate + 0.044715 * gate * gate * gate)));
}

/**
 * One FFN on one row: w1/w3 read as [d, f] starting at offset o1, w2 as [f, d] at o2.
 * Returns the output row [d] in float64.
 */
function ffnRow(
  x: ArrayLike<number>,
  d: number,
  f: number,
  kind: Activation,
  w1: Float32Array,
  w3: Float32Array | null,
  w2: Float32Array,
  o1: number,
  o2: number,
  w1Stride = f,
  w2RowOff = 0,
): Float64Array {
  const y = new Float64Array(d);
  for (let j = 0; j < f; j++) {
    let g = 0;
    let v = 0;
    for (let i = 0; i < d; i++) {
      g += x[i] * w1[o1 + i * w1Stride + j];
      if (w3) v += x[i] * w3[o1 + i * w1Stride + j];
    }
    const h = act(kind, g, v);
    for (let i = 0; i < d; i++) y[i] += h * w2[o2 + (w2RowOff + j) * d + i];
  }
  return y;
}

/** Expert e of a bank applied to one row [d] (float64). */
export function referenceExpert(experts: ExpertBank, e: number, x: ArrayLike<number>): Float64Array {
  if (experts instanceof HeterogeneousExperts) return referenceExpert(experts.banks[experts.bankOf[e]], experts.localOf[e], x);
  if (!(experts instanceof FFNExperts)) throw new Error(`referenceExpert: unsupported expert bank ${experts.constructor.name}`);
  const d = experts.dModel;
  const f = experts.dFF;
  return ffnRow(x, d, f, experts.activation, experts.w1.data, experts.w3?.data ?? null, experts.w2.data, e * d * f, e * f * d);
}

/** The shared experts on one row, one expert at a time (their sum is the fused dense FFN). */
export function referenceShared(shared: SharedExperts, x: ArrayLike<number>): Float64Array {
  const d = shared.dModel;
  const f = shared.dFF;
  const h = shared.count * f;
  const y = new Float64Array(d);
  for (let s = 0; s < shared.count; s++) {
    // expert s owns hidden columns [s*f, (s+1)*f) of w1/w3 and rows of w2
    const ys = ffnRow(x, d, f, shared.activation, shared.w1.data, shared.w3?.data ?? null, shared.w2.data, s * f, 0, h, s * f);
    for (let i = 0; i < d; i++) y[i] += ys[i];
  }
  return y;
}

function row(x: Tensor, t: number): Float32Array {
  const d = x.shape[1];
  return x.data.subarray(t * d, (t + 1) * d);
}

/** Sparse routing: y[t] = sum over t's assignments a (with kept[a] != 0) of w_a * expert_{e_a}(x[t]). */
export function referenceSparse(x: Tensor, routing: SparseRouting, experts: ExpertBank, kept?: Uint8Array): Float64Array {
  const [T, d] = x.shape;
  const y = new Float64Array(T * d);
  const A = routing.tokenIdx.length;
  for (let t = 0; t < T; t++) {
    for (let a = 0; a < A; a++) {
      if (routing.tokenIdx[a] !== t) continue;
      if (kept && !kept[a]) continue;
      const out = referenceExpert(experts, routing.expertIdx[a], row(x, t));
      const w = routing.weights.data[a];
      for (let i = 0; i < d; i++) y[t * d + i] += w * out[i];
    }
  }
  return y;
}

/** Soft routing: slot inputs as explicit weighted sums over tokens, then outputs over slots. */
export function referenceSoft(x: Tensor, routing: SoftRouting, experts: ExpertBank): Float64Array {
  const [T, d] = x.shape;
  const S = routing.slotsPerExpert;
  const slots = experts.numExperts * S;
  const D = routing.dispatch.data;
  const C = routing.combine.data;
  const ys: Float64Array[] = [];
  for (let s = 0; s < slots; s++) {
    const xs = new Float64Array(d);
    for (let t = 0; t < T; t++) for (let i = 0; i < d; i++) xs[i] += D[t * slots + s] * x.data[t * d + i];
    ys.push(referenceExpert(experts, Math.floor(s / S), xs));
  }
  const y = new Float64Array(T * d);
  for (let t = 0; t < T; t++) for (let s = 0; s < slots; s++) for (let i = 0; i < d; i++) y[t * d + i] += C[t * slots + s] * ys[s][i];
  return y;
}

/** The whole layer's output for a given routing record (and capacity mask, if any). */
export function referenceMoE(layer: MoELayer, x: Tensor, out: RouterOutput, kept?: Uint8Array): Float64Array {
  const y = out.routing.kind === 'soft' ? referenceSoft(x, out.routing, layer.experts) : referenceSparse(x, out.routing, layer.experts, kept);
  if (layer.shared) {
    const [T, d] = x.shape;
    for (let t = 0; t < T; t++) {
      const s = referenceShared(layer.shared, row(x, t));
      for (let i = 0; i < d; i++) y[t * d + i] += s[i];
    }
  }
  return y;
}
