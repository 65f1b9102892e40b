import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, sum, mean, max, softmax, logSoftmax, logSumExp, softmaxRaw } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** Naive reduction of `x` along `axis` with `f` over each fiber (in float64). */
function naiveReduce(x: Tensor, axis: number, f: (v: number[]) => number): number[] {
  const sh = x.shape;
  const outer = sh.slice(0, axis).reduce((a, b) => a * b, 1);
  const len = sh[axis];
  const inner = sh.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const fiber: number[] = [];
      for (let l = 0; l < len; l++) fiber.push(x.data[(o * len + l) * inner + i]);
      out.push(f(fiber));
    }
  }
  return out;
}

/** Naive softmax-like map of each fiber along `axis`, laid back out in x's layout. */
function naiveMapFiber(x: Tensor, axis: number, f: (v: number[]) => number[]): Float64Array {
  const sh = x.shape;
  const outer = sh.slice(0, axis).reduce((a, b) => a * b, 1);
  const len = sh[axis];
  const inner = sh.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Float64Array(x.size);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const fiber: number[] = [];
      for (let l = 0; l < len; l++) fiber.push(x.data[(o * len + l) * inner + i]);
      const r = f(fiber);
      for (let l = 0; l < len; l++) out[(o * len + l) * inner + i] = r[l];
    }
  }
  return out;
}

const total = (v: number[]) => v.reduce((a, b) => a + b, 0);
const naiveSoftmax = (v: number[]) => {
  const m = Math.max(...v);
  const e = v.map((x) => Math.exp(x - m));
  const s = total(e);
  return e.map((x) => x / s);
};
const naiveLse = (v: number[]) => {
  const m = Math.max(...v);
  return m + Math.log(total(v.map((x) => Math.exp(x - m))));
};

const SHAPES = [[5], [3, 4], [2, 3, 4], [1, 4], [4, 1], [2, 1, 3]];

test('sum/mean/max over each axis (positive and negative), keepDims, forward values', () => {
  const rng = new Rng(30);
  for (const shape of SHAPES) {
    const x = randn(rng, shape, false);
    for (let ax = -shape.length; ax < shape.length; ax++) {
      const a = ax < 0 ? ax + shape.length : ax;
      const expShape = shape.filter((_, i) => i !== a);
      const keepShape = shape.map((d, i) => (i === a ? 1 : d));
      for (const [name, op, f] of [
        ['sum', sum, total],
        ['mean', mean, (v: number[]) => total(v) / v.length],
        ['max', max, (v: number[]) => Math.max(...v)],
      ] as const) {
        const y = op(x, ax);
        assert.deepEqual(y.shape, expShape, `${name} ${JSON.stringify(shape)} axis ${ax}`);
        assertClose(y.data, naiveReduce(x, a, f), 1e-5, 1e-5, `${name} ${JSON.stringify(shape)} axis ${ax}`);
        assert.deepEqual(op(x, ax, true).shape, keepShape);
      }
    }
    assertClose(sum(x).data, [total(Array.from(x.data))], 1e-5, 1e-5);
    assertClose(mean(x).data, [total(Array.from(x.data)) / x.size], 1e-5, 1e-5);
    assert.deepEqual(sum(x).shape, []);
    assert.deepEqual(
      mean(x, undefined, true).shape,
      shape.map(() => 1),
    );
    assert.equal(max(x).item(), Math.max(...x.data));
  }
});

test('sum/mean/max gradients', () => {
  const rng = new Rng(31);
  for (const shape of SHAPES) {
    for (let ax = -1; ax < shape.length; ax++) {
      const axis = ax < 0 ? undefined : ax;
      for (const keep of [false, true]) {
        gradcheck(`sum ${JSON.stringify(shape)} ${axis} ${keep}`, (t) => sum(t, axis, keep), [randn(rng, shape)]);
        gradcheck(`mean ${JSON.stringify(shape)} ${axis} ${keep}`, (t) => mean(t, axis, keep), [randn(rng, shape)]);
        // distinct values spaced well beyond eps so the arg-max does not flip during the check
        const x = randn(rng, shape);
        x.data.set(Array.from(x.data, (_, i) => ((i * 7919) % x.size) * 0.1 - 0.3));
        gradcheck(`max ${JSON.stringify(shape)} ${axis} ${keep}`, (t) => max(t, axis, keep), [x]);
      }
    }
  }
});

