/**
 * FFN experts with stacked weights, so a dispatch runs one grouped matmul per projection for
 * all experts at once (the Megablocks layout; Gale et al. 2022 "MegaBlocks: Efficient Sparse
 * Training with Mixture-of-Experts"). Heterogeneous widths (Wang et al. 2024 "HMoE:
 * Heterogeneous Mixture of Experts for Language Modeling") group experts by width into one
 * stacked bank per distinct width. Shared experts (Dai et al. 2024 "DeepSeekMoE") are a dense
 * FFN every token goes through.
 */
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/random.js';
import { sigmoidScalar, groupedMatmul, matmul, swiglu, geluFused, scaledSwiglu, scaledGelu, gatherRows, scatterRows, concat, expertSwigluFFN, type FusedSharedSwiglu } from '../../tensor/index.js';
import { Module, Parameter, param } from '../../nn/module.js';
import { z, checkValue, posInt, positive } from '../../tensor/validate.js';
import type { ExpertBank } from '../types.js';
import { expertRegistry, defineExperts } from './registry.js';

export type Activation = 'swiglu' | 'gelu';

export interface ExpertInit {
  /**
   * Multiplier on the output projection's init std (e.g. 1/sqrt(2 * layers) as in GPT-2's
   * residual scaling); default 1.
   */
  outputScale?: number;
}

const ACTIVATION = z.enum(['swiglu', 'gelu'], { error: 'must be one of swiglu, gelu' });

function checkActivation(what: string, a: unknown): Activation {
  return checkValue(ACTIVATION, a, what, 'activation');
}

const GELU_C = Math.sqrt(2 / Math.PI);

/** The activation in float64, for the reference: swiglu(gate, value) or gelu(gate) (tanh form, as the kernels). */
function refAct(kind: Activation, gate: number, value: number): number {
  if (kind === 'swiglu') return gate * sigmoidScalar(gate) * value;
  return 0.5 * gate * (1 + Math.tanh(GELU_C * (gate + 0.044715 * gate * gate * gate)));
}

/**
 * One FFN on one row in float64, the oracle of the fast path: w1/w3 read as [d, f] starting at
 * offset o1 (row stride w1Stride), w2 as [f, d] at o2 (starting at hidden row w2RowOff).
 */
function ffnRowReference(
  x: ArrayLike<number>,
  d: number,
  f: number,
  kind: Activation,
  w1: Float32Array,
  w3: Float32Array | null,
  w2: Float32Array,
  o1: number,
  o2: number,
  w1Stride = f,
  w2RowOff = 0,
): Float64Array {
  const y = new Float64Array(d);
  for (let j = 0; j < f; j++) {
    let g = 0;
    let v = 0;
    for (let i = 0; i < d; i++) {
      g += x[i] * w1[o1 + i * w1Stride + j];
      if (w3) v += x[i] * w3[o1 + i * w1Stride + j];
    }
    const h = refAct(kind, g, v);
    for (let i = 0; i < d; i++) y[i] += h * w2[o2 + (w2RowOff + j) * d + i];
  }
  return y;
}

function outputStd(dFF: number, init: ExpertInit, what: string): number {
  const s = checkValue(positive(), init.outputScale ?? 1, what, 'outputScale');
  return s / Math.sqrt(dFF);
}

/**
 * E experts of the same width: SwiGLU y = (silu(x w1) * (x w3)) w2 with w1, w3 [E, d, f] and
 * w2 [E, f, d], or GELU y = gelu(x w1) w2. Init N(0, 1/fan_in), output projection times outputScale.
 */
export class FFNExperts extends Module implements ExpertBank {
  readonly activation: Activation;
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  w1: Parameter;
  /** The SwiGLU value projection; null for GELU. */
  w3: Parameter | null;
  w2: Parameter;

