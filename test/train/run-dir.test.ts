// Issue 8 cases 1-4: run directories, resume semantics, pruning, the final save, NaN steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { train, TrainingDivergedError, TrainingInterruptedError, RunFinishedError } from '../../src/train/trainer.js';
import { loadCheckpoint, saveCheckpoint, listCheckpoints, resolveCheckpointDir, CheckpointError } from '../../src/io/checkpoint.js';
import { resumeConfig, truncateLog, RunExistsError } from '../../src/train/run-dir.js';
import { tinyConfig, tmpDir } from './helpers.js';

const latest = (dir: string): { checkpoint: string; step: number } => JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8'));
const steps = (dir: string): number[] => listCheckpoints(dir).map((d) => d.step);

test('case 1: a finished run saves its last step once, and a repeated save never replaces what latest.json names', async () => {
  const dir = tmpDir('final');
  const saved: number[] = [];
  await train({ config: tinyConfig({ training: { steps: 6, save_interval: 3, eval_interval: 3 } }), outDir: dir, events: { onCheckpoint: (_d, s) => saved.push(s) } });
  assert.deepEqual(saved, [3, 6], 'the final step is saved exactly once');
  const ck = loadCheckpoint(dir);
  assert.equal(ck.state.step, 6);
  assert.equal((ck.state.history as { step: number }[]).at(-1)!.step, 6, 'the final evaluation is in the final checkpoint');
  // saving the same step again (e.g. an interrupt right after a save) goes to a new directory
  const before = latest(dir);
  const again = saveCheckpoint(dir, { state: ck.state, model: new Map([...ck.model].map(([n, t]) => [n, { data: t.data, shape: t.shape }])) as never, optimizer: ck.optimizer! });
  assert.notEqual(path.basename(again), path.basename(before.checkpoint));
  assert.equal(path.basename(again), 'step-00000006.1');
  assert.equal(resolveCheckpointDir(dir), again);
  assert.equal(loadCheckpoint(dir).state.step, 6);
});

