/**
 * LibMoE-style router benchmark: train the same base model once per router (plus the FLOP-matched
 * dense baseline) on the same multi-domain data, seed, token budget and active FLOPs per token,
 * then write results.json and a self-contained report.html.
 *
 * Resumable per router: each model trains in <out>/runs/<name>/; a finished model's record
 * (<out>/runs/<name>/bench.json, written atomically) is reused on rerun, and an interrupted
 * model continues from its latest checkpoint. Every run directory carries a fingerprint of its
 * full config so results of a different configuration are never mixed in silently.
 *
 * Repeated seeds (seeds > 1): every model trains once per seed (seed, seed+1, ...). The first seed
 * keeps the single-seed folder <out>/runs/<name>/ (so a single-seed benchmark extends to several
 * seeds without retraining), each further seed s trains in <out>/runs/<name>/seed-<s>/, with its
 * own checkpoints, record and fingerprint. The report shows means over seeds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { train, TrainingDivergedError, type StepMetrics } from '../train/trainer.js';
import { buildDataset, buildTokenizer, sourceName } from '../data/build.js';
import { parseRunConfig, matchedDenseConfig, formatZodError, ConfigError, TRAIN_DEFAULT_MODEL, type RunConfig } from '../models/config.js';
import { z } from '../tensor/validate.js';
import { buildModel } from '../models/build.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { readJsonFileSync, FILE_LIMITS } from '../data/files.js';
import { routerRegistry } from '../moe/routers/index.js';
import { writeFileAtomicSync, writeJsonAtomicSync } from '../io/atomic.js';
import { aggregateIntervals, unigramBaseline, type StepSample, type UnigramBaseline } from './metrics.js';
import { analyseRuns } from './summary.js';
import { mergeSeedRuns } from './seeds.js';
import { renderReport } from './report/html.js';
import { BENCH_FORMAT, BENCH_VERSION, type BenchResults, type CurveRecord, type RunRecord } from './types.js';

export const DENSE_NAME = 'dense';
const RECORD_FILE = 'bench.json';
const FINGERPRINT_FILE = 'bench-fingerprint.txt';

/**
 * The default benchmark: the `moe-ts train` default model (TRAIN_DEFAULT_MODEL: 8 routed experts
 * of width 128 at top-1 with raw weights, plus one shared expert of 128, hidden 64, 2 layers), so
 * the ranking is about the model a new user trains; each router reads k = 1 with its own
 * semantics (a k-free router ignores it) and the dense baseline is 256 wide (k + shared experts).
 * Small enough that every registered router plus the dense baseline trains in the 30-minute
 * default run on 2 CPU cores (see defaultSteps), large enough that the routers separate (three domains).
 */
export const DEFAULT_PRESET = {
  model: {
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    max_position_embeddings: 64,
    num_local_experts: 8,
    moe_intermediate_size: 128,
    intermediate_size: 256,
    router_type: 'topk',
    ...TRAIN_DEFAULT_MODEL,
  },
  // batch 8: Soft MoE's FLOP-matched slot count grows with the batch, and its dispatch cost with its square
  training: { steps: 300, batch_size: 8, seq_len: 64, lr: 3e-3, warmup_steps: 30, eval_interval: 25, eval_batches: 4, save_interval: 50, log_interval: 1, seed: 1234 },
  data: { sources: ['shakespeare', 'wikitext', 'linux'], tokenizer: { type: 'byte' } },
};

/** --quick: a smoke-sized run of every router (the whole benchmark in well under 3 minutes). */
export const QUICK_PRESET = {
  model: {
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    max_position_embeddings: 32,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 32,
    intermediate_size: 64,
    router_type: 'topk',
  },
  training: { steps: 80, batch_size: 8, seq_len: 32, lr: 3e-3, warmup_steps: 8, eval_interval: 10, eval_batches: 2, save_interval: 40, log_interval: 1, seed: 1234 },
  data: { sources: ['shakespeare', 'wikitext', 'linux'], tokenizer: { type: 'byte' } },
};

