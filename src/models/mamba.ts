/**
 * MoE-Mamba / BlackMamba (MoE-Mamba: Efficient Selective State Space Models with Mixture of
 * Experts, Pióro et al. 2024; BlackMamba: Mixture of Experts for State-Space Models, Anthony et
 * al. 2024): a language model whose layers alternate a Mamba selective state-space block with an
 * MoE FFN, model_type 'mamba-moe'. Each layer is RMSNorm -> Mamba mixer -> residual, then RMSNorm
 * -> MoE (or dense) FFN -> residual; the FFN side is the same MoE layer as the transformer's, so
 * every router, expert type, dispatch and loss applies. With num_local_experts 0 it is Mamba with
 * dense MLPs.
 *
 * The mixer follows Mamba (Gu & Dao 2023; parameter names as in Hugging Face's MambaMixer):
 * in_proj to 2 * d_inner (x and the gate z), causal depthwise conv1d on x, SiLU, x_proj to
 * (Δ rank, B, C), dt_proj back to d_inner (softplus inside the scan), the selective scan
 * (src/tensor/ops/ssm_ops.ts), y * SiLU(z), out_proj. Generation is recurrent: the cache holds
 * each layer's last conv_kernel - 1 conv inputs and its SSM state [batch, d_inner, state_size],
 * so a step costs O(1) in the context length.
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { posInt, positive, bool } from '../tensor/validate.js';
import { Module, Linear, Embedding, RMSNorm, Parameter, param } from '../nn/index.js';
import { MoELayer } from '../moe/layer.js';
import type { MoEAux, RouterContext } from '../moe/types.js';
import { type ModelConfig, isMoELayer } from './config.js';
import { DenseFFN, moeLayerConfig, outputScale } from './transformer.js';
import { checkMemory } from './memory.js';
import { familyRegistry, defineFamily, type LanguageModel, type LMForwardOptions, type LMForwardResult, type ModelCache, type ParsedFamilyOptions } from './family.js';

const options = {
  state_size: posInt().default(16).describe('SSM state per channel (N)'),
  conv_kernel: posInt().default(4).describe('width of the causal depthwise conv1d'),
  expand: posInt().default(2).describe('d_inner = expand * hidden_size'),
  time_step_rank: posInt().optional().describe('rank of the Δ projection (default ceil(hidden_size / 16))'),
  use_conv_bias: bool().default(true).describe('bias on the conv1d'),
  use_bias: bool().default(false).describe('biases on in_proj and out_proj'),
  time_step_min: positive().default(0.001).describe('smallest initial Δ (dt_proj bias init, log-uniform)'),
  time_step_max: positive().default(0.1).describe('largest initial Δ'),
};
/** The 'mamba-moe' family's options (family_options), defaults applied. */
export type MambaOptions = ParsedFamilyOptions<typeof options>;

/** Fields of the shared model config that only attention hosts read. */
export const ATTENTION_ONLY_FIELDS = [
  'num_attention_heads',
  'num_key_value_heads',
  'head_dim',
  'attention_bias',
  'qkv_bias',
  'qk_norm',
  'kv_lora_rank',
  'q_lora_rank',
  'qk_nope_head_dim',
  'qk_rope_head_dim',
  'v_head_dim',
  'sliding_window',
  'layer_types',
  'attention_sinks',
  'attention_type',
  'attention_options',
  'attention_multiplier',
  'rope_scaling',
  'rope_theta',
] as const;

/** Fields of the transformer family these hosts do not implement (GraniteMoE scaling, JetMoE bias, Qwen2-MoE's gated shared expert, the HF all-layers loss, LoRA experts). */
export const TRANSFORMER_ONLY_FIELDS = [
  'embedding_multiplier',
  'residual_multiplier',
  'logits_scaling',
  'moe_output_bias',
  'shared_expert_gate',
  'aux_loss_normalization',
  'peft',
  'layer_norm_eps',
  // built by DecoderLayer / MoETransformerLM only
  'conditional_moe_routing',
  'ffn_type',
  'ffn_options',
  'moe_layer_overrides',
  'mixture_of_depths',
  'layer_groups',
  'norm_placement',
] as const;

