/**
 * Stratified MoE (Xu et al., "Towards Being Parameter-Efficient: A Stratified Sparsely Activated
 * Transformer with Dynamic Capacity", 2023): the experts of one MoE layer sit in S strata, each
 * stratum with its own expert count and width. A token enters stratum 0; the router of the
 * stratum it is at picks its top-1 expert among the experts of that stratum and every later one.
 * An expert in the current stratum computes on it (residual inside the layer,
 * h <- h + p * E(h)) and the token moves to the next stratum to be routed again; an expert in a
 * later stratum makes it skip there, where that expert computes on it. The last stratum routes
 * among its own experts only. So a token passes through 1..S experts: dynamic capacity. Each
 * stratum's experts run as one grouped matmul over the tokens there (rows sorted by expert);
 * each router gets the Switch balancing loss over the experts it chooses from.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt, nonNegative } from '../../tensor/validate.js';
import { Module, Linear } from '../../nn/index.js';
import { FFNExperts, type Activation } from '../../moe/experts/ffn.js';
import { lossRegistry } from '../../moe/losses/index.js';
import type { RouterContext, RouterOutput } from '../../moe/types.js';
import { ffnRegistry, defineFFN, type FFNModule, type FFNResult } from './registry.js';

/** One stratum's expert count and width. */
export interface Stratum {
  experts: number;
  dFF: number;
}

/** The path of one token through the strata, its experts (global ids, stratum order) and their gates. */
export interface StratifiedPath {
  experts: number[];
  gates: number[];
}

/** Stratified MoE, strata of experts of their own count and width where tokens skip ahead or move to the next stratum. */
export class StratifiedMoE extends Module implements FFNModule {
  /** Router of stratum s over the experts of strata s..S-1. */
  routers: Linear[];
  /** The experts of each stratum. */
  strata: FFNExperts[];
  readonly dModel: number;
  readonly sizes: readonly Stratum[];
  /** Global id of each stratum's first expert. */
  readonly base: number[];
  /** The last forward's per-token paths (analysis, tests). */
  lastPaths: StratifiedPath[] = [];
  constructor(
    dModel: number,
    sizes: readonly Stratum[],
    activation: Activation,
    readonly balance: number,
    rng: Rng,
    outputScale = 1,
  ) {
    super();
    this.dModel = dModel;
    this.sizes = sizes;
    this.base = [];
    let b = 0;
    for (const s of sizes) {
      this.base.push(b);
      b += s.experts;
    }
    this.routers = sizes.map((_, s) => new Linear(dModel, b - this.base[s], rng, { std: 1 / Math.sqrt(dModel) }));
    this.strata = sizes.map((s) => new FFNExperts(s.experts, dModel, s.dFF, activation, rng, { outputScale }));
  }

  /** The stratum of global expert e. */
  stratumOf(e: number): number {
    let s = 0;
    while (s + 1 < this.base.length && this.base[s + 1] <= e) s++;
    return s;
  }

