/**
 * The `native` backend (Node only): matmul, batched matmul and grouped matmul run by
 * onnxruntime-node's bundled CPU kernels (MLAS GEMM), driven synchronously through its binding.
 * Inputs and outputs are passed as views over the caller's Float32Arrays: ORT reads and writes
 * them in place, so no data is copied on the way in or out.
 */
import { availableParallelism } from 'node:os';
import type { Backend, GroupedMatmulOptions, MatmulOptions } from '../../tensor/backend.js';
import { groupOffsets, refGroupedMatmul, refGroupedMatmulTN, refMatmul } from '../js.js';
import { batchedModel, gemmModel, groupedModel } from './graphs.js';
import { createSession, f32, loadOrtBinding, type BindingSession, type OrtBinding, type OrtTensorLike } from './ort.js';

export interface NativeBackendOptions {
  /** Intra-op threads per call (default os.availableParallelism()). */
  threads?: number;
  /**
   * Let ORT's pool threads spin after parallel sections (default false: every cached session has
   * its own pool, so a spinning worker of one session steals a core from the next call on another,
   * and on a shared machine spinning halved median throughput; see docs/kernels-native.md).
   */
  spinning?: boolean;
  /**
   * Products with fewer flops (2*m*k*n summed over the batch/groups) run in the js reference,
   * since an ORT call costs ~12-20 us regardless of size (default 12288, about an 18^3 product;
   * measured crossover of the js reference vs one ORT call on 1 thread).
   */
  minFlops?: number;
}

const DEFAULT_MIN_FLOPS = 12288;

function checkDims(op: string, dims: Record<string, number>): void {
  for (const [name, d] of Object.entries(dims)) {
    if (!Number.isSafeInteger(d) || d < 0) {
      const all = Object.entries(dims)
        .map(([k, x]) => `${k}=${x}`)
        .join(', ');
      throw new Error(`native ${op}: ${name} must be a non-negative integer (${all})`);
    }
  }
}

function checkArray(op: string, what: string, arr: unknown, need: number, detail: string): asserts arr is Float32Array {
  if (!(arr instanceof Float32Array)) throw new Error(`native ${op}: ${what} must be a Float32Array`);
  if (arr.length < need) {
    throw new Error(`native ${op}: ${what} has ${arr.length} elements, needs at least ${need} (${detail})`);
  }
}

/** A view of exactly `len` elements, avoiding a new object when the array already fits. */
function exact(arr: Float32Array, len: number): Float32Array {
  return arr.length === len ? arr : arr.subarray(0, len);
}

function balanced(sizes: Int32Array): boolean {
  for (let e = 1; e < sizes.length; e++) if (sizes[e] !== sizes[0]) return false;
  return sizes.length > 1;
}

class NativeBackend implements Backend {
  readonly name = 'native' as const;
  readonly threads: number;
  private readonly spinning: boolean;
  private readonly minFlops: number;
  private readonly sessions = new Map<string, BindingSession>();
  private disposed = false;

  constructor(
    private readonly binding: OrtBinding,
    opts: NativeBackendOptions,
  ) {
    this.threads = opts.threads ?? availableParallelism();
    this.spinning = opts.spinning ?? false;
    this.minFlops = opts.minFlops ?? DEFAULT_MIN_FLOPS;
  }

  private session(key: string, build: () => Uint8Array): BindingSession {
    if (this.disposed) throw new Error('native backend: used after dispose()');
    let s = this.sessions.get(key);
    if (!s) {
      s = createSession(this.binding, build(), { threads: this.threads, spinning: this.spinning });
      this.sessions.set(key, s);
    }
    return s;
  }

  matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts: MatmulOptions = {}): Float32Array {
    const batch = opts.batch ?? 1;
    const { transA = false, transB = false, broadcastB = false, accumulate = false } = opts;
    checkDims('matmul', { batch, m, k, n });
    const dims = `batch=${batch}, m=${m}, k=${k}, n=${n}${transA ? ', transA' : ''}${transB ? ', transB' : ''}${broadcastB ? ', broadcastB' : ''}`;
    const aLen = batch * m * k;
    const bLen = (broadcastB ? 1 : batch) * k * n;
    const cLen = batch * m * n;
    checkArray('matmul', 'A', a, aLen, dims);
    checkArray('matmul', 'B', b, bLen, dims);
    if (opts.out !== undefined) checkArray('matmul', 'out', opts.out, cLen, dims);
    const c = opts.out ?? new Float32Array(cLen);
    // Like the reference, accumulate without out just accumulates into fresh zeros.
    const acc = accumulate && opts.out !== undefined;
    if (cLen === 0) return c;
    if (k === 0) {
      if (!acc) c.fill(0, 0, cLen);
      return c;
    }
    if (2 * batch * m * k * n < this.minFlops) return refMatmul(a, b, m, k, n, opts);

    const av = exact(a, aLen);
    const bv = exact(b, bLen);
    const cv = exact(c, cLen);
    // A broadcast B with A untransposed is one tall GEMM: [batch*m x k] x op(B).
    const flat = batch === 1 || (broadcastB && !transA);
    if (flat) {
      const rows = batch * m;
      const s = this.session(`gemm${+transA}${+transB}${+acc}`, () => gemmModel(transA, transB, acc));
      const feeds: Record<string, OrtTensorLike> = {
        A: f32(av, transA ? [k, rows] : [rows, k]),
        B: f32(bv, transB ? [n, k] : [k, n]),
      };
      if (acc) feeds.C = f32(cv, [rows, n]);
      s.run(feeds, { Y: f32(cv, [rows, n]) });
      return c;
    }
    const s = this.session(`batched${+transA}${+transB}${+broadcastB}${+acc}`, () => batchedModel(transA, transB, broadcastB, acc));
    const bDims = transB ? [n, k] : [k, n];
    const feeds: Record<string, OrtTensorLike> = {
      A: f32(av, transA ? [batch, k, m] : [batch, m, k]),
      B: f32(bv, broadcastB ? bDims : [batch, ...bDims]),
    };
    if (acc) feeds.C = f32(cv, [batch, m, n]);
    s.run(feeds, { Y: f32(cv, [batch, m, n]) });
    return c;
  }

  groupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB = false, opts: GroupedMatmulOptions = {}): Float32Array {
    const op = 'groupedMatmul';
    const off = this.checkGrouped(op, sizes, k, n);
    const E = sizes.length;
    const rows = off[E];
    const dims = `groups=${E}, rows=${rows}, k=${k}, n=${n}${transB ? ', transB' : ''}`;
    checkArray(op, 'A', a, rows * k, dims);
    checkArray(op, 'W', w, E * k * n, dims);
    if (opts.out !== undefined) checkArray(op, 'out', opts.out, rows * n, dims);
    const c = opts.out ?? new Float32Array(rows * n);
    const acc = (opts.accumulate ?? false) && opts.out !== undefined;
    if (rows === 0 || n === 0) return c;
    if (k === 0) {
      if (!acc) c.fill(0, 0, rows * n);
      return c;
    }
    if (2 * rows * k * n < this.minFlops) return refGroupedMatmul(a, w, sizes, k, n, transB, opts);
    if (balanced(sizes)) {
      // Equal groups are one batched product [E x s x k] x [E x k x n]: a single MLAS batch call
      // spreads the whole job over the threads instead of splitting each small GEMM.
      const s = this.session(`batched0${+transB}0${+acc}`, () => batchedModel(false, transB, false, acc));
      const g = sizes[0];
      const cv = f32(exact(c, rows * n), [E, g, n]);
      const feeds: Record<string, OrtTensorLike> = { A: f32(exact(a, rows * k), [E, g, k]), B: f32(exact(w, E * k * n), [E, ...(transB ? [n, k] : [k, n])]) };
      if (acc) feeds.C = cv;
      s.run(feeds, { Y: cv });
      return c;
    }
    const kind = transB ? 'nt' : 'nn';
    const s = this.session(`grouped_${kind}${acc ? '_acc' : ''}_${E}`, () => groupedModel(E, kind, acc));
    const feeds: Record<string, OrtTensorLike> = {};
    const fetches: Record<string, OrtTensorLike> = {};
    const wDims = transB ? [n, k] : [k, n];
    for (let e = 0; e < E; e++) {
      const r0 = off[e];
      const r1 = off[e + 1];
      feeds[`A${e}`] = f32(a.subarray(r0 * k, r1 * k), [r1 - r0, k]);
      feeds[`B${e}`] = f32(w.subarray(e * k * n, (e + 1) * k * n), wDims);
      const y = f32(c.subarray(r0 * n, r1 * n), [r1 - r0, n]);
      // accumulating: C_e is fed and Y_e fetched into the same memory (see gemmModel)
      if (acc) feeds[`C${e}`] = y;
      fetches[`Y${e}`] = y;
    }
    s.run(feeds, fetches);
    return c;
  }

  groupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array {
    const op = 'groupedMatmulTN';
    const off = this.checkGrouped(op, sizes, k, n);
    const E = sizes.length;
    const rows = off[E];
    const dims = `groups=${E}, rows=${rows}, k=${k}, n=${n}`;
    checkArray(op, 'A', a, rows * k, dims);
    checkArray(op, 'G', g, rows * n, dims);
    const out = new Float32Array(E * k * n);
    if (rows === 0 || out.length === 0) return out;
    if (2 * rows * k * n < this.minFlops) return refGroupedMatmulTN(a, g, sizes, k, n);
    if (balanced(sizes)) {
      // A viewed as [E x s x k] with op(A) = A^T per batch: out[e] = A_e^T G_e in one batch call.
      const s = this.session('batched1000', () => batchedModel(true, false, false, false));
      const gs = sizes[0];
      s.run({ A: f32(exact(a, rows * k), [E, gs, k]), B: f32(exact(g, rows * n), [E, gs, n]) }, { Y: f32(out, [E, k, n]) });
      return out;
    }
    const s = this.session(`grouped_tn_${E}`, () => groupedModel(E, 'tn'));
    const feeds: Record<string, OrtTensorLike> = {};
    const fetches: Record<string, OrtTensorLike> = {};
    for (let e = 0; e < E; e++) {
      const r0 = off[e];
      const r1 = off[e + 1];
      // An empty group is fed as [0 x k]: Gemm with an empty inner dimension writes zeros.
      feeds[`A${e}`] = f32(a.subarray(r0 * k, r1 * k), [r1 - r0, k]);
      feeds[`B${e}`] = f32(g.subarray(r0 * n, r1 * n), [r1 - r0, n]);
      fetches[`Y${e}`] = f32(out.subarray(e * k * n, (e + 1) * k * n), [k, n]);
    }
    s.run(feeds, fetches);
    return out;
  }

  /** Runs a 1x2x1 product through ORT (bypassing the small-size shortcut). */
  probe(): void {
    const y = new Float32Array(1);
    this.session('gemm000', () => gemmModel(false, false, false)).run({ A: f32(new Float32Array([1, 2]), [1, 2]), B: f32(new Float32Array([3, 4]), [2, 1]) }, { Y: f32(y, [1, 1]) });
    if (y[0] !== 11) throw new Error(`probe product gave ${y[0]}, expected 11`);
  }

  private checkGrouped(op: string, sizes: Int32Array, k: number, n: number): Int32Array {
    if (!(sizes instanceof Int32Array)) throw new Error(`native ${op}: sizes must be an Int32Array`);
    if (sizes.length === 0) throw new Error(`native ${op}: sizes is empty (need at least one group; k=${k}, n=${n})`);
    checkDims(op, { k, n });
    for (let e = 0; e < sizes.length; e++) {
      if (sizes[e] < 0) throw new Error(`native ${op}: group ${e} has negative size ${sizes[e]} (k=${k}, n=${n})`);
    }
    return groupOffsets(sizes);
  }

  dispose(): void {
    for (const s of this.sessions.values()) s.dispose();
    this.sessions.clear();
    this.disposed = true;
  }
}

/**
 * Creates the native backend; throws (so a selector can fall back to wasm/js) when
 * onnxruntime-node's binary can't be loaded on this platform.
 */
export async function createNativeBackend(opts: NativeBackendOptions = {}): Promise<Backend> {
  // same bound as the wasm backend: ORT would try to start every thread (100000 hangs the machine)
  if (opts.threads !== undefined && (!Number.isSafeInteger(opts.threads) || opts.threads < 1 || opts.threads > 256)) {
    throw new Error(`native backend: threads must be an integer in [1, 256], got ${opts.threads}`);
  }
  if (opts.minFlops !== undefined && !(opts.minFlops >= 0)) {
    throw new Error(`native backend: minFlops must be >= 0, got ${opts.minFlops}`);
  }
  const binding = loadOrtBinding();
  const backend = new NativeBackend(binding, opts);
  // Fail here rather than on the first kernel call if the binary loads but can't run a graph.
  try {
    backend.probe();
  } catch (e) {
    backend.dispose();
    throw new Error(`native backend: onnxruntime-node loaded but failed a probe GEMM: ${(e as Error).message}`, { cause: e });
  }
  return backend;
}
