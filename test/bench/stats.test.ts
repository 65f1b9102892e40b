import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coverageOf, mean, pairedDifference, sampleSd, tInterval, tMultiplier, tokensToReach, welchDifference } from '../../bench/lib/stats.js';

const close = (a: number, b: number, tol: number, what: string): void => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('t multipliers match the published table', () => {
  // two-sided 95%: df 1 12.706, df 2 4.303, df 4 2.776, df 30 2.042; 90% df 2: 2.920
  close(tMultiplier(1), 12.706, 1e-3, 'df 1');
  close(tMultiplier(2), 4.303, 1e-3, 'df 2');
  close(tMultiplier(4), 2.776, 1e-3, 'df 4');
  close(tMultiplier(30), 2.042, 1e-3, 'df 30');
  close(tMultiplier(2, 0.9), 2.92, 1e-3, 'df 2, 90%');
  assert.throws(() => tMultiplier(2, 1), /coverage/);
});

test('mean ± 2 SE with n = 3 covers about 82%, not 95%', () => {
  close(coverageOf(2, 2), 0.8165, 1e-3, 'k 2 df 2');
  close(coverageOf(tMultiplier(2), 2), 0.95, 1e-9, 'round trip');
});

test('t interval of a sample', () => {
  const xs = [1, 2, 3];
  assert.equal(mean(xs), 2);
  assert.equal(sampleSd(xs), 1);
  const iv = tInterval(xs);
  assert.equal(iv.df, 2);
  close(iv.se, 1 / Math.sqrt(3), 1e-12, 'se');
  close(iv.hi - iv.mean, 4.3027 / Math.sqrt(3), 1e-3, 'half width');
  assert.ok(Number.isNaN(tInterval([5]).lo), 'n = 1 has no interval');
});

test('Welch difference: SE and degrees of freedom', () => {
  const a = [1, 2, 3];
  const b = [2, 4, 6, 8];
  const d = welchDifference(a, b);
  // var a/n = 1/3, var b/n = (20/3)/4 = 5/3; se = sqrt(2); df = 4 / ((1/9)/2 + (25/9)/3) = 4 / (0.0556 + 0.9259)
  close(d.mean, 2 - 5, 1e-12, 'mean');
  close(d.se, Math.sqrt(2), 1e-12, 'se');
  close(d.df, 4 / (1 / 18 + 25 / 27), 1e-9, 'df');
  close(d.z, -3 / Math.sqrt(2), 1e-12, 'z');
});

test('paired difference uses the per-pair spread', () => {
  // a constant shift with noise shared by both: the paired SE is 0-ish, Welch's is large
  const b = [1.0, 1.5, 2.0];
  const a = b.map((x, i) => x - 0.1 + (i === 1 ? 0.001 : 0));
  const p = pairedDifference(a, b);
  const w = welchDifference(a, b);
  assert.ok(p.se < 0.001 && w.se > 0.2, `paired ${p.se} welch ${w.se}`);
  assert.throws(() => pairedDifference([1], [1, 2]), /equal lengths/);
});

test('tokens to reach a loss: interpolated, null when never reached', () => {
  const curve = [
    { tokens: 0, loss: 5 },
    { tokens: 100, loss: 3 },
    { tokens: 200, loss: 2 },
  ];
  assert.equal(tokensToReach(curve, 2.5), 150);
  assert.equal(tokensToReach(curve, 3), 100);
  assert.equal(tokensToReach(curve, 6), 0);
  assert.equal(tokensToReach(curve, 1.9), null);
});
