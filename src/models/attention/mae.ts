/**
 * MAE (Peng et al., "A Mixture of h-1 Heads is Better than h Heads", 2020): multi-head attention
 * as a mixture of G experts over head groups. The H heads form G equal groups; expert i is the
 * attention with every head but group i's, rescaled by G / (G - 1), and a gate g = softmax(x W_g)
 * mixes the experts:
 *   y = sum_i g_i f_i(x),  f_i(x) = G/(G-1) sum_{j not in group i} H_j(x) W_o^j,
 * which is one attention whose head j is weighted by G/(G-1) (1 - g_{group(j)}): G experts cost one
 * multi-head attention. The gate reads each token's own hidden state (causal). Training is the
 * paper's block coordinate descent, as a generic hook (`trainableAt`, read by
 * MoETransformerLM.dropScheduledGradients): blocks of `alternateEvery` steps alternate between
 * updating all other parameters with the gates fixed and updating only the gates (the
 * responsibilities) with everything else fixed; 0 trains everything jointly.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { posInt, nonNegInt } from '../../tensor/validate.js';
import { Module, Linear, type Parameter } from '../../nn/index.js';
import type { RouterContext } from '../../moe/types.js';
import { headDimOf, kvHeadsOf, type ModelConfig } from '../config.js';
import { repeatHeads } from '../mla.js';
import { ropeParams, type RopeParams } from '../rope.js';
import { attentionRegistry, defineAttention, type AttentionCacheEntry, type AttentionModule, type AttentionResult, rejectUnsupported } from './registry.js';

const options = {
  groups: posInt().optional().describe('head groups G, the experts (default num_attention_heads: each expert drops one head); must divide the heads, at least 2'),
  alternateEvery: nonNegInt().default(10).describe('block coordinate descent: steps per block, alternating experts (gates fixed) and gates (all else fixed); 0: joint training'),
};

/** What a module with a block-coordinate schedule trains at a step: only these, or all but these (null: everything). */
export interface StepTrainables {
  only?: Parameter[];
  freeze?: Parameter[];
}

/** MAE attention, a softmax gate over G head-group experts, each expert all heads but one group. */
export class MixtureOfHeadGroupsAttention extends Module implements AttentionModule {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  /** The experts' gate W_g [G, d]. */
  gate: Linear;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly groups: number;
  readonly alternateEvery: number;
  private readonly rope: RopeParams | null;

  constructor(
    readonly cfg: ModelConfig,
    opts: { groups?: number; alternateEvery: number },
    rng: Rng,
  ) {
    super();
    const d = cfg.hidden_size;
    const H = (this.heads = cfg.num_attention_heads);
    this.kvHeads = kvHeadsOf(cfg);
    const dh = (this.headDim = headDimOf(cfg));
    this.groups = opts.groups ?? H;
    this.alternateEvery = opts.alternateEvery;
    const std = cfg.initializer_range;
    const bias = cfg.attention_bias || cfg.qkv_bias;
    this.q_proj = new Linear(d, H * dh, rng, { std, bias });
    this.k_proj = new Linear(d, this.kvHeads * dh, rng, { std, bias });
    this.v_proj = new Linear(d, this.kvHeads * dh, rng, { std, bias });
    this.o_proj = new Linear(H * dh, d, rng, { std: std / Math.sqrt(2 * cfg.num_hidden_layers), bias: cfg.attention_bias });
    this.gate = new Linear(d, this.groups, rng, { std, bias: false });
    this.rope = cfg.rope_scaling ? ropeParams(cfg, dh) : null;
  }

  /** The experts' gates [n, G] (softmax over the head groups). */
  gates(x: Tensor): Tensor {
    return T.softmax(this.gate.forward(x), -1);
  }

