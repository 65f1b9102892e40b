import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { train, TrainingDivergedError } from '../../src/train/trainer.js';
import { loadCheckpoint, CheckpointError } from '../../src/io/checkpoint.js';
import { readSafetensorsSync } from '../../src/io/safetensors.js';
import { tinyConfig, tmpDir, writeText } from './helpers.js';

test('a tiny MoE overfits a short text to near-zero loss', async () => {
  const dir = tmpDir('overfit');
  const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40);
  const src = writeText(dir, 'fox.txt', text);
  const cfg = tinyConfig({
    model: { num_hidden_layers: 1, hidden_size: 48, num_attention_heads: 2, router_aux_loss_coef: 0, router_z_loss_coef: 0 },
    training: { steps: 150, lr: 1e-2, warmup_steps: 10, weight_decay: 0, eval_interval: 1000, save_interval: 1000, val_fraction: 0.2, batch_size: 8, seq_len: 24 },
    data: { sources: [src] },
  });
  const losses: number[] = [];
  const r = await train({ config: cfg, outDir: path.join(dir, 'run'), events: { onStep: (m) => losses.push(m.ce) } });
  const last = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
  assert.ok(last < 0.15, `train loss after 150 steps is ${last}`);
  // the text repeats, so validation is the same pattern and must be learned too
  assert.ok(r.finalEval.loss < 0.3, `val loss ${r.finalEval.loss}`);
});

test('loss decreases on Shakespeare within a few dozen steps', async () => {
  const dir = tmpDir('shakespeare');
  const cfg = tinyConfig({ training: { steps: 40, lr: 5e-3, warmup_steps: 5, eval_interval: 1000, save_interval: 1000, batch_size: 8, seq_len: 32 } });
  const losses: number[] = [];
  const r = await train({ config: cfg, outDir: dir, events: { onStep: (m) => losses.push(m.ce) } });
  const first = losses.slice(0, 3).reduce((a, b) => a + b, 0) / 3;
  const last = losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
  assert.ok(first > 5, `initial loss ${first} should be near ln(256) = 5.55`);
  assert.ok(last < first - 1.5, `loss went from ${first} to ${last}`);
  assert.ok(r.finalEval.loss < first - 1.5);
  // outputs: log, config, tokenizer, checkpoint, results
  for (const f of ['log.jsonl', 'config.json', 'tokenizer.json', 'latest.json', 'results.json']) assert.ok(fs.existsSync(path.join(dir, f)), f);
  const log = fs
    .readFileSync(path.join(dir, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(log.filter((l) => l.type === 'step').length, 40);
  assert.ok(log.every((l) => l.type !== 'step' || (Number.isFinite(l.loss) && l.tokensPerSec > 0 && l.loadCV >= 0)));
});

test('resume continues bit-for-bit like an uninterrupted run', async () => {
  const cfg = tinyConfig({
    model: { router_type: 'aux-free', router_aux_loss_coef: 0 },
    training: { steps: 6, save_interval: 3, eval_interval: 3 },
  });
  const a = tmpDir('straight');
  const full = await train({ config: cfg, outDir: a });
  const b = tmpDir('resumed');
  await train({ config: cfg, outDir: b, stopAfter: 3 });
  assert.equal(loadCheckpoint(b).state.step, 3);
  const resumed = await train({ config: cfg, outDir: b, resume: true });
  const pa = full.model.stateDict();
  const pb = resumed.model.stateDict();
  assert.deepEqual([...pa.keys()], [...pb.keys()]);
  for (const [name, t] of pa)
    assert.deepEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), Buffer.from(pb.get(name)!.data.buffer, pb.get(name)!.data.byteOffset, pb.get(name)!.data.byteLength), name);
  assert.equal(resumed.finalEval.loss, full.finalEval.loss);
  const logA = fs
    .readFileSync(path.join(a, 'log.jsonl'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/"tokensPerSec":[^,]+,/, ''));
  const logB = fs
    .readFileSync(path.join(b, 'log.jsonl'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/"tokensPerSec":[^,]+,/, ''));
  assert.deepEqual(logB, logA);
});

test('resume refuses a checkpoint from a different model config', async () => {
  const dir = tmpDir('cfgdiff');
  await train({ config: tinyConfig({ training: { steps: 3 } }), outDir: dir });
  await assert.rejects(
    train({ config: tinyConfig({ model: { num_local_experts: 8 }, training: { steps: 6 } }), outDir: dir, resume: true }),
    (e: Error) => e instanceof CheckpointError && /different model config: num_local_experts \(4 vs 8\)/.test(e.message),
  );
  await assert.rejects(train({ config: tinyConfig(), outDir: tmpDir('none'), resume: true }), /no checkpoint/);
});

test('a truncated checkpoint file gives a clear error naming the file', async () => {
  const dir = tmpDir('trunc');
  await train({ config: tinyConfig({ training: { steps: 3 } }), outDir: dir });
  const ck = loadCheckpoint(dir);
  const file = path.join(ck.dir, 'model.safetensors');
  assert.ok(readSafetensorsSync(file).tensors.size > 0);
  const bytes = fs.readFileSync(file);
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 100));
  assert.throws(
    () => loadCheckpoint(dir),
    (e: Error) => e instanceof CheckpointError && e.message.includes('model.safetensors'),
  );
});

test('NaN/inf loss stops training with a message naming the step', async () => {
  const dir = tmpDir('nan');
  const cfg = tinyConfig({ training: { steps: 20, lr: 1e30, warmup_steps: 0, grad_clip: 0, save_interval: 100, eval_interval: 100 } });
  await assert.rejects(train({ config: cfg, outDir: dir }), (e: Error) => e instanceof TrainingDivergedError && /at step \d+/.test(e.message));
});

test('missing, empty and invalid data files fail clearly', async () => {
  const dir = tmpDir('baddata');
  await assert.rejects(train({ config: tinyConfig({ data: { sources: [path.join(dir, 'nope.txt')] } }), outDir: dir }), /not found: .*nope\.txt/);
  const empty = writeText(dir, 'empty.txt', '');
  await assert.rejects(train({ config: tinyConfig({ data: { sources: [empty] } }), outDir: dir }), /empty/);
  const tiny = writeText(dir, 'tiny.txt', 'abc');
  await assert.rejects(train({ config: tinyConfig({ data: { sources: [tiny] } }), outDir: dir }), /fewer than seqLen/);
});
