import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, reshape, permute, transpose, concat, slice, split, mul, sum } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';

/** Naive permute through multi-indices. */
function naivePermute(x: Tensor, perm: number[]): number[] {
  const outShape = perm.map((p) => x.shape[p]);
  const n = x.size;
  const out: number[] = [];
  const strides = x.shape.map((_, i) => x.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < n; i++) {
    let r = i;
    const oi = new Array<number>(outShape.length);
    for (let d = outShape.length - 1; d >= 0; d--) {
      oi[d] = r % outShape[d];
      r = Math.floor(r / outShape[d]);
    }
    let src = 0;
    for (let d = 0; d < perm.length; d++) src += oi[d] * strides[perm[d]];
    out.push(x.data[src]);
  }
  return out;
}

test('reshape: view semantics, -1 inference, gradient', () => {
  const rng = new Rng(40);
  const x = randn(rng, [2, 3, 4]);
  const y = reshape(x, [4, -1]);
  assert.deepEqual(y.shape, [4, 6]);
  assert.equal(y.data, x.data, 'reshape is zero-copy');
  assert.deepEqual(reshape(x, [-1]).shape, [24]);
  assert.deepEqual(reshape(x, [2, 1, -1, 3]).shape, [2, 1, 4, 3]);
  assert.deepEqual(reshape(tensor([5], [1]), []).shape, []);
  assert.deepEqual(reshape(tensor(new Float32Array(0), [0, 3]), [3, 0]).shape, [3, 0]);
  assert.deepEqual(reshape(tensor(new Float32Array(0), [0, 3]), [-1, 3]).shape, [0, 3]);
  gradcheck('reshape', (t) => reshape(t, [6, 4]), [x]);
  gradcheck('reshape -1', (t) => reshape(t, [-1, 2]), [x]);
});

test('reshape: bad shapes throw naming the op and shapes', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => reshape(x, [4, 2]), /reshape: cannot reshape Tensor\[2, 3\] \(6 elements\) to \[4, 2\]/);
  assert.throws(() => reshape(x, [-1, 4]), /reshape: cannot reshape Tensor\[2, 3\] to \[-1, 4\]/);
  assert.throws(() => reshape(x, [-1, -1]), /reshape: more than one -1 in \[-1, -1\]/);
  assert.throws(() => reshape(x, [-1, 0]), /reshape: cannot reshape/);
  assert.throws(() => reshape(x, [2, 1.5, 2]), /invalid shape \[2, 1.5, 2\]|reshape/);
  assert.throws(() => reshape(x, [-2, -3]), /invalid shape|reshape/);
});

test('permute/transpose: forward against a naive reference, gradients', () => {
  const rng = new Rng(41);
  const x = randn(rng, [2, 3, 4]);
  for (const perm of [
    [0, 1, 2],
    [2, 0, 1],
    [1, 2, 0],
    [2, 1, 0],
    [0, 2, 1],
    [-1, 0, 1],
  ]) {
    const p = perm.map((a) => (a < 0 ? a + 3 : a));
    const y = permute(x, perm);
    assert.deepEqual(
      y.shape,
      p.map((a) => x.shape[a]),
    );
    assert.deepEqual(Array.from(y.data), naivePermute(x, p), `permute ${perm}`);
    gradcheck(`permute ${perm}`, (t) => permute(t, perm), [x]);
  }
  const m = randn(rng, [3, 5]);
  const mt = transpose(m);
  assert.deepEqual(mt.shape, [5, 3]);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) assert.equal(mt.data[j * 3 + i], m.data[i * 5 + j]);
  assert.deepEqual(Array.from(transpose(x, 0, 2).data), naivePermute(x, [2, 1, 0]));
  assert.deepEqual(Array.from(transpose(transpose(x, 0, 1), 0, 1).data), Array.from(x.data));
  gradcheck('transpose', (t) => transpose(t, 0, -1), [x]);
  // size-1 and empty dims
  assert.deepEqual(permute(randn(rng, [1, 0, 3]), [2, 1, 0]).shape, [3, 0, 1]);
  assert.deepEqual(Array.from(permute(tensor([1, 2, 3], [1, 3, 1]), [2, 1, 0]).data), [1, 2, 3]);
  gradcheck('permute size-1', (t) => permute(t, [1, 0, 2]), [randn(rng, [1, 3, 2])]);
});

test('permute/transpose: invalid permutations throw naming the op', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => permute(x, [0, 0]), /permute: \[0, 0\] is not a permutation of the 2 axes of Tensor\[2, 3\]/);
  assert.throws(() => permute(x, [0]), /permute: \[0\] is not a permutation/);
  assert.throws(() => permute(x, [0, 2]), /permute: axis 2 out of range/);
  assert.throws(() => transpose(tensor([1, 2], [2])), /transpose: Tensor\[2\] has fewer than 2 dims/);
  assert.throws(() => transpose(x, 0, 3), /transpose: axis 3 out of range/);
});