/** Depthwise conv1d weights in PyTorch's layout: weight [C, 1, K], bias [C]. */
export class DepthwiseConv1d extends Module {
  weight: Parameter;
  bias: Parameter | null;
  constructor(
    readonly channels: number,
    readonly kernel: number,
    bias: boolean,
    rng: Rng,
  ) {
    super();
    // PyTorch's Conv1d default init: U(±1/sqrt(fan_in)), fan_in = kernel for a depthwise conv
    const bound = 1 / Math.sqrt(kernel);
    this.weight = param([channels, 1, kernel], { uniform: bound }, rng);
    this.bias = bias ? param([channels], { uniform: bound }, rng) : null;
  }
}

/** One layer's recurrent state: the last K-1 conv inputs [B, K-1, d_inner] and the SSM state [B, d_inner, N]. */
export interface MambaLayerState {
  conv: Float32Array;
  ssm: Float32Array;
}

/** The Mamba mixer: x [B*T, d] -> [B*T, d] through the selective state space. */
export class MambaMixer extends Module {
  in_proj: Linear;
  conv1d: DepthwiseConv1d;
  x_proj: Linear;
  dt_proj: Linear;
  /** log(-A) [d_inner, N]; A = -exp(A_log) keeps the state decaying. */
  A_log: Parameter;
  /** Skip connection [d_inner]. */
  D: Parameter;
  out_proj: Linear;
  readonly dInner: number;
  readonly stateSize: number;
  readonly dtRank: number;
  constructor(cfg: ModelConfig, o: MambaOptions, rng: Rng) {
    super();
    const d = cfg.hidden_size;
    const di = o.expand * d;
    const N = o.state_size;
    const R = o.time_step_rank ?? Math.ceil(d / 16);
    this.dInner = di;
    this.stateSize = N;
    this.dtRank = R;
    this.in_proj = new Linear(d, 2 * di, rng, { bias: o.use_bias });
    this.conv1d = new DepthwiseConv1d(di, o.conv_kernel, o.use_conv_bias, rng);
    this.x_proj = new Linear(di, R + 2 * N, rng);
    // Mamba's Δ init: dt_proj weight U(±R^-0.5), bias = softplus^-1(Δ) with Δ log-uniform in [min, max]
    this.dt_proj = new Linear(R, di, rng, { bias: true });
    this.dt_proj.weight.data.set(rng.fillUniform(new Float32Array(di * R), -1 / Math.sqrt(R), 1 / Math.sqrt(R)));
    const lo = Math.log(o.time_step_min);
    const hi = Math.log(o.time_step_max);
    const bias = this.dt_proj.bias!.data;
    for (let i = 0; i < di; i++) {
      const dt = Math.max(1e-4, Math.exp(lo + rng.next() * (hi - lo)));
      bias[i] = dt + Math.log(-Math.expm1(-dt)); // inverse softplus
    }
    // S4D-real init: A_n = -(n + 1)
    this.A_log = param([di, N], 'zeros');
    for (let i = 0; i < di; i++) for (let n = 0; n < N; n++) this.A_log.data[i * N + n] = Math.log(n + 1);
    this.D = param([di], 'ones');
    this.out_proj = new Linear(di, d, rng, { bias: o.use_bias, std: outputScale(cfg) / Math.sqrt(di) });
  }

  /** A zero state for `batch` sequences. */
  emptyState(batch: number): MambaLayerState {
    return { conv: new Float32Array(batch * (this.conv1d.kernel - 1) * this.dInner), ssm: new Float32Array(batch * this.dInner * this.stateSize) };
  }

  /** x [B*T, d] -> [B*T, d]; with a state, the sequences continue from it and it is advanced past these T tokens. */
  forward(x: Tensor, B: number, Tn: number, state?: MambaLayerState): Tensor {
    const di = this.dInner;
    const N = this.stateSize;
    const [xi, zg] = T.split(this.in_proj.forward(x), [di, di], 1);
    const conv = T.causalConv1d(xi, this.conv1d.weight, this.conv1d.bias, B, Tn, state?.conv);
    if (state) state.conv = T.convState(xi, this.conv1d.kernel, B, Tn, state.conv);
    const xc = T.silu(conv);
    const [dtr, bm, cm] = T.split(this.x_proj.forward(xc), [this.dtRank, N, N], 1);
    const dt = this.dt_proj.forward(dtr);
    const next = state ? new Float32Array(state.ssm.length) : undefined;
    const y = T.selectiveScan(xc, dt, this.A_log, bm, cm, this.D, B, Tn, { h0: state?.ssm, stateOut: next });
    if (state && next) state.ssm = next;
    return this.out_proj.forward(T.mul(y, T.silu(zg)));
  }
}

