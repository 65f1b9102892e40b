/**
 * Small-sample statistics for seed comparisons: Student's t quantiles (so an interval over n = 3
 * seeds is a real 95% interval, not mean ± 2·stderr, which covers about 82% at n = 3) and
 * Welch's unequal-variance comparison of two means (Welch, "The generalization of Student's
 * problem when several different population variances are involved", 1947).
 *
 * Pure functions, tested against tabulated values.
 */

/** ln Γ(x) for x > 0 (Lanczos approximation, g = 7, 9 terms; ~1e-15 relative). */
export function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the regularised incomplete beta function (modified Lentz). */
function betaContinuedFraction(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return h;
}

/** Regularised incomplete beta I_x(a, b). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lnFront = lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log(1 - x);
  // the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lnFront) * betaContinuedFraction(a, b, x)) / a;
  return 1 - (Math.exp(lnFront) * betaContinuedFraction(b, a, 1 - x)) / b;
}

/** P(T <= t) for Student's t with df degrees of freedom (df > 0, may be fractional). */
export function studentTCdf(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`studentTCdf: df must be > 0, got ${df}`);
  if (!Number.isFinite(t)) return t > 0 ? 1 : 0;
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The p-quantile of Student's t with df degrees of freedom (bisection on the CDF, ~1e-12). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new Error(`studentTQuantile: p must be in (0, 1), got ${p}`);
  if (!(df > 0)) throw new Error(`studentTQuantile: df must be > 0, got ${df}`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (studentTCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * Math.max(1, hi); i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Confidence level of every interval and comparison in the reports. */
export const COVERAGE = 0.95;

/** Two-sided critical value t_{(1 + coverage) / 2, df}. */
export function tCritical(df: number, coverage = COVERAGE): number {
  return studentTQuantile((1 + coverage) / 2, df);
}

export interface Sample {
  n: number;
  mean: number;
  /** Sample standard deviation (n - 1). */
  std: number;
}

export interface Comparison {
  /** mean(a) - mean(b). */
  diff: number;
  /** Standard error of the difference, sqrt(sa²/na + sb²/nb). */
  se: number;
  /** Welch–Satterthwaite degrees of freedom. */
  df: number;
  /** Half-width of the two-sided interval of the difference at `coverage`: the noise threshold for this pair. */
  halfWidth: number;
  low: number;
  high: number;
  coverage: number;
  /** 'lower': a is below b (the interval of the difference is below 0); 'higher': above; 'tied': it contains 0. */
  verdict: 'lower' | 'higher' | 'tied';
}

/**
 * Welch's comparison of two means; null when either side has fewer than 2 values (no measured
 * variance) or both variances are 0 (nothing to scale the difference by).
 */
export function welch(a: Sample, b: Sample, coverage = COVERAGE): Comparison | null {
  if (a.n < 2 || b.n < 2) return null;
  const va = (a.std * a.std) / a.n;
  const vb = (b.std * b.std) / b.n;
  const se = Math.sqrt(va + vb);
  if (!(se > 0)) return null;
  const df = (va + vb) ** 2 / ((va * va) / (a.n - 1) + (vb * vb) / (b.n - 1));
  const diff = a.mean - b.mean;
  const halfWidth = tCritical(df, coverage) * se;
  const low = diff - halfWidth;
  const high = diff + halfWidth;
  return { diff, se, df, halfWidth, low, high, coverage, verdict: high < 0 ? 'lower' : low > 0 ? 'higher' : 'tied' };
}
