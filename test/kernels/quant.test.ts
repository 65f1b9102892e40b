/** Quantised matrices: ggml block compatibility (Q8_0/Q4_0) and the kernels against float references. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { quantizeMatrix, dequantizeMatrix, quantMatrixFromBlocks, quantizeRowsQ8, qmatmul, quantBytes } from '../../src/kernels/quant.js';
import { encodeTensor, decodeTensor } from '../../src/io/gguf/quant.js';
import { f16BitsToF32 } from '../../src/tensor/dtype.js';

function rand(n: number, seed: number, scale = 1): Float32Array {
  const r = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * scale;
  return a;
}

test('quantizeMatrix writes the same bytes as the GGUF encoder (ggml reference quantisers)', () => {
  const w = rand(8 * 96, 1);
  w[5] = 0; // an all-zero block must give d = 0, not NaN
  for (let j = 32; j < 64; j++) w[j] = 0;
  for (const [fmt, ggml] of [
    ['q8_0', 'Q8_0'],
    ['q4_0', 'Q4_0'],
  ] as const) {
    const m = quantizeMatrix(w, 8, 96, fmt);
    assert.deepEqual(m.data, encodeTensor(w, ggml, 96), fmt);
    assert.equal(m.data.length, quantBytes(fmt, 8, 96));
    // GGUF bytes are a QuantMatrix as is, and decode to the same values both ways
    const g = quantMatrixFromBlocks(fmt, 8, 96, encodeTensor(w, ggml, 96));
    assert.deepEqual(dequantizeMatrix(g), decodeTensor(g.data as Uint8Array, ggml, w.length));
    assert.ok(dequantizeMatrix(g).every(Number.isFinite));
  }
});

test('q8_0 / q4_0 blocks follow ggml: f16 scale first, q4 low nibbles hold the first 16 values', () => {
  const w = new Float32Array(32);
  for (let j = 0; j < 32; j++) w[j] = j - 16; // max magnitude -16 at j = 0
  const q4 = quantizeMatrix(w, 1, 32, 'q4_0').data as Uint8Array;
  const d4 = f16BitsToF32(q4[0] | (q4[1] << 8));
  assert.equal(d4, -16 / -8); // d = max / -8 with the signed max
  assert.equal(q4[2] & 15, Math.min(15, Math.trunc(-16 / d4 + 8.5))); // value 0 in the low nibble of byte 0
  assert.equal(q4[2] >> 4, Math.min(15, Math.trunc(0 / d4 + 8.5))); // value 16 in its high nibble
  const q8 = quantizeMatrix(w, 1, 32, 'q8_0').data as Uint8Array;
  const d8 = f16BitsToF32(q8[0] | (q8[1] << 8));
  assert.ok(Math.abs(d8 - 16 / 127) < 1e-4);
  assert.equal((q8[2] << 24) >> 24, -127);
});

test('qmatmul matches the float product of the dequantised weights with q8_0-quantised activations', () => {
  const rows = 24;
  const cols = 128;
  const n = 3;
  const w = rand(rows * cols, 2);
  const x = rand(n * cols, 3);
  for (const fmt of ['f32', 'q8_0', 'q4_0'] as const) {
    const m = quantizeMatrix(w, rows, cols, fmt);
    const wd = dequantizeMatrix(m);
    // the activations as the kernel sees them
    let xa = x;
    if (fmt !== 'f32') {
      const xq = quantizeRowsQ8(x, n, cols);
      xa = new Float32Array(n * cols);
      for (let i = 0; i < n * cols; i++) xa[i] = xq.q[i] * xq.d[(i / 32) | 0];
    }
    const out = qmatmul(m, x, n, new Float32Array(n * rows));
    const exact = new Float32Array(n * rows);
    for (let t = 0; t < n; t++)
      for (let r = 0; r < rows; r++) {
        let s = 0;
        let sf = 0;
        for (let c = 0; c < cols; c++) {
          s += wd[r * cols + c] * xa[t * cols + c];
          sf += w[r * cols + c] * x[t * cols + c];
        }
        assert.ok(Math.abs(out[t * rows + r] - s) < 1e-3 * (1 + Math.abs(s)), `${fmt} [${t},${r}] ${out[t * rows + r]} vs ${s}`);
        exact[t * rows + r] = sf;
      }
    // quantisation error is bounded: relative RMS error vs the float product
    let num = 0;
    let den = 0;
    for (let i = 0; i < exact.length; i++) {
      num += (out[i] - exact[i]) ** 2;
      den += exact[i] ** 2;
    }
    const rel = Math.sqrt(num / den);
    assert.ok(rel < (fmt === 'f32' ? 1e-6 : fmt === 'q8_0' ? 0.02 : 0.2), `${fmt} relative error ${rel}`);
    // accumulate adds to out, and a strided output leaves the gaps alone
    const acc = qmatmul(m, x, n, out.slice(), { accumulate: true });
    for (let i = 0; i < acc.length; i++) assert.ok(Math.abs(acc[i] - 2 * out[i]) < 1e-4 * (1 + Math.abs(out[i])));
    const wide = new Float32Array(n * (rows + 2)).fill(7);
    qmatmul(m, x, n, wide, { ldo: rows + 2 });
    assert.equal(wide[rows], 7);
    assert.ok(Math.abs(wide[rows + 2] - out[rows]) < 1e-5 * (1 + Math.abs(out[rows])));
  }
});

test('quantised matrices reject malformed shapes and data with one-line errors', () => {
  assert.throws(() => quantizeMatrix(new Float32Array(40), 1, 40, 'q8_0'), /cols 40 is not a multiple of the q8_0 block size 32/);
  assert.throws(() => quantizeMatrix(new Float32Array(10), 1, 32, 'q4_0'), /10 values for 1 x 32/);
  assert.throws(() => quantizeMatrix(new Float32Array(32), 1, 32, 'q5_k' as never), /format must be one of f32, q8_0, q4_0/);
  assert.throws(() => quantMatrixFromBlocks('q4_0', 2, 32, new Uint8Array(35)), /needs 36 bytes, got 35/);
  assert.throws(() => qmatmul(quantizeMatrix(new Float32Array(64), 2, 32, 'q8_0'), new Float32Array(31), 1, new Float32Array(2)), /x has 31 values/);
});

test('wasm SIMD quant kernels match the js reference (f32, q8_0, q4_0; batches, strides, accumulate)', async () => {
  const { WasmQuantKernels } = await import('../../src/kernels/wasm/quant.js');
  const wk = new WasmQuantKernels();
  const rows = 40;
  const cols = 96;
  const w = rand(rows * cols, 7);
  for (const fmt of ['f32', 'q8_0', 'q4_0'] as const) {
    const m = quantizeMatrix(w, rows, cols, fmt);
    const p = wk.prepare(m);
    for (const n of [1, 5]) {
      const x = rand(n * cols, 8 + n, 3);
      const ref = qmatmul(m, x, n, new Float32Array(n * rows));
      const got = wk.matmul(p, x, n, new Float32Array(n * rows));
      for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(got[i] - ref[i]) <= 1e-5 * (1 + Math.abs(ref[i])), `${fmt} n=${n} [${i}] ${got[i]} vs ${ref[i]}`);
      const base = rand(n * (rows + 3), 9);
      const refAcc = qmatmul(m, x, n, base.slice(), { accumulate: true, ldo: rows + 3 });
      const gotAcc = wk.matmul(p, x, n, base.slice(), { accumulate: true, ldo: rows + 3 });
      for (let i = 0; i < refAcc.length; i++) assert.ok(Math.abs(gotAcc[i] - refAcc[i]) <= 1e-5 * (1 + Math.abs(refAcc[i])), `${fmt} acc [${i}]`);
    }
  }
  assert.ok(wk.preparedBytes > 0);
});

test('prepared activations: wasm matmulActs and the generic fallback match qmatmul on the same rows (tiles of 4, row subsets, strides, accumulate)', async () => {
  const { WasmQuantKernels } = await import('../../src/kernels/wasm/quant.js');
  const { prepareActs, matmulOnActs, jsQuantKernels } = await import('../../src/kernels/quant.js');
  const wk = new WasmQuantKernels();
  const rows = 37;
  const cols = 160;
  const w = rand(rows * cols, 11);
  const n = 11;
  const x = rand(n * cols, 12, 2);
  x.fill(0, 32, 64); // an all-zero activation block (scale 0)
  for (const fmt of ['f32', 'q8_0', 'q4_0', 'q3_m'] as const) {
    const m = quantizeMatrix(w, rows, cols, fmt);
    if (fmt === 'q8_0') (m.data as Uint8Array).fill(0x80, 2, 34); // int8 -128 weights: the extreme of the block format
    for (const kern of [wk, jsQuantKernels]) {
      const p = kern.prepare(m);
      const a = prepareActs(kern, x, n, cols, 1);
      for (const sel of [undefined, Int32Array.of(3), Int32Array.of(10, 0, 5, 5, 2), Int32Array.of(1, 2, 3, 4, 6, 7, 8, 9, 0)]) {
        const k = sel ? sel.length : n;
        const xs = new Float32Array(k * cols);
        for (let i = 0; i < k; i++) xs.set(x.subarray((sel ? sel[i] : i) * cols, ((sel ? sel[i] : i) + 1) * cols), i * cols);
        const ref = qmatmul(m, xs, k, new Float32Array(k * rows));
        const got = matmulOnActs(kern, p, a, new Float32Array(k * rows), { rows: sel });
        for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(got[i] - ref[i]) <= 1e-5 * (1 + Math.abs(ref[i])), `${kern.name} ${fmt} rows ${sel?.join(',') ?? 'all'} [${i}] ${got[i]} vs ${ref[i]}`);
        const base = rand(k * (rows + 3), 13);
        const refAcc = qmatmul(m, xs, k, base.slice(), { accumulate: true, ldo: rows + 3 });
        const gotAcc = matmulOnActs(kern, p, a, base.slice(), { rows: sel, accumulate: true, ldo: rows + 3 });
        for (let i = 0; i < refAcc.length; i++) assert.ok(Math.abs(gotAcc[i] - refAcc[i]) <= 1e-5 * (1 + Math.abs(refAcc[i])), `${kern.name} ${fmt} acc [${i}]`);
      }
      // a snapshot: changing x afterwards does not change the prepared rows
      const before = matmulOnActs(kern, p, a, new Float32Array(n * rows));
      const x2 = x.slice();
      const a2 = prepareActs(kern, x2, n, cols, 2);
      x2.fill(5);
      const after = matmulOnActs(kern, p, a2, new Float32Array(n * rows));
      assert.deepEqual(after, before, `${kern.name} ${fmt} snapshot`);
      assert.throws(() => matmulOnActs(kern, p, a, new Float32Array(rows), { rows: Int32Array.of(n) }), /rows\[0\] = 11 outside the 11 prepared rows/);
    }
  }
  assert.throws(() => prepareActs(wk, new Float32Array(10), 1, 32), /x has 10 values, needs 1 x 32/);
});
