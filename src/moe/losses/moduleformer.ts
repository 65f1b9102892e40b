/**
 * ModuleFormer's two routing losses (Shen et al., "ModuleFormer: Modularity Emerges from
 * Mixture-of-Experts", 2023), both on the router's probabilities p(e|x) [T, E] and their batch
 * mean p(e) = (1/T) sum_t p(e|x_t):
 * - 'moduleformer-mi' (load balancing, pre-training): minus the mutual information between
 *   tokens and experts, L = -H(p(e)) + (1/T) sum_t H(p(e|x_t)): spread load over experts while
 *   keeping each token's routing confident. In [-log E, log E]; -log E at balanced one-hot routing.
 * - 'load-concentration' (fine-tuning): L = H(p(e)), minimised to concentrate a task's tokens on
 *   few experts so the unused ones can be pruned. In [0, log E].
 * Soft routing has no per-token choice: both are 0 there.
 */
import type { BalanceLossFn } from '../types.js';
import { add, mean, neg, reshape } from '../../tensor/index.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';
import { rowEntropy } from './entropy.js';

const PAPER = { authors: 'Shen et al.', title: 'ModuleFormer: Modularity Emerges from Mixture-of-Experts', year: 2023 };

/** -I(token; expert) = -H(mean_t p(e|x_t)) + mean_t H(p(e|x_t)). */
export const moduleFormerMILoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('moduleformer-mi', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  const marginal = reshape(rowEntropy(mean(out.probs, 0, true)), []);
  return add(neg(marginal), mean(rowEntropy(out.probs)));
};

/** H(mean_t p(e|x_t)): the entropy of the batch's expert usage. */
export const loadConcentrationLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('load-concentration', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  return reshape(rowEntropy(mean(out.probs, 0, true)), []);
};

lossRegistry.register({
  name: 'moduleformer-mi',
  summary: 'minus the token-expert mutual information: -H(mean p) + mean H(p) (load balancing)',
  paper: PAPER,
  fn: moduleFormerMILoss,
});
lossRegistry.register({
  name: 'load-concentration',
  summary: 'entropy of the mean routing distribution, minimised to concentrate load on few experts (fine-tuning)',
  paper: PAPER,
  fn: loadConcentrationLoss,
});
