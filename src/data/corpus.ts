/**
 * Text corpora: loading files with clear errors, the embedded default (data/shakespeare.txt) and
 * named domains found in a shared data directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readRegularFileSync, FILE_LIMITS } from './files.js';

/** Index of the first byte that breaks UTF-8 (overlongs, surrogates, > U+10FFFF, truncation), or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  const n = b.length;
  let i = 0;
  while (i < n) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c === 0xe0) lo = 0xa0; // overlong
      if (c === 0xed) hi = 0x9f; // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c === 0xf0) lo = 0x90; // overlong
      if (c === 0xf4) hi = 0x8f; // > U+10FFFF
    } else return i;
    if (i + need >= n) return i; // truncated at end of data
    if (b[i + 1] < lo || b[i + 1] > hi) return i;
    for (let k = 2; k <= need; k++) if ((b[i + k] & 0xc0) !== 0x80) return i;
    i += need + 1;
  }
  return -1;
}

/** Read a UTF-8 text file; errors name the path (missing, unreadable, not a regular file, too large, empty, invalid UTF-8). */
export function readTextFile(file: string): string {
  const buf = readRegularFileSync(file, { what: 'corpus file', maxBytes: FILE_LIMITS.corpus });
  if (buf.length === 0) throw new Error(`corpus file ${file} is empty`);
  const bad = firstInvalidUtf8(buf);
  if (bad >= 0) throw new Error(`corpus file ${file} is not valid UTF-8 (bad byte 0x${buf[bad].toString(16).padStart(2, '0')} at offset ${bad})`);
  let text = buf.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a BOM is not text
  return text;
}

let cachedRoot: string | null = null;

/**
 * The package root (the directory whose package.json is named "moe-ts"), found by walking up from
 * this file, so it works from src/ (ts loaders) and from dist/src/ alike.
 */
export function packageRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'moe-ts') return (cachedRoot = dir);
      } catch {
        // an unreadable package.json on the way up is not ours; keep walking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the moe-ts package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** Path of the embedded default corpus. */
export function embeddedCorpusPath(): string {
  return path.join(packageRoot(), 'data', 'shakespeare.txt');
}

export interface DomainSpec {
  /** Files concatenated in this order (so a "valid" file lands in the validation tail). */
  files: string[];
  embedded: boolean;
  description: string;
}

export const DOMAINS: Readonly<Record<string, DomainSpec>> = {
  shakespeare: { files: ['shakespeare.txt'], embedded: true, description: 'literature (plays), tiny shakespeare' },
  wikitext: { files: ['wikitext2-test.txt', 'wikitext2-valid.txt'], embedded: false, description: 'encyclopedia, WikiText-2' },
  linux: { files: ['linux-train.txt', 'linux-valid.txt'], embedded: false, description: 'C source code, Linux kernel' },
};

export type DomainName = 'shakespeare' | 'wikitext' | 'linux';

export function domainNames(): string[] {
  return Object.keys(DOMAINS);
}

export interface DataDirOptions {
  /** Directory holding the shared text files; overrides MOE_DATA_DIR and the upward search. */
  dataDir?: string;
}

/**
 * The shared text directory: opts.dataDir, else $MOE_DATA_DIR, else the first `shared/data/text`
 * found walking up from the package root or the working directory. Null if none exists.
 */
export function findSharedTextDir(opts: DataDirOptions = {}): string | null {
  const explicit = opts.dataDir ?? process.env.MOE_DATA_DIR;
  if (explicit) {
    const d = path.resolve(explicit);
    if (!fs.existsSync(d) || !fs.statSync(d).isDirectory()) {
      throw new Error(`data directory ${d} (from ${opts.dataDir ? 'dataDir option' : 'MOE_DATA_DIR'}) does not exist or is not a directory`);
    }
    return d;
  }
  const starts: string[] = [];
  try {
    starts.push(packageRoot());
  } catch {
    // not inside the package (unusual); the working directory still works
  }
  starts.push(process.cwd());
  for (const start of starts) {
    let dir = path.resolve(start);
    for (;;) {
      const cand = path.join(dir, 'shared', 'data', 'text');
      if (fs.existsSync(cand) && fs.statSync(cand).isDirectory()) return cand;
      const up = path.dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  return null;
}

/** Absolute paths of a domain's files (checked to exist). */
export function resolveDomainFiles(name: string, opts: DataDirOptions = {}): string[] {
  if (!Object.prototype.hasOwnProperty.call(DOMAINS, name)) {
    throw new Error(`unknown corpus domain "${name}" (known: ${domainNames().join(', ')})`);
  }
  const spec = DOMAINS[name];
  if (spec.embedded) return [embeddedCorpusPath()];
  const dir = findSharedTextDir(opts);
  if (!dir) {
    throw new Error(
      `corpus domain "${name}" needs ${spec.files.join(', ')}, but no data directory was found: set MOE_DATA_DIR or place them in shared/data/text above ${packageRoot()}`,
    );
  }
  const files = spec.files.map((f) => path.join(dir, f));
  for (const f of files) if (!fs.existsSync(f)) throw new Error(`corpus domain "${name}": file not found: ${f}`);
  return files;
}

/** The text of a named domain (its files concatenated). */
export function loadDomain(name: string, opts: DataDirOptions = {}): string {
  return resolveDomainFiles(name, opts)
    .map((f) => readTextFile(f))
    .join('');
}

/** A domain name, or a path to a text file (anything containing a path separator or ending in .txt). */
export function loadCorpus(nameOrPath: string, opts: DataDirOptions = {}): string {
  if (Object.prototype.hasOwnProperty.call(DOMAINS, nameOrPath)) return loadDomain(nameOrPath, opts);
  if (nameOrPath.includes('/') || nameOrPath.includes(path.sep) || nameOrPath.endsWith('.txt')) return readTextFile(nameOrPath);
  throw new Error(`unknown corpus "${nameOrPath}": not a domain (${domainNames().join(', ')}) and not a file path`);
}
