/**
 * Head layout ops for attention, fused with rotary embeddings: one pass each way instead of
 * reshape + permute + rope (each a full copy with its own backward pass).
 */
import { Tensor, result, accumulateGrad } from '../tensor.js';
import { formatShape } from '../shape.js';
import { ropeTables } from './nn_ops.js';

/**
 * x [B*T, H*Dh] (token-major projections) -> [B, H, T, Dh]; with `rope`, rotates pairs
 * (i, i + Dh/2) by the angle of position offset + t (as `rope` does).
 */
export function splitHeads(x: Tensor, B: number, T: number, H: number, rope?: { offset: number; theta: number; invFreq?: Float32Array; scale?: number }): Tensor {
  if (x.ndim !== 2 || x.shape[0] !== B * T || x.shape[1] % H !== 0) {
    throw new Error(`splitHeads: expected [${B}*${T}, H*Dh] with H=${H}, got ${formatShape(x.shape)}`);
  }
  const Dh = x.shape[1] / H;
  if (rope && Dh % 2 !== 0) throw new Error(`splitHeads: head dim ${Dh} must be even for rotary embeddings`);
  const half = Dh / 2;
  const tables = rope ? ropeTables(T, Dh, rope.theta, rope.offset, rope.invFreq, rope.scale ?? 1) : null;
  const move = (src: Float32Array, dst: Float32Array, toHeads: boolean, sign: number): void => {
    const D = H * Dh;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const row = (b * T + t) * D;
        for (let h = 0; h < H; h++) {
          const hp = ((b * H + h) * T + t) * Dh;
          const xo = row + h * Dh;
          const [so, dOff] = toHeads ? [xo, hp] : [hp, xo];
          if (!tables) {
            for (let i = 0; i < Dh; i++) dst[dOff + i] = src[so + i];
            continue;
          }
          const c = t * half;
          for (let i = 0; i < half; i++) {
            const a = src[so + i];
            const bb = src[so + i + half];
            const cs = tables.cos[c + i];
            const sn = sign * tables.sin[c + i];
            dst[dOff + i] = a * cs - bb * sn;
            dst[dOff + i + half] = bb * cs + a * sn;
          }
        }
      }
    }
  };
  const out = new Float32Array(x.size);
  move(x.data, out, true, 1);
  return result(out, [B, H, T, Dh], [x], (g) => {
    const gx = new Float32Array(x.size);
    move(g, gx, false, -1);
    accumulateGrad(x, gx, true);
  });
}

/** [B, H, T, Dh] -> [B*T, H*Dh] (the inverse layout of splitHeads, without rotation). */
export function mergeHeads(o: Tensor): Tensor {
  if (o.ndim !== 4) throw new Error(`mergeHeads: expected [B, H, T, Dh], got ${formatShape(o.shape)}`);
  const [B, H, T, Dh] = o.shape;
  const D = H * Dh;
  const move = (src: Float32Array, dst: Float32Array, toTokens: boolean): void => {
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
  };
  const out = new Float32Array(o.size);
  move(o.data, out, true);
  return result(out, [B * T, D], [o], (g) => {
    const go = new Float32Array(o.size);
    move(g, go, false);
    accumulateGrad(o, go, true);
  });
}
