/**
 * Decoder-only MoE transformer LM: token embedding, N blocks of (RMSNorm, causal multi-head
 * attention with RoPE, RMSNorm, MoE or dense FFN), final RMSNorm, tied or untied LM head.
 * Parameter names follow Hugging Face Mixtral where the concept exists.
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { Module, Linear, Embedding, RMSNorm, Parameter, param } from '../nn/index.js';
import { MoELayer, type MoELayerConfig } from '../moe/layer.js';
import type { MoEAux, RouterContext, RouterOutput } from '../moe/types.js';
import { routerRegistry } from '../moe/routers/index.js';
import { expertRegistry } from '../moe/experts/index.js';
import { dispatchRegistry, type DispatchConfig } from '../moe/dispatch/index.js';
import { lossRegistry } from '../moe/losses/index.js';
import { globalSwitchLoss } from '../moe/losses/switch-global.js';
import { type ModelConfig, isMoELayer, headDimOf, kvHeadsOf, layerConfig, ConfigError } from './config.js';
import { ropeParams, type RopeParams } from './rope.js';
import { MLAttention, repeatHeads } from './mla.js';
import { checkMemory } from './memory.js';
import { attachLoraExperts } from './lora-experts.js';
import { depthCapacities, depthTokens, depthWeight, selectDepthTopK, selectDepthCausal, bceWithLogits, detach, DepthPredictor } from './depth.js';
import { attentionRegistry, attentionKindOf, buildAttention, defineAttention, parseAttentionOptions, type AttentionModule, type AttentionCacheEntry, type StepTrainables } from './attention/index.js';
import { buildFFN, type FFNModule } from './ffn/index.js';
import { familyRegistry, defineFamily, unsupportedFeature, type FamilyTraits, type LanguageModel } from './family.js';

/** Per-layer key/value cache for incremental decoding: [B, H, T_past, Dh]. */
export interface KVCache {
  k: Tensor[];
  v: Tensor[];
  /** Tokens already in the cache. */
  length: number;
}

export class Attention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  /** RMSNorm on queries/keys before RoPE (qk_norm 'head': width head_dim; 'full': the whole projection). */
  q_norm: RMSNorm | null;
  k_norm: RMSNorm | null;
  /** Per-head sink logits [H] (attention_sinks). */
  sinks: Parameter | null;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Sliding window of this layer (undefined: full causal attention). */
  readonly window: number | undefined;
  private readonly rope: RopeParams | null;
  constructor(
    readonly cfg: ModelConfig,
    rng: Rng,
    layerIndex = 0,
  ) {
    super();
    const lt = cfg.layer_types?.[layerIndex];
    this.window = cfg.sliding_window !== undefined && (lt === undefined || lt === 'sliding_attention') ? cfg.sliding_window : undefined;
    this.sinks = cfg.attention_sinks ? param([cfg.num_attention_heads], 'zeros') : null;
    const d = cfg.hidden_size;
    this.heads = cfg.num_attention_heads;
    this.kvHeads = kvHeadsOf(cfg);
    this.headDim = headDimOf(cfg);
    const qd = this.heads * this.headDim;
    const kvd = this.kvHeads * this.headDim;
    const std = cfg.initializer_range;
    const bias = cfg.attention_bias || cfg.qkv_bias;
    this.q_proj = new Linear(d, qd, rng, { std, bias });
    this.k_proj = new Linear(d, kvd, rng, { std, bias });
    this.v_proj = new Linear(d, kvd, rng, { std, bias });
    // scaled init on residual projections (GPT-2) keeps the residual stream stable with depth
    this.o_proj = new Linear(qd, d, rng, { std: std / Math.sqrt(2 * cfg.num_hidden_layers), bias: cfg.attention_bias });
    const perHead = cfg.qk_norm === 'head';
    this.q_norm = cfg.qk_norm === 'none' ? null : new RMSNorm(perHead ? this.headDim : qd, cfg.rms_norm_eps);
    this.k_norm = cfg.qk_norm === 'none' ? null : new RMSNorm(perHead ? this.headDim : kvd, cfg.rms_norm_eps);
    // without rope_scaling the plain theta path (unchanged numerics for existing models)
    this.rope = cfg.rope_scaling ? ropeParams(cfg, this.headDim) : null;
  }

  private norm(n: RMSNorm, x: Tensor, heads: number): Tensor {
    if (this.cfg.qk_norm === 'full') return n.forward(x);
    const rows = x.shape[0];
    return T.reshape(n.forward(T.reshape(x, [rows * heads, this.headDim])), [rows, heads * this.headDim]);
  }

  /** [B, KV, T, Dh] -> [B, H, T, Dh], each key/value head serving H/KV query heads (GQA). */
  private repeatKV(x: Tensor): Tensor {
    return repeatHeads(x, this.heads);
  }

  /** x [B*T, d] -> [B*T, d]; with a cache, keys/values of earlier positions are reused and extended. */
  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, _ctx?: RouterContext, valueInput?: Tensor): { y: Tensor; k: Tensor; v: Tensor; q?: Tensor } {
    const H = this.heads;
    const KV = this.kvHeads;
    const rope = {
      offset: cache?.offset ?? 0,
      theta: this.cfg.rope_theta,
      ...(this.rope ? { invFreq: this.rope.invFreq, scale: this.rope.scale } : {}),
      ...(cache?.positions ? { positions: cache.positions } : {}),
    };
    let qx = this.q_proj.forward(x);
    let kx = this.k_proj.forward(x);
    if (this.q_norm && this.k_norm) {
      qx = this.norm(this.q_norm, qx, H);
      kx = this.norm(this.k_norm, kx, KV);
    }
    const q = T.splitHeads(qx, B, Tn, H, rope);
    let k = T.splitHeads(kx, B, Tn, KV, rope);
    let v = T.splitHeads(this.v_proj.forward(valueInput ?? x), B, Tn, KV);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    // causalAttention scales by head_dim^-0.5; an explicit attention_multiplier replaces that
    const am = this.cfg.attention_multiplier;
    const qs = am !== undefined ? T.scale(q, am * Math.sqrt(this.headDim)) : q;
    const o =
      this.sinks || this.window !== undefined
        ? T.windowedAttention(qs, this.repeatKV(k), this.repeatKV(v), { window: this.window, sinks: this.sinks })
        : T.causalAttention(qs, this.repeatKV(k), this.repeatKV(v));
    return { y: this.o_proj.forward(T.mergeHeads(o)), k, v, q: qs };
  }
}

