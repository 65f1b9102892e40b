/**
 * Dropless dispatch (Gale et al. 2022 "MegaBlocks: Efficient Sparse Training with
 * Mixture-of-Experts"): every assignment is computed. A stable counting sort orders the
 * assignments by expert, one gather lays the token rows out in that order, the expert bank runs
 * one grouped matmul per projection over all experts, and one weighted scatter-add combines the
 * results back into token order. No per-expert loop of small ops, no padding, no drops.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { FusedSharedSwiglu } from '../../tensor/ops/moe_ops.js';
import { gatherRows, combineRows, scatterRows } from '../../tensor/index.js';
import type { ExpertBank, SparseRouting } from '../types.js';
import { dispatchRegistry, defineDispatch } from './registry.js';

/** Assignments grouped by expert. */
export interface ExpertSort {
  /** Assignment ids in expert order (stable: original order within an expert) [A'] . */
  order: Int32Array;
  /** Token row of each entry of `order` [A']. */
  rows: Int32Array;
  /** Assignments per expert [E]. */
  sizes: Int32Array;
  /** Start of each expert's group in `order` [E + 1]. */
  offsets: Int32Array;
}

/** Check the shape of a sparse routing record against the tokens and experts it claims to route. */
export function checkSparseRouting(routing: SparseRouting, tokens: number, numExperts: number, op: string): void {
  const A = routing.tokenIdx.length;
  if (routing.expertIdx.length !== A) throw new Error(`${op}: routing has ${A} token indices but ${routing.expertIdx.length} expert indices`);
  if (routing.weights.size !== A) throw new Error(`${op}: routing has ${A} assignments but ${routing.weights.size} weights`);
  if (routing.priority && routing.priority.length !== A) throw new Error(`${op}: routing has ${A} assignments but ${routing.priority.length} priorities`);
  const ti = routing.tokenIdx;
  const ei = routing.expertIdx;
  for (let i = 0; i < A; i++) {
    const t = ti[i];
    if (!(t >= 0 && t < tokens)) throw new Error(`${op}: assignment ${i} routes token ${t}, out of range [0, ${tokens})`);
    const e = ei[i];
    if (!(e >= 0 && e < numExperts)) throw new Error(`${op}: assignment ${i} routes to expert ${e}, out of range [0, ${numExperts})`);
  }
}

/**
 * Stable counting sort of the assignments by expert: O(A + E), no comparisons. With `keep`,
 * assignments where keep[i] == 0 are left out (capacity drops).
 */
export function sortByExpert(tokenIdx: Int32Array, expertIdx: Int32Array, numExperts: number, keep?: Uint8Array): ExpertSort {
  const A = expertIdx.length;
  const sizes = new Int32Array(numExperts);
  for (let i = 0; i < A; i++) {
    if (keep && keep[i] === 0) continue;
    const e = expertIdx[i];
    if (!(e >= 0 && e < numExperts)) throw new Error(`sortByExpert: assignment ${i} routes to expert ${e}, out of range [0, ${numExperts})`);
    sizes[e]++;
  }
  const offsets = new Int32Array(numExperts + 1);
  for (let e = 0; e < numExperts; e++) offsets[e + 1] = offsets[e] + sizes[e];
  const n = offsets[numExperts];
  const cursor = offsets.slice(0, numExperts);
  const order = new Int32Array(n);
  const rows = new Int32Array(n);
  for (let i = 0; i < A; i++) {
    if (keep && keep[i] === 0) continue;
    const p = cursor[expertIdx[i]]++;
    order[p] = i;
    rows[p] = tokenIdx[i];
  }
  return { order, rows, sizes, offsets };
}

/** A bank that can apply per-row combine weights inside the experts (FFNExperts does). */
export interface WeightedExpertBank extends ExpertBank {
  forwardGroupedWeighted(x: Tensor, sizes: Int32Array, weights: Tensor, weightIdx: Int32Array): Tensor;
}