test('max: gradient goes to the first maximal element on ties', () => {
  const x = tensor([1, 3, 3, 2, 5, 5], [2, 3], true);
  const y = max(x, 1);
  assert.deepEqual(Array.from(y.data), [3, 5]);
  y.backward(new Float32Array([1, 2]));
  assert.deepEqual(Array.from(x.grad!), [0, 1, 0, 0, 2, 0]);
  const z = tensor([-Infinity, -Infinity], [2], true);
  max(z).backward();
  assert.deepEqual(Array.from(z.grad!), [1, 0]);
});

test('sum/mean over empty tensors and empty axes', () => {
  const e = tensor(new Float32Array(0), [0, 3], true);
  assert.equal(sum(e).item(), 0);
  assert.deepEqual(Array.from(sum(e, 0).data), [0, 0, 0]);
  assert.deepEqual(sum(e, 1).shape, [0]);
  assert.deepEqual(mean(e, 1).shape, [0]);
  const s = sum(e, 0);
  s.backward(new Float32Array([1, 1, 1]));
  assert.equal(e.grad!.length, 0);
  assert.throws(() => max(e), /max: empty tensor/);
});

test('reductions: bad axis throws naming the op', () => {
  const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  assert.throws(() => sum(x, 2), /sum: axis 2 out of range for a tensor of rank 2/);
  assert.throws(() => mean(x, -3), /mean: axis -3 out of range/);
  assert.throws(() => max(x, 5), /max: axis 5 out of range/);
  assert.throws(() => softmax(x, 2), /softmax: axis 2 out of range/);
  assert.throws(() => logSoftmax(x, 1.5), /logSoftmax: axis 1.5 out of range/);
  assert.throws(() => logSumExp(tensor([1], [])), /logSumExp: axis -1 out of range for a tensor of rank 0/);
});

test('softmax/logSoftmax/logSumExp match naive references on every axis', () => {
  const rng = new Rng(32);
  for (const shape of SHAPES) {
    const x = randn(rng, shape, false, 2);
    for (let a = 0; a < shape.length; a++) {
      const sm = softmax(x, a);
      assertClose(sm.data, naiveMapFiber(x, a, naiveSoftmax), 1e-6, 1e-5, `softmax ${JSON.stringify(shape)} ${a}`);
      const ls = logSoftmax(x, a);
      assertClose(
        ls.data,
        naiveMapFiber(x, a, (v) => naiveSoftmax(v).map(Math.log)),
        1e-5,
        1e-5,
        `logSoftmax ${a}`,
      );
      const lse = logSumExp(x, a);
      assertClose(lse.data, naiveReduce(x, a, naiveLse), 1e-5, 1e-5, `logSumExp ${a}`);
      assert.deepEqual(
        logSumExp(x, a, true).shape,
        shape.map((d, i) => (i === a ? 1 : d)),
      );
      // every fiber of the softmax sums to 1
      assertClose(naiveReduce(sm, a, total), new Array(sm.size / shape[a]).fill(1), 1e-6, 0, 'softmax sums');
    }
    // default axis is the last
    assert.deepEqual(Array.from(softmax(x).data), Array.from(softmax(x, shape.length - 1).data));
  }
});

test('softmax family gradients on every axis', () => {
  const rng = new Rng(33);
  for (const shape of [[5], [3, 4], [2, 3, 2], [1, 3], [3, 1]]) {
    for (let a = -1; a < shape.length; a++) {
      gradcheck(`softmax ${JSON.stringify(shape)} ${a}`, (t) => softmax(t, a), [randn(rng, shape)]);
      gradcheck(`logSoftmax ${JSON.stringify(shape)} ${a}`, (t) => logSoftmax(t, a), [randn(rng, shape)]);
      gradcheck(`logSumExp ${JSON.stringify(shape)} ${a}`, (t) => logSumExp(t, a), [randn(rng, shape)]);
      gradcheck(`logSumExp keep ${a}`, (t) => logSumExp(t, a, true), [randn(rng, shape)]);
    }
  }
});

