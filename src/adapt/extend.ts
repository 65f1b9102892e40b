/**
 * `moe-ts extend`: add experts to a trained MoE for a new domain and train only them and their
 * router rows (MoExtend, 2024; PMoE, 2023), with the before/after table. See src/models/extend.ts.
 */
import { ConfigError, parseRunConfig } from '../models/config.js';
import { extendExperts, extendTrainable } from '../models/extend.js';
import { train } from '../train/trainer.js';
import { asTransformer } from '../models/transformer.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, type AdaptReport, type MeasureOptions } from './common.js';
import { expertUsage, mostUsedExperts } from './prune.js';

/** What `moe-ts extend` does. */
export interface ExtendRunOptions extends MeasureOptions {
  model: string;
  out: string;
  /** New experts per MoE layer. */
  addExperts: number;
  /** The new domain's corpora (training data of the new experts). */
  data: string[];
  /** 'copy' (default): each new expert copies an expert the router uses most on the new domain; 'fresh': random init. */
  init?: 'copy' | 'fresh';
  /** Train the old router rows too (default: frozen, as in MoExtend). */
  trainOldRouterRows?: boolean;
  steps?: number;
  lr?: number;
  phaseInSteps?: number;
  /** Calibration windows of the new domain for choosing the copied experts (default 8). */
  calibration?: number;
  seed?: number;
  overwrite?: boolean;
  dataDir?: string;
}

/** Extend, train the new experts on `data`, measure before / extended / trained; the run and extend.md/json go to `out`. */
export async function runExtend(o: ExtendRunOptions): Promise<AdaptReport & { files: { md: string; json: string }; sources: number[][] }> {
  if (o.data.length === 0) throw new ConfigError('extend: --data must name the new domain corpora');
  const src = loadAnyModel(o.model);
  const E = src.model.config.num_local_experts;
  const init = o.init ?? 'copy';
  let sources: number[][] | undefined;
  if (init === 'copy') {
    // the experts the router already sends the new domain to are the closest starting points
    const { data: newData } = adaptDataset(src, { ...o, sources: o.data });
    const usage = expertUsage(src.model, calibrationWindows(newData, o.calibration ?? 8));
    sources = mostUsedExperts(usage.weight, E).map((layer, l) => {
      const order = [...layer].sort((a, b) => usage.weight[l][b] - usage.weight[l][a] || a - b);
      return Array.from({ length: o.addExperts }, (_, j) => order[j % order.length]);
    });
  }
  const ext = extendExperts(src.model, { add: o.addExperts, init, sources, phaseInSteps: o.phaseInSteps, seed: o.seed ?? 0 });
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const before = measureModel(`${E} experts (before)`, src.model, data, batches);
  const extended = measureModel(`${E}+${o.addExperts} experts, untrained`, ext.model.eval(), data, batches);
  const t = src.config.training;
  const cfg = parseRunConfig({
    ...src.config,
    model: ext.model.config,
    data: { ...src.config.data, sources: o.data, weights: undefined },
    training: { ...t, steps: o.steps ?? 200, lr: o.lr ?? t.lr, warmup_steps: Math.min(t.warmup_steps, Math.floor((o.steps ?? 200) / 10)), seed: o.seed ?? t.seed },
  });
  const res = await train({
    config: cfg,
    outDir: o.out,
    overwrite: o.overwrite,
    dataDir: o.dataDir,
    init: { model: ext.model.train(), tokenizer: src.tokenizer },
    hooks: { trainable: extendTrainable(E, { trainOldRouterRows: o.trainOldRouterRows }) },
  });
  const after = measureModel(`${E}+${o.addExperts} experts, trained on ${o.data.join('+')}`, asTransformer(res.model, 'adapt', 'extend').eval(), data, batches);
  const report: AdaptReport = {
    command: 'extend',
    summary:
      `Adding experts (MoExtend, 2024; PMoE, 2023): ${o.addExperts} new experts per MoE layer (${init === 'copy' ? 'copies of the experts the router uses most on ' + o.data.join('+') : 'fresh init'}), ` +
      `trained ${res.steps} steps on ${o.data.join('+')} with the old experts and every other weight frozen${o.trainOldRouterRows ? ' (old router rows trained too)' : ', old router rows frozen'}; ` +
      `new experts phased in over ${(ext.model.config.router_options as { phaseInSteps?: number }).phaseInSteps ?? 50} steps (selection offset -1 -> 0), so the untrained extension computes the old model exactly.`,
    model: o.model,
    data: o.data,
    sources: ext.sources,
    rows: [before, extended, after],
  };
  return { ...report, sources: ext.sources, files: writeAdaptReport(o.out, 'extend', report) };
}