/**
 * Token importance from causal attention (DA-MoE): for each new token j, the mean over heads and
 * over the queries i >= j of the softmax weight a_ij = softmax_j(q_i k_j / sqrt(Dh)), computed
 * plainly without gradients. q [B, H, Tn, Dh] are the new queries, k [B, H, past + Tn, Dh] all keys
 * (query i sits at position past + i). Returns [B * Tn]; a token no new query sees after it (the
 * last one) still gets its own self-weight. Sliding windows and sinks are ignored (an estimate).
 */
export function attentionImportance(q: Tensor, k: Tensor, past: number): Float32Array {
  const [B, H, Tn, Dh] = q.shape;
  const S = k.shape[2];
  const out = new Float32Array(B * Tn);
  const cnt = new Float32Array(B * Tn);
  const qd = q.data;
  const kd = k.data;
  const sc = 1 / Math.sqrt(Dh);
  const w = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Tn; i++) {
        const qo = ((b * H + h) * Tn + i) * Dh;
        const last = past + i;
        let m = -Infinity;
        for (let j = 0; j <= last; j++) {
          const ko = ((b * H + h) * S + j) * Dh;
          let s = 0;
          for (let d = 0; d < Dh; d++) s += qd[qo + d] * kd[ko + d];
          w[j] = s * sc;
          if (w[j] > m) m = w[j];
        }
        let z = 0;
        for (let j = 0; j <= last; j++) z += w[j] = Math.exp(w[j] - m);
        for (let j = past; j <= last; j++) {
          out[b * Tn + j - past] += w[j] / z;
          cnt[b * Tn + j - past]++;
        }
      }
  for (let i = 0; i < out.length; i++) out[i] = cnt[i] > 0 ? out[i] / cnt[i] : 0;
  return out;
}
attentionRegistry.register(
  defineAttention({
    name: 'standard',
    summary: 'causal multi-head attention with RoPE (GQA, qk_norm, sliding window and sinks from the model config)',
    paper: { authors: 'Vaswani et al.', title: 'Attention Is All You Need', year: 2017 },
    options: {},
    periNorm: true,
    create: (c, _o, rng, layer) => new Attention(c, rng, layer),
  }),
);
attentionRegistry.register(
  defineAttention({
    name: 'mla',
    summary: 'multi-head latent attention: keys and values from a compressed latent (kv_lora_rank)',
    paper: { authors: 'DeepSeek-AI', title: 'DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model', year: 2024 },
    options: {},
    create: (c, _o, rng) => {
      if (c.kv_lora_rank === undefined) throw new ConfigError('model config: attention_type "mla" needs kv_lora_rank (and qk_nope_head_dim, qk_rope_head_dim, v_head_dim)');
      return new MLAttention(c, rng);
    },
  }),
);

/** Residual-branch output scaling (GPT-2): keeps the residual stream's scale stable with depth. */
export function outputScale(c: ModelConfig): number {
  return 1 / Math.sqrt(2 * c.num_hidden_layers);
}

/**
 * Dense FFN: SwiGLU (silu) as in Llama/Mixtral experts, or a GELU MLP. Initialised exactly like
 * one routed expert (N(0, 1/fan_in), output projection times outputScale) so the dense baseline
 * differs from the MoE only in routing, not in init.
 */
export class DenseFFN extends Module {
  gate_proj: Linear | null;
  up_proj: Linear;
  down_proj: Linear;
  constructor(
    d: number,
    f: number,
    readonly act: 'silu' | 'gelu',
    outScale: number,
    rng: Rng,
  ) {
    super();
    const std = 1 / Math.sqrt(d);
    this.gate_proj = act === 'silu' ? new Linear(d, f, rng, { std }) : null;
    this.up_proj = new Linear(d, f, rng, { std });
    this.down_proj = new Linear(f, d, rng, { std: outScale / Math.sqrt(f) });
  }
  forward(x: Tensor): Tensor {
    const up = this.up_proj.forward(x);
    const h = this.gate_proj ? T.swiglu(this.gate_proj.forward(x), up) : T.geluFused(up);
    return this.down_proj.forward(h);
  }
}

