/**
 * LoRA experts on a frozen base (parameter-efficient fine-tuning): each targeted linear layer
 * W keeps its weights and gains E low-rank experts B_e A_e mixed per token by a small router,
 * plus S always-on (shared) low-rank adapters:
 *   y = W x + (alpha / r) * (sum_e g_e(x) B_e A_e x + sum_s B_s A_s x)
 * - routed LoRA experts with soft (all-expert) gates, or top-k gates renormalised (Zadouri et al.,
 *   "Pushing Mixture of Experts to the Limit: Extremely Parameter Efficient MoE for Instruction
 *   Tuning" (MoLoRA), 2023; Liu et al., "PERFT: Parameter-Efficient Routed Fine-Tuning for MoE", 2024);
 * - shared adapters, PERFT's shared variant;
 * - per-layer expert counts (Gao et al., "Higher Layers Need More LoRA Experts" (MoLA), 2024).
 * B starts at zero, so a model with fresh adapters computes exactly its base. Only adapter tensors
 * (names containing "lora_") train. Shared-only adapters merge into W exactly; routed ones depend
 * on the input through their router and cannot be folded into a fixed weight.
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { Linear, param, type Parameter, type Module, type StateDict } from '../nn/index.js';
import { ConfigError, type ModelConfig } from './config.js';

/** The model-config `peft` section (validated there: src/models/config.ts). */
export type LoraExpertsConfig = NonNullable<ModelConfig['peft']>;

/** Linear-layer names LoRA experts can target (Attention and DenseFFN field names). */
export const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/**
 * A Linear with LoRA experts: the base weight/bias keep their names (so a base checkpoint loads
 * into it by name), the adapters are lora_A [in, E*r], lora_B [E*r, out], lora_router [E, in],
 * lora_shared_A [in, S*r], lora_shared_B [S*r, out].
 */
export class LoraExpertsLinear extends Linear {
  lora_A: Parameter | null;
  lora_B: Parameter | null;
  lora_router: Parameter | null;
  lora_shared_A: Parameter | null;
  lora_shared_B: Parameter | null;
  readonly numExperts: number;
  readonly topK: number;
  readonly rank: number;
  readonly numShared: number;
  readonly scaling: number;
  /** [E, E*r] 0/1: expands per-expert gates onto that expert's r hidden columns. */
  private readonly expand: Tensor | null;

  constructor(base: Linear, o: { experts: number; topK?: number; rank: number; alpha: number; shared: number }, rng: Rng) {
    super(1, 1, rng);
    (this as { inFeatures: number }).inFeatures = base.inFeatures;
    (this as { outFeatures: number }).outFeatures = base.outFeatures;
    this.weight = base.weight;
    this.bias = base.bias;
    const d = base.inFeatures;
    const out = base.outFeatures;
    const E = o.experts;
    const r = o.rank;
    this.numExperts = E;
    this.topK = o.topK ?? E;
    this.rank = r;
    this.numShared = o.shared;
    this.scaling = o.alpha / r;
    // A ~ N(0, 1/in) as in LoRA's Kaiming-style init; B = 0 so the adapted model starts as the base
    this.lora_A = E > 0 ? param([d, E * r], { normal: 1 / Math.sqrt(d) }, rng) : null;
    this.lora_B = E > 0 ? param([E * r, out], 'zeros') : null;
    this.lora_router = E > 0 ? param([E, d], { normal: 1 / Math.sqrt(d) }, rng) : null;
    this.lora_shared_A = o.shared > 0 ? param([d, o.shared * r], { normal: 1 / Math.sqrt(d) }, rng) : null;
    this.lora_shared_B = o.shared > 0 ? param([o.shared * r, out], 'zeros') : null;
    if (E > 0) {
      const ex = new Float32Array(E * E * r);
      for (let e = 0; e < E; e++) for (let j = 0; j < r; j++) ex[e * E * r + e * r + j] = 1;
      this.expand = T.tensor(ex, [E, E * r]);
    } else this.expand = null;
  }

  /** Per-token expert gates [N, E]: softmax of the router logits, restricted to the top-k (renormalised). */
  gates(x: Tensor): Tensor {
    let logits = T.linear(x, this.lora_router!);
    const E = this.numExperts;
    if (this.topK < E) {
      const N = x.shape[0];
      const mask = new Float32Array(N * E);
      const l = logits.data;
      for (let t = 0; t < N; t++) {
        const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => l[t * E + b] - l[t * E + a] || a - b);
        for (let i = this.topK; i < E; i++) mask[t * E + order[i]] = -1e30;
      }
      logits = T.add(logits, T.tensor(mask, [N, E]));
    }
    return T.softmax(logits, -1);
  }

  override forward(x: Tensor): Tensor {
    const y = super.forward(x);
    const a = this.adapterDelta(x);
    return a ? T.add(y, a) : y;
  }

  /** The adapters' part of the output [N, out], (alpha/r)(sum_e g_e B_e A_e x + sum_s B_s A_s x); null without adapters. */
  adapterDelta(x: Tensor): Tensor | null {
    let y: Tensor | null = null;
    if (this.lora_A && this.lora_B && this.expand) {
      const h = T.mul(T.matmul(x, this.lora_A), T.matmul(this.gates(x), this.expand));
      y = T.scale(T.matmul(h, this.lora_B), this.scaling);
    }
    if (this.lora_shared_A && this.lora_shared_B) {
      const s = T.scale(T.matmul(T.matmul(x, this.lora_shared_A), this.lora_shared_B), this.scaling);
      y = y ? T.add(y, s) : s;
    }
    return y;
  }
}

