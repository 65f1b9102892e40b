/**
 * GPT-OSS experts: SwiGLU with biases and a clamped activation,
 *   g = min(x w1 + b1, limit), u = clamp(x w3 + b3, -limit, limit),
 *   y = ((u + 1) * g * sigmoid(alpha * g)) w2 + b2,
 * alpha 1.702 and limit 7 by default (transformers GptOssExperts; checkpoints interleave gate and
 * up columns, the loader splits them). Paper: OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card", 2025.
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { add, groupedMatmul, gatherRows } from '../../tensor/index.js';
import { Module, Parameter, param } from '../../nn/module.js';
import { posInt, positive } from '../../tensor/validate.js';
import type { ExpertBank } from '../types.js';
import { expertRegistry, defineExperts } from './registry.js';

/** The clamped gated activation of h1 (gate) and h3 (up), both [R, f]. */
export function clampedSwiglu(h1: Tensor, h3: Tensor, alpha: number, limit: number): Tensor {
  if (h1.size !== h3.size) throw new Error(`clampedSwiglu: gate ${h1.size} and up ${h3.size} elements differ`);
  const n = h1.size;
  const out = new Float32Array(n);
  const a = h1.data;
  const b = h3.data;
  for (let i = 0; i < n; i++) {
    const g = Math.min(a[i], limit);
    const u = Math.min(Math.max(b[i], -limit), limit);
    out[i] = (u + 1) * g * (1 / (1 + Math.exp(-alpha * g)));
  }
  return result(out, h1.shape, [h1, h3], (gr) => {
    const ga = new Float32Array(n);
    const gb = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const g = Math.min(a[i], limit);
      const u = Math.min(Math.max(b[i], -limit), limit);
      const s = 1 / (1 + Math.exp(-alpha * g));
      const glu = g * s;
      // clamp passes gradient inside [min, max] (inclusive), as torch.clamp does
      ga[i] = a[i] <= limit ? gr[i] * (u + 1) * (s + g * alpha * s * (1 - s)) : 0;
      gb[i] = b[i] >= -limit && b[i] <= limit ? gr[i] * glu : 0;
    }
    if (h1.requiresGrad) accumulateGrad(h1, ga, true);
    if (h3.requiresGrad) accumulateGrad(h3, gb, true);
  });
}

/** E GPT-OSS experts: w1/w3 [E, d, f], w2 [E, f, d] and biases b1/b3 [E, f], b2 [E, d]. */
export class ClampedSwigluExperts extends Module implements ExpertBank {
  w1: Parameter;
  w3: Parameter;
  w2: Parameter;
  b1: Parameter;
  b3: Parameter;
  b2: Parameter;
  constructor(
    readonly numExperts: number,
    readonly dModel: number,
    readonly dFF: number,
    readonly alpha: number,
    readonly limit: number,
    rng: Rng,
    outputScale = 1,
  ) {
    super();
    const inStd = 1 / Math.sqrt(dModel);
    this.w1 = param([numExperts, dModel, dFF], { normal: inStd }, rng);
    this.w3 = param([numExperts, dModel, dFF], { normal: inStd }, rng);
    this.w2 = param([numExperts, dFF, dModel], { normal: outputScale / Math.sqrt(dFF) }, rng);
    this.b1 = param([numExperts, dFF], 'zeros');
    this.b3 = param([numExperts, dFF], 'zeros');
    this.b2 = param([numExperts, dModel], 'zeros');
  }

  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`ClampedSwigluExperts.forwardGrouped: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const rowExpert = new Int32Array(x.shape[0]);
    let r = 0;
    for (let e = 0; e < sizes.length; e++) rowExpert.fill(e, r, (r += sizes[e]));
    const h1 = add(groupedMatmul(x, this.w1, sizes), gatherRows(this.b1, rowExpert));
    const h3 = add(groupedMatmul(x, this.w3, sizes), gatherRows(this.b3, rowExpert));
    return add(groupedMatmul(clampedSwiglu(h1, h3, this.alpha, this.limit), this.w2, sizes), gatherRows(this.b2, rowExpert));
  }

  flopsPerToken(e: number): number {
    if (!(e >= 0 && e < this.numExperts)) throw new Error(`ClampedSwigluExperts.flopsPerToken: expert ${e} out of range [0, ${this.numExperts})`);
    return 3 * this.dModel * this.dFF;
  }

  referenceForward(e: number, x: ArrayLike<number>): Float64Array {
    const d = this.dModel;
    const f = this.dFF;
    const act = new Float64Array(f);
    for (let j = 0; j < f; j++) {
      let g = this.b1.data[e * f + j];
      let u = this.b3.data[e * f + j];
      for (let i = 0; i < d; i++) {
        g += x[i] * this.w1.data[(e * d + i) * f + j];
        u += x[i] * this.w3.data[(e * d + i) * f + j];
      }
      g = Math.min(g, this.limit);
      u = Math.min(Math.max(u, -this.limit), this.limit);
      act[j] = ((u + 1) * g) / (1 + Math.exp(-this.alpha * g));
    }
    const y = new Float64Array(d);
    for (let o = 0; o < d; o++) {
      let s = this.b2.data[e * d + o];
      for (let j = 0; j < f; j++) s += act[j] * this.w2.data[(e * f + j) * d + o];
      y[o] = s;
    }
    return y;
  }
}

expertRegistry.register(
  defineExperts({
    name: 'clamped-swiglu',
    summary: 'SwiGLU experts with biases and the clamped activation (u + 1) * g * sigmoid(alpha g) (GPT-OSS)',
    paper: { authors: 'OpenAI', title: 'gpt-oss-120b & gpt-oss-20b Model Card', year: 2025 },
    options: {
      dFF: posInt().describe('width of every expert'),
      alpha: positive().default(1.702).describe('sigmoid sharpness of the gate'),
      limit: positive().default(7).describe('clamp of gate (above) and up (both sides) pre-activations (swiglu_limit)'),
      outputScale: positive().optional().describe("multiplier on the output projection's init std (default 1)"),
    },
    traits: {},
    create: (c, rng) => new ClampedSwigluExperts(c.numExperts, c.dModel, c.dFF, c.alpha, c.limit, rng, c.outputScale ?? 1),
  }),
);
