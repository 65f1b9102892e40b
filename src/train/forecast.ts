/**
 * Training and evaluating a Time-MoE forecaster (src/models/time-moe.ts) on one real series:
 * the series split by time (the tail validates), random training windows of seq_len steps plus
 * the longest head's horizon, each window normalised by its input's mean and std, AdamW with the
 * language model's schedule and clipping (lrAt, clipGradNorm), periodic validation, and at the
 * end rolling-origin forecasts over the validation span against the naive (last value) and
 * seasonal-naive (value one season earlier) baselines. Writes config.json, log.jsonl,
 * model.safetensors and results.json (atomically) into the run directory, and every save_interval
 * steps a checkpoint (weights, AdamW moments, both RNG states, history) under checkpoints/ named by
 * latest.json, written like train's (temp directory renamed into place, then the pointer), so
 * `resume` continues an interrupted run exactly.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tensor.js';
import { z, ConfigError, isRecord, oneLine, checkJsonDepth } from '../tensor/validate.js';
import { AdamW, clipGradNorm, type Parameter } from '../nn/index.js';
import { TrainConfigSchema, formatZodError, type ModelConfig, type TrainConfig } from '../models/config.js';
import { TimeMoE, timeMoELoss, forecast, windowStats, huberValue, headSchedule, parseForecastConfig, timeMoEModelConfig, type ForecastConfig } from '../models/time-moe.js';
import { loadSeries, splitByTime, SeriesError, type Series } from '../data/series.js';
import { writeJsonAtomicSync, fsyncDirSync } from '../io/atomic.js';
import { writeSafetensorsSync, readSafetensorsSync, type TensorEntry } from '../io/safetensors.js';
import { CheckpointError, configDiff } from '../io/checkpoint.js';
import type { AdamWState } from '../nn/optim.js';
import type { StateDict } from '../nn/module.js';
import { appendLine, truncateLog } from './run-dir.js';
import { lrAt, meanOf, TrainingDivergedError } from './session.js';
import { TrainingInterruptedError, RunFinishedError } from './trainer.js';

/** Training defaults of a forecast run (over TrainConfigSchema's): seq_len is the context length. */
export const FORECAST_TRAINING_DEFAULTS = { steps: 300, batch_size: 16, seq_len: 96, lr: 3e-3, warmup_steps: 20, eval_interval: 50, val_fraction: 0.2 } as const;

const DataSchema = z
  .object({
    /** An embedded series name ('seattle-weather') or a CSV path. */
    series: z.string().min(1).default('seattle-weather'),
    /** Value column (default: the embedded series' own). */
    column: z.string().min(1).optional(),
    /** Timestamp column, checked to increase (default: the embedded series' own; none for a file). */
    date_column: z.string().min(1).optional(),
  })
  .strict();

/** A forecast run's config: the Time-MoE backbone (model fields), forecast heads, training, data. */
export interface ForecastRunConfig {
  model: ModelConfig;
  forecast: ForecastConfig;
  training: TrainConfig;
  data: z.output<typeof DataSchema>;
}

/** Parse a forecast run config (sections model, forecast, training, data; all optional), errors naming the field. */
export function parseForecastRunConfig(value: unknown, where = 'forecast config'): ForecastRunConfig {
  checkJsonDepth(value, where);
  const v = value ?? {};
  if (!isRecord(v)) throw new ConfigError(`invalid ${where}: (root): expected an object`);
  for (const k of Object.keys(v))
    if (!['model', 'forecast', 'training', 'data'].includes(k)) throw new ConfigError(`invalid ${where}: unknown section "${k}" (known: model, forecast, training, data)`);
  const section = (k: string): Record<string, unknown> => {
    const s = v[k] ?? {};
    if (!isRecord(s)) throw new ConfigError(`invalid ${where}: ${k}: expected an object`);
    return s;
  };
  const parse = <S extends z.ZodType>(schema: S, val: unknown, name: string): z.output<S> => {
    const r = schema.safeParse(val);
    if (!r.success) throw new ConfigError(oneLine(formatZodError(r.error, `${where} ${name}`, val, schema), 2000));
    return r.data;
  };
  const model = timeMoEModelConfig(section('model'), `${where} model`);
  const fc = parseForecastConfig(section('forecast'), `${where} forecast`);
  const training = parse(TrainConfigSchema, { ...FORECAST_TRAINING_DEFAULTS, ...section('training') }, 'training');
  const data = parse(DataSchema, section('data'), 'data');
  if (training.seq_len > model.max_position_embeddings)
    throw new ConfigError(`invalid ${where}: training.seq_len (the context length, ${training.seq_len}) must be at most model.max_position_embeddings (${model.max_position_embeddings})`);
  return { model, forecast: fc, training, data };
}