  /** Per-token head weights [n, H] = G/(G-1) (1 - g_{group(j)}): head j is in every expert but its group's. */
  headWeights(g: Tensor): Tensor {
    const G = this.groups;
    const H = this.heads;
    const per = H / G;
    // [G, H] membership: head j belongs to group floor(j / per)
    const member = new Float32Array(G * H);
    for (let j = 0; j < H; j++) member[Math.floor(j / per) * H + j] = 1;
    return T.affine(T.matmul(g, new T.Tensor(member, [G, H])), -G / (G - 1), G / (G - 1));
  }

  /** Per-head outputs [n, H, dh] before the output projection, and the keys/values to cache. */
  private headOutputs(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry): { o: Tensor; k: Tensor; v: Tensor } {
    const n = B * Tn;
    const H = this.heads;
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}) };
    const q = T.splitHeads(this.q_proj.forward(x), B, Tn, H, rope);
    let k = T.splitHeads(this.k_proj.forward(x), B, Tn, this.kvHeads, rope);
    let v = T.splitHeads(this.v_proj.forward(x), B, Tn, this.kvHeads);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    const o = T.reshape(T.mergeHeads(T.causalAttention(q, repeatHeads(k, H), repeatHeads(v, H))), [n, H, this.headDim]);
    return { o, k, v };
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, _ctx?: RouterContext): AttentionResult {
    const n = B * Tn;
    const H = this.heads;
    if (x.ndim !== 2 || x.shape[0] !== n || x.shape[1] !== this.cfg.hidden_size) throw new Error(`MAE.forward: x must be [${n}, ${this.cfg.hidden_size}], got [${x.shape.join(', ')}]`);
    const { o, k, v } = this.headOutputs(x, B, Tn, cache);
    const w = this.headWeights(this.gates(x));
    const weighted = T.reshape(T.mul(o, T.reshape(w, [n, H, 1])), [n, H * this.headDim]);
    return { y: this.o_proj.forward(weighted), k, v };
  }

  /**
   * Expert i alone on x (test oracle of the mixture): G/(G-1) times the attention with group i's
   * heads zeroed.
   */
  expert(x: Tensor, B: number, Tn: number, i: number): Tensor {
    const n = B * Tn;
    const H = this.heads;
    const per = H / this.groups;
    const { o } = this.headOutputs(x, B, Tn);
    const mask = new Float32Array(n * H * this.headDim);
    const G = this.groups;
    for (let t = 0; t < n; t++) for (let j = 0; j < H; j++) if (Math.floor(j / per) !== i) mask.fill(G / (G - 1), (t * H + j) * this.headDim, (t * H + j + 1) * this.headDim);
    return this.o_proj.forward(T.reshape(T.maskMul(o, mask), [n, H * this.headDim]));
  }

  /** Block coordinate descent: even blocks train the experts (gates fixed), odd blocks only the gates. */
  trainableAt(step: number): StepTrainables | null {
    if (this.alternateEvery === 0) return null;
    const gates = this.gate.parameters();
    return Math.floor(step / this.alternateEvery) % 2 === 0 ? { freeze: gates } : { only: gates };
  }
}

attentionRegistry.register(
  defineAttention({
    name: 'mae',
    summary: 'mixture of head-group experts (each all heads but one group) under a softmax gate, trained by block coordinate descent',
    paper: { authors: 'Peng et al.', title: 'A Mixture of h-1 Heads is Better than h Heads', year: 2020 },
    options,
    refine: (o, c, issue) => {
      const G = o.groups ?? c.num_attention_heads;
      if (G < 2) issue('groups', `must be at least 2 (an expert drops one group), got ${G}`);
      else if (c.num_attention_heads % G !== 0) issue('groups', `must divide num_attention_heads (${c.num_attention_heads}), got ${G}`);
    },
    create: (c, o, rng) => {
      rejectUnsupported('mae', c);
      return new MixtureOfHeadGroupsAttention(c, o, rng);
    },
    parameters: (c) => {
      const d = c.hidden_size;
      const dh = headDimOf(c);
      return d * dh * (2 * c.num_attention_heads + 2 * kvHeadsOf(c)) + d * (c.num_attention_heads > 1 ? c.num_attention_heads : 2);
    },
  }),
);
