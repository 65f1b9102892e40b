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

/**
 * Codes with no moe-ts storage dtype, read as raw bytes (TensorEntry.dtype 'uint8', with `code`
 * naming the stored type) so quantised checkpoints can be dequantised on load (quant.ts).
 */
export const RAW_DTYPES: Readonly<Record<string, number>> = { F8_E4M3: 1, F8_E5M2: 1 };

const CODE_OF: Record<DType, string> = Object.fromEntries(Object.entries(SAFETENSORS_DTYPES).map(([code, d]) => [d, code])) as Record<DType, string>;

/** The reference implementation refuses headers above 100 MB; so do we (a corrupt length must not allocate GBs). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: DType;
  shape: number[];
  /** The dtype's storage array (see tensor/dtype.ts), or raw little-endian bytes as a Uint8Array. */
  data: StorageArray;
  /** The safetensors dtype code when it has no moe-ts dtype (F8_E4M3: data holds the raw bytes). */
  code?: string;
}

export interface SafetensorsFile {
  /** In file order of data offsets. */
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

export interface HeaderEntry {
  dtype: DType;
  /** The stored safetensors dtype code (F32, BF16, F8_E4M3, ...). */
  code: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

/** A validated header: entries by data offset, metadata, and where the byte buffer starts. */
export interface SafetensorsHeader {
  entries: Map<string, HeaderEntry>;
  metadata: Record<string, string>;
  dataStart: number;
}

function assertLittleEndian(): void {
  // typed arrays use host byte order; safetensors is little-endian (checked without node:os, so this runs in browsers)
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('safetensors: big-endian hosts are not supported');
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });

/**
 * A string from a file, quoted for an error message: control characters (C0, DEL, C1, line and
 * paragraph separators) escaped so a hostile name cannot forge lines or terminal sequences, and
 * long names cut.
 */
export function quoteName(s: string, max = 120): string {
  const cut = s.length > max ? s.slice(0, max) + '...' : s;
  // eslint-disable-next-line no-control-regex
  return '"' + cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029"\\]/g, (c) => (c === '"' || c === '\\' ? '\\' + c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)) + '"';
}

/**
 * The first duplicated key of the top-level JSON object in `text` (already known to parse), or
 * undefined. JSON.parse keeps the last of duplicate keys silently; a checkpoint naming one tensor
 * twice is ambiguous, so it is an error.
 */
function firstDuplicateTopKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
  }
  return undefined;
}

/**
 * Validate a header's JSON bytes against a byte buffer of `dataLen` bytes that starts at file
 * offset `dataStart` (= 8 + header length): dtypes, shapes, offsets in range, sizes matching the
 * shapes, no duplicate names, tensors tiling the buffer exactly. Nothing of the data is read.
 */
