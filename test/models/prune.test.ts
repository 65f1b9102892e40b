// Issue 17 item 3: expert pruning by router statistics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { pruneExperts } from '../../src/models/prune.js';
import { expertUsage, mostUsedExperts } from '../../src/adapt/prune.js';
import { saveModelRun } from '../../src/adapt/common.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad } from '../../src/tensor/index.js';
import { tmpDir } from '../train/helpers.js';

const cfg = { vocab_size: 64, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 };
const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 29 + 3) % 64);

function run(m: MoETransformerLM) {
  return noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }));
}

test('pruning an expert leaves every token that did not route to it unchanged (one MoE layer, renormalised top-k)', () => {
  const m = new MoETransformerLM(parseModelConfig(cfg), 2).eval();
  const before = run(m);
  const logits = before.aux[0].aux.router.logits.data;
  const E = 4;
  const V = 64;
  for (const pruned of [0, 3]) {
    const p = pruneExperts(m, [[0, 1, 2, 3].filter((e) => e !== pruned)]).eval();
    assert.equal(p.config.num_local_experts, 3);
    const after = run(p).logits.data;
    let same = 0;
    for (let t = 0; t < ids.length; t++) {
      const top = [0, 1, 2, 3].sort((a, b) => logits[t * E + b] - logits[t * E + a]).slice(0, 2);
      const row = (x: Float32Array) => x.subarray(t * V, (t + 1) * V);
      const d = Math.max(...Array.from(row(before.logits.data), (v, i) => Math.abs(v - row(after)[i])));
      if (!top.includes(pruned)) {
        assert.ok(d < 1e-5, `token ${t} did not use expert ${pruned} but changed by ${d}`);
        same++;
      }
    }
    assert.ok(same > 0 && same < ids.length, 'some tokens used the pruned expert, some did not');
  }
  assert.throws(() => pruneExperts(m, [[0, 0]]), /keep list must hold distinct experts in \[0, 4\)/);
  assert.throws(() => pruneExperts(m, [[0], [1]]), /one expert list per MoE layer \(1\), got 2/);
  assert.throws(() => pruneExperts(new MoETransformerLM(parseModelConfig({ ...cfg, num_local_experts: 0 }), 0), [[0]]), /no MoE layers/);
});

test('router statistics: usage sums to tokens x k; the kept experts are the most weighted', () => {
  const m = new MoETransformerLM(parseModelConfig({ ...cfg, num_hidden_layers: 2 }), 3).eval();
  const u = expertUsage(m, [ids, ids.slice(0, 10)]);
  for (const t of u.tokens)
    assert.equal(
      t.reduce((s, v) => s + v, 0),
      (24 + 10) * 2,
    );
  for (const w of u.weight) assert.ok(Math.abs(w.reduce((s, v) => s + v, 0) - 34) < 1e-3);
  assert.deepEqual(mostUsedExperts([Float64Array.from([0.1, 5, 2, 3])], 2), [[1, 3]]);
});

test('moe-ts prune CLI: loss per pruned fraction, the saved run has fewer experts', () => {
  const dir = tmpDir('prune');
  try {
    const rc = parseRunConfig({ model: { ...cfg, vocab_size: 256 }, training: { batch_size: 2, seq_len: 16, eval_batches: 1 } });
    saveModelRun(path.join(dir, 'moe'), new MoETransformerLM(rc.model, 1), new ByteTokenizer(), rc);
    const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
    const r = spawnSync(
      process.execPath,
      [cli, 'prune', path.join(dir, 'moe'), '--out', path.join(dir, 'p'), '--fractions', '0.25,0.5', '--calibration', '2', '--batches', '1', '--data', 'shakespeare'],
      {
        encoding: 'utf8',
        env: { ...process.env, MOE_BACKEND: 'js' },
      },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\| pruned 25% -> 3 experts \|.*\n\| pruned 50% -> 2 experts \|/);
    const js = JSON.parse(fs.readFileSync(path.join(dir, 'p', 'prune.json'), 'utf8'));
    assert.equal(js.rows.length, 3);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'p', 'config.json'), 'utf8')).model.num_local_experts, 2);
    const bad = spawnSync(process.execPath, [cli, 'prune', path.join(dir, 'moe'), '--out', path.join(dir, 'q'), '--fractions', '1.5'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--fractions must be a comma-separated list of numbers in \[0, 1\), got "1\.5"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
