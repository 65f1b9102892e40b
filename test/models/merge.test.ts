// Issue 17 "expert merging": groups of experts averaged into fewer, an MoE averaged back to dense.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { upcycleDense } from '../../src/models/upcycle.js';
import { mergeExperts, groupExperts, mergeToDense } from '../../src/models/merge.js';
import { saveModelRun } from '../../src/adapt/common.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad } from '../../src/tensor/index.js';
import { tmpDir } from '../train/helpers.js';

const dense = { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, intermediate_size: 16, num_local_experts: 0 };
const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 29 + 3) % 256);
const run = (m: MoETransformerLM) => noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

test('merging identical experts changes nothing: a copy-upcycled MoE merged to fewer experts, or back to dense, computes the dense model', () => {
  const d = new MoETransformerLM(parseModelConfig(dense), 1).eval();
  const moe = upcycleDense(d, { numExperts: 4, topK: 2, seed: 3 }).eval();
  const ref = run(d);
  const usage = [Float64Array.from([4, 1, 2, 3]), Float64Array.from([1, 1, 1, 5])];
  const m2 = mergeExperts(moe, groupExperts(moe, 2, 'usage', usage), usage).eval();
  assert.equal(m2.config.num_local_experts, 2);
  assert.ok(maxDiff(run(m2), ref) < 1e-5, `merged to 2: ${maxDiff(run(m2), ref)}`);
  const back = mergeToDense(moe, usage).eval();
  assert.equal(back.config.num_local_experts, 0);
  assert.equal(back.numParameters(), d.numParameters());
  assert.ok(maxDiff(run(back), ref) < 1e-5, `merged to dense: ${maxDiff(run(back), ref)}`);
  // one expert per token when merged to 1
  assert.equal(mergeExperts(moe, groupExperts(moe, 1, 'similarity')).config.num_experts_per_tok, 1);
});

test('mergeExperts: usage-weighted average of expert slices and router rows; parameter count; grouping by similarity and usage', () => {
  const m = new MoETransformerLM(parseModelConfig({ ...dense, num_hidden_layers: 1, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 }), 5);
  const s = m.stateDict();
  const w1 = s.get('layers.0.block_sparse_moe.experts.w1')!.data;
  const per = w1.length / 4;
  // expert 2 is expert 0 plus a little, expert 3 expert 1 plus a little: similarity pairs them
  for (let i = 0; i < per; i++) {
    w1[2 * per + i] = w1[i] * 1.01;
    w1[3 * per + i] = w1[per + i] * 0.99;
  }
  for (const name of ['w2', 'w3']) {
    const t = s.get(`layers.0.block_sparse_moe.experts.${name}`)!.data;
    const p = t.length / 4;
    for (let i = 0; i < p; i++) {
      t[2 * p + i] = t[i];
      t[3 * p + i] = t[p + i];
    }
  }
  const groups = groupExperts(m, 2, 'similarity');
  assert.deepEqual(groups, [
    [
      [0, 2],
      [1, 3],
    ],
  ]);
  // usage: leaders 3 and 0 (most used), 1 joins 3 (its near copy), 2 joins 0
  assert.deepEqual(groupExperts(m, 2, 'usage', [[5, 1, 0, 9]]), [
    [
      [0, 2],
      [1, 3],
    ],
  ]);
  const u = [Float64Array.from([3, 1, 1, 1])];
  const merged = mergeExperts(m, groups, u);
  const t = merged.stateDict();
  const mw = t.get('layers.0.block_sparse_moe.experts.w1')!.data;
  assert.ok(Math.abs(mw[5] - (0.75 * w1[5] + 0.25 * w1[2 * per + 5])) < 1e-6, 'group {0, 2} weighted 3:1');
  assert.ok(Math.abs(mw[per + 5] - (w1[per + 5] + w1[3 * per + 5]) / 2) < 1e-6, 'group {1, 3} equal usage');
  const g = s.get('layers.0.block_sparse_moe.router.gate.weight')!.data;
  const mg = t.get('layers.0.block_sparse_moe.router.gate.weight')!.data;
  assert.ok(Math.abs(mg[16 + 3] - (g[16 + 3] + g[3 * 16 + 3]) / 2) < 1e-6, 'router row of group {1, 3}');
  // params: two experts' weights fewer and two router rows fewer
  const expertParams = 3 * 16 * 8;
  assert.equal(merged.numParameters(), m.numParameters() - 2 * expertParams - 2 * 16);
  assert.throws(
    () =>
      mergeExperts(m, [
        [
          [0, 1],
          [1, 2, 3],
        ],
      ]),
    /groups must partition the experts 0\.\.3/,
  );
  assert.throws(() => groupExperts(m, 5, 'similarity'), /merged expert count must be an integer in \[1, 4\], got 5/);
  assert.throws(() => mergeToDense(new MoETransformerLM(parseModelConfig(dense), 0)), /no MoE layers/);
});

test('moe-ts merge: CLI writes the merged run and its before/after table', () => {
  const dir = tmpDir('merge-cli');
  try {
    const cfg = parseRunConfig({ model: { ...dense, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 }, training: { batch_size: 2, seq_len: 16, eval_batches: 1 } });
    const src = path.join(dir, 'moe');
    saveModelRun(src, new MoETransformerLM(cfg.model, 2), new ByteTokenizer(), cfg);
    const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
    const r = spawnSync(process.execPath, [cli, 'merge', src, '--out', path.join(dir, 'm'), '--experts', '2', '--data', 'shakespeare', '--batches', '1', '--calibration', '1'], {
      encoding: 'utf8',
      env: { ...process.env, MOE_BACKEND: 'js' },
    });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(fs.readFileSync(path.join(dir, 'm', 'merge.json'), 'utf8'));
    assert.equal(rep.rows.length, 2);
    assert.equal(rep.groups[0].length, 2);
    assert.ok(rep.rows[1].params < rep.rows[0].params);
    assert.match(r.stdout, /\| 2 experts \(after\) \|/);
    const bad = spawnSync(process.execPath, [cli, 'merge', src, '--out', path.join(dir, 'x'), '--groups', '0,1;a'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--groups must be groups of expert indices/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
