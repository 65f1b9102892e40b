/**
 * THOR: stochastic experts. No learned router: each token goes to one expert drawn at random,
 * and the trainer runs every step twice (two independent draws, i.e. a random pair of experts per
 * token) with a consistency loss between the two passes' predictions, so every expert learns to
 * give the same answer.
 * Paper: Zuo et al., "Taming Sparsely Activated Transformer with Stochastic Experts", 2022.
 *
 * - Training: expert ~ U{0..E-1} per token from ctx.rng; weight 1.
 * - The two passes and the loss: this router declares `consistencyWeight` (option
 *   `consistency`); the trainer then averages the two passes' losses and adds
 *   consistency * the symmetric KL between their next-token distributions.
 * - Inference: one randomly chosen expert per token, as in the paper, but reproducible: a seeded
 *   hash of the token id (of the hidden state's sign pattern when no ids are given), so it is
 *   independent of the batch and of the call order.
 * - Record: logits 0 and probs 1/E (the uniform routing distribution; constants: balancing
 *   losses have no gradient here, as the random routing is balanced in expectation).
 */
import { Tensor } from '../../tensor/tensor.js';
import { fmix32, type Rng } from '../../tensor/random.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { nonNegative } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput } from './common.js';

const options = {
  consistency: nonNegative().default(1).describe('coefficient of the symmetric-KL consistency loss between the two training passes (0: one pass)'),
};

export type ThorRouterConfig = ParsedRouterConfig<typeof options>;

export class ThorRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly consistencyWeight: number;
  /** Seed of the inference hash [1] (saved with checkpoints). */
  seed: StateBuffer;

  constructor(cfg: ThorRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.consistencyWeight = cfg.consistency;
    this.seed = new StateBuffer(Float32Array.of(Math.floor(rng.next() * (1 << 24))), [1]);
  }

  /**
   * The inference expert of a token: a seeded hash of its id when ctx.tokenIds is given, else of
   * the sign pattern of its hidden state (stable under small perturbations, unlike its bits).
   */
  inferenceExpert(row: Float32Array, id: number | undefined): number {
    let h = fmix32(this.seed.data[0] | 0);
    if (id !== undefined) h = fmix32((h ^ id) >>> 0);
    else
      for (let i = 0; i < row.length; i += 32) {
        let bits = 0;
        for (let j = i; j < Math.min(row.length, i + 32); j++) if (row[j] > 0) bits |= 1 << (j - i);
        h = fmix32((h ^ bits) >>> 0);
      }
    return h % this.numExperts;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('thor', x, this.dModel);
    const E = this.numExperts;
    const d = this.dModel;
    const expertIdx = new Int32Array(T);
    for (let t = 0; t < T; t++) {
      expertIdx[t] = ctx.training ? Math.min(E - 1, Math.floor(ctx.rng.next() * E)) : this.inferenceExpert(x.data.subarray(t * d, (t + 1) * d), ctx.tokenIds?.[t]);
    }
    return {
      logits: new Tensor(new Float32Array(T * E), [T, E]),
      probs: new Tensor(new Float32Array(T * E).fill(1 / E), [T, E]),
      routing: { kind: 'sparse', tokenIdx: Int32Array.from({ length: T }, (_, t) => t), expertIdx, weights: new Tensor(new Float32Array(T).fill(1), [T]) },
      losses: {},
      metrics: {},
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'thor',
    summary: 'random expert per token; two passes per step with a consistency loss between them',
    paper: { authors: 'Zuo et al.', title: 'Taming Sparsely Activated Transformer with Stochastic Experts', year: 2022 },
    options,
    // one expert per token, whatever topK says
    checkTopK: false,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'one',
      usageCaveat: 'experts are drawn at random, so per-domain usage is uniform by construction; training runs two passes per step',
    },
    create: (cfg, rng) => new ThorRouter(cfg, rng),
  }),
);
