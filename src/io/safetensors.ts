/**
 * safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian u64 header
 * length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, ...,
 * "__metadata__"?: {string: string}}, then the byte buffer; offsets are relative to the buffer.
 *
 * The reader validates everything the spec requires (and a bit more) and throws one-line errors
 * that name the file, the tensor and the field or byte offset.
 */
import * as fs from 'node:fs';
import { DType, DTYPE_BYTES, StorageArray, isStorageFor, numelOf, storageConstructor } from '../tensor/dtype.js';
import { writeFileAtomic, writeFileAtomicSync } from './atomic.js';

/** safetensors dtype code <-> moe-ts dtype. */
export const SAFETENSORS_DTYPES: Readonly<Record<string, DType>> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U8: 'uint8',
  BOOL: 'bool',
};

const CODE_OF: Record<DType, string> = Object.fromEntries(
  Object.entries(SAFETENSORS_DTYPES).map(([code, d]) => [d, code]),
) as Record<DType, string>;

/** The reference implementation refuses headers above 100 MB; so do we (a corrupt length must not allocate GBs). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: DType;
  shape: number[];
  /** The dtype's storage array (see tensor/dtype.ts), or raw little-endian bytes as a Uint8Array. */
  data: StorageArray;
}

export interface SafetensorsFile {
  /** In file order of data offsets. */
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

export interface HeaderEntry {
  dtype: DType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

function assertLittleEndian(): void {
  // typed arrays use host byte order; safetensors is little-endian (checked without node:os, so this runs in browsers)
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('safetensors: big-endian hosts are not supported');
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });

/**
 * Parse and validate the header only. Returns entries sorted by data offset plus the metadata,
 * and the absolute offset where the byte buffer starts.
 */
export function parseSafetensorsHeader(
  buf: Uint8Array,
  source = '<buffer>',
): { entries: Map<string, HeaderEntry>; metadata: Record<string, string>; dataStart: number } {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${source}: ${msg}`);
  };
  if (buf.length < 8) fail(`truncated file: ${buf.length} bytes, need at least 8 for the header length at byte 0`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n64} at byte 0 exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (n < 2) fail(`header length ${n} at byte 0 is too small for a JSON object`);
  if (8 + n > buf.length) fail(`header length ${n} at byte 0 runs past the end of the file (header would end at byte ${8 + n}, file has ${buf.length} bytes)`);
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;

  let text: string;
  try {
    text = utf8Fatal.decode(buf.subarray(8, dataStart));
  } catch {
    return fail(`header (bytes 8..${dataStart}) is not valid UTF-8`);
  }
  if (text[0] !== '{') fail(`header must start with '{' at byte 8, found ${JSON.stringify(text[0])}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`bad JSON in header (bytes 8..${dataStart}): ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header JSON is not an object');

  const metadata: Record<string, string> = {};
  const list: [string, HeaderEntry][] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('field __metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} must be a string, got ${typeof v}`);
        metadata[k] = v as string;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`${where}: entry must be an object with dtype, shape, data_offsets`);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') fail(`${where}: unknown field "${k}"`);
    }
    if (typeof e.dtype !== 'string') fail(`${where}: field dtype missing or not a string`);
    const dtype = Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, e.dtype as string)
      ? SAFETENSORS_DTYPES[e.dtype as string]
      : fail(`${where}: unknown dtype "${e.dtype}" (field dtype; supported: ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`);
    if (!Array.isArray(e.shape)) fail(`${where}: field shape missing or not an array`);
    const shape = e.shape as unknown[];
    shape.forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail(`${where}: shape[${i}] must be a non-negative integer, got ${JSON.stringify(d)}`);
    });
    let numel: number;
    try {
      numel = numelOf(shape as number[]);
    } catch (err) {
      return fail(`${where}: field shape: ${(err as Error).message}`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2) fail(`${where}: field data_offsets must be [begin, end]`);
    const [b, en] = offs as unknown[];
    if (typeof b !== 'number' || !Number.isSafeInteger(b) || b < 0) fail(`${where}: data_offsets[0] must be a non-negative integer, got ${JSON.stringify(b)}`);
    if (typeof en !== 'number' || !Number.isSafeInteger(en) || en < 0) fail(`${where}: data_offsets[1] must be a non-negative integer, got ${JSON.stringify(en)}`);
    const begin = b as number;
    const end = en as number;
    if (end < begin) fail(`${where}: data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataLen) {
      fail(`${where}: data_offsets [${begin}, ${end}] out of range: byte buffer has ${dataLen} bytes (tensor would end at file byte ${dataStart + end}, file has ${buf.length})`);
    }
    const want = numel * DTYPE_BYTES[dtype];
    if (end - begin !== want) {
      fail(`${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape [${shape.join(', ')}] of ${e.dtype} needs ${want}`);
    }
    list.push([name, { dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end }]);
  }

  // the spec requires the tensors to tile the buffer exactly: no holes, no overlap, no trailing bytes
  list.sort((x, y) => x[1].begin - y[1].begin || x[1].end - y[1].end || (x[0] < y[0] ? -1 : 1));
  let pos = dataStart;
  let prev = '';
  for (const [name, e] of list) {
    if (e.begin < pos) {
      fail(`tensor "${name}": data_offsets [${e.begin - dataStart}, ${e.end - dataStart}] overlap tensor "${prev}" (which ends at offset ${pos - dataStart})`);
    }
    if (e.begin > pos) {
      fail(`tensor "${name}": data_offsets begin at ${e.begin - dataStart} but the previous data ends at ${pos - dataStart}: ${e.begin - pos} uncovered bytes (non-contiguous)`);
    }
    pos = e.end;
    prev = name;
  }
  if (pos !== buf.length) {
    fail(`${buf.length - pos} trailing bytes after the last tensor (data covers buffer offsets 0..${pos - dataStart} of ${dataLen}, starting at file byte ${pos})`);
  }
  return { entries: new Map(list), metadata, dataStart };
}

/** Parse a whole safetensors image; tensor data is copied into fresh, aligned storage arrays. */
export function parseSafetensors(buf: Uint8Array, source = '<buffer>'): SafetensorsFile {
  assertLittleEndian();
  const { entries, metadata } = parseSafetensorsHeader(buf, source);
  const tensors = new Map<string, TensorEntry>();
  for (const [name, e] of entries) {
    // copy (Uint8Array.slice, not Buffer.slice which aliases): the source offset need not be aligned for the dtype
    const bytes = Uint8Array.prototype.slice.call(buf, e.begin, e.end);
    const Ctor = storageConstructor(e.dtype);
    const data = new Ctor(bytes.buffer, 0, (e.end - e.begin) / DTYPE_BYTES[e.dtype]);
    tensors.set(name, { dtype: e.dtype, shape: e.shape.slice(), data });
  }
  return { tensors, metadata };
}

export function readSafetensorsSync(path: string): SafetensorsFile {
  return parseSafetensors(readFileOrThrow(path), path);
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(path);
  } catch (e) {
    throw new Error(`safetensors ${path}: cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSafetensors(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), path);
}

function readFileOrThrow(path: string): Uint8Array {
  try {
    const b = fs.readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    throw new Error(`safetensors ${path}: cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export type TensorMap = Map<string, TensorEntry> | Record<string, TensorEntry>;

/**
 * Serialise deterministically: tensors ordered by item size (largest first, so every tensor
 * starts aligned to its own item size given the 8-aligned buffer) then by name; `__metadata__`
 * first (keys sorted); header padded with spaces so the byte buffer starts at a multiple of 8.
 */
export function serializeSafetensors(tensors: TensorMap, metadata?: Record<string, string>): Uint8Array {
  assertLittleEndian();
  const items = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const seen = new Set<string>();
  const prepared = items.map(([name, t]) => {
    if (name === '__metadata__') throw new Error('safetensors: "__metadata__" is reserved and cannot name a tensor');
    if (seen.has(name)) throw new Error(`safetensors: duplicate tensor name "${name}"`);
    seen.add(name);
    const code = CODE_OF[t.dtype];
    if (code === undefined) throw new Error(`safetensors: tensor "${name}": unsupported dtype "${String(t.dtype)}"`);
    let numel: number;
    try {
      numel = numelOf(t.shape);
    } catch (e) {
      throw new Error(`safetensors: tensor "${name}": ${(e as Error).message}`);
    }
    const nbytes = numel * DTYPE_BYTES[t.dtype];
    const d = t.data as ArrayBufferView;
    if (!isStorageFor(t.dtype, d) && !(d instanceof Uint8Array)) {
      throw new Error(`safetensors: tensor "${name}": data is a ${d?.constructor?.name}, expected ${storageConstructor(t.dtype).name} (or raw bytes as Uint8Array) for ${t.dtype}`);
    }
    if (d.byteLength !== nbytes) {
      throw new Error(`safetensors: tensor "${name}": data has ${d.byteLength} bytes, shape [${t.shape.join(', ')}] of ${t.dtype} needs ${nbytes}`);
    }
    return { name, code, shape: t.shape.slice(), bytes: new Uint8Array(d.buffer, d.byteOffset, d.byteLength), item: DTYPE_BYTES[t.dtype] };
  });
  prepared.sort((a, b) => b.item - a.item || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  // null prototype: a tensor named "__proto__" must become a key, not a prototype
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0) {
    const m: Record<string, string> = {};
    for (const k of Object.keys(metadata).sort()) {
      if (typeof metadata[k] !== 'string') throw new Error(`safetensors: __metadata__.${k} must be a string, got ${typeof metadata[k]}`);
      m[k] = metadata[k];
    }
    header.__metadata__ = m;
  }
  let off = 0;
  for (const p of prepared) {
    header[p.name] = { dtype: p.code, shape: p.shape, data_offsets: [off, off + p.bytes.length] };
    off += p.bytes.length;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - ((8 + raw.length) % 8)) % 8;
  const jsonLen = raw.length + pad;
  const out = new Uint8Array(8 + jsonLen + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(jsonLen), true);
  out.set(raw, 8);
  out.fill(0x20, 8 + raw.length, 8 + jsonLen);
  let pos = 8 + jsonLen;
  for (const p of prepared) {
    out.set(p.bytes, pos);
    pos += p.bytes.length;
  }
  return out;
}

/** Serialise and write atomically (temp file + fsync + rename). */
export function writeSafetensorsSync(path: string, tensors: TensorMap, metadata?: Record<string, string>): void {
  writeFileAtomicSync(path, serializeSafetensors(tensors, metadata));
}

export async function writeSafetensors(path: string, tensors: TensorMap, metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
