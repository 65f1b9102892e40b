/** tq_e (QMoE-style ternary, entropy-coded): exact round trips of the code, the quantiser's optimality, the kernel vs the dequantised reference, malformed streams. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { f16BitsToF32 } from '../../src/tensor/dtype.js';
import { quantizeMatrix, dequantizeMatrix, qmatmul, quantBytes, quantMatrixFromBlocks, jsQuantKernels } from '../../src/kernels/quant.js';
import {
  encodeTrits,
  decodeTrits,
  decodeTernary,
  encodeTernary,
  quantizeTernary,
  ternaryError,
  ternaryMatmul,
  ternaryStats,
  huffmanLengths,
  gptqTernary,
  TQE_MAX_CODE_LEN,
  type TernaryRows,
} from '../../src/kernels/ternary.js';
import { WasmQuantKernels } from '../../src/kernels/wasm/quant.js';

/** Random trits with P(0) = pZero, and f16-exact scales. */
function randomTrits(rows: number, cols: number, pZero: number, seed: number): TernaryRows {
  const r = new Rng(seed);
  const trits = new Int8Array(rows * cols);
  for (let i = 0; i < trits.length; i++) trits[i] = r.next() < pZero ? 0 : r.next() < 0.5 ? -1 : 1;
  const scales = Float32Array.from({ length: rows }, (_, i) => (1 + (i % 7)) / 64);
  return { rows, cols, trits, scales };
}

const h0 = (t: Int8Array): number => {
  const c = [0, 0, 0];
  for (const v of t) c[v + 1]++;
  return c.reduce((s, x) => (x ? s - (x / t.length) * Math.log2(x / t.length) : s), 0);
};

test('entropy coding round-trips trits and scales exactly: zero rates 0..1, all-zero and all-nonzero rows, every tuple size', () => {
  const shapes: [number, number][] = [
    [1, 1],
    [3, 7],
    [17, 53],
    [64, 128],
  ];
  let seed = 1;
  for (const [rows, cols] of shapes)
    for (const pZero of [0, 0.3, 0.6, 0.9, 0.99, 1]) {
      const t = randomTrits(rows, cols, pZero, seed++);
      if (rows > 2) {
        t.trits.fill(0, 0, cols); // an all-zero row
        for (let c = 0; c < cols; c++) t.trits[cols + c] = c % 2 ? 1 : -1; // an all-nonzero row
      }
      for (const tuple of [undefined, 1, 2, 3, 4, 5]) {
        const b = encodeTrits(t, tuple === undefined ? {} : { tuple });
        const d = decodeTrits(b);
        const what = `${rows}x${cols} p0=${pZero} tuple=${tuple}`;
        assert.equal(d.rows, rows, what);
        assert.equal(d.cols, cols, what);
        assert.deepEqual(d.trits, t.trits, what);
        assert.deepEqual(d.scales, t.scales, what);
        if (tuple !== undefined) assert.equal(ternaryStats(b).tuple, tuple, what);
      }
    }
});

test('the encoder picks the tuple size with the fewest bytes; the stream of 90%-zero trits takes < 1 bit per weight, near their entropy', () => {
  const t = randomTrits(128, 256, 0.9, 7);
  const auto = encodeTrits(t);
  const sizes = [1, 2, 3, 4, 5].map((tuple) => encodeTrits(t, { tuple }).length);
  assert.equal(auto.length, Math.min(...sizes));
  const st = ternaryStats(auto);
  const n = t.rows * t.cols;
  const streamBits = (8 * st.streamBytes) / n;
  assert.ok(streamBits < 1, `stream ${streamBits} bits/weight`);
  assert.ok(streamBits < h0(t.trits) + 0.05, `stream ${streamBits} vs entropy ${h0(t.trits)}`);
  // trit-at-a-time coding cannot go below 1 bit per weight: the tuples are what makes it sub-1-bit
  assert.ok(sizes[0] > (n / 8) * 1, 'T=1 costs >= 1 bit per weight');
  assert.equal(st.zeros + st.plus + st.minus, n);
});

