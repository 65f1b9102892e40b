/**
 * Training in memory, without a file system: a model, its optimizer, data and RNG advanced one
 * optimizer step at a time (the browser playground drives it). The step is the same as
 * trainer.ts's: the LR schedule, forward, loss with aux losses, backward, clipping, AdamW,
 * router updates, and the same divergence checks.
 */
import { expertsPerTokenOfLayers } from '../moe/metrics.js';
import { Rng } from '../tensor/random.js';
import { AdamW, clipGradNorm, cosineWithWarmup, linearWithWarmup, type Parameter } from '../nn/index.js';
import { add, scale } from '../tensor/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { lmLoss, symmetricKL } from '../models/transformer.js';
import { buildModel } from '../models/build.js';
import type { LanguageModel, LMForwardOptions, LMForwardResult } from '../models/family.js';
import { parseModelConfig, type RunConfig } from '../models/config.js';
import { isDepthRouterTensor } from '../models/depth.js';
import type { MixedDataset } from '../data/dataset.js';
import { buildDataset, newTokenizer } from '../data/build.js';
import type { Tokenizer } from '../data/tokenizer/types.js';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, checkpointToBytes, type TrainerState } from '../io/checkpoint-bytes.js';
import { evaluate, type EvalResult } from './evaluate.js';

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

/** Per-MoE-layer routing of one step (for live load-balance views). */
export interface LayerLoad {
  layer: number;
  tokensPerExpert: number[];
  loadCV: number;
}

/** The learning rate at `step` under the config's schedule (warmup, then cosine, linear or constant). */
export function lrAt(cfg: Pick<RunConfig, 'training'>, step: number): number {
  const t = cfg.training;
  const opts = { lr: t.lr, warmup: t.warmup_steps, total: t.steps, minLr: t.min_lr };
  if (t.schedule === 'constant') return step < t.warmup_steps ? (t.lr * (step + 1)) / t.warmup_steps : t.lr;
  return t.schedule === 'linear' ? linearWithWarmup(step, opts) : cosineWithWarmup(step, opts);
}

