// The layer rule, measured: every relative import in src/ (static, `import type`, re-exports,
// side-effect and dynamic imports) must point to the same folder or one below it in the order.
// Files at the top of src/ (the package entry points) sit above every folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Lowest first. */
export const LAYERS = ['tensor', 'kernels', 'nn', 'moe', 'models', 'data', 'io', 'infer', 'train', 'adapt', 'bench-routers', 'cli'];

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SRC = path.join(ROOT, 'src');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.(ts|mts)$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Every module specifier a file imports: from-clauses, side-effect imports, dynamic import(). */
export function importSpecifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  const out: string[] = [];
  const patterns = [/\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"`]([^'"`]+)['"`]\s*[,)]/g];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]);
  return out;
}

/** The folder (layer) of a file under src/, or '' for the entry files at its top. */
function layerOf(file: string): string {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length === 1 ? '' : rel[0];
}

function edges(): { from: string; to: string; file: string; spec: string }[] {
  const out: { from: string; to: string; file: string; spec: string }[] = [];
  for (const file of sources(SRC)) {
    for (const spec of importSpecifiers(fs.readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(SRC + path.sep)) {
        out.push({ from: layerOf(file), to: '(outside src)', file, spec });
        continue;
      }
      out.push({ from: layerOf(file), to: layerOf(target), file, spec });
    }
  }
  return out;
}

test('the import scanner sees every kind of import', () => {
  const text = [
    "import { a } from './a.js';",
    "import type { B } from '../b/index.js';",
    "export * from './c.js';",
    "export { d } from './d.js';",
    "import './side.js';",
    "const m = await import('../dyn/x.js');",
    'import {',
    '  e,',
    "} from '../e.js';",
    "// import { no } from './commented.js';",
    "/* import { no2 } from './block.js'; */",
    "const s = 'not an import from ./x.js';",
  ].join('\n');
  assert.deepEqual(importSpecifiers(text).sort(), ['../b/index.js', '../dyn/x.js', '../e.js', './a.js', './c.js', './d.js', './side.js'].sort());
});

test('every folder of src/ is in the layer order', () => {
  const folders = fs
    .readdirSync(SRC, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  for (const f of folders) assert.ok(LAYERS.includes(f), `src/${f} is not in the layer order (${LAYERS.join(' < ')}): add it where it belongs`);
});

test('no upward, mutual or outside imports between the folders of src/', () => {
  const rank = new Map(LAYERS.map((l, i) => [l, i]));
  const bad: string[] = [];
  const all = edges();
  // the scan reaches real edges (including the CLI's dynamic imports), so an empty result means something
  assert.ok(all.length > 200, `only ${all.length} imports found`);
  assert.ok(all.some((e) => e.from === 'cli' && e.to === 'infer'));
  for (const e of all) {
    if (e.from === e.to) continue;
    const where = `${path.relative(ROOT, e.file)} imports '${e.spec}'`;
    if (e.to === '(outside src)') bad.push(`${where}: outside src/`);
    else if (e.to === '') bad.push(`${where}: an entry file at the top of src/ (import the folder's own module instead)`);
    else if (e.from !== '' && !(rank.get(e.to)! < rank.get(e.from)!)) bad.push(`${where}: ${e.from} may not import ${e.to} (order: ${LAYERS.join(' < ')})`);
  }
  assert.deepEqual(bad, []);
});

/** Node built-ins and Node-only packages. */
function isNodeOnly(spec: string): boolean {
  return spec.startsWith('node:') || spec === 'onnxruntime-node' || ['fs', 'os', 'path', 'url', 'crypto', 'worker_threads', 'child_process', 'module', 'fs/promises'].includes(spec);
}

/** Whether a module reaches a Node-only import through its own imports, transitively. */
function reachesNode(file: string, seen = new Set<string>()): boolean {
  if (seen.has(file)) return false;
  seen.add(file);
  for (const spec of importSpecifiers(fs.readFileSync(file, 'utf8'))) {
    if (isNodeOnly(spec)) return true;
    if (spec.startsWith('.') && reachesNode(path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts'), seen)) return true;
  }
  return false;
}

/**
 * Modules reachable from the root that still hold a Node-only loader next to portable code; the
 * root exports only their portable names. Each entry is the module and what pulls Node in; the
 * list may only shrink (the test fails if an entry no longer reaches Node, so it cannot rot).
 */
const KNOWN_MIXED: Record<string, string> = {
  'data/tokenizer/index.ts': 'loadTokenizerFile reads a file (exported from moe-ts/node)',
  'infer/generate.ts': 'loadModelForInference loads a checkpoint from disk (exported from moe-ts/node)',
};

test('the library root reaches no Node built-in except through the known mixed modules', () => {
  const start = path.join(SRC, 'index.ts');
  const seen = new Set<string>();
  const queue = [start];
  const direct = new Map<string, string[]>();
  while (queue.length) {
    const f = queue.shift()!;
    if (seen.has(f)) continue;
    seen.add(f);
    const rel = path.relative(SRC, f);
    if (KNOWN_MIXED[rel]) continue; // its Node imports are accounted for; its other imports are portable or reached elsewhere
    for (const spec of importSpecifiers(fs.readFileSync(f, 'utf8'))) {
      if (spec.startsWith('.')) queue.push(path.resolve(path.dirname(f), spec).replace(/\.js$/, '.ts'));
      else if (isNodeOnly(spec)) direct.set(rel, [...(direct.get(rel) ?? []), spec]);
    }
  }
  assert.deepEqual(Object.fromEntries(direct), {}, 'modules reachable from src/index.ts that import Node built-ins');
  for (const [rel, why] of Object.entries(KNOWN_MIXED)) {
    assert.ok(seen.has(path.join(SRC, rel)), `${rel} is no longer reachable from the root: remove it from KNOWN_MIXED`);
    assert.ok(reachesNode(path.join(SRC, rel)), `${rel} (${why}) no longer reaches Node code: remove it from KNOWN_MIXED`);
  }
});
