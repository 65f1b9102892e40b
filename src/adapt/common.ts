/**
 * Shared plumbing of the model-adaptation commands (upcycle, ...): load a model from any path the
 * CLI accepts, measure it on the embedded validation data, save it as a moe-ts run directory, and
 * write the before/after table (Markdown + JSON) next to the output.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseRunConfig, ConfigError, type RunConfig } from '../models/config.js';
import { asTransformer, type MoETransformerLM } from '../models/transformer.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { buildDataset } from '../data/build.js';
import type { MixedDataset } from '../data/dataset.js';
import { saveCheckpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION } from '../io/checkpoint.js';
import { writeFileAtomicSync, writeJsonAtomicSync } from '../io/atomic.js';
import { fromPretrainedWithTokenizer } from '../io/hf/pretrained.js';
import { loadModelForInference } from '../infer/generate.js';
import { evaluate } from '../train/evaluate.js';
import { existingRunFiles } from '../train/run-dir.js';

/** The embedded corpora every adaptation table reports on (one row block per domain). */
export const ADAPT_DOMAINS = ['shakespeare', 'wikitext', 'linux'];

/** A model with its tokenizer and run config, from wherever it came. */
export interface LoadedModel {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  config: RunConfig;
  /** The path it was loaded from. */
  source: string;
}

/** Load a moe-ts run/checkpoint directory, a .gguf file or a Hugging Face model directory. */
export function loadAnyModel(p: string): LoadedModel {
  if (!fs.existsSync(p)) throw new ConfigError(`model ${p}: no such file or directory`);
  const isHf = fs.statSync(p).isDirectory() && !fs.existsSync(path.join(p, 'latest.json')) && !fs.existsSync(path.join(p, 'state.json'));
  if (isHf) {
    const m = fromPretrainedWithTokenizer(p);
    const config = parseRunConfig({ model: m.config, training: { seq_len: Math.min(128, m.config.max_position_embeddings) } });
    return { model: m.model, tokenizer: m.tokenizer, config, source: p };
  }
  const m = loadModelForInference(p);
  return { model: asTransformer(m.model, 'adapt', `model ${p}`), tokenizer: m.tokenizer, config: m.config, source: p };
}

/** Measurement options: which corpora, how many validation batches, the window length. */
export interface MeasureOptions {
  sources?: string[];
  batches?: number;
  seqLen?: number;
  batchSize?: number;
  dataDir?: string;
}

/** One model's row block of a before/after table. */
export interface ModelMeasure {
  label: string;
  /** Token-weighted validation loss over all domains. */
  loss: number;
  domains: { domain: string; loss: number; tokens: number }[];
  params: number;
  /** Parameters a token uses (shared weights + top-k experts). */
  activeParams: number;
  /** Validation tokens per second of the forward passes (this machine, one measurement). */
  tokensPerSec: number;
}

/** The dataset of `sources` (default: the embedded corpora) in `model`'s tokenizer, windows fitting its positions. */
export function adaptDataset(lm: { model: MoETransformerLM; tokenizer: Tokenizer; config: RunConfig }, o: MeasureOptions = {}): { data: MixedDataset; cfg: RunConfig } {
  const sources = o.sources ?? ADAPT_DOMAINS;
  const seq = Math.min(o.seqLen ?? lm.config.training.seq_len, lm.model.config.max_position_embeddings);
  const cfg = parseRunConfig({
    ...lm.config,
    model: lm.model.config,
    data: { ...lm.config.data, sources, weights: undefined },
    training: { ...lm.config.training, seq_len: seq, batch_size: o.batchSize ?? lm.config.training.batch_size, eval_batches: o.batches ?? lm.config.training.eval_batches },
  });
  const texts = sources.map((s) => loadCorpusSplits(s, { dataDir: o.dataDir }));
  return { data: buildDataset(cfg, lm.tokenizer, texts), cfg };
}