export function validateSafetensorsHeader(headerBytes: Uint8Array, dataStart: number, dataLen: number, source = '<buffer>'): SafetensorsHeader {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${source}: ${msg}`);
  };
  const fileLen = dataStart + dataLen;
  let text: string;
  try {
    text = utf8Fatal.decode(headerBytes);
  } catch {
    return fail(`header (bytes 8..${dataStart}) is not valid UTF-8`);
  }
  if (text[0] !== '{') fail(`header must start with '{' at byte 8, found ${quoteName(text[0] ?? '')}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`bad JSON in header (bytes 8..${dataStart}): ${quoteName((e as Error).message, 200).slice(1, -1)}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header JSON is not an object');
  const dup = firstDuplicateTopKey(text);
  if (dup !== undefined) fail(`tensor ${quoteName(dup)} appears twice in the header (duplicate names are ambiguous)`);

  const metadata: Record<string, string> = {};
  const list: [string, HeaderEntry][] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('field __metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${quoteName(k).slice(1, -1)} must be a string, got ${typeof v}`);
        metadata[k] = v as string;
      }
      continue;
    }
    const where = `tensor ${quoteName(name)}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`${where}: entry must be an object with dtype, shape, data_offsets`);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') fail(`${where}: unknown field ${quoteName(k)}`);
    }
    if (typeof e.dtype !== 'string') fail(`${where}: field dtype missing or not a string`);
    const code = e.dtype as string;
    const known = Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, code);
    const raw8 = Object.prototype.hasOwnProperty.call(RAW_DTYPES, code);
    if (!known && !raw8) fail(`${where}: unknown dtype ${quoteName(code)} (field dtype; supported: ${[...Object.keys(SAFETENSORS_DTYPES), ...Object.keys(RAW_DTYPES)].join(', ')})`);
    const dtype: DType = known ? SAFETENSORS_DTYPES[code] : 'uint8';
    if (!Array.isArray(e.shape)) fail(`${where}: field shape missing or not an array`);
    const shape = e.shape as unknown[];
    shape.forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) fail(`${where}: shape[${i}] must be a non-negative integer, got ${quoteName(String(JSON.stringify(d))).slice(1, -1)}`);
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
    if (typeof b !== 'number' || !Number.isSafeInteger(b) || b < 0) fail(`${where}: data_offsets[0] must be a non-negative integer, got ${quoteName(String(JSON.stringify(b))).slice(1, -1)}`);
    if (typeof en !== 'number' || !Number.isSafeInteger(en) || en < 0) fail(`${where}: data_offsets[1] must be a non-negative integer, got ${quoteName(String(JSON.stringify(en))).slice(1, -1)}`);
    const begin = b as number;
    const end = en as number;
    if (end < begin) fail(`${where}: data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataLen) {
      fail(`${where}: data_offsets [${begin}, ${end}] out of range: byte buffer has ${dataLen} bytes (tensor would end at file byte ${dataStart + end}, file has ${fileLen}; truncated file?)`);
    }
    const want = numel * DTYPE_BYTES[dtype];
    if (end - begin !== want) {
      fail(`${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape [${shape.join(', ')}] of ${code} needs ${want}`);
    }
    list.push([name, { dtype, code, shape: shape as number[], begin: dataStart + begin, end: dataStart + end }]);
  }

  // the spec requires the tensors to tile the buffer exactly: no holes, no overlap, no trailing bytes
  list.sort((x, y) => x[1].begin - y[1].begin || x[1].end - y[1].end || (x[0] < y[0] ? -1 : 1));
  let pos = dataStart;
  let prev = '';
  for (const [name, e] of list) {
    if (e.begin < pos) {
      fail(`tensor ${quoteName(name)}: data_offsets [${e.begin - dataStart}, ${e.end - dataStart}] overlap tensor ${quoteName(prev)} (which ends at offset ${pos - dataStart})`);
    }
    if (e.begin > pos) {
      fail(`tensor ${quoteName(name)}: data_offsets begin at ${e.begin - dataStart} but the previous data ends at ${pos - dataStart}: ${e.begin - pos} uncovered bytes (non-contiguous)`);
    }
    pos = e.end;
    prev = name;
  }
  if (pos !== fileLen) {
    fail(`${fileLen - pos} trailing bytes after the last tensor (data covers buffer offsets 0..${pos - dataStart} of ${dataLen}, starting at file byte ${pos})`);
  }
  return { entries: new Map(list), metadata, dataStart };
}

/** Check the 8-byte length prefix against the file size; returns the header length. */
function headerLength(prefix: Uint8Array, fileLen: number, fail: (m: string) => never): number {
  if (fileLen < 8) fail(`truncated file: ${fileLen} bytes, need at least 8 for the header length at byte 0`);
  const n64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n64} at byte 0 exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (n < 2) fail(`header length ${n} at byte 0 is too small for a JSON object`);
  if (8 + n > fileLen) fail(`header length ${n} at byte 0 runs past the end of the file (header would end at byte ${8 + n}, file has ${fileLen} bytes)`);
  return n;
}

/**
 * Parse and validate the header of an in-memory image only. Returns entries sorted by data
 * offset plus the metadata, and the absolute offset where the byte buffer starts.
 */
