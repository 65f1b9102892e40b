import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Tensor,
  tensor,
  add,
  sub,
  mul,
  div,
  affine,
  scale,
  addScalar,
  neg,
  exp,
  log,
  sqrt,
  square,
  abs,
  tanh,
  sigmoid,
  relu,
  silu,
  gelu,
  pow,
  maskMul,
  sigmoidScalar,
  broadcastShapes,
} from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, randu, assertClose } from '../helpers/gradcheck.js';

type Bin = (a: Tensor, b: Tensor) => Tensor;
const BIN: [string, Bin, (x: number, y: number) => number][] = [
  ['add', add, (x, y) => x + y],
  ['sub', sub, (x, y) => x - y],
  ['mul', mul, (x, y) => x * y],
  ['div', div, (x, y) => x / y],
];

/** Naive NumPy broadcasting: value of `t` at output multi-index `oi`. */
function at(t: Tensor, oi: number[]): number {
  const off = oi.length - t.ndim;
  let flat = 0;
  for (let d = 0; d < t.ndim; d++) flat = flat * t.shape[d] + (t.shape[d] === 1 ? 0 : oi[d + off]);
  return t.data[flat];
}

function naiveBinary(a: Tensor, b: Tensor, f: (x: number, y: number) => number): { data: Float32Array; shape: number[] } {
  const n = Math.max(a.ndim, b.ndim);
  const shape: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a.shape[i - (n - a.ndim)] ?? 1;
    const db = b.shape[i - (n - b.ndim)] ?? 1;
    shape.push(da === 1 ? db : da);
  }
  const total = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(total);
  const oi = new Array<number>(n).fill(0);
  for (let i = 0; i < total; i++) {
    let r = i;
    for (let d = n - 1; d >= 0; d--) {
      oi[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    data[i] = f(at(a, oi), at(b, oi));
  }
  return { data, shape };
}

// pairs covering every forward/backward path: same shape, row broadcast (suffix), scalar,
// broadcast of a, interior 1s, both sides broadcast, rank-0, size-1 and empty dims
const PAIRS: [number[], number[]][] = [
  [
    [2, 3],
    [2, 3],
  ],
  [[2, 3], [3]],
  [
    [2, 3],
    [1, 3],
  ],
  [[2, 3], []],
  [[2, 3], [1]],
  [[3], [2, 3]],
  [
    [2, 3, 4],
    [3, 1],
  ],
  [
    [2, 1, 4],
    [3, 1],
  ],
  [
    [4, 1],
    [1, 5],
  ],
  [
    [2, 3, 1],
    [3, 1],
  ],
  [[1], [1]],
  [[], []],
  [
    [1, 1, 3],
    [2, 1, 1],
  ],
  [
    [2, 1, 3],
    [2, 4, 3],
  ],
];

test('binary ops: forward matches naive broadcasting on every path', () => {
  const rng = new Rng(10);
  for (const [name, op, f] of BIN) {
    for (const [sa, sb] of PAIRS) {
      const a = randn(rng, sa, false);
      const b = name === 'div' ? randu(rng, sb, 0.5, 2, false) : randn(rng, sb, false);
      const out = op(a, b);
      const ref = naiveBinary(a, b, f);
      assert.deepEqual(out.shape, ref.shape, `${name} ${JSON.stringify(sa)} x ${JSON.stringify(sb)}`);
      assertClose(out.data, ref.data, 1e-6, 1e-6, `${name} ${JSON.stringify(sa)} x ${JSON.stringify(sb)}`);
    }
  }
});

test('binary ops: gradients under broadcasting (both inputs)', () => {
  const rng = new Rng(11);
  for (const [name, op] of BIN) {
    for (const [sa, sb] of PAIRS) {
      const a = randn(rng, sa);
      const b = name === 'div' ? randu(rng, sb, 0.7, 2) : randn(rng, sb);
      gradcheck(`${name} ${JSON.stringify(sa)} x ${JSON.stringify(sb)}`, op, [a, b]);
    }
  }
});

test('binary ops: gradient when only one side requires grad, and the same tensor on both sides', () => {
  const rng = new Rng(12);
  for (const [name, op] of BIN) {
    const a = randu(rng, [3, 2], 0.6, 2);
    const c = randu(rng, [2], 0.6, 2, false);
    gradcheck(`${name} lhs only`, op, [a, c]);
    gradcheck(`${name} rhs only`, (x, y) => op(y, x), [a, c]);
    gradcheck(`${name}(x, x)`, (x) => op(x, x), [a]);
  }
});

test('binary ops: empty dims', () => {
  const rng = new Rng(13);
  for (const [name, op] of BIN) {
    const a = randn(rng, [0, 3]);
    const b = randn(rng, [3]);
    const y = op(a, b);
    assert.deepEqual(y.shape, [0, 3], name);
    y.backward(new Float32Array(0));
    assert.deepEqual(Array.from(b.grad!), [0, 0, 0], `${name}: broadcast over an empty dim gives a zero gradient`);
    assert.equal(a.grad!.length, 0);
    assert.deepEqual(op(randn(rng, [2, 0]), randn(rng, [2, 1])).shape, [2, 0], name);
    assert.deepEqual(op(randn(rng, [1, 0]), randn(rng, [3, 1])).shape, [3, 0], name);
  }
});

test('binary ops: incompatible shapes throw naming the op and both shapes', () => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  assert.throws(() => add(a, tensor([1, 2], [2])), /add: shapes \[2, 3\] and \[2\] cannot be broadcast together/);
  assert.throws(() => sub(a, tensor([1, 2, 3, 4], [4, 1])), /sub: shapes \[2, 3\] and \[4, 1\]/);
  assert.throws(() => mul(tensor([1, 2, 3], [3]), tensor(new Float32Array(4), [2, 2])), /mul: shapes \[3\] and \[2, 2\]/);
  assert.throws(() => div(tensor(new Float32Array(0), [0]), tensor([1, 2], [2])), /div: shapes \[0\] and \[2\]/);
  assert.throws(() => broadcastShapes([2, 3], [3, 3], 'myop'), /myop: shapes \[2, 3\] and \[3, 3\]/);
});

