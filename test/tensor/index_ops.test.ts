import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, indexSelect, scatterAdd, takeAlongLast, topk, topkIndices, embedding, mul } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const I = (v: number[]) => Int32Array.from(v);

test('indexSelect: rows with repeats, gradient scatter-adds back', () => {
  const rng = new Rng(50);
  const x = randn(rng, [4, 3]);
  const idx = I([2, 0, 2, 3, 2]);
  const y = indexSelect(x, idx);
  assert.deepEqual(y.shape, [5, 3]);
  for (let i = 0; i < 5; i++) assert.deepEqual(Array.from(y.data.subarray(i * 3, i * 3 + 3)), Array.from(x.data.subarray(idx[i] * 3, idx[i] * 3 + 3)));
  gradcheck('indexSelect', (t) => indexSelect(t, idx), [x]);
  y.backward(new Float32Array(15).fill(1));
  assert.deepEqual(Array.from(x.grad!), [1, 1, 1, 0, 0, 0, 3, 3, 3, 1, 1, 1], 'row 2 picked three times, row 1 never');
  gradcheck('indexSelect 3-D', (t) => indexSelect(t, I([1, 1, 0])), [randn(rng, [2, 2, 2])]);
  gradcheck('indexSelect 1-D', (t) => indexSelect(t, I([3, 0])), [randn(rng, [4])]);
  assert.deepEqual(indexSelect(x, I([])).shape, [0, 3]);
  assert.deepEqual(indexSelect(tensor(new Float32Array(0), [3, 0]), I([1, 2])).shape, [2, 0]);
  assert.deepEqual(indexSelect(tensor(new Float32Array(0), [0, 3]), I([])).shape, [0, 3]);
});

test('indexSelect: bad indices throw naming the op, index and position', () => {
  const x = tensor(new Float32Array(6), [3, 2]);
  assert.throws(() => indexSelect(x, I([0, 3])), /indexSelect: index 3 at position 1 out of range \[0, 3\)/);
  assert.throws(() => indexSelect(x, I([-1])), /indexSelect: index -1 at position 0/);
  assert.throws(() => indexSelect(tensor([1], []), I([0])), /indexSelect: scalar input/);
});

