/**
 * Switch load-balancing loss: E * sum_e f_e * P_e.
 * Paper: Fedus, Zoph & Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity", 2021.
 *
 * f_e = (assignments listed for expert e) / A, a constant (no gradient), where A = number of
 * listed assignments (= T * k for top-k token choice); P_e = mean over tokens of probs[:, e]
 * (differentiable). With k assignments per token this is the GShard/Mixtral generalisation:
 * perfectly uniform routing gives exactly 1 for any k. Normalising by A rather than T * cfg.topK
 * keeps that property for routers whose assignment count is not T * topK (Switch ignores topK
 * and makes T assignments; expert choice, top-p and threshold routers vary). Assignments are
 * counted before capacity drops, as the paper's implementation does.
 * Soft routing has no discrete assignments: the loss is 0 (also when A = 0).
 */
import { columnMeanDot } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';

export const switchLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('switch', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  const ex = out.routing.expertIdx;
  if (ex.length === 0) return zeroLoss();
  const f = new Float32Array(numExperts);
  for (let i = 0; i < ex.length; i++) f[ex[i]]++;
  const norm = 1 / ex.length;
  for (let e = 0; e < numExperts; e++) f[e] *= norm;
  // E * sum_e f_e * mean_t probs[t, e], one node (the eager mean/mul/sum/scale made four)
  return columnMeanDot(out.probs, f, numExperts);
};

lossRegistry.register({
  name: 'switch',
  summary: 'E * sum_e f_e P_e load balancing',
  paper: { authors: 'Fedus et al.', title: 'Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity', year: 2021 },
  fn: switchLoss,
  configField: 'router_aux_loss_coef',
});
