/**
 * tq_e: ternary, entropy-coded weight matrices (QMoE: Practical Sub-1-Bit Compression of
 * Trillion-Parameter Models, 2023). Each row r of a [rows, cols] matrix is s_r * t with t in
 * {-1, 0, +1}^cols; the trits are losslessly compressed by a length-limited canonical Huffman code
 * over tuples of T trits (T = 1..5, whichever gives the fewest bytes), decoded through a lookup
 * table of 2^L entries. QMoE codes fixed-length codewords over variable runs (a GPU-friendly
 * dictionary); this is the CPU equivalent: prefix codes read with one table lookup per tuple.
 *
 * Layout (little-endian):
 *   0  'TQE1'            magic
 *   4  u32 rows, 8 u32 cols
 *   12 u8 T (trits per symbol), 13 u8 L (longest code, 1..12)
 *   14 u32 stream bytes
 *   18 rows x f16 scale s_r
 *   then ceil(3^T / 2) bytes of code lengths, 4 bits per symbol (symbol 2i in the low nibble; 0 = unused)
 *   then the stream: the row-major trits in tuples of T (the last one padded with zeros), each
 *   tuple's symbol sum_i digit_i 3^i (digit 0 for 0, 1 for +1, 2 for -1) as its canonical code, MSB first.
 *
 * quantizeTernary is not data-aware: per row it keeps the k largest |w| as +-s and zeroes the rest,
 * with k and s = mean of those |w| chosen jointly to minimise the row's squared error (exact over
 * every k), optionally subject to a minimum zero fraction (a rate knob: more zeros, fewer bits).
 * gptqTernary is the data-aware rounding QMoE uses: GPTQ with that per-row grid, on calibration
 * inputs' X^T X. The kernel decodes the stream on the fly and
 * sums +-x over the nonzero trits of each row with f32/f64 activations: no multiply per weight,
 * and the matrix is never expanded.
 */
import { f16BitsToF32, f32ToF16Bits } from '../tensor/dtype.js';

const MAGIC = [0x54, 0x51, 0x45, 0x31]; // 'TQE1'
const HEADER = 18;
/** Longest code length of tq_e (so the decode table has at most 2^12 entries). */
export const TQE_MAX_CODE_LEN = 12;
const POW3 = [1, 3, 9, 27, 81, 243];

/** Options of the ternary quantiser. */
export interface TernaryOptions {
  /** Minimum fraction of zeros per row, in [0, 1) (default 0: the least-squares threshold alone). */
  minZeros?: number;
  /** Trits per Huffman symbol, 1..5 (default: whichever of them gives the fewest bytes). */
  tuple?: number;
}

/** A ternary matrix before entropy coding, trits row-major and one scale per row. */
export interface TernaryRows {
  rows: number;
  cols: number;
  /** -1, 0 or +1 per weight, [rows, cols]. */
  trits: Int8Array;
  /** s_r per row (f16-representable after encoding). */
  scales: Float32Array;
}

/** What a tq_e stream holds, from its header and its trits. */
export interface TernaryStats {
  rows: number;
  cols: number;
  tuple: number;
  maxCodeLen: number;
  /** Total bytes, and those of the Huffman stream alone. */
  bytes: number;
  streamBytes: number;
  zeros: number;
  plus: number;
  minus: number;
}

const f16r = (v: number): number => f16BitsToF32(f32ToF16Bits(v));

/**
 * Per row, the trits and scale minimising sum (w - s t)^2 over every zero threshold (keep the k
 * largest |w|, s their mean |w|), with at least `minZeros` of the row zero. s is rounded to f16.
 */
