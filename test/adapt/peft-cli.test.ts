// Issue 17 item 2 through the CLI: train --peft lora-experts on a frozen base, then peft attach / merge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadAnyModel } from '../../src/adapt/common.js';
import { tmpDir, saveTinyBaseRun } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });

test('train --peft lora-experts (shared only) -> adapters file; peft attach == the trained run; peft merge keeps the loss', () => {
  const dir = tmpDir('peft-cli');
  try {
    const { baseDir, cfgFile } = saveTinyBaseRun(dir, { interval: 2 });
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
