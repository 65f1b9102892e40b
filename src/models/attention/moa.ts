/**
 * Mixture of Attention Heads (Zhang et al., "Mixture of Attention Heads: Selecting Attention
 * Heads Per Token", 2022): a pool of E attention experts, each with its own query and output
 * projections W_q^e [d, dh], W_o^e [dh, d]; one key and one value projection shared by all. A
 * router picks k experts per token and the output is the gate-weighted sum of the chosen heads:
 *   y_t = sum_{e in topk(t)} g_{t,e} * softmax(q_t^e K^T / sqrt(dh)) V W_o^e,  q_t^e = x_t W_q^e.
 * The router is any registered sparse router (default topk), so its balancing losses come from the
 * loss registry. Only the chosen heads are computed: queries and outputs run as grouped matmuls
 * over the assignments sorted by expert (the MoE dispatch layout), and attention runs once with
 * each token's chosen heads as k "slots" over the shared keys. The KV cache is one head wide.
 */
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt, nonNegative } from '../../tensor/validate.js';
import { Module, Linear, Parameter, param } from '../../nn/index.js';
import { buildRouter } from '../../moe/routers/index.js';
import { lossRegistry } from '../../moe/losses/index.js';
import { sortByExpert } from '../../moe/dispatch/dropless.js';
import type { Router, RouterContext, RouterOutput } from '../../moe/types.js';
import { ConfigError } from '../../tensor/validate.js';
import { headDimOf, type ModelConfig } from '../config.js';
import { repeatHeads } from '../mla.js';
import { ropeParams, type RopeParams } from '../rope.js';
import { attentionRegistry, defineAttention, type AttentionCacheEntry, type AttentionModule, type AttentionResult, rejectUnsupported } from './registry.js';

/** A routing context for calls without one (evaluation outside the model). */
export function evalContext(): RouterContext {
  return { training: false, step: 0, rng: new Rng(0) };
}

/** Balancing losses of a head router: lossRegistry name -> coefficient, each scaled, keyed by name. */
export function headRouterLosses(out: RouterOutput, coefs: Record<string, number>, numExperts: number, tokens: number, topK: number): Record<string, Tensor> {
  const losses: Record<string, Tensor> = {};
  for (const [name, coef] of Object.entries(coefs)) if (coef > 0) losses[name] = T.scale(lossRegistry.get(name)(out, { numExperts, tokens, topK }), coef);
  for (const [name, l] of Object.entries(out.losses)) losses[name in losses ? `router.${name}` : name] = l;
  return losses;
}

const options = {
  numExperts: posInt().default(8).describe('attention experts (heads) in the pool'),
  topK: posInt().default(2).describe('heads each token uses'),
  headDim: posInt().optional().describe('width of each head (default head_dim of the model); must be even (RoPE)'),
  router: z
    .looseObject({ type: z.string({ error: 'must be a string' }) })
    .default({ type: 'topk' })
    .describe('a sparse router from the router registry and its options'),
  losses: z.record(z.string(), nonNegative('a finite non-negative coefficient')).default({ switch: 0.01 }).describe('balancing losses of the head router: loss name -> coefficient'),
};

type MoAOptions = z.output<z.ZodObject<typeof options>>;

/** MoA: top-k of E attention heads per token (own query/output projections, shared keys/values). */
export class MixtureOfAttentionHeads extends Module implements AttentionModule {
  router: Router;
  /** Per-expert query projections [E, d, dh]. */
  q_experts: Parameter;
  /** Per-expert output projections [E, dh, d]. */
  o_experts: Parameter;
  k_proj: Linear;
  v_proj: Linear;
  readonly numExperts: number;
  readonly topK: number;
  readonly headDim: number;
  private readonly lossCoefs: Record<string, number>;
  private readonly rope: RopeParams | null;

