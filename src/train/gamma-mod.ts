/**
 * γ-MoD conversion (Luo et al., "γ-MoD: Exploring Mixture-of-Depth Adaptation for Multimodal Large
 * Language Models", 2024): measure every layer's ARank (src/models/arank.ts) on calibration text
 * and turn the lowest-ARank layers of a trained model into Mixture-of-Depths layers with γ-MoD's
 * shared 2-way router. `train --model X --gamma-mod` runs it before training the converted model.
 */
import { Rng } from '../tensor/random.js';
import { ConfigError, type RunConfig } from '../models/config.js';
import type { LanguageModel } from '../models/family.js';
import { asTransformer } from '../models/transformer.js';
import { computeARank, lowestARankLayers, ARANK_TOLERANCE, type LayerARank } from '../models/arank.js';
import { loadCorpusSplits } from '../data/corpus.js';
import type { Tokenizer } from '../data/tokenizer/index.js';

/** What `--gamma-mod` converts: how many layers, and the ARank measurement. */
export interface GammaModOptions {
  /** Number of layers to convert (overrides fraction). */
  layers?: number;
  /** Fraction of the layers to convert, rounded, at least 1 (default 0.5). */
  fraction?: number;
  /** Calibration sequences (default 8). */
  samples?: number;
  /** Tokens per calibration sequence (default min(128, the model's positions)). */
  seqLen?: number;
  /** Relative singular-value tolerance of the rank (default ARANK_TOLERANCE). */
  tolerance?: number;
  /** Where the calibration windows start (default 0). */
  seed?: number;
  /** Directory holding the shared corpora (default: discovered). */
  dataDir?: string;
}

/** The conversion's record, written into the run's results.json as `gamma_mod`. */
export interface GammaModReport {
  method: string;
  tolerance: number;
  samples: number;
  seqLen: number;
  sources: string[];
  /** Every layer's ARank (mean rank over heads and samples) and its per-head means. */
  arank: LayerARank[];
  /** The converted layers: the lowest ARank, ascending. */
  layers: number[];
}

/**
 * `samples` windows of `seqLen` tokens from the training split of the run's corpora (round-robin
 * over the sources, each at a seeded random offset).
 */
export function calibrationSequences(cfg: RunConfig, tokenizer: Tokenizer, samples: number, seqLen: number, seed = 0, dataDir?: string): Int32Array[] {
  const ids = cfg.data.sources.map((s) => tokenizer.encode(loadCorpusSplits(s, { dataDir }).train));
  const rng = new Rng(seed ^ 0xa4a4);
  const out: Int32Array[] = [];
  for (let i = 0; i < samples; i++) {
    const src = ids[i % ids.length];
    if (src.length < seqLen) throw new ConfigError(`--gamma-mod: corpus "${cfg.data.sources[i % ids.length]}" has ${src.length} tokens, fewer than the calibration length ${seqLen}`);
    const at = Math.floor(rng.next() * (src.length - seqLen + 1));
    out.push(src.slice(at, at + seqLen));
  }
  return out;
}

/**
 * The ARank of every layer of `model` and the γ-MoD depth config that converts its lowest-ARank
 * layers: `depth` is merged over `base` (the config file's mixture_of_depths, else capacity 0.5)
 * with router "gamma", causal "router" (the keep-probability > 0.5 decides at inference, as γ-MoD)
 * and `layers` the chosen ones.
 */
export function gammaModConversion(
  model: LanguageModel,
  tokenizer: Tokenizer,
  cfg: RunConfig,
  opts: GammaModOptions = {},
  base?: Record<string, unknown>,
): { depth: Record<string, unknown>; report: GammaModReport } {
  const tm = asTransformer(model, 'adapt', '--gamma-mod');
  const L = tm.config.num_hidden_layers;
  const fraction = opts.fraction ?? 0.5;
  if (opts.layers === undefined && !(fraction > 0 && fraction <= 1)) throw new ConfigError(`--arank-fraction must be in (0, 1], got ${fraction}`);
  const count = opts.layers ?? Math.max(1, Math.round(fraction * L));
  if (!Number.isInteger(count) || count < 1 || count > L) throw new ConfigError(`--arank-layers must be an integer in [1, ${L}] (the model's layers), got ${count}`);
  const samples = opts.samples ?? 8;
  if (!Number.isInteger(samples) || samples < 1) throw new ConfigError(`--arank-samples must be a positive integer, got ${samples}`);
  const seqLen = opts.seqLen ?? Math.min(128, tm.config.max_position_embeddings);
  if (!Number.isInteger(seqLen) || seqLen < 2 || seqLen > tm.config.max_position_embeddings)
    throw new ConfigError(`--arank-seq-len must be an integer in [2, ${tm.config.max_position_embeddings}] (the model's positions), got ${seqLen}`);
  const tolerance = opts.tolerance ?? ARANK_TOLERANCE;
  const seqs = calibrationSequences(cfg, tokenizer, samples, seqLen, opts.seed ?? 0, opts.dataDir);
  const arank = computeARank(tm, seqs, { tolerance });
  const layers = lowestARankLayers(arank, count);
  const { capacities: _c, every: _e, ...rest } = base ?? { capacity: 0.5 };
  const depth = { ...rest, router: 'gamma', causal: 'router', layers };
  return { depth, report: { method: 'gamma-mod arank', tolerance, samples, seqLen, sources: cfg.data.sources.slice(), arank, layers } };
}
