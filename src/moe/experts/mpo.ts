/**
 * MPOE experts (Gao et al., "Parameter-Efficient Mixture-of-Experts Architecture for Pre-trained
 * Language Models", 2022): each SwiGLU projection W_e [I, J] of expert e is a matrix product
 * operator of three cores with I = i1 i2 i3, J = j1 j2 j3,
 *   W_e[(i1 i2 i3), (j1 j2 j3)] = sum_{a,b} A_e[i1, j1, a] C[a, i2, j2, b] B_e[b, i3, j3],
 * where the central tensor C (the largest core) is shared by all experts and each expert keeps
 * only its small auxiliary cores A_e, B_e. Parameters grow by r(i1 j1 + i3 j3) per expert instead
 * of I J. The forward materialises W_e for all experts (two matmuls and a permute, independent of
 * the token count) and then runs the grouped-matmul FFN fast path.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { matmul, groupedMatmul, swiglu, reshape, permute, sigmoidScalar } from '../../tensor/index.js';
import { Module, Parameter, param } from '../../nn/module.js';
import { z, posInt, positive } from '../../tensor/validate.js';
import type { ExpertBank } from '../types.js';
import { expertRegistry, defineExperts } from './registry.js';

/** n as three factors [a, c, b], as balanced as possible, with a largest factor in the middle (the shared central core). */
export function mpoShape(n: number): [number, number, number] {
  let best: [number, number, number] = [1, n, 1];
  for (let a = 1; a * a * a <= n; a++) {
    if (n % a) continue;
    const m = n / a;
    for (let b = a; b * b <= m; b++) if (m % b === 0 && m / b <= best[1]) best = [a, m / b, b]; // ties: the more balanced outer cores
  }
  return best;
}

/** One MPO-factored matrix per expert: cores a [E, i1, j1, r], c [r, i2, j2, r] (shared), b [E, r, i3, j3]. */
class MPOMatrix {
  constructor(
    readonly a: Parameter,
    readonly c: Parameter,
    readonly b: Parameter,
    readonly inShape: readonly number[],
    readonly outShape: readonly number[],
  ) {}

  /** W [E, I, J] for all experts, differentiable in the three cores. */
  materialize(E: number, r: number): Tensor {
    const [i1, i2, i3] = this.inShape;
    const [j1, j2, j3] = this.outShape;
    const ac = reshape(matmul(reshape(this.a, [E * i1 * j1, r]), reshape(this.c, [r, i2 * j2 * r])), [E * i1 * j1 * i2 * j2, r]);
    const acb = groupedMatmul(ac, reshape(this.b, [E, r, i3 * j3]), new Int32Array(E).fill(i1 * j1 * i2 * j2));
    return reshape(permute(reshape(acb, [E, i1, j1, i2, j2, i3, j3]), [0, 1, 3, 5, 2, 4, 6]), [E, i1 * i2 * i3, j1 * j2 * j3]);
  }

  /** W_e[row, col] in float64 (the reference). */
  entry(e: number, r: number, row: number, col: number): number {
    const [, i2, i3] = this.inShape;
    const [j1, j2, j3] = this.outShape;
    const x1 = Math.floor(row / (i2 * i3));
    const x2 = Math.floor(row / i3) % i2;
    const x3 = row % i3;
    const y1 = Math.floor(col / (j2 * j3));
    const y2 = Math.floor(col / j3) % j2;
    const y3 = col % j3;
    const A = this.a.data;
    const C = this.c.data;
    const B = this.b.data;
    const i1 = this.inShape[0];
    let s = 0;
    for (let p = 0; p < r; p++) {
      const av = A[((e * i1 + x1) * j1 + y1) * r + p];
      for (let q = 0; q < r; q++) s += av * C[((p * i2 + x2) * j2 + y2) * r + q] * B[((e * r + q) * i3 + x3) * j3 + y3];
    }
    return s;
  }
}