  constructor(
    readonly cfg: ModelConfig,
    opts: MoAOptions,
    rng: Rng,
  ) {
    super();
    const d = cfg.hidden_size;
    const E = (this.numExperts = opts.numExperts);
    this.topK = opts.topK;
    const dh = (this.headDim = opts.headDim ?? headDimOf(cfg));
    const { type, ...routerOpts } = opts.router;
    const built = buildRouter({ ...routerOpts, type, dModel: d, numExperts: E, topK: opts.topK }, rng);
    if (built.spec.traits.routing !== 'sparse') throw new ConfigError(`model config: attention_options.router.type must be a sparse router (MoA picks heads per token), "${type}" routes softly`);
    this.router = built.router;
    for (const name of Object.keys(opts.losses))
      if (!lossRegistry.has(name)) throw new ConfigError(`model config: attention_options.losses: unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`);
    this.lossCoefs = opts.losses;
    const std = cfg.initializer_range;
    this.q_experts = param([E, d, dh], { normal: std }, rng);
    this.k_proj = new Linear(d, dh, rng, { std });
    this.v_proj = new Linear(d, dh, rng, { std });
    this.o_experts = param([E, dh, d], { normal: std / Math.sqrt(2 * cfg.num_hidden_layers) }, rng);
    this.rope = cfg.rope_scaling ? ropeParams(cfg, dh) : null;
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, ctx: RouterContext = evalContext()): AttentionResult {
    const n = B * Tn;
    const E = this.numExperts;
    const dh = this.headDim;
    if (x.ndim !== 2 || x.shape[0] !== n || x.shape[1] !== this.cfg.hidden_size) throw new Error(`MoA.forward: x must be [${n}, ${this.cfg.hidden_size}], got [${x.shape.join(', ')}]`);
    const out = this.router.route(x, ctx);
    if (out.routing.kind !== 'sparse') throw new Error('MoA.forward: the head router returned soft routing');
    const r = out.routing;
    const A = r.tokenIdx.length;
    // slot s of token t = its s-th assignment; S slots per token (tokens with fewer leave zero queries no output reads)
    const count = new Int32Array(n);
    const slot = new Int32Array(A);
    for (let a = 0; a < A; a++) slot[a] = count[r.tokenIdx[a]]++;
    let S = 1;
    for (let t = 0; t < n; t++) if (count[t] > S) S = count[t];
    const sort = sortByExpert(r.tokenIdx, r.expertIdx, E);
    const slotRow = new Int32Array(A);
    for (let p = 0; p < A; p++) {
      const a = sort.order[p];
      slotRow[p] = r.tokenIdx[a] * S + slot[a];
    }
    const qSorted = T.groupedMatmul(T.gatherRows(x, sort.rows), this.q_experts, sort.sizes);
    const qFlat = T.reshape(T.scatterRows(qSorted, slotRow, n * S), [n, S * dh]);
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}) };
    const q = T.splitHeads(qFlat, B, Tn, S, rope);
    let k = T.splitHeads(this.k_proj.forward(x), B, Tn, 1, rope);
    let v = T.splitHeads(this.v_proj.forward(x), B, Tn, 1);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    const o = T.causalAttention(q, repeatHeads(k, S), repeatHeads(v, S));
    const oRows = T.gatherRows(T.reshape(T.mergeHeads(o), [n * S, dh]), slotRow);
    const y = T.combineRows(T.groupedMatmul(oRows, this.o_experts, sort.sizes), sort.rows, n, r.weights, sort.order);
    return { y, k, v, losses: headRouterLosses(out, this.lossCoefs, E, n, this.topK) };
  }
}

attentionRegistry.register(
  defineAttention({
    name: 'moa',
    summary: 'mixture of attention heads: a router picks k of E heads per token, each with its own query/output projections, shared keys/values',
    paper: { authors: 'Zhang et al.', title: 'Mixture of Attention Heads: Selecting Attention Heads Per Token', year: 2022 },
    options,
    refine: (o, c, issue) => {
      if (o.topK > o.numExperts) issue('topK', `must be at most numExperts (${o.numExperts})`);
      if ((o.headDim ?? headDimOf(c)) % 2 !== 0) issue('headDim', 'must be even for rotary embeddings');
    },
    create: (c, o, rng) => {
      rejectUnsupported('moa', c);
      return new MixtureOfAttentionHeads(c, o, rng);
    },
  }),
);