export function quantizeTernary(w: Float32Array, rows: number, cols: number, opts: TernaryOptions = {}): TernaryRows {
  checkDims('quantizeTernary', rows, cols);
  if (w.length !== rows * cols) throw new Error(`quantizeTernary: ${w.length} values for ${rows} x ${cols}`);
  const minZeros = opts.minZeros ?? 0;
  if (!(minZeros >= 0 && minZeros < 1)) throw new Error(`quantizeTernary: minZeros must be in [0, 1), got ${opts.minZeros}`);
  const kMax = Math.floor((1 - minZeros) * cols + 1e-9);
  const trits = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  const idx = new Int32Array(cols);
  const mag = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) {
      idx[c] = c;
      mag[c] = Math.abs(w[o + c]);
    }
    const { ord, k: bestK, s: s0 } = rowGrid(mag, cols, kMax);
    if (bestK === 0) continue;
    const s = f16r(s0);
    if (!(s > 0)) continue;
    scales[r] = s;
    for (let k = 0; k < bestK; k++) {
      const c = ord[k];
      trits[o + c] = w[o + c] < 0 ? -1 : 1;
    }
  }
  return { rows, cols, trits, scales };
}

/** The least-squares top-k of one row's magnitudes: order, k and s (the kept mean, unrounded). */
function rowGrid(mag: Float64Array, cols: number, kMax: number): { ord: number[]; k: number; s: number } {
  const ord = Array.from({ length: cols }, (_, c) => c).sort((a, b) => mag[b] - mag[a] || a - b);
  // error(k) = sum w^2 - S_k^2 / k: maximise S_k^2 / k
  let best = 0;
  let bestK = 0;
  let S = 0;
  for (let k = 1; k <= kMax; k++) {
    S += mag[ord[k - 1]];
    const g = (S * S) / k;
    if (g > best) [best, bestK] = [g, k];
  }
  let sum = 0;
  for (let k = 0; k < bestK; k++) sum += mag[ord[k]];
  return { ord, k: bestK, s: bestK ? sum / bestK : 0 };
}

/** Lower Cholesky factor of a symmetric positive definite [n, n] matrix (row-major). */
function cholesky(a: Float64Array, n: number, what: string): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let v = a[i * n + j];
      for (let k = 0; k < j; k++) v -= l[i * n + k] * l[j * n + k];
      if (i === j) {
        if (!(v > 0)) throw new Error(`${what}: X^T X is not positive definite at column ${i} (raise damp)`);
        l[i * n + i] = Math.sqrt(v);
      } else l[i * n + j] = v / l[j * n + j];
    }
  return l;
}

/**
 * GPTQ (GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers, 2022)
 * onto each row's ternary grid, as QMoE rounds its experts. Each row's scale and zero threshold come
 * from quantizeTernary's rule on the original row (same minZeros); columns are then rounded in
 * order and each rounding error is spread over the later columns through the upper Cholesky
 * factor of (X^T X + damp mean(diag) I)^-1, which minimises ||(W - Q) X^T||^2 greedily. Last, each
 * row's scale is refit to its trits by least squares in that metric. h is X^T X [cols, cols].
 */