/** Validation points per curve when the step count is overridden and the interval is not given. */
const CURVE_POINTS = 12;

export interface BenchConfigInput {
  quick?: boolean;
  /** Parsed JSON of a --config file: the usual model/training/data sections (each optional), plus an optional "bench" section. */
  file?: { value: unknown; path: string };
  steps?: number;
  data?: string[];
  seed?: number;
}

export interface BenchConfig {
  config: RunConfig;
  /** Per-router options ("bench": { "router_options": { "<router>": { ... } } } in the config file). */
  routerOptions: Record<string, Record<string, unknown>>;
}

const section = z.record(z.string(), z.unknown());
/** A --config file: the run config's sections (validated as a RunConfig after merging with the preset) and the bench section. */
const BenchFileSchema = z.looseObject({
  model: section.optional(),
  training: section.optional(),
  data: section.optional(),
  bench: z
    .object({
      /** Per-router options: "<router>": { ... } (each validated by that router's schema when planned). */
      router_options: z.record(z.string(), section).optional(),
    })
    .strict()
    .optional(),
});

/** The preset, overridden field by field by the config file, then by the flags. */
export function buildBenchConfig(input: BenchConfigInput): BenchConfig {
  const preset = input.quick ? QUICK_PRESET : DEFAULT_PRESET;
  const where = input.file ? `config ${input.file.path}` : 'bench-routers preset';
  const raw = input.file?.value ?? {};
  const file = BenchFileSchema.safeParse(raw);
  if (!file.success) throw new ConfigError(formatZodError(file.error, where, raw, BenchFileSchema));
  const { bench, ...sections } = file.data;
  const section = (name: 'model' | 'training' | 'data'): Record<string, unknown> => sections[name] ?? {};
  const userTraining = section('training');
  const merged: { model: Record<string, unknown>; training: Record<string, unknown>; data: Record<string, unknown>; [k: string]: unknown } = {
    ...sections,
    model: { ...preset.model, ...section('model') },
    training: { ...preset.training, ...userTraining },
    data: { ...preset.data, ...section('data') },
  };
  if (input.data) merged.data = { ...merged.data, sources: input.data, weights: undefined };
  if (input.seed !== undefined) merged.training.seed = input.seed;
  if (input.steps !== undefined) {
    merged.training.steps = input.steps;
    // keep a readable curve and a proportionate warmup unless the config file fixed them
    if (userTraining.eval_interval === undefined) merged.training.eval_interval = Math.max(1, Math.round(input.steps / CURVE_POINTS));
    if (userTraining.warmup_steps === undefined) merged.training.warmup_steps = Math.min(preset.training.warmup_steps, Math.floor(input.steps / 10));
    if (userTraining.save_interval === undefined) merged.training.save_interval = Math.max(1, Math.ceil(input.steps / 3));
  }
  const config = parseRunConfig(merged, where);
  const routerOptions: Record<string, Record<string, unknown>> = { ...(bench?.router_options ?? {}) };
  return { config, routerOptions };
}

export interface BenchRoutersOptions {
  config: RunConfig;
  /** Routers to compare (default: every registered router). The dense baseline is always added. */
  routers?: string[];
  routerOptions?: Record<string, Record<string, unknown>>;
  outDir: string;
  dataDir?: string;
  /** Label of the kernel backend, for the report. */
  backend?: string;
  /** One line per event (router start/finish/skip). */
  log?: (line: string) => void;
  /** Train every model with this many seeds: config seed, seed + 1, ... (default 1). */
  seeds?: number;
  /** Called before a model starts training (tests use it to simulate a crash mid-benchmark). */
  beforeRun?: (name: string, seed: number) => void;
}

export interface BenchRoutersResult {
  results: BenchResults;
  resultsPath: string;
  reportPath: string;
  /** Models reused from an earlier invocation. */
  skipped: string[];
}

