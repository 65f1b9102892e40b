import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, scalar, zeros, ones, full, add, mul, sum, exp, noGrad, isGradEnabled, reshape, scale, matmul, backward, accumulateGrad, result, max, takeAlongLast } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';

test('creation helpers and Tensor basics', () => {
  const t = tensor([1, 2, 3, 4, 5, 6], [2, 3], true);
  assert.deepEqual(t.shape, [2, 3]);
  assert.equal(t.size, 6);
  assert.equal(t.ndim, 2);
  assert.equal(t.requiresGrad, true);
  assert.equal(t.toString(), 'Tensor[2, 3] (grad)');
  assert.throws(() => (t.shape as number[]).push(1), TypeError, 'shape is frozen');
  assert.equal(scalar(2.5).item(), 2.5);
  assert.deepEqual(scalar(1).shape, []);
  assert.deepEqual(Array.from(zeros([2, 2]).data), [0, 0, 0, 0]);
  assert.deepEqual(Array.from(ones([3]).data), [1, 1, 1]);
  assert.deepEqual(Array.from(full([2], 7, true).data), [7, 7]);
  assert.equal(full([2], 7, true).requiresGrad, true);
  assert.deepEqual(tensor([1, 2, 3]).shape, [3]);
  assert.deepEqual(zeros([0, 5]).shape, [0, 5]);
  const src = new Float32Array([1, 2]);
  assert.equal(tensor(src).data, src, 'a Float32Array is adopted, not copied');
});

test('bad construction throws naming the shape', () => {
  assert.throws(() => tensor([1, 2, 3], [2, 2]), /Tensor: data has 3 elements but shape \[2, 2\] needs 4/);
  assert.throws(() => zeros([2, -1]), /invalid shape \[2, -1\]: dimensions must be non-negative integers/);
  assert.throws(() => zeros([1.5]), /invalid shape \[1.5\]/);
  assert.throws(() => tensor([1, 2]).item(), /item: tensor of shape \[2\] has 2 elements, expected 1/);
});

test('gradients accumulate across two backward calls until reset', () => {
  const x = tensor([1, -2, 3], [3], true);
  sum(mul(x, x)).backward();
  assert.deepEqual(Array.from(x.grad!), [2, -4, 6]);
  sum(mul(x, x)).backward();
  assert.deepEqual(Array.from(x.grad!), [4, -8, 12], 'second backward adds onto the first');
  sum(scale(x, 3)).backward();
  assert.deepEqual(Array.from(x.grad!), [7, -5, 15]);
  x.grad = null;
  sum(x).backward();
  assert.deepEqual(Array.from(x.grad!), [1, 1, 1]);
});

test('a tensor used several times in the graph receives the sum of its gradients', () => {
  const x = tensor([0.5, -1, 2], [3], true);
  // y = x*x + exp(x) + 3x ; dy/dx = 2x + exp(x) + 3
  const y = sum(add(add(mul(x, x), exp(x)), scale(x, 3)));
  y.backward();
  const want = Array.from(x.data, (v) => 2 * v + Math.exp(v) + 3);
  want.forEach((w, i) => assert.ok(Math.abs(x.grad![i] - w) < 1e-5));
  // diamond: h = 2x used by two branches that rejoin
  const z = tensor([1, 2], [2], true);
  const h = scale(z, 2);
  sum(mul(h, add(h, h))).backward(); // 2 h^2 = 8 z^2 -> 16 z
  assert.deepEqual(Array.from(z.grad!), [16, 32]);
  gradcheck(
    'diamond',
    (t) => {
      const hh = exp(scale(t, 0.5));
      return mul(add(hh, t), hh);
    },
    [randn(new Rng(1), [4])],
  );
});

test('intermediate gradients are freed; leaf gradients stay', () => {
  const x = tensor([1, 2], [2], true);
  const h = mul(x, x);
  const y = sum(h);
  y.backward();
  assert.equal(h.grad, null);
  assert.equal(h.parents, null);
  assert.equal(h.backwardFn, null);
  assert.notEqual(x.grad, null);
});

test('a second backward through a freed graph is an error, not a silently dropped gradient', () => {
  const x = tensor([1, 2, 3], [3], true);
  const h = mul(x, x);
  const l1 = sum(h);
  const l2 = sum(exp(h));
  l1.backward();
  assert.deepEqual(Array.from(x.grad!), [2, 4, 6]);
  assert.throws(() => l2.backward(), /backward: the graph through Tensor\[3\] \(grad\) was already freed by an earlier backward\(\)/);
  assert.deepEqual(Array.from(x.grad!), [2, 4, 6], 'the failed call changes nothing');
  assert.throws(() => l1.backward(), /already freed/);
  // the supported way: one backward of the summed losses
  const y = tensor([1, 2, 3], [3], true);
  const hy = mul(y, y);
  add(sum(hy), sum(exp(hy))).backward();
  Array.from(y.data, (v) => 2 * v + 2 * v * Math.exp(v * v)).forEach((w, i) => assert.ok(Math.abs(y.grad![i] - w) / w < 1e-5));
  // a branch that received no gradient in the first pass is not freed and can still backprop
  const z = tensor([1, 2], [2], true);
  const a = scale(z, 2);
  const b = scale(z, 3);
  sum(a).backward();
  sum(b).backward();
  assert.deepEqual(Array.from(z.grad!), [5, 5]);
});