export function gptqTernary(w: Float32Array, rows: number, cols: number, h: Float64Array, opts: TernaryOptions & { damp?: number } = {}): TernaryRows {
  checkDims('gptqTernary', rows, cols);
  if (w.length !== rows * cols) throw new Error(`gptqTernary: ${w.length} values for ${rows} x ${cols}`);
  if (h.length !== cols * cols) throw new Error(`gptqTernary: h has ${h.length} values, needs ${cols} x ${cols}`);
  const minZeros = opts.minZeros ?? 0;
  if (!(minZeros >= 0 && minZeros < 1)) throw new Error(`gptqTernary: minZeros must be in [0, 1), got ${opts.minZeros}`);
  const damp = opts.damp ?? 0.01;
  if (!(damp > 0 && Number.isFinite(damp))) throw new Error(`gptqTernary: damp must be a positive number, got ${opts.damp}`);
  const kMax = Math.floor((1 - minZeros) * cols + 1e-9);
  const W = Float64Array.from(w);
  const H = Float64Array.from(h);
  // columns no input ever reached: their weights cannot matter, so they are zero
  let mean = 0;
  for (let i = 0; i < cols; i++) {
    if (H[i * cols + i] === 0) {
      H[i * cols + i] = 1;
      for (let r = 0; r < rows; r++) W[r * cols + i] = 0;
    }
    mean += H[i * cols + i] / cols;
  }
  for (let i = 0; i < cols; i++) H[i * cols + i] += damp * mean;
  // per-row grid from the (dead-column-cleared) original row
  const scale = new Float64Array(rows);
  const tau = new Float64Array(rows);
  const mag = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) mag[c] = Math.abs(W[r * cols + c]);
    const g = rowGrid(mag, cols, kMax);
    scale[r] = g.s;
    // the threshold between the k-th and (k+1)-th magnitude
    tau[r] = g.k === 0 ? Infinity : g.k === cols ? 0 : (mag[g.ord[g.k - 1]] + mag[g.ord[g.k]]) / 2;
  }
  // U: upper Cholesky factor of H^-1 (H^-1 = U^T U), via H = L L^T, H^-1 = L^-T L^-1
  const L = cholesky(H, cols, 'gptqTernary');
  const Li = new Float64Array(cols * cols);
  for (let j = 0; j < cols; j++) {
    Li[j * cols + j] = 1 / L[j * cols + j];
    for (let i = j + 1; i < cols; i++) {
      let v = 0;
      for (let k = j; k < i; k++) v -= L[i * cols + k] * Li[k * cols + j];
      Li[i * cols + j] = v / L[i * cols + i];
    }
  }
  const Hi = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++)
    for (let j = 0; j <= i; j++) {
      let v = 0;
      for (let k = i; k < cols; k++) v += Li[k * cols + i] * Li[k * cols + j];
      Hi[i * cols + j] = Hi[j * cols + i] = v;
    }
  const Lh = cholesky(Hi, cols, 'gptqTernary');
  const trits = new Int8Array(rows * cols);
  for (let i = 0; i < cols; i++) {
    const uii = Lh[i * cols + i];
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const v = W[o + i];
      const t = Math.abs(v) > tau[r] ? (v < 0 ? -1 : 1) : 0;
      trits[o + i] = t;
      const err = (v - t * scale[r]) / uii;
      if (err !== 0) for (let j = i + 1; j < cols; j++) W[o + j] -= err * Lh[j * cols + i];
    }
  }
  // refit s per row: argmin_s (w - s t)^T H (w - s t) = t^T H w / t^T H t (the damped H)
  const scales = new Float32Array(rows);
  const Ht = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    Ht.fill(0);
    for (let a = 0; a < cols; a++) {
      const t = trits[o + a];
      if (t) for (let b = 0; b < cols; b++) Ht[b] += t * H[a * cols + b];
    }
    let num = 0;
    let den = 0;
    for (let b = 0; b < cols; b++) {
      num += Ht[b] * w[o + b];
      den += Ht[b] * trits[o + b];
    }
    const s = den > 0 && num > 0 ? num / den : scale[r];
    scales[r] = f16r(s);
  }
  return { rows, cols, trits, scales };
}

/** Squared reconstruction error of a ternary rows set against w. */
export function ternaryError(w: Float32Array, t: TernaryRows): number {
  let e = 0;
  for (let r = 0; r < t.rows; r++)
    for (let c = 0; c < t.cols; c++) {
      const i = r * t.cols + c;
      const d = w[i] - t.scales[r] * t.trits[i];
      e += d * d;
    }
  return e;
}

function checkDims(what: string, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows <= 0 || !Number.isInteger(cols) || cols <= 0 || rows > 0xffffffff || cols > 0xffffffff)
    throw new Error(`${what}: rows and cols must be positive integers, got ${rows} x ${cols}`);
}

const digitOf = (t: number): number => (t === 0 ? 0 : t > 0 ? 1 : 2);

/** Symbols of the trit stream in tuples of T (zero-padded). */
function symbols(trits: Int8Array, T: number): Uint8Array {
  const n = Math.ceil(trits.length / T);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = T - 1; j >= 0; j--) {
      const k = i * T + j;
      s = s * 3 + (k < trits.length ? digitOf(trits[k]) : 0);
    }
    out[i] = s;
  }
  return out;
}

