/** Validation: loss and perplexity per domain, plus routing statistics per layer and domain. */
import { expertsPerTokenOfLayers } from '../moe/metrics.js';
import { noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { crossEntropy } from '../tensor/index.js';
import type { LanguageModel } from '../models/family.js';
import type { MixedDataset } from '../data/dataset.js';

export interface DomainEval {
  domain: string;
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface EvalResult {
  /** Token-weighted mean over domains. */
  loss: number;
  perplexity: number;
  domains: DomainEval[];
  /** usage[layer][domain][expert]: tokens routed (kept assignments). */
  expertUsage: number[][][];
  /** MoE layer indices matching usage's first axis. */
  moeLayers: number[];
  /** Mean routing metrics over the evaluated batches. */
  routing: { loadCV: number; droppedFraction: number; routerEntropy: number; expertsPerToken: number };
}

export function evaluate(model: LanguageModel, data: MixedDataset, opts: { maxBatches?: number; step?: number } = {}): EvalResult {
  const wasTraining = model.training;
  model.eval();
  // by depth: shared layers (layer_groups) run at several depths, and a depth-routed layer may run on no token
  const moeLayerIdx = model.moeLayerIndices();
  const E = model.config.num_local_experts;
  const usage = moeLayerIdx.map(() => data.domainNames.map(() => new Array<number>(E).fill(0)));
  const routing = { loadCV: 0, droppedFraction: 0, routerEntropy: 0, expertsPerToken: 0 };
  let routingCount = 0;
  // experts per token: per forward, sub-layers of a layer summed, then the mean over layers (expertsPerTokenOfLayers)
  let eptSum = 0;
  let eptCount = 0;
  const domains: DomainEval[] = [];
  try {
    noGrad(() => {
      data.domainNames.forEach((name, d) => {
        let sum = 0;
        let tokens = 0;
        let batches = 0;
        for (const b of data.valBatches(d)) {
          if (opts.maxBatches !== undefined && batches >= opts.maxBatches) break;
          const res = model.forward(b.inputs, b.batchSize, b.seqLen, { ctx: { training: false, step: opts.step ?? 0, rng: new Rng(0) } });
          const n = b.batchSize * b.seqLen;
          sum += crossEntropy(res.logits, b.targets).item() * n;
          tokens += n;
          batches++;
          if (res.aux.length) {
            eptSum += expertsPerTokenOfLayers(res.aux);
            eptCount++;
          }
          res.aux.forEach(({ aux, layer }) => {
            const li = moeLayerIdx.indexOf(layer);
            const m = aux.metrics;
            // FFN kinds' MoE sub-layers (CartesianMoE) have their own expert counts: in the routing means, not the usage table
            if (li >= 0) for (let e = 0; e < E; e++) usage[li][d][e] += m.tokensPerExpert[e] ?? 0;
            routing.loadCV += m.loadCV;
            routing.droppedFraction += m.droppedFraction;
            routing.routerEntropy += m.routerEntropy;
            routingCount++;
          });
        }
        if (tokens === 0) throw new Error(`evaluate: domain "${name}" has no validation windows`);
        const loss = sum / tokens;
        domains.push({ domain: name, loss, perplexity: Math.exp(loss), tokens });
      });
    });
  } finally {
    model.train(wasTraining);
  }
  const total = domains.reduce((s, d) => s + d.tokens, 0);
  const loss = domains.reduce((s, d) => s + d.loss * d.tokens, 0) / total;
  if (routingCount > 0) for (const k of ['loadCV', 'droppedFraction', 'routerEntropy'] as const) routing[k] /= routingCount;
  routing.expertsPerToken = eptCount > 0 ? eptSum / eptCount : 0;
  return { loss, perplexity: Math.exp(loss), domains, expertUsage: usage, moeLayers: moeLayerIdx, routing };
}
