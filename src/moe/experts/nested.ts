/**
 * Nested experts (Jain et al., "Mixture of Nested Experts: Adaptive Processing of Visual Tokens",
 * 2024): expert e is the first w_e hidden units of one shared SwiGLU FFN, with widths increasing
 * to the full dFF (default w_e = dFF / 2^(E-1-e): each expert half the next). Every expert shares
 * its parameters with the larger ones (Matryoshka-style), so the bank holds one FFN's weights and
 * a token's compute is chosen by the width it is routed to; the 'nested-budget' router assigns
 * widths under a compute budget. Per expert one matmul per projection on the sliced weights.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { matmul, slice, swiglu, concat, sigmoidScalar } from '../../tensor/index.js';
import { Module, Parameter, param } from '../../nn/module.js';
import { z, posInt, positive } from '../../tensor/validate.js';
import type { ExpertBank } from '../types.js';
import { expertRegistry, defineExperts } from './registry.js';

/** The default nested widths: dFF / 2^(E-1-e), at least 1, the last exactly dFF. */
export function nestedWidths(numExperts: number, dFF: number): number[] {
  return Array.from({ length: numExperts }, (_, e) => Math.max(1, Math.round(dFF / 2 ** (numExperts - 1 - e))));
}

/** E nested SwiGLU experts over one FFN: w1, w3 [d, F], w2 [F, d]; expert e uses hidden units [0, widths[e]). */
export class NestedExperts extends Module implements ExpertBank {
  w1: Parameter;
  w3: Parameter;
  w2: Parameter;
  readonly widths: readonly number[];
  constructor(
    readonly numExperts: number,
    readonly dModel: number,
    readonly dFF: number,
    widths: readonly number[],
    rng: Rng,
    outputScale = 1,
  ) {
    super();
    this.widths = Object.freeze(widths.slice());
    const inStd = 1 / Math.sqrt(dModel);
    this.w1 = param([dModel, dFF], { normal: inStd }, rng);
    this.w3 = param([dModel, dFF], { normal: inStd }, rng);
    this.w2 = param([dFF, dModel], { normal: outputScale / Math.sqrt(dFF) }, rng);
  }

  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`NestedExperts.forwardGrouped: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    if (sizes.length !== this.numExperts) throw new Error(`NestedExperts.forwardGrouped: ${sizes.length} group sizes for ${this.numExperts} experts`);
    const outs: Tensor[] = [];
    let r = 0;
    for (let e = 0; e < this.numExperts; e++) {
      if (sizes[e] === 0) continue;
      const xe = slice(x, 0, r, r + sizes[e]);
      r += sizes[e];
      const w = this.widths[e];
      const full = w === this.dFF;
      const w1 = full ? this.w1 : slice(this.w1, 1, 0, w);
      const w3 = full ? this.w3 : slice(this.w3, 1, 0, w);
      const w2 = full ? this.w2 : slice(this.w2, 0, 0, w);
      outs.push(matmul(swiglu(matmul(xe, w1), matmul(xe, w3)), w2));
    }
    if (r !== x.shape[0]) throw new Error(`NestedExperts.forwardGrouped: x has ${x.shape[0]} rows, the sizes add up to ${r}`);
    if (outs.length === 0) return slice(x, 0, 0, 0);
    return outs.length === 1 ? outs[0] : concat(outs, 0);
  }

  flopsPerToken(e: number): number {
    if (!(e >= 0 && e < this.numExperts)) throw new Error(`NestedExperts.flopsPerToken: expert ${e} out of range [0, ${this.numExperts})`);
    return 3 * this.dModel * this.widths[e];
  }

  /** Width of expert e. */
  expertWidth(e: number): number {
    return this.widths[e];
  }

  referenceForward(e: number, x: ArrayLike<number>): Float64Array {
    const d = this.dModel;
    const F = this.dFF;
    const y = new Float64Array(d);
    for (let j = 0; j < this.widths[e]; j++) {
      let g = 0;
      let v = 0;
      for (let i = 0; i < d; i++) {
        g += x[i] * this.w1.data[i * F + j];
        v += x[i] * this.w3.data[i * F + j];
      }
      const h = g * sigmoidScalar(g) * v;
      for (let i = 0; i < d; i++) y[i] += h * this.w2.data[j * d + i];
    }
    return y;
  }
}

expertRegistry.register(
  defineExperts({
    name: 'nested',
    summary: 'nested SwiGLU experts: expert e is the first w_e hidden units of one shared FFN, widths increasing to dFF (MoNE)',
    paper: { authors: 'Jain et al.', title: 'Mixture of Nested Experts: Adaptive Processing of Visual Tokens', year: 2024 },
    options: {
      dFF: posInt().describe('width of the full (largest) expert'),
      widths: z.array(posInt()).optional().describe('increasing expert widths, the last equal to dFF (default dFF / 2^(E-1-e))'),
      outputScale: positive().optional().describe("multiplier on the output projection's init std (default 1)"),
    },
    refine: (c, issue) => {
      const w = c.widths;
      if (w === undefined) return;
      if (w.length !== c.numExperts) issue('widths', `must have one width per expert (${c.numExperts}), got ${w.length}`);
      else if (w.some((v, i) => i > 0 && v < w[i - 1]) || w[w.length - 1] !== c.dFF) issue('widths', `must be non-decreasing and end at dFF (${c.dFF})`);
    },
    traits: {},
    create: (c, rng) => new NestedExperts(c.numExperts, c.dModel, c.dFF, c.widths ?? nestedWidths(c.numExperts, c.dFF), rng, c.outputScale ?? 1),
  }),
);