export function parseSafetensorsHeader(buf: Uint8Array, source = '<buffer>'): SafetensorsHeader {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${source}: ${msg}`);
  };
  const n = headerLength(buf, buf.length, fail);
  return validateSafetensorsHeader(buf.subarray(8, 8 + n), 8 + n, buf.length - 8 - n, source);
}

function entryFromBytes(e: HeaderEntry, bytes: Uint8Array): TensorEntry {
  // bytes is a fresh, exactly sized buffer (aligned at 0), so a typed view fits any dtype
  const Ctor = storageConstructor(e.dtype);
  const data = new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, (e.end - e.begin) / DTYPE_BYTES[e.dtype]);
  const t: TensorEntry = { dtype: e.dtype, shape: e.shape.slice(), data };
  if (!Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, e.code)) t.code = e.code;
  return t;
}

/** Parse a whole safetensors image; tensor data is copied into fresh, aligned storage arrays. */
export function parseSafetensors(buf: Uint8Array, source = '<buffer>'): SafetensorsFile {
  assertLittleEndian();
  const { entries, metadata } = parseSafetensorsHeader(buf, source);
  const tensors = new Map<string, TensorEntry>();
  for (const [name, e] of entries) {
    // copy (Uint8Array.slice, not Buffer.slice which aliases): the source offset need not be aligned for the dtype
    tensors.set(name, entryFromBytes(e, Uint8Array.prototype.slice.call(buf, e.begin, e.end)));
  }
  return { tensors, metadata };
}

/**
 * An open safetensors file: the header is read and validated on open (nothing else), each
 * tensor is read on demand at its offset into a buffer of its own size, so files of any size
 * (shards of many GB) load without ever holding more than one tensor's bytes extra. Only
 * regular files are accepted (a FIFO or /dev/zero would hang or never end).
 */
export class SafetensorsReader {
  readonly entries: Map<string, HeaderEntry> = new Map();
  readonly metadata: Record<string, string> = {};
  readonly size: number = 0;
  private fd: number | null = null;

  constructor(readonly path: string) {
    assertLittleEndian();
    const fail = (msg: string): never => {
      throw new Error(`safetensors ${path}: ${msg}`);
    };
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    } catch (e) {
      return fail(`cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    this.fd = fd;
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) fail('not a regular file (FIFOs, devices and directories are refused)');
      (this as { size: number }).size = st.size;
      const prefix = new Uint8Array(8);
      if (this.size >= 8) this.readAt(prefix, 0, fail);
      const n = headerLength(prefix, this.size, fail);
      const hb = new Uint8Array(n);
      this.readAt(hb, 8, fail);
      const h = validateSafetensorsHeader(hb, 8 + n, this.size - 8 - n, path);
      for (const [k, v] of h.entries) this.entries.set(k, v);
      Object.assign(this.metadata, h.metadata);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Fill `buf` from file offset `pos`; a file shorter than its header says is an error naming the offset. */
  private readAt(buf: Uint8Array, pos: number, fail: (m: string) => never): void {
    if (this.fd === null) return fail('reader is closed');
    let off = 0;
    while (off < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, off, buf.length - off, pos + off);
      } catch (e) {
        return fail(`read error at byte ${pos + off}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      if (n === 0) fail(`truncated file: ended at byte ${pos + off}, expected data up to byte ${pos + buf.length}`);
      off += n;
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): HeaderEntry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`safetensors ${this.path}: no tensor ${quoteName(name)}`);
    return e;
  }

  /** One tensor's data, as stored (raw bytes for F8 codes). */
  read(name: string): TensorEntry {
    const e = this.entry(name);
    const bytes = new Uint8Array(e.end - e.begin);
    this.readAt(bytes, e.begin, (m) => {
      throw new Error(`safetensors ${this.path}: tensor ${quoteName(name)}: ${m}`);
    });
    return entryFromBytes(e, bytes);
  }

  close(): void {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* closing a read-only fd cannot lose data */
      }
      this.fd = null;
    }
  }
}

export function readSafetensorsSync(path: string): SafetensorsFile {
  const r = new SafetensorsReader(path);
  try {
    const tensors = new Map<string, TensorEntry>();
    for (const name of r.names()) tensors.set(name, r.read(name));
    return { tensors, metadata: r.metadata };
  } finally {
    r.close();
  }
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  return readSafetensorsSync(path);
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