/** Options a spec maps from Hugging Face-style model-config fields (field -> option), where the option is unset. */
function fromHfFields(c: ModelConfig, fields: Record<string, string> | undefined, opts: Record<string, unknown>): Record<string, unknown> {
  const hf = c as unknown as Record<string, unknown>;
  for (const [field, option] of Object.entries(fields ?? {})) if (hf[field] !== undefined && opts[option] === undefined) opts[option] = hf[field];
  return opts;
}

/** The MoE layer config a model config implies (router, expert, dispatch and loss specs say which HF fields they read). */
export function moeLayerConfig(c: ModelConfig): MoELayerConfig {
  const losses: Record<string, number> = {};
  for (const spec of lossRegistry.specs()) {
    const coef = spec.configField ? (c as unknown as Record<string, unknown>)[spec.configField] : undefined;
    // the all-layers Switch form is computed once by the model (MoETransformerLM.forward), not per layer
    if (spec.configField === 'router_aux_loss_coef' && c.aux_loss_normalization === 'all-layers-tokens') continue;
    if (typeof coef === 'number' && coef > 0) losses[spec.name] = coef;
  }
  Object.assign(losses, c.router_losses);
  const routerOpts = fromHfFields(c, routerRegistry.find(c.router_type)?.traits.hfConfig, { ...c.router_options });
  const expertType = c.expert_type ?? expertRegistry.specs().find((s) => s.traits.hfHiddenAct === c.hidden_act)?.name;
  if (!expertType) throw new ConfigError(`model config: hidden_act "${c.hidden_act}" maps to no registered expert type`);
  let dispatch: DispatchConfig | undefined;
  if (c.dispatch !== undefined) {
    const d = dispatchRegistry.spec(c.dispatch);
    dispatch = { type: d.name, ...fromHfFields(c, d.hfConfig, {}) };
    for (const [k, v] of Object.entries(d.configDefaults ?? {})) if (dispatch[k] === undefined) dispatch[k] = v;
  }
  return {
    dModel: c.hidden_size,
    numExperts: c.num_local_experts,
    topK: c.num_experts_per_tok,
    experts: {
      type: expertType,
      dFF: c.moe_intermediate_size,
      outputScale: outputScale(c),
      ...(c.expert_sizes ? { sizes: c.expert_sizes } : {}),
      ...c.expert_options,
    },
    router: { type: c.router_type, ...routerOpts },
    ...(dispatch ? { dispatch } : {}),
    ...(c.moe_sub_tokens !== undefined ? { subTokens: c.moe_sub_tokens } : {}),
    ...(c.n_shared_experts > 0 && !c.shared_expert_gate ? { sharedExperts: { count: c.n_shared_experts, dFF: c.shared_expert_intermediate_size ?? c.moe_intermediate_size } } : {}),
    losses,
  };
}

export class DecoderLayer extends Module {
  input_layernorm: RMSNorm;
  self_attn: AttentionModule;
  post_attention_layernorm: RMSNorm;
  mlp: DenseFFN | null;
  block_sparse_moe: MoELayer | null;
  /** An FFN kind from ffnRegistry (ffn_type: PEER, Multilinear MoE) in place of the MoE layer. */
  ffn_block: FFNModule | null = null;
  /** Bias [d] added to the MoE output (moe_output_bias, JetMoE). */
  moe_bias: Parameter | null = null;
  /** Mixture-of-Depths router (a linear router on a routed layer) and causal predictor (src/models/depth.ts). */
  depth_router: Linear | null = null;
  depth_predictor: DepthPredictor | null = null;
  /** Qwen2-MoE's gated shared expert (only with shared_expert_gate; else shared experts live in the MoE layer). */
  shared_expert: DenseFFN | null = null;
  shared_expert_gate: Linear | null = null;
  /** Conditional MoE routing (conditional_moe_routing): the dense branch and its gate g, output (1 - g) FFN + g MoE. */
  cmr_ffn: DenseFFN | null = null;
  cmr_gate: Linear | null = null;
  constructor(
    model: ModelConfig,
    readonly index: number,
    rng: Rng,
  ) {
    super();
    // the FFN half reads the layer's own MoE fields (moe_layer_overrides, AutoMoE)
    const cfg = layerConfig(model, index);
    const d = cfg.hidden_size;
    const eps = cfg.layer_norm_eps ?? cfg.rms_norm_eps;
    this.input_layernorm = new RMSNorm(d, eps);
    this.self_attn = buildAttention(model, rng, index);
    if (model.norm_placement === 'peri' && !parseAttentionOptions(model).spec.periNorm)
      throw new ConfigError(`model config: norm_placement "peri" needs an attention kind that reads a separate value input (standard, switchhead), got "${attentionKindOf(model)}"`);
    this.post_attention_layernorm = new RMSNorm(d, eps);
    if (isMoELayer(cfg, index) && cfg.ffn_type !== undefined) {
      this.mlp = null;
      this.block_sparse_moe = null;
      this.ffn_block = buildFFN(cfg, cfg.ffn_type, rng, index, { moeLayerConfig });
    } else if (isMoELayer(cfg, index)) {
      this.mlp = null;
      this.block_sparse_moe = new MoELayer(moeLayerConfig(cfg), rng);
      if (cfg.moe_output_bias) this.moe_bias = param([d], 'zeros');
      if (cfg.shared_expert_gate && cfg.n_shared_experts > 0) {
        const f = cfg.n_shared_experts * (cfg.shared_expert_intermediate_size ?? cfg.moe_intermediate_size);
        this.shared_expert = new DenseFFN(d, f, cfg.hidden_act, outputScale(cfg), rng);
        this.shared_expert_gate = new Linear(d, 1, rng, { bias: false, std: cfg.initializer_range });
      }
      if (cfg.conditional_moe_routing) {
        this.cmr_ffn = new DenseFFN(d, cfg.intermediate_size, cfg.hidden_act, outputScale(cfg), rng);
        this.cmr_gate = new Linear(d, 1, rng, { bias: true, std: cfg.initializer_range });
      }
    } else {
      this.mlp = new DenseFFN(d, cfg.intermediate_size, cfg.hidden_act, outputScale(cfg), rng);
      this.block_sparse_moe = null;
    }
  }

