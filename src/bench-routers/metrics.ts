/**
 * Router analysis metrics for benchmark reports: how much expert choice says about the domain a
 * token came from (mutual information), expert usage shares per domain, and how many training
 * tokens an MoE needed to match a dense baseline's final loss.
 *
 * All functions are pure and take plain arrays so they can be unit-tested against hand values.
 */

/** Entropy (nats) of a non-negative weight vector, normalised to a distribution first. */
export function entropy(weights: readonly number[]): number {
  const total = weights.reduce((s, w) => s + w, 0);
  if (!(total > 0)) return 0;
  let h = 0;
  for (const w of weights) {
    if (w < 0 || !Number.isFinite(w)) throw new Error(`entropy: weights must be finite and >= 0, got ${w}`);
    if (w > 0) h -= (w / total) * Math.log(w / total);
  }
  return h;
}

export interface Specialisation {
  /** I(expert; domain) in nats, from the joint distribution of routed assignments. */
  mutualInformation: number;
  /** H(domain) in nats under the same joint distribution: the most MI can be. */
  domainEntropy: number;
  /** MI / H(domain) in [0, 1]: 0 = every domain uses experts identically, 1 = each expert serves one domain. */
  normalized: number;
}

/**
 * Mutual information between expert and domain from usage[domain][expert] (assignment counts,
 * or fractional loads for soft routing). Each assignment is one sample of (domain, expert), so a
 * top-k router contributes k samples per token; that leaves H(domain) unchanged and makes
 * "perfectly specialised" (every expert used by a single domain) give MI = H(domain) exactly.
 */
export function specialisation(usage: readonly (readonly number[])[]): Specialisation {
  const D = usage.length;
  if (D === 0) return { mutualInformation: 0, domainEntropy: 0, normalized: 0 };
  const E = usage[0].length;
  usage.forEach((row, d) => {
    if (row.length !== E) throw new Error(`specialisation: usage row ${d} has ${row.length} experts, row 0 has ${E}`);
    row.forEach((v, e) => {
      if (!(v >= 0) || !Number.isFinite(v)) throw new Error(`specialisation: usage[${d}][${e}] must be finite and >= 0, got ${v}`);
    });
  });
  let total = 0;
  const pd = new Array<number>(D).fill(0);
  const pe = new Array<number>(E).fill(0);
  for (let d = 0; d < D; d++) {
    for (let e = 0; e < E; e++) {
      pd[d] += usage[d][e];
      pe[e] += usage[d][e];
      total += usage[d][e];
    }
  }
  if (!(total > 0)) return { mutualInformation: 0, domainEntropy: 0, normalized: 0 };
  let mi = 0;
  for (let d = 0; d < D; d++) {
    for (let e = 0; e < E; e++) {
      const p = usage[d][e] / total;
      if (p > 0) mi += p * Math.log((p * total * total) / (pd[d] * pe[e]));
    }
  }
  // rounding can leave a tiny negative for independent usage
  mi = Math.max(0, mi);
  const hd = entropy(pd);
  return { mutualInformation: mi, domainEntropy: hd, normalized: hd > 0 ? Math.min(1, mi / hd) : 0 };
}

/** Row-normalised usage: share[d][e] = fraction of domain d's assignments that went to expert e. */
export function usageShares(usage: readonly (readonly number[])[]): number[][] {
  return usage.map((row) => {
    const s = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (s > 0 ? v / s : 0));
  });
}

export interface CurvePoint {
  tokens: number;
  loss: number;
}

/**
 * Training tokens at which a validation curve first reaches `target` loss, by linear
 * interpolation between the two evaluations that bracket the crossing; null if it never does.
 * A curve already at or below target at its first evaluation returns that evaluation's tokens
 * (no earlier point to interpolate from, so this is an upper bound).
 */
export function tokensToReach(curve: readonly CurvePoint[], target: number): number | null {
  const pts = [...curve].sort((a, b) => a.tokens - b.tokens);
  for (let i = 0; i < pts.length; i++) {
    if (pts[i].loss <= target) {
      if (i === 0) return pts[0].tokens;
      const a = pts[i - 1];
      const b = pts[i];
      const f = (a.loss - target) / (a.loss - b.loss);
      return a.tokens + f * (b.tokens - a.tokens);
    }
  }
  return null;
}

export interface ComputeSaving {
  /** Dense baseline's final validation loss (the target). */
  targetLoss: number;
  /** Dense baseline's training tokens. */
  denseTokens: number;
  /** Tokens this model needed to reach targetLoss, or null if it never did. */
  tokens: number | null;
  /** tokens / denseTokens (< 1 means the MoE got there with less compute), or null. */
  ratio: number | null;
}

/** The compute saving of an MoE validation curve relative to a dense run's final loss and budget. */
export function computeSaving(curve: readonly CurvePoint[], dense: { finalLoss: number; tokens: number }): ComputeSaving {
  if (!(dense.tokens > 0)) throw new Error(`computeSaving: dense token budget must be > 0, got ${dense.tokens}`);
  const tokens = tokensToReach(curve, dense.finalLoss);
  return { targetLoss: dense.finalLoss, denseTokens: dense.tokens, tokens, ratio: tokens === null ? null : tokens / dense.tokens };
}

