/**
 * PEER (He, "Mixture of A Million Experts", 2024): parameter-efficient expert retrieval over a
 * pool of N single-neuron experts e_i(x) = act(u_i . x) v_i. Each of `heads` query heads maps x
 * to a query q = [q1, q2] and retrieves its top-k experts by product keys: expert i = (a, b) has
 * the key [c_a, c'_b] from two sub-key sets of sqrt(N) each, so its score is q1.c_a + q2.c'_b and
 * the top-k over all N experts lies among the k x k pairs of each half's top-k (scores of N
 * experts are never formed: O(sqrt(N) + k^2) per query). The output is
 *   y = sum_h sum_{i in topk_h} softmax_k(score)_i act(u_i . x) v_i,
 * with the expert pool shared by the heads. The experts' tables u, v [N, d] are row-sparse
 * parameters (src/nn/sparse.ts): backward writes only the retrieved rows and AdamW updates only
 * those, so a step costs O(tokens * heads * k * d), not O(N d). The paper's query BatchNorm is
 * left out (it makes a causal LM's outputs depend on the batch); the query is a plain projection.
 */
import { Tensor, result, accumulateGrad } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { getBackend } from '../../tensor/backend.js';
import { topkIndices } from '../../tensor/index.js';
import { z, posInt, positive } from '../../tensor/validate.js';
import { Module, Linear, Parameter, param, RowSparseParameter, accumulateRowGrad } from '../../nn/index.js';
import type { RouterContext } from '../../moe/types.js';
import { ffnRegistry, defineFFN, type FFNModule, type FFNResult } from './registry.js';

/** PEER's sizes. */
export interface PEERConfig {
  dModel: number;
  /** Experts N, a perfect square (sqrt(N) sub-keys per half). */
  numExperts: number;
  /** Query heads, each retrieving topK experts from the shared pool. */
  heads: number;
  topK: number;
  /** Query/key width (even: two halves of keyDim / 2). */
  keyDim: number;
  activation: 'gelu' | 'relu';
  /** Multiplier on the init std of the experts' output vectors v (default 1). */
  outputScale?: number;
}

/** The top-k of s1[a] + s2[b] over all pairs (a, b) of each row, from the k x k pairs of the halves' top-k, in descending order. */
export function productKeyTopK(s1: Float32Array, s2: Float32Array, rows: number, n: number, k: number): { a: Int32Array; b: Int32Array; scores: Float32Array } {
  if (k > n) throw new Error(`productKeyTopK: k=${k} exceeds the ${n} sub-keys per half`);
  const i1 = topkIndices(s1, rows, n, k);
  const i2 = topkIndices(s2, rows, n, k);
  const kk = k * k;
  const cand = new Float32Array(rows * kk);
  for (let r = 0; r < rows; r++)
    for (let p = 0; p < k; p++) {
      const v1 = s1[r * n + i1[r * k + p]];
      for (let q = 0; q < k; q++) cand[r * kk + p * k + q] = v1 + s2[r * n + i2[r * k + q]];
    }
  const best = topkIndices(cand, rows, kk, k);
  const a = new Int32Array(rows * k);
  const b = new Int32Array(rows * k);
  const scores = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < k; j++) {
      const pos = best[r * k + j];
      a[r * k + j] = i1[r * k + Math.floor(pos / k)];
      b[r * k + j] = i2[r * k + (pos % k)];
      scores[r * k + j] = cand[r * kk + pos];
    }
  return { a, b, scores };
}

const GELU_C = Math.sqrt(2 / Math.PI);

function actFwd(kind: 'gelu' | 'relu', z: number): number {
  if (kind === 'relu') return z > 0 ? z : 0;
  return 0.5 * z * (1 + Math.tanh(GELU_C * (z + 0.044715 * z * z * z)));
}

function actGrad(kind: 'gelu' | 'relu', z: number): number {
  if (kind === 'relu') return z > 0 ? 1 : 0;
  const th = Math.tanh(GELU_C * (z + 0.044715 * z * z * z));
  return 0.5 * (1 + th) + 0.5 * z * (1 - th * th) * GELU_C * (1 + 3 * 0.044715 * z * z);
}

