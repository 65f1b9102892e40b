/**
 * A Hugging Face weights directory: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` ({"metadata": {...}, "weight_map": {tensor: shard file}}).
 * Every shard's header is validated on open; tensors are read one at a time at their offsets.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsReader, quoteName, type HeaderEntry, type TensorEntry } from './safetensors.js';

/** The shard index file name of a Hugging Face weights directory. */
export const INDEX_FILE = 'model.safetensors.index.json';
/** The single-file weights name of a Hugging Face directory. */
export const SINGLE_FILE = 'model.safetensors';
/** An index is JSON of names; bound it before reading (a hostile path could be huge or a device). */
const MAX_INDEX_BYTES = 64_000_000;

function readIndex(file: string): Record<string, string> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new Error(`${file}: cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${file}: not a regular file`);
  if (st.size > MAX_INDEX_BYTES) throw new Error(`${file}: ${st.size} bytes exceeds the ${MAX_INDEX_BYTES}-byte limit for an index`);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${quoteName((e as Error).message, 200).slice(1, -1)}`);
  }
  const wm = (v as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new Error(`${file}: field weight_map missing or not an object`);
  const out: Record<string, string> = Object.create(null);
  for (const [k, f] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof f !== 'string') throw new Error(`${file}: weight_map.${quoteName(k)} must be a file name string`);
    // a shard is a plain file next to the index: no directories, no "..", no absolute paths
    if (f.length === 0 || f !== path.basename(f) || f === '.' || f === '..' || f.includes('\\')) {
      throw new Error(`${file}: weight_map.${quoteName(k)} names ${quoteName(f)}, which is not a plain file name in the same directory`);
    }
    out[k] = f;
  }
  return out;
}

/** The weights of a directory (single file or shards), headers validated on open, tensors read one at a time. */
export class SafetensorsCheckpoint {
  /** Tensor name -> its shard reader. */
  private readonly where = new Map<string, SafetensorsReader>();
  readonly readers: SafetensorsReader[] = [];
  readonly files: string[];

  constructor(readonly dir: string) {
    const idx = path.join(dir, INDEX_FILE);
    const single = path.join(dir, SINGLE_FILE);
    try {
      if (fs.existsSync(idx)) {
        const map = readIndex(idx);
        this.files = [...new Set(Object.values(map))].sort();
        const byFile = new Map<string, SafetensorsReader>();
        for (const f of this.files) {
          const r = new SafetensorsReader(path.join(dir, f));
          byFile.set(f, r);
          this.readers.push(r);
        }
        for (const r of this.readers) {
          for (const name of r.names()) {
            const other = this.where.get(name);
            if (other) throw new Error(`${idx}: tensor ${quoteName(name)} is stored in two shards (${path.basename(other.path)} and ${path.basename(r.path)})`);
            this.where.set(name, r);
          }
        }
        for (const [name, f] of Object.entries(map)) {
          const r = this.where.get(name);
          if (!r) throw new Error(`${idx}: weight_map lists tensor ${quoteName(name)} in ${f}, but no shard holds it`);
          if (r !== byFile.get(f)) throw new Error(`${idx}: weight_map puts tensor ${quoteName(name)} in ${f}, but it is in ${path.basename(r.path)}`);
        }
      } else if (fs.existsSync(single)) {
        this.files = [SINGLE_FILE];
        const r = new SafetensorsReader(single);
        this.readers.push(r);
        for (const name of r.names()) this.where.set(name, r);
      } else {
        throw new Error(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} (a Hugging Face model directory holds one of them)`);
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  entry(name: string): HeaderEntry | undefined {
    return this.where.get(name)?.entries.get(name);
  }

  /** The shard file holding a tensor (undefined when none does). */
  pathOf(name: string): string | undefined {
    return this.where.get(name)?.path;
  }

  read(name: string): TensorEntry {
    const r = this.where.get(name);
    if (!r) throw new Error(`${this.dir}: missing tensor ${quoteName(name)}`);
    return r.read(name);
  }

  close(): void {
    for (const r of this.readers) r.close();
  }
}
