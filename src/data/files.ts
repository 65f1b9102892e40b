/**
 * Bounded reads of regular files. A FIFO would block the open (or read forever), /dev/zero never
 * ends and a huge file exhausts memory, so every file the user names (corpora, configs, tokenizers,
 * checkpoint JSON) is opened without blocking, checked to be a regular file, and checked against a
 * size limit before any byte is read. Lives in data/ (the lowest layer that reads user files) so
 * data, io and cli can all use it.
 */
import * as fs from 'node:fs';
import { oneLine, checkJsonDepth } from '../tensor/validate.js';

export class FileReadError extends Error {}

export interface ReadFileOptions {
  /** Refuse files larger than this (bytes). */
  maxBytes: number;
  /** What the file is, for messages: "corpus file", "config", "tokenizer file", ... */
  what: string;
}

/** Byte counts for messages: 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[i]}`;
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Size limits per kind of file (bytes). Corpora are bounded by V8's longest string. */
export const FILE_LIMITS = {
  corpus: 512 * 1024 * 1024,
  config: 16 * 1024 * 1024,
  tokenizer: 256 * 1024 * 1024,
  checkpointJson: 512 * 1024 * 1024,
  pointer: 1024 * 1024,
} as const;

/**
 * Read a whole regular file, at most `maxBytes`. Errors are one line naming `what` and the path:
 * missing, unreadable, a directory/FIFO/device, too large.
 */
export function readRegularFileSync(file: string, opts: ReadFileOptions): Buffer {
  const { what, maxBytes } = opts;
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FileReadError(`${what} not found: ${file}`);
    if (code === 'EISDIR') throw new FileReadError(`${what} ${file} is a directory, expected a regular file`);
    throw new FileReadError(`${what} ${file} cannot be read: ${code ?? (e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new FileReadError(`${what} ${file} is ${kindOf(st)}, expected a regular file`);
    if (st.size > maxBytes) throw new FileReadError(`${what} ${file} is ${formatBytes(st.size)}, more than the limit of ${formatBytes(maxBytes)}`);
    const buf = Buffer.allocUnsafe(st.size);
    let off = 0;
    while (off < st.size) {
      const n = fs.readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break; // the file shrank while reading
      off += n;
    }
    return off === st.size ? buf : buf.subarray(0, off);
  } catch (e) {
    if (e instanceof FileReadError) throw e;
    throw new FileReadError(`${what} ${file} cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** readRegularFileSync decoded as UTF-8 (no validation; see corpus.readTextFile for strict text). */
export function readRegularTextFileSync(file: string, opts: ReadFileOptions): string {
  return readRegularFileSync(file, opts).toString('utf8');
}

/** JSON.parse with a one-line error naming the file; `null` and non-objects are refused when `object` is set. */
export function readJsonFileSync(file: string, opts: ReadFileOptions & { object?: boolean }): unknown {
  const text = readRegularTextFileSync(file, opts);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new FileReadError(`${opts.what} ${file} is not valid JSON: ${oneLine((e as Error).message)}`);
  }
  try {
    checkJsonDepth(v, `${opts.what} ${file}`);
  } catch (e) {
    throw new FileReadError((e as Error).message);
  }
  if (opts.object && (typeof v !== 'object' || v === null || Array.isArray(v))) {
    throw new FileReadError(`${opts.what} ${file}: expected a JSON object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  }
  return v;
}

/** Throw unless `file` is an existing regular file (stat only: a FIFO is never opened). For readers that open the file themselves. */
export function assertRegularFile(file: string, what: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FileReadError(`${what} not found: ${file}`);
    throw new FileReadError(`${what} ${file} cannot be read: ${code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new FileReadError(`${what} ${file} is ${kindOf(st)}, expected a regular file`);
}