  constructor(numExperts: number, dModel: number, dFF: number, activation: Activation, rng: Rng, init: ExpertInit = {}) {
    super();
    this.numExperts = checkValue(posInt(), numExperts, 'FFNExperts', 'numExperts');
    this.dModel = checkValue(posInt(), dModel, 'FFNExperts', 'dModel');
    this.dFF = checkValue(posInt(), dFF, 'FFNExperts', 'dFF');
    this.activation = checkActivation('FFNExperts', activation);
    const inStd = 1 / Math.sqrt(dModel);
    this.w1 = param([numExperts, dModel, dFF], { normal: inStd }, rng);
    this.w3 = activation === 'swiglu' ? param([numExperts, dModel, dFF], { normal: inStd }, rng) : null;
    this.w2 = param([numExperts, dFF, dModel], { normal: outputStd(dFF, init, 'FFNExperts') }, rng);
  }

  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`FFNExperts.forwardGrouped: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    }
    const h = groupedMatmul(x, this.w1, sizes);
    const a = this.w3 ? swiglu(h, groupedMatmul(x, this.w3, sizes)) : geluFused(h);
    return groupedMatmul(a, this.w2, sizes);
  }

  /**
   * forwardGrouped with row i of the output scaled by weights[weightIdx[i]], applied to the
   * hidden activation (same result, since the output projection is linear): the dispatch then
   * combines with an unweighted scatter, and the weight gradient comes out of the activation's
   * backward loop instead of an extra pass over the [rows, dModel] outputs.
   */
  forwardGroupedWeighted(x: Tensor, sizes: Int32Array, weights: Tensor, weightIdx: Int32Array): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`FFNExperts.forwardGroupedWeighted: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    }
    const h = groupedMatmul(x, this.w1, sizes);
    const a = this.w3 ? scaledSwiglu(h, groupedMatmul(x, this.w3, sizes), weights, weightIdx) : scaledGelu(h, weights, weightIdx);
    return groupedMatmul(a, this.w2, sizes);
  }

  /**
   * The dispatch's whole expert step: gather x's `rows` (grouped by expert per `sizes`), run the
   * experts with row i weighted by weights[weightIdx[i]], scatter-add back into x's rows. SwiGLU
   * runs as one fused op (pooled intermediates); GELU as the composition.
   */
  forwardScattered(x: Tensor, rows: Int32Array, sizes: Int32Array, weights: Tensor, weightIdx: Int32Array, shared?: FusedSharedSwiglu): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`FFNExperts.forwardScattered: x must be [rows, ${this.dModel}], got [${x.shape.join(', ')}]`);
    }
    if (shared && !this.w3) throw new Error('FFNExperts.forwardScattered: fused shared experts need SwiGLU experts');
    if (this.w3) return expertSwigluFFN(x, rows, sizes, this.w1, this.w3, this.w2, weights, weightIdx, shared);
    return scatterRows(this.forwardGroupedWeighted(gatherRows(x, rows), sizes, weights, weightIdx), rows, x.shape[0]);
  }

  flopsPerToken(e: number): number {
    if (!(e >= 0 && e < this.numExperts)) throw new Error(`FFNExperts.flopsPerToken: expert ${e} out of range [0, ${this.numExperts})`);
    return (this.w3 ? 3 : 2) * this.dModel * this.dFF;
  }

  /** Width of expert e (uniform here; the reference and analysis read it). */
  expertWidth(_e: number): number {
    return this.dFF;
  }

  /** Expert e on one row [d], densely in float64 from the same weights (the oracle of the fast path). */
  referenceForward(e: number, x: ArrayLike<number>): Float64Array {
    const d = this.dModel;
    const f = this.dFF;
    return ffnRowReference(x, d, f, this.activation, this.w1.data, this.w3?.data ?? null, this.w2.data, e * d * f, e * f * d);
  }
}

/**
 * Experts of different widths behind one ExpertBank: one stacked FFNExperts per distinct width,
 * so there is still one grouped matmul per projection per width. Expert e lives in bank
 * `bankOf[e]` at local index `localOf[e]`.
 */
export class HeterogeneousExperts extends Module implements ExpertBank {
  readonly numExperts: number;
  readonly dModel: number;
  readonly activation: Activation;
  readonly sizes: readonly number[];
  banks: FFNExperts[];
  readonly bankOf: Int32Array;
  readonly localOf: Int32Array;
  /** Global expert ids of each bank, in local order. */
  readonly bankExperts: Int32Array[];

