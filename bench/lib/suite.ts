/**
 * Suites are plug-ins: every module in bench/suites/ exports `name`, `description` and
 * `run(opts) -> rows` (optionally `columns` for the main table and `report(rows)` for derived
 * tables such as speed ratios), either as named exports or as one default-exported object.
 * bench/run.ts discovers them by listing the compiled folder, so adding a suite is adding a file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Column, Row } from './table.js';

export type { Column, Row } from './table.js';

export interface SuiteOptions {
  /** Short smoke run: fewer reps, smaller time budget per case. */
  quick: boolean;
  /** Worker-thread counts to run each multi-threaded backend with. */
  threads: number[];
  /** Which moe-ts backends to run (names accepted by createBackend). */
  backends: string[];
  /** Also run peer libraries (tfjs-wasm, jax-js) where the suite has them. */
  peers: boolean;
  /** Run each backend configuration in its own child process (bench/lib/isolate.ts); false: --in-process. */
  isolate: boolean;
  /** Seed for all random inputs. */
  seed: number;
  /** Where <suite>.json goes; suites write companion files (plots) next to it. */
  outDir?: string;
  /** Progress messages (stderr; the tables go to stdout). */
  log: (msg: string) => void;
}

export interface SuiteTable {
  title: string;
  columns: Column[];
  rows: Row[];
}

export interface BenchSuite {
  name: string;
  description: string;
  columns?: Column[];
  run(opts: SuiteOptions): Promise<Row[]>;
  report?(rows: Row[], opts: SuiteOptions): SuiteTable[];
}

/** Accept either `export default {name, run, ...}` or named exports; reject anything else clearly. */
export function asSuite(mod: Record<string, unknown>, file: string): BenchSuite {
  const src = (mod.default && typeof mod.default === 'object' ? mod.default : mod) as Record<string, unknown>;
  if (typeof src.name !== 'string' || src.name === '') throw new Error(`bench suite ${file}: missing string export "name"`);
  if (typeof src.run !== 'function') throw new Error(`bench suite ${file}: missing function export "run(opts)"`);
  if (src.report !== undefined && typeof src.report !== 'function') throw new Error(`bench suite ${file}: "report" must be a function`);
  if (src.columns !== undefined && !Array.isArray(src.columns)) throw new Error(`bench suite ${file}: "columns" must be an array`);
  return {
    name: src.name,
    description: typeof src.description === 'string' ? src.description : '',
    columns: src.columns as Column[] | undefined,
    run: src.run as BenchSuite['run'],
    report: src.report as BenchSuite['report'],
  };
}

/** Compiled suite modules in `dir` (*.js, not declaration or map files), sorted by file name. */
export function suiteFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.js') && !f.startsWith('.'))
    .sort()
    .map((f) => path.join(dir, f));
}

export async function loadSuites(dir: string): Promise<BenchSuite[]> {
  const suites: BenchSuite[] = [];
  const seen = new Map<string, string>();
  for (const file of suiteFiles(dir)) {
    const s = asSuite((await import(pathToFileURL(file).href)) as Record<string, unknown>, file);
    const prev = seen.get(s.name);
    if (prev) throw new Error(`bench suites ${prev} and ${file} both call themselves "${s.name}"`);
    seen.set(s.name, file);
    suites.push(s);
  }
  return suites;
}

/** Pick the suites named on the command line (all when none), in command-line order. */
export function selectSuites(all: readonly BenchSuite[], names: readonly string[]): BenchSuite[] {
  if (names.length === 0) return [...all];
  return names.map((n) => {
    const s = all.find((x) => x.name === n);
    if (!s) throw new Error(`unknown bench suite "${n}": available: ${all.map((x) => x.name).join(', ') || '(none)'}`);
    return s;
  });
}
