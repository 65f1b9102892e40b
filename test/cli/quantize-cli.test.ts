/** `quantize` and the fast-path flags of `generate` through the CLI. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';
import { fromGGUF } from '../../src/io/gguf/index.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tiny = {
  model: { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 },
  training: { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 },
};

test('quantize reports f32/q8_0/q4_0 loss and writes a GGUF; generate --quant runs the fast path', () => {
  const dir = tmpDir('quantize-cli');
  const cfgPath = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfgPath, JSON.stringify(tiny));
  const out = path.join(dir, 'run');
  assert.equal(run(['train', '--config', cfgPath, '--out', out, '--quiet']).code, 0);
  const gguf = path.join(dir, 'm.gguf');
  const q = run(['quantize', '--ckpt', out, '--tokens', '200', '--json', '--out', gguf]);
  assert.equal(q.code, 0, q.stderr);
  const rep = JSON.parse(q.stdout);
  assert.deepEqual(
    rep.results.map((r: { quant: string }) => r.quant),
    ['f32', 'q8_0', 'q4_0'],
  );
  for (const r of rep.results) assert.ok(r.loss > 0 && Number.isFinite(r.loss) && r.tokens === 199, JSON.stringify(r));
  assert.ok(rep.results[1].weightBytes < rep.results[0].weightBytes);
  assert.match(q.stderr, /wrote .*m\.gguf: .*q8_0/);
  assert.equal(fromGGUF(gguf).config.hidden_size, 32);
  const g = run(['generate', '--ckpt', out, '--prompt', 'ROMEO:', '--max-tokens', '8', '--quant', 'q8_0', '--engine', 'fast', '--temperature', '0']);
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stderr, /prompt 6 tokens at \d+ tokens\/s, decode \d+ tokens\/s; fast q8_0/);
  const e = run(['generate', '--ckpt', out, '--prompt', 'ROMEO:', '--max-tokens', '8', '--engine', 'eager', '--temperature', '0']);
  assert.match(e.stderr, /; eager\]/);
  assert.match(run(['generate', '--ckpt', out, '--quant', 'q5_k']).stderr, /--quant must be one of f32, q8_0, q4_0, q3_m, q2_m, tq_e, got "q5_k"/);
  assert.match(run(['generate', '--ckpt', out, '--quant', 'q4_0', '--engine', 'eager']).stderr, /--quant needs the fast engine/);
  assert.match(run(['quantize', '--ckpt', out, '--quant', 'int3']).stderr, /--quant must be among f32, q8_0, q4_0, q3_m, q2_m, tq_e, got "int3"/);
});
