/**
 * End-to-end training: the default `moe-ts train` run (small MoE on Shakespeare) against its
 * FLOP-matched dense baseline, same data, seed and token budget. Reports final validation loss,
 * tokens/s and parameter counts; the MoE should reach a lower loss at the same active compute.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { initBackend, disposeBackend } from '../../src/kernels/index.js';
import { parseRunConfig, matchedDenseConfig } from '../../src/models/config.js';
import { train } from '../../src/train/trainer.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'train';
export const description = 'default MoE training run vs the FLOP-matched dense baseline: final validation loss and tokens/s';

export const columns: Column[] = [
  { key: 'model', header: 'model' },
  { key: 'backend', header: 'backend' },
  { key: 'steps', header: 'steps' },
  { key: 'params', header: 'params' },
  { key: 'activeParams', header: 'active params' },
  { key: 'valLoss', header: 'val loss' },
  { key: 'perplexity', header: 'ppl' },
  { key: 'tokensPerS', header: 'tok/s' },
  { key: 'seconds', header: 'time s' },
];

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const base = parseRunConfig({});
  const steps = opts.quick ? 30 : base.training.steps;
  const cfg = parseRunConfig({ ...base, training: { ...base.training, steps, seed: opts.seed, save_interval: steps, eval_interval: Math.max(10, Math.floor(steps / 5)) } });
  const backendName = opts.backends.includes('native') ? 'native' : opts.backends[0] ?? 'auto';
  const rows: Row[] = [];
  const b = await initBackend(backendName, { threads: Math.max(...opts.threads) });
  try {
    for (const [label, c] of [
      ['moe', cfg],
      ['dense (FLOP-matched)', { ...cfg, model: matchedDenseConfig(cfg.model) }],
    ] as const) {
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-bench-train-'));
      opts.log(`train: ${label}, ${steps} steps on ${b.name} (${b.threads} threads)`);
      const t0 = performance.now();
      const r = await train({ config: c, outDir: out });
      rows.push({
        model: label,
        backend: `${b.name}/${b.threads}`,
        steps,
        params: r.params,
        activeParams: r.activeParams,
        valLoss: Number(r.finalEval.loss.toFixed(4)),
        perplexity: Number(r.finalEval.perplexity.toFixed(2)),
        tokensPerS: Math.round(r.tokensPerSec),
        seconds: Math.round((performance.now() - t0) / 1000),
        curve: r.history.map((h) => ({ step: h.step, tokens: h.tokensSeen, loss: h.result.loss })),
      });
      fs.rmSync(out, { recursive: true, force: true });
    }
  } finally {
    disposeBackend();
  }
  return rows;
}

export function report(rows: Row[]): SuiteTable[] {
  const moe = rows.find((r) => r.model === 'moe');
  const dense = rows.find((r) => String(r.model).startsWith('dense'));
  if (!moe || !dense) return [];
  return [
    {
      title: 'MoE vs FLOP-matched dense (same data, seed, tokens)',
      columns: [
        { key: 'metric', header: 'metric' },
        { key: 'value', header: 'MoE / dense' },
      ],
      rows: [
        { metric: 'val loss difference (MoE - dense)', value: Number(((moe.valLoss as number) - (dense.valLoss as number)).toFixed(4)) },
        { metric: 'tokens/s ratio', value: Number(((moe.tokensPerS as number) / (dense.tokensPerS as number)).toFixed(2)) },
        { metric: 'total params ratio', value: Number(((moe.params as number) / (dense.params as number)).toFixed(2)) },
        { metric: 'active params ratio', value: Number(((moe.activeParams as number) / (dense.activeParams as number)).toFixed(2)) },
      ],
    },
  ];
}
