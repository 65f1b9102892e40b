/**
 * The kernel interface every backend (js, wasm, native, later webgpu) implements.
 *
 * Kernels work on raw row-major float32 arrays so they know nothing of autograd; the tensor
 * layer calls them through `getBackend()`. The tensor layer owns this interface and the
 * `kernels` layer registers implementations (dependency inversion keeps `tensor` at the bottom).
 * All calls are synchronous: autograd stays simple, and Node's main thread may block on workers.
 */

/** Options for a (batched) matrix product C = op(A) x op(B). */
export interface MatmulOptions {
  /** A is stored [k x m] (so op(A) = A^T). */
  transA?: boolean;
  /** B is stored [n x k] (so op(B) = B^T). */
  transB?: boolean;
  /** Number of independent products; A, B, C are stacked [batch x ...] (default 1). */
  batch?: number;
  /** Stride 0 for B: the same B is used for every batch (e.g. a shared weight). */
  broadcastB?: boolean;
  /** Write into this array (length batch*m*n) instead of allocating. */
  out?: Float32Array;
  /** With `out`: C += op(A) x op(B) instead of overwrite. */
  accumulate?: boolean;
}

/** Options for groupedMatmul. */
export interface GroupedMatmulOptions {
  /** Write into this array (length sum(sizes)*n) instead of allocating. */
  out?: Float32Array;
  /** With `out`: C += A_e x op(W_e) instead of overwrite (no separate add pass over C). */
  accumulate?: boolean;
}

export interface Backend {
  readonly name: 'js' | 'wasm' | 'native' | 'webgpu';
  /** Worker threads used by the heavy kernels. */
  readonly threads: number;

  /** C[batch][m x n] = op(A)[m x k] x op(B)[k x n]. */
  matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts?: MatmulOptions): Float32Array;

  /**
   * Grouped matmul (the MoE expert computation): rows of A are grouped contiguously,
   * group e has `sizes[e]` rows (may be 0), and C_e = A_e x op(W_e).
   * a: [sum(sizes) x k]; w: [E x k x n] (or [E x n x k] with transB); returns [sum(sizes) x n]
   * (`opts.out` when given).
   */
  groupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB?: boolean, opts?: GroupedMatmulOptions): Float32Array;

  /**
   * Per-group A_e^T x G_e (the weight gradient of groupedMatmul).
   * a: [sum(sizes) x k]; g: [sum(sizes) x n]; returns [E x k x n].
   */
  groupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array;

  /** Release workers and sessions (the process may exit afterwards). */
  dispose(): void;
}

let current: Backend | null = null;

export function setBackend(b: Backend): void {
  current = b;
}

export function getBackend(): Backend {
  if (!current) {
    throw new Error('moe-ts: no kernel backend registered; import "moe-ts" (or src/kernels/index.js) before using tensors');
  }
  return current;
}
