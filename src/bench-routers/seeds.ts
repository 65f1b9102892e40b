/**
 * Repeated seeds: summary statistics of per-seed final losses, the tie rule that uses them, and
 * the merge of one model's per-seed run records into one record of means (what the report draws).
 *
 * Pure functions on plain records, unit-tested against hand-computed values.
 */
import type { CurveRecord, FinalEvalRecord, RunRecord, SeedValue } from './types.js';
import type { IntervalMetrics } from './metrics.js';

export interface SeedStats {
  n: number;
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); 0 when n = 1. */
  std: number;
  /** Standard error of the mean, std / sqrt(n); 0 when n = 1. */
  stderr: number;
  /** The ~95% interval mean ± 2·stderr. */
  low: number;
  high: number;
}

export function seedStats(values: readonly number[]): SeedStats {
  const n = values.length;
  if (!n) throw new Error('seedStats: no values');
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : 0;
  const stderr = std / Math.sqrt(n);
  return { n, mean, std, stderr, low: mean - 2 * stderr, high: mean + 2 * stderr };
}

/**
 * Loss differences below this (nats) are treated as ties when a model has one seed: with one
 * seed and a short CPU budget, reruns with another seed move final losses by about this much.
 */
export const TIE_MARGIN = 0.015;

/**
 * Whether two models' final losses are indistinguishable: with at least two seeds each, their
 * ~95% intervals (mean ± 2·stderr) overlap; otherwise (single seed) they differ by less than TIE_MARGIN.
 */
export function isTied(a: { finalLoss: number | null; seeds: number; lossStderr: number | null }, b: { finalLoss: number | null; seeds: number; lossStderr: number | null }): boolean {
  if (a.finalLoss === null || b.finalLoss === null) return false;
  const d = Math.abs(a.finalLoss - b.finalLoss);
  if (a.seeds > 1 && b.seeds > 1 && a.lossStderr !== null && b.lossStderr !== null) return d <= 2 * (a.lossStderr + b.lossStderr);
  return d < TIE_MARGIN;
}

const avg = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** What results.json keeps of one seed's run. */
export function seedValue(r: RunRecord, seed: number): SeedValue {
  return {
    seed,
    status: r.status,
    finalLoss: r.status === 'done' && r.final ? r.final.loss : null,
    domains: r.status === 'done' && r.final ? Object.fromEntries(r.final.domains.map((d) => [d.domain, d.loss])) : {},
    tokensPerSec: r.tokensPerSec,
    wallSeconds: r.wallSeconds,
    ...(r.error ? { error: r.error } : {}),
  };
}

/**
 * One model's per-seed records -> one record whose curve, final evaluation, interval metrics
 * and throughput are means over the seeds that finished (diverged seeds are listed in perSeed
 * only). If no seed finished, the first seed's record stands for the model.
 */
export function mergeSeedRuns(runs: readonly RunRecord[], seeds: readonly number[]): RunRecord {
  if (!runs.length || runs.length !== seeds.length) throw new Error(`mergeSeedRuns: ${runs.length} runs for ${seeds.length} seeds`);
  const perSeed = runs.map((r, i) => seedValue(r, seeds[i]));
  const done = runs.filter((r) => r.status === 'done' && r.final);
  const wallSeconds = runs.reduce((s, r) => s + r.wallSeconds, 0);
  if (!done.length) return { ...runs[0], wallSeconds, perSeed, error: runs.map((r, i) => `seed ${seeds[i]}: ${r.error ?? r.status}`).join('; ') };
  const first = done[0];
  const curve: CurveRecord[] = first.curve.map((c) => {
    const at = done.map((r) => r.curve.find((x) => x.step === c.step)).filter((x): x is CurveRecord => x !== undefined);
    return { step: c.step, tokens: c.tokens, loss: avg(at.map((x) => x.loss)), domains: Object.fromEntries(Object.keys(c.domains).map((d) => [d, avg(at.map((x) => x.domains[d]).filter(Number.isFinite))])) };
  });
  const nInt = Math.min(...done.map((r) => r.intervals.length));
  const keys = ['loss', 'tokensPerSec', 'loadCV', 'droppedFraction', 'routerEntropy', 'expertsPerToken'] as const;
  const intervals: IntervalMetrics[] = first.intervals.slice(0, nInt).map((iv, i) => {
    const m: IntervalMetrics = { ...iv };
    for (const k of keys) m[k] = avg(done.map((r) => r.intervals[i][k]));
    return m;
  });
  const finals = done.map((r) => r.final!);
  const f0 = finals[0];
  const final: FinalEvalRecord = {
    loss: avg(finals.map((x) => x.loss)),
    perplexity: avg(finals.map((x) => x.perplexity)),
    domains: f0.domains.map((d) => {
      const same = finals.map((x) => x.domains.find((y) => y.domain === d.domain)!).filter(Boolean);
      return { domain: d.domain, loss: avg(same.map((x) => x.loss)), perplexity: avg(same.map((x) => x.perplexity)), tokens: d.tokens };
    }),
    routing: {
      loadCV: avg(finals.map((x) => x.routing.loadCV)),
      droppedFraction: avg(finals.map((x) => x.routing.droppedFraction)),
      routerEntropy: avg(finals.map((x) => x.routing.routerEntropy)),
      expertsPerToken: avg(finals.map((x) => x.routing.expertsPerToken)),
    },
    expertUsage: f0.expertUsage.map((layer, l) => layer.map((row, d) => row.map((_, e) => avg(finals.map((x) => x.expertUsage[l]?.[d]?.[e] ?? 0))))),
    moeLayers: f0.moeLayers,
  };
  const { error: _error, ...rest } = first;
  return { ...rest, status: 'done', tokensPerSec: avg(done.map((r) => r.tokensPerSec)), wallSeconds, curve, final, intervals, perSeed };
}
