/**
 * Capacity-limited dispatch (Fedus et al. 2021 "Switch Transformers"; Lepikhin et al. 2020
 * "GShard"): each expert computes at most capacity = ceil(capacityFactor * T * k / E)
 * assignments, k being the average assignments per token. The overflow is dropped in priority
 * order (routing.priority, default the weights; ties go to the earlier token); a dropped
 * assignment contributes nothing here, so the token passes through on the residual path.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { ExpertBank, SparseRouting } from '../types.js';
import { positive } from '../../tensor/validate.js';
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

/** Which assignments fit: 1 for kept, 0 for dropped, per assignment. */
export function capacityMask(routing: SparseRouting, numExperts: number, capacity: number): Uint8Array {
  const A = routing.expertIdx.length;
  const pri = routing.priority ?? routing.weights.data;
  const tok = routing.tokenIdx;
  const order = new Int32Array(A);
  for (let i = 0; i < A; i++) order[i] = i;
  order.sort((a, b) => {
    const d = pri[b] - pri[a];
    if (d !== 0 && d === d) return d;
    return tok[a] - tok[b] || a - b;
  });
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

export function capacityDispatch(x: Tensor, routing: SparseRouting, experts: ExpertBank, capacityFactor: number): DispatchResult & { capacity: number } {
  if (x.ndim !== 2 || x.shape[1] !== experts.dModel) throw new Error(`capacityDispatch: x must be [T, ${experts.dModel}], got [${x.shape.join(', ')}]`);
  const E = experts.numExperts;
  checkSparseRouting(routing, x.shape[0], E, 'capacityDispatch');
  const capacity = expertCapacity(capacityFactor, routing.expertIdx.length, E);
  const kept = capacityMask(routing, E, capacity);
  const sorted = sortByExpert(routing.tokenIdx, routing.expertIdx, E, kept);
  return { y: runSorted(x, sorted, routing.weights, experts), kept, sizes: sorted.sizes, capacity };
}

dispatchRegistry.register(
  defineDispatch({
    name: 'capacity',
    summary: 'each expert computes at most ceil(capacityFactor * T * k / E) assignments; the lowest-priority overflow is dropped',
    paper: { authors: 'Lepikhin et al.', title: 'GShard: Scaling Giant Models with Conditional Computation and Automatic Sharding', year: 2020 },
    routing: 'sparse',
    options: { capacityFactor: positive().describe('expert capacity as a multiple of the balanced load T * k / E') },
    hfConfig: { capacity_factor: 'capacityFactor' },
    configDefaults: { capacityFactor: 1.25 },
    run: (x, routing, experts, o) => capacityDispatch(x, routing as SparseRouting, experts, o.capacityFactor),
  }),
);
