/**
 * The training loop: data, model, AdamW with warmup + cosine, gradient clipping, periodic
 * validation, atomic checkpoints, JSONL metrics, NaN/inf detection, and exact resume
 * (params, optimizer moments, sampler and RNG states are all restored, so a resumed run
 * is bit-for-bit the uninterrupted one).
 */
import { expertsPerTokenOfLayers } from '../moe/metrics.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../tensor/random.js';
import { AdamW, clipGradNorm, type Parameter } from '../nn/index.js';
import { lmLoss, type ForwardResult } from '../models/transformer.js';
import type { Tensor } from '../tensor/tensor.js';
import { buildModel } from '../models/build.js';
import type { LanguageModel } from '../models/family.js';
import { parseModelConfig, ConfigError, type RunConfig } from '../models/config.js';
import { buildTokenizer, buildDataset } from '../data/build.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer/index.js';
import { saveTokenizer } from '../io/tokenizer.js';
import { writeJsonAtomicSync } from '../io/atomic.js';
import { evaluate, type EvalResult } from './evaluate.js';
import { TrainingDivergedError, lrAt, meanOf as mean, withConsistency, type StepMetrics } from './session.js';
import { isAdapterTensor, loadPartialState } from '../models/lora-experts.js';
import { isDepthRouterTensor, loadBaseWithDepthRouters } from '../models/depth.js';
import { saveCheckpoint, loadCheckpoint, configDiff, cleanStaleTemps, firstNonFinite, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError } from '../io/checkpoint.js';
import { checkRunMemory } from '../models/memory.js';
import { prepareFreshRunDir, truncateLog, appendLine } from './run-dir.js';

export { TrainingDivergedError, type StepMetrics } from './session.js';

/** Training stopped by a signal (opts.signal); a checkpoint of `step` was saved first. */
export class TrainingInterruptedError extends Error {
  constructor(
    message: string,
    readonly step: number,
    readonly outDir: string,
  ) {
    super(message);
  }
}

/** A resumed run that has nothing left to do. */
export class RunFinishedError extends Error {}

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

/**
 * Generic hooks for adaptation runs (moe-ts extend, distill): which parameter entries train and
 * what a step minimises. The loop never names a method; each command supplies its own hooks.
 */
export interface TrainHooks {
  /**
   * Per named parameter: true trains it, false freezes it, a 0/1 mask of its size freezes the
   * entries where it is 0 (their gradients are zeroed before clipping and their values restored
   * after each update, so weight decay cannot move them). Absent: every parameter (PEFT: adapters only).
   */
  trainable?(name: string, p: Parameter): boolean | Uint8Array;
  /** The loss a step minimises instead of cross-entropy + router losses; `metrics` are logged with the aux losses. */
  objective?(o: { inputs: Int32Array; targets: Int32Array; batchSize: number; seqLen: number; step: number; result: ForwardResult; loss: Tensor; ce: Tensor }): {
    loss: Tensor;
    metrics?: Record<string, number>;
  };
}

export interface TrainOptions {
  /** What trains and what is minimised (adaptation commands); absent: the plain run. */
  hooks?: TrainHooks;
  /** On resume: optional, default the run's own config (its model must match the checkpoint). */
  config?: RunConfig;
  outDir: string;
  /** Continue the run in outDir from its latest checkpoint. */
  resume?: boolean;
  /** Replace a run already in outDir (without it, an existing run is refused). */
  overwrite?: boolean;
  /** Aborting saves a checkpoint at the current step and rejects with TrainingInterruptedError. */
  signal?: AbortSignal;
  events?: TrainEvents;
  /** Stop after this many steps of this call (tests use it to simulate an interruption). */
  stopAfter?: number;
  /** Directory holding the shared corpora (default: discovered). */
  dataDir?: string;
  /** Fine-tune: start from these weights and this tokenizer (e.g. a Hugging Face model via fromPretrained); config.model must be theirs. */
  init?: { model: LanguageModel; tokenizer: Tokenizer };
  /** Extra top-level entries of results.json (e.g. `gamma_mod`: the ARank conversion record). */
  report?: Record<string, unknown>;
}

