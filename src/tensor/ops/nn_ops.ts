/** Fused neural-network ops: norms, cross-entropy, dropout, rotary embeddings, causal attention. */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { getBackend } from '../backend.js';
import { formatShape } from '../shape.js';
import { maskMul } from './elementwise.js';
import type { Rng } from '../random.js';

function lastDim(x: Tensor, op: string): [number, number] {
  if (x.ndim < 1) throw new Error(`${op}: scalar input`);
  const d = x.shape[x.ndim - 1];
  return [d === 0 ? 0 : x.size / d, d];
}

// The backward loops below are module-level functions called from the ops' backward closures,
// not code inside them: every op call makes a fresh closure, and V8 (Node 20, --trace-opt) kept
// re-optimising those instances while their loops ran unoptimised code (tens of ns per element);
// a named top-level function is optimised once and stays so (see moe_ops.ts).

/** rmsNorm's backward over [rows, d]: input gradient gx and gamma gradient gg (either may be null). */
function rmsNormBackward(xd: Float32Array, gd: Float32Array, rinv: Float32Array, g: Float32Array, gx: Float32Array | null, gg: Float32Array | null, rows: number, d: number): void {
  // separate loops per output keep the hot loops branch-free
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    const ri = rinv[r];
    if (gx !== null) {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += g[o + j] * gd[j] * xd[o + j];
      const c = (ri * ri * ri * dot) / d;
      for (let j = 0; j < d; j++) gx[o + j] = ri * g[o + j] * gd[j] - xd[o + j] * c;
    }
    if (gg !== null) for (let j = 0; j < d; j++) gg[j] += g[o + j] * xd[o + j] * ri;
  }
}

/** layerNorm's backward over [rows, d]: gx, gg, gb (each may be null). */
function layerNormBackward(
  xhat: Float32Array,
  gd: Float32Array,
  rinv: Float32Array,
  g: Float32Array,
  gx: Float32Array | null,
  gg: Float32Array | null,
  gb: Float32Array | null,
  rows: number,
  d: number,
): void {
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let m1 = 0;
    let m2 = 0;
    for (let j = 0; j < d; j++) {
      const dh = g[o + j] * gd[j];
      m1 += dh;
      m2 += dh * xhat[o + j];
      if (gg !== null) gg[j] += g[o + j] * xhat[o + j];
      if (gb !== null) gb[j] += g[o + j];
    }
    m1 /= d;
    m2 /= d;
    if (gx !== null) for (let j = 0; j < d; j++) gx[o + j] = rinv[r] * (g[o + j] * gd[j] - m1 - xhat[o + j] * m2);
  }
}

/** crossEntropy's backward into zeroed gx [N, V]: (softmax - onehot) * c for rows whose target counts. */
function crossEntropyBackward(d: Float32Array, lse: Float64Array, targets: Int32Array, ignoreIndex: number, c: number, gx: Float32Array, N: number, V: number): void {
  for (let i = 0; i < N; i++) {
    const t = targets[i];
    if (t === ignoreIndex) continue;
    const o = i * V;
    for (let j = 0; j < V; j++) gx[o + j] = Math.exp(d[o + j] - lse[i]) * c;
    gx[o + t] -= c;
  }
}

/** Causal softmax backward in place: dS = P * (dP - rowsum(dP * P)) * scale over dp's [bh, Tq, Tk] buffer. */
function causalSoftmaxBackward(p: Float32Array, dp: Float32Array, bh: number, Tq: number, Tk: number, off: number, scale: number): void {
  for (let b = 0; b < bh; b++) {
    for (let i = 0; i < Tq; i++) {
      const o = (b * Tq + i) * Tk;
      const lim = off + i;
      let dot = 0;
      for (let j = 0; j <= lim; j++) dot += dp[o + j] * p[o + j];
      for (let j = 0; j <= lim; j++) dp[o + j] = p[o + j] * (dp[o + j] - dot) * scale;
      for (let j = lim + 1; j < Tk; j++) dp[o + j] = 0;
    }
  }
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * gamma (Zhang & Sennrich 2019). */
export function rmsNorm(x: Tensor, gamma: Tensor, eps = 1e-6): Tensor {
  const [rows, d] = lastDim(x, 'rmsNorm');
  if (gamma.size !== d) throw new Error(`rmsNorm: gamma ${formatShape(gamma.shape)} does not match last dim of ${formatShape(x.shape)}`);
  const xd = x.data;
  const gd = gamma.data;
  const out = new Float32Array(x.size);
  const rinv = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let ss = 0;
    for (let j = 0; j < d; j++) ss += xd[o + j] * xd[o + j];
    const ri = 1 / Math.sqrt(ss / d + eps);
    rinv[r] = ri;
    for (let j = 0; j < d; j++) out[o + j] = xd[o + j] * ri * gd[j];
  }
  return result(out, x.shape, [x, gamma], (g) => {
    const gx = x.requiresGrad ? new Float32Array(x.size) : null;
    const gg = gamma.requiresGrad ? new Float32Array(d) : null;
    rmsNormBackward(xd, gd, rinv, g, gx, gg, rows, d);
    if (gx) accumulateGrad(x, gx, true);
    if (gg) accumulateGrad(gamma, gg, true);
  });
}

