import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16BitsToF32,
  bf16ToF32,
  dequantizeInt8,
  DTYPE_BYTES,
  DTYPES,
  f16BitsToF32,
  f16ToF32,
  f32ToBf16,
  f32ToBf16Bits,
  f32ToF16,
  f32ToF16Bits,
  fromFloat32,
  isDType,
  quantizeInt8,
  quantizeInt8PerRow,
  roundHalfEven,
  toFloat32,
} from '../../src/tensor/dtype.js';
import { Rng } from '../../src/tensor/random.js';

const f32 = Math.fround;

test('byte sizes and dtype guard', () => {
  assert.equal(DTYPE_BYTES.float32, 4);
  assert.equal(DTYPE_BYTES.float16, 2);
  assert.equal(DTYPE_BYTES.bfloat16, 2);
  assert.equal(DTYPE_BYTES.int8, 1);
  assert.equal(DTYPE_BYTES.int64, 8);
  for (const d of DTYPES) assert.ok(isDType(d));
  assert.ok(!isDType('float8'));
  assert.ok(!isDType('toString'));
});

test('float16 known bit patterns', () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(0.5), 0x3800);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(2 ** -14), 0x0400); // smallest normal
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001); // smallest subnormal
  assert.equal(f32ToF16Bits(1023 * 2 ** -24), 0x03ff); // largest subnormal
  assert.equal(f32ToF16Bits(0), 0x0000);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(Infinity), 0x7c00);
  assert.equal(f32ToF16Bits(-Infinity), 0xfc00);
  const nan = f32ToF16Bits(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  assert.equal(f16BitsToF32(0x3c00), 1);
  assert.equal(f16BitsToF32(0x7bff), 65504);
  assert.equal(f16BitsToF32(0x0001), 2 ** -24);
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  assert.equal(f16BitsToF32(0x7c00), Infinity);
  assert.equal(f16BitsToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.ok(Number.isNaN(f16BitsToF32(nan)));
});

test('float16 overflow, underflow and rounding ties', () => {
  // 65520 is halfway between 65504 and 65536 (=inf): ties to even -> inf
  assert.equal(f32ToF16Bits(65519), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
  assert.equal(f32ToF16Bits(1e6), 0x7c00);
  // 1 + 2^-11 is halfway between 1 and 1+2^-10: ties to even (1.0)
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even) -> up
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01);
  // subnormal ties: 0.5 * 2^-24 -> 0 (even), 1.5 * 2^-24 -> 2 (even), 2.5 * 2^-24 -> 2
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000);
  assert.equal(f32ToF16Bits(-(2 ** -25)), 0x8000);
  assert.equal(f32ToF16Bits(1.5 * 2 ** -24), 0x0002);
  assert.equal(f32ToF16Bits(2.5 * 2 ** -24), 0x0002);
  assert.equal(f32ToF16Bits(2 ** -25 + 2 ** -35), 0x0001); // just above half -> up
  assert.equal(f32ToF16Bits(2 ** -26), 0x0000);
  assert.equal(f32ToF16Bits(1e-45), 0x0000); // float32 subnormal
  // largest subnormal + half ulp rounds into the smallest normal (carry across the boundary)
  assert.equal(f32ToF16Bits(1023.5 * 2 ** -24), 0x0400);
});

test('float16 exact round trip of every finite half value', () => {
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const vals = f16ToF32(all);
  const back = f32ToF16(vals);
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok(Number.isNaN(vals[h]));
    else assert.equal(back[h], h, `half 0x${h.toString(16)}`);
  }
});

test('float16 rounding matches the nearest representable value', () => {
  const rng = new Rng(1);
  const src = new Float32Array(5000);
  for (let i = 0; i < src.length; i++) src[i] = (rng.next() - 0.5) * 2 ** (rng.int(40) - 26);
  const h = f32ToF16(src);
  for (let i = 0; i < src.length; i++) {
    const x = src[i];
    const y = f16BitsToF32(h[i]);
    // neighbours of the chosen half must be no closer
    for (const n of [h[i] - 1, h[i] + 1]) {
      if ((n & 0x7fff) >= 0x7c00 || n < 0 || n > 0xffff || ((n ^ h[i]) & 0x8000) !== 0) continue;
      assert.ok(Math.abs(f16BitsToF32(n) - x) >= Math.abs(y - x), `x=${x}`);
    }
  }
});

