/**
 * Atomic file writes: a reader (or a crash) sees either the old file or the complete new one,
 * never a torn write. Temp file in the same directory (rename is only atomic within one file
 * system), fsync before rename (else the rename can reach disk before the data), then a
 * best-effort fsync of the directory so the rename itself is durable.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

/** fsync a directory so a rename in it is durable; best effort (some file systems refuse it, and the files themselves are synced). */
export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // refused on this platform/file system
  } finally {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* nothing to recover */
      }
    }
  }
}

export interface AtomicWriteOptions {
  /** Create missing parent directories (default true). */
  mkdir?: boolean;
  /** File mode of the new file (default 0o644). */
  mode?: number;
}

/** Write `data` to `target` atomically (synchronous). */
export function writeFileAtomicSync(target: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  if (opts.mkdir !== false) fs.mkdirSync(path.dirname(path.resolve(target)), { recursive: true });
  const bytes = toBytes(data);
  try {
    writeStreamAtomicSync(
      target,
      (fd) => {
        let off = 0;
        while (off < bytes.length) off += fs.writeSync(fd, bytes, off, bytes.length - off);
      },
      { ...opts, mkdir: false },
    );
  } catch (e) {
    throw new Error(`writeFileAtomic ${target}: ${(e as Error).message}`);
  }
}

/** Write `data` to `target` atomically. */
export async function writeFileAtomic(target: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const dir = path.dirname(path.resolve(target));
  if (opts.mkdir !== false) await fsp.mkdir(dir, { recursive: true });
  const tmp = tempPathFor(path.resolve(target));
  const bytes = toBytes(data);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx', opts.mode ?? 0o644);
    let off = 0;
    while (off < bytes.length) off += (await fh.write(bytes, off, bytes.length - off)).bytesWritten;
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, target);
  } catch (e) {
    if (fh !== undefined) await fh.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw new Error(`writeFileAtomic ${target}: ${(e as Error).message}`);
  }
  fsyncDirSync(dir);
}

/** JSON.stringify (2-space indent, trailing newline) + atomic write. */
export function writeJsonAtomicSync(target: string, value: unknown, opts: AtomicWriteOptions = {}): void {
  writeFileAtomicSync(target, stringifyJson(target, value), opts);
}

export async function writeJsonAtomic(target: string, value: unknown, opts: AtomicWriteOptions = {}): Promise<void> {
  await writeFileAtomic(target, stringifyJson(target, value), opts);
}

function stringifyJson(target: string, value: unknown): string {
  const s = JSON.stringify(value, null, 2);
  if (s === undefined) throw new Error(`writeJsonAtomic ${target}: value is not JSON-serialisable`);
  return s + '\n';
}

/**
 * Stream a file to `target` atomically (synchronous): `body` writes through the temp file's
 * descriptor (positioned writes, any size, never the whole file in memory); then fsync, rename.
 * On any error the temp file is removed and the error rethrown as it is (it names what failed).
 */
export function writeStreamAtomicSync<T>(target: string, body: (fd: number) => T, opts: AtomicWriteOptions = {}): T {
  const dir = path.dirname(path.resolve(target));
  if (opts.mkdir !== false) fs.mkdirSync(dir, { recursive: true });
  const tmp = tempPathFor(path.resolve(target));
  let fd: number | undefined;
  let out: T;
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode ?? 0o644);
    out = body(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDirSync(dir);
  return out;
}