  /**
   * The FFN half of the block on normalised input n [B*T, d]; with `raw` (peri-layernorm) the
   * experts and dense FFNs read the un-normalised rows and only the routers and gates read n.
   */
  ffn(
    n: Tensor,
    ctx: RouterContext,
    jitterEps: number,
    cmrDropout?: { p: number; rng: Rng },
    raw?: Tensor,
  ): { y: Tensor; aux?: MoEAux; auxList?: MoEAux[]; cmrGate?: Tensor; losses?: Record<string, Tensor> } {
    if (this.ffn_block) {
      if (raw) throw new ConfigError('model config: ffn_type cannot be combined with norm_placement "peri"');
      const r = this.ffn_block.forward(n, ctx);
      return { y: r.y, losses: r.losses, ...(r.aux ? { auxList: r.aux } : {}) };
    }
    if (!this.block_sparse_moe) return { y: this.mlp!.forward(raw ?? n) };
    // Mixtral multiplies the MoE input by U(1-eps, 1+eps) noise in training; router and experts both see it
    const noise = ctx.training && jitterEps > 0 ? ctx.rng.fillUniform(new Float32Array(n.size), 1 - jitterEps, 1 + jitterEps) : null;
    const x = noise ? T.maskMul(n, noise) : n;
    const e = raw ? (noise ? T.maskMul(raw, noise) : raw) : null;
    const r = e ? this.block_sparse_moe.forward(e, ctx, x) : this.block_sparse_moe.forward(x, ctx);
    let y = this.moe_bias ? T.add(r.y, this.moe_bias) : r.y;
    if (this.shared_expert && this.shared_expert_gate) {
      y = T.add(y, T.mul(T.sigmoid(this.shared_expert_gate.forward(x)), this.shared_expert.forward(e ?? x)));
    }
    if (this.cmr_ffn && this.cmr_gate) {
      // the budget loss reads g before dropout (fairseq's CMR: used budget = sum of gates)
      const g = T.sigmoid(this.cmr_gate.forward(x));
      if (r.aux) r.aux.metrics.extra.cmrGateMean = g.size > 0 ? g.data.reduce((a, v) => a + v, 0) / g.size : 0;
      const gd = ctx.training && cmrDropout && cmrDropout.p > 0 ? T.dropout(g, cmrDropout.p, cmrDropout.rng) : g;
      y = T.add(T.mul(T.affine(gd, -1, 1), this.cmr_ffn.forward(e ?? x)), T.mul(gd, y));
      return { y, aux: r.aux, cmrGate: g };
    }
    return { y, aux: r.aux };
  }
}

export interface ForwardOptions {
  ctx: Omit<RouterContext, 'tokenIds'>;
  cache?: KVCache;
  /** Dropout randomness (training only). */
  dropoutRng?: Rng;
}

export interface ForwardResult {
  /** [B*T, vocab]. */
  logits: Tensor;
  /** One record per MoE layer, in layer order (an FFN kind with several MoE sub-layers: one per sub-layer, `sub` its index). */
  aux: { layer: number; aux: MoEAux; sub?: number }[];
  /** Losses over all layers at once (already scaled), e.g. the all-layers Switch loss. */
  losses: Record<string, Tensor>;
  /** Mixture-of-Depths: the rows each routed layer ran its block on, in layer order. */
  depth?: DepthRecord[];
}

/** One block on gathered rows (the model's forward closure), for Mixture-of-Depths layers. */
type DepthBlock = (
  layer: DecoderLayer,
  i: number,
  x: Tensor,
  Bb: number,
  Tb: number,
  entry: AttentionCacheEntry | undefined,
  bctx: RouterContext,
  pastRows: number,
  attnOnly?: boolean,
) => { x2: Tensor; da: Tensor; df: Tensor | null };