/** One MoE-Mamba layer: Mamba mixer and an MoE (or dense) FFN, each pre-normed with a residual. */
export class MambaMoELayer extends Module {
  input_layernorm: RMSNorm;
  mixer: MambaMixer;
  post_mixer_layernorm: RMSNorm;
  mlp: DenseFFN | null;
  block_sparse_moe: MoELayer | null;
  constructor(cfg: ModelConfig, o: MambaOptions, index: number, rng: Rng) {
    super();
    const d = cfg.hidden_size;
    this.input_layernorm = new RMSNorm(d, cfg.rms_norm_eps);
    this.mixer = new MambaMixer(cfg, o, rng);
    this.post_mixer_layernorm = new RMSNorm(d, cfg.rms_norm_eps);
    const moe = isMoELayer(cfg, index);
    this.block_sparse_moe = moe ? new MoELayer(moeLayerConfig(cfg), rng) : null;
    this.mlp = moe ? null : new DenseFFN(d, cfg.intermediate_size, cfg.hidden_act, outputScale(cfg), rng);
  }
}

/** Cache of a Mamba LM: per layer its recurrent state, for the batch it was started with. */
export interface MambaCache extends ModelCache {
  layers: MambaLayerState[];
  batch: number;
}

/** Shared FFN half of a layer: MoE with Mixtral's optional input jitter, or the dense FFN. */
export function moeOrDenseFFN(moe: MoELayer | null, mlp: DenseFFN | null, n: Tensor, ctx: RouterContext, jitterEps: number): { y: Tensor; aux?: MoEAux } {
  if (!moe) return { y: mlp!.forward(n) };
  const x = ctx.training && jitterEps > 0 ? T.maskMul(n, ctx.rng.fillUniform(new Float32Array(n.size), 1 - jitterEps, 1 + jitterEps)) : n;
  const r = moe.forward(x, ctx);
  return { y: r.y, aux: r.aux };
}

/** Check token ids and the context length the way the transformer does (one line naming the id or length). */
export function checkLMInput(c: ModelConfig, ids: Int32Array, B: number, Tn: number, past: number): void {
  if (ids.length !== B * Tn) throw new Error(`forward: ${ids.length} token ids for batch ${B} x ${Tn}`);
  if (past + Tn > c.max_position_embeddings) throw new Error(`forward: sequence of ${past + Tn} tokens exceeds max_position_embeddings ${c.max_position_embeddings}`);
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] < 0 || ids[i] >= c.vocab_size) throw new Error(`forward: token id ${ids[i]} at position ${i} outside vocab_size ${c.vocab_size}`);
  }
}

/** Parameters a token uses: all but the unchosen routed experts (names as in the transformer). */
export function activeParametersOf(model: Module, c: ModelConfig): number {
  let total = 0;
  for (const [name, p] of model.namedParameters()) {
    if (name.includes('block_sparse_moe') && name.includes('experts') && !name.includes('shared')) {
      total += (p.size / Math.max(1, c.num_local_experts)) * Math.min(c.num_experts_per_tok, c.num_local_experts);
    } else total += p.size;
  }
  return Math.round(total);
}

/** The MoE-Mamba language model (model_type 'mamba-moe'). */
export class MambaMoELM extends Module implements LanguageModel {
  embed_tokens: Embedding;
  layers: MambaMoELayer[];
  norm: RMSNorm;
  lm_head: Linear | null;
  readonly options: MambaOptions;
  constructor(
    readonly config: ModelConfig,
    opts: MambaOptions,
    seed: number,
  ) {
    super();
    checkMemory(config);
    this.options = opts;
    const c = config;
    const rng = new Rng(seed);
    this.embed_tokens = new Embedding(c.vocab_size, c.hidden_size, rng, c.initializer_range);
    this.layers = [];
    for (let i = 0; i < c.num_hidden_layers; i++) this.layers.push(new MambaMoELayer(c, opts, i, rng));
    this.norm = new RMSNorm(c.hidden_size, c.rms_norm_eps);
    this.lm_head = c.tie_word_embeddings ? null : new Linear(c.hidden_size, c.vocab_size, rng, { std: c.initializer_range });
  }

