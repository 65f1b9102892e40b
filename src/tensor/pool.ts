/**
 * A size-keyed free list of Float32Arrays for op-internal scratch (the MoE dispatch
 * intermediates: tens of MB per layer and step). Freshly allocated arrays that large are
 * mmapped by the allocator, so each step paid their page faults and zeroing (hundreds of ms of
 * system time at E=64) plus GC pressure; reusing them costs nothing.
 *
 * Only an op that owns an array for its whole life may release it: never an op's output or a
 * gradient handed to accumulateGrad (someone else may keep those).
 */

const free = new Map<number, Float32Array[]>();
let pooledBytes = 0;
/** Retained bytes beyond which released arrays are left to the GC. */
const MAX_POOLED_BYTES = 1 << 30;

/** A Float32Array of length n with unspecified contents (from the pool when one is free). */
export function acquireBuffer(n: number): Float32Array {
  const list = free.get(n);
  const buf = list?.pop();
  if (buf) {
    pooledBytes -= buf.byteLength;
    return buf;
  }
  return new Float32Array(n);
}

/** Hand a scratch array back; the caller must not touch it afterwards. */
export function releaseBuffer(buf: Float32Array): void {
  if (buf.length === 0 || buf.byteOffset !== 0 || buf.length !== buf.buffer.byteLength >> 2) return;
  if (pooledBytes + buf.byteLength > MAX_POOLED_BYTES) return;
  let list = free.get(buf.length);
  if (!list) free.set(buf.length, (list = []));
  list.push(buf);
  pooledBytes += buf.byteLength;
}

/** Drop every pooled array (e.g. after a large model is done, to return the memory). */
export function clearBufferPool(): void {
  free.clear();
  pooledBytes = 0;
}
