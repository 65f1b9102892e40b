/**
 * Mixture-of-Depths (Raposo et al., "Mixture-of-Depths: Dynamically allocating compute in
 * transformer-based language models", 2024): on a routed layer a router scores every token, the
 * top `capacity` fraction of each sequence goes through the whole block (attention among the
 * chosen tokens at their own positions, then the FFN) and the others skip it through the
 * residual. The block's update is scaled by the router weight, so the router gets gradients:
 *   h_i' = h_i + w(r_i) * f_i(H_chosen)  if i is chosen,   h_i' = h_i  otherwise.
 *
 * Top-k over a sequence needs its future, so it cannot decide a token at decode time. As the
 * paper's causal inference mode, a per-token rule is trained to predict top-k membership with a
 * binary cross-entropy: a small MLP on the stop-gradient router input ('predictor'), or the
 * router logit itself ('router'). Out of training a token runs the block when that logit is > 0:
 * each token is decided from itself alone, so the KV cache (a routed layer caches only its chosen
 * tokens) gives exactly the full-sequence forward.
 *
 * Variants (options of `mixture_of_depths` in the model config):
 * - p-MoD (Zhang et al., "p-MoD: Building Mixture-of-Depths MLLMs via Progressive Ratio Decay",
 *   2024): progressive ratio decay, capacity + cos(pi l / (L - 1)) / 2 per layer l (shifted
 *   cosine); TanhNorm weights 1 + a tanh(r); STRing, the skipped tokens scaled by their weight.
 * - gamma-MoD (Luo et al., "gamma-MoD: Exploring Mixture-of-Depth Adaptation for Multimodal Large
 *   Language Models", 2024): one 2-way softmax router shared by every routed layer, on the
 *   normalised block input; its keep-probability scales the FFN update and a cross-entropy to
 *   top-k membership trains it (so its own logit is the causal rule).
 */
import { Tensor, noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { Module, Linear, type StateDict } from '../nn/index.js';
import { ConfigError } from '../tensor/validate.js';
import type { ModelConfig } from './config.js';

/** The parsed `mixture_of_depths` section of a model config. */
export type DepthConfig = NonNullable<ModelConfig['mixture_of_depths']>;

/**
 * The capacity of every layer (1: a full block every token runs): `capacities`, else p-MoD's
 * shifted cosine or the constant capacity on the routed layers (`layers`, else every `every`-th).
 */
export function depthCapacities(c: ModelConfig): number[] {
  const m = c.mixture_of_depths;
  const L = c.num_hidden_layers;
  if (!m) return new Array<number>(L).fill(1);
  if (m.capacities) return m.capacities.slice();
  const routed = (i: number): boolean => (m.layers ? m.layers.includes(i) : (i + 1) % m.every === 0);
  return Array.from({ length: L }, (_, l) => {
    if (!routed(l)) return 1;
    if (m.schedule === 'constant') return m.capacity;
    const r = Math.max(m.min_capacity, m.capacity + Math.cos((l * Math.PI) / Math.max(1, L - 1)) / 2);
    return r >= m.max_capacity ? 1 : r;
  });
}

/** Tokens a routed block takes from a sequence of Tn at this capacity (at least one). */
export function depthTokens(capacity: number, Tn: number): number {
  return Math.min(Tn, Math.max(1, Math.round(capacity * Tn)));
}

/** The causal predictor: a two-layer MLP giving one logit per token (> 0: the token runs the block). */
export class DepthPredictor extends Module {
  fc1: Linear;
  fc2: Linear;
  constructor(d: number, hidden: number, rng: Rng) {
    super();
    this.fc1 = new Linear(d, hidden, rng, { std: 1 / Math.sqrt(d) });
    this.fc2 = new Linear(hidden, 1, rng, { std: 1 / Math.sqrt(hidden) });
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(T.silu(this.fc1.forward(x)));
  }
}

/** Chosen rows of [B, Tn] tokens, sequence-major and ascending within each sequence, with the count per sequence. */
export interface DepthSelection {
  rows: Int32Array;
  counts: Int32Array;
}

/** The top k scores of each sequence (ties: the earlier token), in sequence order. */
export function selectDepthTopK(scores: Float32Array, B: number, Tn: number, k: number): DepthSelection {
  const top = T.topkIndices(scores, B, Tn, k);
  const rows = new Int32Array(B * k);
  for (let b = 0; b < B; b++) {
    const s = Array.from(top.subarray(b * k, (b + 1) * k)).sort((x, y) => x - y);
    for (let j = 0; j < k; j++) rows[b * k + j] = b * Tn + s[j];
  }
  return { rows, counts: new Int32Array(B).fill(k) };
}

/** The causal rule: every token whose logit is > 0, decided from that token alone. */
export function selectDepthCausal(logits: Float32Array, B: number, Tn: number): DepthSelection {
  const rows: number[] = [];
  const counts = new Int32Array(B);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < Tn; t++)
      if (logits[b * Tn + t] > 0) {
        rows.push(b * Tn + t);
        counts[b]++;
      }
  return { rows: Int32Array.from(rows), counts };
}

/** Mean binary cross-entropy of logits z [n, 1] against 0/1 targets: mean(softplus(z) - y z). */
export function bceWithLogits(z: Tensor, targets: Float32Array): Tensor {
  const n = z.shape[0];
  const sp = T.logSumExp(T.concat([T.scale(z, 0), z], 1), -1); // softplus(z), stable
  return T.scale(T.sub(T.sum(sp), T.sum(T.maskMul(T.reshape(z, [n]), targets))), 1 / n);
}

/** A copy of x outside the autograd graph (the predictor's stop-gradient input). */
export function detach(x: Tensor): Tensor {
  return noGrad(() => new Tensor(x.data.slice(), x.shape));
}

/** Router weight w(r) of a linear router's logits r [n, 1]. */
export function depthWeight(r: Tensor, m: DepthConfig): Tensor {
  if (m.weight === 'sigmoid') return T.sigmoid(r);
  if (m.weight === 'tanh') return T.affine(T.tanh(r), m.tanh_scale, 1);
  return r;
}

/**
 * Tensor names of the depth routers and predictors (what Router-Tuning trains). Router-Tuning:
 * "Router-Tuning: A Simple and Effective Approach for Enabling Dynamic-Depth in Transformers", He et al. 2024.
 */
export function isDepthRouterTensor(name: string): boolean {
  return /(^|\.)depth_(router|predictor|router_shared)(\.|$)/.test(name);
}

/**
 * Router-Tuning's start: a base model's tensors into a model that adds depth routers, by name;
 * the routers (absent from the base) keep their init, and anything else missing is an error.
 */
export function loadBaseWithDepthRouters(model: Module, state: StateDict, where: string): void {
  const own = model.stateDict();
  for (const [name, t] of state) {
    const p = own.get(name);
    if (!p) throw new ConfigError(`${where}: tensor "${name}" is not in this model`);
    if (p.data.length !== t.data.length || p.shape.some((d, i) => d !== t.shape[i])) throw new ConfigError(`${where}: "${name}" has shape [${t.shape.join(', ')}], expected [${p.shape.join(', ')}]`);
    p.data.set(t.data);
  }
  for (const name of own.keys()) if (!isDepthRouterTensor(name) && !state.has(name)) throw new ConfigError(`${where}: the base has no tensor "${name}"`);
}
