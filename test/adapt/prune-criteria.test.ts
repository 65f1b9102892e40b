// Issue 17, expert pruning by router-weight change (A Provably Effective Method for Pruning Experts in Fine-tuned Sparse MoE, 2024).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { saveModelRun, loadAnyModel } from '../../src/adapt/common.js';
import { routerChange, runPrune } from '../../src/adapt/prune.js';
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
