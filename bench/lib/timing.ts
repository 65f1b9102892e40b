/**
 * Timing helper: warm up, then repeat until both a minimum number of repetitions and a minimum
 * total time are reached (capped by maxReps / maxTimeMs so one slow case cannot eat the budget).
 * We report the median (robust to the noise of a shared machine) and the best (closest to what
 * the hardware can do); the mean is kept in the JSON only.
 */
import { performance } from 'node:perf_hooks';

export interface MeasureOptions {
  /** Untimed calls first (JIT, lazy compilation, worker start, page faults). Default 1. */
  warmup?: number;
  /** Keep repeating until this much timed work has run (ms). Default 1000. */
  minTimeMs?: number;
  /** At least this many timed calls. Default 3. */
  minReps?: number;
  /** At most this many timed calls. Default 1000. */
  maxReps?: number;
  /** Stop once this much timed work has run, even below minReps (but after at least one). Default 30000. */
  maxTimeMs?: number;
}

export interface Timing {
  reps: number;
  medianMs: number;
  bestMs: number;
  meanMs: number;
  totalMs: number;
  samplesMs: number[];
}

export type Benchable = () => unknown;

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function';
}

/** Sorts a copy; empty input is a programming error, not a silent NaN. */
export function median(samples: readonly number[]): number {
  if (samples.length === 0) throw new Error('median: no samples');
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function summarize(samplesMs: readonly number[]): Timing {
  if (samplesMs.length === 0) throw new Error('summarize: no samples');
  const totalMs = samplesMs.reduce((a, b) => a + b, 0);
  return {
    reps: samplesMs.length,
    medianMs: median(samplesMs),
    bestMs: Math.min(...samplesMs),
    meanMs: totalMs / samplesMs.length,
    totalMs,
    samplesMs: [...samplesMs],
  };
}

export function resolveMeasureOptions(opts: MeasureOptions = {}): Required<MeasureOptions> {
  const r = {
    warmup: opts.warmup ?? 1,
    minTimeMs: opts.minTimeMs ?? 1000,
    minReps: opts.minReps ?? 3,
    maxReps: opts.maxReps ?? 1000,
    maxTimeMs: opts.maxTimeMs ?? 30000,
  };
  for (const [k, v] of Object.entries(r)) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`measure: ${k} must be a non-negative number, got ${v}`);
  }
  if (r.maxReps < 1) throw new Error(`measure: maxReps must be >= 1, got ${r.maxReps}`);
  return r;
}

/**
 * Time `fn` (sync or async; an async result is awaited inside the timed region, so "done" means
 * the promise settled). The calls' results are dropped only after timing each one.
 */
export async function measure(fn: Benchable, opts: MeasureOptions = {}): Promise<Timing> {
  const o = resolveMeasureOptions(opts);
  for (let i = 0; i < o.warmup; i++) {
    const r = fn();
    if (isThenable(r)) await r;
  }
  const samples: number[] = [];
  let total = 0;
  while (samples.length < o.maxReps) {
    const t0 = performance.now();
    const r = fn();
    if (isThenable(r)) await r;
    const dt = performance.now() - t0;
    samples.push(dt);
    total += dt;
    if (total >= o.maxTimeMs) break;
    if (samples.length >= o.minReps && total >= o.minTimeMs) break;
  }
  return summarize(samples);
}

/** Floating-point operations of C[m x n] = A[m x k] x B[k x n] (one multiply + one add each). */
export function matmulFlops(m: number, k: number, n: number, batch = 1): number {
  return 2 * m * k * n * batch;
}

/** GFLOP/s from a flop count and a time in milliseconds (flops / (ms * 1e6)). */
export function gflops(flops: number, ms: number): number {
  if (!(ms > 0)) throw new Error(`gflops: time must be positive, got ${ms} ms`);
  return flops / (ms * 1e6);
}