/** The rows (of the forward's B*T) a Mixture-of-Depths layer processed. */
export interface DepthRecord {
  layer: number;
  rows: Int32Array;
  tokens: number;
}

export class MoETransformerLM extends Module implements LanguageModel {
  embed_tokens: Embedding;
  layers: DecoderLayer[];
  norm: RMSNorm;
  lm_head: Linear | null;
  /** gamma-MoD's one 2-way depth router, shared by every routed layer. */
  depth_router_shared: Linear | null = null;
  /** Capacity of each layer (1: a full block; below 1: a Mixture-of-Depths layer). */
  readonly depthCaps: number[];
  constructor(
    readonly config: ModelConfig,
    seed: number,
  ) {
    super();
    checkMemory(config); // before any allocation: a clear error instead of "Invalid typed array length"
    const rng = new Rng(seed);
    const c = config;
    this.embed_tokens = new Embedding(c.vocab_size, c.hidden_size, rng, c.initializer_range);
    this.layers = [];
    // MoEUT layer groups: only the G distinct layers hold parameters; layerAt(i) maps depth to them
    for (let i = 0; i < (c.layer_groups ?? c.num_hidden_layers); i++) this.layers.push(new DecoderLayer(c, i, rng));
    this.norm = new RMSNorm(c.hidden_size, c.rms_norm_eps);
    this.lm_head = c.tie_word_embeddings ? null : new Linear(c.hidden_size, c.vocab_size, rng, { std: c.initializer_range });
    this.depthCaps = depthCapacities(c);
    const mod = c.mixture_of_depths;
    if (mod && this.depthCaps.some((x) => x < 1)) {
      // own RNG stream: the rest of the init is the same with or without depth routing (Router-Tuning loads a base into it)
      const drng = new Rng(seed ^ 0xde97);
      const d = c.hidden_size;
      if (mod.router === 'gamma') this.depth_router_shared = new Linear(d, 2, drng, { std: c.initializer_range, bias: false });
      this.layers.forEach((l, i) => {
        if (this.depthCaps[i] >= 1) return;
        if (!(l.self_attn instanceof Attention)) throw new ConfigError(`model config: mixture_of_depths needs attention_type "standard" (layer ${i} has ${l.self_attn.constructor.name})`);
        if (mod.router === 'linear') l.depth_router = new Linear(d, 1, drng, { std: c.initializer_range, bias: false });
        if (mod.causal === 'predictor') l.depth_predictor = new DepthPredictor(d, mod.predictor_hidden, drng);
      });
    }
    // adapters after the base (own RNG stream): the base init is the same with or without them
    if (c.peft) attachLoraExperts(this.layers, c.peft, new Rng(seed ^ 0x10a4));
  }

  /** The (possibly shared) decoder layer that runs at depth i (layer_groups: layer i mod G). */
  layerAt(i: number): DecoderLayer {
    return this.layers[i % this.layers.length];
  }

  moeLayers(): MoELayer[] {
    return this.layers.flatMap((l) => (l.block_sparse_moe ? [l.block_sparse_moe] : []));
  }

  moeLayerIndices(): number[] {
    // by depth: shared layers (layer_groups) run at several depths
    return Array.from({ length: this.config.num_hidden_layers }, (_, i) => i).filter((i) => this.layerAt(i).block_sparse_moe);
  }

