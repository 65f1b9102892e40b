/**
 * Importance loss: CV^2 of the per-expert summed routing probabilities, Imp_e = sum_t probs[t, e].
 * Paper: Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer", 2017.
 *
 * CV^2 = population variance / (mean^2 + 1e-10). The paper sums the sparse (post-top-k) gate
 * values; this sums the dense probabilities, which every router provides and which keep a
 * gradient for unselected experts. Soft routing is balanced by construction: the loss is 0.
 */
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, cvSquared, columnSums, checkShapes } from './registry.js';

export const importanceLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('importance', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  return cvSquared(columnSums(out.probs));
};

lossRegistry.register({
  name: 'importance',
  summary: 'CV^2 of per-expert summed probabilities',
  paper: { authors: 'Shazeer et al.', title: 'Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer', year: 2017 },
  fn: importanceLoss,
  configField: 'router_importance_coef',
});
