/**
 * The `wasm` backend, platform-neutral part: WebAssembly SIMD GEMM kernels
 * (src/kernels/wasm/assembly, built by scripts/build-wasm.mjs) run by the calling thread plus a
 * pool of workers over one shared WebAssembly.Memory. Calls are synchronous: the caller copies
 * the inputs into the shared memory, describes the job there, wakes the workers, works on the
 * job itself and blocks with Atomics.wait until the workers are done, then copies the result
 * out. The loaders start the pool: index.ts (Node, worker_threads) and browser.ts (Web Workers).
 */
import type { Backend, GroupedMatmulOptions, MatmulOptions } from '../../tensor/backend.js';
import { S_DONE, S_ERROR, S_GEN, S_STOP } from './sync.js';
import { WA, type WasmInstance, type WasmMemory, type WasmModule } from './wa.js';

// Must match src/kernels/wasm/assembly/kernels.ts.
const NR = 8;
const MR = 4;
const DESC_WORDS = 16;
const TASK_WORDS = 8;
const D = {
  A: 0,
  ARS: 1,
  ACS: 2,
  B: 3,
  BRS: 4,
  BCS: 5,
  BP: 6,
  C: 7,
  LDC: 8,
  M: 9,
  N: 10,
  K: 11,
  BETA: 12,
  KC: 13,
  READY: 14,
  NPACK: 15,
};
const C_DESC = 0,
  C_NTASK = 4,
  C_TASK = 8,
  C_SCRATCH = 12,
  C_SCRATCH_STRIDE = 16,
  C_NEXT = 64,
  C_COPIED = 128;
const T_PACK = 0,
  T_COMPUTE = 1,
  T_FUSED = 2;
/** Depth of one packed slice: a KC x NR strip of B (8 KiB) stays in L1. */
const KC_MAX = 256;
/** Rows per compute task (a multiple of MR): the packed A block (MC x KC, 128 KiB) stays in L2. */
const MC = 128;
/** Strips per L2-resident chunk of packed B (256 KiB at KC = 256); the most a fused task takes. */
const NC_STRIPS = 32;
const SCRATCH_STRIDE = align(MC * KC_MAX * 4 + NC_STRIPS * KC_MAX * NR * 4 + MR * NR * 4, 64);

/** Control block address; everything below ARENA is reserved. */
export const CTRL = 1024;
const ARENA = 65536;
const PAGE = 65536;
/** Floats of packed B per pack task. */
const PACK_CHUNK = 32768;
/** Below this many multiply-adds a call runs on the main thread alone (waking workers costs tens of µs). */
const PARALLEL_MIN_MACS = 1 << 17;
/** Problems with at most this many rows whose B no other problem shares run as fused tasks. */
const FUSE_MAX_ROWS = 1024;
/** Fused tasks per thread to aim for (more balance the tail; fewer repack A less often). */
const FUSED_TASKS_PER_THREAD = 8;
/** Smallest fused task worth splitting off (multiply-adds). */
const FUSED_MIN_MACS = 1 << 20;
/** The main thread publishes copied inputs to the workers in steps of at least this many floats. */
const COPY_STEP = 1 << 16;
export const MAX_THREADS = 16;

function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** One independent product C = op(A) op(B) with op(A) m x k, op(B) k x n; offsets in floats. */
interface Problem {
  a: number;
  aRs: number;
  aCs: number;
  b: number;
  bRs: number;
  bCs: number;
  /** Index of the problem whose packed B this one uses (itself unless B is shared). */
  bOwner: number;
  c: number;
  m: number;
  n: number;
  k: number;
  beta: boolean;
}

function isDim(x: number): boolean {
  return Number.isInteger(x) && x >= 0 && x <= 0x7fffffff;
}

/** A started kernel worker (node:worker_threads Worker or Web Worker). */
export interface PoolWorker {
  terminate(): unknown;
}

export class WasmBackend implements Backend {
  readonly name = 'wasm' as const;
  readonly threads: number;
  private readonly memory: WasmMemory;
  private readonly run: (ctrl: number, tid: number) => void;
  private readonly workers: PoolWorker[];
  private readonly sync: Int32Array;
  private f32!: Float32Array;
  private i32!: Int32Array;
  private disposed = false;
  /** Set when workers stopped responding; every later call fails fast with this message. */
  private broken: string | null = null;

