/**
 * The training loop: data, model, AdamW with warmup + cosine, gradient clipping, periodic
 * validation, atomic checkpoints, JSONL metrics, NaN/inf detection, and exact resume
 * (params, optimizer moments, sampler and RNG states are all restored, so a resumed run
 * is bit-for-bit the uninterrupted one).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../tensor/random.js';
import { AdamW, clipGradNorm, cosineWithWarmup, linearWithWarmup, type Parameter } from '../nn/index.js';
import { MoETransformerLM, lmLoss } from '../models/transformer.js';
import { parseModelConfig, type RunConfig } from '../models/config.js';
import type { MixedDataset } from '../data/dataset.js';
import { buildTokenizer, buildDataset } from '../data/build.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer/index.js';
import { saveTokenizer } from '../io/tokenizer.js';
import { writeJsonAtomicSync } from '../io/atomic.js';
import { evaluate, type EvalResult } from './evaluate.js';
import { saveCheckpoint, loadCheckpoint, configDiff, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError } from '../io/checkpoint.js';

export class TrainingDivergedError extends Error {}

export interface StepMetrics {
  step: number;
  loss: number;
  ce: number;
  aux: Record<string, number>;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  /** Means over MoE layers. */
  loadCV: number;
  maxOverMean: number;
  droppedFraction: number;
  routerEntropy: number;
  expertsPerToken: number;
}

export interface EvalRecord {
  step: number;
  tokensSeen: number;
  result: EvalResult;
}

export interface TrainEvents {
  onStart?(info: { totalSteps: number; startStep: number; params: number; activeParams: number; tokenizer: string; domains: string[] }): void;
  onStep?(m: StepMetrics): void;
  onEval?(r: EvalRecord): void;
  onCheckpoint?(dir: string, step: number): void;
}

export interface TrainOptions {
  config: RunConfig;
  outDir: string;
  resume?: boolean;
  events?: TrainEvents;
  /** Stop after this many steps of this call (tests use it to simulate an interruption). */
  stopAfter?: number;
  /** Directory holding the shared corpora (default: discovered). */
  dataDir?: string;
}

export interface TrainResult {
  steps: number;
  finalEval: EvalResult;
  history: EvalRecord[];
  tokensPerSec: number;
  params: number;
  activeParams: number;
  outDir: string;
  model: MoETransformerLM;
  tokenizer: Tokenizer;
}

