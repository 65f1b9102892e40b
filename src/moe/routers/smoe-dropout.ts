/**
 * SMoE-Dropout: a randomly initialised router that is never trained, with the number of active
 * experts growing during training from `startK` to `endK`; afterwards the model can run with any
 * k ("self-slimmable"): inference uses the layer's topK.
 * Paper: Chen et al., "Sparse MoE as the New Dropout: Scaling Dense and Self-Slimmable Transformers", 2023.
 *
 * The router weights are a StateBuffer (saved in checkpoints, never seen by the optimizer), drawn
 * from the layer's seed. Training step s: k(s) = round(startK + (endK - startK) * min(1, s / growSteps)),
 * growSteps = option, else ctx.totalSteps, else 1000. Weights: softmax over the k chosen logits
 * (probs renormalised over the chosen set). Gradients reach x through the weights, not the router.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax, linear } from '../../tensor/index.js';
import { Module, StateBuffer } from '../../nn/module.js';
import { Tensor as T0 } from '../../tensor/tensor.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, selectTopK } from './common.js';

const options = {
  startK: posInt('an integer in [1, numExperts]').default(1).describe('active experts per token at training step 0'),
  endK: posInt('an integer in [startK, numExperts]').optional().describe('active experts per token at the end of growth (default numExperts)'),
  growSteps: posInt().optional().describe('training steps over which k grows (default ctx.totalSteps, else 1000)'),
};

export type SMoEDropoutRouterConfig = ParsedRouterConfig<typeof options>;

export class SMoEDropoutRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly startK: number;
  readonly endK: number;
  readonly growSteps: number | undefined;
  /** The frozen random router W [E, d]. */
  weight: StateBuffer;

  constructor(cfg: SMoEDropoutRouterConfig, rng: Rng) {
    super();
    const E = cfg.numExperts;
    this.numExperts = E;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.startK = cfg.startK;
    this.endK = cfg.endK ?? E;
    this.growSteps = cfg.growSteps;
    // unit-scale random projections: a frozen router needs no small init (it never trains)
    this.weight = new StateBuffer(rng.fillNormal(new Float32Array(E * cfg.dModel), 1 / Math.sqrt(cfg.dModel)), [E, cfg.dModel]);
  }

  /** Active experts per token at a context (the growth schedule in training, topK in eval). */
  activeK(ctx: Pick<RouterContext, 'training' | 'step' | 'totalSteps'>): number {
    if (!ctx.training) return this.topK;
    const n = this.growSteps ?? ctx.totalSteps ?? 1000;
    const r = Math.min(1, ctx.step / Math.max(1, n));
    return Math.round(this.startK + (this.endK - this.startK) * r);
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    checkRouterInput('smoe-dropout', x, this.dModel);
    const logits = linear(x, new T0(this.weight.data, this.weight.shape));
    const probs = softmax(logits, -1);
    const k = this.activeK(ctx);
    const sel = selectTopK(probs, k, { normalize: true });
    return { logits, probs, routing: sel.routing, losses: {}, metrics: { activeK: k } };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'smoe-dropout',
    summary: 'frozen random router; active experts grow during training, any k at inference',
    paper: { authors: 'Chen et al.', title: 'Sparse MoE as the New Dropout: Scaling Dense and Self-Slimmable Transformers', year: 2023 },
    options,
    refine: (c, issue) => {
      const endK = c.endK ?? c.numExperts;
      if (c.startK > c.numExperts) issue('startK', `must be an integer in [1, numExperts=${c.numExperts}]`);
      if (endK > c.numExperts || endK < c.startK) issue('endK', `must be an integer in [startK=${c.startK}, numExperts=${c.numExperts}]`);
    },
    traits: {
      routing: 'sparse',
      expertsPerToken: 'variable',
      inferenceDiffers: 'training grows k from startK to endK (up to every expert); inference runs the layer topK',
    },
    create: (cfg, rng) => new SMoEDropoutRouter(cfg, rng),
  }),
);
