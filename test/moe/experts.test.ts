// Expert banks: stacked FFNs against the naive per-row reference, heterogeneous widths,
// shared experts, fine-grained segmentation, the registry and config errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { FFNExperts, HeterogeneousExperts, SharedExperts, fineGrainedSegmentation, expertRegistry } from '../../src/moe/experts/index.js';
import { referenceExpert, referenceShared } from '../../src/moe/reference.js';
import type { ExpertBank } from '../../src/moe/types.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** Run a bank on grouped rows and compare each row with the reference expert of its group. */
function checkAgainstReference(bank: ExpertBank, sizes: number[], seed: number): void {
  const rng = new Rng(seed);
  const rows = sizes.reduce((a, b) => a + b, 0);
  const d = bank.dModel;
  const x = randn(rng, [rows, d], false);
  const y = bank.forwardGrouped(x, Int32Array.from(sizes));
  assert.deepEqual(y.shape, [rows, d]);
  let r = 0;
  sizes.forEach((n, e) => {
    for (let i = 0; i < n; i++, r++) {
      const ref = referenceExpert(bank, e, x.data.subarray(r * d, (r + 1) * d));
      assertClose(y.data.subarray(r * d, (r + 1) * d), ref, 1e-5, 1e-4, `expert ${e} row ${r}`);
    }
  });
}

test('SwiGLU and GELU banks match the reference per row, including empty groups', () => {
  for (const act of ['swiglu', 'gelu'] as const) {
    const bank = new FFNExperts(4, 6, 5, act, new Rng(1));
    assert.equal(bank.w3 === null, act === 'gelu');
    assert.deepEqual(bank.w1.shape, [4, 6, 5]);
    assert.deepEqual(bank.w2.shape, [4, 5, 6]);
    checkAgainstReference(bank, [3, 0, 2, 4], 10);
    assert.equal(bank.flopsPerToken(0), (act === 'swiglu' ? 3 : 2) * 6 * 5);
  }
});

test('expert weights init N(0, 1/fan_in); outputScale scales the output projection', () => {
  const std = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
  const bank = new FFNExperts(8, 64, 32, 'swiglu', new Rng(2), { outputScale: 0.5 });
  assert.ok(Math.abs(std(bank.w1.data) - 1 / 8) < 0.01);
  assert.ok(Math.abs(std(bank.w3!.data) - 1 / 8) < 0.01);
  assert.ok(Math.abs(std(bank.w2.data) - 0.5 / Math.sqrt(32)) < 0.01);
  assert.throws(() => new FFNExperts(2, 4, 4, 'gelu', new Rng(0), { outputScale: 0 }), /outputScale must be a positive finite number/);
});

test('same seed, same weights', () => {
  const a = new FFNExperts(2, 4, 3, 'swiglu', new Rng(7));
  const b = new FFNExperts(2, 4, 3, 'swiglu', new Rng(7));
  assert.deepEqual(a.w2.data, b.w2.data);
});

test('heterogeneous experts (interleaved widths) match the reference and group by width', () => {
  const bank = new HeterogeneousExperts([8, 4, 8, 2, 4], 5, 'swiglu', new Rng(3));
  assert.equal(bank.banks.length, 3);
  assert.deepEqual(Array.from(bank.bankOf), [0, 1, 0, 2, 1]);
  assert.deepEqual(Array.from(bank.localOf), [0, 0, 1, 0, 1]);
  assert.deepEqual(
    bank.banks.map((b) => b.dFF),
    [8, 4, 2],
  );
  assert.equal(bank.flopsPerToken(3), 3 * 5 * 2);
  checkAgainstReference(bank, [2, 3, 0, 1, 2], 11);
  checkAgainstReference(bank, [0, 0, 0, 0, 0], 12);
  const names = bank.namedParameters().map(([n]) => n);
  assert.deepEqual(names.slice(0, 3), ['banks.0.w1', 'banks.0.w3', 'banks.0.w2']);
});

test('heterogeneous experts pass gradcheck through the bank-major reordering', () => {
  const bank = new HeterogeneousExperts([3, 2, 3], 3, 'gelu', new Rng(4));
  const rng = new Rng(5);
  const x = randn(rng, [5, 3]);
  const sizes = Int32Array.from([2, 1, 2]);
  const params = bank.parameters();
  gradcheck(
    'HeterogeneousExperts',
    (xx, ...ps) => {
      params.forEach((p, i) => (p.data = ps[i].data));
      return bank.forwardGrouped(xx, sizes);
    },
    [x, ...params],
  );
});

