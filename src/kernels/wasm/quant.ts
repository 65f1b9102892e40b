/**
 * QuantKernels on WebAssembly SIMD (assembly/quant.ts): weights are copied once into the module's
 * own memory in their ggml block layout; each product copies the q8_0-quantised activations in
 * and the result out. Single-threaded (one instance per engine). The moe-ts low-bit formats
 * (q3_m, q2_m) have no wasm kernel yet: they stay in js memory and run the js reference qmatmul.
 */
import { readFileSync } from 'node:fs';
import { f16BitsToF32 } from '../../tensor/dtype.js';
import { WA, type WasmMemory, type WasmModule } from './wa.js';
import {
  quantizeRowsQ8,
  quantBytes,
  qmatmul,
  type QuantFormat,
  type PreparedMatrix,
  type QuantKernels,
  type QuantMatrix,
  type Q8Rows,
  type PreparedActs,
  type ActsMatmulOptions,
  gatherActRows,
} from '../quant.js';

interface QuantExports {
  qmatmul(fmt: number, w: number, rows: number, cols: number, xq: number, xd: number, n: number, out: number, ldo: number, acc: number, f16tab: number): void;
  fmatmul(w: number, rows: number, cols: number, x: number, n: number, out: number, ldo: number, acc: number): void;
  qmatmulActs(fmt: number, w: number, rows: number, cols: number, xs: number, xd: number, xc: number, n: number, idx: number, out: number, ldo: number, acc: number, f16tab: number): void;
  fmatmulActs(w: number, rows: number, cols: number, x: number, n: number, idx: number, out: number, ldo: number, acc: number): void;
}

/** A prepared-activations buffer in wasm memory (see assembly/quant.ts: f32 copy, permuted i16 q8 values, scales, q4_0 corrections). */
interface ActsSlot {
  /** Values it holds room for. */
  cap: number;
  f: number;
  xs: number;
  xd: number;
  xc: number;
  idx: number;
  idxCap: number;
}

/** Position of block value j in the permuted i16 layout: [0,2,..,14], [1,..,15], [16,..,30], [17,..,31]. */
const PERM = Int32Array.from({ length: 32 }, (_, j) => ((j >> 4) << 4) + ((j & 1) << 3) + ((j & 15) >> 1));

let compiled: WasmModule | null = null;
const PAGE = 65536;
const F16TAB = 65536;
const FMT = { q8_0: 1, q4_0: 2 } as const;

/** The wasm SIMD QuantKernels: `prepare` copies a matrix into wasm memory (up to 4 GiB in all). */
export class WasmQuantKernels implements QuantKernels {
  readonly name = 'wasm';
  private readonly mem: WasmMemory;
  private readonly ex: QuantExports;
  private top: number;
  private scratch = { ptr: 0, size: 0 };
  private q8: Q8Rows = { q: new Int8Array(0), d: new Float32Array(0) };
  private slots: ActsSlot[] = [];
  private outScratch = { ptr: 0, size: 0 };
  /** Bytes of weights copied in so far. */
  preparedBytes = 0;

  constructor() {
    compiled ??= new WA.Module(readFileSync(new URL('./quant.wasm', import.meta.url)));
    this.mem = new WA.Memory({ initial: 32, maximum: 65536 });
    const inst = new WA.Instance(compiled, { env: { memory: this.mem } });
    this.ex = inst.exports as unknown as QuantExports;
    const tab = new Float32Array(this.mem.buffer, F16TAB, 65536);
    for (let h = 0; h < 65536; h++) tab[h] = f16BitsToF32(h);
    this.top = F16TAB + 65536 * 4;
  }

  private alloc(bytes: number): number {
    const p = Math.ceil(this.top / 64) * 64;
    const end = p + bytes;
    if (end > 65536 * PAGE) throw new Error(`wasm quant kernels: ${end} bytes exceed the 4 GiB of wasm memory`);
    const have = this.mem.buffer.byteLength;
    if (end > have) this.mem.grow(Math.ceil((end - have) / PAGE));
    this.top = end;
    return p;
  }