function hasWeighted(b: ExpertBank): b is WeightedExpertBank {
  return typeof (b as Partial<WeightedExpertBank>).forwardGroupedWeighted === 'function';
}

/** A bank that does the gather, the weighted experts and the scatter itself (FFNExperts does). */
export interface ScatteringExpertBank extends ExpertBank {
  forwardScattered(x: Tensor, rows: Int32Array, sizes: Int32Array, weights: Tensor, weightIdx: Int32Array, shared?: FusedSharedSwiglu): Tensor;
}

function hasScattered(b: ExpertBank): b is ScatteringExpertBank {
  return typeof (b as Partial<ScatteringExpertBank>).forwardScattered === 'function';
}

/**
 * Gather rows in expert order, run the experts, combine with the routing weights. With `shared`
 * (from SharedExpertBank.fusedWith) a scattering bank also adds the shared experts' output;
 * `sharedIncluded` says whether it did (if not, the caller adds them).
 */
export function runSorted(x: Tensor, sorted: ExpertSort, weights: Tensor, experts: ExpertBank, shared?: FusedSharedSwiglu): { y: Tensor; sharedIncluded: boolean } {
  const T = x.shape[0];
  // fused: no [A, d] intermediate leaves the bank, so it can pool them
  if (hasScattered(experts)) return { y: experts.forwardScattered(x, sorted.rows, sorted.sizes, weights, sorted.order, shared), sharedIncluded: shared !== undefined };
  return { y: runSortedUnfused(x, sorted, weights, experts, T), sharedIncluded: false };
}

function runSortedUnfused(x: Tensor, sorted: ExpertSort, weights: Tensor, experts: ExpertBank, T: number): Tensor {
  const xs = gatherRows(x, sorted.rows);
  if (hasWeighted(experts)) {
    // weights applied inside the experts: the combine is a plain scatter-add
    return scatterRows(experts.forwardGroupedWeighted(xs, sorted.sizes, weights, sorted.order), sorted.rows, T);
  }
  const ys = experts.forwardGrouped(xs, sorted.sizes);
  return combineRows(ys, sorted.rows, T, weights, sorted.order);
}

export interface DispatchResult {
  /** [T, d]: sum over a token's (kept) assignments of weight * expert(x). */
  y: Tensor;
  /** Per assignment, 1 if computed and 0 if dropped (capacity dispatch only). */
  kept?: Uint8Array;
  /** Assignments computed per expert. */
  sizes: Int32Array;
  /** True when y already includes the shared experts passed to run (fused into the expert op). */
  sharedIncluded?: boolean;
}

export function droplessDispatch(x: Tensor, routing: SparseRouting, experts: ExpertBank, shared?: FusedSharedSwiglu): DispatchResult {
  if (x.ndim !== 2 || x.shape[1] !== experts.dModel) throw new Error(`droplessDispatch: x must be [T, ${experts.dModel}], got [${x.shape.join(', ')}]`);
  checkSparseRouting(routing, x.shape[0], experts.numExperts, 'droplessDispatch');
  const sorted = sortByExpert(routing.tokenIdx, routing.expertIdx, experts.numExperts);
  const r = runSorted(x, sorted, routing.weights, experts, shared);
  return { y: r.y, sizes: sorted.sizes, sharedIncluded: r.sharedIncluded };
}

dispatchRegistry.register(
  defineDispatch({
    name: 'dropless',
    summary: 'every assignment computed: sort by expert, one grouped matmul per projection, weighted scatter-add',
    paper: { authors: 'Gale et al.', title: 'MegaBlocks: Efficient Sparse Training with Mixture-of-Experts', year: 2022 },
    routing: 'sparse',
    isDefault: true,
    options: {},
    run: (x, routing, experts, _o, shared) => droplessDispatch(x, routing as SparseRouting, experts, shared),
  }),
);
