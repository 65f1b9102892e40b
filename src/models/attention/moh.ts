/**
 * Mixture-of-Head attention (Jin et al., "MoH: Multi-Head Attention as Head-Routing
 * Mixture-of-Heads Attention", 2024): the H heads are experts. The first `sharedHeads` are always
 * on; of the rest each token activates its top-k, and the head outputs are summed with weights
 * instead of concatenated with weight 1:
 *   y_t = sum_i g_{t,i} H_i(x)_t W_o^i,
 *   g_{t,i} = a1_t softmax(W_s x_t)_i (shared i),  a2_t softmax(W_r x_t)_i [i in topk] (routed i),
 *   [a1_t, a2_t] = softmax(W_h x_t).
 * Its balancing loss is the Switch loss over the routed heads (f_i * P_i), from the loss registry.
 * All heads are computed and the unchosen ones weighted 0 (the layout of the paper's code); the
 * gates are differentiable through the chosen heads' softmax and the shared/routed mix.
 */
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt, nonNegInt, nonNegative } from '../../tensor/validate.js';
import { Module, Linear } from '../../nn/index.js';
import type { RouterContext, RouterOutput } from '../../moe/types.js';
import { lossRegistry } from '../../moe/losses/index.js';
import { ConfigError } from '../../tensor/validate.js';
import { headDimOf, kvHeadsOf, type ModelConfig } from '../config.js';
import { repeatHeads } from '../mla.js';
import { ropeParams, type RopeParams } from '../rope.js';
import { headRouterLosses, evalContext } from './moa.js';
import { attentionRegistry, defineAttention, type AttentionCacheEntry, type AttentionModule, type AttentionResult, rejectUnsupported } from './registry.js';

const options = {
  sharedHeads: nonNegInt().default(1).describe('heads every token uses (of num_attention_heads)'),
  topK: posInt().default(2).describe('routed heads each token activates'),
  losses: z.record(z.string(), nonNegative('a finite non-negative coefficient')).default({ switch: 0.01 }).describe('balancing losses of the head router: loss name -> coefficient'),
};

type MoHOptions = z.output<z.ZodObject<typeof options>>;

/** MoH: shared heads plus top-k routed heads per token, head outputs summed with router weights. */
export class MixtureOfHeadAttention extends Module implements AttentionModule {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  /** Routed-head logits W_r [d, H - sharedHeads]. */
  head_router: Linear;
  /** Shared-head logits W_s [d, sharedHeads] (null without shared heads). */
  shared_router: Linear | null;
  /** The shared/routed mix W_h [d, 2] (null without shared heads: routed gates only). */
  mix_router: Linear | null;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly sharedHeads: number;
  readonly topK: number;
  private readonly lossCoefs: Record<string, number>;
  private readonly rope: RopeParams | null;

  constructor(
    readonly cfg: ModelConfig,
    opts: MoHOptions,
    rng: Rng,
  ) {
    super();
    const d = cfg.hidden_size;
    const H = (this.heads = cfg.num_attention_heads);
    this.kvHeads = kvHeadsOf(cfg);
    const dh = (this.headDim = headDimOf(cfg));
    this.sharedHeads = opts.sharedHeads;
    this.topK = opts.topK;
    for (const name of Object.keys(opts.losses))
      if (!lossRegistry.has(name)) throw new ConfigError(`model config: attention_options.losses: unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`);
    this.lossCoefs = opts.losses;
    const std = cfg.initializer_range;
    const bias = cfg.attention_bias || cfg.qkv_bias;
    this.q_proj = new Linear(d, H * dh, rng, { std, bias });
    this.k_proj = new Linear(d, this.kvHeads * dh, rng, { std, bias });
    this.v_proj = new Linear(d, this.kvHeads * dh, rng, { std, bias });
    this.o_proj = new Linear(H * dh, d, rng, { std: std / Math.sqrt(2 * cfg.num_hidden_layers), bias: cfg.attention_bias });
    this.head_router = new Linear(d, H - opts.sharedHeads, rng, { std, bias: false });
    this.shared_router = opts.sharedHeads > 0 ? new Linear(d, opts.sharedHeads, rng, { std, bias: false }) : null;
    this.mix_router = opts.sharedHeads > 0 ? new Linear(d, 2, rng, { std, bias: false }) : null;
    this.rope = cfg.rope_scaling ? ropeParams(cfg, dh) : null;
  }