test('scatterAdd: repeated indices accumulate; gradients for x and weights', () => {
  const rng = new Rng(51);
  const x = randn(rng, [5, 2]);
  const idx = I([1, 3, 1, 1, 0]);
  const y = scatterAdd(x, idx, 4);
  assert.deepEqual(y.shape, [4, 2]);
  const ref = new Float64Array(8);
  for (let i = 0; i < 5; i++) for (let j = 0; j < 2; j++) ref[idx[i] * 2 + j] += x.data[i * 2 + j];
  assertClose(y.data, ref, 1e-6, 1e-6, 'scatterAdd');
  assert.deepEqual(Array.from(y.data.subarray(4, 6)), [0, 0], 'row 2 receives nothing');
  gradcheck('scatterAdd', (t) => scatterAdd(t, idx, 4), [x]);
  const w = randn(rng, [5]);
  const yw = scatterAdd(x, idx, 4, w);
  const refw = new Float64Array(8);
  for (let i = 0; i < 5; i++) for (let j = 0; j < 2; j++) refw[idx[i] * 2 + j] += w.data[i] * x.data[i * 2 + j];
  assertClose(yw.data, refw, 1e-6, 1e-6, 'weighted scatterAdd');
  gradcheck('scatterAdd weighted', (t, u) => scatterAdd(t, idx, 4, u), [x, w]);
  gradcheck('scatterAdd weights only', (t, u) => scatterAdd(t, idx, 4, u), [randn(rng, [5, 2], false), w]);
  gradcheck('scatterAdd [5,1] weights', (t, u) => scatterAdd(t, idx, 4, u), [x, randn(rng, [5, 1])]);
  gradcheck('scatterAdd 3-D', (t) => scatterAdd(t, I([0, 0, 1]), 2), [randn(rng, [3, 2, 2])]);
  // combine = gather's adjoint: <gather(x, idx), g> == <x, scatterAdd(g, idx)>
  const base = randn(rng, [4, 2], false);
  const g = randn(rng, [5, 2], false);
  const lhs = mul(indexSelect(base, idx), g).data.reduce((a, b) => a + b, 0);
  const rhs = mul(base, scatterAdd(g, idx, 4)).data.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(lhs - rhs) < 1e-4, `adjoint identity ${lhs} vs ${rhs}`);
  // empty inputs
  assert.deepEqual(Array.from(scatterAdd(tensor(new Float32Array(0), [0, 2]), I([]), 3).data), [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(scatterAdd(tensor(new Float32Array(0), [0, 2]), I([]), 0).shape, [0, 2]);
});

test('scatterAdd: bad arguments throw naming the op and shapes', () => {
  const x = tensor(new Float32Array(6), [3, 2]);
  assert.throws(() => scatterAdd(x, I([0, 1]), 2), /scatterAdd: 2 indices for Tensor\[3, 2\] \(first dim must match\)/);
  assert.throws(() => scatterAdd(x, I([0, 1, 2]), 2), /scatterAdd: index 2 at position 2 out of range \[0, 2\)/);
  assert.throws(() => scatterAdd(x, I([0, 1, 0]), 2, tensor([1, 2], [2])), /scatterAdd: weights Tensor\[2\] must have one value per row \(3\)/);
});

test('takeAlongLast: forward and gradient with repeated picks', () => {
  const rng = new Rng(52);
  const x = randn(rng, [2, 3, 4]);
  const idx = I([0, 3, 1, 1, 2, 2, 3, 0, 0, 1, 2, 3]);
  const y = takeAlongLast(x, idx, 2);
  assert.deepEqual(y.shape, [2, 3, 2]);
  for (let r = 0; r < 6; r++) for (let j = 0; j < 2; j++) assert.equal(y.data[r * 2 + j], x.data[r * 4 + idx[r * 2 + j]]);
  gradcheck('takeAlongLast', (t) => takeAlongLast(t, idx, 2), [x]);
  assert.throws(() => takeAlongLast(x, I([0, 1]), 2), /takeAlongLast: 2 indices, expected 6 rows x 2/);
  assert.throws(() => takeAlongLast(x, new Int32Array(12).fill(4), 2), /takeAlongLast: index 4 at position 0 out of range \[0, 4\)/);
});

test('topk: values descending, indices, ties to the lower index, NaN never wins', () => {
  const x = tensor([3, 1, 4, 1, 5, 9, 2, 6, 2, 2, 2, 2], [2, 6], true);
  const { values, indices } = topk(x, 3);
  assert.deepEqual(values.shape, [2, 3]);
  assert.deepEqual(Array.from(indices), [5, 4, 2, 1, 0, 2]);
  assert.deepEqual(Array.from(values.data), [9, 5, 4, 6, 2, 2]);
  // ties: equal values keep index order
  assert.deepEqual(Array.from(topkIndices(new Float32Array([1, 2, 2, 1, 2]), 1, 5, 4)), [1, 2, 4, 0]);
  assert.deepEqual(Array.from(topkIndices(new Float32Array([0, 0, 0]), 1, 3, 2)), [0, 1]);
  assert.deepEqual(Array.from(topkIndices(new Float32Array([NaN, 1, NaN, -Infinity]), 1, 4, 2)), [1, 0]);
  assert.deepEqual(Array.from(topkIndices(new Float32Array([-Infinity, -Infinity]), 1, 2, 2)), [0, 1]);
  // k = len is a full stable descending sort; k = 0 is empty
  const rng = new Rng(53);
  for (let trial = 0; trial < 20; trial++) {
    const len = 1 + rng.int(9);
    const data = new Float32Array(len).map(() => rng.int(4)); // many ties
    const got = Array.from(topkIndices(data, 1, len, len));
    const want = Array.from({ length: len }, (_, i) => i).sort((a, b) => data[b] - data[a] || a - b);
    assert.deepEqual(got, want, `sort of ${Array.from(data)}`);
    const k = rng.int(len + 1);
    assert.deepEqual(Array.from(topkIndices(data, 1, len, k)), want.slice(0, k), `top-${k} of ${Array.from(data)}`);
  }
  assert.deepEqual(topk(x, 0).values.shape, [2, 0]);
  // gradient flows only to the selected elements
  values.backward(new Float32Array([1, 2, 3, 4, 5, 6]));
  assert.deepEqual(Array.from(x.grad!), [0, 0, 3, 0, 2, 1, 5, 4, 6, 0, 0, 0]);
  const z = randn(rng, [3, 5]);
  z.data.set(Array.from(z.data, (_, i) => ((i * 37) % 15) * 0.1));
  gradcheck('topk values', (t) => topk(t, 2).values, [z]);
});

test('topk: batched rows, size-1 and empty dims, bad k', () => {
  const x = tensor([1, 2, 3, 6, 5, 4], [2, 1, 3]);
  const { values, indices } = topk(x, 1);
  assert.deepEqual(values.shape, [2, 1, 1]);
  assert.deepEqual(Array.from(indices), [2, 0]);
  assert.deepEqual(topk(tensor(new Float32Array(0), [0, 4]), 2).values.shape, [0, 2]);
  assert.deepEqual(topk(tensor(new Float32Array(0), [3, 0]), 0).values.shape, [3, 0]);
  assert.throws(() => topk(x, 4), /topk: k=4 out of range for a last axis of 3/);
  assert.throws(() => topk(x, -1), /topk: k=-1 out of range/);
  assert.throws(() => topk(x, 1.5), /topk: k=1.5 out of range/);
  assert.throws(() => topk(tensor([1], []), 1), /topk: scalar input/);
});

test('embedding: lookup, ids shape, gradient accumulates on repeated ids', () => {
  const rng = new Rng(54);
  const w = randn(rng, [5, 3]);
  const ids = I([4, 0, 4, 2, 1, 4]);
  const y = embedding(w, ids, [2, 3]);
  assert.deepEqual(y.shape, [2, 3, 3]);
  for (let i = 0; i < 6; i++) assert.deepEqual(Array.from(y.data.subarray(i * 3, i * 3 + 3)), Array.from(w.data.subarray(ids[i] * 3, ids[i] * 3 + 3)));
  assert.deepEqual(embedding(w, ids).shape, [6, 3]);
  gradcheck('embedding', (t) => embedding(t, ids, [2, 3]), [w]);
  assert.throws(() => embedding(w, ids, [4, 2]), /embedding: ids shape \[4, 2\] does not match 6 ids/);
  assert.throws(() => embedding(tensor(new Float32Array(6), [6]), ids), /embedding: weight must be \[vocab x dim\], got Tensor\[6\]/);
  assert.throws(() => embedding(w, I([5])), /indexSelect: index 5 at position 0 out of range \[0, 5\)/);
});