test('huffmanLengths: complete prefix codes within the length limit, even for Fibonacci-skewed counts', () => {
  const fib = [1, 1];
  while (fib.length < 40) fib.push(fib[fib.length - 1] + fib[fib.length - 2]);
  for (const freq of [fib, [5, 5], [1, 0, 0, 3], Array.from({ length: 243 }, (_, i) => 1 + ((i * 37) % 11))]) {
    const len = huffmanLengths(freq);
    let kraft = 0;
    for (let i = 0; i < freq.length; i++) {
      assert.equal(len[i] > 0, freq[i] > 0, `symbol ${i} has a code iff it occurs`);
      assert.ok(len[i] <= TQE_MAX_CODE_LEN);
      if (len[i]) kraft += 2 ** -len[i];
    }
    assert.ok(Math.abs(kraft - 1) < 1e-12, `Kraft sum ${kraft}`);
    // more frequent never gets a longer code
    for (let i = 0; i < freq.length; i++) for (let j = 0; j < freq.length; j++) if (freq[i] > freq[j] && freq[j] > 0) assert.ok(len[i] <= len[j]);
  }
  // without a limit the Fibonacci counts would need codes of 39 bits
  assert.equal(Math.max(...huffmanLengths(fib)), TQE_MAX_CODE_LEN);
  assert.deepEqual(Array.from(huffmanLengths([0, 9, 0])), [0, 1, 0]);
});

test('quantiser: the chosen threshold and scale beat every (threshold, scale) on a grid; ternary values round-trip exactly', () => {
  const r = new Rng(3);
  const cols = 48;
  const rowsOf = [
    Float32Array.from({ length: cols }, () => r.normal()),
    Float32Array.from({ length: cols }, () => (r.next() < 0.5 ? -1 : 1) * -Math.log(1 - r.next())), // Laplace
    Float32Array.from({ length: cols }, (_, i) => (i === 5 ? 9 : 0.1 * r.normal())), // one outlier
  ];
  for (const [i, w] of rowsOf.entries()) {
    for (const minZeros of [0, 0.5, 0.9]) {
      const q = quantizeTernary(w, 1, cols, { minZeros });
      const ours = ternaryError(w, q);
      // the trits' own least-squares scale (unrounded): the threshold choice alone, compared without f16 slack
      let S = 0;
      let k = 0;
      for (let c = 0; c < cols; c++) if (q.trits[c]) [S, k] = [S + Math.abs(w[c]), k + 1];
      const exact = ternaryError(w, { rows: 1, cols, trits: q.trits, scales: Float32Array.of(k ? S / k : 0) });
      // rounding s to f16 costs at most k (s 2^-11)^2
      assert.ok(ours <= exact + k * (q.scales[0] * 2 ** -11) ** 2 + 1e-12, `row ${i}: f16 scale ${ours} vs ${exact}`);
      const zeros = q.trits.filter((v) => v === 0).length;
      assert.ok(zeros >= minZeros * cols, `row ${i}: ${zeros} zeros, minZeros ${minZeros}`);
      const amax = Math.max(...Array.from(w, Math.abs));
      let alt = 0;
      for (let a = 0; a <= 40; a++)
        for (let b = 1; b <= 40; b++) {
          const thr = (a / 40) * amax;
          const s = (b / 40) * amax;
          const t = Int8Array.from(w, (v) => (Math.abs(v) > thr ? Math.sign(v) : 0));
          if (t.filter((v) => v === 0).length < minZeros * cols) continue;
          const e = ternaryError(w, { rows: 1, cols, trits: t, scales: Float32Array.of(s) });
          alt++;
          assert.ok(exact <= e * (1 + 1e-9) + 1e-12, `row ${i} minZeros ${minZeros}: ours ${exact} > grid (thr ${thr}, s ${s}) ${e}`);
        }
      assert.ok(alt > 0);
    }
  }
  // already ternary, f16-exact scales: exact round trip through quantiser, code and decoder
  const t = randomTrits(9, 40, 0.5, 11);
  t.trits.fill(0, 0, 40); // a zero row: scale 0
  t.scales[0] = 0;
  const w = Float32Array.from(t.trits, (v, i) => v * t.scales[Math.floor(i / 40)]);
  const q = quantizeTernary(w, 9, 40);
  assert.deepEqual(q.trits, t.trits);
  assert.deepEqual(q.scales, t.scales);
  assert.deepEqual(decodeTernary(encodeTernary(w, 9, 40)).values, w);
  assert.deepEqual(dequantizeMatrix(quantizeMatrix(w, 9, 40, 'tq_e')), w);
  assert.throws(() => quantizeTernary(w, 9, 40, { minZeros: 1 }), /minZeros must be in \[0, 1\), got 1/);
});

