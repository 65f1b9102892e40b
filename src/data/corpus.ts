/**
 * Text corpora: loading files and folders with clear errors, and the three named corpora embedded
 * in the package (data/, see data/SOURCES.md), each with its train and validation split.
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

/** Directory of the embedded corpora (data/ in the package). */
export function embeddedDataDir(): string {
  return path.join(packageRoot(), 'data');
}

/** Path of the embedded default corpus. */
export function embeddedCorpusPath(): string {
  return path.join(embeddedDataDir(), 'shakespeare.txt');
}

/**
 * A named corpus embedded in the package. `train` is trained on; `valid`, when the corpus has its
 * own validation split, is what validation reads. Without `valid` the training file is split
 * head/tail by `training.val_fraction` (the tail is validation).
 */
export interface DomainSpec {
  train: string;
  valid?: string;
  /** One word for the kind of text (report labels). */
  kind: string;
  description: string;
  source: string;
  license: string;
  /** How the splits are used, in one line (shown by `moe-ts data`). */
  splits: string;
}

export const DOMAINS: Readonly<Record<string, DomainSpec>> = {
  shakespeare: {
    train: 'shakespeare.txt',
    kind: 'verse',
    description: 'literature (plays), tiny shakespeare',
    source: 'karpathy/char-rnn data/tinyshakespeare/input.txt',
    license: 'public domain (works of William Shakespeare)',
    splits: 'one file: head trained on, tail (val_fraction) validated on',
  },
  wikitext: {
    // only WikiText-2's validation and test splits are available; the test split is not shipped, so it is never trained on
    train: 'wikitext2-valid.txt',
    kind: 'prose',
    description: 'encyclopedia (Wikipedia articles), WikiText-2 validation split',
    source: 'WikiText-2 (Merity et al., 2016) via pytorch/examples word_language_model/data/wikitext-2',
    license: 'CC BY-SA 3.0',
    splits: 'WikiText-2 validation split only: its head trained on, tail (val_fraction) validated on; the test split is not used',
  },
  linux: {
    train: 'linux-train.txt',
    valid: 'linux-valid.txt',
    kind: 'code',
    description: 'C source code, Linux kernel',
    source: 'Linux kernel sources via pytorch/examples word_language_model/data/linux (commit e9bf006)',
    license: 'GPL-2.0',
    splits: 'train file trained on, valid file validated on',
  },
};

export type DomainName = 'shakespeare' | 'wikitext' | 'linux';

export function domainNames(): string[] {
  return Object.keys(DOMAINS);
}

export interface DataDirOptions {
  /** Directory holding the corpus files under their usual names; overrides MOE_DATA_DIR and the embedded data/. */
  dataDir?: string;
}

/** Where named corpora are read from: opts.dataDir, else $MOE_DATA_DIR, else the package's data/. */
export function corpusDir(opts: DataDirOptions = {}): string {
  const explicit = opts.dataDir ?? process.env.MOE_DATA_DIR;
  if (!explicit) return embeddedDataDir();
  const d = path.resolve(explicit);
  if (!fs.existsSync(d) || !fs.statSync(d).isDirectory()) {
    throw new Error(`data directory ${d} (from ${opts.dataDir ? 'dataDir option' : 'MOE_DATA_DIR'}) does not exist or is not a directory`);
  }
  return d;
}

function checkDomain(name: string): DomainSpec {
  if (!Object.prototype.hasOwnProperty.call(DOMAINS, name)) {
    throw new Error(`unknown corpus domain "${name}" (known: ${domainNames().join(', ')})`);
  }
  return DOMAINS[name];
}

/** Absolute paths of a domain's files, train first (checked to exist). */
export function resolveDomainFiles(name: string, opts: DataDirOptions = {}): string[] {
  const spec = checkDomain(name);
  const dir = corpusDir(opts);
  const files = [spec.train, ...(spec.valid ? [spec.valid] : [])].map((f) => path.join(dir, f));
  for (const f of files) if (!fs.existsSync(f)) throw new Error(`corpus domain "${name}": file not found: ${f}`);
  return files;
}

/** A corpus as the dataset sees it: the text to train on, and its own validation text if it has one. */
export interface CorpusText {
  train: string;
  /** Absent: the dataset holds out the tail of `train` (training.val_fraction). */
  valid?: string;
}

/** The text of a named domain (its files concatenated, train first). */
export function loadDomain(name: string, opts: DataDirOptions = {}): string {
  const c = loadDomainSplits(name, opts);
  return c.train + (c.valid ?? '');
}

