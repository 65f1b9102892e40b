/**
 * Time-MoE trained end to end on the embedded NOAA series: a tiny deterministic run beats the
 * naive baseline on the held-out tail, writes its run files, and `moe-ts train-forecast` prints
 * the MAE/MSE table and writes the HTML report with the forecast plot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import '../../src/kernels/index.js';
import { parseForecastRunConfig, trainForecast, type ForecastResults } from '../../src/train/forecast.js';
import { readSafetensorsSync } from '../../src/io/safetensors.js';
import { renderForecastReport } from '../../src/bench-routers/report/forecast-report.js';
import { tmpDir } from './helpers.js';
import { TrainingInterruptedError, RunFinishedError } from '../../src/train/trainer.js';

const tiny = {
  model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, max_position_embeddings: 64 },
  forecast: { horizons: [1, 8], eval_horizon: 8 },
  training: { steps: 80, batch_size: 8, seq_len: 32, eval_interval: 40, lr: 0.01, warmup_steps: 10, seed: 1234 },
};

test('a tiny Time-MoE run beats the naive baseline on the held-out tail of the embedded series', () => {
  const dir = tmpDir('forecast');
  try {
    const { results } = trainForecast({ config: parseForecastRunConfig(tiny), outDir: dir });
    const e = results.final.eval;
    assert.equal(results.series.split, 1169, 'the last 20% (by time) validates');
    assert.equal(results.series.splitDate, '2015-03-15');
    assert.equal(e.horizon, 8);
    assert.equal(e.origins, 1461 - 8 - 1169 + 1, 'every validation origin');
    assert.ok(e.model.mae < 0.97 * e.naive.mae, `Time-MoE MAE ${e.model.mae.toFixed(3)} vs naive ${e.naive.mae.toFixed(3)}`);
    assert.ok(e.model.mse < e.naive.mse, `MSE ${e.model.mse.toFixed(3)} vs naive ${e.naive.mse.toFixed(3)}`);
    assert.ok(results.history[results.history.length - 1].valLoss < results.history[0].valLoss + 1e-9 || results.history.length === 1);
    assert.ok(results.trainCurve[79].huber < results.trainCurve[0].huber, 'training loss falls');
    for (const f of ['config.json', 'log.jsonl', 'model.safetensors', 'results.json']) assert.ok(fs.existsSync(path.join(dir, f)), f);
    const saved = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as ForecastResults;
    assert.equal(saved.final.eval.model.mae, e.model.mae);
    assert.equal(saved.plot.truth.length, 24, '3 x eval_horizon steps plotted');
    assert.deepEqual(saved.plot.rounds, [8, 8, 8]);
    const st = readSafetensorsSync(path.join(dir, 'model.safetensors'));
    assert.ok(st.tensors.has('heads.1.weight') && st.tensors.get('heads.1.weight')!.shape[0] === 8);
    assert.ok(
      [...st.tensors.keys()].some((k) => k.includes('block_sparse_moe')),
      'MoE layers saved',
    );
    assert.throws(() => trainForecast({ config: parseForecastRunConfig(tiny), outDir: dir }), /already holds a forecast run.*--overwrite/);
    const page = renderForecastReport(saved);
    assert.match(page, /<svg/);
    assert.match(page, /seasonal naive \(period 365\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('moe-ts train-forecast: table of MAE/MSE vs the baselines, the report page, and clear config errors', () => {
  const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  const dir = tmpDir('forecast-cli');
  try {
    const cfgFile = path.join(dir, 'f.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...tiny, training: { ...tiny.training, steps: 4, eval_interval: 2 } }));
    const out = path.join(dir, 'run');
    const r = spawnSync(process.execPath, [cli, 'train-forecast', '--config', cfgFile, '--out', out, '--column', 'temp_min', '--quiet'], {
      encoding: 'utf8',
      env: { ...process.env, MOE_BACKEND: 'js' },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /horizon 8, temp_min of seattle-weather/);
    assert.match(r.stdout, /Time-MoE\s+\d+\.\d+\s+\d+\.\d+/);
    assert.match(r.stdout, /naive \(last value\)\s+\d+\.\d+\s+\d+\.\d+\s+1\.000/);
    assert.match(r.stdout, /seasonal naive \(period 365\)/);
    const page = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.match(page, /Forecast of 24 steps from step 1169 \(2015-03-15\) against the held-out truth/);
    assert.equal((page.match(/<svg/g) ?? []).length, 3, 'forecast, lead-time and loss charts');
    const again = spawnSync(process.execPath, [cli, 'report', out, '--out', path.join(dir, 'again.html')], { encoding: 'utf8' });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /Time-MoE forecast/);
    assert.equal(fs.readFileSync(path.join(dir, 'again.html'), 'utf8'), page, '`moe-ts report` rewrites the same page');
    const bad = spawnSync(process.execPath, [cli, 'train-forecast', '--series', path.join(dir, 'nope.csv'), '--out', out, '--quiet'], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' } });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /moe-ts: series ".*nope\.csv": not an embedded series/);
    assert.equal(bad.stderr.trim().split('\n').length, 1, 'one line');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('train-forecast resume: n/2 steps, interrupted, then resumed to n equals n steps straight (weights, history, metrics)', () => {
  const cfg = parseForecastRunConfig({ ...tiny, training: { ...tiny.training, steps: 8, eval_interval: 3, save_interval: 100 } });
  const a = tmpDir('fc-straight');
  const b = tmpDir('fc-resumed');
  try {
    const full = trainForecast({ config: cfg, outDir: a });
    const ac = new AbortController();
    assert.throws(
      () => trainForecast({ config: cfg, outDir: b, signal: ac.signal, events: { onStep: (s) => s.step === 4 && ac.abort() } }),
      (e: Error) => e instanceof TrainingInterruptedError && e.step === 4 && /interrupted at step 4 of 8; checkpoint saved in .*train-forecast --out .* --resume/.test(e.message),
    );
    assert.equal(JSON.parse(fs.readFileSync(path.join(b, 'latest.json'), 'utf8')).step, 4);
    assert.throws(() => trainForecast({ config: cfg, outDir: b }), /already holds a forecast run.*--resume.*--overwrite/);
    const resumed = trainForecast({ outDir: b, resume: true });
    const wa = full.model.stateDict();
    const wb = resumed.model.stateDict();
    assert.deepEqual([...wb.keys()], [...wa.keys()]);
    for (const [n, t] of wa) assert.deepEqual(wb.get(n)!.data, t.data, `${n} bitwise equal`);
    assert.deepEqual(resumed.results.history, full.results.history);
    assert.deepEqual(resumed.results.trainCurve, full.results.trainCurve);
    assert.deepEqual(resumed.results.final, full.results.final);
    // the log reads as one run: one record per eval step, none duplicated by the resume
    const evals = fs
      .readFileSync(path.join(b, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((r) => r.type === 'eval')
      .map((r) => r.step);
    assert.deepEqual(evals, [3, 6, 8]);
    assert.throws(
      () => trainForecast({ outDir: b, resume: true }),
      (e: Error) => e instanceof RunFinishedError && /already at step 8 of 8.*--steps N/.test(e.message),
    );
    assert.throws(
      () => trainForecast({ config: parseForecastRunConfig({ ...tiny, training: { ...tiny.training, steps: 9, lr: 0.02 } }), outDir: b, resume: true }),
      /different config: training\.lr.*only training\.steps/,
    );
    const longer = trainForecast({ config: parseForecastRunConfig({ ...tiny, training: { ...tiny.training, steps: 10, eval_interval: 3, save_interval: 100 } }), outDir: b, resume: true });
    assert.equal(longer.results.steps, 10);
    assert.throws(() => trainForecast({ outDir: tmpDir('fc-none'), resume: true }), /--resume: no checkpoint in .*latest\.json missing/);
  } finally {
    fs.rmSync(a, { recursive: true, force: true });
    fs.rmSync(b, { recursive: true, force: true });
  }
});
