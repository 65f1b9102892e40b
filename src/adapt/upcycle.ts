/** `moe-ts upcycle`: a dense model (or several) into an MoE run directory, with its before/after table. */
import { ConfigError } from '../models/config.js';
import { upcycleDense, splitDense, mixDenseModels, upcycleAttention, type SplitPlan } from '../models/upcycle.js';
import type { MoETransformerLM } from '../models/transformer.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, prepareOutDir, saveModelRun, type AdaptReport, type MeasureOptions } from './common.js';

/** What `moe-ts upcycle` does. */
export interface UpcycleRunOptions extends MeasureOptions {
  /** Dense source models: one for copy/split, two or more for mix (Branch-Train-MiX). */
  models: string[];
  out: string;
  /** copy: sparse upcycling; split-random / split-clustered: FFN splitting; mix: one expert per source model. */
  method: 'copy' | 'split-random' | 'split-clustered' | 'mix';
  numExperts?: number;
  topK?: number;
  noise?: number;
  sharedExperts?: number;
  /** Calibration windows per domain for split-clustered and shared experts (default 8). */
  calibration?: number;
  router?: string;
  /** BAM: also turn every attention into a soft mixture of this many attention experts (mix with one per model: expert e = model e's attention). */
  attentionExperts?: number;
  seed?: number;
  overwrite?: boolean;
}

/** Upcycle, measure source(s) and result on the embedded validation data, save the run and the report. */
export function runUpcycle(o: UpcycleRunOptions): AdaptReport & { checkpoint: string; files: { md: string; json: string }; plan?: SplitPlan } {
  if (o.models.length === 0) throw new ConfigError('upcycle: give at least one dense model');
  if (o.method !== 'mix' && o.models.length > 1) throw new ConfigError(`upcycle: method ${o.method} takes one dense model, got ${o.models.length} (several models: --method mix)`);
  const loaded = o.models.map((s) => loadAnyModel(s));
  const tok0 = JSON.stringify(loaded[0].tokenizer.toJSON());
  loaded.forEach((l, i) => {
    if (i > 0 && JSON.stringify(l.tokenizer.toJSON()) !== tok0) throw new ConfigError(`upcycle: model ${l.source} has a different tokenizer from ${loaded[0].source}`);
  });
  const first = loaded[0];
  const { data } = adaptDataset(first, o);
  const batches = o.batches ?? first.config.training.eval_batches;
  const routing = { topK: o.topK, router: o.router, seed: o.seed ?? 0 };
  let model: MoETransformerLM;
  let plan: SplitPlan | undefined;
  let summary: string;
  if (o.method === 'copy') {
    const E = o.numExperts ?? 8;
    model = upcycleDense(first.model, { ...routing, numExperts: E, noise: o.noise ?? 0 });
    summary = `Sparse upcycling (Sparse Upcycling, 2022): ${E} copies of each dense FFN, top-${model.config.num_experts_per_tok} ${model.config.router_type} router, noise ${o.noise ?? 0}, seed ${routing.seed}.`;
  } else if (o.method === 'mix') {
    model = mixDenseModels(
      loaded.map((l) => l.model),
      routing,
    );
    summary = `Branch-Train-MiX (2024): expert e = FFN of model e (${o.models.join(', ')}), other weights averaged, top-${model.config.num_experts_per_tok} ${model.config.router_type} router.`;
  } else {
    const E = o.numExperts ?? 8;
    const method = o.method === 'split-clustered' ? 'clustered' : 'random';
    const S = o.sharedExperts ?? 0;
    const calibration = method === 'clustered' || S > 0 ? calibrationWindows(data, o.calibration ?? 8) : undefined;
    const r = splitDense(first.model, { ...routing, numExperts: E, sharedExperts: S, method, calibration });
    model = r.model;
    plan = r.plan;
    summary = `FFN splitting (LLaMA-MoE, 2023; ${S > 0 ? 'shared experts from the most active neurons as in CMoE, 2025; ' : ''}${method}${method === 'clustered' ? ' by activation profile on ' + calibration!.length + ' calibration windows' : ''}): ${E} routed experts of width ${model.config.moe_intermediate_size}${S > 0 ? ` + ${S} shared` : ''}, top-${model.config.num_experts_per_tok}.`;
  }
  if (o.attentionExperts !== undefined) {
    const n = o.attentionExperts;
    const perModel = o.method === 'mix' && n === loaded.length;
    model = upcycleAttention(model, n, perModel ? loaded.map((l) => l.model) : undefined);
    summary += ` BAM (2024): every attention a soft mixture of ${n} attention experts (${perModel ? 'expert e = attention of model e' : 'copies of the dense attention'}), router at zero.`;
  }
  model.eval();
  const rows = [...loaded.map((l, i) => measureModel(loaded.length > 1 ? `dense ${i}` : 'dense (before)', l.model, data, batches)), measureModel('MoE (after)', model, data, batches)];
  prepareOutDir(o.out, Boolean(o.overwrite));
  const checkpoint = saveModelRun(o.out, model, first.tokenizer, first.config);
  const report: AdaptReport = { command: 'upcycle', summary, method: o.method, models: o.models, out: o.out, rows, ...(plan ? { plan } : {}) };
  const files = writeAdaptReport(o.out, 'upcycle', report);
  return { ...report, checkpoint, files, ...(plan ? { plan } : {}) };
}
