/**
 * Switch load-balancing loss: E * sum_e f_e * P_e.
 * Paper: Fedus, Zoph & Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", 2021.
 *
 * f_e = (assignments listed for expert e) / (T * k), a constant (no gradient); P_e = mean over
 * tokens of probs[:, e] (differentiable). With k assignments per token this is the GShard/Mixtral
 * generalisation: perfectly uniform routing gives exactly 1 for any k. Assignments are counted
 * before capacity drops (as the paper's implementation does). For routers whose assignment
 * count differs from T * k (expert choice, dynamic routers) f sums to A / (T * k).
 * Soft routing has no discrete assignments: the loss is 0.
 */
import { Tensor } from '../../tensor/tensor.js';
import { mean, mul, sum, scale } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';

export const switchLoss: BalanceLossFn = (out, { numExperts, tokens, topK }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('switch', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  const f = new Float32Array(numExperts);
  const ex = out.routing.expertIdx;
  for (let i = 0; i < ex.length; i++) f[ex[i]]++;
  const norm = 1 / (tokens * topK);
  for (let e = 0; e < numExperts; e++) f[e] *= norm;
  const P = mean(out.probs, 0);
  return scale(sum(mul(P, new Tensor(f, [numExperts]))), numExperts);
};

lossRegistry.register('switch', switchLoss, 'E * sum_e f_e P_e load balancing (Fedus et al. 2021)');
