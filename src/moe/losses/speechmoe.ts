/**
 * SpeechMoE's two balancing terms.
 * Paper: You et al., "SpeechMoE: Scaling to Large Acoustic Models with Dynamic Routing Mixture of Experts", 2021.
 *
 * - 'l1-sparsity': mean over tokens of || p_t / ||p_t||_2 ||_1, the L1 norm of the L2-normalised
 *   routing distribution: 1 for a one-hot row, sqrt(E) for a uniform one, so minimising it makes
 *   each token's routing sparse (confident).
 * - 'mean-importance': E * sum_e (mean_t p_te)^2: 1 when the mean routing probability is uniform
 *   over experts, E when all mass sits on one expert, so it balances expert importance.
 * Both read the [T, E] probs; soft routing is balanced by construction: 0.
 */
import { mean, sum, square, sqrt, div, addScalar, scale, abs } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';

/** SpeechMoE's sparsity loss: mean L1 norm of the L2-normalised routing distribution (1 one-hot .. sqrt(E) uniform). */
export const l1SparsityLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('l1-sparsity', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  const p = out.probs;
  const unit = div(p, sqrt(addScalar(sum(square(p), -1, true), 1e-12)));
  return mean(sum(abs(unit), -1));
};

/** SpeechMoE's mean importance loss: E * sum_e (mean_t p_te)^2 (1 balanced .. E collapsed). */
export const meanImportanceLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('mean-importance', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  return scale(sum(square(mean(out.probs, 0))), numExperts);
};

const paper = { authors: 'You et al.', title: 'SpeechMoE: Scaling to Large Acoustic Models with Dynamic Routing Mixture of Experts', year: 2021 };
lossRegistry.register({ name: 'l1-sparsity', summary: 'mean L1 norm of the L2-normalised routing distribution (sparse routing)', paper, fn: l1SparsityLoss });
lossRegistry.register({ name: 'mean-importance', summary: 'E * sum_e (mean routing probability)^2 (balanced importance)', paper, fn: meanImportanceLoss });