/** Layers' targeted linear layers: [layer, owner module, field name]. */
function targetSites(layers: { self_attn: Module; mlp: Module | null }[], targets: readonly string[]): { layer: number; owner: Record<string, unknown>; name: string }[] {
  const sites: { layer: number; owner: Record<string, unknown>; name: string }[] = [];
  layers.forEach((l, i) => {
    for (const name of targets) {
      const attn = l.self_attn as unknown as Record<string, unknown>;
      const mlp = l.mlp as unknown as Record<string, unknown> | null;
      const owner = name.endsWith('_proj') && ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(name) ? attn : mlp;
      if (owner && owner[name] instanceof Linear) sites.push({ layer: i, owner, name });
    }
  });
  return sites;
}

/** Attach LoRA experts (fresh: the model still computes its base) to the targeted linear layers of every decoder layer. */
export function attachLoraExperts(layers: { self_attn: Module; mlp: Module | null }[], cfg: LoraExpertsConfig, rng: Rng): number {
  if (cfg.experts_per_layer && cfg.experts_per_layer.length !== layers.length) {
    throw new ConfigError(`model config: peft.experts_per_layer needs one entry per layer (${layers.length}), got ${cfg.experts_per_layer.length}`);
  }
  const sites = targetSites(layers, cfg.targets);
  if (sites.length === 0) throw new ConfigError(`model config: peft.targets ${cfg.targets.join(', ')} name no linear layer of this model (MoE experts and latent attention are not targets)`);
  for (const s of sites) {
    const E = cfg.experts_per_layer?.[s.layer] ?? cfg.experts;
    if (E === 0 && cfg.shared === 0) continue;
    s.owner[s.name] = new LoraExpertsLinear(
      s.owner[s.name] as Linear,
      { experts: E, topK: cfg.top_k !== undefined ? Math.min(cfg.top_k, E) : undefined, rank: cfg.rank, alpha: cfg.alpha, shared: cfg.shared },
      rng,
    );
  }
  return sites.length;
}

/** Whether a state-dict name is an adapter tensor (the only ones that train). */
export function isAdapterTensor(name: string): boolean {
  return name.includes('.lora_');
}

/** The adapter tensors of a model (what is saved apart from the base). */
export function adapterState(model: Module): StateDict {
  return new Map([...model.namedParameters()].filter(([n]) => isAdapterTensor(n)));
}

/**
 * Load tensors by name where `strictPart` says they must all be present: base weights into a model
 * with adapters (adapters keep their init), or adapters into an adapted base.
 */
export function loadPartialState(model: Module, state: StateDict, part: 'base' | 'adapters', where: string): void {
  const own = model.stateDict();
  for (const [name, t] of state) {
    const p = own.get(name);
    if (!p) throw new ConfigError(`${where}: tensor "${name}" is not in this model`);
    if (p.data.length !== t.data.length || p.shape.some((d, i) => d !== t.shape[i])) throw new ConfigError(`${where}: "${name}" has shape [${t.shape.join(', ')}], expected [${p.shape.join(', ')}]`);
    p.data.set(t.data);
  }
  for (const name of own.keys()) {
    if (isAdapterTensor(name) === (part === 'adapters') && !state.has(name)) throw new ConfigError(`${where}: missing ${part === 'adapters' ? 'adapter' : 'base'} tensor "${name}"`);
  }
}

/**
 * Fold shared adapters into their base weights: W' = W + (alpha/r) (A B)^T, exact. Returns the
 * merged sites; routed LoRA experts (gates depend on the input) cannot merge and fail here.
 */
export function mergeSharedAdapters(layers: { self_attn: Module; mlp: Module | null }[]): number {
  let merged = 0;
  const sites = targetSites(layers, LORA_TARGETS);
  for (const s of sites) {
    const l = s.owner[s.name];
    if (!(l instanceof LoraExpertsLinear)) continue;
    if (l.lora_A) throw new ConfigError(`merge: layer ${s.layer} ${s.name} has routed LoRA experts, whose per-token router weights cannot fold into one fixed weight (only shared adapters merge)`);
    const plain = new Linear(l.inFeatures, l.outFeatures, new Rng(0), { bias: Boolean(l.bias) });
    plain.weight = l.weight;
    plain.bias = l.bias;
    if (l.lora_shared_A && l.lora_shared_B) {
      const ab = T.noGrad(() => T.matmul(l.lora_shared_A!, l.lora_shared_B!).data); // [in, out]
      const w = plain.weight.data; // [out, in]
      for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < l.inFeatures; i++) w[o * l.inFeatures + i] += l.scaling * ab[i * l.outFeatures + o];
    }
    s.owner[s.name] = plain;
    merged++;
  }
  return merged;
}
