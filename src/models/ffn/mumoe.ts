/**
 * Multilinear Mixture of Experts (Oldfield et al., "Multilinear Mixture of Experts: Scalable
 * Expert Specialization through Factorization", 2024). A μMoE linear layer mixes E expert
 * matrices W_e [in, out] with a dense soft gate a(x) (no discrete routing),
 *   y = sum_e a_e(x) W_e^T x,
 * where the weight tensor W [E, in, out] is kept factorised and never materialised:
 *   CP:     W[e, i, o] = sum_r A[e, r] B[i, r] C[o, r]          ->  y = C ((a A) * (x B))
 *   Tucker: W[e, i, o] = sum_pqs G[p, q, s] A[e, p] B[i, q] C[o, s]  ->  y = C (G x1 (a A) x2 (x B))
 * so the experts enter only through a A ([T, E] x [E, R]): thousands of experts cost like a few.
 * The FFN kind `mumoe` is the paper's μMoE MLP: two μMoE layers (d -> dFF -> d) with a GELU
 * between, sharing one softmax gate over the block input. The paper's entmax gate and input
 * BatchNorm are not used (softmax; no batch statistics in a causal LM).
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt, positive } from '../../tensor/validate.js';
import { Module, Linear, Parameter, param } from '../../nn/index.js';
import type { RouterContext } from '../../moe/types.js';
import { ffnRegistry, defineFFN, type FFNModule, type FFNResult } from './registry.js';

/** The factorisation of the expert weight tensor. */
export type MuMoEForm = 'cp' | 'tucker';

/** A μMoE linear layer, E experts [in, out] in CP or Tucker form applied to x under given gates. */
export class MuMoELinear extends Module {
  /** Expert factor A [E, R] (Tucker: [E, expertRank]). */
  expert_factor: Parameter;
  /** Input factor B [in, R]. */
  in_factor: Parameter;
  /** Output factor C [out, R]. */
  out_factor: Parameter;
  /** Tucker core G [expertRank, R, R] (null for CP). */
  core: Parameter | null;
  constructor(
    readonly numExperts: number,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly form: MuMoEForm,
    readonly rank: number,
    readonly expertRank: number,
    rng: Rng,
    outputStd = 1 / Math.sqrt(rank),
  ) {
    super();
    const E = numExperts;
    const re = form === 'cp' ? rank : expertRank;
    // A starts near 1 (plus unit noise, so experts differ): a uniform gate then gives a rank-R map of the usual scale
    const a = new Float32Array(E * re);
    rng.fillNormal(a, 1);
    for (let i = 0; i < a.length; i++) a[i] += 1;
    this.expert_factor = new Parameter(a, [E, re]);
    this.in_factor = param([inFeatures, rank], { normal: 1 / Math.sqrt(inFeatures) }, rng);
    this.out_factor = param([outFeatures, rank], { normal: outputStd }, rng);
    this.core = form === 'tucker' ? param([re, rank, rank], { normal: 1 / Math.sqrt(2 * re) }, rng) : null;
  }

  /** x [T, in] under gates a [T, E] -> [T, out], without forming any expert's matrix. */
  forward(x: Tensor, gates: Tensor): Tensor {
    const Tn = x.shape[0];
    const ga = T.matmul(gates, this.expert_factor); // [T, R] (Tucker: [T, expertRank])
    const xb = T.matmul(x, this.in_factor); // [T, R]
    let h: Tensor;
    if (!this.core) h = T.mul(ga, xb);
    else {
      const re = this.expertRank;
      const R = this.rank;
      // the per-token outer product (a A) (x B)^T, then the core: [T, re*R] x [re*R, R]
      const outer = T.reshape(T.mul(T.reshape(ga, [Tn, re, 1]), T.reshape(xb, [Tn, 1, R])), [Tn, re * R]);
      h = T.matmul(outer, T.reshape(this.core, [re * R, R]));
    }
    return T.linear(h, this.out_factor);
  }

  /** Multiply-adds per token. */
  flopsPerToken(): number {
    const R = this.rank;
    const re = this.core ? this.expertRank : R;
    return this.numExperts * re + this.inFeatures * R + (this.core ? re * R * R : 0) + R * this.outFeatures;
  }
}