/** Huffman code lengths for `freq`, limited to `limit` bits (JPEG Annex K.3 adjustment), most frequent shortest. */
export function huffmanLengths(freq: ArrayLike<number>, limit = TQE_MAX_CODE_LEN): Uint8Array {
  const n = freq.length;
  const len = new Uint8Array(n);
  const used: number[] = [];
  for (let i = 0; i < n; i++) if (freq[i] > 0) used.push(i);
  if (used.length === 0) return len;
  if (used.length === 1) {
    len[used[0]] = 1;
    return len;
  }
  if (used.length > 2 ** limit) throw new Error(`huffmanLengths: ${used.length} symbols do not fit codes of ${limit} bits`);
  // plain Huffman tree by repeated merging of the two lightest nodes (n <= 243)
  type Node = { w: number; sym: number; kids: [Node, Node] | null };
  let nodes: Node[] = used.map((s) => ({ w: freq[s], sym: s, kids: null }));
  while (nodes.length > 1) {
    nodes.sort((a, b) => a.w - b.w || a.sym - b.sym);
    const [a, b] = nodes;
    nodes = [{ w: a.w + b.w, sym: Math.min(a.sym, b.sym), kids: [a, b] }, ...nodes.slice(2)];
  }
  const depth = new Map<number, number>();
  const walk = (x: Node, d: number): void => {
    if (x.kids) {
      walk(x.kids[0], d + 1);
      walk(x.kids[1], d + 1);
    } else depth.set(x.sym, d);
  };
  walk(nodes[0], 0);
  const maxD = Math.max(...depth.values());
  const count = new Array<number>(Math.max(maxD, limit) + 1).fill(0);
  for (const d of depth.values()) count[d]++;
  for (let i = maxD; i > limit; i--) {
    while (count[i] > 0) {
      let j = i - 2;
      while (count[j] === 0) j--;
      count[i] -= 2;
      count[i - 1] += 1;
      count[j + 1] += 2;
      count[j] -= 1;
    }
  }
  // lengths back to symbols: most frequent first get the shortest
  const bySym = used.slice().sort((a, b) => freq[b] - freq[a] || a - b);
  let k = 0;
  for (let l = 1; l <= limit; l++) for (let c = 0; c < count[l]; c++) len[bySym[k++]] = l;
  return len;
}

/** Canonical codes for lengths (sorted by length, then symbol). */
function canonicalCodes(len: Uint8Array): Uint32Array {
  const code = new Uint32Array(len.length);
  const order = Array.from(len.keys())
    .filter((s) => len[s] > 0)
    .sort((a, b) => len[a] - len[b] || a - b);
  let c = 0;
  let prev = 0;
  for (const s of order) {
    c <<= len[s] - prev;
    prev = len[s];
    code[s] = c++;
  }
  return code;
}

