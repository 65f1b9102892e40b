/**
 * Soft MoE dispatch (Puigcerver et al. 2023 "From Sparse to Soft Mixtures of Experts"): slot
 * inputs X_s = D^T X are weighted averages of all tokens, each expert processes its S
 * contiguous slots (one grouped matmul per projection with every group of size S), and token
 * outputs Y = C Y_s are weighted averages of all slot outputs.
 */
import type { Tensor } from '../../tensor/tensor.js';
import { matmul, transpose } from '../../tensor/index.js';
import type { ExpertBank, SoftRouting } from '../types.js';
import type { DispatchResult } from './dropless.js';
import { dispatchRegistry, defineDispatch } from './registry.js';

export function softDispatch(x: Tensor, routing: SoftRouting, experts: ExpertBank): DispatchResult {
  const E = experts.numExperts;
  const S = routing.slotsPerExpert;
  if (!Number.isInteger(S) || S < 1) throw new Error(`softDispatch: slotsPerExpert must be a positive integer, got ${S}`);
  if (x.ndim !== 2 || x.shape[1] !== experts.dModel) throw new Error(`softDispatch: x must be [T, ${experts.dModel}], got [${x.shape.join(', ')}]`);
  const T = x.shape[0];
  for (const [name, m] of [
    ['dispatch', routing.dispatch],
    ['combine', routing.combine],
  ] as const) {
    if (m.ndim !== 2 || m.shape[0] !== T || m.shape[1] !== E * S) {
      throw new Error(`softDispatch: ${name} must be [T, E*S] = [${T}, ${E * S}], got [${m.shape.join(', ')}]`);
    }
  }
  const slots = matmul(transpose(routing.dispatch), x);
  const sizes = new Int32Array(E).fill(S);
  const ys = experts.forwardGrouped(slots, sizes);
  return { y: matmul(routing.combine, ys), sizes };
}

dispatchRegistry.register(
  defineDispatch({
    name: 'soft',
    summary: 'slot inputs are weighted averages of all tokens, token outputs weighted averages of all slot outputs (never drops)',
    paper: { authors: 'Puigcerver et al.', title: 'From Sparse to Soft Mixtures of Experts', year: 2023 },
    routing: 'soft',
    isDefault: true,
    options: {},
    run: (x, routing, experts) => softDispatch(x, routing as SoftRouting, experts),
  }),
);
