// The checker must be able to fail: a wrong backward is caught and reported with the op name,
// input and worst element.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, result, accumulateGrad, mul, tensor } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, unravel } from '../helpers/gradcheck.js';

/** y = x^2 with a backward that is wrong only at flat index `bad`. */
function brokenSquare(bad: number) {
  return (x: Tensor): Tensor => {
    const out = x.data.map((v) => v * v);
    return result(out, x.shape, [x], (g) => {
      const gx = new Float32Array(g.length);
      for (let i = 0; i < g.length; i++) gx[i] = g[i] * 2 * x.data[i] * (i === bad ? 1.5 : 1);
      accumulateGrad(x, gx, true);
    });
  };
}

test('gradcheck passes a correct gradient', () => {
  const rng = new Rng(1);
  const r = gradcheck('mul', mul, [randn(rng, [3, 4]), randn(rng, [3, 4])]);
  assert.equal(r.checked, 24);
  assert.ok(r.worstRatio < 1);
});

test('gradcheck reports the op name, input and worst element of a wrong gradient', () => {
  const x = tensor([0.5, -1, 2, 1.5, -0.7, 0.9], [2, 3], true);
  assert.throws(() => gradcheck('brokenSquare', brokenSquare(4), [x]), /gradcheck\(brokenSquare\): input 0 of shape \[2, 3\], worst element at flat index 4 \[1, 1\]/);
});

test('gradcheck catches a missing gradient (backward that never accumulates)', () => {
  const x = tensor([1, 2, 3], [3], true);
  const noBackward = (t: Tensor) =>
    result(
      t.data.map((v) => 3 * v),
      t.shape,
      [t],
      () => {},
    );
  assert.throws(() => gradcheck('noBackward', noBackward, [x]), /gradcheck\(noBackward\).*analytic 0, numeric -?\d/);
});

test('gradcheck catches a gradient that only appears with non-uniform weights', () => {
  // backward swaps the gradients of two elements: invisible to sum(out), visible to sum(out * W)
  const swap = (t: Tensor) =>
    result(
      t.data.map((v) => v * (v > 0 ? 1 : 2)),
      t.shape,
      [t],
      (g) => {
        accumulateGrad(t, new Float32Array([g[1] * 1, g[0] * 1]), true);
      },
    );
  assert.throws(() => gradcheck('swap', swap, [tensor([1, 2], [2], true)]), /gradcheck\(swap\)/);
});

test('gradcheck ignores inputs without requiresGrad but rejects a stray gradient for them', () => {
  const rng = new Rng(2);
  const a = randn(rng, [2, 2]);
  const b = randn(rng, [2, 2], false);
  assert.equal(gradcheck('mul', mul, [a, b]).checked, 4);
  const leaky = (p: Tensor, q: Tensor) => {
    const o = mul(p, q);
    q.grad = new Float32Array(4);
    return o;
  };
  assert.throws(() => gradcheck('leaky', leaky, [a, b]), /input 1 does not require grad but received one/);
});

test('unravel', () => {
  assert.deepEqual(unravel(5, [2, 3]), [1, 2]);
  assert.deepEqual(unravel(0, []), []);
  assert.deepEqual(unravel(23, [2, 3, 4]), [1, 2, 3]);
});
