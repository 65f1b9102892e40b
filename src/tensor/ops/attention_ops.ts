/**
 * Head layout ops for attention, fused with rotary embeddings: one pass each way instead of
 * reshape + permute + rope (each a full copy with its own backward pass).
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';
import { ropeTables } from './nn_ops.js';

/**
 * splitHeads' copy (toHeads: token-major -> [B, H, T, Dh]) or its inverse, rotating pairs by the
 * tables (angle sign `sign`; rows indexed by b*T + t when perRow, else by t) when given. A
 * module-level function rather than a per-call closure: V8 optimises it once (see moe_ops.ts).
 */
function moveHeads(
  src: Float32Array,
  dst: Float32Array,
  toHeads: boolean,
  sign: number,
  B: number,
  T: number,
  H: number,
  Dh: number,
  cos: Float32Array | null,
  sin: Float32Array | null,
  perRow: boolean,
): void {
  const D = H * Dh;
  const half = Dh / 2;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * D;
      for (let h = 0; h < H; h++) {
        const hp = ((b * H + h) * T + t) * Dh;
        const xo = row + h * Dh;
        const so = toHeads ? xo : hp;
        const dOff = toHeads ? hp : xo;
        if (cos === null || sin === null) {
          for (let i = 0; i < Dh; i++) dst[dOff + i] = src[so + i];
          continue;
        }
        const c = (perRow ? b * T + t : t) * half;
        for (let i = 0; i < half; i++) {
          const a = src[so + i];
          const bb = src[so + i + half];
          const cs = cos[c + i];
          const sn = sign * sin[c + i];
          dst[dOff + i] = a * cs - bb * sn;
          dst[dOff + i + half] = bb * cs + a * sn;
        }
      }
    }
  }
}

/** mergeHeads' copy ([B, H, T, Dh] -> token-major when toTokens, else back); module-level like moveHeads. */
function mergeMove(src: Float32Array, dst: Float32Array, toTokens: boolean, B: number, H: number, T: number, Dh: number): void {
  const D = H * Dh;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const hp = ((b * H + h) * T + t) * Dh;
        const xo = (b * T + t) * D + h * Dh;
        if (toTokens) dst.set(src.subarray(hp, hp + Dh), xo);
        else dst.set(src.subarray(xo, xo + Dh), hp);
      }
    }
  }
}

/**
 * x [B*T, H*Dh] (token-major projections) -> [B, H, T, Dh]; with `rope`, rotates pairs
 * (i, i + Dh/2) by the angle of position offset + t (as `rope` does), or of `positions[b*T + t]`
 * when given (rows gathered from longer sequences, e.g. Mixture-of-Depths blocks).
 */
export function splitHeads(x: Tensor, B: number, T: number, H: number, rope?: { offset: number; theta: number; invFreq?: Float32Array; scale?: number; positions?: Int32Array }): Tensor {
  if (x.ndim !== 2 || x.shape[0] !== B * T || x.shape[1] % H !== 0) {
    throw new Error(`splitHeads: expected [${B}*${T}, H*Dh] with H=${H}, got ${formatShape(x.shape)}`);
  }
  const Dh = x.shape[1] / H;
  if (rope && Dh % 2 !== 0) throw new Error(`splitHeads: head dim ${Dh} must be even for rotary embeddings`);
  const pos = rope?.positions;
  if (pos && pos.length !== B * T) throw new Error(`splitHeads: ${pos.length} positions for ${B}*${T} rows`);
  const tables = rope ? (pos ? ropeTablesAt(pos, Dh, rope.theta, rope.invFreq, rope.scale ?? 1) : ropeTables(T, Dh, rope.theta, rope.offset, rope.invFreq, rope.scale ?? 1)) : null;
  const out = new Float32Array(x.size);
  const cos = tables ? tables.cos : null;
  const sin = tables ? tables.sin : null;
  const perRow = pos !== undefined;
  moveHeads(x.data, out, true, 1, B, T, H, Dh, cos, sin, perRow);
  return result(out, [B, H, T, Dh], [x], (g) => {
    const gx = new Float32Array(x.size);
    moveHeads(g, gx, false, -1, B, T, H, Dh, cos, sin, perRow);
    accumulateGrad(x, gx, true);
  });
}

/** cos/sin tables [positions.length x dim/2] at explicit positions (as ropeTables computes them). */
function ropeTablesAt(positions: Int32Array, dim: number, base: number, invFreq: Float32Array | undefined, scale: number): { cos: Float32Array; sin: Float32Array } {
  const half = dim / 2;
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  for (let r = 0; r < positions.length; r++) {
    for (let i = 0; i < half; i++) {
      const theta = positions[r] * (invFreq ? invFreq[i] : Math.pow(base, (-2 * i) / dim));
      cos[r * half + i] = Math.cos(theta) * scale;
      sin[r * half + i] = Math.sin(theta) * scale;
    }
  }
  return { cos, sin };
}

