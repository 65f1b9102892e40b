/**
 * Router z-loss: mean over tokens of logsumexp(logits[t])^2, keeping router logits small for
 * numerical stability. Paper: Zoph et al., "ST-MoE: Designing Stable and Transferable Sparse Expert Models", 2022.
 *
 * Reads the raw logits, so it applies to every router, soft routing included (the soft router's
 * per-expert logits are logsumexps over slots, so this is the z-loss of the full slot-logit row).
 * For sigmoid routers it still penalises the scale of the logits.
 */
import { meanSquaredLogSumExp } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';

export const zLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  checkShapes('zloss', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  // one node; reuses the row log-sum-exp of a fused softmax top-k router (same as mean(square(logSumExp(logits))))
  return meanSquaredLogSumExp(out.logits);
};

lossRegistry.register({
  name: 'zloss',
  summary: 'router z-loss mean(logsumexp(logits)^2)',
  paper: { authors: 'Zoph et al.', title: 'ST-MoE: Designing Stable and Transferable Sparse Expert Models', year: 2022 },
  fn: zLoss,
  configField: 'router_z_loss_coef',
});
