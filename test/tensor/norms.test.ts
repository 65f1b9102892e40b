import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, rmsNorm, layerNorm, dropout } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, randu, assertClose } from '../helpers/gradcheck.js';

function naiveRms(x: Float32Array, d: number, g: Float32Array, eps: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / d; r++) {
    const row = Array.from(x.subarray(r * d, (r + 1) * d));
    const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / d + eps);
    row.forEach((v, j) => out.push((v / rms) * g[j]));
  }
  return out;
}

function naiveLn(x: Float32Array, d: number, g: Float32Array, b: Float32Array | null, eps: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / d; r++) {
    const row = Array.from(x.subarray(r * d, (r + 1) * d));
    const mu = row.reduce((a, v) => a + v, 0) / d;
    const va = row.reduce((a, v) => a + (v - mu) ** 2, 0) / d;
    row.forEach((v, j) => out.push(((v - mu) / Math.sqrt(va + eps)) * g[j] + (b ? b[j] : 0)));
  }
  return out;
}

test('rmsNorm: forward vs naive, gradients for x and gamma, various shapes', () => {
  const rng = new Rng(70);
  for (const shape of [[3, 4], [2, 2, 5], [6], [1, 1], [4, 1]]) {
    const d = shape[shape.length - 1];
    const x = randn(rng, shape);
    const gamma = randu(rng, [d], 0.5, 1.5);
    const y = rmsNorm(x, gamma, 1e-5);
    assert.deepEqual(y.shape, shape);
    assertClose(y.data, naiveRms(x.data, d, gamma.data, 1e-5), 1e-5, 1e-5, `rmsNorm ${JSON.stringify(shape)}`);
    gradcheck(`rmsNorm ${JSON.stringify(shape)}`, (p, q) => rmsNorm(p, q, 1e-5), [x, gamma], { eps: 1e-3 });
    gradcheck(`rmsNorm x only ${JSON.stringify(shape)}`, (p, q) => rmsNorm(p, q), [x, randu(rng, [d], 0.5, 1.5, false)], { eps: 1e-3 });
  }
  // scale invariance: rmsNorm(c x) == rmsNorm(x) (eps negligible)
  const x = randn(rng, [2, 8], false);
  const g = randu(rng, [8], 0.5, 1.5, false);
  assertClose(
    rmsNorm(
      tensor(
        x.data.map((v) => v * 7),
        [2, 8],
      ),
      g,
      1e-12,
    ).data,
    rmsNorm(x, g, 1e-12).data,
    1e-5,
    1e-5,
  );
  // a zero row stays finite thanks to eps
  assert.deepEqual(Array.from(rmsNorm(tensor([0, 0], [1, 2]), tensor([1, 1], [2])).data), [0, 0]);
  assert.deepEqual(rmsNorm(tensor(new Float32Array(0), [0, 4]), tensor([1, 1, 1, 1], [4])).shape, [0, 4]);
});

test('layerNorm: forward vs naive, gradients for x, gamma, beta, with and without beta', () => {
  const rng = new Rng(71);
  for (const shape of [[3, 4], [2, 2, 5], [6], [1, 2]]) {
    const d = shape[shape.length - 1];
    const x = randn(rng, shape);
    const gamma = randu(rng, [d], 0.5, 1.5);
    const beta = randn(rng, [d]);
    const y = layerNorm(x, gamma, beta);
    assertClose(y.data, naiveLn(x.data, d, gamma.data, beta.data, 1e-5), 1e-5, 1e-4, `layerNorm ${JSON.stringify(shape)}`);
    assertClose(layerNorm(x, gamma, null).data, naiveLn(x.data, d, gamma.data, null, 1e-5), 1e-5, 1e-4, 'layerNorm no beta');
    gradcheck(`layerNorm ${JSON.stringify(shape)}`, (p, q, r) => layerNorm(p, q, r), [x, gamma, beta], { eps: 1e-3 });
    gradcheck(`layerNorm no beta ${JSON.stringify(shape)}`, (p, q) => layerNorm(p, q, null), [x, gamma], { eps: 1e-3 });
    gradcheck(`layerNorm beta only ${JSON.stringify(shape)}`, (p, q, r) => layerNorm(p, q, r), [randn(rng, shape, false), randu(rng, [d], 0.5, 1.5, false), beta], { eps: 1e-3 });
  }
  // each output row has mean beta-ish: with gamma=1, beta=0 rows have mean 0 and variance ~1
  const x = randn(rng, [3, 16], false, 3);
  const y = layerNorm(x, tensor(new Float32Array(16).fill(1), [16]), null, 0);
  for (let r = 0; r < 3; r++) {
    const row = Array.from(y.data.subarray(r * 16, (r + 1) * 16));
    const mu = row.reduce((a, v) => a + v, 0) / 16;
    assert.ok(Math.abs(mu) < 1e-5);
    assert.ok(Math.abs(row.reduce((a, v) => a + v * v, 0) / 16 - 1) < 1e-4);
  }
  // a constant row: variance 0, stays finite
  assert.ok(Array.from(layerNorm(tensor([3, 3, 3], [1, 3]), tensor([1, 1, 1], [3]), null).data).every((v) => v === 0));
});

test('norms: mismatched gamma/beta throw naming the op and the shape', () => {
  const x = tensor(new Float32Array(6), [2, 3]);
  assert.throws(() => rmsNorm(x, tensor([1, 1], [2])), /rmsNorm: gamma \[2\] does not match last dim of \[2, 3\]/);
  assert.throws(() => rmsNorm(tensor([1], []), tensor([1], [1])), /rmsNorm: scalar input/);
  assert.throws(() => layerNorm(x, tensor([1, 1], [2]), null), /layerNorm: gamma\/beta do not match last dim of \[2, 3\]/);
  assert.throws(() => layerNorm(x, tensor([1, 1, 1], [3]), tensor([1], [1])), /layerNorm: gamma\/beta do not match last dim of \[2, 3\]/);
});

test('dropout: identity at p=0, mask statistics, scaling, gradient uses the same mask, determinism', () => {
  const x = tensor(new Float32Array(4000).fill(1), [40, 100], true);
  assert.equal(dropout(x, 0, new Rng(1)), x);
  const y = dropout(x, 0.25, new Rng(5));
  const zeros = y.data.filter((v) => v === 0).length;
  assert.ok(Math.abs(zeros / 4000 - 0.25) < 0.03, `dropped fraction ${zeros / 4000}`);
  for (const v of y.data) assert.ok(v === 0 || Math.abs(v - 1 / 0.75) < 1e-6);
  const mean = y.data.reduce((a, v) => a + v, 0) / 4000;
  assert.ok(Math.abs(mean - 1) < 0.05, `inverted dropout keeps the mean: ${mean}`);
  const g = new Float32Array(4000).fill(2);
  y.backward(g);
  for (let i = 0; i < 4000; i++) assert.equal(x.grad![i], y.data[i] * 2, 'gradient = mask * g');
  assert.deepEqual(Array.from(dropout(x, 0.5, new Rng(9)).data), Array.from(dropout(x, 0.5, new Rng(9)).data));
  assert.notDeepEqual(Array.from(dropout(x, 0.5, new Rng(9)).data), Array.from(dropout(x, 0.5, new Rng(10)).data));
  for (const p of [1, -0.1, NaN, 2]) assert.throws(() => dropout(x, p, new Rng(1)), /dropout: p must be in \[0, 1\)/);
});
