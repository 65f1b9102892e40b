// The fused MoE ops against finite differences and against the generic ops they replace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Tensor,
  tensor,
  gatherRows,
  combineRows,
  scatterRows,
  swiglu,
  scaledSwiglu,
  scaledGelu,
  geluFused,
  expNeg,
  silu,
  gelu,
  mul,
  indexSelect,
  scatterAdd,
  reshape,
  groupedMatmul,
  expertSwigluFFN,
  noGrad,
  matmul,
  add,
} from '../../src/index.js';
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
  const permW = tensor(
    Array.from(perm, (p) => w.data[p]),
    [5],
  );
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

test('expNeg matches Math.exp(-u) to float32 precision over the whole range', () => {
  let worst = 0;
  for (let i = 0; i <= 200000; i++) {
    const u = i * 5e-4;
    const e = Math.exp(-u);
    if (e > 1e-37) worst = Math.max(worst, Math.abs(expNeg(u) - e) / e);
  }
  assert.ok(worst < 2e-8, `worst relative error ${worst}`);
  assert.equal(expNeg(0), 1);
  assert.equal(expNeg(Infinity), 0);
  assert.ok(Number.isNaN(expNeg(NaN)));
  // saturated activations stay finite and exact at the ends
  const big = tensor([-200, -30, 0, 30, 200], [5]);
  assert.deepEqual(
    Array.from(swiglu(big, tensor([1, 1, 1, 1, 1], [5])).data),
    [-0, -30 * Math.fround(Math.exp(-30) / (1 + Math.exp(-30))), 0, 30, 200].map((v) => Math.fround(v)),
  );
  assert.deepEqual(Array.from(geluFused(big).data), [-0, -0, 0, 30, 200]);
});

test('row-scaled activations equal the activation times the gathered weights; gradcheck includes the weights', () => {
  const rng = new Rng(6);
  const a = randn(rng, [4, 3], true, 2);
  const b = randn(rng, [4, 3]);
  const w = randn(rng, [5]);
  const idx = Int32Array.from([4, 0, 4, 2]);
  const plain = swiglu(a, b).data;
  const scaled = scaledSwiglu(a, b, w, idx).data;
  for (let i = 0; i < 12; i++) assert.ok(Math.abs(scaled[i] - plain[i] * w.data[idx[Math.floor(i / 3)]]) < 1e-5);
  gradcheck('scaledSwiglu', (p, q, r) => scaledSwiglu(p, q, r, idx), [a, b, w]);
  const g = geluFused(a).data;
  const sg = scaledGelu(a, w, idx).data;
  for (let i = 0; i < 12; i++) assert.ok(Math.abs(sg[i] - g[i] * w.data[idx[Math.floor(i / 3)]]) < 1e-5);
  gradcheck('scaledGelu', (p, r) => scaledGelu(p, r, idx), [a, w]);
  assert.throws(() => scaledSwiglu(a, b, w, Int32Array.from([0])), /scaledSwiglu: 1 weight indices for 4 rows/);
  assert.throws(() => scaledGelu(a, w, Int32Array.from([0, 1, 2, 9])), /scaledGelu \(weightIdx\): index 9/);
});

test('scatterRows adds rows into place and its gradient gathers', () => {
  const rng = new Rng(7);
  const y = randn(rng, [5, 3]);
  const rows = Int32Array.from([1, 0, 1, 3, 1]);
  const ones = tensor([1, 1, 1, 1, 1], [5]);
  assertClose(scatterRows(y, rows, 4).data, combineRows(y, rows, 4, ones).data, 0, 0);
  gradcheck('scatterRows', (p) => scatterRows(p, rows, 4), [y]);
});

