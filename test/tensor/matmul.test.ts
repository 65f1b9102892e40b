import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, matmul, linear, groupedMatmul, transpose } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** Naive a[m,k] x b[k,n] (or b[n,k] with transB) at given offsets, float64. */
function naiveMM(a: Float32Array, ao: number, b: Float32Array, bo: number, m: number, k: number, n: number, transB: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ao + i * k + p] * (transB ? b[bo + j * k + p] : b[bo + p * n + j]);
      out.push(s);
    }
  }
  return out;
}

function naiveBatched(a: Tensor, b: Tensor, transB: boolean): number[] {
  const m = a.shape[a.ndim - 2];
  const k = a.shape[a.ndim - 1];
  const n = transB ? b.shape[b.ndim - 2] : b.shape[b.ndim - 1];
  const batch = a.size / (m * k || 1);
  const bb = b.ndim === 2;
  const out: number[] = [];
  for (let i = 0; i < batch; i++) out.push(...naiveMM(a.data, i * m * k, b.data, bb ? 0 : i * k * n, m, k, n, transB));
  return out;
}

test('matmul: 2-D, batched, shared (broadcast) b, transB — forward vs naive and gradients', () => {
  const rng = new Rng(60);
  const cases: [number[], number[], boolean][] = [
    [[3, 4], [4, 2], false],
    [[3, 4], [2, 4], true],
    [[2, 3, 4], [2, 4, 5], false],
    [[2, 3, 4], [2, 5, 4], true],
    [[2, 2, 3, 4], [4, 2], false],
    [[2, 3, 4], [5, 4], true],
    [[2, 1, 3, 2], [2, 1, 2, 3], false],
    [[1, 1], [1, 1], false],
    [[1, 5], [5, 1], false],
    [[4, 1], [1, 3], false],
    [[2, 1, 4], [4, 3], false],
  ];
  for (const [sa, sb, transB] of cases) {
    const a = randn(rng, sa);
    const b = randn(rng, sb);
    const y = matmul(a, b, { transB });
    const m = sa[sa.length - 2];
    const n = transB ? sb[sb.length - 2] : sb[sb.length - 1];
    const what = `matmul ${JSON.stringify(sa)} x ${JSON.stringify(sb)}${transB ? ' transB' : ''}`;
    assert.deepEqual(y.shape, [...sa.slice(0, -2), m, n], what);
    assertClose(y.data, naiveBatched(a, b, transB), 1e-5, 1e-5, what);
    gradcheck(what, (p, q) => matmul(p, q, { transB }), [a, b]);
    gradcheck(`${what} (a only)`, (p, q) => matmul(p, q, { transB }), [a, randn(rng, sb, false)]);
    gradcheck(`${what} (b only)`, (p, q) => matmul(p, q, { transB }), [randn(rng, sa, false), b]);
  }
  // transB equals an explicit transpose
  const a = randn(rng, [3, 4]);
  const b = randn(rng, [5, 4]);
  assertClose(matmul(a, b, { transB: true }).data, matmul(a, transpose(b)).data, 1e-6, 1e-6);
  gradcheck('matmul(x, x^T)', (p) => matmul(p, p, { transB: true }), [randn(rng, [3, 4])]);
});

test('matmul: empty dims give correctly shaped zeros and zero/empty gradients', () => {
  const rng = new Rng(61);
  const cases: [number[], number[]][] = [
    [
      [0, 4],
      [4, 3],
    ],
    [
      [3, 0],
      [0, 2],
    ],
    [
      [3, 4],
      [4, 0],
    ],
    [
      [0, 3, 4],
      [0, 4, 2],
    ],
    [
      [2, 0, 4],
      [4, 3],
    ],
  ];
  for (const [sa, sb] of cases) {
    const a = randn(rng, sa);
    const b = randn(rng, sb);
    const y = matmul(a, b);
    const shape = [...sa.slice(0, -1), sb[sb.length - 1]];
    assert.deepEqual(y.shape, shape, `${JSON.stringify(sa)} x ${JSON.stringify(sb)}`);
    assert.ok(y.data.every((v) => v === 0));
    if (y.requiresGrad) y.backward(new Float32Array(y.size).fill(1));
    for (const t of [a, b]) assert.ok(t.grad === null || t.grad.every((v) => v === 0), `zero grad for ${JSON.stringify(t.shape)}`);
  }
  // k = 0: a product over nothing is 0, gradients are empty
  const y = matmul(randn(rng, [3, 0]), randn(rng, [0, 2]));
  assert.deepEqual(Array.from(y.data), [0, 0, 0, 0, 0, 0]);
});