export interface Plan {
  name: string;
  kind: 'moe' | 'dense';
  description: string;
  config: RunConfig;
  fingerprint: string;
}

/** Time budget of the whole default benchmark (every registered router + dense, all seeds) on 2 cores. */
export const DEFAULT_BUDGET_SECONDS = 30 * 60;

/**
 * CPU seconds per training step (its share of evaluations and checkpoints included) of one model
 * of the default preset, by kind, measured with process.cpuUsage() over 50-step runs (see
 * docs/bench-routers.md, "Default seeds"): dense 0.058, topk 0.138, speechmoe 0.182, smoe-dropout
 * 0.186, dynmoe 0.274 (variable experts per token), mixture-of-tokens 0.302 (soft routing pays its
 * [tokens x slots] dispatch and combine matmuls; Soft MoE more). Used as wall seconds on 2 cores:
 * conservative, as if the second core added nothing.
 */
export const STEP_SECONDS = { dense: 0.06, sparse: 0.15, variable: 0.28, soft: 0.45 } as const;

/** Estimated seconds to train every plan once (one seed) on 2 cores, scaled from the default preset by tokens per step and FFN width. */
export function estimateSeedSeconds(plans: readonly Plan[]): number {
  const d = DEFAULT_PRESET;
  let total = 0;
  for (const p of plans) {
    const m = p.config.model;
    const tr = p.config.training;
    const tokens = (tr.batch_size * tr.seq_len) / (d.training.batch_size * d.training.seq_len);
    const width = (m.hidden_size * m.num_hidden_layers) / (d.model.hidden_size * d.model.num_hidden_layers);
    const t = routerRegistry.find(m.router_type)?.traits;
    const kind = p.kind === 'dense' ? 'dense' : t?.routing === 'soft' ? 'soft' : t?.expertsPerToken === 'variable' ? 'variable' : 'sparse';
    total += tr.steps * STEP_SECONDS[kind] * tokens * width;
  }
  return total;
}

/** Seeds of the default run: two, the fewest that give every router a mean and an interval. */
export const DEFAULT_SEEDS = 2;

/**
 * Steps of the default run: the preset's, or fewer (a multiple of 25, at least 50) so that
 * DEFAULT_SEEDS seeds of every planned model fit the budget by estimateSeedSeconds.
 */
export function defaultSteps(plans: readonly Plan[], budgetSeconds = DEFAULT_BUDGET_SECONDS, seeds = DEFAULT_SEEDS): number {
  const steps = plans[0]?.config.training.steps ?? DEFAULT_PRESET.training.steps;
  const perStep = estimateSeedSeconds(plans) / steps;
  const fit = Math.floor(budgetSeconds / (seeds * Math.max(perStep, 1e-9)) / 25) * 25;
  return Math.max(50, Math.min(steps, fit));
}

/** The seeds of a benchmark: the config's seed and the next n - 1. */
export function seedList(config: RunConfig, n = 1): number[] {
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`bench-routers: --seeds must be an integer >= 1, got ${n}`);
  return Array.from({ length: n }, (_, i) => config.training.seed + i);
}

/** The run folder of one (model, seed): the first seed keeps the single-seed layout runs/<name>/. */
export function runDirOf(runsDir: string, name: string, seed: number, seeds: readonly number[]): string {
  return seed === seeds[0] ? path.join(runsDir, name) : path.join(runsDir, name, `seed-${seed}`);
}

/** The plan of one model for another seed (same model, data and schedule; own fingerprint). */
export function planForSeed(p: Plan, seed: number): Plan {
  if (seed === p.config.training.seed) return p;
  const config: RunConfig = { ...p.config, training: { ...p.config.training, seed } };
  return { ...p, config, fingerprint: fingerprintOf(config) };
}

function fingerprintOf(cfg: RunConfig): string {
  return createHash('sha256')
    .update(JSON.stringify({ model: cfg.model, training: cfg.training, data: cfg.data }))
    .digest('hex')
    .slice(0, 16);
}