  prepare(m: QuantMatrix): PreparedMatrix {
    if (m.format !== 'f32' && !(m.format in FMT)) return { format: m.format, rows: m.rows, cols: m.cols, bytes: m.data.byteLength, ref: m };
    const bytes = m.data.byteLength;
    const ptr = this.alloc(bytes);
    new Uint8Array(this.mem.buffer, ptr, bytes).set(new Uint8Array(m.data.buffer, m.data.byteOffset, bytes));
    this.preparedBytes += bytes;
    return { format: m.format, rows: m.rows, cols: m.cols, bytes, ref: ptr };
  }

  allocate(format: QuantFormat, rows: number, cols: number): PreparedMatrix {
    const bytes = quantBytes(format, rows, cols);
    const ptr = this.alloc(bytes);
    new Uint8Array(this.mem.buffer, ptr, bytes).fill(0);
    this.preparedBytes += bytes;
    return { format, rows, cols, bytes, ref: ptr };
  }

  bytesOf(w: PreparedMatrix): Uint8Array {
    return new Uint8Array(this.mem.buffer, w.ref as number, w.bytes);
  }

  matmul(w: PreparedMatrix, x: Float32Array, n: number, out: Float32Array, opts: { accumulate?: boolean; ldo?: number } = {}): Float32Array {
    if (w.format !== 'f32' && !(w.format in FMT)) return qmatmul(w.ref as QuantMatrix, x, n, out, opts);
    const { rows, cols } = w;
    const ldo = opts.ldo ?? rows;
    if (x.length < n * cols) throw new Error(`qmatmul: x has ${x.length} values, needs ${n} x ${cols}`);
    const outLen = (n - 1) * ldo + rows;
    if (out.length < outLen) throw new Error(`qmatmul: out has ${out.length} values, needs ${n} rows of stride ${ldo}`);
    const acc = opts.accumulate ? 1 : 0;
    const inBytes = w.format === 'f32' ? n * cols * 4 : n * cols + (n * cols) / 8;
    const need = inBytes + outLen * 4 + 128;
    if (need > this.scratch.size) this.scratch = { ptr: this.alloc(need * 2), size: need * 2 };
    const s = this.scratch.ptr;
    const buf = this.mem.buffer;
    const outPtr = Math.ceil((s + inBytes) / 16) * 16;
    const o = new Float32Array(buf, outPtr, outLen);
    if (acc) o.set(out.subarray(0, outLen));
    if (w.format === 'f32') {
      new Float32Array(buf, s, n * cols).set(x.subarray(0, n * cols));
      this.ex.fmatmul(w.ref as number, rows, cols, s, n, outPtr, ldo, acc);
    } else {
      const q = (this.q8 = quantizeRowsQ8(x, n, cols, this.q8));
      new Int8Array(buf, s, n * cols).set(q.q.subarray(0, n * cols));
      const dPtr = s + n * cols; // n * cols is a multiple of 32
      new Float32Array(buf, dPtr, (n * cols) / 32).set(q.d.subarray(0, (n * cols) / 32));
      this.ex.qmatmul(FMT[w.format as keyof typeof FMT], w.ref as number, rows, cols, s, dPtr, n, outPtr, ldo, acc, F16TAB);
    }
    if (ldo === rows) out.set(o);
    else for (let t = 0; t < n; t++) out.set(o.subarray(t * ldo, t * ldo + rows), t * ldo);
    return out;
  }