/** LayerNorm over the last axis with affine gamma/beta (Ba et al. 2016). */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor | null, eps = 1e-5): Tensor {
  const [rows, d] = lastDim(x, 'layerNorm');
  if (gamma.size !== d || (beta && beta.size !== d)) throw new Error(`layerNorm: gamma/beta do not match last dim of ${formatShape(x.shape)}`);
  const xd = x.data;
  const gd = gamma.data;
  const out = new Float32Array(x.size);
  const xhat = new Float32Array(x.size);
  const rinv = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let mu = 0;
    for (let j = 0; j < d; j++) mu += xd[o + j];
    mu /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (xd[o + j] - mu) ** 2;
    const ri = 1 / Math.sqrt(v / d + eps);
    rinv[r] = ri;
    for (let j = 0; j < d; j++) {
      const h = (xd[o + j] - mu) * ri;
      xhat[o + j] = h;
      out[o + j] = h * gd[j] + (beta ? beta.data[j] : 0);
    }
  }
  const parents = beta ? [x, gamma, beta] : [x, gamma];
  return result(out, x.shape, parents, (g) => {
    const gx = x.requiresGrad ? new Float32Array(x.size) : null;
    const gg = gamma.requiresGrad ? new Float32Array(d) : null;
    const gb = beta && beta.requiresGrad ? new Float32Array(d) : null;
    layerNormBackward(xhat, gd, rinv, g, gx, gg, gb, rows, d);
    if (gx) accumulateGrad(x, gx, true);
    if (gg) accumulateGrad(gamma, gg, true);
    if (gb && beta) accumulateGrad(beta, gb, true);
  });
}

/**
 * Mean cross-entropy of logits [N, V] against integer targets; targets equal to `ignoreIndex`
 * do not count. Returns a scalar (0 when every target is ignored).
 */
export function crossEntropy(logits: Tensor, targets: Int32Array, ignoreIndex = -100): Tensor {
  if (logits.ndim !== 2) throw new Error(`crossEntropy: logits must be [N, V], got ${formatShape(logits.shape)}`);
  const [N, V] = logits.shape;
  if (targets.length !== N) throw new Error(`crossEntropy: ${targets.length} targets for ${N} rows of logits`);
  const d = logits.data;
  const lse = new Float64Array(N);
  let total = 0;
  let count = 0;
  for (let i = 0; i < N; i++) {
    const t = targets[i];
    if (t === ignoreIndex) continue;
    if (t < 0 || t >= V) throw new Error(`crossEntropy: target ${t} at row ${i} out of range [0, ${V})`);
    const o = i * V;
    let m = -Infinity;
    for (let j = 0; j < V; j++) if (d[o + j] > m) m = d[o + j];
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(d[o + j] - m);
    lse[i] = m + Math.log(s);
    total += lse[i] - d[o + t];
    count++;
  }
  const loss = count > 0 ? total / count : 0;
  return result(new Float32Array([loss]), [], [logits], (g) => {
    const gx = new Float32Array(logits.size);
    if (count === 0) return accumulateGrad(logits, gx, true);
    crossEntropyBackward(d, lse, targets, ignoreIndex, g[0] / count, gx, N, V);
    accumulateGrad(logits, gx, true);
  });
}

/** Inverted dropout: zero with probability p, scale survivors by 1/(1-p). Identity when p == 0. */
export function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  if (p === 0) return x;
  const mask = new Float32Array(x.size);
  const s = 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.next() < p ? 0 : s;
  return maskMul(x, mask);
}

/**
 * cos/sin tables for rotary embeddings, [positions x dim/2]. `invFreq` (dim/2 frequencies)
 * replaces base^(-2i/dim) for scaled RoPE variants; `scale` multiplies cos and sin (YaRN's
 * attention factor).
 */
