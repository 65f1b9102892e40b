/**
 * GGUF writer: metadata (every GGUF value type, arrays included) and tensors already encoded as
 * ggml bytes (see quant.ts). general.alignment is written when it is not the default 32; data
 * starts at a multiple of it and every tensor is padded to it. Written atomically.
 */
import * as fs from 'node:fs';
import { writeFileAtomicSync, writeStreamAtomicSync } from '../atomic.js';
import {
  GGUF_MAGIC,
  GGUF_VERSION,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_VALUE_TYPES,
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGML_TYPES_BY_NAME,
  ggmlTensorBytes,
  alignUp,
  type GGUFValue,
  type GGUFScalar,
  type GGUFScalarType,
} from './format.js';

/** A tensor to write: name, ggml dims (ne), type and its encoded bytes. */
export interface GGUFTensorInput {
  name: string;
  /** ggml dims, ne[0] innermost. */
  ne: number[];
  /** ggml type name (F32, F16, BF16, Q8_0, Q4_0, ...). */
  type: string;
  data: Uint8Array;
}

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  fixed(n: number, fill: (dv: DataView) => void): void {
    const b = new Uint8Array(n);
    fill(new DataView(b.buffer));
    this.push(b);
  }
  u32(v: number): void {
    this.fixed(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: number | bigint): void {
    this.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.push(b);
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

function intIn(key: string, type: string, v: GGUFScalar, lo: number | bigint, hi: number | bigint): void {
  const ok = typeof v === 'bigint' ? v >= BigInt(lo) && v <= BigInt(hi) : typeof v === 'number' && Number.isInteger(v) && v >= Number(lo) && v <= Number(hi);
  if (!ok) throw new Error(`gguf write: metadata "${key}": ${String(v)} is not a valid ${type}`);
}

function writeScalar(out: Bytes, key: string, type: GGUFScalarType, v: GGUFScalar): void {
  switch (type) {
    case 'u8':
      intIn(key, type, v, 0, 255);
      return out.fixed(1, (d) => d.setUint8(0, Number(v)));
    case 'i8':
      intIn(key, type, v, -128, 127);
      return out.fixed(1, (d) => d.setInt8(0, Number(v)));
    case 'u16':
      intIn(key, type, v, 0, 65535);
      return out.fixed(2, (d) => d.setUint16(0, Number(v), true));
    case 'i16':
      intIn(key, type, v, -32768, 32767);
      return out.fixed(2, (d) => d.setInt16(0, Number(v), true));
    case 'u32':
      intIn(key, type, v, 0, 0xffffffff);
      return out.fixed(4, (d) => d.setUint32(0, Number(v), true));
    case 'i32':
      intIn(key, type, v, -0x80000000, 0x7fffffff);
      return out.fixed(4, (d) => d.setInt32(0, Number(v), true));
    case 'u64':
      intIn(key, type, v, 0, 0xffffffffffffffffn);
      return out.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true));
    case 'i64':
      intIn(key, type, v, -0x8000000000000000n, 0x7fffffffffffffffn);
      return out.fixed(8, (d) => d.setBigInt64(0, BigInt(v), true));
    case 'f32':
    case 'f64':
      if (typeof v !== 'number') throw new Error(`gguf write: metadata "${key}": ${String(v)} is not a number`);
      return type === 'f32' ? out.fixed(4, (d) => d.setFloat32(0, v, true)) : out.fixed(8, (d) => d.setFloat64(0, v, true));
    case 'bool':
      if (typeof v !== 'boolean') throw new Error(`gguf write: metadata "${key}": ${String(v)} is not a boolean`);
      return out.fixed(1, (d) => d.setUint8(0, v ? 1 : 0));
    case 'string':
      if (typeof v !== 'string') throw new Error(`gguf write: metadata "${key}": ${String(v)} is not a string`);
      return out.string(v);
  }
}

function writeValue(out: Bytes, key: string, v: GGUFValue): void {
  if (v.type !== 'array') return writeScalar(out, key, v.type, v.value);
  out.u32(GGUF_VALUE_TYPES.indexOf(v.itemType));
  out.u64(v.value.length);
  if (v.itemType === 'array') {
    for (const item of v.value as GGUFValue[]) {
      out.u32(GGUF_VALUE_TYPES.indexOf(item.type));
      writeValue(out, key, item);
    }
  } else for (const item of v.value as GGUFScalar[]) writeScalar(out, key, v.itemType, item);
}

/** A tensor's header entry for the writer: name, ggml dims (ne) and type. */
export interface GGUFTensorHeader {
  name: string;
  ne: number[];
  type: string;
}