test('FFN bank passes gradcheck in x and all weights', () => {
  const bank = new FFNExperts(3, 4, 3, 'swiglu', new Rng(6));
  const x = randn(new Rng(7), [6, 4]);
  const sizes = Int32Array.from([2, 0, 4]);
  gradcheck('FFNExperts', (xx) => bank.forwardGrouped(xx, sizes), [x, bank.w1, bank.w3!, bank.w2]);
});

test('shared experts equal the sum of count separate FFNs on every token', () => {
  for (const act of ['swiglu', 'gelu'] as const) {
    const shared = new SharedExperts(3, 5, 4, act, new Rng(8));
    assert.deepEqual(shared.w1.shape, [5, 12]);
    const x = randn(new Rng(9), [4, 5], false);
    const y = noGrad(() => shared.forward(x));
    for (let t = 0; t < 4; t++) {
      assertClose(y.data.subarray(t * 5, t * 5 + 5), referenceShared(shared, x.data.subarray(t * 5, t * 5 + 5)), 1e-5, 1e-4, `${act} token ${t}`);
    }
  }
});

test('fine-grained segmentation multiplies experts and k by m and divides the width', () => {
  assert.deepEqual(fineGrainedSegmentation({ numExperts: 8, topK: 2, dFF: 1024 }, 8), { numExperts: 64, topK: 16, dFF: 128 });
  assert.deepEqual(fineGrainedSegmentation({ numExperts: 16, topK: 1, dFF: 96 }, 1), { numExperts: 16, topK: 1, dFF: 96 });
  assert.throws(() => fineGrainedSegmentation({ numExperts: 8, topK: 2, dFF: 100 }, 3), /dFF 100 is not divisible by m=3/);
  assert.throws(() => fineGrainedSegmentation({ numExperts: 8, topK: 2, dFF: 128 }, 0), /m \(segments per expert\) must be a positive integer/);
  assert.throws(() => fineGrainedSegmentation({ numExperts: 2, topK: 3, dFF: 128 }, 2), /topK 3 exceeds numExperts 2/);
});

test('expert registry builds banks by name and rejects unknown types and bad sizes', () => {
  assert.deepEqual(expertRegistry.names().sort(), ['clamped-swiglu', 'gelu', 'mpo', 'nested', 'swiglu']);
  const b = expertRegistry.get('gelu')({ numExperts: 2, dModel: 4, dFF: 3 }, new Rng(0));
  assert.ok(b instanceof FFNExperts);
  const h = expertRegistry.get('swiglu')({ numExperts: 2, dModel: 4, dFF: 3, sizes: [3, 6] }, new Rng(0));
  assert.ok(h instanceof HeterogeneousExperts);
  assert.throws(() => expertRegistry.get('relu'), /unknown expert type "relu": expected one of swiglu, gelu/);
  assert.throws(() => expertRegistry.get('gelu')({ numExperts: 3, dModel: 4, dFF: 3, sizes: [3, 6] }, new Rng(0)), /sizes has 2 entries for numExperts 3/);
  assert.throws(() => new FFNExperts(0, 4, 4, 'gelu', new Rng(0)), /FFNExperts: numExperts must be a positive integer, got 0/);
  assert.throws(() => new FFNExperts(2, 4, 4, 'relu' as 'gelu', new Rng(0)), /activation must be one of swiglu, gelu/);
  assert.throws(() => new HeterogeneousExperts([4, 2.5], 4, 'gelu', new Rng(0)), /sizes\[1\] must be a positive integer/);
  const bank = new FFNExperts(2, 4, 4, 'gelu', new Rng(0));
  assert.throws(() => bank.forwardGrouped(new Tensor(new Float32Array(6), [2, 3]), Int32Array.from([1, 1])), /x must be \[rows, 4\]/);
  assert.throws(() => bank.forwardGrouped(new Tensor(new Float32Array(8), [2, 4]), Int32Array.from([1, 2])), /group sizes add up to 3 rows but x has 2/);
});
