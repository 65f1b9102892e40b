/** `moe-ts prune`: drop the least-used experts (router statistics on calibration text), loss per pruned fraction. */
import { noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { ConfigError } from '../models/config.js';
import type { MoETransformerLM } from '../models/transformer.js';
import { pruneExperts } from '../models/prune.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, prepareOutDir, saveModelRun, type AdaptReport, type MeasureOptions } from './common.js';

/** Router statistics per MoE layer: tokens routed to each expert and the summed gate weight, over the calibration windows. */
export function expertUsage(model: MoETransformerLM, windows: Int32Array[]): { tokens: Float64Array[]; weight: Float64Array[] } {
  const E = model.config.num_local_experts;
  const L = model.moeLayers().length;
  const tokens = Array.from({ length: L }, () => new Float64Array(E));
  const weight = Array.from({ length: L }, () => new Float64Array(E));
  noGrad(() => {
    for (const w of windows) {
      const { aux } = model.forward(w, 1, w.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      aux.forEach(({ aux: a }, l) => {
        a.metrics.tokensPerExpert.forEach((v, e) => (tokens[l][e] += v));
        const { probs } = a.router;
        for (let i = 0; i < probs.data.length; i++) weight[l][i % E] += probs.data[i];
      });
    }
  });
  return { tokens, weight };
}

/** Per layer, the `n` experts with the highest summed router weight (ties: lower index). */
export function mostUsedExperts(weight: Float64Array[], n: number): number[][] {
  return weight.map((w) =>
    Array.from(w, (v, e) => [v, e] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, n)
      .map(([, e]) => e)
      .sort((a, b) => a - b),
  );
}

/** Prune each fraction, measure each; save the model of `save` (default: the largest fraction) as a run. */
export function runPrune(
  o: { model: string; out: string; fractions: number[]; save?: number; calibration?: number; overwrite?: boolean } & MeasureOptions,
): AdaptReport & { files: { md: string; json: string } } {
  const src = loadAnyModel(o.model);
  const E = src.model.config.num_local_experts;
  if (E === 0) throw new ConfigError(`prune: ${o.model} is a dense model (no experts to prune)`);
  for (const f of o.fractions) if (!(f >= 0 && f < 1)) throw new ConfigError(`prune: fractions must be in [0, 1), got ${f}`);
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const usage = expertUsage(src.model, calibrationWindows(data, o.calibration ?? 8));
  const rows = [measureModel(`${E} experts (before)`, src.model, data, batches)];
  const kept: { fraction: number; experts: number; keep: number[][] }[] = [];
  let toSave: MoETransformerLM | null = null;
  const saveF = o.save ?? Math.max(...o.fractions);
  for (const f of o.fractions) {
    const n = Math.max(1, E - Math.round(f * E));
    const keep = mostUsedExperts(usage.weight, n);
    const m = pruneExperts(src.model, keep).eval();
    rows.push(measureModel(`pruned ${Math.round(f * 100)}% -> ${n} experts`, m, data, batches));
    kept.push({ fraction: f, experts: n, keep });
    if (f === saveF) toSave = m;
  }
  if (!toSave) throw new ConfigError(`prune: --save ${saveF} is not one of the fractions ${o.fractions.join(', ')}`);
  prepareOutDir(o.out, Boolean(o.overwrite));
  saveModelRun(o.out, toSave, src.tokenizer, src.config);
  const report: AdaptReport = {
    command: 'prune',
    summary: `Expert pruning by router statistics: per MoE layer the experts with the highest summed router weight on ${data.domainNames.join(', ')} calibration text are kept; the run in ${o.out} is the ${Math.round(saveF * 100)}% model.`,
    rows,
    kept,
    usage: { tokens: usage.tokens.map((t) => Array.from(t)), weight: usage.weight.map((w) => Array.from(w)) },
  };
  return { ...report, files: writeAdaptReport(o.out, 'prune', report) };
}