/** The retrieval of one forward, for row r = t * heads + h its k experts (a * n + b) and softmax gates. */
export interface PEERRetrieval {
  experts: Int32Array;
  gates: Float32Array;
}

/** A PEER layer, product-key retrieval of top-k single-neuron experts per head from a pool of N. */
export class PEERLayer extends Module implements FFNModule {
  /** Queries of all heads: [heads * keyDim, d]. */
  query: Linear;
  /** Sub-keys of the first and second query half: [sqrt(N), keyDim / 2]. */
  sub_keys1: Parameter;
  sub_keys2: Parameter;
  /** Expert input vectors u_i [N, d] (row-sparse). */
  down: RowSparseParameter;
  /** Expert output vectors v_i [N, d] (row-sparse). */
  up: RowSparseParameter;
  readonly dModel: number;
  readonly numExperts: number;
  readonly heads: number;
  readonly topK: number;
  readonly keyDim: number;
  readonly activation: 'gelu' | 'relu';
  /** sqrt(N): sub-keys per half. */
  readonly subKeys: number;
  /** The last forward's retrieval (analysis, tests). */
  lastRetrieval: PEERRetrieval | null = null;
  /** expert -> slot among the rows one backward touches (-1: untouched); reset after each backward. */
  private slot: Int32Array | null = null;

  constructor(cfg: PEERConfig, rng: Rng) {
    super();
    const n = Math.round(Math.sqrt(cfg.numExperts));
    if (n * n !== cfg.numExperts) throw new Error(`PEERLayer: numExperts must be a perfect square, got ${cfg.numExperts}`);
    if (cfg.keyDim % 2 !== 0) throw new Error(`PEERLayer: keyDim must be even, got ${cfg.keyDim}`);
    if (cfg.topK > n) throw new Error(`PEERLayer: topK must be at most sqrt(numExperts) (${n}), got ${cfg.topK}`);
    this.dModel = cfg.dModel;
    this.numExperts = cfg.numExperts;
    this.heads = cfg.heads;
    this.topK = cfg.topK;
    this.keyDim = cfg.keyDim;
    this.activation = cfg.activation;
    this.subKeys = n;
    const d = cfg.dModel;
    const dk2 = cfg.keyDim / 2;
    this.query = new Linear(d, cfg.heads * cfg.keyDim, rng, { std: 1 / Math.sqrt(d) });
    this.sub_keys1 = param([n, dk2], { normal: 1 / Math.sqrt(dk2) }, rng);
    this.sub_keys2 = param([n, dk2], { normal: 1 / Math.sqrt(dk2) }, rng);
    const u = new Float32Array(cfg.numExperts * d);
    rng.fillNormal(u, 1 / Math.sqrt(d));
    this.down = new RowSparseParameter(u, [cfg.numExperts, d]);
    // each head's output is a gate-weighted average of its experts: v's std keeps the sum over heads at the dense FFN's scale
    const v = new Float32Array(cfg.numExperts * d);
    rng.fillNormal(v, (cfg.outputScale ?? 1) / Math.sqrt(cfg.heads));
    this.up = new RowSparseParameter(v, [cfg.numExperts, d]);
  }

  /** Parameters one token uses: the query, the sub-keys and heads * topK experts' two vectors. */
  activeParameters(): number {
    return this.query.weight.size + this.sub_keys1.size + this.sub_keys2.size + 2 * this.heads * this.topK * this.dModel;
  }

  /** The retrieval alone: each (token, head) row's top-k experts and their scores, from the queries [T, heads * keyDim]. */
  retrieve(q: Float32Array, T: number): { a: Int32Array; b: Int32Array; scores: Float32Array; q1: Float32Array; q2: Float32Array } {
    const R = T * this.heads;
    const dk = this.keyDim;
    const dk2 = dk / 2;
    const n = this.subKeys;
    const q1 = new Float32Array(R * dk2);
    const q2 = new Float32Array(R * dk2);
    for (let r = 0; r < R; r++) {
      q1.set(q.subarray(r * dk, r * dk + dk2), r * dk2);
      q2.set(q.subarray(r * dk + dk2, (r + 1) * dk), r * dk2);
    }
    const be = getBackend();
    // sub-key scores [R, sqrt(N)] per half through the backend's GEMM: the only O(sqrt(N)) work
    const s1 = be.matmul(q1, this.sub_keys1.data, R, dk2, n, { transB: true });
    const s2 = be.matmul(q2, this.sub_keys2.data, R, dk2, n, { transB: true });
    return { ...productKeyTopK(s1, s2, R, n, this.topK), q1, q2 };
  }

