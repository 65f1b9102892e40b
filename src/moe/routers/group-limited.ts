/**
 * Group-limited top-k routing of DeepSeek-V2 and V3: experts are split into nGroup groups, each
 * token first picks its topkGroup best groups and then its k experts within them.
 * Papers: DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts
 * Language Model", 2024; "DeepSeek-V3 Technical Report", 2024.
 *
 * variant 'v3' (transformers DeepseekV3TopkRouter): s = sigmoid(x W^T); selection scores
 *   s + b with b the e_score_correction_bias (selection only, never in the weights); a group's
 *   score is the sum of its two best selection scores; experts outside the chosen groups get
 *   selection score 0; weights = s of the chosen experts, divided by their sum when `normalize`,
 *   then times routedScaling.
 * variant 'v2' (group_limited_greedy): s = softmax(x W^T); a group's score is its best s; no
 *   bias; weights = s of the chosen, renormalised when `normalize` (and k > 1), else times
 *   routedScaling. nGroup 1 is plain top-k ('greedy').
 *
 * The bias is an nn StateBuffer named `e_score_correction_bias` (checkpoint name
 * `...router.e_score_correction_bias`). biasUpdateRate > 0 trains it as aux-loss-free balancing
 * does (b_e += u * sign(mean load - load_e) after each step); 0 (default) keeps it as loaded.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { sigmoid, softmax } from '../../tensor/index.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Linear } from '../../nn/layers.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { z, posInt, positive, nonNegative, bool } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput, routerGate, selectTopK, normalizeRows } from './common.js';

const options = {
  variant: z.enum(['v3', 'v2']).default('v3').describe("'v3': sigmoid scores with selection bias; 'v2': softmax scores"),
  nGroup: posInt().default(1).describe('expert groups (numExperts must be a multiple)'),
  topkGroup: posInt().default(1).describe('groups each token may use (at most nGroup)'),
  normalize: bool().default(true).describe('divide the chosen weights by their sum (norm_topk_prob)'),
  routedScaling: positive().default(1).describe('routed_scaling_factor on the weights'),
  biasUpdateRate: nonNegative().default(0).describe('aux-loss-free update rate of the selection bias (0: frozen)'),
};

export type GroupLimitedConfig = ParsedRouterConfig<typeof options>;

export class GroupLimitedRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  readonly opts: GroupLimitedConfig;
  gate: Linear;
  /** v3 only (v2 has no selection bias). */
  e_score_correction_bias: StateBuffer | null;

  constructor(cfg: GroupLimitedConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    this.opts = cfg;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
    this.e_score_correction_bias = cfg.variant === 'v3' ? new StateBuffer(new Float32Array(cfg.numExperts), [cfg.numExperts]) : null;
  }

  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('group-limited', x, this.dModel);
    const E = this.numExperts;
    const { variant, nGroup, topkGroup, normalize, routedScaling } = this.opts;
    const logits = this.gate.forward(x);
    const s = variant === 'v3' ? sigmoid(logits) : softmax(logits, -1);
    const b = this.e_score_correction_bias?.data;
    const sd = s.data;
    const select = new Float32Array(T * E);
    const per = E / nGroup;
    const gscore = new Float32Array(nGroup);
    const gorder = new Int32Array(nGroup);
    for (let t = 0; t < T; t++) {
      const o = t * E;
      for (let e = 0; e < E; e++) select[o + e] = b ? sd[o + e] + b[e] : sd[o + e];
      if (nGroup === 1) continue;
      for (let g = 0; g < nGroup; g++) {
        let m1 = -Infinity;
        let m2 = -Infinity;
        for (let e = g * per; e < (g + 1) * per; e++) {
          const v = select[o + e];
          if (v > m1) {
            m2 = m1;
            m1 = v;
          } else if (v > m2) m2 = v;
        }
        gscore[g] = variant === 'v3' ? m1 + (per > 1 ? m2 : 0) : m1;
        gorder[g] = g;
      }
      const keep = Array.from(gorder)
        .sort((a, c) => gscore[c] - gscore[a] || a - c)
        .slice(0, topkGroup);
      for (let g = 0; g < nGroup; g++) {
        if (keep.includes(g)) continue;
        for (let e = g * per; e < (g + 1) * per; e++) select[o + e] = 0;
      }
    }
    const renorm = normalize && (variant === 'v3' || this.topK > 1);
    const factor = variant === 'v3' || !renorm ? routedScaling : 1;
    const { routing } = selectTopK(s, this.topK, { select, normalize: renorm, factor });
    const probs = variant === 'v3' ? normalizeRows(s) : s;
    return { logits, probs, routing, losses: {}, metrics: {} };
  }

  afterStep(load: Float64Array): void {
    const u = this.opts.biasUpdateRate;
    if (u === 0 || !this.e_score_correction_bias) return;
    const E = this.numExperts;
    let mean = 0;
    for (let e = 0; e < E; e++) mean += load[e];
    mean /= E;
    const b = this.e_score_correction_bias.data;
    for (let e = 0; e < E; e++) b[e] += u * Math.sign(mean - load[e]);
  }
}

routerRegistry.register(
  defineRouter({
    name: 'group-limited',
    summary: 'DeepSeek-V2/V3 group-limited top-k (V3: sigmoid scores, selection-only correction bias, routed scaling)',
    paper: { authors: 'DeepSeek-AI', title: 'DeepSeek-V3 Technical Report', year: 2024 },
    options,
    refine: (c, issue) => {
      if (c.numExperts % c.nGroup !== 0) issue('nGroup', `must divide numExperts (${c.numExperts})`);
      if (c.topkGroup > c.nGroup) issue('topkGroup', `must be at most nGroup (${c.nGroup})`);
      if (c.topK > (c.numExperts / c.nGroup) * c.topkGroup) issue('topkGroup', `too few groups for topK ${c.topK}: topkGroup * numExperts / nGroup must be >= topK`);
    },
    traits: { routing: 'sparse', expertsPerToken: 'k', hfConfig: { routed_scaling_factor: 'routedScaling' } },
    create: (cfg, rng) => new GroupLimitedRouter(cfg, rng),
  }),
);