export interface TrainResult {
  steps: number;
  finalEval: EvalResult;
  history: EvalRecord[];
  tokensPerSec: number;
  params: number;
  activeParams: number;
  outDir: string;
  model: LanguageModel;
  tokenizer: Tokenizer;
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const out = opts.outDir;
  const ev = opts.events ?? {};
  let resumeFrom: ReturnType<typeof loadCheckpoint> | null = null;
  if (opts.resume) {
    if (!fs.existsSync(path.join(out, 'latest.json'))) throw new CheckpointError(`--resume: no checkpoint in ${out} (latest.json missing)`);
    cleanStaleTemps(out);
    resumeFrom = loadCheckpoint(out, true);
  } else if (!opts.config) {
    throw new Error('train: config is required for a new run');
  }
  let cfg: RunConfig = opts.config ?? resumeFrom!.state.config;
  let tokenizer: Tokenizer;
  if (resumeFrom) {
    const saved = resumeFrom.state.config;
    const diff = configDiff(saved.model as unknown as Record<string, unknown>, { ...cfg.model, vocab_size: saved.model.vocab_size } as unknown as Record<string, unknown>);
    if (diff.length) throw new CheckpointError(`--resume: checkpoint in ${resumeFrom.dir} was trained with a different model config: ${diff.join(', ')}`);
    if (resumeFrom.state.step >= cfg.training.steps) {
      throw new RunFinishedError(`the run in ${out} is already at step ${resumeFrom.state.step} of ${cfg.training.steps}; to train longer, resume with --steps N (N > ${resumeFrom.state.step})`);
    }
    tokenizer = loadTokenizer(resumeFrom.state.tokenizer);
  }
  // sizes are checked before the corpus is read or anything is allocated
  checkRunMemory(resumeFrom ? { ...cfg, model: resumeFrom.state.config.model } : cfg);
  const texts = cfg.data.sources.map((s) => loadCorpusSplits(s, { dataDir: opts.dataDir }));
  if (!resumeFrom) {
    prepareFreshRunDir(out, Boolean(opts.overwrite));
    tokenizer = opts.init ? opts.init.tokenizer : buildTokenizer(cfg, texts);
  }
  // the tokenizer decides the vocabulary (a loaded model keeps its own, which may be larger)
  cfg = { ...cfg, model: parseModelConfig({ ...cfg.model, vocab_size: resumeFrom ? resumeFrom.state.config.model.vocab_size : opts.init ? opts.init.model.config.vocab_size : tokenizer!.vocabSize }) };
  checkRunMemory(cfg);
  const data = buildDataset(cfg, tokenizer!, texts);
  const tr = cfg.training;
  const model = buildModel(cfg.model, tr.seed);
  // PEFT: the base stays frozen; only adapter tensors (and so their routers) reach the optimizer
  // Router-Tuning: likewise only the depth routers and their causal predictors
  const routerTuning = Boolean(cfg.model.mixture_of_depths?.router_tuning);
  const basePick = (n: string): boolean => (cfg.model.peft ? isAdapterTensor(n) : routerTuning ? isDepthRouterTensor(n) : true);
  const masks: { p: Parameter; mask: Uint8Array; frozen: Float32Array }[] = [];
  const params: Parameter[] = [];
  for (const [n, p] of model.namedParameters()) {
    const t = opts.hooks?.trainable ? opts.hooks.trainable(n, p) : basePick(n);
    if (t === false) continue;
    if (t !== true) {
      if (t.length !== p.size) throw new Error(`train hooks: trainable mask of ${n} has ${t.length} entries, the parameter ${p.size}`);
      if (!t.some((v) => v !== 0)) continue;
      masks.push({ p, mask: t, frozen: new Float32Array(0) });
    }
    params.push(p);
  }
  if (routerTuning && !cfg.model.peft && params.length === 0)
    throw new ConfigError('model config: mixture_of_depths.router_tuning: the model has no depth-routed layer to tune (check capacity, every, layers)');
  if (params.length === 0) throw new Error('train: no parameter is trainable (hooks.trainable froze everything)');
  const noDecay = new Set<Parameter>(
    model
      .namedParameters()
      .filter(([n, p]) => p.ndim < 2 || n.endsWith('norm.weight'))
      .map(([, p]) => p),
  );
  const opt = new AdamW(params, { lr: tr.lr, beta1: tr.beta1, beta2: tr.beta2, weightDecay: tr.weight_decay, noDecay });
  const rng = new Rng(tr.seed ^ 0x5eed);
  let step = 0;
  let history: EvalRecord[] = [];
  fs.mkdirSync(out, { recursive: true });
  const logPath = path.join(out, 'log.jsonl');
  /** Step of the newest checkpoint on disk (null: none yet). */
  let savedStep: number | null = null;
  if (resumeFrom) {
    model.loadStateDict(resumeFrom.model);
    opt.setState(resumeFrom.optimizer!);
    data.setState(resumeFrom.state.dataState);
    rng.setState(resumeFrom.state.rngState);
    step = resumeFrom.state.step;
    savedStep = step;
    history = (resumeFrom.state.history ?? []) as EvalRecord[];
    truncateLog(logPath, step);
    // the config actually in force (with any overrides) is what the run's config.json says
    writeJsonAtomicSync(path.join(out, 'config.json'), cfg);
  } else {
    // a base without adapters into a PEFT model: base tensors by name, adapters keep their (identity) init
    if (opts.init && cfg.model.peft && !opts.init.model.config.peft) loadPartialState(model, opts.init.model.stateDict(), 'base', 'train --peft');
    // a base without depth routers into a depth-routed model (Router-Tuning, γ-MoD): base tensors by name, routers keep their init
    else if (opts.init && cfg.model.mixture_of_depths && !opts.init.model.config.mixture_of_depths)
      loadBaseWithDepthRouters(model, opts.init.model.stateDict(), routerTuning ? 'train --router-tuning' : 'train --model (depth routers added)');
    else if (opts.init) model.loadStateDict(opts.init.model.stateDict());
    writeJsonAtomicSync(path.join(out, 'config.json'), cfg);
    saveTokenizer(path.join(out, 'tokenizer.json'), tokenizer!);
  }
  // frozen entries of partly trainable tensors, as loaded: restored after every update
  for (const m of masks) m.frozen = m.p.data.slice();
  const tok = tokenizer!;
  const lastGood = (): string => (savedStep === null ? `no checkpoint was saved yet (save_interval ${tr.save_interval})` : `the last good checkpoint (step ${savedStep}) is kept in ${out}`);