  forward(x: Tensor, _ctx?: RouterContext): FFNResult {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`PEERLayer.forward: x must be [T, ${this.dModel}], got [${x.shape.join(', ')}]`);
    return { y: this.mix(x, this.query.forward(x)) };
  }

  /** y = sum over heads and retrieved experts of gate * act(u . x) v, with its backward (one op: batched gathers over the retrieved rows). */
  private mix(x: Tensor, q: Tensor): Tensor {
    const T = x.shape[0];
    const d = this.dModel;
    const H = this.heads;
    const k = this.topK;
    const n = this.subKeys;
    const dk = this.keyDim;
    const dk2 = dk / 2;
    const R = T * H;
    const { a, b, scores, q1, q2 } = this.retrieve(q.data, T);
    const experts = new Int32Array(R * k);
    const gates = new Float32Array(R * k);
    for (let r = 0; r < R; r++) {
      const o = r * k;
      let m = -Infinity;
      for (let j = 0; j < k; j++) m = Math.max(m, scores[o + j]);
      let s = 0;
      for (let j = 0; j < k; j++) s += Math.exp(scores[o + j] - m);
      for (let j = 0; j < k; j++) {
        gates[o + j] = Math.exp(scores[o + j] - m) / s;
        experts[o + j] = a[o + j] * n + b[o + j];
      }
    }
    this.lastRetrieval = { experts, gates };
    const X = x.data;
    const U = this.down.data;
    const V = this.up.data;
    const kind = this.activation;
    const pre = new Float32Array(R * k);
    const y = new Float32Array(T * d);
    for (let t = 0; t < T; t++) {
      const xo = t * d;
      for (let j = 0; j < H * k; j++) {
        const e = t * H * k + j;
        const uo = experts[e] * d;
        let dot = 0;
        for (let c = 0; c < d; c++) dot += X[xo + c] * U[uo + c];
        pre[e] = dot;
        const coef = gates[e] * actFwd(kind, dot);
        for (let c = 0; c < d; c++) y[xo + c] += coef * V[uo + c];
      }
    }
    const K1 = this.sub_keys1;
    const K2 = this.sub_keys2;
    const down = this.down;
    const up = this.up;
    return result(y, [T, d], [x, q, K1, K2, down, up], (gy) => {
      const gx = new Float32Array(T * d);
      const gq = new Float32Array(R * dk);
      const gK1 = new Float32Array(K1.size);
      const gK2 = new Float32Array(K2.size);
      // unique retrieved experts -> their gradient rows
      const slot = (this.slot ??= new Int32Array(this.numExperts).fill(-1));
      const rows: number[] = [];
      for (let e = 0; e < experts.length; e++) if (slot[experts[e]] < 0) slot[experts[e]] = rows.push(experts[e]) - 1;
      const gU = new Float32Array(rows.length * d);
      const gV = new Float32Array(rows.length * d);
      const dGate = new Float64Array(k);
      for (let t = 0; t < T; t++) {
        const xo = t * d;
        for (let h = 0; h < H; h++) {
          const r = t * H + h;
          for (let j = 0; j < k; j++) {
            const e = r * k + j;
            const i = experts[e];
            const uo = i * d;
            const so = slot[i] * d;
            let c = 0;
            for (let cc = 0; cc < d; cc++) c += gy[xo + cc] * V[uo + cc];
            const z = pre[e];
            const av = actFwd(kind, z);
            const g = gates[e];
            dGate[j] = av * c;
            const dz = g * c * actGrad(kind, z);
            const ga = g * av;
            for (let cc = 0; cc < d; cc++) {
              gx[xo + cc] += dz * U[uo + cc];
              gU[so + cc] += dz * X[xo + cc];
              gV[so + cc] += ga * gy[xo + cc];
            }
          }
          // softmax over the k scores, then score = q1 . c_a + q2 . c'_b
          let dot = 0;
          for (let j = 0; j < k; j++) dot += gates[r * k + j] * dGate[j];
          for (let j = 0; j < k; j++) {
            const e = r * k + j;
            const ds = gates[e] * (dGate[j] - dot);
            const ao = a[e] * dk2;
            const bo = b[e] * dk2;
            for (let cc = 0; cc < dk2; cc++) {
              gq[r * dk + cc] += ds * K1.data[ao + cc];
              gq[r * dk + dk2 + cc] += ds * K2.data[bo + cc];
              gK1[ao + cc] += ds * q1[r * dk2 + cc];
              gK2[bo + cc] += ds * q2[r * dk2 + cc];
            }
          }
        }
      }
      const touched = Int32Array.from(rows);
      for (const i of rows) slot[i] = -1;
      accumulateGrad(x, gx, true);
      accumulateGrad(q, gq, true);
      accumulateGrad(K1, gK1, true);
      accumulateGrad(K2, gK2, true);
      if (down.requiresGrad) accumulateRowGrad(down, touched, gU);
      if (up.requiresGrad) accumulateRowGrad(up, touched.slice(), gV);
    });
  }
}