test('matmul: shape errors name the op and both shapes', () => {
  const a = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => matmul(a, tensor(new Float32Array(8), [4, 2])), /matmul: inner dimensions differ: \[2, 3\] x \[4, 2\]/);
  assert.throws(() => matmul(a, tensor(new Float32Array(6), [2, 3]), { transB: false }), /matmul: inner dimensions differ: \[2, 3\] x \[2, 3\]/);
  assert.throws(() => matmul(a, tensor(new Float32Array(8), [4, 2]), { transB: true }), /matmul: inner dimensions differ: \[2, 3\] x \[4, 2\] \(b transposed\)/);
  assert.throws(() => matmul(tensor([1, 2, 3], [3]), a), /matmul: operands need at least 2 dims, got \[3\] and \[2, 3\]/);
  assert.throws(() => matmul(tensor(new Float32Array(12), [2, 2, 3]), tensor(new Float32Array(18), [3, 3, 2])), /matmul: batch dims differ: \[2, 2, 3\] x \[3, 3, 2\]/);
  assert.throws(() => matmul(a, tensor(new Float32Array(12), [2, 3, 2])), /matmul: batch dims differ: \[2, 3\] x \[2, 3, 2\]/);
});

test('linear: with and without bias, any leading dims, gradients for x, w, bias', () => {
  const rng = new Rng(62);
  for (const xs of [[3, 4], [2, 3, 4], [4], [1, 1, 4], [0, 4]]) {
    const x = randn(rng, xs);
    const w = randn(rng, [5, 4]);
    const bias = randn(rng, [5]);
    const y = linear(x, w, bias);
    assert.deepEqual(y.shape, [...xs.slice(0, -1), 5]);
    const rows = x.size / 4;
    const ref: number[] = [];
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < 5; o++) {
        let s = bias.data[o];
        for (let i = 0; i < 4; i++) s += x.data[r * 4 + i] * w.data[o * 4 + i];
        ref.push(s);
      }
    assertClose(y.data, ref, 1e-5, 1e-5, `linear ${JSON.stringify(xs)}`);
    assertClose(
      linear(x, w).data,
      ref.map((v, i) => v - bias.data[i % 5]),
      1e-5,
      1e-5,
      'linear without bias',
    );
    if (x.size > 0) {
      gradcheck(`linear ${JSON.stringify(xs)}`, (p, q, r) => linear(p, q, r), [x, w, bias]);
      gradcheck(`linear no bias ${JSON.stringify(xs)}`, (p, q) => linear(p, q, null), [x, w]);
      gradcheck(`linear bias only ${JSON.stringify(xs)}`, (p, q, r) => linear(p, q, r), [randn(rng, xs, false), randn(rng, [5, 4], false), bias]);
    }
  }
});

test('linear: mismatched shapes throw naming the op and shapes', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => linear(x, tensor(new Float32Array(8), [2, 4])), /linear: input \[2, 3\] does not match weight \[2, 4\] \(\[out, in\]\)/);
  assert.throws(() => linear(x, tensor(new Float32Array(3), [3])), /linear: input \[2, 3\] does not match weight \[3\]/);
  assert.throws(() => linear(x, tensor(new Float32Array(6), [2, 3]), tensor([1, 2, 3], [3])), /linear: bias \[3\] does not match output \[2, 2\]/);
});