/** Validate everything (router names, options, data) before any training starts. */
export function planBenchmark(o: Pick<BenchRoutersOptions, 'config' | 'routers' | 'routerOptions' | 'dataDir'>): Plan[] {
  const base = o.config;
  if (base.model.num_local_experts === 0) throw new ConfigError('bench-routers: model.num_local_experts is 0 (a dense model); the benchmark compares MoE routers');
  const registered = routerRegistry.names();
  const names = o.routers?.length ? o.routers : registered;
  const seen = new Set<string>();
  for (const n of names) {
    if (n === DENSE_NAME) continue;
    if (!routerRegistry.has(n)) throw new ConfigError(`bench-routers: unknown router "${n}" (registered: ${registered.join(', ')})`);
    if (seen.has(n)) throw new ConfigError(`bench-routers: router "${n}" is listed twice`);
    seen.add(n);
  }
  for (const n of Object.keys(o.routerOptions ?? {})) {
    if (!routerRegistry.has(n)) throw new ConfigError(`bench-routers: bench.router_options names unknown router "${n}" (registered: ${registered.join(', ')})`);
  }
  // data problems (a missing corpus) surface now, not after the first models trained
  for (const s of base.data.sources) loadCorpusSplits(s, { dataDir: o.dataDir });
  const descriptions = new Map(routerRegistry.describe().map((d) => [d.name, d.description]));
  const denseModel = matchedDenseConfig(base.model);
  const plans: Plan[] = [];
  const denseCfg = parseRunConfig({ ...base, model: denseModel }, 'dense baseline config');
  plans.push({
    name: DENSE_NAME,
    kind: 'dense',
    description: `dense FFN of width ${denseModel.intermediate_size} = active width of ${base.model.num_experts_per_tok} experts (FLOP-matched)`,
    config: denseCfg,
    fingerprint: fingerprintOf(denseCfg),
  });
  for (const name of names) {
    if (name === DENSE_NAME) continue;
    // the base config's router_options belong to its own router_type; others get theirs from bench.router_options
    const opts: Record<string, unknown> = { ...(name === base.model.router_type ? base.model.router_options : {}), ...(o.routerOptions?.[name] ?? {}) };
    let description = descriptions.get(name) ?? '';
    const fm = routerRegistry.spec(name).traits.flopMatch?.({
      batchTokens: base.training.batch_size * base.training.seq_len,
      topK: base.model.num_experts_per_tok,
      numExperts: base.model.num_local_experts,
    });
    // the spec's FLOP-matching options, unless the user set any of them
    if (fm && Object.keys(fm.options).every((k) => opts[k] === undefined)) {
      Object.assign(opts, fm.options);
      description += ` [${fm.note}]`;
    }
    const cfg = parseRunConfig({ ...base, model: { ...base.model, router_type: name, router_options: opts } }, `config for router "${name}"`);
    try {
      // building the model runs the router's own option validation
      buildModel(cfg.model, cfg.training.seed);
    } catch (e) {
      throw new ConfigError(`bench-routers: router "${name}" cannot be built with this config: ${(e as Error).message}`);
    }
    plans.push({ name, kind: 'moe', description, config: cfg, fingerprint: fingerprintOf(cfg) });
  }
  return plans;
}

function readJson<T>(file: string): T | null {
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null; // a torn write cannot happen (atomic), but a hand-edited file should not crash the rerun
  }
}

/** Step metrics and eval points recorded in a run's log.jsonl (what a resumed or diverged run already did). */
function readLog(file: string): { steps: StepSample[]; evals: { step: number; loss: number; domains: { domain: string; loss: number }[] }[] } {
  const steps: StepSample[] = [];
  const evals: { step: number; loss: number; domains: { domain: string; loss: number }[] }[] = [];
  if (!fs.existsSync(file)) return { steps, evals };
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const o = JSON.parse(line);
      if (o.type === 'step') steps.push(o as StepSample);
      else if (o.type === 'eval') evals.push(o);
    } catch {
      // a line cut by a crash: ignore it
    }
  }
  return { steps, evals };
}