export function ropeTables(positions: number, dim: number, base = 10000, offset = 0, invFreq?: Float32Array, scale = 1): { cos: Float32Array; sin: Float32Array } {
  const half = dim / 2;
  if (invFreq && invFreq.length !== half) throw new Error(`ropeTables: ${invFreq.length} inverse frequencies for head dim ${dim} (need ${half})`);
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const theta = (p + offset) * (invFreq ? invFreq[i] : Math.pow(base, (-2 * i) / dim));
      cos[p * half + i] = Math.cos(theta) * scale;
      sin[p * half + i] = Math.sin(theta) * scale;
    }
  }
  return { cos, sin };
}

/**
 * Rotary position embedding (Su et al. 2021 "RoFormer") on x [..., T, D], rotating the pairs
 * (i, i + D/2) as Hugging Face Llama/Mixtral do; token t sits at position offset + t.
 */
export function rope(x: Tensor, offset = 0, base = 10000): Tensor {
  if (x.ndim < 2) throw new Error(`rope: expected [..., T, D], got ${formatShape(x.shape)}`);
  const T = x.shape[x.ndim - 2];
  const D = x.shape[x.ndim - 1];
  if (D % 2 !== 0) throw new Error(`rope: head dim ${D} must be even`);
  const half = D / 2;
  const { cos, sin } = ropeTables(T, D, base, offset);
  const rows = x.size / (T * D || 1);
  const apply = (src: Float32Array, sign: number): Float32Array => {
    const dst = new Float32Array(src.length);
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < T; t++) {
        const o = (r * T + t) * D;
        const c = t * half;
        for (let i = 0; i < half; i++) {
          const a = src[o + i];
          const b = src[o + i + half];
          const cs = cos[c + i];
          const sn = sign * sin[c + i];
          dst[o + i] = a * cs - b * sn;
          dst[o + i + half] = b * cs + a * sn;
        }
      }
    }
    return dst;
  };
  return result(apply(x.data, 1), x.shape, [x], (g) => accumulateGrad(x, apply(g, -1), true));
}

/**
 * Causal scaled-dot-product attention. q [B, H, Tq, D], k and v [B, H, Tk, D] with Tk >= Tq;
 * query i sits at position Tk - Tq + i (so a KV cache works) and sees keys at positions <= its own.
 */
export function causalAttention(q: Tensor, k: Tensor, v: Tensor): Tensor {
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) {
    throw new Error(`causalAttention: expected 4-D [B, H, T, D], got ${formatShape(q.shape)}, ${formatShape(k.shape)}, ${formatShape(v.shape)}`);
  }
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape.some((s, i) => s !== k.shape[i]) || Tk < Tq) {
    throw new Error(`causalAttention: q ${formatShape(q.shape)} incompatible with k ${formatShape(k.shape)} / v ${formatShape(v.shape)}`);
  }
  const be = getBackend();
  const bh = B * H;
  const scale = 1 / Math.sqrt(D);
  const off = Tk - Tq;
  const s = be.matmul(q.data, k.data, Tq, D, Tk, { transB: true, batch: bh });
  // masked, stable softmax in place: s becomes the attention probabilities
  for (let b = 0; b < bh; b++) {
    for (let i = 0; i < Tq; i++) {
      const o = (b * Tq + i) * Tk;
      const lim = off + i;
      let m = -Infinity;
      for (let j = 0; j <= lim; j++) {
        const val = s[o + j] * scale;
        s[o + j] = val;
        if (val > m) m = val;
      }
      let sum = 0;
      for (let j = 0; j <= lim; j++) {
        const e = Math.exp(s[o + j] - m);
        s[o + j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      for (let j = 0; j <= lim; j++) s[o + j] *= inv;
      for (let j = lim + 1; j < Tk; j++) s[o + j] = 0;
    }
  }
  const p = s;
  const out = be.matmul(p, v.data, Tq, Tk, D, { batch: bh });
  return result(out, q.shape, [q, k, v], (g) => {
    if (v.requiresGrad) accumulateGrad(v, be.matmul(p, g, Tk, Tq, D, { transA: true, batch: bh }), true);
    if (!q.requiresGrad && !k.requiresGrad) return;
    const dp = be.matmul(g, v.data, Tq, D, Tk, { transB: true, batch: bh });
    causalSoftmaxBackward(p, dp, bh, Tq, Tk, off, scale);
    if (q.requiresGrad) accumulateGrad(q, be.matmul(dp, k.data, Tq, Tk, D, { batch: bh }), true);
    if (k.requiresGrad) accumulateGrad(k, be.matmul(dp, q.data, Tk, Tq, D, { transA: true, batch: bh }), true);
  });
}