test('kernel: the fused decode+dot equals the dequantise-then-dot reference (js and wasm kernels, accumulate, strides, cols not a multiple of 32)', () => {
  const r = new Rng(5);
  const wasm = new WasmQuantKernels();
  for (const [rows, cols, n, minZeros] of [
    [40, 53, 1, 0],
    [64, 128, 3, 0.8],
    [7, 5, 4, 0.5],
  ]) {
    const w = Float32Array.from({ length: rows * cols }, () => r.normal() * 0.1);
    const m = quantizeMatrix(w, rows, cols, 'tq_e', { minZeros });
    const ref = { format: 'f32' as const, rows, cols, data: dequantizeMatrix(m) };
    const x = Float32Array.from({ length: n * cols }, () => r.normal());
    const want = qmatmul(ref, x, n, new Float32Array(n * rows));
    const scale = Math.max(...Array.from(want, Math.abs));
    const close = (got: Float32Array, exp: Float32Array, what: string) => {
      for (let i = 0; i < exp.length; i++) assert.ok(Math.abs(got[i] - exp[i]) <= 1e-6 * (1 + scale), `${what} [${i}] ${got[i]} vs ${exp[i]}`);
    };
    close(ternaryMatmul(m.data as Uint8Array, x, n, new Float32Array(n * rows)), want, 'ternaryMatmul');
    close(qmatmul(m, x, n, new Float32Array(n * rows)), want, 'qmatmul');
    close(jsQuantKernels.matmul(jsQuantKernels.prepare(m), x, n, new Float32Array(n * rows)), want, 'js kernels');
    close(wasm.matmul(wasm.prepare(m), x, n, new Float32Array(n * rows)), want, 'wasm kernels');
    // accumulate into a strided output
    const ldo = rows + 3;
    const out = new Float32Array((n - 1) * ldo + rows).fill(1);
    qmatmul(m, x, n, out, { accumulate: true, ldo });
    for (let t = 0; t < n; t++) for (let j = 0; j < rows; j++) assert.ok(Math.abs(out[t * ldo + j] - 1 - want[t * rows + j]) <= 1e-6 * (1 + scale));
  }
  const z = quantizeMatrix(new Float32Array(32 * 8), 8, 32, 'tq_e');
  assert.deepEqual(
    qmatmul(
      z,
      Float32Array.from({ length: 32 }, () => 1),
      1,
      new Float32Array(8).fill(7),
    ),
    new Float32Array(8),
  );
  assert.throws(() => quantBytes('tq_e', 4, 32), /tq_e is entropy-coded/);
  assert.throws(() => quantMatrixFromBlocks('tq_e', 4, 32, z.data as Uint8Array), /tq_e stream is \[8, 32\], expected \[4, 32\]/);
  assert.equal(quantMatrixFromBlocks('tq_e', 8, 32, z.data as Uint8Array).data, z.data);
});

/** A fresh copy (the parser caches by array). */
const copy = (b: Uint8Array): Uint8Array => Uint8Array.from(b);