function toSample(m: StepMetrics): StepSample {
  return { step: m.step, loss: m.loss, tokensPerSec: m.tokensPerSec, loadCV: m.loadCV, droppedFraction: m.droppedFraction, routerEntropy: m.routerEntropy, expertsPerToken: m.expertsPerToken };
}

function domainMap(ds: { domain: string; loss: number }[]): Record<string, number> {
  return Object.fromEntries(ds.map((d) => [d.domain, d.loss]));
}

async function runOne(plan: Plan, runDir: string, o: BenchRoutersOptions): Promise<RunRecord> {
  const cfg = plan.config;
  const tokensPerStep = cfg.training.batch_size * cfg.training.seq_len;
  const fpFile = path.join(runDir, FINGERPRINT_FILE);
  const resume = fs.existsSync(path.join(runDir, 'latest.json'));
  fs.mkdirSync(runDir, { recursive: true });
  writeFileAtomicSync(fpFile, plan.fingerprint + '\n');
  const samples: StepSample[] = [];
  let startStep = 0;
  const t0 = performance.now();
  const base = {
    name: plan.name,
    kind: plan.kind,
    description: plan.description,
    fingerprint: plan.fingerprint,
    model: cfg.model as unknown as Record<string, unknown>,
    tokensPerStep,
  };
  try {
    const res = await train({
      config: cfg,
      outDir: runDir,
      resume,
      // a run killed before its first checkpoint left only a log: start it again
      overwrite: !resume,
      dataDir: o.dataDir,
      events: {
        onStart: (i) => {
          startStep = i.startStep;
        },
        onStep: (m) => samples.push(toSample(m)),
      },
    });
    // steps trained before an interruption come from the run's own log
    const earlier = startStep > 0 ? readLog(path.join(runDir, 'log.jsonl')).steps.filter((s) => s.step <= startStep) : [];
    const all = [...earlier, ...samples];
    const curve: CurveRecord[] = res.history.map((h) => ({ step: h.step, tokens: h.tokensSeen, loss: h.result.loss, domains: domainMap(h.result.domains) }));
    const fe = res.finalEval;
    return {
      ...base,
      status: 'done',
      params: res.params,
      activeParams: res.activeParams,
      steps: res.steps,
      tokens: res.steps * tokensPerStep,
      tokensPerSec: res.tokensPerSec,
      wallSeconds: (performance.now() - t0) / 1000,
      curve,
      final: { loss: fe.loss, perplexity: fe.perplexity, domains: fe.domains, routing: fe.routing, expertUsage: fe.expertUsage, moeLayers: fe.moeLayers },
      intervals: aggregateIntervals(
        all,
        curve.map((c) => c.step),
        tokensPerStep,
      ),
    };
  } catch (e) {
    if (!(e instanceof TrainingDivergedError)) throw e;
    // a diverged router is a result too (it is deterministic, so retrying would not help)
    const log = readLog(path.join(runDir, 'log.jsonl'));
    const model = buildModel(cfg.model, cfg.training.seed);
    return {
      ...base,
      status: 'diverged',
      error: e.message,
      params: model.numParameters(),
      activeParams: model.activeParameters(),
      steps: log.steps.length ? log.steps[log.steps.length - 1].step : 0,
      tokens: cfg.training.steps * tokensPerStep,
      tokensPerSec: log.steps.length ? log.steps.reduce((s, x) => s + x.tokensPerSec, 0) / log.steps.length : 0,
      wallSeconds: (performance.now() - t0) / 1000,
      curve: log.evals.map((ev) => ({ step: ev.step, tokens: ev.step * tokensPerStep, loss: ev.loss, domains: domainMap(ev.domains) })),
      final: null,
      intervals: aggregateIntervals(
        log.steps,
        log.evals.map((ev) => ev.step),
        tokensPerStep,
      ),
    };
  }
}