  constructor(sizes: readonly number[], dModel: number, activation: Activation, rng: Rng, init: ExpertInit = {}) {
    super();
    if (!Array.isArray(sizes) || sizes.length === 0) throw new Error('HeterogeneousExperts: sizes must be a non-empty array of expert widths');
    sizes.forEach((f, e) => checkValue(posInt(), f, 'HeterogeneousExperts', `sizes[${e}]`));
    this.numExperts = sizes.length;
    this.dModel = checkValue(posInt(), dModel, 'HeterogeneousExperts', 'dModel');
    this.activation = checkActivation('HeterogeneousExperts', activation);
    this.sizes = Object.freeze(sizes.slice());
    // banks in order of first appearance, so equal configs give equal parameter names
    const widths: number[] = [];
    for (const f of sizes) if (!widths.includes(f)) widths.push(f);
    this.bankOf = new Int32Array(sizes.length);
    this.localOf = new Int32Array(sizes.length);
    const members: number[][] = widths.map(() => []);
    sizes.forEach((f, e) => {
      const b = widths.indexOf(f);
      this.bankOf[e] = b;
      this.localOf[e] = members[b].length;
      members[b].push(e);
    });
    this.bankExperts = members.map((m) => Int32Array.from(m));
    this.banks = widths.map((f, b) => new FFNExperts(members[b].length, dModel, f, activation, rng, init));
  }

  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor {
    const E = this.numExperts;
    if (sizes.length !== E) throw new Error(`HeterogeneousExperts.forwardGrouped: ${sizes.length} group sizes for ${E} experts`);
    if (this.banks.length === 1) return this.banks[0].forwardGrouped(x, sizes);
    const offsets = new Int32Array(E + 1);
    for (let e = 0; e < E; e++) offsets[e + 1] = offsets[e] + sizes[e];
    if (x.ndim !== 2 || x.shape[0] !== offsets[E]) {
      throw new Error(`HeterogeneousExperts.forwardGrouped: x [${x.shape.join(', ')}] does not have the ${offsets[E]} rows the sizes add up to`);
    }
    // Reorder rows bank-major (each bank's experts contiguous), run each bank once, then undo.
    const perm = new Int32Array(offsets[E]);
    const outs: Tensor[] = [];
    const inputs: { rows: Int32Array; sizes: Int32Array }[] = [];
    let p = 0;
    for (let b = 0; b < this.banks.length; b++) {
      const members = this.bankExperts[b];
      const bankSizes = new Int32Array(members.length);
      const start = p;
      for (let l = 0; l < members.length; l++) {
        const e = members[l];
        bankSizes[l] = sizes[e];
        for (let r = offsets[e]; r < offsets[e + 1]; r++) perm[p++] = r;
      }
      inputs.push({ rows: perm.subarray(start, p), sizes: bankSizes });
    }
    for (let b = 0; b < this.banks.length; b++) {
      if (inputs[b].rows.length === 0) continue;
      outs.push(this.banks[b].forwardGrouped(gatherRows(x, inputs[b].rows), inputs[b].sizes));
    }
    if (outs.length === 0) return gatherRows(x, perm); // no rows at all: an empty [0, d] result
    const stacked = outs.length === 1 ? outs[0] : concat(outs, 0);
    const inv = new Int32Array(perm.length);
    for (let i = 0; i < perm.length; i++) inv[perm[i]] = i;
    return gatherRows(stacked, inv);
  }

  flopsPerToken(e: number): number {
    if (!(e >= 0 && e < this.numExperts)) throw new Error(`HeterogeneousExperts.flopsPerToken: expert ${e} out of range [0, ${this.numExperts})`);
    return this.banks[this.bankOf[e]].flopsPerToken(this.localOf[e]);
  }

  expertWidth(e: number): number {
    return this.sizes[e];
  }

  referenceForward(e: number, x: ArrayLike<number>): Float64Array {
    return this.banks[this.bankOf[e]].referenceForward(this.localOf[e], x);
  }
}

/**
 * `count` shared experts of width dFF applied to every token (DeepSeekMoE). Their sum equals one
 * dense FFN of width count*dFF (the hidden units just concatenate), so they are stored and run
 * as one: w1, w3 [d, count*dFF], w2 [count*dFF, d].
 */
export class SharedExperts extends Module {
  readonly count: number;
  readonly dFF: number;
  readonly dModel: number;
  readonly activation: Activation;
  w1: Parameter;
  w3: Parameter | null;
  w2: Parameter;

  constructor(count: number, dModel: number, dFF: number, activation: Activation, rng: Rng, init: ExpertInit = {}) {
    super();
    this.count = checkValue(posInt(), count, 'SharedExperts', 'count');
    this.dModel = checkValue(posInt(), dModel, 'SharedExperts', 'dModel');
    this.dFF = checkValue(posInt(), dFF, 'SharedExperts', 'dFF');
    this.activation = checkActivation('SharedExperts', activation);
    const h = count * dFF;
    const inStd = 1 / Math.sqrt(dModel);
    this.w1 = param([dModel, h], { normal: inStd }, rng);
    this.w3 = activation === 'swiglu' ? param([dModel, h], { normal: inStd }, rng) : null;
    // fan-in of each shared expert's output projection is its own width dFF
    this.w2 = param([h, dModel], { normal: outputStd(dFF, init, 'SharedExperts') }, rng);
  }