/** Random training windows: inputs [B*L] and per head targets [B*L*p_j], each window normalised by its input's stats. */
export class WindowSampler {
  readonly maxHorizon: number;
  constructor(
    readonly values: Float64Array,
    /** Windows end before this index (the training part). */
    readonly end: number,
    readonly seqLen: number,
    readonly horizons: readonly number[],
    readonly rng: Rng,
  ) {
    this.maxHorizon = horizons[horizons.length - 1];
    if (end < seqLen + this.maxHorizon) throw new SeriesError(`forecast: the training part has ${end} values, need at least seq_len + the longest horizon = ${seqLen + this.maxHorizon}`);
  }

  batch(B: number): { inputs: Float32Array; targets: Float32Array[] } {
    const L = this.seqLen;
    const span = this.end - (L + this.maxHorizon) + 1;
    const inputs = new Float32Array(B * L);
    const targets = this.horizons.map((p) => new Float32Array(B * L * p));
    for (let b = 0; b < B; b++) {
      const s = Math.floor(this.rng.next() * span);
      const st = windowStats(this.values, s, L);
      const norm = (i: number): number => (this.values[i] - st.mean) / st.std;
      for (let t = 0; t < L; t++) inputs[b * L + t] = norm(s + t);
      this.horizons.forEach((p, j) => {
        for (let t = 0; t < L; t++) for (let i = 0; i < p; i++) targets[j][(b * L + t) * p + i] = norm(s + t + 1 + i);
      });
    }
    return { inputs, targets };
  }
}

/** Error of one method over the validation origins. */
export interface ForecastError {
  mae: number;
  mse: number;
  /** MAE per lead time 1..horizon. */
  maeByStep: number[];
}

/** Rolling-origin evaluation over the validation span at one horizon. */
export interface ForecastEval {
  horizon: number;
  origins: number;
  model: ForecastError;
  naive: ForecastError;
  /** null without a known season, or when the first origin has less than one season before it. */
  seasonalNaive: ForecastError | null;
  period: number | null;
}

function errorOf(pred: Float64Array[], truth: Float64Array[]): ForecastError {
  const H = truth[0].length;
  const byStep = new Array<number>(H).fill(0);
  let abs = 0;
  let sq = 0;
  for (let o = 0; o < truth.length; o++)
    for (let h = 0; h < H; h++) {
      const e = pred[o][h] - truth[o][h];
      abs += Math.abs(e);
      sq += e * e;
      byStep[h] += Math.abs(e);
    }
  const n = truth.length * H;
  return { mae: abs / n, mse: sq / n, maeByStep: byStep.map((s) => s / truth.length) };
}

/** Origins from `from` to n - horizon, at most `max` of them, evenly spaced (deterministic). */
export function originsOf(from: number, n: number, horizon: number, max = 512): number[] {
  const last = n - horizon;
  if (last < from) return [];
  const count = last - from + 1;
  const k = Math.min(count, max);
  return Array.from({ length: k }, (_, i) => from + Math.round((i * (count - 1)) / Math.max(1, k - 1)));
}

/** Naive (last value repeated) and seasonal-naive (the value `period` steps earlier, repeating the last season) forecasts. */
export function baselineForecasts(values: ArrayLike<number>, origin: number, horizon: number, period: number | null): { naive: Float64Array; seasonal: Float64Array | null } {
  const naive = new Float64Array(horizon).fill(values[origin - 1]);
  if (!period || origin < period) return { naive, seasonal: null };
  const seasonal = new Float64Array(horizon);
  for (let h = 0; h < horizon; h++) seasonal[h] = values[origin + h - period * Math.ceil((h + 1) / period)];
  return { naive, seasonal };
}

