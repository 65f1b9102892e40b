/**
 * The balancing-loss registry and the small helpers the loss files share. Each loss file
 * registers one LossSpec on import; import './index.js' to get them all.
 */
import { Tensor } from '../../tensor/tensor.js';
import { mean, square, sub, div, addScalar, sum } from '../../tensor/index.js';
import { Registry, type EntrySpec } from '../registry.js';
import type { BalanceLossFn, RouterOutput } from '../types.js';

export interface LossSpec extends EntrySpec {
  /** Reads the routing record, returns the unscaled scalar loss. */
  fn: BalanceLossFn;
  /** The Hugging Face-style model-config coefficient field that enables it (e.g. router_aux_loss_coef), if any. */
  configField?: string;
}

export const lossRegistry = new Registry<LossSpec, BalanceLossFn>('balancing loss', (s) => s.fn);

/** A constant 0 scalar: the value of a loss that does not apply to a routing kind. */
export function zeroLoss(): Tensor {
  return new Tensor(new Float32Array([0]), []);
}

/** Squared coefficient of variation of v [E]: population variance / (mean^2 + 1e-10), as in Shazeer et al. 2017. */
export function cvSquared(v: Tensor): Tensor {
  if (v.size <= 1) return zeroLoss();
  const m = mean(v);
  const variance = mean(square(sub(v, m)));
  return div(variance, addScalar(square(m), 1e-10));
}

/** Per-expert sums over tokens of [T, E] scores -> [E]. */
export function columnSums(x: Tensor): Tensor {
  return sum(x, 0);
}

/** Check that the [T, E] fields match the info the layer passes, naming the loss. */
export function checkShapes(loss: string, out: RouterOutput, numExperts: number, tokens: number): void {
  for (const [field, t] of [
    ['probs', out.probs],
    ['logits', out.logits],
  ] as const) {
    if (t.ndim !== 2 || t.shape[0] !== tokens || t.shape[1] !== numExperts) {
      throw new Error(`loss "${loss}": router ${field} has shape [${t.shape.join(', ')}], expected [${tokens}, ${numExperts}] (tokens, numExperts)`);
    }
  }
}
