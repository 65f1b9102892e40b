/** Non-transformer model families through the CLI: train from a config, generate, eval; features they lack fail with one line. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const training = { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 };
const families: Record<string, Record<string, unknown>> = {
  'mamba-moe': {
    model_type: 'mamba-moe',
    hidden_size: 16,
    num_hidden_layers: 2,
    max_position_embeddings: 32,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 16,
    family_options: { state_size: 4 },
  },
  'all-mlp': { model_type: 'all-mlp', hidden_size: 16, num_hidden_layers: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 },
};

for (const [name, model] of Object.entries(families)) {
  test(`${name}: moe-ts train --config, generate --model RUN, eval; GGUF/HF export and --quant refused in one line`, () => {
    const dir = tmpDir(`family-${name}`);
    const cfgPath = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfgPath, JSON.stringify({ model, training }));
    const out = path.join(dir, 'run');
    const t = run(['train', '--config', cfgPath, '--out', out, '--quiet']);
    assert.equal(t.code, 0, t.stderr);
    const g = run(['generate', '--model', out, '--prompt', 'ROMEO:', '--max-tokens', '8', '--temperature', '0']);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stderr, /\[8 tokens, .*; eager\]/);
    const e = run(['eval', '--ckpt', out, '--json']);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(Number.isFinite(JSON.parse(e.stdout).loss));
    assert.match(run(['convert', out, path.join(dir, 'm.gguf'), '--to', 'gguf']).stderr, new RegExp(`convert --to gguf: model_type "${name}" does not support GGUF \\(supported by: moe-ts`));
    assert.match(run(['convert', out, path.join(dir, 'hf'), '--to', 'hf']).stderr, new RegExp(`model_type "${name}" does not support Hugging Face export`));
    assert.match(run(['generate', '--ckpt', out, '--quant', 'q8_0']).stderr, new RegExp(`quant q8_0: model_type "${name}" does not support the fast decode engine`));
    assert.match(run(['upcycle', out, '--experts', '4', '--out', path.join(dir, 'up')]).stderr, new RegExp(`model_type "${name}" does not support model adaptation`));
  });
}