  /** Quantise x [n, cols] once into slot `slot` (wasm memory; see PreparedActs). */
  prepareActs(x: Float32Array, n: number, cols: number, slot: number): PreparedActs {
    if (x.length < n * cols) throw new Error(`prepareActs: x has ${x.length} values, needs ${n} x ${cols}`);
    if (!Number.isInteger(slot) || slot < 0 || slot > 64) throw new Error(`prepareActs: slot must be an integer in [0, 64], got ${slot}`);
    const len = n * cols;
    let sl = this.slots[slot];
    if (!sl || sl.cap < len) {
      const cap = Math.max(len, 2 * (sl?.cap ?? 0));
      const nb = Math.ceil(cap / 32);
      sl = { cap, f: this.alloc(cap * 4), xs: this.alloc(cap * 2), xd: this.alloc(nb * 4), xc: this.alloc(nb * 16), idx: sl?.idx ?? 0, idxCap: sl?.idxCap ?? 0 };
      this.slots[slot] = sl;
    }
    const buf = this.mem.buffer;
    new Float32Array(buf, sl.f, len).set(x.subarray(0, len));
    if (cols % 32 === 0) {
      const q = (this.q8 = quantizeRowsQ8(x, n, cols, this.q8));
      const nb = len / 32;
      const xs = new Int16Array(buf, sl.xs, len);
      const xd = new Float32Array(buf, sl.xd, nb);
      const xc = new Int32Array(buf, sl.xc, nb * 4);
      xd.set(q.d.subarray(0, nb));
      const qq = q.q;
      for (let b = 0; b < nb; b++) {
        const o = b * 32;
        for (let j = 0; j < 32; j++) xs[o + PERM[j]] = qq[o + j];
        for (let k = 0; k < 4; k++) {
          let c = 0;
          for (let v = 0; v < 4; v++) c += xs[o + v * 8 + 2 * k] + xs[o + v * 8 + 2 * k + 1];
          xc[b * 4 + k] = 8 * c;
        }
      }
    }
    return { n, cols, ref: sl };
  }

  /** out[t * ldo + r] (+)= sum_c W[r, c] a[rows[t], c] on prepared activations. */
  matmulActs(w: PreparedMatrix, a: PreparedActs, out: Float32Array, opts: ActsMatmulOptions = {}): Float32Array {
    const sl = a.ref as ActsSlot;
    const { rows, cols } = w;
    if (cols !== a.cols) throw new Error(`matmulActs: weight has ${cols} cols, activations ${a.cols}`);
    const m = opts.rows ? opts.rows.length : a.n;
    if (m === 0) return out;
    if (w.format !== 'f32' && !(w.format in FMT)) {
      const x = new Float32Array(this.mem.buffer, sl.f, a.n * cols);
      return qmatmul(w.ref as QuantMatrix, gatherActRows(x, a.n, cols, opts.rows), m, out, opts);
    }
    const ldo = opts.ldo ?? rows;
    const outLen = (m - 1) * ldo + rows;
    if (out.length < outLen) throw new Error(`qmatmul: out has ${out.length} values, needs ${m} rows of stride ${ldo}`);
    let idx = 0;
    if (opts.rows) {
      for (let i = 0; i < m; i++) if (!(opts.rows[i] >= 0 && opts.rows[i] < a.n)) throw new Error(`matmulActs: rows[${i}] = ${opts.rows[i]} outside the ${a.n} prepared rows`);
      if (sl.idxCap < m) {
        sl.idxCap = Math.max(m, 2 * sl.idxCap);
        sl.idx = this.alloc(sl.idxCap * 4);
      }
      new Int32Array(this.mem.buffer, sl.idx, m).set(opts.rows);
      idx = sl.idx;
    }
    if (this.outScratch.size < outLen) this.outScratch = { ptr: this.alloc(outLen * 8), size: outLen * 2 };
    const outPtr = this.outScratch.ptr;
    const acc = opts.accumulate ? 1 : 0;
    const o = new Float32Array(this.mem.buffer, outPtr, outLen);
    if (acc) o.set(out.subarray(0, outLen));
    if (w.format === 'f32') this.ex.fmatmulActs(w.ref as number, rows, cols, sl.f, m, idx, outPtr, ldo, acc);
    else this.ex.qmatmulActs(FMT[w.format as keyof typeof FMT], w.ref as number, rows, cols, sl.xs, sl.xd, sl.xc, m, idx, outPtr, ldo, acc, F16TAB);
    const oo = new Float32Array(this.mem.buffer, outPtr, outLen);
    if (ldo === rows) out.set(oo);
    else for (let t = 0; t < m; t++) out.set(oo.subarray(t * ldo, t * ldo + rows), t * ldo);
    return out;
  }
}
