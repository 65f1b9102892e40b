// issue 10: `moe-ts train` shows the unigram baseline of its data and labels a run that is not
// clearly below it an undertrained smoke run (in the terminal and in results.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir, tinyConfig } from '../train/helpers.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { runBaseline, baselineLine } from '../../src/cli/train-baseline.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

/** Two bytes in equal numbers: the unigram cross-entropy is ln 2 plus the add-one smoothing over 256 bytes. */
function abText(dir: string): string {
  const p = path.join(dir, 'ab.txt');
  fs.writeFileSync(p, 'ab'.repeat(20_000));
  return p;
}

test('runBaseline: ln 2 for a two-symbol text; trained only when the loss is at least 10% below it', () => {
  const file = abText(tmpDir('baseline'));
  const cfg = tinyConfig({ data: { sources: [file] } });
  const b = runBaseline(cfg, new ByteTokenizer(), 0.3);
  // train split ~36k bytes: smoothing adds about ln(1 + 256/36k) = 0.007
  assert.ok(b.loss > Math.LN2 && b.loss < Math.LN2 + 0.01, `baseline ${b.loss}`);
  assert.deepEqual(Object.keys(b.domains), ['ab']);
  assert.equal(b.domains.ab, b.loss);
  assert.equal(b.trained, true);
  assert.match(baselineLine(b), /val loss 0\.3000 vs unigram baseline 0\.70\d\d nats\/token .*: 5\d% below it/);
  const close = runBaseline(cfg, new ByteTokenizer(), 0.65);
  assert.equal(close.trained, false, '0.65 is within 10% of ln 2');
  assert.match(baselineLine(close), /not clearly below it .*undertrained smoke run/);
});

test('CLI train: a 2-step run prints the unigram baseline, is labelled a smoke run, and results.json records it', () => {
  const dir = tmpDir('baseline-cli');
  const file = abText(dir);
  const cfgPath = path.join(dir, 'cfg.json');
  fs.writeFileSync(
    cfgPath,
    JSON.stringify({
      model: { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 },
      training: { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 2, save_interval: 2 },
    }),
  );
  const out = path.join(dir, 'run');
  const r = spawnSync(process.execPath, [cli, 'train', '--config', cfgPath, '--data', file, '--out', out, '--quiet'], {
    encoding: 'utf8',
    env: { ...process.env, MOE_BACKEND: 'js' },
    timeout: 120_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /vs unigram baseline 0\.70\d\d nats\/token .*undertrained smoke run/);
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as { final: { loss: number }; unigram_baseline: { loss: number; final_loss: number; trained: boolean } };
  assert.equal(res.unigram_baseline.trained, false);
  assert.equal(res.unigram_baseline.final_loss, res.final.loss);
  assert.ok(res.final.loss > res.unigram_baseline.loss, 'two steps from a uniform init stay above ln 2');
  assert.ok(Math.abs(res.unigram_baseline.loss - Math.LN2) < 0.01, `baseline ${res.unigram_baseline.loss}`);
});
