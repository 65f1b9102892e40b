// The public API: every runtime name exported by the library root (`moe-ts`) and the Node entry
// (`moe-ts/node`) has a one-line entry in docs/api.md under its entry point, and the root exports
// no test oracle or Node-only loader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as root from '../../src/index.js';
import * as node from '../../src/node.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const doc = fs.readFileSync(path.join(REPO, 'docs/api.md'), 'utf8');
const [, rootPart = '', nodePart = ''] = doc.split(/^## /m);

function documented(part: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of part.split('\n')) {
    const r = line.match(/^- `([^`]+)` \([^)]*\): (.*)$/);
    if (r) m.set(r[1], r[2]);
  }
  return m;
}

test('every root export has a one-line entry in the root section of docs/api.md', () => {
  const d = documented(rootPart);
  const missing = Object.keys(root).filter((k) => !d.get(k)?.trim() || d.get(k)!.startsWith('TODO'));
  assert.deepEqual(missing, [], 'run `npm run docs:api` and document these');
});

test('every name moe-ts/node adds has a one-line entry in its section', () => {
  const d = documented(nodePart);
  const added = Object.keys(node).filter((k) => !(k in root));
  assert.ok(added.includes('initBackend') && added.includes('loadCheckpoint') && added.includes('train'));
  const missing = added.filter((k) => !d.get(k)?.trim() || d.get(k)!.startsWith('TODO'));
  assert.deepEqual(missing, []);
  for (const k of Object.keys(root)) assert.ok(k in node, `moe-ts/node re-exports the root's ${k}`);
});

test('the root exports no test oracle and no Node-only loader', () => {
  for (const k of [
    'referenceMoE',
    'referenceExpert',
    'referenceSparse',
    'initBackend',
    'loadCheckpoint',
    'saveCheckpoint',
    'readSafetensorsSync',
    'loadModelForInference',
    'loadTokenizerFile',
    'train',
  ]) {
    assert.ok(!(k in root), `${k} must not be exported from the root`);
  }
});