test('noGrad records nothing, restores the flag (also after a throw), and nests', () => {
  const x = tensor([1, 2], [2], true);
  assert.equal(isGradEnabled(), true);
  const y = noGrad(() => {
    assert.equal(isGradEnabled(), false);
    const inner = noGrad(() => mul(x, x));
    assert.equal(isGradEnabled(), false, 'nested noGrad keeps grad disabled');
    return add(inner, x);
  });
  assert.equal(isGradEnabled(), true);
  assert.equal(y.requiresGrad, false);
  assert.equal(y.parents, null);
  assert.equal(y.backwardFn, null);
  assert.deepEqual(Array.from(y.data), [2, 6]);
  assert.throws(
    () =>
      noGrad(() => {
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.equal(isGradEnabled(), true, 'flag restored after a throw');
  assert.throws(() => sum(y).backward(), /backward: Tensor\[\] does not require grad/);
  assert.equal(x.grad, null);
});

test('backward on a non-scalar needs an explicit gradient of the right size', () => {
  const x = tensor([1, 2, 3, 4], [2, 2], true);
  const y = mul(x, x);
  assert.throws(() => y.backward(), /backward: Tensor\[2, 2\] \(grad\) is not a scalar; pass the output gradient/);
  assert.throws(() => y.backward(new Float32Array(3)), /autograd: gradient of Tensor\[2, 2\] \(grad\) has 3 elements, expected 4/);
  y.backward(new Float32Array([1, 0, 0, 2]));
  assert.deepEqual(Array.from(x.grad!), [2, 0, 0, 16]);
  // a one-element non-0-d tensor counts as a scalar
  const z = tensor([3], [1, 1], true);
  mul(z, z).backward();
  assert.deepEqual(Array.from(z.grad!), [6]);
  // backward on a leaf: the gradient is the seed itself
  const leaf = tensor([5], [], true);
  leaf.backward();
  assert.deepEqual(Array.from(leaf.grad!), [1]);
  assert.throws(() => tensor([1]).backward(), /does not require grad/);
  assert.throws(() => backward(tensor([1, 2], [2]), new Float32Array(2)), /does not require grad/);
});

test('detach cuts the graph but shares data', () => {
  const x = tensor([1, 2], [2], true);
  const h = mul(x, x);
  const d = h.detach();
  assert.equal(d.requiresGrad, false);
  assert.equal(d.parents, null);
  assert.equal(d.data, h.data);
  assert.deepEqual(d.shape, h.shape);
  // y = h * detach(h): gradient only flows through the first factor: d/dx = 2x * h
  sum(mul(h, d)).backward();
  assert.deepEqual(Array.from(x.grad!), [2 * 1 * 1, 2 * 2 * 4]);
});

test('requiresGrad propagates only from inputs that need it; leaves without it get no gradient', () => {
  const a = tensor([1, 2], [2], true);
  const c = tensor([3, 4], [2]);
  const y = sum(mul(a, c));
  assert.equal(y.requiresGrad, true);
  y.backward();
  assert.equal(c.grad, null);
  assert.deepEqual(Array.from(a.grad!), [3, 4]);
  // reshape views share data and route gradients
  const r = reshape(a, [1, 2]);
  assert.equal(r.data, a.data);
  sum(r).backward();
  assert.deepEqual(Array.from(a.grad!), [4, 5]);
});

test('deep graphs do not overflow the stack (iterative topological sort)', () => {
  const x = tensor([1], [1], true);
  let y: Tensor = x;
  for (let i = 0; i < 20000; i++) y = scale(y, 1);
  sum(y).backward();
  assert.deepEqual(Array.from(x.grad!), [1]);
});

test('gradients through a small MLP match finite differences (engine end to end)', () => {
  const rng = new Rng(3);
  gradcheck('mlp', (x, w1, w2) => exp(scale(matmul(mul(matmul(x, w1), matmul(x, w1)), w2), 0.1)), [randn(rng, [3, 4]), randn(rng, [4, 5], true, 0.5), randn(rng, [5, 2], true, 0.5)]);
});

test('accumulateGrad rejects a wrong-size gradient and ignores tensors that need none', () => {
  const t = tensor([1, 2], [2], true);
  assert.throws(() => accumulateGrad(t, new Float32Array(3)), /autograd: gradient of Tensor\[2\] \(grad\) has 3 elements, expected 2/);
  const c = tensor([1, 2], [2]);
  accumulateGrad(c, new Float32Array(2));
  assert.equal(c.grad, null);
  // a non-owned gradient is copied, so the caller may reuse its buffer
  const g = new Float32Array([1, 1]);
  accumulateGrad(t, g);
  g[0] = 100;
  assert.deepEqual(Array.from(t.grad!), [1, 1]);
  // result() under grad with no grad-requiring parent records nothing
  const r = result(new Float32Array(2), [2], [c], () => assert.fail('must not run'));
  assert.equal(r.requiresGrad, false);
});

test('max over an axis of an empty tensor gives an empty result; takeAlongLast rejects scalars', () => {
  assert.deepEqual(max(tensor(new Float32Array(0), [0, 3]), 1).shape, [0]);
  assert.deepEqual(max(tensor(new Float32Array(0), [0, 3]), 1, true).shape, [0, 1]);
  assert.throws(() => max(tensor(new Float32Array(0), [0, 3]), 0), /max: axis 0 of Tensor\[0, 3\] is empty/);
  assert.throws(() => takeAlongLast(tensor([1], []), Int32Array.from([0]), 1), /takeAlongLast: scalar input/);
});
