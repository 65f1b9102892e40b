/** Synthetic benchmark records with known numbers, for the summary and report tests. */
import { analyseRuns } from '../../src/bench-routers/summary.js';
import type { UnigramBaseline } from '../../src/bench-routers/metrics.js';
import { BENCH_FORMAT, BENCH_VERSION, type BenchResults, type RunRecord } from '../../src/bench-routers/types.js';

export const DOMAINS = ['shakespeare', 'wikitext', 'linux'];

export function run(name: string, o: { kind?: 'moe' | 'dense'; losses: number[]; cv?: number; dropped?: number; ept?: number; tps?: number; usage?: number[][][]; routerType?: string }): RunRecord {
  const kind = o.kind ?? 'moe';
  const tokensPerStep = 100;
  const curve = o.losses.map((loss, i) => ({ step: (i + 1) * 10, tokens: (i + 1) * 10 * tokensPerStep, loss, domains: Object.fromEntries(DOMAINS.map((d, j) => [d, loss + 0.1 * (j - 1)])) }));
  const final = curve[curve.length - 1];
  const usage = kind === 'dense' ? [] : (o.usage ?? [DOMAINS.map(() => [25, 25, 25, 25])]);
  return {
    name,
    kind,
    description: `${name} <router> & "friends"`,
    status: 'done',
    fingerprint: 'x',
    model: {
      router_type: o.routerType ?? name,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: kind === 'dense' ? 0 : 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 8,
      intermediate_size: 16,
    },
    params: 1000,
    activeParams: 600,
    steps: curve.length * 10,
    tokensPerStep,
    tokens: curve.length * 10 * tokensPerStep,
    tokensPerSec: o.tps ?? 1000,
    wallSeconds: 1,
    curve,
    final: {
      loss: final.loss,
      perplexity: Math.exp(final.loss),
      domains: DOMAINS.map((d) => ({ domain: d, loss: final.domains[d], perplexity: Math.exp(final.domains[d]), tokens: 64 })),
      routing: { loadCV: o.cv ?? 0, droppedFraction: o.dropped ?? 0, routerEntropy: 1, expertsPerToken: o.ept ?? 2 },
      expertUsage: usage,
      moeLayers: usage.map((_, i) => i),
    },
    intervals:
      kind === 'dense'
        ? []
        : curve.map((c) => ({
            step: c.step,
            tokens: c.tokens,
            steps: 10,
            loss: c.loss,
            tokensPerSec: o.tps ?? 1000,
            loadCV: o.cv ?? 0.1,
            droppedFraction: o.dropped ?? 0,
            routerEntropy: 1.2,
            expertsPerToken: o.ept ?? 2,
          })),
  };
}

export function results(runs: RunRecord[], baseline?: UnigramBaseline, topK = 2): BenchResults {
  return {
    format: BENCH_FORMAT,
    version: BENCH_VERSION,
    createdAt: '2025-01-01T00:00:00.000Z',
    backend: 'js (1 thread)',
    config: {
      model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 },
      training: { steps: 40, batch_size: 2, seq_len: 50, lr: 0.003, schedule: 'cosine', seed: 1 },
      data: { sources: DOMAINS },
    },
    domains: DOMAINS,
    numExperts: 4,
    topK,
    ...(baseline ? { baseline } : {}),
    runs,
    analysis: analyseRuns(runs, { topK, baseline }),
  };
}

/** A specialised layer: each domain prefers its own expert. */
export const SPECIALISED = [
  [70, 10, 10, 10],
  [10, 70, 10, 10],
  [10, 10, 70, 10],
];

export function standardRuns(): RunRecord[] {
  return [
    run('dense', { kind: 'dense', losses: [4, 3, 2.5, 2.2], tps: 2000 }),
    run('topk', { losses: [3.8, 2.6, 2.1, 1.9], cv: 0.2, usage: [SPECIALISED, SPECIALISED] }),
    run('expert-choice', { losses: [3.7, 2.5, 2.0, 1.85], cv: 0, tps: 900 }),
    run('switch', { losses: [4.1, 3.2, 2.7, 2.4], cv: 0.6, dropped: 0.08, tps: 1500 }),
    run('top-p', { losses: [3.9, 2.7, 2.2, 1.905], cv: 0.3, ept: 1.4 }),
  ];
}