test('case 2: train --out on an existing run refuses; --overwrite replaces only run files; pruning keeps latest', async () => {
  const dir = tmpDir('exists');
  const cfg = tinyConfig({ training: { steps: 6, save_interval: 2, eval_interval: 3 } });
  await train({ config: cfg, outDir: dir });
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  const logBefore = fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8');
  await assert.rejects(
    train({ config: tinyConfig({ training: { steps: 2 } }), outDir: dir }),
    (e: Error) => e instanceof RunExistsError && /already holds a run.*--resume.*--overwrite/.test(e.message) && !e.message.includes('\n'),
  );
  assert.equal(fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8'), logBefore, 'nothing of the old run was touched');
  assert.deepEqual(steps(dir), [4, 6]);
  // overwrite: a shorter run into the same directory; its checkpoints must survive pruning
  await train({ config: tinyConfig({ training: { steps: 2, save_interval: 1, eval_interval: 2 } }), outDir: dir, overwrite: true });
  assert.deepEqual(steps(dir), [1, 2]);
  assert.equal(latest(dir).step, 2);
  assert.equal(loadCheckpoint(dir).state.step, 2);
  assert.equal(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8'), 'mine', 'files that are not the run stay');
  // pruning never deletes anything newer than what latest.json names
  const root = path.join(dir, 'checkpoints');
  fs.cpSync(path.join(root, 'step-00000002'), path.join(root, 'step-00000009'), { recursive: true });
  const ck = loadCheckpoint(path.join(root, 'step-00000002'));
  saveCheckpoint(dir, { state: { ...ck.state, step: 3 }, model: ck.model as never, optimizer: ck.optimizer! }, 2);
  assert.deepEqual(steps(dir), [2, 3, 9]);
  assert.equal(latest(dir).step, 3);
});

test("case 3: resume uses the run's own steps, data and config; flags are listed overrides; a finished run says so", async () => {
  const dir = tmpDir('resume-own');
  const cfg = tinyConfig({ training: { steps: 6, save_interval: 3, eval_interval: 3 } });
  await train({ config: cfg, outDir: dir, stopAfter: 3 });
  const r = resumeConfig(dir, {});
  assert.equal(r.config.training.steps, 6);
  assert.deepEqual(r.overrides, []);
  assert.equal(r.step, 3);
  const r2 = resumeConfig(dir, { steps: 9, configJson: { training: { eval_interval: 2 } }, configPath: 'x.json' });
  assert.deepEqual(r2.overrides.sort(), ['training.eval_interval: 3 -> 2', 'training.steps: 6 -> 9']);
  assert.throws(() => resumeConfig(dir, { configJson: { model: { hidden_size: 64, num_attention_heads: 2 } }, configPath: 'x.json' }), /different model config: hidden_size \(32 vs 64\)/);
  const res = await train({ config: r.config, outDir: dir, resume: true });
  assert.equal(res.steps, 6);
  await assert.rejects(train({ config: r.config, outDir: dir, resume: true }), (e: Error) => e instanceof RunFinishedError && /already at step 6 of 6.*--steps N/.test(e.message));
  const ext = await train({ config: resumeConfig(dir, { steps: 8 }).config, outDir: dir, resume: true });
  assert.equal(ext.steps, 8);
  assert.equal(loadCheckpoint(dir).state.config.training.steps, 8);
  // the log reads as one run, each step once
  const log = fs
    .readFileSync(path.join(dir, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    log.filter((l) => l.type === 'step').map((l) => l.step),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
});

test('case 3: an abort signal (Ctrl-C) saves the current step and says how to resume; the resumed run is exact', async () => {
  const cfg = tinyConfig({ training: { steps: 6, save_interval: 100, eval_interval: 100 } });
  const a = tmpDir('sig-straight');
  const full = await train({ config: cfg, outDir: a });
  const b = tmpDir('sig');
  const ac = new AbortController();
  await assert.rejects(
    train({ config: cfg, outDir: b, signal: ac.signal, events: { onStep: (m) => m.step === 2 && ac.abort() } }),
    (e: Error) => e instanceof TrainingInterruptedError && e.step === 2 && /interrupted at step 2 of 6; checkpoint saved in .*--resume/.test(e.message),
  );
  assert.equal(latest(b).step, 2);
  const resumed = await train({ outDir: b, resume: true });
  assert.equal(resumed.finalEval.loss, full.finalEval.loss);
});

test('case 3: resume rewrites the log atomically and only when a crash left extra or torn lines', () => {
  const dir = tmpDir('log');
  const file = path.join(dir, 'log.jsonl');
  const good = '{"type":"step","step":1}\n{"type":"step","step":2}\n';
  fs.writeFileSync(file, good);
  const ino = fs.statSync(file).ino;
  truncateLog(file, 2);
  assert.equal(fs.statSync(file).ino, ino, 'an intact log is not rewritten');
  fs.appendFileSync(file, '{"type":"step","step":3}\n{"type":"st');
  truncateLog(file, 2);
  assert.equal(fs.readFileSync(file, 'utf8'), good);
  assert.notEqual(fs.statSync(file).ino, ino, 'replaced by rename, not rewritten in place');
  assert.deepEqual(fs.readdirSync(dir), ['log.jsonl'], 'no temp file left');
});

test('case 4: a step that makes the weights non-finite is never saved and latest.json keeps the good one', async () => {
  const dir = tmpDir('nan-save');
  const cfg = tinyConfig({ training: { steps: 4, save_interval: 1, eval_interval: 100, warmup_steps: 0 } });
  await train({ config: cfg, outDir: dir, stopAfter: 2 });
  // poison one weight through the training loop: the next optimizer step turns it into NaN
  const model = (await import('../../src/models/transformer.js')).MoETransformerLM.prototype;
  const orig = model.afterStep;
  model.afterStep = function (this: InstanceType<typeof import('../../src/models/transformer.js').MoETransformerLM>) {
    orig.call(this);
    this.norm.weight.data[0] = NaN;
  };
  try {
    await assert.rejects(
      train({ outDir: dir, resume: true }),
      (e: Error) => e instanceof TrainingDivergedError && /parameter (model\.)?norm\.weight holds NaN after step 3; not saving it.*last good checkpoint \(step 2\)/.test(e.message),
    );
  } finally {
    model.afterStep = orig;
  }
  assert.equal(latest(dir).step, 2);
  assert.deepEqual(steps(dir), [1, 2]);
  for (const [name, t] of loadCheckpoint(dir).model) assert.ok(t.data.every(Number.isFinite), name);
});

test('case 10: null or malformed latest.json / state.json give one clear line', async () => {
  const dir = tmpDir('nulls');
  await train({ config: tinyConfig({ training: { steps: 1, save_interval: 1 } }), outDir: dir });
  const lp = path.join(dir, 'latest.json');
  const good = fs.readFileSync(lp, 'utf8');
  for (const [text, re] of [
    ['null', /expected a JSON object, got null/],
    ['{"checkpoint": null}', /field checkpoint missing or not a string/],
    ['{"checkpoint": "../../etc"}', /must be a path inside the run directory/],
    ['[', /not valid JSON/],
  ] as const) {
    fs.writeFileSync(lp, text);
    assert.throws(
      () => loadCheckpoint(dir),
      (e: Error) => e instanceof CheckpointError && re.test(e.message) && !e.message.includes('\n'),
      text,
    );
  }
  fs.writeFileSync(lp, good);
  const sp = path.join(resolveCheckpointDir(dir), 'state.json');
  const state = JSON.parse(fs.readFileSync(sp, 'utf8'));
  for (const [over, re] of [
    [null, /expected a JSON object, got null/],
    [{ ...state, dataState: null }, /field dataState/],
    [{ ...state, rngState: null }, /field rngState/],
    [{ ...state, tokenizer: null }, /field tokenizer/],
    [{ ...state, config: null }, /field config/],
    [{ ...state, history: [null] }, /field history\[0\]/],
    [{ ...state, step: null }, /field step/],
  ] as const) {
    fs.writeFileSync(sp, JSON.stringify(over));
    assert.throws(
      () => loadCheckpoint(dir),
      (e: Error) => e instanceof CheckpointError && re.test(e.message),
      JSON.stringify(over)?.slice(0, 40),
    );
  }
});
