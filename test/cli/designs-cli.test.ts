/**
 * Every design of issue 16 that builds a language model trains from a config file through the CLI
 * (`moe-ts train --config`), saves a run whose config keeps the design's fields, and generates from
 * it. Router-Tuning, γ-MoD's conversion (`--router-tuning`, `--gamma-mod`) and Time-MoE
 * (`train-forecast`) have their own CLI tests (test/models/router-tuning.test.ts,
 * test/models/arank.test.ts, test/train/forecast.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';
import { DESIGN_CONFIGS, designModel } from '../helpers/designs.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Every field of `expected` is in `actual` with that value (nested records compared field by field: the run fills in defaults). */
function assertFields(actual: unknown, expected: unknown, where: string): void {
  if (expected && typeof expected === 'object' && !Array.isArray(expected)) {
    assert.ok(actual && typeof actual === 'object', `${where}: expected a record, got ${JSON.stringify(actual)}`);
    for (const [k, v] of Object.entries(expected)) assertFields((actual as Record<string, unknown>)[k], v, `${where}.${k}`);
  } else assert.deepEqual(actual, expected, where);
}

const training = { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 };

for (const [design, extra] of Object.entries(DESIGN_CONFIGS)) {
  test(`${design}: moe-ts train --config trains it, the run keeps its fields, generate runs on it`, () => {
    const dir = tmpDir(`design-${design.replace(/[^a-z0-9]+/gi, '-')}`);
    const cfgPath = path.join(dir, 'cfg.json');
    // the CLI's tokenizer sets the vocabulary
    const model = designModel(extra, { vocab_size: undefined });
    fs.writeFileSync(cfgPath, JSON.stringify({ model, training }));
    const out = path.join(dir, 'run');
    const t = run(['train', '--config', cfgPath, '--out', out, '--quiet']);
    assert.equal(t.code, 0, `${design}: ${t.stderr}`);
    const results = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
    assert.equal(results.steps, 2);
    assert.ok(Number.isFinite(results.final.loss) && results.final.loss > 0, `${design}: validation loss ${results.final.loss}`);
    const saved = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) assertFields(saved.model[k], v, `${design}: run config model.${k}`);
    const g = run(['generate', '--ckpt', out, '--prompt', 'ROMEO:', '--max-tokens', '4', '--temperature', '0']);
    assert.equal(g.code, 0, `${design}: ${g.stderr}`);
    assert.match(g.stderr, /\[4 tokens, /);
  });
}
