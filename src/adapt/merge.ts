/** `moe-ts merge`: merge groups of experts into fewer (or the whole MoE into a dense FFN), with the before/after table. */
import { ConfigError } from '../models/config.js';
import { mergeExperts, groupExperts, mergeToDense } from '../models/merge.js';
import type { MoETransformerLM } from '../models/transformer.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, prepareOutDir, saveModelRun, type AdaptReport, type MeasureOptions } from './common.js';
import { expertUsage } from './prune.js';

/** What `moe-ts merge` does. */
export interface MergeRunOptions extends MeasureOptions {
  model: string;
  out: string;
  /** Merged experts per layer (ignored with `dense` or `groups`). */
  experts?: number;
  /** How groups are chosen: router usage leaders + weight similarity, or weight similarity alone. */
  by?: 'usage' | 'similarity';
  /** User-given groups, the same for every MoE layer (e.g. [[0, 1], [2, 3]]). */
  groups?: number[][];
  /** Merge every MoE layer into one dense FFN. */
  dense?: boolean;
  /** Average weighted by router usage on calibration text (default true) or uniformly. */
  weighted?: boolean;
  calibration?: number;
  overwrite?: boolean;
}

/** Parse `--groups "0,1;2,3"` (groups separated by ';', experts by ','). */
export function parseGroups(s: string): number[][] {
  return s.split(';').map((g) =>
    g.split(',').map((x) => {
      if (!/^\s*\d+\s*$/.test(x)) throw new ConfigError(`--groups must be groups of expert indices like "0,1;2,3", got "${s}"`);
      return Number(x);
    }),
  );
}

/** Merge, measure before/after on the embedded validation data, save the run and merge.md/json. */
export function runMerge(o: MergeRunOptions): AdaptReport & { files: { md: string; json: string }; groups?: number[][][] } {
  const src = loadAnyModel(o.model);
  const E = src.model.config.num_local_experts;
  if (E === 0) throw new ConfigError(`merge: ${o.model} is a dense model (no experts to merge)`);
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const weighted = o.weighted ?? true;
  const by = o.by ?? 'usage';
  const needUsage = weighted || (!o.dense && !o.groups && by === 'usage');
  const usage = needUsage ? expertUsage(src.model, calibrationWindows(data, o.calibration ?? 8)).weight : undefined;
  const w = weighted ? usage : undefined;
  let merged: MoETransformerLM;
  let groups: number[][][] | undefined;
  let summary: string;
  const how = weighted ? 'router-usage-weighted average (summed gate weight on calibration text)' : 'uniform average';
  if (o.dense) {
    merged = mergeToDense(src.model, w);
    summary = `MoE to dense (Upcycling Instruction Tuning via Parameter Merging, 2024; Experts Weights Averaging, 2023): each MoE layer's FFN the ${how} of its ${E} experts, shared experts kept as extra neurons.`;
  } else {
    const layers = src.model.moeLayers().length;
    if (o.groups) groups = Array.from({ length: layers }, () => o.groups!.map((g) => [...g]));
    else {
      if (o.experts === undefined) throw new ConfigError('merge: give --experts n (merged experts per layer), --groups or --dense');
      groups = groupExperts(src.model, o.experts, by, usage);
    }
    merged = mergeExperts(src.model, groups, w);
    summary = `Expert merging (Experts Weights Averaging, 2023; Merging Multi-Task Models via Weight-Ensembling MoE, 2024): ${E} -> ${groups[0].length} experts per layer, groups ${o.groups ? 'given' : by === 'usage' ? 'led by the most used experts, others joining the most similar leader (MC-SMoE, 2023)' : 'by weight cosine similarity (average linkage)'}; experts and router rows merged by ${how}.`;
  }
  merged.eval();
  const rows = [measureModel(`${E} experts (before)`, src.model, data, batches), measureModel(o.dense ? 'dense (after)' : `${groups![0].length} experts (after)`, merged, data, batches)];
  prepareOutDir(o.out, Boolean(o.overwrite));
  saveModelRun(o.out, merged, src.tokenizer, src.config);
  const report: AdaptReport = { command: 'merge', summary, model: o.model, rows, ...(groups ? { groups } : {}), ...(usage ? { usage: usage.map((u) => Array.from(u)) } : {}) };
  return { ...report, groups, files: writeAdaptReport(o.out, 'merge', report) };
}
