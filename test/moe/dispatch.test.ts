// Dispatch: counting sort, dropless fast path vs the naive reference, capacity drops, soft slots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, tensor, noGrad, softmax } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { FFNExperts, HeterogeneousExperts } from '../../src/moe/experts/index.js';
import { sortByExpert, droplessDispatch, capacityDispatch, capacityMask, expertCapacity, softDispatch } from '../../src/moe/dispatch/index.js';
import { referenceSparse, referenceSoft } from '../../src/moe/reference.js';
import type { SparseRouting, SoftRouting } from '../../src/moe/types.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** A random sparse routing: each token gets 0..maxK distinct experts with positive weights. */
function randomRouting(rng: Rng, T: number, E: number, maxK: number, requiresGrad = false): SparseRouting {
  const tok: number[] = [];
  const ex: number[] = [];
  const w: number[] = [];
  for (let t = 0; t < T; t++) {
    const k = rng.int(maxK + 1);
    const perm = Int32Array.from({ length: E }, (_, i) => i);
    rng.shuffle(perm);
    for (let j = 0; j < k; j++) {
      tok.push(t);
      ex.push(perm[j]);
      w.push(0.1 + rng.next());
    }
  }
  return { kind: 'sparse', tokenIdx: Int32Array.from(tok), expertIdx: Int32Array.from(ex), weights: tensor(w, [w.length], requiresGrad) };
}

test('sortByExpert is a stable counting sort with sizes and offsets', () => {
  const tokenIdx = Int32Array.from([0, 0, 1, 1, 2, 2, 3]);
  const expertIdx = Int32Array.from([2, 0, 2, 1, 0, 2, 0]);
  const s = sortByExpert(tokenIdx, expertIdx, 4);
  assert.deepEqual(Array.from(s.order), [1, 4, 6, 3, 0, 2, 5]);
  assert.deepEqual(Array.from(s.rows), [0, 2, 3, 1, 0, 1, 2]);
  assert.deepEqual(Array.from(s.sizes), [3, 1, 3, 0]);
  assert.deepEqual(Array.from(s.offsets), [0, 3, 4, 7, 7]);
  const kept = sortByExpert(tokenIdx, expertIdx, 4, Uint8Array.from([1, 0, 1, 1, 0, 1, 1]));
  assert.deepEqual(Array.from(kept.order), [6, 3, 0, 2, 5]);
  assert.deepEqual(Array.from(kept.sizes), [1, 1, 3, 0]);
  assert.throws(() => sortByExpert(tokenIdx, Int32Array.from([0, 0, 0, 0, 0, 0, 4]), 4), /assignment 6 routes to expert 4, out of range \[0, 4\)/);
});

test('dropless dispatch equals the naive reference on random routings (swiglu, gelu, heterogeneous)', () => {
  const rng = new Rng(1);
  const banks = [new FFNExperts(5, 6, 7, 'swiglu', rng), new FFNExperts(5, 6, 4, 'gelu', rng), new HeterogeneousExperts([4, 8, 4, 2, 8], 6, 'swiglu', rng)];
  for (const bank of banks) {
    for (let trial = 0; trial < 3; trial++) {
      const x = randn(rng, [9, 6], false);
      const routing = randomRouting(rng, 9, 5, 3);
      const res = noGrad(() => droplessDispatch(x, routing, bank));
      assert.equal(res.kept, undefined);
      assert.equal(
        res.sizes.reduce((a, b) => a + b, 0),
        routing.expertIdx.length,
      );
      assertClose(res.y.data, referenceSparse(x, routing, bank), 1e-5, 1e-4, `${bank.constructor.name} trial ${trial}`);
    }
  }
});

test('dropless dispatch is differentiable in x, routing weights and expert weights', () => {
  const rng = new Rng(2);
  const bank = new FFNExperts(3, 4, 3, 'swiglu', rng);
  const x = randn(rng, [5, 4]);
  const r = randomRouting(rng, 5, 3, 2, true);
  gradcheck('droplessDispatch', (xx, w) => droplessDispatch(xx, { ...r, weights: w }, bank).y, [x, r.weights, bank.w1, bank.w3!, bank.w2]);
});

test('expert capacity is ceil(capacityFactor * T * k / E)', () => {
  assert.equal(expertCapacity(1, 16, 4), 4); // T=8, k=2, E=4
  assert.equal(expertCapacity(1.25, 16, 4), 5);
  assert.equal(expertCapacity(1.1, 10, 1), 11); // not 12 from float noise
  assert.equal(expertCapacity(1, 7, 2), 4);
  assert.equal(expertCapacity(2, 0, 3), 0);
  assert.throws(() => expertCapacity(0, 8, 2), /capacityFactor must be a positive finite number, got 0/);
});