type Un = [string, (x: Tensor) => Tensor, (v: number) => number, number, number];
const GELU_C = Math.sqrt(2 / Math.PI);
const UNARY: Un[] = [
  ['exp', exp, Math.exp, -2, 2],
  ['log', log, Math.log, 0.3, 3],
  ['sqrt', sqrt, Math.sqrt, 0.3, 3],
  ['square', square, (v) => v * v, -2, 2],
  ['tanh', tanh, Math.tanh, -2, 2],
  ['sigmoid', sigmoid, (v) => 1 / (1 + Math.exp(-v)), -4, 4],
  ['silu', silu, (v) => v / (1 + Math.exp(-v)), -4, 4],
  ['gelu', gelu, (v) => 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v ** 3))), -3, 3],
  ['pow3', (x) => pow(x, 3), (v) => v ** 3, -2, 2],
  ['pow-0.5', (x) => pow(x, -0.5), (v) => v ** -0.5, 0.5, 3],
  ['affine', (x) => affine(x, -1.5, 0.25), (v) => -1.5 * v + 0.25, -2, 2],
  ['scale', (x) => scale(x, 3), (v) => 3 * v, -2, 2],
  ['addScalar', (x) => addScalar(x, -2), (v) => v - 2, -2, 2],
  ['neg', neg, (v) => -v, -2, 2],
];

test('unary ops: forward values and gradients', () => {
  const rng = new Rng(20);
  for (const [name, op, f, lo, hi] of UNARY) {
    for (const shape of [[5], [2, 3], [1, 1], []]) {
      const x = randu(rng, shape, lo, hi);
      const y = op(x);
      assert.deepEqual(y.shape, shape, name);
      assertClose(y.data, Array.from(x.data, f), 1e-6, 1e-5, name);
      gradcheck(name, op, [x], { eps: 1e-3 });
    }
    assert.deepEqual(op(randn(rng, [0, 2])).shape, [0, 2], `${name} empty`);
  }
});

