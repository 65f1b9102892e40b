/**
 * A naive reference MoE, written as plainly as possible to be the oracle of the fast path:
 * loop over tokens, loop over that token's assignments, and compute the expert FFN densely in
 * float64 from the same weights. No sorting, no grouping, no autograd. Slow on purpose.
 */
import type { Tensor } from '../tensor/tensor.js';
import type { ExpertBank, RouterOutput, SoftRouting, SparseRouting } from './types.js';
import type { SharedExpertBank } from './experts/registry.js';
import type { MoELayer } from './layer.js';

/** Expert e of a bank applied to one row [d] (float64): the bank's own dense oracle. */
export function referenceExpert(experts: ExpertBank, e: number, x: ArrayLike<number>): Float64Array {
  if (!experts.referenceForward) throw new Error(`referenceExpert: expert bank ${experts.constructor.name} has no referenceForward`);
  return experts.referenceForward(e, x);
}

/** The shared experts on one row (float64). */
export function referenceShared(shared: SharedExpertBank, x: ArrayLike<number>): Float64Array {
  return shared.referenceForward(x);
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