test('bfloat16 bits, ties and round trip', () => {
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(f32ToBf16Bits(-2), 0xc000);
  assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
  assert.equal(f32ToBf16Bits(-Infinity), 0xff80);
  assert.equal(f32ToBf16Bits(-0), 0x8000);
  assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  // 1 + 2^-8 is halfway between 1 and 1+2^-7: ties to even
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  // max float32 rounds to inf
  assert.equal(f32ToBf16Bits(3.4028234663852886e38), 0x7f80);
  const all = new Uint16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i;
  const vals = bf16ToF32(all);
  const back = f32ToBf16(vals);
  for (let h = 0; h < 65536; h++) {
    if ((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0) continue;
    assert.equal(back[h], h);
    assert.equal(bf16BitsToF32(h), vals[h]);
  }
});

test('generic casts toFloat32 / fromFloat32', () => {
  const x = Float32Array.from([0, 1.5, -2, 3.25]);
  for (const d of ['float32', 'float64', 'float16', 'bfloat16'] as const) {
    assert.deepEqual(Array.from(toFloat32(fromFloat32(x, d), d)), Array.from(x));
  }
  assert.deepEqual(Array.from(fromFloat32([1.5, 2.5, -0.5], 'int32') as Int32Array), [2, 2, 0]);
  assert.deepEqual(Array.from(fromFloat32([3, -4], 'int64') as BigInt64Array), [3n, -4n]);
  assert.throws(() => fromFloat32([300], 'int8'), /value 300 at index 0 is out of range/);
  assert.throws(() => fromFloat32([NaN], 'uint8'), /index 0/);
  assert.throws(() => toFloat32(new Float32Array(2), 'float16'), /stored as Uint16Array/);
  assert.equal(roundHalfEven(-3.5), -4);
  assert.equal(roundHalfEven(-2.5), -2);
  assert.equal(roundHalfEven(2.5), 2);
  assert.equal(roundHalfEven(2.6), 3);
});

test('int8 per-tensor quantisation: error bound and exact grid values', () => {
  const rng = new Rng(7);
  const x = rng.fillNormal(new Float32Array(4096), 3);
  const q = quantizeInt8(x);
  let maxAbs = 0;
  for (const v of x) maxAbs = Math.max(maxAbs, Math.abs(v));
  assert.equal(q.scales[0], f32(maxAbs / 127));
  const y = dequantizeInt8(q);
  const bound = q.scales[0] / 2 + 1e-6;
  for (let i = 0; i < x.length; i++) {
    assert.ok(Math.abs(x[i] - y[i]) <= bound, `i=${i}`);
    assert.ok(q.data[i] >= -127 && q.data[i] <= 127);
  }
  // values on the grid survive exactly
  const grid = Float32Array.from([-127, -1, 0, 5, 127]);
  const qg = quantizeInt8(grid);
  assert.equal(qg.scales[0], 1);
  assert.deepEqual(Array.from(dequantizeInt8(qg)), Array.from(grid));
  // zeros
  const z = quantizeInt8(new Float32Array(3));
  assert.equal(z.scales[0], 0);
  assert.deepEqual(Array.from(dequantizeInt8(z)), [0, 0, 0]);
  assert.throws(() => quantizeInt8([1, NaN]), /non-finite value NaN at index 1/);
});

test('int8 per-row quantisation has one scale per row', () => {
  const rows = 3;
  const cols = 4;
  const x = Float32Array.from([1, -2, 0.5, 0.25, 100, 50, -25, 0, 0, 0, 0, 0]);
  const q = quantizeInt8PerRow(x, rows, cols);
  assert.equal(q.scales.length, 3);
  assert.equal(q.scales[0], f32(2 / 127));
  assert.equal(q.scales[1], f32(100 / 127));
  assert.equal(q.scales[2], 0);
  assert.equal(q.data[1], -127);
  assert.equal(q.data[4], 127);
  const y = dequantizeInt8(q);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      assert.ok(Math.abs(x[r * cols + c] - y[r * cols + c]) <= q.scales[r] / 2 + 1e-6);
    }
  }
  assert.throws(() => quantizeInt8PerRow(x, 5, 4), /length 12 does not match shape \[5, 4\]/);
  assert.throws(() => dequantizeInt8({ ...q, scales: new Float32Array(1) }), /needs 3 scales, got 1/);
});
