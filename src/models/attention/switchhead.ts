/**
 * SwitchHead (Csordás et al., "SwitchHead: Accelerating Transformers with Mixture-of-Experts
 * Attention", 2024): few attention heads with dense queries and keys, whose value and output
 * projections are mixtures of E experts each. Per head h, a non-competitive sigmoid router picks
 * the top-k value experts from the source token and the top-k output experts from the destination:
 *   v_j^h = sum_{e in topk(s_j^h)} s_{j,e}^h x_j W_v^{h,e},   s^h = sigmoid(x W_sv^h)
 *   y_t   = sum_h sum_{e in topk(d_t^h)} d_{t,e}^h (A^h v^h)_t W_o^{h,e},   d^h = sigmoid(x W_so^h)
 * Expert (h, e) is expert h*E + e of one stacked bank, so each mixture is one grouped matmul over
 * the assignments sorted by expert (the MoE dispatch layout) and one weighted combine. Balancing:
 * a registry loss per head router (default the entropy regularisation of the mean selection,
 * 'entropy-global', as the paper's sigma-MoE). With num_local_experts > 0 the model's FFNs are MoE
 * too: the paper's "SwitchAll".
 */
import { Tensor } from '../../tensor/tensor.js';
import { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt, nonNegative } from '../../tensor/validate.js';
import { Module, Linear, Parameter, param } from '../../nn/index.js';
import type { RouterContext, RouterOutput } from '../../moe/types.js';
import { lossRegistry } from '../../moe/losses/index.js';
import { sortByExpert } from '../../moe/dispatch/dropless.js';
import { ConfigError } from '../../tensor/validate.js';
import { headDimOf, type ModelConfig } from '../config.js';
import { ropeParams, type RopeParams } from '../rope.js';
import { headRouterLosses, evalContext } from './moa.js';
import { attentionRegistry, defineAttention, rejectUnsupported, type AttentionCacheEntry, type AttentionModule, type AttentionResult } from './registry.js';

const options = {
  numExperts: posInt().default(4).describe('value and output experts per head'),
  topK: posInt().default(2).describe('experts each head uses per token'),
  headDim: posInt().optional().describe('width of each head (default head_dim of the model); must be even (RoPE)'),
  losses: z
    .record(z.string(), nonNegative('a finite non-negative coefficient'))
    .default({ 'entropy-global': 0.001 })
    .describe('balancing losses of each head router (value and output): loss name -> coefficient'),
};

type SwitchHeadOptions = z.output<z.ZodObject<typeof options>>;

/** Top-k per (row, head) of sigmoid scores [n, H*E]: assignments with combined expert h*E + e. */
function selectPerHead(scores: Tensor, n: number, H: number, E: number, k: number): { rowIdx: Int32Array; expertIdx: Int32Array; tokenIdx: Int32Array; weights: Tensor } {
  const top = T.topkIndices(scores.data, n * H, E, k); // rows (t, h) in order t*H + h
  const A = top.length;
  const rowIdx = new Int32Array(A);
  const expertIdx = new Int32Array(A);
  const tokenIdx = new Int32Array(A);
  const flat = new Int32Array(A);
  for (let i = 0; i < A; i++) {
    const r = Math.floor(i / k);
    rowIdx[i] = r;
    tokenIdx[i] = Math.floor(r / H);
    expertIdx[i] = (r % H) * E + top[i];
    flat[i] = r * E + top[i];
  }
  const weights = T.reshape(T.gatherRows(T.reshape(scores, [n * H * E, 1]), flat), [A]);
  return { rowIdx, expertIdx, tokenIdx, weights };
}

/** SwitchHead: per-head MoE value and output projections with sigmoid top-k routers. */
export class SwitchHeadAttention extends Module implements AttentionModule {
  q_proj: Linear;
  k_proj: Linear;
  /** Value experts [H*E, d, dh] (expert e of head h at h*E + e). */
  v_experts: Parameter;
  /** Output experts [H*E, dh, d]. */
  o_experts: Parameter;
  v_router: Linear;
  o_router: Linear;
  readonly heads: number;
  readonly numExperts: number;
  readonly topK: number;
  readonly headDim: number;
  private readonly lossCoefs: Record<string, number>;
  private readonly rope: RopeParams | null;

  constructor(
    readonly cfg: ModelConfig,
    opts: SwitchHeadOptions,
    rng: Rng,
  ) {
    super();
    const d = cfg.hidden_size;
    const H = (this.heads = cfg.num_attention_heads);
    const E = (this.numExperts = opts.numExperts);
    this.topK = opts.topK;
    const dh = (this.headDim = opts.headDim ?? headDimOf(cfg));
    for (const name of Object.keys(opts.losses))
      if (!lossRegistry.has(name)) throw new ConfigError(`model config: attention_options.losses: unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`);
    this.lossCoefs = opts.losses;
    const std = cfg.initializer_range;
    this.q_proj = new Linear(d, H * dh, rng, { std });
    this.k_proj = new Linear(d, H * dh, rng, { std });
    this.v_experts = param([H * E, d, dh], { normal: std }, rng);
    this.o_experts = param([H * E, dh, d], { normal: std / Math.sqrt(2 * cfg.num_hidden_layers) }, rng);
    this.v_router = new Linear(d, H * E, rng, { std, bias: false });
    this.o_router = new Linear(d, H * E, rng, { std, bias: false });
    this.rope = cfg.rope_scaling ? ropeParams(cfg, dh) : null;
  }