/** Arithmetic mean, 0 for an empty list. */
export function meanOf(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/**
 * A router's consistency regulariser (`Router.consistencyWeight` > 0, THOR): a second forward of the
 * same batch with fresh randomness; the step's loss is the mean of the two plus weight times the
 * symmetric KL between their logits. Without such a router the first pass comes back unchanged.
 */
export function withConsistency(
  model: LanguageModel,
  batch: { inputs: Int32Array; targets: Int32Array; batchSize: number; seqLen: number },
  res: LMForwardResult,
  first: { loss: Tensor; ce: Tensor; auxLosses: Record<string, number> },
  forwardOpts: LMForwardOptions,
): { loss: Tensor; ce: Tensor; auxLosses: Record<string, number> } {
  const weight = model.consistencyWeight();
  if (!(weight > 0)) return first;
  const res2 = model.forward(batch.inputs, batch.batchSize, batch.seqLen, forwardOpts);
  const second = lmLoss(res2, batch.targets);
  const kl = symmetricKL(res.logits, res2.logits);
  const auxLosses = first.auxLosses; // averaged in place: callers keep their reference
  for (const [k, v] of Object.entries(second.auxLosses)) auxLosses[k] = ((auxLosses[k] ?? 0) + v) / 2;
  auxLosses.consistency = weight * kl.item();
  return { loss: add(scale(add(first.loss, second.loss), 0.5), scale(kl, weight)), ce: scale(add(first.ce, second.ce), 0.5), auxLosses };
}

/** A model, its AdamW optimizer, data and RNG, trained one step at a time in memory (no files). */
export class TrainSession {
  readonly config: RunConfig;
  readonly model: LanguageModel;
  readonly tokenizer: Tokenizer;
  readonly data: MixedDataset;
  readonly optimizer: AdamW;
  readonly rng: Rng;
  step = 0;
  /** Routing loads of the last step, per MoE layer. */
  lastLoads: LayerLoad[] = [];
  private readonly params: Parameter[];

  /** `texts` are the config's data sources' texts, in order; the tokenizer is built from them unless given. */
  constructor(config: RunConfig, texts: string[], tokenizer?: Tokenizer) {
    if (texts.length !== config.data.sources.length) throw new Error(`TrainSession: ${texts.length} texts for ${config.data.sources.length} data sources`);
    this.tokenizer = tokenizer ?? newTokenizer(config, texts);
    // the tokenizer decides the vocabulary
    this.config = { ...config, model: parseModelConfig({ ...config.model, vocab_size: this.tokenizer.vocabSize }) };
    const tr = this.config.training;
    this.data = buildDataset(this.config, this.tokenizer, texts);
    this.model = buildModel(this.config.model, tr.seed);
    // Router-Tuning: only the depth routers and their causal predictors train
    this.params = this.config.model.mixture_of_depths?.router_tuning ? this.model.namedParameters().flatMap(([n, p]) => (isDepthRouterTensor(n) ? [p] : [])) : this.model.parameters();
    const noDecay = new Set<Parameter>(
      this.model
        .namedParameters()
        .filter(([n, p]) => p.ndim < 2 || n.endsWith('norm.weight'))
        .map(([, p]) => p),
    );
    this.optimizer = new AdamW(this.params, { lr: tr.lr, beta1: tr.beta1, beta2: tr.beta2, weightDecay: tr.weight_decay, noDecay });
    this.rng = new Rng(tr.seed ^ 0x5eed);
  }

  /** One optimizer step; throws TrainingDivergedError on a non-finite loss or gradient. */
  trainStep(): StepMetrics {
    const tr = this.config.training;
    const t0 = performance.now();
    const lr = lrAt(this.config, this.step);
    this.optimizer.lr = lr;
    this.model.train();
    const batch = this.data.nextBatch();
    const res = this.model.forward(batch.inputs, batch.batchSize, batch.seqLen, {
      ctx: { training: true, step: this.step, totalSteps: tr.steps, rng: this.rng },
      dropoutRng: this.rng,
    });
    const { loss, ce, auxLosses } = withConsistency(this.model, batch, res, lmLoss(res, batch.targets), {
      ctx: { training: true, step: this.step, totalSteps: tr.steps, rng: this.rng },
      dropoutRng: this.rng,
    });
    const lv = loss.item();
    if (!Number.isFinite(lv)) throw new TrainingDivergedError(`training diverged: loss is ${lv} at step ${this.step + 1}; lower the learning rate (${tr.lr})`);
    loss.backward();
    this.model.dropScheduledGradients?.(this.step);
    const gradNorm = clipGradNorm(this.params, tr.grad_clip);
    if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(`training diverged: gradient norm is ${gradNorm} at step ${this.step + 1}`);
    this.optimizer.step();
    this.optimizer.zeroGrad();
    this.model.afterStep();
    this.step++;
    const dt = (performance.now() - t0) / 1000;
    const ms = res.aux.map((a) => a.aux.metrics);
    this.lastLoads = res.aux.map((a) => ({ layer: a.layer, tokensPerExpert: Array.from(a.aux.metrics.tokensPerExpert), loadCV: a.aux.metrics.loadCV }));
    return {
      step: this.step,
      loss: lv,
      ce: ce.item(),
      aux: auxLosses,
      lr,
      gradNorm,
      tokensPerSec: (batch.batchSize * batch.seqLen) / dt,
      loadCV: meanOf(ms.map((x) => x.loadCV)),
      maxOverMean: meanOf(ms.map((x) => x.maxOverMean)),
      droppedFraction: meanOf(ms.map((x) => x.droppedFraction)),
      routerEntropy: meanOf(ms.map((x) => x.routerEntropy)),
      expertsPerToken: expertsPerTokenOfLayers(res.aux),
    };
  }

  evaluate(maxBatches = this.config.training.eval_batches): EvalResult {
    return evaluate(this.model, this.data, { maxBatches, step: this.step });
  }

  /** The trainer state a checkpoint of this session carries (the CLI's state.json). */
  state(): TrainerState {
    return {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: this.step,
      config: this.config,
      tokenizer: this.tokenizer.toJSON(),
      optimizerStep: this.optimizer.stepCount,
      dataState: this.data.getState(),
      rngState: this.rng.getState(),
    };
  }

  /** The single-file checkpoint (loadable by `moe-ts generate --ckpt FILE.safetensors`). */
  checkpointBytes(): Uint8Array {
    return checkpointToBytes(this.state(), this.model.stateDict());
  }
}
