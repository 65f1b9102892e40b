/** The router benchmark's result records (results.json), shared by the orchestration and the report. */
import type { IntervalMetrics, Specialisation, ComputeSaving, UnigramBaseline } from './metrics.js';
import type { SeedNoise } from './seeds.js';

/**
 * Active compute against the dense baseline, from the measured experts per token (never from the
 * router's declared traits): 'more' = above it by more than the tolerance (listed apart from the
 * ranking), 'less' = below it (ranked at a disadvantage), 'unmeasured' = no finite experts-per-token
 * measurement (listed apart too, as its compute cannot be shown to be matched).
 */
export type ComputeClass = 'matched' | 'more' | 'less' | 'unmeasured';

export const BENCH_FORMAT = 'moe-ts-bench-routers';
export const BENCH_VERSION = 1;

export interface CurveRecord {
  step: number;
  tokens: number;
  loss: number;
  /** Standard deviation of the validation loss over seeds (merged multi-seed records only). */
  lossStd?: number;
  /** Validation loss per domain. */
  domains: Record<string, number>;
}

export interface FinalEvalRecord {
  loss: number;
  perplexity: number;
  domains: { domain: string; loss: number; perplexity: number; tokens: number }[];
  routing: { loadCV: number; droppedFraction: number; routerEntropy: number; expertsPerToken: number };
  /** usage[layer][domain][expert] on the validation sets. */
  expertUsage: number[][][];
  moeLayers: number[];
}

/** One trained model of the benchmark: an MoE with one router, or the dense baseline. */
export interface RunRecord {
  name: string;
  kind: 'moe' | 'dense';
  description: string;
  status: 'done' | 'diverged';
  error?: string;
  /** Fingerprint of everything that decides the run (model + training + data), to refuse stale results. */
  fingerprint: string;
  model: Record<string, unknown>;
  params: number;
  activeParams: number;
  steps: number;
  tokensPerStep: number;
  tokens: number;
  tokensPerSec: number;
  wallSeconds: number;
  curve: CurveRecord[];
  final: FinalEvalRecord | null;
  intervals: IntervalMetrics[];
  /**
   * With --seeds N > 1: one entry per seed, and the record's curve, final evaluation, interval
   * metrics and tokensPerSec are means over the seeds that finished. Absent for a single seed.
   */
  perSeed?: SeedValue[];
}

/** One seed's outcome for one model (results.json keeps these; the full record is in its run folder). */
export interface SeedValue {
  seed: number;
  status: 'done' | 'diverged';
  /** Final validation loss, null if the seed diverged. */
  finalLoss: number | null;
  /** Final validation loss per domain. */
  domains: Record<string, number>;
  tokensPerSec: number;
  wallSeconds: number;
  error?: string;
}

export interface RouterAnalysis {
  name: string;
  kind: 'moe' | 'dense';
  status: 'done' | 'diverged';
  /** 1 = best final validation loss among finished runs (dense included). */
  rank: number | null;
  /** Final validation loss (the mean over finished seeds with --seeds N > 1). */
  finalLoss: number | null;
  /** Seeds that finished (1 for a single-seed run). */
  seeds: number;
  /** Sample standard deviation and standard error of the final loss over seeds; null with fewer than 2 seeds. */
  lossStd: number | null;
  lossStderr: number | null;
  /** t-interval of the mean final loss over seeds (null with fewer than 2 seeds). */
  interval: { low: number; high: number; coverage: number; t: number } | null;
  /** Per-seed final losses of the finished seeds. */
  seedLosses: number[];
  /** finalLoss - dense final loss (negative = better than dense). */
  deltaVsDense: number | null;
  /** Against the dense baseline by the rule used between routers (Welch, 95%); 'unmeasured' with one seed. */
  vsDense: 'lower' | 'higher' | 'tied' | 'unmeasured';
  /** Welch interval of finalLoss - dense (null with one seed). */
  diffVsDense: { low: number; high: number; df: number } | null;
  saving: ComputeSaving | null;
  /** Per MoE layer, on the validation sets. */
  specialisation: Specialisation[];
  meanSpecialisation: number | null;
  /** Means over the second half of training. */
  lateLoadCV: number | null;
  lateDroppedFraction: number | null;
  meanRouterEntropy: number | null;
  meanExpertsPerToken: number | null;
  /** FFN compute relative to the dense baseline, (experts/token + shared) / (k + shared); null for dense or unmeasured. */
  computeVsDense: number | null;
  compute: ComputeClass;
  /** Final loss not clearly below the data's unigram baseline: the model learnt little. */
  undertrained: boolean;
  tokensPerSec: number;
  /** Routing of a token depends on the other tokens of the batch (no exact KV-cached decoding). */
  batchDependent: boolean;
}

export interface BenchAnalysis {
  reference: string | null;
  denseFinalLoss: number | null;
  denseTokens: number | null;
  routers: RouterAnalysis[];
  /** Most seeds any model finished with (1 = a single-seed benchmark: differences are not tested against noise). */
  seeds: number;
  /** The data's unigram baseline (null when unknown, e.g. results written before it existed). */
  baseline: UnigramBaseline | null;
  /** The dense baseline or every router is undertrained: no recommendation is made. */
  smoke: boolean;
  /** Measured seed noise, pooled over models (null with one seed). */
  noise: SeedNoise | null;
  /** Coverage of every interval and comparison (0.95). */
  coverage: number;
  /** The auto-written recommendation, one sentence per entry. */
  recommendation: string[];
}

export interface BenchResults {
  format: typeof BENCH_FORMAT;
  version: number;
  createdAt: string;
  backend: string;
  /** The base run config every router shares (router_type varies). */
  config: Record<string, unknown>;
  domains: string[];
  numExperts: number;
  topK: number;
  /** The seeds every model was trained with (absent in results written before --seeds existed). */
  seeds?: number[];
  /** The unigram baseline of the validation data (absent in results written before it existed). */
  baseline?: UnigramBaseline;
  runs: RunRecord[];
  analysis: BenchAnalysis;
}
