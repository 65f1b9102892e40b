/**
 * Sparse all-MLP language model (Efficient Language Modeling with Sparse all-MLP, Yu et al. 2022),
 * model_type 'all-mlp': no attention; each block is RMSNorm -> token-mixing MoE -> residual, then
 * RMSNorm -> feature-mixing MoE (sMoE: the MoE layer, any router) -> residual.
 *
 * Token mixing (tMoE): the features are split into `token_mixing_experts` chunks, and expert e
 * mixes chunk e over the sequence with its own matrix [Tmax, Tmax] (Tmax = max_position_embeddings).
 * Causality: each matrix is masked to its lower triangle, so position t reads only positions <= t,
 * and routing is deterministic (chunk e -> expert e), as the paper does for language modelling: a
 * learned gate over a chunk would look at the chunk's values at every position, future ones
 * included. Generation caches each layer's token-mixing inputs; a step mixes the new positions
 * against them (O(T) in the context length) and runs the feature-mixing MoE on the new tokens only.
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { posInt, z } from '../tensor/validate.js';
import { Module, Linear, Embedding, RMSNorm, Parameter, param } from '../nn/index.js';
import { MoELayer } from '../moe/layer.js';
import type { RouterContext } from '../moe/types.js';
import { type ModelConfig, isMoELayer } from './config.js';
import { DenseFFN, moeLayerConfig, outputScale } from './transformer.js';
import { checkMemory } from './memory.js';
import { ATTENTION_ONLY_FIELDS, TRANSFORMER_ONLY_FIELDS, activeParametersOf, checkLMInput, moeOrDenseFFN } from './mamba.js';
import { familyRegistry, defineFamily, type LanguageModel, type LMForwardOptions, type LMForwardResult, type ModelCache, type ParsedFamilyOptions } from './family.js';

/** Mixing matrices beyond this many elements in all are refused at config time (Tmax^2 per expert per layer). */
const MAX_MIXING_ELEMENTS = 2 ** 26;

const options = {
  token_mixing_experts: posInt().default(4).describe('feature chunks, each mixed over the sequence by its own causal matrix (must divide hidden_size)'),
  token_mixing_init: z.enum(['mean', 'zeros']).default('mean').describe("initial mixing: 'mean' (each position averages its past) or 'zeros'"),
};
/** The 'all-mlp' family's options (family_options), defaults applied. */
export type AllMLPOptions = ParsedFamilyOptions<typeof options>;

/** Token-mixing MoE: deterministic chunk -> expert routing, each expert a causal [Tmax, Tmax] mixing with a per-position bias. */
export class TokenMixingMoE extends Module {
  /** [E, Tmax, Tmax]; only the lower triangle is read. */
  weight: Parameter;
  /** [E, Tmax]. */
  bias: Parameter;
  constructor(
    readonly experts: number,
    readonly maxLen: number,
    init: AllMLPOptions['token_mixing_init'],
    outScale: number,
    rng: Rng,
  ) {
    super();
    this.weight = param([experts, maxLen, maxLen], 'zeros');
    this.bias = param([experts, maxLen], 'zeros');
    if (init === 'mean') {
      // each position starts as the (scaled) mean of its past plus noise, so the experts differ
      const w = this.weight.data;
      for (let e = 0; e < experts; e++) for (let t = 0; t < maxLen; t++) for (let s = 0; s <= t; s++) w[(e * maxLen + t) * maxLen + s] = outScale * (1 / (t + 1) + 0.02 * rng.normal());
    }
  }
  /** Positions from..Tn-1 of the mixed sequences (all of them by default). */
  forward(x: Tensor, B: number, Tn: number, from = 0): Tensor {
    return T.causalTokenMix(x, this.weight, this.bias, B, Tn, from);
  }
}

/** One sparse all-MLP block: token-mixing MoE then feature-mixing MoE (or dense FFN), each pre-normed with a residual. */
export class AllMLPLayer extends Module {
  input_layernorm: RMSNorm;
  token_mixing: TokenMixingMoE;
  post_mixer_layernorm: RMSNorm;
  mlp: DenseFFN | null;
  block_sparse_moe: MoELayer | null;
  constructor(cfg: ModelConfig, o: AllMLPOptions, index: number, rng: Rng) {
    super();
    const d = cfg.hidden_size;
    this.input_layernorm = new RMSNorm(d, cfg.rms_norm_eps);
    this.token_mixing = new TokenMixingMoE(o.token_mixing_experts, cfg.max_position_embeddings, o.token_mixing_init, outputScale(cfg), rng);
    this.post_mixer_layernorm = new RMSNorm(d, cfg.rms_norm_eps);
    const moe = isMoELayer(cfg, index);
    this.block_sparse_moe = moe ? new MoELayer(moeLayerConfig(cfg), rng) : null;
    this.mlp = moe ? null : new DenseFFN(d, cfg.intermediate_size, cfg.hidden_act, outputScale(cfg), rng);
  }
}

/**
 * The all-MLP cache: per layer the token-mixing inputs of every position so far ([batch, length,
 * hidden], under no gradient). A step mixes the new positions against them and runs the
 * feature-mixing MoE on the new tokens only, so routing records cover just the new tokens.
 */