  moeLayers(): MoELayer[] {
    return this.layers.flatMap((l) => (l.block_sparse_moe ? [l.block_sparse_moe] : []));
  }

  moeLayerIndices(): number[] {
    return this.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  }

  emptyCache(): MambaCache {
    return { length: 0, layers: [], batch: 0 };
  }

  forward(ids: Int32Array, B: number, Tn: number, opts: LMForwardOptions): LMForwardResult {
    const c = this.config;
    const cache = opts.cache as MambaCache | undefined;
    const past = cache?.length ?? 0;
    checkLMInput(c, ids, B, Tn, past);
    if (cache) {
      if (cache.layers.length === 0) {
        cache.batch = B;
        cache.layers = this.layers.map((l) => l.mixer.emptyState(B));
      } else if (cache.batch !== B) throw new Error(`forward: the cache holds ${cache.batch} sequences, got a batch of ${B}`);
    }
    const p = this.training ? c.hidden_dropout : 0;
    const drop = (t: Tensor): Tensor => (p > 0 && opts.dropoutRng ? T.dropout(t, p, opts.dropoutRng) : t);
    let h = drop(this.embed_tokens.forward(ids));
    const ctx: RouterContext = { ...opts.ctx, tokenIds: ids, state: new Map(), batchShape: { batch: B, seqLen: Tn }, embeddings: h };
    const aux: LMForwardResult['aux'] = [];
    this.layers.forEach((layer, i) => {
      h = T.add(h, drop(layer.mixer.forward(layer.input_layernorm.forward(h), B, Tn, cache?.layers[i])));
      const r = moeOrDenseFFN(layer.block_sparse_moe, layer.mlp, layer.post_mixer_layernorm.forward(h), ctx, c.router_jitter_noise);
      if (r.aux) aux.push({ layer: i, aux: r.aux });
      h = T.add(h, drop(r.y));
    });
    if (cache) cache.length = past + Tn;
    h = this.norm.forward(h);
    const logits = this.lm_head ? this.lm_head.forward(h) : T.linear(h, this.embed_tokens.weight);
    return { logits, aux, losses: {} };
  }

  consistencyWeight(): number {
    return Math.max(0, ...this.moeLayers().map((m) => m.router.consistencyWeight ?? 0));
  }

  afterStep(): void {
    for (const m of this.moeLayers()) m.afterStep();
  }

  activeParameters(): number {
    return activeParametersOf(this, this.config);
  }
}

familyRegistry.register(
  defineFamily({
    name: 'mamba-moe',
    summary: 'Mamba selective state-space blocks interleaved with MoE FFNs (recurrent generation)',
    paper: { authors: 'Pióro et al.', title: 'MoE-Mamba: Efficient Selective State Space Models with Mixture of Experts', year: 2024 },
    options,
    traits: { attention: false, decodeEngine: false, gguf: false, hfExport: false, adapt: false, cache: 'recurrent' },
    unusedFields: [...ATTENTION_ONLY_FIELDS, ...TRANSFORMER_ONLY_FIELDS],
    refine: (o, _c, issue) => {
      if (o.time_step_min > o.time_step_max) issue('time_step_min', `must be at most time_step_max (${o.time_step_max})`);
    },
    memory: (c, t) => {
      const o = c.family_options ?? {};
      const di = ((o.expand as number | undefined) ?? 2) * c.hidden_size;
      const n = (o.state_size as number | undefined) ?? 16;
      // the scan keeps every state and decay for the backward: 2 x [tokens, d_inner, N] per layer
      const states = t ? t.batch_size * t.seq_len * di * n : 0;
      return { params: 0, activations: 2 * states * c.num_hidden_layers, largest: states };
    },
    create: (c, o, seed) => new MambaMoELM(c, o as MambaOptions, seed),
  }),
);
