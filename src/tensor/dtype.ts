/**
 * Storage dtypes and conversions on plain typed arrays (no Tensor dependency, so io, kernels and
 * the tensor layer can all use it).
 *
 * Half-precision values are stored as their raw 16-bit patterns in Uint16Array; int64 as
 * BigInt64Array; bool as Uint8Array (0/1). Compute happens in float32.
 */

export type DType = 'float64' | 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export const DTYPES: readonly DType[] = ['float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];

/** Bytes per element. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  float64: 8,
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

export function dtypeBytes(dtype: DType): number {
  const b = DTYPE_BYTES[dtype];
  if (b === undefined) throw new Error(`unknown dtype "${String(dtype)}"`);
  return b;
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'float64' || dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16';
}

/** The typed array that stores each dtype. */
export type StorageArray = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

type StorageCtor =
  Float64ArrayConstructor | Float32ArrayConstructor | Uint16ArrayConstructor | BigInt64ArrayConstructor | Int32ArrayConstructor | Int16ArrayConstructor | Int8ArrayConstructor | Uint8ArrayConstructor;

const STORAGE: Record<DType, StorageCtor> = {
  float64: Float64Array,
  float32: Float32Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  int16: Int16Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

export function storageConstructor(dtype: DType): StorageCtor {
  const c = STORAGE[dtype];
  if (!c) throw new Error(`unknown dtype "${String(dtype)}"`);
  return c;
}

/** Zero-filled storage for n elements. */
export function allocStorage(dtype: DType, n: number): StorageArray {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`allocStorage(${dtype}): length must be a non-negative integer, got ${n}`);
  return new (storageConstructor(dtype))(n);
}

/** Whether `data` is the storage array type for `dtype`. */
export function isStorageFor(dtype: DType, data: unknown): data is StorageArray {
  return data instanceof storageConstructor(dtype);
}

/** Product of dims, validating each. */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`shape[${i}] must be a non-negative integer, got ${d}`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new Error(`shape [${shape.join(', ')}] has too many elements`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// float16 (IEEE 754 binary16)

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/**
 * float32 -> float16 bits, round-to-nearest-even, with subnormals, +-0, +-inf and NaN.
 * A JS number argument is first rounded to float32 (as when it comes from a Float32Array), so
 * float64 inputs can suffer double rounding; convert from float32 data for exact results.
 */
export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const bits = u32buf[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) {
    // keep NaN quiet and non-zero; keep the top payload bits
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // result is subnormal (or zero): value = m * 2^-24 with m = full * 2^(e - 14)
    const shift = 14 - e;
    if (shift > 24) return sign; // below half the smallest subnormal (float32 subnormals included)
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1) === 1)) m++;
    return sign | m; // m == 0x400 carries into the smallest normal, which is the right encoding
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // carry may reach 0x7c00 = inf, as it should
  return sign | h;
}

/** float16 bits -> float32 value (exact). */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) {
    const v = mant * 5.960464477539063e-8; // 2^-24, exact
    return sign ? -v : v;
  }
  if (exp === 0x1f) u32buf[0] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
  else u32buf[0] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  return f32buf[0];
}

let f16Table: Float32Array | null = null;
function f16ToF32Table(): Float32Array {
  if (!f16Table) {
    // 256 KiB, built once: bulk decode becomes a lookup
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  return f16Table;
}

export function f32ToF16(src: ArrayLike<number>, out?: Uint16Array): Uint16Array {
  const o = out ?? new Uint16Array(src.length);
  if (o.length !== src.length) throw new Error(`f32ToF16: out has length ${o.length}, expected ${src.length}`);
  for (let i = 0; i < src.length; i++) o[i] = f32ToF16Bits(src[i]);
  return o;
}

export function f16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const o = out ?? new Float32Array(src.length);
  if (o.length !== src.length) throw new Error(`f16ToF32: out has length ${o.length}, expected ${src.length}`);
  const t = f16ToF32Table();
  for (let i = 0; i < src.length; i++) o[i] = t[src[i]];
  return o;
}

// ---------------------------------------------------------------------------------------------
// bfloat16 (top half of float32)

/** float32 -> bfloat16 bits, round-to-nearest-even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const bits = u32buf[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return (bits >>> 16) | 0x40;
  // cannot exceed 2^32: the largest non-NaN pattern is 0xff800000
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0];
}

export function f32ToBf16(src: ArrayLike<number>, out?: Uint16Array): Uint16Array {
  const o = out ?? new Uint16Array(src.length);
  if (o.length !== src.length) throw new Error(`f32ToBf16: out has length ${o.length}, expected ${src.length}`);
  for (let i = 0; i < src.length; i++) o[i] = f32ToBf16Bits(src[i]);
  return o;
}

export function bf16ToF32(src: Uint16Array, out?: Float32Array): Float32Array {
  const o = out ?? new Float32Array(src.length);
  if (o.length !== src.length) throw new Error(`bf16ToF32: out has length ${o.length}, expected ${src.length}`);
  const u = new Uint32Array(o.buffer, o.byteOffset, o.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return o;
}

// ---------------------------------------------------------------------------------------------
// generic casts

/** Decode any storage to float32 (int64 via Number; may lose precision beyond 2^24). */
export function toFloat32(data: StorageArray, dtype: DType): Float32Array {
  if (!isStorageFor(dtype, data)) {
    throw new Error(`toFloat32: data is a ${(data as ArrayBufferView).constructor.name}, but dtype ${dtype} is stored as ${storageConstructor(dtype).name}`);
  }
  if (dtype === 'float16') return f16ToF32(data as Uint16Array);
  if (dtype === 'bfloat16') return bf16ToF32(data as Uint16Array);
  if (dtype === 'float32') return (data as Float32Array).slice();
  const out = new Float32Array(data.length);
  if (dtype === 'int64') {
    const d = data as BigInt64Array;
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
  } else {
    out.set(data as Exclude<StorageArray, BigInt64Array>);
  }
  return out;
}