/** A named domain's train and validation texts. */
export function loadDomainSplits(name: string, opts: DataDirOptions = {}): CorpusText {
  const [train, valid] = resolveDomainFiles(name, opts).map((f) => readTextFile(f));
  return valid === undefined ? { train } : { train, valid };
}

/** Limits on a folder used as a corpus, so a mistyped path (a home directory) fails fast. */
export const FOLDER_LIMITS = { maxFiles: 10_000, maxBytes: 256 * 1024 * 1024, maxDepth: 16 };

/**
 * Every text file under a folder, in sorted path order, concatenated with a newline between
 * files. Hidden entries (.git) are skipped, files that are not UTF-8 text (binary: invalid UTF-8
 * or a NUL byte) are skipped, symbolic links are not followed. Errors name the limit that was hit.
 */
export function readTextFolder(dir: string, limits = FOLDER_LIMITS): { text: string; files: string[]; skipped: string[] } {
  const files: string[] = [];
  const skipped: string[] = [];
  const parts: string[] = [];
  let bytes = 0;
  const walk = (d: string, depth: number): void => {
    if (depth > limits.maxDepth) throw new Error(`corpus folder ${dir}: nested deeper than ${limits.maxDepth} levels at ${d}`);
    const entries = fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile()) {
        const size = fs.statSync(p).size;
        if (size === 0) continue;
        if (files.length + skipped.length >= limits.maxFiles) throw new Error(`corpus folder ${dir}: more than ${limits.maxFiles} files; point --data at a smaller folder`);
        if (bytes + size > limits.maxBytes) throw new Error(`corpus folder ${dir}: more than ${limits.maxBytes} bytes of files; point --data at a smaller folder`);
        const buf = fs.readFileSync(p);
        if (buf.includes(0) || firstInvalidUtf8(buf) >= 0) {
          skipped.push(p);
          continue;
        }
        bytes += size;
        files.push(p);
        let t = buf.toString('utf8');
        if (t.charCodeAt(0) === 0xfeff) t = t.slice(1);
        parts.push(t.endsWith('\n') ? t : t + '\n');
      }
    }
  };
  walk(dir, 0);
  if (!files.length) throw new Error(`corpus folder ${dir} holds no UTF-8 text files${skipped.length ? ` (${skipped.length} binary or non-UTF-8 files skipped)` : ''}`);
  return { text: parts.join(''), files, skipped };
}

function looksLikePath(s: string): boolean {
  return s.includes('/') || s.includes(path.sep) || s.endsWith('.txt') || fs.existsSync(s);
}

/** A domain name, or a path to a UTF-8 text file or a folder of them: its train (and validation) text. */
export function loadCorpusSplits(nameOrPath: string, opts: DataDirOptions = {}): CorpusText {
  if (Object.prototype.hasOwnProperty.call(DOMAINS, nameOrPath)) return loadDomainSplits(nameOrPath, opts);
  if (looksLikePath(nameOrPath)) {
    if (fs.existsSync(nameOrPath) && fs.statSync(nameOrPath).isDirectory()) return { train: readTextFolder(nameOrPath).text };
    return { train: readTextFile(nameOrPath) };
  }
  throw new Error(`unknown corpus "${nameOrPath}": not a domain (${domainNames().join(', ')}) and not a file or folder path`);
}

/** A domain name, or a path to a text file or folder: the whole text (train + validation). */
export function loadCorpus(nameOrPath: string, opts: DataDirOptions = {}): string {
  const c = loadCorpusSplits(nameOrPath, opts);
  return c.train + (c.valid ?? '');
}

/** One embedded corpus as `moe-ts data` lists it: its files and splits, size, source and licence. */
export interface CorpusInfo {
  name: string;
  kind: string;
  description: string;
  files: { file: string; split: 'train' | 'valid'; bytes: number }[];
  bytes: number;
  source: string;
  license: string;
  splits: string;
}

/** The named corpora with their file sizes (for `moe-ts data`). */
export function listCorpora(opts: DataDirOptions = {}): CorpusInfo[] {
  const dir = corpusDir(opts);
  return domainNames().map((name) => {
    const s = DOMAINS[name];
    const files = [
      { file: s.train, split: 'train' as const },
      ...(s.valid ? [{ file: s.valid, split: 'valid' as const }] : []),
    ].map((f) => {
      const p = path.join(dir, f.file);
      return { ...f, bytes: fs.existsSync(p) ? fs.statSync(p).size : 0 };
    });
    return { name, kind: s.kind, description: s.description, files, bytes: files.reduce((a, f) => a + f.bytes, 0), source: s.source, license: s.license, splits: s.splits };
  });
}
