// Issue 17 item 1: `moe-ts upcycle` on moe-ts runs and Hugging Face directories, with its before/after table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { saveModelRun, loadAnyModel, formatAdaptTable } from '../../src/adapt/common.js';
import { runUpcycle } from '../../src/adapt/upcycle.js';
import { tmpDir } from '../train/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.join(here, '../../src/cli/main.js');
const cfg = parseRunConfig({
  model: { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, intermediate_size: 32, num_local_experts: 0 },
  training: { batch_size: 2, seq_len: 16, eval_batches: 1 },
});

function denseRun(dir: string, seed = 1): string {
  const m = new MoETransformerLM(cfg.model, seed);
  saveModelRun(dir, m, new ByteTokenizer(), cfg);
  return dir;
}

test('runUpcycle copy: the MoE run loads back, its table has the dense loss in every domain (exact copies)', () => {
  const dir = tmpDir('upcycle');
  try {
    const src = denseRun(path.join(dir, 'dense'));
    const out = path.join(dir, 'moe');
    const r = runUpcycle({ models: [src], out, method: 'copy', numExperts: 4, topK: 2, batches: 1 });
    assert.deepEqual(
      r.rows.map((x) => x.label),
      ['dense (before)', 'MoE (after)'],
    );
    assert.deepEqual(
      r.rows[0].domains.map((d) => d.domain),
      ['shakespeare', 'wikitext', 'linux'],
    );
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(r.rows[0].domains[i].loss - r.rows[1].domains[i].loss) < 1e-4, `domain ${i}`);
    assert.ok(r.rows[1].params > r.rows[0].params, 'more parameters after');
    const loaded = loadAnyModel(out);
    assert.equal(loaded.model.config.num_local_experts, 4);
    const md = fs.readFileSync(r.files.md, 'utf8');
    assert.equal(md, formatAdaptTable(JSON.parse(fs.readFileSync(r.files.json, 'utf8'))));
    assert.match(md, /\| MoE \(after\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d,]+ \|/);
    assert.throws(() => runUpcycle({ models: [src], out, method: 'copy', numExperts: 4 }), /already holds a run .* --overwrite/);
    assert.throws(() => runUpcycle({ models: [src, src], out, method: 'copy' }), /method copy takes one dense model, got 2/);
    assert.throws(() => runUpcycle({ models: [out], out: path.join(dir, 'x'), method: 'copy' }), /layer 0 is not a dense FFN layer/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('moe-ts upcycle CLI: split-clustered with a shared expert, mix of two models, and a Hugging Face (llama) directory', () => {
  const dir = tmpDir('upcycle-cli');
  const run = (args: string[]) => spawnSync(process.execPath, [cli, 'upcycle', ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  try {
    const a = denseRun(path.join(dir, 'a'), 1);
    const b = denseRun(path.join(dir, 'b'), 2);
    const s = run([a, '--out', path.join(dir, 'split'), '--method', 'split-clustered', '--experts', '3', '--shared', '1', '--calibration', '2', '--batches', '1', '--data', 'shakespeare']);
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stdout, /FFN splitting .*clustered by activation profile on 2 calibration windows\): 3 routed experts of width 8 \+ 1 shared/);
    const js = JSON.parse(fs.readFileSync(path.join(dir, 'split', 'upcycle.json'), 'utf8'));
    assert.equal(js.plan.layers[0].shared.length, 8);
    const m = run([a, b, '--out', path.join(dir, 'mix'), '--method', 'mix', '--batches', '1', '--data', 'linux']);
    assert.equal(m.status, 0, m.stderr);
    assert.match(m.stdout, /\| dense 0 \|.*\n\| dense 1 \|.*\n\| MoE \(after\) \|/);
    const hfDir = path.join(dir, 'a-hf');
    const c = spawnSync(process.execPath, [cli, 'convert', a, hfDir, '--to', 'hf'], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' } });
    assert.equal(c.status, 0, c.stderr);
    assert.equal(JSON.parse(fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8')).model_type, 'llama');
    const hf = run([hfDir, '--out', path.join(dir, 'hf'), '--experts', '2', '--top-k', '1', '--batches', '1', '--data', 'shakespeare']);
    assert.equal(hf.status, 0, hf.stderr);
    const rows = JSON.parse(fs.readFileSync(path.join(dir, 'hf', 'upcycle.json'), 'utf8')).rows;
    assert.ok(Math.abs(rows[0].loss - rows[1].loss) < 1e-3, `HF llama upcycled without noise keeps its loss: ${rows[0].loss} vs ${rows[1].loss}`);
    const bad = run([a, '--out', path.join(dir, 'bad'), '--method', 'split-random', '--experts', '5']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^moe-ts: upcycle --split: intermediate_size 32 must be divisible by numExperts \+ sharedExperts \(5\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
