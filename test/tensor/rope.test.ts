import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, rope, ropeTables, concat, slice } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** Naive RoPE in the Hugging Face rotate_half layout: pairs (i, i + D/2), token t at position offset + t. */
function naiveRope(x: Float32Array, T: number, D: number, offset: number, base: number): number[] {
  const out = new Array<number>(x.length);
  const half = D / 2;
  for (let r = 0; r < x.length / (T * D); r++) {
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < half; i++) {
        const th = (offset + t) / Math.pow(base, (2 * i) / D);
        const o = (r * T + t) * D;
        const a = x[o + i];
        const b = x[o + i + half];
        out[o + i] = a * Math.cos(th) - b * Math.sin(th);
        out[o + i + half] = b * Math.cos(th) + a * Math.sin(th);
      }
    }
  }
  return out;
}

test('rope: forward vs naive for several shapes, offsets and bases; gradient', () => {
  const rng = new Rng(90);
  for (const [shape, offset, base] of [
    [[5, 4], 0, 10000],
    [[2, 3, 6, 8], 0, 10000],
    [[2, 3, 8], 7, 10000],
    [[1, 1, 2], 3, 100],
    [[1, 4, 2], 0, 500000],
  ] as [number[], number, number][]) {
    const x = randn(rng, shape);
    const T = shape[shape.length - 2];
    const D = shape[shape.length - 1];
    const y = rope(x, offset, base);
    assert.deepEqual(y.shape, shape);
    assertClose(y.data, naiveRope(x.data, T, D, offset, base), 1e-5, 1e-5, `rope ${JSON.stringify(shape)} offset ${offset}`);
    gradcheck(`rope ${JSON.stringify(shape)} offset ${offset}`, (p) => rope(p, offset, base), [x]);
  }
  // position 0 is the identity
  const x = randn(rng, [1, 6], false);
  assert.deepEqual(Array.from(rope(x).data), Array.from(x.data));
  // the table layout
  const { cos, sin } = ropeTables(3, 4, 10000, 2);
  assert.equal(cos.length, 6);
  assertClose([cos[2 * 2 + 1], sin[2 * 2 + 1]], [Math.cos(4 / 100), Math.sin(4 / 100)], 1e-7, 1e-6);
});

test('rope at offset o equals the tail of rope over a longer sequence', () => {
  const rng = new Rng(91);
  const full = randn(rng, [2, 9, 8], false);
  const yFull = rope(full);
  for (const o of [1, 4, 8]) {
    const tail = slice(full, 1, o, 9);
    assertClose(rope(tail, o).data, slice(yFull, 1, o, 9).data, 1e-6, 1e-6, `offset ${o}`);
  }
  // and token by token, as a KV cache decodes
  const steps = [];
  for (let t = 0; t < 9; t++) steps.push(rope(slice(full, 1, t, t + 1), t));
  assertClose(concat(steps, 1).data, yFull.data, 1e-6, 1e-6, 'one token at a time');
});

test('rope preserves norms per pair and encodes only relative positions in dot products', () => {
  const rng = new Rng(92);
  const x = randn(rng, [3, 7, 10], false);
  const y = rope(x, 5);
  for (let v = 0; v < 21; v++) {
    for (let i = 0; i < 5; i++) {
      const o = v * 10;
      const n0 = x.data[o + i] ** 2 + x.data[o + i + 5] ** 2;
      const n1 = y.data[o + i] ** 2 + y.data[o + i + 5] ** 2;
      assert.ok(Math.abs(n0 - n1) < 1e-5 * (1 + n0), `pair (${i}, ${i + 5}) of vector ${v}: ${n0} vs ${n1}`);
    }
  }
  // <rope(q, m), rope(k, n)> depends only on m - n
  const q = randn(rng, [1, 8], false);
  const k = randn(rng, [1, 8], false);
  const dot = (m: number, n: number) => {
    const a = rope(q, m).data;
    const b = rope(k, n).data;
    return a.reduce((s, v, i) => s + v * b[i], 0);
  };
  assert.ok(Math.abs(dot(3, 1) - dot(12, 10)) < 1e-4);
  assert.ok(Math.abs(dot(0, 5) - dot(20, 25)) < 1e-4);
  assert.ok(Math.abs(dot(3, 1) - dot(3, 2)) > 1e-3, 'different relative offsets differ');
});

test('rope: empty dims and bad input', () => {
  assert.deepEqual(rope(tensor(new Float32Array(0), [0, 4])).shape, [0, 4]);
  assert.deepEqual(rope(tensor(new Float32Array(0), [2, 0, 4])).shape, [2, 0, 4]);
  assert.throws(() => rope(tensor(new Float32Array(6), [2, 3])), /rope: head dim 3 must be even/);
  assert.throws(() => rope(tensor(new Float32Array(4), [4])), /rope: expected \[\.\.\., T, D\], got \[4\]/);
});
