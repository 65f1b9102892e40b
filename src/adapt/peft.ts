/**
 * LoRA-expert adapters apart from their base: save the adapter tensors (with their peft config)
 * to one safetensors file, attach such a file to a base model, and export a merged plain model
 * where that is exact (shared adapters only). See src/models/lora-experts.ts.
 */
import { MoETransformerLM } from '../models/transformer.js';
import { parseModelConfig, ConfigError, type ModelConfig } from '../models/config.js';
import { adapterState, loadPartialState, mergeSharedAdapters } from '../models/lora-experts.js';
import { readSafetensorsSync, writeSafetensorsSync, type TensorEntry } from '../io/safetensors.js';
import { entryToFloat32 } from '../io/quant.js';
import { loadAnyModel, adaptDataset, measureModel, prepareOutDir, saveModelRun, writeAdaptReport, type AdaptReport, type MeasureOptions } from './common.js';

/** Adapter file name a `train --peft` run writes next to its checkpoints. */
export const ADAPTERS_FILE = 'adapters.safetensors';

/** Write the adapter tensors of a PEFT model (float32) with its peft config in the metadata. */
export function saveAdapters(model: MoETransformerLM, file: string): number {
  if (!model.config.peft) throw new ConfigError('saveAdapters: the model has no peft adapters (model.peft is unset)');
  const m = new Map<string, TensorEntry>();
  for (const [n, t] of adapterState(model)) m.set(n, { dtype: 'float32', shape: [...t.shape], data: t.data });
  writeSafetensorsSync(file, m, { format: 'moe-ts-adapters', peft: JSON.stringify(model.config.peft) });
  return m.size;
}

/** A base model (no adapters) plus an adapter file: a new model with the adapters attached; the base is left as it was. */
export function attachAdapters(base: MoETransformerLM, file: string): MoETransformerLM {
  if (base.config.peft) throw new ConfigError(`attachAdapters: the base model already has adapters`);
  const f = readSafetensorsSync(file);
  if (f.metadata.format !== 'moe-ts-adapters' || !f.metadata.peft)
    throw new ConfigError(`${file}: not a moe-ts adapter file (metadata format "${f.metadata.format ?? ''}", expected "moe-ts-adapters")`);
  let peft: unknown;
  try {
    peft = JSON.parse(f.metadata.peft);
  } catch (e) {
    throw new ConfigError(`${file}: metadata peft is not valid JSON: ${(e as Error).message}`);
  }
  const cfg = parseModelConfig({ ...base.config, peft }, `${file} peft`);
  const model = new MoETransformerLM(cfg, 0);
  loadPartialState(model, base.stateDict(), 'base', 'attachAdapters base');
  const state = new Map([...f.tensors].map(([n, t]) => [n, { data: entryToFloat32(t, n), shape: t.shape }]));
  loadPartialState(model, state, 'adapters', file);
  return model.train(base.training);
}

/** A plain model computing what the PEFT model computes: shared adapters folded into the base weights (routed LoRA experts refuse). */
export function mergeAdapters(model: MoETransformerLM): MoETransformerLM {
  if (!model.config.peft) throw new ConfigError('merge: the model has no peft adapters');
  const { peft: _, ...rest } = model.config;
  const plain = new MoETransformerLM(parseModelConfig(rest as ModelConfig), 0);
  // merge a copy: fold into a fresh PEFT model holding the same tensors, then copy its base by name
  const copy = new MoETransformerLM(model.config, 0);
  copy.loadStateDict(model.stateDict());
  mergeSharedAdapters(copy.layers);
  plain.loadStateDict(copy.stateDict());
  return plain.train(model.training);
}

/** `moe-ts peft merge`: a PEFT run into a plain run directory, with the before/after table (the losses agree when the merge is exact). */
export function runPeftMerge(o: { run: string; out: string; overwrite?: boolean } & MeasureOptions): AdaptReport & { files: { md: string; json: string } } {
  const src = loadAnyModel(o.run);
  const merged = mergeAdapters(src.model).eval();
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const rows = [measureModel('base + adapters (before)', src.model, data, batches), measureModel('merged (after)', merged, data, batches)];
  prepareOutDir(o.out, Boolean(o.overwrite));
  saveModelRun(o.out, merged, src.tokenizer, src.config);
  const report: AdaptReport = { command: 'peft merge', summary: `Shared LoRA adapters of ${o.run} folded into the base weights (W + (alpha/r) A B, exact).`, rows };
  return { ...report, files: writeAdaptReport(o.out, 'peft-merge', report) };
}

/** `moe-ts peft attach`: a base model plus an adapter file into one run directory. */
export function runPeftAttach(o: { base: string; adapters: string; out: string; overwrite?: boolean } & MeasureOptions): AdaptReport & { files: { md: string; json: string } } {
  const src = loadAnyModel(o.base);
  const model = attachAdapters(src.model, o.adapters).eval();
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const rows = [measureModel('base (before)', src.model, data, batches), measureModel('base + adapters (after)', model, data, batches)];
  prepareOutDir(o.out, Boolean(o.overwrite));
  saveModelRun(o.out, model, src.tokenizer, src.config);
  const report: AdaptReport = { command: 'peft attach', summary: `Adapters ${o.adapters} attached to the base ${o.base}.`, rows };
  return { ...report, files: writeAdaptReport(o.out, 'peft-attach', report) };
}

/**
 * The before/after table of a `train --peft` run: the frozen base and the trained adapted model on
 * the validation splits of `sources` (default: the embedded corpora), with the trained (adapter)
 * parameter count. Written as `<out>/peft.md` and `<out>/peft.json`.
 */
export function writePeftTable(o: { base: string; model: MoETransformerLM; out: string } & MeasureOptions): AdaptReport & { files: { md: string; json: string } } {
  if (!o.model.config.peft) throw new ConfigError('writePeftTable: the model has no peft adapters (model.peft is unset)');
  const src = loadAnyModel(o.base);
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const trained = [...adapterState(o.model).values()].reduce((s, t) => s + t.data.length, 0);
  const wasTraining = o.model.training;
  o.model.eval();
  const rows = [measureModel('base (before)', src.model, data, batches), measureModel('base + adapters (after)', o.model, data, batches)];
  if (wasTraining) o.model.train();
  const p = o.model.config.peft;
  const report: AdaptReport = {
    command: 'train --peft',
    summary: `LoRA experts trained on the frozen base ${o.base}: ${p.experts_per_layer ? `per-layer experts ${p.experts_per_layer.join(',')}` : `${p.experts} routed`} (${p.top_k ? `top-${p.top_k}` : 'soft gates'}), ${p.shared} shared, rank ${p.rank} on ${p.targets.join(',')}; only the adapters train.`,
    rows,
    columns: [{ head: 'trained params', values: ['', trained.toLocaleString('en-US')] }],
    trainedParams: trained,
  };
  return { ...report, files: writeAdaptReport(o.out, 'peft', report) };
}