/** The step metrics the benchmark aggregates (a subset of the trainer's StepMetrics). */
export interface StepSample {
  step: number;
  loss: number;
  tokensPerSec: number;
  loadCV: number;
  droppedFraction: number;
  routerEntropy: number;
  expertsPerToken: number;
}

/** Means of the step samples over one interval; `step` is its last step. */
export interface IntervalMetrics extends StepSample {
  /** Training tokens seen by the end of the interval. */
  tokens: number;
  /** Steps averaged. */
  steps: number;
}

/**
 * Means of the step metrics over consecutive intervals ending at each boundary step (the
 * evaluation steps), so balance curves line up with the validation curve. Steps after the last
 * boundary form one more interval.
 */
export function aggregateIntervals(samples: readonly StepSample[], boundaries: readonly number[], tokensPerStep: number): IntervalMetrics[] {
  const sorted = [...samples].sort((a, b) => a.step - b.step);
  const ends = [...new Set(boundaries)].sort((a, b) => a - b);
  const lastStep = sorted.length ? sorted[sorted.length - 1].step : 0;
  if (!ends.length || ends[ends.length - 1] < lastStep) ends.push(lastStep);
  const out: IntervalMetrics[] = [];
  let i = 0;
  for (const end of ends) {
    const group: StepSample[] = [];
    while (i < sorted.length && sorted[i].step <= end) group.push(sorted[i++]);
    if (!group.length) continue;
    const m = (f: (s: StepSample) => number): number => group.reduce((s, g) => s + f(g), 0) / group.length;
    out.push({
      step: end,
      tokens: end * tokensPerStep,
      steps: group.length,
      loss: m((s) => s.loss),
      tokensPerSec: m((s) => s.tokensPerSec),
      loadCV: m((s) => s.loadCV),
      droppedFraction: m((s) => s.droppedFraction),
      routerEntropy: m((s) => s.routerEntropy),
      expertsPerToken: m((s) => s.expertsPerToken),
    });
  }
  return out;
}

/** Mean of a metric over the second half of the intervals (after routing has settled). */
export function lateMean(intervals: readonly IntervalMetrics[], key: keyof Omit<IntervalMetrics, 'step' | 'tokens' | 'steps'>): number {
  if (!intervals.length) return 0;
  const tail = intervals.slice(Math.floor(intervals.length / 2));
  return tail.reduce((s, x) => s + x[key], 0) / tail.length;
}

/** What a model that knows only token frequencies achieves on the validation data. */
export interface UnigramBaseline {
  /** Token-weighted mean over domains of the validation cross-entropy (nats/token). */
  loss: number;
  /** Per domain, the same. */
  domains: Record<string, number>;
}

/**
 * Cross-entropy (nats/token) of validation targets under the unigram distribution of the
 * training tokens (all domains pooled, as one model would learn them), add-one smoothed over the
 * vocabulary so unseen tokens cost a finite ln(total + V). A language model whose validation loss
 * is not clearly below this has learnt little beyond token frequencies.
 */
export function unigramBaseline(train: readonly Int32Array[], val: readonly { domain: string; targets: Int32Array }[], vocabSize: number): UnigramBaseline {
  if (!(Number.isInteger(vocabSize) && vocabSize > 0)) throw new Error(`unigramBaseline: vocabSize must be a positive integer, got ${vocabSize}`);
  const counts = new Float64Array(vocabSize);
  let total = 0;
  for (const t of train) {
    for (const id of t) {
      if (id < 0 || id >= vocabSize) throw new Error(`unigramBaseline: token ${id} outside the vocabulary of ${vocabSize}`);
      counts[id]++;
    }
    total += t.length;
  }
  const logZ = Math.log(total + vocabSize);
  const sum = new Map<string, { nll: number; n: number }>();
  for (const { domain, targets } of val) {
    const s = sum.get(domain) ?? { nll: 0, n: 0 };
    for (const id of targets) s.nll += logZ - Math.log(counts[id] + 1);
    s.n += targets.length;
    sum.set(domain, s);
  }
  let nll = 0;
  let n = 0;
  const domains: Record<string, number> = {};
  for (const [d, s] of sum) {
    domains[d] = s.n ? s.nll / s.n : NaN;
    nll += s.nll;
    n += s.n;
  }
  return { loss: n ? nll / n : NaN, domains };
}

/** Fraction below the unigram baseline a final loss must reach to count as trained (10%). */
export const TRAINED_MARGIN = 0.1;

/** Whether a validation loss is clearly below the unigram baseline (by at least TRAINED_MARGIN of it). */
export function clearlyBelowBaseline(loss: number, baseline: number): boolean {
  return loss <= baseline * (1 - TRAINED_MARGIN);
}
