// Next-token sampling: greedy, top-k, top-p, the empirical distribution against
// softmax(logits / T), determinism per seed, numerical stability and option errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { argmax, sampleNext, samplingDistribution, validateSamplingOptions, Sampler } from '../../src/infer/sampling.js';

function softmax(logits: number[], T: number): number[] {
  const m = Math.max(...logits);
  const e = logits.map((l) => Math.exp((l - m) / T));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function randomLogits(rng: Rng, V: number, scale = 3): Float32Array {
  return rng.fillNormal(new Float32Array(V), scale);
}

/** Empirical frequencies of n draws. */
function histogram(logits: ArrayLike<number>, opts: Parameters<typeof sampleNext>[1], n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[sampleNext(logits, opts, rng)]++;
  return counts.map((c) => c / n);
}

/** Each frequency within 5 standard errors of its probability (plus a little slack for p near 0). */
function assertMatches(freq: number[], probs: ArrayLike<number>, n: number): void {
  for (let i = 0; i < freq.length; i++) {
    const p = probs[i];
    const tol = 5 * Math.sqrt((p * (1 - p)) / n) + 1e-3;
    assert.ok(Math.abs(freq[i] - p) <= tol, `token ${i}: frequency ${freq[i]} vs probability ${p} (tolerance ${tol})`);
  }
}

test('temperature 0 is argmax, ties to the lower index, and consumes no randomness', () => {
  const rng = new Rng(3);
  for (let trial = 0; trial < 20; trial++) {
    const l = randomLogits(rng, 50);
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
    const r = new Rng(7);
    const before = r.getState();
    assert.equal(sampleNext(l, { temperature: 0, topK: 5, topP: 0.5 }, r), best);
    assert.deepEqual(r.getState(), before);
  }
  assert.equal(argmax([1, 5, 5, 2]), 1);
  assert.equal(sampleNext([0, -Infinity, 2, 2], { temperature: 0 }, new Rng(1)), 2);
});

test('top-k = 1 and a tiny top-p are greedy at any temperature', () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 20; trial++) {
    const l = randomLogits(rng, 64);
    const best = argmax(l);
    const r = new Rng(trial);
    for (let i = 0; i < 20; i++) {
      assert.equal(sampleNext(l, { temperature: 1.5, topK: 1 }, r), best);
      assert.equal(sampleNext(l, { temperature: 2, topP: 1e-9 }, r), best);
    }
  }
});

test('with temperature the draws follow softmax(logits / T)', () => {
  const logits = [1, 2, 0.5, -1, 3, 0];
  const n = 40000;
  for (const T of [0.5, 1, 2]) {
    assertMatches(histogram(logits, { temperature: T }, n, 100 + T * 10), softmax(logits, T), n);
  }
});

test('top-k keeps the k most likely tokens, renormalised', () => {
  const logits = [1, 2, 0.5, -1, 3, 0];
  const n = 40000;
  const T = 1.3;
  const sm = softmax(logits, T);
  const keep = [4, 1, 0];
  const z = keep.reduce((a, i) => a + sm[i], 0);
  const expected = sm.map((p, i) => (keep.includes(i) ? p / z : 0));
  const d = samplingDistribution(logits, { temperature: T, topK: 3 });
  for (let i = 0; i < logits.length; i++) assert.ok(Math.abs(d[i] - expected[i]) < 1e-12, `token ${i}`);
  assertMatches(histogram(logits, { temperature: T, topK: 3 }, n, 5), expected, n);
  // k at or above the vocabulary is no limit
  const all = samplingDistribution(logits, { temperature: T, topK: 100 });
  for (let i = 0; i < logits.length; i++) assert.ok(Math.abs(all[i] - sm[i]) < 1e-12);
});