  /**
   * The weights to run these shared experts inside `experts`' fused op (one more group every
   * token joins), or null when that op cannot: it needs SwiGLU on both sides, one shared width
   * equal to the routed experts' width, and a bank whose forwardScattered takes them.
   */
  fusedWith(experts: unknown): FusedSharedSwiglu | null {
    // exact classes: a subclass may compute something else in forward / forwardScattered
    if (Object.getPrototypeOf(this) !== SharedExperts.prototype || !(experts instanceof FFNExperts) || Object.getPrototypeOf(experts) !== FFNExperts.prototype) return null;
    if (!experts.w3 || !this.w3) return null;
    if (experts.dModel !== this.dModel || experts.dFF !== this.count * this.dFF) return null;
    return { w1: this.w1, w3: this.w3, w2: this.w2 };
  }

  forward(x: Tensor): Tensor {
    const h = matmul(x, this.w1);
    const a = this.w3 ? swiglu(h, matmul(x, this.w3)) : geluFused(h);
    return matmul(a, this.w2);
  }

  flopsPerToken(): number {
    return (this.w3 ? 3 : 2) * this.dModel * this.count * this.dFF;
  }

  /** One row through the shared experts one at a time, in float64 (their sum is the fused FFN). */
  referenceForward(x: ArrayLike<number>): Float64Array {
    const d = this.dModel;
    const f = this.dFF;
    const h = this.count * f;
    const y = new Float64Array(d);
    for (let s = 0; s < this.count; s++) {
      // expert s owns hidden columns [s*f, (s+1)*f) of w1/w3 and rows of w2
      const ys = ffnRowReference(x, d, f, this.activation, this.w1.data, this.w3?.data ?? null, this.w2.data, s * f, 0, h, s * f);
      for (let i = 0; i < d; i++) y[i] += ys[i];
    }
    return y;
  }
}

export interface GranularityConfig {
  numExperts: number;
  topK: number;
  dFF: number;
}

/**
 * Fine-grained expert segmentation (DeepSeekMoE): split each of E experts of width f into m
 * experts of width f/m and route each token to m*k of them, keeping parameters and compute.
 */
export function fineGrainedSegmentation(cfg: GranularityConfig, m: number): GranularityConfig {
  checkValue(posInt(), cfg.numExperts, 'fineGrainedSegmentation', 'numExperts');
  checkValue(posInt(), cfg.topK, 'fineGrainedSegmentation', 'topK');
  checkValue(posInt(), cfg.dFF, 'fineGrainedSegmentation', 'dFF');
  checkValue(posInt(), m, 'fineGrainedSegmentation', 'm (segments per expert)');
  if (cfg.topK > cfg.numExperts) throw new Error(`fineGrainedSegmentation: topK ${cfg.topK} exceeds numExperts ${cfg.numExperts}`);
  if (cfg.dFF % m !== 0) throw new Error(`fineGrainedSegmentation: dFF ${cfg.dFF} is not divisible by m=${m}`);
  return { numExperts: cfg.numExperts * m, topK: cfg.topK * m, dFF: cfg.dFF / m };
}

/** The FFN expert types' options (one spec per activation). */
const ffnOptions = {
  dFF: posInt().optional().describe('width of every expert (required unless sizes is given)'),
  sizes: z.array(posInt()).optional().describe('per-expert widths for heterogeneous experts (HMoE), one per expert'),
  outputScale: positive().optional().describe("multiplier on the output projections' init std (default 1)"),
};

function ffnSpec(activation: Activation, summary: string, paper: { authors: string; title: string; year: number }, hfHiddenAct: string) {
  return defineExperts({
    name: activation,
    summary,
    paper,
    options: ffnOptions,
    refine: (c, issue) => {
      if (c.sizes === undefined && c.dFF === undefined) issue('dFF', 'must be a positive integer');
      if (c.sizes !== undefined && c.sizes.length !== c.numExperts) {
        issue('sizes', `must be an array of ${c.numExperts} expert widths, one per expert (sizes has ${c.sizes.length} entries for numExperts ${c.numExperts})`);
      }
    },
    traits: { hfHiddenAct },
    create: (c, rng) => (c.sizes !== undefined ? new HeterogeneousExperts(c.sizes, c.dModel, activation, rng, c) : new FFNExperts(c.numExperts, c.dModel, c.dFF!, activation, rng, c)),
    createShared: (count, dModel, dFF, c, rng) => new SharedExperts(count, dModel, dFF, activation, rng, { outputScale: c.outputScale }),
  });
}

expertRegistry.register(ffnSpec('swiglu', 'SwiGLU FFN experts', { authors: 'Shazeer', title: 'GLU Variants Improve Transformer', year: 2020 }, 'silu'));
expertRegistry.register(ffnSpec('gelu', 'GELU FFN experts', { authors: 'Hendrycks & Gimpel', title: 'Gaussian Error Linear Units (GELUs)', year: 2016 }, 'gelu'));
