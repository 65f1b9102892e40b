// Issue 17 item 2 through the CLI: train --peft lora-experts on a frozen base, then peft attach / merge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { saveModelRun, loadAnyModel } from '../../src/adapt/common.js';
import { tmpDir } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });

test('train --peft lora-experts (shared only) -> adapters file; peft attach == the trained run; peft merge keeps the loss', () => {
  const dir = tmpDir('peft-cli');
  try {
    const cfg = parseRunConfig({
      model: { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 },
      training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 2, save_interval: 2, warmup_steps: 1, lr: 1e-2 },
    });
    const baseDir = path.join(dir, 'base');
    saveModelRun(baseDir, new MoETransformerLM(cfg.model, 4), new ByteTokenizer(), cfg);
    const cfgFile = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ training: cfg.training }));
    const ft = path.join(dir, 'ft');
    const t = run([
      'train',
      '--config',
      cfgFile,
      '--model',
      baseDir,
      '--peft',
      'lora-experts',
      '--lora-experts',
      '0',
      '--lora-shared',
      '1',
      '--lora-rank',
      '2',
      '--lora-targets',
      'q_proj,v_proj',
      '--steps',
      '2',
      '--out',
      ft,
      '--quiet',
    ]);
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /adapters: 8 tensors in .*adapters\.safetensors/);
    const at = run(['peft', 'attach', baseDir, path.join(ft, 'adapters.safetensors'), '--out', path.join(dir, 'att'), '--batches', '1', '--data', 'shakespeare']);
    assert.equal(at.status, 0, at.stderr);
    const trained = loadAnyModel(ft).model.stateDict();
    for (const [n, v] of loadAnyModel(path.join(dir, 'att')).model.stateDict()) assert.deepEqual(v.data, trained.get(n)!.data, n);
    const mg = run(['peft', 'merge', ft, '--out', path.join(dir, 'merged'), '--batches', '1', '--data', 'shakespeare']);
    assert.equal(mg.status, 0, mg.stderr);
    const rows = JSON.parse(fs.readFileSync(path.join(dir, 'merged', 'peft-merge.json'), 'utf8')).rows;
    assert.ok(Math.abs(rows[0].loss - rows[1].loss) < 1e-4, `${rows[0].loss} vs ${rows[1].loss}`);
    assert.equal(loadAnyModel(path.join(dir, 'merged')).model.config.peft, undefined);
    const bad = run(['train', '--peft', 'lora-experts', '--steps', '1', '--out', path.join(dir, 'x')]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--peft needs --model <base>/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
