import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregateIntervals, computeSaving, entropy, lateMean, specialisation, tokensToReach, usageShares } from '../../src/bench-routers/metrics.js';

const close = (a: number, b: number, tol = 1e-12, what = ''): void => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b}`);

test('MI is 0 when every domain uses the experts identically', () => {
  const s = specialisation([
    [10, 20, 30, 40],
    [5, 10, 15, 20], // same shares, fewer tokens
    [1, 2, 3, 4],
  ]);
  close(s.mutualInformation, 0, 1e-12, 'MI');
  close(s.normalized, 0, 1e-12, 'normalized');
  // H(domain) under the assignment distribution: weights 100, 50, 10
  close(s.domainEntropy, entropy([100, 50, 10]), 1e-12, 'H(D)');
});

test('MI equals H(domain) for perfectly specialised experts', () => {
  // three domains with 2 experts each, nothing shared
  const s = specialisation([
    [30, 10, 0, 0, 0, 0],
    [0, 0, 20, 20, 0, 0],
    [0, 0, 0, 0, 5, 15],
  ]);
  const hd = -(0.4 * Math.log(0.4) + 0.4 * Math.log(0.4) + 0.2 * Math.log(0.2));
  close(s.domainEntropy, hd, 1e-12, 'H(D)');
  close(s.mutualInformation, hd, 1e-12, 'MI');
  close(s.normalized, 1, 1e-12, 'normalized');
  // equal domains, one expert each: MI = ln 3
  close(
    specialisation([
      [7, 0, 0],
      [0, 7, 0],
      [0, 0, 7],
    ]).mutualInformation,
    Math.log(3),
    1e-12,
    'ln 3',
  );
});

test('MI of a hand-computed partial case', () => {
  // p(d,e) = [[0.3, 0.2], [0.1, 0.4]]; p(d) = [0.5, 0.5], p(e) = [0.4, 0.6]
  const s = specialisation([
    [3, 2],
    [1, 4],
  ]);
  const mi = 0.3 * Math.log(0.3 / 0.2) + 0.2 * Math.log(0.2 / 0.3) + 0.1 * Math.log(0.1 / 0.2) + 0.4 * Math.log(0.4 / 0.3);
  close(s.mutualInformation, mi, 1e-12, 'MI');
  close(s.normalized, mi / Math.log(2), 1e-12, 'normalized');
});

test('specialisation of empty usage is 0 and bad usage fails naming the cell', () => {
  assert.deepEqual(
    specialisation([
      [0, 0],
      [0, 0],
    ]),
    { mutualInformation: 0, domainEntropy: 0, normalized: 0 },
  );
  assert.deepEqual(specialisation([]), { mutualInformation: 0, domainEntropy: 0, normalized: 0 });
  assert.throws(() => specialisation([[1, 2], [3]]), /usage row 1 has 1 experts, row 0 has 2/);
  assert.throws(() => specialisation([[1, -2]]), /usage\[0\]\[1\] must be finite and >= 0, got -2/);
});

test('usage shares are row-normalised', () => {
  assert.deepEqual(
    usageShares([
      [1, 3],
      [0, 0],
      [2, 2],
    ]),
    [
      [0.25, 0.75],
      [0, 0],
      [0.5, 0.5],
    ],
  );
});

test('tokens to reach a loss: linear interpolation on the first crossing', () => {
  const curve = [
    { tokens: 100, loss: 4 },
    { tokens: 200, loss: 3 },
    { tokens: 300, loss: 2.5 },
    { tokens: 400, loss: 2.6 },
  ];
  close(tokensToReach(curve, 3.5)!, 150, 1e-9, 'midpoint');
  close(tokensToReach(curve, 2.8)!, 240, 1e-9, 'between 200 and 300');
  assert.equal(tokensToReach(curve, 3), 200); // exactly on a point
  assert.equal(tokensToReach(curve, 5), 100); // already below at the first evaluation
  assert.equal(tokensToReach(curve, 2.4), null);
  // order of the points does not matter
  close(tokensToReach([...curve].reverse(), 2.8)!, 240, 1e-9, 'unsorted');
});

test('compute saving is a ratio of the dense budget, or not reached', () => {
  const curve = [
    { tokens: 1000, loss: 3.0 },
    { tokens: 2000, loss: 2.0 },
    { tokens: 4000, loss: 1.5 },
  ];
  const s = computeSaving(curve, { finalLoss: 2.5, tokens: 4000 });
  assert.equal(s.tokens, 1500);
  assert.equal(s.ratio, 0.375);
  assert.equal(s.targetLoss, 2.5);
  const n = computeSaving(curve, { finalLoss: 1.0, tokens: 4000 });
  assert.equal(n.tokens, null);
  assert.equal(n.ratio, null);
  assert.throws(() => computeSaving(curve, { finalLoss: 1, tokens: 0 }), /dense token budget must be > 0/);
});

test('step metrics are averaged per evaluation interval', () => {
  const mk = (step: number, v: number) => ({ step, loss: v, tokensPerSec: 10 * v, loadCV: v, droppedFraction: v / 10, routerEntropy: v, expertsPerToken: 2 });
  const samples = [1, 2, 3, 4, 5, 6, 7].map((s) => mk(s, s));
  const iv = aggregateIntervals(samples, [3, 6], 100);
  assert.deepEqual(
    iv.map((i) => [i.step, i.tokens, i.steps, i.loadCV]),
    [
      [3, 300, 3, 2],
      [6, 600, 3, 5],
      [7, 700, 1, 7], // steps after the last evaluation
    ],
  );
  close(iv[1].droppedFraction, 0.5, 1e-12, 'dropped');
  close(iv[1].tokensPerSec, 50, 1e-12, 'tps');
  // second half of the intervals: [5, 7]
  close(lateMean(iv, 'loadCV'), 6, 1e-12, 'late');
  assert.equal(lateMean([], 'loadCV'), 0);
});