/** E SwiGLU experts whose w1, w3 [d, f] and w2 [f, d] are MPOs sharing their central cores across experts. */
export class MPOExperts extends Module implements ExpertBank {
  w1_a: Parameter;
  w1_c: Parameter;
  w1_b: Parameter;
  w3_a: Parameter;
  w3_c: Parameter;
  w3_b: Parameter;
  w2_a: Parameter;
  w2_c: Parameter;
  w2_b: Parameter;
  private readonly mats: MPOMatrix[];
  constructor(
    readonly numExperts: number,
    readonly dModel: number,
    readonly dFF: number,
    readonly bondDim: number,
    dShape: readonly number[],
    fShape: readonly number[],
    rng: Rng,
    outputScale = 1,
  ) {
    super();
    const E = numExperts;
    const r = bondDim;
    const make = (inS: readonly number[], outS: readonly number[], std: number): Parameter[] => {
      // var(W) = r^2 var(a) var(c) var(b): equal core stds give the target std of W
      const s = Math.cbrt(std / r);
      return [param([E, inS[0], outS[0], r], { normal: s }, rng), param([r, inS[1], outS[1], r], { normal: s }, rng), param([E, r, inS[2], outS[2]], { normal: s }, rng)];
    };
    [this.w1_a, this.w1_c, this.w1_b] = make(dShape, fShape, 1 / Math.sqrt(dModel));
    [this.w3_a, this.w3_c, this.w3_b] = make(dShape, fShape, 1 / Math.sqrt(dModel));
    [this.w2_a, this.w2_c, this.w2_b] = make(fShape, dShape, outputScale / Math.sqrt(dFF));
    this.mats = [
      new MPOMatrix(this.w1_a, this.w1_c, this.w1_b, dShape, fShape),
      new MPOMatrix(this.w3_a, this.w3_c, this.w3_b, dShape, fShape),
      new MPOMatrix(this.w2_a, this.w2_c, this.w2_b, fShape, dShape),
    ];
  }

  /** The dense expert weights [E, d, f], [E, d, f], [E, f, d] the cores encode. */
  materialize(): { w1: Tensor; w3: Tensor; w2: Tensor } {
    const [w1, w3, w2] = this.mats.map((m) => m.materialize(this.numExperts, this.bondDim));
    return { w1, w3, w2 };
  }

  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`MPOExperts.forwardGrouped: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const { w1, w3, w2 } = this.materialize();
    return groupedMatmul(swiglu(groupedMatmul(x, w1, sizes), groupedMatmul(x, w3, sizes)), w2, sizes);
  }

  flopsPerToken(e: number): number {
    if (!(e >= 0 && e < this.numExperts)) throw new Error(`MPOExperts.flopsPerToken: expert ${e} out of range [0, ${this.numExperts})`);
    return 3 * this.dModel * this.dFF;
  }

  referenceForward(e: number, x: ArrayLike<number>): Float64Array {
    const d = this.dModel;
    const f = this.dFF;
    const r = this.bondDim;
    const [m1, m3, m2] = this.mats;
    const y = new Float64Array(d);
    for (let j = 0; j < f; j++) {
      let g = 0;
      let v = 0;
      for (let i = 0; i < d; i++) {
        g += x[i] * m1.entry(e, r, i, j);
        v += x[i] * m3.entry(e, r, i, j);
      }
      const h = g * sigmoidScalar(g) * v;
      for (let i = 0; i < d; i++) y[i] += h * m2.entry(e, r, j, i);
    }
    return y;
  }
}

const shape3 = () => z.array(posInt()).length(3, { error: 'must be 3 positive integers' });

expertRegistry.register(
  defineExperts({
    name: 'mpo',
    summary: 'SwiGLU experts as matrix product operators: a central core shared by all experts, small auxiliary cores per expert (MPOE)',
    paper: { authors: 'Gao et al.', title: 'Parameter-Efficient Mixture-of-Experts Architecture for Pre-trained Language Models', year: 2022 },
    options: {
      dFF: posInt().describe('width of every expert'),
      bondDim: posInt().default(4).describe('bond dimension r between the MPO cores'),
      dShape: shape3().optional().describe('dModel as i1 x i2 x i3 (default: balanced, largest in the middle)'),
      fShape: shape3().optional().describe('dFF as j1 x j2 x j3 (default: balanced, largest in the middle)'),
      outputScale: positive().optional().describe("multiplier on the output projection's init std (default 1)"),
    },
    refine: (c, issue) => {
      if (c.dShape && c.dShape.reduce((a, b) => a * b, 1) !== c.dModel) issue('dShape', `must multiply to dModel (${c.dModel})`);
      if (c.fShape && c.fShape.reduce((a, b) => a * b, 1) !== c.dFF) issue('fShape', `must multiply to dFF (${c.dFF})`);
    },
    traits: {},
    create: (c, rng) => new MPOExperts(c.numExperts, c.dModel, c.dFF, c.bondDim, c.dShape ?? mpoShape(c.dModel), c.fShape ?? mpoShape(c.dFF), rng, c.outputScale ?? 1),
  }),
);