test('softmax is stable for large inputs; logSoftmax/logSumExp stay finite', () => {
  const x = tensor([1000, 1000, 999, -1000, 0, 1000.5], [2, 3], true);
  const s = softmax(x);
  for (const v of s.data) assert.ok(Number.isFinite(v));
  const e1 = Math.exp(-1);
  assertClose(s.data.subarray(0, 3), [1 / (2 + e1), 1 / (2 + e1), e1 / (2 + e1)], 1e-6, 1e-6);
  assertClose(naiveReduce(s, 1, total), [1, 1], 1e-6, 0);
  const ls = logSoftmax(tensor([1000, 0, -1000], [3]));
  assertClose(ls.data, [0, -1000, -2000], 1e-3, 1e-6);
  assertClose(logSumExp(tensor([1000, 1000], [2])).data, [1000 + Math.LN2], 1e-3, 1e-7);
  assertClose(logSumExp(tensor([-1000, -1000], [2])).data, [-1000 + Math.LN2], 1e-3, 1e-7);
  s.backward(new Float32Array([1, -1, 2, 0.5, 0, 3]));
  for (const v of x.grad!) assert.ok(Number.isFinite(v));
  // shift invariance: softmax(x + c) == softmax(x)
  const y = tensor([0.1, 0.2, -0.3], [3]);
  const z = tensor([500.1, 500.2, 499.7], [3]);
  assertClose(softmax(z).data, softmax(y).data, 1e-4, 0);
});

test('softmax of a fully -Infinity (masked) row is zeros, not NaN', () => {
  const x = tensor([-Infinity, -Infinity, 0, -Infinity], [2, 2]);
  assert.deepEqual(Array.from(softmax(x).data), [0, 0, 1, 0]);
  assert.deepEqual(Array.from(softmaxRaw(new Float32Array([-Infinity, -Infinity]), 1, 2, 1)), [0, 0]);
});

test('softmax with an empty axis or empty outer dims', () => {
  assert.deepEqual(softmax(tensor(new Float32Array(0), [3, 0])).shape, [3, 0]);
  assert.deepEqual(softmax(tensor(new Float32Array(0), [0, 4])).shape, [0, 4]);
  assert.deepEqual(logSoftmax(tensor(new Float32Array(0), [0, 4])).shape, [0, 4]);
  assert.deepEqual(logSumExp(tensor(new Float32Array(0), [0, 4])).shape, [0]);
});

test('random shapes (ranks 1-3, dims 1-4): reductions and softmax vs naive, gradients', () => {
  const rng = new Rng(34);
  for (let trial = 0; trial < 25; trial++) {
    const shape = Array.from({ length: 1 + rng.int(3) }, () => 1 + rng.int(4));
    const a = rng.int(shape.length);
    const x = randn(rng, shape);
    const what = `${JSON.stringify(shape)} axis ${a}`;
    assertClose(sum(x, a).data, naiveReduce(x, a, total), 1e-5, 1e-5, `sum ${what}`);
    assertClose(softmax(x, a).data, naiveMapFiber(x, a, naiveSoftmax), 1e-6, 1e-5, `softmax ${what}`);
    assertClose(logSumExp(x, a).data, naiveReduce(x, a, naiveLse), 1e-5, 1e-5, `logSumExp ${what}`);
    gradcheck(`sum ${what}`, (t) => sum(t, a), [x]);
    gradcheck(`mean ${what}`, (t) => mean(t, a, true), [x]);
    gradcheck(`softmax ${what}`, (t) => softmax(t, a), [x]);
    gradcheck(`logSoftmax ${what}`, (t) => logSoftmax(t, a), [x]);
  }
});