  constructor(threads: number, memory: WasmMemory, instance: WasmInstance, workers: PoolWorker[], sync: Int32Array) {
    this.threads = threads;
    this.memory = memory;
    this.run = instance.exports.run as (ctrl: number, tid: number) => void;
    this.workers = workers;
    this.sync = sync;
    this.refreshViews();
  }

  private refreshViews(): void {
    const buf = this.memory.buffer;
    this.f32 = new Float32Array(buf);
    this.i32 = new Int32Array(buf);
  }

  /** Grows the shared memory to at least `bytes` (never shrinks; the buffer is reused). */
  private ensure(bytes: number, op: string): void {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) {
      const pages = Math.ceil((bytes - have) / PAGE);
      try {
        this.memory.grow(pages);
      } catch (e) {
        throw new Error(`wasm ${op}: needs ${bytes} bytes of wasm memory, growing failed (${(e as Error).message})`);
      }
    }
    if (this.f32.buffer.byteLength !== this.memory.buffer.byteLength) this.refreshViews();
  }

  matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts: MatmulOptions = {}): Float32Array {
    const batch = opts.batch ?? 1;
    const { transA = false, transB = false, broadcastB = false, accumulate = false } = opts;
    const dims = `m=${m}, k=${k}, n=${n}, batch=${batch}`;
    if (!isDim(m) || !isDim(k) || !isDim(n) || !isDim(batch)) {
      throw new Error(`wasm matmul: sizes must be non-negative integers (${dims})`);
    }
    const aLen = batch * m * k;
    const bLen = (broadcastB ? 1 : batch) * k * n;
    const cLen = batch * m * n;
    checkLen('matmul', 'A', a, aLen, dims);
    checkLen('matmul', 'B', b, bLen, dims);
    if (accumulate && !opts.out) throw new Error(`wasm matmul: accumulate needs out (${dims})`);
    const out = opts.out ?? new Float32Array(cLen);
    checkLen('matmul', 'out', out, cLen, dims);
    if (cLen === 0) return out;

    const problems: Problem[] = [];
    for (let bi = 0; bi < batch; bi++) {
      problems.push({
        a: bi * m * k,
        aRs: transA ? 1 : k,
        aCs: transA ? m : 1,
        b: broadcastB ? 0 : bi * k * n,
        bRs: transB ? 1 : n,
        bCs: transB ? k : 1,
        bOwner: broadcastB ? 0 : bi,
        c: bi * m * n,
        m,
        n,
        k,
        beta: accumulate,
      });
    }
    this.execute('matmul', problems, a, aLen, b, bLen, out, cLen, accumulate);
    return out;
  }

  groupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB = false, opts: GroupedMatmulOptions = {}): Float32Array {
    const dims = `k=${k}, n=${n}, groups=${sizes.length}`;
    if (!isDim(k) || !isDim(n)) throw new Error(`wasm groupedMatmul: sizes must be non-negative integers (${dims})`);
    const off = offsets('groupedMatmul', sizes);
    const rows = off[sizes.length];
    const E = sizes.length;
    checkLen('groupedMatmul', 'A', a, rows * k, `rows=${rows}, ${dims}`);
    checkLen('groupedMatmul', 'W', w, E * k * n, dims);
    const c = opts.out ?? new Float32Array(rows * n);
    checkLen('groupedMatmul', 'out', c, rows * n, dims);
    const accumulate = (opts.accumulate ?? false) && opts.out !== undefined;
    if (rows * n === 0) return c;
    const problems: Problem[] = [];
    for (let e = 0; e < E; e++) {
      if (sizes[e] === 0) continue;
      problems.push({
        a: off[e] * k,
        aRs: k,
        aCs: 1,
        b: e * k * n,
        bRs: transB ? 1 : n,
        bCs: transB ? k : 1,
        bOwner: problems.length,
        c: off[e] * n,
        m: sizes[e],
        n,
        k,
        beta: accumulate,
      });
    }
    this.execute('groupedMatmul', problems, a, rows * k, w, E * k * n, c, rows * n, accumulate);
    return c;
  }

  groupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array {
    const dims = `k=${k}, n=${n}, groups=${sizes.length}`;
    if (!isDim(k) || !isDim(n)) throw new Error(`wasm groupedMatmulTN: sizes must be non-negative integers (${dims})`);
    const off = offsets('groupedMatmulTN', sizes);
    const rows = off[sizes.length];
    const E = sizes.length;
    checkLen('groupedMatmulTN', 'A', a, rows * k, `rows=${rows}, ${dims}`);
    checkLen('groupedMatmulTN', 'G', g, rows * n, `rows=${rows}, ${dims}`);
    const c = new Float32Array(E * k * n);
    if (E * k * n === 0) return c;
    const problems: Problem[] = [];
    for (let e = 0; e < E; e++) {
      // C_e = A_e^T G_e: op(A)[i][p] = A[(off_e + p) k + i], op(B)[p][j] = G[(off_e + p) n + j].
      problems.push({
        a: off[e] * k,
        aRs: 1,
        aCs: k,
        b: off[e] * n,
        bRs: n,
        bCs: 1,
        bOwner: problems.length,
        c: e * k * n,
        m: k,
        n,
        k: sizes[e],
        beta: false,
      });
    }
    this.execute('groupedMatmulTN', problems, a, rows * k, g, rows * n, c, E * k * n, false);
    return c;
  }

  /**
   * Lays out inputs, packed B, descriptors, task lists and per-thread scratch in the shared
   * memory, runs the job and copies C back into `out`.
   */
  private execute(op: string, problems: Problem[], a: Float32Array, aLen: number, b: Float32Array, bLen: number, out: Float32Array, cLen: number, loadC: boolean): void {
    if (this.disposed) throw new Error(`wasm ${op}: backend was disposed`);
    if (this.broken) throw new Error(this.broken);
    const P = problems.length;

    // Work split, one ordered task list. A problem whose B no other problem shares and that
    // has few rows (an MoE group) becomes fused tasks: all its rows x a range of strips, each
    // packing its own strips of B while they are hot. Any other problem gets pack tasks for its
    // B (once per distinct B) followed by compute tasks (row blocks x strip ranges). Either way
    // there are enough tasks that every thread gets several (dynamic scheduling balances).
    let macs = 0;
    for (const p of problems) if (p.k > 0) macs += p.m * p.n * p.k;
    const threads = macs >= PARALLEL_MIN_MACS ? this.threads : 1;
    const shared = new Uint8Array(P);
    for (let i = 0; i < P; i++) if (problems[i].bOwner !== i) shared[problems[i].bOwner] = 1;
    const tasks: number[] = [];
    const npack = new Int32Array(P);
    const bpOff = new Float64Array(P);
    let bpFloats = 0;
    for (let i = 0; i < P; i++) {
      const p = problems[i];
      if (p.k === 0 || p.m === 0 || p.n === 0) continue;
      const strips = Math.ceil(p.n / NR);
      const work = p.m * p.n * p.k;
      if (p.bOwner === i && !shared[i] && p.m <= FUSE_MAX_ROWS) {
        const want = threads > 1 ? Math.ceil((FUSED_TASKS_PER_THREAD * threads * work) / macs) : 1;
        const nsMin = Math.min(strips, NC_STRIPS, Math.ceil(FUSED_MIN_MACS / (NR * p.m * p.k)));
        let ns = Math.min(NC_STRIPS, Math.max(nsMin, Math.ceil(strips / want)));
        ns = Math.ceil(strips / Math.ceil(strips / ns));
        for (let s0 = 0; s0 < strips; s0 += ns) tasks.push(T_FUSED, i, 0, p.m, s0, Math.min(ns, strips - s0), i, 0);
        continue;
      }
      if (p.bOwner === i) {
        bpOff[i] = bpFloats;
        bpFloats += strips * NR * p.k;
        const per = Math.max(1, Math.floor(PACK_CHUNK / (p.k * NR)));
        for (let s = 0; s < strips; s += per) {
          tasks.push(T_PACK, i, 0, 0, s, Math.min(per, strips - s), i, 0);
          npack[i]++;
        }
      } else {
        bpOff[i] = bpOff[p.bOwner];
      }
      const rowTasks = Math.ceil(p.m / MC);
      let colTasks = 1;
      if (threads > 1) {
        const want = Math.ceil((4 * threads * work) / macs);
        colTasks = Math.max(1, Math.min(Math.ceil(want / rowTasks), Math.ceil(strips / 4)));
      }
      const rowsPer = align(Math.ceil(p.m / rowTasks), MR);
      const stripsPer = Math.ceil(strips / colTasks);
      for (let r0 = 0; r0 < p.m; r0 += rowsPer) {
        for (let s0 = 0; s0 < strips; s0 += stripsPer) {
          tasks.push(T_COMPUTE, i, r0, Math.min(rowsPer, p.m - r0), s0, Math.min(stripsPer, strips - s0), p.bOwner, 0);
        }
      }
    }
    const nTasks = tasks.length / TASK_WORDS;

    // Layout (bytes, 64-aligned regions).
    let top = ARENA;
    const take = (bytes: number): number => {
      const at = top;
      top = align(top + bytes, 64);
      return at;
    };
    const descAt = take(P * DESC_WORDS * 4);
    const taskAt = take(tasks.length * 4);
    const aAt = take(aLen * 4);
    const bAt = take(bLen * 4);
    const cAt = take(cLen * 4);
    const bpAt = take(bpFloats * 4);
    const scratchAt = take(threads * SCRATCH_STRIDE);
    this.ensure(top, op);
    const f32 = this.f32;
    const i32 = this.i32;

    for (let i = 0; i < P; i++) {
      const p = problems[i];
      const d = (descAt >> 2) + i * DESC_WORDS;
      i32[d + D.A] = aAt + p.a * 4;
      i32[d + D.ARS] = p.aRs;
      i32[d + D.ACS] = p.aCs;
      i32[d + D.B] = bAt + p.b * 4;
      i32[d + D.BRS] = p.bRs;
      i32[d + D.BCS] = p.bCs;
      i32[d + D.BP] = bpAt + bpOff[i] * 4;
      i32[d + D.C] = cAt + p.c * 4;
      i32[d + D.LDC] = p.n;
      i32[d + D.M] = p.m;
      i32[d + D.N] = p.n;
      i32[d + D.K] = p.k;
      i32[d + D.BETA] = p.beta ? 1 : 0;
      // Even slices: k = 300 runs as 2 x 152 rather than 256 + 44.
      i32[d + D.KC] = p.k > 0 ? align(Math.ceil(p.k / Math.ceil(p.k / KC_MAX)), 4) : 0;
      i32[d + D.READY] = 0;
      i32[d + D.NPACK] = npack[i];
      // An empty inner dimension still defines C: zeros (or C unchanged when accumulating).
      if (p.k === 0 && !p.beta) f32.fill(0, (cAt >> 2) + p.c, (cAt >> 2) + p.c + p.m * p.n);
    }
    i32.set(tasks, taskAt >> 2);

    const c = CTRL >> 2;
    i32[c + C_DESC / 4] = descAt;
    i32[c + C_NTASK / 4] = nTasks;
    i32[c + C_TASK / 4] = taskAt;
    i32[c + C_SCRATCH / 4] = scratchAt;
    i32[c + C_SCRATCH_STRIDE / 4] = SCRATCH_STRIDE;
    Atomics.store(i32, c + C_NEXT / 4, 0);
    Atomics.store(i32, c + C_COPIED / 4, 0);

    // Copies the inputs of each problem (every row of A, B and C belongs to one), in problem
    // order, publishing progress: in a parallel call the workers already run meanwhile, and a
    // task waits only until its own problem's inputs are in place.
    const copyInputs = (): void => {
      let pending = 0;
      for (let i = 0; i < P; i++) {
        const p = problems[i];
        pending += copyRange(f32, aAt, a, p.a, p.m * p.k);
        if (p.bOwner === i) pending += copyRange(f32, bAt, b, p.b, p.k * p.n);
        if (loadC) pending += copyRange(f32, cAt, out, p.c, p.m * p.n);
        if (pending >= COPY_STEP || i === P - 1) {
          Atomics.store(i32, c + C_COPIED / 4, i + 1);
          Atomics.notify(i32, c + C_COPIED / 4);
          pending = 0;
        }
      }
    };

    if (threads > 1 && nTasks > 1) {
      this.runParallel(op, copyInputs);
    } else {
      copyInputs();
      if (nTasks > 0) this.run(CTRL, 0);
    }

    const res = f32.subarray(cAt >> 2, (cAt >> 2) + cLen);
    out.set(res);
  }

  /** Wakes the workers, runs `produce` (the input copy), then works on the job until it is done. */
  private runParallel(op: string, produce: () => void): void {
    const s = this.sync;
    const workers = this.workers.length;
    Atomics.store(s, S_DONE, 0);
    Atomics.store(s, S_ERROR, 0);
    Atomics.add(s, S_GEN, 1);
    Atomics.notify(s, S_GEN);
    let err: unknown = null;
    try {
      produce();
    } catch (e) {
      err = e;
      // Release the workers waiting for inputs; the result is discarded.
      Atomics.store(this.i32, (CTRL + C_COPIED) >> 2, 0x7fffffff);
      Atomics.notify(this.i32, (CTRL + C_COPIED) >> 2);
    }
    try {
      this.run(CTRL, 0);
    } catch (e) {
      err ??= e;
    }
    // Watchdog: a worker that died (e.g. its script vanished) would otherwise block us forever.
    // After the main thread has drained the queue, workers only finish their current task.
    let last = Atomics.load(s, S_DONE);
    let since = performance.now();
    for (;;) {
      const done = Atomics.load(s, S_DONE);
      if (done >= workers) break;
      if (done !== last) {
        last = done;
        since = performance.now();
      }
      if (Atomics.wait(s, S_DONE, done, 1000) === 'timed-out' && performance.now() - since > WATCHDOG_MS) {
        this.broken = `wasm ${op}: ${workers - done} of ${workers} worker threads stopped responding for ${WATCHDOG_MS / 1000} s`;
        throw new Error(this.broken);
      }
    }
    if (err) throw err;
    const bad = Atomics.load(s, S_ERROR);
    if (bad !== 0) throw new Error(`wasm ${op}: kernel failed in worker ${bad}`);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.sync, S_STOP, 1);
    Atomics.add(this.sync, S_GEN, 1);
    Atomics.notify(this.sync, S_GEN);
    for (const w of this.workers) void w.terminate();
  }
}