/** [B, H, T, Dh] -> [B*T, H*Dh] (the inverse layout of splitHeads, without rotation). */
export function mergeHeads(o: Tensor): Tensor {
  if (o.ndim !== 4) throw new Error(`mergeHeads: expected [B, H, T, Dh], got ${formatShape(o.shape)}`);
  const [B, H, T, Dh] = o.shape;
  const D = H * Dh;
  const out = new Float32Array(o.size);
  mergeMove(o.data, out, true, B, H, T, Dh);
  return result(out, [B * T, D], [o], (g) => {
    const go = new Float32Array(o.size);
    mergeMove(g, go, false, B, H, T, Dh);
    accumulateGrad(o, go, true);
  });
}

/**
 * Causal attention with an optional sliding window and optional attention sinks (GPT-OSS):
 * q [B, H, Tq, D], k and v [B, H, Tk, D] (query i at position Tk - Tq + i). With `window` w a
 * query sees the keys at positions p - w < j <= p (Mistral/GPT-OSS sliding window). With
 * `sinks` [H] each head's softmax gets one extra logit (unscaled) that takes probability mass but
 * adds no value (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023;
 * learned per head as in GPT-OSS). Differentiable in q, k, v and sinks.
 */
export function windowedAttention(q: Tensor, k: Tensor, v: Tensor, opts: { window?: number; sinks?: Tensor | null; scale?: number } = {}): Tensor {
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error(`windowedAttention: expected 4-D [B, H, T, D], got ${formatShape(q.shape)}, ${formatShape(k.shape)}, ${formatShape(v.shape)}`);
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape.some((s, i) => s !== k.shape[i]) || Tk < Tq) {
    throw new Error(`windowedAttention: q ${formatShape(q.shape)} incompatible with k ${formatShape(k.shape)} / v ${formatShape(v.shape)}`);
  }
  const sinks = opts.sinks ?? null;
  if (sinks && (sinks.ndim !== 1 || sinks.shape[0] !== H)) throw new Error(`windowedAttention: sinks must be [${H}], got ${formatShape(sinks.shape)}`);
  const w = opts.window ?? Infinity;
  if (!(w >= 1)) throw new Error(`windowedAttention: window must be >= 1, got ${w}`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const off = Tk - Tq;
  const qd = q.data;
  const kd = k.data;
  const vd = v.data;
  const P = new Float32Array(B * H * Tq * Tk);
  const psink = new Float32Array(B * H * Tq);
  const out = new Float32Array(B * H * Tq * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      for (let i = 0; i < Tq; i++) {
        const pos = off + i;
        const lo = Math.max(0, w === Infinity ? 0 : pos - w + 1);
        const row = (bh * Tq + i) * Tk;
        const qo = (bh * Tq + i) * D;
        let m = sinks ? sinks.data[h] : -Infinity;
        for (let j = lo; j <= pos; j++) {
          const ko = (bh * Tk + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += qd[qo + d] * kd[ko + d];
          s *= scale;
          P[row + j] = s;
          if (s > m) m = s;
        }
        let sum = 0;
        for (let j = lo; j <= pos; j++) {
          const e = Math.exp(P[row + j] - m);
          P[row + j] = e;
          sum += e;
        }
        const es = sinks ? Math.exp(sinks.data[h] - m) : 0;
        sum += es;
        const inv = 1 / sum;
        psink[bh * Tq + i] = es * inv;
        for (let j = lo; j <= pos; j++) {
          const p = (P[row + j] *= inv);
          const vo = (bh * Tk + j) * D;
          for (let d = 0; d < D; d++) out[qo + d] += p * vd[vo + d];
        }
      }
    }
  }
  const parents = sinks ? [q, k, v, sinks] : [q, k, v];
  return result(out, q.shape, parents, (g) => {
    const gq = new Float32Array(q.size);
    const gk = new Float32Array(k.size);
    const gv = new Float32Array(v.size);
    const gs = sinks ? new Float32Array(H) : null;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const bh = b * H + h;
        for (let i = 0; i < Tq; i++) {
          const pos = off + i;
          const lo = Math.max(0, w === Infinity ? 0 : pos - w + 1);
          const row = (bh * Tq + i) * Tk;
          const qo = (bh * Tq + i) * D;
          // dP_j = g . v_j; dS_j = P_j (dP_j - sum_k P_k dP_k); the sink's dP is 0
          let dot = 0;
          const dP = new Float64Array(pos - lo + 1);
          for (let j = lo; j <= pos; j++) {
            const vo = (bh * Tk + j) * D;
            let s = 0;
            for (let d = 0; d < D; d++) {
              s += g[qo + d] * vd[vo + d];
              gv[vo + d] += P[row + j] * g[qo + d];
            }
            dP[j - lo] = s;
            dot += P[row + j] * s;
          }
          if (gs) gs[h] -= psink[bh * Tq + i] * dot;
          for (let j = lo; j <= pos; j++) {
            const ds = P[row + j] * (dP[j - lo] - dot) * scale;
            const ko = (bh * Tk + j) * D;
            for (let d = 0; d < D; d++) {
              gq[qo + d] += ds * kd[ko + d];
              gk[ko + d] += ds * qd[qo + d];
            }
          }
        }
      }
    }
    if (q.requiresGrad) accumulateGrad(q, gq, true);
    if (k.requiresGrad) accumulateGrad(k, gk, true);
    if (v.requiresGrad) accumulateGrad(v, gv, true);
    if (sinks && gs && sinks.requiresGrad) accumulateGrad(sinks, gs, true);
  });
}
