/**
 * Softmax top-k (renormalised) with a per-expert selection offset that phases newly added experts
 * in: experts are selected by top-k of (p + offset), weighted by their renormalised softmax
 * probabilities p. The offset only decides which experts compute (as the selection bias of
 * Wang et al., "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", 2024).
 *
 * Why: when experts are added to a trained MoE (MoExtend, 2024; PMoE, 2023) the extended model
 * should first compute exactly the old one. Since p is in (0, 1), an offset of -1 means the
 * expert is never selected, and the renormalised weights of the chosen (old) experts do not
 * depend on the new experts' logits: the old model, bit for bit in routing. A never-selected
 * expert gets no gradient, so afterStep raises every negative offset by 1 / phaseInSteps per
 * optimizer step (capped at 0): after phaseInSteps steps this is plain top-k over all experts.
 *
 * The offset [E] is a StateBuffer named `offset` (0 for every expert of a fresh router).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { posInt } from '../../tensor/validate.js';
import { softmax } from '../../tensor/index.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK } from './common.js';

const options = {
  phaseInSteps: posInt().default(50).describe('optimizer steps over which an offset of -1 rises to 0 (linearly)'),
};

/** Options of the phase-in router, parsed. */
export type PhaseInRouterConfig = ParsedRouterConfig<typeof options>;

/** Renormalised softmax top-k with selection offsets that phase new experts in (see the file comment). */
export class PhaseInRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly phaseInSteps: number;
  gate: Linear;
  /** Selection offset per expert (<= 0; -1: never selected). */
  offset: StateBuffer;

  constructor(cfg: PhaseInRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.phaseInSteps = cfg.phaseInSteps;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.offset = new StateBuffer(new Float32Array(cfg.numExperts), [cfg.numExperts]);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('phase-in', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const b = this.offset.data;
    const p = probs.data;
    const select = new Float32Array(T * E);
    let phasing = 0;
    for (let e = 0; e < E; e++) if (b[e] < 0) phasing++;
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) select[t * E + e] = p[t * E + e] + b[e];
    const { routing } = selectTopK(probs, this.topK, { select: phasing > 0 ? select : undefined, normalize: true });
    let lo = 0;
    for (let e = 0; e < E; e++) lo = Math.min(lo, b[e]);
    return { logits, probs, routing, losses: {}, metrics: { phasingExperts: phasing, offsetMin: lo } };
  }

  afterStep(load: Float64Array): void {
    if (load.length !== this.numExperts) throw new Error(`router "phase-in": afterStep load has ${load.length} entries, expected numExperts=${this.numExperts}`);
    const b = this.offset.data;
    for (let e = 0; e < b.length; e++) if (b[e] < 0) b[e] = Math.min(0, b[e] + 1 / this.phaseInSteps);
  }
}

routerRegistry.register(
  defineRouter({
    name: 'phase-in',
    summary: 'renormalised softmax top-k with selection offsets that phase added experts in (moe-ts extend)',
    paper: { authors: 'Zhong et al.', title: 'MoExtend: Tuning-free Multimodal Expansion via Mixture-of-Experts', year: 2024 },
    options,
    traits: { routing: 'sparse', expertsPerToken: 'k' },
    create: (cfg, rng) => new PhaseInRouter(cfg, rng),
  }),
);
