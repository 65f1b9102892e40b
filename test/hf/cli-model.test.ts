import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { train } from '../../src/train/trainer.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '..', '..', 'src', 'cli', 'main.js');
const FIX = path.resolve(here, '..', '..', '..', 'test', 'fixtures', 'hf');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('convert --to hf, then generate/eval/train --model on the exported directory', async () => {
  const run1 = tmpDir('hfcli');
  await train({ config: tinyConfig({ training: { steps: 2, eval_interval: 2, save_interval: 2 } }), outDir: run1 });
  const hf = path.join(tmpDir('hfout'), 'model');
  const c = run(['convert', run1, hf, '--to', 'hf']);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8')).model_type, 'mixtral');
  // the tokenizer travels in the Hugging Face form too
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) assert.ok(fs.existsSync(path.join(hf, f)), f);
  assert.notEqual(run(['convert', run1, hf, '--to', 'hf']).code, 0, 'refuses to overwrite without --overwrite');
  const a = run(['generate', '--ckpt', run1, '--prompt', 'RO', '--max-tokens', '8', '--temperature', '0']);
  const b = run(['generate', '--model', hf, '--prompt', 'RO', '--max-tokens', '8', '--temperature', '0']);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.stdout, a.stdout, 'same greedy text from the checkpoint and its export');
  const e = run(['eval', '--model', hf, '--data', 'shakespeare', '--batches', '1', '--json']);
  assert.equal(e.code, 0, e.stderr);
  assert.ok(Number.isFinite(JSON.parse(e.stdout).loss));
  const out = tmpDir('hfft');
  const t = run(['train', '--model', hf, '--steps', '2', '--out', path.join(out, 'ft'), '--quiet']);
  assert.equal(t.code, 0, t.stderr);
  // a fixture without any tokenizer: a clear one-line error
  const g = run(['generate', '--model', path.join(FIX, 'mixtral'), '--prompt', 'x']);
  assert.notEqual(g.code, 0);
  assert.match(g.stderr, /no tokenizer/);
});
