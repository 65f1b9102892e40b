/**
 * Causal token mixing for all-MLP language models (Efficient Language Modeling with Sparse
 * all-MLP, Yu et al. 2022): the features are split into E equal chunks and chunk e is mixed over
 * the sequence by its own matrix W_e [Tmax, Tmax], masked to the lower triangle so position t
 * reads only positions s <= t. A sequence of T <= Tmax tokens uses the top-left T x T block,
 * so a prefix's outputs do not depend on how long the sequence later grows.
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';
import { getBackend } from '../backend.js';

/**
 * y[b,t,e*c+j] = bias[e,t] + sum_{s<=t} W[e,t,s] x[b,s,e*c+j], c = channels / E.
 * x [batch*seqLen, channels] (sequence-major rows), w [E, Tmax, Tmax], bias [E, Tmax] or null.
 * With `from` > 0 only positions from..seqLen-1 are computed (cached decoding: the new positions
 * against the whole context), y [batch*(seqLen-from), channels].
 */
export function causalTokenMix(x: Tensor, w: Tensor, bias: Tensor | null, batch: number, seqLen: number, from = 0): Tensor {
  if (w.ndim !== 3 || w.shape[1] !== w.shape[2]) throw new Error(`causalTokenMix: weight must be [E, Tmax, Tmax], got ${formatShape(w.shape)}`);
  const [E, Tmax] = w.shape;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seqLen) || seqLen < 1) throw new Error(`causalTokenMix: batch and seqLen must be positive integers, got ${batch} and ${seqLen}`);
  if (seqLen > Tmax) throw new Error(`causalTokenMix: sequence of ${seqLen} tokens exceeds the mixing matrices' ${Tmax} positions`);
  if (!Number.isInteger(from) || from < 0 || from >= seqLen) throw new Error(`causalTokenMix: from must be an integer in [0, seqLen = ${seqLen}), got ${from}`);
  if (x.ndim !== 2 || x.shape[0] !== batch * seqLen || x.shape[1] % E !== 0)
    throw new Error(`causalTokenMix: x must be [batch * seqLen = ${batch * seqLen}, channels divisible by ${E}], got ${formatShape(x.shape)}`);
  if (bias && (bias.ndim !== 2 || bias.shape[0] !== E || bias.shape[1] !== Tmax)) throw new Error(`causalTokenMix: bias must be [${E}, ${Tmax}], got ${formatShape(bias.shape)}`);
  const C = x.shape[1];
  const c = C / E;
  const T = seqLen;
  const To = T - from;
  const n = batch * c;
  const be = getBackend();
  // The mixing is E GEMMs on the backend: chunk e of every sequence side by side, Xp_e [T, batch * c],
  // times rows from..T-1 of tril(W_e[:T, :T]) (the upper triangle zeroed, so position t reads only
  // s <= t). The kernel computes the full rectangle, up to twice the causal multiply-adds, for its speed.
  const m = new Float32Array(E * To * T);
  const wd = w.data;
  for (let e = 0; e < E; e++)
    for (let i = 0; i < To; i++) {
      const src = (e * Tmax + from + i) * Tmax;
      m.set(wd.subarray(src, src + from + i + 1), (e * To + i) * T);
    }
  const xp = toChunkMajor(x.data, batch, T, E, c);
  const yp = be.matmul(m, xp, To, T, n, { batch: E });
  const out = fromChunkMajor(yp, batch, To, E, c);
  const bd = bias?.data;
  if (bd)
    for (let b = 0; b < batch; b++)
      for (let i = 0; i < To; i++)
        for (let e = 0; e < E; e++) {
          const b0 = bd[e * Tmax + from + i];
          const o = (b * To + i) * C + e * c;
          for (let j = 0; j < c; j++) out[o + j] += b0;
        }
  return result(out, [batch * To, C], bias ? [x, w, bias] : [x, w], (g) => {
    const gp = toChunkMajor(g, batch, To, E, c);
    if (x.requiresGrad) accumulateGrad(x, fromChunkMajor(be.matmul(m, gp, T, To, n, { batch: E, transA: true }), batch, T, E, c), true);
    if (w.requiresGrad) {
      // dW_e = dY_e Xp_e^T, kept on and below the diagonal of rows from..T-1 of the top-left block
      const gm = be.matmul(gp, xp, To, n, T, { batch: E, transB: true });
      const gw = new Float32Array(w.size);
      for (let e = 0; e < E; e++)
        for (let i = 0; i < To; i++) {
          const src = (e * To + i) * T;
          gw.set(gm.subarray(src, src + from + i + 1), (e * Tmax + from + i) * Tmax);
        }
      accumulateGrad(w, gw, true);
    }
    if (bias?.requiresGrad) {
      const gb = new Float32Array(bias.size);
      for (let e = 0; e < E; e++)
        for (let i = 0; i < To; i++) {
          let sg = 0;
          const o = (e * To + i) * n;
          for (let k = 0; k < n; k++) sg += gp[o + k];
          gb[e * Tmax + from + i] = sg;
        }
      accumulateGrad(bias, gb, true);
    }
  });
}

/** x [batch, T, E * c] (row-major) -> [E, T, batch * c]: chunk e of every sequence side by side. */
function toChunkMajor(x: Float32Array, batch: number, T: number, E: number, c: number): Float32Array {
  const out = new Float32Array(x.length);
  const n = batch * c;
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < T; t++)
      for (let e = 0; e < E; e++) {
        const src = ((b * T + t) * E + e) * c;
        out.set(x.subarray(src, src + c), (e * T + t) * n + b * c);
      }
  return out;
}

/** The inverse of toChunkMajor. */
function fromChunkMajor(p: Float32Array, batch: number, T: number, E: number, c: number): Float32Array {
  const out = new Float32Array(p.length);
  const n = batch * c;
  for (let e = 0; e < E; e++)
    for (let t = 0; t < T; t++)
      for (let b = 0; b < batch; b++) {
        const src = (e * T + t) * n + b * c;
        out.set(p.subarray(src, src + c), ((b * T + t) * E + e) * c);
      }
  return out;
}
