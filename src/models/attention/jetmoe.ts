/**
 * JetMoE's mixture of attention heads (attention_type 'jetmoe-moa'), exactly as transformers'
 * modeling_jetmoe.py computes it:
 *
 *   Zhang et al., "Mixture of Attention Heads: Selecting Attention Heads Per Token", 2022 (MoA);
 *   Shen et al., "JetMoE: Reaching Llama2 Performance with 0.1M Dollars", 2024.
 *
 * Unlike 'moa' (one shared key/value head), each of E attention experts owns a query projection
 * [kvd, d] and an output projection [d, kvd] over all kvHeads key/value heads (kvd = kvHeads *
 * headDim), and keys/values come from one shared projection kv_proj [2 kvd, d] (keys first). A
 * softmax over the top-k router logits picks k experts per token; slot j's query head g attends to
 * kv head g (transformers tiles the keys with .repeat over the slots; here query head g*k + j, so
 * grouped-query attention's head -> kv-head map gives the same pairing), its output goes through
 * expert j's output projection, the k results are summed with the gate weights and a bias [d] is
 * added. Parameters keep the Hugging Face layout ([E, out, in]) so import/export are plain copies.
 * The router output joins the model's all-layers Switch loss (JetMoE's load_balancing_loss_func).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { Module, Linear, Parameter, param } from '../../nn/index.js';
import { routerRegistry } from '../../moe/routers/index.js';
import type { Router, RouterContext } from '../../moe/types.js';
import { posInt, ConfigError } from '../../tensor/validate.js';
import { type ModelConfig, headDimOf, kvHeadsOf } from '../config.js';
import { ropeParams, type RopeParams } from '../rope.js';
import { repeatHeads } from '../mla.js';
import { attentionRegistry, defineAttention, rejectUnsupported, type AttentionCacheEntry, type AttentionModule, type AttentionResult } from './registry.js';

class ParallelLinear extends Module {
  /** [E, out, in] (one nn.Linear weight per expert, stacked). */
  weight: Parameter;
  constructor(E: number, inF: number, outF: number, std: number, rng: Rng) {
    super();
    this.weight = param([E, outF, inF], { normal: std }, rng);
  }
}

/** JetMoE's MoA experts module: per-expert query (input_linear) and output (output_linear) projections, output bias, router. */
class MoAExperts extends Module {
  input_linear: ParallelLinear;
  output_linear: ParallelLinear;
  bias: Parameter;
  router: Router;
  constructor(E: number, k: number, d: number, kvd: number, std: number, outStd: number, rng: Rng) {
    super();
    this.input_linear = new ParallelLinear(E, d, kvd, std, rng);
    this.output_linear = new ParallelLinear(E, kvd, d, outStd, rng);
    this.bias = param([d], 'zeros');
    // softmax over the top-k logits == the top-k softmax probabilities renormalised
    this.router = routerRegistry.get('topk')({ type: 'topk', dModel: d, numExperts: E, topK: k, normalize: true }, rng);
  }
}

