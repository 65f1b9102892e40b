/**
 * GGUF reader. Only the header is parsed up front (read in bounded chunks); tensor data is read
 * at its offset on request, so a multi-gigabyte file costs only what is asked for. Every count,
 * length and offset is checked against the file size before anything of that size is allocated,
 * and every error is one line naming the file, the field and its byte offset.
 */
import * as fs from 'node:fs';
import {
  GGUF_MAGIC,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_VALUE_TYPES,
  GGUF_SCALAR_BYTES,
  GGML_MAX_DIMS,
  GGML_TYPES_BY_ID,
  ggmlTensorBytes,
  alignUp,
  type GGUFValue,
  type GGUFScalarType,
  type GGUFScalar,
  type GGMLTypeInfo,
} from './format.js';
import { decodeTensor } from './quant.js';

/** A malformed or unsupported GGUF file: one line naming the field and byte offset. */
export class GGUFError extends Error {}

/** One tensor's header entry: name, ggml type, dims (ne) and where its data lies. */
export interface GGUFTensorInfo {
  name: string;
  /** ggml dims, ne[0] innermost (the reverse of a row-major shape). */
  ne: number[];
  type: GGMLTypeInfo;
  /** Offset relative to the data section. */
  offset: number;
  /** Absolute byte offset in the file. */
  fileOffset: number;
  nbytes: number;
}

/** Arrays nested deeper than this are rejected (GGUF files use at most 1). */
const MAX_ARRAY_DEPTH = 4;
const CHUNK = 1 << 20;

/** Reads a file region by region, refusing any read past the end before allocating for it. */
class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly where: string,
  ) {}

  fail(field: string, at: number, msg: string): never {
    throw new GGUFError(`${this.where}: ${field} at byte ${at}: ${msg}`);
  }

  private ensure(n: number, field: string): void {
    if (n > this.size - this.pos) this.fail(field, this.pos, `needs ${n} bytes but the file ends at byte ${this.size} (truncated?)`);
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.buf.length) return;
    const len = Math.min(Math.max(n, CHUNK), this.size - this.pos);
    this.buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const r = fs.readSync(this.fd, this.buf, got, len - got, this.pos + got);
      if (r === 0) this.fail(field, this.pos + got, 'unexpected end of file');
      got += r;
    }
    this.bufStart = this.pos;
  }

  private at(n: number, field: string): number {
    this.ensure(n, field);
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }

  u8(f: string): number {
    const o = this.at(1, f); // before reading this.buf: at() may replace it
    return this.buf.readUInt8(o);
  }
  i8(f: string): number {
    const o = this.at(1, f); // before reading this.buf: at() may replace it
    return this.buf.readInt8(o);
  }
  u16(f: string): number {
    const o = this.at(2, f); // before reading this.buf: at() may replace it
    return this.buf.readUInt16LE(o);
  }
  i16(f: string): number {
    const o = this.at(2, f); // before reading this.buf: at() may replace it
    return this.buf.readInt16LE(o);
  }
  u32(f: string): number {
    const o = this.at(4, f); // before reading this.buf: at() may replace it
    return this.buf.readUInt32LE(o);
  }
  i32(f: string): number {
    const o = this.at(4, f); // before reading this.buf: at() may replace it
    return this.buf.readInt32LE(o);
  }
  f32(f: string): number {
    const o = this.at(4, f); // before reading this.buf: at() may replace it
    return this.buf.readFloatLE(o);
  }
  f64(f: string): number {
    const o = this.at(8, f); // before reading this.buf: at() may replace it
    return this.buf.readDoubleLE(o);
  }
  u64big(f: string): bigint {
    const o = this.at(8, f); // before reading this.buf: at() may replace it
    return this.buf.readBigUInt64LE(o);
  }
  i64big(f: string): bigint {
    const o = this.at(8, f); // before reading this.buf: at() may replace it
    return this.buf.readBigInt64LE(o);
  }

  /** A u64 used as a count/size/offset: must fit a JS number. */
  u64(f: string): number {
    const at = this.pos;
    const v = this.u64big(f);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(f, at, `value ${v} is too large`);
    return Number(v);
  }

  string(f: string): string {
    const at = this.pos;
    const len = this.u64(`${f} length`);
    if (len > this.size - this.pos) this.fail(f, at, `string length ${len} runs past the end of the file (${this.size - this.pos} bytes left)`);
    const o = this.at(len, f);
    const bytes = this.buf.subarray(o, o + len);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return this.fail(f, at, 'string is not valid UTF-8');
    }
  }
}