/** tq_e bytes of a ternary rows set (layout in the file comment). */
export function encodeTrits(t: TernaryRows, opts: { tuple?: number } = {}): Uint8Array {
  checkDims('encodeTrits', t.rows, t.cols);
  if (t.trits.length !== t.rows * t.cols || t.scales.length !== t.rows) throw new Error(`encodeTrits: ${t.trits.length} trits and ${t.scales.length} scales for ${t.rows} x ${t.cols}`);
  for (let i = 0; i < t.trits.length; i++) if (t.trits[i] !== 0 && t.trits[i] !== 1 && t.trits[i] !== -1) throw new Error(`encodeTrits: trit ${i} is ${t.trits[i]}, not -1, 0 or 1`);
  const tuples = opts.tuple !== undefined ? [opts.tuple] : [1, 2, 3, 4, 5];
  for (const T of tuples) if (!Number.isInteger(T) || T < 1 || T > 5) throw new Error(`encodeTrits: tuple must be an integer in 1..5, got ${T}`);
  let best: { T: number; syms: Uint8Array; len: Uint8Array; bits: number; bytes: number } | null = null;
  for (const T of tuples) {
    const syms = symbols(t.trits, T);
    const freq = new Float64Array(POW3[T]);
    for (const s of syms) freq[s]++;
    const len = huffmanLengths(freq);
    let bits = 0;
    for (let s = 0; s < freq.length; s++) bits += freq[s] * len[s];
    const bytes = HEADER + 2 * t.rows + Math.ceil(POW3[T] / 2) + Math.ceil(bits / 8);
    if (!best || bytes < best.bytes) best = { T, syms, len, bits, bytes };
  }
  const { T, syms, len, bits, bytes } = best!;
  const out = new Uint8Array(bytes);
  const dv = new DataView(out.buffer);
  out.set(MAGIC, 0);
  dv.setUint32(4, t.rows, true);
  dv.setUint32(8, t.cols, true);
  out[12] = T;
  out[13] = Math.max(...len);
  const streamBytes = Math.ceil(bits / 8);
  dv.setUint32(14, streamBytes, true);
  for (let r = 0; r < t.rows; r++) {
    const s = t.scales[r];
    if (!Number.isFinite(s)) throw new Error(`encodeTrits: scale of row ${r} is ${s}`);
    dv.setUint16(HEADER + 2 * r, f32ToF16Bits(s), true);
  }
  const tab = HEADER + 2 * t.rows;
  for (let s = 0; s < len.length; s++) out[tab + (s >> 1)] |= len[s] << ((s & 1) * 4);
  const code = canonicalCodes(len);
  let p = (tab + Math.ceil(POW3[T] / 2)) * 8;
  for (const s of syms) {
    const l = len[s];
    const c = code[s];
    for (let b = l - 1; b >= 0; b--) {
      if ((c >> b) & 1) out[p >> 3] |= 0x80 >> (p & 7);
      p++;
    }
  }
  return out;
}

/** A parsed, validated tq_e stream: scales, decode table and where the stream starts. */
interface Parsed {
  rows: number;
  cols: number;
  T: number;
  L: number;
  scales: Float32Array;
  /** lut[v] = symbol << 4 | length for the next L bits v; 0 = no code starts with v. */
  lut: Uint16Array;
  streamStart: number;
  streamBytes: number;
}

const parsedCache = new WeakMap<Uint8Array, Parsed>();