test('top-p keeps the smallest set reaching p, measured after temperature and top-k', () => {
  // probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 at T = 1
  const logits = [Math.log(0.5), Math.log(0.25), Math.log(0.125), Math.log(0.0625), Math.log(0.0625)];
  const nz = (d: Float64Array): number[] => [...d.keys()].filter((i) => d[i] > 0);
  assert.deepEqual(nz(samplingDistribution(logits, { topP: 0.45 })), [0]);
  assert.deepEqual(nz(samplingDistribution(logits, { topP: 0.6 })), [0, 1]);
  assert.deepEqual(nz(samplingDistribution(logits, { topP: 0.74 })), [0, 1]);
  assert.deepEqual(nz(samplingDistribution(logits, { topP: 0.8 })), [0, 1, 2]);
  assert.deepEqual(nz(samplingDistribution(logits, { topP: 1 })), [0, 1, 2, 3, 4]);
  const d = samplingDistribution(logits, { topP: 0.8 });
  assert.ok(Math.abs(d[0] - 0.5 / 0.875) < 1e-12 && Math.abs(d[2] - 0.125 / 0.875) < 1e-12);
  // after top-k = 2 the survivors are 2/3, 1/3: p = 0.6 needs only the first
  assert.deepEqual(nz(samplingDistribution(logits, { topK: 2, topP: 0.6 })), [0]);
  assert.deepEqual(nz(samplingDistribution(logits, { topK: 2, topP: 0.7 })), [0, 1]);
  // a high temperature flattens the distribution, so the nucleus grows
  assert.deepEqual(nz(samplingDistribution(logits, { temperature: 100, topP: 0.5 })).length, 3);
  const n = 40000;
  assertMatches(histogram(logits, { topP: 0.8 }, n, 9), d, n);
});

test('same seed gives the same draws; a different seed gives different ones', () => {
  const l = randomLogits(new Rng(2), 100, 1);
  const draw = (seed: number): number[] => {
    const s = new Sampler({ temperature: 1, topK: 50, topP: 0.95 }, new Rng(seed));
    return Array.from({ length: 200 }, () => s.next(l));
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
});

test('numerically stable: huge logits, tiny temperatures, masked tokens', () => {
  const huge = [3e38, 2.9e38, -3e38, 0];
  const d = samplingDistribution(huge, { temperature: 1 });
  assert.ok(d.every((p) => Number.isFinite(p)));
  assert.equal(d[0], 1);
  const tiny = samplingDistribution([1, 1 + 1e-3, 0.5], { temperature: 1e-300 });
  assert.deepEqual([...tiny], [0, 1, 0]);
  const masked = samplingDistribution([0, -Infinity, 0, -Infinity], { topP: 0.9, topK: 3 });
  assert.equal(masked[1] + masked[3], 0);
  assert.ok(Math.abs(masked[0] + masked[2] - 1) < 1e-12);
  const r = new Rng(1);
  for (let i = 0; i < 200; i++) assert.ok([0, 2].includes(sampleNext([0, -Infinity, 0, -Infinity], { temperature: 3 }, r)));
});

test('bad options and bad logits fail with errors naming the problem', () => {
  const r = new Rng(0);
  assert.throws(() => sampleNext([1, 2], { temperature: -0.1 }, r), /temperature must be a finite number >= 0/);
  assert.throws(() => sampleNext([1, 2], { temperature: NaN }, r), /temperature/);
  assert.throws(() => sampleNext([1, 2], { temperature: Infinity }, r), /temperature/);
  assert.throws(() => sampleNext([1, 2], { topK: -1 }, r), /topK must be an integer >= 0/);
  assert.throws(() => sampleNext([1, 2], { topK: 1.5 }, r), /topK must be an integer/);
  assert.throws(() => sampleNext([1, 2], { topP: 0 }, r), /topP must be in \(0, 1\]/);
  assert.throws(() => sampleNext([1, 2], { topP: 1.01 }, r), /topP/);
  assert.throws(() => sampleNext([1, 2], { topP: NaN }, r), /topP/);
  assert.throws(() => sampleNext([], {}, r), /empty logits/);
  assert.throws(() => sampleNext([0, NaN, 1], {}, r), /index 1 is NaN/);
  assert.throws(() => sampleNext([0, Infinity], {}, r), /index 1 is \+Infinity/);
  assert.throws(() => sampleNext([-Infinity, -Infinity], {}, r), /all 2 logits are -Infinity/);
  assert.throws(() => new Sampler({ topP: 2 }, r), /topP/);
  assert.deepEqual(validateSamplingOptions({}), { temperature: 1, topK: 0, topP: 1 });
});