test('concat: forward on every axis, gradients to each part, a tensor used twice', () => {
  const rng = new Rng(42);
  const a = randn(rng, [2, 3, 2]);
  const b = randn(rng, [2, 1, 2]);
  const c = randn(rng, [2, 0, 2]);
  const y = concat([a, b, c], 1);
  assert.deepEqual(y.shape, [2, 4, 2]);
  for (let o = 0; o < 2; o++) {
    for (let j = 0; j < 4; j++) {
      for (let i = 0; i < 2; i++) {
        const expected = j < 3 ? a.data[(o * 3 + j) * 2 + i] : b.data[o * 2 + i];
        assert.equal(y.data[(o * 4 + j) * 2 + i], expected);
      }
    }
  }
  gradcheck('concat axis 1', (p, q, r) => concat([p, q, r], 1), [a, b, c]);
  gradcheck('concat axis -1', (p, q) => concat([p, q], -1), [randn(rng, [3, 2]), randn(rng, [3, 4])]);
  gradcheck('concat axis 0', (p, q) => concat([p, q], 0), [randn(rng, [1, 3]), randn(rng, [2, 3])]);
  gradcheck('concat [x, x]', (p) => concat([p, p], 0), [randn(rng, [2, 3])]);
  const nog = randn(rng, [1, 3], false);
  gradcheck('concat with a constant', (p, q) => concat([q, p], 0), [randn(rng, [2, 3]), nog]);
  assert.deepEqual(concat([a], 0).shape, [2, 3, 2]);
});

test('concat: mismatched shapes and bad arguments throw naming the op and shapes', () => {
  const a = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => concat([a, tensor(new Float32Array(4), [2, 2])], 0), /concat: shapes \[2, 3\], \[2, 2\] differ outside axis 0/);
  assert.throws(() => concat([a, tensor(new Float32Array(3), [3])], 1), /concat: shapes \[2, 3\], \[3\]/);
  assert.throws(() => concat([], 0), /concat: no tensors given/);
  assert.throws(() => concat([a, a], 2), /concat: axis 2 out of range/);
});

test('slice/split: forward, gradients, empty pieces', () => {
  const rng = new Rng(43);
  const x = randn(rng, [3, 5, 2]);
  const s = slice(x, 1, 1, 4);
  assert.deepEqual(s.shape, [3, 3, 2]);
  for (let o = 0; o < 3; o++) for (let j = 0; j < 3; j++) for (let i = 0; i < 2; i++) assert.equal(s.data[(o * 3 + j) * 2 + i], x.data[(o * 5 + j + 1) * 2 + i]);
  gradcheck('slice axis 1', (t) => slice(t, 1, 1, 4), [x]);
  gradcheck('slice axis -1', (t) => slice(t, -1, 1, 2), [x]);
  gradcheck('slice axis 0', (t) => slice(t, 0, 2, 3), [x]);
  assert.deepEqual(slice(x, 1, 2, 2).shape, [3, 0, 2]);
  assert.deepEqual(slice(x, 1, 0, 5).data, x.data);

  const parts = split(x, [2, 0, 3], 1);
  assert.deepEqual(
    parts.map((p) => p.shape),
    [
      [3, 2, 2],
      [3, 0, 2],
      [3, 3, 2],
    ],
  );
  assert.deepEqual(Array.from(concat(parts, 1).data), Array.from(x.data), 'split then concat is the identity');
  gradcheck(
    'split',
    (t) => {
      const [p, , r] = split(t, [2, 0, 3], 1);
      // combine the pieces unevenly so a gradient routed to the wrong piece shows up
      return concat([mul(p, p), r], 1);
    },
    [x],
  );
  assert.deepEqual(split(x, [3], 0)[0].shape, [3, 5, 2]);
});

test('slice/split: invalid ranges throw naming the op and shape', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => slice(x, 1, 2, 4), /slice: range \[2, 4\) invalid for axis 1 of Tensor\[2, 3\]/);
  assert.throws(() => slice(x, 1, -1, 2), /slice: range \[-1, 2\) invalid/);
  assert.throws(() => slice(x, 1, 2, 1), /slice: range \[2, 1\) invalid/);
  assert.throws(() => slice(x, 0, 0.5, 1), /slice: range \[0.5, 1\) invalid/);
  assert.throws(() => slice(x, 2, 0, 1), /slice: axis 2 out of range/);
  assert.throws(() => split(x, [1, 1], 1), /split: sizes \[1, 1\] do not add up to axis 1 of Tensor\[2, 3\]/);
  assert.throws(() => split(x, [4, -1], 1), /split: sizes \[4, -1\]/);
});

test('shape ops compose: a gradient through reshape -> transpose -> slice -> sum', () => {
  const rng = new Rng(44);
  gradcheck('compose', (t) => sum(mul(slice(transpose(reshape(t, [3, 4])), 0, 1, 3), slice(transpose(reshape(t, [3, 4])), 0, 2, 4)), 1), [randn(rng, [12])]);
});