test('capacity dispatch equals dropless when nothing overflows', () => {
  const rng = new Rng(3);
  const bank = new FFNExperts(4, 5, 6, 'swiglu', rng);
  const x = randn(rng, [10, 5], false);
  const routing = randomRouting(rng, 10, 4, 2);
  const cap = capacityDispatch(x, routing, bank, 100);
  assert.ok(cap.kept!.every((k) => k === 1));
  assertClose(cap.y.data, droplessDispatch(x, routing, bank).y.data, 0, 0);
});

test('capacity dispatch drops exactly the lowest-priority overflow (ties to the earlier token)', () => {
  // T=6, k=1, E=2, capacityFactor 1 -> capacity 3. Expert 0 gets 5 assignments, expert 1 one.
  const tokenIdx = Int32Array.from([0, 1, 2, 3, 4, 5]);
  const expertIdx = Int32Array.from([0, 0, 0, 0, 1, 0]);
  const w = [0.5, 0.9, 0.5, 0.2, 0.6, 0.7];
  const routing: SparseRouting = { kind: 'sparse', tokenIdx, expertIdx, weights: tensor(w, [6]) };
  // expert 0 by priority: tok1 0.9, tok5 0.7, then tok0 and tok2 tie at 0.5 -> tok0 wins; tok2, tok3 drop
  assert.deepEqual(Array.from(capacityMask(routing, 2, 3)), [1, 1, 0, 0, 1, 1]);
  const rng = new Rng(4);
  const bank = new FFNExperts(2, 3, 4, 'gelu', rng);
  const x = randn(rng, [6, 3], false);
  const res = capacityDispatch(x, routing, bank, 1);
  assert.equal(res.capacity, 3);
  assert.deepEqual(Array.from(res.kept!), [1, 1, 0, 0, 1, 1]);
  assert.deepEqual(Array.from(res.sizes), [3, 1]);
  const dropped = res.kept!.reduce((s, k) => s + (k ? 0 : 1), 0) / res.kept!.length;
  assert.equal(dropped, 2 / 6);
  assertClose(res.y.data, referenceSparse(x, routing, bank, res.kept), 1e-5, 1e-4);
  // dropped tokens contribute exactly zero (they pass through on the residual)
  for (const t of [2, 3]) assert.deepEqual(Array.from(res.y.data.subarray(t * 3, t * 3 + 3)), [0, 0, 0]);
  // an explicit priority overrides the weights
  const byPriority = capacityMask({ ...routing, priority: Float32Array.from([0, 0, 1, 1, 0, 1]) }, 2, 3);
  assert.deepEqual(Array.from(byPriority), [0, 0, 1, 1, 1, 1]);
});

test('soft dispatch equals the naive slot computation and is differentiable', () => {
  const rng = new Rng(5);
  const T = 5;
  const E = 3;
  const S = 2;
  const bank = new FFNExperts(E, 4, 3, 'swiglu', rng);
  const x = randn(rng, [T, 4]);
  const logits = randn(rng, [T, E * S]);
  const mk = (lg: Tensor): SoftRouting => {
    // dispatch: softmax over tokens (columns sum to 1); combine: softmax over slots
    const dT = softmax(lg, 0);
    return { kind: 'soft', slotsPerExpert: S, dispatch: dT, combine: softmax(lg, 1) };
  };
  const routing = noGrad(() => mk(logits));
  const res = noGrad(() => softDispatch(x, routing, bank));
  assert.deepEqual(Array.from(res.sizes), [2, 2, 2]);
  assertClose(res.y.data, referenceSoft(x, routing, bank), 1e-5, 1e-4);
  gradcheck('softDispatch', (xx, lg) => softDispatch(xx, mk(lg), bank).y, [x, logits, bank.w2]);
  assert.throws(() => softDispatch(x, { ...routing, slotsPerExpert: 3 }, bank), /dispatch must be \[T, E\*S\] = \[5, 9\], got \[5, 6\]/);
});

test('dispatch rejects malformed routing records with named errors', () => {
  const bank = new FFNExperts(2, 3, 4, 'gelu', new Rng(0));
  const x = randn(new Rng(1), [2, 3], false);
  const ok: SparseRouting = { kind: 'sparse', tokenIdx: Int32Array.from([0, 1]), expertIdx: Int32Array.from([1, 0]), weights: tensor([1, 1]) };
  assert.throws(() => droplessDispatch(x, { ...ok, expertIdx: Int32Array.from([2, 0]) }, bank), /droplessDispatch: assignment 0 routes to expert 2, out of range \[0, 2\)/);
  assert.throws(() => droplessDispatch(x, { ...ok, tokenIdx: Int32Array.from([0, 2]) }, bank), /assignment 1 routes token 2, out of range \[0, 2\)/);
  assert.throws(() => droplessDispatch(x, { ...ok, weights: tensor([1]) }, bank), /2 assignments but 1 weights/);
  assert.throws(() => capacityDispatch(x, { ...ok, expertIdx: Int32Array.from([0]) }, bank, 1), /capacityDispatch: routing has 2 token indices but 1 expert indices/);
  assert.throws(() => droplessDispatch(randn(new Rng(1), [2, 4], false), ok, bank), /x must be \[T, 3\]/);
});