/** Copies src[from, from + len) to the same offset in the region at byte address `at`; returns len. */
function copyRange(f32: Float32Array, at: number, src: Float32Array, from: number, len: number): number {
  if (len > 0) f32.set(src.subarray(from, from + len), (at >> 2) + from);
  return len;
}

function checkLen(op: string, name: string, arr: Float32Array, need: number, dims: string): void {
  if (!(arr instanceof Float32Array)) throw new Error(`wasm ${op}: ${name} must be a Float32Array (${dims})`);
  if (arr.length < need) {
    throw new Error(`wasm ${op}: ${name} has ${arr.length} elements, needs at least ${need} (${dims})`);
  }
}

function offsets(op: string, sizes: Int32Array): Float64Array {
  const off = new Float64Array(sizes.length + 1);
  for (let e = 0; e < sizes.length; e++) {
    if (!(sizes[e] >= 0)) throw new Error(`wasm ${op}: group ${e} has negative size ${sizes[e]}`);
    off[e + 1] = off[e] + sizes[e];
  }
  return off;
}

/** How long the main thread waits for a worker that makes no progress before giving up. */
const WATCHDOG_MS = 60_000;

/** Compiles the kernels; prefers the relaxed-SIMD (FMA) build where the engine validates it by default. */
export function compileKernels(relaxedBytes: Uint8Array, load: () => Uint8Array): { module: WasmModule; relaxed: boolean } {
  if (WA.validate(relaxedBytes)) return { module: new WA.Module(relaxedBytes), relaxed: true };
  return { module: new WA.Module(load()), relaxed: false };
}

/** The memory every thread of one backend instantiates the kernels over (shared unless the single-threaded fallback asks otherwise). */
export function newKernelMemory(shared = true): WasmMemory {
  return new WA.Memory({ initial: 32, maximum: 65536, shared });
}

export function checkThreads(threads: number, given: unknown): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw new Error(`createWasmBackend: threads must be an integer in [1, 256], got ${given}`);
  }
}
