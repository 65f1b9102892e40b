// The fused MoE ops against finite differences and against the generic ops they replace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, gatherRows, combineRows, swiglu, geluFused, silu, gelu, mul, indexSelect, scatterAdd, reshape } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

test('gatherRows matches indexSelect and passes gradcheck (repeated rows accumulate)', () => {
  const rng = new Rng(1);
  const x = randn(rng, [4, 3]);
  const idx = Int32Array.from([2, 0, 2, 3, 1, 2]);
  assertClose(gatherRows(x, idx).data, indexSelect(x, idx).data, 0, 0);
  gradcheck('gatherRows', (a) => gatherRows(a, idx), [x]);
});

test('combineRows with a weight permutation matches scatterAdd with permuted weights; gradcheck in y and weights', () => {
  const rng = new Rng(2);
  const y = randn(rng, [5, 3]);
  const w = randn(rng, [5]);
  const rows = Int32Array.from([1, 0, 1, 3, 1]);
  const perm = Int32Array.from([4, 2, 0, 1, 3]);
  const permW = tensor(Array.from(perm, (p) => w.data[p]), [5]);
  assertClose(combineRows(y, rows, 4, w, perm).data, scatterAdd(y, rows, 4, permW).data, 1e-6, 1e-6);
  gradcheck('combineRows', (a, b) => combineRows(a, rows, 4, b, perm), [y, w]);
  gradcheck('combineRows (identity weights)', (a, b) => combineRows(a, rows, 4, b), [y, w]);
  // a weight used by two rows gets both contributions
  const shared = Int32Array.from([0, 0, 1, 1, 2]);
  gradcheck('combineRows (shared weights)', (a, b) => combineRows(a, rows, 4, b, shared), [y, w]);
});

test('swiglu equals silu(a) * b and passes gradcheck', () => {
  const rng = new Rng(3);
  const a = randn(rng, [3, 4], true, 2);
  const b = randn(rng, [3, 4]);
  assertClose(swiglu(a, b).data, mul(silu(a), b).data, 1e-6, 1e-5);
  gradcheck('swiglu', swiglu, [a, b]);
  const bConst = new Tensor(b.data, b.shape);
  gradcheck('swiglu (gate only)', (p) => swiglu(p, bConst), [a]);
  const aConst = new Tensor(a.data, a.shape);
  gradcheck('swiglu (value only)', (q) => swiglu(aConst, q), [b]);
});

test('geluFused equals gelu and passes gradcheck', () => {
  const rng = new Rng(4);
  const x = randn(rng, [2, 5], true, 2);
  assertClose(geluFused(x).data, gelu(x).data, 1e-6, 1e-5);
  gradcheck('geluFused', geluFused, [x]);
});

test('fused ops reject bad shapes and indices with named errors', () => {
  const x = tensor([1, 2, 3, 4], [2, 2]);
  assert.throws(() => gatherRows(x, Int32Array.from([0, 2])), /gatherRows: index 2 at position 1 out of range \[0, 2\)/);
  assert.throws(() => gatherRows(reshape(x, [4]), Int32Array.from([0])), /gatherRows: expected a 2-D/);
  assert.throws(() => combineRows(x, Int32Array.from([0]), 2, tensor([1, 1])), /combineRows: 1 row indices for 2 rows/);
  assert.throws(() => combineRows(x, Int32Array.from([0, 5]), 2, tensor([1, 1])), /combineRows: index 5/);
  assert.throws(() => combineRows(x, Int32Array.from([0, 1]), 2, tensor([1, 1, 1])), /one value per row/);
  assert.throws(() => combineRows(x, Int32Array.from([0, 1]), 2, tensor([1]), Int32Array.from([0, 1])), /combineRows \(weightIdx\): index 1/);
  assert.throws(() => swiglu(x, tensor([1, 2, 3, 4], [4])), /swiglu: gate \[2, 2\] and value \[4\]/);
});
