import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, causalAttention, slice } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** Naive causal attention, one query at a time, float64. */
function naiveAttention(q: Tensor, k: Tensor, v: Tensor): number[] {
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2];
  const out: number[] = [];
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      const pos = Tk - Tq + i;
      const scores: number[] = [];
      for (let j = 0; j <= pos; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q.data[(bh * Tq + i) * D + d] * k.data[(bh * Tk + j) * D + d];
        scores.push(s / Math.sqrt(D));
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = 0; j <= pos; j++) acc += (e[j] / z) * v.data[(bh * Tk + j) * D + d];
        out.push(acc);
      }
    }
  }
  return out;
}

test('causalAttention: forward vs a naive per-query reference (full and KV-cache forms)', () => {
  const rng = new Rng(100);
  for (const [B, H, Tq, Tk, D] of [
    [1, 1, 4, 4, 3],
    [2, 3, 5, 5, 4],
    [2, 2, 2, 6, 4],
    [1, 2, 1, 7, 8],
    [1, 1, 1, 1, 2],
  ]) {
    const q = randn(rng, [B, H, Tq, D], false);
    const k = randn(rng, [B, H, Tk, D], false);
    const v = randn(rng, [B, H, Tk, D], false);
    const y = causalAttention(q, k, v);
    assert.deepEqual(y.shape, [B, H, Tq, D]);
    assertClose(y.data, naiveAttention(q, k, v), 1e-5, 1e-5, `attention ${[B, H, Tq, Tk, D]}`);
  }
  // the first query of a full sequence sees only the first key: output = v[0]
  const q = randn(rng, [1, 1, 3, 2], false);
  const k = randn(rng, [1, 1, 3, 2], false);
  const v = randn(rng, [1, 1, 3, 2], false);
  assertClose(causalAttention(q, k, v).data.subarray(0, 2), v.data.subarray(0, 2), 1e-6, 1e-6);
});

test('causalAttention: gradients for q, k, v (full and KV-cache forms)', () => {
  const rng = new Rng(101);
  for (const [B, H, Tq, Tk, D] of [
    [1, 1, 3, 3, 2],
    [2, 2, 3, 3, 4],
    [1, 2, 2, 4, 3],
    [1, 1, 1, 3, 2],
  ]) {
    const q = randn(rng, [B, H, Tq, D]);
    const k = randn(rng, [B, H, Tk, D]);
    const v = randn(rng, [B, H, Tk, D]);
    const what = `attention ${[B, H, Tq, Tk, D]}`;
    gradcheck(what, causalAttention, [q, k, v]);
    gradcheck(`${what} q only`, causalAttention, [q, randn(rng, [B, H, Tk, D], false), randn(rng, [B, H, Tk, D], false)]);
    gradcheck(`${what} k only`, causalAttention, [randn(rng, [B, H, Tq, D], false), k, randn(rng, [B, H, Tk, D], false)]);
    gradcheck(`${what} v only`, causalAttention, [randn(rng, [B, H, Tq, D], false), randn(rng, [B, H, Tk, D], false), v]);
  }
  // self-attention with one tensor as q, k and v
  gradcheck('attention(x, x, x)', (x) => causalAttention(x, x, x), [randn(rng, [1, 2, 3, 2])]);
});

test('causalAttention: a query sees no future key — changing future k/v leaves earlier outputs unchanged', () => {
  const rng = new Rng(102);
  const T = 6;
  const q = randn(rng, [2, 2, T, 4], false);
  const k = randn(rng, [2, 2, T, 4], false);
  const v = randn(rng, [2, 2, T, 4], false);
  const base = causalAttention(q, k, v);
  for (const cut of [1, 3, 5]) {
    const k2 = tensor(k.data.slice(), k.shape);
    const v2 = tensor(v.data.slice(), v.shape);
    for (let bh = 0; bh < 4; bh++) {
      for (let t = cut; t < T; t++) {
        for (let d = 0; d < 4; d++) {
          k2.data[(bh * T + t) * 4 + d] += 5 * rng.normal();
          v2.data[(bh * T + t) * 4 + d] += 5 * rng.normal();
        }
      }
    }
    const y = causalAttention(q, k2, v2);
    for (let bh = 0; bh < 4; bh++) {
      const rows = (a: Tensor) => a.data.subarray(bh * T * 4, bh * T * 4 + cut * 4);
      assert.deepEqual(Array.from(rows(y)), Array.from(rows(base)), `positions < ${cut} must not see later keys`);
      // and the change is visible from position `cut` on (the test can fail)
      assert.notDeepEqual(Array.from(y.data.subarray((bh * T + cut) * 4, (bh * T + cut + 1) * 4)), Array.from(base.data.subarray((bh * T + cut) * 4, (bh * T + cut + 1) * 4)));
    }
  }
  // gradients: the loss on position t gives no gradient to k/v at positions > t
  const q3 = randn(rng, [1, 1, 4, 2]);
  const k3 = randn(rng, [1, 1, 4, 2]);
  const v3 = randn(rng, [1, 1, 4, 2]);
  const g = new Float32Array(8);
  g[2] = 1;
  g[3] = -1; // only position 1 has an output gradient
  causalAttention(q3, k3, v3).backward(g);
  assert.ok(k3.grad!.subarray(4).every((x) => x === 0) && v3.grad!.subarray(4).every((x) => x === 0));
  assert.ok(q3.grad!.subarray(0, 2).every((x) => x === 0) && q3.grad!.subarray(4).every((x) => x === 0));
  assert.ok(v3.grad!.subarray(0, 4).some((x) => x !== 0));
});