test('relu and abs: values and gradients away from the kink, zero-gradient convention at 0', () => {
  const rng = new Rng(21);
  // keep every element at least 0.1 from 0 so the finite difference does not straddle the kink
  const x = randu(rng, [4, 5], 0.1, 2);
  for (let i = 0; i < x.size; i += 2) x.data[i] = -x.data[i];
  gradcheck('relu', relu, [x]);
  gradcheck('abs', abs, [x]);
  assert.deepEqual(Array.from(relu(tensor([-1, 0, 2])).data), [0, 0, 2]);
  assert.deepEqual(Array.from(abs(tensor([-1, 0, 2])).data), [1, 0, 2]);
  const z = tensor([0, 0], [2], true);
  relu(z).backward(new Float32Array([1, 1]));
  assert.deepEqual(Array.from(z.grad!), [0, 0]);
});

test('sigmoid, silu and tanh stay finite and saturate for huge inputs', () => {
  const x = tensor([-1000, -80, 80, 1000], [4], true);
  const s = sigmoid(x);
  assert.deepEqual(Array.from(s.data), [0, Math.fround(1 / (1 + Math.exp(80))), 1, 1]);
  s.backward(new Float32Array([1, 1, 1, 1]));
  for (const v of x.grad!) assert.ok(Number.isFinite(v));
  assert.equal(sigmoidScalar(-1000), 0);
  assert.equal(sigmoidScalar(1000), 1);
  const y = silu(tensor([-1000, 1000]));
  assert.deepEqual(Array.from(y.data), [-0, 1000]);
  assert.deepEqual(Array.from(tanh(tensor([-1000, 1000])).data), [-1, 1]);
  assert.ok(Array.from(gelu(tensor([-1000, 1000])).data).every(Number.isFinite));
});

test('maskMul: forward, gradient, mask length mismatch', () => {
  const rng = new Rng(22);
  const mask = new Float32Array([1, 0, 2, 0, 1, 0.5]);
  const x = randn(rng, [2, 3]);
  assertClose(
    maskMul(x, mask).data,
    Array.from(x.data, (v, i) => v * mask[i]),
  );
  gradcheck('maskMul', (t) => maskMul(t, mask), [x]);
  assert.throws(() => maskMul(x, new Float32Array(5)), /maskMul: mask has 5 elements, tensor \[2, 3\] has 6/);
});

test('results record the graph only when an input requires grad', () => {
  const a = tensor([1, 2], [2]);
  const b = tensor([3, 4], [2], true);
  assert.equal(add(a, a).requiresGrad, false);
  assert.equal(add(a, a).parents, null);
  assert.equal(add(a, b).requiresGrad, true);
  assert.equal(exp(a).requiresGrad, false);
});

test('random broadcast-compatible shapes (ranks 0-3, dims 0-3): forward vs naive, gradients', () => {
  const rng = new Rng(14);
  for (let trial = 0; trial < 40; trial++) {
    const rank = rng.int(4);
    const out = Array.from({ length: rank }, () => rng.int(4));
    // each side drops some leading dims and sets some dims to 1
    const side = () => out.slice(rng.int(rank + 1)).map((d) => (rng.next() < 0.3 ? 1 : d));
    const sa = side();
    const sb = side();
    const [name, op, f] = BIN[trial % 4];
    const a = randn(rng, sa);
    const b = name === 'div' ? randu(rng, sb, 0.7, 2) : randn(rng, sb);
    const what = `${name} ${JSON.stringify(sa)} x ${JSON.stringify(sb)}`;
    const y = op(a, b);
    const ref = naiveBinary(a, b, f);
    assert.deepEqual(y.shape, ref.shape, what);
    assertClose(y.data, ref.data, 1e-6, 1e-6, what);
    gradcheck(what, op, [a, b]);
  }
});
