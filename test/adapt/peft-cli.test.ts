// Issue 17 item 2 through the CLI: train --peft lora-experts on a frozen base, then peft attach / merge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadAnyModel, adaptDataset, measureModel } from '../../src/adapt/common.js';
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
    // its before/after table: the frozen base and the trained run, measured the same way, on the embedded corpora
    assert.match(t.stdout, /table: .*peft\.md, .*peft\.json/);
    const table = JSON.parse(fs.readFileSync(path.join(ft, 'peft.json'), 'utf8'));
    assert.deepEqual(
      table.rows.map((r: { label: string }) => r.label),
      ['base (before)', 'base + adapters (after)'],
    );
    const base = loadAnyModel(baseDir);
    const { data } = adaptDataset(base);
    const want = [measureModel('b', base.model.eval(), data, 1), measureModel('a', loadAnyModel(ft).model.eval(), data, 1)];
    for (const i of [0, 1]) {
      assert.deepEqual(
        table.rows[i].domains.map((d: { domain: string }) => d.domain),
        ['shakespeare', 'wikitext', 'linux'],
      );
      for (const [j, d] of want[i].domains.entries()) assert.ok(Math.abs(table.rows[i].domains[j].loss - d.loss) < 1e-6, `row ${i} ${d.domain}: ${table.rows[i].domains[j].loss} vs ${d.loss}`);
      assert.equal(table.rows[i].params, want[i].params);
    }
    assert.notEqual(table.rows[1].loss, table.rows[0].loss, 'the adapters trained');
    // 8 adapter tensors: one shared A [2, 16] and B [16, 2] on q_proj and v_proj of 2 layers
    assert.equal(table.trainedParams, 2 * 2 * (2 * 16 + 16 * 2));
    assert.equal(table.rows[1].params - table.rows[0].params, table.trainedParams);
    assert.match(fs.readFileSync(path.join(ft, 'peft.md'), 'utf8'), /\| base \+ adapters \(after\) \|( [\d.]+ \|){4} 256 \| [\d,]+ \|/);
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