/**
 * The unigram baseline of a config's data: the same tokenizer, training split and validation
 * windows the models see, scored by token frequencies alone.
 */
export function dataBaseline(cfg: RunConfig, dataDir?: string): UnigramBaseline {
  const texts = cfg.data.sources.map((s) => loadCorpusSplits(s, { dataDir }));
  const tok = buildTokenizer(cfg, texts);
  const ds = buildDataset(cfg, tok, texts);
  const val: { domain: string; targets: Int32Array }[] = [];
  for (const name of ds.domainNames) for (const b of ds.valBatches(name)) val.push({ domain: name, targets: b.targets });
  return unigramBaseline(
    ds.domainNames.map((n) => ds.trainTokens(n)),
    val,
    tok.vocabSize,
  );
}

export async function benchRouters(o: BenchRoutersOptions): Promise<BenchRoutersResult> {
  const log = o.log ?? (() => undefined);
  const seeds = seedList(o.config, o.seeds ?? 1);
  const plans = planBenchmark(o);
  const out = o.outDir;
  const runsDir = path.join(out, 'runs');
  // every (model, seed) pair, in training order: all models for the first seed, then the next seed
  const jobs = seeds.flatMap((seed) => plans.map((p) => ({ plan: planForSeed(p, seed), seed, runDir: runDirOf(runsDir, p.name, seed, seeds) })));
  // refuse to mix in results of another configuration before training anything
  for (const j of jobs) {
    const fp = path.join(j.runDir, FINGERPRINT_FILE);
    if (fs.existsSync(fp) && fs.readFileSync(fp, 'utf8').trim() !== j.plan.fingerprint) {
      throw new ConfigError(
        `bench-routers: ${j.runDir} holds a run of a different configuration (fingerprint ${fs.readFileSync(fp, 'utf8').trim()}, now ${j.plan.fingerprint}); use another --out, or delete that folder to retrain it`,
      );
    }
  }
  const tr = o.config.training;
  const tokensPerModel = tr.steps * tr.batch_size * tr.seq_len;
  const domains = o.config.data.sources.map(sourceName);
  log(
    `bench-routers: ${plans.length} models (${plans.length - 1} routers + dense baseline), ${tr.steps} steps x ${tr.batch_size * tr.seq_len} tokens = ${tokensPerModel.toLocaleString('en-US')} tokens each${seeds.length > 1 ? `, ${seeds.length} seeds (${seeds.join(', ')}): ${jobs.length} runs` : ''}, data ${domains.join(' + ')}${o.backend ? `, backend ${o.backend}` : ''}, out ${out}`,
  );
  fs.mkdirSync(runsDir, { recursive: true });
  const multi = seeds.length > 1;
  const records: RunRecord[] = [];
  const finished: string[] = [];
  const skipped: string[] = [];
  for (const [i, { plan: p, seed, runDir }] of jobs.entries()) {
    const label = multi ? `${p.name} seed ${seed}` : p.name;
    const tag = `[${i + 1}/${jobs.length}] ${label}`;
    const recFile = path.join(runDir, RECORD_FILE);
    const prev = readJson<RunRecord>(recFile);
    if (prev && prev.fingerprint === p.fingerprint) {
      records.push(prev);
      finished.push(label);
      skipped.push(label);
      log(`${tag}: skipped, already finished (${prev.status === 'done' ? `val loss ${prev.final!.loss.toFixed(4)}` : prev.status})`);
      continue;
    }
    const resuming = fs.existsSync(path.join(runDir, 'latest.json'));
    log(`${tag}: training${resuming ? ' (resuming from its latest checkpoint)' : ''}...`);
    let rec: RunRecord;
    try {
      o.beforeRun?.(p.name, seed);
      rec = await runOne(p, runDir, o);
    } catch (e) {
      const kept = finished;
      throw new Error(`bench-routers: ${label} failed: ${(e as Error).message}${kept.length ? `. Finished results are kept (${kept.join(', ')}); rerun the same command to continue` : ''}`, {
        cause: e,
      });
    }
    writeJsonAtomicSync(recFile, rec);
    records.push(rec);
    finished.push(label);
    if (rec.status === 'done') {
      log(`${tag}: done in ${rec.wallSeconds.toFixed(1)} s, val loss ${rec.final!.loss.toFixed(4)}, ${Math.round(rec.tokensPerSec)} tokens/s`);
    } else log(`${tag}: ${rec.status} (${rec.error})`);
  }
  // one record per model: the single run, or the means over its seeds (with per-seed values)
  const merged = multi
    ? plans.map((_, m) =>
        mergeSeedRuns(
          seeds.map((_, k) => records[k * plans.length + m]),
          seeds,
        ),
      )
    : records;
  const baseline = dataBaseline(o.config, o.dataDir);
  log(`unigram baseline of the validation data: ${baseline.loss.toFixed(4)} nats/token`);
  const results: BenchResults = {
    format: BENCH_FORMAT,
    version: BENCH_VERSION,
    createdAt: new Date().toISOString(),
    backend: o.backend ?? 'unknown',
    config: o.config as unknown as Record<string, unknown>,
    domains,
    numExperts: o.config.model.num_local_experts,
    topK: o.config.model.num_experts_per_tok,
    seeds,
    baseline,
    runs: merged,
    analysis: analyseRuns(merged, { topK: o.config.model.num_experts_per_tok, baseline }),
  };
  const resultsPath = path.join(out, 'results.json');
  const reportPath = path.join(out, 'report.html');
  writeJsonAtomicSync(resultsPath, results);
  writeFileAtomicSync(reportPath, renderReport(results));
  log(`report: ${reportPath} (raw numbers: ${resultsPath})`);
  return { results, resultsPath, reportPath, skipped };
}