/** Naive grouped matmul. */
function naiveGrouped(x: Tensor, w: Tensor, sizes: number[], transB: boolean): number[] {
  const k = x.shape[1];
  const n = transB ? w.shape[1] : w.shape[2];
  const out: number[] = [];
  let row = 0;
  sizes.forEach((s, e) => {
    out.push(...naiveMM(x.data, row * k, w.data, e * k * n, s, k, n, transB));
    row += s;
  });
  return out;
}

test('groupedMatmul: zero-size groups, transB, forward vs naive and gradients', () => {
  const rng = new Rng(63);
  const cases: [number[], boolean][] = [
    [[2, 0, 3, 1], false],
    [[2, 0, 3, 1], true],
    [[0, 0, 4], false],
    [[0, 0, 4], true],
    [[1], false],
    [[3, 2], true],
  ];
  for (const [sz, transB] of cases) {
    const E = sz.length;
    const rows = sz.reduce((a, b) => a + b, 0);
    const x = randn(rng, [rows, 3]);
    const w = randn(rng, transB ? [E, 2, 3] : [E, 3, 2]);
    const sizes = Int32Array.from(sz);
    const y = groupedMatmul(x, w, sizes, { transB });
    assert.deepEqual(y.shape, [rows, 2]);
    const what = `groupedMatmul ${JSON.stringify(sz)}${transB ? ' transB' : ''}`;
    assertClose(y.data, naiveGrouped(x, w, sz, transB), 1e-5, 1e-5, what);
    gradcheck(what, (p, q) => groupedMatmul(p, q, sizes, { transB }), [x, w]);
    // an empty group's weights get an exactly-zero gradient
    y.backward(new Float32Array(y.size).fill(1));
    const per = 6;
    sz.forEach((s, e) => {
      if (s === 0)
        assert.ok(
          w.grad!.subarray(e * per, (e + 1) * per).every((v) => v === 0),
          `${what}: expert ${e} is empty`,
        );
    });
  }
  // no rows at all
  const y = groupedMatmul(randn(rng, [0, 3]), randn(rng, [2, 3, 4]), Int32Array.from([0, 0]));
  assert.deepEqual(y.shape, [0, 4]);
  // equals per-group matmul
  const x = randn(rng, [5, 3], false);
  const w = randn(rng, [2, 3, 4], false);
  const g = groupedMatmul(x, w, Int32Array.from([2, 3]));
  const g0 = matmul(tensor(x.data.slice(0, 6), [2, 3]), tensor(w.data.slice(0, 12), [3, 4]));
  const g1 = matmul(tensor(x.data.slice(6), [3, 3]), tensor(w.data.slice(12), [3, 4]));
  assertClose(g.data, [...g0.data, ...g1.data], 1e-6, 1e-6, 'grouped = per-group matmul');
});

test('groupedMatmul: bad arguments throw naming the op and shapes', () => {
  const x = tensor(new Float32Array(12), [4, 3]);
  const w = tensor(new Float32Array(12), [2, 3, 2]);
  assert.throws(() => groupedMatmul(x, w, Int32Array.from([1, 2])), /groupedMatmul: group sizes add up to 3 rows but x has 4/);
  assert.throws(() => groupedMatmul(x, w, Int32Array.from([4])), /groupedMatmul: 1 group sizes for 2 experts/);
  assert.throws(() => groupedMatmul(x, w, Int32Array.from([5, -1])), /groupedMatmul: group 1 has negative size -1/);
  assert.throws(() => groupedMatmul(x, w, Int32Array.from([2, 2]), { transB: true }), /groupedMatmul: x \[4, 3\] does not match w \[2, 3, 2\] \(transposed\)/);
  assert.throws(() => groupedMatmul(tensor(new Float32Array(12), [4, 3, 1]), w, Int32Array.from([2, 2])), /groupedMatmul: expected x \[rows, k\] and w \[E, k, n\], got \[4, 3, 1\] and \[2, 3, 2\]/);
});
