/**
 * Soft MoE routing: each expert has S slots; slot inputs are convex combinations of all tokens
 * (dispatch) and each token's output a convex combination of all slot outputs (combine).
 * Paper: Puigcerver et al., "From Sparse to Soft Mixtures of Experts", 2023.
 *
 * Slot logits L = x phi [T, E*S] with a learned phi [d, E*S] (parameter `phi`; slot j = e*S + s
 * belongs to expert e). dispatch = softmax of L over tokens (each column sums to 1), combine =
 * softmax of L over slots (each row sums to 1). The paper's L2 normalisation of x and phi (for
 * large d) is not applied.
 *
 * The [T, E] fields that losses and metrics read are per-expert aggregates of the slot logits:
 * - logits[t, e] = logsumexp_s L[t, e*S + s], so softmax over experts of these logits equals
 *   `probs` exactly and the z-loss on them is the z-loss of the full slot-logit row;
 * - probs[t, e] = sum_s combine[t, e*S + s], the share of token t's output that expert e
 *   produces (rows sum to 1). It is computed by summing combine, not by another softmax.
 *
 * Like expert choice, every token's routing depends on the other tokens of the call (not causal).
 * Options: slotsPerExpert (integer >= 1, default 1). cfg.topK is not used.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { matmul, softmax, reshape, sum, logSumExp } from '../../tensor/index.js';
import { Module, param, type Parameter } from '../../nn/module.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerInitStd } from './common.js';

const options = {
  slotsPerExpert: posInt().default(1).describe('slots S per expert: each slot is a softmax-weighted mix of all tokens of the batch'),
};

export type SoftRouterConfig = ParsedRouterConfig<typeof options>;

export class SoftRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly slotsPerExpert: number;
  /** Slot parameters [d, E*S]. */
  phi: Parameter;

  constructor(cfg: SoftRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.slotsPerExpert = cfg.slotsPerExpert;
    this.phi = param([cfg.dModel, cfg.numExperts * this.slotsPerExpert], { normal: routerInitStd(cfg.dModel) }, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('soft', x, this.dModel);
    if (T === 0) throw new Error('router "soft": needs at least one token (dispatch normalises over tokens)');
    const E = this.numExperts;
    const S = this.slotsPerExpert;
    const L = matmul(x, this.phi);
    const dispatch = softmax(L, 0);
    const combine = softmax(L, 1);
    const logits = S === 1 ? L : logSumExp(reshape(L, [T, E, S]), -1);
    const probs = S === 1 ? combine : sum(reshape(combine, [T, E, S]), -1);
    return { logits, probs, routing: { kind: 'soft', slotsPerExpert: S, dispatch, combine }, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'soft',
    summary: 'soft slot mixtures of all tokens',
    paper: { authors: 'Puigcerver et al.', title: 'From Sparse to Soft Mixtures of Experts', year: 2023 },
    options,
    // topK is not used: every token reaches every slot
    checkTopK: false,
    traits: {
      routing: 'soft',
      expertsPerToken: 'slots',
      batchDependent: "every slot is a weighted mix of all tokens of the batch, so a token's output depends on the others",
      // Soft MoE computes per slot, not per token: E*S slot FFNs per batch of B*T tokens. k experts
      // per token is B*T*k expert evaluations, so S = B*T*k/E matches the other routers' FLOPs.
      flopMatch: ({ batchTokens, topK, numExperts }) => {
        const slotsPerExpert = Math.max(1, Math.round((batchTokens * topK) / numExperts));
        return { options: { slotsPerExpert }, note: `slotsPerExpert ${slotsPerExpert} = batch tokens × k / E, FLOP-matched` };
      },
      defaultDispatch: () => ({ type: 'soft' }),
    },
    create: (cfg, rng) => new SoftRouter(cfg, rng),
  }),
);
