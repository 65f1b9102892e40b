/**
 * The Switch load-balancing loss as Hugging Face transformers computes it
 * (`load_balancing_loss_func` of Mixtral, Qwen-MoE, OLMoE): ONE loss over the router outputs of
 * all layers together, normalised by tokens rather than assignments:
 *   E * sum_e f_e * P_e,  f_e = (assignments to e over all layers) / (L * T),
 *   P_e = mean over all L * T (layer, token) rows of probs[:, e].
 * Uniform top-k routing gives k (the per-layer moe-ts 'switch' loss gives 1 per layer, L in
 * total: the two differ by a factor of L / k). Assignments are counted before capacity drops.
 * Paper: Fedus, Zoph & Shazeer, "Switch Transformers", 2021 (this normalisation: transformers).
 *
 * Not a per-layer registry loss (it needs every layer's routing at once): the model calls it when
 * its config says `aux_loss_normalization: 'all-layers-tokens'`.
 */
import { Tensor } from '../../tensor/tensor.js';
import { concat, mean, mul, sum, scale } from '../../tensor/index.js';
import type { RouterOutput } from '../types.js';
import { zeroLoss } from './registry.js';

export function globalSwitchLoss(outs: readonly RouterOutput[], numExperts: number): Tensor {
  const sparse = outs.filter((o) => o.routing.kind === 'sparse');
  if (sparse.length === 0) return zeroLoss();
  let rows = 0;
  const f = new Float32Array(numExperts);
  for (const o of sparse) {
    if (o.probs.ndim !== 2 || o.probs.shape[1] !== numExperts) throw new Error(`globalSwitchLoss: probs must be [T, ${numExperts}], got [${o.probs.shape.join(', ')}]`);
    rows += o.probs.shape[0];
    const ex = (o.routing as { expertIdx: Int32Array }).expertIdx;
    for (let i = 0; i < ex.length; i++) f[ex[i]]++;
  }
  if (rows === 0) return zeroLoss();
  for (let e = 0; e < numExperts; e++) f[e] /= rows;
  const P = mean(
    sparse.length === 1
      ? sparse[0].probs
      : concat(
          sparse.map((o) => o.probs),
          0,
        ),
    0,
  );
  return scale(sum(mul(P, new Tensor(f, [numExperts]))), numExperts);
}
