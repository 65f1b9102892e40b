// Issue 17, expert pruning by router-weight change (A Provably Effective Method for Pruning Experts in Fine-tuned Sparse MoE, 2024).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { saveModelRun, loadAnyModel } from '../../src/adapt/common.js';
import { routerChange, runPrune, moePrunerStats, applyMoEPruner } from '../../src/adapt/prune.js';
import { FFNExperts } from '../../src/moe/experts/ffn.js';
import { tmpDir } from '../train/helpers.js';

const cfg = parseRunConfig({
  model: { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 },
  training: { batch_size: 2, seq_len: 16, eval_batches: 1 },
});

/** The start model, and a "fine-tuned" one whose router rows moved by `moves[l][e]` (row e shifted by that L2 norm). */
function pair(moves: number[][]): { start: MoETransformerLM; tuned: MoETransformerLM } {
  const start = new MoETransformerLM(cfg.model, 7);
  const tuned = new MoETransformerLM(cfg.model, 7);
  const d = cfg.model.hidden_size;
  tuned.layers.forEach((l, li) => {
    const w = l.block_sparse_moe ? tuned.stateDict().get(`layers.${li}.block_sparse_moe.router.gate.weight`)! : null;
    moves[li].forEach((m, e) => {
      for (let j = 0; j < d; j++) w!.data[e * d + j] += m / Math.sqrt(d);
    });
  });
  return { start, tuned };
}

test('routerChange measures each expert row’s distance from the reference; pruning by it keeps the experts that moved most', () => {
  const moves = [
    [0.1, 2, 0.5, 1],
    [3, 0, 0.2, 0.4],
  ];
  const { start, tuned } = pair(moves);
  const c = routerChange(tuned, start);
  c.forEach((layer, l) => layer.forEach((v, e) => assert.ok(Math.abs(v - moves[l][e]) < 1e-5, `layer ${l} expert ${e}: ${v} vs ${moves[l][e]}`)));
  const dir = tmpDir('prune-rc');
  try {
    saveModelRun(path.join(dir, 'start'), start, new ByteTokenizer(), cfg);
    saveModelRun(path.join(dir, 'tuned'), tuned, new ByteTokenizer(), cfg);
    const r = runPrune({
      model: path.join(dir, 'tuned'),
      out: path.join(dir, 'pruned'),
      fractions: [0.25, 0.5],
      criterion: 'router-change',
      reference: path.join(dir, 'start'),
      batches: 1,
      calibration: 1,
    });
    const kept = r.kept as { fraction: number; experts: number; keep: number[][] }[];
    // the sparsity is as asked: 3 and 2 of 4 experts in every layer
    assert.deepEqual(
      kept.map((k) => k.keep),
      [
        [
          [1, 2, 3],
          [0, 2, 3],
        ],
        [
          [1, 3],
          [0, 3],
        ],
      ],
    );
    assert.equal(loadAnyModel(path.join(dir, 'pruned')).model.config.num_local_experts, 2);
    assert.match(r.summary, /router-weight change/);
    assert.throws(() => runPrune({ model: path.join(dir, 'tuned'), out: path.join(dir, 'x'), fractions: [0.5], criterion: 'router-change' }), /needs --reference <model>/);
    assert.throws(() => runPrune({ model: path.join(dir, 'tuned'), out: path.join(dir, 'x'), fractions: [0.5], criterion: 'magnitude' as never }), /--criterion must be one of usage, router-change/);
    const other = new MoETransformerLM({ ...cfg.model, num_local_experts: 2 }, 1);
    assert.throws(() => routerChange(tuned, other), /it has 2 experts per layer, the model 4/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('MoE-Pruner: per output row, the weights with the least |W| x gate-weighted input norm go, at exactly the requested sparsity', () => {
  const m = new MoETransformerLM(cfg.model, 9).eval();
  const windows = [Int32Array.from({ length: 16 }, (_, i) => (i * 41 + 3) % 256)];
  const stats = moePrunerStats(m, windows);
  const b = m.layers[0].block_sparse_moe!.experts as FFNExperts;
  const [d, f, E] = [b.dModel, b.dFF, b.numExperts];
  assert.ok(stats.in1[0].some((v) => v > 0) && stats.in2[0].some((v) => v > 0));
  // constructed statistics: input feature 0 never seen (norm 0), feature 1 dominant: 0 goes first, 1 stays, whatever the magnitudes
  for (let e = 0; e < E; e++)
    for (let i = 0; i < d; i++) {
      stats.in1[0][e * d + i] = i === 0 ? 0 : i === 1 ? 1e14 : 1;
      b.w1.data[e * d * f + 1 * f] = 1e-6; // feature 1's weight into output 0 of each expert: tiny
    }
  const w1 = b.w1.data.slice();
  const zeroed = applyMoEPruner(m, stats, 0.25);
  const k = Math.round(0.25 * d);
  for (let e = 0; e < E; e++)
    for (let j = 0; j < f; j++) {
      const o = e * d * f;
      let zeros = 0;
      for (let i = 0; i < d; i++) zeros += b.w1.data[o + i * f + j] === 0 ? 1 : 0;
      assert.equal(zeros, k, `expert ${e} row ${j}: sparsity`);
      assert.equal(b.w1.data[o + j], 0, 'feature 0 (no activation) is pruned');
      assert.equal(b.w1.data[o + f + j], w1[o + f + j], 'feature 1 (dominant activation) is kept, even when tiny');
      // the kept weights are untouched, and the pruned ones are the lowest scores
      const score = (i: number) => Math.abs(w1[o + i * f + j]) * Math.sqrt(stats.in1[0][e * d + i]);
      let maxPruned = 0;
      let minKept = Infinity;
      for (let i = 0; i < d; i++) {
        if (b.w1.data[o + i * f + j] === 0) maxPruned = Math.max(maxPruned, score(i));
        else minKept = Math.min(minKept, score(i));
      }
      assert.ok(maxPruned <= minKept, `expert ${e} row ${j}`);
    }
  const rows = 2 * E * f + E * d; // w1, w3 rows of d inputs; w2 rows of f inputs
  assert.ok(zeroed > 0 && zeroed <= rows * Math.max(d, f));
  // through runPrune: the saved run's experts are at the requested sparsity, all experts stay
  const dir = tmpDir('prune-mp');
  try {
    saveModelRun(path.join(dir, 'moe'), new MoETransformerLM(cfg.model, 9), new ByteTokenizer(), cfg);
    const r = runPrune({ model: path.join(dir, 'moe'), out: path.join(dir, 'pruned'), fractions: [0.5], criterion: 'moe-pruner', batches: 1, calibration: 1 });
    assert.match(r.rows[1].label, /50% of expert weights zeroed/);
    const p = loadAnyModel(path.join(dir, 'pruned')).model;
    assert.equal(p.config.num_local_experts, 4);
    const w = (p.layers[1].block_sparse_moe!.experts as FFNExperts).w2.data;
    assert.equal(w.filter((v) => v === 0).length, w.length / 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
