/**
 * BAM's soft mixture of attention experts (Zhang et al., "BAM! Just Like That: Simple and
 * Efficient Parameter Upcycling for Mixture of Experts", 2024): E full multi-head attentions
 * (own q/k/v/o each) and a router whose softmax weights mix all of them per token,
 *   y = sum_e softmax(x W_r^T)_e Attn_e(x).
 * Every expert computes on every token (BAM found soft routing best for attention). Upcycled from
 * a dense attention (src/models/upcycle.ts upcycleAttention) all experts are copies and the
 * weights sum to 1, so the layer computes the dense attention exactly whatever the router says.
 * The cache holds the experts' keys/values side by side on the head axis.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { posInt } from '../../tensor/validate.js';
import { Module, Linear } from '../../nn/index.js';
import type { RouterContext } from '../../moe/types.js';
import { Attention } from '../transformer.js';
import { headDimOf, type ModelConfig } from '../config.js';
import { attentionRegistry, defineAttention, type AttentionCacheEntry, type AttentionModule, type AttentionResult } from './registry.js';

const options = {
  experts: posInt().default(2).describe('attention experts, each a full multi-head attention (own q, k, v, o)'),
};

/** BAM attention: a per-token softmax mixture of E full attentions. */
export class BAMAttention extends Module implements AttentionModule {
  experts: Attention[];
  /** Router W_r [E, d]; zero at init, so the mixture starts uniform. */
  router: Linear;
  readonly numExperts: number;

  constructor(cfg: ModelConfig, opts: { experts: number }, rng: Rng, layerIndex: number) {
    super();
    this.numExperts = opts.experts;
    this.experts = Array.from({ length: opts.experts }, () => new Attention(cfg, rng, layerIndex));
    this.router = new Linear(cfg.hidden_size, opts.experts, rng, { bias: false, std: 0 });
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, _ctx?: RouterContext): AttentionResult {
    const E = this.numExperts;
    const kv = this.experts[0].kvHeads;
    const g = T.softmax(this.router.forward(x), -1);
    let y: Tensor | null = null;
    const ks: Tensor[] = [];
    const vs: Tensor[] = [];
    this.experts.forEach((a, e) => {
      const c = cache ? { offset: cache.offset, k: cache.k && T.slice(cache.k, 1, e * kv, (e + 1) * kv), v: cache.v && T.slice(cache.v, 1, e * kv, (e + 1) * kv) } : undefined;
      const r = a.forward(x, B, Tn, c);
      ks.push(r.k);
      vs.push(r.v);
      const term = T.mul(r.y, T.slice(g, 1, e, e + 1));
      y = y ? T.add(y, term) : term;
    });
    return { y: y!, k: E > 1 ? T.concat(ks, 1) : ks[0], v: E > 1 ? T.concat(vs, 1) : vs[0] };
  }
}

attentionRegistry.register(
  defineAttention({
    name: 'bam',
    summary: 'soft mixture of full attention experts (BAM upcycling: moe-ts upcycle --attention-experts)',
    paper: { authors: 'Zhang et al.', title: 'BAM! Just Like That: Simple and Efficient Parameter Upcycling for Mixture of Experts', year: 2024 },
    options,
    create: (c, o, rng, layer) => new BAMAttention(c, o as { experts: number }, rng, layer),
    parameters: (c) => {
      const hd = headDimOf(c);
      const kvh = c.num_key_value_heads ?? c.num_attention_heads;
      const d = c.hidden_size;
      const e = (c.attention_options?.experts as number | undefined) ?? 2;
      return e * (2 * d * c.num_attention_heads * hd + 2 * d * kvh * hd) + e * d;
    },
  }),
);
