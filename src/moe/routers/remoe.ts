/**
 * ReLU routing: gates = relu(x W_r^T); every expert with a positive gate computes, with that gate
 * as its weight, so the number of experts per token varies and the router stays differentiable
 * (no top-k cut). Sparsity comes from an L1 penalty whose coefficient adapts toward a target.
 * Paper: Wang et al., "ReMoE: Fully Differentiable Mixture-of-Experts with ReLU Routing", 2024.
 *
 * Options:
 * - targetK (default topK): desired average experts per token; the target sparsity is 1 - targetK/E.
 * - l1Init (default 1e-8, the paper's lambda_0): initial L1 coefficient lambda.
 * - alpha (default 1.2, the paper's value): after every optimizer step
 *   lambda <- lambda * alpha^sign(targetSparsity - realisedSparsity), so lambda grows while routing
 *   is denser than the target and shrinks while it is sparser.
 * - balancedL1 (default false): the paper's load-balancing refinement, which weights each
 *   expert's gates by its relative load f_e = E / (targetK T) * #{t : gate[t, e] > 0} (a constant),
 *   so crowded experts are pushed toward zero harder.
 *
 * Record:
 * - logits: x W_r^T; probs: gates normalised per token (relu(logits) / row sum; an all-zero row
 *   stays zero), which is the share of the token's output each expert contributes. No softmax.
 * - losses.l1 = lambda * (1/T) sum_t sum_e gate[t, e] (times f_e with balancedL1), lambda being
 *   the coefficient current at this call. Per layer; the paper's 1/L average over layers is the
 *   model's choice of how to sum layer losses.
 * - metrics: lambda (the coefficient used in this call), sparsity (fraction of zero gates in this
 *   call), expertsPerToken.
 *
 * lambda is a StateBuffer (saved with checkpoints, never optimized) so a resumed run keeps its
 * schedule. The sparsity driving the update is the one the MoE layer reports: afterStep's load
 * (assignments per expert summed over the step) divided by E * (tokens this router routed in
 * training since the previous afterStep).
 */
import { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { relu, sum, div, add, mul, scale } from '../../tensor/index.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num, positive, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  targetK: num('a number in (0, numExperts]', (v) => v > 0)
    .optional()
    .describe('target active experts per token (default topK); the L1 coefficient adapts toward sparsity 1 - targetK / E'),
  l1Init: positive().default(1e-8).describe('initial L1 coefficient lambda'),
  alpha: num('a finite number > 1', (v) => v > 1)
    .default(1.2)
    .describe('lambda is multiplied or divided by alpha after each step'),
  balancedL1: bool().default(false).describe("weight the L1 penalty per expert by its load (the paper's load-balancing variant)"),
};

export type ReMoERouterConfig = ParsedRouterConfig<typeof options>;

export class ReMoERouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly targetK: number;
  readonly alpha: number;
  readonly balancedL1: boolean;
  gate: Linear;
  /** The adaptive L1 coefficient lambda [1] (a StateBuffer: checkpointed, never optimized). */
  readonly l1Coef: StateBuffer;
  /** Tokens routed in training since the last afterStep (the denominator of the sparsity). */
  private tokensSinceStep = 0;

  constructor(cfg: ReMoERouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.targetK = cfg.targetK ?? cfg.topK;
    const l1Init = cfg.l1Init;
    this.alpha = cfg.alpha;
    this.balancedL1 = cfg.balancedL1;
    this.gate = routerGate(cfg.dModel, E, rng);
    this.l1Coef = new StateBuffer(new Float32Array([l1Init]), [1]);
  }

  get lambda(): number {
    return this.l1Coef.data[0];
  }

  /** Target fraction of zero gates, 1 - targetK / E. */
  get targetSparsity(): number {
    return 1 - this.targetK / this.numExperts;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('remoe', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const gates = relu(logits);
    const g = gates.data;

    let active = 0;
    for (let i = 0; i < g.length; i++) if (g[i] > 0) active++;
    const tokenIdx = new Int32Array(active);
    const expertIdx = new Int32Array(active);
    const rowEmpty = new Float32Array(T);
    for (let t = 0, a = 0; t < T; t++) {
      let any = false;
      for (let e = 0; e < E; e++) {
        if (g[t * E + e] > 0) {
          tokenIdx[a] = t;
          expertIdx[a] = e;
          a++;
          any = true;
        }
      }
      if (!any) rowEmpty[t] = 1;
    }
    const weights = gatherPairs(gates, tokenIdx, expertIdx);

    // + 1 only on all-zero rows: exact normalisation elsewhere, 0/1 = 0 instead of NaN there
    const probs = div(gates, add(sum(gates, -1, true), new Tensor(rowEmpty, [T, 1])));

    const lambda = this.lambda;
    let penalised = gates;
    if (this.balancedL1 && T > 0) {
      const f = new Float32Array(E);
      for (let i = 0; i < active; i++) f[expertIdx[i]]++;
      const norm = E / (this.targetK * T);
      for (let e = 0; e < E; e++) f[e] *= norm;
      penalised = mul(gates, new Tensor(f, [1, E]));
    }
    const l1Loss = scale(sum(penalised), T > 0 ? lambda / T : 0);

    if (ctx.training) this.tokensSinceStep += T;
    const sparsity = T > 0 ? 1 - active / (T * E) : 0;
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights },
      losses: { l1: l1Loss },
      metrics: { lambda, sparsity, expertsPerToken: T > 0 ? active / T : 0 },
    };
  }

  /**
   * lambda <- lambda * alpha^sign(targetSparsity - sparsity). Without training tokens since the
   * last step there is nothing to measure, so lambda is left alone.
   */
  afterStep(load: Float64Array): void {
    if (load.length !== this.numExperts) {
      throw new Error(`router "remoe": afterStep load has ${load.length} entries, expected numExperts=${this.numExperts}`);
    }
    const tokens = this.tokensSinceStep;
    this.tokensSinceStep = 0;
    if (tokens === 0) return;
    let assigned = 0;
    for (let e = 0; e < load.length; e++) assigned += load[e];
    const sparsity = 1 - assigned / (tokens * this.numExperts);
    const gap = this.targetSparsity - sparsity;
    this.l1Coef.data[0] = this.lambda * Math.pow(this.alpha, Math.sign(gap));
  }
}

routerRegistry.register(
  defineRouter({
    name: 'remoe',
    summary: 'ReLU routing with adaptive L1 sparsity',
    paper: { authors: 'Wang et al.', title: 'ReMoE: Fully Differentiable Mixture-of-Experts with ReLU Routing', year: 2024 },
    options,
    refine: (c, issue) => {
      if (typeof c.targetK === 'number' && c.targetK > c.numExperts) issue('targetK', `must be a number in (0, numExperts=${c.numExperts}]`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'variable' },
    create: (cfg, rng) => new ReMoERouter(cfg, rng),
  }),
);
