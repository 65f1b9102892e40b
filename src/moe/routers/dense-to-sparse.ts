/**
 * Dense-to-sparse gate: a Gumbel-softmax gate whose temperature falls over training while the
 * number of active experts falls from all E to topK, so training starts dense (every expert sees
 * every token and learns) and ends with the cheap sparse top-k used at inference.
 * Paper: Nie et al., "EvoMoE: An Evolutional Mixture-of-Experts Training Framework via Dense-To-Sparse Gate", 2022.
 *
 * Options:
 * - startTemp (default 2.0) and endTemp (default 0.3), endTemp <= startTemp, both > 0.
 * - annealSteps (default ctx.totalSteps, else 1000): steps over which both schedules run.
 *
 * Schedule at training step s, with r = min(1, s / annealSteps):
 * - temperature tau = startTemp * (endTemp / startTemp)^r (geometric, i.e. exponential decay in
 *   the step, as EvoMoE anneals its temperature);
 * - active experts k = topK + ceil((E - topK) * (1 - r)): E at step 0, exactly topK from
 *   annealSteps on.
 * Training: gate = softmax((logits + g) / tau) with Gumbel noise g = -log(-log u), u ~ U(0, 1)
 * from ctx.rng (deterministic per seed). Eval: no noise, tau = endTemp, k = topK (the final
 * sparse router).
 * Weights = the gate values of the k largest entries, not renormalised (EvoMoE keeps the gate
 * values; at k = E they sum to 1, later the dropped experts' mass is simply not computed).
 *
 * Record: logits = x W_r^T (raw, before noise and temperature); probs = the gate actually
 * routed on (noisy, tempered softmax, computed once), so balancing losses see the real
 * distribution. Metrics: temperature, activeK.
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, add, scale, topk, reshape } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { positive, posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate } from './common.js';

const options = {
  startTemp: positive().default(2.0).describe('Gumbel-softmax temperature at step 0'),
  endTemp: positive('a positive number <= startTemp').default(0.3).describe('temperature at the end of annealing (and in eval)'),
  annealSteps: posInt().optional().describe('steps over which temperature and active experts anneal (default ctx.totalSteps, else 1000)'),
};

export type DenseToSparseRouterConfig = ParsedRouterConfig<typeof options>;

export class DenseToSparseRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly startTemp: number;
  readonly endTemp: number;
  /** Fixed by the config, or undefined to follow ctx.totalSteps (else 1000). */
  readonly annealSteps: number | undefined;
  gate: Linear;

  constructor(cfg: DenseToSparseRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.startTemp = cfg.startTemp;
    this.endTemp = cfg.endTemp;
    this.annealSteps = cfg.annealSteps;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  /** Temperature and active experts at a training step (eval uses the end of the schedule). */
  schedule(step: number, totalSteps?: number): { temperature: number; activeK: number } {
    const steps = this.annealSteps ?? totalSteps ?? 1000;
    if (!(Number.isFinite(steps) && steps >= 1)) throw new Error(`router "dense-to-sparse": anneal steps must be >= 1, got ${steps} (from ctx.totalSteps)`);
    const r = Math.min(1, Math.max(0, step / steps));
    const temperature = this.startTemp * Math.pow(this.endTemp / this.startTemp, r);
    const E = this.numExperts;
    const activeK = Math.min(E, this.topK + Math.ceil((E - this.topK) * (1 - r) - 1e-9));
    return { temperature, activeK };
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('dense-to-sparse', x, this.dModel);
    const E = this.numExperts;
    const { temperature, activeK } = ctx.training ? this.schedule(ctx.step, ctx.totalSteps) : { temperature: this.endTemp, activeK: this.topK };
    const logits = this.gate.forward(x);
    let z = logits;
    if (ctx.training) {
      const g = new Float32Array(T * E);
      for (let i = 0; i < g.length; i++) {
        let u = ctx.rng.next();
        while (u <= 0) u = ctx.rng.next(); // -log(-log 0) = -inf
        g[i] = -Math.log(-Math.log(u));
      }
      z = add(logits, new Tensor(g, [T, E]));
    }
    const probs = softmax(scale(z, 1 / temperature), -1);
    const top = topk(probs, activeK);
    const tokenIdx = new Int32Array(T * activeK);
    for (let t = 0; t < T; t++) tokenIdx.fill(t, t * activeK, (t + 1) * activeK);
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx: top.indices, weights: reshape(top.values, [T * activeK]) },
      losses: {},
      metrics: { temperature, activeK },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'dense-to-sparse',
    summary: 'Gumbel gate annealed from dense to sparse top-k',
    paper: { authors: 'Nie et al.', title: 'EvoMoE: An Evolutional Mixture-of-Experts Training Framework via Dense-To-Sparse Gate', year: 2022 },
    options,
    refine: (c, issue) => {
      if (c.startTemp > 0 && c.endTemp > c.startTemp) issue('endTemp', `must be a positive number <= startTemp (${c.startTemp})`);
    },
    // training starts with all E experts per token and anneals to topK
    traits: { routing: 'sparse', expertsPerToken: 'variable' },
    create: (cfg, rng) => new DenseToSparseRouter(cfg, rng),
  }),
);