/** The μMoE MLP, two μMoE layers with a GELU between sharing one softmax gate, y = μMoE_2(gelu(μMoE_1(x; a)); a). */
export class MuMoEFFN extends Module implements FFNModule {
  gate: Linear;
  fc1: MuMoELinear;
  fc2: MuMoELinear;
  constructor(
    readonly dModel: number,
    readonly dFF: number,
    readonly numExperts: number,
    form: MuMoEForm,
    rank: number,
    expertRank: number,
    rng: Rng,
    outputScale = 1,
  ) {
    super();
    this.gate = new Linear(dModel, numExperts, rng, { std: 1 / Math.sqrt(dModel) });
    this.fc1 = new MuMoELinear(numExperts, dModel, dFF, form, rank, expertRank, rng);
    this.fc2 = new MuMoELinear(numExperts, dFF, dModel, form, rank, expertRank, rng, outputScale / Math.sqrt(rank));
  }

  /** The gates [T, E] for x [T, d]. */
  gates(x: Tensor): Tensor {
    return T.softmax(this.gate.forward(x), -1);
  }

  forward(x: Tensor, _ctx?: RouterContext): FFNResult {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`MuMoEFFN.forward: x must be [T, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const a = this.gates(x);
    const y = this.fc2.forward(T.geluFused(this.fc1.forward(x, a)), a);
    // the gate's mean entropy: how soft the mixture is (log E at uniform)
    let ent = 0;
    const E = this.numExperts;
    for (let i = 0; i < a.data.length; i++) ent -= a.data[i] > 0 ? a.data[i] * Math.log(a.data[i]) : 0;
    return { y, metrics: { mumoeGateEntropy: ent / (a.data.length / E) } };
  }

  /** Every parameter computes on every token (soft mixture). */
  activeParameters(): number {
    return this.numParameters();
  }
}

const options = {
  numExperts: posInt().optional().describe('experts E (default num_local_experts)'),
  form: z.enum(['cp', 'tucker'], { error: 'must be one of cp, tucker' }).default('cp').describe('factorisation of the [E, in, out] weight tensor'),
  rank: posInt().optional().describe('CP rank, or the Tucker in/out ranks (default hidden_size)'),
  expertRank: posInt().optional().describe('Tucker rank of the expert mode (default min(numExperts, rank)); CP ignores it'),
  dFF: posInt().optional().describe('hidden width of the μMoE MLP (default intermediate_size)'),
  outputScale: positive().optional().describe("multiplier on the output factor's init std (default: the model's residual scaling)"),
};

type MuMoEOptions = z.output<z.ZodObject<typeof options>>;

function resolve(c: { hidden_size: number; num_local_experts: number; intermediate_size: number }, o: MuMoEOptions) {
  const E = o.numExperts ?? c.num_local_experts;
  const rank = o.rank ?? c.hidden_size;
  return { E, rank, expertRank: o.expertRank ?? Math.min(E, rank), dFF: o.dFF ?? c.intermediate_size };
}

ffnRegistry.register(
  defineFFN({
    name: 'mumoe',
    summary: 'multilinear MoE MLP: thousands of experts as one CP/Tucker-factorised weight tensor under a dense soft gate (μMoE)',
    paper: { authors: 'Oldfield et al.', title: 'Multilinear Mixture of Experts: Scalable Expert Specialization through Factorization', year: 2024 },
    options,
    refine: (o, c, issue) => {
      if ((o.numExperts ?? c.num_local_experts) < 1) issue('numExperts', 'must be set (num_local_experts is 0)');
      if (o.form === 'cp' && o.expertRank !== undefined) issue('expertRank', 'applies to form "tucker" only');
    },
    create: (c, o, rng) => {
      const r = resolve(c, o);
      return new MuMoEFFN(c.hidden_size, r.dFF, r.E, o.form, r.rank, r.expertRank, rng, o.outputScale ?? 1 / Math.sqrt(2 * c.num_hidden_layers));
    },
    size: (c, o) => {
      const r = resolve(c, o);
      const re = o.form === 'cp' ? r.rank : r.expertRank;
      const layer = (i: number, out: number) => r.E * re + (i + out) * r.rank + (o.form === 'tucker' ? re * r.rank * r.rank : 0);
      return { parameters: c.hidden_size * r.E + layer(c.hidden_size, r.dFF) + layer(r.dFF, c.hidden_size), largest: Math.max(c.hidden_size * r.E, r.dFF * r.rank, re * r.rank * r.rank), tensors: 9 };
    },
    activationsPerToken: (c, o) => {
      const r = resolve(c, o);
      return 2 * r.E + 6 * r.rank + (o.form === 'tucker' ? 4 * r.expertRank * r.rank : 0) + 2 * r.dFF + c.hidden_size;
    },
  }),
);
