/**
 * Entropy losses on the routing distribution.
 * Paper: Mustafa et al., "Multimodal Contrastive Learning with LIMoE: the Language-Image Mixture of Experts", 2022.
 *
 * Sign convention (both are minimised, like every loss here):
 * - 'entropy' (local):         L = (1/T) sum_t H(probs[t])      — minimising makes each token's
 *   routing confident; always >= 0, 0 for one-hot routing, log E for uniform.
 * - 'entropy-global' (global): L = -H((1/T) sum_t probs[t])     — minimising *maximises* the
 *   entropy of the average routing, i.e. spreads tokens over experts; in [-log E, 0].
 * H(p) = -sum_e p_e ln p_e (nats), with 0 ln 0 = 0. LIMoE uses both together (coefficients per
 * loss in the layer config). Soft routing has no per-token choice to sharpen or spread: both are 0.
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import { mean, neg, reshape } from '../../tensor/index.js';
import type { BalanceLossFn } from '../types.js';
import { lossRegistry, zeroLoss, checkShapes } from './registry.js';

const TINY = 1e-30;

/** Entropy (nats) of each row of p [R, n] -> [R]; dH/dp = -(ln p + 1), with p clamped away from 0 inside the log. */
export function rowEntropy(p: Tensor): Tensor {
  if (p.ndim !== 2) throw new Error(`rowEntropy: expected [rows, n], got [${p.shape.join(', ')}]`);
  const [R, n] = p.shape;
  const d = p.data;
  const out = new Float32Array(R);
  for (let r = 0; r < R; r++) {
    let h = 0;
    for (let j = 0; j < n; j++) {
      const v = d[r * n + j];
      if (v > 0) h -= v * Math.log(v);
    }
    out[r] = h;
  }
  return result(out, [R], [p], (g) => {
    const gp = new Float32Array(R * n);
    for (let r = 0; r < R; r++) for (let j = 0; j < n; j++) gp[r * n + j] = -g[r] * (Math.log(Math.max(d[r * n + j], TINY)) + 1);
    accumulateGrad(p, gp, true);
  });
}

export const localEntropyLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('entropy', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  return mean(rowEntropy(out.probs));
};

export const globalEntropyLoss: BalanceLossFn = (out, { numExperts, tokens }) => {
  if (out.routing.kind !== 'sparse') return zeroLoss();
  checkShapes('entropy-global', out, numExperts, tokens);
  if (tokens === 0) return zeroLoss();
  return neg(reshape(rowEntropy(mean(out.probs, 0, true)), []));
};

lossRegistry.register({
  name: 'entropy',
  summary: 'local entropy: mean per-token routing entropy, minimised',
  paper: { authors: 'Mustafa et al.', title: 'Multimodal Contrastive Learning with LIMoE: the Language-Image Mixture of Experts', year: 2022 },
  fn: localEntropyLoss,
  configField: 'router_entropy_coef',
});
lossRegistry.register({
  name: 'entropy-global',
  summary: 'global entropy: minus the entropy of the mean routing distribution',
  paper: { authors: 'Mustafa et al.', title: 'Multimodal Contrastive Learning with LIMoE: the Language-Image Mixture of Experts', year: 2022 },
  fn: globalEntropyLoss,
});