test('causalAttention: KV-cache form (Tq < Tk) equals the last rows of the full computation', () => {
  const rng = new Rng(103);
  const [B, H, T, D] = [2, 3, 7, 4];
  const q = randn(rng, [B, H, T, D], false);
  const k = randn(rng, [B, H, T, D], false);
  const v = randn(rng, [B, H, T, D], false);
  const full = causalAttention(q, k, v);
  for (const tq of [1, 3, 7]) {
    const y = causalAttention(slice(q, 2, T - tq, T), k, v);
    assertClose(y.data, slice(full, 2, T - tq, T).data, 1e-6, 1e-6, `Tq = ${tq}`);
  }
  // incremental decoding: step t with k/v[:t+1] reproduces row t
  for (let t = 0; t < T; t++) {
    const y = causalAttention(slice(q, 2, t, t + 1), slice(k, 2, 0, t + 1), slice(v, 2, 0, t + 1));
    assertClose(y.data, slice(full, 2, t, t + 1).data, 1e-6, 1e-6, `decode step ${t}`);
  }
});

test('causalAttention: stable for large scores; empty sequences', () => {
  const q = tensor([100, 100, 100, 100], [1, 1, 2, 2]);
  const k = tensor([100, 100, -100, 100], [1, 1, 2, 2]);
  const v = tensor([1, 2, 3, 4], [1, 1, 2, 2]);
  const y = causalAttention(q, k, v);
  assert.ok(y.data.every(Number.isFinite));
  assertClose(y.data, [1, 2, 1, 2], 1e-6, 0);
  assert.deepEqual(causalAttention(tensor(new Float32Array(0), [1, 1, 0, 2]), tensor(new Float32Array(0), [1, 1, 0, 2]), tensor(new Float32Array(0), [1, 1, 0, 2])).shape, [1, 1, 0, 2]);
  assert.deepEqual(causalAttention(tensor(new Float32Array(0), [1, 1, 0, 2]), tensor(new Float32Array(6), [1, 1, 3, 2]), tensor(new Float32Array(6), [1, 1, 3, 2])).shape, [1, 1, 0, 2]);
});

test('causalAttention: shape errors name the op and the shapes', () => {
  const z = (s: number[]) => tensor(new Float32Array(s.reduce((a, b) => a * b, 1)), s);
  assert.throws(() => causalAttention(z([2, 4, 3]), z([2, 4, 3]), z([2, 4, 3])), /causalAttention: expected 4-D \[B, H, T, D\], got \[2, 4, 3\], \[2, 4, 3\], \[2, 4, 3\]/);
  assert.throws(() => causalAttention(z([1, 2, 3, 4]), z([1, 2, 3, 5]), z([1, 2, 3, 5])), /causalAttention: q \[1, 2, 3, 4\] incompatible with k \[1, 2, 3, 5\] \/ v \[1, 2, 3, 5\]/);
  assert.throws(() => causalAttention(z([1, 2, 3, 4]), z([1, 1, 3, 4]), z([1, 1, 3, 4])), /causalAttention: q \[1, 2, 3, 4\] incompatible with k \[1, 1, 3, 4\]/);
  assert.throws(() => causalAttention(z([1, 2, 4, 4]), z([1, 2, 3, 4]), z([1, 2, 3, 4])), /causalAttention: q \[1, 2, 4, 4\] incompatible with k \[1, 2, 3, 4\]/);
  assert.throws(() => causalAttention(z([1, 2, 3, 4]), z([1, 2, 3, 4]), z([1, 2, 2, 4])), /causalAttention: q \[1, 2, 3, 4\] incompatible with k \[1, 2, 3, 4\] \/ v \[1, 2, 2, 4\]/);
  assert.throws(() => causalAttention(z([2, 2, 3, 4]), z([1, 2, 3, 4]), z([1, 2, 3, 4])), /causalAttention: q \[2, 2, 3, 4\] incompatible/);
});
