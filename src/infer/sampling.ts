/**
 * Next-token sampling from a logits row: temperature (0 = greedy), top-k, then top-p
 * (nucleus, Holtzman et al., "The Curious Case of Neural Text Degeneration", 2020).
 * Probabilities are computed in float64 from max-subtracted logits, so large logits or tiny
 * temperatures neither overflow nor produce NaN.
 */
import type { Rng } from '../tensor/random.js';
import { z, num, nonNegInt, nonNegative, parseOrThrow } from '../tensor/validate.js';

export interface SamplingOptions {
  /** 0 = greedy argmax; otherwise logits are divided by it. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 (default) = no limit. Larger than the vocabulary = no limit. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability sums to >= topP; 1 (default) = no limit. */
  topP?: number;
}

export interface ResolvedSampling {
  temperature: number;
  topK: number;
  topP: number;
}

// not strict: generate() passes its whole options object, of which these are a part
const SamplingSchema = z.object({
  temperature: nonNegative('a finite number >= 0 (0 = greedy)').default(1),
  topK: nonNegInt('an integer >= 0 (0 = no limit)').default(0),
  topP: num('in (0, 1] (1 = no limit)', (v) => v > 0 && v <= 1).default(1),
});

/** Fill defaults and reject bad values with an error naming the option. */
export function validateSamplingOptions(o: SamplingOptions = {}): ResolvedSampling {
  const r = parseOrThrow(SamplingSchema, o, { where: 'sampling' });
  return { temperature: r.temperature, topK: r.topK, topP: r.topP };
}

/** -Infinity is allowed (a masked token); NaN and +Infinity are bugs upstream and fail loudly. */
function checkLogits(logits: ArrayLike<number>): void {
  if (logits.length === 0) throw new Error('sampling: empty logits row (vocabulary of size 0)');
  let any = false;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (Number.isNaN(v)) throw new Error(`sampling: logit at index ${i} is NaN`);
    if (v === Infinity) throw new Error(`sampling: logit at index ${i} is +Infinity`);
    if (v !== -Infinity) any = true;
  }
  if (!any) throw new Error(`sampling: all ${logits.length} logits are -Infinity (every token masked)`);
}

/** Index of the largest logit; ties go to the lower index. */
export function argmax(logits: ArrayLike<number>): number {
  checkLogits(logits);
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The distribution sampleNext draws from: probabilities over the whole vocabulary (zeros
 * outside the kept set), summing to 1. Greedy (temperature 0) is a one-hot on the argmax.
 */
export function samplingDistribution(logits: ArrayLike<number>, opts: SamplingOptions = {}): Float64Array {
  const o = validateSamplingOptions(opts);
  checkLogits(logits);
  const V = logits.length;
  const probs = new Float64Array(V);
  if (o.temperature === 0) {
    probs[argmax(logits)] = 1;
    return probs;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  // (l - max) / T <= 0 for every token, so exp never overflows even when T is tiny
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const e = Math.exp((logits[i] - max) / o.temperature);
    probs[i] = e;
    sum += e;
  }
  for (let i = 0; i < V; i++) probs[i] /= sum;

  const k = o.topK > 0 && o.topK < V ? o.topK : V;
  if (k === V && o.topP >= 1) return probs;

  // order by logit (not by rounded probability) so ties break to the lower index, as argmax does
  const order = Array.from({ length: V }, (_, i) => i);
  order.sort((a, b) => logits[b] - logits[a] || a - b);
  let keep = k;
  if (o.topP < 1) {
    // renormalise over the top-k survivors before measuring the nucleus
    let kSum = 0;
    for (let r = 0; r < k; r++) kSum += probs[order[r]];
    let cum = 0;
    keep = 0;
    while (keep < k) {
      cum += probs[order[keep]] / kSum;
      keep++;
      if (cum >= o.topP) break;
    }
  }
  let kept = 0;
  for (let r = 0; r < keep; r++) kept += probs[order[r]];
  const out = new Float64Array(V);
  for (let r = 0; r < keep; r++) out[order[r]] = probs[order[r]] / kept;
  return out;
}

/** Draw the next token id from a logits row [V]. Greedy consumes no randomness. */
export function sampleNext(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng): number {
  const o = validateSamplingOptions(opts);
  if (o.temperature === 0) return argmax(logits);
  const probs = samplingDistribution(logits, o);
  const u = rng.next();
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return i;
  }
  // u lands past the float sum (cum slightly < 1): the last kept token
  return last;
}

/** A reusable sampler holding its own seeded Rng. */
export class Sampler {
  readonly options: ResolvedSampling;
  constructor(
    opts: SamplingOptions,
    readonly rng: Rng,
  ) {
    this.options = validateSamplingOptions(opts);
  }
  next(logits: ArrayLike<number>): number {
    return sampleNext(logits, this.options, this.rng);
  }
}