/** JetMoE attention: top-k of E query/output expert pairs per token over shared (grouped-query) keys and values. */
export class JetMoEAttention extends Module implements AttentionModule {
  experts: MoAExperts;
  kv_proj: Linear;
  readonly numExperts: number;
  readonly topK: number;
  readonly kvHeads: number;
  readonly headDim: number;
  private readonly rope: RopeParams | null;
  private readonly evalRng: Rng;
  constructor(
    readonly cfg: ModelConfig,
    opts: { numExperts: number; topK: number },
    rng: Rng,
  ) {
    super();
    rejectUnsupported('jetmoe-moa', cfg);
    if (cfg.attention_bias || cfg.qkv_bias) throw new ConfigError('model config: attention_type "jetmoe-moa" has no attention_bias or qkv_bias (its only bias is the output bias)');
    this.evalRng = rng;
    const d = cfg.hidden_size;
    this.numExperts = opts.numExperts;
    this.topK = opts.topK;
    this.kvHeads = kvHeadsOf(cfg);
    this.headDim = headDimOf(cfg);
    if (this.kvHeads * this.topK !== cfg.num_attention_heads) {
      throw new ConfigError(
        `model config: attention_type "jetmoe-moa" needs num_attention_heads = num_key_value_heads * topK (${this.kvHeads} * ${this.topK} = ${this.kvHeads * this.topK}), got ${cfg.num_attention_heads}`,
      );
    }
    if (this.topK > this.numExperts) throw new ConfigError(`model config: attention_options.topK ${this.topK} exceeds attention_options.numExperts ${this.numExperts}`);
    const kvd = this.kvHeads * this.headDim;
    const std = cfg.initializer_range;
    this.experts = new MoAExperts(this.numExperts, this.topK, d, kvd, std, std / Math.sqrt(2 * cfg.num_hidden_layers), rng);
    this.kv_proj = new Linear(d, 2 * kvd, rng, { std, bias: false });
    this.rope = cfg.rope_scaling ? ropeParams(cfg, this.headDim) : null;
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, ctx: RouterContext = { training: false, step: 0, rng: this.evalRng }): AttentionResult {
    const N = B * Tn;
    const E = this.numExperts;
    const k = this.topK;
    const KV = this.kvHeads;
    const Dh = this.headDim;
    const kvd = KV * Dh;
    const H = KV * k;
    const d = this.cfg.hidden_size;
    const r = this.experts.router.route(x, { ...ctx, tokenIds: undefined });
    if (r.routing.kind !== 'sparse') throw new Error('MoAttention: the attention router must route sparsely');
    const eIdx = r.routing.expertIdx; // [N*k], token-major
    // every expert's queries [N, E*kvd] (dense over experts: E/k times the routed projection cost, no grouping)
    const qAll = T.linear(x, T.reshape(this.experts.input_linear.weight, [E * kvd, d]));
    // head g*k + j of token t: kv head g of slot j's expert
    const qIdx = new Int32Array(N * H);
    for (let t = 0, p = 0; t < N; t++) for (let g = 0; g < KV; g++) for (let j = 0; j < k; j++) qIdx[p++] = (t * E + eIdx[t * k + j]) * KV + g;
    const qx = T.reshape(T.gatherRows(T.reshape(qAll, [N * E * KV, Dh]), qIdx), [N, H * Dh]);
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}) };
    const kvx = this.kv_proj.forward(x);
    const q = T.splitHeads(qx, B, Tn, H, rope);
    let kk = T.splitHeads(T.slice(kvx, 1, 0, kvd), B, Tn, KV, rope);
    let vv = T.splitHeads(T.slice(kvx, 1, kvd, 2 * kvd), B, Tn, KV);
    if (cache?.k && cache.v) {
      kk = T.concat([cache.k, kk], 2);
      vv = T.concat([cache.v, vv], 2);
    }
    const o = T.reshape(T.mergeHeads(T.causalAttention(q, repeatHeads(kk, H), repeatHeads(vv, H))), [N * H, Dh]);
    // back to slot order: row (t, j) = [kv head 0 .. KV-1] of slot j
    const oIdx = new Int32Array(N * k * KV);
    for (let t = 0, p = 0; t < N; t++) for (let j = 0; j < k; j++) for (let g = 0; g < KV; g++) oIdx[p++] = t * H + g * k + j;
    const slots = T.reshape(T.gatherRows(o, oIdx), [N * k, kvd]);
    // gate-weighted sum per (token, expert), then all output projections in one matmul
    const rowIdx = new Int32Array(N * k);
    for (let a = 0; a < N * k; a++) rowIdx[a] = Math.floor(a / k) * E + eIdx[a];
    const perExpert = T.reshape(T.combineRows(slots, rowIdx, N * E, r.routing.weights), [N, E * kvd]);
    const wo = T.reshape(T.permute(this.experts.output_linear.weight, [1, 0, 2]), [d, E * kvd]);
    const y = T.linear(perExpert, wo, this.experts.bias);
    return { y, k: kk, v: vv, router: r };
  }
}

const options = {
  numExperts: posInt().optional().describe('attention experts (default: num_local_experts, as JetMoE)'),
  topK: posInt().optional().describe('experts per token (default: num_experts_per_tok, as JetMoE)'),
};

attentionRegistry.register(
  defineAttention({
    name: 'jetmoe-moa',
    summary: "JetMoE's mixture of attention heads: top-k of E query/output projection pairs per token over shared grouped-query keys/values, output bias",
    paper: { authors: 'Zhang et al.', title: 'Mixture of Attention Heads: Selecting Attention Heads Per Token', year: 2022 },
    options,
    refine(o, m, issue) {
      const E = o.numExperts ?? m.num_local_experts;
      const k = o.topK ?? m.num_experts_per_tok;
      if (k > E) issue('topK', `must be at most numExperts (${E}), got ${k}`);
    },
    parameters(m) {
      const E = (m.attention_options?.numExperts as number | undefined) ?? m.num_local_experts;
      const d = m.hidden_size;
      const kvd = kvHeadsOf(m) * headDimOf(m);
      return 2 * E * kvd * d + E * d + 2 * kvd * d + 3 * d;
    },
    create: (m, o, rng) => new JetMoEAttention(m, { numExperts: o.numExperts ?? m.num_local_experts, topK: o.topK ?? m.num_experts_per_tok }, rng),
  }),
);
