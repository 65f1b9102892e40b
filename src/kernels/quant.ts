/**
 * Quantised weight matrices and their matrix-vector / small-batch kernels (the js reference).
 *
 * A `QuantMatrix` is [rows, cols] row-major, each row quantised along cols in blocks of 32, with
 * the bytes laid out exactly as ggml's blocks (ggml-quants.c), so GGUF Q8_0/Q4_0 tensor data is a
 * QuantMatrix as is (`quantMatrixFromBlocks`), without re-quantisation:
 * - q8_0: 34-byte blocks: f16 scale d, then 32 int8 q; x ~ q * d.
 * - q4_0: 18-byte blocks: f16 scale d, then 16 bytes, byte j = q[j] | q[j + 16] << 4; x ~ (q - 8) * d.
 * - f32: plain float32 (no blocks), the unquantised case of the same kernels.
 * - q3_m / q2_m: moe-ts low-bit formats for experts (MoQE), not ggml types. Blocks of 32 with an
 *   f16 scale d, an f16 minimum m, then the 32 codes q in [0, 2^bits) as a little-endian bit
 *   stream (value j at bit bits*j): 16 bytes (4.0 bits/weight) for q3_m, 12 (3.0) for q2_m;
 *   x ~ q * d + m. The quantiser searches a clipped range per block and refits d, m by least
 *   squares. Their dot product with a q8_0 activation block is d_w d_x sum(q xq) + m_w d_x sum(xq).
 * - tq_e: ternary weights {-s_r, 0, +s_r}, entropy-coded (QMoE's sub-1-bit experts; src/kernels/ternary.ts):
 *   a variable-length stream, decoded on the fly by its kernel, which takes the f32 activations as they are.
 * The kernels compute out[t, r] = sum_c W[r, c] x[t, c]. For q8_0/q4_0 weights the activation
 * row is first quantised to q8_0 blocks (per row, per block of 32, as ggml's vec_dot does), and
 * each block's integer dot product is scaled by d_w * d_x. The type is general (any [rows, cols]
 * weight), not tied to a layer kind.
 */
import { f16BitsToF32, f32ToF16Bits } from '../tensor/dtype.js';
import { encodeTernary, decodeTernary, ternaryMatmul, ternaryShape, type TernaryOptions } from './ternary.js';

/** Storage formats of a QuantMatrix. */
export type QuantFormat = 'f32' | 'q8_0' | 'q4_0' | 'q3_m' | 'q2_m' | 'tq_e';
/** Every QuantFormat, for validation and CLI help. */
export const QUANT_FORMATS: readonly QuantFormat[] = ['f32', 'q8_0', 'q4_0', 'q3_m', 'q2_m', 'tq_e'];
/** Options of quantizeMatrix for the formats that take any (the ternary quantiser's, for tq_e). */
export type QuantizeOptions = TernaryOptions;
/** Values per quantisation block (ggml's QK8_0 = QK4_0). */
export const QBLOCK = 32;
/** Bytes per block of each block format (ggml's type sizes for q8_0 / q4_0). */
export const QBLOCK_BYTES: Readonly<Record<Exclude<QuantFormat, 'f32' | 'tq_e'>, number>> = { q8_0: 34, q4_0: 18, q3_m: 16, q2_m: 12 };
/** Code bits of the scale+min formats. */
const MBITS: Readonly<Record<string, number>> = { q3_m: 3, q2_m: 2 };

/** A [rows, cols] weight in one of the QuantFormats: a Float32Array for f32, ggml block bytes otherwise. */
export interface QuantMatrix {
  format: QuantFormat;
  rows: number;
  cols: number;
  data: Float32Array | Uint8Array;
}

const F16 = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = f16BitsToF32(h);
  return t;
})();
const fr = Math.fround;

/** C roundf (half away from zero). */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/** Bytes a [rows, cols] matrix takes in `format` (throws for tq_e, whose size depends on the weights). */
export function quantBytes(format: QuantFormat, rows: number, cols: number): number {
  if (format === 'f32') return rows * cols * 4;
  if (format === 'tq_e') throw new Error(`quantBytes: tq_e is entropy-coded, its size depends on the weights (${rows} x ${cols})`);
  return rows * (cols / QBLOCK) * QBLOCK_BYTES[format];
}

