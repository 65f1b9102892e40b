/**
 * CartesianMoE (Su et al., "CartesianMoE: Boosting Knowledge Sharing among Experts via Cartesian
 * Product Routing in Mixture-of-Experts", 2024): the MoE FFN is replaced by a Cartesian product
 * layer, two sequential MoE sub-layers over sub-expert sets A and B, each with its own router:
 *   h_A = MoE_A(x);  x_B = RMSNorm(x + h_A);  y = MoE_B(x_B)   (the block adds x + y)
 * so a token's effective expert is the pair (a, b) of its A and B choices (k_A x k_B pairs), and
 * every pair sharing a (or b) shares that sub-expert's parameters: multiplicative knowledge
 * sharing instead of the additive shared expert. The sub-experts are fine-grained (default width
 * moe_intermediate_size / 2, so k_A + k_B half-width experts cost like k full ones). Each sub-layer
 * is a full MoELayer (the model's router type, expert type, dispatch and balancing losses), and
 * both yield their aux records: both balancing losses count, both routings are traced.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import * as T from '../../tensor/index.js';
import { z, posInt } from '../../tensor/validate.js';
import { Module, RMSNorm } from '../../nn/index.js';
import { MoELayer, type MoELayerConfig } from '../../moe/layer.js';
import type { RouterContext } from '../../moe/types.js';
import type { ModelConfig } from '../config.js';
import { ffnRegistry, defineFFN, type FFNModule, type FFNResult } from './registry.js';

/** The Cartesian product layer: MoE sub-layer A, residual + RMSNorm, MoE sub-layer B. */
export class CartesianMoEFFN extends Module implements FFNModule {
  /** Sub-layer A (sub-expert set A and its router). */
  moe_a: MoELayer;
  /** The norm between the sub-layers. */
  norm: RMSNorm;
  /** Sub-layer B (sub-expert set B and its router). */
  moe_b: MoELayer;
  constructor(a: MoELayerConfig, b: MoELayerConfig, eps: number, rng: Rng) {
    super();
    if (a.dModel !== b.dModel) throw new Error(`CartesianMoEFFN: sub-layers must share dModel, got ${a.dModel} and ${b.dModel}`);
    this.moe_a = new MoELayer(a, rng);
    this.norm = new RMSNorm(a.dModel, eps);
    this.moe_b = new MoELayer(b, rng);
  }

  /** x [T, d] -> the sub-layer A output, the B input and y [T, d] with both sub-layers' records. */
  stages(x: Tensor, ctx: RouterContext) {
    const a = this.moe_a.forward(x, ctx);
    const xb = this.norm.forward(T.add(x, a.y));
    const b = this.moe_b.forward(xb, ctx);
    return { a, xb, b };
  }

  forward(x: Tensor, ctx: RouterContext): FFNResult {
    const { a, b } = this.stages(x, ctx);
    // the losses travel in the aux records (summed there by the trainer), not again in `losses`
    return { y: b.y, aux: [a.aux, b.aux] };
  }

  /** Both sub-layers' bookkeeping after an optimizer step (loss-free balancing biases, load). */
  afterStep(): void {
    this.moe_a.afterStep();
    this.moe_b.afterStep();
  }

  /** Routers, norm, shared experts and k_A + k_B routed sub-experts. */
  activeParameters(): number {
    let total = 0;
    for (const m of [this.moe_a, this.moe_b]) for (const [n, p] of m.namedParameters()) total += n.startsWith('experts.') ? (p.size / m.numExperts) * Math.min(m.topK, m.numExperts) : p.size;
    return Math.round(total + this.norm.numParameters());
  }
}

const options = {
  setA: posInt().optional().describe('sub-experts in set A (default num_local_experts)'),
  setB: posInt().optional().describe('sub-experts in set B (default num_local_experts)'),
  topKA: posInt().optional().describe('sub-experts per token in sub-layer A (default num_experts_per_tok)'),
  topKB: posInt().optional().describe('sub-experts per token in sub-layer B (default num_experts_per_tok)'),
  dFF: posInt().optional().describe('sub-expert width (default moe_intermediate_size / 2: k_A + k_B sub-experts match k full experts)'),
};