/** Rolling-origin MAE/MSE of the model and both baselines over the validation part (origins at or after `split`). */
export function evaluateForecast(model: TimeMoE, values: Float64Array, split: number, seqLen: number, horizon: number, period: number | null): ForecastEval {
  const origins = originsOf(Math.max(split, seqLen), values.length, horizon);
  if (origins.length === 0) throw new SeriesError(`forecast: the validation part (${values.length - split} values) is shorter than eval_horizon ${horizon}`);
  const truth = origins.map((o) => values.slice(o, o + horizon));
  const pred = forecast(
    model,
    origins.map((o) => values.subarray(o - seqLen, o)),
    horizon,
  );
  const base = origins.map((o) => baselineForecasts(values, o, horizon, period));
  const seasonal = base.every((b) => b.seasonal)
    ? errorOf(
        base.map((b) => b.seasonal!),
        truth,
      )
    : null;
  return {
    horizon,
    origins: origins.length,
    model: errorOf(pred, truth),
    naive: errorOf(
      base.map((b) => b.naive),
      truth,
    ),
    seasonalNaive: seasonal,
    period,
  };
}

/** Validation loss: the mean Huber loss (normalised units, over heads) of the forecasts from the last step of contexts ending at validation origins. */
export function validationLoss(model: TimeMoE, values: Float64Array, split: number, seqLen: number, delta: number, maxOrigins = 128): number {
  const P = model.maxHorizon;
  const origins = originsOf(Math.max(split, seqLen), values.length, P, maxOrigins);
  if (origins.length === 0) throw new SeriesError(`forecast: the validation part (${values.length - split} values) is shorter than the longest horizon ${P}`);
  const B = origins.length;
  const L = seqLen;
  const x = new Float32Array(B * L);
  const stats = origins.map((o, b) => {
    const s = windowStats(values, o - L, L);
    for (let t = 0; t < L; t++) x[b * L + t] = (values[o - L + t] - s.mean) / s.std;
    return s;
  });
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      const res = model.forward(x, B, L, { training: false, step: 0, rng: new Rng(0) });
      let total = 0;
      model.horizons.forEach((p, j) => {
        const last = new Float32Array(B * p);
        const tgt = new Float32Array(B * p);
        for (let b = 0; b < B; b++)
          for (let i = 0; i < p; i++) {
            last[b * p + i] = res.outputs[j].data[(b * L + L - 1) * p + i];
            tgt[b * p + i] = (values[origins[b] + i] - stats[b].mean) / stats[b].std;
          }
        total += huberValue(last, tgt, delta);
      });
      return total / model.horizons.length;
    });
  } finally {
    model.train(wasTraining);
  }
}

/** One logged training step. */
export interface ForecastStep {
  step: number;
  loss: number;
  huber: number;
  aux: Record<string, number>;
  lr: number;
  gradNorm: number;
  /** Time steps (tokens) per second of this step. */
  tokensPerSec: number;
  loadCV: number;
}

/** The plotted forecast: from the first validation step, autoregressively over `horizon` steps. */
export interface ForecastPlot {
  /** Index of the first forecast step (the first validation value). */
  origin: number;
  /** Context shown before it: values[origin - context.length, origin). */
  context: number[];
  truth: number[];
  model: number[];
  naive: number[];
  seasonalNaive: number[] | null;
  /** Timestamps of context + forecast steps, when the series has them. */
  dates: string[] | null;
  /** Head lengths in the order the autoregressive rounds used them. */
  rounds: number[];
}

/** What results.json holds. */
export interface ForecastResults {
  kind: 'forecast';
  paper: string;
  series: { name: string; column: string; length: number; split: number; period: number | null; firstDate: string | null; splitDate: string | null; lastDate: string | null };
  steps: number;
  params: number;
  activeParams: number;
  tokensPerSec: number;
  horizons: number[];
  seqLen: number;
  history: { step: number; valLoss: number }[];
  trainCurve: { step: number; loss: number; huber: number }[];
  final: { valLoss: number; eval: ForecastEval };
  plot: ForecastPlot;
}

