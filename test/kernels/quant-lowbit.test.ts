/** The moe-ts low-bit expert formats q3_m / q2_m: layout, round trips, kernels vs the dequantised reference. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { quantizeMatrix, dequantizeMatrix, quantizeRowsQ8, qmatmul, quantBytes } from '../../src/kernels/quant.js';
import { f16BitsToF32 } from '../../src/tensor/dtype.js';

function rand(n: number, seed: number, scale = 1): Float32Array {
  const r = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * scale;
  return a;
}

test('q3_m / q2_m sizes: 16 and 12 bytes per 32 values (4.0 and 3.0 bits per weight)', () => {
  assert.equal(quantBytes('q3_m', 3, 64), 3 * 2 * 16);
  assert.equal(quantBytes('q2_m', 3, 64), 3 * 2 * 12);
  assert.equal(quantizeMatrix(rand(3 * 64, 1), 3, 64, 'q2_m').data.length, 72);
});

test('values on a block grid q * d + m round-trip exactly; the layout is f16 d, f16 m, a little-endian code stream', () => {
  for (const [fmt, bits] of [
    ['q3_m', 3],
    ['q2_m', 2],
  ] as const) {
    const L = (1 << bits) - 1;
    const d = 0.25;
    const m = -0.5;
    const codes = Array.from({ length: 32 }, (_, j) => (j * 5 + 1) % (L + 1));
    codes[0] = 0; // both ends of the range occur, so the min/max search lands on d, m
    codes[1] = L;
    const w = Float32Array.from(codes, (q) => q * d + m);
    const qm = quantizeMatrix(w, 1, 32, fmt);
    assert.deepEqual(Array.from(dequantizeMatrix(qm)), Array.from(w), fmt);
    const b = qm.data as Uint8Array;
    assert.equal(f16BitsToF32(b[0] | (b[1] << 8)), d);
    assert.equal(f16BitsToF32(b[2] | (b[3] << 8)), m);
    // value j's code at bit bits*j of the stream after the 4 header bytes
    for (let j = 0; j < 32; j++) {
      let v = 0;
      for (let k = 0; k < bits; k++) {
        const bit = bits * j + k;
        v |= ((b[4 + (bit >> 3)] >> (bit & 7)) & 1) << k;
      }
      assert.equal(v, codes[j], `${fmt} code ${j}`);
    }
  }
});

test('round-trip error of random weights: within one grid step, and q2_m > q3_m > q4_0 in RMS error', () => {
  const rows = 16;
  const cols = 256;
  const w = rand(rows * cols, 2);
  for (let j = 64; j < 96; j++) w[j] = 0.3; // a constant block must not give NaN
  const rms: Record<string, number> = {};
  for (const fmt of ['q4_0', 'q3_m', 'q2_m'] as const) {
    const back = dequantizeMatrix(quantizeMatrix(w, rows, cols, fmt));
    assert.ok(back.every(Number.isFinite), fmt);
    let s = 0;
    for (let i = 0; i < w.length; i++) s += (back[i] - w[i]) ** 2;
    rms[fmt] = Math.sqrt(s / w.length);
    if (fmt !== 'q4_0') {
      const L = fmt === 'q3_m' ? 7 : 3;
      for (let b = 0; b < w.length / 32; b++) {
        let lo = Infinity;
        let hi = -Infinity;
        for (let j = 0; j < 32; j++) [lo, hi] = [Math.min(lo, w[b * 32 + j]), Math.max(hi, w[b * 32 + j])];
        // clipping trades the extremes for a finer grid, but never by more than the block's range
        for (let j = 0; j < 32; j++) assert.ok(Math.abs(back[b * 32 + j] - w[b * 32 + j]) <= (hi - lo) / L + 1e-3, `${fmt} block ${b}`);
      }
    }
    for (let j = 64; j < 96; j++) assert.ok(Math.abs(back[j] - 0.3) < 1e-3, `${fmt} constant block`);
  }
  assert.ok(rms.q2_m > rms.q3_m && rms.q3_m > rms.q4_0, JSON.stringify(rms));
  // the range search + least-squares refit beats plain min/max quantisation
  let plain = 0;
  for (let b = 0; b < w.length / 32; b++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = 0; j < 32; j++) [lo, hi] = [Math.min(lo, w[b * 32 + j]), Math.max(hi, w[b * 32 + j])];
    const d = (hi - lo) / 3;
    for (let j = 0; j < 32; j++) plain += (d ? Math.round((w[b * 32 + j] - lo) / d) * d + lo - w[b * 32 + j] : 0) ** 2;
  }
  assert.ok(rms.q2_m < Math.sqrt(plain / w.length), `${rms.q2_m} vs plain ${Math.sqrt(plain / w.length)}`);
});

test('qmatmul on q3_m / q2_m equals the float product of the dequantised weights and the q8_0 activations', async () => {
  const rows = 24;
  const cols = 128;
  const w = rand(rows * cols, 3);
  const { WasmQuantKernels } = await import('../../src/kernels/wasm/quant.js');
  const wk = new WasmQuantKernels();
  for (const fmt of ['q3_m', 'q2_m'] as const) {
    const m = quantizeMatrix(w, rows, cols, fmt);
    const wd = dequantizeMatrix(m);
    for (const n of [1, 4]) {
      const x = rand(n * cols, 4 + n, 2);
      const xq = quantizeRowsQ8(x, n, cols);
      const out = qmatmul(m, x, n, new Float32Array(n * rows));
      for (let t = 0; t < n; t++)
        for (let r = 0; r < rows; r++) {
          let s = 0;
          for (let c = 0; c < cols; c++) s += wd[r * cols + c] * xq.q[t * cols + c] * xq.d[((t * cols + c) / 32) | 0];
          assert.ok(Math.abs(out[t * rows + r] - s) < 1e-3 * (1 + Math.abs(s)), `${fmt} n=${n} [${t},${r}] ${out[t * rows + r]} vs ${s}`);
        }
      // accumulate and strides as for the ggml formats
      const acc = qmatmul(m, x, n, out.slice(), { accumulate: true });
      for (let i = 0; i < acc.length; i++) assert.ok(Math.abs(acc[i] - 2 * out[i]) < 1e-4 * (1 + Math.abs(out[i])));
      const wide = new Float32Array(n * (rows + 2)).fill(7);
      qmatmul(m, x, n, wide, { ldo: rows + 2 });
      assert.equal(wide[rows], 7);
      assert.ok(Math.abs(wide[0] - out[0]) < 1e-6 * (1 + Math.abs(out[0])));
      // the wasm QuantKernels run these formats through the same js kernel
      assert.deepEqual(wk.matmul(wk.prepare(m), x, n, new Float32Array(n * rows)), out);
    }
  }
});