/** The header bytes of a GGUF file and where each tensor's data goes (offsets from dataStart, each nbytes long). */
export function ggufLayout(metadata: Map<string, GGUFValue>, tensors: readonly GGUFTensorHeader[]): { header: Uint8Array; dataStart: number; offsets: number[]; nbytes: number[]; total: number } {
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== 'u32' || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
      throw new Error('gguf write: general.alignment must be a u32 power of two');
    }
    alignment = al.value;
  }
  const h = new Bytes();
  h.u32(GGUF_MAGIC);
  h.u32(GGUF_VERSION);
  h.u64(tensors.length);
  h.u64(metadata.size);
  for (const [key, v] of metadata) {
    h.string(key);
    h.u32(GGUF_VALUE_TYPES.indexOf(v.type));
    writeValue(h, key, v);
  }
  const names = new Set<string>();
  let offset = 0;
  const offsets: number[] = [];
  const sizes: number[] = [];
  for (const t of tensors) {
    const info = GGML_TYPES_BY_NAME.get(t.type);
    if (!info) throw new Error(`gguf write: tensor "${t.name}": unknown ggml type ${t.type}`);
    if (new TextEncoder().encode(t.name).length >= GGML_MAX_NAME) throw new Error(`gguf write: tensor name "${t.name}" is ${GGML_MAX_NAME} bytes or longer`);
    if (names.has(t.name)) throw new Error(`gguf write: duplicate tensor "${t.name}"`);
    names.add(t.name);
    if (t.ne.length < 1 || t.ne.length > GGML_MAX_DIMS) throw new Error(`gguf write: tensor "${t.name}" needs 1..${GGML_MAX_DIMS} dims, got ${t.ne.length}`);
    if (t.ne[0] % info.blockSize !== 0) throw new Error(`gguf write: tensor "${t.name}": ne[0] = ${t.ne[0]} is not a multiple of the ${t.type} block size ${info.blockSize}`);
    const nbytes = ggmlTensorBytes(info, t.ne);
    h.string(t.name);
    h.u32(t.ne.length);
    for (const d of t.ne) h.u64(d);
    h.u32(info.id);
    h.u64(offset);
    offsets.push(offset);
    sizes.push(nbytes);
    offset = alignUp(offset + nbytes, alignment);
  }
  const header = h.concat();
  const dataStart = alignUp(header.length, alignment);
  return { header, dataStart, offsets, nbytes: sizes, total: dataStart + offset };
}

/** Serialise a GGUF file (metadata in the given order, then tensors in the given order). */
export function serializeGGUF(metadata: Map<string, GGUFValue>, tensors: GGUFTensorInput[]): Uint8Array {
  const L = ggufLayout(metadata, tensors);
  tensors.forEach((t, i) => {
    if (t.data.length !== L.nbytes[i]) throw new Error(`gguf write: tensor "${t.name}": ${t.type} [${t.ne.join(', ')}] needs ${L.nbytes[i]} bytes, got ${t.data.length}`);
  });
  const out = new Uint8Array(L.total);
  out.set(L.header, 0);
  tensors.forEach((t, i) => out.set(t.data, L.dataStart + L.offsets[i]));
  return out;
}

/**
 * Write a GGUF file tensor by tensor without holding it in memory: `fill(i, emit)` emits tensor
 * i's bytes in order, in chunks of any size (checked against its type and dims). Written to a
 * temporary file, fsynced and renamed (atomic); returns the size in bytes.
 */
export function writeGGUFStreamSync(path: string, metadata: Map<string, GGUFValue>, tensors: readonly GGUFTensorHeader[], fill: (i: number, emit: (chunk: Uint8Array) => void) => void): number {
  const L = ggufLayout(metadata, tensors);
  writeStreamAtomicSync(path, (fd) => {
    fs.writeSync(fd, L.header, 0, L.header.length, 0);
    tensors.forEach((t, i) => {
      let pos = L.dataStart + L.offsets[i];
      const end = pos + L.nbytes[i];
      fill(i, (chunk) => {
        if (pos + chunk.length > end) throw new Error(`gguf write: tensor "${t.name}": more than its ${L.nbytes[i]} bytes emitted`);
        let o = 0;
        while (o < chunk.length) o += fs.writeSync(fd, chunk, o, chunk.length - o, pos + o);
        pos += chunk.length;
      });
      if (pos !== end) throw new Error(`gguf write: tensor "${t.name}": ${pos - (end - L.nbytes[i])} bytes emitted, needs ${L.nbytes[i]}`);
    });
    fs.ftruncateSync(fd, L.total);
  });
  return L.total;
}

/** Write a GGUF file atomically; returns its size in bytes. */
export function writeGGUFSync(path: string, metadata: Map<string, GGUFValue>, tensors: GGUFTensorInput[]): number {
  const bytes = serializeGGUF(metadata, tensors);
  writeFileAtomicSync(path, bytes);
  return bytes.length;
}