function readScalar(c: Cursor, type: GGUFScalarType, f: string): GGUFScalar {
  switch (type) {
    case 'u8':
      return c.u8(f);
    case 'i8':
      return c.i8(f);
    case 'u16':
      return c.u16(f);
    case 'i16':
      return c.i16(f);
    case 'u32':
      return c.u32(f);
    case 'i32':
      return c.i32(f);
    case 'f32':
      return c.f32(f);
    case 'f64':
      return c.f64(f);
    case 'u64':
      return c.u64big(f);
    case 'i64':
      return c.i64big(f);
    case 'bool': {
      const at = c.pos;
      const b = c.u8(f);
      if (b > 1) c.fail(f, at, `bool must be 0 or 1, got ${b}`);
      return b === 1;
    }
    case 'string':
      return c.string(f);
  }
}

function valueType(c: Cursor, f: string): (typeof GGUF_VALUE_TYPES)[number] {
  const at = c.pos;
  const t = c.u32(f);
  if (t >= GGUF_VALUE_TYPES.length) c.fail(f, at, `unknown metadata value type ${t} (known: 0..${GGUF_VALUE_TYPES.length - 1})`);
  return GGUF_VALUE_TYPES[t];
}

function readValue(c: Cursor, type: (typeof GGUF_VALUE_TYPES)[number], f: string, depth = 0): GGUFValue {
  if (type !== 'array') return { type, value: readScalar(c, type, f) };
  if (depth >= MAX_ARRAY_DEPTH) c.fail(f, c.pos, `arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
  const itemType = valueType(c, `${f} item type`);
  const at = c.pos;
  const n = c.u64(`${f} count`);
  // smallest possible encoding of one item: a fixed scalar's size, 8 bytes for a string length, 12 for a nested array header
  const minItem = itemType === 'string' ? 8 : itemType === 'array' ? 12 : GGUF_SCALAR_BYTES[itemType];
  if (n * minItem > c.size - c.pos) c.fail(`${f} count`, at, `array of ${n} ${itemType} items cannot fit in the ${c.size - c.pos} bytes left`);
  if (itemType === 'array') {
    const out: GGUFValue[] = [];
    for (let i = 0; i < n; i++) out.push(readValue(c, valueType(c, `${f}[${i}] type`), `${f}[${i}]`, depth + 1));
    return { type: 'array', itemType: 'array', value: out };
  }
  const out: GGUFScalar[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readScalar(c, itemType, `${f}[${i}]`);
  return { type: 'array', itemType, value: out };
}

/** A validated GGUF file opened for reading: metadata, tensor infos, tensors read at their offsets. */
export class GGUFFile {
  private constructor(
    readonly path: string,
    private fd: number | null,
    readonly size: number,
    readonly version: number,
    readonly metadata: Map<string, GGUFValue>,
    readonly tensors: Map<string, GGUFTensorInfo>,
    readonly alignment: number,
    readonly dataOffset: number,
  ) {}

  /** Open and validate `path` (header, metadata, tensor infos); tensor data stays on disk. */
  static open(path: string): GGUFFile {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new GGUFError(`gguf ${path}: cannot open: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new GGUFError(`gguf ${path}: not a regular file`);
      const c = new Cursor(fd, st.size, `gguf ${path}`);
      const magic = c.u32('magic');
      if (magic !== GGUF_MAGIC) c.fail('magic', 0, `expected "GGUF", got ${JSON.stringify(Buffer.from(Uint32Array.of(magic).buffer).toString('latin1'))}`);
      const version = c.u32('version');
      if (version !== 2 && version !== 3) c.fail('version', 4, `unsupported GGUF version ${version} (supported: 2, 3)`);
      const tensorCount = c.u64('tensor_count');
      const kvCount = c.u64('kv_count');
      // each metadata pair takes >= 13 bytes (key length, value type, a 1-byte value), each tensor info >= 24
      if (kvCount * 13 > st.size - c.pos) c.fail('kv_count', 16, `${kvCount} metadata pairs cannot fit in a file of ${st.size} bytes`);
      if (tensorCount * 24 > st.size - c.pos) c.fail('tensor_count', 8, `${tensorCount} tensors cannot fit in a file of ${st.size} bytes`);
      const metadata = new Map<string, GGUFValue>();
      for (let i = 0; i < kvCount; i++) {
        const at = c.pos;
        const key = c.string(`metadata[${i}] key`);
        if (metadata.has(key)) c.fail(`metadata key "${key}"`, at, 'duplicate key');
        metadata.set(key, readValue(c, valueType(c, `metadata "${key}" type`), `metadata "${key}"`));
      }
      let alignment = GGUF_DEFAULT_ALIGNMENT;
      const al = metadata.get('general.alignment');
      if (al) {
        if (al.type !== 'u32' || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
          throw new GGUFError(`gguf ${path}: metadata "general.alignment" must be a u32 power of two, got ${al.type} ${String(al.value)}`);
        }
        alignment = al.value;
      }
      const infos: Omit<GGUFTensorInfo, 'fileOffset'>[] = [];
      const infoAt: number[] = [];
      const names = new Set<string>();
      for (let i = 0; i < tensorCount; i++) {
        const at = c.pos;
        infoAt.push(at);
        const name = c.string(`tensor[${i}] name`);
        if (names.has(name)) c.fail(`tensor "${name}"`, at, 'duplicate tensor name');
        names.add(name);
        const dimsAt = c.pos;
        const nDims = c.u32(`tensor "${name}" n_dims`);
        if (nDims < 1 || nDims > GGML_MAX_DIMS) c.fail(`tensor "${name}" n_dims`, dimsAt, `must be 1..${GGML_MAX_DIMS}, got ${nDims}`);
        const ne: number[] = [];
        let numel = 1;
        for (let d = 0; d < nDims; d++) {
          const dAt = c.pos;
          const v = c.u64(`tensor "${name}" ne[${d}]`);
          numel *= v;
          if (numel > st.size * 8) c.fail(`tensor "${name}" ne[${d}]`, dAt, `${ne.concat(v).join(' x ')} elements cannot fit in a file of ${st.size} bytes`);
          ne.push(v);
        }
        const typeAt = c.pos;
        const typeId = c.u32(`tensor "${name}" type`);
        const type = GGML_TYPES_BY_ID.get(typeId) ?? c.fail(`tensor "${name}" type`, typeAt, `unknown ggml type ${typeId}`);
        if (ne[0] % type.blockSize !== 0) c.fail(`tensor "${name}" ne[0]`, dimsAt + 4, `${ne[0]} is not a multiple of the ${type.name} block size ${type.blockSize}`);
        const offAt = c.pos;
        const offset = c.u64(`tensor "${name}" offset`);
        if (offset % alignment !== 0) c.fail(`tensor "${name}" offset`, offAt, `${offset} is not a multiple of general.alignment ${alignment}`);
        infos.push({ name, ne, type, offset, nbytes: ggmlTensorBytes(type, ne) });
      }
      const dataOffset = alignUp(c.pos, alignment);
      const tensors = new Map<string, GGUFTensorInfo>();
      infos.forEach((t, i) => {
        const fileOffset = dataOffset + t.offset;
        if (fileOffset + t.nbytes > st.size) {
          throw new GGUFError(
            `gguf ${path}: tensor "${t.name}" (info at byte ${infoAt[i]}): data [${fileOffset}, ${fileOffset + t.nbytes}) runs past the end of the file at byte ${st.size} (truncated?)`,
          );
        }
        tensors.set(t.name, { ...t, fileOffset });
      });
      const sorted = [...tensors.values()].sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++) {
        const p = sorted[i - 1];
        if (p.offset + p.nbytes > sorted[i].offset) {
          throw new GGUFError(`gguf ${path}: tensor "${sorted[i].name}" data at byte ${sorted[i].fileOffset} overlaps tensor "${p.name}" [${p.fileOffset}, ${p.fileOffset + p.nbytes})`);
        }
      }
      return new GGUFFile(path, fd, st.size, version, metadata, tensors, alignment, dataOffset);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  tensor(name: string): GGUFTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new GGUFError(`gguf ${this.path}: no tensor "${name}"`);
    return t;
  }

  /** The raw ggml bytes of a tensor (quantised blocks as stored), read at its offset. */
  readRaw(name: string): Uint8Array {
    const t = this.tensor(name);
    if (this.fd === null) throw new GGUFError(`gguf ${this.path}: file is closed`);
    const out = new Uint8Array(t.nbytes);
    let got = 0;
    while (got < t.nbytes) {
      const r = fs.readSync(this.fd, out, got, t.nbytes - got, t.fileOffset + got);
      if (r === 0) throw new GGUFError(`gguf ${this.path}: tensor "${name}": unexpected end of file at byte ${t.fileOffset + got}`);
      got += r;
    }
    return out;
  }

  /** A tensor dequantised to float32 (row-major, shape = ne reversed). */
  readFloat32(name: string): Float32Array {
    const t = this.tensor(name);
    const n = t.ne.reduce((a, b) => a * b, 1);
    try {
      return decodeTensor(this.readRaw(name), t.type.name, n);
    } catch (e) {
      throw new GGUFError(`gguf ${this.path}: tensor "${name}" (${t.type.name}): ${(e as Error).message}`);
    }
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** A metadata value, checked against the expected types. */
  get(key: string, types: readonly string[]): GGUFScalar {
    const v = this.metadata.get(key);
    if (!v) throw new GGUFError(`gguf ${this.path}: required metadata "${key}" missing`);
    if (v.type === 'array' || !types.includes(v.type)) throw new GGUFError(`gguf ${this.path}: metadata "${key}" has type ${v.type}, expected ${types.join(' or ')}`);
    return v.value;
  }

  /** An unsigned/signed integer metadata value as a number. */
  getInt(key: string, fallback?: number): number {
    if (fallback !== undefined && !this.metadata.has(key)) return fallback;
    const v = this.get(key, ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'u64', 'i64']);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new GGUFError(`gguf ${this.path}: metadata "${key}" = ${String(v)} is out of range`);
    return n;
  }

  getFloat(key: string, fallback?: number): number {
    if (fallback !== undefined && !this.metadata.has(key)) return fallback;
    return Number(this.get(key, ['f32', 'f64']));
  }

  getString(key: string, fallback?: string): string {
    if (fallback !== undefined && !this.metadata.has(key)) return fallback;
    return this.get(key, ['string']) as string;
  }

  getBool(key: string, fallback?: boolean): boolean {
    if (fallback !== undefined && !this.metadata.has(key)) return fallback;
    return this.get(key, ['bool']) as boolean;
  }

  getArray(key: string, itemType: GGUFScalarType): GGUFScalar[] {
    const v = this.metadata.get(key);
    if (!v) throw new GGUFError(`gguf ${this.path}: required metadata "${key}" missing`);
    if (v.type !== 'array' || v.itemType !== itemType) {
      throw new GGUFError(`gguf ${this.path}: metadata "${key}" must be an array of ${itemType}, got ${v.type === 'array' ? `an array of ${v.itemType}` : v.type}`);
    }
    return v.value as GGUFScalar[];
  }
}

/** Open, run `fn`, close. */
export function withGGUF<T>(path: string, fn: (f: GGUFFile) => T): T {
  const f = GGUFFile.open(path);
  try {
    return fn(f);
  } finally {
    f.close();
  }
}

/** Does `path` name a regular file starting with the GGUF magic? */
export function isGGUFFile(path: string): boolean {
  let fd: number | undefined;
  try {
    if (!fs.statSync(path).isFile()) return false;
    fd = fs.openSync(path, 'r');
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32LE(0) === GGUF_MAGIC;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
