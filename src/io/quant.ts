/**
 * Dequantisation of the quantised weight formats Hugging Face checkpoints ship, on load:
 * - F8_E4M3 with DeepSeek-V3's block scales: w = fp8(q) * weight_scale_inv[i / bs0, j / bs1]
 *   over 2-D weights in blocks of weight_block_size (default [128, 128]).
 * - MXFP4 (OCP Microscaling spec, 2023; GPT-OSS): `*_blocks` [..., G, 16] bytes with two FP4
 *   (E2M1) values each, low nibble first, and `*_scales` [..., G] E8M0 exponents (biased by
 *   127), one per block of 32 values; the result is [..., G * 32].
 */
import { bf16ToF32, f16ToF32 } from '../tensor/dtype.js';
import type { TensorEntry } from './safetensors.js';

/** The 256 F8_E4M3 (OCP FP8, "fn": no infinities, one NaN pattern per sign) values. */
const E4M3 = (() => {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1;
    const e = (b >> 3) & 0xf;
    const m = b & 0x7;
    if (e === 0xf && m === 0x7) t[b] = NaN;
    else if (e === 0) t[b] = s * (m / 8) * 2 ** -6;
    else t[b] = s * (1 + m / 8) * 2 ** (e - 7);
  }
  return t;
})();

/** F8_E5M2 (IEEE-like: infinities and NaNs). */
const E5M2 = (() => {
  const t = new Float32Array(256);
  for (let b = 0; b < 256; b++) {
    const s = b & 0x80 ? -1 : 1;
    const e = (b >> 2) & 0x1f;
    const m = b & 0x3;
    if (e === 0x1f) t[b] = m === 0 ? s * Infinity : NaN;
    else if (e === 0) t[b] = s * (m / 4) * 2 ** -14;
    else t[b] = s * (1 + m / 4) * 2 ** (e - 15);
  }
  return t;
})();

const FP4 = Float32Array.from([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6]);

/** Any float tensor (F32/F16/BF16/F64/F8) to float32, one fresh array (never aliasing the input). */
export function entryToFloat32(t: TensorEntry, name: string): Float32Array {
  if (t.code === 'F8_E4M3' || t.code === 'F8_E5M2') {
    const lut = t.code === 'F8_E4M3' ? E4M3 : E5M2;
    const src = t.data as Uint8Array;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = lut[src[i]];
    return out;
  }
  switch (t.dtype) {
    case 'float32':
      return (t.data as Float32Array).slice();
    case 'float16':
      return f16ToF32(t.data as Uint16Array);
    case 'bfloat16':
      return bf16ToF32(t.data as Uint16Array);
    case 'float64':
      return Float32Array.from(t.data as Float64Array);
    default:
      throw new Error(`tensor "${name}": dtype ${t.code ?? t.dtype} is not a float type (expected F32, F16, BF16, F8_E4M3)`);
  }
}

/** DeepSeek-V3 block-scaled FP8: `weight` [R, C] F8_E4M3 times `scale_inv` [ceil(R/b0), ceil(C/b1)]. */
export function dequantFp8Blocks(weight: TensorEntry, scaleInv: TensorEntry, block: readonly [number, number], name: string): Float32Array {
  if (weight.shape.length !== 2) throw new Error(`tensor "${name}": block-scaled FP8 weight must be 2-D, got [${weight.shape.join(', ')}]`);
  const [R, C] = weight.shape;
  const [b0, b1] = block;
  const sr = Math.ceil(R / b0);
  const sc = Math.ceil(C / b1);
  if (scaleInv.shape.length !== 2 || scaleInv.shape[0] !== sr || scaleInv.shape[1] !== sc) {
    throw new Error(`tensor "${name}_scale_inv": shape [${scaleInv.shape.join(', ')}], expected [${sr}, ${sc}] for weight [${R}, ${C}] in blocks of [${b0}, ${b1}]`);
  }
  const w = entryToFloat32(weight, name);
  const s = entryToFloat32(scaleInv, `${name}_scale_inv`);
  for (let r = 0; r < R; r++) {
    const srow = ((r / b0) | 0) * sc;
    for (let c = 0; c < C; c++) w[r * C + c] *= s[srow + ((c / b1) | 0)];
  }
  return w;
}

/** MXFP4 blocks [..., G, B] (uint8) and scales [..., G] (uint8 E8M0) -> float32 [..., G * B * 2]. */
export function dequantMxfp4(blocks: TensorEntry, scales: TensorEntry, name: string): { data: Float32Array; shape: number[] } {
  const bs = blocks.shape;
  const ss = scales.shape;
  if (blocks.dtype !== 'uint8' || scales.dtype !== 'uint8')
    throw new Error(`tensor "${name}": MXFP4 blocks and scales must be U8, got ${blocks.code ?? blocks.dtype} and ${scales.code ?? scales.dtype}`);
  if (bs.length < 2 || ss.length !== bs.length - 1 || ss.some((d, i) => d !== bs[i])) {
    throw new Error(`tensor "${name}": MXFP4 blocks [${bs.join(', ')}] and scales [${ss.join(', ')}] do not match (scales must be the blocks' shape without the last dim)`);
  }
  const B = bs[bs.length - 1];
  const groups = scales.data.length;
  const src = blocks.data as Uint8Array;
  const sc = scales.data as Uint8Array;
  const out = new Float32Array(groups * B * 2);
  for (let g = 0; g < groups; g++) {
    const m = 2 ** (sc[g] - 127);
    for (let j = 0; j < B; j++) {
      const v = src[g * B + j];
      const o = (g * B + j) * 2;
      out[o] = FP4[v & 0xf] * m;
      out[o + 1] = FP4[v >> 4] * m;
    }
  }
  return { data: out, shape: [...bs.slice(0, -2), bs[bs.length - 2] * B * 2] };
}
