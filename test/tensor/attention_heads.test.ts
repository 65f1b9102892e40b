import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitHeads, mergeHeads, permute, reshape, rope, tensor } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

test('splitHeads equals reshape + permute (+ rope), and mergeHeads inverts it', () => {
  const rng = new Rng(5);
  for (const [B, T, H, Dh, offset] of [
    [2, 3, 2, 4, 0],
    [1, 5, 3, 2, 7],
    [3, 1, 1, 6, 2],
  ]) {
    const x = randn(rng, [B * T, H * Dh], false);
    const ref = permute(reshape(x, [B, T, H, Dh]), [0, 2, 1, 3]);
    assertClose(splitHeads(x, B, T, H).data, ref.data, 0, 0, 'layout');
    assertClose(splitHeads(x, B, T, H, { offset, theta: 500 }).data, rope(ref, offset, 500).data, 1e-6, 1e-6, 'rope');
    assert.deepEqual(mergeHeads(splitHeads(x, B, T, H)).data, x.data);
  }
});

test('splitHeads / mergeHeads gradients', () => {
  const rng = new Rng(6);
  const x = randn(rng, [2 * 3, 2 * 4]);
  gradcheck('splitHeads', (a) => splitHeads(a, 2, 3, 2), [x]);
  gradcheck('splitHeads+rope', (a) => splitHeads(a, 2, 3, 2, { offset: 3, theta: 100 }), [x]);
  gradcheck('mergeHeads', (a) => mergeHeads(a), [randn(rng, [2, 2, 3, 4])]);
});

test('splitHeads with explicit positions rotates each row as rope at that position; gradcheck', () => {
  const rng = new Rng(7);
  const [B, T, H, Dh] = [2, 3, 2, 4];
  const x = randn(rng, [B * T, H * Dh]);
  const positions = Int32Array.from([5, 0, 9, 2, 2, 17]);
  const got = splitHeads(x, B, T, H, { offset: 0, theta: 300, positions }).data;
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const r = b * T + t;
      const row = splitHeads(tensor(x.data.slice(r * H * Dh, (r + 1) * H * Dh), [1, H * Dh]), 1, 1, H, { offset: positions[r], theta: 300 }).data;
      for (let h = 0; h < H; h++) for (let i = 0; i < Dh; i++) assert.equal(got[((b * H + h) * T + t) * Dh + i], row[h * Dh + i], `b${b} t${t} h${h} i${i}`);
    }
  gradcheck('splitHeads+rope at positions', (a) => splitHeads(a, B, T, H, { offset: 0, theta: 300, positions }), [x]);
});

test('splitHeads / mergeHeads reject wrong shapes', () => {
  const rng = new Rng(7);
  assert.throws(() => splitHeads(randn(rng, [5, 8], false), 2, 3, 2), /splitHeads: expected \[2\*3, H\*Dh\] with H=2, got \[5, 8\]/);
  assert.throws(() => splitHeads(randn(rng, [6, 6], false), 2, 3, 2, { offset: 0, theta: 1e4 }), /head dim 3 must be even/);
  assert.throws(() => mergeHeads(randn(rng, [2, 3], false)), /mergeHeads: expected \[B, H, T, Dh\]/);
});