  const activeParams = model.activeParameters();
  ev.onStart?.({ totalSteps: tr.steps, startStep: step, params: model.numParameters(), activeParams, tokenizer: tok.name, domains: data.domainNames });
  const tokensPerStep = tr.batch_size * tr.seq_len;
  const log = fs.openSync(logPath, 'a');
  const save = (): void => {
    if (savedStep === step) return;
    // a diverged step is never saved, so latest.json keeps naming finite weights
    for (const [name, t] of model.stateDict()) {
      const i = firstNonFinite(t.data);
      if (i >= 0)
        throw new TrainingDivergedError(
          `training diverged: parameter ${name} holds ${t.data[i]} after step ${step}; not saving it. Lower the learning rate (${tr.lr}) or raise warmup_steps; ${lastGood()}`,
        );
    }
    const dir = saveCheckpoint(out, {
      state: {
        format: CHECKPOINT_FORMAT,
        version: CHECKPOINT_VERSION,
        step,
        config: cfg,
        tokenizer: tok.toJSON(),
        optimizerStep: opt.stepCount,
        dataState: data.getState(),
        rngState: rng.getState(),
        history,
      },
      model: model.stateDict(),
      optimizer: opt.getState(),
    });
    savedStep = step;
    ev.onCheckpoint?.(dir, step);
  };
  const runEval = (): EvalResult => {
    const result = evaluate(model, data, { maxBatches: tr.eval_batches, step });
    const rec = { step, tokensSeen: step * tokensPerStep, result };
    history.push(rec);
    appendLine(log, { type: 'eval', step, loss: result.loss, perplexity: result.perplexity, domains: result.domains });
    ev.onEval?.(rec);
    return rec.result;
  };
  const evaluated = (): boolean => history.length > 0 && history[history.length - 1].step === step;

