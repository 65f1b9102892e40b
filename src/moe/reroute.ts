/**
 * Test-time re-routing after R2-T2: Re-Routing in Test-Time for Multimodal Mixture-of-Experts
 * (2025), here for text and per token: a token's routing weights move toward the routing weights
 * its k nearest reference tokens (router inputs the model handled well, by cosine similarity)
 * received, by kernel regression: p' = (1 − λ) p + λ Σ_i w_i p_i with w ∝ exp(cos_i / τ). The
 * token keeps its number of experts; the set is the top of p', weighted by p'.
 */
import type { Tensor } from '../tensor/tensor.js';
import type { RouterOutput } from './types.js';
import { checkOverridable, reselect, type OverrideInfo, type RoutingOverride } from './override.js';

/** One MoE layer's reference: n router inputs (unit length, [n, d]) and their routing probabilities [n, E]. */
export interface RerouteReference {
  rows: Float32Array;
  probs: Float32Array;
  n: number;
  d: number;
  numExperts: number;
}

/** The kNN re-routing knobs. */
export interface RerouteOptions {
  /** Neighbours per token (default 8). */
  k?: number;
  /** Weight λ of the neighbours' routing in [0, 1] (default 0.5; 1: the neighbours' alone). */
  lambda?: number;
  /** Kernel temperature τ on cosine similarity (default 0.1). */
  temperature?: number;
}

/** Unit-length copies of rows [n, d] (a zero row stays zero). */
export function unitRows(x: ArrayLike<number>, n: number, d: number): Float32Array {
  const out = new Float32Array(n * d);
  for (let t = 0; t < n; t++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[t * d + j] * x[t * d + j];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) out[t * d + j] = x[t * d + j] * inv;
  }
  return out;
}

/** The kNN kernel-regression re-routing of one layer. */
export class KnnReroute implements RoutingOverride {
  readonly name = 'knn-reroute';
  readonly k: number;
  readonly lambda: number;
  readonly temperature: number;
  constructor(
    readonly ref: RerouteReference,
    opts: RerouteOptions = {},
  ) {
    this.k = opts.k ?? 8;
    this.lambda = opts.lambda ?? 0.5;
    this.temperature = opts.temperature ?? 0.1;
    if (!(Number.isInteger(this.k) && this.k >= 1)) throw new Error(`reroute: k must be an integer >= 1, got ${this.k}`);
    if (!(this.lambda >= 0 && this.lambda <= 1)) throw new Error(`reroute: lambda must be in [0, 1], got ${this.lambda}`);
    if (!(this.temperature > 0 && Number.isFinite(this.temperature))) throw new Error(`reroute: temperature must be a positive number, got ${this.temperature}`);
    if (ref.n < 1) throw new Error('reroute: the reference holds no tokens');
    if (ref.rows.length !== ref.n * ref.d || ref.probs.length !== ref.n * ref.numExperts) throw new Error(`reroute: reference arrays do not match n=${ref.n}, d=${ref.d}, E=${ref.numExperts}`);
  }

  apply(x: Tensor, out: RouterOutput, info: OverrideInfo): RouterOutput {
    const T = checkOverridable(out, info, 'reroute');
    const E = info.numExperts;
    const { rows, probs, n, d } = this.ref;
    if (E !== this.ref.numExperts || x.shape[1] !== d) throw new Error(`reroute: the reference has ${this.ref.numExperts} experts x width ${d}, the layer ${E} x ${x.shape[1]}`);
    const q = unitRows(x.data, T, d);
    const k = Math.min(this.k, n);
    const p = out.probs.data;
    const blended = new Float32Array(T * E);
    const sim = new Float32Array(n);
    const nb = new Int32Array(k);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += q[t * d + j] * rows[i * d + j];
        sim[i] = s;
      }
      // the k most similar (ties to the earlier reference token)
      let m = 0;
      for (let i = 0; i < n; i++) {
        if (m < k) m++;
        else if (!(sim[i] > sim[nb[m - 1]])) continue;
        let j = m - 1;
        while (j > 0 && sim[nb[j - 1]] < sim[i]) {
          nb[j] = nb[j - 1];
          j--;
        }
        nb[j] = i;
      }
      let wsum = 0;
      const w = new Float64Array(k);
      for (let j = 0; j < k; j++) {
        w[j] = Math.exp((sim[nb[j]] - sim[nb[0]]) / this.temperature);
        wsum += w[j];
      }
      for (let e = 0; e < E; e++) {
        let r = 0;
        for (let j = 0; j < k; j++) r += w[j] * probs[nb[j] * E + e];
        blended[t * E + e] = (1 - this.lambda) * p[t * E + e] + (this.lambda * r) / wsum;
      }
    }
    return reselect(
      out,
      T,
      E,
      (t, cur) =>
        Array.from({ length: E }, (_, e) => e)
          .sort((a, b) => blended[t * E + b] - blended[t * E + a] || a - b)
          .slice(0, cur.length),
      blended,
    );
  }
}
