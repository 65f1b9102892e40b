import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, crossEntropy, logSoftmax, mean, takeAlongLast, neg } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

function naiveCe(logits: Float32Array, V: number, t: Int32Array, ignore: number): number {
  let tot = 0;
  let cnt = 0;
  t.forEach((ti, i) => {
    if (ti === ignore) return;
    const row = Array.from(logits.subarray(i * V, (i + 1) * V));
    const m = Math.max(...row);
    tot += m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0)) - row[ti];
    cnt++;
  });
  return cnt ? tot / cnt : 0;
}

test('crossEntropy: value vs naive and vs -mean(logSoftmax[target]); gradient', () => {
  const rng = new Rng(80);
  const x = randn(rng, [5, 7], true, 2);
  const t = Int32Array.from([3, 0, 6, 3, 1]);
  const loss = crossEntropy(x, t);
  assert.deepEqual(loss.shape, []);
  assertClose(loss.data, [naiveCe(x.data, 7, t, -100)], 1e-5, 1e-5);
  const viaLs = neg(mean(takeAlongLast(logSoftmax(x), t, 1)));
  assertClose(loss.data, viaLs.data, 1e-5, 1e-5);
  gradcheck('crossEntropy', (p) => crossEntropy(p, t), [x]);
  // a uniform prediction costs log(V)
  assertClose(crossEntropy(tensor(new Float32Array(12), [2, 6]), Int32Array.from([1, 5])).data, [Math.log(6)], 1e-6, 1e-6);
  // gradient rows sum to zero; the target column is negative
  const y = randn(rng, [3, 4], true);
  crossEntropy(y, Int32Array.from([2, 0, 3])).backward();
  for (let r = 0; r < 3; r++) assert.ok(Math.abs(y.grad!.subarray(r * 4, r * 4 + 4).reduce((a, v) => a + v, 0)) < 1e-6);
  assert.ok(y.grad![2] < 0 && y.grad![4] < 0 && y.grad![11] < 0);
});

test('crossEntropy: ignoreIndex (default and custom), all ignored gives 0 and zero gradient', () => {
  const rng = new Rng(81);
  const x = randn(rng, [4, 5], true);
  const t = Int32Array.from([2, -100, 4, -100]);
  const loss = crossEntropy(x, t);
  assertClose(loss.data, [naiveCe(x.data, 5, t, -100)], 1e-5, 1e-5);
  // ignored rows count for nothing: the mean is over the two real targets only
  const kept = crossEntropy(tensor(Float32Array.from([...x.data.subarray(0, 5), ...x.data.subarray(10, 15)]), [2, 5]), Int32Array.from([2, 4]));
  assertClose(loss.data, kept.data, 1e-6, 1e-6);
  gradcheck('crossEntropy ignore', (p) => crossEntropy(p, t), [x]);
  loss.backward();
  assert.ok(x.grad!.subarray(5, 10).every((v) => v === 0) && x.grad!.subarray(15, 20).every((v) => v === 0), 'ignored rows get no gradient');
  x.grad = null;
  const custom = Int32Array.from([0, 3, 0, 1]);
  assertClose(crossEntropy(x, custom, 0).data, [naiveCe(x.data, 5, custom, 0)], 1e-5, 1e-5);
  gradcheck('crossEntropy ignoreIndex=0', (p) => crossEntropy(p, custom, 0), [x]);
  const all = crossEntropy(x, Int32Array.from([-100, -100, -100, -100]));
  assert.equal(all.item(), 0);
  all.backward();
  assert.ok(x.grad!.every((v) => v === 0));
  assert.equal(crossEntropy(tensor(new Float32Array(0), [0, 5], true), new Int32Array(0)).item(), 0);
});

test('crossEntropy: stable for huge logits', () => {
  const x = tensor([1000, -1000, 0, 500, 1000, 1000], [2, 3], true);
  const loss = crossEntropy(x, Int32Array.from([1, 0]));
  assert.ok(Number.isFinite(loss.item()));
  assertClose(loss.data, [(2000 + (500 + Math.log(2))) / 2], 1e-2, 1e-6);
  loss.backward();
  assert.ok(x.grad!.every(Number.isFinite));
});

test('crossEntropy: bad input throws naming the op, shape, target and row', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => crossEntropy(tensor(new Float32Array(6), [6]), Int32Array.from([0])), /crossEntropy: logits must be \[N, V\], got \[6\]/);
  assert.throws(() => crossEntropy(x, Int32Array.from([0])), /crossEntropy: 1 targets for 2 rows of logits/);
  assert.throws(() => crossEntropy(x, Int32Array.from([0, 3])), /crossEntropy: target 3 at row 1 out of range \[0, 3\)/);
  assert.throws(() => crossEntropy(x, Int32Array.from([-1, 0])), /crossEntropy: target -1 at row 0 out of range/);
});