function checkShape(what: string, format: string, rows: number, cols: number): void {
  if (!(QUANT_FORMATS as readonly string[]).includes(format)) throw new Error(`${what}: format must be one of ${QUANT_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  if (!Number.isInteger(rows) || rows <= 0 || !Number.isInteger(cols) || cols <= 0) throw new Error(`${what}: rows and cols must be positive integers, got ${rows} x ${cols}`);
  if (format !== 'f32' && format !== 'tq_e' && cols % QBLOCK !== 0) throw new Error(`${what}: cols ${cols} is not a multiple of the ${format} block size ${QBLOCK}`);
}

/** Quantise w [rows, cols] (row-major) with ggml's reference quantisers (bit-identical blocks); `opts` only apply to tq_e. */
export function quantizeMatrix(w: Float32Array, rows: number, cols: number, format: QuantFormat, opts: QuantizeOptions = {}): QuantMatrix {
  checkShape('quantizeMatrix', format, rows, cols);
  if (w.length !== rows * cols) throw new Error(`quantizeMatrix: ${w.length} values for ${rows} x ${cols}`);
  if (format === 'f32') return { format, rows, cols, data: w.slice() };
  if (format === 'tq_e') return { format, rows, cols, data: encodeTernary(w, rows, cols, opts) };
  const out = new Uint8Array(quantBytes(format, rows, cols));
  const nb = w.length / QBLOCK;
  if (format === 'q3_m' || format === 'q2_m') {
    for (let b = 0; b < nb; b++) quantizeBlockM(w, b * QBLOCK, MBITS[format], out, b * QBLOCK_BYTES[format]);
    return { format, rows, cols, data: out };
  }
  for (let b = 0; b < nb; b++) {
    const o = b * QBLOCK;
    if (format === 'q8_0') {
      let amax = 0;
      for (let j = 0; j < QBLOCK; j++) amax = Math.max(amax, Math.abs(w[o + j]));
      const d = fr(amax / 127);
      const id = d ? fr(1 / d) : 0;
      const base = b * 34;
      const h = f32ToF16Bits(d);
      out[base] = h & 0xff;
      out[base + 1] = h >> 8;
      for (let j = 0; j < QBLOCK; j++) out[base + 2 + j] = roundf(fr(w[o + j] * id)) & 0xff;
    } else {
      let amax = 0;
      let max = 0;
      for (let j = 0; j < QBLOCK; j++) {
        const v = w[o + j];
        if (amax < Math.abs(v)) {
          amax = Math.abs(v);
          max = v;
        }
      }
      const d = fr(max / -8);
      const id = d ? fr(1 / d) : 0;
      const base = b * 18;
      const h = f32ToF16Bits(d);
      out[base] = h & 0xff;
      out[base + 1] = h >> 8;
      for (let j = 0; j < 16; j++) {
        const q0 = Math.min(15, Math.trunc(fr(fr(w[o + j] * id) + 8.5)));
        const q1 = Math.min(15, Math.trunc(fr(fr(w[o + 16 + j] * id) + 8.5)));
        out[base + 2 + j] = q0 | (q1 << 4);
      }
    }
  }
  return { format, rows, cols, data: out };
}

/** Codes of one block for scale d and min m (both already f16-rounded), into q; returns the squared error. */
function codesM(w: Float32Array, o: number, L: number, d: number, m: number, q: Uint8Array): number {
  const id = d > 0 ? 1 / d : 0;
  let err = 0;
  for (let j = 0; j < QBLOCK; j++) {
    const c = Math.max(0, Math.min(L, Math.round((w[o + j] - m) * id)));
    q[j] = c;
    const e = c * d + m - w[o + j];
    err += e * e;
  }
  return err;
}

const f16r = (v: number): number => F16[f32ToF16Bits(v)];
const qScratch = new Uint8Array(QBLOCK);
const qBest = new Uint8Array(QBLOCK);

/**
 * One q3_m / q2_m block: try ranges clipped by 0..20% at either end, keep the one with the
 * least squared error, refit d, m to its codes by least squares, and keep whichever is better.
 */
function quantizeBlockM(w: Float32Array, o: number, bits: number, out: Uint8Array, base: number): void {
  const L = (1 << bits) - 1;
  let lo = Infinity;
  let hi = -Infinity;
  for (let j = 0; j < QBLOCK; j++) {
    lo = Math.min(lo, w[o + j]);
    hi = Math.max(hi, w[o + j]);
  }
  const range = hi - lo;
  let best = Infinity;
  let bd = 0;
  let bm = f16r(lo);
  const shrink = [0, 0.05, 0.1, 0.15, 0.2];
  for (const a of shrink)
    for (const c of shrink) {
      const m = f16r(lo + a * range);
      const d = f16r(Math.max(0, hi - c * range - m) / L);
      const err = codesM(w, o, L, d, m, qScratch);
      if (err < best) [best, bd, bm] = [err, d, m];
      if (range === 0) break;
    }
  codesM(w, o, L, bd, bm, qBest);
  // least-squares refit of x ~ q d + m on the chosen codes
  let sq = 0;
  let sqq = 0;
  let sx = 0;
  let sqx = 0;
  for (let j = 0; j < QBLOCK; j++) {
    sq += qBest[j];
    sqq += qBest[j] * qBest[j];
    sx += w[o + j];
    sqx += qBest[j] * w[o + j];
  }
  const det = QBLOCK * sqq - sq * sq;
  if (det > 0) {
    const d = f16r((QBLOCK * sqx - sq * sx) / det);
    const m = f16r((sx - d * sq) / QBLOCK);
    if (d > 0 && codesM(w, o, L, d, m, qScratch) < best) {
      [bd, bm] = [d, m];
      qBest.set(qScratch);
    }
  }
  const hd = f32ToF16Bits(bd);
  const hm = f32ToF16Bits(bm);
  out[base] = hd & 0xff;
  out[base + 1] = hd >> 8;
  out[base + 2] = hm & 0xff;
  out[base + 3] = hm >> 8;
  for (let j = 0; j < QBLOCK; j++) {
    const bit = bits * j;
    const v = qBest[j] << (bit & 7);
    out[base + 4 + (bit >> 3)] |= v & 0xff;
    if (v > 0xff) out[base + 5 + (bit >> 3)] |= v >> 8;
  }
}

/** The 32 codes of a q3_m / q2_m block at `base` (value j at bit bits*j after the 4 header bytes). */
function unpackM(src: Uint8Array, base: number, bits: number, q: Int32Array): void {
  const mask = (1 << bits) - 1;
  const p = base + 4;
  if (bits === 2) {
    for (let k = 0; k < 8; k++) {
      const v = src[p + k];
      q[4 * k] = v & 3;
      q[4 * k + 1] = (v >> 2) & 3;
      q[4 * k + 2] = (v >> 4) & 3;
      q[4 * k + 3] = v >> 6;
    }
    return;
  }
  for (let g = 0; g < 4; g++) {
    const v = src[p + 3 * g] | (src[p + 3 * g + 1] << 8) | (src[p + 3 * g + 2] << 16);
    for (let i = 0; i < 8; i++) q[8 * g + i] = (v >> (bits * i)) & mask;
  }
}
const unpacked = new Int32Array(QBLOCK);

/** Wrap ggml block bytes, such as a GGUF tensor's data with ne0 = cols, as a QuantMatrix; checks the length. */
export function quantMatrixFromBlocks(format: QuantFormat, rows: number, cols: number, bytes: Uint8Array | Float32Array): QuantMatrix {
  checkShape('quantMatrixFromBlocks', format, rows, cols);
  if (format === 'f32') {
    if (!(bytes instanceof Float32Array) || bytes.length !== rows * cols) throw new Error(`quantMatrixFromBlocks: f32 data must be a Float32Array of ${rows * cols} values`);
    return { format, rows, cols, data: bytes };
  }
  if (format === 'tq_e') {
    if (!(bytes instanceof Uint8Array)) throw new Error('quantMatrixFromBlocks: tq_e data must be a Uint8Array');
    const s = ternaryShape(bytes);
    if (s.rows !== rows || s.cols !== cols) throw new Error(`quantMatrixFromBlocks: tq_e stream is [${s.rows}, ${s.cols}], expected [${rows}, ${cols}]`);
    return { format, rows, cols, data: bytes };
  }
  const need = quantBytes(format, rows, cols);
  if (!(bytes instanceof Uint8Array) || bytes.length !== need) throw new Error(`quantMatrixFromBlocks: ${format} [${rows}, ${cols}] needs ${need} bytes, got ${bytes.length}`);
  return { format, rows, cols, data: bytes };
}

/** Float32 values of a QuantMatrix, [rows, cols]. */
export function dequantizeMatrix(m: QuantMatrix): Float32Array {
  if (m.format === 'f32') return (m.data as Float32Array).slice();
  if (m.format === 'tq_e') return decodeTernary(m.data as Uint8Array).values;
  const src = m.data as Uint8Array;
  const out = new Float32Array(m.rows * m.cols);
  const nb = out.length / QBLOCK;
  if (m.format === 'q3_m' || m.format === 'q2_m') {
    const bits = MBITS[m.format];
    const bb = QBLOCK_BYTES[m.format];
    for (let b = 0; b < nb; b++) {
      const base = b * bb;
      const d = F16[src[base] | (src[base + 1] << 8)];
      const mn = F16[src[base + 2] | (src[base + 3] << 8)];
      unpackM(src, base, bits, unpacked);
      for (let j = 0; j < QBLOCK; j++) out[b * QBLOCK + j] = unpacked[j] * d + mn;
    }
    return out;
  }
  for (let b = 0; b < nb; b++) {
    const o = b * QBLOCK;
    if (m.format === 'q8_0') {
      const base = b * 34;
      const d = F16[src[base] | (src[base + 1] << 8)];
      for (let j = 0; j < QBLOCK; j++) out[o + j] = ((src[base + 2 + j] << 24) >> 24) * d;
    } else {
      const base = b * 18;
      const d = F16[src[base] | (src[base + 1] << 8)];
      for (let j = 0; j < 16; j++) {
        const q = src[base + 2 + j];
        out[o + j] = ((q & 15) - 8) * d;
        out[o + 16 + j] = ((q >> 4) - 8) * d;
      }
    }
  }
  return out;
}

/** Activation rows quantised to q8_0 blocks: int8 values and one f16-rounded scale per block. */
export interface Q8Rows {
  q: Int8Array;
  d: Float32Array;
}

/** Quantise n rows of `cols` activations to q8_0 (ggml's quantize_row_q8_0: d = max|x| / 127 rounded to f16). */
export function quantizeRowsQ8(x: Float32Array, n: number, cols: number, into?: Q8Rows): Q8Rows {
  const nb = (n * cols) / QBLOCK;
  const q = into && into.q.length >= n * cols ? into.q : new Int8Array(n * cols);
  const d = into && into.d.length >= nb ? into.d : new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const o = b * QBLOCK;
    let amax = 0;
    for (let j = 0; j < QBLOCK; j++) {
      const a = Math.abs(x[o + j]);
      if (a > amax) amax = a;
    }
    const dd = fr(amax / 127);
    const id = dd ? fr(1 / dd) : 0;
    d[b] = F16[f32ToF16Bits(dd)];
    for (let j = 0; j < QBLOCK; j++) q[o + j] = roundf(fr(x[o + j] * id));
  }
  return { q, d };
}

const scratch: { q8: Q8Rows } = { q8: { q: new Int8Array(0), d: new Float32Array(0) } };

/**
 * out[t * ldo + r] (+)= sum_c W[r, c] x[t * cols + c] for t < n and r < W.rows: the quantised
 * matmul with x [n, cols]. Rows are the outer loop so each weight block is read once per call
 * (prompt batches reuse it across tokens). `accumulate` adds to out.
 */
export function qmatmul(w: QuantMatrix, x: Float32Array, n: number, out: Float32Array, opts: { accumulate?: boolean; ldo?: number } = {}): Float32Array {
  const { rows, cols } = w;
  const ldo = opts.ldo ?? rows;
  const acc = opts.accumulate ?? false;
  if (x.length < n * cols) throw new Error(`qmatmul: x has ${x.length} values, needs ${n} x ${cols}`);
  if (out.length < (n - 1) * ldo + rows) throw new Error(`qmatmul: out has ${out.length} values, needs ${n} rows of stride ${ldo}`);
  if (w.format === 'f32') {
    const wd = w.data as Float32Array;
    for (let r = 0; r < rows; r++) {
      const wo = r * cols;
      for (let t = 0; t < n; t++) {
        const xo = t * cols;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let c = 0;
        for (; c + 3 < cols; c += 4) {
          s0 += wd[wo + c] * x[xo + c];
          s1 += wd[wo + c + 1] * x[xo + c + 1];
          s2 += wd[wo + c + 2] * x[xo + c + 2];
          s3 += wd[wo + c + 3] * x[xo + c + 3];
        }
        for (; c < cols; c++) s0 += wd[wo + c] * x[xo + c];
        const s = s0 + s1 + (s2 + s3);
        if (acc) out[t * ldo + r] += s;
        else out[t * ldo + r] = s;
      }
    }
    return out;
  }
  if (w.format === 'tq_e') return ternaryMatmul(w.data as Uint8Array, x, n, out, opts);
  const xq = (scratch.q8 = quantizeRowsQ8(x, n, cols, scratch.q8));
  const src = w.data as Uint8Array;
  const nb = cols / QBLOCK;
  const xqv = xq.q;
  const xd = xq.d;
  if (w.format === 'q8_0') {
    const wi = new Int8Array(src.buffer, src.byteOffset, src.byteLength);
    for (let r = 0; r < rows; r++) {
      const rb = r * nb * 34;
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let b = 0; b < nb; b++) {
          const base = rb + b * 34;
          const xo = (t * nb + b) * QBLOCK;
          let isum = 0;
          for (let j = 0; j < QBLOCK; j++) isum += wi[base + 2 + j] * xqv[xo + j];
          s += F16[src[base] | (src[base + 1] << 8)] * xd[t * nb + b] * isum;
        }
        if (acc) out[t * ldo + r] += s;
        else out[t * ldo + r] = s;
      }
    }
  } else if (w.format === 'q3_m' || w.format === 'q2_m') {
    const bits = MBITS[w.format];
    const bb = QBLOCK_BYTES[w.format];
    // per activation block: the sum of its codes (the min term's factor)
    const xs = new Int32Array(n * nb);
    for (let i = 0; i < n * nb; i++) {
      let t = 0;
      for (let j = 0; j < QBLOCK; j++) t += xqv[i * QBLOCK + j];
      xs[i] = t;
    }
    for (let r = 0; r < rows; r++) {
      const rb = r * nb * bb;
      for (let b = 0; b < nb; b++) {
        const base = rb + b * bb;
        const d = F16[src[base] | (src[base + 1] << 8)];
        const mn = F16[src[base + 2] | (src[base + 3] << 8)];
        unpackM(src, base, bits, unpacked);
        for (let t = 0; t < n; t++) {
          const xo = (t * nb + b) * QBLOCK;
          let isum = 0;
          for (let j = 0; j < QBLOCK; j++) isum += unpacked[j] * xqv[xo + j];
          const s = xd[t * nb + b] * (d * isum + mn * xs[t * nb + b]);
          // the first block of a row initialises (unless accumulating), later ones add
          if (b === 0 && !acc) out[t * ldo + r] = s;
          else out[t * ldo + r] += s;
        }
      }
    }
  } else {
    for (let r = 0; r < rows; r++) {
      const rb = r * nb * 18;
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let b = 0; b < nb; b++) {
          const base = rb + b * 18;
          const xo = (t * nb + b) * QBLOCK;
          let isum = 0;
          for (let j = 0; j < 16; j++) {
            const q = src[base + 2 + j];
            isum += ((q & 15) - 8) * xqv[xo + j] + ((q >> 4) - 8) * xqv[xo + 16 + j];
          }
          s += F16[src[base] | (src[base + 1] << 8)] * xd[t * nb + b] * isum;
        }
        if (acc) out[t * ldo + r] += s;
        else out[t * ldo + r] = s;
      }
    }
  }
  return out;
}

/** A QuantMatrix taken over by a QuantKernels implementation, such as a copy in wasm memory. */
export interface PreparedMatrix {
  format: QuantFormat;
  rows: number;
  cols: number;
  /** Bytes the prepared copy holds. */
  bytes: number;
  /** The implementation's own handle (the js kernels: the QuantMatrix itself). */
  ref: unknown;
}

/** A backend for quantised products: weights are prepared once, then multiplied many times. */
export interface QuantKernels {
  readonly name: string;
  prepare(m: QuantMatrix): PreparedMatrix;
  /** out[t * ldo + r] (+)= sum_c W[r, c] x[t * cols + c], as qmatmul. */
  matmul(w: PreparedMatrix, x: Float32Array, n: number, out: Float32Array, opts?: { accumulate?: boolean; ldo?: number }): Float32Array;
  /** A zero-filled [rows, cols] matrix slot whose bytes are later overwritten in place (expert offloading). */
  allocate?(format: QuantFormat, rows: number, cols: number): PreparedMatrix;
  /** A writable view of a prepared matrix's bytes (valid until the next allocate or prepare). */
  bytesOf?(w: PreparedMatrix): Uint8Array;
}

/** The js reference QuantKernels (qmatmul on the matrices as they are). */
export const jsQuantKernels: QuantKernels = {
  name: 'js',
  prepare: (m) => ({ format: m.format, rows: m.rows, cols: m.cols, bytes: m.data.byteLength, ref: m }),
  matmul: (w, x, n, out, opts) => qmatmul(w.ref as QuantMatrix, x, n, out, opts),
  allocate(format, rows, cols) {
    const bytes = quantBytes(format, rows, cols);
    const data = format === 'f32' ? new Float32Array(rows * cols) : new Uint8Array(bytes);
    return { format, rows, cols, bytes, ref: { format, rows, cols, data } };
  },
  bytesOf(w) {
    const d = (w.ref as QuantMatrix).data;
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  },
};