type CartesianOptions = z.output<z.ZodObject<typeof options>>;

/** The two sub-layers' MoE configs from the model's MoE layer config and the options. */
function resolve(c: ModelConfig, o: CartesianOptions, base: MoELayerConfig): [MoELayerConfig, MoELayerConfig] {
  const dFF = o.dFF ?? Math.max(1, Math.round(c.moe_intermediate_size / 2));
  const { sizes: _sizes, ...experts } = base.experts;
  const sub = (E: number, k: number): MoELayerConfig => ({ ...base, numExperts: E, topK: k, experts: { ...experts, dFF } });
  return [sub(o.setA ?? c.num_local_experts, o.topKA ?? c.num_experts_per_tok), sub(o.setB ?? c.num_local_experts, o.topKB ?? c.num_experts_per_tok)];
}

ffnRegistry.register(
  defineFFN({
    name: 'cartesian-moe',
    summary: 'Cartesian product layer: two sequential MoE sub-layers (sets A, B, own routers), so each token uses expert pairs (a, b) that share sub-experts',
    paper: { authors: 'Su et al.', title: 'CartesianMoE: Boosting Knowledge Sharing among Experts via Cartesian Product Routing in Mixture-of-Experts', year: 2024 },
    options,
    refine: (o, c, issue) => {
      if (c.expert_sizes) issue('dFF', 'CartesianMoE sub-experts share one width: expert_sizes (HMoE) does not apply');
      if (c.aux_loss_normalization === 'all-layers-tokens')
        issue('setA', 'aux_loss_normalization "all-layers-tokens" pools routers of num_local_experts experts; use the per-layer form with CartesianMoE');
      if (c.moe_sub_tokens !== undefined && c.moe_sub_tokens > 1) issue('setA', 'moe_sub_tokens (MH-MoE) is not supported inside the Cartesian product layer');
      const E = c.num_local_experts;
      if ((o.topKA ?? c.num_experts_per_tok) > (o.setA ?? E)) issue('topKA', `must be at most setA=${o.setA ?? E}`);
      if ((o.topKB ?? c.num_experts_per_tok) > (o.setB ?? E)) issue('topKB', `must be at most setB=${o.setB ?? E}`);
    },
    create: (c, o, rng, _layer, helpers) => {
      if (!helpers?.moeLayerConfig) throw new Error('ffn "cartesian-moe": needs the host model\'s MoE layer config (buildFFN helpers.moeLayerConfig)');
      const [a, b] = resolve(c, o, helpers.moeLayerConfig(c));
      return new CartesianMoEFFN(a, b, c.layer_norm_eps ?? c.rms_norm_eps, rng);
    },
    size: (c, o) => {
      const dFF = o.dFF ?? Math.max(1, Math.round(c.moe_intermediate_size / 2));
      const A = o.setA ?? c.num_local_experts;
      const B = o.setB ?? c.num_local_experts;
      const d = c.hidden_size;
      const mats = c.hidden_act === 'silu' ? 3 : 2;
      return { parameters: (A + B) * (d + mats * d * dFF) + d, largest: Math.max(A, B) * d * dFF, tensors: 2 * (mats + 1) + 1 };
    },
    activationsPerToken: (c, o) => {
      const dFF = o.dFF ?? Math.max(1, Math.round(c.moe_intermediate_size / 2));
      const k = (o.topKA ?? c.num_experts_per_tok) + (o.topKB ?? c.num_experts_per_tok);
      return k * (3 * dFF + c.hidden_size) + (o.setA ?? c.num_local_experts) + (o.setB ?? c.num_local_experts) + 3 * c.hidden_size;
    },
  }),
);
