/**
 * The fast decode path: a model's weights extracted once into plain arrays (float32 or q8_0/q4_0
 * PreparedMatrix blocks), a preallocated KV cache ([kvHeads, capacity, headDim] per layer, written
 * in place: no concatenation per token), matrix-vector kernels for one token and row-batched ones
 * for the prompt, and no autograd tensors on the hot path. The eager `model.forward` stays the
 * reference; `DecodeEngine.unsupported(model)` names what this path does not cover (then
 * generate uses the eager one).
 *
 * MoE layers with FFN experts and dropless dispatch run their experts here (assignments grouped
 * by expert, so a prompt batch reads each expert's weights once); the router itself runs through
 * its own module on the normalised rows, so every registered token-choice router works. Any
 * other FFN (capacity dispatch, soft routing, other expert types, CMR, MH-MoE sub-tokens) runs
 * through the layer's own forward on those rows. Shared experts (the MoE layer's bank, or Qwen2's
 * sigmoid-gated one) are compiled here as one dense FFN in the `quant` format, like dense layers.
 */
import { Tensor, noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import {
  quantizeMatrix,
  QUANT_FORMATS,
  jsQuantKernels,
  prepareActs,
  matmulOnActs,
  type QuantFormat,
  type QuantMatrix,
  type PreparedMatrix,
  type QuantKernels,
  type PreparedActs,
  type ActsMatmulOptions,
  type QuantizeOptions,
} from '../kernels/quant.js';
import { Attention, type MoETransformerLM, type DecoderLayer } from '../models/transformer.js';
import { ropeParams } from '../models/rope.js';
import { headDimOf, kvHeadsOf } from '../models/config.js';
import { FFNExperts, SharedExperts } from '../moe/experts/ffn.js';
import { LoraExpertsLinear } from '../models/lora-experts.js';
import type { RouterContext } from '../moe/types.js';

/** Options of a DecodeEngine. */
export interface DecodeEngineOptions {
  /** Weight format of every projection, expert and the LM head (default f32). */
  quant?: QuantFormat;
  /**
   * Weight format of the routed FFN experts only (default: `quant`), e.g. q2_m experts with f32
   * or q8_0 attention, embeddings and dense FFNs (MoQE). Experts that run through their layer's
   * own forward (the 'module' FFN kinds, see the file comment) stay float32.
   */
  expertQuant?: QuantFormat;
  /**
   * Quantiser options of the expert format (tq_e: `minZeros`, `tuple`). tq_e experts stay
   * compressed in memory and are decoded on the fly by every product.
   */
  expertQuantOptions?: QuantizeOptions;
  /**
   * Given expert matrices ([out, in] rows, e.g. GPTQ-rounded tq_e streams) used as they are instead
   * of quantising the model's; null: quantise the model's.
   */
  expertWeights?: (layer: number, expert: number, which: 'w1' | 'w2' | 'w3', rows: number, cols: number) => QuantMatrix | null;
  /** Called with each routed expert's inputs on every forward: x [m, d] (of w1, w3) and h [m, dFF] (of w2, after the activation). */
  onExpertInputs?: (layer: number, expert: number, x: Float32Array, h: Float32Array, m: number) => void;
  /** KV cache capacity in tokens (default max_position_embeddings). */
  capacity?: number;
  /** Seeds the router context's Rng (routers are deterministic in eval mode). */
  seed?: number;
  /** Kernels of the products (default the js reference; `WasmQuantKernels` from moe-ts/node is the SIMD one). */
  kernels?: QuantKernels;
  /** Stored blocks of weights, used as they are instead of quantising the model's (e.g. a GGUF file's Q8_0 tensors). */
  weights?: WeightSource;
  /** Where MoE experts come from instead of the model (expert offloading, src/infer/offload.ts). */
  experts?: ExpertSource;
  /** Prefetch the next layer's experts by its router on the current hidden state (Pre-gated MoE; default true with `experts`). */
  prefetch?: boolean;
  /**
   * AdapMoE-style expert skipping: a token's 2nd..kth expert is dropped when its renormalised
   * weight (weight / the token's top-k sum) is below this; the kept weights are rescaled to the
   * same sum (default 0: off).
   */
  skipThreshold?: number;
  /**
   * Capacity-aware token dropping in prompt batches (n > 1): each expert takes at most
   * ceil(factor * n * k / E) of a batch's assignments, the lowest-weight ones beyond that are
   * dropped (default 0: off). Decode steps (one token) are never dropped.
   */
  capacityFactor?: number;
}

/** One expert's weights as the engine multiplies them: w1 (gate) and w3 (up) [dFF, d], w2 (down) [d, dFF]. */
export interface ExpertWeights {
  w1: PreparedMatrix;
  w3: PreparedMatrix | null;
  w2: PreparedMatrix;
}

/** Where a DecodeEngine takes MoE experts from instead of the model (expert offloading). */
export interface ExpertSource {
  /** Whether layer `layer`'s experts come from this source. */
  covers(layer: number): boolean;
  /** Called once by the engine with its kernels and the bytes everything else holds (weights + KV cache); throws when the budget cannot fit. */
  bind(kernels: QuantKernels, residentBytes: number): void;
  /** Expert `expert` of layer `layer`, valid until the next get. */
  get(layer: number, expert: number): ExpertWeights;
  /** A hint: these experts of `layer` are likely needed next. */
  prefetch?(layer: number, experts: readonly number[]): void;
  /** Whether prefetch hints can do anything (false, e.g., when every expert is resident): the engine then skips the next layer's routing. */
  prefetchActive?(): boolean;
}

/** Stored blocks of a weight by its moe-ts parameter name ([out, in] rows; 'lm_head.weight' for the output), or null to quantise the model's. */
export type WeightSource = (name: string, rows: number, cols: number) => QuantMatrix | null;

/** Counters of the routing-aware options (skipThreshold, capacityFactor). */
export interface RoutingDropStats {
  /** Expert assignments the router chose. */
  assignments: number;
  /** Assignments dropped by skipThreshold. */
  skipped: number;
  /** Assignments dropped by capacityFactor. */
  capacityDropped: number;
}

interface AttnW {
  q: PreparedMatrix;
  k: PreparedMatrix;
  v: PreparedMatrix;
  o: PreparedMatrix;
  qb: Float32Array | null;
  kb: Float32Array | null;
  vb: Float32Array | null;
  ob: Float32Array | null;
  qNorm: Float32Array | null;
  kNorm: Float32Array | null;
  /** qk_norm 'full': over the whole projection; else per head. */
  normFull: boolean;
  K: Float32Array;
  V: Float32Array;
  /** LoRA experts (peft) on q, k, v, o: their adapter output is added to the base projection's. */
  lora: [LoraExpertsLinear | null, LoraExpertsLinear | null, LoraExpertsLinear | null, LoraExpertsLinear | null];
}

interface Expert {
  w1: PreparedMatrix;
  w3: PreparedMatrix | null;
  w2: PreparedMatrix;
}

/** A dense FFN: down(act(gate x) * up x), or down(gelu(up x)) without a gate. */
interface DenseW {
  gate: PreparedMatrix | null;
  up: PreparedMatrix;
  down: PreparedMatrix;
  silu: boolean;
}

/** The always-on part of an MoE layer: shared experts (Qwen2: times sigmoid(gate . x)) and the output bias. */
interface SharedW {
  ffn: DenseW | null;
  /** Qwen2's shared_expert_gate row [d], or null (ungated). */
  gate: Float32Array | null;
  bias: Float32Array | null;
}

type FFN =
  | ({ kind: 'dense' } & DenseW)
  | { kind: 'moe'; layer: DecoderLayer; experts: Expert[]; silu: boolean; dFF: number; index: number; external: boolean; shared: SharedW }
  | { kind: 'module'; layer: DecoderLayer };

const GELU_C = Math.sqrt(2 / Math.PI);
/** Prepared-activation slots: the normalised hidden rows (q/k/v, then the FFN), the attention output / final rows, an FFN's hidden rows. */
const SLOT_X = 0;
const SLOT_O = 1;
const SLOT_H = 2;

function act(silu: boolean, g: Float32Array, u: Float32Array | null, n: number): void {
  if (silu) for (let i = 0; i < n; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u![i];
  else for (let i = 0; i < n; i++) g[i] = 0.5 * g[i] * (1 + Math.tanh(GELU_C * (g[i] + 0.044715 * g[i] * g[i] * g[i])));
}

/** y [n, out] += the LoRA adapters' output on x [n, in] (eager tensor ops: adapters are small, their router per token). */
function addAdapter(l: LoraExpertsLinear, x: Float32Array, n: number, y: Float32Array): void {
  const a = l.adapterDelta(new Tensor(x.slice(0, n * l.inFeatures), [n, l.inFeatures]));
  if (!a) return;
  const v = a.data;
  for (let i = 0; i < n * l.outFeatures; i++) y[i] += v[i];
}

/** [rows, cols] row-major from [cols, rows] at off (expert weights are stored input-major): a weight as the fast path's [out, in] rows. */
export function expertRows(src: Float32Array, off: number, r: number, c: number): Float32Array {
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = src[off + i * c + j];
  return out;
}

/** Why the fast path cannot run `model` (null: it can). */
function unsupportedReason(model: MoETransformerLM): string | null {
  if (model.depthCaps.some((x) => x < 1)) return 'mixture_of_depths token routing; use --engine eager';
  if (model.layers.length !== model.config.num_hidden_layers) return 'layers shared in groups (layer_groups); use --engine eager';
  if (model.config.norm_placement !== 'pre') return 'peri-layernorm (norm_placement "peri"); use --engine eager';
  for (const l of model.layers) {
    if (!(l.self_attn instanceof Attention)) return `layer ${l.index}: attention of type ${l.self_attn.constructor.name}`;
    if (l.self_attn.sinks) return `layer ${l.index}: attention sinks`;
    if (l.self_attn.window !== undefined) return `layer ${l.index}: sliding-window attention`;
  }
  return null;
}

/** A model compiled for fast cached decoding (see the file comment). */
export class DecodeEngine {
  readonly quant: QuantFormat;
  /** Weight format of the routed FFN experts. */
  readonly expertQuant: QuantFormat;
  readonly capacity: number;
  /** Tokens in the KV cache. */
  length = 0;
  private readonly d: number;
  private readonly H: number;
  private readonly KV: number;
  private readonly Dh: number;
  private readonly V: number;
  private readonly embed: Float32Array;
  private readonly head: PreparedMatrix;
  private readonly finalNorm: Float32Array;
  private readonly attn: AttnW[] = [];
  private readonly ffn: FFN[] = [];
  private readonly norms1: Float32Array[] = [];
  private readonly norms2: Float32Array[] = [];
  private readonly cos: Float32Array;
  private readonly sin: Float32Array;
  private readonly scoreScale: number;
  private readonly ctx: Omit<RouterContext, 'tokenIds'>;
  private readonly kern: QuantKernels;
  private readonly src: ExpertSource | null;
  private readonly doPrefetch: boolean;
  private readonly skipThreshold: number;
  private readonly capacityFactor: number;
  private readonly expertWeights: DecodeEngineOptions['expertWeights'] | null;
  private readonly onExpertInputs: DecodeEngineOptions['onExpertInputs'] | null;
  /** Counters of skipThreshold / capacityFactor since construction. */
  readonly drops: RoutingDropStats = { assignments: 0, skipped: 0, capacityDropped: 0 };
  /** Bytes of weights held (quantised where quantised); the KV cache is kvBytes. */
  readonly weightBytes: number;
  /** The part of weightBytes that is routed FFN experts compiled here. */
  readonly expertBytes: number;
  /** Expert weights compiled here (values). */
  readonly expertParams: number;
  /** The tq_e streams of the routed experts compiled here (empty unless expertQuant is tq_e). */
  readonly ternaryExperts: Uint8Array[] = [];
  readonly kvBytes: number;

  /** What keeps `model` off the fast path, or null when it is supported. */
  static unsupported(model: MoETransformerLM): string | null {
    return unsupportedReason(model);
  }

  constructor(
    readonly model: MoETransformerLM,
    opts: DecodeEngineOptions = {},
  ) {
    const c = model.config;
    const why = unsupportedReason(model);
    if (why) throw new Error(`DecodeEngine: not supported by the fast path (${why}); use the eager model.forward`);
    const quant = opts.quant ?? 'f32';
    const expertQuant = opts.expertQuant ?? quant;
    for (const [k, v] of [
      ['quant', quant],
      ['expertQuant', expertQuant],
    ])
      if (!(QUANT_FORMATS as readonly string[]).includes(v)) throw new Error(`DecodeEngine: ${k} must be one of ${QUANT_FORMATS.join(', ')}, got ${JSON.stringify(v)}`);
    const cap = opts.capacity ?? c.max_position_embeddings;
    if (!Number.isInteger(cap) || cap < 1 || cap > c.max_position_embeddings) throw new Error(`DecodeEngine: capacity must be an integer in [1, ${c.max_position_embeddings}], got ${cap}`);
    this.quant = quant;
    this.expertQuant = expertQuant;
    this.capacity = cap;
    this.d = c.hidden_size;
    this.H = c.num_attention_heads;
    this.KV = kvHeadsOf(c);
    this.Dh = headDimOf(c);
    this.V = c.vocab_size;
    if (quant !== 'f32' || expertQuant !== 'f32') {
      for (const [what, n] of [
        ['hidden_size', this.d],
        ['head projections (heads * head_dim)', this.H * this.Dh],
      ] as const)
        if (n % 32 !== 0) throw new Error(`DecodeEngine: quant ${quant !== 'f32' ? quant : expertQuant} needs ${what} to be a multiple of 32, got ${n}`);
    }
    this.ctx = { training: false, step: 0, rng: new Rng((opts.seed ?? 0) ^ 0x5bd1e995) };
    let bytes = 0;
    const kern = (this.kern = opts.kernels ?? jsQuantKernels);
    this.src = opts.experts ?? null;
    this.doPrefetch = opts.prefetch ?? true;
    this.skipThreshold = opts.skipThreshold ?? 0;
    this.capacityFactor = opts.capacityFactor ?? 0;
    this.expertWeights = opts.expertWeights ?? null;
    this.onExpertInputs = opts.onExpertInputs ?? null;
    if (!(this.skipThreshold >= 0 && this.skipThreshold < 1)) throw new Error(`DecodeEngine: skipThreshold must be in [0, 1), got ${opts.skipThreshold}`);
    if (!(this.capacityFactor === 0 || (this.capacityFactor > 0 && Number.isFinite(this.capacityFactor))))
      throw new Error(`DecodeEngine: capacityFactor must be 0 (off) or a positive number, got ${opts.capacityFactor}`);
    const stored = opts.weights ?? (() => null);
    const eqo = opts.expertQuantOptions ?? {};
    const q = (w: Float32Array, rows: number, cols: number, fmt: QuantFormat = quant, name?: string, expert = false, given0: QuantMatrix | null = null): PreparedMatrix => {
      const given = expert ? given0 : name ? stored(name, rows, cols) : null;
      if (given && (given.rows !== rows || given.cols !== cols)) throw new Error(`DecodeEngine: stored weight ${name} is [${given.rows}, ${given.cols}], expected [${rows}, ${cols}]`);
      if (given && expert && given.format !== fmt) throw new Error(`DecodeEngine: given ${name} is ${given.format}, expertQuant is ${fmt}`);
      const qm = given ?? quantizeMatrix(w, rows, cols, cols % 32 === 0 || fmt === 'tq_e' ? fmt : 'f32', expert ? eqo : {});
      if (expert && qm.format === 'tq_e') this.ternaryExperts.push(qm.data as Uint8Array);
      const m = kern.prepare(qm);
      bytes += m.bytes;
      return m;
    };
    const lin = (l: { weight: Tensor; bias: Tensor | null; inFeatures: number; outFeatures: number }, name?: string) => ({
      w: q(l.weight.data, l.outFeatures, l.inFeatures, quant, name),
      b: l.bias ? l.bias.data.slice() : null,
    });
    this.embed = model.embed_tokens.weight.data;
    bytes += this.embed.byteLength;
    this.head = model.lm_head ? lin(model.lm_head, 'lm_head.weight').w : q(this.embed, this.V, this.d, quant, 'lm_head.weight');
    this.finalNorm = model.norm.weight.data;
    const kvLen = this.KV * cap * this.Dh;
    for (const layer of model.layers) {
      const a = layer.self_attn as Attention;
      const pa = `layers.${layer.index}.self_attn.`;
      const [qp, kp, vp, op] = [lin(a.q_proj, `${pa}q_proj.weight`), lin(a.k_proj, `${pa}k_proj.weight`), lin(a.v_proj, `${pa}v_proj.weight`), lin(a.o_proj, `${pa}o_proj.weight`)];
      this.attn.push({
        q: qp.w,
        k: kp.w,
        v: vp.w,
        o: op.w,
        qb: qp.b,
        kb: kp.b,
        vb: vp.b,
        ob: op.b,
        qNorm: a.q_norm ? a.q_norm.weight.data : null,
        kNorm: a.k_norm ? a.k_norm.weight.data : null,
        normFull: c.qk_norm === 'full',
        K: new Float32Array(kvLen),
        V: new Float32Array(kvLen),
        lora: [a.q_proj, a.k_proj, a.v_proj, a.o_proj].map((l) => (l instanceof LoraExpertsLinear ? l : null)) as AttnW['lora'],
      });
      this.norms1.push(layer.input_layernorm.weight.data);
      this.norms2.push(layer.post_attention_layernorm.weight.data);
      this.ffn.push(this.compileFFN(layer, q, lin));
    }
    this.weightBytes = bytes;
    let eb = 0;
    let ep = 0;
    for (const f of this.ffn)
      if (f.kind === 'moe')
        for (const e of f.experts)
          for (const m of [e.w1, e.w2, e.w3]) {
            eb += m?.bytes ?? 0;
            ep += m ? m.rows * m.cols : 0;
          }
    this.expertBytes = eb;
    this.expertParams = ep;
    this.kvBytes = 2 * kvLen * 4 * model.layers.length;
    this.src?.bind(kern, this.weightBytes + this.kvBytes);
    // RoPE tables for every position, as ropeTables computes them (float64 angles, float32 cos/sin)
    const half = this.Dh / 2;
    const rp = c.rope_scaling ? ropeParams(c, this.Dh) : null;
    this.cos = new Float32Array(cap * half);
    this.sin = new Float32Array(cap * half);
    for (let p = 0; p < cap; p++) {
      for (let i = 0; i < half; i++) {
        const th = p * (rp ? rp.invFreq[i] : Math.pow(c.rope_theta, (-2 * i) / this.Dh));
        this.cos[p * half + i] = Math.cos(th) * (rp?.scale ?? 1);
        this.sin[p * half + i] = Math.sin(th) * (rp?.scale ?? 1);
      }
    }
    this.scoreScale = c.attention_multiplier ?? 1 / Math.sqrt(this.Dh);
  }

  private compileFFN(
    layer: DecoderLayer,
    q: (w: Float32Array, rows: number, cols: number, fmt?: QuantFormat, name?: string, expert?: boolean, given?: QuantMatrix | null) => PreparedMatrix,
    lin: (l: { weight: Tensor; bias: Tensor | null; inFeatures: number; outFeatures: number }, name?: string) => { w: PreparedMatrix; b: Float32Array | null },
  ): FFN {
    // a dense FFN with LoRA experts runs through its module, adapters included
    if (layer.mlp && [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj].some((l) => l instanceof LoraExpertsLinear)) return { kind: 'module', layer };
    if (layer.mlp) {
      const m = layer.mlp;
      const p = `layers.${layer.index}.mlp.`;
      return {
        kind: 'dense',
        gate: m.gate_proj ? lin(m.gate_proj, `${p}gate_proj.weight`).w : null,
        up: lin(m.up_proj, `${p}up_proj.weight`).w,
        down: lin(m.down_proj, `${p}down_proj.weight`).w,
        silu: m.act === 'silu',
      };
    }
    const moe = layer.block_sparse_moe;
    // FFN kinds (ffn_type) run through their own module
    if (!moe) return { kind: 'module', layer };
    const ex = moe.experts;
    // shared experts: the MoE layer's own bank (SharedExperts) or Qwen2's gated one on the layer; CMR's mixing and MH-MoE's sub-tokens stay on the module
    const sharedOk = (!moe.shared || moe.shared instanceof SharedExperts) && !(layer.shared_expert && !layer.shared_expert_gate);
    const fast = ex instanceof FFNExperts && moe.specs.dispatch.name === 'dropless' && moe.specs.router.traits.routing === 'sparse' && sharedOk && !layer.cmr_ffn && !moe.multi_head;
    const d = this.d;
    const compileShared = (): SharedW => {
      const p = `layers.${layer.index}.`;
      let ffn: DenseW | null = null;
      if (moe.shared instanceof SharedExperts) {
        // w1/w3 [d, count*dFF] and w2 [count*dFF, d] input-major: the shared experts side by side are one dense FFN
        const s = moe.shared;
        const h = s.count * s.dFF;
        const w1 = q(expertRows(s.w1.data, 0, d, h), h, d);
        ffn = { gate: s.w3 ? w1 : null, up: s.w3 ? q(expertRows(s.w3.data, 0, d, h), h, d) : w1, down: q(expertRows(s.w2.data, 0, h, d), d, h), silu: s.activation === 'swiglu' };
      } else if (layer.shared_expert) {
        const m = layer.shared_expert;
        ffn = {
          gate: m.gate_proj ? lin(m.gate_proj, `${p}shared_expert.gate_proj.weight`).w : null,
          up: lin(m.up_proj, `${p}shared_expert.up_proj.weight`).w,
          down: lin(m.down_proj, `${p}shared_expert.down_proj.weight`).w,
          silu: m.act === 'silu',
        };
      }
      return { ffn, gate: layer.shared_expert_gate ? layer.shared_expert_gate.weight.data.slice() : null, bias: layer.moe_bias ? layer.moe_bias.data.slice() : null };
    };
    if (this.src?.covers(layer.index)) {
      if (!fast) throw new Error(`DecodeEngine: layer ${layer.index}: offloaded experts need FFN experts with dropless dispatch and a sparse router`);
      return { kind: 'moe', layer, experts: [], silu: (ex as FFNExperts).activation === 'swiglu', dFF: 0, index: layer.index, external: true, shared: compileShared() };
    }
    if (!fast) return { kind: 'module', layer };
    const f = ex.dFF;
    const experts: Expert[] = [];
    const given = (e: number, which: 'w1' | 'w2' | 'w3', rows: number, cols: number): QuantMatrix | null => this.expertWeights?.(layer.index, e, which, rows, cols) ?? null;
    for (let e = 0; e < ex.numExperts; e++) {
      const o = e * d * f;
      experts.push({
        w1: q(expertRows(ex.w1.data, o, d, f), f, d, this.expertQuant, 'expert w1', true, given(e, 'w1', f, d)),
        w3: ex.w3 ? q(expertRows(ex.w3.data, o, d, f), f, d, this.expertQuant, 'expert w3', true, given(e, 'w3', f, d)) : null,
        w2: q(expertRows(ex.w2.data, o, f, d), d, f, this.expertQuant, 'expert w2', true, given(e, 'w2', d, f)),
      });
    }
    return { kind: 'moe', layer, experts, silu: ex.activation === 'swiglu', dFF: f, index: layer.index, external: false, shared: compileShared() };
  }

  /**
   * Largest |logit difference| between this engine and the eager model.forward on a few tokens,
   * relative to the logit scale (the cache is reset afterwards). A guard for model features this
   * path does not know of: generate's 'auto' uses the eager path when an f32 engine is off.
   */
  selfCheck(tokens = 4): number {
    const n = Math.min(tokens, this.capacity);
    const ids = Int32Array.from({ length: n }, (_, i) => (i * 31 + 7) % this.V);
    const was = this.model.training;
    this.model.eval();
    let ref: Float32Array;
    try {
      ref = noGrad(() => this.model.forward(ids, 1, n, { ctx: { ...this.ctx, rng: new Rng(0) } }).logits.data);
    } finally {
      this.model.train(was);
    }
    this.reset();
    const got = this.forward(ids, true);
    this.reset();
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < got.length; i++) {
      diff = Math.max(diff, Math.abs(got[i] - ref[i]));
      scale = Math.max(scale, Math.abs(ref[i]));
    }
    return Number.isNaN(diff) ? Infinity : diff / (1 + scale);
  }

  /** Empty the KV cache (the weights stay). */
  reset(): void {
    this.length = 0;
  }

  private rmsNorm(x: Float32Array, n: number, dim: number, g: Float32Array, out: Float32Array): void {
    const eps = this.model.config.rms_norm_eps;
    for (let r = 0; r < n; r++) {
      const o = r * dim;
      let ss = 0;
      for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
      const ri = 1 / Math.sqrt(ss / dim + eps);
      for (let j = 0; j < dim; j++) out[o + j] = x[o + j] * ri * g[j];
    }
  }

  private rope(x: Float32Array, n: number, heads: number, pos0: number): void {
    const Dh = this.Dh;
    const half = Dh / 2;
    for (let t = 0; t < n; t++) {
      const c = (pos0 + t) * half;
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * Dh;
        for (let i = 0; i < half; i++) {
          const a = x[o + i];
          const b = x[o + i + half];
          const cs = this.cos[c + i];
          const sn = this.sin[c + i];
          x[o + i] = a * cs - b * sn;
          x[o + i + half] = b * cs + a * sn;
        }
      }
    }
  }

  /**
   * Feed `ids` (a prompt batch or one token) after the cached ones; returns the logits [V] of the
   * last position (a fresh array), or with `all` those of every position [n, V].
   */
  forward(ids: Int32Array, all = false): Float32Array {
    const n = ids.length;
    const c = this.model.config;
    if (n === 0) throw new Error('DecodeEngine.forward: no token ids');
    if (this.length + n > this.capacity) throw new Error(`DecodeEngine.forward: ${this.length + n} tokens exceed the KV cache capacity ${this.capacity}`);
    for (let i = 0; i < n; i++) if (!(ids[i] >= 0 && ids[i] < this.V)) throw new Error(`DecodeEngine.forward: token id ${ids[i]} at position ${i} outside vocab_size ${this.V}`);
    const { d, H, KV, Dh } = this;
    const qd = H * Dh;
    const kvd = KV * Dh;
    const h = new Float32Array(n * d);
    const em = c.embedding_multiplier;
    for (let t = 0; t < n; t++) for (let j = 0; j < d; j++) h[t * d + j] = this.embed[ids[t] * d + j] * em;
    // one router context per forward: routers that carry state from layer to layer (RMoE) share it
    const ctx: RouterContext = { ...this.ctx, tokenIds: ids, state: new Map() };
    const xn = new Float32Array(n * d);
    const qb = new Float32Array(n * qd);
    const kb = new Float32Array(n * kvd);
    const vb = new Float32Array(n * kvd);
    const ob = new Float32Array(n * qd);
    const yb = new Float32Array(n * d);
    const past = this.length;
    const rm = c.residual_multiplier;
    noGrad(() => {
      // layer 0's experts guessed from the embeddings, read while its attention runs
      this.prefetchLayer(0, h, n, ctx);
      for (let li = 0; li < this.attn.length; li++) {
        const A = this.attn[li];
        this.rmsNorm(h, n, d, this.norms1[li], xn);
        // the normalised rows are quantised once for q, k and v
        const xa = this.acts(xn, n, d, SLOT_X);
        this.mm(A.q, xa, qb);
        this.mm(A.k, xa, kb);
        this.mm(A.v, xa, vb);
        if (A.lora[0]) addAdapter(A.lora[0], xn, n, qb);
        if (A.lora[1]) addAdapter(A.lora[1], xn, n, kb);
        if (A.lora[2]) addAdapter(A.lora[2], xn, n, vb);
        if (A.qb) for (let t = 0; t < n; t++) for (let j = 0; j < qd; j++) qb[t * qd + j] += A.qb[j];
        if (A.kb) for (let t = 0; t < n; t++) for (let j = 0; j < kvd; j++) kb[t * kvd + j] += A.kb[j];
        if (A.vb) for (let t = 0; t < n; t++) for (let j = 0; j < kvd; j++) vb[t * kvd + j] += A.vb[j];
        if (A.qNorm && A.kNorm) {
          if (A.normFull) {
            this.rmsNorm(qb, n, qd, A.qNorm, qb);
            this.rmsNorm(kb, n, kvd, A.kNorm, kb);
          } else {
            this.rmsNorm(qb, n * H, Dh, A.qNorm, qb);
            this.rmsNorm(kb, n * KV, Dh, A.kNorm, kb);
          }
        }
        this.rope(qb, n, H, past);
        this.rope(kb, n, KV, past);
        // append keys/values in place: [KV, capacity, Dh]
        for (let t = 0; t < n; t++) {
          for (let g = 0; g < KV; g++) {
            const dst = (g * this.capacity + past + t) * Dh;
            A.K.set(kb.subarray(t * kvd + g * Dh, t * kvd + (g + 1) * Dh), dst);
            A.V.set(vb.subarray(t * kvd + g * Dh, t * kvd + (g + 1) * Dh), dst);
          }
        }
        this.attend(A.K, A.V, qb, ob, n, past);
        this.mm(A.o, this.acts(ob, n, qd, SLOT_O), yb);
        if (A.lora[3]) addAdapter(A.lora[3], ob, n, yb);
        if (A.ob) for (let t = 0; t < n; t++) for (let j = 0; j < d; j++) yb[t * d + j] += A.ob[j];
        for (let i = 0; i < n * d; i++) h[i] += rm * yb[i];
        this.rmsNorm(h, n, d, this.norms2[li], xn);
        // Pre-gated MoE: the next layer's router on this hidden state picks what to read while this layer's experts run
        if (li + 1 < this.attn.length) this.prefetchLayer(li + 1, h, n, ctx);
        this.runFFN(this.ffn[li], xn, n, ctx, yb);
        for (let i = 0; i < n * d; i++) h[i] += rm * yb[i];
      }
    });
    this.length += n;
    const rows = all ? n : 1;
    const fin = new Float32Array(rows * d);
    this.rmsNorm(h.subarray((n - rows) * d, n * d), rows, d, this.finalNorm, fin);
    const logits = new Float32Array(rows * this.V);
    this.mm(this.head, this.acts(fin, rows, d, SLOT_O), logits);
    if (c.logits_scaling !== 1) for (let i = 0; i < logits.length; i++) logits[i] /= c.logits_scaling;
    return logits;
  }

  /** Causal attention of n queries qb [n, H*Dh] at positions past.. over the cache, into ob. */
  private attend(K: Float32Array, Vc: Float32Array, qb: Float32Array, ob: Float32Array, n: number, past: number): void {
    const H = this.H;
    const Dh = this.Dh;
    const qd = H * Dh;
    const rep = H / this.KV;
    const cap = this.capacity;
    const scale = this.scoreScale;
    const scores = new Float32Array(past + n);
    for (let t = 0; t < n; t++) {
      const len = past + t + 1;
      for (let hh = 0; hh < H; hh++) {
        const kbase = Math.floor(hh / rep) * cap * Dh;
        const qo = t * qd + hh * Dh;
        let m = -Infinity;
        for (let j = 0; j < len; j++) {
          const ko = kbase + j * Dh;
          let s = 0;
          for (let i = 0; i < Dh; i++) s += qb[qo + i] * K[ko + i];
          s *= scale;
          scores[j] = s;
          if (s > m) m = s;
        }
        let sum = 0;
        for (let j = 0; j < len; j++) {
          const e = Math.exp(scores[j] - m);
          scores[j] = e;
          sum += e;
        }
        const inv = 1 / sum;
        ob.fill(0, qo, qo + Dh);
        for (let j = 0; j < len; j++) {
          const p = scores[j] * inv;
          const vo = kbase + j * Dh;
          for (let i = 0; i < Dh; i++) ob[qo + i] += p * Vc[vo + i];
        }
      }
    }
  }

  /** Ask the expert source for layer li's experts as its router would choose them on h [n, d] (most weight first). */
  private prefetchLayer(li: number, h: Float32Array, n: number, ctx: RouterContext): void {
    const f = this.ffn[li];
    if (!this.doPrefetch || !this.src?.prefetch || f.kind !== 'moe' || !f.external || this.src.prefetchActive?.() === false) return;
    const d = this.d;
    const xn = new Float32Array(n * d);
    this.rmsNorm(h, n, d, this.norms2[li], xn);
    const r = f.layer.block_sparse_moe!.router.route(new Tensor(xn, [n, d]), { ...ctx, state: new Map() }).routing;
    if (r.kind !== 'sparse') return;
    const mass = new Map<number, number>();
    for (let i = 0; i < r.expertIdx.length; i++) mass.set(r.expertIdx[i], (mass.get(r.expertIdx[i]) ?? 0) + Math.abs(r.weights.data[i]));
    this.src.prefetch(
      li,
      [...mass.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map((x) => x[0]),
    );
  }

  /** The assignments left by skipThreshold and capacityFactor (indices into the routing's arrays) and their weights. */
  private dropAssignments(tokenIdx: Int32Array, expertIdx: Int32Array, weights: Float32Array, n: number, E: number): { keep: number[]; w: Float32Array } {
    const A = expertIdx.length;
    const w = weights.slice();
    const alive = new Uint8Array(A).fill(1);
    this.drops.assignments += A;
    if (this.skipThreshold > 0) {
      const byTok: number[][] = Array.from({ length: n }, () => []);
      for (let i = 0; i < A; i++) byTok[tokenIdx[i]].push(i);
      for (const as of byTok) {
        if (as.length < 2) continue;
        as.sort((a, b) => weights[b] - weights[a] || a - b);
        let sum = 0;
        for (const i of as) sum += weights[i];
        if (!(sum > 0)) continue;
        let kept = weights[as[0]];
        for (let j = 1; j < as.length; j++) {
          if (weights[as[j]] / sum < this.skipThreshold) {
            alive[as[j]] = 0;
            this.drops.skipped++;
          } else kept += weights[as[j]];
        }
        for (const i of as) if (alive[i]) w[i] = (weights[i] * sum) / kept;
      }
    }
    if (this.capacityFactor > 0 && n > 1) {
      const live = alive.reduce((a, b) => a + b, 0);
      const cap = Math.max(1, Math.ceil((this.capacityFactor * live) / E));
      const byEx: number[][] = Array.from({ length: E }, () => []);
      for (let i = 0; i < A; i++) if (alive[i]) byEx[expertIdx[i]].push(i);
      for (const as of byEx) {
        if (as.length <= cap) continue;
        as.sort((a, b) => weights[b] - weights[a] || a - b);
        for (let j = cap; j < as.length; j++) {
          alive[as[j]] = 0;
          this.drops.capacityDropped++;
        }
      }
    }
    const keep: number[] = [];
    for (let i = 0; i < A; i++) if (alive[i]) keep.push(i);
    return { keep, w };
  }

  /** x [n, cols] prepared once for several products (quantised once for the block formats). */
  private acts(x: Float32Array, n: number, cols: number, slot: number): PreparedActs {
    return prepareActs(this.kern, x, n, cols, slot);
  }

  private mm(w: PreparedMatrix, a: PreparedActs, out: Float32Array, opts?: ActsMatmulOptions): void {
    matmulOnActs(this.kern, w, a, out, opts);
  }

  /** y [n, d] = the dense FFN w on the prepared rows xa [n, d]. */
  private runDense(w: DenseW, xa: PreparedActs, n: number, y: Float32Array): void {
    const F = w.up.rows;
    const g = new Float32Array(n * F);
    const u = w.gate ? new Float32Array(n * F) : null;
    if (w.gate) {
      this.mm(w.gate, xa, g);
      this.mm(w.up, xa, u!);
    } else this.mm(w.up, xa, g);
    act(w.silu, g, u, n * F);
    this.mm(w.down, this.acts(g, n, F, SLOT_H), y);
  }

  /** y [n, d] += the MoE layer's always-on part on x [n, d]: output bias, shared experts (gated or not). */
  private addShared(s: SharedW, x: Float32Array, xa: PreparedActs, n: number, y: Float32Array): void {
    const d = this.d;
    if (s.bias) for (let t = 0; t < n; t++) for (let j = 0; j < d; j++) y[t * d + j] += s.bias[j];
    if (!s.ffn) return;
    const ys = new Float32Array(n * d);
    this.runDense(s.ffn, xa, n, ys);
    for (let t = 0; t < n; t++) {
      let gt = 1;
      if (s.gate) {
        let z = 0;
        for (let j = 0; j < d; j++) z += s.gate[j] * x[t * d + j];
        gt = 1 / (1 + Math.exp(-z));
      }
      for (let j = 0; j < d; j++) y[t * d + j] += gt * ys[t * d + j];
    }
  }

  /** y [n, d] = FFN(x [n, d]). */
  private runFFN(f: FFN, x: Float32Array, n: number, ctx: RouterContext, y: Float32Array): void {
    const d = this.d;
    if (f.kind === 'dense') {
      this.runDense(f, this.acts(x, n, d, SLOT_X), n, y);
      return;
    }
    const xt = new Tensor(x.slice(0, n * d), [n, d]);
    if (f.kind === 'module') {
      y.set(f.layer.ffn(xt, ctx, 0).y.data);
      return;
    }
    const moe = f.layer.block_sparse_moe!;
    const r = moe.route(xt, ctx).routing;
    if (r.kind !== 'sparse') throw new Error('DecodeEngine: router returned soft routing for a sparse dispatch');
    y.fill(0, 0, n * d);
    const E = moe.numExperts;
    let w = r.weights.data;
    // assignments grouped by expert: each expert's weights are read once per call
    const byExpert: number[][] = Array.from({ length: E }, () => []);
    if (this.skipThreshold > 0 || (this.capacityFactor > 0 && n > 1)) {
      const dr = this.dropAssignments(r.tokenIdx, r.expertIdx, w, n, E);
      w = dr.w;
      for (const i of dr.keep) byExpert[r.expertIdx[i]].push(i);
    } else for (let i = 0; i < r.expertIdx.length; i++) byExpert[r.expertIdx[i]].push(i);
    // the rows are quantised once for every selected expert's gate and up products (and the shared experts)
    const xa = this.acts(x, n, d, SLOT_X);
    for (let e = 0; e < E; e++) {
      const as = byExpert[e];
      if (as.length === 0) continue;
      const m = as.length;
      const tok = new Int32Array(m);
      for (let i = 0; i < m; i++) tok[i] = r.tokenIdx[as[i]];
      const sel = { rows: tok };
      const ex = f.external ? this.src!.get(f.index, e) : f.experts[e];
      const F = ex.w1.rows;
      const g = new Float32Array(m * F);
      const u = ex.w3 ? new Float32Array(m * F) : null;
      this.mm(ex.w1, xa, g, sel);
      if (ex.w3) this.mm(ex.w3, xa, u!, sel);
      act(f.silu, g, u, m * F);
      if (this.onExpertInputs) {
        // calibration only (GPTQ): the expert's input rows, gathered
        const xe = new Float32Array(m * d);
        for (let i = 0; i < m; i++) xe.set(x.subarray(tok[i] * d, (tok[i] + 1) * d), i * d);
        this.onExpertInputs(f.index, e, xe, g, m);
      }
      const ye = new Float32Array(m * d);
      this.mm(ex.w2, this.acts(g, m, F, SLOT_H), ye);
      for (let i = 0; i < m; i++) {
        const t = r.tokenIdx[as[i]];
        const wi = w[as[i]];
        for (let j = 0; j < d; j++) y[t * d + j] += wi * ye[i * d + j];
      }
    }
    this.addShared(f.shared, x, xa, n, y);
  }
}
