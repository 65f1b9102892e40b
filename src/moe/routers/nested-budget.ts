/**
 * Expert Preferred Routing of Mixture of Nested Experts (Jain et al., "Mixture of Nested Experts:
 * Adaptive Processing of Visual Tokens", 2024): with experts ordered by compute (the 'nested'
 * expert type: expert E-1 the full width), each expert e takes a fixed share capacities[e] of the
 * batch's tokens, so the compute per batch is fixed by the budget sum_e capacities[e] * cost_e.
 * The largest expert picks first: its top tokens by router probability, then the next expert
 * among the tokens left, down to the smallest, which takes the rest. Every token gets exactly one
 * expert, weighted by its router probability (so the router learns through the combine).
 *
 * Shares are normalised; counts are floor(share * T) with the remainder to the largest experts.
 * Selection looks at the whole batch, as expert choice does (batch-dependent).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { softmax } from '../../tensor/index.js';
import { Module } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import { z, nonNegative } from '../../tensor/validate.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, gatherPairs } from './common.js';

const options = {
  capacities: z.array(nonNegative()).optional().describe('share of the batch each expert takes, smallest expert first (default equal shares); normalised'),
};

export type NestedBudgetRouterConfig = ParsedRouterConfig<typeof options>;

/** Tokens per expert for a batch of T: floor(share * T), the remainder to the largest experts. */
export function nestedCapacities(shares: readonly number[], T: number): Int32Array {
  const E = shares.length;
  const total = shares.reduce((a, b) => a + b, 0);
  const n = new Int32Array(E);
  let used = 0;
  for (let e = 0; e < E; e++) used += n[e] = Math.floor((shares[e] / total) * T);
  const positive: number[] = [];
  for (let e = E - 1; e >= 0; e--) if (shares[e] > 0) positive.push(e);
  for (let i = 0; used < T; i++, used++) n[positive[i % positive.length]]++;
  return n;
}

export class NestedBudgetRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly shares: readonly number[];
  gate: Linear;

  constructor(cfg: NestedBudgetRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.shares = Object.freeze(cfg.capacities ?? new Array<number>(cfg.numExperts).fill(1));
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('nested-budget', x, this.dModel);
    const E = this.numExperts;
    const logits = this.gate.forward(x);
    const probs = softmax(logits, -1);
    const cap = nestedCapacities(this.shares, T);
    const p = probs.data;
    const taken = new Uint8Array(T);
    const tokenIdx = new Int32Array(T);
    const expertIdx = new Int32Array(T);
    let a = 0;
    const order = Array.from({ length: T }, (_, t) => t);
    for (let e = E - 1; e >= 0; e--) {
      // this expert's preference over the tokens left; ties to the lower token index
      const left = order.filter((t) => !taken[t]).sort((s, t) => p[t * E + e] - p[s * E + e] || s - t);
      for (let i = 0; i < cap[e]; i++) {
        const t = left[i];
        taken[t] = 1;
        tokenIdx[a] = t;
        expertIdx[a++] = e;
      }
    }
    let cost = 0;
    for (let e = 0; e < E; e++) cost += (cap[e] * 2 ** (e - (E - 1))) / Math.max(1, T);
    return {
      logits,
      probs,
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights: gatherPairs(probs, tokenIdx, expertIdx) },
      losses: {},
      // compute relative to every token at full width, for the default halving widths
      metrics: { nestedComputeFraction: cost },
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'nested-budget',
    summary: 'MoNE expert preferred routing: experts from the largest down take fixed shares of the batch, fixing the compute budget',
    paper: { authors: 'Jain et al.', title: 'Mixture of Nested Experts: Adaptive Processing of Visual Tokens', year: 2024 },
    options,
    refine: (c, issue) => {
      if (c.capacities === undefined) return;
      if (c.capacities.length !== c.numExperts) issue('capacities', `must have one share per expert (${c.numExperts}), got ${c.capacities.length}`);
      else if (!c.capacities.some((v) => v > 0)) issue('capacities', 'must have a positive share');
    },
    checkTopK: false,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'one',
      batchDependent: "the experts take fixed shares of the batch's tokens in preference order, so a token's width depends on the other tokens (and on future ones in causal LM training)",
    },
    create: (cfg, rng) => new NestedBudgetRouter(cfg, rng),
  }),
);