/** The CLI's entry: flags -> config -> benchmark. */
export async function benchRoutersCommand(
  o: { routers?: string; steps?: number; data?: string[]; out?: string; quick?: boolean; config?: string; seed?: number; seeds?: number },
  backend: string,
  log: (line: string) => void,
): Promise<BenchRoutersResult> {
  let file: BenchConfigInput['file'];
  if (o.config) {
    // bounded like every user file: regular files only (a FIFO or /dev/zero is refused, not read), size-limited
    try {
      file = { value: readJsonFileSync(o.config, { what: 'config', maxBytes: FILE_LIMITS.config, object: true }), path: o.config };
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  const { config, routerOptions } = buildBenchConfig({ quick: o.quick, file, steps: o.steps, data: o.data, seed: o.seed });
  const routers = o.routers
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (o.routers !== undefined && !routers?.length) throw new ConfigError('--routers: expected a comma-separated list of router names');
  const out = o.out ?? (o.quick ? 'runs/bench-routers-quick' : 'runs/bench-routers');
  // the default run (no --seeds, --steps, --config, --quick): DEFAULT_SEEDS seeds, and the preset's
  // steps cut so that the estimate stays within the 30-minute budget; other runs default to one seed
  let seeds = o.seeds;
  let cfg = config;
  if (seeds === undefined) {
    if (o.quick || o.config || o.steps !== undefined) seeds = 1;
    else {
      seeds = DEFAULT_SEEDS;
      const steps = defaultSteps(planBenchmark({ config, routers, routerOptions }));
      if (steps !== config.training.steps) cfg = buildBenchConfig({ steps, data: o.data, seed: o.seed }).config;
      const est = estimateSeedSeconds(planBenchmark({ config: cfg, routers, routerOptions }));
      log(
        `bench-routers: default run: ${seeds} seeds x ${cfg.training.steps} steps, estimated ${Math.round((seeds * est) / 60)} min on 2 cores (budget ${DEFAULT_BUDGET_SECONDS / 60} min; --seeds / --steps override)`,
      );
    }
  }
  return benchRouters({ config: cfg, routers, routerOptions, outDir: out, backend, log, seeds });
}