  forward(x: Tensor, _ctx?: RouterContext): FFNResult {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) throw new Error(`StratifiedMoE.forward: x must be [T, ${this.dModel}], got [${x.shape.join(', ')}]`);
    const Tn = x.shape[0];
    const S = this.sizes.length;
    let h = x;
    let out: Tensor | null = null;
    const pos = new Int32Array(Tn); // the stratum each token is at
    const choice = new Int32Array(Tn).fill(-1); // its pending expert (global id), -1: to be routed
    const wRef = new Int32Array(Tn); // its gate's index in the concatenation of the routers' gate vectors
    const gates: Tensor[] = [];
    let gateCount = 0;
    const paths: StratifiedPath[] = Array.from({ length: Tn }, () => ({ experts: [], gates: [] }));
    const losses: Tensor[] = [];
    let computed = 0;
    for (let s = 0; s < S; s++) {
      const route = Int32Array.from({ length: Tn }, (_, t) => t).filter((t) => pos[t] === s && choice[t] < 0);
      if (route.length > 0) {
        const n = route.length;
        const Er = this.routers[s].outFeatures;
        const logits = this.routers[s].forward(T.gatherRows(h, route));
        const probs = T.softmax(logits, -1);
        const top = T.topkIndices(logits.data, n, Er, 1);
        const w = T.reshape(
          T.gatherRows(
            T.reshape(probs, [n * Er, 1]),
            Int32Array.from(top, (e, i) => i * Er + e),
          ),
          [n],
        );
        if (this.balance > 0) {
          const rec: RouterOutput = { logits, probs, routing: { kind: 'sparse', tokenIdx: Int32Array.from({ length: n }, (_, i) => i), expertIdx: top, weights: w }, losses: {}, metrics: {} };
          losses.push(T.scale(lossRegistry.get('switch')(rec, { numExperts: Er, tokens: n, topK: 1 }), this.balance));
        }
        route.forEach((t, i) => {
          choice[t] = this.base[s] + top[i];
          pos[t] = this.stratumOf(choice[t]);
          wRef[t] = gateCount + i;
          paths[t].gates.push(probs.data[i * Er + top[i]]);
          paths[t].experts.push(choice[t]);
        });
        gates.push(w);
        gateCount += n;
      }
      // the tokens whose expert sits in this stratum: one grouped matmul over them, sorted by expert
      const here = Int32Array.from({ length: Tn }, (_, t) => t).filter((t) => pos[t] === s && choice[t] >= 0);
      if (here.length === 0) continue;
      const E = this.sizes[s].experts;
      const sizes = new Int32Array(E);
      for (const t of here) sizes[choice[t] - this.base[s]]++;
      const sorted = Int32Array.from(here).sort((a, b) => choice[a] - choice[b] || a - b);
      const ys = this.strata[s].forwardGrouped(T.gatherRows(h, sorted), sizes);
      const delta = T.combineRows(
        ys,
        sorted,
        Tn,
        gates.length === 1 ? gates[0] : T.concat(gates, 0),
        Int32Array.from(sorted, (t) => wRef[t]),
      );
      h = T.add(h, delta);
      out = out ? T.add(out, delta) : delta;
      computed += here.length;
      for (const t of here) {
        pos[t] = s + 1;
        choice[t] = -1;
      }
    }
    this.lastPaths = paths;
    const res: FFNResult = { y: out!, metrics: { stratifiedExpertsPerToken: computed / Math.max(1, Tn) } };
    if (losses.length) res.losses = { 'stratified.switch': losses.reduce((a, b) => T.add(a, b)) };
    return res;
  }

  /** The routers plus one expert per stratum: the longest path a token can take. */
  activeParameters(): number {
    let routers = 0;
    for (const r of this.routers) routers += r.weight.size;
    let experts = 0;
    for (const b of this.strata) experts += b.numParameters() / b.numExperts;
    return routers + Math.round(experts);
  }
}

const stratum = z.object({ experts: posInt(), dFF: posInt() }).strict();

const options = {
  strata: z
    .array(stratum)
    .min(1, { error: 'must list at least one stratum' })
    .optional()
    .describe('[{ experts, dFF }] per stratum, first to last (default: two strata splitting num_local_experts, width moe_intermediate_size)'),
  balance: nonNegative().default(0.01).describe('Switch balancing loss coefficient of each stratum router'),
};

type StratifiedOptions = z.output<z.ZodObject<typeof options>>;

function strataOf(c: { num_local_experts: number; moe_intermediate_size: number }, o: StratifiedOptions): Stratum[] {
  if (o.strata) return o.strata;
  const E = c.num_local_experts;
  const first = Math.max(1, Math.ceil(E / 2));
  return [
    { experts: first, dFF: c.moe_intermediate_size },
    { experts: Math.max(1, E - first), dFF: c.moe_intermediate_size },
  ];
}

ffnRegistry.register(
  defineFFN({
    name: 'stratified',
    summary: 'experts in strata of their own count and width; a token is routed to a later stratum or moves to the next one (1..S experts per token)',
    paper: { authors: 'Xu et al.', title: 'Towards Being Parameter-Efficient: A Stratified Sparsely Activated Transformer with Dynamic Capacity', year: 2023 },
    options,
    create: (c, o, rng) => new StratifiedMoE(c.hidden_size, strataOf(c, o), c.hidden_act === 'silu' ? 'swiglu' : 'gelu', o.balance, rng, 1 / Math.sqrt(2 * c.num_hidden_layers)),
    size: (c, o) => {
      const st = strataOf(c, o);
      const d = c.hidden_size;
      const mult = c.hidden_act === 'silu' ? 3 : 2;
      let total = 0;
      let params = 0;
      let largest = 0;
      for (const s of st) total += s.experts;
      st.forEach((s, i) => {
        const before = st.slice(0, i).reduce((a, r) => a + r.experts, 0);
        params += d * (total - before) + mult * s.experts * d * s.dFF;
        largest = Math.max(largest, s.experts * d * s.dFF);
      });
      return { parameters: params, largest, tensors: st.length * (1 + mult) };
    },
    activationsPerToken: (c, o) => strataOf(c, o).reduce((a, s) => a + 3 * s.dFF + 3 * c.hidden_size + s.experts, 0),
  }),
);
