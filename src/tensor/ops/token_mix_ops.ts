/**
 * Causal token mixing for all-MLP language models (Efficient Language Modeling with Sparse
 * all-MLP, Yu et al. 2022): the features are split into E equal chunks and chunk e is mixed over
 * the sequence by its own matrix W_e [Tmax, Tmax], masked to the lower triangle so position t
 * reads only positions s <= t. A sequence of T <= Tmax tokens uses the top-left T x T block,
 * so a prefix's outputs do not depend on how long the sequence later grows.
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';

/**
 * y[b,t,e*c+j] = bias[e,t] + sum_{s<=t} W[e,t,s] x[b,s,e*c+j], c = channels / E.
 * x [batch*seqLen, channels] (sequence-major rows), w [E, Tmax, Tmax], bias [E, Tmax] or null.
 */
export function causalTokenMix(x: Tensor, w: Tensor, bias: Tensor | null, batch: number, seqLen: number): Tensor {
  if (w.ndim !== 3 || w.shape[1] !== w.shape[2]) throw new Error(`causalTokenMix: weight must be [E, Tmax, Tmax], got ${formatShape(w.shape)}`);
  const [E, Tmax] = w.shape;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seqLen) || seqLen < 1) throw new Error(`causalTokenMix: batch and seqLen must be positive integers, got ${batch} and ${seqLen}`);
  if (seqLen > Tmax) throw new Error(`causalTokenMix: sequence of ${seqLen} tokens exceeds the mixing matrices' ${Tmax} positions`);
  if (x.ndim !== 2 || x.shape[0] !== batch * seqLen || x.shape[1] % E !== 0)
    throw new Error(`causalTokenMix: x must be [batch * seqLen = ${batch * seqLen}, channels divisible by ${E}], got ${formatShape(x.shape)}`);
  if (bias && (bias.ndim !== 2 || bias.shape[0] !== E || bias.shape[1] !== Tmax)) throw new Error(`causalTokenMix: bias must be [${E}, ${Tmax}], got ${formatShape(bias.shape)}`);
  const C = x.shape[1];
  const c = C / E;
  const xd = x.data;
  const wd = w.data;
  const bd = bias?.data;
  const out = new Float32Array(x.size);
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < seqLen; t++) {
      const o = (b * seqLen + t) * C;
      for (let e = 0; e < E; e++) {
        const wo = (e * Tmax + t) * Tmax;
        const co = e * c;
        const b0 = bd ? bd[e * Tmax + t] : 0;
        for (let j = 0; j < c; j++) out[o + co + j] = b0;
        for (let s = 0; s <= t; s++) {
          const ws = wd[wo + s];
          const xo = (b * seqLen + s) * C + co;
          for (let j = 0; j < c; j++) out[o + co + j] += ws * xd[xo + j];
        }
      }
    }
  return result(out, x.shape, bias ? [x, w, bias] : [x, w], (g) => {
    const gx = x.requiresGrad ? new Float32Array(x.size) : null;
    const gw = w.requiresGrad ? new Float32Array(w.size) : null;
    const gb = bias?.requiresGrad ? new Float32Array(bias.size) : null;
    for (let b = 0; b < batch; b++)
      for (let t = 0; t < seqLen; t++) {
        const o = (b * seqLen + t) * C;
        for (let e = 0; e < E; e++) {
          const wo = (e * Tmax + t) * Tmax;
          const co = e * c;
          if (gb) {
            let sg = 0;
            for (let j = 0; j < c; j++) sg += g[o + co + j];
            gb[e * Tmax + t] += sg;
          }
          for (let s = 0; s <= t; s++) {
            const xo = (b * seqLen + s) * C + co;
            if (gw) {
              let acc = 0;
              for (let j = 0; j < c; j++) acc += g[o + co + j] * xd[xo + j];
              gw[wo + s] += acc;
            }
            if (gx) {
              const ws = wd[wo + s];
              for (let j = 0; j < c; j++) gx[xo + j] += ws * g[o + co + j];
            }
          }
        }
      }
    if (gx) accumulateGrad(x, gx, true);
    if (gw) accumulateGrad(w, gw, true);
    if (gb && bias) accumulateGrad(bias, gb, true);
  });
}
