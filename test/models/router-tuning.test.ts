/**
 * Router-Tuning (He et al. 2024) through the CLI: `train --model BASE --router-tuning` adds
 * Mixture-of-Depths routers to a frozen base and trains only them (the router and its causal
 * predictor change, every base tensor stays bit-identical), then the tuned run generates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { isDepthRouterTensor } from '../../src/models/depth.js';
import { loadAnyModel } from '../../src/adapt/common.js';
import { tmpDir, saveTinyBaseRun } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });

test('train --router-tuning: only the depth routers and predictors change; the frozen base is bit-identical; the tuned run generates', () => {
  const dir = tmpDir('router-tuning');
  try {
    const { cfg, base, baseDir, cfgFile } = saveTinyBaseRun(dir);
    const out = path.join(dir, 'rt');
    const t = run(['train', '--config', cfgFile, '--model', baseDir, '--router-tuning', '--steps', '3', '--out', out, '--quiet']);
    assert.equal(t.status, 0, t.stderr);
    const tuned = loadAnyModel(out).model;
    const mod = tuned.config.mixture_of_depths!;
    assert.equal(mod.router_tuning, true);
    assert.equal(mod.skip, 'attention');
    const baseState = base.stateDict();
    const init = new MoETransformerLM(tuned.config, cfg.training.seed).stateDict();
    let routers = 0;
    for (const [name, v] of tuned.stateDict()) {
      if (isDepthRouterTensor(name)) {
        routers++;
        assert.notDeepEqual(v.data, init.get(name)!.data, `${name} trained`);
      } else assert.deepEqual(v.data, baseState.get(name)!.data, `${name} frozen`);
    }
    assert.equal(routers, 2 * 3, 'per layer: the router and the two predictor weights (every layer routed by default)');
    const g = run(['generate', '--ckpt', out, '--prompt', 'Fir', '--max-tokens', '4', '--temperature', '0']);
    assert.equal(g.status, 0, g.stderr);
    assert.match(g.stderr + g.stdout, /eager/);
    const bad = run(['train', '--router-tuning', '--steps', '1', '--out', path.join(dir, 'x')]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--router-tuning needs --model <base>/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