  /** ids [B, T] (row-major Int32Array) -> logits [B*T, V] and each MoE layer's aux record. */
  forward(ids: Int32Array, B: number, Tn: number, opts: ForwardOptions): ForwardResult {
    const c = this.config;
    if (ids.length !== B * Tn) throw new Error(`forward: ${ids.length} token ids for batch ${B} x ${Tn}`);
    const past = opts.cache?.length ?? 0;
    if (past + Tn > c.max_position_embeddings) {
      throw new Error(`forward: sequence of ${past + Tn} tokens exceeds max_position_embeddings ${c.max_position_embeddings}`);
    }
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] >= c.vocab_size) throw new Error(`forward: token id ${ids[i]} at position ${i} outside vocab_size ${c.vocab_size}`);
    }
    const p = this.training ? c.hidden_dropout : 0;
    const drop = (t: Tensor): Tensor => (p > 0 && opts.dropoutRng ? T.dropout(t, p, opts.dropoutRng) : t);
    const em = c.embedding_multiplier;
    const rm = c.residual_multiplier;
    const branch = (t: Tensor): Tensor => drop(rm === 1 ? t : T.scale(t, rm));
    let h = drop(em === 1 ? this.embed_tokens.forward(ids) : T.scale(this.embed_tokens.forward(ids), em));
    const aux: ForwardResult['aux'] = [];
    // generic router context: the batch layout and the shared embeddings (SpeechMoE-style routers read them)
    const ctx: RouterContext = { ...opts.ctx, tokenIds: ids, state: new Map(), batchShape: { batch: B, seqLen: Tn }, embeddings: h };
    const attnLosses: Record<string, Tensor> = {};
    const attnRouters: RouterOutput[] = [];
    const depthLosses: Tensor[] = [];
    const depth: DepthRecord[] = [];
    const cache = opts.cache;
    const peri = c.norm_placement === 'peri';
    const cmr = c.conditional_moe_routing;
    const cmrGates: Tensor[] = [];
    /** The FFN half on rows x2 (after attention): its residual update. */
    const ffnPart = (layer: DecoderLayer, i: number, x2: Tensor, lctx: RouterContext): Tensor => {
      const r = layer.ffn(layer.post_attention_layernorm.forward(x2), lctx, c.router_jitter_noise, cmr ? { p: cmr.gate_dropout, rng: ctx.rng } : undefined, peri ? x2 : undefined);
      if (r.aux) aux.push({ layer: i, aux: r.aux });
      // an FFN kind with several MoE sub-layers yields one record each (same layer, sub = its index)
      r.auxList?.forEach((a, sub) => aux.push({ layer: i, aux: a, sub }));
      // FFN kinds' own losses, summed over layers under one name each
      for (const [name, l] of Object.entries(r.losses ?? {})) attnLosses[`ffn.${name}`] = attnLosses[`ffn.${name}`] ? T.add(attnLosses[`ffn.${name}`], l) : l;
      if (r.cmrGate) cmrGates.push(r.cmrGate);
      return branch(r.y);
    };
    /**
     * One block on rows x ([Bb * Tb] of d): attention (its keys/values cached under layer i), then
     * the FFN (unless attnOnly). Returns x after attention and both residual updates; `pastRows`
     * are the rows already in this layer's cache.
     */
    const block: DepthBlock = (layer, i, x, Bb, Tb, entry, bctx, pastRows, attnOnly = false) => {
      const a = peri ? layer.self_attn.forward(layer.input_layernorm.forward(x), Bb, Tb, entry, bctx, x) : layer.self_attn.forward(layer.input_layernorm.forward(x), Bb, Tb, entry, bctx);
      // attention experts' balancing losses, summed over layers under one name each
      for (const [name, l] of Object.entries(a.losses ?? {})) attnLosses[`attention.${name}`] = attnLosses[`attention.${name}`] ? T.add(attnLosses[`attention.${name}`], l) : l;
      if (a.router) attnRouters.push(a.router);
      if (cache) {
        cache.k[i] = a.k;
        cache.v[i] = a.v;
      }
      const da = branch(a.y);
      const x2 = T.add(x, da);
      if (attnOnly) return { x2, da, df: null };
      // attention-derived token importance, only for routers that declare they read it (DA-MoE)
      const aq = (a as { q?: Tensor }).q;
      const heads = (layer.self_attn as { heads?: number }).heads;
      // only attention modules that expose their queries and head count (the standard one) give importance
      const wantsImportance = aq !== undefined && heads !== undefined && aq.ndim === 4 && layer.block_sparse_moe?.specs.router.traits.context?.includes('tokenImportance');
      const lctx = wantsImportance
        ? {
            ...bctx,
            tokenImportance: attentionImportance(
              aq,
              T.noGrad(() => repeatHeads(a.k, heads)),
              pastRows,
            ),
          }
        : bctx;
      return { x2, da, df: ffnPart(layer, i, x2, lctx) };
    };
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const layer = this.layerAt(i);
      if (this.depthCaps[i] < 1) {
        h = this.depthLayer(layer, i, h, B, Tn, past, cache, ids, ctx, block, ffnPart, depthLosses, depth);
        continue;
      }
      const { x2, df } = block(layer, i, h, B, Tn, cache ? { k: cache.k[i], v: cache.v[i], offset: past } : undefined, ctx, past);
      h = T.add(x2, df!);
    }
    if (opts.cache) opts.cache.length = past + Tn;
    const losses: Record<string, Tensor> = { ...attnLosses };
    if (depthLosses.length) losses['depth.causal'] = depthLosses.reduce((x, y) => T.add(x, y));
    if (c.aux_loss_normalization === 'all-layers-tokens' && c.router_aux_loss_coef > 0 && aux.length > 0) {
      // routed attention (JetMoE) joins the one Hugging Face loss when its expert count matches, else gets its own
      const E = c.num_local_experts;
      const joined = attnRouters.filter((r) => r.logits.shape[1] === E);
      losses.switch = T.scale(globalSwitchLoss([...aux.map((a) => a.aux.router), ...joined], E), c.router_aux_loss_coef);
      const rest = attnRouters.filter((r) => r.logits.shape[1] !== E);
      if (rest.length > 0) losses.switch_attention = T.scale(globalSwitchLoss(rest, rest[0].logits.shape[1]), c.router_aux_loss_coef);
    }
    if (cmr && cmr.loss_coef > 0 && cmrGates.length > 0) {
      // one loss over all layers' gates, as fairseq sums used and total budget across layers
      const used = cmrGates.reduce((acc: Tensor | null, g) => (acc ? T.add(acc, T.sum(g)) : T.sum(g)), null)!;
      const total = cmrGates.reduce((a, g) => a + g.size, 0);
      losses.cmr_budget = T.scale(T.abs(T.addScalar(T.scale(used, 1 / total), -cmr.budget)), cmr.loss_coef);
    }
    h = this.norm.forward(h);
    let logits = this.lm_head ? this.lm_head.forward(h) : T.linear(h, this.embed_tokens.weight);
    if (c.logits_scaling !== 1) logits = T.scale(logits, 1 / c.logits_scaling);
    return { logits, aux, losses, ...(depth.length ? { depth } : {}) };
  }

  /**
   * A Mixture-of-Depths layer (src/models/depth.ts): route, run the block on the chosen rows at
   * their own positions, add the weighted update back. Sequences with equal counts run as one
   * batch; a causal selection with unequal counts runs sequence by sequence.
   */
  private depthLayer(
    layer: DecoderLayer,
    i: number,
    h: Tensor,
    B: number,
    Tn: number,
    past: number,
    cache: KVCache | undefined,
    ids: Int32Array,
    ctx: RouterContext,
    block: DepthBlock,
    ffnPart: (layer: DecoderLayer, i: number, x2: Tensor, lctx: RouterContext) => Tensor,
    losses: Tensor[],
    records: DepthRecord[],
  ): Tensor {
    const m = this.config.mixture_of_depths!;
    const n = B * Tn;
    const gamma = m.router === 'gamma';
    const rin = gamma ? layer.input_layernorm.forward(h) : h;
    let z: Tensor;
    let w: Tensor;
    if (gamma) {
      const l = this.depth_router_shared!.forward(rin);
      w = T.slice(T.softmax(l, -1), 1, 1, 2);
      z = T.sub(T.slice(l, 1, 1, 2), T.slice(l, 1, 0, 1));
    } else {
      z = layer.depth_router!.forward(rin);
      w = depthWeight(z, m);
    }
    const pred = layer.depth_predictor ? layer.depth_predictor.forward(detach(rin)) : null;
    const rule = pred ?? z;
    const topk = this.training || m.inference === 'topk';
    const sel = topk ? selectDepthTopK(z.data, B, Tn, depthTokens(this.depthCaps[i], Tn)) : selectDepthCausal(rule.data, B, Tn);
    if (this.training && m.aux_loss_coef > 0) {
      const target = new Float32Array(n);
      for (const r of sel.rows) target[r] = 1;
      losses.push(T.scale(bceWithLogits(rule, target), m.aux_loss_coef));
    }
    records.push({ layer: i, rows: sel.rows, tokens: n });
    let out = h;
    if (m.symmetric) {
      // p-MoD STRing: skipped rows scaled by their weight too, h + (w - 1) h
      const chosen = new Uint8Array(n);
      for (const r of sel.rows) chosen[r] = 1;
      const skip = Int32Array.from({ length: n }, (_, r) => r).filter((r) => !chosen[r]);
      if (skip.length) out = T.add(out, T.combineRows(T.gatherRows(h, skip), skip, n, T.affine(T.gatherRows(w, skip), 1, -1)));
    }
    const attnOnly = m.skip === 'attention';
    // Router-Tuning's MindSkip form: only attention is routed, every token runs the FFN
    const finish = (o: Tensor): Tensor => (attnOnly ? T.add(o, ffnPart(layer, i, o, ctx)) : o);
    if (sel.rows.length === 0) return finish(out);
    if (cache && B > 1) throw new Error(`forward: a KV cache with mixture_of_depths needs batch 1, got ${B}`);
    const equal = sel.counts.every((k) => k === sel.counts[0]);
    const groups: { rows: Int32Array; Bb: number; Tb: number }[] = [];
    if (equal) groups.push({ rows: sel.rows, Bb: B, Tb: sel.counts[0] });
    else {
      let off = 0;
      for (let b = 0; b < B; b++) {
        if (sel.counts[b] > 0) groups.push({ rows: sel.rows.subarray(off, off + sel.counts[b]), Bb: 1, Tb: sel.counts[b] });
        off += sel.counts[b];
      }
    }
    for (const g of groups) {
      const positions = Int32Array.from(g.rows, (r) => past + (r % Tn));
      const pastRows = cache?.k[i]?.shape[2] ?? 0;
      const entry: AttentionCacheEntry = cache ? { k: cache.k[i], v: cache.v[i], offset: pastRows, positions } : { k: undefined, v: undefined, offset: 0, positions };
      const bctx: RouterContext = {
        ...ctx,
        tokenIds: Int32Array.from(g.rows, (r) => ids[r]),
        batchShape: { batch: g.Bb, seqLen: g.Tb },
        ...(ctx.embeddings ? { embeddings: T.gatherRows(ctx.embeddings, g.rows) } : {}),
      };
      const { da, df } = block(layer, i, T.gatherRows(h, g.rows), g.Bb, g.Tb, entry, bctx, pastRows, attnOnly);
      const wg = T.gatherRows(w, g.rows);
      // gamma-MoD weighs the FFN update only; MoD the whole block's
      if (!df) out = T.add(out, T.combineRows(da, g.rows, n, wg));
      else out = gamma ? T.add(T.add(out, T.scatterRows(da, g.rows, n)), T.combineRows(df, g.rows, n, wg)) : T.add(out, T.combineRows(T.add(da, df), g.rows, n, wg));
    }
    return finish(out);
  }

  /** The largest two-pass consistency coefficient any router asks for (0: one pass per step). */
  consistencyWeight(): number {
    return Math.max(0, ...this.moeLayers().map((m) => m.router.consistencyWeight ?? 0));
  }

  /**
   * Block-coordinate schedules (MAE): any submodule with `trainableAt(step)` names what trains at
   * this step (`only` these, or all but `freeze`); the gradients of the rest are dropped, so the
   * optimizer leaves them (and their moments) untouched. Trainers call it between backward and
   * the optimizer step; a no-op when no module has a schedule.
   */
  dropScheduledGradients(step: number): void {
    const only = new Set<Parameter>();
    let restrict = false;
    const freeze = new Set<Parameter>();
    const visit = (m: Module): void => {
      const r = (m as { trainableAt?: (step: number) => StepTrainables | null }).trainableAt?.(step);
      if (r?.only) {
        restrict = true;
        for (const p of r.only) only.add(p);
      }
      if (r?.freeze) for (const p of r.freeze) freeze.add(p);
      for (const [, c] of m.namedChildren()) visit(c);
    };
    visit(this);
    if (!restrict && freeze.size === 0) return;
    for (const p of this.parameters()) {
      if ((restrict && !only.has(p)) || freeze.has(p)) {
        p.grad = null;
        if ('rowGrad' in p) (p as { rowGrad: unknown }).rowGrad = null;
      }
    }
  }

  /** Let adaptive routers update after an optimizer step. */
  afterStep(): void {
    for (const m of this.moeLayers()) m.afterStep();
    for (const l of this.layers) l.ffn_block?.afterStep?.();
  }

  emptyCache(): KVCache {
    return { k: [], v: [], length: 0 };
  }

  /** Parameters that a token actually uses (shared + top-k experts), for FLOP-matched comparisons. */
  activeParameters(): number {
    const c = this.config;
    let total = 0;
    for (const l of this.layers) if (l.ffn_block) total += l.ffn_block.activeParameters();
    for (const [name, p] of this.namedParameters()) {
      if (name.includes('.ffn_block.')) continue;
      if (name.includes('block_sparse_moe') && name.includes('experts') && !name.includes('shared')) {
        const l = layerConfig(c, Number(/^layers\.(\d+)\./.exec(name)?.[1] ?? 0));
        // k may count zero-compute null experts (k > E): at most every real expert computes
        total += (p.size / Math.max(1, l.num_local_experts)) * Math.min(l.num_experts_per_tok, l.num_local_experts);
      } else total += p.size;
    }
    return Math.round(total);
  }
}