test('malformed tq_e streams fail with one-line errors: truncated, bad header, bad code table, invalid codes, huge promised shapes', () => {
  const good = encodeTrits(randomTrits(6, 20, 0.7, 13));
  const dec = (b: Uint8Array) => decodeTrits(b);
  for (let cut = 0; cut < good.length; cut++) assert.throws(() => dec(good.slice(0, cut)), /tq_e stream truncated/, `cut at ${cut}`);
  assert.throws(() => dec(Uint8Array.from([...good, 0])), /truncated or oversized/);
  // a stream cut short with a header that agrees: the decoder runs out of bits
  const short = good.slice(0, -1);
  new DataView(short.buffer).setUint32(14, new DataView(good.buffer).getUint32(14, true) - 1, true);
  assert.throws(() => dec(short), /tq_e stream truncated: symbol \d+ of \d+ runs past the stream's \d+ bits/);
  const mod = (f: (b: Uint8Array, dv: DataView) => void): Uint8Array => {
    const b = copy(good);
    f(b, new DataView(b.buffer));
    return b;
  };
  assert.throws(() => dec(mod((b) => (b[0] = 0x50))), /tq_e bad magic at byte 0/);
  assert.throws(() => dec(mod((b) => (b[12] = 6))), /header byte 12: tuple must be 1..5, got 6/);
  assert.throws(() => dec(mod((b) => (b[13] = 13))), /header byte 13: longest code must be 1..12, got 13/);
  assert.throws(() => dec(mod((_, dv) => dv.setUint32(4, 0, true))), /rows and cols must be positive/);
  // a shape the stream cannot hold is refused before anything of that size is allocated
  assert.throws(() => dec(mod((_, dv) => dv.setUint32(8, 0xffffffff, true))), /tq_e stream too short/);
  assert.throws(() => dec(mod((_, dv) => dv.setUint16(18, 0x7e00, true))), /tq_e scale of row 0 \(byte 18\) is NaN/);
  const T = good[12];
  const tab = 18 + 2 * 6;
  const L = good[13];
  // every symbol at length 1: over-subscribed
  assert.throws(() => dec(mod((b) => b.fill(0x11, tab, tab + Math.ceil(3 ** T / 2)))), /over-subscribed/);
  assert.throws(() => dec(mod((b) => b.fill(0, tab, tab + Math.ceil(3 ** T / 2)))), /no symbol has a code/);
  assert.throws(() => dec(mod((b) => (b[tab] = (b[tab] & 0xf0) | Math.min(15, L + 1)))), /symbol 0 has length \d+ > the header's longest/);
  // one used symbol (all-zero trits): code "0"; a 1 bit in the stream is no code
  const zeros = encodeTrits({ rows: 2, cols: 9, trits: new Int8Array(18), scales: new Float32Array(2) });
  assert.equal(zeros[13], 1);
  const bad = copy(zeros);
  bad[bad.length - new DataView(bad.buffer).getUint32(14, true)] = 0x80;
  assert.throws(() => dec(bad), /tq_e invalid code at stream bit 0/);
  // flipped bytes anywhere: decoded or refused with a tq_e error, never anything else
  const r = new Rng(17);
  for (let k = 0; k < 300; k++) {
    const b = copy(good);
    b[r.int(b.length)] ^= 1 + r.int(255);
    try {
      const d = decodeTrits(b);
      assert.equal(d.trits.length, d.rows * d.cols);
    } catch (e) {
      assert.match((e as Error).message, /^decodeTrits: tq_e [^\n]+$/);
    }
  }
  assert.throws(() => encodeTrits({ rows: 1, cols: 2, trits: Int8Array.of(0, 2), scales: Float32Array.of(1) }), /trit 1 is 2/);
  assert.throws(() => encodeTrits(randomTrits(2, 2, 0.5, 1), { tuple: 6 }), /tuple must be an integer in 1..5, got 6/);
  assert.equal(f16BitsToF32(new DataView(good.buffer).getUint16(18, true)), 1 / 64);
});

/** ||(W - Q) X^T||^2 with X [m, cols]. */
function outputError(w: Float32Array, q: TernaryRows, x: Float32Array, m: number): number {
  let e = 0;
  for (let r = 0; r < q.rows; r++)
    for (let t = 0; t < m; t++) {
      let d = 0;
      for (let c = 0; c < q.cols; c++) d += (w[r * q.cols + c] - q.scales[r] * q.trits[r * q.cols + c]) * x[t * q.cols + c];
      e += d * d;
    }
  return e;
}

test('gptqTernary: with X^T X = c I it is the least-squares ternary; on correlated inputs it lowers the output error', () => {
  const r = new Rng(21);
  const rows = 24;
  const cols = 32;
  const w = Float32Array.from({ length: rows * cols }, () => r.normal() * 0.2);
  for (const minZeros of [0, 0.7]) {
    const h = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) h[i * cols + i] = 3;
    const g = gptqTernary(w, rows, cols, h, { minZeros });
    const p = quantizeTernary(w, rows, cols, { minZeros });
    assert.deepEqual(g.trits, p.trits, `minZeros ${minZeros}`);
    for (let i = 0; i < rows; i++) assert.ok(Math.abs(g.scales[i] - p.scales[i]) <= p.scales[i] * 2 ** -10, `scale ${i}`);
    // inputs with strongly correlated features, as hidden states are
    const m = 256;
    const mix = Float32Array.from({ length: cols * cols }, () => r.normal());
    const x = new Float32Array(m * cols);
    for (let t = 0; t < m; t++) {
      const z = Float32Array.from({ length: cols }, (_, i) => r.normal() * (i < 4 ? 3 : 0.3));
      for (let c = 0; c < cols; c++) for (let k = 0; k < cols; k++) x[t * cols + c] += z[k] * mix[k * cols + c];
    }
    const xtx = new Float64Array(cols * cols);
    for (let t = 0; t < m; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) xtx[i * cols + j] += x[t * cols + i] * x[t * cols + j];
    const gq = gptqTernary(w, rows, cols, xtx, { minZeros });
    const eg = outputError(w, gq, x, m);
    const ep = outputError(w, p, x, m);
    assert.ok(eg < 0.7 * ep, `minZeros ${minZeros}: GPTQ ${eg} vs plain ${ep}`);
    // still a valid tq_e matrix
    assert.deepEqual(decodeTrits(encodeTrits(gq)).trits, gq.trits);
  }
  // a column no input reached is zero
  const h = new Float64Array(cols * cols);
  for (let i = 1; i < cols; i++) h[i * cols + i] = 1;
  const g = gptqTernary(w, rows, cols, h);
  for (let i = 0; i < rows; i++) assert.equal(g.trits[i * cols], 0);
  assert.throws(() => gptqTernary(w, rows, cols, new Float64Array(4)), /h has 4 values, needs 32 x 32/);
  assert.throws(() => gptqTernary(w, rows, cols, h, { damp: 0 }), /damp must be a positive number, got 0/);
});
