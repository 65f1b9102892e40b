/**
 * Capacity-limited dispatch (Fedus et al. 2021 "Switch Transformers"; Lepikhin et al. 2020
 * "GShard"): each expert computes at most capacity = ceil(capacityFactor * T * k / E)
 * assignments, k being the average assignments per token. The overflow is dropped in the
 * configured order (DropOrder: by priority, default, or by sequence position); a dropped
 * assignment contributes nothing here, so the token passes through on the residual path.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { ExpertBank, SparseRouting } from '../types.js';
import { positive, z } from '../../tensor/validate.js';
import type { FusedSharedSwiglu } from '../../tensor/ops/moe_ops.js';
import { checkSparseRouting, runSorted, sortByExpert, type DispatchResult } from './dropless.js';
import { dispatchRegistry, defineDispatch } from './registry.js';

/** ceil(capacityFactor * assignments / numExperts) (= capacityFactor * T * k / E). */
export function expertCapacity(capacityFactor: number, assignments: number, numExperts: number): number {
  if (!Number.isFinite(capacityFactor) || capacityFactor <= 0) throw new Error(`expertCapacity: capacityFactor must be a positive finite number, got ${capacityFactor}`);
  if (!Number.isInteger(numExperts) || numExperts < 1) throw new Error(`expertCapacity: numExperts must be a positive integer, got ${numExperts}`);
  // round away float noise first, so 1.1 * 10 / 1 is 11 and not 12
  const raw = Number(((capacityFactor * assignments) / numExperts).toPrecision(12));
  return Math.ceil(raw);
}

/**
 * Which overflow is dropped:
 * - 'weight' (default): the lowest-priority assignments (routing.priority, default the weights):
 *   batch-prioritised routing, Riquelme et al., "Scaling Vision with Sparse Mixture of Experts" (V-MoE), 2021.
 * - 'sequence': the latest tokens in sequence order, every token's first choice before any second
 *   choice: Fedus et al., "Switch Transformers", 2021 (and transformers' Switch/NLLB-MoE routers).
 */
export type DropOrder = 'weight' | 'sequence';
/** The capacity drop orders, default first. */
export const DROP_ORDERS: readonly DropOrder[] = ['weight', 'sequence'];

/** Which assignments fit: 1 for kept, 0 for dropped, per assignment. */
export function capacityMask(routing: SparseRouting, numExperts: number, capacity: number, dropOrder: DropOrder = 'weight'): Uint8Array {
  const A = routing.expertIdx.length;
  const pri = routing.priority ?? routing.weights.data;
  const tok = routing.tokenIdx;
  const order = new Int32Array(A);
  for (let i = 0; i < A; i++) order[i] = i;
  if (dropOrder === 'sequence') {
    // rank of each assignment among its token's (listing order = choice order for token choice)
    const rank = new Int32Array(A);
    const seen = new Map<number, number>();
    for (let i = 0; i < A; i++) {
      const r = seen.get(tok[i]) ?? 0;
      rank[i] = r;
      seen.set(tok[i], r + 1);
    }
    order.sort((a, b) => rank[a] - rank[b] || tok[a] - tok[b] || a - b);
  } else if (dropOrder === 'weight') {
    order.sort((a, b) => {
      const d = pri[b] - pri[a];
      if (d !== 0 && d === d) return d;
      return tok[a] - tok[b] || a - b;
    });
  } else throw new Error(`capacityMask: dropOrder must be one of ${DROP_ORDERS.join(', ')}, got ${JSON.stringify(dropOrder)}`);
  const used = new Int32Array(numExperts);
  const kept = new Uint8Array(A);
  const ei = routing.expertIdx;
  for (let j = 0; j < A; j++) {
    const i = order[j];
    const e = ei[i];
    if (used[e] < capacity) {
      used[e]++;
      kept[i] = 1;
    }
  }
  return kept;
}

export function capacityDispatch(
  x: Tensor,
  routing: SparseRouting,
  experts: ExpertBank,
  capacityFactor: number,
  dropOrder: DropOrder = 'weight',
  shared?: FusedSharedSwiglu,
): DispatchResult & { capacity: number } {
  if (x.ndim !== 2 || x.shape[1] !== experts.dModel) throw new Error(`capacityDispatch: x must be [T, ${experts.dModel}], got [${x.shape.join(', ')}]`);
  const E = experts.numExperts;
  checkSparseRouting(routing, x.shape[0], E, 'capacityDispatch');
  const capacity = expertCapacity(capacityFactor, routing.expertIdx.length, E);
  const kept = capacityMask(routing, E, capacity, dropOrder);
  const sorted = sortByExpert(routing.tokenIdx, routing.expertIdx, E, kept);
  const r = runSorted(x, sorted, routing.weights, experts, shared);
  return { y: r.y, kept, sizes: sorted.sizes, capacity, sharedIncluded: r.sharedIncluded };
}

dispatchRegistry.register(
  defineDispatch({
    name: 'capacity',
    summary: 'each expert computes at most ceil(capacityFactor * T * k / E) assignments; the lowest-priority overflow is dropped',
    paper: { authors: 'Lepikhin et al.', title: 'GShard: Scaling Giant Models with Conditional Computation and Automatic Sharding', year: 2020 },
    routing: 'sparse',
    options: {
      capacityFactor: positive().describe('expert capacity as a multiple of the balanced load T * k / E'),
      dropOrder: z
        .enum(DROP_ORDERS as [DropOrder, ...DropOrder[]])
        .default('weight')
        .describe("overflow dropped: 'weight' lowest priority first (V-MoE batch-prioritised routing), 'sequence' latest tokens first (Switch Transformers)"),
    },
    hfConfig: { capacity_factor: 'capacityFactor', capacity_drop_order: 'dropOrder' },
    configDefaults: { capacityFactor: 1.25 },
    run: (x, routing, experts, o, shared) => capacityDispatch(x, routing as SparseRouting, experts, o.capacityFactor, o.dropOrder, shared),
  }),
);