function lrAt(cfg: RunConfig, step: number): number {
  const t = cfg.training;
  const opts = { lr: t.lr, warmup: t.warmup_steps, total: t.steps, minLr: t.min_lr };
  if (t.schedule === 'constant') return step < t.warmup_steps ? (t.lr * (step + 1)) / t.warmup_steps : t.lr;
  return t.schedule === 'linear' ? linearWithWarmup(step, opts) : cosineWithWarmup(step, opts);
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  let cfg = opts.config;
  const out = opts.outDir;
  const ev = opts.events ?? {};
  const texts = cfg.data.sources.map((s) => loadCorpusSplits(s, { dataDir: opts.dataDir }));

  let tokenizer: Tokenizer;
  let resumeFrom: ReturnType<typeof loadCheckpoint> | null = null;
  if (opts.resume) {
    if (!fs.existsSync(path.join(out, 'latest.json'))) throw new CheckpointError(`--resume: no checkpoint in ${out} (latest.json missing)`);
    resumeFrom = loadCheckpoint(out, true);
    const saved = resumeFrom.state.config;
    const diff = configDiff(saved.model as unknown as Record<string, unknown>, { ...cfg.model, vocab_size: saved.model.vocab_size } as unknown as Record<string, unknown>);
    if (diff.length) throw new CheckpointError(`--resume: checkpoint in ${resumeFrom.dir} was trained with a different model config: ${diff.join(', ')}`);
    tokenizer = loadTokenizer(resumeFrom.state.tokenizer);
  } else {
    tokenizer = buildTokenizer(cfg, texts);
  }
  // the tokenizer decides the vocabulary
  cfg = { ...cfg, model: parseModelConfig({ ...cfg.model, vocab_size: tokenizer.vocabSize }) };
  const data = buildDataset(cfg, tokenizer, texts);
  const tr = cfg.training;
  const model = new MoETransformerLM(cfg.model, tr.seed);
  const params = model.parameters();
  const noDecay = new Set<Parameter>(model.namedParameters().filter(([n, p]) => p.ndim < 2 || n.endsWith('norm.weight')).map(([, p]) => p));
  const opt = new AdamW(params, { lr: tr.lr, beta1: tr.beta1, beta2: tr.beta2, weightDecay: tr.weight_decay, noDecay });
  const rng = new Rng(tr.seed ^ 0x5eed);
  let step = 0;
  let history: EvalRecord[] = [];
  fs.mkdirSync(out, { recursive: true });
  const logPath = path.join(out, 'log.jsonl');
  if (resumeFrom) {
    model.loadStateDict(resumeFrom.model);
    opt.setState(resumeFrom.optimizer!);
    data.setState(resumeFrom.state.dataState);
    rng.setState(resumeFrom.state.rngState);
    step = resumeFrom.state.step;
    history = (resumeFrom.state.history ?? []) as EvalRecord[];
    truncateLog(logPath, step);
  } else {
    fs.rmSync(logPath, { force: true });
    writeJsonAtomicSync(path.join(out, 'config.json'), cfg);
    saveTokenizer(path.join(out, 'tokenizer.json'), tokenizer);
  }

  const activeParams = model.activeParameters();
  ev.onStart?.({ totalSteps: tr.steps, startStep: step, params: model.numParameters(), activeParams, tokenizer: tokenizer.name, domains: data.domainNames });
  const tokensPerStep = tr.batch_size * tr.seq_len;
  const log = fs.openSync(logPath, 'a');
  const save = (): void => {
    const dir = saveCheckpoint(out, {
      state: {
        format: CHECKPOINT_FORMAT,
        version: CHECKPOINT_VERSION,
        step,
        config: cfg,
        tokenizer: tokenizer.toJSON(),
        optimizerStep: opt.stepCount,
        dataState: data.getState(),
        rngState: rng.getState(),
        history,
      },
      model: model.stateDict(),
      optimizer: opt.getState(),
    });
    ev.onCheckpoint?.(dir, step);
  };
  const runEval = (): EvalResult => {
    const result = evaluate(model, data, { maxBatches: tr.eval_batches, step });
    const rec = { step, tokensSeen: step * tokensPerStep, result };
    history.push(rec);
    fs.writeSync(log, JSON.stringify({ type: 'eval', step, loss: result.loss, perplexity: result.perplexity, domains: result.domains }) + '\n');
    ev.onEval?.(rec);
    return rec.result;
  };

  let tpsSum = 0;
  let tpsCount = 0;
  let ran = 0;
  let finalEval: EvalResult;
  try {
    model.train();
    while (step < tr.steps && (opts.stopAfter === undefined || ran < opts.stopAfter)) {
      const t0 = performance.now();
      const lr = lrAt(cfg, step);
      opt.lr = lr;
      const batch = data.nextBatch();
      const res = model.forward(batch.inputs, batch.batchSize, batch.seqLen, {
        ctx: { training: true, step, totalSteps: tr.steps, rng },
        dropoutRng: rng,
      });
      const { loss, ce, auxLosses } = lmLoss(res, batch.targets);
      const lv = loss.item();
      if (!Number.isFinite(lv)) {
        throw new TrainingDivergedError(`training diverged: loss is ${lv} at step ${step + 1} (cross-entropy ${ce.item()}); stopping. Lower the learning rate (${tr.lr}) or raise warmup_steps; the last good checkpoint is in ${out}`);
      }
      loss.backward();
      const gradNorm = clipGradNorm(params, tr.grad_clip);
      if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(`training diverged: gradient norm is ${gradNorm} at step ${step + 1}; stopping`);
      opt.step();
      opt.zeroGrad();
      model.afterStep();
      step++;
      ran++;
      const dt = (performance.now() - t0) / 1000;
      const tps = tokensPerStep / dt;
      tpsSum += tps;
      tpsCount++;
      const ms = res.aux.map((a) => a.aux.metrics);
      const m: StepMetrics = {
        step,
        loss: lv,
        ce: ce.item(),
        aux: auxLosses,
        lr,
        gradNorm,
        tokensPerSec: tps,
        loadCV: mean(ms.map((x) => x.loadCV)),
        maxOverMean: mean(ms.map((x) => x.maxOverMean)),
        droppedFraction: mean(ms.map((x) => x.droppedFraction)),
        routerEntropy: mean(ms.map((x) => x.routerEntropy)),
        expertsPerToken: mean(ms.map((x) => x.expertsPerToken)),
      };
      if (step % tr.log_interval === 0 || step === tr.steps) fs.writeSync(log, JSON.stringify({ type: 'step', ...m }) + '\n');
      ev.onStep?.(m);
      if (step % tr.eval_interval === 0 && step < tr.steps) runEval();
      if (step % tr.save_interval === 0 || step === tr.steps) save();
    }
    const last = history[history.length - 1];
    if (last && last.step === step) finalEval = last.result;
    else {
      // the final evaluation writes to the log, so it runs before the log is closed
      finalEval = runEval();
      if (step === tr.steps) save(); // keep the final evaluation in the checkpoint's history
    }
  } finally {
    fs.closeSync(log);
  }
  const result: TrainResult = {
    steps: step,
    finalEval,
    history,
    tokensPerSec: tpsCount ? tpsSum / tpsCount : 0,
    params: model.numParameters(),
    activeParams,
    outDir: out,
    model,
    tokenizer,
  };
  if (step === tr.steps) {
    writeJsonAtomicSync(path.join(out, 'results.json'), {
      steps: step,
      params: result.params,
      activeParams,
      tokensPerSec: result.tokensPerSec,
      final: { loss: finalEval.loss, perplexity: finalEval.perplexity, domains: finalEval.domains, routing: finalEval.routing },
      history: history.map((h) => ({ step: h.step, tokensSeen: h.tokensSeen, loss: h.result.loss, domains: h.result.domains })),
    });
  }
  return result;
}

/** Drop log lines past the resumed step so the log reads as one uninterrupted run. */
function truncateLog(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step: number }).step <= step;
    } catch {
      return false;
    }
  });
  fs.writeFileSync(file, kept.map((l) => l + '\n').join(''));
}
