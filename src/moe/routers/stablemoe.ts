/**
 * StableMoE: two training stages against routing fluctuation. Stage 1 routes by the backbone
 * and distils that routing into a lightweight router that reads only the token id (decoupled
 * from the backbone); from the switch step on, the lightweight router is frozen and alone decides
 * the assignment, so a token's expert never changes again.
 * Paper: Dai et al., "StableMoE: Stable Routing Strategy for Mixture of Experts", 2022.
 *
 * - Backbone scores s = x W_r^T [T, E]; probs = softmax(s).
 * - Lightweight router: a table L [buckets, E] of logits per token id (row id mod buckets;
 *   `buckets` >= the vocabulary keeps ids apart).
 * - Stage 1 (training steps before the switch): top-k of s; weights sigmoid(s) of the chosen
 *   experts (the paper's gate); loss `stablemoe-distill` = distillCoef * mean cross-entropy of
 *   softmax(L[id]) against the backbone's top-1 expert (a constant target); loss
 *   `stablemoe-balance` = balanceCoef / T * sum over assignments of (n_e - n)/n * sigmoid(s_te),
 *   n_e the assignments of expert e and n their mean (the paper's balance loss: the scores of
 *   overloaded experts are pushed down, of underloaded ones up).
 * - Stage 2 (from the switch step on, and in every forward once a training forward reached it):
 *   the top-k of L[id] (not differentiated, so L receives no gradient and stays frozen); weights
 *   sigmoid(s) at those experts, so the backbone still learns the gate values.
 * - Switch step: `switchStep`, else round(switchFraction * ctx.totalSteps) (else 1000 * it).
 *   The `stage2` buffer records that training reached stage 2 (saved with checkpoints), so a
 *   reloaded model or a generation at step 0 routes like stage 2.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, sigmoid, logSoftmax, reshape, takeAlongLast, embedding, scale, sum, mul } from '../../tensor/index.js';
import { Module, StateBuffer, Parameter } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, posInt, nonNegative } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  switchFraction: num('a number in [0, 1]', (v) => v >= 0 && v <= 1)
    .default(0.1)
    .describe('stage 1 lasts this fraction of the planned steps (ctx.totalSteps), unless switchStep is set'),
  switchStep: posInt().optional().describe('training step at which the lightweight router is frozen (overrides switchFraction)'),
  distillCoef: nonNegative().default(1).describe('coefficient of the distillation loss in stage 1 (stablemoe-distill)'),
  balanceCoef: nonNegative().default(0.3).describe('coefficient of the stage-1 balance loss (stablemoe-balance); 0 leaves balancing to router_losses'),
  buckets: posInt().default(8192).describe('rows of the lightweight token-id router (token id mod buckets); at least the vocabulary size keeps ids apart'),
};

export type StableMoERouterConfig = ParsedRouterConfig<typeof options>;

export class StableMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly cfg: StableMoERouterConfig;
  /** Backbone router W_r [E, d]. */
  gate: Linear;
  /** The lightweight router: logits per token-id bucket [buckets, E]. */
  light: Parameter;
  /** 1 once a training forward reached stage 2 [1]. */
  stage2: StateBuffer;

  constructor(cfg: StableMoERouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.cfg = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.light = new Parameter(rng.fillNormal(new Float32Array(cfg.buckets * cfg.numExperts), 0.01), [cfg.buckets, cfg.numExperts]);
    this.stage2 = new StateBuffer(new Float32Array(1), [1]);
  }

  /** The training step at which stage 2 starts. */
  switchAt(totalSteps?: number): number {
    return this.cfg.switchStep ?? Math.round(this.cfg.switchFraction * (totalSteps ?? 1000));
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('stablemoe', x, this.dModel);
    const E = this.numExperts;
    const k = this.topK;
    if (!ctx.tokenIds || ctx.tokenIds.length !== T) {
      throw new Error(`router "stablemoe": needs ctx.tokenIds with one id per row (${T}), got ${ctx.tokenIds ? ctx.tokenIds.length : 'none'}`);
    }
    const rows = new Int32Array(T);
    for (let t = 0; t < T; t++) {
      const id = ctx.tokenIds[t];
      if (!(Number.isInteger(id) && id >= 0)) throw new Error(`router "stablemoe": ctx.tokenIds[${t}] must be a non-negative integer, got ${id}`);
      rows[t] = id % this.cfg.buckets;
    }
    if (ctx.training && ctx.step >= this.switchAt(ctx.totalSteps)) this.stage2.data[0] = 1;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const gates = sigmoid(logits);
    const losses: Record<string, Tensor> = {};
    if (this.stage2.data[0] === 1) {
      // frozen assignment: the lightweight router's table is read as plain numbers
      const table = new Float32Array(T * E);
      for (let t = 0; t < T; t++) table.set(this.light.data.subarray(rows[t] * E, rows[t] * E + E), t * E);
      const { routing } = selectTopK(gates, k, { select: table });
      return { logits, probs, routing, losses, metrics: { stage: 2 } };
    }
    const { routing, indices } = selectTopK(gates, k, { select: logits.data });
    if (ctx.training && this.cfg.balanceCoef > 0) {
      const load = new Float64Array(E);
      for (const e of routing.expertIdx) load[e]++;
      const mean = (T * k) / E;
      const over = Float32Array.from(routing.expertIdx, (e) => (load[e] - mean) / mean);
      losses['stablemoe-balance'] = scale(sum(mul(routing.weights, new Tensor(over, [T * k]))), this.cfg.balanceCoef / T);
    }
    if (ctx.training && this.cfg.distillCoef > 0) {
      // distil the backbone's top-1 choice into the token-id router
      const target = new Int32Array(T);
      for (let t = 0; t < T; t++) target[t] = indices[t * k];
      const logq = logSoftmax(embedding(this.light, rows, [T]), -1);
      const picked = takeAlongLast(logq, target, 1);
      losses['stablemoe-distill'] = scale(sum(reshape(picked, [T])), -this.cfg.distillCoef / T);
    }
    return { logits, probs, routing, losses, metrics: { stage: 1 } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'stablemoe',
    summary: 'stage 1 routes by the backbone and distils into a token-id router; stage 2 freezes it',
    paper: { authors: 'Dai et al.', title: 'StableMoE: Stable Routing Strategy for Mixture of Experts', year: 2022 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k', needsTokenIds: true, usageCaveat: 'after the switch the assignment depends on the token id only' },
    create: (cfg, rng) => new StableMoERouter(cfg, rng),
  }),
);