/**
 * Encode float32 values into `dtype` storage. Float dtypes round to nearest even; integer dtypes
 * require finite values and round half to even then check the range (no silent wrap-around).
 */
export function fromFloat32(src: ArrayLike<number>, dtype: DType): StorageArray {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(src);
    case 'float64':
      return Float64Array.from(src);
    case 'float16':
      return f32ToF16(src);
    case 'bfloat16':
      return f32ToBf16(src);
    default:
      break;
  }
  const [lo, hi] = INT_RANGE[dtype];
  const out = allocStorage(dtype, src.length);
  for (let i = 0; i < src.length; i++) {
    const v = roundHalfEven(src[i]);
    if (!Number.isFinite(v) || v < lo || v > hi) throw new Error(`fromFloat32(${dtype}): value ${src[i]} at index ${i} is out of range [${lo}, ${hi}]`);
    if (dtype === 'int64') (out as BigInt64Array)[i] = BigInt(v);
    else (out as Uint8Array)[i] = v;
  }
  return out;
}

const INT_RANGE: Record<DType, [number, number]> = {
  float64: [-Infinity, Infinity],
  float32: [-Infinity, Infinity],
  float16: [-Infinity, Infinity],
  bfloat16: [-Infinity, Infinity],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  int32: [-2147483648, 2147483647],
  int16: [-32768, 32767],
  int8: [-128, 127],
  uint8: [0, 255],
  bool: [0, 1],
};

/** Round to nearest integer, ties to even (matches numpy/torch rounding). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // ties toward +inf
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

// ---------------------------------------------------------------------------------------------
// int8 symmetric quantisation

/**
 * q = round_half_even(x / scale) clamped to [-127, 127], x ~= q * scale, scale = max|x| / 127
 * (float32). -128 is never produced so the range is symmetric. An all-zero tensor/row gets
 * scale 0 and q = 0. |x - q*scale| <= scale/2 (up to float32 rounding) for every element.
 */
export interface QuantizedInt8 {
  data: Int8Array;
  /** One scale (per-tensor) or one per row. */
  scales: Float32Array;
  /** [rows, cols]; per-tensor quantisation uses [1, n]. */
  rows: number;
  cols: number;
  granularity: 'tensor' | 'row';
}

function quantizeRange(x: ArrayLike<number>, start: number, end: number, out: Int8Array, what: string): number {
  let maxAbs = 0;
  for (let i = start; i < end; i++) {
    const v = x[i];
    if (!Number.isFinite(v)) throw new Error(`quantizeInt8: non-finite value ${v} at index ${i} (${what})`);
    const a = Math.abs(v);
    if (a > maxAbs) maxAbs = a;
  }
  const scale = Math.fround(maxAbs / 127);
  if (scale === 0) {
    out.fill(0, start, end);
    return 0;
  }
  for (let i = start; i < end; i++) {
    let q = roundHalfEven(x[i] / scale);
    if (q > 127) q = 127;
    else if (q < -127) q = -127;
    out[i] = q;
  }
  return scale;
}

/** Per-tensor symmetric int8 quantisation (one scale). */
export function quantizeInt8(x: ArrayLike<number>): QuantizedInt8 {
  const data = new Int8Array(x.length);
  const scales = new Float32Array(1);
  scales[0] = quantizeRange(x, 0, x.length, data, 'tensor');
  return { data, scales, rows: 1, cols: x.length, granularity: 'tensor' };
}

/** Per-row (output channel) symmetric int8 quantisation of a row-major [rows x cols] matrix. */
export function quantizeInt8PerRow(x: ArrayLike<number>, rows: number, cols: number): QuantizedInt8 {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new Error(`quantizeInt8PerRow: rows and cols must be non-negative integers, got [${rows}, ${cols}]`);
  }
  if (x.length !== rows * cols) throw new Error(`quantizeInt8PerRow: data length ${x.length} does not match shape [${rows}, ${cols}]`);
  const data = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) scales[r] = quantizeRange(x, r * cols, (r + 1) * cols, data, `row ${r}`);
  return { data, scales, rows, cols, granularity: 'row' };
}

/** x ~= q * scale, as float32. */
export function dequantizeInt8(q: QuantizedInt8, out?: Float32Array): Float32Array {
  const { data, scales, rows, cols, granularity } = q;
  if (data.length !== rows * cols) throw new Error(`dequantizeInt8: data length ${data.length} does not match shape [${rows}, ${cols}]`);
  const expectScales = granularity === 'tensor' ? 1 : rows;
  if (scales.length !== expectScales) throw new Error(`dequantizeInt8: ${granularity} quantisation needs ${expectScales} scales, got ${scales.length}`);
  const o = out ?? new Float32Array(data.length);
  if (o.length !== data.length) throw new Error(`dequantizeInt8: out has length ${o.length}, expected ${data.length}`);
  if (granularity === 'tensor') {
    const s = scales[0];
    for (let i = 0; i < data.length; i++) o[i] = data[i] * s;
  } else {
    for (let r = 0; r < rows; r++) {
      const s = scales[r];
      const base = r * cols;
      for (let c = 0; c < cols; c++) o[base + c] = data[base + c] * s;
    }
  }
  return o;
}
