/** The js reference matmul's transB path (one contiguous dot product per output) gives the bits of the general loop. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { refMatmul } from '../../src/kernels/js.js';

test('refMatmul with transB is bit-identical to the same product with B transposed explicitly (zeros, accumulate, batches)', () => {
  const r = new Rng(5);
  const [batch, m, k, n] = [2, 3, 37, 5];
  const a = Float32Array.from({ length: batch * m * k }, () => (r.next() < 0.2 ? 0 : r.normal()));
  const bt = Float32Array.from({ length: batch * n * k }, () => r.normal()); // [n, k] per batch
  bt[3] = Infinity; // meets a zero of A only where skipped the same way in both loops
  a[3] = 0;
  const b = new Float32Array(batch * k * n);
  for (let q = 0; q < batch; q++) for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) b[q * k * n + p * n + j] = bt[q * n * k + j * k + p];
  for (const accumulate of [false, true]) {
    const base = Float32Array.from({ length: batch * m * n }, () => r.normal());
    const want = refMatmul(a, b, m, k, n, { batch, accumulate, out: base.slice() });
    const got = refMatmul(a, bt, m, k, n, { batch, accumulate, transB: true, out: base.slice() });
    assert.deepEqual(got, want);
    // and it is the float64 sum, rounded once
    let dot = 0;
    for (let p = 0; p < k; p++) if (a[p] !== 0) dot += a[p] * bt[p];
    assert.equal(got[0], Math.fround(accumulate ? base[0] + dot : dot));
  }
  // broadcastB: one B for every batch
  const want = refMatmul(a, b.subarray(0, k * n), m, k, n, { batch, broadcastB: true });
  assert.deepEqual(refMatmul(a, bt.subarray(0, n * k), m, k, n, { batch, broadcastB: true, transB: true }), want);
});
