/**
 * Small-sample statistics for seed repeats: t-distribution intervals for the actual n (not
 * mean ± 2·SE, which with n = 3 covers only ~82%), Welch's standard error of a difference of
 * means, and paired differences. Quantiles come from jstat's Student t.
 */
import jstat from 'jstat';

const { jStat } = jstat;

export interface Interval {
  n: number;
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); NaN for n < 2. */
  sd: number;
  /** Standard error of the mean, sd / sqrt(n). */
  se: number;
  /** Degrees of freedom of the t quantile used. */
  df: number;
  /** Nominal coverage, e.g. 0.95. */
  coverage: number;
  lo: number;
  hi: number;
}

export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

export function sampleSd(xs: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) ** 2;
  return Math.sqrt(s / (n - 1));
}

/** Two-sided t quantile: the multiplier of SE for the given coverage at df degrees of freedom. */
export function tMultiplier(df: number, coverage = 0.95): number {
  if (!(coverage > 0 && coverage < 1)) throw new Error(`stats: coverage must be in (0, 1), got ${coverage}`);
  if (!(df > 0)) return NaN;
  return jStat.studentt.inv(1 - (1 - coverage) / 2, df);
}

/** Coverage of mean ± k·SE under the t distribution with df degrees of freedom (e.g. k = 2, df = 2: ~0.82). */
export function coverageOf(k: number, df: number): number {
  if (!(df > 0)) return NaN;
  return 2 * jStat.studentt.cdf(k, df) - 1;
}

/** Mean with its t interval for the actual n. n = 1 gives an interval of NaN (no spread known). */
export function tInterval(xs: readonly number[], coverage = 0.95): Interval {
  const n = xs.length;
  const m = mean(xs);
  const sd = sampleSd(xs);
  const se = sd / Math.sqrt(n);
  const df = n - 1;
  const h = tMultiplier(df, coverage) * se;
  return { n, mean: m, sd, se, df, coverage, lo: m - h, hi: m + h };
}

export interface Difference extends Interval {
  /** mean / se: how many standard errors the difference is from 0. */
  z: number;
}

/** a - b for independent samples: Welch's SE and Welch-Satterthwaite degrees of freedom. */
export function welchDifference(a: readonly number[], b: readonly number[], coverage = 0.95): Difference {
  const va = sampleSd(a) ** 2 / a.length;
  const vb = sampleSd(b) ** 2 / b.length;
  const se = Math.sqrt(va + vb);
  const m = mean(a) - mean(b);
  // all-equal samples give 0/0; fall back to the smallest df rather than NaN
  const df = va + vb > 0 ? (va + vb) ** 2 / (va ** 2 / (a.length - 1) + vb ** 2 / (b.length - 1)) : Math.min(a.length, b.length) - 1;
  const h = tMultiplier(df, coverage) * se;
  return { n: Math.min(a.length, b.length), mean: m, sd: NaN, se, df, coverage, lo: m - h, hi: m + h, z: m / se };
}

/** a[i] - b[i] for paired samples (same seed, same data order): the t interval of the differences. */
export function pairedDifference(a: readonly number[], b: readonly number[], coverage = 0.95): Difference {
  if (a.length !== b.length) throw new Error(`stats: paired samples need equal lengths, got ${a.length} and ${b.length}`);
  const d = tInterval(
    a.map((x, i) => x - b[i]),
    coverage,
  );
  return { ...d, z: d.mean / d.se };
}

/**
 * Tokens at which a loss curve (ascending tokens) first reaches `target`, linearly interpolated
 * between evaluations; null when it never does.
 */
export function tokensToReach(curve: readonly { tokens: number; loss: number }[], target: number): number | null {
  for (let i = 0; i < curve.length; i++) {
    if (curve[i].loss <= target) {
      if (i === 0) return curve[0].tokens;
      const a = curve[i - 1];
      const b = curve[i];
      return a.tokens + ((a.loss - target) / (a.loss - b.loss)) * (b.tokens - a.tokens);
    }
  }
  return null;
}

/** "1.234 ± 0.012 (95% t, n=3)" style formatting of an interval. */
export function formatInterval(iv: Interval, digits = 4): string {
  const h = (iv.hi - iv.lo) / 2;
  if (!Number.isFinite(h)) return `${iv.mean.toFixed(digits)} (n=${iv.n})`;
  return `${iv.mean.toFixed(digits)} ± ${h.toFixed(digits)}`;
}