/** Options of trainForecast. */
export interface ForecastTrainOptions {
  /** The run config (optional on resume: the checkpoint has it). */
  config?: ForecastRunConfig;
  outDir: string;
  /** Replace a forecast run already in outDir. */
  overwrite?: boolean;
  /** Continue the run in outDir from its latest checkpoint (its own config; `config`, if given, may only change training.steps). */
  resume?: boolean;
  /** Aborting (checked between steps) saves a checkpoint of the current step and throws TrainingInterruptedError. */
  signal?: AbortSignal;
  /** An already loaded series (tests); default: config.data's. */
  series?: Series;
  events?: { onStep?(s: ForecastStep): void; onEval?(r: { step: number; valLoss: number }): void };
}

/** Files a forecast run writes (and --overwrite replaces). */
export const FORECAST_RUN_FILES = ['config.json', 'log.jsonl', 'model.safetensors', 'results.json', 'report.html', 'latest.json', 'checkpoints'] as const;

/** state.json format tag of a forecast checkpoint (not a language-model checkpoint: `generate` refuses it). */
export const FORECAST_CHECKPOINT_FORMAT = 'moe-ts-forecast-checkpoint';

/** What a forecast checkpoint's state.json holds besides the tensors. */
export interface ForecastCheckpointState {
  format: typeof FORECAST_CHECKPOINT_FORMAT;
  version: 1;
  step: number;
  config: ForecastRunConfig;
  optimizerStep: number;
  samplerRng: number[];
  rng: number[];
  history: { step: number; valLoss: number }[];
  trainCurve: { step: number; loss: number; huber: number }[];
  tokensPerSec: number[];
}

const toEntries = (m: StateDict): Map<string, TensorEntry> => {
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of m) out.set(name, { dtype: 'float32', shape: [...t.shape], data: t.data });
  return out;
};