/** Validate the header, scales and code table of tq_e bytes (cached per array). */
function parse(b: Uint8Array, what: string): Parsed {
  const hit = parsedCache.get(b);
  if (hit) return hit;
  if (!(b instanceof Uint8Array)) throw new Error(`${what}: tq_e data must be a Uint8Array`);
  if (b.length < HEADER) throw new Error(`${what}: tq_e stream truncated: ${b.length} bytes, the header needs ${HEADER}`);
  for (let i = 0; i < 4; i++) if (b[i] !== MAGIC[i]) throw new Error(`${what}: tq_e bad magic at byte ${i} (not a tq_e stream)`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const rows = dv.getUint32(4, true);
  const cols = dv.getUint32(8, true);
  const T = b[12];
  const L = b[13];
  const streamBytes = dv.getUint32(14, true);
  if (rows === 0 || cols === 0) throw new Error(`${what}: tq_e header byte 4: rows and cols must be positive, got ${rows} x ${cols}`);
  if (T < 1 || T > 5) throw new Error(`${what}: tq_e header byte 12: tuple must be 1..5, got ${T}`);
  if (L < 1 || L > TQE_MAX_CODE_LEN) throw new Error(`${what}: tq_e header byte 13: longest code must be 1..${TQE_MAX_CODE_LEN}, got ${L}`);
  const tab = HEADER + 2 * rows;
  const streamStart = tab + Math.ceil(POW3[T] / 2);
  if (b.length !== streamStart + streamBytes)
    throw new Error(`${what}: tq_e stream truncated or oversized: header says ${streamStart + streamBytes} bytes (${rows} rows, stream ${streamBytes}), got ${b.length}`);
  // every symbol takes at least one bit: the header cannot promise more trits than the stream holds
  const nSyms = Math.ceil((rows * cols) / T);
  if (nSyms > streamBytes * 8) throw new Error(`${what}: tq_e stream too short: ${rows} x ${cols} trits need at least ${nSyms} bits, the stream has ${streamBytes * 8}`);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const s = f16BitsToF32(dv.getUint16(HEADER + 2 * r, true));
    if (!Number.isFinite(s)) throw new Error(`${what}: tq_e scale of row ${r} (byte ${HEADER + 2 * r}) is ${s}`);
    scales[r] = s;
  }
  const len = new Uint8Array(POW3[T]);
  let kraft = 0;
  let longest = 0;
  for (let s = 0; s < len.length; s++) {
    len[s] = (b[tab + (s >> 1)] >> ((s & 1) * 4)) & 15;
    if (len[s] > L) throw new Error(`${what}: tq_e bad code table: symbol ${s} has length ${len[s]} > the header's longest ${L} (byte ${tab + (s >> 1)})`);
    if (len[s]) kraft += 2 ** (L - len[s]);
    longest = Math.max(longest, len[s]);
  }
  if (kraft === 0) throw new Error(`${what}: tq_e bad code table: no symbol has a code`);
  if (kraft > 2 ** L) throw new Error(`${what}: tq_e bad code table: over-subscribed (Kraft sum ${kraft / 2 ** L} > 1)`);
  if (longest !== L) throw new Error(`${what}: tq_e bad code table: longest code ${longest}, header says ${L}`);
  const code = canonicalCodes(len);
  const lut = new Uint16Array(1 << L);
  for (let s = 0; s < len.length; s++) {
    const l = len[s];
    if (!l) continue;
    const lo = code[s] << (L - l);
    lut.fill((s << 4) | l, lo, lo + (1 << (L - l)));
  }
  const p: Parsed = { rows, cols, T, L, scales, lut, streamStart, streamBytes };
  parsedCache.set(b, p);
  return p;
}

/** Per-symbol trits: digits of s, least significant first. */
const SYM_TRITS: Int8Array[] = [0, 1, 2, 3, 4, 5].map((T) => {
  const out = new Int8Array(POW3[T] * Math.max(T, 1));
  for (let s = 0; s < POW3[T]; s++) {
    let v = s;
    for (let j = 0; j < T; j++) {
      const dgt = v % 3;
      v = (v - dgt) / 3;
      out[s * T + j] = dgt === 0 ? 0 : dgt === 1 ? 1 : -1;
    }
  }
  return out;
});

/**
 * Walk the stream: calls `each(sym)` for every symbol in order. Throws on a bit pattern that is no
 * code and on a stream that ends before the header's trits.
 */
function walkSymbols(b: Uint8Array, p: Parsed, what: string, each: (sym: number) => void): void {
  const { L, lut, streamStart, streamBytes, T } = p;
  const nSyms = Math.ceil((p.rows * p.cols) / T);
  const end = streamBytes * 8;
  const s = b.subarray(streamStart);
  const mask = (1 << L) - 1;
  let pos = 0;
  for (let i = 0; i < nSyms; i++) {
    const k = pos >> 3;
    // 3 bytes hold the next L <= 12 bits at any bit offset; reads past the end are 0 (undefined | 0)
    const v = ((((s[k] | 0) << 16) | ((s[k + 1] | 0) << 8) | (s[k + 2] | 0)) >>> (24 - (pos & 7) - L)) & mask;
    const e = lut[v];
    const l = e & 15;
    if (l === 0) throw new Error(`${what}: tq_e invalid code at stream bit ${pos} (byte ${streamStart + k})`);
    pos += l;
    if (pos > end) throw new Error(`${what}: tq_e stream truncated: symbol ${i} of ${nSyms} runs past the stream's ${end} bits`);
    each(e >> 4);
  }
}