export interface AllMLPCache extends ModelCache {
  mixIn: Float32Array[];
  batch: number;
}

/** The sparse all-MLP language model (model_type 'all-mlp'). */
export class SparseAllMLPLM extends Module implements LanguageModel {
  embed_tokens: Embedding;
  layers: AllMLPLayer[];
  norm: RMSNorm;
  lm_head: Linear | null;
  constructor(
    readonly config: ModelConfig,
    opts: AllMLPOptions,
    seed: number,
  ) {
    super();
    checkMemory(config);
    const c = config;
    const rng = new Rng(seed);
    this.embed_tokens = new Embedding(c.vocab_size, c.hidden_size, rng, c.initializer_range);
    this.layers = [];
    for (let i = 0; i < c.num_hidden_layers; i++) this.layers.push(new AllMLPLayer(c, opts, i, rng));
    this.norm = new RMSNorm(c.hidden_size, c.rms_norm_eps);
    this.lm_head = c.tie_word_embeddings ? null : new Linear(c.hidden_size, c.vocab_size, rng, { std: c.initializer_range });
  }

  moeLayers(): MoELayer[] {
    return this.layers.flatMap((l) => (l.block_sparse_moe ? [l.block_sparse_moe] : []));
  }

  moeLayerIndices(): number[] {
    return this.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  }

  emptyCache(): AllMLPCache {
    return { length: 0, mixIn: [], batch: 0 };
  }

  forward(ids: Int32Array, B: number, Tn: number, opts: LMForwardOptions): LMForwardResult {
    const c = this.config;
    const cache = opts.cache as AllMLPCache | undefined;
    const past = cache?.length ?? 0;
    checkLMInput(c, ids, B, Tn, past);
    if (cache && past > 0 && cache.batch !== B) throw new Error(`forward: the cache holds ${cache.batch} sequences, got a batch of ${B}`);
    const L = past + Tn;
    const d = c.hidden_size;
    const p = this.training ? c.hidden_dropout : 0;
    const drop = (t: Tensor): Tensor => (p > 0 && opts.dropoutRng ? T.dropout(t, p, opts.dropoutRng) : t);
    let h = drop(this.embed_tokens.forward(ids));
    const ctx: RouterContext = { ...opts.ctx, tokenIds: ids, state: new Map(), batchShape: { batch: B, seqLen: Tn }, embeddings: h };
    const aux: LMForwardResult['aux'] = [];
    this.layers.forEach((layer, i) => {
      let n = layer.input_layernorm.forward(h);
      if (cache) {
        // the mixing inputs of all L positions: the cached past, then the new ones
        const all = new Float32Array(B * L * d);
        for (let b = 0; b < B; b++) {
          if (past > 0) all.set(cache.mixIn[i].subarray(b * past * d, (b + 1) * past * d), b * L * d);
          all.set(n.data.subarray(b * Tn * d, (b + 1) * Tn * d), (b * L + past) * d);
        }
        cache.mixIn[i] = all;
        if (past > 0) n = new Tensor(all, [B * L, d]);
      }
      // with a cache, only the new positions are mixed, against the whole context
      const mixed = cache && past > 0 ? layer.token_mixing.forward(n, B, L, past) : layer.token_mixing.forward(n, B, Tn);
      h = T.add(h, drop(mixed));
      const r = moeOrDenseFFN(layer.block_sparse_moe, layer.mlp, layer.post_mixer_layernorm.forward(h), ctx, c.router_jitter_noise);
      if (r.aux) aux.push({ layer: i, aux: r.aux });
      h = T.add(h, drop(r.y));
    });
    if (cache) {
      cache.length = L;
      cache.batch = B;
    }
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
    name: 'all-mlp',
    summary: 'attention-free all-MLP LM: causal token-mixing MoE (feature chunks) and feature-mixing MoE',
    paper: { authors: 'Yu et al.', title: 'Efficient Language Modeling with Sparse all-MLP', year: 2022 },
    options,
    traits: { attention: false, decodeEngine: false, gguf: false, hfExport: false, adapt: false, cache: 'kv' },
    unusedFields: [...ATTENTION_ONLY_FIELDS, ...TRANSFORMER_ONLY_FIELDS],
    refine: (o, c, issue) => {
      if (c.hidden_size % o.token_mixing_experts !== 0) issue('token_mixing_experts', `must divide hidden_size (${c.hidden_size})`);
      const n = o.token_mixing_experts * c.max_position_embeddings ** 2 * c.num_hidden_layers;
      if (n > MAX_MIXING_ELEMENTS) {
        issue(
          'token_mixing_experts',
          `times max_position_embeddings^2 times num_hidden_layers is ${n} mixing weights, more than ${MAX_MIXING_ELEMENTS}; lower max_position_embeddings (${c.max_position_embeddings})`,
        );
      }
    },
    memory: (c) => {
      const e = (c.family_options?.token_mixing_experts as number | undefined) ?? 4;
      const w = e * c.max_position_embeddings ** 2;
      return { params: w * c.num_hidden_layers, activations: 0, largest: w };
    },
    create: (c, o, seed) => new SparseAllMLPLM(c, o as AllMLPOptions, seed),
  }),
);