/** Write a forecast checkpoint atomically (temp dir renamed to checkpoints/step-N, then latest.json), keeping the newest two. */
export function saveForecastCheckpoint(runDir: string, state: ForecastCheckpointState, model: StateDict, optimizer: AdamWState): string {
  const root = path.join(runDir, 'checkpoints');
  fs.mkdirSync(root, { recursive: true });
  const name = `step-${String(state.step).padStart(8, '0')}`;
  const final = path.join(root, name);
  const tmp = path.join(root, `.${name}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    writeSafetensorsSync(path.join(tmp, 'model.safetensors'), toEntries(model), { format: 'pt', producer: 'moe-ts' });
    const opt = new Map<string, TensorEntry>();
    optimizer.m.forEach((m, i) => opt.set(`m.${i}`, { dtype: 'float32', shape: [m.length], data: m }));
    optimizer.v.forEach((v, i) => opt.set(`v.${i}`, { dtype: 'float32', shape: [v.length], data: v }));
    writeSafetensorsSync(path.join(tmp, 'optimizer.safetensors'), opt, { step: String(optimizer.step) });
    writeJsonAtomicSync(path.join(tmp, 'state.json'), state);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
    fsyncDirSync(root);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw new CheckpointError(`cannot save forecast checkpoint of step ${state.step} in ${root}: ${(e as Error).message}; latest.json still names the previous one`);
  }
  writeJsonAtomicSync(path.join(runDir, 'latest.json'), { checkpoint: path.join('checkpoints', name), step: state.step });
  const older = fs
    .readdirSync(root)
    .filter((n) => /^step-\d+$/.test(n) && n < name)
    .sort();
  for (const n of older.slice(0, Math.max(0, older.length - 1))) fs.rmSync(path.join(root, n), { recursive: true, force: true });
  return final;
}

/** Read the checkpoint latest.json names in a forecast run directory; errors name the file and field. */
export function loadForecastCheckpoint(runDir: string): { state: ForecastCheckpointState; model: StateDict; optimizer: AdamWState } {
  const latest = path.join(runDir, 'latest.json');
  if (!fs.existsSync(latest)) throw new CheckpointError(`--resume: no checkpoint in ${runDir} (latest.json missing)`);
  let rel: unknown;
  try {
    rel = (JSON.parse(fs.readFileSync(latest, 'utf8')) as { checkpoint?: unknown }).checkpoint;
  } catch (e) {
    throw new CheckpointError(`${latest}: not JSON (${(e as Error).message})`);
  }
  if (typeof rel !== 'string' || path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..'))
    throw new CheckpointError(`${latest}: field checkpoint must be a path inside the run directory, got ${JSON.stringify(rel)}`);
  const dir = path.join(runDir, rel);
  let state: ForecastCheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as ForecastCheckpointState;
  } catch (e) {
    throw new CheckpointError(`${dir}/state.json: cannot read (${(e as Error).message})`);
  }
  if (state?.format !== FORECAST_CHECKPOINT_FORMAT)
    throw new CheckpointError(`${dir}/state.json: field format is ${JSON.stringify(state?.format)}, expected "${FORECAST_CHECKPOINT_FORMAT}" (not a train-forecast run)`);
  if (!Number.isSafeInteger(state.step) || state.step < 0) throw new CheckpointError(`${dir}/state.json: field step must be a non-negative integer`);
  state.config = parseForecastRunConfig(state.config, `${dir}/state.json field config`);
  const model: StateDict = new Map();
  for (const [n, t] of readSafetensorsSync(path.join(dir, 'model.safetensors')).tensors) model.set(n, { data: t.data as Float32Array, shape: t.shape });
  const o = readSafetensorsSync(path.join(dir, 'optimizer.safetensors')).tensors;
  const m: Float32Array[] = [];
  const v: Float32Array[] = [];
  for (let i = 0; o.has(`m.${i}`); i++) {
    const vi = o.get(`v.${i}`);
    if (!vi) throw new CheckpointError(`${dir}/optimizer.safetensors: moment v.${i} missing`);
    m.push(o.get(`m.${i}`)!.data as Float32Array);
    v.push(vi.data as Float32Array);
  }
  return { state, model, optimizer: { step: state.optimizerStep, m, v } };
}

/** Train a Time-MoE forecaster and evaluate it against the baselines; returns the results (also in outDir/results.json). */
export function trainForecast(opts: ForecastTrainOptions): { results: ForecastResults; model: TimeMoE; series: Series } {
  const resumeFrom = opts.resume ? loadForecastCheckpoint(opts.outDir) : null;
  let cfg: ForecastRunConfig;
  if (resumeFrom) {
    const saved = resumeFrom.state.config;
    cfg = saved;
    if (opts.config) {
      // only the length may change on resume: everything else is the run's own
      const diff = [
        ...configDiff(saved.model as unknown as Record<string, unknown>, opts.config.model as unknown as Record<string, unknown>),
        ...configDiff(saved.forecast as unknown as Record<string, unknown>, opts.config.forecast as unknown as Record<string, unknown>).map((f) => `forecast.${f}`),
        ...configDiff(saved.data as unknown as Record<string, unknown>, opts.config.data as unknown as Record<string, unknown>).map((f) => `data.${f}`),
        ...configDiff({ ...saved.training, steps: 0 } as unknown as Record<string, unknown>, { ...opts.config.training, steps: 0 } as unknown as Record<string, unknown>).map((f) => `training.${f}`),
      ];
      if (diff.length) throw new CheckpointError(`--resume: the run in ${opts.outDir} was trained with a different config: ${diff.join(', ')} (only training.steps can change on resume)`);
      cfg = { ...saved, training: { ...saved.training, steps: opts.config.training.steps } };
    }
    if (resumeFrom.state.step >= cfg.training.steps)
      throw new RunFinishedError(
        `the forecast run in ${opts.outDir} is already at step ${resumeFrom.state.step} of ${cfg.training.steps}; to train longer, resume with --steps N (N > ${resumeFrom.state.step})`,
      );
  } else {
    if (!opts.config) throw new Error('trainForecast: config is required for a new run');
    cfg = opts.config;
  }
  const tr = cfg.training;
  const fc = cfg.forecast;
  const series = opts.series ?? loadSeries(cfg.data.series, { column: cfg.data.column, dateColumn: cfg.data.date_column });
  const values = series.values;
  const split = splitByTime(values.length, tr.val_fraction);
  const L = tr.seq_len;
  const period = fc.seasonal_period ?? series.period ?? null;
  const model = new TimeMoE(cfg.model, fc.horizons, tr.seed);
  const sampler = new WindowSampler(values, split, L, fc.horizons, new Rng(tr.seed ^ 0x5eed));
  if (values.length - Math.max(split, L) < Math.max(fc.eval_horizon, model.maxHorizon))
    throw new SeriesError(
      `forecast: the validation part (${values.length - split} values) is shorter than eval_horizon ${fc.eval_horizon} or the longest head ${model.maxHorizon}; lower them or raise training.val_fraction`,
    );

  const out = opts.outDir;
  fs.mkdirSync(out, { recursive: true });
  if (!resumeFrom) {
    const existing = FORECAST_RUN_FILES.filter((f) => fs.existsSync(path.join(out, f)));
    if (existing.length && !opts.overwrite) throw new ConfigError(`${out} already holds a forecast run: ${existing.join(', ')}. Continue it with --resume, or replace it with --overwrite`);
    for (const f of existing) fs.rmSync(path.join(out, f), { recursive: true, force: true });
  } else {
    truncateLog(path.join(out, 'log.jsonl'), resumeFrom.state.step);
  }
  writeJsonAtomicSync(path.join(out, 'config.json'), cfg);
  const log = fs.openSync(path.join(out, 'log.jsonl'), 'a');

  const params = model.parameters();
  const noDecay = new Set<Parameter>(
    model
      .namedParameters()
      .filter(([n, p]) => p.ndim < 2 || n.endsWith('norm.weight'))
      .map(([, p]) => p),
  );
  const opt = new AdamW(params, { lr: tr.lr, beta1: tr.beta1, beta2: tr.beta2, weightDecay: tr.weight_decay, noDecay });
  const rng = new Rng(tr.seed ^ 0x7173);
  let history: { step: number; valLoss: number }[] = [];
  let trainCurve: ForecastResults['trainCurve'] = [];
  let tps: number[] = [];
  let start = 0;
  if (resumeFrom) {
    const st = resumeFrom.state;
    model.loadStateDict(resumeFrom.model);
    opt.setState(resumeFrom.optimizer);
    sampler.rng.setState(st.samplerRng);
    rng.setState(st.rng);
    history = [...st.history];
    trainCurve = [...st.trainCurve];
    tps = [...st.tokensPerSec];
    start = st.step;
  }
  let savedStep = resumeFrom ? start : -1;
  const save = (step: number): void => {
    if (savedStep === step) return;
    saveForecastCheckpoint(
      out,
      {
        format: FORECAST_CHECKPOINT_FORMAT,
        version: 1,
        step,
        config: cfg,
        optimizerStep: opt.stepCount,
        samplerRng: sampler.rng.getState(),
        rng: rng.getState(),
        history,
        trainCurve,
        tokensPerSec: tps,
      },
      model.stateDict(),
      opt.getState(),
    );
    savedStep = step;
  };
  const runEval = (step: number): number => {
    const valLoss = validationLoss(model, values, split, L, fc.huber_delta);
    history.push({ step, valLoss });
    appendLine(log, { type: 'eval', step, loss: valLoss });
    opts.events?.onEval?.({ step, valLoss });
    return valLoss;
  };
  try {
    model.train();
    for (let step = start; step < tr.steps; step++) {
      if (opts.signal?.aborted) {
        save(step);
        throw new TrainingInterruptedError(`interrupted at step ${step} of ${tr.steps}; checkpoint saved in ${out}. Continue with: moe-ts train-forecast --out ${out} --resume`, step, out);
      }
      const t0 = performance.now();
      const lr = lrAt(cfg, step);
      opt.lr = lr;
      const batch = sampler.batch(tr.batch_size);
      const res = model.forward(batch.inputs, tr.batch_size, L, { training: true, step, totalSteps: tr.steps, rng });
      const { loss, huber, auxLosses } = timeMoELoss(res, batch.targets, fc.huber_delta);
      const lv = loss.item();
      if (!Number.isFinite(lv)) throw new TrainingDivergedError(`forecast training diverged: loss is ${lv} at step ${step + 1}; lower the learning rate (${tr.lr})`);
      loss.backward();
      const gradNorm = clipGradNorm(params, tr.grad_clip);
      if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(`forecast training diverged: gradient norm is ${gradNorm} at step ${step + 1}`);
      opt.step();
      opt.zeroGrad();
      model.afterStep();
      const dt = (performance.now() - t0) / 1000;
      const rec: ForecastStep = {
        step: step + 1,
        loss: lv,
        huber: huber.item(),
        aux: auxLosses,
        lr,
        gradNorm,
        tokensPerSec: (tr.batch_size * L) / dt,
        loadCV: meanOf(res.aux.map((a) => a.aux.metrics.loadCV)),
      };
      tps.push(rec.tokensPerSec);
      trainCurve.push({ step: rec.step, loss: rec.loss, huber: rec.huber });
      if (rec.step % tr.log_interval === 0 || rec.step === tr.steps) appendLine(log, { type: 'step', ...rec });
      opts.events?.onStep?.(rec);
      if (rec.step % tr.eval_interval === 0 && rec.step !== tr.steps) runEval(rec.step);
      if (rec.step % tr.save_interval === 0 || rec.step === tr.steps) save(rec.step);
    }
  } finally {
    fs.closeSync(log);
  }
  const logFd = fs.openSync(path.join(out, 'log.jsonl'), 'a');
  let valLoss: number;
  try {
    valLoss = (() => {
      const v = validationLoss(model, values, split, L, fc.huber_delta);
      history.push({ step: tr.steps, valLoss: v });
      appendLine(logFd, { type: 'eval', step: tr.steps, loss: v });
      return v;
    })();
  } finally {
    fs.closeSync(logFd);
  }
  opts.events?.onEval?.({ step: tr.steps, valLoss });
  const ev = evaluateForecast(model, values, split, L, fc.eval_horizon, period);
  const plot = forecastPlot(model, series, split, L, Math.min(values.length - split, 3 * fc.eval_horizon), period);
  const tensors = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) tensors.set(name, { dtype: 'float32', shape: [...t.shape], data: t.data });
  writeSafetensorsSync(path.join(out, 'model.safetensors'), tensors, { format: 'moe-ts-time-moe', horizons: JSON.stringify(fc.horizons) });
  const sortedTps = [...tps].sort((a, b) => a - b);
  const results: ForecastResults = {
    kind: 'forecast',
    paper: 'Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts (Shi et al., 2024)',
    series: {
      name: series.name,
      column: series.column,
      length: values.length,
      split,
      period,
      firstDate: series.dates?.[0] ?? null,
      splitDate: series.dates?.[split] ?? null,
      lastDate: series.dates?.[values.length - 1] ?? null,
    },
    steps: tr.steps,
    params: model.numParameters(),
    activeParams: model.activeParameters(),
    tokensPerSec: sortedTps.length ? sortedTps[Math.floor(sortedTps.length / 2)] : 0,
    horizons: [...fc.horizons],
    seqLen: L,
    history,
    trainCurve,
    final: { valLoss, eval: ev },
    plot,
  };
  writeJsonAtomicSync(path.join(out, 'results.json'), results);
  return { results, model, series };
}

/** The forecast drawn in the report: `horizon` steps from `origin`, with up to 2 * seqLen steps of context shown. */
export function forecastPlot(model: TimeMoE, series: Series, origin: number, seqLen: number, horizon: number, period: number | null): ForecastPlot {
  const v = series.values;
  const [pred] = forecast(model, [v.subarray(origin - seqLen, origin)], horizon);
  const b = baselineForecasts(v, origin, horizon, period);
  const shown = Math.min(origin, 2 * seqLen);
  const rounds: number[] = [];
  let left = horizon;
  for (const j of headSchedule(model.horizons, horizon)) {
    rounds.push(Math.min(model.horizons[j], left));
    left -= model.horizons[j];
  }
  return {
    origin,
    context: Array.from(v.subarray(origin - shown, origin)),
    truth: Array.from(v.subarray(origin, origin + horizon)),
    model: Array.from(pred),
    naive: Array.from(b.naive),
    seasonalNaive: b.seasonal ? Array.from(b.seasonal) : null,
    dates: series.dates ? series.dates.slice(origin - shown, origin + horizon) : null,
    rounds,
  };
}
