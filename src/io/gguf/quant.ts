/**
 * float32 <-> ggml tensor data for F32, F16, BF16, Q8_0 and Q4_0, with blocks exactly as ggml
 * defines them (ggml-quants.c reference quantisers):
 * - Q8_0: 32 values per 34-byte block: f16 scale d = max|x| / 127, then 32 int8 q = roundf(x / d)
 *   (round half away from zero); x ~ q * d.
 * - Q4_0: 32 values per 18-byte block: f16 d = m / -8 where m is the value of largest magnitude,
 *   then 16 bytes; byte j holds q[j] in its low nibble and q[j + 16] in its high nibble,
 *   q = min(15, trunc(x / d + 8.5)); x ~ (q - 8) * d.
 * Arithmetic is rounded to float32 at each step, as the C code does. The Q8_0/Q4_0 block codec is
 * the quantised kernels' own (src/kernels/quant.ts), so GGUF blocks load into them unchanged.
 */
import { f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32 } from '../../tensor/dtype.js';
import { GGML_TYPES_BY_NAME, type GGMLWritableType } from './format.js';
import { quantizeMatrix, quantMatrixFromBlocks, dequantizeMatrix } from '../../kernels/quant.js';

export const QK = 32;

/** Can `type` hold rows of `ne0` values (block quantisers need whole blocks)? */
export function rowsFit(type: GGMLWritableType, ne0: number): boolean {
  return ne0 % GGML_TYPES_BY_NAME.get(type)!.blockSize === 0;
}

/** Encode float32 values (rows of ne0) into ggml bytes of `type`. */
export function encodeTensor(x: Float32Array, type: GGMLWritableType, ne0: number): Uint8Array {
  const info = GGML_TYPES_BY_NAME.get(type)!;
  if (ne0 <= 0 || x.length % ne0 !== 0) throw new Error(`encode ${type}: ${x.length} values are not whole rows of ${ne0}`);
  if (ne0 % info.blockSize !== 0) throw new Error(`encode ${type}: row length ${ne0} is not a multiple of the block size ${info.blockSize}`);
  const out = new Uint8Array((x.length / info.blockSize) * info.typeSize);
  const dv = new DataView(out.buffer);
  switch (type) {
    case 'F32':
      for (let i = 0; i < x.length; i++) dv.setFloat32(i * 4, x[i], true);
      break;
    case 'F16':
      for (let i = 0; i < x.length; i++) dv.setUint16(i * 2, f32ToF16Bits(x[i]), true);
      break;
    case 'BF16':
      for (let i = 0; i < x.length; i++) dv.setUint16(i * 2, f32ToBf16Bits(x[i]), true);
      break;
    case 'Q8_0':
    case 'Q4_0':
      // the block codec lives with the quantised kernels, which read these bytes as they are
      out.set(quantizeMatrix(x, x.length / ne0, ne0, type === 'Q8_0' ? 'q8_0' : 'q4_0').data as Uint8Array);
      break;
  }
  return out;
}

/** Decode `n` values of ggml `type` from `bytes` into float32 (F32, F16, BF16, Q8_0, Q4_0). */
export function decodeTensor(bytes: Uint8Array, type: string, n: number): Float32Array {
  const info = GGML_TYPES_BY_NAME.get(type);
  if (!info) throw new Error(`decode: unknown ggml type ${type}`);
  if (n % info.blockSize !== 0) throw new Error(`decode ${type}: ${n} values are not whole blocks of ${info.blockSize}`);
  const need = (n / info.blockSize) * info.typeSize;
  if (bytes.length !== need) throw new Error(`decode ${type}: ${n} values need ${need} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (type) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16BitsToF32(dv.getUint16(i * 2, true));
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(dv.getUint16(i * 2, true));
      break;
    case 'Q8_0':
    case 'Q4_0':
      out.set(dequantizeMatrix(quantMatrixFromBlocks(type === 'Q8_0' ? 'q8_0' : 'q4_0', 1, n, bytes)));
      break;
    default:
      throw new Error(`decode: ggml type ${type} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0)`);
  }
  return out;
}