  let tpsSum = 0;
  let tpsCount = 0;
  let ran = 0;
  let finalEval: EvalResult;
  try {
    model.train();
    while (step < tr.steps && (opts.stopAfter === undefined || ran < opts.stopAfter)) {
      if (opts.signal?.aborted) {
        save();
        throw new TrainingInterruptedError(`interrupted at step ${step} of ${tr.steps}; checkpoint saved in ${out}. Continue with: moe-ts train --out ${out} --resume`, step, out);
      }
      const t0 = performance.now();
      const lr = lrAt(cfg, step);
      opt.lr = lr;
      const batch = data.nextBatch();
      const res = model.forward(batch.inputs, batch.batchSize, batch.seqLen, {
        ctx: { training: true, step, totalSteps: tr.steps, rng },
        dropoutRng: rng,
      });
      const first = lmLoss(res, batch.targets);
      let { loss, ce } = first;
      const auxLosses = first.auxLosses;
      if (opts.hooks?.objective) {
        const o = opts.hooks.objective({ inputs: batch.inputs, targets: batch.targets, batchSize: batch.batchSize, seqLen: batch.seqLen, step, result: res, loss, ce });
        loss = o.loss;
        Object.assign(auxLosses, o.metrics ?? {});
      }
      // a router may ask for two passes (different randomness) and a consistency loss between them
      ({ loss, ce } = withConsistency(model, batch, res, { loss, ce, auxLosses }, { ctx: { training: true, step, totalSteps: tr.steps, rng }, dropoutRng: rng }));
      const lv = loss.item();
      if (!Number.isFinite(lv)) {
        throw new TrainingDivergedError(
          `training diverged: loss is ${lv} at step ${step + 1} (cross-entropy ${ce.item()}); stopping. Lower the learning rate (${tr.lr}) or raise warmup_steps; ${lastGood()}`,
        );
      }
      loss.backward();
      model.dropScheduledGradients?.(step);
      for (const { p, mask } of masks) if (p.grad) for (let i = 0; i < mask.length; i++) if (mask[i] === 0) p.grad[i] = 0;
      const gradNorm = clipGradNorm(params, tr.grad_clip);
      if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(`training diverged: gradient norm is ${gradNorm} at step ${step + 1}; stopping; ${lastGood()}`);
      opt.step();
      for (const { p, mask, frozen } of masks) for (let i = 0; i < mask.length; i++) if (mask[i] === 0) p.data[i] = frozen[i];
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
        expertsPerToken: expertsPerTokenOfLayers(res.aux),
      };
      if (step % tr.log_interval === 0 || step === tr.steps) appendLine(log, { type: 'step', ...m });
      ev.onStep?.(m);
      if (step === tr.steps) {
        // the final evaluation goes into the final checkpoint's history: one save, after it
        runEval();
        save();
      } else {
        if (step % tr.eval_interval === 0) runEval();
        if (step % tr.save_interval === 0) save();
      }
      // let signal handlers (Ctrl-C) run between steps
      if (opts.signal) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    finalEval = evaluated() ? history[history.length - 1].result : runEval();
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
    tokenizer: tok,
  };
  if (step === tr.steps) {
    writeJsonAtomicSync(path.join(out, 'results.json'), {
      steps: step,
      params: result.params,
      activeParams,
      tokensPerSec: result.tokensPerSec,
      final: { loss: finalEval.loss, perplexity: finalEval.perplexity, domains: finalEval.domains, routing: finalEval.routing },
      history: history.map((h) => ({ step: h.step, tokensSeen: h.tokensSeen, loss: h.result.loss, domains: h.result.domains })),
      ...opts.report,
    });
  }
  return result;
}