/** Symmetric KL divergence between two passes' next-token distributions, mean over rows: (KL(p||q) + KL(q||p)) / 2. */
export function symmetricKL(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 2 || a.shape[0] !== b.shape[0] || a.shape[1] !== b.shape[1])
    throw new Error(`symmetricKL: logits must be two equal [rows, vocab] tensors, got [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
  const la = T.logSoftmax(a, -1);
  const lb = T.logSoftmax(b, -1);
  const d = T.sub(la, lb);
  const kl = T.sum(T.mul(T.sub(T.exp(la), T.exp(lb)), d));
  return T.scale(kl, 0.5 / a.shape[0]);
}

/** Cross-entropy plus every MoE layer's (already scaled) losses. */
export function lmLoss(res: ForwardResult, targets: Int32Array): { loss: Tensor; ce: Tensor; auxLosses: Record<string, number> } {
  const ce = T.crossEntropy(res.logits, targets);
  let loss = ce;
  const auxLosses: Record<string, number> = {};
  const all = [...res.aux.map((a) => a.aux.losses), res.losses ?? {}];
  for (const losses of all) {
    for (const [name, l] of Object.entries(losses)) {
      loss = T.add(loss, l);
      auxLosses[name] = (auxLosses[name] ?? 0) + l.item();
    }
  }
  return { loss, ce, auxLosses };
}

familyRegistry.register(
  defineFamily({
    name: 'moe-ts',
    summary: 'decoder-only transformer: attention blocks (any attention kind) with MoE or dense FFNs',
    paper: { authors: 'Shazeer et al.', title: 'Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer', year: 2017 },
    options: {},
    traits: { attention: true, decodeEngine: true, gguf: true, hfExport: true, adapt: true, cache: 'kv' },
    create: (c, _o, seed) => new MoETransformerLM(c, seed),
  }),
);

/**
 * The model as the MoE transformer, for code that needs its blocks (the decode engine, GGUF and
 * Hugging Face export, adaptation); another family fails with one line naming `what` and the
 * families that support the feature.
 */
export function asTransformer(model: LanguageModel, trait: Exclude<keyof FamilyTraits, 'cache'>, what: string): MoETransformerLM {
  if (model instanceof MoETransformerLM) return model;
  throw unsupportedFeature(model.config, trait, what);
}