test('expertSwigluFFN equals gather -> grouped SwiGLU -> scatter (values and all gradients) and passes gradcheck', () => {
  const rng = new Rng(11);
  const [N, d, f, E] = [5, 4, 3, 3];
  const x = randn(rng, [N, d]);
  const w1 = randn(rng, [E, d, f], true, 0.7);
  const w3 = randn(rng, [E, d, f], true, 0.7);
  const w2 = randn(rng, [E, f, d], true, 0.7);
  const wts = randn(rng, [8]);
  // rows grouped by expert (an empty group included), a token used twice, a weight permutation
  const rows = Int32Array.from([0, 3, 1, 1, 4, 2, 0]);
  const sizes = Int32Array.from([3, 0, 4]);
  const widx = Int32Array.from([5, 0, 7, 2, 1, 6, 3]);
  const composed = (a: Tensor, p: Tensor, q: Tensor, r: Tensor, w: Tensor): Tensor => {
    const xs = gatherRows(a, rows);
    return scatterRows(groupedMatmul(scaledSwiglu(groupedMatmul(xs, p, sizes), groupedMatmul(xs, q, sizes), w, widx), r, sizes), rows, N);
  };
  const fused = (a: Tensor, p: Tensor, q: Tensor, r: Tensor, w: Tensor): Tensor => expertSwigluFFN(a, rows, sizes, p, q, r, w, widx);
  const inputs = [x, w1, w3, w2, wts];
  const g = rng.fillNormal(new Float32Array(N * d));
  const grads = (fn: typeof fused): Float32Array[] => {
    for (const t of inputs) t.grad = null;
    const y = fn(x, w1, w3, w2, wts);
    y.backward(g);
    return [y.data, ...inputs.map((t) => t.grad!)];
  };
  const want = grads(composed);
  // twice: the second call runs on buffers the first one returned to the pool
  for (let rep = 0; rep < 2; rep++) {
    const got = grads(fused);
    got.forEach((v, i) => assertClose(v, want[i], 1e-5, 1e-4, i === 0 ? 'output' : `gradient ${i - 1}`));
  }
  assertClose(noGrad(() => fused(x, w1, w3, w2, wts)).data, want[0], 1e-5, 1e-4, 'no-grad output');
  gradcheck('expertSwigluFFN', fused, inputs);
  // only some inputs needing a gradient
  const xc = new Tensor(x.data, x.shape);
  gradcheck('expertSwigluFFN (weights only)', (p, q, r) => expertSwigluFFN(xc, rows, sizes, p, q, r, new Tensor(wts.data, wts.shape), widx), [w1, w3, w2]);
  assert.throws(() => expertSwigluFFN(x, rows, Int32Array.from([3, 0, 3]), w1, w3, w2, wts, widx), /expertSwigluFFN: group sizes add up to 6 rows but 7/);
  assert.throws(() => expertSwigluFFN(x, Int32Array.from([0, 3, 1, 1, 9, 2, 0]), sizes, w1, w3, w2, wts, widx), /expertSwigluFFN: index 9 at position 4/);
  assert.throws(() => expertSwigluFFN(x, rows, sizes, w1, w3, w1, wts, widx), /expertSwigluFFN: w2 \[3, 4, 3\] must be \[3, 3, 4\]/);
});

test('expertSwigluFFN with fused shared experts equals routed op + a separate SwiGLU FFN (values, all gradients, gradcheck)', () => {
  const rng = new Rng(12);
  const [N, d, f, E] = [5, 4, 3, 3];
  const x = randn(rng, [N, d]);
  const w1 = randn(rng, [E, d, f], true, 0.7);
  const w3 = randn(rng, [E, d, f], true, 0.7);
  const w2 = randn(rng, [E, f, d], true, 0.7);
  const wts = randn(rng, [8]);
  const s1 = randn(rng, [d, f], true, 0.7);
  const s3 = randn(rng, [d, f], true, 0.7);
  const s2 = randn(rng, [f, d], true, 0.7);
  const rows = Int32Array.from([0, 3, 1, 1, 4, 2, 0]);
  const sizes = Int32Array.from([3, 0, 4]);
  const widx = Int32Array.from([5, 0, 7, 2, 1, 6, 3]);
  type Fn = (a: Tensor, p: Tensor, q: Tensor, r: Tensor, w: Tensor, u: Tensor, v: Tensor, z: Tensor) => Tensor;
  const separate: Fn = (a, p, q, r, w, u, v, z) => add(expertSwigluFFN(a, rows, sizes, p, q, r, w, widx), matmul(swiglu(matmul(a, u), matmul(a, v)), z));
  const fused: Fn = (a, p, q, r, w, u, v, z) => expertSwigluFFN(a, rows, sizes, p, q, r, w, widx, { w1: u, w3: v, w2: z });
  const inputs = [x, w1, w3, w2, wts, s1, s3, s2];
  const g = rng.fillNormal(new Float32Array(N * d));
  const grads = (fn: Fn): Float32Array[] => {
    for (const t of inputs) t.grad = null;
    const y = fn(x, w1, w3, w2, wts, s1, s3, s2);
    y.backward(g);
    return [y.data, ...inputs.map((t) => t.grad!)];
  };
  const want = grads(separate);
  for (let rep = 0; rep < 2; rep++) {
    const got = grads(fused);
    got.forEach((v, i) => assertClose(v, want[i], 1e-5, 1e-4, i === 0 ? 'output' : `gradient ${i - 1}`));
  }
  assertClose(noGrad(() => fused(x, w1, w3, w2, wts, s1, s3, s2)).data, want[0], 1e-5, 1e-4, 'no-grad output');
  gradcheck('expertSwigluFFN (fused shared)', fused, inputs);
  // no routed assignments at all: the shared group alone
  const none = expertSwigluFFN(x, new Int32Array(0), new Int32Array(E), w1, w3, w2, wts, new Int32Array(0), { w1: s1, w3: s3, w2: s2 });
  assertClose(none.data, noGrad(() => matmul(swiglu(matmul(x, s1), matmul(x, s3)), s2)).data, 1e-5, 1e-4, 'shared only');
  assert.throws(() => expertSwigluFFN(x, rows, sizes, w1, w3, w2, wts, widx, { w1: s1, w3: s3, w2: s1 }), /expertSwigluFFN: shared.w2 \[4, 3\] must be \[3, 4\]/);
});
