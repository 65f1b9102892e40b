/**
 * Repeated seeds: summary statistics of per-seed final losses (t-intervals), the comparison rule
 * that uses them (Welch), the measured seed noise, and the merge of one model's per-seed run records into one record of means (what the report draws).
 *
 * Pure functions on plain records, unit-tested against hand-computed values.
 */
import type { CurveRecord, FinalEvalRecord, RunRecord, SeedValue } from './types.js';
import type { IntervalMetrics } from './metrics.js';
import { COVERAGE, tCritical, welch, type Comparison } from './stats.js';

export interface SeedStats {
  n: number;
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); 0 when n = 1. */
  std: number;
  /** Standard error of the mean, std / sqrt(n); 0 when n = 1. */
  stderr: number;
  /** Two-sided t critical value for n - 1 degrees of freedom at `coverage` (NaN when n = 1). */
  t: number;
  /** The t-interval mean ± t·stderr, which covers the true mean with probability `coverage` (NaN bounds when n = 1). */
  low: number;
  high: number;
  coverage: number;
}

export function seedStats(values: readonly number[], coverage = COVERAGE): SeedStats {
  const n = values.length;
  if (!n) throw new Error('seedStats: no values');
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : 0;
  const stderr = std / Math.sqrt(n);
  const t = n > 1 ? tCritical(n - 1, coverage) : NaN;
  return { n, mean, std, stderr, t, low: mean - t * stderr, high: mean + t * stderr, coverage };
}

/** What the report knows about one model's final loss. */
export interface LossSample {
  finalLoss: number | null;
  seeds: number;
  lossStd: number | null;
}

/**
 * How model a's mean final loss compares with model b's: Welch's interval of the difference at
 * 95% ('lower' / 'higher' when it excludes 0, 'tied' when it does not), or 'unmeasured' when
 * either model has one seed, so there is no measured seed variance to judge the difference by.
 * The same rule is used between routers and against the dense baseline.
 */
export function compareLoss(a: LossSample, b: LossSample): { verdict: Comparison['verdict'] | 'unmeasured'; comparison: Comparison | null } {
  if (a.finalLoss === null || b.finalLoss === null || a.seeds < 2 || b.seeds < 2 || a.lossStd === null || b.lossStd === null) return { verdict: 'unmeasured', comparison: null };
  const c = welch({ n: a.seeds, mean: a.finalLoss, std: a.lossStd }, { n: b.seeds, mean: b.finalLoss, std: b.lossStd });
  if (!c) return { verdict: a.finalLoss === b.finalLoss ? 'tied' : a.finalLoss < b.finalLoss ? 'lower' : 'higher', comparison: null };
  return { verdict: c.verdict, comparison: c };
}

export interface SeedNoise {
  /** Pooled within-model standard deviation of the final loss over seeds. */
  pooledStd: number;
  /** Degrees of freedom of the pooled estimate (sum of n_i - 1). */
  df: number;
  /** Models that contributed (finished with at least 2 seeds). */
  models: number;
  /** Seeds per model (the most common n). */
  n: number;
  /** Smallest difference of two n-seed means resolvable at 95%: t_{df} · pooledStd · sqrt(2 / n). */
  threshold: number;
}

/** The measured seed-to-seed noise of a benchmark, pooled over its models; null with fewer than 2 seeds. */
export function seedNoise(models: readonly LossSample[]): SeedNoise | null {
  const ms = models.filter((m) => m.finalLoss !== null && m.seeds > 1 && m.lossStd !== null);
  if (!ms.length) return null;
  const df = ms.reduce((s, m) => s + m.seeds - 1, 0);
  const pooledStd = Math.sqrt(ms.reduce((s, m) => s + (m.seeds - 1) * m.lossStd! ** 2, 0) / df);
  const counts = new Map<number, number>();
  for (const m of ms) counts.set(m.seeds, (counts.get(m.seeds) ?? 0) + 1);
  const n = [...counts.entries()].sort((x, y) => y[1] - x[1] || y[0] - x[0])[0][0];
  return { pooledStd, df, models: ms.length, n, threshold: tCritical(df) * pooledStd * Math.sqrt(2 / n) };
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
    const losses = at.map((x) => x.loss);
    return {
      step: c.step,
      tokens: c.tokens,
      loss: avg(losses),
      ...(losses.length > 1 ? { lossStd: seedStats(losses).std } : {}),
      domains: Object.fromEntries(Object.keys(c.domains).map((d) => [d, avg(at.map((x) => x.domains[d]).filter(Number.isFinite))])),
    };
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