  /** Each head's routing record (logits [n, E], probs its softmax) for the balancing losses. */
  private headLosses(logits: Tensor, sel: { tokenIdx: Int32Array; expertIdx: Int32Array; weights: Tensor }, n: number, prefix: string): Record<string, Tensor> {
    const H = this.heads;
    const E = this.numExperts;
    const losses: Record<string, Tensor> = {};
    const per = H === 1 ? [logits] : T.split(logits, new Array<number>(H).fill(E), 1);
    per.forEach((lh) => {
      const out: RouterOutput = { logits: lh, probs: T.softmax(lh, -1), routing: { kind: 'sparse', tokenIdx: sel.tokenIdx, expertIdx: sel.expertIdx, weights: sel.weights }, losses: {}, metrics: {} };
      for (const [name, l] of Object.entries(headRouterLosses(out, this.lossCoefs, E, n, this.topK)))
        losses[`${prefix}.${name}`] = losses[`${prefix}.${name}`] ? T.add(losses[`${prefix}.${name}`], l) : l;
    });
    return losses;
  }

  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, _ctx: RouterContext = evalContext(), valueInput?: Tensor): AttentionResult {
    const n = B * Tn;
    const H = this.heads;
    const E = this.numExperts;
    const dh = this.headDim;
    if (x.ndim !== 2 || x.shape[0] !== n || x.shape[1] !== this.cfg.hidden_size) throw new Error(`SwitchHead.forward: x must be [${n}, ${this.cfg.hidden_size}], got [${x.shape.join(', ')}]`);
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}) };
    const q = T.splitHeads(this.q_proj.forward(x), B, Tn, H, rope);
    let k = T.splitHeads(this.k_proj.forward(x), B, Tn, H, rope);
    // values: each (token, head) row mixes its chosen value experts of that head
    const vLogits = this.v_router.forward(x);
    const vs = selectPerHead(T.sigmoid(vLogits), n, H, E, this.topK);
    const vSort = sortByExpert(vs.tokenIdx, vs.expertIdx, H * E);
    const vRowsOut = Int32Array.from(vSort.order, (a) => vs.rowIdx[a]);
    const vMixed = T.combineRows(T.groupedMatmul(T.gatherRows(valueInput ?? x, vSort.rows), this.v_experts, vSort.sizes), vRowsOut, n * H, vs.weights, vSort.order);
    let v = T.splitHeads(T.reshape(vMixed, [n, H * dh]), B, Tn, H);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    const o = T.reshape(T.mergeHeads(T.causalAttention(q, k, v)), [n * H, dh]);
    // outputs: each (token, head) attention row through its chosen output experts, summed into the token
    const oLogits = this.o_router.forward(x);
    const os = selectPerHead(T.sigmoid(oLogits), n, H, E, this.topK);
    const oSort = sortByExpert(os.tokenIdx, os.expertIdx, H * E);
    const oRowsIn = Int32Array.from(oSort.order, (a) => os.rowIdx[a]);
    const y = T.combineRows(T.groupedMatmul(T.gatherRows(o, oRowsIn), this.o_experts, oSort.sizes), oSort.rows, n, os.weights, oSort.order);
    return { y, k, v, losses: { ...this.headLosses(vLogits, vs, n, 'value'), ...this.headLosses(oLogits, os, n, 'output') } };
  }
}

attentionRegistry.register(
  defineAttention({
    name: 'switchhead',
    summary: 'MoE value and output projections per head (sigmoid top-k routers), dense queries and keys; with MoE FFNs: SwitchAll',
    paper: { authors: 'Csordás et al.', title: 'SwitchHead: Accelerating Transformers with Mixture-of-Experts Attention', year: 2024 },
    options,
    periNorm: true,
    refine: (o, c, issue) => {
      if (o.topK > o.numExperts) issue('topK', `must be at most numExperts (${o.numExperts})`);
      if ((o.headDim ?? headDimOf(c)) % 2 !== 0) issue('headDim', 'must be even for rotary embeddings');
    },
    create: (c, o, rng) => {
      rejectUnsupported('switchhead', c);
      if (c.num_key_value_heads !== undefined && c.num_key_value_heads !== c.num_attention_heads)
        throw new ConfigError('model config: attention_type "switchhead" has one key per head; unset num_key_value_heads');
      return new SwitchHeadAttention(c, o, rng);
    },
  }),
);