  /**
   * The per-token head gates [n, H] (differentiable) and the routed heads' routing record (for
   * the balancing losses): shared heads first, then routed heads.
   */
  gates(x: Tensor): { gates: Tensor; routed: RouterOutput } {
    const n = x.shape[0];
    const H = this.heads;
    const Hs = this.sharedHeads;
    const Hr = H - Hs;
    const logits = this.head_router.forward(x);
    const probs = T.softmax(logits, -1);
    const top = T.topkIndices(logits.data, n, Hr, this.topK);
    const mask = new Float32Array(n * Hr);
    const tokenIdx = new Int32Array(n * this.topK);
    for (let i = 0; i < top.length; i++) {
      tokenIdx[i] = Math.floor(i / this.topK);
      mask[tokenIdx[i] * Hr + top[i]] = 1;
    }
    let routedG = T.maskMul(probs, mask);
    let gates: Tensor;
    if (this.shared_router && this.mix_router) {
      const mix = T.softmax(this.mix_router.forward(x), -1);
      const [a1, a2] = T.split(mix, [1, 1], 1);
      const sharedG = T.mul(T.softmax(this.shared_router.forward(x), -1), a1);
      routedG = T.mul(routedG, a2);
      gates = T.concat([sharedG, routedG], 1);
    } else gates = routedG;
    const weights = T.gatherRows(
      T.reshape(probs, [n * Hr, 1]),
      Int32Array.from(top, (h, i) => tokenIdx[i] * Hr + h),
    );
    const routed: RouterOutput = { logits, probs, routing: { kind: 'sparse', tokenIdx, expertIdx: top, weights: T.reshape(weights, [n * this.topK]) }, losses: {}, metrics: {} };
    return { gates, routed };
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, _ctx: RouterContext = evalContext()): AttentionResult {
    const n = B * Tn;
    const H = this.heads;
    const dh = this.headDim;
    if (x.ndim !== 2 || x.shape[0] !== n || x.shape[1] !== this.cfg.hidden_size) throw new Error(`MoH.forward: x must be [${n}, ${this.cfg.hidden_size}], got [${x.shape.join(', ')}]`);
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}) };
    const q = T.splitHeads(this.q_proj.forward(x), B, Tn, H, rope);
    let k = T.splitHeads(this.k_proj.forward(x), B, Tn, this.kvHeads, rope);
    let v = T.splitHeads(this.v_proj.forward(x), B, Tn, this.kvHeads);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    const o = T.reshape(T.mergeHeads(T.causalAttention(q, repeatHeads(k, H), repeatHeads(v, H))), [n, H, dh]);
    const { gates, routed } = this.gates(x);
    const weighted = T.reshape(T.mul(o, T.reshape(gates, [n, H, 1])), [n, H * dh]);
    return { y: this.o_proj.forward(weighted), k, v, losses: headRouterLosses(routed, this.lossCoefs, H - this.sharedHeads, n, this.topK) };
  }
}

attentionRegistry.register(
  defineAttention({
    name: 'moh',
    summary: 'mixture-of-head attention: shared heads always on, top-k routed heads per token, head outputs summed with router weights',
    paper: { authors: 'Jin et al.', title: 'MoH: Multi-Head Attention as Head-Routing Mixture-of-Heads Attention', year: 2024 },
    options,
    refine: (o, c, issue) => {
      const routed = c.num_attention_heads - o.sharedHeads;
      if (routed < 1) issue('sharedHeads', `must leave at least one routed head (num_attention_heads ${c.num_attention_heads})`);
      else if (o.topK > routed) issue('topK', `must be at most the routed heads (num_attention_heads - sharedHeads = ${routed})`);
    },
    create: (c, o, rng) => {
      rejectUnsupported('moh', c);
      return new MixtureOfHeadAttention(c, o, rng);
    },
  }),
);
