/**
 * QuantKernels on WebAssembly SIMD (assembly/quant.ts): weights are copied once into the module's
 * own memory in their ggml block layout; each product copies the q8_0-quantised activations in
 * and the result out. Single-threaded (one instance per engine). The moe-ts low-bit formats
 * (q3_m, q2_m) have no wasm kernel yet: they stay in js memory and run the js reference qmatmul.
 */
import { readFileSync } from 'node:fs';
import { f16BitsToF32 } from '../../tensor/dtype.js';
import { WA, type WasmMemory, type WasmModule } from './wa.js';
import { quantizeRowsQ8, quantBytes, qmatmul, type QuantFormat, type PreparedMatrix, type QuantKernels, type QuantMatrix, type Q8Rows } from '../quant.js';

interface QuantExports {
  qmatmul(fmt: number, w: number, rows: number, cols: number, xq: number, xd: number, n: number, out: number, ldo: number, acc: number, f16tab: number): void;
  fmatmul(w: number, rows: number, cols: number, x: number, n: number, out: number, ldo: number, acc: number): void;
}

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
}