/** The trits and scales of tq_e bytes (exact inverse of encodeTrits up to the f16 scales). */
export function decodeTrits(b: Uint8Array): TernaryRows {
  const p = parse(b, 'decodeTrits');
  const n = p.rows * p.cols;
  const trits = new Int8Array(n);
  const T = p.T;
  const tab = SYM_TRITS[T];
  let q = 0;
  walkSymbols(b, p, 'decodeTrits', (sym) => {
    for (let j = 0; j < T && q < n; j++) trits[q++] = tab[sym * T + j];
  });
  return { rows: p.rows, cols: p.cols, trits, scales: p.scales.slice() };
}

/** Quantise w [rows, cols] to ternary and entropy-code it (tq_e bytes). */
export function encodeTernary(w: Float32Array, rows: number, cols: number, opts: TernaryOptions = {}): Uint8Array {
  return encodeTrits(quantizeTernary(w, rows, cols, opts), opts.tuple !== undefined ? { tuple: opts.tuple } : {});
}

/** float32 [rows, cols] of tq_e bytes. */
export function decodeTernary(b: Uint8Array): { rows: number; cols: number; values: Float32Array } {
  const t = decodeTrits(b);
  const values = new Float32Array(t.rows * t.cols);
  for (let r = 0; r < t.rows; r++) for (let c = 0; c < t.cols; c++) values[r * t.cols + c] = t.trits[r * t.cols + c] * t.scales[r];
  return { rows: t.rows, cols: t.cols, values };
}

/** Rows and cols a tq_e header declares (validated). */
export function ternaryShape(b: Uint8Array): { rows: number; cols: number } {
  const p = parse(b, 'ternaryShape');
  return { rows: p.rows, cols: p.cols };
}

/** Counts of a tq_e stream (trits by value, tuple size, bytes). */
export function ternaryStats(b: Uint8Array): TernaryStats {
  const p = parse(b, 'ternaryStats');
  const t = decodeTrits(b);
  let zeros = 0;
  let plus = 0;
  for (const v of t.trits) {
    if (v === 0) zeros++;
    else if (v > 0) plus++;
  }
  return { rows: p.rows, cols: p.cols, tuple: p.T, maxCodeLen: p.L, bytes: b.length, streamBytes: p.streamBytes, zeros, plus, minus: t.trits.length - zeros - plus };
}

/**
 * out[t * ldo + r] (+)= s_r * sum_c trit[r, c] x[t * cols + c] for t < n: decodes the stream once
 * per call, row by row, and adds or subtracts x on each nonzero trit (x is not quantised).
 */
export function ternaryMatmul(b: Uint8Array, x: Float32Array, n: number, out: Float32Array, opts: { accumulate?: boolean; ldo?: number } = {}): Float32Array {
  const p = parse(b, 'ternaryMatmul');
  const { rows, cols, T, scales } = p;
  const ldo = opts.ldo ?? rows;
  const acc = opts.accumulate ?? false;
  if (x.length < n * cols) throw new Error(`ternaryMatmul: x has ${x.length} values, needs ${n} x ${cols}`);
  if (out.length < (n - 1) * ldo + rows) throw new Error(`ternaryMatmul: out has ${out.length} values, needs ${n} rows of stride ${ldo}`);
  const tab = SYM_TRITS[T];
  const sums = new Float64Array(n);
  let r = 0;
  let c = 0;
  const flush = (): void => {
    const s = scales[r];
    for (let t = 0; t < n; t++) {
      const v = s * sums[t];
      if (acc) out[t * ldo + r] += v;
      else out[t * ldo + r] = v;
      sums[t] = 0;
    }
    r++;
    c = 0;
  };
  walkSymbols(b, p, 'ternaryMatmul', (sym) => {
    for (let j = 0; j < T; j++) {
      if (r === rows) return; // zero padding of the last tuple
      const v = tab[sym * T + j];
      if (v > 0) for (let t = 0; t < n; t++) sums[t] += x[t * cols + c];
      else if (v < 0) for (let t = 0; t < n; t++) sums[t] -= x[t * cols + c];
      if (++c === cols) flush();
    }
  });
  return out;
}
