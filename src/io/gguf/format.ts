/**
 * GGUF constants: the file layout of ggml/llama.cpp ("GGUF" magic, version 3, little-endian),
 * metadata value types and ggml tensor types with their block geometry.
 *
 * Layout: u32 magic, u32 version, u64 tensor_count, u64 kv_count, kv_count x (string key,
 * u32 value type, value), tensor_count x (string name, u32 n_dims, n_dims x u64 ne (ne[0]
 * innermost), u32 ggml type, u64 offset), padding to general.alignment (default 32), then the
 * tensor data, each tensor at its offset (relative to the data start, a multiple of the alignment).
 * Strings are u64 byte length + UTF-8 bytes; arrays are u32 item type + u64 count + items.
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGML_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME (names must be shorter, the terminating NUL included). */
export const GGML_MAX_NAME = 64;

/** Metadata value types by their u32 code. */
export const GGUF_VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GGUFValueType = (typeof GGUF_VALUE_TYPES)[number];
export type GGUFScalarType = Exclude<GGUFValueType, 'array'>;

/** Bytes of a fixed-size scalar (strings are variable: 8 + length). */
export const GGUF_SCALAR_BYTES: Readonly<Record<Exclude<GGUFScalarType, 'string'>, number>> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  u64: 8,
  i64: 8,
  f64: 8,
};

export type GGUFScalar = number | bigint | boolean | string;

/** A metadata value with its exact GGUF type (llama.cpp checks the type, not just the value). */
export type GGUFValue = { type: GGUFScalarType; value: GGUFScalar } | { type: 'array'; itemType: GGUFScalarType; value: GGUFScalar[] } | { type: 'array'; itemType: 'array'; value: GGUFValue[] };

/** A typed GGUF metadata scalar. */
export function gguf(type: GGUFScalarType, value: GGUFScalar): GGUFValue {
  return { type, value };
}
/** A typed GGUF metadata array. */
export function ggufArray(itemType: GGUFScalarType, value: GGUFScalar[]): GGUFValue {
  return { type: 'array', itemType, value };
}

export interface GGMLTypeInfo {
  name: string;
  id: number;
  /** Elements per block (1 for plain types). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

/**
 * ggml types (ggml.h enum ggml_type) with block geometry, so the reader can validate sizes of
 * every standard type; only F32, F16, BF16, Q8_0 and Q4_0 are converted to and from float32.
 */
const TYPES: GGMLTypeInfo[] = [
  { name: 'F32', id: 0, blockSize: 1, typeSize: 4 },
  { name: 'F16', id: 1, blockSize: 1, typeSize: 2 },
  { name: 'Q4_0', id: 2, blockSize: 32, typeSize: 18 },
  { name: 'Q4_1', id: 3, blockSize: 32, typeSize: 20 },
  { name: 'Q5_0', id: 6, blockSize: 32, typeSize: 22 },
  { name: 'Q5_1', id: 7, blockSize: 32, typeSize: 24 },
  { name: 'Q8_0', id: 8, blockSize: 32, typeSize: 34 },
  { name: 'Q8_1', id: 9, blockSize: 32, typeSize: 36 },
  { name: 'Q2_K', id: 10, blockSize: 256, typeSize: 84 },
  { name: 'Q3_K', id: 11, blockSize: 256, typeSize: 110 },
  { name: 'Q4_K', id: 12, blockSize: 256, typeSize: 144 },
  { name: 'Q5_K', id: 13, blockSize: 256, typeSize: 176 },
  { name: 'Q6_K', id: 14, blockSize: 256, typeSize: 210 },
  { name: 'Q8_K', id: 15, blockSize: 256, typeSize: 292 },
  { name: 'IQ2_XXS', id: 16, blockSize: 256, typeSize: 66 },
  { name: 'IQ2_XS', id: 17, blockSize: 256, typeSize: 74 },
  { name: 'IQ3_XXS', id: 18, blockSize: 256, typeSize: 98 },
  { name: 'IQ1_S', id: 19, blockSize: 256, typeSize: 50 },
  { name: 'IQ4_NL', id: 20, blockSize: 32, typeSize: 18 },
  { name: 'IQ3_S', id: 21, blockSize: 256, typeSize: 110 },
  { name: 'IQ2_S', id: 22, blockSize: 256, typeSize: 82 },
  { name: 'IQ4_XS', id: 23, blockSize: 256, typeSize: 136 },
  { name: 'I8', id: 24, blockSize: 1, typeSize: 1 },
  { name: 'I16', id: 25, blockSize: 1, typeSize: 2 },
  { name: 'I32', id: 26, blockSize: 1, typeSize: 4 },
  { name: 'I64', id: 27, blockSize: 1, typeSize: 8 },
  { name: 'F64', id: 28, blockSize: 1, typeSize: 8 },
  { name: 'IQ1_M', id: 29, blockSize: 256, typeSize: 56 },
  { name: 'BF16', id: 30, blockSize: 1, typeSize: 2 },
  { name: 'TQ1_0', id: 34, blockSize: 256, typeSize: 54 },
  { name: 'TQ2_0', id: 35, blockSize: 256, typeSize: 66 },
  { name: 'MXFP4', id: 39, blockSize: 32, typeSize: 17 },
];

export const GGML_TYPES_BY_ID: ReadonlyMap<number, GGMLTypeInfo> = new Map(TYPES.map((t) => [t.id, t]));
export const GGML_TYPES_BY_NAME: ReadonlyMap<string, GGMLTypeInfo> = new Map(TYPES.map((t) => [t.name, t]));

/** The types this module writes (and converts to/from float32). */
export type GGMLWritableType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';
export const GGML_WRITABLE: readonly GGMLWritableType[] = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'];

export function ggmlType(name: string): GGMLTypeInfo {
  const t = GGML_TYPES_BY_NAME.get(name);
  if (!t) throw new Error(`unknown ggml type "${name}"`);
  return t;
}

/** Bytes of a tensor of `ne` (ne[0] must be a multiple of the block size). */
export function ggmlTensorBytes(t: GGMLTypeInfo, ne: readonly number[]): number {
  let rows = 1;
  for (let i = 1; i < ne.length; i++) rows *= ne[i];
  return (ne[0] / t.blockSize) * t.typeSize * rows;
}

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