/** Loss per domain, parameter counts and forward throughput of one model. */
export function measureModel(label: string, model: MoETransformerLM, data: MixedDataset, batches: number): ModelMeasure {
  const t0 = performance.now();
  const r = evaluate(model, data, { maxBatches: batches });
  const secs = (performance.now() - t0) / 1000;
  const tokens = r.domains.reduce((s, d) => s + d.tokens, 0);
  return {
    label,
    loss: r.loss,
    domains: r.domains.map((d) => ({ domain: d.domain, loss: d.loss, tokens: d.tokens })),
    params: model.numParameters(),
    activeParams: model.activeParameters(),
    tokensPerSec: tokens / Math.max(secs, 1e-9),
  };
}

/** Calibration windows of token ids: the first `perDomain` training windows of each domain. */
export function calibrationWindows(data: MixedDataset, perDomain: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (const name of data.domainNames) {
    const toks = data.trainTokens(name);
    for (let i = 0; i < perDomain && (i + 1) * data.seqLen <= toks.length; i++) out.push(toks.slice(i * data.seqLen, (i + 1) * data.seqLen));
  }
  return out;
}

/** A before/after report: what was done, the measured models, free-form extra fields. */
export interface AdaptReport {
  command: string;
  /** One-line description of the transform and its settings. */
  summary: string;
  rows: ModelMeasure[];
  /** Extra table columns (one value per row), after the loss columns. */
  columns?: { head: string; values: string[] }[];
  [extra: string]: unknown;
}

/** The report's Markdown table: loss per domain, total loss, parameters, active parameters, tokens/s. */
export function formatAdaptTable(r: AdaptReport): string {
  const domains = r.rows[0]?.domains.map((d) => d.domain) ?? [];
  const extra = r.columns ?? [];
  const head = ['model', ...domains.map((d) => `loss ${d}`), 'loss (all)', ...extra.map((c) => c.head), 'params', 'active params', 'tokens/s'];
  const lines = [`# moe-ts ${r.command}`, '', r.summary, '', `| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const [i, m] of r.rows.entries()) {
    const cells = [
      m.label,
      ...domains.map((d) => (m.domains.find((x) => x.domain === d)?.loss ?? NaN).toFixed(4)),
      m.loss.toFixed(4),
      ...extra.map((c) => c.values[i] ?? ''),
      m.params.toLocaleString('en-US'),
      m.activeParams.toLocaleString('en-US'),
      Math.round(m.tokensPerSec).toLocaleString('en-US'),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  lines.push('', 'Loss: mean cross-entropy (nats/token) on each corpus’s validation split; tokens/s: forward passes of that evaluation on this machine.');
  return lines.join('\n') + '\n';
}

/** Write `<dir>/<name>.md` and `<dir>/<name>.json` atomically; returns both paths. */
export function writeAdaptReport(dir: string, name: string, r: AdaptReport): { md: string; json: string } {
  fs.mkdirSync(dir, { recursive: true });
  const md = path.join(dir, `${name}.md`);
  const json = path.join(dir, `${name}.json`);
  writeFileAtomicSync(md, formatAdaptTable(r));
  writeJsonAtomicSync(json, r);
  return { md, json };
}

/** Refuse to write into a directory that already holds a run, unless overwrite. */
export function prepareOutDir(dir: string, overwrite: boolean): void {
  const existing = fs.existsSync(dir) ? existingRunFiles(dir) : [];
  if (existing.length > 0 && !overwrite) throw new ConfigError(`${dir} already holds a run (${existing.join(', ')}); pass --overwrite to replace it`);
  if (existing.length > 0) for (const f of existing) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
}

/** Save a model as a moe-ts run directory (step 0, fresh optimizer) that eval/generate/chat/train --model read. */
export function saveModelRun(dir: string, model: MoETransformerLM, tokenizer: Tokenizer, base: RunConfig): string {
  const config = parseRunConfig({ ...base, model: model.config });
  writeJsonAtomicSync(path.join(dir, 'config.json'), config);
  return saveCheckpoint(dir, {
    state: {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: 0,
      config,
      tokenizer: tokenizer.toJSON(),
      optimizerStep: 0,
      dataState: { rng: [1, 2, 3, 4], step: 0 },
      rngState: [1, 2, 3, 4],
    },
    model: model.stateDict(),
    optimizer: { step: 0, m: [], v: [] },
  });
}
