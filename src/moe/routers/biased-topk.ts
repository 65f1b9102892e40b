/**
 * Top-k over router logits with a learned bias, weights the softmax over the k chosen logits
 * (GPT-OSS: logits = x W^T + b; softmax over the selected logits equals the renormalised top-k
 * softmax probabilities). Paper: OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card", 2025.
 * The projection is `gate` with weight [E, d] and bias [E].
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { Module } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { routerRegistry, defineRouter } from './registry.js';
import { checkRouterInput, routerInitStd, softmaxTopK } from './common.js';

export class BiasedTopKRouter extends Module implements Router {
  gate: Linear;
  constructor(
    readonly numExperts: number,
    readonly dModel: number,
    readonly topK: number,
    rng: Rng,
  ) {
    super();
    this.gate = new Linear(dModel, numExperts, rng, { bias: true, std: routerInitStd(dModel) });
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    checkRouterInput('biased-topk', x, this.dModel);
    const logits = this.gate.forward(x);
    const { probs, routing } = softmaxTopK(logits, this.topK, true);
    return { logits, probs, routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'biased-topk',
    summary: 'top-k of biased router logits, softmax over the chosen (GPT-OSS)',
    paper: { authors: 'OpenAI', title: 'gpt-oss-120b & gpt-oss-20b Model Card', year: 2025 },
    options: {},
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new BiasedTopKRouter(cfg.numExperts, cfg.dModel, cfg.topK, rng),
  }),
);