const options = {
  numExperts: posInt('a positive perfect square').default(16384).describe('experts N in the pool (a perfect square: sqrt(N) sub-keys per half)'),
  heads: posInt().default(4).describe('query heads, each retrieving topK experts from the shared pool'),
  topK: posInt().default(8).describe('experts each head retrieves (at most sqrt(numExperts))'),
  keyDim: posInt('a positive even integer').optional().describe('query/key width (default: hidden_size rounded up to even)'),
  activation: z.enum(['gelu', 'relu'], { error: 'must be one of gelu, relu' }).default('gelu').describe('the single-neuron experts\u2019 activation'),
  outputScale: positive().optional().describe("multiplier on the output vectors' init std (default: the model's residual scaling)"),
};

type PEEROptions = z.output<z.ZodObject<typeof options>>;

const keyDimOf = (o: PEEROptions, d: number): number => o.keyDim ?? d + (d % 2);

ffnRegistry.register(
  defineFFN({
    name: 'peer',
    summary: 'product-key retrieval of top-k single-neuron experts per head from a pool of up to millions (PEER)',
    paper: { authors: 'He', title: 'Mixture of A Million Experts', year: 2024 },
    options,
    refine: (o, _c, issue) => {
      const n = Math.round(Math.sqrt(o.numExperts));
      if (n * n !== o.numExperts) issue('numExperts', `must be a perfect square, got ${o.numExperts}`);
      else if (o.topK > n) issue('topK', `must be at most sqrt(numExperts) (${n}), got ${o.topK}`);
      if (o.keyDim !== undefined && o.keyDim % 2 !== 0) issue('keyDim', `must be even, got ${o.keyDim}`);
    },
    create: (c, o, rng) =>
      new PEERLayer(
        {
          dModel: c.hidden_size,
          numExperts: o.numExperts,
          heads: o.heads,
          topK: o.topK,
          keyDim: keyDimOf(o, c.hidden_size),
          activation: o.activation,
          outputScale: o.outputScale ?? 1 / Math.sqrt(2 * c.num_hidden_layers),
        },
        rng,
      ),
    size: (c, o) => {
      const d = c.hidden_size;
      const dk = keyDimOf(o, d);
      const n = Math.round(Math.sqrt(o.numExperts));
      return { parameters: o.heads * dk * d + n * dk + 2 * o.numExperts * d, largest: o.numExperts * d, tensors: 5 };
    },
    // queries, the two halves' sub-key scores, the retrieved experts' pre-activations and gates
    activationsPerToken: (c, o) => o.heads * (keyDimOf(o, c.hidden_size) + 2 * Math.round(Math.sqrt(o.numExperts)) + 4 * o.topK) + c.hidden_size,
  }),
);
